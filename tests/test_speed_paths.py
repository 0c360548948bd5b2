"""Issue 12 speed paths: compiled LightGBM (lleaves) == native, its cache and fallback;
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

    def broken(_member):
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
    compiled.clear_process_state()

    class Wrong:
        def predict(self, data, n_jobs=1):
            return np.zeros(data.shape[0])

    monkeypatch.setattr(compiled, "load_or_compile",
                        lambda _m: (Wrong(), {"cached": True, "compile_s": 0.0, "key": "k"}))
    lines.clear()
    predictor = compiled.LightGBMPredictor(booster, member, log=lines.append)
    assert np.array_equal(predictor.predict(X, 1), _native(booster, X))
    assert predictor.path == "native" and "differs from native" in lines[0]


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
