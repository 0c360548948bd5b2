"""The QGIS plugin object: registers the Processing provider and the Raster menu entries."""
import os

from qgis.core import QgsApplication
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .processing.provider import SmDownscaleProvider
from .resources import ICONS_DIR, tr

MENU = "Soil moisture downscaling"
#: the algorithm the toolbar button opens (the whole chain, as a Graphical Modeler model)
TOOLBAR_ALGORITHM = "smdownscale:downscaling_chain"


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

    def initProcessing(self):  # noqa: N802 (QGIS API name)
        if self.provider is None:
            self.provider = SmDownscaleProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()
        menu = tr(MENU)
        for algorithm in sorted(self.provider.algorithms(),
                                key=lambda alg: (alg.group(), alg.displayName())):
            action = QAction(algorithm.icon(), f"{algorithm.displayName()}...",
                             self.iface.mainWindow())
            action.setObjectName(f"smdownscale_{algorithm.name()}")
            action.setToolTip(algorithm.id())
            action.triggered.connect(
                lambda _checked=False, alg_id=algorithm.id(): open_algorithm_dialog(alg_id))
            self.iface.addPluginToRasterMenu(menu, action)
            self.actions.append(action)
        report_action = QAction(QIcon(os.path.join(ICONS_DIR, "smdownscale.svg")),
                                tr("Model report..."), self.iface.mainWindow())
        report_action.setObjectName("smdownscale_model_report")
        report_action.triggered.connect(self.show_model_report)
        self.iface.addPluginToRasterMenu(menu, report_action)
        self.actions.append(report_action)
        self.toolbar_action = QAction(QIcon(os.path.join(ICONS_DIR, "smdownscale.svg")),
                                      tr("Soil moisture downscaling chain"), self.iface.mainWindow())
        self.toolbar_action.setObjectName("smdownscale_toolbar")
        self.toolbar_action.triggered.connect(lambda _checked=False: open_algorithm_dialog(
            TOOLBAR_ALGORITHM if self.provider.algorithm("downscaling_chain")
            else "smdownscale:train"))
        self.iface.addToolBarIcon(self.toolbar_action)

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
        if self.toolbar_action is not None:
            self.iface.removeToolBarIcon(self.toolbar_action)
            self.toolbar_action.deleteLater()
            self.toolbar_action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
