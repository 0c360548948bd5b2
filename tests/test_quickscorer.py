"""The QuickScorer kernel (core/quickscorer.py): the boosters' own numbers to the bit, at every
split threshold, with NaN rows left to the booster; what it does not take falls back."""
import re

import numpy as np
import pytest

from smdownscale.core import compiled, quickscorer
from test_speed_paths import _native, _threshold_rows, _xgb_native, lightgbm_model, xgboost_model  # noqa: F401

pytestmark = pytest.mark.skipif(not quickscorer.available()[0], reason="numba is not installed")


@pytest.fixture()
def kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("SMDOWNSCALE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(compiled.ENV_ACCELERATOR, "quickscorer")
    monkeypatch.delenv(compiled.ENV_MODE, raising=False)
    compiled.clear_process_state()
    yield
    compiled.clear_process_state()


def _lightgbm_edges(booster, base):
    """Rows of ``base`` with one feature at each split threshold (as float32) and one float32
    step either side (LightGBM goes left when x <= threshold, compared in float64)."""
    rows = []
    for tree in booster.dump_model()["tree_info"]:
        pending = [tree["tree_structure"]]
        while pending:
            node = pending.pop()
            if "split_feature" not in node:
                continue
            t = np.float32(node["threshold"])
            for value in (t, np.nextafter(t, np.float32(-np.inf)), np.nextafter(t, np.float32(np.inf))):
                row = base[len(rows) % base.shape[0]].copy()
                row[node["split_feature"]] = value
                rows.append(row)
            pending += [node["left_child"], node["right_child"]]
    return np.asarray(rows, dtype=np.float32)


HAND_MADE = """tree
version=v4
num_class=1
num_tree_per_iteration=1
label_index=0
max_feature_idx=1
objective=regression
feature_names=a b
feature_infos=[0:1] [0:2]
tree_sizes=1 1

Tree=0
num_leaves=4
num_cat=0
split_feature=0 1 0
split_gain=1 1 1
threshold=0.5 1.0000000000000002 0.25
decision_type=2 2 2
left_child=1 2 -1
right_child=-4 -3 -2
leaf_value=10 20 30 40
leaf_weight=1 1 1 1
leaf_count=1 1 1 1
internal_value=0 0 0
internal_weight=0 0 0
internal_count=4 3 2
is_linear=0
shrinkage=1


Tree=1
num_leaves=1
num_cat=0
split_feature=
split_gain=
threshold=
decision_type=
left_child=
right_child=
leaf_value=0.5
leaf_weight=
leaf_count=
internal_value=
internal_weight=
internal_count=
is_linear=0
shrinkage=1


end of trees
"""


def test_masks_and_values_of_a_hand_made_forest():
    # tree 0: a <= 0.5 ? (b <= 1.0000000000000002 ? (a <= 0.25 ? 10 : 20) : 30) : 40; tree 1: 0.5
    forest = quickscorer.from_lightgbm_text(HAND_MADE)
    assert forest.n_trees == 2 and forest.n_features == 2
    # leaves left to right: 10, 20, 30, 40; each split clears the leaves of its left subtree
    assert forest.leaf_value.tolist() == [10, 20, 30, 40, 0.5]
    assert forest.mask.tolist() == [0b1000, 0b1100, 0b1110] and forest.mask.dtype == np.uint32
    # 1.0000000000000002 is not a float32: x <= it  <=>  x <= 1.0 for float32 x
    assert forest.threshold.tolist() == [0.5, 1.0, 0.25]
    assert forest.feature.tolist() == [0, 1, 0] and forest.split_start.tolist() == [0, 3, 3]
    X = np.array([[0.1, 0.0], [0.25, 1.0], [np.nextafter(np.float32(0.25), np.float32(1)), 1.0],
                  [0.3, np.nextafter(np.float32(1.0), np.float32(2))], [0.5, 0.0], [0.51, 0.0],
                  [np.nan, 0.0]], dtype=np.float32)
    got = quickscorer.predict(forest, X, 2)
    assert got[:6].tolist() == [10.5, 10.5, 20.5, 30.5, 20.5, 40.5] and np.isnan(got[6])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_lightgbm_kernel_gives_lightgbm_numbers_to_the_bit(lightgbm_model, threads):
    booster, member, X = lightgbm_model
    X = np.concatenate([X, _lightgbm_edges(booster, X)])
    forest = quickscorer.from_lightgbm_text(member)
    got = quickscorer.predict(forest, X, threads)
    native = _native(booster, X)
    complete = ~np.isnan(X).any(axis=1)
    assert complete.sum() > 5000 and (~complete).sum() > 500
    assert np.array_equal(got[complete], native[complete])
    assert np.isnan(got[~complete]).all()      # left to the booster
    for rows in (0, 1, 255, 257):              # a block's edges
        assert np.array_equal(quickscorer.predict(forest, X[complete][:rows], threads), native[complete][:rows])


def test_xgboost_kernel_gives_xgboost_numbers_to_the_bit(xgboost_model):
    booster, member, X = xgboost_model       # incl. every split threshold and one float32 step either side
    forest = quickscorer.from_lightgbm_text(compiled.xgboost_text(member), np.float32)
    got = quickscorer.predict(forest, X, 2)
    assert got.dtype == np.float32 and np.array_equal(got.astype(np.float64), _xgb_native(booster, X))


def test_predictors_use_the_kernel_and_send_nan_rows_to_the_booster(kernel, lightgbm_model, xgboost_model,
                                                                   monkeypatch):
    monkeypatch.setenv(compiled.ENV_MODE, "always")
    lines = []
    booster, member, X = lightgbm_model
    first = compiled.LightGBMPredictor(booster, member, expected_rows=X.shape[0], log=lines.append, label="p1")
    values = np.concatenate([first.predict(X[:1000], 2), first.predict(X[1000:], 2)])
    assert first.path == "compiled" and isinstance(first.compiled, quickscorer.ForestModel)
    assert np.isnan(X).any(axis=1).sum() > 500 and np.array_equal(values, _native(booster, X))
    booster, member, X = xgboost_model
    second = compiled.XGBoostPredictor(booster, member, log=lines.append, label="p1")
    values = np.concatenate([second.predict(X[:100], 2), second.predict(X[100:], 2)])
    assert second.path == "compiled" and np.array_equal(values, _xgb_native(booster, X, 2))
    assert len(lines) == 2 and all("compiled prediction (QuickScorer kernel;" in line and line.endswith("[p1]")
                                   for line in lines)


def test_the_kernel_decision_counts_its_compilation_once_per_process(kernel, lightgbm_model, monkeypatch):
    _, member, _ = lightgbm_model
    monkeypatch.setattr(quickscorer, "_WARM", set())        # as in a new process
    saving = 5e-6 * (1 - 1 / compiled.LEARNERS["lightgbm"].kernel_speedup)
    few = int(0.9 * compiled.KERNEL_COMPILE_S / saving)
    small = compiled.decide(member, few, 5e-6)
    assert not small.compile and small.accelerator == "quickscorer" and "kernel compile" in small.reason
    assert compiled.decide(member, int(1.1 * compiled.KERNEL_COMPILE_S / saving), 5e-6).compile
    quickscorer.warm(np.float64, np.uint32)
    warm = compiled.decide(member, 10, 5e-6)
    assert warm.compile and warm.cached and "compiled in this process" in warm.reason


def _lightgbm(params, X, y, rounds=5):
    import lightgbm as lgb

    base = {"objective": "regression", "verbosity": -1, "num_threads": 1, "seed": 1}
    booster = lgb.train(dict(base, **params), lgb.Dataset(X, y, params={"verbosity": -1}), num_boost_round=rounds)
    return booster, booster.model_to_string().encode("utf-8")


@pytest.mark.parametrize("case", ["many_leaves", "categorical", "poisson", "zero_as_missing", "damaged"])
def test_what_the_kernel_does_not_take_stays_with_lleaves_or_native(kernel, monkeypatch, case):
    rng = np.random.default_rng(7)
    X = rng.uniform(0, 1, size=(3000, 3)).astype(np.float32)
    X[:, 2] = rng.integers(0, 5, size=X.shape[0])
    y = (1 + X[:, 0] + np.sin(9 * X[:, 1]) + 0.1 * X[:, 2]).astype(np.float32)
    params = {"many_leaves": {"num_leaves": 100, "min_data_in_leaf": 5}, "categorical": {"categorical_feature": [2]},
              "poisson": {"objective": "poisson"}, "zero_as_missing": {"zero_as_missing": True},
              "damaged": {}}[case]
    booster, member = _lightgbm(params, X, y)
    if case == "damaged":      # a split whose left child is the root: a loop, not a tree
        member = member.replace(b"\nleft_child=1 ", b"\nleft_child=0 ", 1)
        assert b"\nleft_child=0 " in member
    why = {"many_leaves": "leaves (at most 64)", "categorical": "categorical", "poisson": "objective",
           "zero_as_missing": "zero-as-missing", "damaged": "damaged"}[case]
    with pytest.raises(quickscorer.NotSupported, match=re.escape(why)):
        quickscorer.from_lightgbm_text(member)
    monkeypatch.setenv(compiled.ENV_MODE, "always")
    decision = compiled.decide(member, 10**7, 1e-5)
    assert not decision.compile and why in decision.reason
    if case != "damaged":
        lines = []
        predictor = compiled.LightGBMPredictor(booster, member, log=lines.append)
        assert np.array_equal(predictor.predict(X, 1), _native(booster, X))
        assert predictor.path == "native" and len(lines) == 1 and why in lines[0]
    # auto: lleaves takes what the kernel does not (when it is installed), saying why
    monkeypatch.setenv(compiled.ENV_ACCELERATOR, "auto")
    auto = compiled.decide(member, 10**7, 1e-5)
    assert "QuickScorer: the kernel does not take it: " in auto.reason and auto.accelerator == "lleaves"


def test_a_kernel_that_fails_or_differs_leaves_native_and_one_line(kernel, lightgbm_model, monkeypatch):
    booster, member, X = lightgbm_model
    monkeypatch.setenv(compiled.ENV_MODE, "always")

    def broken(_member, **_):
        raise RuntimeError("numba could not compile")

    monkeypatch.setattr(compiled, "load_kernel_model", broken)
    lines = []
    predictor = compiled.LightGBMPredictor(booster, member, log=lines.append)
    assert np.array_equal(predictor.predict(X, 1), _native(booster, X))
    assert predictor.path == "native" and len(lines) == 1 and "numba could not compile" in lines[0]
    again = compiled.LightGBMPredictor(booster, member, log=lines.append)
    again.predict(X, 1)
    assert again.path == "native" and "failed on it earlier" in again.reason

    class Wrong:
        def predict(self, data, n_jobs=1):
            return np.zeros(data.shape[0])

    compiled.clear_process_state()
    monkeypatch.setattr(compiled, "load_kernel_model", lambda _m, **_: (Wrong(), {"cached": True, "compile_s": 0.0}))
    lines.clear()
    predictor = compiled.LightGBMPredictor(booster, member, log=lines.append)
    assert np.array_equal(predictor.predict(X, 1), _native(booster, X))
    assert predictor.path == "native" and "differs from native" in lines[0]


def test_training_predictions_through_the_kernel_are_the_native_numbers(kernel, monkeypatch):
    """Out-of-fold and metric predictions of LightGBM go through the kernel (predict_exactly):
    the fitted stack is the same to the bit as with native predictions."""
    from smdownscale.core.stack import StackEnsemble

    rng = np.random.default_rng(11)
    X = rng.uniform(0, 1, size=(40000, 4)).astype(np.float32)
    X[rng.random(X.shape) < 0.02] = np.nan
    y = (0.2 + 0.3 * np.nan_to_num(X[:, 0]) + 0.1 * np.sin(7 * np.nan_to_num(X[:, 1]))).astype(np.float32)
    params = {name: {"n_estimators": 30} for name in ("xgboost", "lightgbm", "catboost")}
    calls = []
    kernel_predict = quickscorer.predict
    monkeypatch.setattr(quickscorer, "predict", lambda *a, **k: calls.append(1) or kernel_predict(*a, **k))
    fits = {}
    for mode in ("off", "auto"):
        monkeypatch.setenv(compiled.ENV_MODE, mode)
        fitted = StackEnsemble(params=params, n_folds=2, seed=3, n_threads=2).fit(X, y)
        fits[mode] = (fitted.oof_.copy(), fitted.weights_.copy(), fitted.predict(X))
        assert bool(calls) == (mode == "auto")     # 20,000-row folds and the 40,000-row prediction
    for off, auto in zip(fits["off"], fits["auto"]):
        assert np.array_equal(off, auto)
    booster = fitted.boosters_["lightgbm"]
    assert np.array_equal(compiled.predict_exactly("lightgbm", booster, X, 2), _native(booster, X))
    few = len(calls)
    compiled.predict_exactly("lightgbm", booster, X[:compiled.KERNEL_MIN_ROWS - 1], 2)   # too few to pay
    assert len(calls) == few


def test_training_compiles_the_kernel_only_when_a_prediction_will_use_it(kernel, monkeypatch):
    warmed = []
    monkeypatch.setattr(compiled, "_warm_kernel", warmed.append)
    small = compiled.KERNEL_MIN_ROWS - 1
    assert compiled.prepare_exact_predictions(["xgboost", "lightgbm", "catboost"], small) is None
    assert compiled.prepare_exact_predictions(["xgboost", "catboost"], 10**6) is None
    monkeypatch.setenv(compiled.ENV_MODE, "off")
    assert compiled.prepare_exact_predictions(["lightgbm"], 10**6) is None
    monkeypatch.delenv(compiled.ENV_MODE)
    compiled.prepare_exact_predictions(["lightgbm"], compiled.KERNEL_MIN_ROWS).result(timeout=60)
    assert warmed == ["lightgbm"]


def test_an_accelerator_slower_than_native_on_this_machine_is_dropped(kernel, lightgbm_model, monkeypatch):
    """The expected speed-ups come from the bench machine; the first accelerated call is timed
    against the first native one here, and a slower path is left for the rest of the process."""
    booster, member, X = lightgbm_model
    monkeypatch.setenv(compiled.ENV_ACCELERATOR, "auto")
    monkeypatch.setenv(compiled.ENV_MODE, "auto")
    quickscorer.warm(np.float64, np.uint32)          # compiled in this process: the kernel pays
    lines = []
    first = compiled.LightGBMPredictor(booster, member, expected_rows=10 * X.shape[0], log=lines.append)
    values = [first.predict(X[:1000], 1)]
    assert first.path == "compiled" and "QuickScorer kernel" in lines[-1]
    first._native_s_per_row = 1e-12                  # as if native had measured faster than any kernel
    values += [first.predict(X[1000:2000], 1), first.predict(X[2000:], 1)]
    assert np.array_equal(np.concatenate(values), _native(booster, X))
    assert first.path == "native" and first.compiled is None
    assert re.search(r"LightGBM native prediction \(the QuickScorer kernel measured [0-9.]+ us/row against "
                     r"native 0\.00 us/row on this machine\)$", lines[-1]), lines[-1]
    monkeypatch.setenv(compiled.ENV_ACCELERATOR, "quickscorer")
    later = compiled.decide(member, 10**8, 5e-6)
    assert not later.compile and "measured" in later.reason
    monkeypatch.setenv(compiled.ENV_MODE, "always")   # what the user asks for still runs
    assert compiled.decide(member, 10, 5e-6).compile


@pytest.mark.parametrize("leaves, mask_dtype", [(32, np.uint32), (33, np.uint64), (64, np.uint64)])
def test_trees_of_up_to_32_leaves_take_32_bit_masks_more_take_64_the_same_numbers(leaves, mask_dtype):
    rng = np.random.default_rng(5)
    X = rng.uniform(0, 1, size=(20000, 5)).astype(np.float32)
    y = np.sin(9 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.standard_normal(20000)
    booster, member = _lightgbm({"num_leaves": leaves, "min_data_in_leaf": 5}, X, y, rounds=20)
    forest = quickscorer.from_lightgbm_text(member)
    assert forest.mask.dtype == mask_dtype and int(np.diff(forest.leaf_start).max()) == leaves
    assert np.array_equal(quickscorer.predict(forest, X, 2), _native(booster, X))
