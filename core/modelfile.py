"""The model file: one zip with a JSON manifest and every learner in its native format.

Layout (DESIGN.md)::

    manifest.json               format/version, predictors, partitions (+ GeoJSON, CRS), grids,
                                dates, metrics, params, library versions, sha256 of every member
    models/<pid>/xgboost.ubj    XGBoost UBJSON        models/<pid>/lightgbm.txt   LightGBM text
    models/<pid>/catboost.cbm   CatBoost binary       models/<pid>/meta.json      weights, encoder
    models/global/...           the unpartitioned ("WP") model, when trained

Members are plain data and loading never executes code: they are read as bytes, checked against
the manifest's sha256 and handed to the boosters' own loaders.
"""
import datetime as _dt
import hashlib
import json
import re
import zipfile

from .common import SmdError, atomic_output
from .stack import MODEL_FILES, StackEnsemble

FORMAT = "smdownscale-model"
VERSION = 1
GLOBAL_ID = "global"
#: Largest member accepted when loading (guards against zip bombs).
MAX_MEMBER_BYTES = 2 * 1024 ** 3


def library_versions():
    """Versions of the libraries that wrote the learners."""
    import catboost
    import lightgbm
    import numpy
    import sklearn
    import xgboost

    return {"xgboost": xgboost.__version__, "lightgbm": lightgbm.__version__,
            "catboost": catboost.__version__, "scikit-learn": sklearn.__version__,
            "numpy": numpy.__version__}


def _grid_json(grid):
    if grid is None or isinstance(grid, dict):
        return grid
    return grid.to_json()


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _member_id(index, name):
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", str(name)).strip("_")[:40]
    return f"p{index}" + (f"_{slug}" if slug else "")


def save_model(path, *, models, predictors, global_model=None, partitions_json=None, fine_grid=None,
               coarse_grid=None, dates=(), metrics=None, params=None, extra=None):
    """Write a trained model as one zip, atomically.

    Parameters
    ----------
    path : str
        Output ``.zip`` (any extension) path.
    models : dict partition name -> fitted StackEnsemble
    predictors : list of dict
        Dataset predictor descriptions (name, kind, dynamic, categories...), in model column order.
    global_model : StackEnsemble or None
        The model trained without partitions.
    partitions_json : dict or None
        ``Partitions.to_json()`` (names, GeoJSON geometries, CRS); stored as given.
    fine_grid, coarse_grid : Grid or dict or None
    dates : list of str
        Dates the model was trained on.
    metrics, params, extra : JSON-serialisable, optional

    Returns
    -------
    str
        ``path``.
    """
    if not models and global_model is None:
        raise SmdError("There is no trained model to save.")
    members = {}
    entries = []
    for index, (name, model) in enumerate(models.items()):
        member_dir = f"models/{_member_id(index, name)}"
        entries.append({"partition": str(name), "dir": member_dir})
        for file_name, data in model.to_members().items():
            members[f"{member_dir}/{file_name}"] = data
    if global_model is not None:
        for file_name, data in global_model.to_members().items():
            members[f"models/{GLOBAL_ID}/{file_name}"] = data
    manifest = {
        "format": FORMAT, "version": VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "predictors": [dict(p) for p in predictors],
        "predictor_names": [p["name"] for p in predictors],
        "partitions": partitions_json,
        "models": entries,
        "global_model": f"models/{GLOBAL_ID}" if global_model is not None else None,
        "fine_grid": _grid_json(fine_grid), "coarse_grid": _grid_json(coarse_grid),
        "dates": list(dates), "metrics": metrics, "params": params, "extra": extra,
        "library_versions": library_versions(),
        "checksums": {name: _sha256(data) for name, data in sorted(members.items())},
    }
    try:
        manifest_bytes = json.dumps(manifest, indent=1, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise SmdError(f"The model manifest is not JSON-serialisable: {err}") from err
    with atomic_output(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("manifest.json", manifest_bytes)
            for name, data in sorted(members.items()):
                archive.writestr(name, data)
    return path


class LoadedModel:
    """A verified model file.

    Attributes
    ----------
    manifest : dict
    models : dict partition name -> StackEnsemble (manifest order)
    global_model : StackEnsemble or None
    predictor_names : list of str (model column order)
    predictors : list of dict
    partitions_json : dict or None
    dates : list of str
    """

    def __init__(self, manifest, models, global_model):
        self.manifest = manifest
        self.models = models
        self.global_model = global_model
        self.predictors = list(manifest["predictors"])
        self.predictor_names = [p["name"] for p in self.predictors]
        self.partitions_json = manifest.get("partitions")
        self.dates = list(manifest.get("dates") or [])
        self.fine_grid = manifest.get("fine_grid")
        self.coarse_grid = manifest.get("coarse_grid")
        self.metrics = manifest.get("metrics")

    @property
    def partition_names(self):
        return list(self.models)


def _read_members(path):
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError as err:
        raise SmdError(f"Model file {path!r} does not exist.") from err
    except (zipfile.BadZipFile, OSError) as err:
        raise SmdError(f"{path!r} is not a readable smdownscale model file (not a zip, or truncated): "
                       f"{err}. Train the model again or choose the right file.") from err
    members = {}
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            if info.file_size > MAX_MEMBER_BYTES:
                raise SmdError(f"Model file {path!r}: member {info.filename} is implausibly large.")
            try:
                members[info.filename] = archive.read(info)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
                raise SmdError(f"Model file {path!r} is damaged: cannot read {info.filename} ({err}).") from err
    return members


def _verified(path):
    """(manifest, members) of a model file whose format, version, member set and checksums hold."""
    members = _read_members(path)
    if "manifest.json" not in members:
        raise SmdError(f"{path!r} is not an smdownscale model file (no manifest.json).")
    try:
        manifest = json.loads(members.pop("manifest.json").decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise SmdError(f"{path!r}: manifest.json is not valid JSON ({err}).") from err
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found != FORMAT:
        raise SmdError(f"{path!r} is not an smdownscale model file (format {found!r}, expected {FORMAT!r}).")
    if manifest.get("version") != VERSION:
        raise SmdError(f"{path!r} has model format version {manifest.get('version')!r}; this plugin reads "
                       f"version {VERSION}. Retrain the model with this plugin version.")
    checksums = manifest.get("checksums")
    if not isinstance(checksums, dict):
        raise SmdError(f"{path!r}: the manifest has no checksums.")
    extra = sorted(set(members) - set(checksums))
    missing = sorted(set(checksums) - set(members))
    if extra:
        raise SmdError(f"{path!r} contains unexpected member(s) {extra}; the file was modified. "
                       "Use the original model file.")
    if missing:
        raise SmdError(f"{path!r} lacks member(s) {missing}; the file is incomplete.")
    for name in sorted(checksums):
        if _sha256(members[name]) != checksums[name]:
            raise SmdError(f"{path!r}: checksum mismatch for {name}; the model file was modified or "
                           "damaged. Use the original file or train again.")
    return manifest, members


def read_manifest(path):
    """The verified manifest of a model file, without loading any learner (cheap; no boosters).

    Raises SmdError for the same problems as :func:`load_model` finds before loading learners.
    """
    return _verified(path)[0]


def load_model(path, *, n_threads=None):
    """Read and verify a model file written by :func:`save_model`.

    Checks the format name and version, that the members are exactly those the manifest lists,
    and their sha256; then loads each booster with its own library.

    Returns
    -------
    LoadedModel

    Raises
    ------
    SmdError
        Missing, truncated, not-a-zip, unknown format/version, extra or missing member,
        checksum mismatch, or a learner its library cannot read.
    """
    manifest, members = _verified(path)
    try:
        predictors = manifest["predictors"]
        entries = manifest["models"]
        [p["name"] for p in predictors]
    except (KeyError, TypeError) as err:
        raise SmdError(f"{path!r}: the manifest is incomplete ({err}).") from err

    def ensemble(member_dir):
        prefix = member_dir.rstrip("/") + "/"
        files = {name[len(prefix):]: data for name, data in members.items() if name.startswith(prefix)}
        if "meta.json" not in files:
            raise SmdError(f"{path!r}: {member_dir} has no meta.json.")
        unknown = set(files) - set(MODEL_FILES.values()) - {"meta.json"}
        if unknown:
            raise SmdError(f"{path!r}: unexpected file(s) {sorted(unknown)} in {member_dir}.")
        model = StackEnsemble.from_members(files, n_threads=n_threads)
        if model.feature_names_ != [p["name"] for p in predictors]:
            raise SmdError(f"{path!r}: {member_dir} was trained on predictors {model.feature_names_}, "
                           f"but the manifest lists {[p['name'] for p in predictors]}.")
        return model

    models = {}
    for entry in entries:
        models[entry["partition"]] = ensemble(entry["dir"])
    global_model = ensemble(manifest["global_model"]) if manifest.get("global_model") else None
    return LoadedModel(manifest, models, global_model)
