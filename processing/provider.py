"""The ``smdownscale`` Processing provider."""
import glob
import os

from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsProcessingModelAlgorithm, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..resources import ICONS_DIR, plugin_metadata, tr
from .algorithms import algorithm_classes
from .algorithms.base import GROUPS

MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")


#: model name (= id after ``smdownscale:``) -> untranslated display name
MODEL_DISPLAY_NAMES = {"downscaling_chain": "Downscaling chain (prepare, train, predict, validate)"}


class ShippedModel(QgsProcessingModelAlgorithm):
    """A .model3 shipped with the plugin, shown with a readable name in the Toolbox."""

    def displayName(self):  # noqa: N802 (QGIS API name)
        return tr(MODEL_DISPLAY_NAMES.get(self.name(), self.name()))

    def group(self):
        return tr(GROUPS["downscaling"][0])

    def icon(self):
        return QIcon(os.path.join(ICONS_DIR, GROUPS["downscaling"][1]))

    def groupId(self):  # noqa: N802 - the .model3 stores only the group text, not our group id
        return "downscaling"

    def helpUrl(self):  # noqa: N802
        from ..resources import help_url

        return help_url(self.name())

    def createInstance(self):  # noqa: N802 - the dialog runs a copy: keep its class and input order
        copy = ShippedModel()
        copy.loadVariant(self.toVariant())
        copy.order_inputs()
        if copy.name() == "downscaling_chain":
            from .models.chain_layout import apply_output_defaults

            apply_output_defaults(copy)  # the remembered output folder, not temporary files
        return copy

    def order_inputs(self):
        """Inputs in workflow order (QGIS 3.22 reads model inputs in name order)."""
        if self.name() == "downscaling_chain":
            from .models.chain_layout import order_model_inputs

            order_model_inputs(self)


class SmDownscaleProvider(QgsProcessingProvider):
    """Algorithms of :mod:`.algorithms` plus the Graphical Modeler models in ``models/``."""

    def id(self):
        return "smdownscale"

    def name(self):
        return tr("Soil moisture downscaling")

    def longName(self):  # noqa: N802 (QGIS API name)
        return tr("Soil moisture downscaling (smdownscale {})").format(self.versionInfo())

    def icon(self):
        return QIcon(os.path.join(ICONS_DIR, "smdownscale.svg"))

    def svgIconPath(self):  # noqa: N802
        return os.path.join(ICONS_DIR, "smdownscale.svg")

    def versionInfo(self):  # noqa: N802
        return plugin_metadata("version")

    def loadAlgorithms(self):  # noqa: N802
        classes, errors = algorithm_classes()
        for name, error in errors.items():
            QgsMessageLog.logMessage(f"smdownscale: algorithm module {name!r} not loaded: {error}",
                                     "Processing", Qgis.Warning)
        # keep the Python objects alive: the registry holds only their C++ side, and a collected
        # wrapper turns an algorithm into a bare QgsProcessingAlgorithm (empty help, no run)
        self._algorithms = [cls() for cls in classes]
        for algorithm in self._algorithms:
            self.addAlgorithm(algorithm)
        self._models = []
        for path in sorted(glob.glob(os.path.join(MODELS_DIR, "*.model3"))):
            model = ShippedModel()
            if model.fromFile(path):
                self.addAlgorithm(model)
                self._models.append(model)
            else:
                QgsMessageLog.logMessage(f"smdownscale: could not read model {path}", "Processing",
                                         Qgis.Warning)
        # The models' steps are this provider's algorithms, which the registry resolves only once
        # the provider is registered: attach them then (or now, on a refresh).
        registry = QgsApplication.processingRegistry()
        if registry.providerById(self.id()) is self:
            self._attach_models()
        else:
            registry.providerAdded.connect(self._on_provider_added)

    def _on_provider_added(self, provider_id):
        if provider_id == self.id():
            QgsApplication.processingRegistry().providerAdded.disconnect(self._on_provider_added)
            self._attach_models()

    def _attach_models(self):
        """Resolve the child algorithms and expose the models' outputs as parameters."""
        for model in self._models:
            for child_id in model.childAlgorithms():
                model.childAlgorithm(child_id).reattach()
            model.updateDestinationParameters()
            model.order_inputs()
