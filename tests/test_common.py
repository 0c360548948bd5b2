"""Shared plumbing: atomic outputs, progress/cancel, band dates, GDAL cache cap."""
import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from smdownscale.core.common import Cancelled, Progress, SmdError, gdal_cache_limit, read_band_dates, write_series
from smdownscale.core.outputs import atomic_output


def test_atomic_output_renames_on_success_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "out.tif"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(str(target)) as tmp:
            with open(tmp, "w") as handle:
                handle.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.tif"]
    with atomic_output(str(target)) as tmp:
        with open(tmp, "w") as handle:
            handle.write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["out.tif"]


def test_progress_maps_sub_ranges_and_cancels():
    seen = []
    progress = Progress(lambda fraction, message: seen.append((round(fraction, 3), message)))
    progress.sub(0.5, 1.0).update(0.5, "half of the second half")
    assert seen == [(0.75, "half of the second half")]
    cancelled = Progress(is_cancelled=lambda: True)
    with pytest.raises(Cancelled):
        cancelled.update(0.1)


def test_series_dates_round_trip_and_missing_date_is_an_error(tmp_path):
    grid = {"crs": "EPSG:32650", "transform": from_origin(0, 20, 10, 10), "width": 2, "height": 2}
    path = write_series(str(tmp_path / "s.tif"), [np.zeros((2, 2)), np.ones((2, 2))],
                        ["2019-04-01", "2019-04-02"], grid)
    with rasterio.open(path) as src:
        assert read_band_dates(src) == ["2019-04-01", "2019-04-02"]
        assert src.dtypes == ("float32", "float32") and np.isnan(src.nodata)
    with rasterio.open(tmp_path / "nodates.tif", "w", driver="GTiff", width=2, height=2, count=2,
                       dtype="float32", crs="EPSG:32650", transform=grid["transform"]) as dst:
        dst.write(np.zeros((2, 2, 2), "float32"))
    with rasterio.open(tmp_path / "nodates.tif") as src, pytest.raises(SmdError, match="band 1 has no date"):
        read_band_dates(src)


def test_gdal_cache_limit_caps_and_restores():
    from osgeo import gdal

    before = gdal.GetCacheMax()
    with gdal_cache_limit(64 * 2**20):
        assert gdal.GetCacheMax() == min(before, 64 * 2**20)
    assert gdal.GetCacheMax() == before
