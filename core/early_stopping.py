"""Early stopping of the stack's fold fits on their own held-out fold (issue 12).

Each of the K fold boosters is given its held-out fold as the validation set and stops when the
fold's RMSE has not improved for ``early_stopping_rounds`` rounds; its out-of-fold predictions
use the best iteration. The refit on all training rows then uses the folds' mean best iteration
count (rounded, at least 1), so the model that predicts has no validation set of its own and
nothing of the test split is looked at. ``early_stopping_rounds = 0`` = off (fixed rounds).
"""
import numpy as np

#: the train shell's advanced parameter default (0 = off); see README "Performance"
DEFAULT_EARLY_STOPPING_ROUNDS = 0


def check_early_stopping_rounds(value):
    from .common import SmdError
    from .common import is_integer

    if not is_integer(value) or value < 0:
        raise SmdError(f"early_stopping_rounds={value!r}: use a whole number of rounds, 0 = off.")
    return int(value)


def validation_set(binned, train_data, test_index):
    """The held-out fold as the library's validation data (binned like the fold's training rows)."""
    if binned.model_name == "lightgbm":
        import lightgbm as lgb

        return lgb.Dataset(binned.X[test_index], binned.y[test_index], reference=train_data,
                           params=binned.dataset_params, free_raw_data=False)
    return binned.subset(test_index)   # XGBoost and CatBoost: the training rows' binning


def train_stopping(model_name, data, valid, native, rounds, stopping_rounds):
    """One booster trained on ``data`` that stops on ``valid``; returns (booster, best count)."""
    if model_name == "xgboost":
        import xgboost as xgb

        booster = xgb.train(native, data, num_boost_round=rounds, evals=[(valid, "fold")],
                            early_stopping_rounds=int(stopping_rounds), verbose_eval=False)
        best = int(getattr(booster, "best_iteration", rounds - 1)) + 1
        # keep only the best trees: OOF predictions and the model then agree
        return booster[:best], best
    if model_name == "lightgbm":
        import lightgbm as lgb

        booster = lgb.train(native, data, num_boost_round=rounds, valid_sets=[valid],
                            callbacks=[lgb.early_stopping(int(stopping_rounds), verbose=False)])
        best = int(booster.best_iteration or booster.current_iteration())
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        return booster, best
    from catboost import CatBoost

    params = {k: v for k, v in native.items() if k != "border_count"}
    params.update(iterations=int(rounds), od_type="Iter", od_wait=int(stopping_rounds), use_best_model=True)
    booster = CatBoost(params).fit(data, eval_set=valid)
    best = int(booster.get_best_iteration()) + 1
    return booster, int(booster.tree_count_ or best)


def n_trees(model_name, booster):
    """Trees (boosting rounds) a booster holds."""
    if model_name == "xgboost":
        return int(booster.num_boosted_rounds())
    if model_name == "lightgbm":
        return int(booster.current_iteration())
    return int(booster.tree_count_)


def refit_rounds(best_counts):
    """The refit's rounds: the folds' mean best iteration count, rounded, at least 1."""
    return max(1, int(round(float(np.mean(best_counts)))))
