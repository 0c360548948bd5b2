"""Keep the boosters' native loaders from taking the host process (QGIS) down.

XGBoost, LightGBM and CatBoost parse their model files in C++. A crafted or damaged learner
file whose checksum was recomputed passes every check of :mod:`.modelfile` and can still make
that parser crash the whole process (measured: 16 flipped bytes in an XGBoost UBJSON model
segfaulted in 8 of 15 tries, CatBoost in 1 of 15). Inside QGIS that is the user's session.

So every booster member is first loaded, and predicted on a few rows, in a short-lived child
Python process (one child per model file, for all its members not checked before). A crash,
an error or a timeout there becomes an :class:`SmdError` naming the member; only members that
passed are loaded in the host process. XGBoost and LightGBM are driven through their C API
with ``ctypes`` (the very shared libraries the host process loaded, no Python package import:
the child starts in well under 0.1 s); CatBoost through its Python package.

Verdicts are cached per user and per (library, library version, member sha256, feature count)
in ``$SMDOWNSCALE_CACHE_DIR`` or ``$XDG_CACHE_HOME/smdownscale`` (``~/.cache/smdownscale``;
``%LOCALAPPDATA%\\smdownscale`` on Windows), folder ``verified/``. Members written by
:func:`.modelfile.save_model` from freshly trained boosters are recorded there directly
(:func:`mark_verified`), so training then predicting costs no child at all.

QGIS-free: no ``qgis`` import; the interpreter is found beside ``sys.exec_prefix`` when
``sys.executable`` is the QGIS binary (override with ``SMDOWNSCALE_PYTHON``).
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

from .common import SmdError, python_interpreter, signal_name

#: Seconds one child may take for all members of a model file (``SMDOWNSCALE_GUARD_TIMEOUT``).
DEFAULT_TIMEOUT = 120.0
_PYTHON_PACKAGES = {"xgboost": "xgboost", "lightgbm": "lightgbm", "catboost": "catboost"}
#: cache keys already confirmed in this process (saves the stat calls)
_VERIFIED = set()

# The child: reads a JSON job list on stdin, prints "start <i>" before and "ok <i>" after each
# member, "error <i> <message>" when the library refuses it. Crashes show as a signal exit.
_CHILD = r'''
import ctypes, json, sys
import re
try:
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))   # no core dump from a crafted file
    # a crafted size field must not make the check eat the machine's memory
    resource.setrlimit(resource.RLIMIT_AS, (8 * 1024 ** 3, resource.getrlimit(resource.RLIMIT_AS)[1]))
except Exception:
    pass
ROWS = 3


def short(text):
    """The library's message without its time stamp, source position and native stack trace."""
    text = text.split("Stack trace:")[0]
    text = re.sub(r"^\[[0-9:]+\]\s*", "", text.strip())
    text = re.sub(r"^\S+\.(cc|cpp|h):\d+:\s*", "", text)
    text = "".join(c if c.isprintable() else "?" for c in " ".join(text.split()))
    return text[:300]


def say(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def rows(n):
    # zeros, ones and all-missing: exercises the split and the default (missing) branches
    return [0.0] * n + [1.0] * n + [float("nan")] * n


class Refused(Exception):
    pass


def xgboost(job, data):
    lib = ctypes.CDLL(job["lib"])
    lib.XGBGetLastError.restype = ctypes.c_char_p

    def call(code):
        if code != 0:
            raise Refused(lib.XGBGetLastError().decode("utf-8", "replace"))
    handle = ctypes.c_void_p()
    call(lib.XGBoosterCreate(None, ctypes.c_uint64(0), ctypes.byref(handle)))
    call(lib.XGBoosterLoadModelFromBuffer(handle, ctypes.c_char_p(data), ctypes.c_uint64(len(data))))
    n = ctypes.c_uint64()
    call(lib.XGBoosterGetNumFeature(handle, ctypes.byref(n)))
    if n.value != job["n_features"]:
        raise Refused(f"it has {n.value} input columns, meta.json describes {job['n_features']}")
    call(lib.XGBoosterSetParam(handle, b"nthread", b"1"))
    values = (ctypes.c_float * (ROWS * n.value))(*rows(n.value))
    matrix = ctypes.c_void_p()
    call(lib.XGDMatrixCreateFromMat(values, ctypes.c_uint64(ROWS), ctypes.c_uint64(n.value),
                                    ctypes.c_float(float("nan")), ctypes.byref(matrix)))
    out_len = ctypes.c_uint64()
    out = ctypes.POINTER(ctypes.c_float)()
    call(lib.XGBoosterPredict(handle, matrix, 0, 0, 0, ctypes.byref(out_len), ctypes.byref(out)))
    if out_len.value != ROWS:
        raise Refused(f"it predicts {out_len.value} values for {ROWS} rows")
    lib.XGDMatrixFree(matrix)
    lib.XGBoosterFree(handle)


def lightgbm(job, data):
    lib = ctypes.CDLL(job["lib"])
    lib.LGBM_GetLastError.restype = ctypes.c_char_p

    def call(code):
        if code != 0:
            raise Refused(lib.LGBM_GetLastError().decode("utf-8", "replace"))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Refused(f"not UTF-8 text ({err})")
    handle = ctypes.c_void_p()
    iterations = ctypes.c_int()
    call(lib.LGBM_BoosterLoadModelFromString(ctypes.c_char_p(data), ctypes.byref(iterations),
                                             ctypes.byref(handle)))
    n = ctypes.c_int()
    call(lib.LGBM_BoosterGetNumFeature(handle, ctypes.byref(n)))
    if n.value != job["n_features"]:
        raise Refused(f"it has {n.value} input columns, meta.json describes {job['n_features']}")
    classes = ctypes.c_int()
    call(lib.LGBM_BoosterGetNumClasses(handle, ctypes.byref(classes)))
    if classes.value != 1:
        raise Refused(f"it is not a regression model ({classes.value} outputs)")
    values = (ctypes.c_double * (ROWS * n.value))(*rows(n.value))
    out = (ctypes.c_double * ROWS)()
    out_len = ctypes.c_int64()
    call(lib.LGBM_BoosterPredictForMat(handle, values, 1, ctypes.c_int32(ROWS), ctypes.c_int32(n.value),
                                       1, 0, 0, -1, b"num_threads=1", ctypes.byref(out_len), out))
    if out_len.value != ROWS:
        raise Refused(f"it predicts {out_len.value} values for {ROWS} rows")
    lib.LGBM_BoosterFree(handle)


def catboost(job, data):
    import numpy as np
    from catboost import CatBoost, CatBoostError
    try:
        model = CatBoost().load_model(blob=data)
        n = len(model.feature_names_ or [])
        if n != job["n_features"]:
            raise Refused(f"it has {n} input columns, meta.json describes {job['n_features']}")
        out = model.predict(np.array(rows(n), dtype=np.float32).reshape(ROWS, n), thread_count=1)
    except CatBoostError as err:
        raise Refused(str(err))
    if np.asarray(out).shape != (ROWS,):
        raise Refused(f"it predicts {np.asarray(out).shape} values for {ROWS} rows")


jobs = json.load(sys.stdin)
for index, job in enumerate(jobs):
    say(f"start {index}")
    with open(job["path"], "rb") as stream:
        data = stream.read()
    try:
        globals()[job["kind"]](job, data)
    except Refused as err:
        say(f"error {index} " + short(str(err)))
        continue
    except MemoryError:
        say(f"error {index} it needs implausibly much memory")
        continue
    except (ImportError, OSError) as err:   # the check process itself is broken, not the member
        say(f"setup {index} {type(err).__name__}: " + short(str(err)))
        continue
    except Exception as err:
        say(f"error {index} {type(err).__name__}: " + short(str(err)))
        continue
    say(f"ok {index}")
'''


def python_executable():
    """The interpreter for the check process (:func:`core.common.python_interpreter`)."""
    found = python_interpreter()
    if found is None:
        raise SmdError("Cannot find the Python interpreter to check the model's learners in a "
                       "separate process. Set the environment variable SMDOWNSCALE_PYTHON to the "
                       "python executable QGIS uses.")
    return found


def cache_dir():
    """The per-user folder of cached verdicts (created on demand)."""
    base = os.environ.get("SMDOWNSCALE_CACHE_DIR")
    if not base:
        if os.name == "nt":
            root = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~")
            base = os.path.join(root, "smdownscale")
        else:
            root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
            base = os.path.join(root, "smdownscale")
    return os.path.join(base, "verified")


def library_version(model_name):
    """Version of the booster library this process uses (imported module, else installed)."""
    module = sys.modules.get(_PYTHON_PACKAGES[model_name])
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib.metadata import version as dist_version

        return dist_version(_PYTHON_PACKAGES[model_name])
    except Exception:  # noqa: BLE001 - unknown version: never matches a cached verdict
        return "unknown"


def _key(model_name, digest, n_features):
    text = json.dumps([model_name, library_version(model_name), str(digest), int(n_features),
                       sys.platform], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_cached(key):
    if key in _VERIFIED:
        return True
    if os.path.isfile(os.path.join(cache_dir(), key)):
        _VERIFIED.add(key)
        return True
    return False


def _remember(key, note):
    """Record a passed verdict; a read-only or missing cache folder is not an error."""
    _VERIFIED.add(key)
    folder = cache_dir()
    try:
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{key}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as stream:
            json.dump(note, stream)
        os.replace(tmp, os.path.join(folder, key))
    except OSError:
        pass


def mark_verified(model_name, digest, n_features):
    """Record that a member written from a live, trained booster loads (called by save_model)."""
    _remember(_key(model_name, digest, n_features),
              {"model": model_name, "sha256": digest, "n_features": int(n_features), "source": "trained"})


def _library_path(model_name):
    """Path of the shared library the host process's booster package uses (ctypes child)."""
    if model_name == "xgboost":
        from xgboost import core

        return core._LIB._name
    from lightgbm import basic

    return basic._LIB._name


def check_members(items, *, label, timeout=None):
    """Load and trial-predict booster members in a child process before the host loads them.

    Parameters
    ----------
    items : list of dict
        ``{"member": zip member name, "model": "xgboost"|"lightgbm"|"catboost", "data": bytes,
        "sha256": hex digest of data, "n_features": columns the booster must take}``.
    label : str
        The model file, for messages.
    timeout : float or None
        Seconds for the whole child (default ``SMDOWNSCALE_GUARD_TIMEOUT`` or 120).

    Returns
    -------
    dict
        ``checked`` (members run in a child now), ``cached`` (members with a cached verdict).

    Raises
    ------
    SmdError
        Naming the member, when the child crashed, the library refused the member, or the
        check timed out.
    """
    pending = []
    for item in items:
        key = _key(item["model"], item["sha256"], item["n_features"])
        if not _is_cached(key):
            pending.append((key, item))
    report = {"checked": len(pending), "cached": len(items) - len(pending)}
    if not pending:
        return report
    if timeout is None:
        try:
            timeout = float(os.environ.get("SMDOWNSCALE_GUARD_TIMEOUT") or DEFAULT_TIMEOUT)
        except ValueError:
            timeout = DEFAULT_TIMEOUT
    folder = tempfile.mkdtemp(prefix="smdownscale-check-")
    try:
        jobs = []
        for index, (_, item) in enumerate(pending):
            member_path = os.path.join(folder, f"m{index}")
            with open(member_path, "wb") as stream:
                stream.write(item["data"])
            job = {"kind": item["model"], "path": member_path, "n_features": int(item["n_features"])}
            if item["model"] in ("xgboost", "lightgbm"):
                job["lib"] = _library_path(item["model"])
            jobs.append(job)
        env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONDONTWRITEBYTECODE="1")
        # the packages the host sees (QGIS adds its own paths at run time), for CatBoost
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        kwargs = {}
        if os.name == "nt":
            kwargs["creationflags"] = 0x08000000  # CREATE_NO_WINDOW: no console flashing in QGIS
        try:
            done = subprocess.run([python_executable(), "-c", _CHILD], input=json.dumps(jobs),
                                  capture_output=True, text=True, timeout=timeout, env=env, cwd=folder,
                                  **kwargs)
        except subprocess.TimeoutExpired as err:
            output = err.stdout or ""
            if isinstance(output, bytes):
                output = output.decode("utf-8", "replace")
            started = [int(line.split()[1]) for line in output.splitlines()
                       if line.startswith("start ") and line.split()[1].isdigit()]
            member = pending[started[-1]][1]["member"] if started else "its learners"
            raise SmdError(
                f"Model file {label!r}: checking {member} took longer than {timeout:.0f} s; the file "
                "may be damaged or crafted to hang the learner library. Use the original model file "
                "(or, on a very busy machine, set SMDOWNSCALE_GUARD_TIMEOUT to more seconds).") from err
        except OSError as err:
            raise SmdError(f"Cannot start the Python process that checks the model's learners ({err}). "
                           "Set SMDOWNSCALE_PYTHON to the python executable QGIS uses.") from err
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    status = {}
    last_started = None
    for line in done.stdout.splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[1].isdigit():
            index = int(parts[1])
            if parts[0] == "start":
                last_started = index
            elif parts[0] in ("ok", "error", "setup"):
                status[index] = (parts[0], parts[2] if len(parts) > 2 else "")
    for index, (key, item) in enumerate(pending):
        verdict = status.get(index)
        if verdict is not None and verdict[0] == "setup":
            raise SmdError(
                f"Cannot check the {item['model']} learners of {label!r} in a separate process: it "
                f"could not load {item['model']} ({verdict[1]}). Set SMDOWNSCALE_PYTHON to the python "
                "executable QGIS uses (with the learner packages installed).")
        if verdict is not None and verdict[0] == "error":
            raise SmdError(
                f"Model file {label!r}: the {item['model']} learner {item['member']} is refused by "
                f"{item['model']} ({verdict[1]}); the file is damaged or was crafted. Use the "
                "original model file or train the model again.")
        if verdict is None:
            if index == last_started or last_started is None:
                how = (f"crashed the check process ({signal_name(done.returncode)})"
                       if done.returncode < 0 else f"stopped the check process (exit code {done.returncode})")
                tail = " ".join(done.stderr.split()[-30:])
                raise SmdError(
                    f"Model file {label!r}: loading the {item['model']} learner {item['member']} {how}; "
                    "the file is damaged or was crafted, and loading it inside QGIS would have taken "
                    "QGIS down. Use the original model file or train the model again."
                    + (f" (library output: {tail})" if tail and done.returncode >= 0 else ""))
            raise SmdError(f"Model file {label!r}: the check of {item['member']} did not complete "
                           f"(exit code {done.returncode}). Use the original model file.")
    for key, item in pending:
        _remember(key, {"model": item["model"], "sha256": item["sha256"],
                        "n_features": int(item["n_features"]), "source": "checked"})
    return report
