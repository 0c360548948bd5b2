"""Block-wise prediction of fine-resolution soil moisture with a trained model file.

For every requested date the fine grid of a prepared dataset is walked block by block: the
block's predictor values are read (:meth:`Dataset.fine_features`), pixels with every predictor
finite are predicted by the model of the partition containing their centre, the others stay NaN,
and the block is written to a float32 tiled DEFLATE GeoTIFF (one band per date, band
description = date, NaN nodata) through :func:`atomic_output`. Peak memory is bounded by the
block size, not by the raster size.

Residual correction (optional, additive and mass-conserving)
------------------------------------------------------------
Each fine pixel is assigned to the coarse (soil-moisture) cell containing its centre: a raster of
coarse cell ids is reprojected onto the fine grid with nearest-neighbour resampling (GDAL warp,
exact transformer). Per date, a first pass predicts every block, writes the raw prediction to a
scratch GeoTIFF and accumulates, per coarse cell, the sum and count of predicted fine pixels
(``np.bincount``). The residual ``sm_cell - mean(pred in cell)`` is then added to every predicted
fine pixel of the cell in a second pass that reads the scratch file and writes the output, so the
mean of the fine pixels of each cell equals the cell's soil moisture. Cells without soil moisture
on that date (NaN target) and fine pixels outside the coarse grid are left uncorrected. The mean is taken over the predicted fine pixels
of the cell that lie inside the fine grid. The largest ``|cell mean - cell SM|`` before and after
correction (over cells that have both) is measured and returned.
"""
import contextlib
import dataclasses
import os
import re
import threading

import numpy as np

from .common import Progress, SmdError, gdal_cache_limit, parse_date, series_profile, whole_number
from .outputs import CheckedRasterWriter, atomic_output, check_outputs, raise_gdal_errors
from .dataset import Dataset

#: Above this many fine pixels the per-block partition/cell maps are recomputed for every date
#: instead of being kept in memory (2 bytes per pixel, 6 with residual correction).
CACHE_PIXEL_LIMIT = 25_000_000


def _describe(predictor):
    kind = predictor.get("kind", "continuous")
    timing = "dynamic" if predictor.get("dynamic") else "static"
    return f"{kind}, {timing}"


def match_predictors(model_predictors, dataset_predictors):
    """Column indices of the model's predictors in the dataset's feature matrix (by name).

    Raises
    ------
    SmdError
        Listing the predictors missing from the dataset, the extra ones, and those whose kind
        (continuous/categorical) or timing (dynamic/static) differs.
    """
    model_by_name = {p["name"]: p for p in model_predictors}
    data_by_name = {p["name"]: p for p in dataset_predictors}
    missing = [n for n in model_by_name if n not in data_by_name]
    extra = [n for n in data_by_name if n not in model_by_name]
    different = [
        f"{n} (model: {_describe(model_by_name[n])}; dataset: {_describe(data_by_name[n])})"
        for n in model_by_name if n in data_by_name
        and (model_by_name[n].get("kind", "continuous") != data_by_name[n].get("kind", "continuous")
             or bool(model_by_name[n].get("dynamic")) != bool(data_by_name[n].get("dynamic")))]
    if missing or extra or different:
        problems = []
        if missing:
            problems.append(f"missing from the dataset: {', '.join(missing)}")
        if extra:
            problems.append(f"in the dataset but not in the model: {', '.join(extra)}")
        if different:
            problems.append(f"different kind: {'; '.join(different)}")
        raise SmdError(
            "The dataset's predictors do not match the model's (" + " | ".join(problems) + "). "
            f"The model was trained on {', '.join(model_by_name)}; prepare the dataset with exactly "
            "these predictors (same names, kinds and dynamic/static).")
    data_names = [p["name"] for p in dataset_predictors]
    return [data_names.index(p["name"]) for p in model_predictors]


#: what separates the dates of a DATES text
DATE_SEPARATORS = ",;"
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_dates(dates):
    """The dates to predict (the DATES parameter), parsed: the one rule for the API and the dialog.

    Parameters
    ----------
    dates : None, str or iterable
        None or a blank text: every date of the dataset (returns None). A text: dates separated
        by ``,`` or ``;``, blanks around them ignored (``" 2019-04-01 , "``). An iterable: dates
        as text or ``datetime.date``. Only the first 10 characters of an item count.

    Returns
    -------
    list of str or None
        ISO dates in the order given, repeated dates dropped; None = every date.

    Raises
    ------
    SmdError
        An item that is not a valid ``YYYY-MM-DD`` date, or no date at all in a non-blank text
        (only separators) or an empty list.
    """
    if dates is None or (isinstance(dates, str) and not dates.strip()):
        return None
    if isinstance(dates, str):
        items = [item for item in re.split(f"[{DATE_SEPARATORS}]", dates) if item.strip()]
    else:
        items = list(dates)
    wanted = []
    for item in items:
        text = str(item).strip()[:10]
        if not _ISO_DATE.fullmatch(text):  # datetime.date.fromisoformat also takes 20190401
            raise SmdError(f"{str(item).strip()!r} is not a date in the form YYYY-MM-DD.")
        iso = parse_date(text).isoformat()
        if iso not in wanted:
            wanted.append(iso)
    if not wanted:
        raise SmdError("The list of dates to predict is empty: give dates as YYYY-MM-DD separated by "
                       "commas, or nothing to predict every date.")
    return wanted


def select_dates(available, dates):
    """Indexes into ``available`` (the dataset's dates) of :func:`parse_dates` ``(dates)``.

    Raises SmdError listing the dates that are not available.
    """
    wanted = parse_dates(dates)
    if wanted is None:
        return list(range(len(available)))
    unknown = [d for d in wanted if d not in available]
    if unknown:
        raise SmdError(f"Date(s) {', '.join(unknown)} are not in the dataset. Available dates: "
                       f"{', '.join(available)}.")
    return [list(available).index(d) for d in wanted]


def parse_block_size(value):
    """The BLOCK_SIZE parameter: a whole number of pixels, at least 1 (int, or a float/text of one)."""
    return whole_number(value, "block_size", minimum=1, advice="use blocks of at least 1 pixel.")


@dataclasses.dataclass
class PredictionReport:
    """What :func:`predict` wrote. ``report["key"]`` and :meth:`to_dict` give the same values.

    ``pixels_per_model``: partition name, ``"outside partitions"`` (the global model there) or
    ``"all"`` (a model without partitions) -> pixels predicted. ``pixels_without_model``: valid
    pixels left NaN (outside every partition without ``use_global``, or in a partition with no
    model). The cell mismatches (m3/m3) and ``cells_without_soil_moisture`` are None without
    residual correction.
    """

    output: str
    dates: list
    pixels_predicted: int = 0
    pixels_nan: int = 0
    pixels_per_model: dict = dataclasses.field(default_factory=dict)
    pixels_outside_partitions: int = 0
    pixels_without_model: int = 0
    fallback_partitions: list = dataclasses.field(default_factory=list)
    partitions_without_model: list = dataclasses.field(default_factory=list)
    residual_correction: bool = False
    max_cell_mismatch_before: float = None
    max_cell_mismatch_after: float = None
    cells_without_soil_moisture: int = None

    def to_dict(self):
        """The report as a plain dict (the keys :func:`predict` returned before it was a record)."""
        return dataclasses.asdict(self)

    def __getitem__(self, key):
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def add(self, counts, values):
        """Count one predicted block: ``counts`` (:class:`BlockCounts`), ``values`` written."""
        for name, n in counts.per_model.items():
            self.pixels_per_model[name] = self.pixels_per_model.get(name, 0) + n
        self.pixels_outside_partitions += counts.outside
        self.pixels_without_model += counts.without_model
        predicted = int(np.isfinite(values).sum())
        self.pixels_predicted += predicted
        self.pixels_nan += values.size - predicted


@dataclasses.dataclass
class BlockCounts:
    """Valid pixels of one block: per model name, outside every partition, left without a model."""

    per_model: dict = dataclasses.field(default_factory=dict)
    outside: int = 0
    without_model: int = 0


class _PixelModels:
    """Which model predicts which fine pixel: partition maps per block, model per partition."""

    def __init__(self, loaded, dataset, use_global, global_only):
        self.dataset = dataset
        self.global_model = loaded.global_model
        self.partitions = None
        self.models = []          # model (or None) per partition index
        self.fallback = []        # partition names predicted by the global model
        self.without_model = []   # partition names with no model at all (pixels stay NaN)
        if global_only or use_global:
            if loaded.global_model is None:
                raise SmdError("The model file has no global (without partition) model; train with "
                               "train_global enabled or switch off the global-model option.")
        self.use_global = bool(use_global)
        if global_only:
            self.outside_model = loaded.global_model
            return
        if loaded.partitions_json is None:
            # trained without partitions: one model for the whole grid
            if loaded.global_model is not None:
                self.outside_model = loaded.global_model
            elif len(loaded.models) == 1:
                self.outside_model = next(iter(loaded.models.values()))
            else:
                raise SmdError("The model file has several partition models but no partitions.")
            return
        from .partitions import Partitions

        self.partitions = Partitions.from_json(loaded.partitions_json)
        for name in self.partitions.names:
            model = loaded.models.get(name)
            if model is None and loaded.global_model is not None:
                model = loaded.global_model
                self.fallback.append(name)
            elif model is None:
                self.without_model.append(name)
            self.models.append(model)
        self.outside_model = loaded.global_model if use_global else None

    def partition_index(self, window):
        """int16 (rows, cols) partition index of a fine window, -1 outside every partition;
        None when the whole grid uses one model."""
        if self.partitions is None:
            return None
        from .partitions import partition_index_on_grid

        return partition_index_on_grid(self.partitions, self.dataset.fine_grid.subgrid(window),
                                       mode="centre")

    def predict(self, X, partition_index):
        """``(values, counts)``: float64 (n,) predictions of the valid rows X (n, p), NaN where
        no model applies, and the :class:`BlockCounts` of these rows."""
        out = np.full(X.shape[0], np.nan)
        counts = BlockCounts()
        if X.shape[0] == 0:
            return out, counts
        if partition_index is None:
            out[:] = self.outside_model.predict(X)
            counts.per_model["all"] = X.shape[0]
            return out, counts
        for index in np.unique(partition_index):
            if index < 0:
                model, name = self.outside_model, "outside partitions"
            else:
                model, name = self.models[index], self.partitions.names[index]
            rows = partition_index == index
            n = int(rows.sum())
            if index < 0:
                counts.outside += n
            if model is not None:
                out[rows] = model.predict(X[rows])
                counts.per_model[name] = counts.per_model.get(name, 0) + n
            else:
                counts.without_model += n
        return out, counts


def _cell_ids(dataset, window):
    """int32 (rows, cols): id (row * w + col) of the coarse cell containing each fine pixel's
    centre, -1 outside the coarse grid (GDAL nearest-neighbour warp, exact transformer)."""
    from rasterio.warp import Resampling, reproject

    coarse = dataset.coarse_grid
    ids = np.arange(coarse.width * coarse.height, dtype="float64").reshape(coarse.shape)
    destination = np.full((int(window.height), int(window.width)), -1.0)
    reproject(ids, destination, src_transform=coarse.transform, src_crs=coarse.crs, src_nodata=-1.0,
              dst_transform=dataset.fine_grid.window_transform(window), dst_crs=dataset.fine_grid.crs,
              dst_nodata=-1.0, resampling=Resampling.nearest, tolerance=0.0)
    return destination.astype("int32")


class _BlockMaps:
    """Per-block partition index and coarse cell ids, cached when the grid is small enough."""

    def __init__(self, pixel_models, dataset, need_cells):
        self.pixel_models = pixel_models
        self.dataset = dataset
        self.need_cells = need_cells
        self.cache = {} if dataset.fine_grid.width * dataset.fine_grid.height <= CACHE_PIXEL_LIMIT else None

    def get(self, window):
        key = (int(window.col_off), int(window.row_off), int(window.width), int(window.height))
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        partition = self.pixel_models.partition_index(window)
        cells = _cell_ids(self.dataset, window).ravel() if self.need_cells else None
        maps = (None if partition is None else np.asarray(partition).ravel(), cells)
        if self.cache is not None:
            self.cache[key] = maps
        return maps


def predict(dataset_folder, model_path, output_path, *, dates=None, residual_correction=False,
            use_global=False, block_size=512, progress=None, global_only=False, require_signed=False,
            trusted_keys=(), scheduler=None):
    """Predict fine-resolution soil moisture for the dates of a prepared dataset.

    Parameters
    ----------
    dataset_folder : str
        Prepared dataset (core.preprocess) holding the fine predictors.
    model_path : str
        Model file (core.train / core.modelfile).
    output_path : str
        GeoTIFF to write: float32, tiled, DEFLATE, one band per date described by the date,
        NaN nodata. Written atomically; nothing is left behind on error or cancellation.
    dates : list of str, str or None
        Subset of the dataset's dates (ISO), default all; parsed by :func:`parse_dates`.
    residual_correction : bool
        Shift the fine pixels of every coarse cell so that their mean equals the cell's soil
        moisture (additive, see module docstring).
    use_global : bool
        Predict pixels outside every partition with the global model (else they are NaN).
    block_size : int
        Side of the square blocks processed at once (pixels); memory grows with its square.
        Multiples of 256 match the output tiles.
    progress : Progress or None
    global_only : bool
        Predict every pixel with the global (without-partition) model: the paper's "WP" product.
    require_signed : bool
        Refuse a model file that is not signed by one of ``trusted_keys`` (core.signing).
    trusted_keys : sequence of str
        Trusted public key files or folders of them.
    scheduler : str or None
        Where the blocks are predicted (:func:`.cluster.parse_scheduler`): None/empty in this
        process, ``local:N`` or a Dask scheduler address. On Dask every (date, block) is a task;
        workers receive the model file's bytes (verified there by :func:`.modelfile.load_model`),
        read their blocks from ``dataset_folder`` themselves, and the client writes the blocks
        as they arrive. The output is the same as in this process.

    Returns
    -------
    PredictionReport
        Fields (also ``report[key]`` and ``report.to_dict()``): ``output``, ``dates``
        (written), ``pixels_predicted`` (over all dates), ``pixels_nan`` (fine pixels left
        NaN, over all dates), ``pixels_per_model`` (partition name, or "outside partitions"
        for the global model there, or "all" -> pixels predicted),
        ``pixels_outside_partitions`` (valid pixels outside every partition),
        ``pixels_without_model`` (valid pixels left NaN: outside partitions without
        ``use_global``, or in a partition with no model),
        ``fallback_partitions`` (predicted by the global model), ``partitions_without_model``,
        ``residual_correction``, ``max_cell_mismatch_before`` / ``max_cell_mismatch_after``
        (m3/m3, largest ``|mean of fine pixels - cell SM|`` over cells and dates; None without
        correction), ``cells_without_soil_moisture`` (cell-dates left uncorrected).

    Raises
    ------
    SmdError
        Predictor mismatch (lists names), unknown date (lists available dates), a model file or
        dataset that cannot be read, block_size not a whole number >= 1.
    """
    from .cluster import parse_scheduler
    from .modelfile import load_model, read_model_bytes

    progress = Progress.wrap(progress)
    block_size = parse_block_size(block_size)
    wanted = parse_dates(dates)
    scheduler = parse_scheduler(scheduler)
    check_outputs([(output_path, "raster")], inputs=[dataset_folder, model_path])
    with contextlib.ExitStack() as stack:
        if scheduler is not None:  # an unreachable scheduler is refused before any work
            from .cluster import dask_client

            client = stack.enter_context(dask_client(scheduler, progress))
        progress.update(0.0, "loading the model")
        # on Dask the workers get the very bytes verified here
        model_bytes = read_model_bytes(model_path) if scheduler else None
        loaded = load_model(model_path, require_signed=require_signed, trusted_keys=trusted_keys,
                            data=model_bytes)
        stack.enter_context(gdal_cache_limit())
        dataset = stack.enter_context(Dataset.open(dataset_folder))
        columns = match_predictors(loaded.predictors, [p.to_json() for p in dataset.predictors])
        date_indexes = select_dates(dataset.dates, wanted)
        pixel_models = _PixelModels(loaded, dataset, use_global, global_only)
        windows = list(dataset.fine_block_windows(block_size))
        n_cells = dataset.coarse_grid.width * dataset.coarse_grid.height
        profile = series_profile(dataset.fine_grid.profile(), len(date_indexes))
        n_rows = dataset.fine_grid.width * dataset.fine_grid.height * len(date_indexes)
        report = PredictionReport(
            output=os.path.abspath(output_path), dates=[dataset.dates[i] for i in date_indexes],
            fallback_partitions=list(pixel_models.fallback),
            partitions_without_model=list(pixel_models.without_model),
            residual_correction=bool(residual_correction))
        ticker = _Ticker(progress, [dataset.dates[i] for i in date_indexes],
                         len(date_indexes) * len(windows) * (2 if residual_correction else 1))
        maps = _BlockMaps(pixel_models, dataset, residual_correction)
        if scheduler is None:
            _accelerate(loaded, n_rows, progress)
            blocks = _BlockPredictor(dataset, columns, maps, pixel_models, report, ticker)
        else:
            job = _BlockJob(dataset_folder=os.path.abspath(dataset_folder),
                            dataset_id=dataset.dataset_id, model_name=os.path.basename(model_path),
                            model_sha256=_sha256(model_bytes),
                            columns=tuple(columns), use_global=bool(use_global),
                            global_only=bool(global_only), need_cells=bool(residual_correction),
                            n_rows=n_rows)
            blocks = _DaskBlockPredictor(client, job, model_bytes, report, ticker, progress)

        with atomic_output(output_path) as tmp:
            with CheckedRasterWriter(tmp, profile, final_path=output_path) as dst:
                for band, date_index in enumerate(date_indexes, start=1):
                    dst.set_band_description(band, dataset.dates[date_index])
                if not residual_correction:
                    units = [(band, date_index, window) for band, date_index in enumerate(date_indexes, start=1)
                             for window in windows]
                    for (band, _, window), values, _ in blocks.predict_many(units):
                        dst.write(values.reshape(int(window.height), int(window.width)), band,
                                  window=window)
                else:
                    correction = _predict_with_correction(dataset, date_indexes, windows, dst, tmp,
                                                          n_cells, maps, blocks, ticker)
                    report.max_cell_mismatch_before = correction.worst_before
                    report.max_cell_mismatch_after = correction.worst_after
                    report.cells_without_soil_moisture = correction.uncorrected
                if report.pixels_predicted == 0:
                    raise SmdError(_nothing_predicted(report))
        progress.update(1.0, f"wrote {len(date_indexes)} date(s) to {output_path}")
    return report


def _sha256(data):
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _accelerate(loaded, n_rows, progress):
    """LightGBM through compiled code where it pays (:mod:`.compiled`; same predictions, native
    otherwise). Each model expects an equal share of the job's ``n_rows`` pixel-dates and logs
    which path it took and why when it first predicts."""
    models = [(name, model) for name, model in loaded.models.items()]
    if loaded.global_model is not None:
        models.append(("global model", loaded.global_model))
    share = n_rows // max(1, len(models))
    for name, model in models:
        model.accelerate(share, log=progress.info, label=name)


class _Ticker:
    """Progress over ``steps`` block passes, with the date being worked on; checks cancellation."""

    def __init__(self, progress, dates, steps):
        self.progress, self.dates, self.steps, self.step = progress, dates, steps, 0

    def tick(self, band, what):
        self.progress.check()
        self.progress.update(self.step / self.steps, f"{self.dates[band]}: {what}")
        self.step += 1


class _BlockPredictor:
    """Predicts blocks of the fine grid in this process and adds their counts to the report."""

    def __init__(self, dataset, columns, maps, pixel_models, report, ticker=None):
        self.dataset, self.columns, self.maps = dataset, columns, maps
        self.pixel_models, self.report, self.ticker = pixel_models, report, ticker

    def predict(self, date_index, window, features=None):
        """``(values, cells, counts)``: float32 (rows*cols,) prediction of one block, the coarse
        cell ids of its pixels (None without residual correction) and its :class:`BlockCounts`.
        ``features``: the block's :meth:`read` when already read."""
        if features is None:
            features = self.read(date_index, window)
        valid = np.isfinite(features).all(axis=1)
        partition, cells = self.maps.get(window)
        values = np.full(features.shape[0], np.nan, dtype="float32")
        values[valid], counts = self.pixel_models.predict(
            features[valid], None if partition is None else partition[valid])
        return values, cells, counts

    def read(self, date_index, window):
        """The model's feature columns of one block, float32 (rows*cols, n)."""
        return self.dataset.fine_features(date_index, window)[:, self.columns]

    def predict_many(self, units):
        """Yield ``(unit, values, cells)`` for units ``(band, date_index, window)``, counted in
        the report, with a progress tick each (here in order; on Dask as they complete).

        The next unit's features are read in a thread while this one is predicted (GDAL reads
        and decompresses without the GIL); only that thread reads the fine rasters meanwhile."""
        from concurrent.futures import ThreadPoolExecutor

        units = list(units)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="smd-read") as reader:
            ahead = reader.submit(self.read, *units[0][1:]) if units else None
            try:
                for position, unit in enumerate(units):
                    band, date_index, window = unit
                    self.ticker.tick(band - 1, "predicting")
                    features = ahead.result()
                    ahead = (reader.submit(self.read, *units[position + 1][1:])
                             if position + 1 < len(units) else None)
                    values, cells, counts = self.predict(date_index, window, features)
                    self.report.add(counts, values)
                    yield unit, values, cells
            finally:
                if ahead is not None:
                    ahead.cancel()


@dataclasses.dataclass(frozen=True)
class _BlockJob:
    """What a Dask worker needs to predict blocks of one run (small; the model's bytes travel
    separately, scattered once to every worker)."""

    dataset_folder: str
    dataset_id: str
    model_name: str
    model_sha256: str
    columns: tuple
    use_global: bool
    global_only: bool
    need_cells: bool
    n_rows: int


class _DaskBlockPredictor:
    """Predicts blocks as Dask tasks (:func:`_predict_block_task`); same interface as
    :class:`_BlockPredictor`."""

    def __init__(self, client, job, model_bytes, report, ticker, progress):
        self.client, self.job, self.report, self.ticker = client, job, report, ticker
        self.progress = progress
        # once to every worker (and to workers that join or restart later, from their peers)
        self.model = client.scatter(model_bytes, broadcast=True, hash=False)

    def predict_many(self, units):
        from .cluster import run_tasks

        for (band, date_index, window), (values, cells, counts) in run_tasks(
                self.client, _predict_block_task, units, progress=self.progress,
                args=(self.job, self.model), label="block prediction"):
            self.ticker.tick(band - 1, "predicting")
            self.report.add(counts, values)
            yield (band, date_index, window), values, cells


def _window_box(window):
    return (int(window.col_off), int(window.row_off), int(window.width), int(window.height))


#: per worker thread: the job it last served, its opened dataset and block predictor
_worker_local = threading.local()


def _predict_block_task(unit, job, model_bytes):
    """Dask task: ``(values, cells, counts)`` of one block (unit = (band, date_index, window)).

    The model is loaded from ``model_bytes`` once per worker thread and job (verified by
    load_model exactly as in the client), the dataset opened once, and both kept for the
    following blocks of the run."""
    state = getattr(_worker_local, "state", None)
    if state is None or state[0] != job:
        if state is not None:
            state[1].close()
        _worker_local.state = None
        _worker_local.state = (job, *_open_worker_job(job, model_bytes))
        state = _worker_local.state
    _, dataset, blocks = state
    _, date_index, window = unit
    return blocks.predict(date_index, window)


def _open_worker_job(job, model_bytes):
    from .modelfile import load_model

    if _sha256(model_bytes) != job.model_sha256:
        raise SmdError("The model bytes received by a Dask worker differ from the client's model file.")
    # verified here as in the client; one booster thread per task: the worker's threads are the
    # parallelism
    loaded = load_model(job.model_name, n_threads=1, data=model_bytes)
    dataset = Dataset.open(job.dataset_folder)
    try:
        if dataset.dataset_id != job.dataset_id:
            raise SmdError(f"The dataset {job.dataset_folder} was replaced during the run (a Dask worker "
                           "read another generation); run again.")
        pixel_models = _PixelModels(loaded, dataset, job.use_global, job.global_only)
        _accelerate(loaded, job.n_rows, Progress())
        maps = _BlockMaps(pixel_models, dataset, job.need_cells)
        return dataset, _BlockPredictor(dataset, list(job.columns), maps, pixel_models, report=None)
    except BaseException:
        dataset.close()
        raise


@dataclasses.dataclass
class _Correction:
    """Largest |cell mean - cell SM| before / after correction; cell-dates without SM."""

    worst_before: float
    worst_after: float
    uncorrected: int


def _nothing_predicted(report):
    """The message when a prediction would be 100% NaN: why, and what to change."""
    if report.pixels_without_model:
        return (f"No pixel could be predicted: {report.pixels_without_model} valid pixels lie "
                "outside every partition of the model or in partitions without a model. Tick "
                "'Predict pixels outside every partition with the global model', or use the model "
                "trained for this area.")
    return ("No pixel could be predicted: every fine pixel has a missing predictor on the chosen "
            "dates. Check the dataset's predictors (masked classes, nodata) and the dates.")


def _predict_with_correction(dataset, date_indexes, windows, dst, output_tmp, n_cells, maps, blocks,
                             ticker):
    """Two passes per date: predict into a scratch raster while summing per coarse cell, then
    write prediction + (cell SM - cell mean) to ``dst`` and measure the cell means written.
    Returns a :class:`_Correction`."""
    import rasterio

    grid = dataset.fine_grid
    scratch_path = os.path.join(os.path.dirname(output_tmp),
                                f".{os.path.basename(output_tmp)}.scratch.tif")
    # uncompressed, so rewriting its blocks for every date happens in place
    scratch_profile = series_profile(grid.profile(), 1)
    scratch_profile.update(compress=None, predictor=None)
    scratch_profile = {k: v for k, v in scratch_profile.items() if v is not None}
    worst_before = worst_after = 0.0
    uncorrected = 0
    try:
        # the scratch is rewritten for every date, so it cannot be verified by read-back like
        # the output; any GDAL failure while it is written or read fails the run instead
        with raise_gdal_errors(dst.final_path), \
                rasterio.open(scratch_path, "w+", **scratch_profile) as scratch:
            for band, date_index in enumerate(date_indexes, start=1):
                # per-window partial sums, added in window order once the date is predicted:
                # the same floats whatever order the blocks arrive in (Dask)
                partials = {}
                units = [(band, date_index, window) for window in windows]
                for (_, _, window), values, cells in blocks.predict_many(units):
                    scratch.write(values.reshape(int(window.height), int(window.width)), 1,
                                  window=window)
                    use = np.isfinite(values) & (cells >= 0)
                    cell_sums = np.bincount(cells[use], weights=values[use], minlength=n_cells)
                    cell_counts = np.bincount(cells[use], minlength=n_cells)
                    touched = np.flatnonzero(cell_counts)
                    partials[_window_box(window)] = (touched, cell_sums[touched], cell_counts[touched])
                sums = np.zeros(n_cells)
                counts = np.zeros(n_cells)
                for window in windows:
                    touched, cell_sums, cell_counts = partials.pop(_window_box(window))
                    sums[touched] += cell_sums
                    counts[touched] += cell_counts
                target = dataset.read_target(date_index).astype("float64").ravel()
                has_pixels = counts > 0
                correctable = has_pixels & np.isfinite(target)
                uncorrected += int((has_pixels & ~np.isfinite(target)).sum())
                residual = np.zeros(n_cells)
                residual[correctable] = target[correctable] - sums[correctable] / counts[correctable]
                if correctable.any():
                    worst_before = max(worst_before, float(np.abs(residual[correctable]).max()))
                # second pass: write prediction + residual and sum what was actually written
                sums_after = np.zeros(n_cells)
                for window in windows:
                    ticker.tick(band - 1, "residual correction")
                    values = scratch.read(1, window=window).ravel().astype("float64")
                    _, cells = maps.get(window)
                    inside = cells >= 0
                    values[inside] += residual[cells[inside]]
                    written = values.astype("float32")
                    dst.write(written.reshape(int(window.height), int(window.width)), band,
                              window=window)
                    use = np.isfinite(written) & inside
                    sums_after += np.bincount(cells[use], weights=written[use], minlength=n_cells)
                if correctable.any():
                    after = np.abs(sums_after[correctable] / counts[correctable] - target[correctable])
                    worst_after = max(worst_after, float(after.max()))
    finally:
        for leftover in (scratch_path, scratch_path + ".aux.xml"):
            if os.path.exists(leftover):
                os.remove(leftover)
    return _Correction(worst_before, worst_after, uncorrected)
