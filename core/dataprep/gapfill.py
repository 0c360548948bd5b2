"""Quality masking, temporal gap filling, 8-day -> daily resampling and Savitzky-Golay smoothing.

Paper Section 3.1: low-quality pixels are dropped with the QC band; a missing value is
filled by linear interpolation between the nearest valid values before and after it when both
lie within 15 days; 8-day products get their intermediate days the same way; then a
Savitzky-Golay filter (half-width m = 5, order d = 4) smooths each pixel's series.

Rules used here (documented because the paper leaves them open):

* a date keeps its own valid value; otherwise it gets the linear interpolation between the
  nearest valid value on or before it and the nearest valid value on or after it, provided
  both are at most ``max_gap_days`` away (the GEE recipe the paper follows). No extrapolation:
  days before the first or after the last valid value stay NaN. A gap whose valid neighbours
  are more than 2 x ``max_gap_days`` apart therefore stays NaN; a shorter one may be filled only
  in its middle.
* Savitzky-Golay (``scipy.signal.savgol_filter``, ``mode="interp"``) runs on each unbroken run of
  values of a pixel that is at least ``2m+1`` days long; values in shorter runs become NaN
  (too few points to smooth).
"""
import re

import numpy as np

from ..common import Progress, SmdError, read_band_dates
from ..grids import block_windows
from ..outputs import check_outputs
from .series_io import (dates_from_numbers, day_numbers, grid_profile,
                        open_raster, open_series_writer, read_masked, require_same_grid)

#: Pixels processed together in the time interpolation (bounds the temporaries per window).
PIXEL_CHUNK = 4096

_CLAUSE = re.compile(
    r"^(?:(?P<bits>bits?)\s*(?P<lo>\d+)(?:\s*-\s*(?P<hi>\d+))?|(?P<value>value|qc))?\s*"
    r"(?P<op>==|!=|<=|>=|<|>|=|not\s+in|in)?\s*(?P<rhs>[0-9][0-9,\s\-]*)$", re.IGNORECASE)


def _parse_values(text, clause):
    values = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        low, sep, high = item.partition("-")
        try:
            low = int(low)
            high = int(high) if sep else low
        except ValueError as err:
            raise SmdError(f"QC rule {clause!r}: {item!r} is not a whole number or a range a-b.") from err
        if high < low:
            raise SmdError(f"QC rule {clause!r}: range {item!r} runs backwards.")
        values.append((low, high))
    if not values:
        raise SmdError(f"QC rule {clause!r} has no values.")
    return values


def parse_qc_rule(text):
    """Parse a QC rule into a function ``qc_array -> bool array`` (True = good quality).

    Grammar (no ``eval``): clauses joined by ``;``, ``&`` or ``and``, all of which must hold.
    A clause is

    * a list of acceptable QC values and ranges: ``0,1,4-7`` (same as ``value in 0,1,4-7``);
    * ``value OP N`` with OP one of ``== != <= >= < >``, or ``value in LIST`` / ``value not in LIST``;
    * ``bits A-B OP N`` / ``bits A-B in LIST``: the unsigned field of bits A..B (bit 0 = least
      significant), e.g. MOD11A1 ``bits 0-1 == 0`` (LST produced, good quality).

    ``None`` or empty text means ``value == 0``. NaN or nodata QC is always bad.
    """
    if text is None or not str(text).strip():
        text = "value == 0"
    clauses = [c.strip() for c in re.split(r";|&|\band\b", str(text), flags=re.IGNORECASE)]
    tests = []
    for clause in clauses:
        match = _CLAUSE.match(clause)
        if not clause or not match:
            raise SmdError(
                f"QC rule {clause!r} is not understood. Use e.g. '0,1' (acceptable values), "
                "'value <= 1', or 'bits 0-1 == 0'; join clauses with ';'.")
        op = re.sub(r"\s+", " ", (match.group("op") or "").lower())
        selector = "bits" if match.group("bits") else "value"
        if not op:
            if match.group("bits") or match.group("value"):
                raise SmdError(f"QC rule {clause!r} lacks a comparison (==, !=, <=, >=, <, >, in).")
            op = "in"
        low_bit = int(match.group("lo")) if match.group("lo") else 0
        high_bit = int(match.group("hi")) if match.group("hi") else low_bit
        if selector == "bits" and not 0 <= low_bit <= high_bit <= 62:
            raise SmdError(f"QC rule {clause!r}: bits must be 0..62 with the first <= the last.")
        values = _parse_values(match.group("rhs"), clause)
        if op not in ("in", "not in") and (len(values) != 1 or values[0][0] != values[0][1]):
            raise SmdError(f"QC rule {clause!r}: '{op}' compares with one number; use 'in' for a list.")
        tests.append((selector, low_bit, high_bit, "==" if op == "=" else op, values))

    def is_good(qc):
        qc = np.asarray(qc, dtype="float64")
        finite = np.isfinite(qc)
        whole = np.where(finite, qc, 0).astype("int64")
        good = finite & (whole == np.where(finite, qc, 0))
        for selector, low_bit, high_bit, op, values in tests:
            field = (whole >> low_bit) & ((1 << (high_bit - low_bit + 1)) - 1) if selector == "bits" else whole
            if op in ("in", "not in"):
                inside = np.zeros(field.shape, dtype=bool)
                for low, high in values:
                    inside |= (field >= low) & (field <= high)
                good &= inside if op == "in" else ~inside
            else:
                number = values[0][0]
                good &= {"==": field == number, "!=": field != number, "<=": field <= number,
                         ">=": field >= number, "<": field < number, ">": field > number}[op]
        return good

    return is_good


def interpolate_in_time(values, days_in, days_out, max_gap_days):
    """Linear interpolation along axis 0 from valid neighbours within ``max_gap_days``.

    Vectorised over pixels: ``np.interp`` is 1-D and ``scipy.interpolate.interp1d`` needs the
    same valid x for every column, while here each pixel has its own valid dates.

    Parameters
    ----------
    values : float array (n_dates_in, n_pixels), NaN = invalid
    days_in : int array (n_dates_in,), strictly increasing day numbers
    days_out : int array (n_dates_out,), increasing day numbers
    max_gap_days : number

    Returns
    -------
    float64 array (n_dates_out, n_pixels)
    """
    values = np.asarray(values, dtype="float64")
    n_in = values.shape[0]
    valid = np.isfinite(values)
    index = np.arange(n_in)[:, np.newaxis]
    last_valid = np.maximum.accumulate(np.where(valid, index, -1), axis=0)
    next_valid = np.minimum.accumulate(np.where(valid, index, n_in)[::-1], axis=0)[::-1]
    at_or_before = np.searchsorted(days_in, days_out, side="right") - 1
    at_or_after = np.searchsorted(days_in, days_out, side="left")
    previous = np.where((at_or_before >= 0)[:, np.newaxis], last_valid[np.clip(at_or_before, 0, n_in - 1)], -1)
    following = np.where((at_or_after < n_in)[:, np.newaxis], next_valid[np.clip(at_or_after, 0, n_in - 1)], n_in)
    usable = (previous >= 0) & (following < n_in)
    previous = np.clip(previous, 0, n_in - 1)
    following = np.clip(following, 0, n_in - 1)
    day = np.asarray(days_out, dtype="float64")[:, np.newaxis]
    day_before = days_in[previous].astype("float64")
    day_after = days_in[following].astype("float64")
    usable &= (day - day_before <= max_gap_days) & (day_after - day <= max_gap_days)
    value_before = np.take_along_axis(values, previous, axis=0)
    value_after = np.take_along_axis(values, following, axis=0)
    span = day_after - day_before
    weight = np.divide(day - day_before, span, out=np.zeros_like(span), where=span > 0)
    result = value_before + weight * (value_after - value_before)
    result[~usable] = np.nan
    return result


def savgol_smooth(series, window_length, polyorder):
    """Savitzky-Golay along axis 0 on each unbroken run of finite values (module rules).

    Runs are grouped by their (first day, last day) across pixels, so each distinct run is one
    vectorised ``savgol_filter`` call over all pixels that share it (a fully valid pixel is one
    run spanning the whole series).

    Parameters
    ----------
    series : float array (n_days, n_pixels), NaN = missing
    window_length, polyorder : int

    Returns
    -------
    float32 array (n_days, n_pixels); NaN outside runs of at least ``window_length`` days.
    """
    from scipy.signal import savgol_filter

    series = np.asarray(series)
    n_days, n_pixels = series.shape
    result = np.full(series.shape, np.nan, dtype="float32")
    if n_days < window_length or n_pixels == 0:
        return result
    padded = np.zeros((n_pixels, n_days + 2), dtype="int8")
    padded[:, 1:-1] = np.isfinite(series).T
    edges = np.diff(padded, axis=1)
    # pixel-major order: the k-th run start of a pixel pairs with its k-th run end
    start_pixel, run_start = np.nonzero(edges == 1)
    _, run_stop = np.nonzero(edges == -1)
    long_enough = run_stop - run_start >= window_length
    start_pixel, run_start, run_stop = start_pixel[long_enough], run_start[long_enough], run_stop[long_enough]
    keys, inverse, counts = np.unique(run_start * (n_days + 1) + run_stop, return_inverse=True,
                                      return_counts=True)
    pixels_by_key = start_pixel[np.argsort(inverse.ravel(), kind="stable")]
    ends = np.cumsum(counts)
    for key, end, count in zip(keys, ends, counts):
        first, stop = divmod(int(key), n_days + 1)
        for chunk_start in range(end - count, end, PIXEL_CHUNK):
            # bounded slices keep the float64 temporaries of savgol_filter small
            columns = pixels_by_key[chunk_start:min(chunk_start + PIXEL_CHUNK, end)]
            result[first:stop, columns] = savgol_filter(series[first:stop, columns].astype("float64"),
                                                        window_length, polyorder, axis=0, mode="interp")
    return result


def _check_options(max_gap_days, savgol_half_width, savgol_order):
    try:
        max_gap_days = float(max_gap_days)
    except (TypeError, ValueError) as err:
        raise SmdError(f"max_gap_days must be a number of days, got {max_gap_days!r}.") from err
    if not max_gap_days >= 0:
        raise SmdError(f"max_gap_days must be 0 or more, got {max_gap_days!r}.")
    half = int(savgol_half_width or 0)
    if half < 0:
        raise SmdError(f"savgol_half_width must be 0 (no smoothing) or more, got {savgol_half_width!r}.")
    order = int(savgol_order)
    if half and not 0 <= order < 2 * half + 1:
        raise SmdError(f"savgol_order must be 0..{2 * half} for a half-width of {half} "
                       f"(window {2 * half + 1}), got {savgol_order!r}.")
    return max_gap_days, half, order


def check_window_fits(n_days, half, first, last):
    """SmdError when the Savitzky-Golay window 2m+1 is longer than the output series."""
    if half and 2 * half + 1 > n_days:
        longest = (n_days - 1) // 2
        hint = (f"use a half-width of at most {longest} (window {2 * longest + 1} days)" if longest >= 1
                else "turn smoothing off (half-width 0)")
        raise SmdError(
            f"The Savitzky-Golay window (2 x {half} + 1 = {2 * half + 1} days) is longer than the series "
            f"({n_days} day(s), {first} to {last}): nothing could be smoothed and the output would be "
            f"empty. {hint[0].upper() + hint[1:]}, or give a longer series.")


def output_days(days_in, daily):
    """Day numbers written: every day from the first to the last date, or the input dates."""
    return np.arange(days_in[0], days_in[-1] + 1, dtype="int64") if daily else np.asarray(days_in)


def gap_fill_array(values, dates, *, good=None, max_gap_days=15, daily=True, savgol_half_width=5,
                   savgol_order=4):
    """The whole gap-fill chain on an in-memory array (what :func:`gap_fill` does per window).

    Parameters
    ----------
    values : float array (n_dates, ...) NaN = nodata
    dates : list of ISO dates, strictly increasing
    good : bool array like ``values`` or None; False marks low-quality values

    Returns
    -------
    (float32 array (n_dates_out, ...), list of output ISO dates)
    """
    max_gap_days, half, order = _check_options(max_gap_days, savgol_half_width, savgol_order)
    values = np.asarray(values, dtype="float32")
    days_in = day_numbers(dates)
    if np.any(np.diff(days_in) <= 0):
        raise SmdError("The series dates must be strictly increasing.")
    days_out = output_days(days_in, daily)
    check_window_fits(len(days_out), half, dates[0], dates[-1])
    spatial = values.shape[1:]
    flat = values.reshape(values.shape[0], -1)
    if good is not None:
        flat = np.where(np.asarray(good).reshape(flat.shape), flat, np.nan)
    result = np.empty((len(days_out), flat.shape[1]), dtype="float32")
    for start in range(0, flat.shape[1], PIXEL_CHUNK):
        result[:, start:start + PIXEL_CHUNK] = interpolate_in_time(flat[:, start:start + PIXEL_CHUNK], days_in,
                                                                   days_out, max_gap_days)
    if half:
        # over the whole window, so pixels sharing a run are smoothed in one call
        result = savgol_smooth(result, 2 * half + 1, order)
    return result.reshape((len(days_out),) + spatial), dates_from_numbers(days_out)


def _empty_output_error(series_path, qc_path, qc_rule, input_valid, qc_good, qc_seen, max_gap_days, half):
    """Why a gap-filled output would hold no valid value, and what to change."""
    if input_valid == 0:
        return SmdError(f"{series_path} holds no valid value (every pixel of every date is nodata); "
                        "the output would be empty. Check the input series and its nodata value.")
    if qc_path and qc_good == 0:
        seen = ", ".join(f"{v:g}" for v in sorted(qc_seen)[:10]) or "none"
        return SmdError(f"The QC rule {qc_rule or 'value == 0'!r} rejects every valid value of {series_path} "
                        f"(QC values found in {qc_path}: {seen}); the output would be empty. Loosen the QC "
                        "rule (e.g. accept more values or bits).")
    return SmdError(f"Gap filling {series_path} leaves no valid value: every pixel's valid values are too "
                    f"sparse for interpolation within {max_gap_days:g} days"
                    + (f" and smoothing over runs of {2 * int(half) + 1} days" if half else "")
                    + "; the output would be empty. Raise the maximum gap, lower the Savitzky-Golay "
                      "half-width, or loosen the QC rule.")


def gap_fill(series_path, output_path, *, qc_path=None, qc_rule=None, max_gap_days=15, daily=True,
             savgol_half_width=5, savgol_order=4, block_size=256, progress=None):
    """Mask low quality, fill gaps in time, resample to daily and smooth a raster time series.

    Parameters
    ----------
    series_path : path
        Multi-band GeoTIFF, one band per date (band descriptions ``YYYY-MM-DD``).
    output_path : path
        GeoTIFF series written (float32, NaN nodata, bands described by date).
    qc_path : path, optional
        QC raster on the same grid with the same band dates (band order may differ).
    qc_rule : str, optional
        Which QC values are good, see :func:`parse_qc_rule` (default ``value == 0``).
    max_gap_days : float
        Both valid neighbours used for interpolation must be within this many days (paper: 15).
    daily : bool
        Write every day from the first to the last date (8-day products -> daily); else
        the input dates.
    savgol_half_width, savgol_order : int
        Savitzky-Golay half-width m (window 2m+1) and polynomial order d (paper: 5, 4);
        half-width 0 turns smoothing off.
    block_size : int
        Spatial window in pixels; all dates of one window are held in memory (for 256 and
        209 output days about 300 MB at peak, whatever the raster size).
    progress : Progress, optional

    Returns
    -------
    dict with ``dates`` (the dates written) and the counts of ``valid_values`` and
    ``nodata_values`` in the written output.
    """
    progress = Progress.wrap(progress)
    _check_options(max_gap_days, savgol_half_width, savgol_order)
    is_good = parse_qc_rule(qc_rule) if qc_path else None
    inputs = [series_path] + ([qc_path] if qc_path else [])
    check_outputs([(output_path, "raster")], inputs=inputs)
    src = open_raster(series_path, "time series")
    with src:
        dates = read_band_dates(src)
        if len(dates) < 2:
            raise SmdError(f"{series_path}: a time series needs at least 2 bands described by date "
                           "(YYYY-MM-DD); this raster has none or one.")
        order = np.argsort(dates)
        dates = [dates[i] for i in order]
        bands = [int(i) + 1 for i in order]
        grid = grid_profile(src)
        qc = None
        if qc_path:
            qc = open_raster(qc_path, "QC raster")
        try:
            if qc is not None:
                require_same_grid(grid, grid_profile(qc), series_path, qc_path)
                qc_dates = read_band_dates(qc)
                missing = sorted(set(dates) - set(qc_dates))
                if missing:
                    raise SmdError(f"The QC raster {qc_path} lacks the dates {', '.join(missing[:5])}"
                                   f"{' ...' if len(missing) > 5 else ''}; it needs one band per series date.")
                qc_bands = [qc_dates.index(d) + 1 for d in dates]
            days_out = output_days(day_numbers(dates), daily)
            out_dates = dates_from_numbers(days_out)
            check_window_fits(len(out_dates), int(savgol_half_width or 0), out_dates[0], out_dates[-1])
            windows = list(block_windows(grid["width"], grid["height"], block_size))
            valid_count = input_valid = qc_good = 0
            qc_seen = set()
            with open_series_writer(output_path, grid, len(out_dates), out_dates) as dst:
                for done, window in enumerate(windows):
                    progress.check()
                    values = read_masked(src, bands, window)
                    input_valid += int(np.isfinite(values).sum())
                    good = None
                    if qc is not None:
                        qc_values = read_masked(qc, qc_bands, window)
                        good = is_good(qc_values)
                        qc_good += int((good & np.isfinite(values)).sum())
                        if len(qc_seen) < 20:
                            qc_seen.update(np.unique(qc_values[np.isfinite(qc_values)])[:20].tolist())
                    result, _ = gap_fill_array(values, dates, good=good, max_gap_days=max_gap_days,
                                               daily=daily, savgol_half_width=savgol_half_width,
                                               savgol_order=savgol_order)
                    valid_count += int(np.isfinite(result).sum())
                    dst.write(result, window=window)
                    progress.update((done + 1) / len(windows), f"Gap filling: block {done + 1}/{len(windows)}")
                if valid_count == 0:
                    raise _empty_output_error(series_path, qc_path, qc_rule, input_valid, qc_good, qc_seen,
                                              max_gap_days, savgol_half_width)
        finally:
            if qc is not None:
                qc.close()
    total = len(out_dates) * grid["width"] * grid["height"]
    return {"dates": out_dates, "valid_values": valid_count, "nodata_values": total - valid_count}
