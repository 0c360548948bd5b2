"""train_model / build_samples on tiny prepared dataset folders written in the DESIGN.md format."""
import csv
import json
import os

import numpy as np
import pytest

from smdownscale.core import modelfile
from smdownscale.core.common import Cancelled, Progress, SmdError, write_series
from smdownscale.core.dataset import Dataset, write_manifest
from smdownscale.core.grids import Grid
from smdownscale.core.partitions import Partitions
from smdownscale.core.train import (build_samples, split_groups, split_train_test, train_model,
                                    write_training_report)

CRS = "EPSG:32650"
CELL = 9000.0
X0, Y0 = 500000.0, 4000000.0
N = 8           # coarse cells per side
N_DATES = 10
FAST = {"xgboost": {"n_estimators": 30}, "lightgbm": {"n_estimators": 30, "min_child_samples": 5},
        "catboost": {"n_estimators": 30}}


def box(col0, col1, row0, row1):
    """GeoJSON polygon over coarse columns col0..col1-1 and rows row0..row1-1."""
    x0, x1 = X0 + col0 * CELL, X0 + col1 * CELL
    y0, y1 = Y0 - row1 * CELL, Y0 - row0 * CELL
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def truth(x, col):
    """West (cols 0-3): sm rises with x; east: sm falls with x."""
    return np.where(col < N // 2, 0.10 + 0.30 * x, 0.40 - 0.30 * x).astype("float32")


@pytest.fixture(scope="module")
def dataset_folder(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("dataset"))
    os.makedirs(os.path.join(folder, "fine"))
    os.makedirs(os.path.join(folder, "coarse"))
    coarse = Grid(CRS, [CELL, 0, X0, 0, -CELL, Y0], N, N)
    fine = Grid(CRS, [CELL / 2, 0, X0, 0, -CELL / 2, Y0], 2 * N, 2 * N)
    dates = [f"2019-04-{d:02d}" for d in range(1, N_DATES + 1)]
    rng = np.random.default_rng(0)
    x = rng.random((N_DATES, N, N)).astype("float32")
    cols = np.broadcast_to(np.arange(N), (N, N))
    lc = (1 + (np.arange(N * N).reshape(N, N) % 2)).astype("float32")
    sm = np.stack([truth(x[d], cols) for d in range(N_DATES)])
    sm[0, 0, 0] = np.nan           # invalid target: no sample
    x[1, 7, 7] = np.nan            # invalid predictor: no sample
    up = lambda a: np.kron(a, np.ones((2, 2), dtype="float32"))
    write_series(os.path.join(folder, "coarse", "x.tif"), list(x), dates, coarse.profile())
    write_series(os.path.join(folder, "fine", "x.tif"), [up(b) for b in x], dates, fine.profile())
    write_series(os.path.join(folder, "coarse", "lc.tif"), [lc], None, coarse.profile())
    write_series(os.path.join(folder, "fine", "lc.tif"), [up(lc)], None, fine.profile())
    write_series(os.path.join(folder, "coarse", "soil_moisture.tif"), list(sm), dates, coarse.profile())
    write_manifest(folder, dates=dates, fine_grid=fine, coarse_grid=coarse, min_valid_fraction=0.5,
                   mask_classes={}, predictors=[
                       {"name": "x", "kind": "continuous", "dynamic": True},
                       {"name": "lc", "kind": "categorical", "dynamic": False, "categories": [1, 2]},
                       {"name": "doy", "kind": "continuous", "dynamic": True, "derived": True}])
    return folder


def halves():
    return Partitions(["west", "east"], [box(0, 4, 0, N), box(4, N, 0, N)], CRS)


def test_build_samples_values_and_partitions(dataset_folder):
    samples = build_samples(Dataset.open(dataset_folder), halves())
    assert len(samples) == N * N * N_DATES - 2
    assert samples.predictor_names == ["x", "lc", "doy"]
    assert samples.counts() == {"west": 319, "east": 319}
    # every sample is its cell's value on its date, in the partition of its column
    assert np.all(samples.partition == (samples.col >= 4))
    np.testing.assert_allclose(samples.y, truth(samples.X[:, 0], samples.col), rtol=1e-6)
    np.testing.assert_array_equal(samples.X[:, 2], 91 + samples.date_index)  # 2019-04-01 is DOY 91
    np.testing.assert_array_equal(samples.X[:, 1], 1 + (samples.row * N + samples.col) % 2)
    assert not np.any((samples.date_index == 0) & (samples.row == 0) & (samples.col == 0))
    assert not np.any((samples.date_index == 1) & (samples.row == 7) & (samples.col == 7))


def test_partition_samples_go_to_their_own_model(dataset_folder, tmp_path):
    model_path = str(tmp_path / "model.zip")
    messages = []
    report = train_model(dataset_folder, model_path, partitions=halves(), folds=3, params=FAST, n_threads=1,
                         progress=Progress(lambda f, m: messages.append((f, m))))
    loaded = modelfile.load_model(model_path)
    assert list(loaded.models) == ["west", "east"] and loaded.global_model is not None
    probe = np.array([[0.2, 1, 100], [0.8, 1, 100]], dtype="float32")
    west, east = loaded.models["west"].predict(probe), loaded.models["east"].predict(probe)
    np.testing.assert_allclose(west, [0.16, 0.34], atol=0.03)   # 0.10 + 0.30 x
    np.testing.assert_allclose(east, [0.34, 0.16], atol=0.03)   # 0.40 - 0.30 x
    # Table-3 rows: 3 base models + stack for west, east and WP; 7:3 split of 319 samples
    rows = report.rows()
    assert [(r["partition"], r["model"]) for r in rows[:4]] == [
        ("west", "XGBoost"), ("west", "LightGBM"), ("west", "CatBoost"), ("west", "Stacking")]
    assert {r["partition"] for r in rows} == {"west", "east", "WP"}
    west_stack = [r for r in rows if r["partition"] == "west" and r["model"] == "Stacking"][0]
    assert (west_stack["n_train"], west_stack["n_test"]) == (223, 96)
    assert west_stack["r_test"] > 0.95 and west_stack["rmse_test"] < 0.03
    wp_stack = [r for r in rows if r["partition"] == "WP" and r["model"] == "Stacking"][0]
    assert wp_stack["n_train"] + wp_stack["n_test"] == 638
    # progress went forward to 1 and mentioned each partition
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("west" in (m or "") for _, m in messages) and any("fold" in (m or "") for _, m in messages)
    assert loaded.partitions_json["names"] == ["west", "east"]
    assert loaded.dates[0] == "2019-04-01"
    # reports
    csv_path = write_training_report(report, str(tmp_path / "report.csv"))
    with open(csv_path) as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 12 and table[3]["model"] == "Stacking" and int(table[3]["n_train"]) == 223
    json_path = write_training_report(report, str(tmp_path / "report.json"))
    with open(json_path) as handle:
        assert json.load(handle)["rows"][3]["n_test"] == 96


def test_too_few_samples_error_and_fallback(dataset_folder, tmp_path):
    three = Partitions(["big", "tiny"], [box(0, N, 0, N - 1), box(0, 1, N - 1, N)], CRS)
    with pytest.raises(SmdError, match=r"Partition 'tiny' has only 10 samples \(minimum 50\)"):
        train_model(dataset_folder, str(tmp_path / "m.zip"), partitions=three, folds=3, params=FAST, n_threads=1)
    assert not os.path.exists(tmp_path / "m.zip")
    report = train_model(dataset_folder, str(tmp_path / "m.zip"), partitions=three, folds=3, params=FAST,
                         n_threads=1, train_global=False, fallback_to_global=True,
                         base_models=("lightgbm",))
    assert report["fallback"] == {"tiny": "WP"}
    assert "tiny" in report["warnings"][0] and "10 samples" in report["warnings"][0]
    loaded = modelfile.load_model(str(tmp_path / "m.zip"))
    assert list(loaded.models) == ["big"] and loaded.global_model is not None
    assert loaded.manifest["extra"]["fallback"] == {"tiny": "WP"}


def test_spatial_blocks_and_date_groups(dataset_folder):
    samples = build_samples(Dataset.open(dataset_folder), halves())
    index = np.arange(len(samples))
    groups = split_groups(samples, index, "spatial", 2)
    expected = (samples.row // 2) * 1_000_000 + samples.col // 2
    np.testing.assert_array_equal(groups, expected)
    assert np.unique(groups).size == 16
    train, test, train_groups = split_train_test(samples, index, test_fraction=0.3, cv_strategy="spatial",
                                                 spatial_block_cells=2, seed=1)
    blocks = lambda i: set(zip(samples.row[i] // 2, samples.col[i] // 2))
    assert not blocks(train) & blocks(test)
    assert len(blocks(test)) == 5                     # ceil(0.3 * 16) blocks held out
    assert len(train) + len(test) == len(samples)
    train, test, _ = split_train_test(samples, index, test_fraction=0.3, cv_strategy="dates",
                                      spatial_block_cells=2, seed=1)
    assert not set(samples.date_index[train]) & set(samples.date_index[test])
    assert len(set(samples.date_index[test])) == 3


def test_spatial_cv_trains_and_rejects_too_few_blocks(dataset_folder, tmp_path):
    report = train_model(dataset_folder, str(tmp_path / "s.zip"), partitions=halves(), folds=3,
                         cv_strategy="spatial", spatial_block_cells=2, params=FAST, n_threads=1,
                         base_models=("xgboost", "lightgbm"), train_global=False)
    west = [r for r in report.rows() if r["partition"] == "west" and r["model"] == "Stacking"][0]
    # whole 2x2-cell blocks x 10 dates = 40 samples each (block (0,0) misses one cell-date)
    assert west["n_test"] % 40 in (0, 39) and west["n_test"] >= 40
    assert west["r_test"] > 0.9
    with pytest.raises(SmdError, match="spatial blocks"):
        train_model(dataset_folder, str(tmp_path / "s2.zip"), partitions=halves(), folds=5,
                    cv_strategy="spatial", spatial_block_cells=4, params=FAST, n_threads=1)


def test_cancel_leaves_no_model_file(dataset_folder, tmp_path):
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 5
    with pytest.raises(Cancelled):
        train_model(dataset_folder, str(tmp_path / "c.zip"), partitions=halves(), folds=3, params=FAST,
                    n_threads=1, progress=Progress(None, cancelled))
    assert os.listdir(tmp_path) == []


def test_bad_settings(dataset_folder, tmp_path):
    with pytest.raises(SmdError, match="cv_strategy"):
        train_model(dataset_folder, str(tmp_path / "x.zip"), cv_strategy="kfold")
    with pytest.raises(SmdError, match="test_fraction"):
        train_model(dataset_folder, str(tmp_path / "x.zip"), test_fraction=1.5)
    empty = tmp_path / "empty"   # a folder without dataset.json (the output is not inside it)
    empty.mkdir()
    with pytest.raises(SmdError, match="not a prepared dataset"):
        train_model(str(empty), str(tmp_path / "x.zip"))
    outside = Partitions(["far"], [box(100, 101, 0, 1)], CRS)
    with pytest.raises(SmdError, match="No coarse cell lies inside"):
        train_model(dataset_folder, str(tmp_path / "x.zip"), partitions=outside)


def test_explain_mean_abs_shap_per_partition(dataset_folder, tmp_path):
    from smdownscale.core.explain import explain, write_explain_table

    model_path = str(tmp_path / "e.zip")
    train_model(dataset_folder, model_path, partitions=halves(), folds=3, params=FAST, n_threads=1)
    rows = explain(model_path, dataset_folder, max_samples=150, seed=3)
    assert [r["partition"] for r in rows] == ["west"] * 3 + ["east"] * 3 + ["WP"] * 3
    for label in ("west", "east"):
        got = {r["predictor"]: r["mean_abs_shap"] for r in rows if r["partition"] == label}
        assert set(got) == {"x", "lc", "doy"}          # lc_1, lc_2 summed back to lc
        # sm = a +- 0.3 x with x ~ U(0,1): SHAP_x ~ 0.3 (x - 0.5), E|.| = 0.3 / 4 = 0.075
        assert got["x"] == pytest.approx(0.075, abs=0.012)
        assert got["lc"] < 0.01 and got["doy"] < 0.01
    assert rows[0]["predictor"] == "x"
    again = explain(model_path, dataset_folder, max_samples=150, seed=3)
    assert again == rows
    path = write_explain_table(rows, str(tmp_path / "shap.csv"))
    with open(path) as handle:
        table = list(csv.DictReader(handle))
    assert table[0]["partition"] == "west" and table[0]["predictor"] == "x"
    assert float(table[0]["mean_abs_shap"]) == pytest.approx(rows[0]["mean_abs_shap"])
    with pytest.raises(SmdError, match="max_samples"):
        explain(model_path, dataset_folder, max_samples=0)


def test_without_partitions_trains_only_the_global_model(dataset_folder, tmp_path):
    report = train_model(dataset_folder, str(tmp_path / "g.zip"), folds=3, params=FAST, n_threads=1,
                         base_models=("lightgbm",))
    assert [(r["partition"], r["model"]) for r in report.rows()] == [("WP", "LightGBM"), ("WP", "Stacking")]
    assert report.rows()[1]["n_train"] + report.rows()[1]["n_test"] == N * N * N_DATES - 2
    loaded = modelfile.load_model(str(tmp_path / "g.zip"))
    assert loaded.models == {} and loaded.partitions_json is None
    assert loaded.global_model.base_model_names_ == ["lightgbm"]
