"""Compiled LightGBM inference (lleaves) with a per-user cache, and the decision when it pays.

LightGBM's own ``Booster.predict`` is the slowest of the three boosters of a stack. lleaves
(MIT, LLVM through llvmlite) compiles a LightGBM text model into machine code that gives the
same predictions (measured max difference ~1e-14) several times faster. Here:

- The compiled code is built on the user's machine from the booster's own native text (the
  ``lightgbm.txt`` member of a model file) and cached in a per-user folder,
  ``$SMDOWNSCALE_CACHE_DIR/compiled`` or ``$XDG_CACHE_HOME/smdownscale/compiled``
  (``~/.cache/smdownscale/compiled``), keyed by the sha256 of that member together with the
  lleaves/llvmlite versions, the host CPU and the compile options. Nothing compiled is ever
  stored in or loaded from a model file: a shared object taken from a model file would run
  its code. The cache folder must belong to the user and not be writable by others, else it is
  not used.
- Every compiled model is checked against the native booster on the first rows it predicts
  (max difference <= :data:`CHECK_TOLERANCE`); a mismatch drops the cached object and the
  prediction stays native.
- When lleaves is missing (e.g. Windows, or llvmlite > 0.44) or compiling fails, prediction stays
  native with one log line.
- :func:`decide` compiles only where it pays: a cached build exists, or the job's rows times the
  measured per-row saving exceed the expected compile time.

``SMDOWNSCALE_COMPILED``: ``auto`` (default, :func:`decide`), ``off`` (always native) or
``always`` (compile whatever the size; tests and the bench).
"""
import dataclasses
import hashlib
import json
import os
import stat
import sys
import tempfile
import threading
import time

import numpy as np

#: largest |compiled - native| accepted on the check rows (m3/m3; measured ~1e-14)
CHECK_TOLERANCE = 1e-9
#: rows compared with the native booster the first time a compiled model is used
CHECK_ROWS = 2048
#: lleaves compile options. ``finline=False``: measured on a 300-tree, 31-leaf model on this
#: 2-core machine, compiling took 3.5 s instead of 30.6 s for ~15% slower predictions.
COMPILE_OPTIONS = {"finline": False, "fblocksize": 34, "fcodemodel": "large"}
#: expected compile time per tree node (s), measured with COMPILE_OPTIONS (3.5 s / 300 x 61 nodes)
COMPILE_S_PER_NODE = 1.9e-4
#: compiled / native speed measured with COMPILE_OPTIONS (2.9x on a busy machine; 6.7x quiet)
EXPECTED_SPEEDUP = 2.5
ENV_MODE = "SMDOWNSCALE_COMPILED"

_LOCK = threading.Lock()
_LOADED = {}      # cache key -> compiled lleaves.Model (one per process)
_FAILED = set()   # cache keys that failed to build or to check in this process
_LOGGED = set()   # messages already logged once


def mode():
    value = (os.environ.get(ENV_MODE) or "auto").strip().lower()
    return value if value in ("auto", "off", "always") else "auto"


def cache_dir():
    """The per-user folder of compiled models (not created here)."""
    base = os.environ.get("SMDOWNSCALE_CACHE_DIR")
    if not base:
        if os.name == "nt":
            root = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~")
        else:
            root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(root, "smdownscale")
    return os.path.join(base, "compiled")


def _safe_cache_dir(create):
    """The cache folder when it is ours and not writable by others (created 0700), else None."""
    folder = cache_dir()
    try:
        if create:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.stat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        return None
    if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
        return None
    return folder


def available():
    """(True, version) when lleaves imports, else (False, reason)."""
    try:
        import lleaves  # noqa: F401
        import llvmlite

        from importlib.metadata import version

        return True, f"lleaves {version('lleaves')}, llvmlite {llvmlite.__version__}"
    except Exception as err:  # noqa: BLE001 - ImportError, or llvmlite API mismatch
        return False, f"{type(err).__name__}: {err}"


def _host_cpu():
    import llvmlite.binding as llvm

    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:
        features = ""
    return llvm.get_host_cpu_name(), features


def cache_key(member_bytes):
    """Key of one compiled member: its sha256, the compiler versions, the host CPU, the options."""
    from importlib.metadata import version

    import llvmlite

    cpu, features = _host_cpu()
    text = json.dumps({"member_sha256": hashlib.sha256(member_bytes).hexdigest(),
                       "lleaves": version("lleaves"), "llvmlite": llvmlite.__version__,
                       "cpu": cpu, "features": features, "platform": sys.platform,
                       "options": COMPILE_OPTIONS}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def count_nodes(member_bytes):
    """Trees and nodes (leaves + splits) of a LightGBM text model, from its ``num_leaves=`` lines."""
    trees = nodes = 0
    for line in member_bytes.split(b"\n"):
        if line.startswith(b"num_leaves="):
            leaves = int(line[len(b"num_leaves="):])
            trees += 1
            nodes += 2 * leaves - 1
    return trees, nodes


def expected_compile_s(member_bytes):
    return count_nodes(member_bytes)[1] * COMPILE_S_PER_NODE


def _log_once(log, message):
    if log is not None and message not in _LOGGED:
        _LOGGED.add(message)
        log(message)


@dataclasses.dataclass
class Decision:
    compile: bool
    reason: str
    cached: bool = False
    expected_compile_s: float = 0.0


def decide(member_bytes, n_rows, native_s_per_row, *, speedup=EXPECTED_SPEEDUP):
    """Whether compiling this LightGBM member pays for a job of ``n_rows`` rows.

    ``native_s_per_row``: measured native predict time per row of this booster (s). The saving
    per row is ``native_s_per_row * (1 - 1/speedup)``; compiling pays when a cached build exists
    or ``n_rows * saving > expected compile time`` (:func:`expected_compile_s`).
    """
    current = mode()
    if current == "off":
        return Decision(False, f"{ENV_MODE}=off")
    ok, why = available()
    if not ok:
        return Decision(False, f"lleaves not available ({why})")
    key = cache_key(member_bytes)
    folder = _safe_cache_dir(create=False)
    cached = key in _LOADED or bool(folder and os.path.isfile(os.path.join(folder, key + ".o")))
    expected = expected_compile_s(member_bytes)
    if key in _FAILED:
        return Decision(False, "compiling failed earlier in this process", cached, expected)
    if current == "always":
        return Decision(True, f"{ENV_MODE}=always", cached, expected)
    if cached:
        return Decision(True, "a compiled build is cached", True, expected)
    saving = n_rows * native_s_per_row * (1.0 - 1.0 / speedup)
    if saving > expected:
        return Decision(True, f"{n_rows:,} rows x {native_s_per_row * 1e6:.2f} us/row native: expected "
                        f"saving {saving:.1f} s > compile {expected:.1f} s", False, expected)
    return Decision(False, f"{n_rows:,} rows: expected saving {saving:.1f} s <= compile {expected:.1f} s",
                    False, expected)


def load_or_compile(member_bytes):
    """A compiled ``lleaves.Model`` for a LightGBM text member, from the cache or compiled now.

    Returns ``(model, info)``; info: ``{"cached": bool, "compile_s": float, "key": str}``.
    Raises whatever lleaves raises (the caller falls back to native).
    """
    import lleaves

    key = cache_key(member_bytes)
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key], {"cached": True, "compile_s": 0.0, "key": key, "in_process": True}
        folder = _safe_cache_dir(create=True)
        target = os.path.join(folder, key + ".o") if folder else None
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="smd-lleaves-") as scratch:
            text_path = os.path.join(scratch, "lightgbm.txt")
            with open(text_path, "wb") as stream:
                stream.write(member_bytes)
            model = lleaves.Model(model_file=text_path)
            cached = bool(target and os.path.isfile(target))
            if cached:
                model.compile(cache=target, **COMPILE_OPTIONS)
            else:
                # build into a scratch object, then move it into the cache in one rename
                scratch_object = os.path.join(scratch, "compiled.o")
                model.compile(cache=scratch_object, **COMPILE_OPTIONS)
                if target and os.path.isfile(scratch_object):
                    tmp = os.path.join(folder, f".{key}.{os.getpid()}.tmp")
                    try:
                        with open(scratch_object, "rb") as src, open(tmp, "wb") as dst:
                            dst.write(src.read())
                        os.replace(tmp, target)
                    except OSError:  # a full or read-only cache is not an error
                        try:
                            os.remove(tmp)
                        except OSError:
                            pass
        elapsed = time.perf_counter() - started
        _LOADED[key] = model
        return model, {"cached": cached, "compile_s": elapsed, "key": key, "in_process": False}


def forget(member_bytes):
    """Drop a compiled member from this process and the cache (after a failed check)."""
    try:
        key = cache_key(member_bytes)
    except Exception:  # noqa: BLE001
        return
    _LOADED.pop(key, None)
    _FAILED.add(key)
    folder = _safe_cache_dir(create=False)
    if folder:
        try:
            os.remove(os.path.join(folder, key + ".o"))
        except OSError:
            pass


def clear_process_state():
    """Forget in-process builds, failures and logged lines (tests)."""
    _LOADED.clear()
    _FAILED.clear()
    _LOGGED.clear()


class LightGBMPredictor:
    """LightGBM predictions through lleaves where it pays, natively otherwise; same numbers.

    Parameters
    ----------
    booster : lightgbm.Booster
    member_bytes : bytes
        The booster's own native text (the model file member it was loaded from).
    expected_rows : int or None
        Rows the job will predict (for :func:`decide`); None = unknown (native until measured).
    log : callable(str) or None
        Receives one line saying which path runs and why (and the fallback, if any).
    label : str
        Names the booster in log lines (e.g. the partition).

    The first call predicts natively and measures the native time per row; then
    :func:`decide` says whether to compile for the rows still to come. A compiled model is
    checked against the native predictions of its first rows before it is used.
    """

    def __init__(self, booster, member_bytes, *, expected_rows=None, log=None, label=""):
        self.booster = booster
        self.member_bytes = member_bytes
        self.expected_rows = expected_rows
        self.log = log
        self.label = label
        self.compiled = None
        self.decided = False
        self.path = "native"
        self.reason = "not decided yet"
        self.compile_s = 0.0
        self.rows_done = 0

    def _native(self, X, n_threads):
        return self.booster.predict(X, num_threads=int(n_threads)).astype(np.float64)

    def _say(self, message):
        if self.log is not None:
            self.log(f"{message} [{self.label}]" if self.label else message)

    def _decide(self, native_s_per_row, sample, native_values):
        self.decided = True
        remaining = None if self.expected_rows is None else max(0, self.expected_rows - self.rows_done)
        if remaining is None:
            remaining = 0
        decision = decide(self.member_bytes, remaining, native_s_per_row)
        if not decision.compile:
            self.path, self.reason = "native", decision.reason
            self._say(f"LightGBM native prediction ({decision.reason})")
            return
        try:
            compiled, info = load_or_compile(self.member_bytes)
            check = compiled.predict(sample.astype(np.float64), n_jobs=1)
            worst = float(np.max(np.abs(check - native_values))) if check.size else 0.0
            if not worst <= CHECK_TOLERANCE:
                forget(self.member_bytes)
                self.path, self.reason = "native", f"compiled model differs from native by {worst:.2e}"
                self._say(f"LightGBM native prediction (the compiled model differs from native by {worst:.2e}; "
                          "cached build removed)")
                return
        except Exception as err:  # noqa: BLE001 - any accelerator failure: stay native
            try:
                _FAILED.add(cache_key(self.member_bytes))
            except Exception:  # noqa: BLE001
                pass
            self.path, self.reason = "native", f"compiling failed ({type(err).__name__}: {err})"
            _log_once(self.log, f"LightGBM compiled prediction unavailable, using native "
                                f"({type(err).__name__}: {err})")
            return
        self.compiled = compiled
        self.compile_s = info["compile_s"]
        self.path = "compiled"
        how = "loaded from the cache" if info["cached"] else f"compiled in {info['compile_s']:.1f} s"
        self.reason = f"{decision.reason}; {how}"
        self._say(f"LightGBM compiled prediction (lleaves; {decision.reason}; {how})")

    def predict(self, X, n_threads):
        X = np.asarray(X, dtype=np.float32)
        if X.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        if self.compiled is not None:
            self.rows_done += X.shape[0]
            return self.compiled.predict(X.astype(np.float64), n_jobs=int(n_threads))
        if self.decided:
            self.rows_done += X.shape[0]
            return self._native(X, n_threads)
        started = time.perf_counter()
        values = self._native(X, n_threads)
        per_row = (time.perf_counter() - started) / X.shape[0]
        self.rows_done += X.shape[0]
        rows = min(CHECK_ROWS, X.shape[0])
        self._decide(per_row, X[:rows], values[:rows])
        return values


def lightgbm_members(model_path):
    """``{partition name (None = global model): lightgbm.txt bytes}`` of a verified model file."""
    from .modelfile import _model_dirs, read_verified

    manifest, members, _ = read_verified(model_path)
    return {partition: members[f"{member_dir}/lightgbm.txt"] for member_dir, partition in _model_dirs(manifest)
            if f"{member_dir}/lightgbm.txt" in members}
