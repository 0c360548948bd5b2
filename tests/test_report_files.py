"""The companion folder of an HTML report (X.html -> X_files/: figures as PNG, tables as CSV):
its name rule, its output safety (never over an input or a folder the plugin did not write,
refused before any work), and both-or-neither writing with the page (and with the model file)."""
import errno
import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from smdownscale.core import outputs
from smdownscale.core.common import SmdError
from smdownscale.core.outputs import FOLDER_MARKER, check_outputs, report_files_folder

DATES = ["2019-04-01", "2019-04-02", "2019-04-03"]


def page(title="t"):
    """A small report page: one table with awkward numbers, one figure (PNG bytes)."""
    from smdownscale.core.reports.html import Page

    built = Page(title, "training")
    built.table([("name", "Name", "text"), ("value", "Value", "metric"), ("n", "n", "count")],
                [{"name": "a, b", "value": 0.1 + 0.2, "n": 3}, {"name": "nan", "value": float("nan"), "n": None},
                 {"name": "tiny", "value": np.float32(1.58868e-05), "n": np.int64(7)}], table_id="numbers")
    built.figure(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, figure_id="figure-one", alt="one")
    return built.render({"rows": [{"value": 0.1 + 0.2}]})


def listing(folder):
    return sorted(os.listdir(folder))


def test_the_folder_name_rule():
    assert report_files_folder("/out/training_report.html") == "/out/training_report_files"
    assert report_files_folder("/out/R.HTM") == "/out/R_files"
    assert report_files_folder("/out/report.csv") is None and report_files_folder(None) is None


def test_page_and_folder_hold_the_same_bytes_and_full_precision_numbers(tmp_path):
    import csv

    from smdownscale.core.reports import read_report_data, write_report

    text = page()
    path = str(tmp_path / "r.html")
    assert write_report(path, text) == [path, str(tmp_path / "r_files")]
    with open(path, encoding="utf-8") as handle:
        assert handle.read() == text
    assert listing(tmp_path / "r_files") == [FOLDER_MARKER, "figure-one.png", "numbers.csv"]
    assert (tmp_path / "r_files" / "figure-one.png").read_bytes() == text.figures["figure-one"]
    with open(tmp_path / "r_files" / "numbers.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"name": "a, b", "value": "0.30000000000000004", "n": "3"},
                    {"name": "nan", "value": "", "n": ""},
                    {"name": "tiny", "value": repr(float(np.float32(1.58868e-05))), "n": "7"}]
    assert float(rows[0]["value"]) == read_report_data(path)["rows"][0]["value"]   # = the JSON block
    # a second run replaces the page and the whole folder (ours: it has the marker)
    (tmp_path / "r_files" / "stale.png").write_bytes(b"old")
    write_report(path, page("second"))
    assert listing(tmp_path / "r_files") == [FOLDER_MARKER, "figure-one.png", "numbers.csv"]
    assert read_report_data(path)["title"] == "second"
    # a .csv report has no companion folder
    assert write_report(str(tmp_path / "r.csv"), "a\r\n1\r\n") == [str(tmp_path / "r.csv")]
    assert not os.path.exists(tmp_path / "r_files.csv") and listing(tmp_path) == ["r.csv", "r.html", "r_files"]


def test_an_empty_folder_is_replaced_a_foreign_one_never(tmp_path):
    from smdownscale.core.reports import write_report

    (tmp_path / "empty_files").mkdir()
    write_report(str(tmp_path / "empty.html"), page())
    assert FOLDER_MARKER in os.listdir(tmp_path / "empty_files")
    foreign = tmp_path / "r_files"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("mine")
    message = (r"Output .*r_files \(the figures and tables of the report .*r\.html\) is a folder holding files "
               r"this plugin did not write; it is never replaced\. Choose another report name, or move that "
               r"folder away\.")
    with pytest.raises(SmdError, match=message):
        check_outputs([(str(tmp_path / "r.html"), "report")])
    with pytest.raises(SmdError, match=message):  # the writer checks again
        write_report(str(tmp_path / "r.html"), page())
    assert listing(foreign) == ["thesis.docx"] and (foreign / "thesis.docx").read_text() == "mine"
    assert "r.html" not in os.listdir(tmp_path)
    (tmp_path / "f_files").write_text("a file")
    with pytest.raises(SmdError, match=r"f_files \(the figures .*exists and is a file"):
        check_outputs([(str(tmp_path / "f.html"), "report")])
    check_outputs([(str(tmp_path / "r.json"), "report"), (str(tmp_path / "r.csv"), "table")])  # no folder


@pytest.fixture()
def series(tmp_path):
    path = str(tmp_path / "in_files" / "sm.tif")
    os.makedirs(os.path.dirname(path))
    values = np.array([[[0.1, 0.2]], [[0.3, np.nan]], [[0.2, 0.25]]], dtype="float32")
    with rasterio.open(path, "w", driver="GTiff", width=2, height=1, count=3, dtype="float32", crs="EPSG:32650",
                       transform=from_origin(500000.0, 4000000.0, 1000.0, 1000.0), nodata=np.nan) as dst:
        dst.write(values)
        for band, date in enumerate(DATES, start=1):
            dst.set_band_description(band, date)
    return path


def test_entry_points_refuse_a_bad_companion_before_any_work(series, tmp_path, monkeypatch):
    from smdownscale.core import summarize as module
    from smdownscale.core.train import train_model

    opened = []  # summarize's first work: opening the input
    monkeypatch.setattr("smdownscale.core.rasters.open_raster", lambda *a: opened.append(a))
    foreign = tmp_path / "period_files"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SmdError, match=r"period_files \(the figures and tables of the report .*period\.html\) is "
                                       r"a folder holding files this plugin did not write"):
        module.summarize(series, mean_path=str(tmp_path / "mean.tif"), report_path=str(tmp_path / "period.html"))
    # the input's folder in_files would be replaced by the companion of in.html
    with pytest.raises(SmdError, match=r"in_files \(the figures and tables of the report .*in\.html\) would "
                                       r"replace the folder holding the input"):
        module.summarize(series, mean_path=str(tmp_path / "mean.tif"), report_path=str(tmp_path / "in.html"))
    # train: refused before the dataset is even opened (it does not exist here)
    with pytest.raises(SmdError, match=r"t_files \(the figures and tables .*did not write"):
        (tmp_path / "t_files").mkdir()
        (tmp_path / "t_files" / "x").write_text("x")
        train_model(str(tmp_path / "no-dataset"), str(tmp_path / "m.smdmodel.zip"),
                    report_path=str(tmp_path / "t.html"))
    assert opened == [] and listing(foreign) == ["notes.txt"] and listing(tmp_path / "in_files") == ["sm.tif"]
    assert listing(tmp_path) == ["in_files", "period_files", "t_files"]


def test_summarize_writes_the_period_report_folder_with_the_maps(series, tmp_path):
    from smdownscale.core.summarize import summarize

    report = str(tmp_path / "period.html")
    summarize(series, mean_path=str(tmp_path / "mean.tif"), report_path=report)
    assert listing(tmp_path) == ["in_files", "mean.tif", "period.html", "period_files"]
    assert listing(tmp_path / "period_files") == [FOLDER_MARKER, "figure-period-maps.png", "period-stats.csv"]


def _fail_companion(monkeypatch):
    from smdownscale.core.reports import files

    def full(tmp, text, final):
        with open(os.path.join(tmp, "figure-one.png"), "wb"):
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files, "write_companion", full)


def test_a_failed_companion_leaves_neither_page_nor_folder_and_the_old_ones_intact(tmp_path, monkeypatch):
    from smdownscale.core.reports import write_report

    path = str(tmp_path / "r.html")
    write_report(path, page("old"))
    before = {name: (tmp_path / "r_files" / name).read_bytes() for name in listing(tmp_path / "r_files")}
    old = (tmp_path / "r.html").read_text()
    _fail_companion(monkeypatch)
    with pytest.raises(SmdError, match=r"Could not write .*r_files: the disk is full"):
        write_report(path, page("new"))
    assert (tmp_path / "r.html").read_text() == old   # the previous report untouched, no temporaries
    assert {name: (tmp_path / "r_files" / name).read_bytes() for name in listing(tmp_path / "r_files")} == before
    assert listing(tmp_path) == ["r.html", "r_files"]
    monkeypatch.undo()
    # the page is renamed first; when the folder's rename then fails, the new page is removed
    fresh = str(tmp_path / "fresh.html")
    monkeypatch.setattr(outputs, "_replace_folder", lambda tmp, final: (_ for _ in ()).throw(
        OSError(errno.EIO, "Input/output error")))
    with pytest.raises(SmdError, match=r"Could not write .*fresh_files: an input/output error"):
        write_report(fresh, page())
    assert listing(tmp_path) == ["r.html", "r_files"]


def test_explanation_report_failure_leaves_nothing(tmp_path, monkeypatch):
    from smdownscale.core.explain import write_explanation_report

    rows = [{"partition": "WP", "predictor": name, "mean_abs_shap": value, "n_samples": 50}
            for name, value in (("dem", 0.02), ("ndvi", 0.01))]
    samples = {"WP": {"names": ["dem", "ndvi"], "shap": np.random.default_rng(0).normal(size=(50, 2)) * 0.01,
                      "values": np.random.default_rng(1).random((50, 2))}}
    _fail_companion(monkeypatch)
    with pytest.raises(SmdError, match=r"Could not write .*explain_files: the disk is full"):
        write_explanation_report(rows, samples, str(tmp_path / "explain.html"))
    assert listing(tmp_path) == []


def test_training_model_report_and_folder_are_written_together(tmp_path, monkeypatch):
    """A companion that cannot be written leaves no model and no page (train's write_together)."""
    from smdownscale.core import train

    report = train.TrainingReport(rows=[{"partition": "WP", "model": "Stacking", "n_train": 70, "n_test": 30,
                                         "r_train": 0.99, "rmse_train": 0.001, "r_test": 0.9, "rmse_test": 0.002}],
                                  partitions=[], settings={}, dates=[], predictors=[], n_samples=100)
    written = []

    def save_model(tmp, **kwargs):
        written.append(tmp)
        with open(tmp, "wb") as handle:
            handle.write(b"PK model")
    monkeypatch.setattr("smdownscale.core.modelfile.save_model", save_model)
    model_path = str(tmp_path / "m.smdmodel.zip")
    _fail_companion(monkeypatch)
    with pytest.raises(SmdError, match=r"Could not write .*training_files: the disk is full"):
        train._write_model_and_report(model_path, {}, report, str(tmp_path / "training.html"))
    assert written and listing(tmp_path) == []
