""""Load demo data": write the built-in scenario (demo/scenario.py) into a folder and add its
layers to the project, styled, so a newcomer can try every algorithm without data."""
import os

from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtWidgets import QFileDialog

from ..resources import tr
from .date_dock import band_dates, series_layer_name

#: QgsSettings key of the last demo folder
DEMO_FOLDER_SETTING = "smdownscale/demo_folder"


def add_scenario_layers(scenario, project=None, group_name="smdownscale demo"):
    """Add the layers of a scenario dict (``make_scenario``'s result) to ``project`` in a group;
    returns ``{role: layer}`` with roles ``predictor:<name>``, ``soil_moisture``, ``partitions``,
    ``stations``."""
    from ..processing.layers import soil_moisture_renderer

    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    group = root.findGroup(group_name) or root.insertGroup(0, group_name)
    layers = {}

    def add(role, layer):
        if not layer.isValid():
            raise RuntimeError(f"demo layer {layer.source()} could not be loaded")
        project.addMapLayer(layer, False)
        group.addLayer(layer)
        layers[role] = layer
        return layer

    vector = QgsVectorLayer(scenario["stations"], tr("Stations (demo)"), "ogr")
    add("stations", vector)
    add("partitions", QgsVectorLayer(scenario["partitions"], tr("Partitions (demo)"), "ogr"))
    sm = QgsRasterLayer(scenario["soil_moisture"], "soil_moisture", "gdal")
    sm.setName(series_layer_name(tr("SMAP soil moisture (coarse)"), band_dates(sm) or scenario.get("dates")))
    sm.setRenderer(soil_moisture_renderer(sm))
    add("soil_moisture", sm)
    for path in scenario["predictors"]:
        name = os.path.splitext(os.path.basename(path))[0]
        # the layer name is the predictor name (the algorithms match predictors by it)
        add(f"predictor:{name}", QgsRasterLayer(path, name, "gdal"))
    return layers


def load_demo_data(iface=None, folder=None, size="small", parent=None):
    """Write the scenario into ``folder`` (asked for when None) and add its layers.
    Returns ``(scenario dict, layers)`` or None when the user cancels."""
    from qgis.core import QgsSettings

    from ..demo.scenario import make_scenario

    settings = QgsSettings()
    if folder is None:
        start = settings.value(DEMO_FOLDER_SETTING, os.path.expanduser("~"))
        folder = QFileDialog.getExistingDirectory(parent or (iface.mainWindow() if iface else None),
                                                  tr("Folder for the demo data"), start)
        if not folder:
            return None
        folder = os.path.join(folder, "smdownscale-demo") if os.listdir(folder) else folder
    scenario = make_scenario(folder, size=size)
    settings.setValue(DEMO_FOLDER_SETTING, os.path.dirname(folder))
    layers = add_scenario_layers(scenario)
    if iface is not None and hasattr(iface, "messageBar"):
        iface.messageBar().pushSuccess(tr("Soil moisture downscaling"),
                                       tr("Demo data written to {} and added to the project.").format(folder))
    return scenario, layers
