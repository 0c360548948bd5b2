"""The date dock (ui/date_dock.py) steps through the bands = dates of a series layer, and "Load
demo data" (ui/demo_data.py) adds the built-in scenario's layers, in a real (offscreen) QGIS."""
import os

import pytest

from qtwait import qtbot  # noqa: F401 (fixture)

ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    from smdownscale.demo.scenario import make_scenario

    return make_scenario(str(tmp_path_factory.mktemp("scenario")), size="small")


@pytest.fixture
def demo_layers(qgis_app, qgis_new_project, scenario):
    from qgis.core import QgsProject

    from smdownscale.ui.demo_data import add_scenario_layers

    layers = add_scenario_layers(scenario)
    yield layers
    QgsProject.instance().removeAllMapLayers()


def test_band_dates_and_series_names(qgis_app, scenario):
    from qgis.core import QgsRasterLayer

    from smdownscale.ui.date_dock import band_dates, series_layer_name

    layer = QgsRasterLayer(scenario["soil_moisture"], "sm", "gdal")
    assert band_dates(layer) == scenario["dates"]
    static = QgsRasterLayer(next(p for p in scenario["predictors"] if "dem" in os.path.basename(p)), "dem", "gdal")
    assert band_dates(static) is None                       # single band: not a series
    assert series_layer_name("Downscaled", ["2019-04-01", "2019-04-02"]) == \
        "Downscaled 2019-04-01 to 2019-04-02 (2 dates)"
    assert series_layer_name("Downscaled", ["2019-04-01"]) == "Downscaled 2019-04-01"


def test_demo_layers_are_added_named_and_styled(demo_layers, scenario):
    from qgis.core import QgsProject, QgsSingleBandPseudoColorRenderer

    sm = demo_layers["soil_moisture"]
    dates = scenario["dates"]
    assert sm.name() == f"SMAP soil moisture (coarse) {dates[0]} to {dates[-1]} ({len(dates)} dates)"
    assert isinstance(sm.renderer(), QgsSingleBandPseudoColorRenderer)
    names = {layer.name() for layer in QgsProject.instance().mapLayers().values()}
    stems = {os.path.splitext(os.path.basename(p))[0] for p in scenario["predictors"]}
    assert stems <= names                                    # predictors keep their names
    assert demo_layers["partitions"].geometryType() == 2 and demo_layers["stations"].geometryType() == 0
    assert QgsProject.instance().layerTreeRoot().findGroup("smdownscale demo") is not None


def test_dock_switches_bands_by_slider_combo_buttons_and_time(qgis_app, qgis_iface, qtbot, demo_layers, scenario):
    from qgis.core import QgsDateTimeRange
    from qgis.PyQt.QtCore import QDate, QDateTime, QTime

    from smdownscale.ui.date_dock import DateDock, current_band

    sm = demo_layers["soil_moisture"]
    dates = scenario["dates"]
    dock = qtbot.addWidget(DateDock(qgis_iface))
    dock.resize(320, 220)
    dock.show()
    assert not dock.slider.isEnabled()                     # no layer selected yet
    assert dock.set_layer(demo_layers["partitions"]) is False
    assert dock.set_layer(sm) is True
    assert dock.combo.count() == len(dates) and dock.slider.maximum() == len(dates) - 1
    assert dock.date_label.text() == dates[0] and current_band(sm) == 1
    seen = []
    dock.dateChanged.connect(seen.append)
    dock.slider.setValue(3)
    assert current_band(sm) == 4 and dock.combo.currentText() == dates[3] and dock.date_label.text() == dates[3]
    dock.combo.setCurrentIndex(len(dates) - 1)
    assert current_band(sm) == len(dates) and dock.slider.value() == len(dates) - 1
    assert not dock.next_button.isEnabled()
    dock.previous_button.click()
    assert current_band(sm) == len(dates) - 1
    assert seen == [dates[3], dates[-1], dates[-2]]
    assert dock.show_date("2100-01-01") and current_band(sm) == len(dates)   # latest not after
    # the temporal controller drives it when asked
    dock.follow_temporal.setChecked(True)
    day = QDate.fromString(dates[2], "yyyy-MM-dd")
    qgis_iface.mapCanvas().setTemporalRange(QgsDateTimeRange(QDateTime(day, QTime(0, 0)),
                                                             QDateTime(day.addDays(1), QTime(0, 0))))
    dock._temporal_changed()
    assert current_band(sm) == 3 and dock.date_label.text() == dates[2]
    dock.slider.setValue(1)
    os.makedirs(ARTIFACTS, exist_ok=True)
    dock.grab().save(os.path.join(ARTIFACTS, "date_dock.png"))
    # the layer leaving the project empties the dock
    from qgis.core import QgsProject

    QgsProject.instance().removeMapLayer(sm.id())
    assert dock.layer is None and not dock.slider.isEnabled()
    dock.disconnect_signals()


def test_dock_follows_the_current_layer(qgis_app, qgis_iface, qtbot, demo_layers):
    from smdownscale.ui.date_dock import DateDock

    dock = qtbot.addWidget(DateDock(qgis_iface))
    qgis_iface.currentLayerChanged.emit(demo_layers["soil_moisture"])
    assert dock.layer is demo_layers["soil_moisture"]
    qgis_iface.currentLayerChanged.emit(demo_layers["stations"])
    assert dock.layer is None
    dock.disconnect_signals()


def test_load_demo_data_writes_the_scenario_and_adds_its_layers(qgis_app, qgis_iface, qgis_new_project, tmp_path,
                                                                 monkeypatch):
    from qgis.core import QgsProject, QgsSettings

    from smdownscale.ui.demo_data import DEMO_FOLDER_SETTING, load_demo_data

    pushed = []
    monkeypatch.setattr(qgis_iface.messageBar(), "pushSuccess", lambda *a: pushed.append(a), raising=False)
    scenario, layers = load_demo_data(qgis_iface, str(tmp_path / "demo"))
    assert os.path.isfile(scenario["soil_moisture"]) and os.path.isfile(tmp_path / "demo" / "scenario.json")
    assert {"soil_moisture", "partitions", "stations", "predictor:lc"} <= set(layers)
    assert all(layer.id() in QgsProject.instance().mapLayers() for layer in layers.values())
    assert QgsSettings().value(DEMO_FOLDER_SETTING) == str(tmp_path)
    assert pushed and str(tmp_path / "demo") in pushed[0][1]
    QgsProject.instance().removeAllMapLayers()


def test_loaded_series_outputs_are_named_with_their_date_range(qgis_app, scenario):
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsRasterLayer

    from smdownscale.processing.layers import SoilMoistureStyle

    dates = scenario["dates"]
    layer = QgsRasterLayer(scenario["soil_moisture"], "Fine soil moisture", "gdal")
    style = SoilMoistureStyle()
    style.postProcessLayer(layer, QgsProcessingContext(), QgsProcessingFeedback())
    assert layer.name() == f"Fine soil moisture {dates[0]} to {dates[-1]} ({len(dates)} dates)"
    style.postProcessLayer(layer, QgsProcessingContext(), QgsProcessingFeedback())
    assert layer.name().count(dates[0]) == 1                 # not appended twice
    static = QgsRasterLayer(next(p for p in scenario["predictors"] if p.endswith("dem.tif")), "mean", "gdal")
    style.postProcessLayer(static, QgsProcessingContext(), QgsProcessingFeedback())
    assert static.name() == "mean"                             # one band: no dates to show
