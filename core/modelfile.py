"""The model file: one zip with a JSON manifest and every learner in its native format.

Layout (DESIGN.md)::

    manifest.json               format/version, predictors, partitions (+ GeoJSON, CRS), grids,
                                dates, metrics, params, library versions, sha256 of every member
    manifest.sha256             sha256 (hex) of the exact bytes of manifest.json
    signature.json              optional: Ed25519 signature over manifest.sha256 (core.signing)
    models/<pid>/xgboost.ubj    XGBoost UBJSON        models/<pid>/lightgbm.txt   LightGBM text
    models/<pid>/catboost.cbm   CatBoost binary       models/<pid>/meta.json      weights, encoder
    models/global/...           the unpartitioned ("WP") model, when trained

Members are plain data and loading never executes code: they are read as bytes, checked against
the manifest's sha256 and handed to the boosters' own loaders.

What loading checks, in this order (each failure is one :class:`SmdError`)
-------------------------------------------------------------------------
1. The zip directory alone, before anything is decompressed: member count, no duplicate names,
   only ``manifest.json``, ``manifest.sha256``, ``signature.json`` and
   ``models/<id>/{xgboost.ubj,lightgbm.txt,catboost.cbm,meta.json}`` (no ``..``, absolute paths,
   backslashes, folders, links or special files, no encryption, stored/deflated only), and
   per-member, total and compression-ratio caps on the sizes the directory declares.
2. ``manifest.json`` against ``manifest.sha256`` (so any edit or damage of the manifest is
   caught first), ``signature.json`` when present against that digest (and a trusted signature
   when required, :mod:`.signing`), then strict JSON (no duplicate keys, NaN or deep nesting), format and version.
3. The manifest's structure and types, and its cross-references: predictors and predictor
   names, partitions and model entries (each partition has a model or is a recorded fallback to
   the global model), entry folders (``models/p<index>_<name>``, distinct, present),
   ``global_model`` (``models/global`` or null), checksums = exactly the members present.
4. Each member read with a hard byte limit, its sha256, and each ``meta.json`` against the
   predictors (base models, weights, intercept, categorical encoder, member files).
:func:`load_model` then checks the booster members in a child process (:mod:`.native_guard`)
before loading them in this one.

The unsigned checks catch damage and naive edits; anybody can recompute the digests, so only a
signature by a trusted key (:mod:`.signing`) shows that the content is what its signer wrote.
"""
import datetime as _dt
import hashlib
import io
import json
import re
import stat
import zipfile

from .common import SmdError, is_number
from .outputs import atomic_output
from .stack import BASE_MODELS, MODEL_FILES, StackEnsemble, make_encoder

FORMAT = "smdownscale-model"
#: 2: manifest.sha256, exact layout and cross-reference checks (version 1 files: retrain).
VERSION = 2
GLOBAL_ID = "global"
MANIFEST = "manifest.json"
MANIFEST_DIGEST = "manifest.sha256"
SIGNATURE = "signature.json"
TOP_LEVEL = (MANIFEST, MANIFEST_DIGEST, SIGNATURE)
#: Largest learner / meta member accepted (uncompressed, as the zip directory declares it).
MAX_MEMBER_BYTES = 256 * 1024 ** 2
#: Largest manifest.json (partition geometries can be detailed) and signature / digest members.
MAX_MANIFEST_BYTES = 64 * 1024 ** 2
MAX_SMALL_BYTES = 64 * 1024
#: Largest sum of the uncompressed sizes of all members.
MAX_TOTAL_BYTES = 1024 ** 3
#: Largest uncompressed/compressed ratio of a member above RATIO_FLOOR bytes (models and JSON
#: compress 2-10x; deflate can reach ~1000x on crafted input).
MAX_COMPRESSION_RATIO = 100
RATIO_FLOOR = 1024 ** 2
MAX_MEMBERS = 4 * 2000 + len(TOP_LEVEL)
MAX_JSON_DEPTH = 64
_MEMBER_RE = re.compile(r"models/([A-Za-z0-9_-]{1,64})/(xgboost\.ubj|lightgbm\.txt|catboost\.cbm|meta\.json)")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MODEL_BY_FILE = {file_name: model for model, file_name in MODEL_FILES.items()}
_MANIFEST_KEYS = ("format", "version", "created", "predictors", "predictor_names", "partitions", "models",
                  "global_model", "fine_grid", "coarse_grid", "dates", "metrics", "params", "extra",
                  "library_versions", "checksums")
_ROW_FIELDS = {"partition": str, "model": str, "n_train": int, "n_test": int, "r_train": float,
               "rmse_train": float, "r_test": float, "rmse_test": float}


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
        ``Partitions.to_json()`` (names, GeoJSON geometries, CRS); stored as given. Partitions
        without a model must be listed in ``extra["fallback"]`` (predicted by the global model).
    fine_grid, coarse_grid : Grid or dict or None
    dates : list of str
        Dates the model was trained on.
    metrics, params, extra : JSON-serialisable, optional

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    SmdError
        Nothing to save, or a manifest that :func:`load_model` would refuse (checked before
        anything is written).
    """
    if not models and global_model is None:
        raise SmdError("There is no trained model to save.")
    members = {}
    entries = []
    boosters = []  # (member name, model name, n_features) of freshly trained boosters
    for index, (name, model) in enumerate(models.items()):
        member_dir = f"models/{_member_id(index, name)}"
        entries.append({"partition": str(name), "dir": member_dir})
        for file_name, data in model.to_members().items():
            members[f"{member_dir}/{file_name}"] = data
        boosters += [(f"{member_dir}/{MODEL_FILES[b]}", b, len(model.encoded_feature_names_))
                     for b in model.base_model_names_]
    if global_model is not None:
        for file_name, data in global_model.to_members().items():
            members[f"models/{GLOBAL_ID}/{file_name}"] = data
        boosters += [(f"models/{GLOBAL_ID}/{MODEL_FILES[b]}", b, len(global_model.encoded_feature_names_))
                     for b in global_model.base_model_names_]
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
    # refuse to write what loading would refuse
    manifest = _parse_json(manifest_bytes, "the new model", MANIFEST)
    _check_manifest(manifest, set(members) | {MANIFEST, MANIFEST_DIGEST}, "the new model")
    for member_dir, _ in _model_dirs(manifest):
        _check_meta(_parse_json(members[f"{member_dir}/meta.json"], "the new model", f"{member_dir}/meta.json"),
                    manifest, member_dir, _dir_files(members, member_dir), "the new model")
    with atomic_output(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST, manifest_bytes)
            archive.writestr(MANIFEST_DIGEST, (_sha256(manifest_bytes) + "\n").encode("ascii"))
            for name, data in sorted(members.items()):
                archive.writestr(name, data)
    from . import native_guard

    for member, model_name, n_features in boosters:
        native_guard.mark_verified(model_name, manifest["checksums"][member], n_features)
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
    signature : dict (:func:`.signing.signature_status`: ``status``, ``key_id``, ...)
    """

    def __init__(self, manifest, models, global_model, signature=None):
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
        self.signature = signature or {"status": "unsigned"}

    @property
    def partition_names(self):
        return list(self.models)


# -- reading the zip ---------------------------------------------------------------------------
def _damaged(label, what):
    return SmdError(f"Model file {label!r} {what}; it is damaged or was modified. Use the original "
                    "model file or train the model again.")


def open_archive(path):
    """``zipfile.ZipFile`` of a model file; SmdError when missing or not a zip."""
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError as err:
        raise SmdError(f"Model file {path!r} does not exist.") from err
    except IsADirectoryError as err:
        raise SmdError(f"{path!r} is a folder, not a model file; choose the .zip written by training.") from err
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise SmdError(f"{path!r} is not a readable smdownscale model file (not a zip, or truncated): "
                       f"{err}. Train the model again or choose the right file.") from err


def check_directory(archive, label):
    """Check the zip directory (no decompression); dict member name -> ZipInfo.

    Refuses duplicate names, names outside the layout, folders, links and special files,
    encryption, unknown compression, and sizes over the caps.
    """
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _damaged(label, f"has {len(infos)} members (at most {MAX_MEMBERS} expected)")
    by_name = {}
    total = 0
    for info in infos:
        name = info.filename
        raw = info.orig_filename
        shown = ascii(raw)
        if name in by_name:
            raise _damaged(label, f"lists the member {shown} twice")
        if "\\" in raw or "\x00" in raw or raw.startswith("/") or ".." in raw.split("/") or ":" in raw:
            raise _damaged(label, f"has a member with an unsafe path {shown}")
        if info.is_dir():
            raise _damaged(label, f"has an unexpected folder entry {shown}")
        mode = info.external_attr >> 16
        if info.create_system == 3 and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "a special file"
            raise _damaged(label, f"has a member {shown} that is {kind}")
        if name not in TOP_LEVEL and not _MEMBER_RE.fullmatch(name):
            raise _damaged(label, f"has an unexpected member {shown} (only {', '.join(TOP_LEVEL)} and "
                                  "models/<id>/{xgboost.ubj,lightgbm.txt,catboost.cbm,meta.json} belong in it)")
        if info.flag_bits & 0x1:
            raise _damaged(label, f"has an encrypted member {shown}")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _damaged(label, f"uses an unsupported compression for {shown}")
        cap = MAX_MANIFEST_BYTES if name == MANIFEST else \
            MAX_SMALL_BYTES if name in TOP_LEVEL else MAX_MEMBER_BYTES
        if info.file_size > cap:
            raise _damaged(label, f"declares {info.file_size:,} bytes for {shown} (at most {cap:,} accepted); "
                                  "it was not decompressed")
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
            raise _damaged(label, f"declares {shown} compressed {info.file_size // max(info.compress_size, 1)}x "
                                  f"(at most {MAX_COMPRESSION_RATIO}x accepted: a zip bomb?); it was not decompressed")
        total += info.file_size
        by_name[name] = info
    if total > MAX_TOTAL_BYTES:
        raise _damaged(label, f"declares {total:,} bytes in all (at most {MAX_TOTAL_BYTES:,} accepted); "
                              "nothing was decompressed")
    return by_name


def read_member(archive, info, label):
    """The bytes of one member, never more than its declared size (checked against the CRC)."""
    limit = info.file_size
    chunks, size = [], 0
    try:
        with archive.open(info) as stream:
            while True:
                chunk = stream.read(min(1024 ** 2, limit + 1 - size))
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise _damaged(label, f"holds more data in {ascii(info.filename)} than it declares")
                chunks.append(chunk)
    except SmdError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as err:
        raise _damaged(label, f"cannot be read: {ascii(info.filename)} ({err})") from err
    except Exception as err:  # zlib.error and friends
        raise _damaged(label, f"cannot be read: {ascii(info.filename)} ({type(err).__name__}: {err})") from err
    if size != limit:
        raise _damaged(label, f"holds {size} bytes in {ascii(info.filename)}, not the {limit} it declares")
    return b"".join(chunks)


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"repeated key(s) {repeated}")
    return dict(pairs)


def _refuse_constant(name):
    raise ValueError(f"{name} is not allowed")


def _depth_ok(value):
    """True when JSON ``value`` nests at most MAX_JSON_DEPTH levels (iterative, no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def _parse_json(data, label, member):
    """Strict JSON of one member (UTF-8, no duplicate keys, no NaN/Infinity, bounded nesting)."""
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates,
                           parse_constant=_refuse_constant)
    except RecursionError:
        raise _damaged(label, f"has {member} nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise _damaged(label, f"has {member} that is not valid JSON ({err})") from err
    if not _depth_ok(value):
        raise _damaged(label, f"has {member} nested more than {MAX_JSON_DEPTH} levels")
    return value


# -- manifest structure ---------------------------------------------------------------------------
class _Bad(Exception):
    """A structural problem in the manifest (turned into one SmdError)."""


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _need(condition, text):
    if not condition:
        raise _Bad(text)


def _str_list(value, what, *, unique=True, nonempty=False):
    _need(isinstance(value, list) and all(isinstance(v, str) and v for v in value),
          f"{what} must be a list of non-empty names")
    _need(not nonempty or value, f"{what} is empty")
    if unique:
        repeated = sorted({v for v in value if value.count(v) > 1})
        _need(not repeated, f"{what} repeats {repeated}")
    return value


def _check_grid(grid, what):
    if grid is None:
        return
    _need(isinstance(grid, dict) and set(grid) == {"crs", "transform", "width", "height"},
          f"{what} must have exactly crs, transform, width, height")
    _need(isinstance(grid["crs"], str) and grid["crs"], f"{what}.crs must be a CRS text")
    _need(isinstance(grid["transform"], list) and len(grid["transform"]) == 6
          and all(is_number(v) for v in grid["transform"]), f"{what}.transform must be 6 numbers")
    _need(_is_int(grid["width"]) and _is_int(grid["height"]) and grid["width"] > 0 and grid["height"] > 0,
          f"{what} width/height must be positive whole numbers")


def _check_predictors(manifest):
    predictors = manifest["predictors"]
    _need(isinstance(predictors, list) and predictors, "predictors must be a non-empty list")
    names = []
    for position, predictor in enumerate(predictors):
        what = f"predictor {position + 1}"
        _need(isinstance(predictor, dict), f"{what} must be an object")
        _need(isinstance(predictor.get("name"), str) and predictor["name"], f"{what} has no name")
        what = f"predictor {predictor['name']!r}"
        _need(predictor.get("kind", "continuous") in ("continuous", "categorical"),
              f"{what} has kind {predictor.get('kind')!r} (continuous or categorical)")
        for flag in ("dynamic", "derived"):
            _need(isinstance(predictor.get(flag, False), bool), f"{what}: {flag} must be true or false")
        if "categories" in predictor and predictor["categories"] is not None:
            categories = predictor["categories"]
            _need(isinstance(categories, list) and all(is_number(c) for c in categories)
                  and len(set(float(c) for c in categories)) == len(categories),
                  f"{what}: categories must be distinct numbers")
        names.append(predictor["name"])
    _str_list(names, "the predictor names")
    _need(manifest["predictor_names"] == names, "predictor_names does not match the predictors")


def _fallback_names(manifest):
    extra = manifest["extra"]
    fallback = extra.get("fallback") if isinstance(extra, dict) else None
    if fallback is None:
        return []
    _need(isinstance(fallback, (dict, list)), "extra.fallback must be an object or a list")
    names = list(fallback)
    _str_list(names, "extra.fallback")
    return names


def _check_models(manifest, member_names):
    entries = manifest["models"]
    _need(isinstance(entries, list), "models must be a list")
    partition_names = []
    dirs = []
    for index, entry in enumerate(entries):
        _need(isinstance(entry, dict) and set(entry) == {"partition", "dir"},
              f"model entry {index + 1} must have exactly partition and dir")
        name, member_dir = entry["partition"], entry["dir"]
        _need(isinstance(name, str) and name, f"model entry {index + 1} has no partition name")
        expected = f"models/{_member_id(index, name)}"
        _need(member_dir == expected, f"the model of partition {name!r} is in {member_dir!r}, "
                                      f"the layout puts it in {expected!r}")
        partition_names.append(name)
        dirs.append(member_dir)
    _str_list(partition_names, "the model entries' partitions")
    global_model = manifest["global_model"]
    _need(global_model in (None, f"models/{GLOBAL_ID}"),
          f"global_model must be 'models/{GLOBAL_ID}' or null, not {global_model!r}")
    if global_model:
        dirs.append(global_model)
    _need(dirs, "the manifest lists no model")
    present = {name.rsplit("/", 1)[0] for name in member_names if name.startswith("models/")}
    missing = [d for d in dirs if d not in present]
    _need(not missing, f"the model folder(s) {missing} are missing")
    unlisted = sorted(present - set(dirs))
    _need(not unlisted, f"the model folder(s) {unlisted} are not listed in the manifest")

    partitions = manifest["partitions"]
    fallback = _fallback_names(manifest)
    if partitions is None:
        _need(not fallback, "extra.fallback lists partitions but the model has none")
        return
    _need(isinstance(partitions, dict) and set(partitions) == {"names", "geometries", "crs"},
          "partitions must have exactly names, geometries, crs")
    names = _str_list(partitions["names"], "the partition names", nonempty=True)
    geometries = partitions["geometries"]
    _need(isinstance(geometries, list) and len(geometries) == len(names),
          "partitions need one geometry per name")
    for name, geometry in zip(names, geometries):
        _need(geometry is None or (isinstance(geometry, dict) and isinstance(geometry.get("type"), str)),
              f"partition {name!r} has no valid GeoJSON geometry")
    _need(isinstance(partitions["crs"], str) and partitions["crs"], "partitions.crs must be a CRS text")
    unknown = [n for n in partition_names if n not in names]
    _need(not unknown, f"model entries for partition(s) {unknown} that the partitions do not list")
    both = sorted(set(fallback) & set(partition_names))
    _need(not both, f"partition(s) {both} have a model and are listed as falling back to the global model")
    stray = sorted(set(fallback) - set(names))
    _need(not stray, f"extra.fallback lists unknown partition(s) {stray}")
    without = [n for n in names if n not in partition_names and n not in fallback]
    _need(not without, f"partition(s) {without} have no model and are not a recorded fallback")
    _need(not fallback or global_model, "partitions fall back to the global model, but there is none")


def _check_metrics(metrics):
    if metrics is None:
        return
    _need(isinstance(metrics, dict), "metrics must be an object")
    rows = metrics.get("rows", [])
    _need(isinstance(rows, list), "metrics.rows must be a list")
    for index, row in enumerate(rows):
        _need(isinstance(row, dict), f"metrics row {index + 1} must be an object")
        for key, value in row.items():
            kind = _ROW_FIELDS.get(key)
            if kind is str:
                _need(isinstance(value, str), f"metrics row {index + 1}: {key} must be text")
            elif kind is int:
                _need(_is_int(value) and value >= 0, f"metrics row {index + 1}: {key} must be a count")
            elif kind is float:
                _need(value is None or is_number(value), f"metrics row {index + 1}: {key} must be a number")
    summaries = metrics.get("partitions", [])
    _need(isinstance(summaries, list) and all(isinstance(s, dict) for s in summaries),
          "metrics.partitions must be a list of objects")
    for summary in summaries:
        for key, value in summary.items():
            if key.startswith("n_"):
                _need(_is_int(value) and value >= 0, f"metrics.partitions: {key} must be a count")


def _check_manifest(manifest, member_names, label):
    """Structure, types and cross-references of a parsed manifest (SmdError when wrong)."""
    try:
        _need(isinstance(manifest, dict), "it is not a JSON object")
        missing = [k for k in _MANIFEST_KEYS if k not in manifest]
        _need(not missing, f"it lacks {missing}")
        unknown = sorted(set(manifest) - set(_MANIFEST_KEYS))
        _need(not unknown, f"it has unknown entries {unknown}")
        _need(isinstance(manifest["created"], str), "created must be a date text")
        _check_predictors(manifest)
        _check_models(manifest, member_names)
        _check_grid(manifest["fine_grid"], "fine_grid")
        _check_grid(manifest["coarse_grid"], "coarse_grid")
        dates = manifest["dates"]
        _str_list(dates, "dates")
        for date in dates:
            try:
                _need(_dt.date.fromisoformat(date).isoformat() == date, f"date {date!r} is not YYYY-MM-DD")
            except ValueError:
                raise _Bad(f"date {date!r} is not YYYY-MM-DD") from None
        _check_metrics(manifest["metrics"])
        _need(manifest["extra"] is None or isinstance(manifest["extra"], dict), "extra must be an object")
        versions = manifest["library_versions"]
        _need(isinstance(versions, dict) and all(isinstance(v, str) for v in versions.values()),
              "library_versions must map names to version texts")
        checksums = manifest["checksums"]
        _need(isinstance(checksums, dict) and all(isinstance(v, str) and _HEX64.fullmatch(v)
                                                  for v in checksums.values()),
              "checksums must map member names to sha256 hex digests")
        listed = set(checksums)
        present = {n for n in member_names if n not in TOP_LEVEL}
        _need(not listed & set(TOP_LEVEL), "checksums list a top-level member")
        extra = sorted(present - listed)
        _need(not extra, f"member(s) {extra} are in the file but not in the manifest")
        lacking = sorted(listed - present)
        _need(not lacking, f"the file lacks member(s) {lacking} that the manifest lists")
    except _Bad as err:
        raise SmdError(f"Model file {label!r}: the manifest is invalid ({err}); the file is damaged or "
                       "was modified. Use the original model file or train the model again.") from None


def _model_dirs(manifest):
    """(dir, partition name or None for the global model) in manifest order."""
    dirs = [(entry["dir"], entry["partition"]) for entry in manifest["models"]]
    if manifest["global_model"]:
        dirs.append((manifest["global_model"], None))
    return dirs


def _dir_files(member_names, member_dir):
    prefix = member_dir + "/"
    return {name[len(prefix):] for name in member_names if name.startswith(prefix)}


def _check_meta(meta, manifest, member_dir, files, label):
    """meta.json of one model folder against the predictors and the folder's files."""
    try:
        _need(isinstance(meta, dict), "it is not a JSON object")
        for key in ("base_models", "weights", "intercept", "encoder"):
            _need(key in meta, f"it lacks {key}")
        names = meta["base_models"]
        _need(isinstance(names, list) and names and all(n in BASE_MODELS for n in names)
              and len(set(names)) == len(names), f"base_models must be distinct names among {list(BASE_MODELS)}")
        weights = meta["weights"]
        _need(isinstance(weights, list) and len(weights) == len(names) and all(is_number(w) and w >= 0
                                                                               for w in weights),
              f"weights must be {len(names)} non-negative numbers, one per base model")
        _need(is_number(meta["intercept"]), "intercept must be a number")
        for key in ("n_features", "n_folds", "seed"):
            _need(key not in meta or _is_int(meta[key]), f"{key} must be a whole number")
        _need(meta.get("params") is None or isinstance(meta["params"], dict), "params must be an object")
        encoder = meta["encoder"]
        _need(isinstance(encoder, dict) and set(encoder) == {"feature_names", "categorical", "encoded_names"},
              "encoder must have exactly feature_names, categorical, encoded_names")
        predictor_names = manifest["predictor_names"]
        _need(encoder["feature_names"] == predictor_names,
              f"it was trained on predictors {encoder['feature_names']!r}, the manifest lists {predictor_names}")
        _need(meta.get("n_features", len(predictor_names)) == len(predictor_names),
              "n_features does not match the predictors")
        categorical = encoder["categorical"]
        _need(isinstance(categorical, dict), "encoder.categorical must be an object")
        kinds = {p["name"]: p for p in manifest["predictors"]}
        expected = sorted(n for n, p in kinds.items() if p.get("kind") == "categorical")
        _need(sorted(categorical) == expected,
              f"its categorical predictors {sorted(categorical)} are not the manifest's {expected}")
        for name, values in categorical.items():
            _need(isinstance(values, list) and values and all(is_number(v) for v in values)
                  and len(set(values)) == len(values), f"the categories of {name!r} must be distinct numbers")
            declared = kinds[name].get("categories")
            if declared is not None:
                _need([float(v) for v in values] == [float(v) for v in declared],
                      f"the categories of {name!r} {values} are not the manifest's {declared}")
        _need(encoder["encoded_names"] == make_encoder(predictor_names, categorical)["encoded_names"],
              "encoder.encoded_names does not follow from the predictors and categories")
        wanted = {"meta.json"} | {MODEL_FILES[n] for n in names}
        _need(set(files) == wanted, f"the folder holds {sorted(files)}, meta.json needs {sorted(wanted)}")
    except _Bad as err:
        raise SmdError(f"Model file {label!r}: {member_dir}/meta.json is invalid ({err}); the file is "
                       "damaged or was modified. Use the original model file or train the model again.") from None
    except SmdError as err:  # make_encoder
        raise SmdError(f"Model file {label!r}: {member_dir}/meta.json is invalid ({err}).") from None


def _legacy_message(archive, infos, label):
    """The message for a zip without manifest.sha256 (a version-1 model, or not a model file)."""
    if MANIFEST not in infos:
        return f"{label!r} is not an smdownscale model file (no manifest.json)."
    try:
        manifest = _parse_json(read_member(archive, infos[MANIFEST], label), label, MANIFEST)
    except SmdError:
        manifest = None
    if isinstance(manifest, dict) and manifest.get("format") == FORMAT and manifest.get("version") != VERSION:
        return (f"{label!r} has model format version {manifest.get('version')!r}; this plugin reads "
                f"version {VERSION}. Retrain the model with this plugin version.")
    return (f"Model file {label!r} lacks {MANIFEST_DIGEST} (the digest of its manifest); it is damaged, was "
            "modified or is not an smdownscale model file. Use the original model file or train again.")


def read_model_bytes(path):
    """A model file's bytes, read once (at most :data:`MAX_TOTAL_BYTES`), to verify and send
    exactly those (``data=`` of :func:`load_model`); SmdError when unreadable or too large."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_TOTAL_BYTES + 1)
    except OSError:
        open_archive(path)  # raises the one message for a missing, folder or unreadable path
        raise
    if len(data) > MAX_TOTAL_BYTES:
        raise _damaged(str(path), f"is larger than {MAX_TOTAL_BYTES} bytes")
    return data


def read_verified(path, *, require_signed=False, trusted_keys=(), learners=True, data=None):
    """Verify a model file without loading any learner.

    Parameters
    ----------
    path : str
        The model file (with ``data``: only its name in messages).
    data : bytes or None
        The file's bytes already read (:func:`read_model_bytes`): these are verified.
    require_signed : bool
        Refuse a model that is not signed by one of ``trusted_keys``.
    trusted_keys : sequence of str
        Public key files or folders of them (:func:`.signing.load_trusted_keys`).
    learners : bool
        Also read every model member and check its sha256 and meta.json (False: the manifest
        and signature only).

    Returns
    -------
    manifest : dict
    members : dict member name -> bytes (models only; empty when ``learners`` is False)
    signature : dict (:func:`.signing.signature_status`)
    """
    label = str(path)
    archive = open_archive(path if data is None else io.BytesIO(data))
    with archive:
        infos = check_directory(archive, label)
        if MANIFEST_DIGEST not in infos or MANIFEST not in infos:
            raise SmdError(_legacy_message(archive, infos, label))
        recorded = read_member(archive, infos[MANIFEST_DIGEST], label).decode("ascii", "replace").strip()
        manifest_bytes = read_member(archive, infos[MANIFEST], label)
        digest = _sha256(manifest_bytes)
        if not _HEX64.fullmatch(recorded):
            raise _damaged(label, f"has no valid digest in {MANIFEST_DIGEST}")
        if recorded != digest:
            raise _damaged(label, f"has a {MANIFEST} that does not match {MANIFEST_DIGEST}")
        # the signature covers the digest: checked before the manifest is even parsed
        signature_bytes = read_member(archive, infos[SIGNATURE], label) if SIGNATURE in infos else None
        from .signing import signature_status

        signature = signature_status(signature_bytes, digest, label, require_signed=require_signed,
                                     trusted_keys=trusted_keys)
        manifest = _parse_json(manifest_bytes, label, MANIFEST)
        found = manifest.get("format") if isinstance(manifest, dict) else None
        if found != FORMAT:
            raise SmdError(f"{label!r} is not an smdownscale model file (format {found!r}, expected {FORMAT!r}).")
        if manifest.get("version") != VERSION:
            raise SmdError(f"{label!r} has model format version {manifest.get('version')!r}; this plugin reads "
                           f"version {VERSION}. Retrain the model with this plugin version.")
        _check_manifest(manifest, set(infos), label)
        members = {}
        if learners:
            checksums = manifest["checksums"]
            for name in sorted(checksums):
                data = read_member(archive, infos[name], label)
                if _sha256(data) != checksums[name]:
                    raise SmdError(f"Model file {label!r}: checksum mismatch for {name}; the model file was "
                                   "modified or damaged. Use the original file or train again.")
                members[name] = data
            for member_dir, _ in _model_dirs(manifest):
                meta_name = f"{member_dir}/meta.json"
                _check_meta(_parse_json(members[meta_name], label, meta_name), manifest, member_dir,
                            _dir_files(members, member_dir), label)
    return manifest, members, signature


def read_manifest(path, *, require_signed=False, trusted_keys=()):
    """The verified manifest of a model file, without loading any learner (cheap; no boosters).

    Raises SmdError for the same problems as :func:`load_model` finds before loading learners.
    """
    return read_verified(path, require_signed=require_signed, trusted_keys=trusted_keys)[0]


def load_model(path, *, n_threads=None, require_signed=False, trusted_keys=(), data=None):
    """Read and verify a model file written by :func:`save_model`.

    Runs every check of :func:`read_verified`; then loads each booster member once in a child
    process (:func:`.native_guard.check_members`, cached per member digest) and, when that
    passed, in this process with its own library.

    Parameters
    ----------
    path : str
    n_threads : int or None
        Threads per booster when predicting.
    require_signed : bool
        Refuse a model not signed by one of ``trusted_keys``.
    trusted_keys : sequence of str
        Public key files or folders (see :mod:`.signing`).
    data : bytes or None
        The file's bytes already read (:func:`read_model_bytes`), verified instead of reading
        ``path`` (which then only names the file in messages).

    Returns
    -------
    LoadedModel

    Raises
    ------
    SmdError
        Missing, truncated, not-a-zip, unknown format/version, a zip directory outside the
        layout or the size caps, a manifest that does not match its digest or is inconsistent,
        extra or missing member, checksum mismatch, an untrusted or missing signature when one
        is required, or a learner that its library refuses or that crashes the check process.
    """
    from . import native_guard

    manifest, members, signature = read_verified(path, require_signed=require_signed,
                                                 trusted_keys=trusted_keys, data=data)
    checksums = manifest["checksums"]
    items = []
    for member_dir, _ in _model_dirs(manifest):
        meta = json.loads(members[f"{member_dir}/meta.json"].decode("utf-8"))
        n_encoded = len(meta["encoder"]["encoded_names"])
        for model_name in meta["base_models"]:
            member = f"{member_dir}/{MODEL_FILES[model_name]}"
            items.append({"member": member, "model": model_name, "data": members[member],
                          "sha256": checksums[member], "n_features": n_encoded})
    # import the boosters first: the child then uses the very shared libraries this process uses
    for model_name in sorted({item["model"] for item in items}):
        __import__(model_name)
    native_guard.check_members(items, label=str(path))

    def ensemble(member_dir):
        prefix = member_dir + "/"
        files = {name[len(prefix):]: data for name, data in members.items() if name.startswith(prefix)}
        try:
            return StackEnsemble.from_members(files, n_threads=n_threads)
        except SmdError as err:
            raise SmdError(f"Model file {str(path)!r}, {member_dir}: {err}") from None

    models = {partition: ensemble(member_dir) for member_dir, partition in _model_dirs(manifest)
              if partition is not None}
    global_model = ensemble(manifest["global_model"]) if manifest["global_model"] else None
    return LoadedModel(manifest, models, global_model, signature)
