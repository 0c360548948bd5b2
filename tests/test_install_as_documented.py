"""The README's install section, followed literally on this machine in a fresh QGIS profile.

1. ``make package`` (scripts/make-package) and *Install from ZIP* (= unzip into the profile's
   ``python/plugins`` and enable the plugin).
2. Start QGIS (the real desktop, under Xvfb): the plugin says once that learners are missing;
   *Check dependencies...* > *Install* runs pip into ``<profile>/python/smdownscale-deps`` for the
   Python QGIS runs, streaming its output, while the event loop keeps running; the optional
   packages (lleaves with numba/llvmlite, dask + distributed) are ticked by default and come too.
3. Restart QGIS: every algorithm of the chain runs on the built-in scenario, the learners coming
   only from that folder (the QGIS processes get no PYTHONPATH, so nothing of ``.venv`` is seen);
   one prediction runs again with ``DASK_SCHEDULER=local:2`` (a LocalCluster started from inside
   the desktop, its workers spawned with QGIS's Python) and must equal the in-process bands exactly.

pip reuses pip's cache (``PIP_CACHE_DIR`` = the cache of the user running the test), so the
install takes about a minute once the wheels are cached. Marked ``slow`` (CI runs it; deselect
locally with ``-m "not slow"``); ``SMDOWNSCALE_SKIP_INSTALL_TEST=1`` skips it.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QGIS = shutil.which("qgis")
XVFB = shutil.which("xvfb-run")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(400),
    pytest.mark.skipif(os.environ.get("SMDOWNSCALE_SKIP_INSTALL_TEST") == "1", reason="asked to skip"),
    pytest.mark.skipif(not (QGIS and XVFB), reason="needs the QGIS desktop and xvfb-run"),
]

STEP2 = r'''
import faulthandler, json, sys, time, traceback
FAULTS = open(RESULT + ".faults", "w")
faulthandler.enable(FAULTS)
out = {"ok": False}
try:
    import qgis.utils
    from qgis.core import QgsApplication
    from qgis.PyQt.QtCore import QCoreApplication, QEventLoop
    out["plugins"] = sorted(qgis.utils.plugins)
    plugin = qgis.utils.plugins["smdownscale"]
    bar = qgis.utils.iface.messageBar()
    out["notice"] = [w.findChild(__import__("qgis.PyQt.QtWidgets", fromlist=["QPushButton"]).QPushButton,
                                 "smdownscale_dependencies_notice_button") is not None for w in bar.items()]
    menu_entries = [a.objectName() for a in plugin.actions]
    out["menu_has_check"] = "smdownscale_dependencies" in menu_entries
    dialog = plugin.show_dependencies()
    out["before"] = dialog.rows
    out["python"] = dialog.python
    out["target"] = dialog.target
    out["command"] = dialog.command.text()
    out["optional_before"] = dialog.optional_rows
    out["optional_ticked"] = dialog.selected_optional()
    dialog.install_button.click()
    started, longest, last = time.monotonic(), 0.0, time.monotonic()
    while dialog.running() or dialog.last_exit_code is None:
        QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
        now = time.monotonic()
        longest, last = max(longest, now - last), now
        if now - started > 300:
            dialog.cancel()
            break
        time.sleep(0.01)
    out["install_seconds"] = time.monotonic() - started
    out["longest_event_loop_gap"] = longest
    out["exit_code"] = dialog.last_exit_code
    out["pip_output_tail"] = dialog.output.toPlainText()[-3000:]
    out["after"] = dialog.rows
    out["optional_after"] = dialog.optional_rows
    out["ok"] = True
except Exception:
    out["error"] = traceback.format_exc()
with open(RESULT, "w") as handle:
    json.dump(out, handle, default=str)
from qgis.PyQt.QtCore import QTimer
QTimer.singleShot(0, qgis.utils.iface.actionExit().trigger)
'''

STEP3 = r'''
import faulthandler, json, os, sys, traceback
FAULTS = open(RESULT + ".faults", "w")
faulthandler.enable(FAULTS)
out = {"ok": False}
try:
    import qgis.utils
    import processing
    from qgis.core import QgsApplication
    out["plugins"] = sorted(qgis.utils.plugins)
    from smdownscale.demo.scenario import make_scenario
    s = make_scenario(os.path.join(WORK, "scenario"), size="small")
    runs = {}
    prepared = processing.run("smdownscale:preprocess", {
        "PREDICTORS": s["predictors"], "COARSE_SM": s["soil_moisture"], "CATEGORICAL": "lc",
        "MASK_CLASSES": "lc:0", "OUTPUT": os.path.join(WORK, "dataset")})["OUTPUT"]
    runs["preprocess"] = prepared
    trained = processing.run("smdownscale:train", {
        "DATASET": prepared, "PARTITIONS": s["partitions"], "PARTITION_FIELD": "name",
        "BASE_MODELS": [0, 1, 2], "FOLDS": 2, "N_ESTIMATORS": 20, "MIN_SAMPLES": 10, "THREADS": 2,
        "OUTPUT_MODEL": os.path.join(WORK, "model.smdmodel.zip"),
        "OUTPUT_REPORT": os.path.join(WORK, "report.json")})
    runs["train"] = trained["R_TEST"]
    predicted = processing.run("smdownscale:predict", {
        "DATASET": prepared, "MODEL": trained["OUTPUT_MODEL"], "OUTPUT": os.path.join(WORK, "sm.tif")})["OUTPUT"]
    runs["predict"] = predicted
    # the same prediction on a LocalCluster of 2 worker processes started from this desktop
    # (workers spawned with the QGIS Python, importing the plugin and the deps folder): three
    # dates, 16-pixel blocks (27 tasks); the bands must equal the in-process ones exactly
    import multiprocessing, time
    import numpy, rasterio
    from qgis.core import QgsProcessingFeedback
    from smdownscale.core.common import python_interpreter

    class Log(QgsProcessingFeedback):
        lines = []

        def pushInfo(self, info):
            self.lines.append(info)
            super().pushInfo(info)

    with rasterio.open(predicted) as src:
        dates = list(src.descriptions)
        picked = [dates[0], dates[len(dates) // 2], dates[-1]]
        local = numpy.stack([src.read(dates.index(d) + 1) for d in picked])
    started = time.monotonic()
    on_dask = processing.run("smdownscale:predict", {
        "DATASET": prepared, "MODEL": trained["OUTPUT_MODEL"], "DATES": ",".join(picked), "BLOCK_SIZE": 16,
        "DASK_SCHEDULER": "local:2", "OUTPUT": os.path.join(WORK, "sm_dask.tif")}, feedback=Log())["OUTPUT"]
    with rasterio.open(on_dask) as src:
        remote = src.read()
        out["dask"] = {"seconds": time.monotonic() - started, "dates": list(src.descriptions), "picked": picked,
                       "equal": bool(numpy.array_equal(local, remote, equal_nan=True)),
                       "finite": int(numpy.isfinite(remote).sum()), "pixels": int(remote.size),
                       "log": [line for line in Log.lines if "Dask" in line],
                       "children_left": len(multiprocessing.active_children()),
                       "sys_executable": sys.executable, "interpreter": python_interpreter()}
    validated = processing.run("smdownscale:validate", {
        "DOWNSCALED": predicted, "STATIONS": s["stations"], "OUTPUT": os.path.join(WORK, "validation.gpkg"),
        "OUTPUT_REPORT": os.path.join(WORK, "validation.html")})
    runs["validate"] = validated["MEAN_R"]
    processing.run("smdownscale:explain", {
        "MODEL": trained["OUTPUT_MODEL"], "DATASET": prepared, "MAX_SAMPLES": 30,
        "OUTPUT_TABLE": os.path.join(WORK, "shap.csv")})
    runs["explain"] = os.path.isfile(os.path.join(WORK, "shap.csv"))
    out["runs"] = runs
    import xgboost, lightgbm, catboost, sklearn, shap, lleaves, dask, distributed
    out["learners"] = {m.__name__: m.__file__ for m in (xgboost, lightgbm, catboost, sklearn, shap)}
    out["optional"] = {m.__name__: m.__file__ for m in (lleaves, dask, distributed)}
    out["numpy"] = sys.modules["numpy"].__file__
    out["ok"] = True
except Exception:
    out["error"] = traceback.format_exc()
with open(RESULT, "w") as handle:
    json.dump(out, handle, default=str)
from qgis.PyQt.QtCore import QTimer
QTimer.singleShot(0, qgis.utils.iface.actionExit().trigger)
'''


def _pip_cache_dir():
    done = subprocess.run(["/usr/bin/python3", "-m", "pip", "cache", "dir"], capture_output=True, text=True)
    return done.stdout.strip() or None


def _run_qgis(profiles, script_text, result, env, timeout):
    script = os.path.join(profiles, os.path.basename(result) + ".py")
    with open(script, "w") as handle:
        handle.write(f"RESULT = {result!r}\nWORK = {os.path.dirname(result)!r}\n" + textwrap.dedent(script_text))
    started = time.monotonic()
    done = subprocess.run([XVFB, "-a", QGIS, "--profiles-path", profiles, "--nologo", "--noversioncheck",
                           "--code", script], capture_output=True, text=True, env=env, timeout=timeout)
    if not os.path.isfile(result):
        faults = open(result + ".faults").read() if os.path.isfile(result + ".faults") else ""
        raise AssertionError(f"QGIS wrote no result (exit {done.returncode}):\n{done.stderr[-3000:]}\n{faults[-6000:]}")
    with open(result) as handle:
        out = json.load(handle)
    out["seconds"] = time.monotonic() - started
    assert out.get("ok"), out.get("error")
    return out


@pytest.fixture
def work_dir():
    """A folder of its own: pytest's basetemp keeps only the last 3 runs, and other sessions
    running pytest meanwhile would delete a profile while QGIS uses it."""
    import tempfile
    from pathlib import Path

    folder = tempfile.mkdtemp(prefix="smdownscale-install-test-")
    yield Path(folder)
    if os.environ.get("SMDOWNSCALE_KEEP_INSTALL_TEST") != "1":
        shutil.rmtree(folder, ignore_errors=True)


def test_readme_install_steps_in_a_fresh_profile(work_dir):
    tmp_path = work_dir
    # 1. make package, Install from ZIP (unzip into the profile), enable the plugin
    zip_path = tmp_path / "smdownscale.zip"
    subprocess.run([os.path.join(ROOT, "scripts", "make-package"), str(zip_path)], check=True,
                   capture_output=True, timeout=120)
    profiles = tmp_path / "profiles-root"
    profile = profiles / "profiles" / "default"
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(plugins)
    (profile / "QGIS").mkdir()
    (profile / "QGIS" / "QGIS3.ini").write_text("[PythonPlugins]\nsmdownscale=true\nprocessing=true\n")
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "SMDOWNSCALE_PYTHON", "SMDOWNSCALE_DEPS")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env.pop("QT_QPA_PLATFORM", None)       # the desktop runs on Xvfb, as a user's would on a display
    cache = _pip_cache_dir()
    if cache:
        env["PIP_CACHE_DIR"] = cache
    deps = profile / "python" / "smdownscale-deps"

    # 2. start QGIS: the notice, Check dependencies... > Install
    step2 = _run_qgis(str(profiles), STEP2, str(tmp_path / "step2.json"), env, timeout=360)
    assert "smdownscale" in step2["plugins"]
    assert step2["menu_has_check"]
    assert any(step2["notice"]), "no message-bar notice about the missing learners"
    assert {row["state"] for row in step2["before"]} == {"missing"}, step2["before"]
    assert step2["python"] == f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}" or \
        step2["python"] == "/usr/bin/python3", step2["python"]
    assert step2["target"].rstrip("/") == str(deps)
    assert step2["command"].startswith(f"{step2['python']} -m pip install --disable-pip-version-check --upgrade "
                                       f"--target {deps} -c {plugins / 'smdownscale' / 'requirements.txt'} ")
    # the optional packages are listed, missing, and ticked by default (README: step 2)
    optional = ["lleaves", "numba", "llvmlite", "dask", "distributed"]
    assert [row["import"] for row in step2["optional_before"]] == optional
    assert {row["state"] for row in step2["optional_before"]} == {"missing"}, step2["optional_before"]
    assert step2["optional_ticked"] == ["compiled", "dask"]
    for name in optional:
        assert f" {name} " in step2["command"], name
    assert step2["exit_code"] == 0, step2["pip_output_tail"]
    assert "Successfully installed" in step2["pip_output_tail"]
    assert step2["longest_event_loop_gap"] < 1.0, step2["longest_event_loop_gap"]
    assert {row["state"] for row in step2["after"] + step2["optional_after"]} == {"ok"}, \
        step2["after"] + step2["optional_after"]                       # every pin, as requirements.txt says
    print(f"install: {step2['install_seconds']:.0f} s, longest event-loop gap "
          f"{step2['longest_event_loop_gap'] * 1000:.0f} ms")

    # 3. restart QGIS: every algorithm runs, with the learners from the dependency folder
    (tmp_path / "work").mkdir()
    step3 = _run_qgis(str(profiles), STEP3, str(tmp_path / "work" / "step3.json"), env, timeout=360)
    for name, where in {**step3["learners"], **step3["optional"]}.items():
        assert where.startswith(str(deps)), (name, where)
    assert step3["numpy"].startswith("/usr/lib/python3/dist-packages/")   # Debian's numpy still wins
    assert set(step3["runs"]) == {"preprocess", "train", "predict", "validate", "explain"}
    assert step3["runs"]["explain"] is True
    # DASK_SCHEDULER=local:2 from inside the desktop: the same numbers as in process
    dask = step3["dask"]
    assert dask["dates"] == dask["picked"] and dask["equal"], dask
    assert dask["finite"] > 0.5 * dask["pixels"], dask
    assert any("local cluster of 2 worker process(es)" in line for line in dask["log"]), dask["log"]
    assert dask["children_left"] == 0, dask                              # the cluster was shut down
    print(f"chain in the restarted QGIS: {step3['seconds']:.0f} s (of which predict on local:2 "
          f"{dask['seconds']:.1f} s; sys.executable {dask['sys_executable']}, workers run "
          f"{dask['interpreter']})")
