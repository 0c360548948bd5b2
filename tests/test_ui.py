"""The model report dialog shows a model file's Table-3 numbers, in a real (offscreen) QGIS."""
import zipfile

import numpy as np
import pytest

from smdownscale.core.modelfile import save_model
from smdownscale.core.stack import StackEnsemble

ROWS = [
    {"partition": "HB", "model": "XGBoost", "n_train": 70, "n_test": 30, "r_train": 0.99, "rmse_train": 0.011,
     "r_test": 0.95, "rmse_test": 0.020},
    {"partition": "HB", "model": "Stacking", "n_train": 70, "n_test": 30, "r_train": 0.99, "rmse_train": 0.010,
     "r_test": 0.96, "rmse_test": 0.018},
    {"partition": "WN", "model": "XGBoost", "n_train": 70, "n_test": 30, "r_train": 0.98, "rmse_train": 0.012,
     "r_test": 0.93, "rmse_test": 0.021},
    {"partition": "WN", "model": "Stacking", "n_train": 70, "n_test": 30, "r_train": 0.98, "rmse_train": 0.013,
     "r_test": None, "rmse_test": 0.025},          # undefined R is stored as null
]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2)).astype("float32")
    y = X[:, 0] * 0.1
    model = StackEnsemble(base_models=("xgboost",), n_folds=2, n_threads=1, feature_names=["ndvi", "lc"],
                          categorical={"lc": None}, params={"xgboost": {"n_estimators": 5}})
    X[:, 1] = rng.integers(1, 3, size=60)
    model.fit(X, y)
    predictors = [{"name": "ndvi", "kind": "continuous", "dynamic": True},
                  {"name": "lc", "kind": "categorical", "dynamic": False, "categories": [1, 2]}]
    path = str(tmp_path_factory.mktemp("model") / "model.zip")
    save_model(path, models={"HB": model, "WN": model}, predictors=predictors,
               partitions_json={"names": ["HB", "WN"], "geometries": [None, None], "crs": "EPSG:32650"},
               dates=["2019-04-01", "2019-04-30"], metrics={"rows": ROWS})
    return path


def test_dialog_shows_table3_with_best_rows_in_bold(qgis_app, model_path):
    from smdownscale.ui.model_report import ModelReportDialog

    dialog = ModelReportDialog(model_path=model_path)
    table = dialog.table
    assert table.rowCount() == 4
    assert [table.item(r, 0).text() for r in range(4)] == ["HB", "HB", "WN", "WN"]
    assert table.item(1, 7).text() == "0.0180"
    assert table.item(3, 6).text() == "n/a"            # undefined R is shown, not hidden
    assert table.item(0, 4).text() == "0.9900"
    bold = [table.item(r, 0).font().bold() for r in range(4)]
    assert bold == [False, True, True, False]           # lowest test RMSE per partition
    text = dialog.summary.text()
    assert "ndvi, lc (categorical)" in text
    assert "Training dates: 2 (2019-04-01 to 2019-04-30)" in text
    assert "Partitions: HB, WN" in text and "xgboost" in text


def test_dialog_reports_a_tampered_file_instead_of_raising(qgis_app, model_path, tmp_path):
    from smdownscale.ui.model_report import ModelReportDialog

    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(model_path) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("meta.json"):
                data = data.replace(b"[", b"[ ", 1)
            dst.writestr(info, data)
    dialog = ModelReportDialog()
    assert dialog.load(str(tampered)) is False
    assert "checksum mismatch" in dialog.summary.text()
    assert dialog.table.rowCount() == 0
