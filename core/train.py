"""Training step: coarse samples -> one Stacking model per terrain partition (+ a global one).

Follows the paper (Section 3.3, "Model construction"): per partition, the samples (coarse cells x
dates with valid soil moisture and predictors) are split 7:3 at random into training and test
sets; XGBoost, LightGBM and CatBoost are fitted with five-fold cross-validation and fused by a
non-negative linear meta-learner (:class:`.stack.StackEnsemble`); the test set is used only for
the Table-3 metrics. A global model without partitions (the paper's "WP") is trained from the
same call.

Because neighbouring coarse cells and consecutive days are autocorrelated, ``cv_strategy`` can
also split the test set and the folds by blocks of coarse cells ("spatial") or by whole dates
("dates") instead of by sample ("random").
"""
import csv
import dataclasses
import io
import json
import math
import os
import threading
import time

import numpy as np

from .cluster import parse_scheduler
from .common import SOIL_MOISTURE_RANGE, Progress, SmdError, is_integer, is_number, soil_moisture_units_hint
from .early_stopping import DEFAULT_EARLY_STOPPING_ROUNDS
from .outputs import FILE_KINDS, check_outputs, write_text_temporary, write_together
from .stack import BASE_MODEL_LABELS, BASE_MODELS, check_base_models, check_params

#: Partition label of the global (unpartitioned) model in the report rows: the paper's "WP".
GLOBAL_LABEL = "WP"
#: Cross-validation strategies (ids, in the order of the Processing enum) and their names.
CV_STRATEGIES = ("random", "spatial", "dates")
CV_STRATEGY_LABELS = {"random": "Random pixels", "spatial": "Spatial blocks", "dates": "Leave dates out"}
#: Model id of the stacking ensemble in the report rows (beside the base models' ids).
STACK_MODEL = "stack"
MODEL_LABELS = {**BASE_MODEL_LABELS, STACK_MODEL: "Stacking"}
#: Table-3 columns of the report rows and their headers (CSV/HTML report, Model report dialog).
ROW_COLUMNS = (("partition", "Partition"), ("model", "Model"), ("n_train", "Train samples"),
               ("n_test", "Test samples"), ("r_train", "R (train)"), ("rmse_train", "RMSE (train)"),
               ("r_test", "R (test)"), ("rmse_test", "RMSE (test)"), ("trees", "Trees"))
ROW_FIELDS = tuple(field for field, _ in ROW_COLUMNS)
ROW_HEADERS = tuple(header for _, header in ROW_COLUMNS)
REPORT_EXTENSIONS = FILE_KINDS["report"]  # .html .htm .csv .json: the one list (core.outputs)


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """How :func:`train_model` trains: the one place its settings are defaulted and checked.

    Every field is checked (and normalised: tuples, ints, floats) on construction; a bad value
    raises SmdError saying what to use. The Processing algorithm builds one from its parameters
    and reports the same message before the run.

    Attributes
    ----------
    base_models : tuple of str
        Subset of :data:`.stack.BASE_MODELS`.
    folds : int
        Cross-validation folds for the out-of-fold predictions, at least 2 (paper: 5).
    test_fraction : float
        Share of samples (or of blocks/dates) held out for testing, strictly between 0 and 1
        (paper: 0.3).
    cv_strategy : {"random", "spatial", "dates"}
        How the test set and the folds are drawn: by sample, by blocks of
        ``spatial_block_cells`` x ``spatial_block_cells`` coarse cells, or by whole dates.
    spatial_block_cells : int
        At least 1.
    seed : int
    params : dict model name -> dict
        Hyper-parameter overrides (:data:`.stack.DEFAULT_PARAMS`, :func:`.stack.learner_params`).
    train_global : bool
        Also train the model without partitions ("WP").
    min_samples : int
        At least 1. A partition with fewer samples is an error, or uses the global model when
        ``fallback_to_global`` is True (recorded as a warning in the report).
    fallback_to_global : bool
    n_threads : int or None
        Threads per booster; None or 0 = all cores (stored as None).
    early_stopping_rounds : int
        0 = off. Otherwise each fold's booster stops when its held-out fold has not improved for
        that many rounds and the refit uses the folds' mean best iteration count
        (:mod:`.early_stopping`); Table 3 reports the trees each learner kept.
    """

    base_models: tuple = BASE_MODELS
    folds: int = 5
    test_fraction: float = 0.3
    cv_strategy: str = "random"
    spatial_block_cells: int = 4
    seed: int = 42
    params: dict = dataclasses.field(default_factory=dict)
    train_global: bool = True
    min_samples: int = 50
    fallback_to_global: bool = False
    n_threads: object = None
    early_stopping_rounds: int = DEFAULT_EARLY_STOPPING_ROUNDS

    #: smallest accepted value of each integer setting (also the Processing parameters' minimum;
    #: none has a maximum) and what the message adds
    MINIMUMS = {"folds": (2, "an integer of at least 2 (the paper uses 5)"),
                "spatial_block_cells": (1, "at least 1 coarse cell"),
                "min_samples": (1, "at least 1"),
                "n_threads": (0, "a number of threads, or 0 / None for all cores"),
                "early_stopping_rounds": (0, "a whole number of rounds, 0 = off")}
    #: test_fraction lies strictly between these
    TEST_FRACTION_BOUNDS = (0.0, 1.0)

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        put("base_models", check_base_models(self.base_models))
        if self.cv_strategy not in CV_STRATEGIES:
            raise SmdError(f"cv_strategy={self.cv_strategy!r}: use one of {', '.join(CV_STRATEGIES)}.")
        for name, (minimum, use) in self.MINIMUMS.items():
            value = getattr(self, name)
            if not (value is None and name == "n_threads") and (not is_integer(value) or value < minimum):
                raise SmdError(f"{name}={value!r}: use {use}.")
        low, high = self.TEST_FRACTION_BOUNDS
        if not is_number(self.test_fraction) or not low < float(self.test_fraction) < high:
            raise SmdError(f"test_fraction={self.test_fraction!r}: use a fraction between {low:g} and "
                           f"{high:g} (the paper uses 0.3).")
        if not is_integer(self.seed):
            raise SmdError(f"seed={self.seed!r}: use an integer.")
        put("params", check_params(self.params))
        for name in ("folds", "spatial_block_cells", "min_samples", "seed", "early_stopping_rounds"):
            put(name, int(getattr(self, name)))
        put("test_fraction", float(self.test_fraction))
        put("train_global", bool(self.train_global))
        put("fallback_to_global", bool(self.fallback_to_global))
        put("n_threads", int(self.n_threads) if self.n_threads else None)

    def replace(self, **changes):
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    def to_json(self):
        """JSON-ready dict of the settings (the report's ``settings``, the model's ``params``)."""
        data = dataclasses.asdict(self)
        data["base_models"] = list(self.base_models)
        return data



class Samples:
    """Coarse training samples.

    Attributes
    ----------
    X : float32 (n, n_predictors)     y : float32 (n,)
    partition : int16 (n,) index into ``partition_names`` (-1 without partitions)
    row, col : int32 (n,) coarse cell      date_index : int32 (n,)
    predictor_names, partition_names : list of str      dates : list of str
    """

    def __init__(self, X, y, partition, row, col, date_index, predictor_names, partition_names, dates,
                 diagnostics=None):
        self.X, self.y, self.partition = X, y, partition
        #: counts explaining an empty sample set: target_valid, features_valid, both_valid
        self.diagnostics = dict(diagnostics or {})
        self.row, self.col, self.date_index = row, col, date_index
        self.predictor_names = list(predictor_names)
        self.partition_names = list(partition_names)
        self.dates = list(dates)

    def __len__(self):
        return len(self.y)

    def counts(self):
        """Samples per partition name."""
        counts = np.bincount(self.partition[self.partition >= 0], minlength=len(self.partition_names))
        return {name: int(c) for name, c in zip(self.partition_names, counts)}


def coarse_partition_index(partitions, grid):
    """Partition index (int16 (h, w), -1 outside) of each coarse cell: majority of its area."""
    from .partitions import partition_index_on_grid

    return np.asarray(partition_index_on_grid(partitions, grid, mode="majority"), dtype=np.int16)


def build_samples(dataset, partitions=None, *, progress=None):
    """Collect coarse samples from a prepared dataset.

    A sample is a coarse cell on a date where the soil moisture and every predictor are valid
    (and, with partitions, the cell lies in one). Reads one date at a time.

    Parameters
    ----------
    dataset : Dataset or str
        An open :class:`.dataset.Dataset` or its folder.
    partitions : Partitions or None
        Terrain partitions; a coarse cell belongs to the one covering most of its area.
    progress : Progress, optional

    Returns
    -------
    Samples
    """
    from .dataset import Dataset

    progress = Progress.wrap(progress)
    if isinstance(dataset, (str, os.PathLike)):
        dataset = Dataset.open(dataset)
    h, w = dataset.coarse_grid.shape
    if partitions is not None:
        cell_partition = coarse_partition_index(partitions, dataset.coarse_grid).ravel()
        if cell_partition.shape != (h * w,):
            raise SmdError("The partition raster does not match the coarse grid.")
        partition_names = list(partitions.names)
        if not np.any(cell_partition >= 0):
            raise SmdError("No coarse cell lies inside the partitions; check that the partition layer "
                           "overlaps the soil-moisture grid (and its CRS).")
    else:
        cell_partition = np.full(h * w, -1, dtype=np.int16)
        partition_names = []
    rows, cols = np.divmod(np.arange(h * w, dtype=np.int32), np.int32(w))
    parts = {key: [] for key in ("X", "y", "partition", "cell", "date")}
    diagnostics = {"target_valid": 0, "features_valid": 0, "both_valid": 0, "cells": h * w,
                   "dates": len(dataset.dates)}
    n_dates = len(dataset.dates)
    for d in range(n_dates):
        progress.update(d / n_dates, f"reading samples of {dataset.dates[d]}")
        features = dataset.coarse_features(d)
        target = dataset.read_target(d).ravel()
        target_ok = np.isfinite(target)
        features_ok = np.all(np.isfinite(features), axis=1)
        valid = target_ok & features_ok
        diagnostics["target_valid"] += int(target_ok.sum())
        diagnostics["features_valid"] += int(features_ok.sum())
        diagnostics["both_valid"] += int(valid.sum())
        if partitions is not None:
            valid &= cell_partition >= 0
        cells = np.flatnonzero(valid)
        parts["X"].append(features[cells])
        parts["y"].append(target[cells])
        parts["partition"].append(cell_partition[cells])
        parts["cell"].append(cells.astype(np.int32))
        parts["date"].append(np.full(cells.size, d, dtype=np.int32))
    progress.update(1.0, "samples collected")
    n_pred = len(dataset.predictor_names)
    cat = {key: (np.concatenate(v) if v else np.empty(0)) for key, v in parts.items()}
    X = cat["X"].astype(np.float32).reshape(-1, n_pred)
    cell = cat["cell"].astype(np.int64)
    return Samples(X, cat["y"].astype(np.float32), cat["partition"].astype(np.int16),
                   rows[cell], cols[cell], cat["date"].astype(np.int32), dataset.predictor_names,
                   partition_names, dataset.dates, diagnostics)


def split_groups(samples, index, cv_strategy, spatial_block_cells):
    """Group label of each sample for the test split and the folds (None for "random").

    "spatial": blocks of ``spatial_block_cells`` x ``spatial_block_cells`` coarse cells;
    "dates": the date.
    """
    if cv_strategy == "random":
        return None
    if cv_strategy == "dates":
        return samples.date_index[index].astype(np.int64)
    b = int(spatial_block_cells)
    block_row = samples.row[index].astype(np.int64) // b
    block_col = samples.col[index].astype(np.int64) // b
    return block_row * 1_000_000 + block_col


def split_train_test(samples, index, *, test_fraction, cv_strategy, spatial_block_cells, seed):
    """Seeded train/test split of the samples ``index`` (positions into ``samples``).

    Returns
    -------
    train, test : int arrays of positions into ``samples``; groups_train : groups or None
    """
    from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit

    groups = split_groups(samples, index, cv_strategy, spatial_block_cells)
    if groups is None:
        splitter = ShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    else:
        if np.unique(groups).size < 2:
            raise SmdError(f"Only one {'date' if cv_strategy == 'dates' else 'spatial block'} is available, "
                           "so no group can be held out for testing; use cv_strategy='random' or a "
                           "smaller spatial_block_cells.")
        splitter = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    try:
        train, test = next(splitter.split(index, groups=groups))
    except ValueError as err:  # scikit-learn: "the resulting train set will be empty" and alike
        what = "samples" if groups is None else ("dates" if cv_strategy == "dates" else "spatial blocks")
        raise SmdError(f"{len(index)} samples ({what}) cannot be split into a training and a test set "
                       f"with test_fraction={test_fraction} ({err}); use more data, a larger "
                       "min_samples or another test_fraction.") from err
    return index[train], index[test], (None if groups is None else groups[train])


def _metric_rows(label, model, X_train, y_train, X_test, y_test):
    from .metrics import r, rmse

    def preds(X):
        if len(X) == 0:
            return np.empty((0, len(model.base_model_names_) + 1))
        base = model.base_predict(X)
        return np.column_stack([base, model.intercept_ + base @ model.weights_])

    train_pred, test_pred = preds(X_train), preds(X_test)
    # the stack's test predictions, kept for the report's observed-vs-predicted density scatter
    test_samples = {"observed": np.asarray(y_test, dtype="float32"),
                    "predicted": np.asarray(test_pred[:, -1], dtype="float32")}
    # trees each learner predicts with (the refit's; the stack: all of them)
    trees = {name: int(record["refit"]) for name, record in getattr(model, "trees_", {}).items()}
    if trees:
        trees[STACK_MODEL] = sum(trees.values())
    rows = []
    for k, name in enumerate(list(model.base_model_names_) + [STACK_MODEL]):
        rows.append({"partition": label, "model": MODEL_LABELS[name], "n_train": int(len(y_train)),
                     "n_test": int(len(y_test)),
                     "r_train": r(train_pred[:, k], y_train), "rmse_train": rmse(train_pred[:, k], y_train),
                     "r_test": r(test_pred[:, k], y_test), "rmse_test": rmse(test_pred[:, k], y_test)})
        if name in trees:
            rows[-1]["trees"] = trees[name]
    return rows, test_samples


def format_value(value):
    """A report number as text: 4 decimals (an R of 0.9999 must not read as 1.000), 'n/a' for
    NaN, infinity and None (a score undefined for too few samples)."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else "n/a"
    return str(value)


def stacking_test_scores(rows):
    """(R, RMSE) of the stacking models on their test samples, from Table-3 ``rows``.

    With partitions: the partition rows averaged with weights n_test (RMSE as the root of the
    weighted mean square); without: the global (WP) row. Rows whose test score is undefined
    (fewer than 3 test samples: R is NaN or None) carry no weight; (NaN, NaN) when none is left.
    """
    stack = [row for row in rows if row.get("model") == MODEL_LABELS[STACK_MODEL]]
    chosen = [row for row in stack if row.get("partition") != GLOBAL_LABEL] or stack
    chosen = [row for row in chosen if is_number(row.get("r_test")) and is_number(row.get("rmse_test"))]
    total = sum(row["n_test"] for row in chosen)
    if not chosen or total == 0:
        return float("nan"), float("nan")
    r = sum(row["r_test"] * row["n_test"] for row in chosen) / total
    rmse = (sum(row["rmse_test"] ** 2 * row["n_test"] for row in chosen) / total) ** 0.5
    return float(r), float(rmse)


class TrainingReport(dict):
    """Training summary (dict): settings, per-partition results, Table-3 rows, warnings,
    ``library_versions`` and ``test_samples`` (partition -> ``{"observed", "predicted"}``: the
    test samples' coarse soil moisture and the stack's predictions, float32 arrays, for the HTML
    report's density scatter; left out of the .json report)."""

    def rows(self):
        """Table-3 rows: partition, model, n_train, n_test, r_train, rmse_train, r_test, rmse_test."""
        return [dict(row) for row in self.get("rows", [])]

    def stacking_test_scores(self):
        """(R, RMSE) of the stacking models on their test samples (:func:`stacking_test_scores`)."""
        return stacking_test_scores(self.rows())

    def row_lines(self):
        """One line of text per Table-3 row (for a log)."""
        return ["{partition} {model}: n train {n_train}, n test {n_test}, R train {r_train}, RMSE train "
                "{rmse_train}, R test {r_test}, RMSE test {rmse_test}".format(
                    **{key: format_value(value) for key, value in row.items()}) for row in self.rows()]

    def to_json(self, path):
        return write_training_report(self, path)


def _fit_one(samples, index, label, settings, categorical, progress):
    """Split, fit and evaluate one StackEnsemble on ``samples[index]`` (``settings``: TrainingSettings)."""
    from sklearn.model_selection import GroupKFold, KFold

    from .stack import StackEnsemble

    train, test, groups = split_train_test(samples, index, test_fraction=settings.test_fraction,
                                           cv_strategy=settings.cv_strategy,
                                           spatial_block_cells=settings.spatial_block_cells,
                                           seed=settings.seed)
    folds = settings.folds
    if len(test) == 0:
        raise SmdError(f"Partition {label!r}: no sample is left for the test set ({len(index)} samples, "
                       f"test_fraction={settings.test_fraction}); use more samples or a larger "
                       "test_fraction.")
    if groups is None:
        cv = KFold(folds, shuffle=True, random_state=settings.seed)
        if len(train) < folds:
            raise SmdError(f"Partition {label!r} has only {len(train)} training samples for {folds} folds.")
    else:
        n_groups = np.unique(groups).size
        if n_groups < folds:
            what = "dates" if settings.cv_strategy == "dates" else "spatial blocks"
            raise SmdError(f"Partition {label!r} has only {n_groups} {what} in its training set, fewer than "
                           f"{folds} folds; use fewer folds, {'more dates' if what == 'dates' else 'a smaller spatial_block_cells'} "
                           "or cv_strategy='random'.")
        cv = GroupKFold(folds)
    model = StackEnsemble(base_models=settings.base_models, n_folds=folds, params=settings.params,
                          seed=settings.seed, n_threads=settings.n_threads,
                          feature_names=samples.predictor_names, categorical=categorical,
                          early_stopping_rounds=settings.early_stopping_rounds)
    model.fit(samples.X[train], samples.y[train], groups=groups, cv=cv, progress=progress)
    rows, test_samples = _metric_rows(label, model, samples.X[train], samples.y[train], samples.X[test],
                                      samples.y[test])
    summary = {"partition": label, "n_samples": int(len(index)), "n_train": int(len(train)),
               "n_test": int(len(test)), "base_models": list(model.base_model_names_),
               "weights": [float(v) for v in model.weights_], "intercept": float(model.intercept_),
               "status": "trained"}
    return model, rows, summary, test_samples


def train_model(dataset_folder, model_path, *, partitions=None, settings=None, report_path=None, progress=None,
                scheduler=None, **options):
    """Train the partitioned Stacking models and write the model file (and the report).

    Parameters
    ----------
    dataset_folder : str
        Prepared dataset (:mod:`.dataset`).
    model_path : str
        Output model file (zip, :mod:`.modelfile`); written only when everything succeeded.
    partitions : Partitions or None
        Terrain partitions; None trains only the global model.
    settings : TrainingSettings, optional
        How to train (defaults: :class:`TrainingSettings`).
    **options
        Fields of :class:`TrainingSettings` (``base_models``, ``folds``, ``test_fraction``,
        ``cv_strategy``, ``spatial_block_cells``, ``seed``, ``params``, ``train_global``,
        ``min_samples``, ``fallback_to_global``, ``n_threads``), overriding ``settings``.
    report_path : str or None
        Also write the training report (.json, .csv or .html, :func:`write_training_report`).
        Model and report are written together: both into temporaries, renamed into place only
        when both were written, so a failed report leaves no model file and vice versa.
    progress : Progress, optional
    scheduler : str or None
        Where the models are fitted (:func:`.cluster.parse_scheduler`): None/empty in this
        process, ``local:N`` or a Dask scheduler address. On Dask each partition model and the
        global model is one task, fitted with the worker's threads (one fit at a time per
        worker); workers return each model's native booster files (:meth:`StackEnsemble.to_members`),
        which are written to the model file as they are.

    Returns
    -------
    TrainingReport

    Raises
    ------
    SmdError
        Bad settings, no usable sample (all-NaN target, no cell where every predictor is valid),
        soil moisture outside 0..1 m3/m3 (e.g. in percent), too few samples, a model or report
        that cannot be written (the message names the file and the cause).
    TypeError
        An unknown keyword in ``options``.
    """
    progress = Progress.wrap(progress)
    if settings is not None and not isinstance(settings, TrainingSettings):
        raise TypeError(f"settings must be a TrainingSettings, not {type(settings).__name__}")
    settings = (settings or TrainingSettings()).replace(**options)
    scheduler = parse_scheduler(scheduler)
    if report_path:
        _report_extension(report_path)  # refused before training, not after
    check_outputs([(model_path, "model"), (report_path, "report")],
                  inputs=[dataset_folder, getattr(partitions, "source_path", None)])
    if scheduler is None:
        return _train_model(dataset_folder, model_path, partitions, settings, report_path, progress, None)
    from .cluster import dask_client

    with dask_client(scheduler, progress) as client:  # refused before any work when unreachable
        return _train_model(dataset_folder, model_path, partitions, settings, report_path, progress, client)


def _train_model(dataset_folder, model_path, partitions, settings, report_path, progress, client):
    from .dataset import Dataset

    min_samples, fallback_to_global = settings.min_samples, settings.fallback_to_global
    started = time.perf_counter()
    dataset = Dataset.open(dataset_folder)
    categorical = {p.name: (list(p.categories) if p.categories else None)
                   for p in dataset.predictors if p.categorical}
    settings_json = {**settings.to_json(), "categorical": categorical}
    samples = build_samples(dataset, partitions, progress=progress.sub(0.0, 0.05))
    _check_samples(samples, dataset_folder, partitions is not None)

    warnings, fallback = [], {}
    jobs = []  # (label, sample positions, is the global model)
    if partitions is not None:
        counts = samples.counts()
        too_few = {name: c for name, c in counts.items() if c < min_samples}
        for name, count in too_few.items():
            if not fallback_to_global:
                raise SmdError(f"Partition {name!r} has only {count} samples (minimum {min_samples}). Merge it "
                               "with a neighbour, lower min_samples, or enable the fallback to the global model.")
            fallback[name] = GLOBAL_LABEL
            warnings.append(f"Partition {name!r} has only {count} samples (minimum {min_samples}); "
                            "its pixels use the global (WP) model.")
        for k, name in enumerate(samples.partition_names):
            if name not in too_few:
                jobs.append((name, np.flatnonzero(samples.partition == k), False))
    if partitions is None or settings.train_global or fallback:
        if len(samples) < min_samples:
            raise SmdError(f"The dataset has only {len(samples)} samples (minimum {min_samples}).")
        jobs.append((GLOBAL_LABEL, np.arange(len(samples)), True))

    from .modelfile import library_versions

    models, global_model, rows, summaries, test_samples = {}, None, [], [], {}
    fits = _fit_all(samples, jobs, settings, categorical, progress, client)
    for label, index, is_global in jobs:
        model, model_rows, summary, test_samples[label] = fits[label]
        rows += model_rows
        summaries.append(summary)
        if is_global:
            global_model = model
        else:
            models[label] = model

    for name in fallback:
        summaries.append({"partition": name, "n_samples": samples.counts()[name], "status": "fallback to global"})
    partitions_json = partitions.to_json() if partitions is not None else None
    report = TrainingReport(
        format="smdownscale-training-report", dataset=os.path.abspath(dataset_folder),
        model_path=os.path.abspath(model_path), settings=settings_json, dates=list(dataset.dates),
        predictors=dataset.predictor_names, n_samples=len(samples),
        partitions=summaries, rows=rows, warnings=warnings, fallback=fallback,
        train_seconds=round(time.perf_counter() - started, 3), library_versions=library_versions(),
        test_samples=test_samples)
    progress.update(0.96, "writing the model file")
    model_kwargs = dict(models=models, global_model=global_model,
                        predictors=[p.to_json() for p in dataset.predictors],
                        partitions_json=partitions_json, fine_grid=dataset.fine_grid,
                        coarse_grid=dataset.coarse_grid, dates=dataset.dates,
                        metrics={"rows": _json_safe(rows), "partitions": summaries},
                        params=_json_safe(settings_json), extra={"fallback": fallback, "warnings": warnings,
                                                             "global_label": GLOBAL_LABEL})
    _write_model_and_report(model_path, model_kwargs, report, report_path)
    progress.update(1.0, "model written")
    return report


def _fit_all(samples, jobs, settings, categorical, progress, client):
    """label -> :func:`_fit_one` result for every job, here in turn or as Dask tasks."""
    total = sum(len(index) for _, index, _ in jobs)
    fits, done = {}, 0
    if client is None:
        for label, index, _ in jobs:
            sub = progress.sub(0.05 + 0.9 * done / total, 0.05 + 0.9 * (done + len(index)) / total)
            progress.update(0.05 + 0.9 * done / total, f"training {label} ({len(index)} samples)")
            fits[label] = _fit_one(samples, index, label, settings, categorical, sub)
            done += len(index)
        return fits
    from .cluster import run_tasks
    from .stack import StackEnsemble

    progress.update(0.05, f"training {len(jobs)} model(s) on Dask")
    shared = client.scatter(samples, broadcast=True, hash=False)
    for (label, index, _), (members, model_rows, summary, tests) in run_tasks(
            client, _fit_task, jobs, progress=progress, args=(shared, settings, categorical),
            in_flight=len(jobs), label="model fit"):
        model = StackEnsemble.from_members(members, n_threads=settings.n_threads)
        fits[label] = (model, model_rows, summary, tests)
        done += len(index)
        progress.update(0.05 + 0.9 * done / total, f"trained {label} ({len(index)} samples)")
    return fits


#: one fit at a time in a worker process, each with all the worker's threads
_FIT_LOCK = threading.Lock()


def _fit_task(job, samples, settings, categorical):
    """Dask task: fit one job; returns the model as its native members (no pickled booster)."""
    from distributed import get_worker

    label, index, _ = job
    if not settings.n_threads:
        settings = settings.replace(n_threads=get_worker().state.nthreads)
    with _FIT_LOCK:
        model, model_rows, summary, tests = _fit_one(samples, index, label, settings, categorical,
                                                     Progress())
    return model.to_members(), model_rows, summary, tests


def _check_samples(samples, dataset_folder, with_partitions):
    """SmdError when no sample is usable or the soil moisture is not in m3/m3."""
    if len(samples) == 0:
        d = samples.diagnostics
        if d.get("target_valid", 1) == 0:
            raise SmdError(f"The soil moisture of the dataset {dataset_folder!r} is empty (no valid value "
                           f"on any of its {d.get('dates', '?')} dates, all NaN or nodata); prepare the "
                           "dataset again from a soil-moisture raster with values.")
        if d.get("features_valid", 1) == 0:
            raise SmdError(f"The dataset {dataset_folder!r} has no coarse cell where every predictor is "
                           "valid on any date (a predictor is all nodata); remove that predictor or "
                           "lower min_valid_fraction when preparing the dataset.")
        where = " inside the partitions" if with_partitions else ""
        raise SmdError(f"The dataset {dataset_folder!r} has no coarse cell with valid soil moisture and "
                       f"predictors on the same date{where} ({d.get('target_valid', '?')} valid soil-"
                       f"moisture values, {d.get('features_valid', '?')} cells with all predictors); "
                       "check the inputs and min_valid_fraction.")
    low, high = SOIL_MOISTURE_RANGE
    y_min, y_max = float(np.min(samples.y)), float(np.max(samples.y))
    if y_min < low or y_max > high:
        n_bad = int(np.count_nonzero((samples.y < low) | (samples.y > high)))
        hint = soil_moisture_units_hint(y_min, y_max)
        raise SmdError(f"The soil moisture of the dataset {dataset_folder!r} ranges {y_min:g}..{y_max:g}, "
                       f"but volumetric soil moisture is in m3/m3 (0..1); {n_bad} of {len(samples)} "
                       f"samples lie outside {low:g}..{high:g}.{hint}")


def _report_extension(path):
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in REPORT_EXTENSIONS:
        raise SmdError(f"Report {os.fspath(path)!r}: use a .json, .csv or .html file name.")
    return ext


def _write_model_and_report(model_path, model_kwargs, report, report_path):
    """Model file and report into temporaries; renamed into place only when both were written."""
    from .modelfile import save_model

    def model(tmp):
        try:
            save_model(tmp, **model_kwargs)
        except SmdError as err:  # name the final file, not the temporary
            message = str(err).replace(os.path.abspath(tmp), os.path.abspath(model_path))
            if message == str(err):
                raise
            raise SmdError(message) from err

    outputs = [(model_path, model)]
    if report_path:  # the report (an HTML page with its companion folder of PNG/CSV files)
        outputs += _report_outputs(report, report_path)
    write_together(outputs)


def _json_safe(value):
    """NaN -> None recursively (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_training_report(report, path):
    """Write a training report as .json, .csv (Table-3 rows) or .html, atomically; an .html page
    is written with its companion folder ``<stem>_files`` (figures as PNG, tables as CSV;
    core.reports.files), both or neither.

    A write that fails (disk full, permission, missing folder) raises SmdError naming the file
    and the cause; nothing is left under ``path``.

    Returns
    -------
    str
        ``path``.
    """
    write_together(_report_outputs(report, path))
    return path


def _report_outputs(report, path):
    """The write_together items of a training report at ``path`` (its text made here)."""
    ext = _report_extension(path)
    rows = report.rows() if hasattr(report, "rows") else list(report.get("rows", []))
    if ext == ".json":  # the test samples' arrays stay in the report object (for the HTML page) only
        text = json.dumps(_json_safe({k: v for k, v in dict(report).items() if k != "test_samples"}), indent=1,
                          allow_nan=False)
    elif ext == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=ROW_FIELDS, extrasaction="ignore", lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    else:  # the page of core.reports.training: Table 3, Figure 4, test density, weights, settings
        from .reports import report_outputs, training_html

        started = time.perf_counter()
        text = training_html(report)
        if isinstance(report, dict):
            report["report_seconds"] = round(time.perf_counter() - started, 3)
        return report_outputs(path, text)
    return [(path, lambda tmp: write_text_temporary(tmp, text, path))]
