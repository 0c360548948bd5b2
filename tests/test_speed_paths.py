"""Issue 12 speed paths: compiled LightGBM and XGBoost (lleaves) == native, cache and fallback;
the preprocess fast reader (all dates of an input at once, copy on the fine grid) bit-identical."""
import os
import stat

import numpy as np
import pytest

from smdownscale.core import compiled

HAS_LLEAVES = compiled.available()[0]
needs_lleaves = pytest.mark.skipif(not HAS_LLEAVES, reason="lleaves is not installed (native path only)")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SMDOWNSCALE_CACHE_DIR", str(folder))
    monkeypatch.delenv(compiled.ENV_MODE, raising=False)
    # these tests are about lleaves; tests/test_quickscorer.py has the kernel's
    monkeypatch.setenv(compiled.ENV_ACCELERATOR, "lleaves")
    compiled.clear_process_state()
    yield folder / "compiled"
    compiled.clear_process_state()


@pytest.fixture(scope="module")
def lightgbm_model():
    import lightgbm as lgb

    rng = np.random.default_rng(3)
    X = rng.uniform(0, 1, size=(4000, 6)).astype(np.float32)
    X[rng.random(X.shape) < 0.05] = np.nan          # missing values take the default branches
    X[:, 5] = rng.integers(0, 2, size=X.shape[0])    # a one-hot-like column
    y = (0.1 + 0.3 * np.nan_to_num(X[:, 0]) + 0.1 * np.nan_to_num(X[:, 1]) ** 2
         + 0.05 * X[:, 5]).astype(np.float32)
    booster = lgb.train({"objective": "regression", "verbosity": -1, "num_threads": 1, "seed": 1,
                         "num_leaves": 15}, lgb.Dataset(X, y), num_boost_round=40)
    test = rng.uniform(-0.2, 1.2, size=(5000, 6)).astype(np.float32)
    test[rng.random(test.shape) < 0.05] = np.nan
    return booster, booster.model_to_string().encode("utf-8"), test


def _native(booster, X):
    return booster.predict(X, num_threads=1).astype(np.float64)


@needs_lleaves
def test_compiled_equals_native_and_cache_miss_then_hit(cache, lightgbm_model, monkeypatch):
    booster, member, X = lightgbm_model
    monkeypatch.setenv(compiled.ENV_MODE, "always")
    lines = []
    first = compiled.LightGBMPredictor(booster, member, expected_rows=X.shape[0], log=lines.append)
    values = np.concatenate([first.predict(X[:2500], 2), first.predict(X[2500:], 2)])
    assert first.path == "compiled"
    assert np.max(np.abs(values - _native(booster, X))) <= 1e-6
    assert len(lines) == 1 and "compiled" in lines[0] and "compiled in" in lines[0]
    key = compiled.cache_key(member)
    assert os.path.isfile(cache / f"{key}.o")              # miss: built and stored
    if hasattr(os, "getuid"):
        assert stat.S_IMODE(os.stat(cache).st_mode) & 0o077 == 0

    compiled.clear_process_state()                         # a new process: the cache is hit
    monkeypatch.setenv(compiled.ENV_MODE, "auto")
    decision = compiled.decide(member, 10, 1e-6)
    assert decision.compile and decision.cached and "cached" in decision.reason
    again = compiled.LightGBMPredictor(booster, member, expected_rows=10, log=lines.append)
    assert np.max(np.abs(np.concatenate([again.predict(X[:2500], 1), again.predict(X[2500:], 1)])
                         - values)) <= 1e-12
    assert again.path == "compiled" and "loaded from the cache" in lines[-1]


def test_the_key_is_the_member_sha256_not_the_booster(lightgbm_model):
    if not HAS_LLEAVES:
        pytest.skip("cache_key needs llvmlite")
    _, member, _ = lightgbm_model
    assert compiled.cache_key(member) == compiled.cache_key(bytes(member))
    assert compiled.cache_key(member) != compiled.cache_key(member + b"\n")


@needs_lleaves
def test_decision_compiles_only_where_it_pays(cache, lightgbm_model):
    _, member, _ = lightgbm_model
    expected = compiled.expected_compile_s(member)
    assert compiled.count_nodes(member)[0] == 40 and expected > 0
    small = compiled.decide(member, 100, 5e-6)
    assert not small.compile and "<=" in small.reason
    rows = int(10 * expected / (5e-6 * (1 - 1 / compiled.EXPECTED_SPEEDUP)))
    assert compiled.decide(member, rows, 5e-6).compile


def test_off_and_missing_accelerator_fall_back_to_native_with_one_line(cache, lightgbm_model, monkeypatch):
    booster, member, X = lightgbm_model
    monkeypatch.setenv(compiled.ENV_MODE, "off")
    lines = []
    predictor = compiled.LightGBMPredictor(booster, member, expected_rows=10**9, log=lines.append)
    assert np.array_equal(predictor.predict(X, 1), _native(booster, X))
    assert predictor.path == "native" and lines == [f"LightGBM native prediction ({compiled.ENV_MODE}=off)"]

    monkeypatch.setenv(compiled.ENV_MODE, "always")
    monkeypatch.setattr(compiled, "available", lambda: (False, "ModuleNotFoundError: No module named 'lleaves'"))
    lines.clear()
    predictor = compiled.LightGBMPredictor(booster, member, expected_rows=10**9, log=lines.append)
    for _ in range(3):
        assert np.array_equal(predictor.predict(X, 1), _native(booster, X))
    assert predictor.path == "native" and len(lines) == 1 and "lleaves not available" in lines[0]
    assert not os.path.exists(cache)


@needs_lleaves
def test_build_failure_and_wrong_cached_object_fall_back(cache, lightgbm_model, monkeypatch):
    booster, member, X = lightgbm_model
    monkeypatch.setenv(compiled.ENV_MODE, "always")

    def broken(_member, **_):
        raise RuntimeError("LLVM ERROR: out of registers")

    monkeypatch.setattr(compiled, "load_or_compile", broken)
    lines = []
    predictor = compiled.LightGBMPredictor(booster, member, log=lines.append)
    assert np.array_equal(predictor.predict(X, 1), _native(booster, X))
    assert predictor.path == "native" and len(lines) == 1
    assert "unavailable, using native" in lines[0] and "out of registers" in lines[0]
    # the failure is remembered in this process: no second attempt, no second line
    second = compiled.LightGBMPredictor(booster, member, log=lines.append)
    second.predict(X, 1)
    assert second.path == "native" and "failed earlier" in second.reason

    # a cached object that does not give the native numbers is dropped, native runs
    monkeypatch.undo()
    monkeypatch.setenv("SMDOWNSCALE_CACHE_DIR", str(cache.parent))
    monkeypatch.setenv(compiled.ENV_MODE, "always")
    monkeypatch.setenv(compiled.ENV_ACCELERATOR, "lleaves")
    compiled.clear_process_state()

    class Wrong:
        def predict(self, data, n_jobs=1):
            return np.zeros(data.shape[0])

    monkeypatch.setattr(compiled, "load_or_compile",
                        lambda _m, **_: (Wrong(), {"cached": True, "compile_s": 0.0, "key": "k"}))
    lines.clear()
    predictor = compiled.LightGBMPredictor(booster, member, log=lines.append)
    assert np.array_equal(predictor.predict(X, 1), _native(booster, X))
    assert predictor.path == "native" and "differs from native" in lines[0]


@needs_lleaves
def test_builds_run_in_separate_processes_side_by_side_and_equal_in_process(cache, lightgbm_model, monkeypatch):
    import lightgbm as lgb

    booster, member, X = lightgbm_model
    monkeypatch.setenv(compiled.ENV_MODE, "always")
    # a second member (other trees): two builds pending at once, as a job's boosters start them
    other = lgb.train({"objective": "regression", "verbosity": -1, "num_threads": 1, "seed": 2,
                       "num_leaves": 7}, lgb.Dataset(np.nan_to_num(X[:4000]), np.nan_to_num(X[:4000, 0])),
                      num_boost_round=30)
    other_member = other.model_to_string().encode("utf-8")
    lines = []
    first = compiled.LightGBMPredictor(booster, member, log=lines.append, label="a")
    second = compiled.LightGBMPredictor(other, other_member, log=lines.append, label="b")
    first.predict(X[:100], 1)
    second.predict(X[:100], 1)
    assert first._pending is not None and second._pending is not None   # both building now
    assert lines == []                                                     # said when resolved
    values = first.predict(X, 1), second.predict(X, 1)
    assert first.path == second.path == "compiled"
    assert len(lines) == 2 and all("in a separate process" in line for line in lines)
    assert np.max(np.abs(values[0] - _native(booster, X))) <= 1e-6
    assert np.max(np.abs(values[1] - _native(other, X))) <= 1e-6

    # the same object built in this process (no interpreter to start) predicts the same numbers
    compiled.clear_process_state()
    for key in (compiled.cache_key(member),):
        os.remove(cache / f"{key}.o")
    monkeypatch.setenv("SMDOWNSCALE_COMPILE_IN_PROCESS", "1")
    lines.clear()
    again = compiled.LightGBMPredictor(booster, member, log=lines.append)
    again.predict(X[:100], 1)
    assert np.array_equal(again.predict(X, 1), values[0])
    assert again.path == "compiled" and "compiled in" in lines[0] and "separate process" not in lines[0]


@needs_lleaves
def test_two_threads_asking_for_one_member_build_it_once(cache, lightgbm_model, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    booster, member, X = lightgbm_model
    builds = []
    real_build = compiled.build_object

    def counting_build(*args):   # the real build, counted
        builds.append(args[2])
        return real_build(*args)

    monkeypatch.setattr(compiled, "build_object", counting_build)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: compiled.load_or_compile(member), range(2)))
    assert len(builds) == 1
    assert results[0][0] is results[1][0]
    assert sorted(info["cached"] for _, info in results) == [False, True]
    assert np.max(np.abs(results[0][0].predict(np.nan_to_num(X).astype(np.float64), n_jobs=1)
                         - _native(booster, np.nan_to_num(X)))) <= 1e-6


@needs_lleaves
def test_a_build_process_that_crashes_leaves_native_and_one_line(cache, lightgbm_model, monkeypatch, tmp_path):
    booster, member, X = lightgbm_model
    crashing = tmp_path / "python"
    crashing.write_text("#!/bin/sh\necho 'LLVM ERROR: out of memory' >&2\nkill -SEGV $$\n")
    crashing.chmod(0o755)
    monkeypatch.setenv("SMDOWNSCALE_PYTHON", str(crashing))
    monkeypatch.setenv(compiled.ENV_MODE, "always")
    lines = []
    predictor = compiled.LightGBMPredictor(booster, member, log=lines.append)
    for _ in range(3):
        assert np.array_equal(predictor.predict(X, 1), _native(booster, X))
    assert predictor.path == "native" and len(lines) == 1
    assert "unavailable, using native" in lines[0] and "SIGSEGV" in lines[0] and "out of memory" in lines[0]
    assert not os.path.exists(cache) or os.listdir(cache) == []    # nothing half-built is cached


@needs_lleaves
def test_a_cache_folder_writable_by_others_is_not_used(cache, lightgbm_model, monkeypatch):
    if not hasattr(os, "getuid"):
        pytest.skip("POSIX permissions")
    booster, member, X = lightgbm_model
    os.makedirs(cache)
    os.chmod(cache, 0o777)
    monkeypatch.setenv(compiled.ENV_MODE, "always")
    predictor = compiled.LightGBMPredictor(booster, member)
    assert np.max(np.abs(predictor.predict(X, 1) - _native(booster, X))) <= 1e-6
    assert predictor.path == "compiled" and os.listdir(cache) == []   # compiled, not cached


# -- XGBoost through lleaves: translated to a LightGBM text model, bit-identical -----------------

def _threshold_rows(booster, base):
    """Rows of ``base`` with one feature set to a split threshold of ``booster``, and to the
    float32 values just below and above it (XGBoost goes left when x < threshold)."""
    import json

    rows = []
    for tree in json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]:
        for node, (left, feature, condition) in enumerate(zip(tree["left_children"], tree["split_indices"],
                                                              tree["split_conditions"])):
            if left == -1:
                continue
            t = np.float32(condition)
            for value in (t, np.nextafter(t, np.float32(-np.inf)), np.nextafter(t, np.float32(np.inf))):
                row = base[len(rows) % base.shape[0]].copy()
                row[feature] = value
                rows.append(row)
    return np.asarray(rows, dtype=np.float32)


@pytest.fixture(scope="module")
def xgboost_model():
    """An XGBoost booster trained the plugin's way (default parameters, binned once) on encoded
    features with one-hot columns, its native member, and test rows incl. every threshold edge."""
    from smdownscale.core.stack import (_Binned, _split_params, _train_booster, booster_to_bytes, encode,
                                        make_encoder)

    rng = np.random.default_rng(5)
    raw = rng.uniform(0, 1, size=(4000, 4)).astype(np.float32)
    raw[:, 1] = rng.normal(0.3, 0.2, size=raw.shape[0])
    raw[:, 3] = rng.integers(1, 5, size=raw.shape[0])            # a categorical predictor (lc)
    encoder = make_encoder(["a", "b", "c", "lc"], {"lc": [1, 2, 3, 4]})
    X = encode(raw, encoder)
    y = (0.2 + 0.3 * X[:, 0] + 0.1 * np.sin(6 * X[:, 1]) + 0.02 * X[:, 4] - 0.03 * X[:, 6]
         + 0.01 * rng.normal(size=X.shape[0])).astype(np.float32)
    native, rounds = _split_params("xgboost", {"n_estimators": 80}, 1, 1)
    booster = _train_booster("xgboost", _Binned("xgboost", X, y, native).subset(None), native, rounds)
    member = booster_to_bytes("xgboost", booster)
    test = encode(np.column_stack([rng.uniform(-0.2, 1.2, size=(3000, 3)),
                                   rng.integers(0, 6, size=3000)]).astype(np.float32), encoder)
    test = np.concatenate([test, _threshold_rows(booster, test)])
    return booster, member, test


def _xgb_native(booster, X, threads=1):
    from smdownscale.core.stack import _predict_booster

    return _predict_booster("xgboost", booster, X, threads)


def test_xgboost_text_is_numerical_and_carries_base_score(xgboost_model):
    import json

    booster, member, _ = xgboost_model
    text = compiled.xgboost_text(member).decode("utf-8")
    base = json.loads(booster.save_raw("json"))["learner"]["learner_model_param"]["base_score"]
    trees = text.split("\nTree=")
    assert len(trees) - 1 == 81 and compiled.count_nodes(text.encode())[0] == 81   # base_score + 80 trees
    assert "leaf_value=" + repr(float(np.float32(float(base)))) in trees[1]
    assert "objective=regression\n" in text and "num_cat=1" not in text
    decision_types = {int(v) for line in text.splitlines() if line.startswith("decision_type=")
                      for v in line.split("=")[1].split()}
    assert decision_types <= {8, 10}                    # numerical, NaN missing, default right/left


def test_float32_rounding_of_decimal_text_is_exact():
    one = np.float32(1).view(np.uint32)
    # 1 + 2^-24 is the midpoint of 1 and the next float32: even wins; a hair above goes up
    got = compiled._float32(["1.000000059604644775390625", "1.0000000596046447753906250001",
                             "1.000000178813934326171875", "3.0433124E-1", 113]).view(np.uint32)
    assert list(got[:3] - one) == [0, 1, 2]
    assert got[3] == np.float32(0.30433124).view(np.uint32) and got[4] == np.float32(113).view(np.uint32)


@needs_lleaves
def test_xgboost_compiled_is_bit_identical_incl_threshold_edges_and_cached(cache, xgboost_model, monkeypatch):
    booster, member, X = xgboost_model
    monkeypatch.setenv(compiled.ENV_MODE, "always")
    lines = []
    first = compiled.XGBoostPredictor(booster, member, expected_rows=X.shape[0], log=lines.append)
    values = np.concatenate([first.predict(X[:2500], 2), first.predict(X[2500:], 2)])
    assert first.path == "compiled"
    native = _xgb_native(booster, X)
    assert np.array_equal(values, native)                      # the same float32 sums, not only close
    with_nan = X[:500].copy()
    with_nan[np.random.default_rng(1).random(with_nan.shape) < 0.2] = np.nan   # default directions
    assert np.array_equal(first.predict(with_nan, 1), _xgb_native(booster, with_nan))
    assert len(lines) == 1 and lines[0].startswith("XGBoost compiled prediction") and "compiled in" in lines[0]
    key = compiled.cache_key(member, "xgboost")
    assert key != compiled.cache_key(member) and key == compiled.cache_key(bytes(member), "xgboost")
    assert os.path.isfile(cache / f"{key}.o")                 # miss: built and stored

    compiled.clear_process_state()                            # a new process: the cache is hit
    monkeypatch.setenv(compiled.ENV_MODE, "auto")
    assert compiled.decide(member, 10, 1e-6, learner="xgboost").cached
    again = compiled.XGBoostPredictor(booster, member, expected_rows=10, log=lines.append)
    assert np.array_equal(np.concatenate([again.predict(X[:2500], 1), again.predict(X[2500:], 1)]), native)
    assert again.path == "compiled" and "loaded from the cache" in lines[-1]


@needs_lleaves
def test_xgboost_decision_uses_its_own_speedup(cache, xgboost_model):
    _, member, _ = xgboost_model
    expected = compiled.expected_compile_s(member, "xgboost")
    assert expected == compiled.count_nodes(compiled.xgboost_text(member))[1] * compiled.COMPILE_S_PER_NODE
    saving = 5e-6 * (1 - 1 / compiled.XGBOOST_EXPECTED_SPEEDUP)
    assert not compiled.decide(member, int(0.9 * expected / saving), 5e-6, learner="xgboost").compile
    assert compiled.decide(member, int(1.1 * expected / saving), 5e-6, learner="xgboost").compile


@needs_lleaves
def test_xgboost_build_failure_off_and_unsupported_lleaves_stay_native(cache, xgboost_model, monkeypatch):
    booster, member, X = xgboost_model
    native = _xgb_native(booster, X)
    monkeypatch.setenv(compiled.ENV_MODE, "off")
    lines = []
    predictor = compiled.XGBoostPredictor(booster, member, expected_rows=10**9, log=lines.append)
    assert np.array_equal(predictor.predict(X, 1), native)
    assert lines == [f"XGBoost native prediction ({compiled.ENV_MODE}=off)"]

    monkeypatch.setenv(compiled.ENV_MODE, "always")
    lines.clear()
    with monkeypatch.context() as patch:
        def broken(_member, **_):
            raise RuntimeError("LLVM ERROR: out of registers")

        patch.setattr(compiled, "load_or_compile", broken)
        for _ in range(2):
            predictor = compiled.XGBoostPredictor(booster, member, log=lines.append)
            assert np.array_equal(predictor.predict(X, 1), native) and predictor.path == "native"
    # one line for the failure; the second predictor says it stays native because of it
    assert len(lines) == 2 and lines[0].startswith("XGBoost compiled prediction unavailable, using native")
    assert "out of registers" in lines[0] and "failed earlier" in lines[1] and "failed earlier" in predictor.reason

    compiled.clear_process_state()
    lines.clear()
    monkeypatch.setattr(compiled, "IN_ORDER_LLEAVES", "0.0.0")
    predictor = compiled.XGBoostPredictor(booster, member, log=lines.append)
    assert np.array_equal(predictor.predict(X, 1), native) and predictor.path == "native"
    assert len(lines) == 1 and "in-order summation is written for lleaves 0.0.0" in lines[0]
    assert not os.path.exists(cache)


@needs_lleaves
@pytest.mark.parametrize("case", ["categorical", "dart", "absoluteerror"])
def test_xgboost_that_the_translation_does_not_cover_stays_native(cache, monkeypatch, case):
    import xgboost as xgb

    from smdownscale.core.stack import booster_to_bytes

    rng = np.random.default_rng(2)
    X = rng.uniform(0, 1, size=(600, 3)).astype(np.float32)
    X[:, 2] = rng.integers(0, 4, size=X.shape[0])
    y = (X[:, 0] + 0.1 * X[:, 2]).astype(np.float32)
    params = {"objective": "reg:squarederror", "max_depth": 3, "nthread": 1, "tree_method": "hist"}
    if case == "categorical":
        data = xgb.DMatrix(X, y, feature_types=["q", "q", "c"], enable_categorical=True)
    else:
        data = xgb.DMatrix(X, y)
        params.update({"dart": {"booster": "dart", "rate_drop": 0.1},
                       "absoluteerror": {"objective": "reg:absoluteerror"}}[case])
    booster = xgb.train(params, data, num_boost_round=10)
    member = booster_to_bytes("xgboost", booster)
    with pytest.raises(compiled.NotCompilable):
        compiled.xgboost_text(member)
    monkeypatch.setenv(compiled.ENV_MODE, "always")
    lines = []
    predictor = compiled.XGBoostPredictor(booster, member, log=lines.append)
    predictor.predict(X, 1)
    assert predictor.path == "native" and len(lines) == 1 and "not compilable" in lines[0]


# -- preprocess: each input read once for many dates, copied when it lies on the fine grid -----

def _series(path, values, transform, crs="EPSG:32631", nodata=-9999.0, dtype="float32"):
    import rasterio

    profile = dict(driver="GTiff", width=values.shape[2], height=values.shape[1], count=values.shape[0],
                   dtype=dtype, crs=crs, transform=transform, nodata=nodata, tiled=True,
                   blockxsize=64, blockysize=64, compress="deflate", interleave="pixel")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values.astype(dtype))
    return path


@pytest.mark.parametrize("case", ["on_grid", "on_grid_offset_int16", "coarser", "reprojected"])
def test_series_warper_equals_per_band_warp_bit_for_bit(tmp_path, case):
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin

    from smdownscale.core.fastread import SeriesWarper
    from smdownscale.core.grids import Grid
    from smdownscale.core.preprocess import _warp

    rng = np.random.default_rng(7)
    grid = Grid("EPSG:32631", from_origin(500000, 5000000, 1000, 1000), 70, 50)
    dtype, nodata, resampling = "float32", -9999.0, Resampling.average
    if case == "on_grid":
        transform, shape = grid.transform, (50, 70)
    elif case == "on_grid_offset_int16":
        transform, shape, dtype, nodata = from_origin(497000, 5004000, 1000, 1000), (60, 80), "int16", -1
        resampling = Resampling.mode
    elif case == "coarser":
        transform, shape = from_origin(499000, 5001000, 2500, 2500), (24, 32)
    else:
        transform, shape = from_origin(499000, 5001000, 500, 500), (110, 150)
    values = rng.uniform(0, 300, size=(9,) + shape)
    values[rng.random(values.shape) < 0.1] = nodata
    crs = "EPSG:32631" if case != "reprojected" else "EPSG:32632"
    if case == "reprojected":
        from rasterio.warp import transform as transform_xy

        xs, ys = transform_xy("EPSG:32631", "EPSG:32632", [499000], [5001000])
        transform = from_origin(xs[0], ys[0], 500, 500)
    path = _series(str(tmp_path / "series.tif"), values, transform, crs=crs, nodata=nodata, dtype=dtype)
    with rasterio.open(path) as src:
        order = [3, 1, 2, 4, 5, 6, 7, 8, 9]
        warper = SeriesWarper(src, src.nodata, grid, resampling, order, budget_bytes=400_000)
        assert warper.copies == case.startswith("on_grid")
        for band in order:
            expected = _warp(rasterio.band(src, band), src.nodata, grid, resampling)
            got = warper.get(band)
            assert got.dtype == np.float32 and got.shape == grid.shape
            assert np.array_equal(got.view(np.uint32), expected.view(np.uint32)), (case, band)
        assert warper.reads < len(order)


# -- early stopping: each fold stops on its held-out fold, the refit uses the mean best ----------

@pytest.mark.parametrize("learner", ["xgboost", "lightgbm", "catboost"])
def test_fold_stops_on_its_held_out_fold(learner):
    from smdownscale.core import early_stopping as es
    from smdownscale.core.stack import _Binned, _predict_booster, _split_params

    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, size=(1500, 4)).astype(np.float32)
    y = (0.2 + 0.3 * X[:, 0] + 0.02 * rng.normal(size=X.shape[0])).astype(np.float32)
    native, rounds = _split_params(learner, {"n_estimators": 400, "learning_rate": 0.3}, 1, 1)
    binned = _Binned(learner, X, y, native)
    train, test = np.arange(0, 1200), np.arange(1200, 1500)
    data = binned.subset(train)
    booster, best = es.train_stopping(learner, data, es.validation_set(binned, data, test), native, rounds, 10)
    assert 1 <= best < rounds                      # stopped well before 400 rounds
    assert es.n_trees(learner, booster) == best    # the booster keeps only the best trees
    prediction = _predict_booster(learner, booster, X[test], 1)
    assert np.sqrt(np.mean((prediction - y[test]) ** 2)) < 0.05


def test_refit_rounds_is_the_mean_best_iteration():
    from smdownscale.core import early_stopping as es

    assert es.refit_rounds([10, 11, 13, 20, 21]) == 15
    assert es.refit_rounds([1, 1]) == 1 and es.refit_rounds([0]) == 1
    assert es.check_early_stopping_rounds(0) == 0
    with pytest.raises(ValueError):
        es.check_early_stopping_rounds(-1)


# -- the stack: early stopping and compiled LightGBM in its predict path -------------------------

def _stack_data(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, size=(n, 4)).astype(np.float32)
    X[:, 3] = rng.integers(1, 4, size=n)
    y = (0.2 + 0.3 * X[:, 0] + 0.05 * X[:, 1] + 0.02 * X[:, 3] + 0.01 * rng.normal(size=n)).astype(np.float32)
    return X, y


def test_early_stopping_refit_uses_the_folds_mean_best_iteration():
    from smdownscale.core import early_stopping as es
    from smdownscale.core.stack import StackEnsemble

    X, y = _stack_data()
    params = {name: {"n_estimators": 300, "learning_rate": 0.3} for name in ("xgboost", "lightgbm", "catboost")}
    stack = StackEnsemble(params=params, n_folds=3, seed=1, n_threads=2, categorical=["x3"],
                          early_stopping_rounds=10).fit(X, y)
    for name, trees in stack.trees_.items():
        assert len(trees["folds"]) == 3 and all(1 <= t < 300 for t in trees["folds"]), (name, trees)
        assert trees["refit"] == es.refit_rounds(trees["folds"]), (name, trees)
        assert es.n_trees(name, stack.boosters_[name]) == trees["refit"]
    fixed = StackEnsemble(params=params, n_folds=3, seed=1, n_threads=2, categorical=["x3"]).fit(X, y)
    assert all(t == {"folds": [300] * 3, "refit": 300} for t in fixed.trees_.values())


@needs_lleaves
def test_stack_with_compiled_boosters_equals_native(cache, monkeypatch):
    from smdownscale.core.stack import StackEnsemble

    X, y = _stack_data(seed=2)
    params = {name: {"n_estimators": 60} for name in ("xgboost", "lightgbm", "catboost")}
    fitted = StackEnsemble(params=params, n_folds=3, seed=1, n_threads=2, categorical=["x3"]).fit(X, y)
    loaded = StackEnsemble.from_members(fitted.to_members(), n_threads=2)
    # the rows at every XGBoost split threshold (and one float32 step either side), raw features
    edges = _threshold_rows(loaded.boosters_["xgboost"], loaded.transform(X[:50]))
    keep = np.isin(np.arange(edges.shape[1]), [0, 1, 2])    # continuous columns only: raw == encoded
    X = np.concatenate([X, np.column_stack([edges[:, keep], np.full(edges.shape[0], 2.0, np.float32)])])
    native = loaded.predict(X)
    native_xgb = loaded.base_predict(X)[:, loaded.base_model_names_.index("xgboost")]
    monkeypatch.setenv(compiled.ENV_MODE, "always")
    for accelerator in ("lleaves", "quickscorer"):
        monkeypatch.setenv(compiled.ENV_ACCELERATOR, accelerator)
        lines = []
        loaded.accelerate(X.shape[0], log=lines.append, label="p0")
        fast = np.concatenate([loaded.predict(X[:700]), loaded.predict(X[700:])])
        assert {name: p.path for name, p in loaded.accelerated_.items()} == {"lightgbm": "compiled",
                                                                              "xgboost": "compiled"}
        assert np.max(np.abs(fast - native)) <= 1e-6
        assert np.array_equal(loaded.base_predict(X)[:, loaded.base_model_names_.index("xgboost")], native_xgb)
        assert len(lines) == 2 and all(line.endswith("[p0]") for line in lines)
        assert any(line.startswith("XGBoost compiled prediction") for line in lines)
        if accelerator == "quickscorer":
            assert np.array_equal(fast, native) and all("QuickScorer kernel" in line for line in lines)


def _all_bits(folder):
    import glob

    import rasterio

    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*", "*.tif"))):
        with rasterio.open(path) as src:
            out[os.path.relpath(path, folder)] = src.read()
    return out


class _PerBandWarper:
    """Today's path: one GDAL warp of each band on its own, straight from the file."""

    def __init__(self, src, nodata, grid, resampling, order, **_):
        self.src, self.nodata, self.grid, self.resampling = src, nodata, grid, resampling

    def get(self, band):
        import rasterio

        from smdownscale.core.preprocess import _warp

        return _warp(rasterio.band(self.src, band), self.nodata, self.grid, self.resampling)


def test_preprocess_fast_path_gives_the_same_bits(tmp_path, monkeypatch):
    from smdownscale.core import preprocess as pre
    from smdownscale.core.fastread import aligned_window
    from smdownscale.demo.scenario import make_scenario

    import rasterio

    scenario = make_scenario(str(tmp_path / "scenario"), size="small")
    kwargs = dict(categorical=("lc",), mask_classes={"lc": [0]}, fine_resolution=1000.0)
    pre.preprocess(scenario["predictors"], scenario["soil_moisture"], str(tmp_path / "fast"), **kwargs)
    fast = pre.Dataset.open(str(tmp_path / "fast"))
    copied = 0
    for path in scenario["predictors"]:
        with rasterio.open(path) as src:
            copied += aligned_window(src, fast.fine_grid) is not None
    assert copied, "the scenario should have inputs on the fine grid (copy path)"
    assert copied < len(scenario["predictors"]), "and inputs that need a warp"
    # today's algorithm: date after date, one warp per band and per date
    monkeypatch.setattr(pre, "SeriesWarper", _PerBandWarper)
    monkeypatch.setattr(pre, "_dates_per_chunk", lambda grid, n_dates: 1)
    pre.preprocess(scenario["predictors"], scenario["soil_moisture"], str(tmp_path / "today"), **kwargs)
    a, b = _all_bits(str(tmp_path / "fast")), _all_bits(str(tmp_path / "today"))
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        assert np.array_equal(a[name].view(np.uint32), b[name].view(np.uint32)), name


@needs_lleaves
def test_predict_compiled_equals_native_and_logs_the_path(tmp_path, cache, monkeypatch):
    import rasterio

    from smdownscale.core.common import Progress
    from smdownscale.core.predict import predict
    from smdownscale.core.preprocess import preprocess
    from smdownscale.core.stack import learner_params
    from smdownscale.core.train import TrainingSettings, train_model
    from smdownscale.demo.scenario import make_scenario

    scenario = make_scenario(str(tmp_path / "scenario"), size="small")
    dataset = str(tmp_path / "dataset")
    preprocess(scenario["predictors"], scenario["soil_moisture"], dataset, categorical=("lc",),
               mask_classes={"lc": [0]}, fine_resolution=1000.0)
    model = str(tmp_path / "model.smdmodel.zip")
    report = train_model(dataset, model, settings=TrainingSettings(
        folds=3, params=learner_params(("xgboost", "lightgbm", "catboost"), n_estimators=40),
        early_stopping_rounds=5))
    assert all(isinstance(row.get("trees"), int) and row["trees"] >= 1 for row in report.rows())
    outputs, logs = {}, {}
    for mode, accelerator in (("off", "auto"), ("always", "lleaves"), ("always", "quickscorer")):
        monkeypatch.setenv(compiled.ENV_MODE, mode)
        monkeypatch.setenv(compiled.ENV_ACCELERATOR, accelerator)
        compiled.clear_process_state()
        lines = []
        progress = Progress()
        monkeypatch.setattr(progress, "info", lines.append, raising=False)
        run = mode if mode == "off" else accelerator
        predict(dataset, model, str(tmp_path / f"{run}.tif"), progress=progress)
        with rasterio.open(str(tmp_path / f"{run}.tif")) as src:
            outputs[run] = src.read()
        logs[run] = [line for line in lines if "LightGBM" in line or "XGBoost" in line]
    assert logs["off"] and all("native" in line for line in logs["off"])
    for run, tool in (("lleaves", "(lleaves;"), ("quickscorer", "(QuickScorer kernel;")):
        assert np.array_equal(np.isnan(outputs["off"]), np.isnan(outputs[run]))
        assert np.nanmax(np.abs(outputs["off"] - outputs[run])) <= 1e-6
        assert logs[run] and all("compiled prediction " + tool in line for line in logs[run]), logs[run]
        for learner in ("LightGBM", "XGBoost"):
            assert sum(line.startswith(learner) for line in logs[run]) == len(logs[run]) // 2
    # the kernel gives the native boosters' own numbers, so the maps are the same to the bit
    assert np.array_equal(outputs["off"].view(np.uint32), outputs["quickscorer"].view(np.uint32))
