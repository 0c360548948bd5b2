"""Step 1: predictors + coarse soil moisture -> a prepared dataset folder (see core/dataset.py).

1. Validate every input before writing anything: CRSs, overlap, dates, names, options.
2. Per date and predictor, warp onto the fine grid (GDAL average for continuous, mode for
   categorical; nodata honoured) and blank the pixels of masked classes in every predictor.
3. Aggregate each fine predictor onto the coarse grid (average / mode); a coarse value is kept
   only where valid fine pixels cover at least ``min_valid_fraction`` of the cell.
4. Copy the soil moisture onto the cropped coarse grid (NaN for its nodata, and where valid fine
   pixels of all predictors cover less than ``min_valid_fraction`` of the cell).

Everything is written into a temporary folder renamed at the end (``atomic_output``).
"""
import contextlib
import dataclasses
import math
import os

import numpy as np

from .common import (Progress, SmdError, available_memory_bytes, check_soil_moisture_range, gdal_cache_limit,
                     is_nodata, read_band_dates, series_profile)
from .dataset import (CATEGORICAL, CONTINUOUS, DOY, TARGET, VALID_FRACTION, Dataset, Predictor,
                      coarse_path, fine_path, write_manifest)
from .outputs import CheckedRasterWriter, atomic_output, check_outputs, final_path_of
from .cluster import parse_scheduler, worker_path
from .fastread import DaskSeriesWarper, SeriesWarper
from .rasters import open_raster, reading
from .grids import (Grid, coarse_grid_for, fine_grid_for, padded_grid, parse_crs,
                    positive_resolution, transform_bounds_safe)

#: names aggregated by mode unless told otherwise; ignored when no predictor has such a name
DEFAULT_CATEGORICAL = ("lc",)
DEFAULT_FINE_RESOLUTION = 1000.0
DEFAULT_MIN_VALID_FRACTION = 0.5
MIN_VALID_FRACTION_RANGE = (0.0, 1.0)
#: a coarse cell covered by valid fine pixels to within this of the minimum fraction still counts
#: (the coverage is an average of 0/1 pixels in float32)
VALID_FRACTION_TOLERANCE = 1e-6
RESERVED_NAMES = (DOY, TARGET, VALID_FRACTION)
#: bytes all dynamic inputs' chunks of dates may hold together while preprocess reads them
READ_BUDGET_BYTES = 256 * 1024 * 1024


def predictor_name(path):
    """The predictor name of a raster file: its file name without extension."""
    return os.path.splitext(os.path.basename(os.fspath(path)))[0]


def parse_categorical(value):
    """Categorical predictor names from ``"lc, soil"``, ``"lc;soil"`` or a sequence of names.

    Names are separated by ``,`` or ``;``; empty items are dropped; ``None`` or ``""`` gives
    ``()`` (no categorical predictor). Returns a tuple of names.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.replace(";", ",").split(",")
    return tuple(str(v).strip() for v in value if str(v).strip())


def parse_mask_classes(text):
    """Parse ``"lc:0,5; soil:3"`` into ``{"lc": [0, 5], "soil": [3]}``.

    Entries are separated by ``;``, classes by ``,``. Empty text gives ``{}``; a dict is
    returned normalised. SmdError on anything else.
    """
    if text is None:
        return {}
    if isinstance(text, dict):
        items = text.items()
    else:
        items = []
        for entry in str(text).split(";"):
            entry = entry.strip()
            if not entry:
                continue
            name, sep, values = entry.partition(":")
            if not sep or not name.strip():
                raise SmdError(f"Mask classes entry {entry!r} is not of the form name:class,class "
                               "(e.g. 'lc:0,5').")
            items.append((name.strip(), [v for v in values.split(",") if v.strip()]))
    result = {}
    for name, values in items:
        if isinstance(values, (int, float, str)):
            values = [values]
        classes = []
        for value in values:
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise SmdError(f"Mask class {value!r} of {name!r} is not a number.") from None
            if not math.isfinite(number):
                raise SmdError(f"Mask class {value!r} of {name!r} is not a finite number.")
            classes.append(int(number) if number.is_integer() else number)
        if not classes:
            raise SmdError(f"Mask classes for {name!r} list no class value (e.g. '{name}:0').")
        result.setdefault(str(name), [])
        result[str(name)] += [c for c in classes if c not in result[str(name)]]
    return result


def parse_min_valid_fraction(value):
    """``value`` as a float within :data:`MIN_VALID_FRACTION_RANGE`; SmdError otherwise."""
    low, high = MIN_VALID_FRACTION_RANGE
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = math.nan
    if not low <= fraction <= high:
        raise SmdError(f"The minimum valid fraction must be between {low:g} and {high:g}, got {value!r}.")
    return fraction


def parse_target_crs(value):
    """The target CRS (rasterio CRS) from a CRS, 'EPSG:xxxx', WKT or PROJ text; None when empty."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse_crs(value, "Target CRS")


def too_sparse(fraction, min_valid_fraction):
    """True where a coarse cell's valid fraction is below the minimum (within the tolerance)."""
    return fraction < min_valid_fraction - VALID_FRACTION_TOLERANCE


@dataclasses.dataclass(frozen=True)
class PreprocessOptions:
    """preprocess's options, parsed and checked against the predictor names (see check_options)."""

    categorical: tuple
    mask_classes: dict
    fine_resolution: float
    target_crs: object  # rasterio CRS or None (the first predictor's CRS)
    min_valid_fraction: float


def check_options(predictor_names, *, categorical=DEFAULT_CATEGORICAL, mask_classes=None,
                  fine_resolution=DEFAULT_FINE_RESOLUTION, target_crs=None,
                  min_valid_fraction=DEFAULT_MIN_VALID_FRACTION):
    """Parse and check preprocess's options for predictors named ``predictor_names``.

    The one home of these rules: :func:`preprocess` calls it, and so does the Processing
    algorithm's parameter check (with the names of the chosen layers), so both accept and refuse
    the same inputs. Checks that the names are unique and not reserved, that categorical and
    mask-class names are predictors (the default ``lc`` is dropped when there is no ``lc``), the
    mask-classes syntax, the fine resolution, the target CRS and the minimum valid fraction.
    Raster-level checks (CRS, dates, overlap, static masks) need the files: see :func:`_validate`.

    Returns
    -------
    PreprocessOptions
        ``categorical`` holds only names of predictors.
    """
    names = [str(name) for name in predictor_names]
    if not names:
        raise SmdError("No predictor rasters given.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SmdError(f"Predictor names must be unique (a name is the file name without "
                       f"extension); repeated: {', '.join(duplicates)}.")
    reserved = [n for n in names if n in RESERVED_NAMES]
    if reserved:
        raise SmdError(f"{', '.join(reserved)} is a reserved name ({', '.join(RESERVED_NAMES)}); "
                       "rename that predictor file.")
    min_valid_fraction = parse_min_valid_fraction(min_valid_fraction)
    fine_resolution = positive_resolution(fine_resolution)
    target_crs = parse_target_crs(target_crs)

    requested = parse_categorical(categorical)
    unknown = [n for n in requested if n not in names]
    if unknown and requested != DEFAULT_CATEGORICAL:
        raise SmdError(f"Categorical predictor(s) {', '.join(unknown)} not among the predictors "
                       f"({', '.join(names)}).")

    mask_classes = parse_mask_classes(mask_classes)
    unknown = [n for n in mask_classes if n not in names]
    if unknown:
        raise SmdError(f"Mask classes name {', '.join(unknown)}, which is not a predictor "
                       f"({', '.join(names)}).")
    return PreprocessOptions(categorical=tuple(n for n in requested if n in names),
                             mask_classes=mask_classes, fine_resolution=fine_resolution,
                             target_crs=target_crs, min_valid_fraction=min_valid_fraction)


class _Input:
    """An opened input raster with what validation learned about it."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.label = os.path.basename(self.path)
        self.name = predictor_name(self.path)
        self.src = open_raster(self.path, "input raster")
        self.grid = Grid.from_dataset(self.src)  # SmdError when the CRS is missing
        self.dates = read_band_dates(self.src)
        self.band_of_date = {date: band for band, date in enumerate(self.dates, start=1)}
        nodata = self.src.nodata
        if nodata is None and np.dtype(self.src.dtypes[0]).kind == "f":
            nodata = float("nan")
        self.nodata = nodata

    @property
    def dynamic(self):
        return bool(self.dates)

    def close(self):
        self.src.close()


@dataclasses.dataclass
class PreprocessPlan:
    """What :func:`_validate` learned and decided: the opened inputs and the grids to write."""

    predictors: list  # of _Input, in the order given
    target: _Input
    output_folder: str
    options: PreprocessOptions
    dates: list
    fine_grid: Grid
    coarse_grid: Grid
    target_window: object  # rasterio Window of the soil-moisture raster covering the fine grid

    @property
    def inputs(self):
        return [*self.predictors, self.target]

    def close(self):
        for item in self.inputs:
            item.close()


def _validate(predictor_paths, soil_moisture_path, output_folder, options):
    """Open and check every input. Returns the PreprocessPlan; SmdError on any problem."""
    output_folder = os.path.abspath(output_folder)
    check_outputs([(output_folder, "dataset")], inputs=[*predictor_paths, soil_moisture_path])

    inputs = []
    try:
        for path in predictor_paths:
            inputs.append(_Input(path))
        target = _Input(soil_moisture_path)
    except BaseException:
        for item in inputs:
            item.close()
        raise
    try:
        dynamic_masks = [item.name for item in inputs if item.name in options.mask_classes and item.dynamic]
        if dynamic_masks:
            raise SmdError(f"Mask classes can only be applied to static (single-band) predictors; "
                           f"{', '.join(dynamic_masks)} is a time series.")

        if not target.dates:
            raise SmdError(f"{target.label}: the soil-moisture raster needs one band per date, each "
                           "described with its date as YYYY-MM-DD.")
        dates = sorted(target.dates)
        missing = {item.label: [d for d in dates if d not in item.band_of_date]
                   for item in inputs if item.dynamic}
        missing = {label: gone for label, gone in missing.items() if gone}
        if missing:
            lines = "; ".join(f"{label} lacks {len(gone)} date(s): {_short_list(gone)}"
                              for label, gone in missing.items())
            raise SmdError(f"Dynamic predictors must cover every soil-moisture date. {lines}. "
                           "Gap-fill them or trim the soil-moisture series.")

        crs = options.target_crs or inputs[0].grid.crs
        footprints = [(item.label, transform_bounds_safe(item.grid.crs, crs, item.grid.bounds,
                                                         item.label))
                      for item in [*inputs, target]]
        fine_grid = fine_grid_for(footprints, crs, options.fine_resolution)
        coarse_grid, target_window = coarse_grid_for(target.grid, fine_grid, target.label)
        _check_finer_than_coarse(fine_grid, coarse_grid, options.fine_resolution)
        _check_fine_grid_fits(fine_grid, options.fine_resolution, 1 + len(options.mask_classes))
        _check_target_values(target, target_window, dates)
    except BaseException:
        for item in [*inputs, target]:
            item.close()
        raise
    return PreprocessPlan(predictors=inputs, target=target, output_folder=output_folder,
                          options=options, dates=dates, fine_grid=fine_grid,
                          coarse_grid=coarse_grid, target_window=target_window)


def _check_finer_than_coarse(fine_grid, coarse_grid, fine_resolution):
    """The fine cell must be smaller than a soil-moisture cell (compared in the fine CRS)."""
    left, bottom, right, top = coarse_grid.footprint_in(fine_grid.crs)
    coarse_size = min((right - left) / coarse_grid.width, (top - bottom) / coarse_grid.height)
    if fine_resolution >= coarse_size:
        raise SmdError(f"The fine resolution {fine_resolution:g} is not finer than the soil-moisture "
                       f"grid (cells of about {coarse_size:.4g} in the units of "
                       f"{fine_grid.crs.to_string()}); downscaling needs a smaller cell size, e.g. "
                       f"{coarse_size / 9:.3g}.")


#: bytes held per fine pixel while preprocess runs: float32 warp output, aggregation and validity
#: masks; plus one float32 array per masked static predictor (measured peak about 22 B/pixel)
_PREPROCESS_BYTES_PER_PIXEL = 24
_PREPROCESS_BYTES_PER_MASK = 4
#: share of the available memory one run may plan to use
_MEMORY_SHARE = 0.5


def _check_fine_grid_fits(fine_grid, fine_resolution, n_masks):
    """Refuse a fine grid whose full-grid arrays would not fit in memory, before allocating."""
    pixels = fine_grid.width * fine_grid.height
    needed = pixels * (_PREPROCESS_BYTES_PER_PIXEL + _PREPROCESS_BYTES_PER_MASK * n_masks)
    available = available_memory_bytes()
    if available is None or needed <= available * _MEMORY_SHARE:
        return
    budget = available * _MEMORY_SHARE
    suggested = fine_resolution * math.sqrt(needed / budget)
    raise SmdError(f"The fine grid would be {fine_grid.width:,} x {fine_grid.height:,} pixels, "
                   f"about {needed / 2**30:.1f} GiB while preparing, but only "
                   f"{available / 2**30:.1f} GiB of memory is available. Use a coarser fine "
                   f"resolution (at least {suggested:.3g}) or clip the inputs to a smaller extent.")


def _check_target_values(target, window, dates):
    """The soil moisture over the fine extent: some valid value, all within 0..1 m3/m3."""
    low, high = math.inf, -math.inf
    for date in dates:  # one band at a time: memory stays at one coarse band
        with reading(target.path, "soil-moisture raster"):
            values = target.src.read(target.band_of_date[date], window=window).astype("float32")
        values = values[~is_nodata(values, target.nodata)]
        if values.size:
            low, high = min(low, float(values.min())), max(high, float(values.max()))
    if low > high:
        raise SmdError(f"{target.label} has no valid soil-moisture value over the predictors' "
                       "extent on any date; check its nodata value and that it overlaps the "
                       "predictors.")
    check_soil_moisture_range([low, high], target.label)


def _check_usable(valid_pixels, usable_cells, mask_classes, min_fraction):
    """Refuse a dataset nothing could be learned from: an all-NaN predictor or no usable cell."""
    empty = [name for name, count in valid_pixels.items() if count == 0]
    if empty:
        masked = f" after masking {mask_classes}" if mask_classes else ""
        raise SmdError(f"Predictor(s) {', '.join(empty)} have no valid pixel over the "
                       f"soil-moisture extent{masked}; check their nodata value, extent and dates, "
                       "or leave them out.")
    if usable_cells == 0:
        raise SmdError("No coarse cell has both a valid soil-moisture value and fine predictors "
                       f"covering at least {min_fraction:g} of it on any date, so there is nothing "
                       "to train on. Check that the inputs overlap, lower the minimum valid "
                       "fraction, or mask fewer classes.")


def _short_list(items, limit=10):
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _warp(source, src_nodata, grid, resampling, src_transform=None, src_crs=None):
    """Warp a rasterio band or an array onto ``grid``; float32 with NaN where no data."""
    from rasterio.warp import reproject

    destination = np.full(grid.shape, np.nan, dtype="float32")
    kwargs = {}
    if src_transform is not None:
        kwargs.update(src_transform=src_transform, src_crs=src_crs)
    path = getattr(getattr(source, "ds", None), "name", None)  # a rasterio band: name its file
    with reading(path, "input raster") if path else contextlib.nullcontext():
        reproject(source=source, destination=destination, src_nodata=src_nodata,
                  dst_transform=grid.transform, dst_crs=grid.crs, dst_nodata=np.nan,
                  resampling=resampling, **kwargs)
    return destination


class _Aggregator:
    """Fine grid -> coarse grid aggregation and coarse valid fractions."""

    def __init__(self, fine_grid, coarse_grid):
        self.fine_grid = fine_grid
        self.coarse_grid = coarse_grid
        # The validity mask is padded with zeros so coarse cells reaching beyond the fine grid
        # count that area as invalid (GDAL's average would only average the covered part).
        self.padded_grid, (self.pad_top, self.pad_left) = padded_grid(fine_grid, coarse_grid)
        # Most predictors share one validity mask per date: remember the last few fractions
        # (by a digest of the mask, compared in full on a match).
        self._recent = {}
        self._keep = 3

    def remember(self, count):
        """Keep the fractions of the last ``count`` distinct masks (at least 3)."""
        self._keep = max(3, int(count))

    def valid_fraction(self, valid):
        """Fraction of each coarse cell's area covered by True fine pixels."""
        import hashlib

        valid = np.asarray(valid, dtype=bool)
        key = hashlib.blake2b(np.packbits(valid).tobytes(), digest_size=16).digest()
        found = self._recent.get(key)
        if found is not None and np.array_equal(found[0], valid):
            self._recent[key] = self._recent.pop(key)   # most recent last
            return found[1]
        fraction = self._valid_fraction(valid)
        self._recent[key] = (valid.copy(), fraction)
        while len(self._recent) > self._keep:
            self._recent.pop(next(iter(self._recent)))
        return fraction

    def _valid_fraction(self, valid):
        from rasterio.enums import Resampling

        padded = np.zeros(self.padded_grid.shape, dtype="float32")
        padded[self.pad_top:self.pad_top + valid.shape[0],
               self.pad_left:self.pad_left + valid.shape[1]] = valid
        fraction = _warp(padded, None, self.coarse_grid, Resampling.average,
                         self.padded_grid.transform, self.padded_grid.crs)
        return np.nan_to_num(fraction, nan=0.0)

    def aggregate(self, fine, categorical, min_valid_fraction):
        """Mean (or mode) of the valid fine pixels per coarse cell; NaN below the fraction."""
        from rasterio.enums import Resampling

        resampling = Resampling.mode if categorical else Resampling.average
        coarse = _warp(fine, np.nan, self.coarse_grid, resampling, self.fine_grid.transform,
                       self.fine_grid.crs)
        coarse[too_sparse(self.valid_fraction(np.isfinite(fine)), min_valid_fraction)] = np.nan
        return coarse

    def aggregate_many(self, fine, categorical, min_valid_fraction):
        """:meth:`aggregate` of every date of ``fine`` (dates, rows, cols) in one GDAL warp
        (each date's nodata on its own: the same bits as one warp per date)."""
        from rasterio.enums import Resampling
        from rasterio.warp import reproject

        if fine.shape[0] == 1:
            return self.aggregate(fine[0], categorical, min_valid_fraction)[None]
        coarse = np.full((fine.shape[0],) + self.coarse_grid.shape, np.nan, dtype="float32")
        reproject(source=fine, destination=coarse, src_transform=self.fine_grid.transform,
                  src_crs=self.fine_grid.crs, src_nodata=np.nan, dst_transform=self.coarse_grid.transform,
                  dst_crs=self.coarse_grid.crs, dst_nodata=np.nan,
                  resampling=Resampling.mode if categorical else Resampling.average, UNIFIED_SRC_NODATA="NO")
        for k in range(fine.shape[0]):
            coarse[k][too_sparse(self.valid_fraction(np.isfinite(fine[k])), min_valid_fraction)] = np.nan
        return coarse


def _dates_per_chunk(fine_grid, n_dates):
    """Dates preprocess holds at once (fine arrays and masks of one chunk: ~9 B per pixel-date),
    at most 16, at least 1, within :data:`READ_BUDGET_BYTES`."""
    per_date = 9 * fine_grid.width * fine_grid.height
    return max(1, min(16, n_dates, READ_BUDGET_BYTES // max(1, per_date)))


def _categories(values):
    found = np.unique(values[np.isfinite(values)])
    return [int(v) if float(v).is_integer() else float(v) for v in found]


def preprocess(predictor_paths, soil_moisture_path, output_folder, *, categorical=DEFAULT_CATEGORICAL,
               mask_classes=None, fine_resolution=DEFAULT_FINE_RESOLUTION, target_crs=None,
               min_valid_fraction=DEFAULT_MIN_VALID_FRACTION, progress=None, scheduler=None):
    """Build a prepared dataset folder from predictor rasters and a soil-moisture series.

    Parameters
    ----------
    predictor_paths : sequence of path
        GeoTIFFs; a multi-band raster with ISO-date band descriptions is dynamic, a single-band
        raster static. The predictor name is the file stem. Any CRS and resolution.
    soil_moisture_path : path
        Multi-band soil-moisture series (m3/m3), one band per date, on its own grid
        (e.g. EASE-Grid 2.0 9 km). Its dates are the dataset's dates.
    output_folder : path
        The dataset folder to write (replaced if it already holds a dataset).
    categorical : sequence of str or str
        Names of categorical predictors (mode aggregation), text separated by ``,`` or ``;``
        (:func:`parse_categorical`). The default ``("lc",)`` is ignored when no predictor is
        called ``lc``; other unknown names are an error.
    mask_classes : dict or str
        ``{"lc": [0]}`` or ``"lc:0"``: fine pixels of these classes (of static predictors) are
        excluded, i.e. NaN in every predictor, so they are never used nor predicted.
    fine_resolution : float
        Fine cell size in units of the target CRS.
    target_crs : str or CRS or None
        CRS of the fine grid; default the first predictor's CRS.
    min_valid_fraction : float
        Coarse cells less covered than this by valid fine pixels become NaN.
    progress : Progress or None
    scheduler : str or None
        Where the inputs are read and warped (:func:`.cluster.parse_scheduler`): None/empty in
        this process, ``local:N`` or a Dask scheduler address. On Dask each chunk of dates of an
        input is one task run against the input's path (which every worker must be able to
        open); this process aggregates and writes. The dataset is the same either way.

    Returns
    -------
    Dataset
    """
    from rasterio.enums import Resampling

    progress = Progress.wrap(progress)
    import rasterio

    if isinstance(predictor_paths, (str, os.PathLike)):
        predictor_paths = [predictor_paths]
    predictor_paths = list(predictor_paths or [])
    options = check_options([predictor_name(path) for path in predictor_paths], categorical=categorical,
                            mask_classes=mask_classes, fine_resolution=fine_resolution,
                            target_crs=target_crs, min_valid_fraction=min_valid_fraction)
    scheduler = parse_scheduler(scheduler)
    plan = _validate(predictor_paths, soil_moisture_path, output_folder, options)
    try:
        with contextlib.ExitStack() as stack:
            client = None
            if scheduler is not None:  # an unreachable scheduler is refused before the work
                from .cluster import dask_client

                client = stack.enter_context(dask_client(scheduler, progress))
            stack.enter_context(rasterio.Env())  # one GDAL environment for the warps below
            _write(plan, progress, Resampling, client)
    finally:
        plan.close()
    return Dataset.open(plan.output_folder)


def _write(plan, progress, Resampling, client=None):
    fine_grid, coarse_grid = plan.fine_grid, plan.coarse_grid
    dates, min_fraction = plan.dates, plan.options.min_valid_fraction
    categorical, mask_classes = set(plan.options.categorical), plan.options.mask_classes
    inputs, target = plan.predictors, plan.target
    statics = [item for item in inputs if not item.dynamic]
    dynamics = [item for item in inputs if item.dynamic]
    aggregator = _Aggregator(fine_grid, coarse_grid)
    categories = {name: set() for name in categorical}
    progress.info(f"Fine grid {fine_grid.width} x {fine_grid.height} cells of {fine_grid.res[0]} "
                  f"({fine_grid.crs.to_string()}); coarse grid {coarse_grid.width} x "
                  f"{coarse_grid.height} cells; {len(dates)} dates.")

    # Every input is read many dates per call and warped all together, or copied when it already
    # lies on the fine grid (core.fastread; the same bits as a warp of each band on its own).
    budget = max(1, READ_BUDGET_BYTES // max(1, len(dynamics)))

    def series_warper(item, bands):
        resampling = Resampling.mode if item.name in categorical else Resampling.average
        if client is not None:
            return DaskSeriesWarper(client, worker_path(item.path), item.src, item.nodata, fine_grid,
                                    resampling, bands, budget_bytes=budget, progress=progress)
        return SeriesWarper(item.src, item.nodata, fine_grid, resampling, bands, budget_bytes=budget,
                            reading=reading)

    def warp_input(item, band):
        return series_warper(item, [band]).get(band)

    valid_pixels = {item.name: 0 for item in inputs}

    def record_categories(item, values):
        valid_pixels[item.name] += int(np.isfinite(values).sum())
        if item.name in categories:
            categories[item.name].update(_categories(values))

    with gdal_cache_limit(), atomic_output(plan.output_folder, folder=True) as tmp:
        os.makedirs(os.path.join(tmp, "fine"))
        os.makedirs(os.path.join(tmp, "coarse"))

        # Pixels of masked classes (static predictors only) are excluded everywhere.
        excluded = np.zeros(fine_grid.shape, dtype=bool)
        warped_static = {}
        for item in statics:
            if item.name in mask_classes:
                values = warp_input(item, 1)
                excluded |= np.isin(values, mask_classes[item.name])
                warped_static[item.name] = values
        progress.check()

        static_valid = ~excluded
        for item in statics:
            values = warped_static.pop(item.name, None)
            if values is None:
                values = warp_input(item, 1)
            values[excluded] = np.nan
            record_categories(item, values)
            static_valid &= np.isfinite(values)
            _write_raster(fine_path(tmp, item.name), fine_grid, [values], None)
            coarse = aggregator.aggregate(values, item.name in categorical, min_fraction)
            _write_raster(coarse_path(tmp, item.name), coarse_grid, [coarse], None)
            progress.check()

        outputs, warpers = {}, {}
        usable_cells = 0
        try:
            for item in dynamics:
                outputs[("fine", item.name)] = _open_series(fine_path(tmp, item.name), fine_grid, dates)
                outputs[("coarse", item.name)] = _open_series(coarse_path(tmp, item.name),
                                                              coarse_grid, dates)
            target_out = _open_series(coarse_path(tmp, TARGET), coarse_grid, dates)
            outputs["target"] = target_out
            fraction_out = _open_series(coarse_path(tmp, VALID_FRACTION), coarse_grid, dates)
            outputs["fraction"] = fraction_out

            warpers = {item.name: series_warper(item, [item.band_of_date[date] for date in dates])
                       for item in dynamics}
            # dates in chunks: each predictor's dates of a chunk are aggregated in one warp
            chunk = _dates_per_chunk(fine_grid, len(dates))
            aggregator.remember(4 * chunk)
            for first in range(0, len(dates), chunk):
                chunk_dates = dates[first:first + chunk]
                progress.update(first / len(dates), f"Preparing {chunk_dates[0]}")
                valid = np.repeat(static_valid[None], len(chunk_dates), axis=0)
                for item in dynamics:
                    values = np.stack([warpers[item.name].get(item.band_of_date[date]) for date in chunk_dates])
                    values[:, excluded] = np.nan
                    for k in range(len(chunk_dates)):
                        record_categories(item, values[k])
                        outputs[("fine", item.name)].write(values[k], first + k + 1)
                    valid &= np.isfinite(values)
                    coarse = aggregator.aggregate_many(values, item.name in categorical, min_fraction)
                    for k in range(len(chunk_dates)):
                        outputs[("coarse", item.name)].write(coarse[k], first + k + 1)
                    progress.check()
                for k, date in enumerate(chunk_dates):
                    index = first + k
                    fraction = aggregator.valid_fraction(valid[k])
                    fraction_out.write(fraction.astype("float32"), index + 1)

                    with reading(target.path, "soil-moisture raster"):
                        soil_moisture = target.src.read(target.band_of_date[date],
                                                        window=plan.target_window).astype("float32")
                    soil_moisture[is_nodata(soil_moisture, target.nodata)] = np.nan
                    soil_moisture[too_sparse(fraction, min_fraction)] = np.nan
                    usable_cells += int(np.isfinite(soil_moisture).sum())
                    target_out.write(soil_moisture, index + 1)
        except BaseException:
            for handle in outputs.values():
                handle.abort()
            for warper in warpers.values():
                warper.close()  # Dask: cancels the dates read ahead
            raise
        for handle in outputs.values():
            handle.close()  # verifies what was written
        _check_usable(valid_pixels, usable_cells, mask_classes, min_fraction)

        manifest_predictors = [
            Predictor(name=item.name, kind=CATEGORICAL, dynamic=item.dynamic,
                      categories=tuple(sorted(categories[item.name])), source=item.label)
            if item.name in categorical else
            Predictor(name=item.name, kind=CONTINUOUS, dynamic=item.dynamic, source=item.label)
            for item in inputs]
        manifest_predictors.append(Predictor(name=DOY, kind=CONTINUOUS, dynamic=True, derived=True))
        write_manifest(tmp, dates=dates, predictors=manifest_predictors, fine_grid=fine_grid,
                       coarse_grid=coarse_grid, min_valid_fraction=min_fraction,
                       mask_classes=mask_classes,
                       extra={"soil_moisture_source": target.label,
                              "soil_moisture_window": [int(plan.target_window.col_off),
                                                       int(plan.target_window.row_off)]})
        progress.update(1.0, "Dataset written")


def _open_series(path, grid, dates):
    handle = CheckedRasterWriter(path, series_profile(grid.profile(), len(dates)),
                                 final_path=final_path_of(path))
    for band, date in enumerate(dates, start=1):
        handle.set_band_description(band, date)
    return handle


def _write_raster(path, grid, bands, dates):
    with CheckedRasterWriter(path, series_profile(grid.profile(), len(bands)),
                             final_path=final_path_of(path)) as handle:
        for band, values in enumerate(bands, start=1):
            handle.write(np.asarray(values, dtype="float32"), band)
            if dates:
                handle.set_band_description(band, dates[band - 1])
