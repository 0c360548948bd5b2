"""Opening and reading input rasters with errors that name the file.

GDAL/rasterio report a damaged input deep inside a read or a warp, often without the file:
``Chunk and warp failed``, ``TIFFReadEncodedTile() failed``, ``IReadBlock failed at X offset 0``,
or a bare ``RasterioIOError``. Every input raster of the plugin is opened with
:func:`open_raster` and read inside :func:`reading`, which turn those into one
:class:`~.common.SmdError` saying which file (and what it is for) could not be read and what to
do. ``SmdError`` (including cancellation) passes through unchanged.
"""
import contextlib
import os
import sys
import threading

from .common import SmdError

_HINT = ("The file is damaged (e.g. truncated, or a corrupt tile or header); re-create it or "
         "download it again.")


def _errors():
    """Exception classes rasterio/GDAL raise for unreadable data (imported lazily)."""
    # UnicodeError: a damaged header's text (band descriptions, tags) is not valid UTF-8
    classes = [OSError, RuntimeError, MemoryError, UnicodeError]
    try:
        from rasterio.errors import RasterioError

        classes.append(RasterioError)
    except ImportError:  # pragma: no cover - rasterio is a hard dependency of core
        pass
    try:
        from rasterio._err import CPLE_BaseError

        classes.append(CPLE_BaseError)
    except ImportError:  # pragma: no cover - older/newer rasterio layouts
        pass
    return tuple(classes)


def _detail(err):
    text = " ".join(str(err).split())
    return text[:300] or type(err).__name__


def _label(path, what):
    return f"{what} {path}" if what else str(path)


def unreadable(path, what, err, hint=_HINT):
    """The SmdError for ``err`` raised while reading ``path`` (``what``: e.g. "predictor")."""
    return SmdError(f"Cannot read the {_label(path, what)}: {_detail(err)}. {hint}")


_HOOK_LOCK = threading.Lock()
_hook_depth = 0            # blocks inside _quiet_undecodable_gdal_messages, over all threads
_previous_hook = None


def _drop_undecodable(unraisable):
    if isinstance(unraisable.exc_value, UnicodeError) and "rasterio" in repr(unraisable.object):
        return
    (_previous_hook or sys.__unraisablehook__)(unraisable)


@contextlib.contextmanager
def _quiet_undecodable_gdal_messages():
    """Drop rasterio's "Exception ignored in: 'rasterio._env.log_error'" tracebacks.

    A damaged file can make GDAL report an error whose text holds the file's bytes; rasterio's
    logging callback then fails to decode it and Python prints a traceback on stderr (the error
    itself still reaches us as an exception). Only that one kind of unraisable error is dropped,
    and only while a block is open; everything else goes to the previous hook. Blocks may open in
    several threads at once (predict reads ahead in a thread): the hook is installed by the first
    and removed by the last.
    """
    global _hook_depth, _previous_hook
    with _HOOK_LOCK:
        if _hook_depth == 0:
            _previous_hook = sys.unraisablehook
            sys.unraisablehook = _drop_undecodable
        _hook_depth += 1
    try:
        yield
    finally:
        with _HOOK_LOCK:
            _hook_depth -= 1
            if _hook_depth == 0:
                if sys.unraisablehook is _drop_undecodable:
                    sys.unraisablehook = _previous_hook
                _previous_hook = None


def open_raster(path, what="raster", *, hint=_HINT):
    """``rasterio.open(path)`` for reading; SmdError naming the file when it is missing/unreadable.

    Also refuses a raster without bands or pixels (a damaged header can open as one). ``what``
    says what the file is for (``"input raster"``, ``"dataset raster"``); ``hint`` what to do
    about a damaged one. The one place core and core/dataprep open a raster for reading.
    """
    import rasterio

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SmdError(f"The {_label(path, what)} does not exist; choose an existing raster file.")
    try:
        with _quiet_undecodable_gdal_messages():
            src = rasterio.open(path)
            try:  # the header's text and georeferencing, decoded now rather than deep inside a run
                src.descriptions, src.tags(), src.crs, src.nodatavals  # noqa: B018
            except BaseException:
                src.close()
                raise
    except SmdError:
        raise
    except _errors() as err:
        raise SmdError(f"The {_label(path, what)} is not a readable raster: {_detail(err)}. {hint}") from err
    if src.count < 1 or src.width < 1 or src.height < 1:
        src.close()
        raise SmdError(f"The {_label(path, what)} has no pixels ({src.width} x {src.height}, {src.count} "
                       f"band(s)). {hint}")
    return src


@contextlib.contextmanager
def reading(path, what="raster", *, hint=_HINT):
    """Turn rasterio/GDAL errors raised inside the block (reads, warps) into SmdError naming ``path``."""
    try:
        with _quiet_undecodable_gdal_messages():
            yield
    except SmdError:
        raise
    except _errors() as err:
        raise unreadable(path, what, err, hint) from err
