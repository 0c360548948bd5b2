"""Tree ensembles evaluated with QuickScorer in one numba kernel: fast, exact, nothing compiled
per model.

Why written here rather than taken from a library: on this project's bench model (one
partition, 495,000 rows, 300 trees, 2 cores) LightGBM's own predict gave 207k rows/s, lleaves
(compiled per model) 832k and this kernel 2.0M; XGBoost's ``inplace_predict`` 389k, lleaves 807k
and this kernel 1.1M - with the same float32/float64 numbers as the native libraries, bit for
bit. Treelite's GTIL and tl2cgen were slower than native here, and no maintained Python package
ships QuickScorer. The kernel is generic: a model becomes arrays (split features, thresholds,
leaf masks, leaf values), never code, so there is no per-model compilation, no compiled cache and
nothing from a model file that could run. numba (a dependency of shap) compiles the kernel once
per process (~1-2 s, in the background while the first rows are predicted natively).

The algorithm is QuickScorer (Lucchese et al., SIGIR 2015): the leaves of each tree are numbered
left to right and every split carries a 64-bit mask with the leaves of its left subtree cleared.
For a row, the masks of the splits whose test sends it right are ANDed together; the row's leaf
is the lowest bit still set (the paper's Theorem 1). Tests are evaluated for a block of rows at a
time with the block stored feature by feature, which the compiler turns into vector compares; no
row walks a tree, so no branch is mispredicted.

The input is a LightGBM text model (the ``lightgbm.txt`` member; XGBoost goes through
:func:`.compiled.xgboost_text`, which already states every split as ``x <= t`` in float32 and
``base_score`` as a first one-leaf tree). Trees of up to 64 leaves, numerical splits, one output,
the identity link; anything else raises :class:`NotSupported` (the caller uses lleaves or the
native booster). Rows holding a NaN come back NaN, for the caller to predict natively (missing
values follow each library's own default directions, which the kernel does not model).
"""
import dataclasses
import threading

import numpy as np

#: rows scored together (feature by feature); measured 64/128/256/512 rows: 1.17/1.81/2.00/2.00
#: M rows/s (LightGBM, 2 threads), 256 is the smallest at the top
BLOCK_ROWS = 256
MAX_LEAVES = 64
#: LightGBM's MissingType::Zero (bits 2-3 of decision_type): |x| <= 1e-35 takes the default side
_MISSING_ZERO = 1

_KERNEL = None
_KERNEL_LOCK = threading.Lock()
_WARM = set()          # (leaf dtype, mask dtype) the kernel has been compiled for in this process
_POOL = None


class NotSupported(ValueError):
    """The model uses something the kernel does not reproduce exactly."""


@dataclasses.dataclass(frozen=True)
class Forest:
    """A tree ensemble as QuickScorer arrays; ``x > threshold`` sends a row right."""

    feature: np.ndarray       # int64 (splits,)
    threshold: np.ndarray     # float32 (splits,)
    mask: np.ndarray          # uint32 or uint64 (splits,): the tree's leaves minus this split's left subtree
    leaf_value: np.ndarray    # float32 or float64 (leaves,), each tree's leaves left to right
    split_start: np.ndarray   # int64 (trees + 1,)
    leaf_start: np.ndarray    # int64 (trees + 1,)
    n_features: int

    @property
    def n_trees(self):
        return int(self.split_start.size - 1)


def _fields(block):
    fields = {}
    for line in block.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _numbers(fields, key, count, kind):
    text = fields.get(key, "")
    try:
        values = [kind(v) for v in text.split()]
    except ValueError as err:
        raise NotSupported(f"unreadable {key}") from err
    if len(values) != count:
        raise NotSupported(f"{key} has {len(values)} values for {count}")
    return values


def _below_or_equal_float32(thresholds):
    """Largest float32 <= each float64 threshold: for float32 x, ``x <= t`` iff ``x <= that``."""
    wide = np.asarray(thresholds, dtype=np.float64)
    if np.isnan(wide).any():
        raise NotSupported("a NaN threshold")
    with np.errstate(over="ignore"):
        narrow = wide.astype(np.float32)
    above = narrow.astype(np.float64) > wide
    narrow[above] = np.nextafter(narrow[above], np.float32(-np.inf))
    return narrow


def _tree_arrays(fields, n_features):
    """(features, thresholds, masks, leaf values left to right) of one LightGBM tree."""
    try:
        n_leaves = int(fields["num_leaves"])
    except (KeyError, ValueError) as err:
        raise NotSupported("a tree without num_leaves") from err
    if not 1 <= n_leaves <= MAX_LEAVES:
        raise NotSupported(f"a tree with {n_leaves} leaves (at most {MAX_LEAVES})")
    if fields.get("is_linear", "0") != "0":
        raise NotSupported("linear trees")
    if int(fields.get("num_cat", "0") or 0):
        raise NotSupported("categorical splits")
    leaf_values = _numbers(fields, "leaf_value", n_leaves, float)
    n_splits = n_leaves - 1
    if n_splits == 0:
        return [], [], [], leaf_values
    features = _numbers(fields, "split_feature", n_splits, int)
    thresholds = _numbers(fields, "threshold", n_splits, float)
    decisions = _numbers(fields, "decision_type", n_splits, int)
    left = _numbers(fields, "left_child", n_splits, int)
    right = _numbers(fields, "right_child", n_splits, int)
    if any(d & 1 for d in decisions):
        raise NotSupported("categorical splits")
    if any((d >> 2) & 3 == _MISSING_ZERO for d in decisions):
        raise NotSupported("zero-as-missing splits")
    if any(not 0 <= f < n_features for f in features):
        raise NotSupported("a split on a feature the model does not have")
    # leaves in left-to-right order (an iterative in-order walk), each split's left-subtree leaves
    order, left_leaves = [], [None] * n_splits
    seen_splits, seen_leaves = set(), set()
    stack = [("visit", 0)]
    while stack:
        action, node = stack.pop()
        if action == "close":
            left_leaves[node] = (left_leaves[node], len(order))   # (first, end) of its left subtree
            continue
        if node < 0:
            leaf = ~node
            if not 0 <= leaf < n_leaves or leaf in seen_leaves:
                raise NotSupported("a damaged tree")
            seen_leaves.add(leaf)
            order.append(leaf)
            continue
        if node >= n_splits or node in seen_splits:
            raise NotSupported("a damaged tree")
        seen_splits.add(node)
        left_leaves[node] = len(order)
        # left subtree, then note where it ended, then the right subtree
        stack.extend((("visit", right[node]), ("close", node), ("visit", left[node])))
    if len(order) != n_leaves or len(seen_splits) != n_splits:
        raise NotSupported("a damaged tree")
    full = (1 << n_leaves) - 1
    masks = []
    for first, end in left_leaves:
        left_bits = ((1 << (end - first)) - 1) << first
        masks.append(full & ~left_bits)
    return features, thresholds, masks, [leaf_values[j] for j in order]


def from_lightgbm_text(text, leaf_dtype=np.float64):
    """:class:`Forest` of a LightGBM text model (bytes or str); ``leaf_dtype`` is what the
    library sums in (LightGBM float64, XGBoost float32)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    head, sep, rest = text.partition("\nTree=")
    if not sep:
        raise NotSupported("no trees")
    header = _fields(head)
    if header.get("num_class", "1") != "1" or header.get("num_tree_per_iteration", "1") != "1":
        raise NotSupported("several outputs")
    if header.get("objective", "regression").split() != ["regression"]:
        raise NotSupported(f"objective {header.get('objective')!r} (its output is transformed)")
    if "average_output" in head.split():
        raise NotSupported("averaged trees (random forest mode)")
    try:
        n_features = int(header["max_feature_idx"]) + 1
    except (KeyError, ValueError) as err:
        raise NotSupported("no max_feature_idx") from err
    trees = rest.split("end of trees")[0].split("\nTree=")
    features, thresholds, masks, leaves = [], [], [], []
    split_start, leaf_start = [0], [0]
    for block in trees:
        f, t, m, v = _tree_arrays(_fields(block), n_features)
        features += f
        thresholds += t
        masks += m
        leaves += v
        split_start.append(len(features))
        leaf_start.append(len(leaves))
    # 32-bit masks when every tree has at most 32 leaves (LightGBM's default 31): twice the rows
    # per vector instruction (LightGBM on a Zen 3 machine, one thread: 1.18M against 0.50M rows/s)
    mask_dtype = np.uint32 if max(masks, default=0) < 2 ** 32 else np.uint64
    return Forest(feature=np.asarray(features, dtype=np.int64),
                  threshold=_below_or_equal_float32(thresholds),
                  mask=np.asarray(masks, dtype=mask_dtype),
                  leaf_value=np.asarray(leaves, dtype=leaf_dtype),
                  split_start=np.asarray(split_start, dtype=np.int64),
                  leaf_start=np.asarray(leaf_start, dtype=np.int64),
                  n_features=n_features)


def available():
    """(True, version) when numba imports, else (False, reason)."""
    try:
        import numba

        return True, f"numba {numba.__version__}"
    except Exception as err:  # noqa: BLE001 - ImportError, or a broken llvmlite
        return False, f"{type(err).__name__}: {err}"


def _kernel():
    """The numba kernel (built once per process; compiled per leaf and mask dtype on first use)."""
    global _KERNEL
    with _KERNEL_LOCK:
        if _KERNEL is not None:
            return _KERNEL
        import numba
        from numba.cpython.unsafe.numbers import trailing_zeros

        block = BLOCK_ROWS

        @numba.njit(nogil=True, boundscheck=False, cache=False)
        def score(X, feature, threshold, mask, leaf_value, split_start, leaf_start, out):
            n, n_features = X.shape
            columns = np.zeros((n_features, block), np.float32)   # the block, feature by feature
            leaves = np.empty(block, mask.dtype)
            ones = ~(leaves[0] ^ leaves[0])   # all bits set, in the mask dtype
            total = np.empty(block, leaf_value.dtype)
            missing = np.empty(block, np.bool_)
            for first in range(0, n, block):
                rows = min(block, n - first)
                for r in range(rows):
                    missing[r] = False
                    for f in range(n_features):
                        value = X[first + r, f]
                        columns[f, r] = value
                        if value != value:
                            missing[r] = True
                for r in range(block):
                    total[r] = 0
                for tree in range(split_start.size - 1):
                    for r in range(block):
                        leaves[r] = ones
                    for split in range(split_start[tree], split_start[tree + 1]):
                        column = feature[split]
                        limit = threshold[split]
                        keep = mask[split]
                        for r in range(block):
                            # a select, not an if: an if becomes a masked store, which AMD
                            # CPUs microcode (measured on Zen 3: a 3.8-7x slower kernel)
                            leaves[r] &= keep if columns[column, r] > limit else ones
                    base = leaf_start[tree]
                    for r in range(block):
                        total[r] += leaf_value[base + trailing_zeros(leaves[r])]
                for r in range(rows):
                    out[first + r] = np.nan if missing[r] else total[r]

        _KERNEL = score
        return score


def _pool():
    global _POOL
    with _KERNEL_LOCK:
        if _POOL is None:
            import os
            from concurrent.futures import ThreadPoolExecutor

            _POOL = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="smd-forest")
        return _POOL


def kernel_types(forest):
    """(leaf dtype, mask dtype): what the kernel is compiled for to score ``forest``."""
    return forest.leaf_value.dtype, forest.mask.dtype


def is_warm(leaf_dtype, mask_dtype):
    return (np.dtype(leaf_dtype), np.dtype(mask_dtype)) in _WARM


def warm(leaf_dtype, mask_dtype):
    """Compile the kernel for these leaf and mask dtypes now (a one-tree forest on two rows)."""
    key = (np.dtype(leaf_dtype), np.dtype(mask_dtype))
    if key in _WARM:
        return
    dtype = key[0]
    one = Forest(feature=np.zeros(1, np.int64), threshold=np.zeros(1, np.float32),
                 mask=np.array([2], key[1]), leaf_value=np.array([1.0, 2.0], dtype),
                 split_start=np.array([0, 1], np.int64), leaf_start=np.array([0, 2], np.int64), n_features=1)
    values = predict(one, np.array([[-1.0], [1.0]], np.float32), 1)
    if values.tolist() != [1.0, 2.0]:
        raise RuntimeError(f"the forest kernel gave {values.tolist()} for [1.0, 2.0]")
    _WARM.add(key)


def predict(forest, X, n_threads=1):
    """Predictions (``forest.leaf_value.dtype``) of float32 rows ``X``; NaN where a row holds a
    NaN. Rows are split into ``n_threads`` runs of the kernel side by side (it releases the GIL)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != forest.n_features:
        raise ValueError(f"the model takes {forest.n_features} columns, got {X.shape}")
    out = np.empty(X.shape[0], dtype=forest.leaf_value.dtype)
    if X.shape[0] == 0:
        return out
    score = _kernel()
    args = (forest.feature, forest.threshold, forest.mask, forest.leaf_value, forest.split_start,
            forest.leaf_start)
    runs = max(1, min(int(n_threads), -(-X.shape[0] // BLOCK_ROWS)))
    if runs == 1:
        score(X, *args, out)
        return out
    bounds = np.linspace(0, X.shape[0], runs + 1).astype(np.int64)
    bounds[1:-1] = bounds[1:-1] // BLOCK_ROWS * BLOCK_ROWS   # whole blocks in every run but the last
    jobs = [_pool().submit(score, X[a:b], *args, out[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    for job in jobs:
        job.result()
    return out


class ForestModel:
    """A :class:`Forest` with lleaves' ``predict(X, n_jobs)`` call (see :mod:`.compiled`)."""

    input_dtype = np.float32

    def __init__(self, forest):
        self.forest = forest

    def predict(self, X, n_jobs=1):
        return predict(self.forest, X, n_jobs)
