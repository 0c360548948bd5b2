"""Raster helpers shared by the data-preparation functions: dates of inputs, grids, windows, writers.

Date conventions for inputs that are not already a dated series (one raster per date):

1. a dataset tag ``DATE`` (or ``ACQUISITION_DATE``) holding ``YYYY-MM-DD``;
2. for a single-band raster, a band description holding ``YYYY-MM-DD``;
3. the file name: the last ``YYYY-MM-DD``, else the last 8-digit ``YYYYMMDD``, else a MODIS
   ``AYYYYDDD`` (year + day of year) found in it, e.g. ``mod09a1_2019-04-07.tif``,
   ``S1A_IW_GRDH_20190407T101010.tif`` or ``MOD09A1.A2019097.h27v05.tif``.
"""
import contextlib
import datetime as _dt
import math
import os
import re

import numpy as np

from ..common import SmdError, gdal_cache_limit, parse_date, series_profile
from ..rasters import open_raster, reading  # noqa: F401 - the data-preparation readers use both
from ..outputs import CheckedRasterWriter, atomic_output

_ISO = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")
_COMPACT = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)")
_MODIS = re.compile(r"(?<![A-Za-z0-9])A(\d{4})(\d{3})(?!\d)")
_DATE_TAGS = ("date", "acquisition_date")


def _valid_date(year, month, day):
    try:
        return _dt.date(int(year), int(month), int(day))
    except ValueError:
        return None


def date_from_filename(path):
    """ISO date found in a file name (see the module docstring), or None."""
    stem = os.path.splitext(os.path.basename(path))[0]
    for pattern in (_ISO, _COMPACT):
        for match in reversed(list(pattern.finditer(stem))):
            found = _valid_date(*match.groups())
            if found:
                return found.isoformat()
    for match in reversed(list(_MODIS.finditer(stem))):
        year, doy = int(match.group(1)), int(match.group(2))
        if 1 <= doy <= 366:
            found = _dt.date(year, 1, 1) + _dt.timedelta(days=doy - 1)
            if found.year == year:
                return found.isoformat()
    return None


def raster_date(src, path, *, required=True):
    """Date of a one-date raster: DATE tag, single-band description, or file name."""
    for key, value in src.tags().items():
        if key.lower() in _DATE_TAGS and value:
            return parse_date(value).isoformat()
    if src.count == 1 and src.descriptions and src.descriptions[0]:
        try:
            return parse_date(src.descriptions[0]).isoformat()
        except SmdError:
            pass
    found = date_from_filename(path)
    if found is None and required:
        raise SmdError(
            f"{path}: cannot tell its date. Put YYYY-MM-DD in the file name "
            "(e.g. scene_2019-04-07.tif), set a DATE metadata tag, or (single band) "
            "describe the band with the date.")
    return found


def grid_profile(src):
    """crs/transform/width/height of an open dataset (what write helpers need)."""
    return dict(crs=src.crs, transform=src.transform, width=src.width, height=src.height)


def same_grid(a, b, *, tolerance=1e-6):
    """True when two grid profiles have the same CRS, size and (nearly) the same transform."""
    if (a["width"], a["height"]) != (b["width"], b["height"]):
        return False
    if (a["crs"] is None) != (b["crs"] is None) or (a["crs"] is not None and a["crs"] != b["crs"]):
        return False
    ta, tb = a["transform"], b["transform"]
    scale = max(abs(ta.a), abs(ta.e), 1e-12)
    return all(math.isclose(x, y, rel_tol=0, abs_tol=tolerance * scale) for x, y in zip(ta[:6], tb[:6]))


def require_same_grid(reference, other, reference_name, other_name):
    if not same_grid(reference, other):
        raise SmdError(
            f"{other_name} is not on the grid of {reference_name} (CRS, pixel size, origin and "
            f"size must match: {other['width']}x{other['height']} vs "
            f"{reference['width']}x{reference['height']}). Warp it onto that grid first "
            "(Raster > Projections > Warp, using the reference as target extent/resolution).")


def read_masked(src, indexes, window):
    """float64 read of ``indexes`` in ``window`` with the band nodata values turned into NaN."""
    with reading(src.name, "raster"):
        data = src.read(indexes, window=window, out_dtype="float64")
    single = np.ndim(indexes) == 0
    if single:
        data = data[np.newaxis]
        indexes = [indexes]
    nodatavals = src.nodatavals
    for position, band in enumerate(indexes):
        nodata = nodatavals[band - 1] if nodatavals else None
        if nodata is not None and not math.isnan(nodata):
            data[position][data[position] == nodata] = np.nan
    data[~np.isfinite(data)] = np.nan
    return data[0] if single else data


@contextlib.contextmanager
def open_series_writer(path, grid, count, dates=None):
    """Open a float32/NaN GeoTIFF (core.common profile) for window-wise writing, atomically.

    Band-interleaved so that later per-date reads touch one band only. Band descriptions are
    ``dates`` when given (a static single band otherwise). GDAL's block cache is capped while
    the writer is open, so memory does not grow with the raster.
    """

    profile = series_profile(grid, count)
    with gdal_cache_limit(), atomic_output(path) as tmp:
        with CheckedRasterWriter(tmp, profile, final_path=path) as dst:
            if dates:
                for band, date in enumerate(dates, start=1):
                    dst.set_band_description(band, date)
            yield dst


def day_numbers(dates):
    """ISO dates -> int64 day ordinals (for arithmetic in days)."""
    return np.array([parse_date(d).toordinal() for d in dates], dtype="int64")


def dates_from_numbers(numbers):
    return [_dt.date.fromordinal(int(n)).isoformat() for n in numbers]
