"""Gap filling: QC masking, +/-15-day interpolation, 8-day -> daily, Savitzky-Golay, window independence."""
import datetime as dt
import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from scipy.signal import savgol_filter

from smdownscale.core.common import SmdError
from smdownscale.core.dataprep.gapfill import gap_fill, gap_fill_array, parse_qc_rule

TRANSFORM = from_origin(0.0, 1000.0, 500.0, 500.0)


def iso_days(start, count, step=1):
    first = dt.date.fromisoformat(start)
    return [(first + dt.timedelta(days=step * i)).isoformat() for i in range(count)]


def write_series(path, values, dates, *, transform=TRANSFORM, nodata=np.nan, dtype="float32", describe=True):
    values = np.asarray(values, dtype=dtype)
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[2], height=values.shape[1],
                       count=values.shape[0], dtype=dtype, crs="EPSG:32650", transform=transform,
                       nodata=nodata) as dst:
        dst.write(values)
        if describe:
            for band, date in enumerate(dates, start=1):
                dst.set_band_description(band, date)
    return str(path)


def read(path):
    with rasterio.open(path) as ds:
        return ds.read(), list(ds.descriptions)


def test_linear_gap_filled_exactly_and_long_gap_stays_nan(tmp_path):
    dates = iso_days("2019-04-01", 50)
    values = np.full((50, 1, 3), np.nan)
    # pixel 0: valid day 0 = 1.0 and day 10 = 3.0 (gap of 9 missing days) -> 1 + 0.2 k
    values[0, 0, 0], values[10, 0, 0] = 1.0, 3.0
    # pixel 1: valid days 0-4 and 40-49, gap 5..39: neighbours 36 days apart -> never both within 15
    values[0:5, 0, 1] = 0.3
    values[40:, 0, 1] = 0.5
    # pixel 2: valid day 10 = 0.0 and day 30 = 2.0 -> only days 15..25 have both within 15 days
    values[10, 0, 2], values[30, 0, 2] = 0.0, 2.0
    src = write_series(tmp_path / "lst.tif", values, dates)
    out = tmp_path / "filled.tif"
    info = gap_fill(src, str(out), savgol_half_width=0)
    result, descriptions = read(out)
    assert descriptions == dates and info["dates"] == dates
    expected0 = np.full(50, np.nan)
    expected0[0:11] = 1.0 + 0.2 * np.arange(11)
    np.testing.assert_allclose(result[:, 0, 0], expected0, rtol=0, atol=1e-6)
    assert np.isnan(result[5:40, 0, 1]).all()
    assert (result[0:5, 0, 1] == np.float32(0.3)).all() and (result[40:, 0, 1] == np.float32(0.5)).all()
    expected2 = np.full(50, np.nan)
    expected2[10], expected2[30] = 0.0, 2.0
    expected2[15:26] = 0.1 * (np.arange(15, 26) - 10)
    np.testing.assert_allclose(result[:, 0, 2], expected2, rtol=0, atol=1e-6)
    assert info["valid_values"] == 11 + 15 + 13


def test_eight_day_to_daily(tmp_path):
    dates = ["2019-04-07", "2019-04-15", "2019-04-23"]
    values = np.array([[[0.2, 0.2]], [[0.6, np.nan]], [[0.4, 0.4]]])
    src = write_series(tmp_path / "ndvi.tif", values, dates)
    out = tmp_path / "daily.tif"
    gap_fill(src, str(out), savgol_half_width=0)
    result, descriptions = read(out)
    assert descriptions == iso_days("2019-04-07", 17)
    expected = np.concatenate([0.2 + 0.05 * np.arange(9), 0.6 - 0.025 * np.arange(1, 9)])
    np.testing.assert_allclose(result[:, 0, 0], expected, rtol=0, atol=1e-6)
    # a missing middle composite: neighbours 16 days apart, each day within 15 of both -> 0.2 .. 0.4
    np.testing.assert_allclose(result[:, 0, 1], 0.2 + 0.2 * np.arange(17) / 16, rtol=0, atol=1e-6)
    # daily=False keeps the input dates and fills the missing one: 0.3 on 2019-04-15
    out8 = tmp_path / "eight.tif"
    gap_fill(src, str(out8), savgol_half_width=0, daily=False)
    result8, descriptions8 = read(out8)
    assert descriptions8 == dates
    np.testing.assert_allclose(result8[:, 0, 1], [0.2, 0.3, 0.4], rtol=0, atol=1e-6)


def test_qc_mask_rules(tmp_path):
    dates = iso_days("2019-05-01", 5)
    values = np.array([1.0, 2.0, 99.0, 4.0, 5.0]).reshape(5, 1, 1)
    qc = np.array([0, 0, 3, 0, 4], dtype="uint8").reshape(5, 1, 1)   # 3: bits 0-1 = 3 (bad); 4: bit 2 only
    src = write_series(tmp_path / "lst.tif", values, dates)
    # QC bands in another order than the series: matched by date
    qc_path = write_series(tmp_path / "qc.tif", qc[::-1], dates[::-1], dtype="uint8", nodata=255)
    out = tmp_path / "out.tif"
    gap_fill(src, str(out), qc_path=qc_path, qc_rule="bits 0-1 == 0", savgol_half_width=0)
    result, _ = read(out)
    np.testing.assert_allclose(result[:, 0, 0], [1, 2, 3, 4, 5], rtol=0, atol=1e-6)  # 99 masked, refilled
    gap_fill(src, str(out), qc_path=qc_path, qc_rule="0", savgol_half_width=0)  # only QC 0 good
    result, _ = read(out)
    np.testing.assert_allclose(result[:, 0, 0], [1, 2, 3, 4, np.nan], rtol=0, atol=1e-6)
    rule = parse_qc_rule("bits 2 == 0; value in 0-3")
    assert rule(np.array([0, 3, 4, 7, np.nan])).tolist() == [True, True, False, False, False]
    assert parse_qc_rule("value <= 1")(np.array([0, 1, 2])).tolist() == [True, True, False]
    assert parse_qc_rule("not in 2,5-6")(np.array([1, 2, 5, 6, 7])).tolist() == [True, False, False, False, True]
    for bad in ("__import__('os')", "bits 0-1", "bits 3-1 == 0", "value == 1,2", "0; ", "x > 1"):
        with pytest.raises(SmdError):
            parse_qc_rule(bad)


def test_savgol_equals_scipy_on_filled_series(tmp_path):
    rng = np.random.default_rng(3)
    days = 40
    dates = iso_days("2019-06-01", days)
    truth = 0.3 + 0.2 * np.sin(np.arange(days) / 6.0)
    values = np.empty((days, 1, 3))
    values[:, 0, 0] = truth + rng.normal(0, 0.02, days)
    values[:, 0, 1] = values[:, 0, 0]
    values[12:16, 0, 1] = np.nan           # short gap, filled linearly before smoothing
    values[:, 0, 2] = values[:, 0, 0]
    values[:8, 0, 2] = np.nan              # leading NaN (no extrapolation), then a 6-day valid run ...
    values[14:, 0, 2] = np.nan             # ... shorter than the 11-day window -> stays NaN
    src = write_series(tmp_path / "noisy.tif", values, dates)
    out = tmp_path / "smooth.tif"
    gap_fill(src, str(out))                 # m = 5, d = 4 by default
    result, _ = read(out)
    stored = values.astype("float32").astype("float64")
    np.testing.assert_allclose(result[:, 0, 0], savgol_filter(stored[:, 0, 0], 11, 4), rtol=0, atol=1e-6)
    filled = stored[:, 0, 1].copy()
    filled[12:16] = filled[11] + (filled[16] - filled[11]) * np.arange(1, 5) / 5
    np.testing.assert_allclose(result[:, 0, 1], savgol_filter(filled, 11, 4), rtol=0, atol=1e-6)
    assert np.isnan(result[:, 0, 2]).all()


def test_window_wise_equals_whole_array(tmp_path):
    rng = np.random.default_rng(7)
    dates = iso_days("2019-04-07", 12, step=8)
    values = rng.uniform(0.1, 0.9, size=(12, 7, 9))
    values[rng.uniform(size=values.shape) < 0.25] = np.nan
    src = write_series(tmp_path / "lai.tif", values, dates)
    small, large = tmp_path / "small.tif", tmp_path / "large.tif"
    gap_fill(src, str(small), block_size=2)
    gap_fill(src, str(large), block_size=256)
    a, _ = read(small)
    b, _ = read(large)
    whole, whole_dates = gap_fill_array(values.astype("float32"), dates)
    assert a.shape == (89, 7, 9) and len(whole_dates) == 89
    # same NaN pattern; values equal up to float32 rounding (savgol_filter fits the series ends
    # with a least-squares solve whose last bit depends on how many pixels are solved together)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(np.isnan(a), np.isnan(whole))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    np.testing.assert_allclose(a, whole, rtol=0, atol=1e-6)
    assert np.isfinite(a).sum() > 0.5 * a.size


def test_bad_inputs_leave_nothing(tmp_path):
    dates = iso_days("2019-04-01", 4)
    values = np.ones((4, 2, 2))
    src = write_series(tmp_path / "s.tif", values, dates)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = str(out_dir / "o.tif")
    undated = write_series(tmp_path / "undated.tif", values, dates, describe=False)
    with pytest.raises(SmdError, match="no date"):
        gap_fill(undated, out)
    shifted = write_series(tmp_path / "qc_shift.tif", values, dates, transform=from_origin(500.0, 1000.0, 500.0, 500.0))
    with pytest.raises(SmdError, match="not on the grid"):
        gap_fill(src, out, qc_path=shifted)
    short_qc = write_series(tmp_path / "qc_short.tif", values[:3], dates[:3])
    with pytest.raises(SmdError, match="lacks the dates 2019-04-04"):
        gap_fill(src, out, qc_path=short_qc)
    with pytest.raises(SmdError, match="not understood"):
        gap_fill(src, out, qc_path=short_qc, qc_rule="lambda: 0")
    with pytest.raises(SmdError, match="savgol_order"):
        gap_fill(src, out, savgol_order=11)
    with pytest.raises(SmdError, match="also an input"):
        gap_fill(src, src)
    assert os.listdir(out_dir) == []


def test_progress_and_cancel_leave_no_output(tmp_path):
    from smdownscale.core.common import Cancelled, Progress

    dates = iso_days("2019-04-01", 5)
    src = write_series(tmp_path / "s.tif", np.ones((5, 4, 4)), dates)
    seen = []
    gap_fill(src, str(tmp_path / "ok.tif"), savgol_half_width=0, block_size=2,
             progress=Progress(lambda fraction, message: seen.append(fraction)))
    assert seen == [0.25, 0.5, 0.75, 1.0]
    calls = []
    cancel_after_two = Progress(None, lambda: calls.append(1) or len(calls) > 2)
    with pytest.raises(Cancelled):
        # (smoothing off: an 11-day window on a 5-day series is refused before any work)
        gap_fill(src, str(tmp_path / "cancelled.tif"), savgol_half_width=0, block_size=2,
                 progress=cancel_after_two)
    assert sorted(os.listdir(tmp_path)) == ["ok.tif", "s.tif"]
