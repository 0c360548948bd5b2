"""Issue 8, groups 1-4, 7 (grid size), 9 (preprocess plausibility), 10: outputs never destroy what
they were not asked to replace, every write is checked, datasets are replaced atomically and
read consistently, and failures never reach the user as a traceback."""
import glob
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import rasterio

from smdownscale.core import outputs
from smdownscale.core.common import SmdError
from smdownscale.core.dataset import DATASET_ID_TAG, Dataset
from smdownscale.core.outputs import atomic_output, check_outputs, remove_stale_temporaries
from smdownscale.core.predict import predict
from smdownscale.core.preprocess import preprocess
from smdownscale.demo.scenario import make_scenario
from smdownscale.core.train import train_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WRAPPER = os.path.join(ROOT, "scripts", "qgis-process")
TINY = {name: {"n_estimators": 8} for name in ("xgboost", "lightgbm", "catboost")}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The small scenario, its dataset and a tiny model (no partitions)."""
    root = tmp_path_factory.mktemp("safety")
    scenario = make_scenario(str(root / "scenario"), size="small", n_dates=6)
    dataset = str(root / "dataset")
    preprocess(scenario["predictors"], scenario["soil_moisture"], dataset)
    model = str(root / "model.zip")
    train_model(dataset, model, params=TINY, folds=2, min_samples=5, n_threads=1, train_global=False)
    return {"root": root, "scenario": scenario, "dataset": dataset, "model": model}


def tree_digest(folder):
    """{relative path: bytes} of every file under ``folder``."""
    found = {}
    for path in sorted(glob.glob(os.path.join(folder, "**"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = handle.read()
    return found


def leftovers(folder):
    return sorted(name for name in os.listdir(folder) if ".tmp-" in name or ".old-" in name)


# -- group 1 and 2: nothing destroyed, inputs never overwritten --------------------------------
def test_a_model_never_replaces_a_folder(prepared, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(SmdError, match="is an existing folder; a file is never written over a folder"):
        train_model(prepared["dataset"], str(folder), params=TINY, folds=2, min_samples=5, n_threads=1)
    assert (folder / "notes.txt").read_text() == "keep me"


def test_a_model_over_the_input_dataset_is_refused_before_training(prepared):
    before = tree_digest(prepared["dataset"])
    with pytest.raises(SmdError, match="is also an input of this run"):
        train_model(prepared["dataset"], prepared["dataset"], params=TINY, folds=2, min_samples=5)
    for inside in ("dataset.json", "fine/ndvi.tif"):
        with pytest.raises(SmdError, match="lies inside the input"):
            train_model(prepared["dataset"], os.path.join(prepared["dataset"], inside), params=TINY)
    assert tree_digest(prepared["dataset"]) == before


@pytest.mark.parametrize("target", ["fine/ndvi.tif", "coarse/soil_moisture.tif", "dataset.json"])
def test_a_prediction_never_lands_inside_the_dataset(prepared, target):
    before = tree_digest(prepared["dataset"])
    with pytest.raises(SmdError, match="inside the input"):
        predict(prepared["dataset"], prepared["model"], os.path.join(prepared["dataset"], target))
    assert tree_digest(prepared["dataset"]) == before


def test_a_prediction_never_replaces_the_model_or_another_kind_of_file(prepared, tmp_path):
    model_bytes = open(prepared["model"], "rb").read()
    with pytest.raises(SmdError, match="is also an input"):
        predict(prepared["dataset"], prepared["model"], prepared["model"])
    assert open(prepared["model"], "rb").read() == model_bytes
    notes = tmp_path / "notes.csv"
    notes.write_text("a,b\n")
    with pytest.raises(SmdError, match=r"exists and is not a raster file \(.tif, .tiff\)"):
        check_outputs([(str(notes), "raster")])
    assert notes.read_text() == "a,b\n"


def test_a_model_over_the_partitions_file_is_refused(prepared):
    from smdownscale.core.partitions import Partitions

    gpkg = prepared["scenario"]["partitions"]
    before = open(gpkg, "rb").read()
    partitions = Partitions.from_file(gpkg, prepared["scenario"]["partition_field"])
    with pytest.raises(SmdError, match="is also an input of this run"):
        train_model(prepared["dataset"], gpkg, partitions=partitions, params=TINY)
    assert open(gpkg, "rb").read() == before


def test_a_dataset_never_replaces_a_foreign_folder_or_the_inputs_folder(prepared, tmp_path):
    scenario = prepared["scenario"]
    predictors_folder = os.path.dirname(scenario["predictors"][0])
    before = tree_digest(predictors_folder)
    with pytest.raises(SmdError, match="would replace the folder holding the input"):
        preprocess(scenario["predictors"], scenario["soil_moisture"], predictors_folder)
    assert tree_digest(predictors_folder) == before
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(SmdError, match="holding files this plugin did not write"):
        preprocess(scenario["predictors"], scenario["soil_moisture"], str(foreign))
    assert (foreign / "cat.jpg").read_bytes() == b"\xff\xd8"
    a_file = tmp_path / "dataset.txt"
    a_file.write_text("x")
    with pytest.raises(SmdError, match="exists and is a file"):
        preprocess(scenario["predictors"], scenario["soil_moisture"], str(a_file))


def test_an_unwritable_or_missing_output_folder_is_refused_before_work(prepared, tmp_path):
    with pytest.raises(SmdError, match="cannot write into /proc"):
        check_outputs([("/proc/smdownscale-out.tif", "raster")])
    with pytest.raises(SmdError, match="does not exist; create it"):
        predict(prepared["dataset"], prepared["model"], str(tmp_path / "missing" / "out.tif"))
    with pytest.raises(SmdError, match="is given for two outputs"):
        check_outputs([(str(tmp_path / "a.html"), "report"), (str(tmp_path / "a.html"), "model")])


def test_replacing_our_own_outputs_still_works(prepared, tmp_path):
    """The guard must not refuse what users do every day: run again into the same paths."""
    out = str(tmp_path / "again.tif")
    predict(prepared["dataset"], prepared["model"], out)
    first = rasterio.open(out).read()
    predict(prepared["dataset"], prepared["model"], out)
    np.testing.assert_array_equal(rasterio.open(out).read(), first)
    dataset = str(tmp_path / "ds")
    scenario = prepared["scenario"]
    os.makedirs(dataset)  # an empty folder chosen in a file dialog
    preprocess(scenario["predictors"], scenario["soil_moisture"], dataset)
    first_id = Dataset.open(dataset).dataset_id
    preprocess(scenario["predictors"], scenario["soil_moisture"], dataset)
    assert Dataset.open(dataset).dataset_id != first_id
    assert leftovers(str(tmp_path)) == []


# -- group 3: every write checked ----------------------------------------------------------------
@pytest.fixture()
def small_disk(tmp_path):
    """A 400 kB tmpfs (root in a container that allows mounts), else skip with the reason."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield str(mount_point)
    subprocess.run(["umount", str(mount_point)], check=False)


@pytest.mark.parametrize("residual_correction", [False, True])
def test_predict_on_a_full_disk_fails_and_leaves_nothing(prepared, small_disk, residual_correction):
    filler = os.path.join(small_disk, "filler.bin")
    with open(filler, "wb") as handle:  # leave 8 kB: less than the prediction needs
        handle.write(b"\0" * (392 * 1024))
    out = os.path.join(small_disk, "pred.tif")
    with pytest.raises(SmdError, match=f"Could not write {out}: the disk is full"):
        predict(prepared["dataset"], prepared["model"], out, residual_correction=residual_correction)
    assert sorted(os.listdir(small_disk)) == ["filler.bin"]


def test_preprocess_on_a_full_disk_fails_and_leaves_nothing(prepared, small_disk):
    scenario = prepared["scenario"]
    out = os.path.join(small_disk, "ds")
    with pytest.raises(SmdError, match=rf"Could not write {out}/(fine|coarse)/\w+\.tif: the disk is full"):
        preprocess(scenario["predictors"], scenario["soil_moisture"], out)
    assert os.listdir(small_disk) == []


def test_a_write_that_reads_back_differently_is_caught(tmp_path):
    """The read-back check itself: a tile lost after writing is a failed write, not NaN."""
    from smdownscale.core.common import series_profile
    from smdownscale.core.grids import Grid

    grid = Grid("EPSG:3035", rasterio.Affine(1000, 0, 0, 0, -1000, 0), 300, 300)
    path = str(tmp_path / "x.tif")
    writer = outputs.CheckedRasterWriter(path, series_profile(grid.profile(), 1))
    writer.write(np.ones((300, 300), dtype="float32"), 1)
    writer._count[0] += 1  # one pixel more than the file will hold
    with pytest.raises(SmdError, match="band 1 did not read back as written"):
        writer.close()


# -- group 3: stale temporaries ------------------------------------------------------------------
def test_stale_temporaries_of_dead_runs_are_removed_but_not_a_live_run(prepared, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = outputs._HOST
        stale = tmp_path / f".pred.tmp-{host}-{dead}.tif"
        stale.write_bytes(b"half")
        (tmp_path / f".pred.tmp-{host}-{dead}.tif.aux.xml").write_text("<x/>")
        stale_folder = tmp_path / f".ds.tmp-{host}-{dead}"
        stale_folder.mkdir()
        running = tmp_path / f".other.tmp-{host}-{live.pid}.tif"
        running.write_bytes(b"busy")
        other_host = tmp_path / f".pred.tmp-otherhost-{dead}.tif"
        other_host.write_bytes(b"someone else's")
        mine = tmp_path / "my.tif.tmp-1.tif"  # not our name pattern (no leading dot)
        mine.write_bytes(b"user file")
        predict(prepared["dataset"], prepared["model"], str(tmp_path / "pred.tif"))
        assert sorted(os.listdir(tmp_path)) == sorted(
            ["pred.tif", running.name, other_host.name, mine.name])
    finally:
        live.kill()
        live.wait()


# -- group 4: datasets replaced atomically and read consistently ---------------------------------
def test_every_raster_carries_the_dataset_identity(prepared):
    dataset = Dataset.open(prepared["dataset"])
    paths = dataset.raster_paths()
    assert len(paths) == 2 * 14 + 1
    for path in paths:
        with rasterio.open(path) as src:
            assert src.tags()[DATASET_ID_TAG] == dataset.dataset_id


def test_a_raster_from_another_dataset_is_refused(prepared, tmp_path):
    scenario = prepared["scenario"]
    other = str(tmp_path / "other")
    preprocess(scenario["predictors"], scenario["soil_moisture"], other)
    copy = str(tmp_path / "copy")
    shutil.copytree(prepared["dataset"], copy)
    shutil.copy(os.path.join(other, "fine", "ndvi.tif"), os.path.join(copy, "fine", "ndvi.tif"))
    with pytest.raises(SmdError, match=r"fine/ndvi.tif does not belong to the dataset"):
        Dataset.open(copy)


def test_a_reader_never_mixes_two_generations_while_preprocess_replaces_the_dataset(prepared, tmp_path):
    """Two preprocess runs with different inputs replace one folder in turn while predictions
    read it: every prediction equals the prediction of one generation or fails with the
    'being replaced' message; the folder is always a whole dataset."""
    scenario = prepared["scenario"]
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    inputs_b = []
    for path in scenario["predictors"]:
        target = str(shifted / os.path.basename(path))
        with rasterio.open(path) as src:
            profile, data = src.profile, src.read()
            descriptions = src.descriptions
        if os.path.basename(path) == "ndvi.tif":
            data = data * 0.5
        with rasterio.open(target, "w", **profile) as dst:
            dst.write(data)
            for band, text in enumerate(descriptions, start=1):
                if text:
                    dst.set_band_description(band, text)
        inputs_b.append(target)
    folder = str(tmp_path / "live")
    expected = {}
    for label, inputs in (("a", scenario["predictors"]), ("b", inputs_b)):
        preprocess(inputs, scenario["soil_moisture"], folder)
        out = str(tmp_path / f"expected_{label}.tif")
        predict(folder, prepared["model"], out, dates=["2019-04-01"])
        expected[label] = rasterio.open(out).read(1)
    assert not np.array_equal(expected["a"], expected["b"], equal_nan=True)

    stop = threading.Event()
    errors = []

    def writer():
        turn = 0
        while not stop.is_set():
            try:
                preprocess(inputs_b if turn % 2 else scenario["predictors"],
                           scenario["soil_moisture"], folder)
            except Exception as err:  # noqa: BLE001 - reported below
                errors.append(err)
                return
            turn += 1

    thread = threading.Thread(target=writer)
    thread.start()
    outcomes = {"a": 0, "b": 0, "refused": 0}
    try:
        for index in range(25):
            out = str(tmp_path / f"read_{index}.tif")
            try:
                predict(folder, prepared["model"], out, dates=["2019-04-01"])
            except SmdError as err:
                assert "being replaced" in str(err) or "run preprocess again" in str(err), str(err)
                outcomes["refused"] += 1
                continue
            values = rasterio.open(out).read(1)
            matches = [label for label, ref in expected.items()
                       if np.array_equal(values, ref, equal_nan=True)]
            assert len(matches) == 1, "a prediction mixed two dataset generations"
            outcomes[matches[0]] += 1
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    print("generation outcomes", outcomes)
    assert outcomes["a"] + outcomes["b"] > 0
    Dataset.open(folder)  # still a whole dataset
    assert leftovers(str(tmp_path)) == []


def test_the_old_dataset_survives_when_the_swap_cannot_complete(prepared, tmp_path, monkeypatch):
    """Fallback path (no renameat2): the old folder is moved aside, never deleted first."""
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "dataset.json").write_text('{"format": "smdownscale-dataset"}')
    monkeypatch.setattr(outputs, "_exchange", lambda first, second: False)
    real_rename = os.rename

    def failing_rename(src, dst):
        if ".tmp-" in os.path.basename(src):
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(outputs.os, "rename", failing_rename)
    with pytest.raises(SmdError, match="the disk is full"):
        with atomic_output(str(folder), folder=True) as tmp:
            open(os.path.join(tmp, "dataset.json"), "w").write("{}")
    assert (folder / "dataset.json").read_text() == '{"format": "smdownscale-dataset"}'
    assert leftovers(str(tmp_path)) == []


# -- group 7 and 9: size guard and plausibility in preprocess ------------------------------------
def test_a_fine_grid_too_large_for_memory_is_refused_with_a_resolution_to_use(prepared, monkeypatch):
    scenario = prepared["scenario"]
    monkeypatch.setattr("smdownscale.core.preprocess.available_memory_bytes", lambda: 2 * 2**30)
    with pytest.raises(SmdError, match=r"The fine grid would be [\d,]+ x [\d,]+ pixels.*Use a coarser "
                                       r"fine resolution \(at least [\d.e+]+\)"):
        preprocess(scenario["predictors"], scenario["soil_moisture"], str(prepared["root"] / "big"),
                   fine_resolution=1.0)
    assert not os.path.exists(prepared["root"] / "big")


def test_a_fine_resolution_coarser_than_the_soil_moisture_is_refused(prepared, tmp_path):
    scenario = prepared["scenario"]
    with pytest.raises(SmdError, match="is not finer than the soil-moisture grid"):
        preprocess(scenario["predictors"], scenario["soil_moisture"], str(tmp_path / "ds"),
                   fine_resolution=20000.0)


def rewrite(path, target, transform_values):
    with rasterio.open(path) as src:
        profile, data, descriptions = src.profile, src.read(), src.descriptions
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(transform_values(data))
        for band, text in enumerate(descriptions, start=1):
            if text:
                dst.set_band_description(band, text)
    return target


def test_soil_moisture_in_percent_is_refused_with_a_hint(prepared, tmp_path):
    scenario = prepared["scenario"]
    percent = rewrite(scenario["soil_moisture"], str(tmp_path / "sm_percent.tif"), lambda a: a * 100)
    with pytest.raises(SmdError, match=r"sm_percent.tif: soil moisture must be in m3/m3 .* look like "
                                       r"percent \(vol. %\): divide them by 100"):
        preprocess(scenario["predictors"], percent, str(tmp_path / "ds"))
    negative = rewrite(scenario["soil_moisture"], str(tmp_path / "sm_neg.tif"), lambda a: a - 5)
    with pytest.raises(SmdError, match=r"between -0.02 and 1\), but the values range from -") as info:
        preprocess(scenario["predictors"], negative, str(tmp_path / "ds"))
    assert "percent" not in str(info.value)


def test_an_all_nan_predictor_or_target_is_refused(prepared, tmp_path):
    scenario = prepared["scenario"]
    predictors = list(scenario["predictors"])
    index = [os.path.basename(p) for p in predictors].index("lst.tif")
    (tmp_path / "p").mkdir()
    predictors[index] = rewrite(predictors[index], str(tmp_path / "p" / "lst.tif"),
                                lambda a: np.full_like(a, np.nan))
    with pytest.raises(SmdError, match="Predictor\\(s\\) lst have no valid pixel"):
        preprocess(predictors, scenario["soil_moisture"], str(tmp_path / "ds"))
    assert not os.path.exists(tmp_path / "ds")
    empty = rewrite(scenario["soil_moisture"], str(tmp_path / "sm_nan.tif"),
                    lambda a: np.full_like(a, np.nan))
    with pytest.raises(SmdError, match="has no valid soil-moisture value"):
        preprocess(scenario["predictors"], empty, str(tmp_path / "ds"))


# -- group 8: no traceback reaches the user --------------------------------------------------------
@pytest.mark.parametrize("manifest", [
    '{"format": "smdownscale-dataset", "version": 2, "dataset_id": "x", "dates": 5, '
    '"predictors": [], "fine_grid": {}, "coarse_grid": {}}',
    '[' * 100000 + ']' * 100000,
    '{"format": "smdownscale-dataset", "version": 2, "dataset_id": "x", "dates": ["2019-04-01"], '
    '"predictors": [{"nom": 1}], "fine_grid": null, "coarse_grid": 3}',
])
def test_a_damaged_dataset_manifest_is_one_message(prepared, tmp_path, manifest):
    copy = str(tmp_path / "copy")
    shutil.copytree(prepared["dataset"], copy)
    with open(os.path.join(copy, "dataset.json"), "w") as handle:
        handle.write(manifest)
    with pytest.raises(SmdError, match="run preprocess again|not a smdownscale dataset"):
        Dataset.open(copy)


def test_a_truncated_dataset_raster_is_one_message(prepared, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(prepared["dataset"], copy)
    path = os.path.join(copy, "fine", "ndvi.tif")
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 3)
    with pytest.raises(SmdError, match="run preprocess again"):
        with Dataset.open(copy) as dataset:
            for index in range(len(dataset.dates)):
                dataset.read_fine("ndvi", index)


@pytest.mark.skipif(not os.path.exists("/usr/bin/qgis_process.bin"), reason="needs qgis_process.bin")
def test_through_qgis_process_bad_outputs_end_in_one_message(prepared, tmp_path):
    profile = str(tmp_path / "profile")
    env = dict(os.environ, SMDOWNSCALE_QGIS_PROFILE=profile, QT_QPA_PLATFORM="offscreen")
    folder = tmp_path / "keep"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    broken = str(tmp_path / "broken")
    shutil.copytree(prepared["dataset"], broken)
    with open(os.path.join(broken, "dataset.json"), "w") as handle:
        handle.write("[" * 100000)
    runs = [
        (["smdownscale:train", f"DATASET={prepared['dataset']}", f"OUTPUT_MODEL={folder}"],
         "is an existing folder"),
        (["smdownscale:predict", f"DATASET={prepared['dataset']}", f"MODEL={prepared['model']}",
          f"OUTPUT={prepared['dataset']}/fine/ndvi.tif"], "inside the input"),
        (["smdownscale:predict", f"DATASET={broken}", f"MODEL={prepared['model']}",
          f"OUTPUT={tmp_path}/p.tif"], "run preprocess again"),
        (["smdownscale:predict", f"DATASET={prepared['dataset']}", f"MODEL={prepared['model']}",
          "OUTPUT=/proc/p.tif"], "cannot write into /proc"),
    ]
    for args, message in runs:
        done = subprocess.run([WRAPPER, "run", args[0], "--", *args[1:]], capture_output=True,
                              text=True, env=env, timeout=240)
        text = done.stdout + done.stderr
        assert done.returncode != 0, text
        assert message in text, text
        assert "Traceback" not in text, text
    assert (folder / "notes.txt").read_text() == "keep me"
    assert json.loads(open(os.path.join(prepared["dataset"], "dataset.json")).read())["version"] == 2


def test_an_unexpected_error_is_one_message_and_its_traceback_goes_to_the_log_file(qgis_app, tmp_path,
                                                                                   monkeypatch):
    """The last line of defence: a fault that is not an input problem (here a RuntimeError a
    subclass raises) reaches the user as one sentence naming the log file; the traceback is
    in that file, not in the message."""
    from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback

    from smdownscale.processing.algorithms import base

    class Faulty(base.SmdAlgorithm):
        ALG_ID = "faulty"
        DISPLAY_NAME = "Faulty step"

        def initAlgorithm(self, config=None):  # noqa: N802
            pass

        def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
            raise RuntimeError("an internal inconsistency")

    log = tmp_path / "smdownscale-errors.log"
    monkeypatch.setattr(base, "error_log_path", lambda: str(log))
    with pytest.raises(QgsProcessingException) as caught:
        Faulty().processAlgorithm({}, QgsProcessingContext(), QgsProcessingFeedback())
    message = str(caught.value)
    assert message == ("Faulty step failed unexpectedly (RuntimeError: an internal inconsistency). "
                       "This is a fault of the plugin, not of your data choices; the details are in "
                       f"{log}. Please report it.")
    assert "Traceback" not in message
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "an internal inconsistency" in text


def test_a_model_or_report_in_a_temporary_folder_is_flagged_with_its_path(qgis_app, tmp_path):
    """Issue 11: a trained model written to QGIS's temporary folder vanishes when QGIS quits; the
    run says so (every algorithm, from base.py), map layers are not flagged."""
    import tempfile

    from qgis.core import QgsProcessingFeedback

    from smdownscale.processing.algorithms.predict import PredictAlgorithm
    from smdownscale.processing.algorithms.train import TrainAlgorithm

    class Recorder(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.warnings = []

        def pushWarning(self, text):  # noqa: N802
            self.warnings.append(text)

    temporary = os.path.join(tempfile.gettempdir(), "model.smdmodel.zip")
    train, feedback = TrainAlgorithm(), Recorder()
    train.initAlgorithm()
    train.flag_temporary_outputs({"OUTPUT_MODEL": temporary, "OUTPUT_REPORT": "/opt/not-temporary/r.html"},
                                 feedback)
    assert len(feedback.warnings) == 1
    assert temporary in feedback.warnings[0] and "deleted when QGIS quits" in feedback.warnings[0]
    predict, feedback = PredictAlgorithm(), Recorder()
    predict.initAlgorithm()
    predict.flag_temporary_outputs({"OUTPUT": os.path.join(tempfile.gettempdir(), "p.tif")}, feedback)
    assert feedback.warnings == []
