"""train says so when the partitions are not polygons (refused, with the reason) and when no
partition layer is given (one global model, a warning in the log), in a real (offscreen) QGIS."""
import pytest


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from smdownscale.core.preprocess import preprocess
    from smdownscale.demo.scenario import make_scenario

    folder = tmp_path_factory.mktemp("partition-warning")
    scenario = make_scenario(str(folder / "scenario"), size="small")
    preprocess(scenario["predictors"], scenario["soil_moisture"], str(folder / "dataset"),
               categorical=["lc"], mask_classes={"lc": [0]})
    return scenario, str(folder / "dataset")


@pytest.fixture
def run(qgis_app, qgis_processing):
    import processing
    from qgis.core import QgsApplication

    from smdownscale.processing.provider import SmDownscaleProvider

    registry = QgsApplication.processingRegistry()
    if registry.providerById("smdownscale") is None:
        run.keep = SmDownscaleProvider()
        registry.addProvider(run.keep)
    return processing.run


def test_points_as_partitions_are_refused_with_the_reason(run, prepared, tmp_path):
    from qgis.core import QgsProcessingException

    scenario, dataset = prepared
    with pytest.raises(QgsProcessingException) as caught:
        run("smdownscale:train", {"DATASET": dataset, "PARTITIONS": scenario["stations"], "PARTITION_FIELD": "site_id",
                                  "OUTPUT_MODEL": str(tmp_path / "m.smdmodel.zip")})
    assert "partitions must be polygons" in str(caught.value) and "point" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_no_partitions_trains_a_global_model_with_a_warning(run, prepared, tmp_path):
    from qgis.core import QgsProcessingFeedback

    class Feedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.warnings = []

        def pushWarning(self, text):  # noqa: N802
            self.warnings.append(text)
            super().pushWarning(text)

    _scenario, dataset = prepared
    feedback = Feedback()
    result = run("smdownscale:train", {"DATASET": dataset, "BASE_MODELS": [0], "FOLDS": 2, "N_ESTIMATORS": 10,
                                       "MIN_SAMPLES": 10, "THREADS": 2,
                                       "OUTPUT_MODEL": str(tmp_path / "m.smdmodel.zip")}, feedback=feedback)
    assert (tmp_path / "m.smdmodel.zip").is_file() and result["OUTPUT_MODEL"]
    assert any("one global model" in text for text in feedback.warnings), feedback.warnings
