"""Paper-scale benchmark: training and prediction against a naive scikit-learn baseline.

Runs each phase in its own subprocess so that every phase's peak RSS is its own, and prints
one JSON document. Usage: ``make bench`` (or ``bench/run_bench.py [--work DIR] [--phase P]``).

Phases
------
data         synthetic scenario (500 x 450 km at 1 km, 214 daily dates, 5 partitions) + preprocess
train        core.train.train_model, per partition, no global model
train_es     the same with EARLY_STOPPING_ROUNDS (env SMD_BENCH_ES, default 20): time, trees, test RMSE
naive_train  sklearn StackingRegressor(XGB, LGBM, CatBoost; LinearRegression(positive=True), cv=5)
             per partition on the same samples and the same 7:3 split, the boosters with their
             library defaults (the OpenMP wait policy included); then whole-array prediction of
             PREDICT_DATES dates held in memory at once
predict      core.predict.predict over all 214 dates (block-wise, end to end incl. I/O)
raw          the same three boosters of the trained model called directly on the same pixels
             (PREDICT_DATES dates, features already in memory): the boosters' own throughput,
             each learner and the stack, native, through the QuickScorer kernel (its one
             compilation per process reported apart) and compiled by lleaves (compile time from
             a cold cache reported apart, and the stack figure including it)
predict_compiled  predict with SMDOWNSCALE_COMPILED=auto (SMD_BENCH_COMPILED), cold cache: the
             kernel where it takes the model, else lleaves (SMDOWNSCALE_ACCELERATOR picks one)
prep_ref     preprocess reference: each input raster warped once with GDAL (all its bands in one
             gdal.Warp) onto the fine grid; and reading the inputs band by band (today) against
             core.fastread.SeriesWarper (every date of an input per read), on the inputs as
             written (INTERLEAVE=BAND) and on INTERLEAVE=PIXEL copies of the multi-band inputs
             (PIXEL_BANDS dates of PIXEL_PER_BAND_INPUTS, both readers on the same bands)
big          one date of a 10,000 x 10,000 fine grid, block-wise; peak RSS
dask         scale-out (core.cluster) on its own demo-size scenario (150 x 120 km, 61 dates,
             default 300 trees): predict in this process, on a LocalCluster of 1 and of 2 worker
             processes (wall time incl. cluster start, and throughput), the same for train and
             preprocess, and the scheduling overhead per task (no-op tasks through run_tasks)

Compiled prediction (``SMDOWNSCALE_COMPILED``) is timed from a cold per-user cache: every phase
that compiles gets a fresh ``SMDOWNSCALE_CACHE_DIR`` inside the work folder, and every phase is a
new process (the kernel is compiled in each).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PREDICT_DATES = 10      # dates used for the in-memory raw/naive prediction comparisons
BIG_SIZE = 10_000


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def paths(work):
    return {
        "scenario": os.path.join(work, "scenario"),
        "dataset": os.path.join(work, "dataset"),
        "model": os.path.join(work, "model.smdmodel.zip"),
        "prediction": os.path.join(work, "prediction.tif"),
        "big_dataset": os.path.join(work, "big_dataset"),
        "big_prediction": os.path.join(work, "big_prediction.tif"),
    }


def phase_data(work):
    from smdownscale.core.preprocess import preprocess
    from smdownscale.demo.scenario import make_scenario

    p = paths(work)
    started = time.time()
    scenario = make_scenario(p["scenario"], size=os.environ.get("SMD_BENCH_SIZE", "bench"))
    generated = time.time() - started
    started = time.time()
    preprocess(scenario["predictors"], scenario["soil_moisture"], p["dataset"],
               categorical=("lc",), mask_classes={"lc": [0]}, fine_resolution=1000.0)
    return {"generate_s": round(generated, 1), "preprocess_s": round(time.time() - started, 1)}


def _samples_and_split(work):
    """The samples and the 7:3 split exactly as train_model makes them."""
    from smdownscale.core.dataset import Dataset
    from smdownscale.core.partitions import Partitions
    from smdownscale.core.train import build_samples, split_train_test

    p = paths(work)
    dataset = Dataset.open(p["dataset"])
    partitions = Partitions.from_file(os.path.join(p["scenario"], "partitions.gpkg"), "name")
    samples = build_samples(dataset, partitions)
    return dataset, partitions, samples, split_train_test


def phase_train(work, early_stopping_rounds=0):
    from smdownscale.core.train import train_model

    p = paths(work)
    from smdownscale.core.partitions import Partitions

    partitions = Partitions.from_file(os.path.join(p["scenario"], "partitions.gpkg"), "name")
    model_path = p["model"] if not early_stopping_rounds else p["model"].replace(".smdmodel", "_es.smdmodel")
    started = time.time()
    report = train_model(p["dataset"], model_path, partitions=partitions, train_global=False, seed=42,
                         early_stopping_rounds=early_stopping_rounds)
    wall = time.time() - started
    rows = [row for row in report.rows() if row["model"] == "Stacking"]
    n_test = sum(row["n_test"] for row in rows)
    n_train = sum(row["n_train"] for row in rows)
    # pooled test RMSE over partitions (sample-weighted mean of squared errors)
    rmse = float(np.sqrt(sum(row["rmse_test"] ** 2 * row["n_test"] for row in rows) / n_test))
    trees = {}
    for row in report.rows():
        trees.setdefault(row["model"], []).append(row.get("trees"))
    suffix = "_es" if early_stopping_rounds else ""
    return {f"train{suffix}_s": round(wall, 1), "samples": n_train + n_test,
            f"test_rmse_stack{suffix}": round(rmse, 7), "early_stopping_rounds": early_stopping_rounds,
            "trees_per_partition": trees, "per_partition": rows, "peak_rss_mb": round(peak_rss_mb())}


def phase_train_es(work):
    """train with EARLY_STOPPING_ROUNDS (SMD_BENCH_ES, default 20) into a model of its own."""
    return phase_train(work, early_stopping_rounds=int(os.environ.get("SMD_BENCH_ES", "20")))


def _naive_stack(seed, n_threads):
    from catboost import CatBoostRegressor
    from lightgbm import LGBMRegressor
    from sklearn.ensemble import StackingRegressor
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold
    from xgboost import XGBRegressor

    from smdownscale.core.stack import DEFAULT_PARAMS

    xgb = dict(DEFAULT_PARAMS["xgboost"])
    lgb = dict(DEFAULT_PARAMS["lightgbm"])
    cat = dict(DEFAULT_PARAMS["catboost"])
    return StackingRegressor(
        estimators=[
            ("xgboost", XGBRegressor(tree_method="hist", random_state=seed, n_jobs=n_threads, **xgb)),
            ("lightgbm", LGBMRegressor(random_state=seed, n_jobs=n_threads, verbosity=-1, **lgb)),
            ("catboost", CatBoostRegressor(random_seed=seed, thread_count=n_threads, verbose=False,
                                           allow_writing_files=False, **cat)),
        ],
        final_estimator=LinearRegression(positive=True),
        cv=KFold(5, shuffle=True, random_state=seed))


def phase_naive(work):
    # The baseline runs with the boosters' library defaults, as a hand-written script does: its
    # boosters are loaded before smdownscale, which sets OMP_WAIT_POLICY=PASSIVE for its own
    # runs, and libgomp reads the variable when it loads. Loaded after it, the baseline's
    # 2-thread boosters waited passively and trained 2.1x slower on a 2-core machine (207.4 s
    # against 99.5 s), which made every earlier training ratio of this bench too high.
    omp_wait_policy = os.environ.get("OMP_WAIT_POLICY", "library default")
    import catboost  # noqa: F401
    import lightgbm  # noqa: F401
    import xgboost  # noqa: F401

    from smdownscale.core.stack import encode

    dataset, partitions, samples, split_train_test = _samples_and_split(work)
    from smdownscale.core.modelfile import load_model

    model = load_model(paths(work)["model"])
    encoder = next(iter(model.models.values())).encoder_
    n_threads = os.cpu_count()
    started = time.time()
    fitted, squared_errors, n_test = {}, 0.0, 0
    for index, name in enumerate(partitions.names):
        mine = samples.partition == index
        X, y = encode(samples.X[mine], encoder).astype("float64"), samples.y[mine].astype("float64")
        train_index, test_index, _ = split_train_test(samples, np.flatnonzero(mine), test_fraction=0.3,
                                                      cv_strategy="random", spatial_block_cells=4, seed=42)
        train_rows = np.searchsorted(np.flatnonzero(mine), train_index)
        test_rows = np.searchsorted(np.flatnonzero(mine), test_index)
        stack = _naive_stack(42, n_threads).fit(X[train_rows], y[train_rows])
        squared_errors += float(np.sum((stack.predict(X[test_rows]) - y[test_rows]) ** 2))
        n_test += test_rows.size
        fitted[index] = stack
    train_wall = time.time() - started
    if os.environ.get("SMD_BENCH_NAIVE_TRAIN_ONLY") == "1":   # paired training comparisons
        return {"train_s": round(train_wall, 1), "test_rmse_stack": round(float(np.sqrt(squared_errors / n_test)), 7),
                "omp_wait_policy": omp_wait_policy}

    # whole arrays in memory: every pixel of PREDICT_DATES dates at once, float64
    from smdownscale.core.partitions import partition_index_on_grid

    pixel_partition = partition_index_on_grid(partitions, dataset.fine_grid, mode="centre").ravel()
    started = time.time()
    features = np.concatenate([dataset.fine_features(d, None) for d in range(PREDICT_DATES)])
    which = np.tile(pixel_partition, PREDICT_DATES)
    encoded = encode(features, encoder).astype("float64")
    prediction = np.full(features.shape[0], np.nan)
    for index, stack in fitted.items():
        rows = which == index
        prediction[rows] = stack.predict(encoded[rows])
    predict_wall = time.time() - started
    return {"train_s": round(train_wall, 1), "test_rmse_stack": round(float(np.sqrt(squared_errors / n_test)), 7),
            "predict_pixels": int(features.shape[0]), "predict_s": round(predict_wall, 2),
            "predict_pixels_per_s": round(features.shape[0] / predict_wall),
            "peak_rss_mb": round(peak_rss_mb()), "omp_wait_policy": omp_wait_policy}


def phase_predict(work, compiled_mode="off"):
    """core.predict.predict end to end; ``compiled_mode`` = SMDOWNSCALE_COMPILED (cold cache)."""
    os.environ["SMDOWNSCALE_COMPILED"] = compiled_mode
    if compiled_mode != "off":
        os.environ["SMDOWNSCALE_CACHE_DIR"] = tempfile.mkdtemp(prefix="cold-cache-", dir=work)
    from smdownscale.core.predict import predict

    p = paths(work)
    output = p["prediction"] if compiled_mode == "off" else p["prediction"].replace(".tif", "_compiled.tif")
    from smdownscale.core.common import Progress

    lines = []
    progress = Progress()
    progress.info = lambda message: lines.append(message) if ("LightGBM" in message or "XGBoost" in message) else None
    started = time.time()
    info = predict(p["dataset"], p["model"], output, progress=progress)
    wall = time.time() - started
    from smdownscale.core.dataset import Dataset

    dataset = Dataset.open(p["dataset"])
    pixels = dataset.fine_grid.width * dataset.fine_grid.height * len(dataset.dates)
    result = {"predict_s": round(wall, 1), "grid_pixels": pixels, "pixels_per_s": round(pixels / wall),
              "valid_pixels_predicted": info["pixels_predicted"],
              "valid_pixels_per_s": round(info["pixels_predicted"] / wall),
              "peak_rss_mb": round(peak_rss_mb()), "compiled_mode": compiled_mode,
              "lightgbm_paths": lines}
    if compiled_mode != "off" and os.path.exists(p["prediction"]):
        import rasterio

        worst = 0.0
        with rasterio.open(p["prediction"]) as a, rasterio.open(output) as b:
            for band in range(1, a.count + 1):
                x, y = a.read(band), b.read(band)
                if np.isfinite(x).any():
                    worst = max(worst, float(np.nanmax(np.abs(x - y))))
        result["max_abs_diff_vs_native_m3m3"] = worst
    return result


def phase_predict_compiled(work):
    """predict with SMDOWNSCALE_COMPILED = SMD_BENCH_COMPILED (default auto), cold cache."""
    return phase_predict(work, compiled_mode=os.environ.get("SMD_BENCH_COMPILED", "auto"))


def _raw_features(work):
    from smdownscale.core.dataset import Dataset
    from smdownscale.core.modelfile import load_model
    from smdownscale.core.partitions import Partitions, partition_index_on_grid
    from smdownscale.core.stack import encode

    p = paths(work)
    dataset = Dataset.open(p["dataset"])
    model = load_model(p["model"])
    partitions = Partitions.from_json(model.partitions_json)
    pixel_partition = partition_index_on_grid(partitions, dataset.fine_grid, mode="centre").ravel()
    features = np.concatenate([dataset.fine_features(d, None) for d in range(PREDICT_DATES)])
    which = np.tile(pixel_partition, PREDICT_DATES)
    valid = np.isfinite(features).all(axis=1) & (which >= 0)
    encoder = next(iter(model.models.values())).encoder_
    encoded = encode(features[valid], encoder)
    return model, partitions, encoded, which[valid], features.shape[0]


def _raw_kernel(model, rows, per_learner, stack_native, all_pixels, n_valid, threads, timed, work):
    """LightGBM and XGBoost through the QuickScorer kernel on the raw phase's rows (its one
    compilation per leaf and mask type included, as in a new process)."""
    from smdownscale.core import compiled, quickscorer
    from smdownscale.core.stack import _predict_booster

    ok, why = quickscorer.available()
    if not ok:
        return {"error": why}
    types = set()   # the (leaf, mask) dtypes the models need; the first one of each learner tells
    for learner in ("lightgbm", "xgboost"):
        first = next(iter(compiled.booster_members(paths(work)["model"], learner).values()))
        types.add(quickscorer.kernel_types(compiled._forest(bytes(first), learner)))
    started = time.perf_counter()
    for leaf_dtype, mask_dtype in sorted(types, key=str):
        quickscorer.warm(leaf_dtype, mask_dtype)
    warm_s = time.perf_counter() - started
    out = {"accelerator": why, "kernel_compile_s": round(warm_s, 2)}
    kernel_s = {}
    for learner in ("lightgbm", "xgboost"):
        members = compiled.booster_members(paths(work)["model"], learner)
        read_s, kernel_s[learner], worst = 0.0, 0.0, 0.0
        for name, X in rows.items():
            started = time.perf_counter()
            forest, _ = compiled.load_kernel_model(members[name], learner)
            read_s += time.perf_counter() - started
            kernel_s[learner] += timed(lambda: forest.predict(X, n_jobs=threads))
            sample = X[:20000]
            worst = max(worst, float(np.max(np.abs(forest.predict(sample, n_jobs=threads).astype(np.float64)
                                                   - _predict_booster(learner, model.models[name].boosters_[learner],
                                                                      sample, threads)))))
        out[f"{learner}_read_s"] = round(read_s, 2)
        out[f"{learner}_rows_per_s"] = round(n_valid / kernel_s[learner])
        out[f"{learner}_speedup"] = round(per_learner[learner] / kernel_s[learner], 2)
        out[f"{learner}_max_abs_diff_vs_native"] = worst
    overhead = stack_native - sum(per_learner.values())
    stack_kernel = per_learner["catboost"] + kernel_s["lightgbm"] + kernel_s["xgboost"] + overhead
    out["stack_pixels_per_s"] = round(all_pixels / stack_kernel)
    out["stack_speedup_vs_native"] = round(stack_native / stack_kernel, 2)
    return out


def phase_raw(work):
    """The trained boosters called directly on the same pixels: native, then LightGBM and XGBoost
    through the QuickScorer kernel and compiled by lleaves."""
    from smdownscale.core import compiled
    from smdownscale.core.stack import _predict_booster

    model, partitions, encoded, which, all_pixels = _raw_features(work)
    rows = {name: encoded[which == index] for index, name in enumerate(partitions.names)}
    n_valid = int(encoded.shape[0])
    threads = os.cpu_count()

    def timed(function):
        started = time.perf_counter()
        function()
        return time.perf_counter() - started

    per_learner = {}
    for learner in ("xgboost", "lightgbm", "catboost"):
        per_learner[learner] = timed(lambda: [
            _predict_booster(learner, model.models[name].boosters_[learner], X, threads)
            for name, X in rows.items() if learner in model.models[name].boosters_])
    previous = os.environ.get(compiled.ENV_MODE)
    os.environ[compiled.ENV_MODE] = "off"   # else base_predict takes LightGBM through the kernel
    stack_native = timed(lambda: [model.models[name].base_predict(X, encoded=True) for name, X in rows.items()])
    if previous is None:
        del os.environ[compiled.ENV_MODE]
    else:
        os.environ[compiled.ENV_MODE] = previous

    out = {"pixels": int(all_pixels), "valid_pixels": n_valid, "boosters_s": round(stack_native, 2),
           "pixels_per_s": round(all_pixels / stack_native), "valid_pixels_per_s": round(n_valid / stack_native),
           "native_rows_per_s": {k: round(n_valid / v) for k, v in per_learner.items()}}
    out["kernel"] = _raw_kernel(model, rows, per_learner, stack_native, all_pixels, n_valid, threads, timed,
                                work)
    ok, why = compiled.available()
    if not ok:
        out["compiled"] = {"error": why}
        return out
    # compiled LightGBM and XGBoost from a cold cache
    os.environ["SMDOWNSCALE_CACHE_DIR"] = tempfile.mkdtemp(prefix="cold-cache-", dir=work)
    os.environ[compiled.ENV_MODE] = "always"
    compile_s, compiled_s, checks = {}, {}, {}
    for learner in ("lightgbm", "xgboost"):
        members = compiled.booster_members(paths(work)["model"], learner)
        dtype = compiled.LEARNERS[learner].dtype
        compile_s[learner], compiled_s[learner], checks[learner] = 0.0, 0.0, []
        for name, X in rows.items():
            booster = model.models[name].boosters_[learner]
            started = time.perf_counter()
            predictor, _ = compiled.load_or_compile(members[name], learner=learner)
            compile_s[learner] += time.perf_counter() - started
            data = X.astype(dtype)
            compiled_s[learner] += timed(lambda: predictor.predict(data, n_jobs=threads))
            sample = X[:20000]
            checks[learner].append(float(np.max(np.abs(
                predictor.predict(sample.astype(dtype), n_jobs=threads).astype(np.float64)
                - _predict_booster(learner, booster, sample, threads)))))
    overhead = stack_native - sum(per_learner.values())
    stack_lightgbm = per_learner["xgboost"] + per_learner["catboost"] + compiled_s["lightgbm"] + overhead
    stack_compiled = per_learner["catboost"] + compiled_s["lightgbm"] + compiled_s["xgboost"] + overhead
    out["compiled"] = {
        "accelerator": why, "models": len(rows), "compile_s_cold": round(compile_s["lightgbm"], 1),
        "lightgbm_rows_per_s": round(n_valid / compiled_s["lightgbm"]),
        "lightgbm_speedup": round(per_learner["lightgbm"] / compiled_s["lightgbm"], 2),
        "max_abs_diff_vs_native": max(checks["lightgbm"]) if checks["lightgbm"] else None,
        "xgboost_compile_s_cold": round(compile_s["xgboost"], 1),
        "xgboost_rows_per_s": round(n_valid / compiled_s["xgboost"]),
        "xgboost_speedup": round(per_learner["xgboost"] / compiled_s["xgboost"], 2),
        "xgboost_max_abs_diff_vs_native": max(checks["xgboost"]) if checks["xgboost"] else None,
        "stack_pixels_per_s_lightgbm_only": round(all_pixels / stack_lightgbm),
        "stack_pixels_per_s": round(all_pixels / stack_compiled),
        "stack_pixels_per_s_incl_cold_compile": round(all_pixels / (stack_compiled + sum(compile_s.values()))),
        "stack_speedup_vs_native": round(stack_native / stack_compiled, 2)}
    return out


#: multi-band inputs whose pixel-interleaved copies prep_ref times band by band (today's reader
#: took 643.6 s for all 428 dates of these two on a busy 2-core machine, an estimated ~45 min for
#: all nine inputs): one of the 1 km inputs SeriesWarper copies (on the fine grid) and one of the
#: 500 m inputs it warps, their first PIXEL_BANDS dates; the series reader reads the same bands,
#: so the ratio compares equal work (all multi-band inputs are used when none of these exist)
PIXEL_PER_BAND_INPUTS = ("albedo.tif", "evi.tif")
PIXEL_BANDS = int(os.environ.get("SMD_BENCH_PIXEL_BANDS", "40"))


def _time_band_reads(inputs, grid, max_bands=None):
    """Per-band ``_warp`` (today) against SeriesWarper over every band of ``inputs`` (or their
    first ``max_bands``).

    Returns (bands, per_band_s, series_s, checked, identical): the first, middle and last band
    of each input are compared between the two readers (NaNs equal), outside the timings.
    """
    import rasterio
    from rasterio.enums import Resampling

    from smdownscale.core.fastread import SeriesWarper
    from smdownscale.core.preprocess import _warp

    per_band = series = 0.0
    bands = checked = 0
    identical = True
    with rasterio.Env():
        for path in inputs:
            with rasterio.open(path) as src:
                nodata = src.nodata if src.nodata is not None else float("nan")
                order = list(range(1, (min(src.count, max_bands) if max_bands else src.count) + 1))
                check = {order[0], order[len(order) // 2], order[-1]}
                bands += len(order)
                kept, got = {}, {}
                started = time.perf_counter()
                for band in order:
                    values = _warp(rasterio.band(src, band), nodata, grid, Resampling.average)
                    if band in check:
                        kept[band] = values
                per_band += time.perf_counter() - started
                started = time.perf_counter()
                warper = SeriesWarper(src, nodata, grid, Resampling.average, order)
                for band in order:
                    values = warper.get(band)
                    if band in check:
                        got[band] = values
                series += time.perf_counter() - started
                for band in check:
                    checked += 1
                    identical &= bool(np.array_equal(kept[band], got[band], equal_nan=True))
    return bands, per_band, series, checked, identical


def _pixel_interleaved_copy(path, folder):
    """A copy of ``path`` written INTERLEAVE=PIXEL with the original's compression and blocks."""
    from osgeo import gdal

    source = gdal.Open(path)
    structure = source.GetMetadata("IMAGE_STRUCTURE")
    block_x, block_y = source.GetRasterBand(1).GetBlockSize()
    options = ["INTERLEAVE=PIXEL"]
    if structure.get("COMPRESSION"):
        options.append(f"COMPRESS={structure['COMPRESSION']}")
    if structure.get("PREDICTOR"):
        options.append(f"PREDICTOR={structure['PREDICTOR']}")
    if block_x < source.RasterXSize:
        options += ["TILED=YES", f"BLOCKXSIZE={block_x}", f"BLOCKYSIZE={block_y}"]
    else:
        options.append(f"BLOCKYSIZE={block_y}")  # strips of the same height
    target = os.path.join(folder, os.path.basename(path))
    gdal.Translate(target, source, format="GTiff", creationOptions=options)
    source = None
    return target


def _interleave(path):
    from osgeo import gdal

    return gdal.Open(path).GetMetadata("IMAGE_STRUCTURE").get("INTERLEAVE")


def phase_prep_ref(work):
    """Preprocess reference: each input warped once with GDAL; per-band reading vs SeriesWarper,
    on the inputs as written (band-interleaved) and on pixel-interleaved copies of them."""
    import shutil

    from osgeo import gdal

    from smdownscale.core.dataset import Dataset

    p = paths(work)
    grid = Dataset.open(p["dataset"]).fine_grid
    folder = os.path.join(p["scenario"], "predictors")
    inputs = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".tif"))
    scratch = tempfile.mkdtemp(prefix="prep-ref-", dir=work)
    gdal.UseExceptions()
    try:
        started = time.perf_counter()
        for path in inputs:
            categorical = os.path.basename(path).startswith("lc")
            gdal.Warp(os.path.join(scratch, os.path.basename(path)), path, format="GTiff",
                      outputBounds=grid.bounds, width=grid.width, height=grid.height, dstSRS=grid.crs.to_wkt(),
                      resampleAlg="mode" if categorical else "average", dstNodata=float("nan"),
                      outputType=gdal.GDT_Float32, creationOptions=["TILED=YES", "COMPRESS=DEFLATE"])
        reference = time.perf_counter() - started
        bands, per_band, series, checked, identical = _time_band_reads(inputs, grid)
        out = {"inputs": len(inputs), "bands": bands, "gdal_single_pass_s": round(reference, 2),
               "fine_warps_per_band_s": round(per_band, 2), "fine_warps_series_s": round(series, 2),
               "series_speedup": round(per_band / series, 2), "arrays_checked": checked,
               "arrays_identical": identical,
               "interleave_inputs": sorted({str(_interleave(path)) for path in inputs})}

        # Pixel-interleaved copies of the multi-band inputs (single-band inputs are skipped:
        # interleaving does not apply to them).
        pixel_folder = os.path.join(scratch, "pixel")
        os.makedirs(pixel_folder)
        multi = [path for path in inputs if gdal.Open(path).RasterCount > 1]
        multi = [path for path in multi if os.path.basename(path) in PIXEL_PER_BAND_INPUTS] or multi
        started = time.perf_counter()
        timed = [_pixel_interleaved_copy(path, pixel_folder) for path in multi]
        copy_s = time.perf_counter() - started
        bands, per_band, series, checked, identical = _time_band_reads(timed, grid, PIXEL_BANDS)
        out.update({
            "pixel_interleaved_copies": len(timed), "pixel_copy_s": round(copy_s, 1),
            "pixel_copies_interleave": sorted({str(_interleave(path)) for path in timed}),
            "pixel_interleaved_inputs": [os.path.basename(path) for path in timed],
            "pixel_interleaved_bands": bands,
            "pixel_fine_warps_per_band_s": round(per_band, 2), "pixel_fine_warps_series_s": round(series, 2),
            "pixel_series_speedup": round(per_band / series, 2), "pixel_arrays_checked": checked,
            "pixel_arrays_identical": identical})
        return out
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def phase_big(work):
    """One date on a 10,000 x 10,000 grid (50 m pixels over the scenario), block-wise."""
    from smdownscale.core.predict import predict

    p = paths(work)
    size = int(os.environ.get("SMD_BENCH_BIG", BIG_SIZE))
    make_big_dataset(p["dataset"], p["big_dataset"], size)
    before = peak_rss_mb()
    started = time.time()
    predict(p["big_dataset"], p["model"], p["big_prediction"])
    return {"grid": f"{size}x{size}", "predict_s": round(time.time() - started, 1),
            "peak_rss_mb": round(peak_rss_mb()), "peak_rss_before_predict_mb": round(before)}


def make_big_dataset(source_folder, folder, size):
    """A one-date prepared dataset on a size x size grid, written window by window.

    Each fine predictor of the bench dataset's first date is upsampled (nearest) to 50 m, so the
    big grid covers the same area as the partitions.
    """
    import rasterio
    from rasterio.windows import Window

    from smdownscale.core.common import series_profile
    from smdownscale.core.dataset import DATASET_ID_TAG

    if os.path.exists(os.path.join(folder, "dataset.json")):
        return
    with open(os.path.join(source_folder, "dataset.json")) as handle:
        manifest = json.load(handle)
    os.makedirs(os.path.join(folder, "fine"), exist_ok=True)
    grid = manifest["fine_grid"]
    a, b, c, d, e, f = grid["transform"][:6]
    factor = 20
    big_grid = dict(grid, transform=[a / factor, b, c, d, e / factor, f], width=size, height=size)
    date = manifest["dates"][0]
    for predictor in manifest["predictors"]:
        if predictor.get("derived"):
            continue
        name = predictor["name"]
        with rasterio.open(os.path.join(source_folder, "fine", f"{name}.tif")) as src:
            values = src.read(1)
        profile = series_profile({"crs": rasterio.crs.CRS.from_wkt(grid["crs"]),
                                  "transform": rasterio.Affine(*big_grid["transform"]),
                                  "width": size, "height": size}, 1)
        with rasterio.open(os.path.join(folder, "fine", f"{name}.tif"), "w", **profile) as dst:
            # the coarse folder is the source dataset's (a link): the big dataset shares its identity
            dst.update_tags(**{DATASET_ID_TAG: manifest["dataset_id"]})
            if predictor.get("dynamic"):
                dst.set_band_description(1, date)
            step = 1000
            for row in range(0, size, step):
                rows = np.arange(row, min(row + step, size)) // factor
                rows = np.clip(rows, 0, values.shape[0] - 1)
                cols = np.clip(np.arange(size) // factor, 0, values.shape[1] - 1)
                dst.write(values[np.ix_(rows, cols)], 1, window=Window(0, row, size, rows.size))
    manifest = dict(manifest, dates=[date], fine_grid=big_grid)
    with open(os.path.join(folder, "dataset.json"), "w") as handle:
        json.dump(manifest, handle)
    if os.path.isdir(os.path.join(source_folder, "coarse")):
        os.symlink(os.path.join(source_folder, "coarse"), os.path.join(folder, "coarse"))


def phase_dask(work):
    """In-process against Dask LocalClusters of 1 and 2 workers, on one demo-size scenario."""
    import glob
    import zipfile

    import rasterio

    from smdownscale.core.cluster import dask_client, run_tasks
    from smdownscale.core.common import Progress
    from smdownscale.core.partitions import Partitions
    from smdownscale.core.predict import predict
    from smdownscale.core.preprocess import preprocess
    from smdownscale.core.train import train_model
    from smdownscale.demo.scenario import make_scenario

    os.environ["SMDOWNSCALE_COMPILED"] = "off"  # the same (native) path everywhere
    folder = os.path.join(work, "dask")
    scenario = make_scenario(os.path.join(folder, "scenario"), size="demo")
    options = dict(categorical=("lc",), mask_classes={"lc": [0]}, fine_resolution=1000.0)
    partitions = Partitions.from_file(scenario["partitions"], "name")
    result = {"scenario": "demo (150 x 120 fine pixels, 61 dates)"}
    runs = [("in_process", None), ("local_1", "local:1"), ("local_2", "local:2")]
    for step in ("preprocess", "train", "predict"):
        result[step] = {}
    for label, scheduler in runs:
        dataset = os.path.join(folder, f"dataset_{label}")
        started = time.time()
        preprocess(scenario["predictors"], scenario["soil_moisture"], dataset, scheduler=scheduler, **options)
        result["preprocess"][label] = {"wall_s": round(time.time() - started, 2)}
    reference_dataset = os.path.join(folder, "dataset_in_process")
    for label, scheduler in runs:
        started = time.time()
        train_model(reference_dataset, os.path.join(folder, f"model_{label}.smdmodel.zip"), partitions=partitions,
                    seed=42, scheduler=scheduler)
        result["train"][label] = {"wall_s": round(time.time() - started, 2)}
    model = os.path.join(folder, "model_in_process.smdmodel.zip")
    with rasterio.open(glob.glob(os.path.join(reference_dataset, "fine", "ndvi.tif"))[0]) as src:
        pixels = src.width * src.height * src.count
    outputs = {}
    for label, scheduler in runs:
        started = time.time()
        report = predict(reference_dataset, model, os.path.join(folder, f"prediction_{label}.tif"),
                         block_size=64, scheduler=scheduler)
        wall = time.time() - started
        outputs[label] = report.output
        result["predict"][label] = {"wall_s": round(wall, 2), "pixels_per_s": round(pixels / wall)}
    with rasterio.open(outputs["in_process"]) as a:
        reference = a.read()
    for label in ("local_1", "local_2"):
        with rasterio.open(outputs[label]) as b:
            result["predict"][label]["equal_to_in_process"] = bool(np.array_equal(reference, b.read(), equal_nan=True))
    with zipfile.ZipFile(os.path.join(folder, "model_in_process.smdmodel.zip")) as a, \
            zipfile.ZipFile(os.path.join(folder, "model_local_2.smdmodel.zip")) as b:
        differing = sorted(n for n in a.namelist() if a.read(n) != b.read(n))
        result["train"]["members_differing_local_2"] = differing
        result["train"]["catboost_differences_local_2"] = _catboost_differences(
            [(a.read(n), b.read(n)) for n in differing if n.endswith("catboost.cbm")])
    # scheduling overhead: no-op tasks, bounded in flight as the steps submit them
    n_tasks = 2000
    with dask_client("local:2") as client:
        list(run_tasks(client, _noop, range(200), progress=Progress()))  # warm-up
        started = time.time()
        list(run_tasks(client, _noop, range(n_tasks), progress=Progress()))
        per_task = (time.time() - started) / n_tasks
    result["overhead_ms_per_task"] = round(1000 * per_task, 3)
    from smdownscale.core.dataset import Dataset

    with Dataset.open(reference_dataset) as data:
        tasks = len(list(data.fine_block_windows(64))) * len(data.dates)
    result["predict"]["tasks"] = tasks
    result["predict"]["block_size"] = 64
    return result


def _catboost_differences(pairs):
    """What differs between CatBoost members trained in process and on the cluster: parameters,
    metadata keys, and the largest prediction difference on random rows (all members)."""
    from catboost import CatBoost

    params, metadata, largest = set(), set(), 0.0
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        for index, pair in enumerate(pairs):
            models = []
            for side, data in zip("ab", pair):
                path = os.path.join(scratch, f"{index}{side}.cbm")
                with open(path, "wb") as handle:
                    handle.write(data)
                model = CatBoost()
                model.load_model(path)
                models.append(model)
            a, b = models
            pa, pb = a.get_all_params(), b.get_all_params()
            params |= {k for k in set(pa) | set(pb) if pa.get(k) != pb.get(k)}
            ma, mb = dict(a.get_metadata()), dict(b.get_metadata())
            metadata |= {k for k in set(ma) | set(mb) if ma.get(k) != mb.get(k)}
            X = rng.uniform(0, 1, size=(20_000, len(a.feature_names_)))
            largest = max(largest, float(np.max(np.abs(a.predict(X) - b.predict(X)))))
    return {"members": len(pairs), "params": sorted(params), "metadata": sorted(metadata),
            "max_abs_prediction_diff": largest}


def _noop(unit):
    return unit


PHASES = {"dask": phase_dask, "data": phase_data, "train": phase_train, "train_es": phase_train_es,
          "naive": phase_naive, "predict": phase_predict,
          "predict_compiled": phase_predict_compiled, "raw": phase_raw, "prep_ref": phase_prep_ref, "big": phase_big}


def run_phase(name, work):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, ".plugin-path"))
    completed = subprocess.run([sys.executable, __file__, "--work", work, "--phase", name],
                               capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr[-3000:])
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "failed"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=os.path.join(HERE, "output"))
    parser.add_argument("--phase", choices=sorted(PHASES))
    parser.add_argument("--size", default="bench", choices=["small", "demo", "bench"],
                        help="scenario size (bench = paper scale; the others only to try the script)")
    parser.add_argument("--big", type=int, default=BIG_SIZE, help="side of the big one-date grid")
    parser.add_argument("--skip", nargs="*", default=[], help="phases to skip (e.g. data when it exists)")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    if args.phase:
        print(json.dumps(PHASES[args.phase](args.work)))
        return
    os.environ["SMD_BENCH_SIZE"] = args.size
    os.environ["SMD_BENCH_BIG"] = str(args.big)
    results = {"machine": {"cpus": os.cpu_count()}, "size": args.size}
    previous_path = os.path.join(args.work, "bench.json")
    if args.skip and os.path.exists(previous_path):
        # skipped phases keep the figures of the previous run in the same work folder
        with open(previous_path) as handle:
            previous = json.load(handle)
        results.update({name: previous[name] for name in args.skip if name in previous})
    for name in ("data", "prep_ref", "train", "train_es", "naive", "predict", "predict_compiled", "raw", "big",
                 "dask"):
        if name in args.skip:
            continue
        print(f"phase {name} ...", file=sys.stderr, flush=True)
        results[name] = run_phase(name, args.work)
        print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)
    train, naive, pred, raw = (results.get(k, {}) for k in ("train", "naive", "predict", "raw"))
    fast, data, ref, es = (results.get(k, {}) for k in ("predict_compiled", "data", "prep_ref", "train_es"))
    ratios = results["ratios"] = {}
    for key, compute in (
            ("prediction_compiled_vs_naive", lambda: fast["pixels_per_s"] / naive["predict_pixels_per_s"]),
            ("prediction_compiled_vs_native", lambda: fast["pixels_per_s"] / pred["pixels_per_s"]),
            ("raw_stack_compiled_vs_native", lambda: raw["compiled"]["stack_speedup_vs_native"]),
            ("raw_stack_kernel_vs_native", lambda: raw["kernel"]["stack_speedup_vs_native"]),
            ("preprocess_vs_gdal_single_pass", lambda: data["preprocess_s"] / ref["gdal_single_pass_s"]),
            # only when both readers gave the same arrays (None -> TypeError -> left out)
            ("preprocess_series_vs_per_band_pixel_interleaved",
             lambda: ref["pixel_series_speedup"] if ref["pixel_arrays_identical"] else None),
            ("training_es_speedup_vs_naive", lambda: naive["train_s"] / es["train_es_s"]),
            ("test_rmse_es_minus_naive", lambda: es["test_rmse_stack_es"] - naive["test_rmse_stack"]),
            ("test_rmse_es_minus_no_es", lambda: es["test_rmse_stack_es"] - train["test_rmse_stack"]),
            ("dask_predict_local_2_vs_in_process",
             lambda: results["dask"]["predict"]["local_2"]["pixels_per_s"]
             / results["dask"]["predict"]["in_process"]["pixels_per_s"])):
        try:
            ratios[key] = round(compute(), 5 if "rmse" in key else 2)
        except (KeyError, TypeError, ZeroDivisionError):
            pass
    try:
        results["ratios"].update({
            "training_speedup_vs_naive": round(naive["train_s"] / train["train_s"], 2),
            "test_rmse_ours_minus_naive": round(train["test_rmse_stack"] - naive["test_rmse_stack"], 5),
            "prediction_vs_raw_boosters": round(pred["pixels_per_s"] / raw["pixels_per_s"], 2),
            "prediction_vs_naive": round(pred["pixels_per_s"] / naive["predict_pixels_per_s"], 2),
        })
    except (KeyError, TypeError, ZeroDivisionError):
        pass
    print(json.dumps(results, indent=1))
    with open(os.path.join(args.work, "bench.json"), "w") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
