"""Compiled LightGBM and XGBoost inference (lleaves) with a per-user cache, and when it pays.

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
- XGBoost (measured here: 2.2-2.8x its ``inplace_predict``, bit-identical) goes through lleaves too:
  :func:`xgboost_text` translates the booster (its ``xgboost.ubj`` member) into an equivalent
  LightGBM text model. XGBoost goes left when ``x < t`` in float32, lleaves when ``x <= t``: the
  translated threshold is the largest float32 below ``t``, which gives the same branch for every
  float32 input, NaN takes XGBoost's default direction, and ``base_score`` is a first one-leaf
  tree. It is compiled in float32 (the features are float32) and, through
  :func:`_summing_in_tree_order`, sums each row's leaves in tree order starting from
  ``base_score`` as XGBoost does, so the result is the same float32 number, not just a close one.
  Only ``gbtree`` / ``reg:squarederror`` / one target / numerical splits are translated; anything
  else (categorical splits, dart, other objectives) stays native.
- When lleaves is missing (e.g. Windows, or llvmlite > 0.44) or compiling fails, prediction stays
  native with one log line.
- :func:`decide` compiles only where it pays: a cached build exists, or the job's rows times the
  measured per-row saving (each booster's own native time and expected speedup) exceed the
  expected compile time.

``SMDOWNSCALE_COMPILED``: ``auto`` (default, :func:`decide`), ``off`` (always native) or
``always`` (compile whatever the size; tests and the bench).
"""
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction

import numpy as np

#: largest |compiled - native| accepted on the check rows (m3/m3; measured ~1e-14 for LightGBM,
#: 0 for XGBoost)
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
#: XGBoost: float32 (the features are float32; sums as XGBoost does), otherwise as LightGBM
XGBOOST_COMPILE_OPTIONS = dict(COMPILE_OPTIONS, use_fp64=False)
#: changes whenever :func:`xgboost_text` or the in-order summation changes (part of the cache key)
XGBOOST_TRANSLATION = "xgboost-as-lightgbm-1"
#: XGBoost compiled / native speed, measured on the shared 2-core machine (2.2-2.8x, 2 threads)
XGBOOST_EXPECTED_SPEEDUP = 2.0
#: lleaves version whose row loop :func:`_summing_in_tree_order` replaces
IN_ORDER_LLEAVES = "1.3.0"
ENV_MODE = "SMDOWNSCALE_COMPILED"
#: which accelerator: ``auto`` (the QuickScorer kernel where the model fits it, else lleaves),
#: ``quickscorer`` or ``lleaves`` (only that one; tests and the bench)
ENV_ACCELERATOR = "SMDOWNSCALE_ACCELERATOR"
#: expected one-time cost of compiling the QuickScorer kernel for one leaf type (s; measured
#: 0.4-0.9 s) plus reading a 300-tree model into arrays (0.02 s LightGBM, 0.14 s XGBoost)
KERNEL_COMPILE_S = 1.0
KERNEL_READ_S_PER_NODE = 1e-5


@dataclasses.dataclass(frozen=True)
class _Learner:
    label: str
    options: dict
    speedup: float
    dtype: type          # what the lleaves code reads
    kernel_speedup: float   # QuickScorer kernel / native, measured (2 cores, bench model)
    sums_in: type        # what the library sums leaves in (the kernel does the same)


LEARNERS = {"lightgbm": _Learner("LightGBM", COMPILE_OPTIONS, EXPECTED_SPEEDUP, np.float64, 9.4, np.float64),
            "xgboost": _Learner("XGBoost", XGBOOST_COMPILE_OPTIONS, XGBOOST_EXPECTED_SPEEDUP, np.float32,
                                2.8, np.float32)}

_LOCK = threading.Lock()
_LOADED = {}      # cache key -> compiled lleaves.Model (one per process)
_BUILDING = {}    # cache key -> lock held while that member is built or loaded (one build each)
_FAILED = set()   # cache keys that failed to build or to check in this process
#: (learner, accelerator) measured slower than native on this machine in this process
_SLOWER = {}
_LOGGED = set()   # messages already logged once
_BUILDER = None   # ThreadPoolExecutor of pending builds (:func:`_builder`)
#: longest a build process may take (s) before the member stays native
BUILD_TIMEOUT_S = 900


class NotCompilable(ValueError):
    """The booster uses something the translation does not reproduce exactly (stays native)."""


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


def cache_key(member_bytes, learner="lightgbm"):
    """Key of one compiled member: its sha256, the compiler versions, the host CPU, the options
    (and for XGBoost the translation's version)."""
    from importlib.metadata import version

    import llvmlite

    cpu, features = _host_cpu()
    fields = {"member_sha256": hashlib.sha256(member_bytes).hexdigest(),
              "lleaves": version("lleaves"), "llvmlite": llvmlite.__version__,
              "cpu": cpu, "features": features, "platform": sys.platform,
              "options": LEARNERS[learner].options}
    if learner != "lightgbm":   # LightGBM keys stay what they were before XGBoost was added
        fields.update(learner=learner, translation=XGBOOST_TRANSLATION)
    text = json.dumps(fields, sort_keys=True)
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


def expected_compile_s(member_bytes, learner="lightgbm"):
    return count_nodes(model_text(member_bytes, learner))[1] * COMPILE_S_PER_NODE


def _log_once(log, message):
    if log is not None and message not in _LOGGED:
        _LOGGED.add(message)
        log(message)


# -- XGBoost as a LightGBM text model -----------------------------------------------------------

def _float32(numbers):
    """float32 nearest to each decimal string (or number) of XGBoost's JSON, rounded once.

    Through float64 a decimal can land exactly on the midpoint of two float32 values and round
    to the wrong one; those few are rounded from the exact decimal value.
    """
    texts = [str(x) for x in numbers]
    wide = np.array([float(t) for t in texts], dtype=np.float64)
    out = wide.astype(np.float32)
    back = out.astype(np.float64)
    other = np.nextafter(out, np.where(wide > back, np.float32(np.inf), np.float32(-np.inf))).astype(np.float64)
    tie = (wide != back) & (wide == (back + other) / 2)
    for i in np.flatnonzero(tie):
        exact = Fraction(texts[i])
        a, b = out[i], np.float32(other[i])
        da, db = abs(Fraction(float(a)) - exact), abs(Fraction(float(b)) - exact)
        out[i] = a if da < db or (da == db and not int(a.view(np.uint32)) & 1) else b
    return out


def _number(value):
    return repr(float(value))   # shortest text that reads back to the same float32 value


def _leaf_tree(index, value):
    return (f"Tree={index}\nnum_leaves=1\nnum_cat=0\nsplit_feature=\nthreshold=\ndecision_type=\n"
            f"left_child=\nright_child=\nleaf_value={_number(value)}\nshrinkage=1\n")


def _translate_tree(index, tree):
    if any(int(t) for t in tree.get("split_type", [])) or tree.get("categories_nodes"):
        raise NotCompilable("categorical splits")
    if int(tree["tree_param"].get("size_leaf_vector", 1)) > 1:
        raise NotCompilable("vector leaves (several targets)")
    left, right = tree["left_children"], tree["right_children"]
    feature, default_left = tree["split_indices"], tree["default_left"]
    values = _float32(tree["split_conditions"])    # a split's threshold, a leaf's value
    splits, leaves, pending = [], [], [0]         # the nodes reachable from the root, depth first
    split_index, leaf_index = {}, {}
    while pending:
        node = pending.pop()
        if int(left[node]) == -1:
            leaf_index[node] = len(leaves)
            leaves.append(node)
        else:
            split_index[node] = len(splits)
            splits.append(node)
            pending.extend((int(right[node]), int(left[node])))
    if not splits:
        return _leaf_tree(index, values[0])

    def child(node):
        return str(split_index[node]) if node in split_index else str(-(leaf_index[node] + 1))

    # x < t (float32)  <=>  x <= largest float32 below t; NaN goes to XGBoost's default child
    thresholds = np.nextafter(values[splits], np.float32(-np.inf))
    decision = [8 | (2 if int(default_left[n]) else 0) for n in splits]   # NaN is missing; default left
    return (f"Tree={index}\nnum_leaves={len(leaves)}\nnum_cat=0\n"
            f"split_feature={' '.join(str(int(feature[n])) for n in splits)}\n"
            f"threshold={' '.join(_number(t) for t in thresholds)}\n"
            f"decision_type={' '.join(map(str, decision))}\n"
            f"left_child={' '.join(child(int(left[n])) for n in splits)}\n"
            f"right_child={' '.join(child(int(right[n])) for n in splits)}\n"
            f"leaf_value={' '.join(_number(values[n]) for n in leaves)}\n"
            "shrinkage=1\n")


@functools.lru_cache(maxsize=2)   # decide() then load_or_compile() of one member
def xgboost_text(member_bytes):
    """An XGBoost booster (its native ``.ubj``/``.json`` member) as an equivalent LightGBM text
    model for lleaves: tree 0 is ``base_score``, then XGBoost's trees in order.

    Raises :class:`NotCompilable` for what the translation does not reproduce exactly.
    """
    import xgboost as xgb

    booster = xgb.Booster(model_file=bytearray(member_bytes))
    learner = json.loads(booster.save_raw("json"), parse_float=str)["learner"]
    objective = learner["objective"]["name"]
    if objective != "reg:squarederror":
        raise NotCompilable(f"objective {objective}")
    boosting = learner["gradient_booster"]
    if boosting["name"] != "gbtree":
        raise NotCompilable(f"booster {boosting['name']}")
    model, param = boosting["model"], learner["learner_model_param"]
    if int(param.get("num_target", 1)) != 1 or int(param.get("num_class", 0)) > 1:
        raise NotCompilable("several targets")
    if int(model["gbtree_model_param"].get("num_parallel_tree", 1)) != 1 or any(model.get("tree_info", [])):
        raise NotCompilable("parallel trees")
    n_features = int(param["num_feature"])
    if n_features < 1 or n_features != booster.num_features():
        raise NotCompilable("feature count")
    # reg:squarederror: identity link, the margin starts at base_score (float32)
    blocks = [_leaf_tree(0, _float32([param["base_score"]])[0])]
    blocks.extend(_translate_tree(k + 1, tree) for k, tree in enumerate(model["trees"]))
    head = ("tree\nversion=v3\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\n"
            f"max_feature_idx={n_features - 1}\nobjective=regression\n"
            f"feature_names={' '.join(f'f{i}' for i in range(n_features))}\n"
            f"feature_infos={' '.join(['[-1e+38:1e+38]'] * n_features)}\n"   # '[' = numerical
            f"tree_sizes={' '.join(str(len(b) + 1) for b in blocks)}\n\n")
    return (head + "\n".join(blocks) + "\nend of trees\n\npandas_categorical:null\n").encode("utf-8")


def model_text(member_bytes, learner="lightgbm"):
    """The LightGBM text lleaves compiles for a member (raises :class:`NotCompilable`)."""
    return member_bytes if learner == "lightgbm" else xgboost_text(bytes(member_bytes))


def _in_tree_order_block(instr_block_idx, forest, root_func, tree_funcs, setup_block, next_block,
                         eval_obj_func, use_fp64):
    """lleaves 1.3.0's ``_populate_instruction_block`` (MIT, S. Boehm), except that each row's
    sum continues from the previous block's stored value: ``((s + t_k) + t_k+1) + ...``, strictly
    in tree order as XGBoost sums (lleaves adds each block's own sum to the previous one)."""
    from llvmlite import ir
    from lleaves.compiler.codegen import codegen as cg

    if forest.n_classes != 1 or any(f.is_categorical for f in forest.features):
        raise NotCompilable("in-order summation is for one output and numerical features")
    data_arr, out_arr, start_index, end_index = root_func.args
    builder = ir.IRBuilder(setup_block)
    loop_iter = builder.alloca(cg.LONG, 1, "loop-idx")
    builder.store(builder.zext(start_index, cg.LONG), loop_iter)
    end_index = builder.zext(end_index, cg.LONG)
    condition_block = root_func.append_basic_block("loop-condition")
    builder.branch(condition_block)

    builder = ir.IRBuilder(condition_block)
    core_block = root_func.append_basic_block("loop-core")
    builder.cbranch(builder.icmp_signed("<", builder.load(loop_iter), end_index), core_block, next_block)

    builder = ir.IRBuilder(core_block)
    row = builder.load(loop_iter)
    first = builder.mul(row, ir.Constant(cg.LONG, forest.n_args))
    args = [builder.load(builder.gep(data_arr, (builder.add(first, cg.lconst(i)),))) for i in range(forest.n_args)]
    result_ptr = builder.gep(out_arr, (row,))
    result = cg.get_fdtype_const(0.0, use_fp64) if instr_block_idx == 0 else builder.load(result_ptr)
    for tree in tree_funcs:
        result = builder.fadd(result, builder.call(tree.llvm_function, args))
    if eval_obj_func:
        result = cg._populate_objective_func_block(
            builder, [result], forest.objective_func, forest.objective_func_config, forest.raw_score,
            forest.average_output, len(forest.trees), use_fp64)[0]
    builder.store(result, result_ptr)
    builder.store(builder.add(row, cg.lconst(1)), loop_iter)
    builder.branch(condition_block)


def in_order_supported():
    """(True, "") when :func:`_summing_in_tree_order` knows this lleaves, else (False, reason)."""
    from importlib.metadata import version

    found = version("lleaves")
    if found != IN_ORDER_LLEAVES:
        return False, f"in-order summation is written for lleaves {IN_ORDER_LLEAVES}, found {found}"
    return True, ""


@contextlib.contextmanager
def _summing_in_tree_order():
    """lleaves code generation with :func:`_in_tree_order_block` (call under ``_LOCK``)."""
    from lleaves.compiler.codegen import codegen as cg

    saved = cg._populate_instruction_block
    cg._populate_instruction_block = _in_tree_order_block
    try:
        yield
    finally:
        cg._populate_instruction_block = saved


# -- when to compile ----------------------------------------------------------------------------

@dataclasses.dataclass
class Decision:
    compile: bool
    reason: str
    cached: bool = False
    expected_compile_s: float = 0.0
    accelerator: str = "lleaves"     # or "quickscorer"


def accelerator():
    value = (os.environ.get(ENV_ACCELERATOR) or "auto").strip().lower()
    return value if value in ("auto", "quickscorer", "lleaves") else "auto"


def _kernel_key(member_bytes, learner):
    return f"quickscorer:{learner}:{hashlib.sha256(member_bytes).hexdigest()}"


@functools.lru_cache(maxsize=32)   # decide() then load_kernel_model() of each member of a job
def _forest(member_bytes, learner):
    """The member as QuickScorer arrays (raises NotSupported / NotCompilable)."""
    from . import quickscorer

    return quickscorer.from_lightgbm_text(model_text(member_bytes, learner), LEARNERS[learner].sums_in)


def _decide_kernel(member_bytes, n_rows, native_s_per_row, learner, current):
    """The QuickScorer kernel's :class:`Decision`, or ``(None, why it cannot take the member)``."""
    from . import quickscorer

    ok, why = quickscorer.available()
    if not ok:
        return None, f"numba not available ({why})"
    try:
        forest = _forest(bytes(member_bytes), learner)
    except (quickscorer.NotSupported, NotCompilable) as err:
        return None, f"the kernel does not take it: {err}"
    except Exception as err:  # noqa: BLE001 - a member the library cannot read or dump
        return None, f"the kernel does not take it ({type(err).__name__}: {err})"
    if _kernel_key(member_bytes, learner) in _FAILED:
        return None, "the kernel failed on it earlier in this process"
    if current != "always" and (learner, "quickscorer") in _SLOWER:
        return None, _SLOWER[(learner, "quickscorer")]
    warm = quickscorer.is_warm(*quickscorer.kernel_types(forest))
    expected = 0.0 if warm else KERNEL_COMPILE_S
    if current == "always":
        return Decision(True, f"{ENV_MODE}=always", warm, expected, "quickscorer"), ""
    if warm:
        return Decision(True, "the kernel is compiled in this process", True, 0.0, "quickscorer"), ""
    saving = n_rows * native_s_per_row * (1.0 - 1.0 / LEARNERS[learner].kernel_speedup)
    if saving > expected:
        return Decision(True, f"{n_rows:,} rows x {native_s_per_row * 1e6:.2f} us/row native: expected "
                        f"saving {saving:.1f} s > kernel compile {expected:.1f} s", False, expected,
                        "quickscorer"), ""
    return Decision(False, f"{n_rows:,} rows: expected saving {saving:.1f} s <= kernel compile "
                    f"{expected:.1f} s", False, expected, "quickscorer"), ""


def decide(member_bytes, n_rows, native_s_per_row, *, speedup=None, learner="lightgbm"):
    """Whether and how accelerating this member pays for a job of ``n_rows`` rows.

    The QuickScorer kernel (:mod:`.quickscorer`) takes the member when it can (``auto``, see
    :data:`ENV_ACCELERATOR`): it costs one kernel compilation per process, not one per model.
    Otherwise lleaves: ``native_s_per_row`` is the measured native predict time per row of this
    booster (s), the saving per row ``native_s_per_row * (1 - 1/speedup)`` (default: the
    learner's measured speedup, :data:`EXPECTED_SPEEDUP` / :data:`XGBOOST_EXPECTED_SPEEDUP`);
    compiling pays when a cached build exists or ``n_rows * saving > expected compile time``
    (:func:`expected_compile_s`).
    """
    speedup = LEARNERS[learner].speedup if speedup is None else speedup
    current = mode()
    if current == "off":
        return Decision(False, f"{ENV_MODE}=off")
    chosen = accelerator()
    kernel_why = ""
    if chosen != "lleaves":
        kernel, kernel_why = _decide_kernel(member_bytes, n_rows, native_s_per_row, learner, current)
        if kernel is not None or chosen == "quickscorer":
            return kernel or Decision(False, kernel_why, accelerator="quickscorer")
    decision = _decide_lleaves(member_bytes, n_rows, native_s_per_row, speedup, learner, current)
    if kernel_why:
        decision = dataclasses.replace(decision, reason=f"{decision.reason}; QuickScorer: {kernel_why}")
    return decision


def _decide_lleaves(member_bytes, n_rows, native_s_per_row, speedup, learner, current):
    ok, why = available()
    if not ok:
        return Decision(False, f"lleaves not available ({why})")
    if learner != "lightgbm":
        ok, why = in_order_supported()
        if not ok:
            return Decision(False, why)
        try:
            model_text(member_bytes, learner)
        except NotCompilable as err:
            return Decision(False, f"not compilable: {err}")
        except Exception as err:  # noqa: BLE001 - a member xgboost cannot read or dump
            return Decision(False, f"not compilable ({type(err).__name__}: {err})")
    key = cache_key(member_bytes, learner)
    folder = _safe_cache_dir(create=False)
    cached = key in _LOADED or bool(folder and os.path.isfile(os.path.join(folder, key + ".o")))
    expected = expected_compile_s(member_bytes, learner)
    if key in _FAILED:
        return Decision(False, "compiling failed earlier in this process", cached, expected)
    if current == "always":
        return Decision(True, f"{ENV_MODE}=always", cached, expected)
    if (learner, "lleaves") in _SLOWER:
        return Decision(False, _SLOWER[(learner, "lleaves")], cached, expected)
    if cached:
        return Decision(True, "a compiled build is cached", True, expected)
    saving = n_rows * native_s_per_row * (1.0 - 1.0 / speedup)
    if saving > expected:
        return Decision(True, f"{n_rows:,} rows x {native_s_per_row * 1e6:.2f} us/row native: expected "
                        f"saving {saving:.1f} s > compile {expected:.1f} s", False, expected)
    return Decision(False, f"{n_rows:,} rows: expected saving {saving:.1f} s <= compile {expected:.1f} s",
                    False, expected)


def load_or_compile(member_bytes, learner="lightgbm"):
    """A compiled ``lleaves.Model`` for a member (LightGBM text, or XGBoost through
    :func:`xgboost_text`), from the cache or compiled now (:func:`build_object`).

    Returns ``(model, info)``; info: ``{"cached": bool, "compile_s": float, "key": str,
    "separate_process": bool}``. Raises whatever building or lleaves raises (the caller falls
    back to native). Safe to call from several threads: builds of different members run side by
    side (each in its own process); loading into this process is one at a time.
    """
    key = cache_key(member_bytes, learner)
    with _LOCK:
        member_lock = _BUILDING.setdefault(key, threading.Lock())
    # A second thread asking for a member that is being built (two predictions of one model at
    # once) waits for that build and takes its result, instead of building it again.
    with member_lock:
        with _LOCK:
            if key in _LOADED:
                return _LOADED[key], {"cached": True, "compile_s": 0.0, "key": key, "separate_process": False}
        return _load_or_build(member_bytes, learner, key)


def _load_or_build(member_bytes, learner, key):
    import lleaves

    options = LEARNERS[learner].options
    folder = _safe_cache_dir(create=True)
    target = os.path.join(folder, key + ".o") if folder else None
    started = time.perf_counter()
    text = model_text(member_bytes, learner)   # lleaves reads the text even for a cached object
    if learner == "xgboost":
        ok, why = in_order_supported()
        if not ok:
            raise NotCompilable(why)
    separate = False
    with tempfile.TemporaryDirectory(prefix="smd-lleaves-") as scratch:
        text_path = os.path.join(scratch, "lightgbm.txt")
        with open(text_path, "wb") as stream:
            stream.write(text)
        cached = bool(target and os.path.isfile(target))
        object_path = target
        if not cached:
            # build into a scratch object, then move it into the cache in one rename
            object_path = os.path.join(scratch, "compiled.o")
            separate = build_object(text_path, learner, object_path)
            if target:
                tmp = os.path.join(folder, f".{key}.{os.getpid()}.{threading.get_ident()}.tmp")
                try:
                    with open(object_path, "rb") as src, open(tmp, "wb") as dst:
                        dst.write(src.read())
                    os.replace(tmp, target)
                except OSError:  # a full or read-only cache is not an error
                    try:
                        os.remove(tmp)
                    except OSError:
                        pass
        with _LOCK:   # one lleaves/LLVM load at a time in this process
            model = lleaves.Model(model_file=text_path)
            model.compile(cache=object_path, **options)   # an existing object: loaded, no code generation
            _LOADED[key] = model
    elapsed = time.perf_counter() - started
    return model, {"cached": cached, "compile_s": elapsed, "key": key, "separate_process": separate}


def load_kernel_model(member_bytes, learner="lightgbm"):
    """The member as a :class:`.quickscorer.ForestModel`, the kernel compiled for its leaf type
    (once per process). Returns ``(model, info)`` as :func:`load_or_compile` does."""
    from . import quickscorer

    started = time.perf_counter()
    forest = _forest(bytes(member_bytes), learner)
    warm = quickscorer.is_warm(*quickscorer.kernel_types(forest))
    quickscorer.warm(*quickscorer.kernel_types(forest))
    model = quickscorer.ForestModel(forest)
    return model, {"cached": warm, "compile_s": time.perf_counter() - started, "key": None,
                   "separate_process": False}


#: fewest rows for which :func:`predict_exactly` reads a LightGBM booster into the kernel: its
#: text and arrays take ~0.03 s for 300 trees, LightGBM predicts ~5 us/row natively
KERNEL_MIN_ROWS = 10_000


def _warm_kernel(learner):
    from . import quickscorer

    try:
        if quickscorer.available()[0]:
            # LightGBM's default 31 leaves take 32-bit masks; more leaves compile on first use
            quickscorer.warm(LEARNERS[learner].sums_in, np.uint32)
    except Exception:  # noqa: BLE001 - predict_exactly tries again and falls back to native
        pass


def prepare_exact_predictions(learners, largest_rows):
    """Compile the kernel :func:`predict_exactly` uses in the background now (training calls this
    before its fits, so its first out-of-fold prediction does not wait ~1 s for it), when a
    prediction of ``largest_rows`` will use it at all (small trainings never pay the compile).
    Returns the compile's future, or None when there is nothing to compile."""
    if ("lightgbm" in learners and largest_rows >= KERNEL_MIN_ROWS and mode() != "off"
            and accelerator() != "lleaves"):
        return _builder().submit(_warm_kernel, "lightgbm")
    return None


def predict_exactly(learner, booster, X, n_threads):
    """A fitted booster's predictions (float64), the same numbers as its native predict: LightGBM
    of at least :data:`KERNEL_MIN_ROWS` rows through the QuickScorer kernel when it takes the
    booster (checked against native on the first rows; NaN rows native), else native. For
    boosters that are not in a model file yet (training's out-of-fold and metric predictions);
    XGBoost stays native here (its translation costs more than one call saves)."""
    from . import quickscorer
    from .stack import _predict_booster

    X = np.asarray(X, dtype=np.float32)
    if (learner != "lightgbm" or X.shape[0] < KERNEL_MIN_ROWS or mode() == "off"
            or accelerator() == "lleaves" or (learner, "quickscorer") in _SLOWER
            or not quickscorer.available()[0]):
        return _predict_booster(learner, booster, X, n_threads)
    try:
        forest = quickscorer.from_lightgbm_text(booster.model_to_string(), LEARNERS[learner].sums_in)
        quickscorer.warm(*quickscorer.kernel_types(forest))
        values = quickscorer.predict(forest, X, n_threads).astype(np.float64, copy=False)
    except Exception:  # noqa: BLE001 - NotSupported or a kernel failure: native, same numbers
        return _predict_booster(learner, booster, X, n_threads)
    rows = min(CHECK_ROWS, X.shape[0])
    head = values[:rows]
    if not np.all(np.isnan(head) | (np.abs(head - _predict_booster(learner, booster, X[:rows], 1))
                                    <= CHECK_TOLERANCE)):
        return _predict_booster(learner, booster, X, n_threads)
    missing = np.isnan(values)
    if missing.any():
        values[missing] = _predict_booster(learner, booster, X[missing], n_threads)
    return values


#: Python run in a separate process by :func:`build_object` (job as JSON on stdin)
_BUILD_CHILD = """
import json, sys
from {module} import compile_object
job = json.loads(sys.stdin.read())
compile_object(job["text_path"], job["learner"], job["object_path"])
"""


def build_object(text_path, learner, object_path):
    """Compile the LightGBM text at ``text_path`` into the object file ``object_path``.

    The build runs in a separate Python process (the interpreter QGIS runs on,
    :func:`.common.python_interpreter`): most of lleaves' code generation is Python holding the
    GIL, so builds in threads would run one after the other, while processes build several
    members side by side on as many cores; and an LLVM crash ends that process, not QGIS. When no
    interpreter can be started (or ``SMDOWNSCALE_COMPILE_IN_PROCESS=1``) it is built in this
    process. Returns True when a separate process built it; raises RuntimeError when the build
    failed (its output's last lines in the message).
    """
    from .common import python_interpreter, signal_name

    def build_here():
        with _LOCK:   # lleaves' code generation patches a module (XGBoost): one at a time
            compile_object(text_path, learner, object_path)
        return False

    python = python_interpreter()
    if python is None or os.environ.get("SMDOWNSCALE_COMPILE_IN_PROCESS") == "1":
        return build_here()
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    # the packages this process sees (QGIS adds the plugin folders at run time)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    kwargs = {"creationflags": 0x08000000} if os.name == "nt" else {}   # no console window in QGIS
    job = json.dumps({"text_path": text_path, "learner": learner, "object_path": object_path})
    try:
        done = subprocess.run([python, "-c", _BUILD_CHILD.format(module=__name__)], input=job,
                              capture_output=True, text=True, env=env, timeout=BUILD_TIMEOUT_S,
                              cwd=os.path.dirname(object_path), **kwargs)
    except OSError:   # the interpreter cannot be started
        return build_here()
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"the build took longer than {BUILD_TIMEOUT_S} s") from err
    if done.returncode != 0 or not os.path.isfile(object_path):
        tail = " ".join((done.stderr or "").split()[-25:])
        how = signal_name(done.returncode) if done.returncode < 0 else f"exit code {done.returncode}"
        raise RuntimeError(f"the build process failed ({how}){': ' + tail if tail else ''}")
    return True


def compile_object(text_path, learner, object_path):
    """lleaves: LightGBM text -> object file (XGBoost summed in tree order), in this process."""
    import lleaves

    codegen = _summing_in_tree_order() if learner == "xgboost" else contextlib.nullcontext()
    with codegen:
        lleaves.Model(model_file=text_path).compile(cache=object_path, **LEARNERS[learner].options)


def _builder():
    """The thread pool that waits on builds: as many side by side as this machine has cores."""
    global _BUILDER
    with _LOCK:
        if _BUILDER is None:
            from concurrent.futures import ThreadPoolExecutor

            _BUILDER = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1),
                                          thread_name_prefix="smd-compile")
        return _BUILDER


def forget(member_bytes, learner="lightgbm", accelerator="lleaves"):
    """Drop a compiled member from this process and the cache (after a failed check)."""
    if accelerator == "quickscorer":
        _FAILED.add(_kernel_key(member_bytes, learner))
        return
    try:
        key = cache_key(member_bytes, learner)
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
    _BUILDING.clear()
    _FAILED.clear()
    _SLOWER.clear()
    _LOGGED.clear()


class CompiledPredictor:
    """One booster's predictions through lleaves where it pays, natively otherwise; same numbers.

    Use :class:`LightGBMPredictor` or :class:`XGBoostPredictor`.

    Parameters
    ----------
    booster : lightgbm.Booster or xgboost.Booster
    member_bytes : bytes
        The booster's own native file (the model file member it was loaded from).
    expected_rows : int or None
        Rows the job will predict (for :func:`decide`); None = unknown (native until measured).
    log : callable(str) or None
        Receives one line saying which path runs and why (and the fallback, if any).
    label : str
        Names the booster in log lines (e.g. the partition).

    The first call predicts natively and measures the native time per row; then
    :func:`decide` says whether to compile for the rows still to come. The build starts in the
    background (so the first calls of a job's other boosters start theirs and all build side by
    side) and the next call waits for it. A compiled model is checked against the native
    predictions of its first rows before it is used.
    """

    learner = None

    def __init__(self, booster, member_bytes, *, expected_rows=None, log=None, label=""):
        self.booster = booster
        self.member_bytes = member_bytes
        self.expected_rows = expected_rows
        self.log = log
        self.label = label
        self.compiled = None
        self.decided = False
        self._pending = None   # (future, decision, check rows, their native values) while building
        self._native_s_per_row = None   # measured on the first call
        self._unmeasured = None         # the compiled path's accelerator until its speed is measured
        self._path = "native"
        self._reason = "not decided yet"
        self.compile_s = 0.0
        self.rows_done = 0

    @property
    def _name(self):
        return LEARNERS[self.learner].label

    def _native(self, X, n_threads):
        from .stack import _predict_booster   # the very call of the native path

        return _predict_booster(self.learner, self.booster, X, n_threads)

    def _compiled_predict(self, model, X, n_threads):
        # the kernel reads float32 (as both libraries compare); lleaves what it was built for
        data = np.ascontiguousarray(X, dtype=getattr(model, "input_dtype", LEARNERS[self.learner].dtype))
        values = model.predict(data, n_jobs=int(n_threads)).astype(np.float64, copy=False)
        missing = np.isnan(values)   # the kernel leaves rows with a NaN feature to the booster
        if missing.any():
            values[missing] = self._native(X[missing], n_threads)
        return values

    def _say(self, message):
        if self.log is not None:
            self.log(f"{message} [{self.label}]" if self.label else message)

    def _decide(self, native_s_per_row, sample, native_values):
        self.decided = True
        remaining = None if self.expected_rows is None else max(0, self.expected_rows - self.rows_done)
        if remaining is None:
            remaining = 0
        decision = decide(self.member_bytes, remaining, native_s_per_row, learner=self.learner)
        self._native_s_per_row = native_s_per_row
        if not decision.compile:
            self._path, self._reason = "native", decision.reason
            self._say(f"{self._name} native prediction ({decision.reason})")
            return
        # built in the background (side by side with the job's other members, see
        # build_object); the next predict() waits for it
        load = load_kernel_model if decision.accelerator == "quickscorer" else load_or_compile
        future = _builder().submit(load, self.member_bytes, learner=self.learner)
        self._pending = (future, decision, sample, native_values)

    def _resolve(self):
        """Wait for a pending build, check it against the native rows, choose the path."""
        if self._pending is None:
            return
        future, decision, sample, native_values = self._pending
        self._pending = None
        name = self._name
        try:
            compiled, info = future.result()
            check = self._compiled_predict(compiled, sample, 1)
            worst = float(np.max(np.abs(check - native_values))) if check.size else 0.0
            if not worst <= CHECK_TOLERANCE:
                forget(self.member_bytes, self.learner, decision.accelerator)
                self._path, self._reason = "native", f"compiled model differs from native by {worst:.2e}"
                self._say(f"{name} native prediction (the compiled model differs from native by {worst:.2e}; "
                          "cached build removed)")
                return
        except Exception as err:  # noqa: BLE001 - any accelerator failure: stay native
            try:
                _FAILED.add(_kernel_key(self.member_bytes, self.learner) if decision.accelerator == "quickscorer"
                            else cache_key(self.member_bytes, self.learner))
            except Exception:  # noqa: BLE001
                pass
            self._path, self._reason = "native", f"compiling failed ({type(err).__name__}: {err})"
            _log_once(self.log, f"{name} compiled prediction unavailable, using native "
                                f"({type(err).__name__}: {err})")
            return
        self.compiled = compiled
        self.compile_s = info["compile_s"]
        self._path = "compiled"
        # its speed is measured on the next call, unless the user asked for it (always)
        self._unmeasured = None if mode() == "always" else decision.accelerator
        if decision.accelerator == "quickscorer":
            tool = "QuickScorer kernel"
            how = "kernel compiled earlier" if info["cached"] else f"kernel ready in {info['compile_s']:.1f} s"
        elif info["cached"]:
            tool, how = "lleaves", "loaded from the cache"
        else:
            where = " in a separate process" if info.get("separate_process") else ""
            tool, how = "lleaves", f"compiled in {info['compile_s']:.1f} s{where}"
        self._reason = f"{tool}; {decision.reason}; {how}"
        self._say(f"{name} compiled prediction ({tool}; {decision.reason}; {how})")

    @property
    def path(self):
        """"native" or "compiled" (waits for a pending build)."""
        self._resolve()
        return self._path

    @property
    def reason(self):
        self._resolve()
        return self._reason

    def predict(self, X, n_threads):
        X = np.asarray(X, dtype=np.float32)
        if X.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        self._resolve()
        if self.compiled is not None:
            self.rows_done += X.shape[0]
            if self._unmeasured is None:
                return self._compiled_predict(self.compiled, X, n_threads)
            started = time.perf_counter()
            values = self._compiled_predict(self.compiled, X, n_threads)
            self._check_speed((time.perf_counter() - started) / X.shape[0])
            return values
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

    def _check_speed(self, compiled_s_per_row):
        """The expected speed-ups were measured on the bench machine; vector units and caches
        differ between CPUs (an earlier kernel ran 0.5x native for XGBoost on an AMD machine), so the
        compiled path's first call is compared with the native first call on this machine and
        the slower path is dropped for the rest of the process."""
        accelerator, self._unmeasured = self._unmeasured, None
        native = self._native_s_per_row
        if native is None or compiled_s_per_row < native:
            return
        tool = "QuickScorer kernel" if accelerator == "quickscorer" else "lleaves"
        why = (f"the {tool} measured {compiled_s_per_row * 1e6:.2f} us/row against native "
               f"{native * 1e6:.2f} us/row on this machine")
        _SLOWER[(self.learner, accelerator)] = why
        self.compiled = None
        self._path, self._reason = "native", why
        self._say(f"{self._name} native prediction ({why})")


class LightGBMPredictor(CompiledPredictor):
    """LightGBM through lleaves from its own text member (:class:`CompiledPredictor`)."""

    learner = "lightgbm"


class XGBoostPredictor(CompiledPredictor):
    """XGBoost through lleaves from its ``xgboost.ubj`` member translated by :func:`xgboost_text`
    (:class:`CompiledPredictor`); bit-identical to ``inplace_predict`` on float32 features."""

    learner = "xgboost"


#: learner -> its predictor class (what :meth:`.stack.StackEnsemble.accelerate` wraps)
PREDICTORS = {"lightgbm": LightGBMPredictor, "xgboost": XGBoostPredictor}


def booster_members(model_path, learner="lightgbm"):
    """``{partition name (None = global model): native member bytes}`` of one learner in a
    verified model file."""
    from .modelfile import _model_dirs, read_verified
    from .stack import MODEL_FILES

    manifest, members, _ = read_verified(model_path)
    member = MODEL_FILES[learner]
    return {partition: members[f"{member_dir}/{member}"] for member_dir, partition in _model_dirs(manifest)
            if f"{member_dir}/{member}" in members}


def lightgbm_members(model_path):
    """``{partition name (None = global model): lightgbm.txt bytes}`` of a verified model file."""
    return booster_members(model_path, "lightgbm")
