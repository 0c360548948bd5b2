"""The scenario's raw inputs (devkit/raw_inputs.py) rebuild the scenario through the core
data-preparation functions: SMAP granules, PFT land cover, reflectance and Sentinel-1 scenes."""
import datetime as dt
import os

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("h5py")

from smdownscale.core.common import Cancelled, Progress  # noqa: E402
from smdownscale.core.dataprep.gapfill import parse_qc_rule  # noqa: E402
from smdownscale.core.dataprep.indices import spectral_indices  # noqa: E402
from smdownscale.core.dataprep.landcover import reclassify_landcover  # noqa: E402
from smdownscale.core.dataprep.s1 import s1_composite  # noqa: E402
from smdownscale.core.dataprep.series_io import date_from_filename  # noqa: E402
from smdownscale.core.dataprep.smap import import_smap_l4, read_granule_time  # noqa: E402
from smdownscale.demo.scenario import make_scenario  # noqa: E402
from smdownscale.devkit.raw_inputs import make_raw_inputs  # noqa: E402

# 17 days: 8-day composites on days 0, 8 and 16, so the middle one carries clouds and fill
N_DATES = 17


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    scenario = make_scenario(str(folder / "scenario"), size="small", n_dates=N_DATES)
    inputs = make_raw_inputs(scenario, str(folder / "raw"))
    return scenario, inputs, folder


def _predictor(scenario, name):
    return next(p for p in scenario["predictors"] if os.path.basename(p) == f"{name}.tif")


def test_files_and_dates(raw):
    scenario, inputs, _ = raw
    assert inputs["reflectance_dates"] == ["2019-04-01", "2019-04-09", "2019-04-17"]
    assert [date_from_filename(p) for p in inputs["reflectance"]] == inputs["reflectance_dates"]
    assert os.path.basename(inputs["reflectance"][1]) == "MOD09A1.A2019099.h28v05.061.tif"
    assert inputs["s1_dates"] == ["2019-04-01", "2019-04-07", "2019-04-13"]
    with rasterio.open(inputs["reflectance"][0]) as src:
        assert (src.count, src.dtypes[0], src.nodata, src.res) == (7, "int16", -28672, (500.0, 500.0))
    # one 07:30 granule per date, plus 22:30 ones on dates 5, 10, 15
    names = [os.path.basename(p) for p in inputs["smap_granules"]]
    assert len(names) == N_DATES + 3
    assert "SMAP_L4_SM_gph_20190401T073000_Vv7032_001.h5" in names
    assert "SMAP_L4_SM_gph_20190405T223000_Vv7032_001.h5" in names
    assert read_granule_time(inputs["smap_granules"][0]) == dt.datetime(2019, 4, 1, 7, 30)
    kept = sorted(os.path.basename(p)[:-4] for p in inputs["kept_predictors"])
    assert kept == ["albedo", "clay", "dem", "lai", "lst", "sand", "silt"]


def test_smap_import_reproduces_the_9km_series(raw):
    scenario, inputs, folder = raw
    out = str(folder / "sm.tif")
    result = import_smap_l4(inputs["smap_granules"], out, time_window=inputs["smap_time_window"])
    assert len(result["granules_skipped"]) == 3
    assert result["variable"] == "Geophysical_Data/sm_surface"
    with rasterio.open(out) as got, rasterio.open(scenario["soil_moisture"]) as expected:
        assert got.crs == expected.crs
        assert got.transform == expected.transform
        assert (got.width, got.height) == (expected.width, expected.height)
        assert list(got.descriptions) == scenario["dates"]
        a, b = got.read(), expected.read()
    assert np.array_equal(np.isnan(a), np.isnan(b))
    assert np.isfinite(b).sum() > 0.9 * b.size
    assert np.array_equal(a[np.isfinite(a)], b[np.isfinite(b)])
    # without the window the 22:30 granules (values - 0.03) are averaged in on their dates
    everything = import_smap_l4(inputs["smap_granules"], str(folder / "sm_all.tif"))
    assert everything["granules_skipped"] == []
    with rasterio.open(str(folder / "sm_all.tif")) as src:
        assert np.nanmax(np.abs(src.read(5) - (b[4] - 0.015))) < 1e-6
        assert np.array_equal(src.read(4), b[3], equal_nan=True)


def test_landcover_reclassifies_to_the_scenario_classes(raw):
    scenario, inputs, folder = raw
    with rasterio.open(inputs["landcover"]) as src:
        codes = src.read(1)
        assert src.res == (500.0, 500.0)
    # every Table-2 source code appears (forest 1-5, crops 7-8, urban/other 9-11)
    assert set(np.unique(codes)) <= set(range(12)) and {0, 6, 7, 8, 9, 11} <= set(np.unique(codes))
    out = str(folder / "lc.tif")
    counts = reclassify_landcover(inputs["landcover"], out)
    with rasterio.open(_predictor(scenario, "lc")) as src:
        lc = src.read(1)
    expected = np.repeat(np.repeat(lc, 2, axis=0), 2, axis=1)
    with rasterio.open(out) as src:
        got = src.read(1)
    assert np.array_equal(got, expected)
    assert counts["class_counts"] == {int(k): int((expected == k).sum()) for k in np.unique(expected)}
    assert counts["nodata_pixels"] == 0


def test_ndvi_from_reflectance_matches_the_scenario(raw):
    scenario, inputs, folder = raw
    out = folder / "indices"
    out.mkdir()
    spectral_indices(inputs["reflectance"], str(out))
    with rasterio.open(inputs["state_qa"]) as qa:
        assert list(qa.descriptions) == inputs["reflectance_dates"]
        good = parse_qc_rule(inputs["qc_rule"])(qa.read())
    with rasterio.open(str(out / "ndvi.tif")) as got, rasterio.open(_predictor(scenario, "ndvi")) as expected:
        assert list(got.descriptions) == inputs["reflectance_dates"]
        for band, date in enumerate(inputs["reflectance_dates"], start=1):
            derived = got.read(band)
            truth = expected.read(scenario["dates"].index(date) + 1)
            ok = good[band - 1]
            assert np.abs(derived[ok] - truth[ok]).max() < 1e-3
    # the middle composite has clouds (bad QA) and fill pixels (nodata -> NaN index)
    assert good[0].all() and good[2].all()
    assert 0.04 < (~good[1]).mean() < 0.25
    with rasterio.open(inputs["reflectance"][1]) as src:
        fill = src.read(1) == -28672
    with rasterio.open(str(out / "ndvi.tif")) as got:
        assert fill.any() and np.isnan(got.read(2)[fill]).all()
    for name in ("evi", "ndwi", "nsdsi"):
        with rasterio.open(str(out / f"{name}.tif")) as got:
            values = got.read(1)
            assert np.isfinite(values).all() and np.abs(values).max() < 1.5


def test_s1_composite_is_the_linear_mean_of_the_scenes_in_the_window(raw):
    _, inputs, folder = raw
    out = str(folder / "vv.tif")
    result = s1_composite(inputs["s1_vv"], out, half_window_days=6, start=inputs["dates"][0],
                          end=inputs["dates"][-1])
    assert result["dates"] == inputs["dates"]
    scenes = {}
    for path in inputs["s1_vv"]:
        with rasterio.open(path) as src:
            scenes[src.tags()["DATE"]] = src.read(1).astype("float64")
    day = dt.date(2019, 4, 7)          # scenes of 04-01, 04-07 and 04-13 are within +/- 6 days
    window = [d for d in scenes if abs((dt.date.fromisoformat(d) - day).days) <= 6]
    assert sorted(window) == ["2019-04-01", "2019-04-07", "2019-04-13"]
    expected = 10 * np.log10(np.mean([10 ** (scenes[d] / 10) for d in window], axis=0))
    with rasterio.open(out) as src:
        got = src.read(result["dates"].index(day.isoformat()) + 1)
        only_one = src.read(result["dates"].index("2019-04-17") + 1)   # only 04-13 within 6 days
    assert np.abs(got - expected).max() < 1e-4
    assert np.abs(only_one - scenes["2019-04-13"]).max() < 1e-4


def test_cancel_leaves_nothing(raw, tmp_path):
    scenario, _, _ = raw
    calls = []
    progress = Progress(callback=lambda f, m=None: calls.append(f), is_cancelled=lambda: len(calls) > 3)
    with pytest.raises(Cancelled):
        make_raw_inputs(scenario, str(tmp_path / "raw"), progress=progress)
    assert os.listdir(tmp_path) == []
