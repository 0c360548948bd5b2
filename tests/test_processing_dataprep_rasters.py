"""smdownscale:spectralindices, gapfill, s1composite, reclassifylc through processing.run (real QGIS)."""
import json
import math
import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

TRANSFORM = from_origin(500000.0, 4000000.0, 500.0, 500.0)
ALG_IDS = ("spectralindices", "gapfill", "s1composite", "reclassifylc")

@pytest.fixture()
def provider(qgis_processing):
    """A provider of our own with its algorithms loaded; tests run its algorithm instances so
    they do not depend on what other test modules left in the global registry."""
    from smdownscale.processing.provider import SmDownscaleProvider

    provider = SmDownscaleProvider()
    provider.refreshAlgorithms()
    yield provider


def write_raster(path, values, *, dtype="float32", nodata=np.nan, dates=None, tags=None):
    values = np.asarray(values, dtype=dtype)
    if values.ndim == 2:
        values = values[np.newaxis]
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[2], height=values.shape[1],
                       count=values.shape[0], dtype=dtype, crs="EPSG:32650", transform=TRANSFORM,
                       nodata=nodata) as dst:
        dst.write(values)
        for band, date in enumerate(dates or [], start=1):
            dst.set_band_description(band, date)
        if tags:
            dst.update_tags(**tags)
    return str(path)


def test_definitions(provider):
    from smdownscale.core.dataprep.landcover import TABLE2

    for alg_id in ALG_IDS:
        algorithm = provider.algorithm(alg_id)
        assert algorithm is not None and algorithm.id() == f"smdownscale:{alg_id}"
        assert algorithm.group() == "Data preparation"
        assert algorithm.shortHelpString()
        names = [p.name() for p in algorithm.parameterDefinitions()]
        assert names[0] == "INPUT" and names[-1] == "OUTPUT"
        assert all(p.help() for p in algorithm.parameterDefinitions())
    assert provider.algorithm("reclassifylc").parameterDefinition("TABLE").defaultValue() == TABLE2


def test_spectralindices(provider, tmp_path):
    import processing

    bands = np.zeros((7, 1, 2), dtype="int16")
    bands[:, 0, 0] = [1000, 3000, 500, 800, 0, 2000, 1500]      # NDVI 0.5, NSDSI 0.25
    bands[:, 0, 1] = 0                                            # 0/0 -> nodata
    first = write_raster(tmp_path / "mod09a1_2019-04-07.tif", bands, dtype="int16", nodata=-28672)
    second = write_raster(tmp_path / "mod09a1_2019-04-15.tif", bands, dtype="int16", nodata=-28672)
    out = tmp_path / "indices"
    result = processing.run(provider.algorithm("spectralindices"), {
        "INPUT": [second, first], "INDICES": [0, 3], "OUTPUT": str(out)})
    assert result["N_DATES"] == 2 and sorted(os.listdir(out)) == ["ndvi.tif", "nsdsi.tif"]
    assert sorted(result["OUTPUT_LAYERS"]) == [str(out / "ndvi.tif"), str(out / "nsdsi.tif")]
    with rasterio.open(out / "ndvi.tif") as src:
        assert src.descriptions == ("2019-04-07", "2019-04-15")
        values = src.read()
    assert values[:, 0, 0] == pytest.approx([0.5, 0.5], abs=1e-6) and np.isnan(values[:, 0, 1]).all()


def test_gapfill(provider, tmp_path):
    import processing

    dates = ["2019-04-07", "2019-04-15", "2019-04-23"]
    series = write_raster(tmp_path / "lai.tif", np.array([0.2, 9.9, 0.4]).reshape(3, 1, 1), dates=dates)
    qc = write_raster(tmp_path / "qc.tif", np.array([0, 2, 0]).reshape(3, 1, 1), dtype="uint8", nodata=255,
                      dates=dates)
    out = str(tmp_path / "daily.tif")
    result = processing.run(provider.algorithm("gapfill"), {
        "INPUT": series, "QC": qc, "QC_RULE": "bits 1 == 0", "SG_HALF_WIDTH": 0, "OUTPUT": out})
    assert result["N_DATES"] == 17
    with rasterio.open(out) as src:
        assert src.descriptions[0] == "2019-04-07" and src.descriptions[-1] == "2019-04-23"
        np.testing.assert_allclose(src.read()[:, 0, 0], 0.2 + 0.2 * np.arange(17) / 16, atol=1e-6)


def test_s1composite(provider, tmp_path):
    import processing

    a = write_raster(tmp_path / "vv_2019-04-01.tif", [[-10.0]])
    b = write_raster(tmp_path / "vv_2019-04-07.tif", [[-13.0]])
    out = str(tmp_path / "vv_daily.tif")
    result = processing.run(provider.algorithm("s1composite"), {"INPUT": [a, b], "OUTPUT": out})
    assert result["N_DATES"] == 7
    with rasterio.open(out) as src:
        assert src.read(4)[0, 0] == pytest.approx(10 * math.log10((0.1 + 10 ** -1.3) / 2), abs=1e-5)


def test_reclassifylc_and_bad_table(provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    pft = write_raster(tmp_path / "pft.tif", [[0, 3, 6, 8, 10, 255]], dtype="uint8", nodata=None)
    out = str(tmp_path / "lc.tif")
    result = processing.run(provider.algorithm("reclassifylc"),
                            {"INPUT": pft, "WATER_AS_NODATA": True, "OUTPUT": out})
    assert json.loads(result["CLASS_COUNTS"]) == {"1": 1, "2": 1, "3": 1, "4": 1}
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), [[np.nan, 1, 2, 3, 4, np.nan]])
    with pytest.raises(QgsProcessingException):
        processing.run(provider.algorithm("reclassifylc"), {"INPUT": pft, "TABLE": "1-5:1,4:2",
                                                    "OUTPUT": str(tmp_path / "bad.tif")})
    assert not os.path.exists(tmp_path / "bad.tif")
