"""scripts/qgis-process: Debian's qgis_process.bin with the plugin, single algorithms and the
shipped .model3 chain run as a subprocess, JSON outputs checked."""
import json
import os
import subprocess

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRAPPER = os.path.join(ROOT, "scripts", "qgis-process")

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/qgis_process.bin"),
                                reason="Debian's /usr/bin/qgis_process.bin is not installed")


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    """A fresh qgis_process profile, so the wrapper's one-time `plugins enable` runs too."""
    return str(tmp_path_factory.mktemp("qgis-profile"))


def qgis_process(profile, *args, check=True):
    env = dict(os.environ, SMDOWNSCALE_QGIS_PROFILE=profile, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([WRAPPER, *args], capture_output=True, text=True, env=env, timeout=240)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def run_json(profile, alg_id, parameters):
    args = []
    for name, value in parameters.items():
        for item in (value if isinstance(value, list) else [value]):
            args.append(f"{name}={item}")
    done = qgis_process(profile, "run", alg_id, "--json", "--", *args)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    from smdownscale.demo.scenario import make_scenario

    # 21 days: the stations read on the 1st, 11th and 21st, three pairs per site for R
    return make_scenario(str(tmp_path_factory.mktemp("scenario")), size="small", n_dates=21)


def test_wrapper_lists_the_provider_and_enables_the_plugin_once(profile):
    listing = qgis_process(profile, "list").stdout
    for alg_id in ("preprocess", "train", "predict", "validate", "explain", "downscaling_chain"):
        assert f"smdownscale:{alg_id}\t" in listing
    ini = os.path.join(profile, "profiles", "default", "QGIS", "QGIS3.ini")
    with open(ini, encoding="utf-8") as handle:
        assert "smdownscale=true" in handle.read()
    assert os.path.islink(os.path.join(ROOT, ".plugin-path", "smdownscale"))
    # the help shows the fixed parameter names
    helptext = qgis_process(profile, "help", "smdownscale:validate").stdout
    for name in ("DOWNSCALED", "OTHER_PRODUCTS", "STATIONS", "SITE_FIELD", "MEAN_UBRMSE"):
        assert name in helptext


def test_preprocess_json_and_a_failing_run(profile, scenario, tmp_path):
    result = run_json(profile, "smdownscale:preprocess", {
        "PREDICTORS": scenario["predictors"], "COARSE_SM": scenario["soil_moisture"],
        "MASK_CLASSES": "lc:0", "OUTPUT": str(tmp_path / "dataset")})
    assert result["algorithm_details"]["id"] == "smdownscale:preprocess"
    assert result["results"]["OUTPUT"] == str(tmp_path / "dataset")
    with open(tmp_path / "dataset" / "dataset.json", encoding="utf-8") as handle:
        assert json.load(handle)["dates"] == scenario["dates"]
    failed = qgis_process(profile, "run", "smdownscale:train", "--", f"DATASET={tmp_path}",
                          f"OUTPUT_MODEL={tmp_path / 'm.smdmodel.zip'}", check=False)
    assert failed.returncode != 0
    assert "is not a prepared dataset folder" in failed.stdout + failed.stderr
    assert not (tmp_path / "m.smdmodel.zip").exists()


def test_whole_chain_through_the_model3(profile, scenario, tmp_path):
    import rasterio
    from qgis.core import QgsVectorLayer

    out = tmp_path
    result = run_json(profile, "smdownscale:downscaling_chain", {
        "PREDICTORS": scenario["predictors"], "COARSE_SM": scenario["soil_moisture"], "MASK_CLASSES": "lc:0",
        "STATIONS": scenario["stations"], "N_ESTIMATORS": 20, "FOLDS": 2, "MIN_SAMPLES": 10, "THREADS": 2,
        "preprocess:Prepared dataset": str(out / "dataset"), "train:Model file": str(out / "model.smdmodel.zip"),
        "train:Training report": str(out / "training.json"), "predict:Downscaled soil moisture": str(out / "sm_1km.tif"),
        "validate:Validation points": str(out / "validation.gpkg"),
        "validate:Validation report": str(out / "validation.json"),
        "explain:Explanation report": str(out / "explanation.html")})
    results = result["results"]
    assert results["predict:Downscaled soil moisture"] == str(out / "sm_1km.tif")
    assert results["train:Model file"] == str(out / "model.smdmodel.zip")
    assert results["validate:Validation points"] == str(out / "validation.gpkg")

    with open(out / "training.json", encoding="utf-8") as handle:
        training = json.load(handle)
    assert {row["partition"] for row in training["rows"]} == {"WP"}  # no partitions: one global model
    assert {row["model"] for row in training["rows"]} == {"XGBoost", "LightGBM", "CatBoost", "Stacking"}

    with rasterio.open(out / "sm_1km.tif") as src:
        assert list(src.descriptions) == scenario["dates"]
        values = src.read()
    with rasterio.open(scenario["truth"]) as src:
        truth = src.read()
    both = np.isfinite(values) & np.isfinite(truth)
    assert both.mean() > 0.9
    assert float(np.sqrt(np.mean((values[both] - truth[both]) ** 2))) < 0.06

    with open(out / "validation.json", encoding="utf-8") as handle:
        report = json.load(handle)
    products = {row["product"] for row in report["summary"]}
    assert products == {"sm_1km", "soil_moisture_9km"}
    layer = QgsVectorLayer(str(out / "validation.gpkg"), "validation", "ogr")
    assert layer.isValid()
    features = list(layer.getFeatures())
    summary = next(row for row in report["summary"] if row["product"] == "sm_1km")
    downscaled = [f for f in features if f["product"] == "sm_1km"]
    assert len(downscaled) == summary["n_sites"] > 0
    assert all(f["n"] == 3 for f in downscaled)
    ubrmse = [f["ubrmse"] for f in downscaled]
    assert summary["mean_ubrmse"] == pytest.approx(float(np.mean(ubrmse)), abs=1e-9)
    assert summary["mean_ubrmse"] < 0.06

    # the explain step: SHAP of the trained (global) model on a sample of its training cells,
    # the report exposed with its companion folder of figures and tables
    import csv

    from smdownscale.core.reports import read_report_data
    from smdownscale.processing.models.chain_layout import CHAIN_EXPLAIN_SAMPLES

    assert results["explain:Explanation report"] == str(out / "explanation.html")
    explanation = read_report_data(out / "explanation.html")
    assert explanation["partitions"] == ["WP"] and explanation["figures"] == [
        "figure-beeswarm-wp", "figure-importance", "figure-dependence"]
    stack = next(row for row in training["rows"] if row["model"] == "Stacking")
    assert explanation["n_samples"] == {"WP": min(CHAIN_EXPLAIN_SAMPLES, stack["n_train"])}
    assert {row["predictor"] for row in explanation["rows"]} == {"lc" if name.startswith("lc_") else name
                                                               for name in training["predictors"]}
    with open(out / "explanation_files" / "importance.csv", encoding="utf-8", newline="") as handle:
        importance = {row["predictor"]: float(row["p_WP"]) for row in csv.DictReader(handle)}
    assert importance == {row["predictor"]: row["mean_abs_shap"] for row in explanation["rows"]}
    assert sorted(os.listdir(out / "explanation_files")) == sorted(
        [".smdownscale-output", "importance.csv", "samples.csv"] + [f"{f}.png" for f in explanation["figures"]])


def test_make_package_builds_a_clean_plugin_zip(tmp_path):
    import zipfile

    target = tmp_path / "smdownscale-test.zip"
    subprocess.run([os.path.join(ROOT, "scripts", "make-package"), str(target)], check=True,
                   capture_output=True, timeout=60)
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
    assert all(name.startswith("smdownscale/") for name in names)
    for required in ("__init__.py", "metadata.txt", "plugin.py", "processing/provider.py",
                     "processing/models/downscaling_chain.model3", "icons/smdownscale.svg", "core/common.py"):
        assert f"smdownscale/{required}" in names
    for name in names:
        parts = name.split("/")
        assert parts[1] not in ("tests", "bench", "scripts", ".ci", ".venv", ".plugin-path"), name
        assert "__pycache__" not in parts and not name.endswith(".pyc") and not parts[-1].startswith(".")


def test_wrapper_works_without_a_writable_home(tmp_path):
    """CI runners may have no (writable) HOME: the wrapper then keeps its profile in TMPDIR."""
    env = {key: value for key, value in os.environ.items() if key not in ("SMDOWNSCALE_QGIS_PROFILE",
                                                                         "XDG_RUNTIME_DIR")}
    home = tmp_path / "home"
    home.write_text("HOME is a file here, so nothing can be written below it")
    env.update(HOME=str(home), TMPDIR=str(tmp_path), QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([WRAPPER, "list"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "smdownscale:train\t" in done.stdout
    profile = tmp_path / f"smdownscale-qgis-profile-{os.getuid()}"
    assert (profile / "profiles" / "default" / "QGIS" / "QGIS3.ini").is_file()
    assert home.is_file()
