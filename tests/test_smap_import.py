"""SMAP L4 HDF5 import on the real NASA granule subsets in realdata/smap_l4_harmony_maskfill."""
import datetime as dt
import os
import shutil

import numpy as np
import pytest

from conftest import REALDATA

h5py = pytest.importorskip("h5py")
rasterio = pytest.importorskip("rasterio")

from smdownscale.core.common import Cancelled, Progress, SmdError  # noqa: E402
from smdownscale.core.dataprep.smap import (  # noqa: E402
    M09_CELL_SIZE, M09_ULX, M09_ULY, import_smap_l4, parse_time_window, read_granule_time)

SMAP_DIR = os.path.join(REALDATA, "smap_l4_harmony_maskfill")
INPUT = os.path.join(SMAP_DIR, "SMAP_L4_SM_aup_input.h5")
COMPARISON = os.path.join(SMAP_DIR, "SMAP_L4_SM_aup_comparison.h5")
UTM = os.path.join(SMAP_DIR, "SMAP_L4_SM_aup_UTM_input.h5")
LATLON = os.path.join(SMAP_DIR, "SMAP_L4_SM_aup_dimension_list_input.h5")

pytestmark = pytest.mark.skipif(not os.path.exists(INPUT),
                                reason=f"real SMAP test granules not found in {SMAP_DIR}")


def _h5_values(path, name):
    with h5py.File(path, "r") as h5:
        values = h5[name][()].astype("float32")
    values[values == -9999.0] = np.nan
    return values


def _granule_copy(tmp_path, name, *, hours_shift, scale):
    """A copy of the real granule with its /time shifted and its surface values scaled."""
    path = str(tmp_path / name)
    shutil.copyfile(INPUT, path)
    with h5py.File(path, "r+") as h5:
        h5["time"][0] = h5["time"][0] + hours_shift * 3600.0
        data = h5["Analysis_Data/sm_surface_analysis"]
        values = data[()]
        valid = values != -9999.0
        values[valid] *= scale
        data[...] = values
    return path


def test_subset_georeferenced_from_grid_definition(tmp_path):
    out = str(tmp_path / "sm.tif")
    result = import_smap_l4([INPUT], out)
    assert result["variable"] == "Analysis_Data/sm_surface_analysis"
    assert (result["row_offset"], result["column_offset"]) == (40, 87)
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 6933
        assert (src.width, src.height, src.count) == (1123, 508, 1)
        assert src.dtypes == ("float32",)
        assert src.descriptions == ("2020-01-28",)
        t = src.transform
        assert t.a == M09_CELL_SIZE == 9008.055210146 and t.e == -9008.055210146
        assert t.b == 0 and t.d == 0
        assert t.c == pytest.approx(-17367530.4451615 + 87 * 9008.055210146, abs=1e-6)
        assert t.f == pytest.approx(7314540.8306386 - 40 * 9008.055210146, abs=1e-6)
        band = src.read(1)
    expected = _h5_values(INPUT, "Analysis_Data/sm_surface_analysis")
    assert np.array_equal(np.isnan(band), np.isnan(expected))
    assert int(np.isnan(band).sum()) == 324011  # -9999 cells of the granule
    assert np.array_equal(band[~np.isnan(band)], expected[~np.isnan(expected)])
    # cell centres of the rebuilt grid agree with the file's (rounded) /x /y within 1 m
    with h5py.File(INPUT, "r") as h5:
        x, y = h5["x"][()], h5["y"][()]
    centres_x = t.c + (np.arange(1123) + 0.5) * t.a
    centres_y = t.f + (np.arange(508) + 0.5) * t.e
    assert np.abs(centres_x - x).max() < 1.0 and np.abs(centres_y - y).max() < 1.0


def test_second_subset_lands_on_the_same_cells(tmp_path):
    """comparison.h5 is another subset of the same granule: placed independently, its cells
    must hold exactly the values the big subset has at those global cells."""
    small = import_smap_l4(COMPARISON, str(tmp_path / "small.tif"), variable="sm_profile_analysis")
    assert (small["row_offset"], small["column_offset"]) == (289, 664)
    with rasterio.open(tmp_path / "small.tif") as src:
        small_values = src.read(1)
        small_origin = (src.transform.c, src.transform.f)
    assert small_origin == pytest.approx((M09_ULX + 664 * M09_CELL_SIZE, M09_ULY - 289 * M09_CELL_SIZE), abs=1e-6)
    big = _h5_values(INPUT, "Analysis_Data/sm_profile_analysis")
    assert np.array_equal(small_values, big[289 - 40:289 - 40 + 56, 664 - 87:664 - 87 + 64])


def test_reprojected_utm_granule_is_refused(tmp_path):
    out = tmp_path / "utm.tif"
    with pytest.raises(SmdError, match="not on the EASE-Grid 2.0 9 km grid.*cell_row"):
        import_smap_l4([UTM], str(out), variable="Analysis_Data/sm_profile_analysis")
    assert os.listdir(tmp_path) == []


def test_latlon_granule_is_refused(tmp_path):
    with pytest.raises(SmdError, match="latitude_longitude"):
        import_smap_l4([LATLON], str(tmp_path / "ll.tif"), variable="sm_rootzone_analysis")
    assert os.listdir(tmp_path) == []


def test_unknown_variable_lists_available_datasets(tmp_path):
    with pytest.raises(SmdError) as err:
        import_smap_l4([INPUT], str(tmp_path / "x.tif"), variable="Geophysical_Data/sm_rootzone")
    message = str(err.value)
    assert "Analysis_Data/sm_surface_analysis" in message and "Analysis_Data/sm_profile_analysis" in message
    # no surface soil moisture and no variable chosen: the error lists what the file holds
    with pytest.raises(SmdError, match="Analysis_Data/sm_profile_analysis"):
        import_smap_l4([UTM], str(tmp_path / "x.tif"))
    assert os.listdir(tmp_path) == []


def test_granule_time_from_time_dataset():
    # the granules' original names (in their ISO metadata) are ..._20200128T150000_...,
    # ..._20150401T000000_... and ..._20150401T060000_...
    assert read_granule_time(INPUT) == dt.datetime(2020, 1, 28, 15, 0, 0)
    assert read_granule_time(UTM) == dt.datetime(2015, 4, 1, 0, 0, 0)
    assert read_granule_time(LATLON) == dt.datetime(2015, 4, 1, 6, 0, 0)


def test_several_granules_time_window_and_same_date_average(tmp_path):
    morning = _granule_copy(tmp_path, "morning.h5", hours_shift=-8, scale=0.5)       # 01-28 07:00
    next_day = _granule_copy(tmp_path, "next.h5", hours_shift=24 - 8, scale=0.25)    # 01-29 07:00
    original = _granule_copy(tmp_path, "orig.h5", hours_shift=0, scale=1.0)         # 01-28 15:00
    surface = _h5_values(INPUT, "Analysis_Data/sm_surface_analysis")

    out = str(tmp_path / "window.tif")
    result = import_smap_l4([next_day, original, morning], out, time_window="06:00-09:00")
    assert result["dates"] == ["2020-01-28", "2020-01-29"]
    assert result["granules_skipped"] == ["orig.h5"]
    with rasterio.open(out) as src:
        assert src.descriptions == ("2020-01-28", "2020-01-29")
        first, second = src.read(1), src.read(2)
    np.testing.assert_array_equal(first, surface * np.float32(0.5))
    np.testing.assert_array_equal(second, surface * np.float32(0.25))

    # no window: the two granules of 01-28 are averaged cell by cell
    out_all = str(tmp_path / "all.tif")
    result = import_smap_l4([original, morning, next_day], out_all)
    assert result["granules_used"]["2020-01-28"] == ["morning.h5", "orig.h5"]
    with rasterio.open(out_all) as src:
        np.testing.assert_allclose(src.read(1), surface * 0.75, rtol=1e-6)

    with pytest.raises(SmdError, match="No granule falls inside"):
        import_smap_l4([original, morning], str(tmp_path / "none.tif"), time_window=("10:00", "11:00"))
    assert not os.path.exists(tmp_path / "none.tif")


def test_extent_clip_snaps_to_whole_cells(tmp_path):
    # a box cutting through cells: columns 500..510 (partly), rows 100..105 (partly), global index
    xmin = M09_ULX + 500.4 * M09_CELL_SIZE
    xmax = M09_ULX + 509.2 * M09_CELL_SIZE
    ymax = M09_ULY - 100.7 * M09_CELL_SIZE
    ymin = M09_ULY - 104.1 * M09_CELL_SIZE
    out = str(tmp_path / "clip.tif")
    result = import_smap_l4([INPUT], out, extent=(xmin, ymin, xmax, ymax, "EPSG:6933"))
    assert (result["row_offset"], result["column_offset"]) == (100, 500)
    assert (result["width"], result["height"]) == (10, 5)
    surface = _h5_values(INPUT, "Analysis_Data/sm_surface_analysis")
    with rasterio.open(out) as src:
        assert src.transform.c == pytest.approx(M09_ULX + 500 * M09_CELL_SIZE, abs=1e-6)
        np.testing.assert_array_equal(src.read(1), surface[100 - 40:105 - 40, 500 - 87:510 - 87])

    # the same kind of clip given in lon/lat
    result = import_smap_l4([INPUT], str(tmp_path / "ll.tif"), extent=(-100.0, 35.0, -99.0, 36.0, "EPSG:4326"))
    # EASE2 x = R_eff * lon (rad) * cos(30 deg)/k: -100 deg -> column 1928 - 100/360*3856 ~ 856.9
    assert result["column_offset"] == 856 and result["width"] == 12
    with pytest.raises(SmdError, match="does not overlap"):
        import_smap_l4([INPUT], str(tmp_path / "far.tif"), extent=(0.0, 0.0, 10.0, 10.0, "EPSG:4326"))


def test_parse_time_window():
    assert parse_time_window("06:00-09:00") == (dt.time(6), dt.time(9))
    assert parse_time_window(("6", "9:30")) == (dt.time(6), dt.time(9, 30))
    assert parse_time_window("  ") is None and parse_time_window(None) is None
    assert parse_time_window("22:00-02:00") == (dt.time(22), dt.time(2))
    for bad in ("06:00", "25:00-26:00", "06:00-06:00", "morning-noon"):
        with pytest.raises(SmdError):
            parse_time_window(bad)


def test_cancel_leaves_nothing(tmp_path):
    with pytest.raises(Cancelled):
        import_smap_l4([INPUT], str(tmp_path / "c.tif"), progress=Progress(is_cancelled=lambda: True))
    assert os.listdir(tmp_path) == []
