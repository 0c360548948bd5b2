"""Sentinel-1 sliding-window composite: linear-power means by hand, windows, warping, bad input."""
import math
import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from smdownscale.core.common import SmdError
from smdownscale.core.dataprep.s1 import s1_composite

TRANSFORM = from_origin(400000.0, 3500000.0, 100.0, 100.0)


def write_scene(path, values, *, transform=TRANSFORM, dates=None, nodata=np.nan, crs="EPSG:32650", tags=None):
    values = np.asarray(values, dtype="float32")
    if values.ndim == 2:
        values = values[np.newaxis]
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[2], height=values.shape[1],
                       count=values.shape[0], dtype="float32", crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(values)
        for band, date in enumerate(dates or [], start=1):
            dst.set_band_description(band, date)
        if tags:
            dst.update_tags(**tags)
    return str(path)


def db_mean(*db_values):
    """Hand formula: mean in linear power, back to dB."""
    return 10 * math.log10(sum(10 ** (v / 10) for v in db_values) / len(db_values))


def scenes(tmp_path):
    a = write_scene(tmp_path / "S1A_VV_2019-04-01.tif", [[-10.0, -20.0], [-8.0, np.nan]])
    b = write_scene(tmp_path / "s1_vv_b.tif", [[-13.0, -20.0], [-12.0, -15.0]], tags={"DATE": "2019-04-07"})
    c = write_scene(tmp_path / "S1B_VV_20190413.tif", [[-16.0, -20.0], [-9.0, -14.0]])
    return [a, b, c]


def test_daily_means_in_linear_power(tmp_path):
    out = tmp_path / "vv.tif"
    info = s1_composite(scenes(tmp_path), str(out))
    with rasterio.open(out) as ds:
        dates = list(ds.descriptions)
        values = ds.read()
    assert dates[0] == "2019-04-01" and dates[-1] == "2019-04-13" and len(dates) == 13
    assert info["scenes"] == 3 and info["days_without_scene"] == []
    day = {d: values[i] for i, d in enumerate(dates)}
    # 2019-04-04: scenes of 04-01 and 04-07 (3 days each side); 04-13 is 9 days away
    assert day["2019-04-04"][0, 0] == pytest.approx(db_mean(-10, -13), abs=1e-5)     # -11.2459 dB
    assert db_mean(-10, -13) == pytest.approx(-11.24594, abs=1e-4)
    assert day["2019-04-04"][0, 1] == pytest.approx(-20.0, abs=1e-5)
    # pixel (1,1) has no value on 04-01: mean of the scenes that have one
    assert day["2019-04-04"][1, 1] == pytest.approx(-15.0, abs=1e-5)
    # 2019-04-07: all three (0 and 6 days away)
    assert day["2019-04-07"][0, 0] == pytest.approx(db_mean(-10, -13, -16), abs=1e-5)
    assert day["2019-04-07"][1, 0] == pytest.approx(db_mean(-8, -12, -9), abs=1e-5)
    # 2019-04-08: 04-07 and 04-13 (04-01 is 7 days away)
    assert day["2019-04-08"][0, 0] == pytest.approx(db_mean(-13, -16), abs=1e-5)
    # linear output
    lin = tmp_path / "vv_linear.tif"
    s1_composite(scenes(tmp_path), str(lin), output_db=False)
    with rasterio.open(lin) as ds:
        assert ds.read(4)[0, 0] == pytest.approx((0.1 + 10 ** -1.3) / 2, rel=1e-6)


def test_window_start_end_and_linear_inputs(tmp_path):
    a = write_scene(tmp_path / "lin_2019-04-01.tif", [[0.1, 0.2]])
    b = write_scene(tmp_path / "lin_2019-04-13.tif", [[0.3, 0.0]])
    out = tmp_path / "c.tif"
    info = s1_composite([a, b], str(out), input_db=False, output_db=False, half_window_days=2,
                        start="2019-04-01", end="2019-04-16")
    with rasterio.open(out) as ds:
        values = ds.read()[:, 0, :]
        assert ds.descriptions[-1] == "2019-04-16"
    # +/-2 days: 04-01..04-03 see scene a, 04-11..04-15 see scene b, the rest none
    np.testing.assert_allclose(values[0:3, 0], 0.1, rtol=1e-6)
    assert np.isnan(values[3:10]).all()
    np.testing.assert_allclose(values[10:15, 0], 0.3, rtol=1e-6)
    assert np.isnan(values[15]).all()
    assert info["days_without_scene"] == ["2019-04-%02d" % d for d in (4, 5, 6, 7, 8, 9, 10, 16)]
    # zero linear power -> NaN in dB, never -inf
    db_out = tmp_path / "db.tif"
    s1_composite([a, b], str(db_out), input_db=False, half_window_days=2)
    with rasterio.open(db_out) as ds:
        band = ds.read(13)
    assert band[0, 0] == pytest.approx(10 * math.log10(0.3), abs=1e-5) and np.isnan(band[0, 1])


def test_series_input_and_warp_onto_first_grid(tmp_path):
    first = write_scene(tmp_path / "vv_2019-05-01.tif", np.full((4, 4), -10.0))
    # a two-date series on a 2x coarser grid over the same extent, constant values
    coarse = from_origin(400000.0, 3500000.0, 200.0, 200.0)
    series = write_scene(tmp_path / "series.tif", np.stack([np.full((2, 2), -13.0), np.full((2, 2), -7.0)]),
                         transform=coarse, dates=["2019-05-03", "2019-05-20"])
    out = tmp_path / "vv.tif"
    info = s1_composite([first, series], str(out), half_window_days=3)
    with rasterio.open(out) as ds:
        assert ds.transform == TRANSFORM and ds.shape == (4, 4)
        dates = list(ds.descriptions)
        values = ds.read()
    assert info["scenes"] == 3 and dates[0] == "2019-05-01" and dates[-1] == "2019-05-20"
    np.testing.assert_allclose(values[dates.index("2019-05-02")], db_mean(-10, -13), atol=1e-5)
    np.testing.assert_allclose(values[dates.index("2019-05-18")], -7.0, atol=1e-5)
    assert np.isnan(values[dates.index("2019-05-10")]).all()


def test_bad_inputs_leave_nothing(tmp_path):
    good = write_scene(tmp_path / "vv_2019-04-01.tif", [[-10.0]])
    undated = write_scene(tmp_path / "vv.tif", [[-10.0]])
    negative = write_scene(tmp_path / "vv_2019-04-02.tif", [[-3.0]])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = str(out_dir / "vv.tif")
    with pytest.raises(SmdError, match="cannot tell its date"):
        s1_composite([good, undated], out)
    with pytest.raises(SmdError, match="look like dB"):
        s1_composite([good, negative], out, input_db=False)
    with pytest.raises(SmdError, match="before the start"):
        s1_composite([good], out, start="2019-04-05", end="2019-04-01")
    with pytest.raises(SmdError, match="No scene"):
        s1_composite([good], out, start="2019-06-01", end="2019-06-05")
    with pytest.raises(SmdError, match="YYYY-MM-DD"):
        s1_composite([good], out, start="April")
    assert os.listdir(out_dir) == []
