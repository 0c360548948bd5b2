"""smdownscale:train - fit the partitioned stacking ensemble on a prepared dataset."""
import math

from qgis.core import (
    QgsFeatureRequest,
    QgsProcessing,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
)

from ..layers import partitions_from_source
from .base import SmdAlgorithm, dataset_folder_error, require_packages, tr

BASE_MODEL_IDS = ("xgboost", "lightgbm", "catboost")
BASE_MODEL_LABELS = ("XGBoost", "LightGBM", "CatBoost")
CV_STRATEGY_IDS = ("random", "spatial", "dates")
CV_STRATEGY_LABELS = ("Random pixels", "Spatial blocks", "Leave dates out")


class TrainAlgorithm(SmdAlgorithm):
    DATASET = "DATASET"
    PARTITIONS = "PARTITIONS"
    PARTITION_FIELD = "PARTITION_FIELD"
    BASE_MODELS = "BASE_MODELS"
    FOLDS = "FOLDS"
    TEST_FRACTION = "TEST_FRACTION"
    CV_STRATEGY = "CV_STRATEGY"
    SEED = "SEED"
    N_ESTIMATORS = "N_ESTIMATORS"
    LEARNING_RATE = "LEARNING_RATE"
    MAX_DEPTH = "MAX_DEPTH"
    SPATIAL_BLOCK_CELLS = "SPATIAL_BLOCK_CELLS"
    MIN_SAMPLES = "MIN_SAMPLES"
    TRAIN_GLOBAL = "TRAIN_GLOBAL"
    FALLBACK_TO_GLOBAL = "FALLBACK_TO_GLOBAL"
    THREADS = "THREADS"
    OUTPUT_MODEL = "OUTPUT_MODEL"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    R_TEST = "R_TEST"
    RMSE_TEST = "RMSE_TEST"

    ALG_ID = "train"
    DISPLAY_NAME = "Train downscaling model"
    GROUP_ID = "downscaling"
    REQUIRES = ("sklearn",)  # + the chosen learners, checked in processAlgorithm
    HELP = (
        "Trains the stacking ensemble of the paper: XGBoost, LightGBM and CatBoost base models "
        "whose 5-fold out-of-fold predictions feed a linear meta-learner, one ensemble per "
        "terrain partition (plus a global one), on the coarse cells of a prepared dataset "
        "(predictors aggregated to the soil-moisture grid, target = coarse soil moisture)."
        "<h3>Inputs</h3>"
        "<b>Prepared dataset</b>: the folder written by <i>Prepare downscaling dataset</i>.<br>"
        "<b>Partitions</b>: optional polygon layer of terrain regions with a name field; a coarse "
        "cell belongs to the partition covering most of it. Without it one global model is "
        "trained.<br>"
        "<b>Test fraction</b>: share of samples held out (the paper's 7:3 split) for the test "
        "scores. <b>Cross-validation</b>: how the folds are drawn - random samples, spatial blocks "
        "of coarse cells, or whole dates left out.<br>"
        "Advanced: number of trees, learning rate, depth, threads, minimum samples per partition."
        "<h3>Outputs</h3><b>Model file</b> (.smdmodel.zip): a zip of the learners' native model "
        "files and a JSON manifest (nothing in it can run code when loaded). "
        "<b>Training report</b> (.html, .csv or .json): the "
        "Table-3 numbers (R and RMSE on training and test samples per partition and model).")

    def initAlgorithm(self, config=None):  # noqa: N802
        param = QgsProcessingParameterFile(
            self.DATASET, tr("Prepared dataset folder"), behavior=QgsProcessingParameterFile.Folder)
        self.add_parameter(param, tr("Folder written by Prepare downscaling dataset (holds dataset.json)."))
        param = QgsProcessingParameterFeatureSource(
            self.PARTITIONS, tr("Terrain partitions"), [QgsProcessing.TypeVectorPolygon], optional=True)
        self.add_parameter(param, tr("Polygons of terrain regions; one model is trained per region. "
                                      "Empty = one global model."))
        param = QgsProcessingParameterField(
            self.PARTITION_FIELD, tr("Partition name field"), parentLayerParameterName=self.PARTITIONS,
            optional=True)
        self.add_parameter(param, tr("Field holding the region names (required with partitions)."))
        param = QgsProcessingParameterEnum(
            self.BASE_MODELS, tr("Base models"), options=list(BASE_MODEL_LABELS), allowMultiple=True,
            defaultValue=[0, 1, 2])
        self.add_parameter(param, tr("Learners stacked by the linear meta-learner."))
        param = QgsProcessingParameterNumber(
            self.FOLDS, tr("Cross-validation folds"), QgsProcessingParameterNumber.Integer,
            defaultValue=5, minValue=2, maxValue=20)
        self.add_parameter(
            param, tr("Folds giving the out-of-fold predictions the meta-learner is fitted on."))
        param = QgsProcessingParameterNumber(
            self.TEST_FRACTION, tr("Test fraction"), QgsProcessingParameterNumber.Double,
            defaultValue=0.3, minValue=0.05, maxValue=0.9)
        self.add_parameter(
            param, tr("Share of samples held out for the test scores (0.3 = the paper's 7:3)."))
        param = QgsProcessingParameterEnum(
            self.CV_STRATEGY, tr("Cross-validation strategy"), options=list(CV_STRATEGY_LABELS),
            defaultValue=0)
        self.add_parameter(
            param, tr("Random samples, spatial blocks of coarse cells, or whole dates left out."))
        param = QgsProcessingParameterNumber(
            self.SEED, tr("Random seed"), QgsProcessingParameterNumber.Integer, defaultValue=42)
        self.add_parameter(
            param, tr("Seed of the split, the folds and the learners (same seed = same model)."))
        for name, label, kind, default, minimum, maximum, help_text in (
                (self.N_ESTIMATORS, "Trees per base model", QgsProcessingParameterNumber.Integer,
                 300, 1, 100000, "Boosting rounds of each learner."),
                (self.LEARNING_RATE, "Learning rate", QgsProcessingParameterNumber.Double,
                 0.1, 1e-6, 1.0, "Shrinkage of each boosting round."),
                (self.MAX_DEPTH, "Maximum tree depth (0 = each library's default)",
                 QgsProcessingParameterNumber.Integer, 0, 0, 16,
                 "Depth of the trees of every learner; 0 keeps XGBoost 6, LightGBM unlimited "
                 "(31 leaves), CatBoost 6."),
                (self.SPATIAL_BLOCK_CELLS, "Spatial block size (coarse cells)",
                 QgsProcessingParameterNumber.Integer, 4, 1, 1000,
                 "Edge of the blocks used by the spatial cross-validation."),
                (self.MIN_SAMPLES, "Minimum samples per partition", QgsProcessingParameterNumber.Integer,
                 50, 2, 10 ** 9, "A partition with fewer coarse samples is an error (or uses the "
                 "global model, see below)."),
                (self.THREADS, "Threads per learner (0 = all cores)", QgsProcessingParameterNumber.Integer,
                 0, 0, 256, "CPU threads each learner uses.")):
            param = QgsProcessingParameterNumber(name, tr(label), kind, defaultValue=default,
                                                 minValue=minimum, maxValue=maximum)
            self.add_parameter(param, tr(help_text), advanced=True)
        param = QgsProcessingParameterBoolean(
            self.TRAIN_GLOBAL, tr("Also train the global (unpartitioned) model"), defaultValue=True)
        self.add_parameter(param, tr("The paper's WP model, for comparison and as a fallback."),
                           advanced=True)
        param = QgsProcessingParameterBoolean(
            self.FALLBACK_TO_GLOBAL, tr("Use the global model for partitions with too few samples"),
            defaultValue=False)
        self.add_parameter(
            param, tr("Instead of failing when a partition has fewer than the minimum samples."),
            advanced=True)
        param = QgsProcessingParameterFileDestination(
            self.OUTPUT_MODEL, tr("Model file"), tr("smdownscale model (*.smdmodel.zip *.zip)"))
        self.add_parameter(param, tr("Zip with the learners' native model files and a manifest."))
        param = QgsProcessingParameterFileDestination(
            self.OUTPUT_REPORT, tr("Training report"),
            tr("HTML (*.html);;CSV (*.csv);;JSON (*.json)"), optional=True, createByDefault=True)
        self.add_parameter(
            param, tr("Table-3 numbers: R and RMSE on train and test samples per partition and model."))
        self.addOutput(QgsProcessingOutputNumber(self.R_TEST, tr("Test R of the stacking models (partitions weighted by test samples)")))
        self.addOutput(QgsProcessingOutputNumber(self.RMSE_TEST, tr("Test RMSE of the stacking models (partitions weighted by test samples)")))

    def parameter_error(self, parameters, context):
        error = dataset_folder_error(self.parameterAsFile(parameters, self.DATASET, context))
        if error:
            return error
        if not self.parameterAsEnums(parameters, self.BASE_MODELS, context):
            return tr("Choose at least one base model.")
        source = self.parameterAsSource(parameters, self.PARTITIONS, context)
        if source is not None:
            field = self.parameterAsString(parameters, self.PARTITION_FIELD, context)
            if not field:
                return tr("Choose the partition name field of the partition layer.")
            if source.fields().lookupField(field) < 0:
                return tr("The partition layer has no field {!r}. Fields: {}.").format(
             field, ", ".join(source.fields().names()))
            if not source.sourceCrs().isValid():
                return tr("The partition layer has no coordinate reference system; "
                          "assign one first.")
            if next(source.getFeatures(QgsFeatureRequest().setLimit(1)), None) is None:
                return tr("The partition layer has no features.")
        return None

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        base_models = tuple(BASE_MODEL_IDS[i] for i in
                            self.parameterAsEnums(parameters, self.BASE_MODELS, context))
        require_packages(*self.REQUIRES, *base_models)
        from ...core.train import train_model

        dataset = self.dataset_folder(parameters, self.DATASET, context)
        source = self.parameterAsSource(parameters, self.PARTITIONS, context)
        partitions = None
        if source is not None:
            partitions = partitions_from_source(
                source, self.parameterAsString(parameters, self.PARTITION_FIELD, context))
            layer = self.parameterAsVectorLayer(parameters, self.PARTITIONS, context)
            partitions.source_path = layer.source() if layer is not None else None
            feedback.pushInfo(tr("Partitions: {}").format(", ".join(partitions.names)))
        threads = self.parameterAsInt(parameters, self.THREADS, context)
        params = learner_params(base_models,
                                self.parameterAsInt(parameters, self.N_ESTIMATORS, context),
                                self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
                                self.parameterAsInt(parameters, self.MAX_DEPTH, context))
        model_path = self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context)
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        report = self.run_core(
            train_model, dataset, model_path, partitions=partitions, base_models=base_models,
            folds=self.parameterAsInt(parameters, self.FOLDS, context),
            test_fraction=self.parameterAsDouble(parameters, self.TEST_FRACTION, context),
            cv_strategy=CV_STRATEGY_IDS[self.parameterAsEnum(parameters, self.CV_STRATEGY, context)],
            spatial_block_cells=self.parameterAsInt(parameters, self.SPATIAL_BLOCK_CELLS, context),
            seed=self.parameterAsInt(parameters, self.SEED, context), params=params,
            train_global=self.parameterAsBoolean(parameters, self.TRAIN_GLOBAL, context),
            min_samples=self.parameterAsInt(parameters, self.MIN_SAMPLES, context),
            fallback_to_global=self.parameterAsBoolean(parameters, self.FALLBACK_TO_GLOBAL, context),
            n_threads=threads if threads > 0 else None, report_path=report_path or None,
            progress=self.progress(feedback))
        # model and report were written together (both or neither)
        results = {self.OUTPUT_MODEL: model_path}
        if report_path:
            results[self.OUTPUT_REPORT] = report_path
        stacking = stacking_test_scores(report)
        for warning in report.get("warnings", []):
            feedback.pushWarning(warning)
        for row in report.rows():
            feedback.pushInfo("{partition} {model}: n train {n_train}, n test {n_test}, R train {r_train}, "
                              "RMSE train {rmse_train}, R test {r_test}, RMSE test {rmse_test}".format(
                                  **{key: _fmt(value) for key, value in row.items()}))
        results[self.R_TEST], results[self.RMSE_TEST] = stacking
        return results


def _fmt(value):
    """A report number for the log: 4 decimals, 'n/a' for NaN / None (too few samples)."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else "n/a"
    return str(value)


def learner_params(base_models, n_estimators, learning_rate, max_depth):
    """Per-learner overrides of ``core.stack.DEFAULT_PARAMS`` (max_depth 0 = keep defaults)."""
    params = {}
    for name in base_models:
        params[name] = {"n_estimators": int(n_estimators), "learning_rate": float(learning_rate)}
        if max_depth > 0:
            params[name]["depth" if name == "catboost" else "max_depth"] = int(max_depth)
    return params


def stacking_test_scores(report):
    """(R, RMSE) of the stacking models on their test samples.

    With partitions: the partition rows averaged with weights n_test (RMSE as the root of the
    weighted mean square); without: the global (WP) row.
    """
    rows = [row for row in report.rows() if str(row["model"]).lower().startswith("stack")
            and str(row["partition"]).lower() not in ("global", "wp")]
    rows = rows or [row for row in report.rows() if str(row["model"]).lower().startswith("stack")]
    # rows whose test score is undefined (fewer than 3 test samples: R is NaN) carry no weight
    rows = [row for row in rows if _finite(row.get("r_test")) and _finite(row.get("rmse_test"))]
    total = sum(row["n_test"] for row in rows)
    if not rows or total == 0:
        return float("nan"), float("nan")
    r = sum(row["r_test"] * row["n_test"] for row in rows) / total
    rmse = (sum(row["rmse_test"] ** 2 * row["n_test"] for row in rows) / total) ** 0.5
    return float(r), float(rmse)


def _finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


ALGORITHMS = [TrainAlgorithm]
