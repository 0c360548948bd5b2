"""Output safety, in one home for every algorithm.

- :func:`check_outputs` decides, before any work starts, whether a run may write its outputs:
  a file output may replace only a file of the kind it writes (never a folder, never an input,
  never a file inside an input or inside a prepared dataset); a folder output may replace only
  an empty folder or a folder this plugin wrote (it holds a marker), and never an input.
- :func:`atomic_output` writes into a temporary beside the final path and renames it into place
  only on success; folders are swapped in one rename so the old one stays intact until then.
- :class:`CheckedRasterWriter` records what was written and reads the file back before it is
  renamed into place, so a write that failed (disk full, I/O error) is never reported as success.
- :func:`write_text_output` writes JSON/CSV/HTML the same way; :func:`write_together` /
  :func:`outputs_together` write several outputs as one (both or neither), e.g. a model and its
  report, or an HTML report and its companion folder (:func:`report_files_folder`).
- Temporaries left by a killed run are removed by the next run into the same folder
  (:func:`remove_stale_temporaries`), only ours and only when their process is gone.

Every failure is an :class:`~.common.SmdError` that names the path and the cause.
"""
import contextlib
import ctypes
import errno
import logging
import math
import os
import re
import shutil
import socket
import tempfile

from .common import SmdError

#: Output kind -> extensions of an existing file that an output of that kind may replace.
FILE_KINDS = {
    "raster": (".tif", ".tiff"),
    "vector": (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".csv", ".sqlite"),
    "model": (".zip",),
    "report": (".html", ".htm", ".csv", ".json"),
    "table": (".csv", ".json", ".html", ".htm"),
    "key": (".pem", ".pub", ".key"),
}
#: Folder outputs (a prepared dataset, a folder of rasters) carry this marker file, or the
#: dataset manifest, so that a later run knows it may replace them.
FOLDER_KINDS = ("dataset", "folder")
FOLDER_MARKER = ".smdownscale-output"
DATASET_MANIFEST = "dataset.json"
#: An HTML report ``X.html`` is written with its companion folder ``X_files`` beside it (its
#: figures as PNG, its tables as CSV, for reuse): :func:`report_files_folder` is the one rule.
HTML_EXTENSIONS = (".html", ".htm")
REPORT_FILES_SUFFIX = "_files"

_HOST = re.sub(r"[^A-Za-z0-9]+", "", socket.gethostname())[:32] or "host"
#: ``.<name>.tmp-<host>-<pid><ext>`` and ``.<name>.old-<host>-<pid>``, optionally + GDAL sidecar
_TEMP_RE = re.compile(r"^\..+\.(?:tmp|old)-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)(?:[.].*)?$")


# -- error messages -------------------------------------------------------------------------
def describe_os_error(err):
    """A short cause for an OSError: disk full, permission, read-only, missing folder..."""
    number = getattr(err, "errno", None)
    causes = {
        errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
        errno.EACCES: "permission denied", errno.EPERM: "permission denied",
        errno.EROFS: "the file system is read-only", errno.ENOENT: "the folder does not exist",
        errno.ENOTDIR: "a part of the path is not a folder", errno.EISDIR: "it is a folder",
        errno.ENAMETOOLONG: "the path is too long", errno.EIO: "an input/output error",
    }
    return causes.get(number) or (err.strerror or str(err))


def write_error(path, cause):
    return SmdError(f"Could not write {path}: {cause}. Nothing was written under that name; "
                    "free some space, fix the permissions or choose another output path.")


# -- what an output may replace --------------------------------------------------------------
def source_path(text):
    """The file part of a GDAL/OGR source string (``file.gpkg|layername=x`` -> ``file.gpkg``)."""
    text = os.fspath(text)
    return text.split("|", 1)[0]


def real_path(path):
    """The resolved absolute path of a file or GDAL source (symlinks followed, suffix dropped)."""
    return os.path.realpath(os.path.abspath(os.path.expanduser(source_path(path))))


def report_files_folder(path):
    """The companion folder of an HTML report (``/out/report.html`` -> ``/out/report_files``),
    or None for a report that is not a web page (.csv, .json). :func:`check_outputs` checks it
    with every ``report`` output; the report writers (core.reports.files) write it."""
    if not path:
        return None
    root, ext = os.path.splitext(source_path(path))
    return root + REPORT_FILES_SUFFIX if ext.lower() in HTML_EXTENSIONS else None


def _with_companions(outputs):
    """(path, kind, what) for every output, each HTML report followed by its companion folder."""
    for path, kind in outputs:
        yield path, kind, None
        folder = report_files_folder(path) if kind == "report" else None
        if folder:
            yield folder, "folder", f"the figures and tables of the report {source_path(path)}"


def _inside(path, folder):
    return path != folder and path.startswith(folder.rstrip(os.sep) + os.sep)


def is_plugin_folder(folder):
    """True when ``folder`` is a prepared dataset or a folder output this plugin wrote."""
    if os.path.isfile(os.path.join(folder, FOLDER_MARKER)):
        return True
    manifest = os.path.join(folder, DATASET_MANIFEST)
    try:
        with open(manifest, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return b'"smdownscale-dataset"' in head


def _enclosing_dataset(path):
    """The prepared dataset folder that contains ``path``, or None."""
    folder = os.path.dirname(path)
    while True:
        if os.path.isfile(os.path.join(folder, DATASET_MANIFEST)) and is_plugin_folder(folder):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _check_parent_writable(path, label):
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise SmdError(f"{label}: the folder {parent} does not exist; create it or choose another "
                       "output path.")
    # Root passes os.access whatever the mode bits, and /proc or a read-only mount answer only
    # to a real attempt: create and remove a probe file.
    try:
        handle, probe = tempfile.mkstemp(prefix=".smdownscale-probe-", dir=parent)
        os.close(handle)
        os.remove(probe)
    except OSError as err:
        raise SmdError(f"{label}: cannot write into {parent} ({describe_os_error(err)}); choose a "
                       "folder you can write to.") from err


def check_outputs(outputs, inputs=()):
    """Refuse, before any work starts, outputs that would destroy what they were not asked to.

    Parameters
    ----------
    outputs : iterable of (path, kind)
        ``kind`` is a key of :data:`FILE_KINDS` (a file) or one of :data:`FOLDER_KINDS`.
        ``None`` paths (optional outputs not asked for) are skipped. An HTML ``report`` also
        checks its companion folder (:func:`report_files_folder`) as a ``folder`` output.
    inputs : iterable of path
        Every file or folder the run reads (GDAL ``|layername=`` suffixes allowed).

    Raises
    ------
    SmdError
        Naming the output path and what to do.
    """
    input_paths = [real_path(path) for path in inputs if path]
    seen = {}
    for path, kind, what in _with_companions(outputs):
        if not path:
            continue
        if kind not in FILE_KINDS and kind not in FOLDER_KINDS:
            raise ValueError(f"unknown output kind {kind!r}")
        real = real_path(path)
        label = f"Output {source_path(path)}" + (f" ({what})" if what else "")
        # a companion folder follows its report's name: the way out is another report name
        other = "Choose another report name, or move that folder away." if what else None
        if real in seen:
            raise SmdError(f"{label} is given for two outputs of this run; give each output its "
                           "own path.")
        seen[real] = kind
        for source in input_paths:
            if real == source:
                raise SmdError(f"{label} is also an input of this run; inputs are never "
                               "overwritten. Choose another output path.")
            if _inside(real, source):
                raise SmdError(f"{label} lies inside the input {source}; inputs are never "
                               "modified. Choose a path outside it.")
            if _inside(source, real):
                raise SmdError(f"{label} would replace the folder holding the input {source}. "
                               "Choose another output path.")
        dataset = _enclosing_dataset(real)
        if dataset is not None:
            raise SmdError(f"{label} lies inside the prepared dataset {dataset}; writing there "
                           "would corrupt it. Choose a path outside the dataset folder.")
        _check_parent_writable(real, label)
        if not os.path.lexists(real):
            continue
        if kind in FILE_KINDS:
            if os.path.isdir(real):
                raise SmdError(f"{label} is an existing folder; a file is never written over a "
                               "folder. Choose a file name.")
            if not real.lower().endswith(FILE_KINDS[kind]):
                raise SmdError(f"{label} exists and is not a {kind} file "
                               f"({', '.join(FILE_KINDS[kind])}); it is never replaced. Choose "
                               "another name, or delete the file yourself first.")
        else:
            if not os.path.isdir(real):
                raise SmdError(f"{label} exists and is a file; a folder output never replaces a "
                               f"file. {other or 'Choose another folder name.'}")
            if os.listdir(real) and not is_plugin_folder(real):
                raise SmdError(f"{label} is a folder holding files this plugin did not write; it "
                               f"is never replaced. {other or 'Choose a new or empty folder.'}")


# -- temporaries -----------------------------------------------------------------------------
def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder):
    """Remove temporaries that a killed run of this plugin left in ``folder``.

    Only names made by :func:`atomic_output`, only from this host, only when their process is
    gone; a concurrent run's temporaries are never touched. Returns the removed names.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _TEMP_RE.match(name)
        if not match or match["host"] != _HOST:
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _process_alive(pid):
            continue
        _remove(os.path.join(folder, name))
        removed.append(name)
    return removed


def final_path_of(path):
    """The final path a path inside one of our temporaries will have once it is renamed
    (``<parent>/.<name>.tmp-<host>-<pid>/fine/x.tif`` -> ``<parent>/<name>/fine/x.tif``); used in
    messages, so they name what the user asked for. Other paths are returned unchanged."""
    parts = os.path.abspath(path).split(os.sep)
    for index, part in enumerate(parts):
        match = re.match(r"^\.(?P<name>.+)\.tmp-[A-Za-z0-9]+-\d+(?P<ext>\.[^.]*)?$", part)
        if match:
            parts[index] = match["name"] + (match["ext"] or "")
            break
    return os.sep.join(parts)


def _temporary_name(path, tag):
    stem, ext = os.path.splitext(os.path.basename(path))
    # keep the extension so GDAL/OGR drivers guess the format from the temporary name
    return os.path.join(os.path.dirname(path), f".{stem}.{tag}-{_HOST}-{os.getpid()}{ext}")


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        try:
            os.remove(path)
        except OSError:
            pass


def _remove_with_sidecars(path):
    _remove(path)
    parent, base = os.path.split(path)
    with contextlib.suppress(OSError):
        for leftover in os.listdir(parent):
            if leftover.startswith(base):  # GDAL sidecars (.aux.xml, .msk, -journal)
                _remove(os.path.join(parent, leftover))


#: errors that can only come from writing
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def _is_write_failure(err, tmp):
    """True when an OSError raised while writing ``tmp`` is about the output, not an input."""
    filename = getattr(err, "filename", None)
    if isinstance(filename, (str, bytes, os.PathLike)) and os.fsdecode(filename).startswith(tmp):
        return True
    return getattr(err, "errno", None) in _WRITE_ERRNOS


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first, second):
    """Swap two paths in one atomic rename; False when the system cannot (then the caller falls
    back). Python's os module has no renameat2, hence ctypes (Linux >= 3.15, glibc >= 2.28)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    number = ctypes.get_errno()
    if number in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(number, os.strerror(number), second)


def _replace_folder(tmp, path):
    """Put the folder ``tmp`` at ``path``; an old folder there stays intact until one rename."""
    if not os.path.lexists(path):
        os.rename(tmp, path)
        return
    if _exchange(tmp, path):
        _remove(tmp)  # now holds the old folder
        return
    # Fallback: the old folder is moved aside first, so a crash between the two renames leaves
    # it under .<name>.old-<host>-<pid> (recoverable), never deleted.
    old = _temporary_name(path, "old")
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except OSError:
        os.rename(old, path)
        raise
    _remove(old)


@contextlib.contextmanager
def atomic_output(path, *, folder=False):
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success.

    ``folder=True`` makes the temporary a new empty folder (it is swapped with an existing
    folder in one rename and gets :data:`FOLDER_MARKER` unless it holds a dataset manifest).
    A file never replaces a folder. On any exception (including cancellation) the temporary and
    its GDAL sidecars are removed and ``path`` is left untouched. OSErrors become SmdError
    naming the path and the cause.
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise SmdError(f"The output folder {parent!r} does not exist; create it or choose another "
                       "output path.")
    if not folder and os.path.isdir(path) and not os.path.islink(path):
        raise SmdError(f"Output {path} is an existing folder; a file is never written over a "
                       "folder. Choose a file name.")
    remove_stale_temporaries(parent)
    tmp = _temporary_name(path, "tmp")
    _remove_with_sidecars(tmp)
    try:
        if folder:
            os.mkdir(tmp)
        yield tmp
    except OSError as err:
        _remove_with_sidecars(tmp)
        if _is_write_failure(err, tmp):
            raise write_error(path, describe_os_error(err)) from err
        raise  # e.g. an input that could not be read: its own message
    except BaseException:
        _remove_with_sidecars(tmp)
        raise
    try:
        if not os.path.lexists(tmp):
            raise SmdError(f"Could not write {path}: nothing was written.")
        if folder:
            if not os.path.isfile(os.path.join(tmp, DATASET_MANIFEST)):
                open(os.path.join(tmp, FOLDER_MARKER), "w").close()
            _replace_folder(tmp, path)
        else:
            os.replace(tmp, path)
            aux = tmp + ".aux.xml"
            if os.path.exists(aux):
                os.replace(aux, path + ".aux.xml")
    except OSError as err:
        _remove_with_sidecars(tmp)
        raise write_error(path, describe_os_error(err)) from err
    except BaseException:
        _remove_with_sidecars(tmp)
        raise


def write_text_output(path, text):
    """Write ``text`` (str) as UTF-8 to ``path`` atomically; errors name the file and cause."""
    with atomic_output(path) as tmp:
        write_text_temporary(tmp, text, path)
    return path


def write_text_temporary(tmp, text, final_path):
    """Write ``text`` into the temporary ``tmp``; an OSError becomes SmdError naming ``final_path``."""
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise write_error(os.path.abspath(final_path), describe_os_error(err)) from err


@contextlib.contextmanager
def outputs_together(outputs):
    """Temporaries for several outputs written as one; yields ``{final path: temporary}``.

    Each output gets its :func:`atomic_output` temporary (a new empty folder for a folder
    output); when the block succeeds they are renamed into place in the given order, and when
    anything fails (the block, or a rename) the outputs already renamed are removed, so none is
    left without the others.

    Parameters
    ----------
    outputs : list of path or (path, folder)
        ``folder`` True for a folder output (e.g. a report's companion folder).
    """
    items = [(item, False) if isinstance(item, (str, bytes, os.PathLike)) else (item[0], bool(item[1]))
             for item in outputs]
    renamed = []

    def marker(final):
        def record(exc_type, exc, tb):
            if exc_type is None:
                renamed.append(final)
            return False
        return record

    try:
        with contextlib.ExitStack() as stack:
            temporaries = {}
            # entered in reverse: the stack exits last-in first, so the renames run in order
            for final, folder in reversed(items):
                stack.push(marker(final))
                temporaries[final] = stack.enter_context(atomic_output(final, folder=folder))
            yield temporaries
    except BaseException:
        for final in renamed:
            _remove(os.path.abspath(os.fspath(final)))
        raise


def write_together(outputs):
    """Write several outputs as one: each into a temporary, renamed into place only when all were
    written (in the given order); when a rename fails, the outputs already renamed are removed, so
    none is left without the others (:func:`outputs_together`).

    Parameters
    ----------
    outputs : list of (final_path, write) or (final_path, write, folder)
        ``write(tmp)`` writes the file (or, with ``folder`` True, fills the new empty folder) at
        the temporary path ``tmp``. An OSError (disk full, permission...) becomes SmdError naming
        ``final_path`` and the cause.
    """
    with outputs_together([(item[0], len(item) > 2 and bool(item[2])) for item in outputs]) as temporaries:
        for final, write, *_ in outputs:
            try:
                write(temporaries[final])
            except OSError as err:
                raise write_error(os.path.abspath(final), describe_os_error(err)) from err


# -- checked raster writes -------------------------------------------------------------------
class _GdalErrors:
    """Collects GDAL failures while a raster is written.

    GDAL reports write errors at flush/close only through its error handler (GDALClose returns
    nothing before GDAL 3.7): rasterio logs them inside its environment, GDAL's handler stack
    receives them outside it; both are listened to.
    """

    def __init__(self):
        self.messages = []
        self._handler = None

    def __enter__(self):
        collected = self.messages

        class _Handler(logging.Handler):
            def emit(self, record):
                message = record.getMessage()
                if message.startswith("GDAL signalled an error"):
                    collected.append(message.split("msg=", 1)[-1].strip("'\""))

        self._handler = _Handler(level=logging.DEBUG)
        self._logger = logging.getLogger("rasterio._env")
        self._previous_level = self._logger.level
        self._logger.addHandler(self._handler)
        if not self._logger.isEnabledFor(logging.INFO):
            self._logger.setLevel(logging.INFO)
        self._gdal = None
        try:
            from osgeo import gdal
        except ImportError:
            gdal = None
        if gdal is not None:
            def handler(error_class, number, message):
                if error_class >= gdal.CE_Failure:
                    collected.append(str(message))
            gdal.PushErrorHandler(handler)
            self._gdal = gdal
        return self

    def __exit__(self, *exc):
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._previous_level)
        if self._gdal is not None:
            self._gdal.PopErrorHandler()
        return False

    def cause(self):
        for message in self.messages:
            if "No space left" in message:
                return "the disk is full"
        return self.messages[0] if self.messages else None


@contextlib.contextmanager
def raise_gdal_errors(path):
    """Fail with a write error naming ``path`` when GDAL reports a failure inside the block."""
    errors = _GdalErrors().__enter__()
    try:
        yield
    except BaseException:
        errors.__exit__(None, None, None)
        raise
    errors.__exit__(None, None, None)
    if errors.messages:
        raise write_error(path, errors.cause())


class CheckedRasterWriter:
    """A rasterio dataset opened for writing whose content is verified when it is closed.

    ``write`` accumulates, per band, the count and sum of the finite values written; ``close``
    closes the file, then reads it back block by block and compares. A mismatch, an unreadable
    file or any GDAL failure seen while writing raises SmdError naming ``final_path``. Every
    pixel must be written at most once per band (true of every writer in this plugin). Other
    attributes are those of the rasterio dataset.
    """

    def __init__(self, path, profile, *, final_path=None, tags=None):
        import rasterio

        self.path = path
        self.final_path = final_path or path
        self._errors = _GdalErrors().__enter__()
        try:
            self._dst = rasterio.open(path, "w", **profile)
            if tags:
                self._dst.update_tags(**tags)
        except Exception as err:  # rasterio errors have many classes; all mean "cannot create"
            self._errors.__exit__(None, None, None)
            cause = describe_os_error(err) if isinstance(err, OSError) else str(err)
            raise write_error(self.final_path, self._errors.cause() or cause) from err
        self._count = [0] * profile.get("count", 1)
        self._sum = [0.0] * profile.get("count", 1)
        self._closed = False

    def __getattr__(self, name):
        return getattr(self._dst, name)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def write(self, array, indexes=None, window=None):
        """rasterio's ``write``: ``indexes`` None means every band (3-D) or band 1 (2-D)."""
        import numpy as np

        array = np.asarray(array, dtype=self._dst.dtypes[0])
        if indexes is None:
            bands = list(range(1, array.shape[0] + 1)) if array.ndim == 3 else [1]
            indexes = bands if array.ndim == 3 else 1
        else:
            bands = [indexes] if isinstance(indexes, int) else list(indexes)
        planes = [array] if array.ndim == 2 else list(array)
        for band, plane in zip(bands, planes):
            finite = plane[np.isfinite(plane)]
            self._count[band - 1] += int(finite.size)
            self._sum[band - 1] += float(finite.sum(dtype="float64"))
        try:
            self._dst.write(array, indexes, window=window)
        except Exception as err:
            raise write_error(self.final_path, self._errors.cause() or str(err)) from err

    def abort(self):
        """Close without verifying (the caller is failing anyway)."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._dst.close()
            self._errors.__exit__(None, None, None)

    def close(self):
        if self._closed:
            return
        self._closed = True
        try:
            self._dst.close()
        except Exception as err:
            self._errors.__exit__(None, None, None)
            raise write_error(self.final_path, self._errors.cause() or str(err)) from err
        self._errors.__exit__(None, None, None)
        if self._errors.messages:
            raise write_error(self.final_path, self._errors.cause())
        self._verify()

    def _verify(self):
        import numpy as np
        import rasterio

        from .grids import block_windows

        try:
            with rasterio.open(self.path) as src:
                counts = [0] * src.count
                sums = [0.0] * src.count
                # band by band: the plugin's rasters are band-interleaved, and memory stays at
                # one block whatever the number of dates
                for band in range(src.count):
                    for window in block_windows(src.width, src.height, 1024):
                        data = src.read(band + 1, window=window)
                        finite = data[np.isfinite(data)]
                        counts[band] += int(finite.size)
                        sums[band] += float(finite.sum(dtype="float64"))
        except Exception as err:  # any read failure means the file is damaged
            raise write_error(self.final_path, f"the written file cannot be read back ({err})") from err
        for band, (written, read) in enumerate(zip(self._count, counts), start=1):
            total_written, total_read = self._sum[band - 1], sums[band - 1]
            if written != read or not math.isclose(total_written, total_read, rel_tol=1e-6,
                                                    abs_tol=1e-6 * max(written, 1)):
                raise write_error(self.final_path, f"band {band} did not read back as written "
                                  f"({written} valid pixels written, {read} read)")


def tag_raster(path, tags):
    """Add GDAL metadata items to an existing raster in place (no pixel rewritten), checked."""
    import rasterio

    errors = _GdalErrors().__enter__()
    try:
        with rasterio.open(path, "r+") as dst:
            dst.update_tags(**tags)
        with rasterio.open(path) as src:
            written = src.tags()
    except Exception as err:  # rasterio raises several classes; all mean the write failed
        errors.__exit__(None, None, None)
        raise write_error(path, errors.cause() or str(err)) from err
    errors.__exit__(None, None, None)
    if errors.messages or any(written.get(key) != str(value) for key, value in tags.items()):
        raise write_error(path, errors.cause() or "the metadata did not read back as written")
