"""The guided workflow dialog (ui/workflow.py) in a real (offscreen) QGIS: its widgets fill from a
project holding the built-in scenario's layers, inputs are checked next to the widgets, a run
gives the same outputs as the shipped Processing chain, Cancel leaves nothing, and the main
thread keeps running during a run (QTimer heartbeat; the longest stall is written to
tests/artifacts/workflow_main_thread_stall.txt)."""
import os
import time

import numpy as np
import pytest

from qtwait import qtbot  # noqa: F401 (fixture)

ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")
FAST = {"N_ESTIMATORS": 20, "FOLDS": 2, "MIN_SAMPLES": 10, "THREADS": 2}


def _save(widget, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    widget.grab().save(os.path.join(ARTIFACTS, name))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    from smdownscale.demo.scenario import make_scenario

    return make_scenario(str(tmp_path_factory.mktemp("scenario")), size="small")


@pytest.fixture
def registered(qgis_app, qgis_processing):
    from qgis.core import QgsApplication

    from smdownscale.processing.provider import SmDownscaleProvider

    registry = QgsApplication.processingRegistry()
    if registry.providerById("smdownscale") is None:
        registered.keep = SmDownscaleProvider()
        registry.addProvider(registered.keep)
    return registry.providerById("smdownscale")


@pytest.fixture
def dialog(qgis_app, qgis_iface, qgis_new_project, qtbot, registered, scenario):
    from qgis.core import QgsProject

    from smdownscale.ui.demo_data import add_scenario_layers
    from smdownscale.ui.workflow import WorkflowDialog

    layers = add_scenario_layers(scenario)
    truth = scenario.get("truth")
    dlg = qtbot.addWidget(WorkflowDialog(qgis_iface))
    dlg.layers = layers
    dlg.truth = truth
    yield dlg
    if dlg.run is not None and dlg.run.running():
        dlg.run.cancel()
        qtbot.waitUntil(lambda: not dlg.run.running(), timeout=60000)
    QgsProject.instance().removeAllMapLayers()


def _fast(dlg, folder):
    dlg.folder_widget.setFilePath(str(folder))
    dlg.trees_spin.setValue(FAST["N_ESTIMATORS"])
    dlg.folds_spin.setValue(FAST["FOLDS"])
    dlg.min_samples_spin.setValue(FAST["MIN_SAMPLES"])
    dlg.threads_spin.setValue(FAST["THREADS"])


def test_widgets_fill_from_the_scenario_layers(dialog, scenario, tmp_path):
    names = [dialog.predictor_table.item(r, 1).text() for r in range(dialog.predictor_table.rowCount())]
    stems = [os.path.splitext(os.path.basename(p))[0] for p in scenario["predictors"]]
    assert names == stems                                  # the layer tree's order
    categorical = [dialog.predictor_table.item(r, 1).text() for r in range(dialog.predictor_table.rowCount())
                   if dialog.predictor_table.item(r, 2).checkState() == 2]
    assert categorical == ["lc"]
    assert dialog.sm_combo.currentLayer() is dialog.layers["soil_moisture"]
    assert dialog.partition_combo.currentLayer() is dialog.layers["partitions"]
    assert dialog.partition_field.currentField() == "name"
    assert dialog.station_combo.currentLayer() is dialog.layers["stations"]
    assert (dialog.site_field.currentField(), dialog.date_field.currentField(), dialog.value_field.currentField()) \
        == ("site_id", "date", "sm")
    assert dialog.mask_edit.text() == "lc:0"
    dialog.folder_widget.setFilePath("")
    assert set(dialog.validate()) == {"folder"} and not dialog.run_button.isEnabled()
    dialog.folder_widget.setFilePath(str(tmp_path / "out"))
    assert dialog.validate() == {} and dialog.run_button.isEnabled()
    dialog.resize(760, 720)
    dialog.show()
    for index, name in enumerate(("inputs", "settings", "outputs")):
        dialog.tabs.setCurrentIndex(index)
        _save(dialog, f"workflow_{name}.png")


def test_inputs_are_checked_next_to_the_widgets(dialog, tmp_path):
    dialog.folder_widget.setFilePath(str(tmp_path / "out"))
    dialog.partition_combo.setLayer(dialog.layers["stations"])           # points as partitions
    errors = dialog.validate()
    assert "partitions must be polygons" in errors["partitions"]
    assert dialog.partitions_error.isVisibleTo(dialog) and "polygons" in dialog.partitions_error.text()
    dialog.partition_combo.setLayer(dialog.layers["partitions"])
    dialog.value_field.setField("site_id")
    assert "not a number field" in dialog.validate()["value_field"]
    dialog.value_field.setField("sm")
    dialog.mask_edit.setText("landcover:0")
    assert "not one of the ticked predictors" in dialog.validate()["mask"]
    dialog.mask_edit.setText("lc=0")
    assert "name:class" in dialog.validate()["mask"]
    dialog.mask_edit.setText("lc:0")
    dialog.sm_combo.setLayer(dialog.layers["predictor:dem"])              # a single band: no dates
    assert "Not a dated series" in dialog.validate()["sm"]
    dialog.sm_combo.setLayer(dialog.layers["soil_moisture"])
    for check in dialog.base_model_checks:
        check.setChecked(False)
    assert "base model" in dialog.validate()["base_models"]
    assert not dialog.run_button.isEnabled()
    dialog.tabs.setCurrentIndex(0)
    dialog.partition_combo.setLayer(dialog.layers["stations"])
    dialog.validate()
    dialog.resize(760, 720)
    dialog.show()
    _save(dialog, "workflow_input_errors.png")


def _chain_outputs(processing, scenario, folder, predictors):
    from smdownscale.processing.models.chain_layout import OUTPUT_CHILDREN as child
    from smdownscale.processing.models.chain_layout import OUTPUT_FILES, OUTPUT_NAMES

    params = {"PREDICTORS": predictors, "COARSE_SM": scenario["soil_moisture"], "CATEGORICAL": "lc",
              "MASK_CLASSES": "lc:0", "PARTITIONS": scenario["partitions"], "PARTITION_FIELD": "name",
              "STATIONS": scenario["stations"], "SITE_FIELD": "site_id", "DATE_FIELD": "date", "VALUE_FIELD": "sm",
              "FINE_RESOLUTION": 1000.0, "RESIDUAL_CORRECTION": False, **FAST}
    for role, name in OUTPUT_NAMES.items():
        params[f"{child[role]}:{name}"] = os.path.join(folder, OUTPUT_FILES[role])
    return processing.run("smdownscale:downscaling_chain", params)


def test_a_run_gives_the_chain_outputs_without_blocking(dialog, scenario, qtbot, tmp_path):
    import processing
    import rasterio
    from qgis.core import QgsProject, QgsVectorLayer
    from qgis.PyQt.QtCore import QTimer

    from smdownscale.core.outputs import report_files_folder
    from smdownscale.processing.models.chain_layout import OUTPUT_FILES
    from smdownscale.ui.workflow import WORKFLOW_FILES

    folder = tmp_path / "workflow"
    _fast(dialog, folder)
    predictors = [layer.source() for layer, _c in dialog.predictor_layers()]
    beats, last = [], [time.monotonic()]

    def beat():
        now = time.monotonic()
        beats.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.timeout.connect(beat)
    timer.start(10)
    started = time.monotonic()
    run = dialog.start()
    assert run is not None and dialog.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: run.done, timeout=600000)
    seconds = time.monotonic() - started
    timer.stop()
    assert run.ok, dialog.log.toPlainText()[-3000:]
    assert dialog.progress_bar.value() == 1000
    log = dialog.log.toPlainText()
    assert "Prepare downscaling dataset" in log and "Validate" in log
    # outputs moved into the folder, each HTML report with its folder of figures and tables,
    # nothing else left there
    expected = {name for role, name in WORKFLOW_FILES.items()
                if role != "period_report" or "smdownscale:summarize" in run.results}
    expected |= {report_files_folder(name) for name in expected if report_files_folder(name)}
    assert "training_report_files" in expected and "explanation_report.html" not in expected
    assert {n for n in os.listdir(folder) if not n.endswith(("-wal", "-shm"))} == expected   # sqlite's own
    assert "table3.csv" in os.listdir(folder / "training_report_files")
    # the same as the shipped chain with the same inputs and settings
    chain = tmp_path / "chain"
    chain.mkdir()
    _chain_outputs(processing, scenario, str(chain), predictors)
    assert [layer.source() for layer, _c in dialog.predictor_layers()] == predictors   # outputs not ticked
    with rasterio.open(folder / OUTPUT_FILES["downscaled"]) as a, rasterio.open(chain / OUTPUT_FILES["downscaled"]) as b:
        assert a.descriptions == b.descriptions
        np.testing.assert_allclose(a.read(), b.read(), rtol=1e-5, atol=1e-6, equal_nan=True)
    workflow_points = QgsVectorLayer(str(folder / OUTPUT_FILES["validation"]), "w", "ogr")
    chain_points = QgsVectorLayer(str(chain / OUTPUT_FILES["validation"]), "c", "ogr")
    rows = lambda layer: sorted((f["product"], f["site_id"], round(f["r"] or 0, 6)) for f in layer.getFeatures())  # noqa: E731
    assert rows(workflow_points) == rows(chain_points)
    assert {f["product"] for f in workflow_points.getFeatures()} >= {"downscaled_soil_moisture"}
    # outputs added, named and styled; reports can be opened
    names = [layer.name() for layer in QgsProject.instance().mapLayers().values()]
    dates = scenario["dates"]
    assert f"Downscaled soil moisture {dates[0]} to {dates[-1]} ({len(dates)} dates)" in names
    product_layers = sorted(n for n in names if n.startswith("Validation points: "))
    assert product_layers[0] == "Validation points: SMAP soil moisture (coarse) " + \
        f"{dates[0]} to {dates[-1]} ({len(dates)} dates)" and "Validation points: downscaled_soil_moisture" in names
    assert len(product_layers) == 2                          # one layer per product
    # the chain's dialog now defaults its outputs to the remembered folder
    from qgis.core import QgsApplication

    chain_copy = QgsApplication.processingRegistry().createAlgorithmById("smdownscale:downscaling_chain")
    assert chain_copy.parameterDefinition("predict:Downscaled soil moisture").defaultValue() == \
        str(folder / OUTPUT_FILES["downscaled"])
    assert dialog.report_buttons["validation_report"].isEnabled()
    from qgis.core import QgsSettings

    from smdownscale.ui.workflow import OUTPUT_FOLDER_SETTING

    assert QgsSettings().value(OUTPUT_FOLDER_SETTING) == str(folder)
    stall = max(beats)
    os.makedirs(ARTIFACTS, exist_ok=True)
    with open(os.path.join(ARTIFACTS, "workflow_main_thread_stall.txt"), "w") as handle:
        handle.write(f"workflow run (small scenario, {FAST}): {seconds:.1f} s, {len(beats)} heartbeats of 10 ms, "
                     f"longest main-thread stall {stall * 1000:.0f} ms\n")
    print(f"longest main-thread stall during the run: {stall * 1000:.0f} ms over {seconds:.1f} s")
    assert stall < 1.0, stall
    dialog.resize(760, 720)
    dialog.show()
    _save(dialog, "workflow_run_done.png")


def test_cancel_stops_the_run_and_leaves_nothing(dialog, qtbot, tmp_path):
    folder = tmp_path / "cancelled"
    _fast(dialog, folder)
    dialog.trees_spin.setValue(2000)              # a train step long enough to be cancelled in
    run = dialog.start()
    qtbot.waitUntil(lambda: run.index >= 1 and run.task is not None, timeout=120000)   # training
    qtbot.wait(500)
    dialog.cancel_button.click()
    qtbot.waitUntil(lambda: run.done, timeout=120000)
    assert not run.ok and run.cancelled
    assert "nothing was kept" in dialog.log.toPlainText()
    assert os.listdir(folder) == []               # no dataset, no model, no staging folder
    assert dialog.run_button.isEnabled()


def test_a_foreign_folder_where_a_report_folder_goes_is_refused_before_the_run(dialog, tmp_path):
    folder = tmp_path / "out"
    (folder / "validation_report_files").mkdir(parents=True)
    (folder / "validation_report_files" / "mine.txt").write_text("mine")
    _fast(dialog, folder)
    assert dialog.start() is None and dialog.run is None
    assert "validation_report_files (the figures and tables of the report" in dialog.errors["folder"]
    assert os.listdir(folder) == ["validation_report_files"]       # no staging folder, nothing moved
    assert os.listdir(folder / "validation_report_files") == ["mine.txt"]


def test_plugin_entry_opens_the_dialog(qgis_app, qgis_iface, registered):
    from smdownscale.plugin import SmDownscalePlugin

    plugin = SmDownscalePlugin(qgis_iface)
    plugin.provider = registered
    assert plugin._workflow_available()
    dlg = plugin.show_workflow()
    assert dlg.objectName() == "smdownscale_workflow" and plugin.show_workflow() is dlg
    dlg.close()
