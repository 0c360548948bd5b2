"""The built-in scenario: grids, dates, partitions and stations are what the docs promise."""
import csv

import numpy as np
import pytest
import rasterio

from smdownscale.core.grids import M09_CELL_SIZE as EASE2_M09_CELL
from smdownscale.core.grids import M09_ULX as EASE2_M09_X0
from smdownscale.core.grids import M09_ULY as EASE2_M09_Y0
from smdownscale.demo.scenario import make_scenario


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    return make_scenario(str(tmp_path_factory.mktemp("scenario")), size="small", n_dates=12)


def test_target_is_on_the_ease_grid_9km(scenario):
    with rasterio.open(scenario["soil_moisture"]) as src:
        assert src.crs.to_epsg() == 6933
        assert src.transform.a == pytest.approx(EASE2_M09_CELL)
        column = (src.transform.c - EASE2_M09_X0) / EASE2_M09_CELL
        row = (EASE2_M09_Y0 - src.transform.f) / EASE2_M09_CELL
        assert column == pytest.approx(round(column), abs=1e-9)
        assert row == pytest.approx(round(row), abs=1e-9)
        assert list(src.descriptions) == scenario["dates"]
        assert np.isfinite(src.read()).mean() > 0.9


def test_predictors_on_mixed_grids_with_dated_bands(scenario):
    resolutions = {}
    for path in scenario["predictors"]:
        with rasterio.open(path) as src:
            name = path.rsplit("/", 1)[-1][:-4]
            resolutions[name] = src.transform.a
            assert src.crs.to_epsg() == 32650
            if name in ("sand", "silt", "clay", "dem", "lc"):
                assert src.count == 1
            else:
                assert list(src.descriptions) == scenario["dates"]
    assert resolutions["ndvi"] == 500.0 and resolutions["lst"] == 1000.0
    assert len(resolutions) == 14


def test_truth_is_nan_on_water_and_soil_fractions_sum_to_100(scenario):
    folder = scenario["truth"].rsplit("/", 1)[0] + "/predictors/"
    with rasterio.open(folder + "lc.tif") as lc, rasterio.open(scenario["truth"]) as truth:
        classes = lc.read(1)
        first = truth.read(1)
    assert set(np.unique(classes)) <= {0, 1, 2, 3, 4}
    assert np.isnan(first[classes == 0]).all()
    assert np.isfinite(first[classes > 0]).all()
    with rasterio.open(folder + "sand.tif") as a, rasterio.open(folder + "silt.tif") as b, \
            rasterio.open(folder + "clay.tif") as c:
        np.testing.assert_allclose(a.read(1) + b.read(1) + c.read(1), 100.0, rtol=1e-5)


def test_stations_read_on_the_1st_11th_and_21st(scenario):
    with open(scenario["stations_csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert {row["date"][8:] for row in rows} == {"01", "11"}  # 12 dates from 2019-04-01
    assert len({row["site_id"] for row in rows}) == 12
    assert all(0.0 < float(row["sm"]) < 0.7 for row in rows)
