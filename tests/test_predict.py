"""Block-wise prediction with partition models, residual correction, matching and cancellation.

The dataset folder is written directly in the DESIGN.md format and the models are real
StackEnsembles saved with core.modelfile, so each partition's relation is known exactly.
"""
import json
import os
import shutil

import numpy as np
import pytest
import rasterio
from affine import Affine

from smdownscale.core.common import Cancelled, Progress, SmdError, write_series
from smdownscale.core.dataset import write_manifest
from smdownscale.core.grids import Grid
from smdownscale.core.modelfile import save_model
from smdownscale.core.partitions import Partitions
from smdownscale.core.predict import predict
from smdownscale.core.stack import StackEnsemble

CRS = "EPSG:32633"
X0, Y0 = 400000.0, 5000000.0
ROWS, COLS = 36, 45                      # fine grid: 1 km pixels
CELL = 9                                 # coarse cell = 9 x 9 fine pixels (same CRS, aligned)
DATES = ["2019-04-01", "2019-04-11", "2019-04-21"]
PREDICTORS = [{"name": "a", "kind": "continuous", "dynamic": True},
              {"name": "b", "kind": "continuous", "dynamic": False},
              {"name": "doy", "kind": "continuous", "dynamic": True, "derived": True}]
SPLIT_COL = 22                           # partition A: columns 0..21, B: 22..44
PART_ROWS = 34                           # partitions cover rows 0..33; rows 34, 35 are outside
FEW_TREES = {"xgboost": {"n_estimators": 20}, "lightgbm": {"n_estimators": 20},
             "catboost": {"n_estimators": 20}}


def relation_a(a, b):
    return 0.10 + 0.5 * a


def relation_b(a, b):
    return 0.40 - 0.3 * a


def relation_global(a, b):
    return 0.20 + 0.1 * b


def fine_a(t):
    rows, cols = np.mgrid[0:ROWS, 0:COLS]
    a = (0.6 * ((rows * 7 + cols * 3 + 5 * t) % 23) / 22.0).astype("float32")
    if t == 0:
        a[5, 5] = np.nan                 # nodata pixel: must stay NaN in the output
    return a


def fine_b():
    rows, cols = np.mgrid[0:ROWS, 0:COLS]
    return ((rows + 2 * cols) % 11 / 10.0).astype("float32")


def box(col0, col1, row0, row1):
    left, right = X0 + col0 * 1000, X0 + col1 * 1000
    top, bottom = Y0 - row0 * 1000, Y0 - row1 * 1000
    return {"type": "Polygon", "coordinates": [[(left, top), (right, top), (right, bottom),
                                                (left, bottom), (left, top)]]}


def fit(relation, seed):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 0.6, 300)
    b = rng.uniform(0, 1, 300)
    doy = rng.integers(90, 112, 300)
    X = np.column_stack([a, b, doy]).astype("float32")
    return StackEnsemble(params=FEW_TREES, n_threads=2, seed=0, feature_names=["a", "b", "doy"]).fit(
        X, relation(a, b))


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    dataset = folder / "dataset"
    (dataset / "fine").mkdir(parents=True)
    (dataset / "coarse").mkdir()
    fine_grid = Grid(CRS, Affine(1000, 0, X0, 0, -1000, Y0), COLS, ROWS)
    coarse_grid = Grid(CRS, Affine(9000, 0, X0, 0, -9000, Y0), COLS // CELL, ROWS // CELL)

    def coarse_mean(array):
        return np.nanmean(array.reshape(ROWS // CELL, CELL, COLS // CELL, CELL), axis=(1, 3))

    fine_profile, coarse_profile = fine_grid.profile(), coarse_grid.profile()
    write_series(str(dataset / "fine" / "a.tif"), [fine_a(t) for t in range(3)], DATES, fine_profile)
    write_series(str(dataset / "fine" / "b.tif"), [fine_b()], None, fine_profile)
    write_series(str(dataset / "coarse" / "a.tif"), [coarse_mean(fine_a(t)) for t in range(3)], DATES,
                 coarse_profile)
    write_series(str(dataset / "coarse" / "b.tif"), [coarse_mean(fine_b())], None, coarse_profile)
    # coarse soil moisture: 0.30 + 0.01 * cell number + 0.02 * t; cell (1, 2) has none on date 1
    soil = []
    for t in range(3):
        sm = (0.30 + 0.01 * np.arange(20).reshape(4, 5) + 0.02 * t).astype("float32")
        if t == 1:
            sm[1, 2] = np.nan
        soil.append(sm)
    write_series(str(dataset / "coarse" / "soil_moisture.tif"), soil, DATES, coarse_profile)
    write_manifest(str(dataset), dates=DATES, predictors=PREDICTORS, fine_grid=fine_grid,
                   coarse_grid=coarse_grid, min_valid_fraction=0.5, mask_classes={})

    partitions = Partitions(["A", "B"], [box(0, SPLIT_COL, 0, PART_ROWS),
                                         box(SPLIT_COL, COLS, 0, PART_ROWS)], CRS)
    models = {"A": fit(relation_a, 1), "B": fit(relation_b, 2)}
    global_model = fit(relation_global, 3)
    model_path = str(folder / "model.zip")
    save_model(model_path, models=models, global_model=global_model, predictors=PREDICTORS,
               partitions_json=partitions.to_json(), fine_grid=fine_grid, coarse_grid=coarse_grid,
               dates=DATES)
    return {"folder": folder, "dataset": str(dataset), "model": model_path, "models": models,
            "global": global_model, "soil": soil}


def read_all(path):
    with rasterio.open(path) as src:
        return src.read(), list(src.descriptions), src.profile


def features(t):
    doy = [91, 101, 111][t]
    return np.column_stack([fine_a(t).ravel(), fine_b().ravel(),
                            np.full(ROWS * COLS, doy, dtype="float32")]).astype("float32")


def test_blockwise_equals_whole_array(scene):
    out = scene["folder"]
    whole = predict(scene["dataset"], scene["model"], str(out / "whole.tif"), block_size=1000)
    blocks = predict(scene["dataset"], scene["model"], str(out / "blocks.tif"), block_size=16)
    a, descriptions, profile = read_all(str(out / "whole.tif"))
    b, _, _ = read_all(str(out / "blocks.tif"))
    np.testing.assert_array_equal(a, b)
    assert descriptions == DATES
    assert profile["dtype"] == "float32" and np.isnan(profile["nodata"])
    assert profile["compress"] == "deflate" and profile["interleave"] == "band"
    # 3 dates x (34 rows inside partitions x 45 cols), minus the nodata pixel on date 0
    assert whole["pixels_predicted"] == blocks["pixels_predicted"] == 3 * PART_ROWS * COLS - 1
    assert whole["pixels_per_model"] == {"A": 3 * PART_ROWS * SPLIT_COL - 1,
                                         "B": 3 * PART_ROWS * (COLS - SPLIT_COL)}
    assert whole["pixels_outside_partitions"] == whole["pixels_without_model"] == 3 * 2 * COLS
    assert whole["max_cell_mismatch_before"] is None


def test_each_partition_uses_its_own_model(scene):
    path = str(scene["folder"] / "parts.tif")
    predict(scene["dataset"], scene["model"], path, block_size=16, dates=["2019-04-21"])
    out, descriptions, _ = read_all(path)
    assert descriptions == ["2019-04-21"]
    pred = out[0]
    X = features(2)
    rows, cols = np.mgrid[0:ROWS, 0:COLS]
    in_a = ((cols < SPLIT_COL) & (rows < PART_ROWS)).ravel()
    in_b = ((cols >= SPLIT_COL) & (rows < PART_ROWS)).ravel()
    expected_a = scene["models"]["A"].predict(X[in_a]).astype("float32")
    expected_b = scene["models"]["B"].predict(X[in_b]).astype("float32")
    np.testing.assert_array_equal(pred.ravel()[in_a], expected_a)
    np.testing.assert_array_equal(pred.ravel()[in_b], expected_b)
    # and the relations are the partitions' own: A rises with a, B falls with a
    a = X[:, 0]
    assert np.abs(pred.ravel()[in_a] - relation_a(a[in_a], None)).max() < 0.03
    assert np.abs(pred.ravel()[in_b] - relation_b(a[in_b], None)).max() < 0.03
    assert np.isnan(pred[PART_ROWS:]).all()          # outside every partition, no global option


def test_use_global_fills_pixels_outside_partitions(scene):
    path = str(scene["folder"] / "global_outside.tif")
    result = predict(scene["dataset"], scene["model"], path, use_global=True, dates=["2019-04-01"])
    pred = read_all(path)[0][0]
    X = features(0)
    outside = (np.mgrid[0:ROWS, 0:COLS][0] >= PART_ROWS).ravel()
    np.testing.assert_array_equal(pred.ravel()[outside], scene["global"].predict(X[outside]).astype("float32"))
    assert np.isnan(pred[5, 5])                       # predictor nodata stays NaN
    assert result["pixels_per_model"]["outside partitions"] == (ROWS - PART_ROWS) * COLS
    path = str(scene["folder"] / "wp.tif")
    predict(scene["dataset"], scene["model"], path, global_only=True, dates=["2019-04-01"])
    wp = read_all(path)[0][0].ravel()
    valid = np.isfinite(X).all(axis=1)
    np.testing.assert_array_equal(wp[valid], scene["global"].predict(X[valid]).astype("float32"))


def test_residual_correction_conserves_cell_means(scene):
    raw_path = str(scene["folder"] / "raw.tif")
    path = str(scene["folder"] / "corrected.tif")
    predict(scene["dataset"], scene["model"], raw_path, block_size=16)
    result = predict(scene["dataset"], scene["model"], path, residual_correction=True, block_size=16)
    raw, corrected = read_all(raw_path)[0], read_all(path)[0]
    worst_before = 0.0
    for t in range(3):
        cell_means = np.nanmean(corrected[t].reshape(4, CELL, 5, CELL), axis=(1, 3))
        raw_means = np.nanmean(raw[t].reshape(4, CELL, 5, CELL), axis=(1, 3))
        sm = scene["soil"][t]
        has_sm = np.isfinite(sm)
        assert np.abs(cell_means[has_sm] - sm[has_sm]).max() <= 1e-5
        worst_before = max(worst_before, np.abs(raw_means[has_sm] - sm[has_sm]).max())
        # the shift is additive: corrected - raw is one constant per cell
        shift = (corrected[t] - raw[t]).reshape(4, CELL, 5, CELL)
        spread = np.nanmax(shift, axis=(1, 3)) - np.nanmin(shift, axis=(1, 3))
        assert spread.max() < 1e-6
        # NaN stays NaN (outside partitions, predictor nodata)
        np.testing.assert_array_equal(np.isnan(corrected[t]), np.isnan(raw[t]))
    # the cell without soil moisture on date 1 is left as predicted
    np.testing.assert_array_equal(corrected[1, 9:18, 18:27], raw[1, 9:18, 18:27])
    assert result["cells_without_soil_moisture"] == 1
    assert result["max_cell_mismatch_after"] <= 1e-5
    assert result["max_cell_mismatch_before"] == pytest.approx(worst_before, abs=1e-5)
    assert result["max_cell_mismatch_before"] > 0.05
    assert not [n for n in os.listdir(scene["folder"]) if "scratch" in n or ".tmp-" in n]


def test_predictor_mismatch_lists_names(scene, tmp_path):
    renamed = tmp_path / "renamed"
    shutil.copytree(scene["dataset"], renamed)
    for level in ("fine", "coarse"):
        os.rename(renamed / level / "b.tif", renamed / level / "slope.tif")
    manifest = json.loads((renamed / "dataset.json").read_text())
    manifest["predictors"][1]["name"] = "slope"
    (renamed / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(SmdError) as err:
        predict(str(renamed), scene["model"], str(tmp_path / "x.tif"))
    assert "missing from the dataset: b" in str(err.value)
    assert "in the dataset but not in the model: slope" in str(err.value)
    manifest["predictors"][1].update(name="b", kind="categorical", categories=[0, 1])
    for level in ("fine", "coarse"):
        os.rename(renamed / level / "slope.tif", renamed / level / "b.tif")
    (renamed / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(SmdError, match=r"different kind: b \(model: continuous, static; dataset: categorical"):
        predict(str(renamed), scene["model"], str(tmp_path / "x.tif"))
    assert not os.path.exists(tmp_path / "x.tif")


def test_unknown_date_lists_available(scene, tmp_path):
    with pytest.raises(SmdError, match="2020-01-01.*Available dates: 2019-04-01, 2019-04-11, 2019-04-21"):
        predict(scene["dataset"], scene["model"], str(tmp_path / "x.tif"), dates=["2020-01-01"])
    with pytest.raises(SmdError, match="block_size"):
        predict(scene["dataset"], scene["model"], str(tmp_path / "x.tif"), block_size=0)


@pytest.mark.parametrize("correction", [False, True])
def test_cancel_leaves_no_output(scene, tmp_path, correction):
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 6

    path = tmp_path / "cancelled.tif"
    with pytest.raises(Cancelled):
        predict(scene["dataset"], scene["model"], str(path), block_size=16,
                residual_correction=correction, progress=Progress(is_cancelled=cancelled))
    assert os.listdir(tmp_path) == []


def test_trained_model_file_with_fallback_partition(scene, tmp_path):
    """core.train.train_model -> predict: a partition without coarse samples falls back to the
    global model, and its fine pixels are predicted by it."""
    from smdownscale.core.modelfile import load_model
    from smdownscale.core.train import train_model

    # C is a strip of 3 fine rows: no coarse cell has most of its area in it
    partitions = Partitions(["A", "B", "C"], [box(0, SPLIT_COL, 0, PART_ROWS), box(SPLIT_COL, COLS, 0, 31),
                                              box(SPLIT_COL, COLS, 31, PART_ROWS)], CRS)
    model_path = str(tmp_path / "trained.zip")
    train_model(scene["dataset"], model_path, partitions=partitions, base_models=("xgboost", "lightgbm"),
                folds=3, min_samples=10, fallback_to_global=True, n_threads=2,
                params={"xgboost": {"n_estimators": 20}, "lightgbm": {"n_estimators": 20, "min_child_samples": 2}})
    loaded = load_model(model_path)
    assert sorted(loaded.models) == ["A", "B"] and loaded.global_model is not None
    path = str(tmp_path / "out.tif")
    result = predict(scene["dataset"], model_path, path, dates=["2019-04-11"])
    assert result["fallback_partitions"] == ["C"]
    pred = read_all(path)[0][0]
    X = features(1)
    rows, cols = np.mgrid[0:ROWS, 0:COLS]
    in_c = ((rows >= 31) & (rows < PART_ROWS) & (cols >= SPLIT_COL)).ravel()
    in_a = ((rows < PART_ROWS) & (cols < SPLIT_COL)).ravel()
    np.testing.assert_array_equal(pred.ravel()[in_c], loaded.global_model.predict(X[in_c]).astype("float32"))
    np.testing.assert_array_equal(pred.ravel()[in_a], loaded.models["A"].predict(X[in_a]).astype("float32"))
    assert result["pixels_per_model"] == {"A": PART_ROWS * SPLIT_COL, "B": 31 * (COLS - SPLIT_COL),
                                          "C": 3 * (COLS - SPLIT_COL)}
