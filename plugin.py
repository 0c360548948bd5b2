"""The QGIS plugin object: registers the Processing provider, the Raster menu entries (in workflow
order, grouped by step), the toolbar button, the date dock and the dependency check."""
import os

from qgis.core import QgsApplication
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .processing.provider import SmDownscaleProvider
from .resources import ICONS_DIR, tr

MENU = "Soil moisture downscaling"
#: the algorithm the toolbar button opens (the whole chain, as a Graphical Modeler model)
TOOLBAR_ALGORITHM = "smdownscale:downscaling_chain"
#: the Raster menu, in the order an analyst works: (step title, algorithm names); an algorithm
#: not listed (e.g. one added later) goes to the end of the step of its Processing group
MENU_STEPS = (
    ("1. Prepare inputs", ("importsmapl4", "importismn", "spectralindices", "s1composite", "reclassifylc",
                           "gapfill")),
    ("2. Downscale", ("downscaling_chain", "preprocess", "train", "predict")),
    ("3. Validate and explain", ("validate", "summarize", "explain")),
    ("4. Share models", ("generatekeys", "signmodel")),
)
#: Processing group id -> index in MENU_STEPS for algorithms MENU_STEPS does not name
GROUP_STEP = {"dataprep": 0, "downscaling": 1, "validation": 2}


def menu_layout(algorithms):
    """``[(step title, [algorithm, ...]), ...]`` in workflow order (empty steps dropped)."""
    steps = [(title, []) for title, _names in MENU_STEPS]
    by_name = {alg.name(): alg for alg in algorithms}
    placed = set()
    for (title, names), (_t, items) in zip(MENU_STEPS, steps):
        for name in names:
            if name in by_name:
                items.append(by_name[name])
                placed.add(name)
    for alg in sorted(algorithms, key=lambda a: a.displayName()):
        if alg.name() not in placed:
            steps[GROUP_STEP.get(alg.groupId(), 1)][1].append(alg)
    return [(title, items) for title, items in steps if items]


def open_algorithm_dialog(algorithm_id):
    """Open the Processing dialog of ``algorithm_id`` (GUI thread only)."""
    import processing  # QGIS's Processing plugin, loaded with the desktop

    processing.execAlgorithmDialog(algorithm_id)


class SmDownscalePlugin:
    """Created by ``classFactory``; QGIS calls ``initGui``/``unload``, qgis_process ``initProcessing``."""

    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.actions = []
        self.toolbar_action = None
        self.report_dialog = None
        self.dependency_dialog = None
        self.date_dock = None
        self.workflow_dialog = None
        self.toolbar_actions = []

    def initProcessing(self):  # noqa: N802 (QGIS API name)
        if self.provider is None:
            self.provider = SmDownscaleProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def _add_menu_action(self, action):
        self.iface.addPluginToRasterMenu(tr(MENU), action)
        self.actions.append(action)
        return action

    def _separator(self, title):
        separator = QAction(tr(title), self.iface.mainWindow())
        separator.setSeparator(True)
        separator.setObjectName("smdownscale_step_" + title.split(".", 1)[0])
        return self._add_menu_action(separator)

    def _plugin_action(self, name, text, slot, icon="smdownscale.svg"):
        action = QAction(QIcon(os.path.join(ICONS_DIR, icon)), tr(text), self.iface.mainWindow())
        action.setObjectName(f"smdownscale_{name}")
        action.triggered.connect(lambda _checked=False: slot())
        return self._add_menu_action(action)

    def initGui(self):  # noqa: N802
        self.initProcessing()
        self._plugin_action("workflow", "Downscaling workflow...", self.show_workflow)
        self._plugin_action("load_demo", "Load demo data...", self.load_demo_data)
        for index, (title, algorithms) in enumerate(menu_layout(self.provider.algorithms())):
            self._separator(title)
            for algorithm in algorithms:
                action = QAction(algorithm.icon(), f"{algorithm.displayName()}...", self.iface.mainWindow())
                action.setObjectName(f"smdownscale_{algorithm.name()}")
                action.setToolTip(algorithm.id())
                action.triggered.connect(
                    lambda _checked=False, alg_id=algorithm.id(): open_algorithm_dialog(alg_id))
                self._add_menu_action(action)
            if index == 2:
                self._plugin_action("model_report", "Model report...", self.show_model_report)
        self._separator("5. Tools")
        self._plugin_action("date_dock", "Browse series dates...", self.show_date_dock)
        self._plugin_action("dependencies", "Check dependencies...", self.show_dependencies)
        if not any(a.objectName() == "smdownscale_model_report" for a in self.actions):
            self._plugin_action("model_report", "Model report...", self.show_model_report)
        self.toolbar_action = QAction(QIcon(os.path.join(ICONS_DIR, "smdownscale.svg")),
                                      tr("Soil moisture downscaling chain"), self.iface.mainWindow())
        self.toolbar_action.setObjectName("smdownscale_toolbar")
        self.toolbar_action.triggered.connect(lambda _checked=False: open_algorithm_dialog(
            TOOLBAR_ALGORITHM if self.provider.algorithm("downscaling_chain")
            else "smdownscale:train"))
        self.iface.addToolBarIcon(self.toolbar_action)
        self.toolbar_actions = [self.toolbar_action]
        if self._workflow_available():
            workflow_button = QAction(QIcon(os.path.join(ICONS_DIR, "smdownscale.svg")),
                                      tr("Downscaling workflow"), self.iface.mainWindow())
            workflow_button.setObjectName("smdownscale_workflow_toolbar")
            workflow_button.triggered.connect(lambda _checked=False: self.show_workflow())
            self.iface.addToolBarIcon(workflow_button)
            self.toolbar_actions.append(workflow_button)
        from .ui.dependencies import notify_missing_learners

        try:
            notify_missing_learners(self.iface, self.show_dependencies)
        except Exception as err:  # noqa: BLE001 - a notice must never keep the plugin from loading
            from qgis.core import Qgis, QgsMessageLog

            QgsMessageLog.logMessage(f"smdownscale: dependency check failed: {err}", "smdownscale", Qgis.Warning)

    @staticmethod
    def _workflow_available():
        import importlib.util

        return importlib.util.find_spec(__package__ + ".ui.workflow") is not None

    def show_dependencies(self):
        """Open the dependency dialog (missing / wrong-version learners, Install)."""
        from .ui.dependencies import DependencyDialog

        self.dependency_dialog = DependencyDialog(self.iface.mainWindow())
        self.dependency_dialog.show()
        return self.dependency_dialog

    def show_date_dock(self):
        """Show the date dock (step through the bands = dates of a series layer)."""
        from qgis.PyQt.QtCore import Qt

        from .ui.date_dock import DateDock

        if self.date_dock is None:
            self.date_dock = DateDock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.date_dock)
        self.date_dock.show()
        self.date_dock.raise_()
        return self.date_dock

    def show_workflow(self):
        """Open the guided workflow dialog (falls back to the chain model when it is not there)."""
        if not self._workflow_available():
            open_algorithm_dialog(TOOLBAR_ALGORITHM)
            return None
        from .ui.workflow import WorkflowDialog

        if self.workflow_dialog is None:
            self.workflow_dialog = WorkflowDialog(self.iface, self.iface.mainWindow())
        self.workflow_dialog.show()
        self.workflow_dialog.raise_()
        return self.workflow_dialog

    def load_demo_data(self, folder=None):
        """Write the built-in scenario into a folder (asked for) and add its layers."""
        from .ui.demo_data import load_demo_data

        return load_demo_data(self.iface, folder)

    def show_model_report(self, _checked=False, model_path=None):
        """Open the model report dialog (Table 3 of a model file)."""
        from .ui.model_report import ModelReportDialog

        self.report_dialog = ModelReportDialog(self.iface.mainWindow(), model_path=model_path)
        self.report_dialog.show()
        return self.report_dialog

    def unload(self):
        menu = tr(MENU)
        for action in self.actions:
            self.iface.removePluginRasterMenu(menu, action)
            action.deleteLater()
        self.actions = []
        for action in self.toolbar_actions:
            self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.toolbar_actions = []
        self.toolbar_action = None
        if self.date_dock is not None:
            self.date_dock.disconnect_signals()
            self.iface.removeDockWidget(self.date_dock)
            self.date_dock.deleteLater()
            self.date_dock = None
        for dialog in (self.workflow_dialog, self.dependency_dialog):
            if dialog is not None:
                dialog.close()
        self.workflow_dialog = self.dependency_dialog = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
