"""Period maps of a soil-moisture series (paper Figure 9): temporal mean, standard deviation and
count of valid dates per pixel, optionally over a date range.

Block-wise and memory flat: for each block of ``block_size`` x ``block_size`` pixels the selected
bands are read one at a time and folded into running count / mean / sum of squared deviations
(Welford's update, numerically stable in float64), so memory is a few block-sized arrays whatever
the number of dates or the raster size. The standard deviation is the population one
(``numpy.nanstd`` with ``ddof=0``) over each pixel's valid dates; pixels without a valid date are
nodata in the mean and the std and 0 in the count. The outputs are written through
:func:`core.outputs.atomic_output` and :class:`core.outputs.CheckedRasterWriter`, all of them or
none.
"""
import contextlib
import math
import os
import time

import numpy as np

from .common import (SOIL_MOISTURE_RANGE, Progress, SmdError, gdal_cache_limit, parse_date, read_band_dates,
                     series_profile, soil_moisture_units_hint, whole_number)
from .outputs import CheckedRasterWriter, check_outputs, outputs_together
from .reports.files import report_staging, write_report_into

STATISTICS = ("mean", "std", "count")
DEFAULT_BLOCK_SIZE = 512
#: longest side of the preview arrays drawn in the report
PREVIEW_SIZE = 600
REPORT_EXTENSIONS = (".html", ".htm")


def parse_period(start_date=None, end_date=None):
    """(start, end) as ISO texts or None; SmdError for a bad date or an end before the start."""
    start = parse_date(start_date).isoformat() if start_date not in (None, "") and str(start_date).strip() else None
    end = parse_date(end_date).isoformat() if end_date not in (None, "") and str(end_date).strip() else None
    if start and end and end < start:
        raise SmdError(f"The end date {end} is before the start date {start}; swap them.")
    return start, end


def parse_block_size(value):
    """BLOCK_SIZE: the edge of the blocks processed at once, a whole number of pixels >= 16."""
    return whole_number(value, "block_size", minimum=16,
                        advice="use blocks of at least 16 x 16 pixels (default 512).")


def select_dates(dates, start=None, end=None):
    """Band numbers (1-based) and dates of ``dates`` within [start, end] (inclusive)."""
    chosen = [(band, date) for band, date in enumerate(dates, start=1)
              if (start is None or date >= start) and (end is None or date <= end)]
    return [band for band, _ in chosen], [date for _, date in chosen]


class _Stats:
    """Running spatial min / sum / max of one output over its valid pixels."""

    def __init__(self):
        self.n, self.total, self.low, self.high = 0, 0.0, math.inf, -math.inf

    def add(self, values):
        finite = values[np.isfinite(values)]
        if finite.size:
            self.n += int(finite.size)
            self.total += float(finite.sum(dtype="float64"))
            self.low = min(self.low, float(finite.min()))
            self.high = max(self.high, float(finite.max()))

    def result(self, key):
        if self.n == 0:
            return {f"min_of_{key}": None, f"mean_of_{key}": None, f"max_of_{key}": None}
        return {f"min_of_{key}": self.low, f"mean_of_{key}": self.total / self.n, f"max_of_{key}": self.high}


def _preview_slices(window, step):
    """Rows/cols of ``window`` on the preview lattice (every ``step``-th pixel of the grid) and
    where they go in the preview."""
    r0, c0 = int(window.row_off), int(window.col_off)
    first_r, first_c = (-r0) % step, (-c0) % step
    rows = slice(first_r, int(window.height), step)
    cols = slice(first_c, int(window.width), step)
    n_r = len(range(first_r, int(window.height), step))
    n_c = len(range(first_c, int(window.width), step))
    target = (slice((r0 + first_r) // step, (r0 + first_r) // step + n_r),
              slice((c0 + first_c) // step, (c0 + first_c) // step + n_c))
    return (rows, cols), target


def summarize(input_path, *, mean_path=None, std_path=None, count_path=None, report_path=None,
              start_date=None, end_date=None, block_size=DEFAULT_BLOCK_SIZE, product=None, progress=None):
    """Temporal mean, standard deviation and count of valid dates of a soil-moisture series.

    Parameters
    ----------
    input_path : str
        A soil-moisture series: multi-band GeoTIFF, bands described by ISO date, m3/m3.
    mean_path, std_path, count_path : str or None
        Output GeoTIFFs (single band float32, NaN nodata; the count is 0 where no date is
        valid); at least one of them.
    report_path : str or None
        Optional HTML period-map report (:mod:`core.reports.period`).
    start_date, end_date : str or None
        Inclusive date range (YYYY-MM-DD); None = from the first / to the last date.
    block_size : int
        Edge of the pixel blocks processed at once (memory ~ 40 bytes x block_size^2).
    product : str, optional
        Name shown in the report (default the input file stem).
    progress : Progress, optional

    Returns
    -------
    dict
        ``input``, ``product``, ``dates`` (used), ``start``, ``end``, ``outputs``, ``pixels``,
        ``pixels_valid``, ``min_of_<s>``/``mean_of_<s>``/``max_of_<s>`` for s in mean, std,
        count, ``block_size``, ``seconds``, ``report``.
    """
    from .rasters import open_raster, reading

    progress = Progress.wrap(progress)
    started = time.perf_counter()
    start, end = parse_period(start_date, end_date)
    block_size = parse_block_size(block_size)
    outputs = {key: os.fspath(path) for key, path in zip(STATISTICS, (mean_path, std_path, count_path)) if path}
    if not outputs:
        raise SmdError("Choose at least one output: the mean, the standard deviation or the count of valid dates.")
    if report_path and os.path.splitext(os.fspath(report_path))[1].lower() not in REPORT_EXTENSIONS:
        raise SmdError(f"Report {os.fspath(report_path)!r}: the period-map report is a web page; use a .html "
                       "file name.")
    check_outputs([(path, "raster") for path in outputs.values()] + [(report_path, "report")],
                  inputs=[input_path])
    product = product or os.path.splitext(os.path.basename(os.fspath(input_path)))[0]
    src = open_raster(input_path, "soil-moisture series")
    with src, gdal_cache_limit():
        dates = read_band_dates(src, required=True)
        if not dates:
            raise SmdError(f"{input_path} is not a soil-moisture series: its band has no date. Give a "
                           "multi-band GeoTIFF whose bands are described by their dates (YYYY-MM-DD), e.g. "
                           "the output of Predict fine soil moisture.")
        bands, used = select_dates(dates, start, end)
        if not bands:
            raise SmdError(f"No date of {input_path} lies in {start or 'the start'}..{end or 'the end'}; the "
                           f"series covers {dates[0]}..{dates[-1]}. Choose a range inside it.")
        grid = dict(crs=src.crs, transform=src.transform, width=src.width, height=src.height)
        profile = series_profile(grid, 1)
        period = f"{used[0]}/{used[-1]}"
        step = max(1, math.ceil(max(src.width, src.height) / PREVIEW_SIZE))
        shape = (math.ceil(src.height / step), math.ceil(src.width / step))
        previews = {key: np.full(shape, np.nan, dtype="float32") for key in STATISTICS} if report_path else None
        stats = {key: _Stats() for key in STATISTICS}
        nodata = src.nodatavals
        windows = list(_windows(src.width, src.height, block_size))
        pixels_valid = 0
        lower, upper = SOIL_MOISTURE_RANGE
        # mean, std, count, the report page and its companion folder: renamed in that order
        # when all were written, none left without the others (core.outputs.outputs_together)
        staged = list(outputs.values()) + report_staging(report_path)
        with outputs_together(staged) as temporaries, contextlib.ExitStack() as stack:
            writers = {}
            for key in outputs:
                tmp = temporaries[outputs[key]]
                tags = {"SMDOWNSCALE_STATISTIC": key, "SMDOWNSCALE_PERIOD": period,
                        "SMDOWNSCALE_N_DATES": str(len(used)), "SMDOWNSCALE_SOURCE": os.path.basename(
                            os.fspath(input_path)),
                        "UNITS": "valid dates" if key == "count" else "m3/m3"}
                writers[key] = stack.enter_context(CheckedRasterWriter(tmp, profile, final_path=outputs[key],
                                                                       tags=tags))
                writers[key].set_band_description(1, f"{key} {period}")
            for number, window in enumerate(windows):
                progress.update(number / len(windows), f"Block {number + 1}/{len(windows)} over {len(used)} dates")
                shape_b = (int(window.height), int(window.width))
                count = np.zeros(shape_b, dtype="float64")
                mean = np.zeros(shape_b, dtype="float64")
                m2 = np.zeros(shape_b, dtype="float64")
                for k, band in enumerate(bands):
                    if k % 16 == 0:
                        progress.check()
                    with reading(input_path, "soil-moisture series"):
                        values = src.read(band, window=window, out_dtype="float64")
                    band_nodata = nodata[band - 1] if nodata else None
                    if band_nodata is not None and not math.isnan(band_nodata):
                        values[values == band_nodata] = np.nan
                    valid = np.isfinite(values)
                    if not valid.any():
                        continue
                    chosen = values[valid]
                    low, high = float(chosen.min()), float(chosen.max())
                    if low < lower or high > upper:
                        raise SmdError(
                            f"{input_path}, band {band} ({dates[band - 1]}): soil moisture must be in m3/m3 "
                            f"(between {lower:g} and {upper:g}), but values range from {low:.4g} to "
                            f"{high:.4g}.{soil_moisture_units_hint(low, high)}")
                    count[valid] += 1.0
                    delta = chosen - mean[valid]
                    mean[valid] += delta / count[valid]
                    m2[valid] += delta * (chosen - mean[valid])
                has = count > 0
                pixels_valid += int(has.sum())
                results = {"mean": np.where(has, mean, np.nan),
                           "std": np.where(has, np.sqrt(np.divide(m2, count, out=np.zeros_like(m2), where=has)),
                                           np.nan),
                           "count": count}
                for key in STATISTICS:
                    stats[key].add(results[key].astype("float32"))
                    if key in writers:
                        writers[key].write(results[key].astype("float32"), 1, window=window)
                    if previews is not None:
                        source, target = _preview_slices(window, step)
                        previews[key][target] = results[key][source]
            progress.update(1.0, "Period maps written")
            result = {"input": os.path.abspath(os.fspath(input_path)), "product": product, "dates": used,
                      "start": start, "end": end,
                      "outputs": {key: os.path.abspath(path) for key, path in outputs.items()},
                      "pixels": int(src.width * src.height), "pixels_valid": pixels_valid,
                      "block_size": block_size}
            for key in STATISTICS:
                result.update(stats[key].result(key))
            result["seconds"] = round(time.perf_counter() - started, 3)
            result["report"] = os.path.abspath(os.fspath(report_path)) if report_path else None
            if report_path:
                from .reports import period_html

                report_started = time.perf_counter()
                bounds = src.bounds
                extent = (bounds.left, bounds.left + shape[1] * step * src.transform.a,
                          bounds.top + shape[0] * step * src.transform.e, bounds.top)
                text = period_html(result, previews, extent=extent)
                write_report_into(temporaries, report_path, text)
                result["report_seconds"] = round(time.perf_counter() - report_started, 3)
    return result


def _windows(width, height, block_size):
    from .grids import block_windows

    return block_windows(width, height, block_size)
