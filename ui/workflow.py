"""The guided downscaling workflow: one dialog for prepare -> train -> predict -> validate
(-> period maps when ``smdownscale:summarize`` is installed).

Pages: *Inputs* (predictors from the project or files with the categorical ones ticked, the mask,
the coarse soil-moisture series, partitions + name field, stations + their fields), *Settings*
(fine resolution, CRS, base models, folds, CV strategy, residual correction, trees, threads)
and *Outputs* (a folder, remembered in QgsSettings). Inputs are checked as they are entered and
the problem is shown next to the widget. *Run* executes the steps as Processing runs
(``QgsProcessingAlgRunnerTask``, the same task the Processing dialogs use) one after another in
the background, with one progress bar and a log pane fed by the algorithms' feedback. Every
output is written into a staging folder inside the output folder and moved into place only
when the whole chain succeeded: *Cancel* (or a failure) stops the current step and removes the
staging folder, so no partial outputs are left. The dialog has no modelling code of its own.
"""
import os
import shutil
import uuid

from qgis.core import (Qgis, QgsApplication, QgsCoordinateReferenceSystem, QgsMapLayerProxyModel, QgsMessageLog,
                       QgsProcessingAlgRunnerTask, QgsProcessingContext, QgsProcessingFeedback, QgsProject,
                       QgsRasterLayer, QgsSettings, QgsVectorLayer, QgsWkbTypes)
from qgis.gui import QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox, QgsProjectionSelectionWidget
from qgis.PyQt.QtCore import QObject, Qt, QUrl, pyqtSignal
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import (QCheckBox, QComboBox, QDialog, QDoubleSpinBox, QFileDialog, QFormLayout,
                                 QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPlainTextEdit, QProgressBar,
                                 QPushButton, QSpinBox, QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout,
                                 QWidget)

from ..core.outputs import is_plugin_folder, report_files_folder
from ..processing.models.chain_layout import OUTPUT_CHILDREN, OUTPUT_FILES
from ..processing.models.chain_layout import OUTPUT_FOLDER_SETTING as _CHAIN_FOLDER_SETTING
from ..resources import tr
from .date_dock import band_dates, series_layer_name

#: QgsSettings key of the output folder the dialog remembers
OUTPUT_FOLDER_SETTING = _CHAIN_FOLDER_SETTING  # "smdownscale/workflow_output_folder", shared with the chain
#: (algorithm id, share of the progress bar)
STEPS = (("smdownscale:preprocess", 0.15), ("smdownscale:train", 0.55), ("smdownscale:predict", 0.15),
         ("smdownscale:validate", 0.1), ("smdownscale:summarize", 0.05))
BASE_MODEL_NAMES = ("XGBoost", "LightGBM", "CatBoost")
#: role -> file name of what the dialog's steps write (the chain's outputs but the explanation
#: report: the dialog does not run Explain model)
WORKFLOW_FILES = {role: name for role, name in OUTPUT_FILES.items() if OUTPUT_CHILDREN[role] != "explain"}
#: role -> output kind (core.outputs.check_outputs) of what the run moves into the output folder
OUTPUT_KINDS = {"dataset": "dataset", "model": "model", "report": "report", "downscaled": "raster",
                "validation": "vector", "validation_report": "report", "period_report": "report"}
CV_NAMES = ("Random", "Spatial blocks", "Leave dates out")
ERROR_STYLE = "color: #c0392b;"


def predictor_name(layer):
    """A predictor's name: its file stem (DESIGN: predictor name = file stem)."""
    return os.path.splitext(os.path.basename(layer.source().split("|")[0]))[0]


def _train_options():
    """(base model labels, CV strategy labels) in the order of train's enum parameters (its
    indexes are what the dialog passes); the defaults when train is not registered."""
    train = QgsApplication.processingRegistry().algorithmById("smdownscale:train")
    if train is None:
        return list(BASE_MODEL_NAMES), [tr(n) for n in CV_NAMES]
    return (list(train.parameterDefinition("BASE_MODELS").options()),
            list(train.parameterDefinition("CV_STRATEGY").options()))


class _Feedback(QgsProcessingFeedback):
    """Processing feedback forwarding the algorithms' messages as a Qt signal (queued into the GUI)."""

    def __init__(self, relay):
        super().__init__()
        self.relay = relay

    def pushInfo(self, text):  # noqa: N802 (QGIS API)
        self.relay.message.emit(text, "info")
        super().pushInfo(text)

    def pushWarning(self, text):  # noqa: N802
        self.relay.message.emit(text, "warning")
        super().pushWarning(text)

    def reportError(self, text, fatalError=False):  # noqa: N802, N803
        self.relay.message.emit(text, "error")
        super().reportError(text, fatalError)

    def setProgressText(self, text):  # noqa: N802
        self.relay.message.emit(text, "progress")
        super().setProgressText(text)

    def pushCommandInfo(self, text):  # noqa: N802
        pass

    def pushDebugInfo(self, text):  # noqa: N802
        pass


class _Relay(QObject):
    message = pyqtSignal(str, str)


class WorkflowRun(QObject):
    """Runs the steps one after another as background Processing tasks.

    ``steps``: list of ``(algorithm id, parameters, weight)``; a parameter value may be a callable
    taking the results so far (``{alg id: results}``). ``staging``: folder removed when the run
    does not succeed; ``finalize(results)`` is called on success (moves the outputs into place).
    """

    progress = pyqtSignal(float)
    message = pyqtSignal(str, str)
    finished = pyqtSignal(bool, str)   # ok, message

    def __init__(self, steps, staging=None, finalize=None, parent=None):
        super().__init__(parent)
        self.steps = list(steps)
        self.staging = staging
        self.finalize = finalize
        self.results = {}
        self.index = -1
        self.task = None
        self.feedback = None
        self.context = None
        self.cancelled = False
        self.done = False
        self.ok = False
        self.relay = _Relay()
        self.relay.message.connect(self.message)
        self._done_weight = 0.0
        self._total = sum(weight for _a, _p, weight in self.steps) or 1.0

    def start(self):
        self._next()

    def running(self):
        return not self.done and self.index >= 0

    def cancel(self):
        """Stop the current step (its algorithm honours the feedback's cancel) and the run."""
        if self.done:
            return
        self.cancelled = True
        self.message.emit(tr("Cancelling..."), "warning")
        if self.feedback is not None:
            self.feedback.cancel()
        if self.task is not None:
            self.task.cancel()

    def _next(self):
        if self.cancelled:
            return self._finish(False, tr("Cancelled; nothing was kept."))
        self.index += 1
        if self.index >= len(self.steps):
            try:
                if self.finalize is not None:
                    self.finalize(self.results)
            except Exception as err:  # noqa: BLE001 - reported, staging removed
                return self._finish(False, tr("Could not move the outputs into place: {}").format(err))
            return self._finish(True, tr("Done."))
        alg_id, parameters, weight = self.steps[self.index]
        algorithm = QgsApplication.processingRegistry().createAlgorithmById(alg_id)
        if algorithm is None:
            return self._finish(False, tr("Algorithm {} is not available.").format(alg_id))
        values = {key: (value(self.results) if callable(value) else value) for key, value in parameters.items()}
        self.message.emit(tr("--- {} ---").format(algorithm.displayName()), "step")
        self.context = QgsProcessingContext()
        self.context.setProject(QgsProject.instance())
        self.feedback = _Feedback(self.relay)
        start = self._done_weight / self._total
        share = weight / self._total
        self.feedback.progressChanged.connect(lambda value, s=start, w=share: self.progress.emit(s + w * value / 100.0))
        ok, problem = algorithm.checkParameterValues(values, self.context)
        if not ok:
            return self._finish(False, tr("{}: {}").format(algorithm.displayName(), problem))
        self.task = QgsProcessingAlgRunnerTask(algorithm, values, self.context, self.feedback)
        self.task.executed.connect(lambda ok, results, a=alg_id, w=weight: self._executed(a, w, ok, results))
        self.progress.emit(start)
        QgsApplication.taskManager().addTask(self.task)

    def _executed(self, alg_id, weight, ok, results):
        self.task = None
        if not ok or self.cancelled:
            text = tr("Cancelled; nothing was kept.") if self.cancelled or (
                self.feedback is not None and self.feedback.isCanceled()) else tr("{} failed; nothing was kept.").format(
                alg_id)
            self.cancelled = self.cancelled or (self.feedback is not None and self.feedback.isCanceled())
            return self._finish(False, text)
        self.results[alg_id] = dict(results)
        self._done_weight += weight
        self.progress.emit(self._done_weight / self._total)
        self._next()

    def _finish(self, ok, text):
        if self.done:
            return
        self.done = True
        self.ok = ok
        if not ok and self.staging and os.path.isdir(self.staging):
            shutil.rmtree(self.staging, ignore_errors=True)
        self.message.emit(text, "info" if ok else "error")
        self.finished.emit(ok, text)


class WorkflowDialog(QDialog):
    """Inputs, settings, outputs, run: the downscaling chain for an analyst."""

    def __init__(self, iface=None, parent=None):
        super().__init__(parent)
        self.setObjectName("smdownscale_workflow")
        self.setWindowTitle(tr("Soil moisture downscaling workflow"))
        self.resize(760, 640)
        self.iface = iface
        self.run = None
        self.outputs = {}
        self.errors = {}

        layout = QVBoxLayout(self)
        self.tabs = QTabWidget(self)
        layout.addWidget(self.tabs, 1)
        self._build_inputs()
        self._build_settings()
        self._build_outputs()
        self._build_run()

        buttons = QHBoxLayout()
        self.demo_button = QPushButton(tr("Load demo data..."), self)
        self.demo_button.setObjectName("smdownscale_workflow_demo")
        self.demo_button.clicked.connect(lambda _c=False: self.load_demo_data())
        buttons.addWidget(self.demo_button)
        buttons.addStretch(1)
        self.back_button = QPushButton(tr("< Back"), self)
        self.back_button.clicked.connect(lambda _c=False: self.tabs.setCurrentIndex(max(self.tabs.currentIndex() - 1, 0)))
        self.next_button = QPushButton(tr("Next >"), self)
        self.next_button.clicked.connect(
            lambda _c=False: self.tabs.setCurrentIndex(min(self.tabs.currentIndex() + 1, self.tabs.count() - 1)))
        self.run_button = QPushButton(tr("Run"), self)
        self.run_button.setObjectName("smdownscale_workflow_run")
        self.run_button.clicked.connect(lambda _c=False: self.start())
        self.cancel_button = QPushButton(tr("Cancel"), self)
        self.cancel_button.clicked.connect(lambda _c=False: self.cancel())
        self.cancel_button.setEnabled(False)
        self.close_button = QPushButton(tr("Close"), self)
        self.close_button.clicked.connect(self.close)
        for button in (self.back_button, self.next_button, self.run_button, self.cancel_button, self.close_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)

        project = QgsProject.instance()
        project.layersAdded.connect(self._project_changed)
        project.layersRemoved.connect(self._project_changed)
        self.refresh_layers(guess=True)

    # --- pages --------------------------------------------------------------------------------
    @staticmethod
    def _error_label(parent):
        label = QLabel(parent)
        label.setStyleSheet(ERROR_STYLE)
        label.setWordWrap(True)
        label.hide()
        return label

    def _row(self, form, title, widget, key):
        box = QWidget(form.parentWidget())
        column = QVBoxLayout(box)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(widget)
        label = self._error_label(box)
        column.addWidget(label)
        setattr(self, f"{key}_error", label)
        form.addRow(title, box)

    def _build_inputs(self):
        page = QWidget(self)
        form = QFormLayout(page)
        predictors = QWidget(page)
        column = QVBoxLayout(predictors)
        column.setContentsMargins(0, 0, 0, 0)
        self.predictor_table = QTableWidget(0, 3, predictors)
        self.predictor_table.setHorizontalHeaderLabels([tr("Use"), tr("Predictor (file stem)"), tr("Categorical")])
        self.predictor_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.Stretch)
        self.predictor_table.verticalHeader().setVisible(False)
        self.predictor_table.itemChanged.connect(lambda _item: self.validate())
        column.addWidget(self.predictor_table)
        add_files = QPushButton(tr("Add raster files..."), predictors)
        add_files.clicked.connect(lambda _c=False: self.add_predictor_files())
        column.addWidget(add_files, 0, Qt.AlignLeft)
        self._row(form, tr("Predictors"), predictors, "predictors")

        self.mask_edit = QLineEdit("lc:0", page)
        self.mask_edit.setPlaceholderText("lc:0")
        self.mask_edit.textChanged.connect(lambda _t: self.validate())
        self._row(form, tr("Classes to mask"), self.mask_edit, "mask")

        self.sm_combo = QgsMapLayerComboBox(page)
        self.sm_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.sm_combo.setAllowEmptyLayer(True)
        self.sm_combo.layerChanged.connect(lambda _l: self.refresh_layers())
        self._row(form, tr("Coarse soil moisture series"), self.sm_combo, "sm")

        self.partition_combo = QgsMapLayerComboBox(page)
        self.partition_combo.setFilters(QgsMapLayerProxyModel.VectorLayer)   # points too: said so, not dropped
        self.partition_combo.setAllowEmptyLayer(True)
        self.partition_field = QgsFieldComboBox(page)
        self.partition_combo.layerChanged.connect(self._partition_layer_changed)
        self.partition_field.fieldChanged.connect(lambda _f: self.validate())
        self._row(form, tr("Terrain partitions (optional)"), self.partition_combo, "partitions")
        self._row(form, tr("Partition name field"), self.partition_field, "partition_field")

        self.station_combo = QgsMapLayerComboBox(page)
        self.station_combo.setFilters(QgsMapLayerProxyModel.VectorLayer)
        self.station_combo.setAllowEmptyLayer(True)
        self.station_combo.layerChanged.connect(self._station_layer_changed)
        self._row(form, tr("Stations"), self.station_combo, "stations")
        self.site_field, self.date_field, self.value_field = (QgsFieldComboBox(page) for _ in range(3))
        for key, title, widget in (("site_field", tr("Site id field"), self.site_field),
                                   ("date_field", tr("Date field"), self.date_field),
                                   ("value_field", tr("Soil moisture field (m3/m3)"), self.value_field)):
            widget.fieldChanged.connect(lambda _f: self.validate())
            self._row(form, title, widget, key)
        self.tabs.addTab(page, tr("1. Inputs"))

    def _build_settings(self):
        page = QWidget(self)
        form = QFormLayout(page)
        self.resolution_spin = QDoubleSpinBox(page)
        self.resolution_spin.setRange(0.0, 1e7)
        self.resolution_spin.setDecimals(3)
        self.resolution_spin.setValue(1000.0)
        self.resolution_spin.valueChanged.connect(lambda _v: self.validate())
        self._row(form, tr("Fine resolution (CRS units)"), self.resolution_spin, "resolution")
        self.crs_widget = QgsProjectionSelectionWidget(page)
        self.crs_widget.setOptionVisible(QgsProjectionSelectionWidget.CrsNotSet, True)
        self.crs_widget.setNotSetText(tr("First predictor's CRS"))
        self.crs_widget.setCrs(QgsCoordinateReferenceSystem())
        form.addRow(tr("Target CRS"), self.crs_widget)
        models = QWidget(page)
        row = QHBoxLayout(models)
        row.setContentsMargins(0, 0, 0, 0)
        self.base_model_checks = []
        base_models, cv_names = _train_options()
        for name in base_models:
            check = QCheckBox(name, models)
            check.setChecked(True)
            check.toggled.connect(lambda _c: self.validate())
            row.addWidget(check)
            self.base_model_checks.append(check)
        self._row(form, tr("Base models"), models, "base_models")
        self.folds_spin = QSpinBox(page)
        self.folds_spin.setRange(2, 20)
        self.folds_spin.setValue(5)
        form.addRow(tr("Cross-validation folds"), self.folds_spin)
        self.cv_combo = QComboBox(page)
        self.cv_combo.addItems(cv_names)
        form.addRow(tr("Cross-validation strategy"), self.cv_combo)
        self.residual_check = QCheckBox(tr("Shift fine pixels so they average to the coarse value"), page)
        form.addRow(tr("Residual correction"), self.residual_check)
        self.trees_spin = QSpinBox(page)
        self.trees_spin.setRange(1, 100000)
        self.trees_spin.setValue(300)
        form.addRow(tr("Trees per base model"), self.trees_spin)
        self.min_samples_spin = QSpinBox(page)
        self.min_samples_spin.setRange(2, 10 ** 7)
        self.min_samples_spin.setValue(50)
        form.addRow(tr("Minimum samples per partition"), self.min_samples_spin)
        self.threads_spin = QSpinBox(page)
        self.threads_spin.setRange(0, 256)
        self.threads_spin.setSpecialValueText(tr("all cores"))
        form.addRow(tr("Threads per learner"), self.threads_spin)
        self.tabs.addTab(page, tr("2. Settings"))

    def _build_outputs(self):
        page = QWidget(self)
        form = QFormLayout(page)
        self.folder_widget = QgsFileWidget(page)
        self.folder_widget.setStorageMode(QgsFileWidget.GetDirectory)
        self.folder_widget.setFilePath(QgsSettings().value(OUTPUT_FOLDER_SETTING, "") or "")
        self.folder_widget.fileChanged.connect(lambda _p: self.validate())
        self._row(form, tr("Output folder"), self.folder_widget, "folder")
        names = "\n".join(f"  {name}" + (f" (+ {os.path.basename(report_files_folder(name))}/: figures, tables)"
                                         if report_files_folder(name) else "")
                          for name in WORKFLOW_FILES.values())
        listing = QLabel(tr("The run writes into this folder (kept after QGIS quits):\n{}").format(names), page)
        form.addRow("", listing)
        self.load_check = QCheckBox(tr("Add the downscaled series and the validation points to the project"), page)
        self.load_check.setChecked(True)
        form.addRow("", self.load_check)
        self.tabs.addTab(page, tr("3. Outputs"))

    def _build_run(self):
        page = QWidget(self)
        column = QVBoxLayout(page)
        self.summary_label = QLabel(page)
        self.summary_label.setWordWrap(True)
        column.addWidget(self.summary_label)
        self.progress_bar = QProgressBar(page)
        self.progress_bar.setRange(0, 1000)
        column.addWidget(self.progress_bar)
        self.log = QPlainTextEdit(page)
        self.log.setReadOnly(True)
        self.log.setObjectName("smdownscale_workflow_log")
        column.addWidget(self.log, 1)
        reports = QHBoxLayout()
        self.report_buttons = {}
        for role, title in (("report", tr("Open training report")), ("validation_report", tr("Open validation report")),
                            ("period_report", tr("Open period maps"))):
            button = QPushButton(title, page)
            button.setEnabled(False)
            button.clicked.connect(lambda _c=False, r=role: self.open_report(r))
            reports.addWidget(button)
            self.report_buttons[role] = button
        reports.addStretch(1)
        column.addLayout(reports)
        self.tabs.addTab(page, tr("4. Run"))

    # --- layers -------------------------------------------------------------------------------
    def _project_changed(self, *_args):
        if self.run is None or not self.run.running():
            self.refresh_layers(guess=True)

    def refresh_layers(self, guess=False):
        """Fill the predictor table from the project's raster layers (single-band or dated series,
        not the coarse soil moisture); guess the soil-moisture, partition and station layers."""
        if getattr(self, "_refreshing", False):
            return
        self._refreshing = True
        try:
            self._refresh_layers(guess)
        finally:
            self._refreshing = False
        self.validate()

    def _refresh_layers(self, guess):
        ticked = {self.predictor_table.item(r, 1).data(Qt.UserRole): (
            self.predictor_table.item(r, 0).checkState(), self.predictor_table.item(r, 2).checkState())
            for r in range(self.predictor_table.rowCount())}
        # the order of the layer tree (the order predictors are passed in, which the model keeps)
        project = QgsProject.instance()
        ordered = [layer for layer in project.layerTreeRoot().layerOrder() if layer is not None]
        ordered += [layer for layer in project.mapLayers().values() if layer not in ordered]
        layers = [layer for layer in ordered if isinstance(layer, QgsRasterLayer)]
        current = self.sm_combo.currentLayer()
        if guess and (current is None or band_dates(current) is None):
            guess = next((lay for lay in layers if band_dates(lay) and (
                "soil" in lay.name().lower() or predictor_name(lay).lower().startswith(("sm", "soil")))), None)
            if guess is not None:
                self.sm_combo.setLayer(guess)
        sm = self.sm_combo.currentLayer()
        self.predictor_table.blockSignals(True)
        self.predictor_table.setRowCount(0)
        for layer in layers:
            if sm is not None and layer.id() == sm.id():
                continue
            if "truth" in predictor_name(layer).lower():
                continue
            row = self.predictor_table.rowCount()
            self.predictor_table.insertRow(row)
            use = QTableWidgetItem()
            use.setFlags(Qt.ItemIsUserCheckable | Qt.ItemIsEnabled)
            name = QTableWidgetItem(predictor_name(layer))
            name.setData(Qt.UserRole, layer.id())
            name.setFlags(Qt.ItemIsEnabled)
            name.setToolTip(layer.source())
            categorical = QTableWidgetItem()
            categorical.setFlags(Qt.ItemIsUserCheckable | Qt.ItemIsEnabled)
            previous = ticked.get(layer.id())
            # first fill: every raster ticked; later: only files added here (not, e.g., a run's outputs)
            fresh = not getattr(self, "_filled", False) or layer.id() in getattr(self, "_tick_ids", set())
            use.setCheckState(previous[0] if previous else (Qt.Checked if fresh else Qt.Unchecked))
            categorical.setCheckState(previous[1] if previous else (
                Qt.Checked if predictor_name(layer).lower() in ("lc", "landcover", "land_cover") else Qt.Unchecked))
            for column, item in enumerate((use, name, categorical)):
                self.predictor_table.setItem(row, column, item)
        self.predictor_table.blockSignals(False)
        self._filled = getattr(self, "_filled", False) or bool(layers)
        for combo, geometry in ((self.partition_combo, QgsWkbTypes.PolygonGeometry),
                                (self.station_combo, QgsWkbTypes.PointGeometry)):
            current = combo.currentLayer()
            if guess and (current is None or not isinstance(current, QgsVectorLayer) or
                          current.geometryType() != geometry):
                guess = next((lay for lay in QgsProject.instance().mapLayers().values()
                              if isinstance(lay, QgsVectorLayer) and lay.geometryType() == geometry), None)
                if guess is not None:
                    combo.setLayer(guess)
        self._partition_layer_changed(self.partition_combo.currentLayer())
        self._station_layer_changed(self.station_combo.currentLayer())

    def add_predictor_files(self, paths=None):
        if paths is None:
            paths, _filter = QFileDialog.getOpenFileNames(self, tr("Predictor rasters"), "",
                                                          tr("Rasters (*.tif *.tiff *.vrt);;All files (*)"))
        for path in paths:
            layer = QgsRasterLayer(path, os.path.splitext(os.path.basename(path))[0], "gdal")
            if layer.isValid():
                self._tick_ids = getattr(self, "_tick_ids", set()) | {layer.id()}
                QgsProject.instance().addMapLayer(layer)
        self.refresh_layers()

    def _partition_layer_changed(self, layer):
        previous = self.partition_field.layer()
        self.partition_field.setLayer(layer)
        if layer is not None and (previous is None or previous.id() != layer.id() or
                                  not self.partition_field.currentField()):
            names = [f.name() for f in layer.fields() if f.name().lower() != "fid"]
            preferred = next((n for n in names if n.lower() in ("name", "partition", "region")), None)
            self.partition_field.setField(preferred or (names[0] if names else ""))
        self.validate()

    def _station_layer_changed(self, layer):
        for widget, default in ((self.site_field, "site_id"), (self.date_field, "date"), (self.value_field, "sm")):
            widget.setLayer(layer)
            if layer is not None and layer.fields().lookupField(default) >= 0:
                widget.setField(default)
        self.validate()

    # --- values and checks --------------------------------------------------------------------
    def predictor_layers(self):
        """``[(layer, categorical)]`` of the ticked predictors."""
        chosen = []
        for row in range(self.predictor_table.rowCount()):
            if self.predictor_table.item(row, 0).checkState() != Qt.Checked:
                continue
            layer = QgsProject.instance().mapLayer(self.predictor_table.item(row, 1).data(Qt.UserRole))
            if layer is not None:
                chosen.append((layer, self.predictor_table.item(row, 2).checkState() == Qt.Checked))
        return chosen

    def _set_error(self, key, text):
        label = getattr(self, f"{key}_error")
        label.setText(text or "")
        label.setVisible(bool(text))
        if text:
            self.errors[key] = text
        else:
            self.errors.pop(key, None)

    def validate(self):
        """Check every input; show each problem next to its widget. Returns {key: message}."""
        if not hasattr(self, "folder_error"):
            return {}
        predictors = self.predictor_layers()
        sm = self.sm_combo.currentLayer()
        sm_dates = band_dates(sm) if sm is not None else None
        problem = None
        if not predictors:
            problem = tr("Tick at least one predictor raster.")
        else:
            names = [predictor_name(layer) for layer, _c in predictors]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            no_crs = [predictor_name(layer) for layer, _c in predictors if not layer.crs().isValid()]
            if duplicates:
                problem = tr("Predictor names must be unique (file stems): {}.").format(", ".join(duplicates))
            elif no_crs:
                problem = tr("No CRS: {} (Raster > Projections > Assign Projection).").format(", ".join(no_crs))
            elif sm_dates:
                for layer, _c in predictors:
                    dates = band_dates(layer)
                    if layer.bandCount() > 1 and dates is None:
                        problem = tr("{}: a multi-band predictor needs its dates as band descriptions "
                                     "(YYYY-MM-DD).").format(predictor_name(layer))
                        break
                    if dates is not None and dates != sm_dates:
                        missing = sorted(set(sm_dates) - set(dates))
                        problem = tr("{}: its dates differ from the soil moisture's ({} missing, e.g. {}).").format(
                            predictor_name(layer), len(missing), missing[0] if missing else dates[0])
                        break
        self._set_error("predictors", problem)

        mask = self.mask_edit.text().strip()
        problem = None
        if mask:
            names = {predictor_name(layer) for layer, _c in predictors}
            for item in mask.split(";"):
                name, _sep, classes = item.partition(":")
                if not _sep or not classes.strip():
                    problem = tr("Write name:class,class (e.g. lc:0).")
                    break
                if predictors and name.strip() not in names:
                    problem = tr("{!r} is not one of the ticked predictors.").format(name.strip())
                    break
                if not all(c.strip().lstrip("-").isdigit() for c in classes.split(",")):
                    problem = tr("Classes are whole numbers, e.g. lc:0 or lc:0,7.")
                    break
        self._set_error("mask", problem)

        if sm is None:
            self._set_error("sm", tr("Choose the coarse soil-moisture series."))
        elif not sm.crs().isValid():
            self._set_error("sm", tr("The soil-moisture raster has no CRS."))
        elif sm_dates is None:
            self._set_error("sm", tr("Not a dated series: bands need YYYY-MM-DD descriptions (one band per date)."))
        else:
            self._set_error("sm", None)

        partitions = self.partition_combo.currentLayer()
        if partitions is not None and partitions.geometryType() != QgsWkbTypes.PolygonGeometry:
            self._set_error("partitions", tr("{!r} holds {} - partitions must be polygons (leave empty for one "
                                             "global model).").format(
                partitions.name(), QgsWkbTypes.geometryDisplayString(partitions.geometryType()).lower()))
        elif partitions is not None and not partitions.crs().isValid():
            self._set_error("partitions", tr("The partition layer has no CRS."))
        else:
            self._set_error("partitions", None)
        self._set_error("partition_field", tr("Choose the field with the partition names.")
                        if partitions is not None and not self.partition_field.currentField() else None)

        stations = self.station_combo.currentLayer()
        if stations is None:
            self._set_error("stations", tr("Choose the station point layer (one feature per site and date)."))
        elif stations.geometryType() != QgsWkbTypes.PointGeometry:
            self._set_error("stations", tr("Stations must be points."))
        else:
            self._set_error("stations", None)
        for key, widget in (("site_field", self.site_field), ("date_field", self.date_field),
                            ("value_field", self.value_field)):
            text = None
            if stations is not None and not widget.currentField():
                text = tr("Choose a field.")
            elif stations is not None and key == "value_field":
                field = stations.fields().field(widget.currentField())
                if not field.isNumeric():
                    text = tr("{!r} is not a number field (soil moisture in m3/m3).").format(field.name())
            self._set_error(key, text)

        self._set_error("resolution", tr("Choose a resolution above 0.") if self.resolution_spin.value() <= 0 else None)
        self._set_error("base_models", None if any(c.isChecked() for c in self.base_model_checks)
                        else tr("Tick at least one base model."))
        folder = self.folder_widget.filePath().strip()
        if not folder:
            self._set_error("folder", tr("Choose an output folder (outputs are kept there)."))
        elif os.path.exists(folder) and not os.path.isdir(folder):
            self._set_error("folder", tr("{} is a file, not a folder.").format(folder))
        else:
            parent = folder if os.path.isdir(folder) else os.path.dirname(folder)
            self._set_error("folder", None if parent and os.access(parent, os.W_OK)
                            else tr("Cannot write into {}.").format(parent or folder))
        running = self.run is not None and self.run.running()
        self.run_button.setEnabled(not self.errors and not running)
        self.run_button.setToolTip("\n".join(self.errors.values()))
        return dict(self.errors)

    # --- run ----------------------------------------------------------------------------------
    def output_paths(self, folder):
        return {role: os.path.join(folder, name) for role, name in WORKFLOW_FILES.items()}

    def build_steps(self, staging):
        """``(algorithm id, parameters, weight)`` for every step, writing into ``staging``."""
        out = self.output_paths(staging)
        predictors = self.predictor_layers()
        categorical = ",".join(predictor_name(layer) for layer, is_cat in predictors if is_cat)
        sm = self.sm_combo.currentLayer().source()
        partitions = self.partition_combo.currentLayer()
        stations = self.station_combo.currentLayer()
        weights = dict(STEPS)
        preprocess = {"PREDICTORS": [layer.source() for layer, _c in predictors], "COARSE_SM": sm,
                      "CATEGORICAL": categorical, "MASK_CLASSES": self.mask_edit.text().strip(),
                      "FINE_RESOLUTION": self.resolution_spin.value(), "MIN_VALID_FRACTION": 0.5,
                      "OUTPUT": out["dataset"]}
        if self.crs_widget.crs().isValid():
            preprocess["TARGET_CRS"] = self.crs_widget.crs()
        train = {"DATASET": out["dataset"],
                 "BASE_MODELS": [i for i, c in enumerate(self.base_model_checks) if c.isChecked()],
                 "FOLDS": self.folds_spin.value(), "CV_STRATEGY": self.cv_combo.currentIndex(),
                 "N_ESTIMATORS": self.trees_spin.value(), "MIN_SAMPLES": self.min_samples_spin.value(),
                 "THREADS": self.threads_spin.value(), "OUTPUT_MODEL": out["model"], "OUTPUT_REPORT": out["report"]}
        if partitions is not None:
            train.update(PARTITIONS=partitions.source(), PARTITION_FIELD=self.partition_field.currentField())
        predict = {"DATASET": out["dataset"], "MODEL": out["model"],
                   "RESIDUAL_CORRECTION": self.residual_check.isChecked(), "OUTPUT": out["downscaled"]}
        validate = {"DOWNSCALED": out["downscaled"], "OTHER_PRODUCTS": [sm], "STATIONS": stations.source(),
                    "SITE_FIELD": self.site_field.currentField(), "DATE_FIELD": self.date_field.currentField(),
                    "VALUE_FIELD": self.value_field.currentField(), "OUTPUT": out["validation"],
                    "OUTPUT_REPORT": out["validation_report"]}
        steps = [("smdownscale:preprocess", preprocess, weights["smdownscale:preprocess"]),
                 ("smdownscale:train", train, weights["smdownscale:train"]),
                 ("smdownscale:predict", predict, weights["smdownscale:predict"]),
                 ("smdownscale:validate", validate, weights["smdownscale:validate"])]
        if QgsApplication.processingRegistry().algorithmById("smdownscale:summarize") is not None:
            steps.append(("smdownscale:summarize", {"INPUT": out["downscaled"], "OUTPUT_REPORT": out["period_report"],
                                                    "OUTPUT_MEAN": os.path.join(staging, "period_mean.tif")},
                          weights["smdownscale:summarize"]))
        return steps

    def start(self):
        """Check, then run every step in the background. Returns the WorkflowRun (or None)."""
        if self.validate() or (self.run is not None and self.run.running()):
            self.tabs.setCurrentIndex(0 if any(k not in ("folder",) for k in self.errors) else 2)
            return None
        folder = self.folder_widget.filePath().strip()
        os.makedirs(folder, exist_ok=True)
        from ..core.common import SmdError
        from ..core.outputs import check_outputs

        try:  # what the run moves into the folder, before any step: e.g. a folder this plugin did
            # not write where a report's _files folder goes is never replaced
            check_outputs([(path, OUTPUT_KINDS[role]) for role, path in self.output_paths(folder).items()])
        except SmdError as err:
            self._set_error("folder", str(err))
            self.tabs.setCurrentIndex(2)
            return None
        QgsSettings().setValue(OUTPUT_FOLDER_SETTING, folder)
        staging = os.path.join(folder, f".smdownscale-run-{uuid.uuid4().hex[:8]}")
        os.makedirs(staging)
        self.outputs = {}
        for button in self.report_buttons.values():
            button.setEnabled(False)
        self.log.clear()
        self.progress_bar.setValue(0)
        self.tabs.setCurrentIndex(3)
        self.summary_label.setText(tr("Running in the background; outputs go to {}.").format(folder))
        self.run = WorkflowRun(self.build_steps(staging), staging=staging,
                               finalize=lambda results: self._move_outputs(staging, folder), parent=self)
        self.run.progress.connect(lambda value: self.progress_bar.setValue(int(round(value * 1000))))
        self.run.message.connect(self._log)
        self.run.finished.connect(self._finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.run.start()
        return self.run

    def cancel(self):
        if self.run is not None and self.run.running():
            self.run.cancel()

    def _log(self, text, kind):
        prefix = {"warning": "Warning: ", "error": "Error: "}.get(kind, "")
        self.log.appendPlainText(prefix + text)

    def _move_outputs(self, staging, folder):
        """Move what the run wrote from the staging folder into ``folder`` (a dataset folder an
        earlier run left there is replaced only when it is a prepared dataset)."""
        final = self.output_paths(folder)
        for role, staged in self.output_paths(staging).items():
            if not os.path.exists(staged):
                continue
            target = final[role]
            self._move_one(staged, target)
            companion = report_files_folder(staged)  # an HTML report's folder of PNG/CSV files
            if companion and os.path.isdir(companion):
                self._move_one(companion, report_files_folder(target))
            self.outputs[role] = target
        shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _move_one(staged, target):
        """Move one staged output onto ``target``; a folder there is replaced only when this
        plugin wrote it (a prepared dataset, a report's companion folder)."""
        if os.path.isdir(staged) and os.path.isdir(target):
            if not is_plugin_folder(target):
                raise OSError(tr("{} exists and was not written by this plugin; not replaced").format(target))
            shutil.rmtree(target)
        os.replace(staged, target)

    def _finished(self, ok, text):
        self.cancel_button.setEnabled(False)
        self.progress_bar.setValue(1000 if ok else self.progress_bar.value())
        self.summary_label.setText(text)
        if ok:
            for role, button in self.report_buttons.items():
                button.setEnabled(os.path.isfile(self.outputs.get(role, "")))
            if self.load_check.isChecked():
                self.add_outputs_to_project()
            QgsMessageLog.logMessage(tr("Workflow finished; outputs in {}").format(
                os.path.dirname(self.outputs.get("model", ""))), "smdownscale", Qgis.Info)
        self.validate()

    def add_outputs_to_project(self):
        """Add the downscaled series (soil-moisture ramp, name with its date range) and the
        validation points (ubRMSE classes) to the project."""
        from ..processing.layers import soil_moisture_renderer, ubrmse_renderer

        added = {}
        path = self.outputs.get("downscaled")
        if path:
            layer = QgsRasterLayer(path, "downscaled", "gdal")
            if layer.isValid():
                layer.setName(series_layer_name(tr("Downscaled soil moisture"), band_dates(layer) or []))
                layer.setRenderer(soil_moisture_renderer(layer))
                QgsProject.instance().addMapLayer(layer)
                added["downscaled"] = layer
        path = self.outputs.get("validation")
        if path:
            layer = QgsVectorLayer(path, tr("Validation points"), "ogr")
            if layer.isValid():
                # one layer per product (a subset of the same file), so their points do not overlap
                index = layer.fields().lookupField("product")
                products = sorted(str(v) for v in layer.uniqueValues(index)) if index >= 0 else []
                root = QgsProject.instance().layerTreeRoot()
                group = root.insertGroup(0, tr("Validation points")) if len(products) > 1 else None
                for product in products or [None]:
                    item = QgsVectorLayer(path, tr("Validation points: {}").format(product) if product
                                          else tr("Validation points"), "ogr")
                    if product is not None:
                        item.setSubsetString("\"product\" = '{}'".format(product.replace("'", "''")))
                    item.setRenderer(ubrmse_renderer(item.geometryType()))
                    QgsProject.instance().addMapLayer(item, group is None)
                    if group is not None:
                        group.addLayer(item)
                    added.setdefault("validation", []).append(item)
        return added

    def open_report(self, role):
        path = self.outputs.get(role)
        if path and os.path.isfile(path):
            QDesktopServices.openUrl(QUrl.fromLocalFile(path))

    def load_demo_data(self, folder=None):
        """Write the built-in scenario and add its layers; the inputs fill from them."""
        from .demo_data import load_demo_data

        result = load_demo_data(self.iface, folder, parent=self)
        if result is not None:
            scenario, layers = result
            self.sm_combo.setLayer(layers["soil_moisture"])
            self.partition_combo.setLayer(layers["partitions"])
            self.station_combo.setLayer(layers["stations"])
            self.refresh_layers(guess=True)
        return result

    def closeEvent(self, event):  # noqa: N802 (Qt API)
        if self.run is not None and self.run.running():
            self.run.cancel()
        super().closeEvent(event)
