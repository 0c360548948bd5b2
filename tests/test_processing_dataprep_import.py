"""smdownscale:importsmapl4 and smdownscale:importismn run through processing.run on real data."""
import os

import numpy as np
import pytest

from conftest import REALDATA

SMAP_INPUT = os.path.join(REALDATA, "smap_l4_harmony_maskfill", "SMAP_L4_SM_aup_input.h5")
SMAP_UTM = os.path.join(REALDATA, "smap_l4_harmony_maskfill", "SMAP_L4_SM_aup_UTM_input.h5")
ISMN_HEADER = os.path.join(REALDATA, "ismn", "Data_seperate_files_header_20170810_20180809")
ISMN_MALFORMED = os.path.join(REALDATA, "ismn", "malformed", "mal_formed_file.txt")

pytestmark = pytest.mark.skipif(not (os.path.exists(SMAP_INPUT) and os.path.isdir(ISMN_HEADER)),
                                reason=f"real SMAP/ISMN test data not found in {REALDATA}")


@pytest.fixture()
def provider(qgis_processing):
    """The smdownscale provider with its algorithms loaded, held by this fixture.

    Algorithms are run as instances of this provider (``processing.run(algorithm, ...)``) so the
    tests do not depend on what other test modules left in the global registry.
    """
    from smdownscale.processing.provider import SmDownscaleProvider

    provider = SmDownscaleProvider()
    provider.refreshAlgorithms()  # calls loadAlgorithms(): addAlgorithm + initAlgorithm
    yield provider


def test_algorithms_and_parameter_names(provider):
    smap = provider.algorithm("importsmapl4")
    ismn = provider.algorithm("importismn")
    assert smap is not None and ismn is not None
    assert (smap.id(), ismn.id()) == ("smdownscale:importsmapl4", "smdownscale:importismn")
    assert smap.group() == ismn.group() == "Data preparation"
    assert [p.name() for p in smap.parameterDefinitions()] == ["INPUT", "VARIABLE", "TIME_WINDOW", "EXTENT",
                                                               "OUTPUT"]
    names = [p.name() for p in ismn.parameterDefinitions()]
    assert names[:4] == ["INPUT", "DEPTH_FROM", "DEPTH_TO", "HOUR"] and names[-1] == "OUTPUT"
    for algorithm in (smap, ismn):
        assert algorithm.shortHelpString()
        assert all(p.help() for p in algorithm.parameterDefinitions())


def test_importsmapl4_through_processing(provider, tmp_path):
    import processing
    import rasterio
    from qgis.core import QgsProcessingException

    out = str(tmp_path / "smap.tif")
    result = processing.run(provider.algorithm("importsmapl4"), {
        "INPUT": [SMAP_INPUT], "VARIABLE": "", "TIME_WINDOW": "14:00-16:00", "OUTPUT": out})
    assert result["OUTPUT"] == out and result["N_DATES"] == 1
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 6933 and src.descriptions == ("2020-01-28",)
        assert src.transform.c == pytest.approx(-17367530.4451615 + 87 * 9008.055210146, abs=1e-6)
        assert src.transform.f == pytest.approx(7314540.8306386 - 40 * 9008.055210146, abs=1e-6)
        assert int(np.isnan(src.read(1)).sum()) == 324011
    with pytest.raises(QgsProcessingException, match="not on the EASE-Grid 2.0"):
        processing.run(provider.algorithm("importsmapl4"), {
            "INPUT": [SMAP_UTM], "VARIABLE": "Analysis_Data/sm_profile_analysis",
            "OUTPUT": str(tmp_path / "utm.tif")})
    with pytest.raises(QgsProcessingException, match="No granule falls inside"):
        processing.run(provider.algorithm("importsmapl4"), {
            "INPUT": [SMAP_INPUT], "TIME_WINDOW": "06:00-09:00", "OUTPUT": str(tmp_path / "w.tif")})
    assert sorted(os.listdir(tmp_path)) == ["smap.tif"]


def test_importismn_through_processing(provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingException, QgsVectorLayer

    out = str(tmp_path / "stations.gpkg")
    result = processing.run(provider.algorithm("importismn"), {
        "INPUT": ISMN_HEADER, "DEPTH_FROM": 0.0, "DEPTH_TO": 0.2, "HOUR": 8, "OUTPUT": out})
    from smdownscale.core.dataprep.ismn import read_ismn_observations

    assert result["N_SITES"] == 1
    assert result["N_RECORDS"] == len(read_ismn_observations(ISMN_HEADER, depth_to=0.2, hour=8))
    layer = QgsVectorLayer(result["OUTPUT"], "stations", "ogr")
    assert layer.isValid() and layer.crs().authid() == "EPSG:4326"
    feature = next(layer.getFeatures())
    # raw line "2017/08/10 08:00   0.1990 G M" of the ARM-1 file
    assert (feature["site_id"], feature["sm"]) == ("COSMOS:ARM-1", 0.199)
    assert feature["date"].toString("yyyy-MM-dd") == "2017-08-10"
    point = feature.geometry().asPoint()
    assert (point.x(), point.y()) == (-97.4878, 36.6054)
    # a GeoPackage layer still alive when QGIS exits crashes the interpreter at shutdown
    del feature, layer
    with pytest.raises(QgsProcessingException, match="mal_formed_file.txt, line 1"):
        processing.run(provider.algorithm("importismn"), {"INPUT": ISMN_MALFORMED, "OUTPUT": str(tmp_path / "bad.gpkg")})
    assert sorted(os.listdir(tmp_path)) == ["stations.gpkg"]
