"""smdownscale:train - fit the partitioned stacking ensemble on a prepared dataset.

A shell: QGIS parameter values become a ``core.train.TrainingSettings`` (core defaults, checks
and names every setting, and the learners' own parameter names), the report's numbers become
the outputs.
"""
from qgis.core import (
    QgsFeatureRequest,
    QgsWkbTypes,
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

from ...core.partitions import check_partition_layer
from ...core.stack import (BASE_MODEL_LABELS, BASE_MODELS, DEFAULT_LEARNING_RATE, DEFAULT_N_ESTIMATORS,
                           MAX_TREE_DEPTH, MIN_N_ESTIMATORS, learner_params)
from ...core.train import CV_STRATEGIES, CV_STRATEGY_LABELS, TrainingSettings, train_model
from ..layers import partitions_from_source
from .base import SmdAlgorithm, core_error, core_errors, dataset_folder_error, require_packages, tr

DEFAULTS = TrainingSettings()
MINIMUMS = {name: minimum for name, (minimum, _) in TrainingSettings.MINIMUMS.items()}
PARTITION_LAYER = "The partition layer"


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
    EARLY_STOPPING_ROUNDS = "EARLY_STOPPING_ROUNDS"
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
            self.BASE_MODELS, tr("Base models"), options=[BASE_MODEL_LABELS[name] for name in BASE_MODELS],
            allowMultiple=True, defaultValue=[BASE_MODELS.index(name) for name in DEFAULTS.base_models])
        self.add_parameter(param, tr("Learners stacked by the linear meta-learner."))
        param = QgsProcessingParameterNumber(
            self.FOLDS, tr("Cross-validation folds"), QgsProcessingParameterNumber.Integer,
            defaultValue=DEFAULTS.folds, minValue=MINIMUMS["folds"])
        self.add_parameter(
            param, tr("Folds giving the out-of-fold predictions the meta-learner is fitted on."))
        param = QgsProcessingParameterNumber(
            self.TEST_FRACTION, tr("Test fraction"), QgsProcessingParameterNumber.Double,
            defaultValue=DEFAULTS.test_fraction, minValue=TrainingSettings.TEST_FRACTION_BOUNDS[0],
            maxValue=TrainingSettings.TEST_FRACTION_BOUNDS[1])  # both ends refused by core
        self.add_parameter(
            param, tr("Share of samples held out for the test scores (0.3 = the paper's 7:3)."))
        param = QgsProcessingParameterEnum(
            self.CV_STRATEGY, tr("Cross-validation strategy"),
            options=[CV_STRATEGY_LABELS[name] for name in CV_STRATEGIES],
            defaultValue=CV_STRATEGIES.index(DEFAULTS.cv_strategy))
        self.add_parameter(
            param, tr("Random samples, spatial blocks of coarse cells, or whole dates left out."))
        param = QgsProcessingParameterNumber(
            self.SEED, tr("Random seed"), QgsProcessingParameterNumber.Integer, defaultValue=DEFAULTS.seed)
        self.add_parameter(
            param, tr("Seed of the split, the folds and the learners (same seed = same model)."))
        # ranges are core's (TrainingSettings, core.stack.learner_params); None = no maximum.
        # LEARNING_RATE 0 is refused by core in parameter_error (QGIS minimums are inclusive).
        for name, label, kind, default, minimum, maximum, help_text in (
                (self.N_ESTIMATORS, "Trees per base model", QgsProcessingParameterNumber.Integer,
                 DEFAULT_N_ESTIMATORS, MIN_N_ESTIMATORS, None, "Boosting rounds of each learner."),
                (self.LEARNING_RATE, "Learning rate", QgsProcessingParameterNumber.Double,
                 DEFAULT_LEARNING_RATE, 0.0, None, "Shrinkage of each boosting round (above 0)."),
                (self.MAX_DEPTH, "Maximum tree depth (0 = each library's default)",
                 QgsProcessingParameterNumber.Integer, 0, 0, MAX_TREE_DEPTH,
                 "Depth of the trees of every learner; 0 keeps XGBoost 6, LightGBM unlimited "
                 "(31 leaves), CatBoost 6."),
                (self.SPATIAL_BLOCK_CELLS, "Spatial block size (coarse cells)",
                 QgsProcessingParameterNumber.Integer, DEFAULTS.spatial_block_cells,
                 MINIMUMS["spatial_block_cells"], None,
                 "Edge of the blocks used by the spatial cross-validation."),
                (self.MIN_SAMPLES, "Minimum samples per partition", QgsProcessingParameterNumber.Integer,
                 DEFAULTS.min_samples, MINIMUMS["min_samples"], None,
                 "A partition with fewer coarse samples is an error (or uses the "
                 "global model, see below)."),
                (self.THREADS, "Threads per learner (0 = all cores)", QgsProcessingParameterNumber.Integer,
                 0, MINIMUMS["n_threads"], None, "CPU threads each learner uses."),
                (self.EARLY_STOPPING_ROUNDS, "Early stopping rounds (0 = off)",
                 QgsProcessingParameterNumber.Integer, DEFAULTS.early_stopping_rounds,
                 MINIMUMS["early_stopping_rounds"], None,
                 "Each fold's learner stops when its held-out fold has not improved for this many "
                 "rounds; the final learner uses the folds' mean number of trees.")):
            param = QgsProcessingParameterNumber(name, tr(label), kind, defaultValue=default, minValue=minimum)
            if maximum is not None:
                param.setMaximum(maximum)
            self.add_parameter(param, tr(help_text), advanced=True)
        param = QgsProcessingParameterBoolean(
            self.TRAIN_GLOBAL, tr("Also train the global (unpartitioned) model"),
            defaultValue=DEFAULTS.train_global)
        self.add_parameter(param, tr("The paper's WP model, for comparison and as a fallback."),
                           advanced=True)
        param = QgsProcessingParameterBoolean(
            self.FALLBACK_TO_GLOBAL, tr("Use the global model for partitions with too few samples"),
            defaultValue=DEFAULTS.fallback_to_global)
        self.add_parameter(
            param, tr("Instead of failing when a partition has fewer than the minimum samples."),
            advanced=True)
        self.add_scheduler_parameter()
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

    def training_settings(self, parameters, context):
        """The core ``TrainingSettings`` of the parameter values (SmdError when core refuses one)."""
        base_models = tuple(BASE_MODELS[i] for i in self.parameterAsEnums(parameters, self.BASE_MODELS, context))
        return TrainingSettings(
            base_models=base_models,
            folds=self.parameterAsInt(parameters, self.FOLDS, context),
            test_fraction=self.parameterAsDouble(parameters, self.TEST_FRACTION, context),
            cv_strategy=CV_STRATEGIES[self.parameterAsEnum(parameters, self.CV_STRATEGY, context)],
            spatial_block_cells=self.parameterAsInt(parameters, self.SPATIAL_BLOCK_CELLS, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            params=learner_params(
                base_models, n_estimators=self.parameterAsInt(parameters, self.N_ESTIMATORS, context),
                learning_rate=self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
                max_depth=self.parameterAsInt(parameters, self.MAX_DEPTH, context)),
            train_global=self.parameterAsBoolean(parameters, self.TRAIN_GLOBAL, context),
            min_samples=self.parameterAsInt(parameters, self.MIN_SAMPLES, context),
            fallback_to_global=self.parameterAsBoolean(parameters, self.FALLBACK_TO_GLOBAL, context),
            n_threads=self.parameterAsInt(parameters, self.THREADS, context),
            early_stopping_rounds=self.parameterAsInt(parameters, self.EARLY_STOPPING_ROUNDS, context))

    def parameter_error(self, parameters, context):
        error = dataset_folder_error(self.parameterAsFile(parameters, self.DATASET, context))
        if error:
            return error
        error = core_error(self.training_settings, parameters, context) or self.scheduler_error(parameters, context)
        if error:
            return error
        source = self.parameterAsSource(parameters, self.PARTITIONS, context)
        if source is not None and QgsWkbTypes.geometryType(source.wkbType()) != QgsWkbTypes.PolygonGeometry:
            return tr("The partition layer holds {} geometries; partitions must be polygons (one per terrain "
                      "region with a name field). Leave it empty to train one global model.").format(
                QgsWkbTypes.geometryDisplayString(QgsWkbTypes.geometryType(source.wkbType())).lower())
        if source is not None:
            error = core_error(check_partition_layer, PARTITION_LAYER, source.fields().names(),
                               self.parameterAsString(parameters, self.PARTITION_FIELD, context),
                               has_crs=source.sourceCrs().isValid())
            if error:
                return error
            if next(source.getFeatures(QgsFeatureRequest().setLimit(1)), None) is None:
                return tr("The partition layer has no features.")
        return None

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        with core_errors():
            settings = self.training_settings(parameters, context)
        require_packages(*self.REQUIRES, *settings.base_models)
        dataset = self.dataset_folder(parameters, self.DATASET, context)
        source = self.parameterAsSource(parameters, self.PARTITIONS, context)
        partitions = None
        if source is not None:
            layer = self.parameterAsVectorLayer(parameters, self.PARTITIONS, context)
            partitions = partitions_from_source(
                source, self.parameterAsString(parameters, self.PARTITION_FIELD, context),
                source_path=layer.source() if layer is not None else None)
            feedback.pushInfo(tr("Partitions: {}").format(", ".join(partitions.names)))
        else:
            feedback.pushWarning(tr("No partition layer: one global model is trained for the whole area. "
                                    "Partitions must be a polygon layer (point and line layers are not offered "
                                    "in the partition list)."))
        model_path = self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context)
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        with core_errors():
            report = train_model(dataset, model_path, partitions=partitions, settings=settings,
                                 report_path=report_path or None, scheduler=self.scheduler(parameters, context),
                                 progress=self.progress(feedback))
        # model and report were written together (both or neither)
        results = {self.OUTPUT_MODEL: model_path}
        if report_path:
            results[self.OUTPUT_REPORT] = report_path
        if report_path and report.get("report_seconds") is not None:
            feedback.pushInfo(tr("report written in {:.1f} s: {}").format(report["report_seconds"], report_path))
        for warning in report.get("warnings", []):
            feedback.pushWarning(warning)
        for line in report.row_lines():
            feedback.pushInfo(line)
        results[self.R_TEST], results[self.RMSE_TEST] = report.stacking_test_scores()
        return results


ALGORITHMS = [TrainAlgorithm]
