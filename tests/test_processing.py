"""Every smdownscale algorithm through processing.run on small data, outputs checked by value,
and bad inputs / cancellation giving a clear QgsProcessingException with nothing written."""
import csv
import json
import math
import os
import zipfile

import numpy as np
import pytest

N_DATES = 8  # the small synthetic scenario, shortened: keeps every learner run to seconds
FAST_TRAIN = {"BASE_MODELS": [0], "FOLDS": 2, "N_ESTIMATORS": 20, "MIN_SAMPLES": 10, "THREADS": 2,
              "SEED": 7}

_KEEP = []


@pytest.fixture(scope="module")
def processing_module(qgis_processing):
    """QGIS's processing module with the smdownscale provider registered."""
    from qgis.core import QgsApplication

    from smdownscale.processing.provider import SmDownscaleProvider

    registry = QgsApplication.processingRegistry()
    if registry.providerById("smdownscale") is None:
        _KEEP.append(SmDownscaleProvider())
        registry.addProvider(_KEEP[-1])
    from qgis import processing

    return processing


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    from smdownscale.demo.scenario import make_scenario

    return make_scenario(str(tmp_path_factory.mktemp("scenario")), size="small", n_dates=N_DATES)


@pytest.fixture(scope="module")
def prepared(processing_module, scenario, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("prepared") / "dataset")
    result = processing_module.run("smdownscale:preprocess", {
        "PREDICTORS": scenario["predictors"], "COARSE_SM": scenario["soil_moisture"],
        "CATEGORICAL": "lc", "MASK_CLASSES": "lc:0", "OUTPUT": folder})
    return result["OUTPUT"]


@pytest.fixture(scope="module")
def trained(processing_module, scenario, prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    result = processing_module.run("smdownscale:train", {
        "DATASET": prepared, "PARTITIONS": scenario["partitions"], "PARTITION_FIELD": "name",
        **FAST_TRAIN, "OUTPUT_MODEL": str(out / "model.smdmodel.zip"),
        "OUTPUT_REPORT": str(out / "report.json")})
    return result


def _read(path):
    import rasterio

    with rasterio.open(path) as src:
        return src.read(), list(src.descriptions), src


def test_preprocess_writes_the_dataset_with_the_coarse_target_unchanged(prepared, scenario):
    import rasterio

    with open(os.path.join(prepared, "dataset.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    assert manifest["dates"] == scenario["dates"]
    names = [p["name"] for p in manifest["predictors"]]
    assert names[-1] == "doy"
    assert sorted(names[:-1]) == sorted(os.path.splitext(os.path.basename(p))[0]
                                        for p in scenario["predictors"])
    assert [p["name"] for p in manifest["predictors"] if p["kind"] == "categorical"] == ["lc"]
    assert manifest["mask_classes"] == {"lc": [0]}
    assert manifest["fine_grid"]["width"] == 48 and manifest["fine_grid"]["height"] == 40
    assert manifest["fine_grid"]["transform"][0] == 1000.0
    # the coarse target is the input soil moisture on the same EASE-Grid cells (cropped)
    with rasterio.open(os.path.join(prepared, "coarse", "soil_moisture.tif")) as target, \
            rasterio.open(scenario["soil_moisture"]) as source:
        assert list(target.descriptions) == scenario["dates"]
        assert target.res == pytest.approx(source.res)
        col_off = round((target.transform.c - source.transform.c) / source.res[0])
        row_off = round((source.transform.f - target.transform.f) / source.res[1])
        expected = source.read(window=((row_off, row_off + target.height), (col_off, col_off + target.width)))
        got = target.read()
    finite = np.isfinite(got)
    assert finite.sum() >= got.size // 2
    np.testing.assert_allclose(got[finite], expected[finite], rtol=0, atol=1e-6)


def test_train_writes_model_and_table3_report(trained):
    model_path, report_path = trained["OUTPUT_MODEL"], trained["OUTPUT_REPORT"]
    with zipfile.ZipFile(model_path) as archive:
        members = set(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
    assert "manifest.json" in members
    # one XGBoost booster per partition + the global model, no other learner, no pickle
    assert len([m for m in members if m.endswith("/xgboost.ubj")]) == 6
    assert not any(m.endswith((".cbm", "lightgbm.txt", ".pkl", ".pickle", ".joblib")) for m in members)
    # the partition polygons went from the QGIS layer into the model with their coordinates
    assert manifest["partitions"]["names"] == ["HB", "JH", "WX", "YJ", "WN"]
    ring = manifest["partitions"]["geometries"][0]["coordinates"][0]
    assert ring[0] == pytest.approx([600000.0, 3600000.0]) and ring[1] == pytest.approx([648000.0, 3600000.0])
    with open(report_path, encoding="utf-8") as handle:
        report = json.load(handle)
    rows = report["rows"]
    assert {row["partition"] for row in rows} == {"HB", "JH", "WX", "YJ", "WN", "WP"}
    assert {row["model"] for row in rows} == {"XGBoost", "Stacking"}
    # R_TEST / RMSE_TEST = the partition stacking rows weighted by their test samples
    stack = [row for row in rows if row["model"] == "Stacking" and row["partition"] != "WP"]
    n = sum(row["n_test"] for row in stack)
    assert trained["R_TEST"] == pytest.approx(sum(row["r_test"] * row["n_test"] for row in stack) / n)
    assert trained["RMSE_TEST"] == pytest.approx(
        math.sqrt(sum(row["rmse_test"] ** 2 * row["n_test"] for row in stack) / n))
    assert trained["R_TEST"] > 0.8 and trained["RMSE_TEST"] < 0.05


def test_predict_writes_the_selected_dates_close_to_the_truth(processing_module, prepared, trained,
                                                              scenario, tmp_path):
    output = str(tmp_path / "sm_1km.tif")
    dates = scenario["dates"][2:4]
    result = processing_module.run("smdownscale:predict", {
        "DATASET": prepared, "MODEL": trained["OUTPUT_MODEL"], "DATES": ",".join(dates), "OUTPUT": output})
    assert result["OUTPUT"] == output and result["N_DATES"] == 2
    values, descriptions, _ = _read(output)
    assert descriptions == dates and values.shape == (2, 40, 48)
    assert result["N_PIXELS"] == int(np.isfinite(values).sum())
    truth, truth_dates, _ = _read(scenario["truth"])
    truth = truth[[truth_dates.index(d) for d in dates]]
    both = np.isfinite(values) & np.isfinite(truth)
    assert both.sum() > 0.9 * values.size
    rmse = float(np.sqrt(np.mean((values[both] - truth[both]) ** 2)))
    assert rmse < 0.06
    assert 0.0 < float(np.nanmin(values)) and float(np.nanmax(values)) < 0.6


def test_explain_table_lists_every_predictor_per_partition(processing_module, prepared, trained, tmp_path):
    output = str(tmp_path / "shap.csv")
    processing_module.run("smdownscale:explain", {
        "MODEL": trained["OUTPUT_MODEL"], "DATASET": prepared, "MAX_SAMPLES": 30, "OUTPUT_TABLE": output})
    with open(output, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(os.path.join(prepared, "dataset.json"), encoding="utf-8") as handle:
        names = {p["name"] for p in json.load(handle)["predictors"]}
    by_partition = {}
    for row in rows:
        by_partition.setdefault(row["partition"], []).append((row["predictor"], float(row["mean_abs_shap"])))
    assert set(by_partition) == {"HB", "JH", "WX", "YJ", "WN", "WP"}
    for items in by_partition.values():
        assert {name for name, _ in items} == names
        importances = [value for _, value in items]
        assert importances == sorted(importances, reverse=True) and importances[-1] >= 0.0
        assert importances[0] > 0.0


@pytest.fixture()
def hand_made_validation(tmp_path):
    """3x3 raster (UTM 50N, 1 km) with 4 dated bands and two stations in EPSG:4326."""
    import rasterio
    from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeature, QgsField,
                           QgsGeometry, QgsPointXY, QgsProject, QgsVectorLayer)
    from qgis.PyQt.QtCore import QDate, QVariant
    from rasterio.transform import from_origin

    from smdownscale.core.common import write_series

    dates = ["2019-04-01", "2019-04-02", "2019-04-03", "2019-04-04"]
    bands = np.full((4, 3, 3), 0.3, dtype="float32")
    bands[:, 0, 0] = [0.10, 0.20, 0.30, 0.40]
    bands[:, 2, 2] = [0.20, 0.20, 0.30, 0.30]
    raster = str(tmp_path / "downscaled.tif")
    write_series(raster, list(bands), dates, {"crs": rasterio.crs.CRS.from_epsg(32650),
                                              "transform": from_origin(600000, 3600000, 1000, 1000),
                                              "width": 3, "height": 3})
    layer = QgsVectorLayer("Point?crs=EPSG:4326", "stations", "memory")
    layer.dataProvider().addAttributes([QgsField("site_id", QVariant.String), QgsField("date", QVariant.Date),
                                        QgsField("sm", QVariant.Double)])
    layer.updateFields()
    to_wgs84 = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32650"),
                                      QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    observed = {"A": ((600500, 3599500), [0.12, 0.18, 0.33, 0.41]),
                "B": ((602500, 3597500), [0.25, 0.22, 0.36, 0.31])}
    features = []
    for site, ((x, y), values) in observed.items():
        point = to_wgs84.transform(QgsPointXY(x, y))
        for day, value in enumerate(values, start=1):
            feature = QgsFeature(layer.fields())
            feature.setGeometry(QgsGeometry.fromPointXY(point))
            feature.setAttributes([site, QDate(2019, 4, day), value])
            features.append(feature)
    layer.dataProvider().addFeatures(features)
    estimates = {"A": bands[:, 0, 0].astype(float), "B": bands[:, 2, 2].astype(float)}
    return raster, layer, {s: np.array(v) for s, (_, v) in observed.items()}, estimates


def _metrics(est, obs):
    """The paper's Eq. 5-8, written out for the test."""
    diff = est - obs
    r = np.sum((est - est.mean()) * (obs - obs.mean())) / np.sqrt(
        np.sum((est - est.mean()) ** 2) * np.sum((obs - obs.mean()) ** 2))
    rmse = np.sqrt(np.mean(diff ** 2))
    bias = np.mean(diff)
    return r, rmse, bias, np.sqrt(rmse ** 2 - bias ** 2)


def test_validate_metrics_match_hand_computed_values(processing_module, hand_made_validation, tmp_path):
    from qgis.core import QgsVectorLayer

    raster, stations, observed, estimates = hand_made_validation
    output = str(tmp_path / "validation.gpkg")
    report = str(tmp_path / "validation.json")
    result = processing_module.run("smdownscale:validate", {
        "DOWNSCALED": raster, "STATIONS": stations, "OUTPUT": output, "OUTPUT_REPORT": report})
    expected = {site: _metrics(estimates[site], observed[site]) for site in observed}
    assert result["MEAN_R"] == pytest.approx(np.mean([e[0] for e in expected.values()]), abs=1e-6)
    assert result["MEDIAN_R"] == pytest.approx(np.median([e[0] for e in expected.values()]), abs=1e-6)
    assert result["MEAN_BIAS"] == pytest.approx(np.mean([e[2] for e in expected.values()]), abs=1e-6)
    assert result["MEAN_UBRMSE"] == pytest.approx(np.mean([e[3] for e in expected.values()]), abs=1e-6)
    layer = QgsVectorLayer(result["OUTPUT"], "validation", "ogr")
    assert layer.isValid() and layer.featureCount() == 2 and layer.crs().authid() == "EPSG:4326"
    for feature in layer.getFeatures():
        r, rmse, bias, ubrmse = expected[feature["site_id"]]
        assert feature["product"] == "downscaled" and feature["n"] == 4
        assert [feature["r"], feature["rmse"], feature["bias"], feature["ubrmse"]] == pytest.approx(
            [r, rmse, bias, ubrmse], abs=1e-6)
    with open(report, encoding="utf-8") as handle:
        assert len(json.load(handle)["per_site"]) == 2


def test_output_styles(qgis_app, hand_made_validation):
    from qgis.core import QgsRasterLayer, QgsWkbTypes

    from smdownscale.processing.layers import soil_moisture_renderer, ubrmse_renderer

    layer = QgsRasterLayer(hand_made_validation[0], "sm")
    renderer = soil_moisture_renderer(layer)
    assert (renderer.classificationMin(), renderer.classificationMax()) == (0.0, 0.5)
    items = renderer.shader().rasterShaderFunction().colorRampItemList()
    assert [round(item.value, 6) for item in items] == [round(i * 0.5 / 6, 6) for i in range(7)]
    graduated = ubrmse_renderer(QgsWkbTypes.PointGeometry)
    assert graduated.classAttribute() == "ubrmse"
    # ubRMSE = 0.04 is "acceptable" (core.metrics): QGIS gives a shared bound to the first range
    assert [(r.lowerValue(), r.upperValue()) for r in graduated.ranges()] == [
        (0.0, float(np.nextafter(0.04, 0.0))), (0.04, 0.06), (0.06, 1e9)]


# ------------------------------------------------------------------ bad inputs and cancellation

def _raises(processing_module, alg_id, parameters, message, context=None, feedback=None):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as caught:
        processing_module.run(alg_id, parameters, context=context, feedback=feedback)
    assert message in str(caught.value)
    return str(caught.value)


def test_preprocess_rejects_unknown_categorical_and_missing_crs(processing_module, scenario, tmp_path):
    import rasterio

    output = tmp_path / "dataset"
    _raises(processing_module, "smdownscale:preprocess", {
        "PREDICTORS": scenario["predictors"], "COARSE_SM": scenario["soil_moisture"],
        "CATEGORICAL": "landcover", "OUTPUT": str(output)},
        "Categorical predictor(s) landcover not among the predictors")
    no_crs = str(tmp_path / "slope.tif")
    with rasterio.open(no_crs, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32",
                       transform=rasterio.transform.from_origin(600000, 3600000, 1000, 1000)) as dst:
        dst.write(np.ones((1, 4, 4), "float32"))
    _raises(processing_module, "smdownscale:preprocess", {
        "PREDICTORS": scenario["predictors"] + [no_crs], "COARSE_SM": scenario["soil_moisture"],
        "OUTPUT": str(output)}, "has no coordinate reference system")
    _raises(processing_module, "smdownscale:preprocess", {
        "PREDICTORS": scenario["predictors"], "COARSE_SM": scenario["soil_moisture"],
        "MASK_CLASSES": "lc=0", "OUTPUT": str(output)}, "is not of the form name:class,class")
    assert not output.exists()


def test_train_rejects_bad_dataset_field_and_too_few_samples(processing_module, prepared, scenario, tmp_path):
    model = tmp_path / "model.smdmodel.zip"
    _raises(processing_module, "smdownscale:train", {
        "DATASET": str(tmp_path), "OUTPUT_MODEL": str(model)}, "is not a prepared dataset folder")
    _raises(processing_module, "smdownscale:train", {
        "DATASET": prepared, "PARTITIONS": scenario["partitions"], "PARTITION_FIELD": "region",
        "OUTPUT_MODEL": str(model)}, "The partition layer has no field 'region'")
    message = _raises(processing_module, "smdownscale:train", {
        "DATASET": prepared, "PARTITIONS": scenario["partitions"], "PARTITION_FIELD": "name",
        **dict(FAST_TRAIN, MIN_SAMPLES=100000), "OUTPUT_MODEL": str(model),
        "OUTPUT_REPORT": str(tmp_path / "report.json")}, "samples (minimum 100000)")
    assert "Partition" in message
    assert sorted(os.listdir(tmp_path)) == []


def test_predict_rejects_unknown_date_and_leaves_nothing(processing_module, prepared, trained, tmp_path):
    output = tmp_path / "sm.tif"
    _raises(processing_module, "smdownscale:predict", {
        "DATASET": prepared, "MODEL": trained["OUTPUT_MODEL"], "DATES": "2030-01-01", "OUTPUT": str(output)},
        "2030-01-01")
    _raises(processing_module, "smdownscale:predict", {
        "DATASET": prepared, "MODEL": trained["OUTPUT_MODEL"], "DATES": "first of May", "OUTPUT": str(output)},
        "is not a date in the form YYYY-MM-DD")
    _raises(processing_module, "smdownscale:predict", {
        "DATASET": prepared, "MODEL": str(tmp_path / "missing.smdmodel.zip"), "OUTPUT": str(output)},
        "does not exist; train a model first")
    assert os.listdir(tmp_path) == []


def test_cancel_during_predict_leaves_no_output(processing_module, prepared, trained, tmp_path):
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda value: feedback.cancel() if value > 0 else None)
    output = tmp_path / "sm.tif"
    _raises(processing_module, "smdownscale:predict", {
        "DATASET": prepared, "MODEL": trained["OUTPUT_MODEL"], "BLOCK_SIZE": 16, "OUTPUT": str(output)},
        "cancelled", context=QgsProcessingContext(), feedback=feedback)
    assert feedback.isCanceled()
    assert os.listdir(tmp_path) == []


def test_validate_rejects_unknown_field(processing_module, hand_made_validation, tmp_path):
    raster, stations, _, _ = hand_made_validation
    output = tmp_path / "out"
    output.mkdir()
    _raises(processing_module, "smdownscale:validate", {
        "DOWNSCALED": raster, "STATIONS": stations, "VALUE_FIELD": "moisture",
        "OUTPUT": str(output / "v.gpkg")}, "no field 'moisture'")
    assert os.listdir(output) == []


def test_outputs_loaded_on_completion_get_their_styles(processing_module, prepared, trained,
                                                       hand_made_validation, tmp_path):
    from qgis.core import (QgsGraduatedSymbolRenderer, QgsProcessingContext, QgsProcessingFeedback,
                           QgsProcessingOutputLayerDefinition, QgsProject, QgsRasterLayer,
                           QgsSingleBandPseudoColorRenderer, QgsVectorLayer)

    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    raster_out = str(tmp_path / "styled.tif")
    processing_module.run("smdownscale:predict", {
        "DATASET": prepared, "MODEL": trained["OUTPUT_MODEL"], "DATES": "2019-04-01",
        "OUTPUT": QgsProcessingOutputLayerDefinition(raster_out, QgsProject.instance())},
        context=context, feedback=feedback)
    details = context.layerToLoadOnCompletionDetails(raster_out)
    layer = QgsRasterLayer(raster_out, "styled")
    details.postProcessor().postProcessLayer(layer, context, feedback)
    assert isinstance(layer.renderer(), QgsSingleBandPseudoColorRenderer)
    assert (layer.renderer().classificationMin(), layer.renderer().classificationMax()) == (0.0, 0.5)

    raster, stations, _, _ = hand_made_validation
    vector_out = str(tmp_path / "styled.gpkg")
    result = processing_module.run("smdownscale:validate", {
        "DOWNSCALED": raster, "STATIONS": stations,
        "OUTPUT": QgsProcessingOutputLayerDefinition(vector_out, QgsProject.instance())},
        context=context, feedback=feedback)
    details = context.layerToLoadOnCompletionDetails(result["OUTPUT"])
    points = QgsVectorLayer(result["OUTPUT"], "validation", "ogr")
    details.postProcessor().postProcessLayer(points, context, feedback)
    assert isinstance(points.renderer(), QgsGraduatedSymbolRenderer)
    assert points.renderer().classAttribute() == "ubrmse"
