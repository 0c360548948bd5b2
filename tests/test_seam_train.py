"""The train seam (issue 9): core decides every train setting once.

The same values go through the Python API (``core.train.TrainingSettings``,
``core.stack.learner_params``, ``core.partitions.check_partition_layer``) and through the
Processing algorithm's parameter check; both must accept and refuse the same values, with
core's message where the algorithm's own check is core's. The values where the two sides
used to disagree (the algorithm's narrower ranges, its string matching of report rows) are
each a case here, fixed to core's behaviour.
"""
import json
import os

import pytest

from smdownscale.core.common import SmdError
from smdownscale.core.partitions import Partitions, check_partition_layer
from smdownscale.core.stack import BASE_MODELS, learner_params
from smdownscale.core.train import GLOBAL_LABEL, MODEL_LABELS, STACK_MODEL, TrainingReport, TrainingSettings

N_DATES = 6


def core_message(settings=None, learners=None):
    """SmdError message of the Python API for these values, or None when it accepts them."""
    settings = dict(settings or {})
    base_models = settings.get("base_models", BASE_MODELS)
    try:
        TrainingSettings(**settings, params=learner_params(base_models, **(learners or {})))
    except SmdError as err:
        return str(err)
    return None


@pytest.fixture(scope="module")
def algorithm(qgis_app):
    from smdownscale.processing.algorithms.train import TrainAlgorithm

    alg = TrainAlgorithm()
    alg.initAlgorithm()
    return alg


@pytest.fixture(scope="module")
def fake_dataset(tmp_path_factory):
    """A folder that passes the algorithm's dataset check (settings are checked, not data)."""
    folder = tmp_path_factory.mktemp("fake_dataset")
    (folder / "dataset.json").write_text("{}", encoding="utf-8")
    return str(folder)


def shell_check(algorithm, fake_dataset, values, tmp_path):
    from qgis.core import QgsProcessingContext

    parameters = {"DATASET": fake_dataset, "OUTPUT_MODEL": str(tmp_path / "m.smdmodel.zip"), **values}
    return algorithm.checkParameterValues(parameters, QgsProcessingContext())


# (algorithm parameters, TrainingSettings fields, learner_params arguments, accepted)
CASES = {
    "defaults": ({}, {}, {}, True),
    # drift: the algorithm capped FOLDS at 20; core has no maximum
    "folds above the old cap": ({"FOLDS": 21}, {"folds": 21}, {}, True),
    "one fold": ({"FOLDS": 1}, {"folds": 1}, {}, False),
    # drift: the algorithm allowed 0.05..0.9; core allows any fraction strictly inside 0..1
    "test fraction 0.95": ({"TEST_FRACTION": 0.95}, {"test_fraction": 0.95}, {}, True),
    "test fraction 0.02": ({"TEST_FRACTION": 0.02}, {"test_fraction": 0.02}, {}, True),
    "test fraction 0": ({"TEST_FRACTION": 0.0}, {"test_fraction": 0.0}, {}, False),
    "test fraction 1": ({"TEST_FRACTION": 1.0}, {"test_fraction": 1.0}, {}, False),
    "random cv": ({"CV_STRATEGY": 0}, {"cv_strategy": "random"}, {}, True),
    "leave dates out": ({"CV_STRATEGY": 2}, {"cv_strategy": "dates"}, {}, True),
    # drift: the algorithm wanted at least 2 samples per partition; core at least 1
    "min samples 1": ({"MIN_SAMPLES": 1}, {"min_samples": 1}, {}, True),
    "min samples 0": ({"MIN_SAMPLES": 0}, {"min_samples": 0}, {}, False),
    # drift: the algorithm capped the spatial block at 1000 cells and the threads at 256
    "large spatial block": ({"SPATIAL_BLOCK_CELLS": 5000}, {"spatial_block_cells": 5000}, {}, True),
    "many threads": ({"THREADS": 512}, {"n_threads": 512}, {}, True),
    "all cores": ({"THREADS": 0}, {"n_threads": 0}, {}, True),
    "no base model": ({"BASE_MODELS": []}, {"base_models": ()}, {}, False),
    "catboost only": ({"BASE_MODELS": [2]}, {"base_models": ("catboost",)}, {}, True),
    # drift: the algorithm capped the trees at 100000
    "many trees": ({"N_ESTIMATORS": 200000}, {}, {"n_estimators": 200000}, True),
    "no tree": ({"N_ESTIMATORS": 0}, {}, {"n_estimators": 0}, False),
    # drift: the algorithm allowed learning rates 1e-6..1; core any rate above 0
    "learning rate above 1": ({"LEARNING_RATE": 1.5}, {}, {"learning_rate": 1.5}, True),
    "tiny learning rate": ({"LEARNING_RATE": 1e-7}, {}, {"learning_rate": 1e-7}, True),
    "learning rate 0": ({"LEARNING_RATE": 0.0}, {}, {"learning_rate": 0.0}, False),
    "depth 16": ({"MAX_DEPTH": 16}, {}, {"max_depth": 16}, True),
    "depth 17": ({"MAX_DEPTH": 17}, {}, {"max_depth": 17}, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_algorithm_and_python_api_accept_and_refuse_the_same_settings(algorithm, fake_dataset, tmp_path, case):
    values, settings, learners, accepted = CASES[case]
    expected = core_message(settings, learners)
    assert (expected is None) is accepted, expected
    ok, message = shell_check(algorithm, fake_dataset, values, tmp_path)
    assert ok is accepted, message
    qgis_accepts = all(algorithm.parameterDefinition(name).checkValueIsAcceptable(value)
                       for name, value in values.items())
    if not accepted and qgis_accepts:
        assert message == expected      # QGIS passed it on: the refusal is core's, word for word


def test_algorithm_defaults_are_core_defaults(algorithm):
    defaults = TrainingSettings()
    value = lambda name: algorithm.parameterDefinition(name).defaultValue()
    assert [BASE_MODELS[i] for i in value("BASE_MODELS")] == list(defaults.base_models)
    assert (value("FOLDS"), value("TEST_FRACTION"), value("SEED")) == (defaults.folds, defaults.test_fraction,
                                                                       defaults.seed)
    assert (value("SPATIAL_BLOCK_CELLS"), value("MIN_SAMPLES")) == (defaults.spatial_block_cells,
                                                                    defaults.min_samples)
    assert (value("TRAIN_GLOBAL"), value("FALLBACK_TO_GLOBAL")) == (defaults.train_global,
                                                                    defaults.fallback_to_global)
    # the shared learner knobs at their defaults leave core's DEFAULT_PARAMS as they are
    from smdownscale.core.stack import DEFAULT_PARAMS

    params = learner_params(BASE_MODELS, n_estimators=value("N_ESTIMATORS"),
                            learning_rate=value("LEARNING_RATE"), max_depth=value("MAX_DEPTH"))
    for name in BASE_MODELS:
        assert {k: DEFAULT_PARAMS[name][k] for k in params[name]} == params[name]


def test_learner_params_use_each_library_name_for_depth():
    params = learner_params(BASE_MODELS, n_estimators=10, learning_rate=0.2, max_depth=4)
    assert params == {"xgboost": {"n_estimators": 10, "learning_rate": 0.2, "max_depth": 4},
                      "lightgbm": {"n_estimators": 10, "learning_rate": 0.2, "max_depth": 4},
                      "catboost": {"n_estimators": 10, "learning_rate": 0.2, "depth": 4}}
    assert "max_depth" not in learner_params(("xgboost",), max_depth=0)["xgboost"]


def test_settings_are_normalised_once():
    settings = TrainingSettings(base_models=["xgboost"], folds=3.0, n_threads=0)
    assert settings.base_models == ("xgboost",) and settings.folds == 3 and isinstance(settings.folds, int)
    assert settings.n_threads is None                   # 0 = all cores, recorded as None
    assert settings.replace(folds=4).folds == 4
    with pytest.raises(SmdError, match="folds=1"):
        settings.replace(folds=1)
    with pytest.raises(SmdError, match="seed"):
        TrainingSettings(seed="7")


def stack_row(partition, r, rmse, n_test):
    return {"partition": partition, "model": MODEL_LABELS[STACK_MODEL], "n_train": 10, "n_test": n_test,
            "r_train": 1.0, "rmse_train": 0.0, "r_test": r, "rmse_test": rmse}


def test_stacking_scores_use_core_labels_not_name_matching():
    # drift: the algorithm matched partitions named "global"/"wp" (any case) as the global model
    # and models starting with "stack"; core knows its own labels, so a user partition called
    # "Global" counts like any other partition.
    report = TrainingReport(rows=[stack_row("Global", 0.9, 0.02, 30), stack_row("east", 0.7, 0.04, 10),
                                  stack_row(GLOBAL_LABEL, 0.1, 0.5, 40),
                                  dict(stack_row("east", 0.0, 9.0, 10), model=MODEL_LABELS["xgboost"])])
    r, rmse = report.stacking_test_scores()
    assert r == pytest.approx((0.9 * 30 + 0.7 * 10) / 40)
    assert rmse == pytest.approx(((0.02 ** 2 * 30 + 0.04 ** 2 * 10) / 40) ** 0.5)
    # without partitions: the global row; undefined scores carry no weight
    assert TrainingReport(rows=[stack_row(GLOBAL_LABEL, 0.5, 0.1, 20)]).stacking_test_scores() == (0.5, 0.1)
    nan = TrainingReport(rows=[stack_row("a", None, 0.1, 2)]).stacking_test_scores()
    assert all(v != v for v in nan)


@pytest.fixture(scope="module")
def partition_files(tmp_path_factory):
    """Shapefiles of named polygons, with and without a CRS (.prj); no fid field."""
    from osgeo import ogr, osr

    folder = tmp_path_factory.mktemp("partitions")
    paths = {}
    for name, driver, with_crs in (("named.shp", "ESRI Shapefile", True), ("no_crs.shp", "ESRI Shapefile", False)):
        path = str(folder / name)
        source = ogr.GetDriverByName(driver).CreateDataSource(path)
        reference = None
        if with_crs:
            reference = osr.SpatialReference()
            reference.ImportFromEPSG(32650)
        layer = source.CreateLayer("zones", reference, ogr.wkbPolygon)
        layer.CreateField(ogr.FieldDefn("name", ogr.OFTString))
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("name", "HB")
        feature.SetGeometry(ogr.CreateGeometryFromWkt("POLYGON ((0 0, 10 0, 10 10, 0 10, 0 0))"))
        layer.CreateFeature(feature)
        source = None
        paths[name] = path
    return paths


@pytest.mark.parametrize("file_name, field", [("named.shp", "name"), ("named.shp", "region"),
                                               ("named.shp", ""), ("no_crs.shp", "name")])
def test_partition_field_and_crs_checked_by_core_for_both(algorithm, fake_dataset, partition_files, tmp_path,
                                                          file_name, field):
    path = partition_files[file_name]
    try:
        Partitions.from_file(path, field)
        expected = None
    except SmdError as err:   # the file's name where the algorithm says "The partition layer"
        expected = str(err).replace(os.path.basename(path), "The partition layer")
    ok, message = shell_check(algorithm, fake_dataset, {"PARTITIONS": path, "PARTITION_FIELD": field}, tmp_path)
    assert ok is (expected is None), (message, expected)
    if expected is not None:
        assert message.replace("the partition layer", "The partition layer") == expected
    with pytest.raises(SmdError, match="Choose the partition name field"):
        check_partition_layer("The partition layer", ["name"], "", has_crs=True)


@pytest.fixture(scope="module")
def processing_module(qgis_processing):
    from qgis.core import QgsApplication

    from smdownscale.processing.provider import SmDownscaleProvider

    registry = QgsApplication.processingRegistry()
    if registry.providerById("smdownscale") is None:
        provider = SmDownscaleProvider()
        registry.addProvider(provider)
        processing_module.provider = provider   # keep it alive
    from qgis import processing

    return processing


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from smdownscale.core.preprocess import preprocess
    from smdownscale.demo.scenario import make_scenario

    scenario = make_scenario(str(tmp_path_factory.mktemp("scenario")), size="small", n_dates=N_DATES)
    folder = str(tmp_path_factory.mktemp("prepared") / "dataset")
    preprocess(scenario["predictors"], scenario["soil_moisture"], folder, mask_classes={"lc": [0]})
    return folder, scenario


def test_algorithm_trains_with_the_settings_the_python_api_gets(processing_module, prepared, tmp_path):
    from smdownscale.core.partitions import Partitions
    from smdownscale.core.train import train_model

    folder, scenario = prepared
    result = processing_module.run("smdownscale:train", {
        "DATASET": folder, "PARTITIONS": scenario["partitions"], "PARTITION_FIELD": "name",
        "BASE_MODELS": [0], "FOLDS": 2, "TEST_FRACTION": 0.25, "CV_STRATEGY": 0, "SEED": 3,
        "N_ESTIMATORS": 10, "LEARNING_RATE": 0.2, "MAX_DEPTH": 3, "MIN_SAMPLES": 5, "THREADS": 1,
        "OUTPUT_MODEL": str(tmp_path / "qgis.smdmodel.zip"), "OUTPUT_REPORT": str(tmp_path / "qgis.json")})
    settings = TrainingSettings(base_models=("xgboost",), folds=2, test_fraction=0.25, seed=3, min_samples=5,
                                n_threads=1, params=learner_params(("xgboost",), n_estimators=10,
                                                                   learning_rate=0.2, max_depth=3))
    report = train_model(folder, str(tmp_path / "api.smdmodel.zip"), settings=settings,
                         partitions=Partitions.from_file(scenario["partitions"], "name"))
    with open(result["OUTPUT_REPORT"], encoding="utf-8") as handle:
        shell_report = json.load(handle)
    assert shell_report["settings"] == json.loads(json.dumps(report["settings"]))
    assert shell_report["settings"]["params"] == {"xgboost": {"n_estimators": 10, "learning_rate": 0.2,
                                                              "max_depth": 3}}
    assert [(row["partition"], row["model"], row["n_test"]) for row in shell_report["rows"]] == \
        [(row["partition"], row["model"], row["n_test"]) for row in report.rows()]
    r, rmse = TrainingReport(shell_report).stacking_test_scores()
    assert (result["R_TEST"], result["RMSE_TEST"]) == pytest.approx((r, rmse))
