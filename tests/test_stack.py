"""StackEnsemble: out-of-fold predictions, meta-learner, encoding and SHAP on synthetic data."""
import numpy as np
import pytest
from sklearn.model_selection import GroupKFold

from smdownscale.core.common import SmdError
from smdownscale.core.stack import StackEnsemble, encode, make_encoder

FEW_TREES = {"xgboost": {"n_estimators": 40}, "lightgbm": {"n_estimators": 40},
             "catboost": {"n_estimators": 40}}


def small_stack(**kwargs):
    kwargs.setdefault("params", FEW_TREES)
    return StackEnsemble(n_threads=1, seed=0, **kwargs)


def test_oof_predictions_never_come_from_a_model_that_saw_the_sample():
    # y is pure noise and x0 is a unique id: a model that saw a sample memorises it, a model that
    # did not can only guess (correlation ~ 0).
    rng = np.random.default_rng(1)
    n = 600
    X = np.column_stack([np.arange(n), rng.random(n)]).astype("float32")
    y = rng.normal(size=n)
    deep = {"xgboost": {"n_estimators": 150, "max_depth": 10, "subsample": 1.0, "colsample_bytree": 1.0,
                        "learning_rate": 0.3},
            "lightgbm": {"n_estimators": 150, "num_leaves": 255, "min_child_samples": 1, "subsample": 1.0,
                         "colsample_bytree": 1.0, "learning_rate": 0.3, "min_data_in_bin": 1},
            "catboost": {"n_estimators": 150, "depth": 8, "learning_rate": 0.3}}
    model = small_stack(params=deep).fit(X, y)
    in_sample = model.base_predict(X)
    for k, name in enumerate(model.base_model_names_):
        assert np.corrcoef(in_sample[:, k], y)[0, 1] > 0.8, name      # memorised when seen
        assert abs(np.corrcoef(model.oof_[:, k], y)[0, 1]) < 0.2, name  # unseen in its fold
    # the folds partition the samples: each sample is in exactly one test fold
    tests = np.sort(np.concatenate([test for _, test in model.folds_]))
    np.testing.assert_array_equal(tests, np.arange(n))
    for train, test in model.folds_:
        assert not set(train) & set(test)
    assert len(model.folds_) == 5


def test_group_folds_keep_groups_together():
    rng = np.random.default_rng(2)
    X = rng.random((300, 3)).astype("float32")
    y = X[:, 0] + X[:, 1]
    groups = np.repeat(np.arange(10), 30)
    model = small_stack(base_models=("lightgbm",)).fit(X, y, groups=groups, cv=GroupKFold(5))
    for train, test in model.folds_:
        assert not set(groups[train]) & set(groups[test])
    assert model.weights_.shape == (1,)


def test_stack_beats_or_matches_best_base_model_and_weights_are_non_negative():
    # Two regimes: a smooth additive signal (favours shallow/symmetric CatBoost trees) plus a sharp
    # interaction; the base models err differently so the blend helps.
    rng = np.random.default_rng(3)
    n = 3000
    X = rng.random((n, 5)).astype("float32")
    y = (np.sin(6 * X[:, 0]) + 2 * X[:, 1] ** 2 + (X[:, 2] > 0.5) * (X[:, 3] > 0.5)
         + 0.5 * X[:, 4] + rng.normal(0, 0.1, n))
    train, test = np.arange(2100), np.arange(2100, n)
    model = small_stack(params={"xgboost": {"n_estimators": 60, "max_depth": 2},
                                "lightgbm": {"n_estimators": 60, "num_leaves": 63, "min_child_samples": 5},
                                "catboost": {"n_estimators": 60, "depth": 4}}).fit(X[train], y[train])
    assert np.all(model.weights_ >= 0)
    rmse = lambda p: float(np.sqrt(np.mean((p - y[test]) ** 2)))
    base = model.base_predict(X[test])
    base_rmse = [rmse(base[:, k]) for k in range(3)]
    stack_rmse = rmse(model.predict(X[test]))
    assert stack_rmse <= min(base_rmse) + 1e-9, (stack_rmse, base_rmse)
    # predict is exactly the linear meta-learner on the base predictions
    np.testing.assert_allclose(model.predict(X[test]), model.intercept_ + base @ model.weights_)


def test_one_hot_encoding_fixed_at_fit_time_with_nan_and_unknown_categories():
    encoder = make_encoder(["ndvi", "lc", "doy"], {"lc": [1, 2, 4]})
    assert encoder["encoded_names"] == ["ndvi", "lc_1", "lc_2", "lc_4", "doy"]
    X = np.array([[0.5, 2, 10], [0.1, np.nan, 20], [0.3, 7, 30]], dtype="float32")
    expected = np.array([[0.5, 0, 1, 0, 10], [0.1, np.nan, np.nan, np.nan, 20], [0.3, 0, 0, 0, 30]],
                        dtype="float32")
    np.testing.assert_array_equal(encode(X, encoder), expected)
    with pytest.raises(SmdError, match="3 columns"):
        encode(X[:, :2], encoder)


def test_categories_learned_at_fit_and_nan_features_accepted():
    rng = np.random.default_rng(5)
    n = 400
    lc = rng.integers(1, 4, n).astype("float32")
    x = rng.random(n).astype("float32")
    y = x + (lc == 2) * 1.0
    X = np.column_stack([x, lc])
    X[::17, 0] = np.nan
    model = small_stack(feature_names=["x", "lc"], categorical=["lc"]).fit(X, y)
    assert model.encoded_feature_names_ == ["x", "lc_1", "lc_2", "lc_3"]
    assert model.encoder_["categorical"] == {"lc": [1.0, 2.0, 3.0]}
    pred = model.predict(np.array([[0.5, 2], [0.5, 1]], dtype="float32"))
    assert pred[0] - pred[1] == pytest.approx(1.0, abs=0.15)


def test_shap_rows_sum_to_stack_prediction_and_lc_is_collapsed():
    rng = np.random.default_rng(6)
    n = 500
    lc = rng.integers(1, 5, n).astype("float32")
    X = np.column_stack([rng.random(n), lc, rng.random(n)]).astype("float32")
    y = 2 * X[:, 0] + 0.5 * (lc == 3) - X[:, 2]
    model = small_stack(feature_names=["a", "lc", "b"], categorical={"lc": [1, 2, 3, 4]}).fit(X, y)
    values, expected = model.shap_values(X[:50])
    assert values.shape == (50, 3)
    np.testing.assert_allclose(values.sum(axis=1) + expected, model.predict(X[:50]), atol=1e-5)
    raw, _ = model.shap_values(X[:50], collapse=False)
    assert raw.shape == (50, 6)
    np.testing.assert_allclose(values[:, 1], raw[:, 1:5].sum(axis=1))
    np.testing.assert_allclose(values[:, [0, 2]], raw[:, [0, 5]])
    # each base model's contributions sum to its own prediction
    base = model.base_predict(X[:50])
    for k, (name, contrib) in enumerate(model.base_shap_values(X[:50]).items()):
        np.testing.assert_allclose(contrib.sum(axis=1), base[:, k], atol=1e-5, err_msg=name)


def test_bad_arguments_raise_smderror():
    X = np.random.default_rng(0).random((50, 2)).astype("float32")
    y = X[:, 0]
    with pytest.raises(SmdError, match="base_models"):
        StackEnsemble(base_models=("xgboost", "randomforest")).fit(X, y)
    with pytest.raises(SmdError, match="base_models is empty"):
        StackEnsemble(base_models=()).fit(X, y)
    with pytest.raises(SmdError, match="unknown base model"):
        StackEnsemble(params={"xgb": {}}).fit(X, y)
    with pytest.raises(SmdError, match="NaN"):
        small_stack().fit(X, np.where(y > 0.5, np.nan, y))
    with pytest.raises(SmdError, match="not fitted"):
        StackEnsemble().predict(X)


@pytest.mark.parametrize("early_stopping_rounds", [0, 5])
def test_fits_side_by_side_give_the_boosters_of_one_after_the_other(early_stopping_rounds):
    # one pool for every learner's binning, fold fits and refits: the order the jobs run in
    # (2 workers side by side vs 1 worker in turn) must not change a single number; with early
    # stopping each refit starts when its own learner's folds are done, amid the others' folds
    rng = np.random.default_rng(4)
    X = rng.uniform(size=(3000, 4)).astype(np.float32)
    X[:, 3] = rng.integers(0, 3, 3000)
    y = (X[:, 0] + np.sin(3 * X[:, 1]) + 0.1 * X[:, 3] + rng.normal(0, 0.05, 3000)).astype(np.float32)
    rounds = 200 if early_stopping_rounds else 30
    params = {name: {"n_estimators": rounds, "learning_rate": 0.3} for name in ("xgboost", "lightgbm", "catboost")}
    fits = [StackEnsemble(seed=3, n_threads=threads, params=params, categorical={"x3": None},
                          early_stopping_rounds=early_stopping_rounds).fit(X, y)
            for threads in (1, 2)]
    assert np.array_equal(fits[0].oof_, fits[1].oof_)
    assert np.array_equal(fits[0].weights_, fits[1].weights_)
    assert np.array_equal(fits[0].predict(X[:500]), fits[1].predict(X[:500]))
    assert fits[0].trees_ == fits[1].trees_
    if not early_stopping_rounds:
        assert fits[0].trees_ == {name: {"folds": [30] * 5, "refit": 30} for name in params}
    else:   # every learner stopped early, and its refit has the folds' mean best count
        for name, trees in fits[0].trees_.items():
            assert len(trees["folds"]) == 5 and max(trees["folds"]) < rounds, (name, trees)
            assert trees["refit"] == int(round(np.mean(trees["folds"]))), (name, trees)


@pytest.mark.parametrize("early_stopping_rounds", [0, 5])
def test_bin_count_overrides_reach_every_fold_and_refit(early_stopping_rounds):
    # XGBoost bins each fold against the training rows' matrix: a max_bin override that reached
    # only that matrix made every fold fail with "Inconsistent max_bin (256 vs. 32)".
    rng = np.random.default_rng(5)
    X = rng.random((800, 3)).astype("float32")
    y = X[:, 0] + np.sin(5 * X[:, 1])
    coarse = {"xgboost": {"n_estimators": 30, "max_bin": 32}, "lightgbm": {"n_estimators": 30, "max_bin": 31},
              "catboost": {"n_estimators": 30, "border_count": 32}}
    model = small_stack(params=coarse, early_stopping_rounds=early_stopping_rounds).fit(X, y)
    fine = small_stack(params=FEW_TREES, early_stopping_rounds=early_stopping_rounds).fit(X, y)
    # the override is used: XGBoost's refit has at most 32 distinct split thresholds per feature
    thresholds = model.boosters_["xgboost"].trees_to_dataframe()
    splits = thresholds[thresholds["Feature"] != "Leaf"]
    assert splits.groupby("Feature")["Split"].nunique().max() <= 32
    fine_splits = fine.boosters_["xgboost"].trees_to_dataframe()
    assert fine_splits[fine_splits["Feature"] != "Leaf"].groupby("Feature")["Split"].nunique().max() > 32
    rmse = float(np.sqrt(np.mean((model.predict(X) - y) ** 2)))
    assert rmse < 0.1 * float(np.std(y))
