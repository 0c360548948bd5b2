"""Errors, progress/cancel plumbing, atomic outputs and GeoTIFF conventions shared by core."""
import contextlib
import datetime as _dt
import math
import os

NODATA = float("nan")

#: Creation options for every raster the plugin writes: float32, tiled, compressed, NaN nodata.
#: Band-interleaved: series are written and read one date at a time, so a tile holds one date
#: and is compressed once (pixel interleaving re-reads and re-compresses shared tiles).
GTIFF_PROFILE = dict(
    driver="GTiff", dtype="float32", nodata=NODATA, tiled=True, blockxsize=256, blockysize=256,
    compress="deflate", predictor=3, interleave="band", BIGTIFF="IF_SAFER",
)


class SmdError(ValueError):
    """A problem with the user's input or files; the message says what to fix."""


class Cancelled(SmdError):
    """The run was cancelled by the user."""

    def __init__(self, message="The run was cancelled; no output was written."):
        super().__init__(message)


class Progress:
    """Progress reporting and cancellation through plain callables.

    Parameters
    ----------
    callback : callable(fraction, message) or None
        Receives a fraction in [0, 1] and an optional message.
    is_cancelled : callable() -> bool or None
        Polled by :meth:`check`; True raises :class:`Cancelled`.
    """

    def __init__(self, callback=None, is_cancelled=None, *, _start=0.0, _end=1.0, _log=None):
        self._callback = callback
        self._is_cancelled = is_cancelled
        self._start = _start
        self._end = _end
        self._log = _log

    @classmethod
    def wrap(cls, progress=None, callback=None, is_cancelled=None, log=None):
        """Return ``progress`` if given, else a new Progress (possibly silent)."""
        if isinstance(progress, Progress):
            return progress
        return cls(callback, is_cancelled, _log=log)

    def update(self, fraction, message=None):
        self.check()
        if self._callback is not None:
            fraction = min(max(float(fraction), 0.0), 1.0)
            self._callback(self._start + (self._end - self._start) * fraction, message)

    def info(self, message):
        """A log line (no progress change)."""
        if self._log is not None:
            self._log(message)

    def check(self):
        if self._is_cancelled is not None and self._is_cancelled():
            raise Cancelled()

    def sub(self, start, end):
        """A child reporting 0..1 onto ``start..end`` of this one."""
        span = self._end - self._start
        return Progress(self._callback, self._is_cancelled, _start=self._start + span * start,
                        _end=self._start + span * end, _log=self._log)


#: Volumetric soil moisture is a fraction of volume, m3/m3. The small negative margin tolerates
#: sensor and retrieval noise on very dry soil (a -0.001 reading must not sink a validation);
#: above 1 is physically impossible.
SOIL_MOISTURE_RANGE = (-0.02, 1.0)


def soil_moisture_units_hint(lowest, highest):
    """The advice for values outside :data:`SOIL_MOISTURE_RANGE`: percent, or fill values."""
    lower, _ = SOIL_MOISTURE_RANGE
    if lowest >= lower and highest <= 100.0:
        return " The values look like percent (vol. %): divide them by 100 to get m3/m3."
    return (" If these are fill values (e.g. -9999), declare them as the nodata value instead of "
            "storing them as soil moisture.")


def check_soil_moisture_range(values, label):
    """SmdError when finite ``values`` leave :data:`SOIL_MOISTURE_RANGE`, with a units hint.

    The one rule for every soil-moisture input (satellite series, station readings, products).
    """
    import numpy as np

    values = np.asarray(values, dtype="float64")
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return
    low, high = float(finite.min()), float(finite.max())
    lower, upper = SOIL_MOISTURE_RANGE
    if low >= lower and high <= upper:
        return
    raise SmdError(f"{label}: soil moisture must be in m3/m3 (between {lower:g} and {upper:g}), "
                   f"but the values range from {low:.4g} to {high:.4g}."
                   f"{soil_moisture_units_hint(low, high)}")


def available_memory_bytes():
    """Memory the system can give this process now (Linux MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def python_interpreter():
    """The Python interpreter QGIS runs on, for child processes and pip commands; None if not found.

    ``SMDOWNSCALE_PYTHON`` overrides. ``sys.executable`` is used when it is a Python; inside the
    QGIS desktop it is the ``qgis`` binary (and on PATH a ``python3`` may be another Python, e.g.
    a pyenv shim), so the interpreter is looked for beside ``sys.exec_prefix``.
    """
    import sys

    override = os.environ.get("SMDOWNSCALE_PYTHON")
    if override:
        return override if os.path.isfile(override) else None
    exe = sys.executable or ""
    # accepted only inside this Python's own prefix (a venv's python is; a pyenv shim on PATH,
    # which the QGIS desktop may report, is not and would run another Python)
    prefixes = [os.path.realpath(p) for p in {sys.prefix, sys.exec_prefix} if p]
    folder = os.path.realpath(os.path.dirname(os.path.abspath(exe))) if exe else ""
    inside = any(folder == p or folder.startswith(p.rstrip(os.sep) + os.sep) for p in prefixes)
    if os.path.basename(exe).lower().startswith("python") and os.path.isfile(exe) and inside:
        return exe
    if os.name == "nt":
        candidates = [os.path.join(sys.exec_prefix, "python.exe"),
                      os.path.join(sys.exec_prefix, "python3.exe"),
                      os.path.join(os.path.dirname(exe), "python3.exe"),
                      os.path.join(os.path.dirname(exe), "python.exe")]
    else:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        candidates = [os.path.join(sys.exec_prefix, "bin", f"python{version}"),
                      os.path.join(sys.exec_prefix, "bin", "python3"),
                      os.path.join(os.path.dirname(exe), f"python{version}"),
                      os.path.join(os.path.dirname(exe), "python3")]
    return next((path for path in candidates if os.path.isfile(path)), None)


def signal_name(return_code):
    """How a child process ended, for messages: ``SIGSEGV`` for -11, else the exit status."""
    import signal

    if return_code is not None and return_code < 0:
        try:
            return signal.Signals(-return_code).name
        except ValueError:
            return f"signal {-return_code}"
    return f"exit status {return_code}"


def parse_date(text):
    """ISO ``YYYY-MM-DD`` -> datetime.date, SmdError otherwise."""
    try:
        return _dt.date.fromisoformat(str(text).strip()[:10])
    except ValueError as err:
        raise SmdError(f"{text!r} is not a date in the form YYYY-MM-DD.") from err


def _is_iso_date(text):
    try:
        _dt.date.fromisoformat(str(text or "").strip()[:10])
    except ValueError:
        return False
    return True


def day_of_year(date_text):
    return parse_date(date_text).timetuple().tm_yday


def read_band_dates(src, *, required=True):
    """ISO dates from the band descriptions of an open rasterio dataset.

    A single-band raster without a date description is static and returns ``[]``.
    """
    descriptions = list(src.descriptions or [])
    dates = []
    for band, text in enumerate(descriptions, start=1):
        if src.count == 1 and not _is_iso_date(text):
            # a single band described e.g. "elevation" (terra's elev.tif) is a static raster
            return []
        if not text:
            if required:
                raise SmdError(
                    f"{src.name}: band {band} has no date. A time series needs every band "
                    "described with its date as YYYY-MM-DD (GDAL band description).")
            return []
        dates.append(parse_date(text).isoformat())
    if len(set(dates)) != len(dates):
        raise SmdError(f"{src.name}: the band dates are not unique.")
    return dates


def series_profile(grid_profile, count):
    """GTIFF_PROFILE + georeferencing + band count, with block sizes valid for small rasters."""
    profile = dict(GTIFF_PROFILE)
    profile.update(grid_profile)
    profile["count"] = count
    if profile["width"] < 256 or profile["height"] < 256:
        # GDAL requires tile sizes that are multiples of 16; tiny rasters are written striped
        profile["tiled"] = False
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
    return profile


def write_series(path, bands, dates, grid_profile):
    """Write an iterable of 2-D arrays as a float32 GeoTIFF series, bands described by date.

    ``grid_profile`` holds crs, transform, width, height. ``dates`` may be ``None`` for a static
    single-band raster. Written atomically.
    """
    import numpy as np

    from .outputs import CheckedRasterWriter, atomic_output

    bands = list(bands) if not hasattr(bands, "__next__") else bands
    count = len(dates) if dates else 1
    profile = series_profile(grid_profile, count)
    with atomic_output(path) as tmp:
        with CheckedRasterWriter(tmp, profile, final_path=path) as dst:
            for index, band in enumerate(bands, start=1):
                dst.write(np.asarray(band, dtype="float32"), index)
                if dates:
                    dst.set_band_description(index, dates[index - 1])
    return path


def is_nodata(values, nodata):
    """Boolean mask of NaN and the nodata value."""
    import numpy as np

    mask = ~np.isfinite(values)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        mask |= values == nodata
    return mask


@contextlib.contextmanager
def gdal_cache_limit(max_bytes=256 * 2**20):
    """Cap GDAL's block cache while long raster loops run, then restore the previous cap.

    GDAL's default cache is 5% of RAM (1.2 GB on a 24 GB machine) and keeps written blocks
    until it is full, so peak memory would grow with the machine, not with the block size.
    ``GDAL_CACHEMAX`` in an environment is read only once per process (QGIS has long done so),
    hence the explicit call. Never raises the cap.
    """
    try:
        from osgeo import gdal
    except ImportError:  # rasterio's own GDAL without the osgeo bindings: nothing to cap
        yield
        return
    previous = gdal.GetCacheMax()
    gdal.SetCacheMax(min(previous, int(max_bytes)))
    try:
        yield
    finally:
        gdal.SetCacheMax(previous)


def is_number(value):
    """A finite real number (int, float, numpy scalar), not a bool and not text."""
    import numbers

    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def is_integer(value):
    """:func:`is_number` with no fractional part (3 and 3.0, not 3.5)."""
    return is_number(value) and float(value).is_integer()


def whole_number(value, name, *, minimum, advice=None):
    """``value`` as an int when it is a whole number >= ``minimum`` (int, float or text of one).

    The one rule for whole-number parameters (block_size, max_samples, seed...): 2.5, "2.5",
    True, NaN and text that is not a number are refused, so the Python API and the Processing
    dialogs (which pass the number as a float, never rounded) accept the same values.
    """
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise SmdError(f"{name}={value!r}: use a whole number of at least {minimum}.")
    if number < minimum:
        raise SmdError(f"{name}={value!r}: {advice or f'use a whole number of at least {minimum}.'}")
    return int(number)
