"""Reports (issue 10): the HTML pages' JSON blocks equal the algorithms' numbers, every figure is
present as an embedded PNG, and smdownscale:summarize's period maps equal numpy on small series."""
import datetime as dt
import math
import os
import re

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

PARTITIONS = ("HB", "JH", "WX")


def images(text):
    """{img id: alt} of the embedded PNG figures of a page."""
    found = {}
    for match in re.finditer(r"<img id='([^']+)' alt='([^']*)' src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text):
        assert len(match.group(3)) > 1000  # a real picture, not an empty PNG
        found[match.group(1)] = match.group(2)
    return found


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def companion(report_path):
    """Check the companion folder of an HTML report against the page; return its tables as
    ``{table id: [row dict of strings]}``.

    The folder holds one PNG per figure of the page (named after the figure id, the very bytes of
    its data URI), one CSV per table of the JSON block's ``tables`` and the plugin's marker."""
    import base64
    import csv

    from smdownscale.core.outputs import FOLDER_MARKER, report_files_folder
    from smdownscale.core.reports import read_report_data

    text = read(report_path)
    data = read_report_data(text)
    folder = report_files_folder(report_path)
    assert folder == os.path.splitext(str(report_path))[0] + "_files"
    embedded = {match.group(1): base64.b64decode(match.group(2)) for match in
                re.finditer(r"<img id='([^']+)' alt='[^']*' src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)}
    assert list(embedded) == data["figures"] and data["tables"]
    assert sorted(os.listdir(folder)) == sorted([f"{ident}.png" for ident in data["figures"]]
                                                + [f"{ident}.csv" for ident in data["tables"]] + [FOLDER_MARKER])
    for ident, png in embedded.items():
        with open(os.path.join(folder, f"{ident}.png"), "rb") as handle:
            assert handle.read() == png
    tables = {}
    for ident in data["tables"]:
        with open(os.path.join(folder, f"{ident}.csv"), encoding="utf-8", newline="") as handle:
            tables[ident] = list(csv.DictReader(handle))
    return tables


def number(text):
    """A CSV cell back as the JSON block's value: empty -> None, else int or float (exactly)."""
    if text == "":
        return None
    return int(text) if re.fullmatch(r"-?\d+", text) else float(text)


def assert_same(csv_rows, rows, keys):
    """CSV rows equal ``rows`` (dicts from the JSON block) in ``keys``, numbers exactly."""
    assert len(csv_rows) == len(rows)
    for got, expected in zip(csv_rows, rows):
        for key in keys:
            value = expected.get(key)
            assert (number(got[key]) if not isinstance(value, str) else got[key]) == value, (key, got, expected)


def write_series(path, values, dates, nodata=np.nan):
    values = np.asarray(values, dtype="float32")
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[2], height=values.shape[1],
                       count=values.shape[0], dtype="float32", crs="EPSG:32650",
                       transform=from_origin(500000.0, 4000000.0, 1000.0, 1000.0), nodata=nodata) as dst:
        dst.write(values)
        for band, date in enumerate(dates, start=1):
            dst.set_band_description(band, date)
    return str(path)


# ------------------------------------------------------------------ page builder
def test_numbers_are_shown_with_4_significant_digits_and_counts_as_integers():
    from smdownscale.core.reports.html import format_count, format_metric

    assert format_metric(0.000844039) == "0.0008440"
    assert format_metric(0.0105123) == "0.01051"
    assert format_metric(0.97036) == "0.9704"
    assert format_metric(0.99996) == "1.000"
    assert format_metric(-0.0123456) == "-0.01235"
    assert format_metric(1.58868e-05) == "1.589e-05"
    assert format_metric(float("nan")) == format_metric(None) == "n/a"
    assert format_count(12345.0) == "12,345" and format_count(7) == "7"


def test_json_block_reads_back_strict_and_cannot_close_the_script():
    from smdownscale.core.reports.html import Page, read_report_data

    page = Page("t", "training")
    page.table([("a", "A", "metric")], [{"a": 0.5}])
    text = page.render({"value": float("nan"), "name": "</script><b>", "numbers": np.arange(3)})
    assert text.count("</script>") == 1
    data = read_report_data(text)
    assert data["value"] is None and data["name"] == "</script><b>" and data["numbers"] == [0, 1, 2]
    assert data["kind"] == "training" and data["figures"] == []


def test_reports_do_not_import_matplotlib_until_a_page_is_built():
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, %r); import smdownscale.core.reports, smdownscale.core.summarize; "
            "print('matplotlib' in sys.modules)" % os.path.join(os.path.dirname(os.path.dirname(
                os.path.abspath(__file__))), ".plugin-path"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


# ------------------------------------------------------------------ report pages from plain data
def training_report_data(rng):
    rows = []
    for name in PARTITIONS + ("WP",):
        for k, model in enumerate(("XGBoost", "LightGBM", "CatBoost", "Stacking")):
            rows.append({"partition": name, "model": model, "n_train": 700, "n_test": 300,
                         "r_train": 0.99, "rmse_train": 0.0011, "r_test": 0.95 + 0.01 * k,
                         "rmse_test": 0.0016 - 0.0001 * k})
    test = {name: {"observed": rng.random(300) * 0.4, "predicted": rng.random(300) * 0.4}
            for name in PARTITIONS + ("WP",)}
    return {"rows": rows, "settings": {"folds": 5, "cv_strategy": "random", "seed": 42, "test_fraction": 0.3},
            "partitions": [{"partition": name, "n_samples": 1000, "base_models": ["xgboost", "lightgbm", "catboost"],
                            "weights": [0.2, 0.3, 0.5], "intercept": 0.001, "status": "trained"}
                           for name in PARTITIONS + ("WP",)],
            "dates": ["2019-04-01", "2019-04-02"], "predictors": ["ndvi", "lc", "doy"], "n_samples": 4000,
            "test_samples": test}


def test_training_page_from_plain_data():
    from smdownscale.core.reports import read_report_data, training_html

    report = training_report_data(np.random.default_rng(0))
    text = training_html(report, library_versions={"xgboost": "2.0"})
    data = read_report_data(text)
    assert data["rows"] == report["rows"]
    assert set(images(text)) == {"figure-test-scores", "figure-test-density"}
    assert data["test_samples"] == {name: {"n": 300} for name in PARTITIONS + ("WP",)}
    # the best test score per partition in bold: the Stacking row (highest R, lowest RMSE)
    assert "<b>0.9800</b>" in text and "<b>0.001300</b>" in text
    assert "5 folds by random samples" in text and "xgboost 2.0" in text
    assert list(text.figures) == ["figure-test-scores", "figure-test-density"]  # the page carries its files
    assert list(text.tables) == data["tables"] == ["table3", "meta-weights"]
    # without test samples (an old report) the page says so and has no density figure
    del report["test_samples"]
    text = training_html(report)
    assert set(images(text)) == {"figure-test-scores"} and "density scatter needs a new training run" in text


def test_validation_page_sentence_classes_and_figures():
    from smdownscale.core.reports import read_report_data, validation_html

    rng = np.random.default_rng(1)
    per_site, summary = [], []
    for product, ub in (("downscaled", 0.0105), ("soil_moisture_9km", 0.0099)):
        for s in range(9):
            per_site.append({"product": product, "site_id": f"s{s}", "x": 100.0 + s, "y": 30.0 + s % 3, "n": 7,
                             "r": float(rng.random()), "rmse": 0.02, "bias": float(rng.normal() * 0.01),
                             "ubrmse": 0.01, "partition": PARTITIONS[s % 3]})
        summary.append({"product": product, "n_sites": 9, "mean_r": 0.8, "mean_ubrmse": ub, "r_high": 6,
                        "r_moderate": 2, "r_low": 1, "ubrmse_meets": 9})
    dates = ["2019-04-01", "2019-04-11", "2019-04-21"]
    series = {f"s{s}": {"dates": dates, "observed": [0.2, 0.25, 0.3], "partition": PARTITIONS[s % 3],
                        "products": {"downscaled": [0.21, 0.24, 0.31], "soil_moisture_9km": [0.2, 0.2, 0.2]},
                        "precipitation": [0.0, 5.0, 1.0]} for s in range(9)}
    outlines = [(name, [[(99 + 3 * k, 29), (102 + 3 * k, 29), (102 + 3 * k, 33), (99 + 3 * k, 29)]])
                for k, name in enumerate(PARTITIONS)]
    text = validation_html(summary, per_site, [], outlines=outlines, timeseries=series)
    data = read_report_data(text)
    assert data["summary"] == summary and data["per_site"] == per_site
    assert data["sentences"][0].startswith("downscaled: mean ubRMSE 0.01050 vs 0.009900 for soil_moisture_9km (+6.1%, higher, worse)")
    assert set(images(text)) == {"figure-boxplots", "figure-site-map", "figure-r-ubrmse", "figure-timeseries"}
    assert "partition outlines" in images(text)["figure-site-map"]
    assert len(data["timeseries_sites"]) == 9 and data["outlines"] == list(PARTITIONS)
    assert "R &gt; 0.6" in text and "ubRMSE 0.04-0.06" in text


def test_timeseries_sites_are_spread_over_partitions():
    from smdownscale.core.reports.validation import select_sites

    rows = [{"product": "d", "site_id": f"{p}{i}", "n": i, "partition": p} for p in "ABC" for i in range(10)]
    chosen = select_sites(rows, "d", 6)
    assert sorted(chosen) == ["A8", "A9", "B8", "B9", "C8", "C9"]
    assert len(select_sites(rows, "d")) == 12


def test_explanation_page_beeswarm_per_partition_and_dependence_pair():
    from smdownscale.core.reports import explanation_html, read_report_data
    from smdownscale.core.reports.explanation import default_dependence_pair

    rng = np.random.default_rng(2)
    names = ["dem", "sand", "ndvi", "lst", "lc"]
    rows, samples = [], {}
    for name in PARTITIONS:
        shap = rng.normal(size=(200, 5)) * np.array([0.02, 0.001, 0.01, 0.005, 0.002])
        samples[name] = {"names": names, "shap": shap, "values": rng.random((200, 5))}
        importance = np.abs(shap).mean(axis=0)
        rows += [{"partition": name, "predictor": names[j], "mean_abs_shap": float(importance[j]), "n_samples": 200}
                 for j in np.argsort(-importance)]
    assert default_dependence_pair(rows, dynamic={"ndvi", "lst"}) == ("dem", "ndvi")
    text = explanation_html(rows, samples, dynamic={"ndvi", "lst"})
    data = read_report_data(text)
    assert data["rows"] == rows and data["dependence"] == ["dem", "ndvi"]
    assert set(images(text)) == {"figure-beeswarm-hb", "figure-beeswarm-jh", "figure-beeswarm-wx",
                                 "figure-importance", "figure-dependence"}
    text = explanation_html(rows, samples, dependence=("lst", "sand"))
    assert read_report_data(text)["dependence"] == ["lst", "sand"]


# ------------------------------------------------------------------ summarize (core)
DATES = ["2019-04-01", "2019-04-02", "2019-04-03", "2019-04-04"]


@pytest.fixture()
def small_series(tmp_path):
    # 1 x 3 pixels, 4 dates: [0.1, 0.2, nan, 0.3]; all nodata; a single valid 0.25 (fill -9999)
    values = np.array([[[0.1, -9999, np.nan]], [[0.2, np.nan, 0.25]], [[np.nan, np.nan, -9999]],
                       [[0.3, -9999, -9999]]], dtype="float32")
    return write_series(tmp_path / "sm.tif", values, DATES, nodata=-9999)


def read_band(path):
    with rasterio.open(path) as src:
        return src.read(1), src.descriptions[0], src.tags()


def test_summarize_hand_computed_mean_std_count(small_series, tmp_path):
    from smdownscale.core.summarize import summarize

    out = {key: str(tmp_path / f"{key}.tif") for key in ("mean", "std", "count")}
    result = summarize(small_series, mean_path=out["mean"], std_path=out["std"], count_path=out["count"])
    mean, description, tags = read_band(out["mean"])
    np.testing.assert_allclose(mean[0], [0.2, np.nan, 0.25], rtol=1e-6)
    std, _, _ = read_band(out["std"])
    np.testing.assert_allclose(std[0], [math.sqrt(0.02 / 3), np.nan, 0.0], rtol=1e-5, atol=1e-7)
    count, _, count_tags = read_band(out["count"])
    assert count[0].tolist() == [3, 0, 1]
    assert description == "mean 2019-04-01/2019-04-04" and tags["SMDOWNSCALE_N_DATES"] == "4"
    assert tags["UNITS"] == "m3/m3" and count_tags["SMDOWNSCALE_STATISTIC"] == "count"
    assert result["dates"] == DATES and result["pixels_valid"] == 2 and result["pixels"] == 3
    assert result["max_of_count"] == 3 and result["mean_of_mean"] == pytest.approx(0.225, rel=1e-6)


def test_summarize_date_range(small_series, tmp_path):
    from smdownscale.core.common import SmdError
    from smdownscale.core.summarize import summarize

    mean_path = str(tmp_path / "mean.tif")
    result = summarize(small_series, mean_path=mean_path, start_date="2019-04-02", end_date="2019-04-04")
    assert result["dates"] == DATES[1:]
    np.testing.assert_allclose(read_band(mean_path)[0][0], [0.25, np.nan, 0.25], rtol=1e-6)
    assert read_band(mean_path)[1] == "mean 2019-04-02/2019-04-04"
    with pytest.raises(SmdError, match="No date .* lies in 2019-05-01..the end; the series covers 2019-04-01..2019-04-04"):
        summarize(small_series, mean_path=str(tmp_path / "m2.tif"), start_date="2019-05-01")
    with pytest.raises(SmdError, match="end date 2019-04-01 is before the start date 2019-04-03"):
        summarize(small_series, mean_path=str(tmp_path / "m3.tif"), start_date="2019-04-03", end_date="2019-04-01")
    with pytest.raises(SmdError, match="not a date"):
        summarize(small_series, mean_path=str(tmp_path / "m4.tif"), start_date="April")
    with pytest.raises(SmdError, match="at least one output"):
        summarize(small_series)
    with pytest.raises(SmdError, match="also an input"):
        summarize(small_series, mean_path=small_series)
    assert sorted(os.listdir(tmp_path)) == ["mean.tif", "sm.tif"]


def test_summarize_refuses_percent_and_undated_rasters(tmp_path):
    from smdownscale.core.common import SmdError
    from smdownscale.core.summarize import summarize

    percent = write_series(tmp_path / "percent.tif", np.full((2, 2, 2), 25.0), DATES[:2])
    with pytest.raises(SmdError, match="divide them by 100"):
        summarize(percent, mean_path=str(tmp_path / "m.tif"))
    with rasterio.open(tmp_path / "static.tif", "w", driver="GTiff", width=2, height=2, count=1, dtype="float32",
                       crs="EPSG:32650", transform=from_origin(0, 10, 1, 1)) as dst:
        dst.write(np.full((1, 2, 2), 0.2, dtype="float32"))
    with pytest.raises(SmdError, match="not a soil-moisture series"):
        summarize(str(tmp_path / "static.tif"), mean_path=str(tmp_path / "m.tif"))
    assert not os.path.exists(tmp_path / "m.tif")


def test_summarize_block_wise_equals_numpy_and_stays_memory_flat(tmp_path, monkeypatch):
    import tracemalloc
    import warnings

    from smdownscale.core import summarize as module

    rng = np.random.default_rng(3)
    values = (rng.random((30, 180, 170)) * 0.45).astype("float32")
    values[rng.random(values.shape) < 0.25] = np.nan
    path = write_series(tmp_path / "big.tif", values, [(dt.date(2019, 4, 1) + dt.timedelta(days=i)).isoformat()
                                                        for i in range(30)])
    seen = []
    original = module._windows

    def recording(width, height, block_size):
        for window in original(width, height, block_size):
            seen.append((int(window.width), int(window.height)))
            yield window

    monkeypatch.setattr(module, "_windows", recording)
    tracemalloc.start()
    module.summarize(path, mean_path=str(tmp_path / "m16.tif"), std_path=str(tmp_path / "s16.tif"),
                     count_path=str(tmp_path / "c16.tif"), block_size=16)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert max(max(w, h) for w, h in seen) == 16 and len(seen) == 12 * 11
    # the whole series as float64 would be 7.3 MB: a 16-pixel block run holds a few blocks only
    assert peak < 1.5e6, peak
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = {"m": np.nanmean(values, 0), "s": np.nanstd(values, 0), "c": np.isfinite(values).sum(0)}
    for key in ("m", "s", "c"):
        got = read_band(str(tmp_path / f"{key}16.tif"))[0]
        np.testing.assert_allclose(got, expected[key], rtol=2e-6, atol=2e-7, equal_nan=True)
    with pytest.raises(module.SmdError, match="at least 16"):
        module.summarize(path, mean_path=str(tmp_path / "x.tif"), block_size=8)


def test_summarize_report_numbers_equal_the_outputs(small_series, tmp_path):
    from smdownscale.core.reports import read_report_data
    from smdownscale.core.summarize import summarize

    report = str(tmp_path / "period.html")
    result = summarize(small_series, mean_path=str(tmp_path / "mean.tif"), report_path=report)
    text = read(report)
    data = read_report_data(text)
    assert data["kind"] == "period" and set(images(text)) == {"figure-period-maps"}
    assert data["stats"]["mean_of_mean"] == pytest.approx(result["mean_of_mean"])
    assert data["stats"]["dates"] == DATES and data["stats"]["pixels_valid"] == 2
    stats = companion(report)["period-stats"]
    assert [row["output"] for row in stats] == ["mean", "std", "count"]
    for row in stats:
        for key in ("min", "mean", "max"):
            assert number(row[key]) == data["stats"][f"{key}_of_{row['output']}"] == result[f"{key}_of_{row['output']}"]
    from smdownscale.core.common import SmdError

    with pytest.raises(SmdError, match="use a .html"):
        summarize(small_series, mean_path=str(tmp_path / "m2.tif"), report_path=str(tmp_path / "p.pdf"))


# ------------------------------------------------------------------ summarize through Processing
@pytest.fixture()
def provider(qgis_processing):
    from smdownscale.processing.provider import SmDownscaleProvider

    provider = SmDownscaleProvider()
    provider.refreshAlgorithms()
    yield provider


def test_summarize_through_processing_run(provider, small_series, tmp_path):
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingOutputHtml

    algorithm = provider.algorithm("summarize")
    names = [d.name() for d in algorithm.parameterDefinitions()]
    for name in ("INPUT", "START_DATE", "END_DATE", "OUTPUT_MEAN", "OUTPUT_STD", "OUTPUT_COUNT", "OUTPUT_REPORT"):
        assert name in names
    assert algorithm.group() == "Downscaling" and all(d.help() for d in algorithm.parameterDefinitions())
    # every report is an HTML output, so the Processing Results Viewer lists it
    for alg_id in ("train", "validate", "explain", "summarize"):
        assert isinstance(provider.algorithm(alg_id).outputDefinition("OUTPUT_REPORT"), QgsProcessingOutputHtml)
    result = processing.run(algorithm, {
        "INPUT": small_series, "START_DATE": "2019-04-02", "OUTPUT_MEAN": str(tmp_path / "mean.tif"),
        "OUTPUT_STD": str(tmp_path / "std.tif"), "OUTPUT_COUNT": str(tmp_path / "count.tif"),
        "OUTPUT_REPORT": str(tmp_path / "period.html"), "BLOCK_SIZE": 16})
    assert result["N_DATES"] == 3 and result["OUTPUT_REPORT"] == str(tmp_path / "period.html")
    assert read_band(result["OUTPUT_COUNT"])[0][0].tolist() == [2, 0, 1]
    np.testing.assert_allclose(read_band(result["OUTPUT_MEAN"])[0][0], [0.25, np.nan, 0.25], rtol=1e-6)
    assert result["MEAN_OF_MEAN"] == pytest.approx(0.25)
    with pytest.raises(QgsProcessingException, match="before the start date"):
        processing.run(algorithm, {"INPUT": small_series, "START_DATE": "2019-04-03", "END_DATE": "2019-04-01",
                                   "OUTPUT_MEAN": str(tmp_path / "m2.tif")})
    with pytest.raises(QgsProcessingException, match="also an input"):
        processing.run(algorithm, {"INPUT": small_series, "OUTPUT_MEAN": small_series})


@pytest.mark.skipif(not os.path.exists("/usr/bin/qgis_process.bin"), reason="qgis_process.bin not installed")
def test_summarize_through_qgis_process(small_series, tmp_path):
    import json
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, SMDOWNSCALE_QGIS_PROFILE=str(tmp_path / "profile"), QT_QPA_PLATFORM="offscreen")
    report = str(tmp_path / "period.html")
    done = subprocess.run([os.path.join(root, "scripts", "qgis-process"), "run", "smdownscale:summarize", "--json",
                           "--", f"INPUT={small_series}", "END_DATE=2019-04-03",
                           f"OUTPUT_MEAN={tmp_path / 'mean.tif'}", f"OUTPUT_COUNT={tmp_path / 'count.tif'}",
                           f"OUTPUT_REPORT={report}"], capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(done.stdout)["results"]
    assert results["N_DATES"] == 3 and results["OUTPUT_REPORT"] == report
    assert read_band(str(tmp_path / "count.tif"))[0][0].tolist() == [2, 0, 1]
    from smdownscale.core.reports import read_report_data

    assert read_report_data(report)["stats"]["dates"] == DATES[:3]


# ------------------------------------------------------------------ train / validate / explain reports
FAST_TRAIN = {"BASE_MODELS": [0, 1], "FOLDS": 2, "N_ESTIMATORS": 20, "MIN_SAMPLES": 10, "THREADS": 2, "SEED": 7}


@pytest.fixture(scope="module")
def chain(qgis_processing, tmp_path_factory):
    """The small scenario prepared, trained (two partitions' worth of learners kept fast) and predicted."""
    from qgis.core import QgsApplication

    import processing
    from smdownscale.demo.scenario import make_scenario
    from smdownscale.processing.provider import SmDownscaleProvider

    registry = QgsApplication.processingRegistry()
    if registry.providerById("smdownscale") is None:
        _KEEP.append(SmDownscaleProvider())
        registry.addProvider(_KEEP[-1])
    out = tmp_path_factory.mktemp("reports")
    scenario = make_scenario(str(out / "scenario"), size="small", n_dates=21)
    dataset = processing.run("smdownscale:preprocess", {
        "PREDICTORS": scenario["predictors"], "COARSE_SM": scenario["soil_moisture"], "CATEGORICAL": "lc",
        "MASK_CLASSES": "lc:0", "OUTPUT": str(out / "dataset")})["OUTPUT"]
    train = processing.run("smdownscale:train", {
        "DATASET": dataset, "PARTITIONS": scenario["partitions"], "PARTITION_FIELD": "name", **FAST_TRAIN,
        "OUTPUT_MODEL": str(out / "model.smdmodel.zip"), "OUTPUT_REPORT": str(out / "training.html")})
    downscaled = processing.run("smdownscale:predict", {"DATASET": dataset, "MODEL": train["OUTPUT_MODEL"],
                                                        "USE_GLOBAL": True, "OUTPUT": str(out / "sm_1km.tif")})["OUTPUT"]
    return {"out": out, "scenario": scenario, "dataset": dataset, "train": train, "downscaled": downscaled}


_KEEP = []


def test_training_report_html_numbers_equal_the_training_report(chain):
    from smdownscale.core.modelfile import read_manifest
    from smdownscale.core.reports import read_report_data

    text = read(chain["train"]["OUTPUT_REPORT"])
    data = read_report_data(text)
    manifest = read_manifest(chain["train"]["OUTPUT_MODEL"])
    rows = manifest["metrics"]["rows"]
    assert [{k: row[k] for k in ("partition", "model", "n_train", "n_test")} for row in data["rows"]] == \
        [{k: row[k] for k in ("partition", "model", "n_train", "n_test")} for row in rows]
    for got, expected in zip(data["rows"], rows):
        for key in ("r_train", "rmse_train", "r_test", "rmse_test"):
            assert got[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-15)
    assert set(images(text)) == {"figure-test-scores", "figure-test-density"}
    partitions = {row["partition"] for row in rows}
    assert set(data["test_samples"]) == partitions
    assert all(data["test_samples"][p]["n"] == next(r["n_test"] for r in rows if r["partition"] == p)
               for p in partitions)
    assert data["settings"]["folds"] == 2 and data["settings"]["seed"] == 7 and data["library_versions"]
    assert {p["partition"] for p in data["partitions"]} == partitions
    # the companion folder: Table 3 and the weights at full precision, the figures as PNG
    tables = companion(chain["train"]["OUTPUT_REPORT"])
    assert_same(tables["table3"], data["rows"], ("partition", "model", "n_train", "n_test", "r_train",
                                                 "rmse_train", "r_test", "rmse_test"))
    assert_same(tables["table3"], rows, ("r_test", "rmse_test"))  # = the model file's metrics
    for row, summary in zip(tables["meta-weights"], data["partitions"]):
        assert row["partition"] == summary["partition"] and number(row["intercept"]) == summary["intercept"]
        assert [number(row[f"w_{m}"]) for m in summary["base_models"]] == summary["weights"]


def test_training_test_samples_in_the_core_report(chain, tmp_path):
    from smdownscale.core.metrics import r, rmse
    from smdownscale.core.train import train_model

    report = train_model(chain["dataset"], str(tmp_path / "m.smdmodel.zip"), base_models=("xgboost",), folds=2,
                         params={"xgboost": {"n_estimators": 10}}, min_samples=10, n_threads=2,
                         report_path=str(tmp_path / "r.json"))
    stack = next(row for row in report.rows() if row["model"] == "Stacking")
    sample = report["test_samples"][stack["partition"]]
    assert len(sample["observed"]) == stack["n_test"]
    assert r(sample["predicted"], sample["observed"]) == pytest.approx(stack["r_test"], rel=1e-6)
    assert rmse(sample["predicted"], sample["observed"]) == pytest.approx(stack["rmse_test"], rel=1e-6)
    import json

    with open(tmp_path / "r.json", encoding="utf-8") as handle:
        assert "test_samples" not in json.load(handle)  # arrays stay out of the JSON report


def test_validation_report_with_partitions_precipitation_and_time_series(chain, tmp_path):
    import processing
    from smdownscale.core.reports import read_report_data

    scenario = chain["scenario"]
    precipitation = write_series(tmp_path / "rain.tif", np.random.default_rng(0).random((21, 5, 6)) * 10,
                                 scenario["dates"])
    with rasterio.open(scenario["soil_moisture"]) as src:  # on the soil-moisture grid
        with rasterio.open(precipitation, "r+") as dst:
            dst.crs, dst.transform = src.crs, src.transform
    result = processing.run("smdownscale:validate", {
        "DOWNSCALED": chain["downscaled"], "OTHER_PRODUCTS": [scenario["soil_moisture"]],
        "STATIONS": scenario["stations"], "SITE_FIELD": "site_id", "DATE_FIELD": "date", "VALUE_FIELD": "sm",
        "PARTITIONS": scenario["partitions"], "PARTITION_FIELD": "name", "PRECIPITATION": precipitation,
        "N_TIMESERIES_SITES": 4, "OUTPUT": str(tmp_path / "v.gpkg"), "OUTPUT_REPORT": str(tmp_path / "v.html")})
    text = read(result["OUTPUT_REPORT"])
    data = read_report_data(text)
    overall = [row for row in data["summary"] if row.get("partition") in (None, "all sites")]
    downscaled = next(row for row in overall if row["product"] == "sm_1km")
    assert downscaled["mean_r"] == pytest.approx(result["MEAN_R"]) and \
        downscaled["mean_ubrmse"] == pytest.approx(result["MEAN_UBRMSE"])
    per_partition = [row for row in data["summary"] if row.get("partition") not in (None, "all sites")]
    assert {row["partition"] for row in per_partition} <= {"HB", "JH", "WX", "YJ", "WN"} and per_partition
    for product in ("sm_1km", "soil_moisture_9km"):
        assert sum(row["n_sites"] for row in per_partition if row["product"] == product) <= \
            next(row["n_sites"] for row in overall if row["product"] == product)
    assert all(row["partition"] for row in data["per_site"] if row["product"] == "sm_1km")
    assert data["sentences"][0].startswith("sm_1km: mean ubRMSE ")
    assert set(images(text)) == {"figure-boxplots", "figure-site-map", "figure-r-ubrmse", "figure-timeseries"}
    assert len(data["timeseries_sites"]) == 4 and data["outlines"]
    tables = companion(result["OUTPUT_REPORT"])
    assert_same(tables["per-site"], data["per_site"], ("product", "site_id", "partition", "x", "y", "n", "r",
                                                      "rmse", "bias", "ubrmse"))
    assert_same(tables["summary"], [dict(row, partition=row.get("partition") or "all sites")
                                    for row in data["summary"]],
                [key for key in tables["summary"][0] if key != "partition"])
    assert number(next(row for row in tables["summary"] if row["product"] == "sm_1km"
                       and row["partition"] == "all sites")["mean_ubrmse"]) == pytest.approx(result["MEAN_UBRMSE"])
    assert "bars: precipitation" in text
    # the same result without partitions: no per-partition rows
    result = processing.run("smdownscale:validate", {
        "DOWNSCALED": chain["downscaled"], "STATIONS": scenario["stations"], "SITE_FIELD": "site_id",
        "DATE_FIELD": "date", "VALUE_FIELD": "sm", "OUTPUT": str(tmp_path / "v2.gpkg"),
        "OUTPUT_REPORT": str(tmp_path / "v2.json")})
    import json

    with open(result["OUTPUT_REPORT"], encoding="utf-8") as handle:
        assert [row["product"] for row in json.load(handle)["summary"]] == ["sm_1km"]


def test_explanation_report_importance_equals_the_table(chain, tmp_path):
    import csv

    import processing
    from smdownscale.core.reports import read_report_data

    result = processing.run("smdownscale:explain", {
        "MODEL": chain["train"]["OUTPUT_MODEL"], "DATASET": chain["dataset"], "MAX_SAMPLES": 150,
        "OUTPUT_TABLE": str(tmp_path / "shap.csv"), "OUTPUT_REPORT": str(tmp_path / "explain.html")})
    text = read(result["OUTPUT_REPORT"])
    data = read_report_data(text)
    with open(tmp_path / "shap.csv", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert [(row["partition"], row["predictor"]) for row in data["rows"]] == \
        [(row["partition"], row["predictor"]) for row in table]
    for got, row in zip(data["rows"], table):
        assert got["mean_abs_shap"] == pytest.approx(float(row["mean_abs_shap"]), rel=1e-6)
    partitions = {row["partition"] for row in table}
    from smdownscale.core.reports.html import slug

    assert set(images(text)) == {f"figure-beeswarm-{slug(p)}" for p in partitions} | {
        "figure-importance", "figure-dependence"}
    first, second = data["dependence"]
    assert first != "doy" or second != "doy"
    tables = companion(result["OUTPUT_REPORT"])
    assert [row["predictor"] for row in tables["importance"]] == list(data["importance_overall"])
    for row in tables["importance"]:
        assert number(row["overall"]) == data["importance_overall"][row["predictor"]]
        for got in data["rows"]:
            if got["predictor"] == row["predictor"]:
                assert number(row[f"p_{got['partition']}"]) == got["mean_abs_shap"]
    assert_same(tables["samples"], [{"partition": p, "n": data["n_samples"][p]} for p in data["partitions"]],
                ("partition", "n"))
    result = processing.run("smdownscale:explain", {
        "MODEL": chain["train"]["OUTPUT_MODEL"], "DATASET": chain["dataset"], "MAX_SAMPLES": 50,
        "DEPENDENCE": "dem,ndvi", "OUTPUT_TABLE": str(tmp_path / "shap2.csv"),
        "OUTPUT_REPORT": str(tmp_path / "explain2.html")})
    assert read_report_data(result["OUTPUT_REPORT"])["dependence"] == ["dem", "ndvi"]
    # a temporary table (a memory layer: what the shipped chain's explain step writes) is not a file
    result = processing.run("smdownscale:explain", {
        "MODEL": chain["train"]["OUTPUT_MODEL"], "DATASET": chain["dataset"], "MAX_SAMPLES": 20,
        "OUTPUT_TABLE": "TEMPORARY_OUTPUT"})
    layer = result["OUTPUT_TABLE"]
    assert layer.providerType() == "memory" and layer.featureCount() == len(table)
    # a report whose companion folder would replace a folder the plugin did not write: refused
    # before the SHAP run (the processing check covers the folder), nothing touched or created
    from qgis.core import QgsProcessingException

    (tmp_path / "explain3_files").mkdir()
    (tmp_path / "explain3_files" / "figure.svg").write_text("mine")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(QgsProcessingException, match=r"explain3_files \(the figures and tables of the report "
                                                     r".*explain3\.html\) is a folder holding files this plugin"):
        processing.run("smdownscale:explain", {
            "MODEL": chain["train"]["OUTPUT_MODEL"], "DATASET": chain["dataset"], "MAX_SAMPLES": 50,
            "OUTPUT_TABLE": str(tmp_path / "shap3.csv"), "OUTPUT_REPORT": str(tmp_path / "explain3.html")})
    assert sorted(os.listdir(tmp_path)) == before and os.listdir(tmp_path / "explain3_files") == ["figure.svg"]
