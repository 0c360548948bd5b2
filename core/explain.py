"""SHAP importance of the predictors of a trained Stacking model, per partition.

As in the paper (Section 5.1) the SHAP values of the stack are approximated by combining the
base models' TreeSHAP values with the meta-learner's weights,
``SHAP_stack = sum_k w_k * SHAP_k`` (exact for a linear meta-learner: the rows plus the expected
value sum to the stack's prediction). TreeSHAP comes from the boosters' native routines
(XGBoost ``pred_contribs``, LightGBM ``pred_contrib``, CatBoost ``ShapValues``), which compute
the same exact TreeSHAP as ``shap.TreeExplainer`` without a conversion step. Importance is the
mean |SHAP| over a seeded sample of the partition's training cells; one-hot land-cover columns
are summed back to one ``lc`` value per sample before taking the absolute value.
"""
import csv
import os

import numpy as np

from .common import Progress, SmdError, whole_number
from .outputs import atomic_output, describe_os_error, write_error

#: the columns of an explain row, in table order
FIELDS = ("partition", "predictor", "mean_abs_shap", "n_samples")
#: defaults of :func:`explain` (and of the Processing parameters)
DEFAULT_MAX_SAMPLES = 2000
DEFAULT_SEED = 0


def explain(model_path, dataset_folder, *, max_samples=DEFAULT_MAX_SAMPLES, seed=DEFAULT_SEED,
            progress=None, samples_out=None):
    """Mean |SHAP| per predictor for every partition model (and the global "WP" model).

    Parameters
    ----------
    model_path : str
        Model file from :func:`.train.train_model`.
    dataset_folder : str
        The prepared dataset the model was trained on (its training cells are re-derived with
        the seed and split settings stored in the model).
    max_samples : int
        Training samples explained per partition (a seeded random subset); checked by
        :func:`parse_max_samples`.
    seed : int
        Seed of that subset; checked by :func:`parse_seed`.
    progress : Progress, optional
    samples_out : dict, optional
        Filled with ``partition -> {"names", "shap", "values"}``: the explained samples' SHAP
        values (land cover summed into one column) and predictor values, float32 (n, p), for the
        report's beeswarm and dependence plots (:func:`write_explanation_report`).

    Returns
    -------
    list of dict
        ``{"partition", "predictor", "mean_abs_shap", "n_samples"}`` (``n_samples``: training
        samples explained for that partition); per partition (model file order, the global
        model last) the predictors by decreasing importance.
    """
    from .dataset import Dataset
    from .modelfile import load_model
    from .partitions import Partitions
    from .train import GLOBAL_LABEL, TrainingSettings, build_samples, split_train_test

    progress = Progress.wrap(progress)
    max_samples = parse_max_samples(max_samples)
    seed = parse_seed(seed)
    loaded = load_model(model_path)
    dataset = Dataset.open(dataset_folder)
    if dataset.predictor_names != loaded.predictor_names:
        raise SmdError(f"The dataset's predictors {dataset.predictor_names} differ from the model's "
                       f"{loaded.predictor_names}; use the dataset the model was trained on.")
    partitions = Partitions.from_json(loaded.partitions_json) if loaded.partitions_json else None
    samples = build_samples(dataset, partitions, progress=progress.sub(0.0, 0.2))
    # the split the model was trained with (its manifest's settings; defaults are core.train's)
    trained = loaded.manifest.get("params") or {}
    defaults = TrainingSettings()
    split = {name: trained.get(name, getattr(defaults, name))
             for name in ("test_fraction", "cv_strategy", "spatial_block_cells", "seed")}

    jobs = []
    for name, model in loaded.models.items():
        k = partitions.index(name) if partitions is not None else -1
        jobs.append((name, model, np.flatnonzero(samples.partition == k)))
    if loaded.global_model is not None:
        jobs.append((GLOBAL_LABEL, loaded.global_model, np.arange(len(samples))))
    rng = np.random.default_rng(seed)
    rows = []
    for number, (label, model, index) in enumerate(jobs):
        progress.update(0.2 + 0.8 * number / len(jobs), f"SHAP of {label}")
        if index.size < 2:
            raise SmdError(f"The dataset has no training samples of partition {label!r}; use the dataset "
                           "the model was trained on.")
        train, _, _ = split_train_test(samples, index, **split)
        if train.size == 0:
            raise SmdError(f"Partition {label!r} has no training sample in this dataset; use the dataset "
                           "the model was trained on.")
        chosen = np.sort(rng.choice(train, size=min(max_samples, train.size), replace=False))
        progress.info(f"{label}: SHAP of {chosen.size} of {train.size} training samples")
        values, _ = model.shap_values(samples.X[chosen], collapse=True)
        importance = np.abs(values).mean(axis=0)
        if not np.all(np.isfinite(importance)):
            raise SmdError(f"The SHAP values of partition {label!r} are not finite; the model file or the "
                           "dataset is damaged - train the model again.")
        if samples_out is not None:
            samples_out[label] = {"names": list(model.feature_names_), "shap": np.asarray(values, dtype="float32"),
                                  "values": np.asarray(samples.X[chosen], dtype="float32")}
        for j in np.argsort(-importance, kind="stable"):
            rows.append({"partition": label, "predictor": model.feature_names_[j],
                         "mean_abs_shap": float(importance[j]), "n_samples": int(chosen.size)})
    progress.update(1.0, "SHAP done")
    return rows


def parse_max_samples(value):
    """MAX_SAMPLES: the samples explained per partition, a whole number >= 1."""
    return whole_number(value, "max_samples", minimum=1,
                        advice="explain at least 1 sample per partition (a whole number).")


def parse_seed(value):
    """SEED: the seed of the sample drawn, a whole number >= 0 (numpy's generators refuse negative seeds)."""
    return whole_number(value, "seed", minimum=0)


def write_explain_table(rows, path):
    """Write explain rows as CSV (partition, predictor, mean_abs_shap, n_samples), atomically.

    A write that fails (disk full, permission, missing folder) raises SmdError naming the file.
    """
    if os.path.splitext(os.fspath(path))[1].lower() != ".csv":
        raise SmdError(f"{path!r}: the SHAP table is written as .csv; use that extension.")
    with atomic_output(path) as tmp:
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=FIELDS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        except OSError as err:  # named with the final path, not the temporary
            raise write_error(os.path.abspath(path), describe_os_error(err)) from err
    return path


def parse_dependence(text, predictor_names=None):
    """DEPENDENCE: ``"first,second"`` (the predictor on the x axis, the one colouring the points)
    or empty for the default (the most important static and dynamic predictors) -> tuple or None."""
    if text is None or not str(text).strip():
        return None
    names = [name.strip() for name in str(text).replace(";", ",").split(",") if name.strip()]
    if len(names) != 2:
        raise SmdError(f"dependence={text!r}: give two predictor names separated by a comma, e.g. 'dem,ndvi' "
                       "(the first on the x axis, the second colouring the points), or leave it empty.")
    if predictor_names is not None:
        unknown = [name for name in names if name not in predictor_names]
        if unknown:
            raise SmdError(f"dependence: {', '.join(unknown)} is not a predictor of the model; predictors are "
                           f"{', '.join(predictor_names)}.")
    return tuple(names)


def check_report_path(path):
    """SmdError unless the explanation report ``path`` ends in .html/.htm."""
    if os.path.splitext(os.fspath(path))[1].lower() not in (".html", ".htm"):
        raise SmdError(f"Explanation report {os.fspath(path)!r}: the report is a web page; use a .html file name.")
    return path


def write_explanation_report(rows, samples, path, *, dependence=None, predictors=None, model_path=None):
    """Write the explanation report (core.reports.explanation) atomically: beeswarm per partition,
    importance bars, dependence plot of ``dependence`` (default: the most important static and
    the most important dynamic predictor of ``predictors`` - the model manifest's predictor
    records - derived ones such as the day of year left out). The page's companion folder
    ``<stem>_files`` (figures as PNG, tables as CSV) is written with it: both or neither."""
    from .reports import explanation_html, write_report

    check_report_path(path)
    if dependence is not None:
        names = {row["predictor"] for row in rows}
        unknown = [name for name in dependence if name not in names]
        if unknown:
            raise SmdError(f"dependence: {', '.join(unknown)} is not a predictor of the model; predictors are "
                           f"{', '.join(sorted(names))}.")
    static = dynamic = None
    if predictors:
        chosen = [p for p in predictors if not p.get("derived")]
        static = {p["name"] for p in chosen if not p.get("dynamic")}
        dynamic = {p["name"] for p in chosen if p.get("dynamic")}
    text = explanation_html(rows, samples, dependence=dependence, dynamic=dynamic, static=static,
                            model_path=model_path)
    write_report(path, text)
    return path
