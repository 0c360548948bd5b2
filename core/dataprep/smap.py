"""Import SMAP L4 soil-moisture granules (HDF5) as a GeoTIFF series on EASE-Grid 2.0 (EPSG:6933).

SMAP L4 products (SPL4SMGP geophysical, SPL4SMAU analysis update) are stored on the global
9 km EASE-Grid 2.0 ("M09"). The files' ``/x`` and ``/y`` arrays are rounded (spacing
9008.054979 m instead of 9008.055210146 m), so the georeference is rebuilt from the grid
definition (NSIDC ``EASE2_M09km.gpd``) and the subset's global column/row offset.
"""
import contextlib
import datetime as _dt
import json
import os
import re
import subprocess
import threading

import numpy as np

from .. import common
from ..common import SmdError

from ..grids import (EASE2_EPSG, M09_CELL_SIZE, M09_COLUMNS, M09_ROWS, M09_ULX, M09_ULY,
                     m09_cells_covering, m09_grid)

#: Default variables: the product's surface soil moisture, in order of preference.
SURFACE_SOIL_MOISTURE = ("Geophysical_Data/sm_surface", "Analysis_Data/sm_surface_analysis")

#: Fill values used by SMAP besides the dataset's own _FillValue.
SMAP_FILL = -9999.0

#: SMAP's /time counts seconds from the J2000 epoch, labelled "2000-01-01 11:58:55.816" (UTC of
#: 12:00:00 TT). The products count from 12:00:00 without leap seconds so that granule times fall
#: on their nominal hours (checked on the real granules: time 633495600 is the file
#: SMAP_L4_SM_aup_20200128T150000, i.e. 12:00:00 + t = 15:00:00; with 11:58:55.816 + t the
#: 2015-04-01T00:00 granule would land on the previous day).
J2000_LABEL = "2000-01-01 11:58:55.816"
J2000_NOMINAL = _dt.datetime(2000, 1, 1, 12, 0, 0)

_FILENAME_TIME = re.compile(r"(\d{8})T(\d{6})")
_ROW_BLOCK = 256  # rows read at a time when checking /cell_row and /cell_column


def parse_time_window(text):
    """Parse a UTC time window such as ``"06:00-09:00"``.

    Parameters
    ----------
    text : str or tuple of two str or None
        ``"HH:MM-HH:MM"`` (also ``"HH:MM,HH:MM"``) or ``("HH:MM", "HH:MM")``; empty -> None.

    Returns
    -------
    tuple of datetime.time or None
        ``(start, end)``. The window is half-open ``[start, end)``; ``start > end`` wraps
        past midnight.
    """
    if text is None:
        return None
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        text = str(text).strip()
        if not text:
            return None
        parts = re.split(r"\s*(?:-|,|to)\s*", text)
    if len(parts) != 2:
        raise SmdError(f"Time window {text!r} is not of the form HH:MM-HH:MM (UTC), e.g. 06:00-09:00.")
    times = []
    for part in parts:
        match = re.fullmatch(r"(\d{1,2})(?::(\d{2}))?(?::(\d{2}))?", str(part).strip())
        if not match:
            raise SmdError(f"Time window {text!r}: {part!r} is not a time HH:MM (UTC).")
        hour, minute, second = (int(g or 0) for g in match.groups())
        if hour == 24 and minute == 0 and second == 0:
            hour, minute, second = 23, 59, 59  # "24:00" = end of day
        if hour > 23 or minute > 59 or second > 59:
            raise SmdError(f"Time window {text!r}: {part!r} is not a valid time of day.")
        times.append(_dt.time(hour, minute, second))
    if times[0] == times[1]:
        raise SmdError(f"Time window {text!r} is empty: start and end are the same time.")
    return times[0], times[1]


def _in_window(when, window):
    if window is None:
        return True
    start, end = window
    t = when.time()
    if start < end:
        return start <= t < end
    return t >= start or t < end  # wraps past midnight


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.reshape(-1)[0])
    return str(value)


@contextlib.contextmanager
def _gdal_exceptions():
    """GDAL raises Python exceptions inside the block; the previous mode is restored after."""
    from osgeo import gdal

    previous = gdal.GetUseExceptions()
    gdal.UseExceptions()
    try:
        yield
    finally:
        if not previous:
            gdal.DontUseExceptions()


def _damaged(path, name, detail):
    """The SmdError for a dataset GDAL/HDF5 cannot read (their messages are often empty)."""
    detail = str(detail or "").strip() or "the HDF5 library reported a read error without a message"
    return SmdError(
        f"{os.path.basename(path)}: cannot read the dataset /{name} ({detail}). The granule is damaged "
        "(a corrupt compressed chunk, corrupt metadata or a truncated download); download it again or "
        "leave it out.")


class _Array:
    """One HDF5 dataset through GDAL's multidimensional API (h5py-like subset)."""

    def __init__(self, mdarray, path="", name=""):
        self._array = mdarray
        self.path = path
        self.name = name
        self.shape = tuple(d.GetSize() for d in mdarray.GetDimensions())
        self.ndim = len(self.shape)

    def attr(self, key, default=None):
        if key == "units":  # GDAL exposes the units attribute as the array's unit
            try:
                return self._array.GetUnit() or default
            except (RuntimeError, TypeError, ValueError, UnicodeDecodeError):
                return default
        with _gdal_exceptions():
            try:
                attribute = self._array.GetAttribute(key)
                return default if attribute is None else attribute.Read()
            except (RuntimeError, TypeError, ValueError, UnicodeDecodeError, OverflowError):
                return default  # an unreadable attribute counts as absent

    def nodata(self):
        """The dataset's _FillValue, or None."""
        with _gdal_exceptions():
            try:
                value = self._array.GetNoDataValueAsDouble()
            except (RuntimeError, TypeError, ValueError, OverflowError):
                return None
        return value if value is not None and np.isfinite(value) else None

    def read(self, window=None):
        """Whole array, or ``window = (row0, row1, col0, col1)`` of a 2-D array.

        Every failure is an SmdError naming the file and the dataset: GDAL's HDF5 driver often
        raises a bare ``RuntimeError`` with an empty message when a chunk fails to decompress.
        """
        with _gdal_exceptions():
            try:
                if window is None:
                    values = self._array.ReadAsArray()
                else:
                    row0, row1, col0, col1 = window
                    values = self._array.ReadAsArray(array_start_idx=[row0, col0],
                                                     count=[row1 - row0, col1 - col0])
            except (RuntimeError, TypeError, ValueError, OverflowError, MemoryError) as err:
                raise _damaged(self.path, self.name, err) from err
        if values is None:
            raise _damaged(self.path, self.name, "no data returned")
        values = np.asarray(values)
        if values.dtype.kind not in "biuf":
            raise SmdError(f"{os.path.basename(self.path)}: the dataset /{self.name} holds "
                           f"{values.dtype} values, not numbers; choose a numeric dataset.")
        return values


class _Granule:
    """Read access to an HDF5 granule with GDAL's HDF5 driver (present in QGIS' GDAL).

    GDAL rather than h5py: QGIS installs ship GDAL with HDF5 but rarely h5py, and a pip h5py
    wheel brings its own libhdf5 that clashes with GDAL's inside the QGIS process.
    """

    def __init__(self, path):
        from osgeo import gdal

        if gdal.GetDriverByName("HDF5") is None:
            raise SmdError("This GDAL has no HDF5 driver, needed to read SMAP granules; install a "
                           "GDAL/QGIS build with HDF5 support.")
        if not os.path.isfile(path):
            raise SmdError(f"SMAP granule {path!r} does not exist.")
        with _gdal_exceptions():
            try:
                self._dataset = gdal.OpenEx(path, gdal.OF_MULTIDIM_RASTER, allowed_drivers=["HDF5"])
            except RuntimeError as err:
                raise SmdError(f"{path} is not a readable HDF5 file ({err}). Choose SMAP L4 .h5 "
                               "granules.") from err
            if self._dataset is None:
                raise SmdError(f"{path} is not a readable HDF5 file. Choose SMAP L4 .h5 granules.")
            try:
                self._root = self._dataset.GetRootGroup()
            except RuntimeError as err:
                raise SmdError(f"{path}: its HDF5 root group cannot be read ({err or 'no message'}); "
                               "the file is damaged. Download it again.") from err
            if self._root is None:
                raise SmdError(f"{path}: its HDF5 root group cannot be read; the file is damaged. "
                               "Download it again.")
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._root = self._dataset = None

    def array(self, name):
        """The dataset at ``name`` (``group/sub/dataset``), or None."""
        parts = [p for p in str(name).strip("/").split("/") if p]
        if not parts:
            return None
        with _gdal_exceptions():
            try:
                group = self._root
                for part in parts[:-1]:
                    group = group.OpenGroup(part)
                    if group is None:
                        return None
                mdarray = group.OpenMDArray(parts[-1])
            except RuntimeError:
                return None
        if mdarray is None:
            return None
        try:
            return _Array(mdarray, self.path, "/".join(parts))
        except (RuntimeError, TypeError, ValueError) as err:
            raise _damaged(self.path, "/".join(parts), err) from err

    def has(self, name):
        return self.array(name) is not None

    def datasets_2d(self):
        """Paths of the 2-D datasets (excluding Metadata and the cell index/coordinate arrays)."""
        found = []

        def walk(group, prefix, depth):
            if group is None or depth > 16:
                return
            for name in group.GetMDArrayNames() or []:
                path = prefix + name
                if path in ("cell_row", "cell_column", "cell_lat", "cell_lon"):
                    continue
                try:
                    array = group.OpenMDArray(name)
                    if array is not None and len(array.GetDimensions()) == 2:
                        found.append(path)
                except RuntimeError:
                    continue  # an unreadable dataset is not offered
            for name in group.GetGroupNames() or []:
                if not (prefix == "" and name == "Metadata"):
                    try:
                        child = group.OpenGroup(name)
                    except RuntimeError:
                        continue
                    walk(child, prefix + name + "/", depth + 1)

        with _gdal_exceptions():
            try:
                walk(self._root, "", 0)
            except RuntimeError as err:
                detail = str(err).strip() or "HDF5 error"
                raise SmdError(f"{os.path.basename(self.path)}: cannot list its datasets ({detail}); the "
                               "granule is damaged. Download it again.") from err
        return found


#: Granule times outside this span are refused as implausible (SMAP launched in 2015).
PLAUSIBLE_YEARS = (2000, None)  # None: up to tomorrow


def _plausible_time(when, path, source):
    first = _dt.datetime(PLAUSIBLE_YEARS[0], 1, 1)
    last = _dt.datetime.utcnow() + _dt.timedelta(days=1)
    if not first <= when <= last:
        raise SmdError(
            f"{os.path.basename(path)}: its {source} gives the time {when:%Y-%m-%d %H:%M}, outside "
            f"{first:%Y-%m-%d} .. today; the file is damaged or not a SMAP granule. Download it again.")
    return when


def _granule_time(h5, path):
    """UTC datetime of a granule from /time (units attribute) or the filename timestamp."""
    try:
        dataset = h5.array("time")
        values = None if dataset is None else np.asarray(dataset.read(), dtype="float64").reshape(-1)
    except (SmdError, TypeError, ValueError):
        dataset = values = None  # an unreadable /time: fall back to the file name
    if dataset is not None:
        units = _text(dataset.attr("units", "")).strip()
        match = re.fullmatch(r"seconds since\s+(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2}(?:\.\d+)?)\s*(?:UTC|Z)?",
                             units)
        if match and values.size and np.isfinite(values[0]):
            epoch_text = f"{match.group(1)} {match.group(2)}"
            try:
                if epoch_text.startswith(J2000_LABEL):
                    epoch = J2000_NOMINAL
                else:
                    epoch = _dt.datetime.fromisoformat(epoch_text)
                when = epoch + _dt.timedelta(seconds=float(values[0]))
            except (ValueError, OverflowError) as err:
                raise SmdError(
                    f"{os.path.basename(path)}: its /time ({values[0]:g} {units}) is not a valid date "
                    "and time; the file is damaged. Download it again.") from err
            return _plausible_time(when, path, "/time"), "time"
    match = _FILENAME_TIME.search(os.path.basename(path))
    if match:
        try:
            when = _dt.datetime.strptime(match.group(1) + match.group(2), "%Y%m%d%H%M%S")
        except ValueError:
            when = None
        if when is not None:
            return _plausible_time(when, path, "file name"), "filename"
    raise SmdError(
        f"{path}: cannot tell the granule's time: it has no /time dataset with units "
        "'seconds since ...' and its name has no YYYYMMDDThhmmss timestamp. Keep the original "
        "SMAP file name (e.g. SMAP_L4_SM_gph_20190401T073000_Vv7032_001.h5).")


def read_granule_time(path):
    """UTC time (naive datetime) of a SMAP granule, from its /time or its file name."""
    with _Granule(os.fspath(path)) as h5:
        return _granule_time(h5, path)[0]


def _resolve_variable(h5, path, variable):
    available = h5.datasets_2d()
    if variable:
        wanted = str(variable).strip().strip("/")
        if wanted in available:
            return wanted
        by_name = [name for name in available if name.split("/")[-1] == wanted]
        if len(by_name) == 1:
            return by_name[0]
        raise SmdError(
            f"{os.path.basename(path)} has no 2-D dataset {variable!r}. Available datasets: "
            f"{', '.join(available) or 'none'}.")
    for candidate in SURFACE_SOIL_MOISTURE:
        if candidate in available:
            return candidate
    raise SmdError(
        f"{os.path.basename(path)} has no surface soil moisture ({' or '.join(SURFACE_SOIL_MOISTURE)}); "
        f"choose one of its datasets as the variable: {', '.join(available) or 'none'}.")


def _fill_values(dataset):
    values = {SMAP_FILL}
    for value in [dataset.nodata()] + [dataset.attr(key) for key in ("missing_value", "fmissing_value")]:
        try:
            values.add(float(np.asarray(value).reshape(-1)[0]))
        except (TypeError, ValueError, IndexError):
            pass
    return values


def _projection_name(h5):
    """grid_mapping_name of the dataset's grid mapping variable, or None if not stated."""
    for name in ("projection_information", "EASE2_global_projection"):
        dataset = h5.array(name)
        if dataset is not None:
            return _text(dataset.attr("grid_mapping_name", "")).strip() or None
    return None


def _regular_offset(h5, name, axis, shape, path):
    """Global offset from /cell_row (axis 0) or /cell_column (axis 1) if they form a regular block.

    Returns the offset, or None when the index array is not a regular block (each pixel must map
    to cell ``offset + its own row/column index``). Read in row blocks to keep memory flat.
    """
    dataset = h5.array(name)
    if dataset is None:
        return None
    if dataset.shape != shape:
        raise SmdError(f"{path}: /{name} has shape {dataset.shape}, the data {shape}.")
    fill = dataset.nodata()
    fill = 4294967294 if fill is None or not np.isfinite(fill) else int(fill)
    offset = None
    for row_start in range(0, shape[0], _ROW_BLOCK):
        row_end = min(row_start + _ROW_BLOCK, shape[0])
        block = dataset.read((row_start, row_end, 0, shape[1])).astype("int64")
        rows, cols = np.indices(block.shape)
        own_index = (rows + row_start) if axis == 0 else cols
        valid = block != fill
        if not valid.any():
            continue
        offsets = block[valid] - own_index[valid]
        if offset is None:
            offset = int(offsets[0])
        if (offsets != offset).any():
            return None
    return offset


def _snapped_offset(coords, axis, path):
    """Global column (axis 1, /x) or row (axis 0, /y) offset from cell-centre coordinates.

    Checks that the spacing is the M09 cell size and that every centre lies on the M09 grid.
    Returns None when the coordinates are not EASE-Grid 2.0 9 km centres.
    """
    coords = np.asarray(coords, dtype="float64").reshape(-1)
    if coords.size == 0:
        return None
    if axis == 1:
        index = (coords - M09_ULX) / M09_CELL_SIZE - 0.5
    else:
        index = (M09_ULY - coords) / M09_CELL_SIZE - 0.5
    nearest = np.round(index)
    expected = nearest[0] + np.arange(coords.size)
    # the files' coordinates drift by < 0.001 m per cell; 0.05 cell (450 m) tolerance
    if np.abs(index - nearest).max() > 0.05 or (nearest != expected).any():
        return None
    return int(nearest[0])


def _locate(h5, path, shape):
    """(row_offset, column_offset) of a granule's data block on the global M09 grid."""
    projection = _projection_name(h5)
    ease_named = projection in (None, "lambert_cylindrical_equal_area")
    rows, cols = shape
    if shape == (M09_ROWS, M09_COLUMNS) and ease_named:
        return 0, 0

    row_offset = col_offset = None
    irregular = []
    if h5.has("cell_row"):
        row_offset = _regular_offset(h5, "cell_row", 0, shape, path)
        if row_offset is None:
            irregular.append("cell_row")
    if h5.has("cell_column"):
        col_offset = _regular_offset(h5, "cell_column", 1, shape, path)
        if col_offset is None:
            irregular.append("cell_column")
    if irregular:
        raise SmdError(
            f"{os.path.basename(path)} is not on the EASE-Grid 2.0 9 km grid: its /{' and /'.join(irregular)} "
            f"do not map the pixels to a regular block of EASE cells (grid mapping: {projection or 'unknown'}). "
            "The granule was probably reprojected by its producer; download it without reprojection "
            "(native EASE-Grid 2.0, subsetting only).")

    x_offset = y_offset = None
    if ease_named and h5.has("x") and h5.has("y"):
        x, y = h5.array("x").read(), h5.array("y").read()
        if np.size(x) == cols and np.size(y) == rows:
            x_offset = _snapped_offset(x, 1, path)
            y_offset = _snapped_offset(y, 0, path)
    if not ease_named and (row_offset is None or col_offset is None):
        raise SmdError(
            f"{os.path.basename(path)} is not on the EASE-Grid 2.0 9 km grid (grid mapping: {projection}) "
            "and has no /cell_row and /cell_column to place it. Download the granule without "
            "reprojection (native EASE-Grid 2.0, subsetting only).")
    for name, from_index, from_coords in (("column", col_offset, x_offset), ("row", row_offset, y_offset)):
        if from_index is not None and from_coords is not None and from_index != from_coords:
            raise SmdError(
                f"{os.path.basename(path)}: the /cell_{name} indices (offset {from_index}) disagree with "
                f"the /{'x' if name == 'column' else 'y'} coordinates (offset {from_coords}); the file is "
                "inconsistent and cannot be placed safely.")
    row_offset = row_offset if row_offset is not None else y_offset
    col_offset = col_offset if col_offset is not None else x_offset
    if row_offset is None or col_offset is None:
        raise SmdError(
            f"{os.path.basename(path)}: cannot place the data on the EASE-Grid 2.0 9 km grid: its /x /y are "
            "not 9 km EASE-Grid 2.0 cell centres and it lacks /cell_row and /cell_column. Only SMAP L4 "
            "granules on their native 9 km grid (whole or subsetted) can be imported.")
    if row_offset < 0 or col_offset < 0 or row_offset + rows > M09_ROWS or col_offset + cols > M09_COLUMNS:
        raise SmdError(f"{os.path.basename(path)}: the data block falls outside the global 9 km EASE grid.")
    return row_offset, col_offset


def _scan_granule(path, variable):
    with _Granule(path) as h5:
        name = _resolve_variable(h5, path, variable)
        dataset = h5.array(name)
        if dataset is None or dataset.ndim != 2 or min(dataset.shape) == 0:
            raise SmdError(f"{os.path.basename(path)}: the dataset /{name} is empty or not 2-D "
                           f"(shape {None if dataset is None else dataset.shape}); the granule is damaged.")
        when, source = _granule_time(h5, path)
        row_offset, col_offset = _locate(h5, path, dataset.shape)
        return dict(path=path, variable=name, time=when, time_source=source, shape=dataset.shape,
                    row_offset=row_offset, col_offset=col_offset, fills=_fill_values(dataset))


def _extent_window(extent, rows, cols):
    """Global (row0, row1, col0, col1) of the cells touching ``extent``, clipped to the union."""
    row0, row1, col0, col1 = rows[0], rows[1], cols[0], cols[1]
    if extent is None:
        return row0, row1, col0, col1
    try:
        xmin, ymin, xmax, ymax = (float(v) for v in extent[:4])
    except (TypeError, ValueError) as err:
        raise SmdError(f"Extent {extent!r} is not (xmin, ymin, xmax, ymax[, crs]).") from err
    crs = extent[4] if len(extent) > 4 and extent[4] else None
    if not (xmin < xmax and ymin < ymax):
        raise SmdError(f"Extent {extent!r} is empty: xmin must be < xmax and ymin < ymax.")
    if crs is not None:
        from rasterio.crs import CRS
        from rasterio.errors import CRSError
        from rasterio.warp import transform_bounds

        try:
            source_crs = CRS.from_user_input(crs)
        except CRSError as err:
            raise SmdError(f"Extent CRS {crs!r} is not recognised ({err}).") from err
        if source_crs != CRS.from_epsg(EASE2_EPSG):
            xmin, ymin, xmax, ymax = transform_bounds(source_crs, CRS.from_epsg(EASE2_EPSG),
                                                      xmin, ymin, xmax, ymax, densify_pts=21)
    # cells touching the extent (snap outward to whole cells)
    r0, r1, c0, c1 = m09_cells_covering(xmin, ymin, xmax, ymax)
    row0, row1 = max(row0, r0), min(row1, r1)
    col0, col1 = max(col0, c0), min(col1, c1)
    if row0 >= row1 or col0 >= col1:
        raise SmdError(f"Extent {extent!r} does not overlap the granules' data.")
    return row0, row1, col0, col1


def _read_block(granule, window):
    """The granule's values inside the global window, NaN where absent or fill."""
    row0, row1, col0, col1 = window
    out = np.full((row1 - row0, col1 - col0), np.nan, dtype="float32")
    g_row0, g_col0 = granule["row_offset"], granule["col_offset"]
    g_rows, g_cols = granule["shape"]
    r0, r1 = max(row0, g_row0), min(row1, g_row0 + g_rows)
    c0, c1 = max(col0, g_col0), min(col1, g_col0 + g_cols)
    if r0 >= r1 or c0 >= c1:
        return out
    with _Granule(granule["path"]) as h5:
        values = h5.array(granule["variable"]).read(
            (r0 - g_row0, r1 - g_row0, c0 - g_col0, c1 - g_col0)).astype("float32")
    for fill in granule["fills"]:
        values[values == np.float32(fill)] = np.nan
    out[r0 - row0:r1 - row0, c0 - col0:c1 - col0] = values
    return out


def import_smap_l4(granule_paths, output_path, *, variable=None, time_window=None, extent=None,
                   progress=None):
    """Convert SMAP L4 HDF5 granules to a daily GeoTIFF series on EASE-Grid 2.0 (EPSG:6933).

    Parameters
    ----------
    granule_paths : str or sequence of str
        SMAP L4 ``.h5`` granules (SPL4SMGP or SPL4SMAU), global or subsetted, native 9 km grid.
    output_path : str
        GeoTIFF to write: float32, one band per date, band description ``YYYY-MM-DD``, NaN nodata.
    variable : str, optional
        Dataset path inside the granules, e.g. ``Geophysical_Data/sm_rootzone``; a bare name
        (``sm_rootzone``) is looked up. Default: the product's surface soil moisture
        (``Geophysical_Data/sm_surface`` or ``Analysis_Data/sm_surface_analysis``).
    time_window : str or (str, str), optional
        UTC window ``"06:00-09:00"``; only granules whose time is in ``[start, end)`` are kept.
    extent : (xmin, ymin, xmax, ymax[, crs]), optional
        Clip to the 9 km cells touching this box (default CRS EPSG:6933).
    progress : Progress, optional

    Returns
    -------
    dict
        ``output``, ``dates``, ``variable``, ``granules_used`` (per date: list of file names),
        ``granules_skipped`` (outside the time window), ``width``, ``height``, ``transform``,
        ``row_offset``/``column_offset`` (global M09 index of the upper-left cell).

    Notes
    -----
    Several granules on the same UTC date are averaged cell by cell over their valid values
    (without a window: the daily mean of the 3-hourly granules; with a window: the mean of the
    granules inside it). Granules may cover different subsets; the output covers their union.

    The granules are read in a child Python process (see :data:`_ISOLATION_NOTE`): a damaged
    granule can crash the HDF5 library, and that must not take QGIS down with it. A crash
    there becomes an SmdError naming the granule. ``SMDOWNSCALE_SMAP_IN_PROCESS=1`` reads in
    this process instead (what the child itself does).
    """
    progress = common.Progress.wrap(progress)
    if isinstance(granule_paths, (str, os.PathLike)):
        granule_paths = [granule_paths]
    granule_paths = [os.fspath(p) for p in granule_paths]
    if not granule_paths:
        raise SmdError("No SMAP granules given; choose one or more SMAP L4 .h5 files.")
    parse_time_window(time_window)  # option errors before any process is started
    for path in granule_paths:
        if not os.path.isfile(path):
            raise SmdError(f"SMAP granule {path!r} does not exist.")
    if extent is not None:
        extent = list(extent)
    options = dict(variable=variable, time_window=time_window, extent=extent)
    from ..outputs import atomic_output, check_outputs

    check_outputs([(output_path, "raster")], inputs=granule_paths)
    python = None if os.environ.get("SMDOWNSCALE_SMAP_IN_PROCESS") == "1" else child_python()

    with atomic_output(output_path) as tmp:
        if python is None:
            result = _import(granule_paths, tmp, output_path, progress=progress, **options)
        else:
            result = _import_in_child(python, granule_paths, tmp, output_path, options, progress)
    result["output"] = output_path
    return result


#: Why the granules are read in a child process (the finding of issue 8, case 6).
_ISOLATION_NOTE = """
A granule with one flipped byte in the fractal heap that holds the root group's link names
(e.g. byte 114628 of SMAP_L4_SM_aup_UTM_input.h5 set to 5) makes libhdf5 1.10.8 (Debian 12, and every
GDAL built on it) free uninitialised pointers: H5Giterate -> H5G__dense_iterate builds a link
table with malloc, the heap block fails its checksum part-way, and the error path
(H5G__link_release_table) resets *all* table entries, including those never filled in. The
result depends on what the recycled heap memory holds: in a fresh small process (gdalinfo,
gdalmdiminfo) it is zeros and nothing happens; in a long-lived Python/QGIS process it is
garbage, hence ``free(): invalid pointer`` (SIGABRT, exit 134) or SIGSEGV. With
MALLOC_PERTURB_=85 gdalinfo and gdalmdiminfo crash on the same file. GDAL's HDF5 drivers (the
classic one behind gdalinfo and the multidimensional one used here) enumerate every group on
open/lookup (OpenGroup/OpenMDArray call H5Giterate), so no read path through GDAL avoids the
bug in-process, and h5py uses the same libhdf5. The fix is isolation: the reading runs in a
child interpreter and a crash there is reported as a damaged granule.
"""


def child_python():
    """A Python interpreter to run the granule reader in, or None (then read in-process)."""
    return common.python_interpreter()


_CHILD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smap_child.py")


def _import_in_child(python, granule_paths, tmp, output_path, options, progress):
    """Run :func:`_import` in a child interpreter; relay progress, honour cancel, map failures."""
    import queue

    job = dict(granules=granule_paths, output=tmp, final_output=os.path.abspath(output_path), **options)
    env = dict(os.environ, SMDOWNSCALE_SMAP_IN_PROCESS="1")
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    try:
        child = subprocess.Popen([python, _CHILD_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=env, creationflags=flags)
    except OSError:
        return _import(granule_paths, tmp, output_path, progress=progress, **options)
    lines = queue.Queue()
    stderr = []

    def pump(stream, sink):
        for line in iter(stream.readline, b""):
            sink(line)
        stream.close()

    readers = [threading.Thread(target=pump, args=(child.stdout, lines.put), daemon=True),
               threading.Thread(target=pump, args=(child.stderr, lambda l: stderr.append(l) if len(stderr) < 200 else None),
                                daemon=True)]
    for reader in readers:
        reader.start()
    current, final, ready = None, None, False
    try:
        child.stdin.write(json.dumps(job).encode("utf-8"))
        child.stdin.close()
        while True:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                progress.check()
                if child.poll() is not None and not readers[0].is_alive() and lines.empty():
                    break
                continue
            try:
                message = json.loads(line.decode("utf-8", "replace"))
            except ValueError:
                continue  # a library printed on stdout
            if not isinstance(message, dict):
                continue
            if "ready" in message:
                ready = True
            elif "granule" in message:
                current = message["granule"]
            elif "progress" in message:
                progress.update(message["progress"], message.get("message"))
            elif "result" in message or "error" in message or "failure" in message:
                final = message
    except BaseException:
        child.kill()
        child.wait()
        raise
    code = child.wait()
    for reader in readers:
        reader.join(timeout=5)
    if final is not None and "result" in final:
        result = final["result"]
        result["transform"] = tuple(result["transform"])
        return result
    if final is not None and "error" in final:
        raise SmdError(final["error"])
    if final is not None:  # an exception the reader did not expect: still one message
        name = os.path.basename(current) if current else "the granules"
        raise SmdError(f"Reading {name} failed: {final['failure']}. The granule is probably damaged; "
                       "download it again or leave it out.")
    if not ready:
        # the reader could not start (e.g. no GDAL for that interpreter): read in this process
        progress.info("The SMAP reader process could not start; reading the granules in this process.")
        return _import(granule_paths, tmp, output_path, progress=progress, **options)
    if current is not None:
        raise SmdError(
            f"Reading the SMAP granule {current} crashed the HDF5 library ({common.signal_name(code)}): the "
            "file is damaged (a corrupt or truncated download). Download it again or leave it out; "
            "nothing was written.")
    raise SmdError(f"The SMAP reader process stopped unexpectedly ({common.signal_name(code)}) while writing "
                   f"{output_path}; nothing was written. "
                   + b"".join(stderr[-5:]).decode("utf-8", "replace").strip()[-300:])


def _import(granule_paths, tmp, output_path, *, variable=None, time_window=None, extent=None,
            progress=None, announce=None):
    """The import itself, in this process: scan, place, average per date, write ``tmp``.

    ``announce(path)`` is told which granule is being read (the child reports it, so that a
    crash can name the file). Values of soil-moisture variables (``sm_*``) must be within
    0..1 m3/m3; an output without any valid cell is refused.
    """
    from ..outputs import CheckedRasterWriter

    progress = common.Progress.wrap(progress)
    announce = announce or (lambda path: None)
    window = parse_time_window(time_window)

    scan = progress.sub(0.0, 0.1)
    granules = []
    for index, path in enumerate(granule_paths):
        scan.update(index / len(granule_paths), f"Reading {os.path.basename(path)}")
        announce(path)
        granules.append(_guarded(path, _scan_granule, path, variable))
    names = {g["variable"] for g in granules}
    if len(names) > 1:
        raise SmdError(f"The granules resolve to different variables ({', '.join(sorted(names))}); "
                       "choose the variable explicitly.")
    variable_name = names.pop()

    kept = [g for g in granules if _in_window(g["time"], window)]
    skipped = [os.path.basename(g["path"]) for g in granules if g not in kept]
    if not kept:
        times = ", ".join(g["time"].strftime("%Y-%m-%d %H:%M") for g in granules)
        raise SmdError(f"No granule falls inside the UTC time window {time_window!r} "
                       f"(granule times: {times}). Widen the window or choose other granules.")

    by_date = {}
    for granule in sorted(kept, key=lambda g: g["time"]):
        by_date.setdefault(granule["time"].date().isoformat(), []).append(granule)
    dates = sorted(by_date)

    union_rows = (min(g["row_offset"] for g in kept), max(g["row_offset"] + g["shape"][0] for g in kept))
    union_cols = (min(g["col_offset"] for g in kept), max(g["col_offset"] + g["shape"][1] for g in kept))
    out_window = _extent_window(extent, union_rows, union_cols)
    row0, row1, col0, col1 = out_window
    grid_profile = m09_grid(row0, row1, col0, col1).profile()
    soil_moisture = variable_name.split("/")[-1].lower().startswith("sm_")

    write = progress.sub(0.1, 1.0)
    valid_cells = 0
    profile = common.series_profile(grid_profile, len(dates))
    with common.gdal_cache_limit(), CheckedRasterWriter(tmp, profile, final_path=output_path) as dst:
        for index, date in enumerate(dates):
            write.update(index / len(dates), f"Writing {date}")
            total = np.zeros((row1 - row0, col1 - col0), dtype="float64")
            count = np.zeros(total.shape, dtype="int32")
            for granule in by_date[date]:
                write.check()
                announce(granule["path"])
                values = _guarded(granule["path"], _read_block, granule, out_window)
                if soil_moisture:
                    common.check_soil_moisture_range(
                        values, f"{os.path.basename(granule['path'])} /{granule['variable']}")
                valid = np.isfinite(values)
                total[valid] += values[valid]
                count[valid] += 1
            with np.errstate(invalid="ignore", divide="ignore"):
                band = np.where(count > 0, total / np.maximum(count, 1), np.nan).astype("float32")
            valid_cells += int(np.count_nonzero(count))
            dst.write(band, index + 1)
            dst.set_band_description(index + 1, date)
        if valid_cells == 0:
            raise SmdError(
                f"The granules hold no valid value of /{variable_name} inside the output extent (every "
                "cell is a fill value, -9999, or NaN); the output would be empty. Choose granules or an "
                "extent that cover land, or another variable.")
    write.update(1.0, "Done")
    return dict(dates=dates, variable=variable_name,
                granules_used={d: [os.path.basename(g["path"]) for g in by_date[d]] for d in dates},
                granules_skipped=skipped, width=col1 - col0, height=row1 - row0,
                transform=tuple(grid_profile["transform"])[:6], row_offset=row0, column_offset=col0)


def _guarded(path, function, *args):
    """Call ``function``; GDAL/HDF5 failures that are not SmdError yet become one naming ``path``."""
    try:
        return function(*args)
    except SmdError:
        raise
    except (RuntimeError, OSError, MemoryError, OverflowError, TypeError, ValueError,
            UnicodeDecodeError, IndexError, KeyError) as err:
        detail = str(err).strip() or type(err).__name__
        raise SmdError(f"{os.path.basename(path)}: cannot be read as a SMAP L4 granule ({detail}); the "
                       "file is damaged or not a SMAP L4 granule. Download it again or leave it out.") from err
