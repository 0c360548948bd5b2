"""smdownscale:predict - apply a trained model to the fine predictors of a dataset."""
from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from ...core.predict import parse_block_size, parse_dates
from ..layers import SoilMoistureStyle, style_on_load
from .base import SmdAlgorithm, core_error, core_errors, dataset_folder_error, model_file_error, tr


class PredictAlgorithm(SmdAlgorithm):
    DATASET = "DATASET"
    MODEL = "MODEL"
    DATES = "DATES"
    RESIDUAL_CORRECTION = "RESIDUAL_CORRECTION"
    USE_GLOBAL = "USE_GLOBAL"
    GLOBAL_ONLY = "GLOBAL_ONLY"
    BLOCK_SIZE = "BLOCK_SIZE"
    REQUIRE_SIGNED = "REQUIRE_SIGNED"
    TRUSTED_KEYS = "TRUSTED_KEYS"
    OUTPUT = "OUTPUT"
    N_DATES = "N_DATES"
    N_PIXELS = "N_PIXELS"

    ALG_ID = "predict"
    DISPLAY_NAME = "Predict fine soil moisture"
    GROUP_ID = "downscaling"
    REQUIRES = ("xgboost", "lightgbm", "catboost")
    HELP = (
        "Applies a trained downscaling model to the fine-resolution predictors of a prepared "
        "dataset, block by block, and writes the fine soil-moisture series (m3/m3)."
        "<h3>Inputs</h3>"
        "<b>Prepared dataset</b>: folder from <i>Prepare downscaling dataset</i>, with the same "
        "predictors the model was trained on (the model checks names and order).<br>"
        "<b>Model</b>: the .smdmodel.zip from <i>Train downscaling model</i>. Each fine pixel is "
        "predicted by the model of the partition it lies in.<br>"
        "<b>Dates</b>: optional comma-separated subset (YYYY-MM-DD); empty = every date.<br>"
        "<b>Residual correction</b>: adds each coarse cell's residual (coarse soil moisture minus "
        "the mean of its fine predictions) back to its pixels, so the fine field averages to the "
        "coarse value."
        "<h3>Output</h3>A float32 GeoTIFF on the fine grid, one band per date (band description = "
        "date), nodata NaN where a predictor is missing or masked. Loaded with a 0 - 0.5 m3/m3 "
        "soil-moisture colour ramp.")

    def initAlgorithm(self, config=None):  # noqa: N802
        param = QgsProcessingParameterFile(
            self.DATASET, tr("Prepared dataset folder"), behavior=QgsProcessingParameterFile.Folder)
        self.add_parameter(param, tr("Folder written by Prepare downscaling dataset (holds dataset.json)."))
        param = QgsProcessingParameterFile(
            self.MODEL, tr("Model file"), extension="zip")
        self.add_parameter(param, tr("The .smdmodel.zip written by Train downscaling model."))
        param = QgsProcessingParameterString(self.DATES, tr("Dates (comma-separated, empty = all)"),
                                             optional=True)
        self.add_parameter(
            param, tr("Subset of the dataset's dates as YYYY-MM-DD, e.g. 2019-04-01,2019-04-02."))
        param = QgsProcessingParameterBoolean(
            self.RESIDUAL_CORRECTION, tr("Residual correction (keep coarse means)"), defaultValue=False)
        self.add_parameter(
            param, tr("Add each coarse cell's residual back so fine pixels average to the coarse value."))
        param = QgsProcessingParameterBoolean(
            self.USE_GLOBAL, tr("Predict pixels outside every partition with the global model"),
            defaultValue=False)
        self.add_parameter(param, tr("Without it, pixels outside all partitions stay nodata."), advanced=True)
        param = QgsProcessingParameterBoolean(
            self.GLOBAL_ONLY, tr("Predict every pixel with the global (WP) model"), defaultValue=False)
        self.add_parameter(param, tr("The paper's without-partition product, for comparison."), advanced=True)
        param = QgsProcessingParameterNumber(
            self.BLOCK_SIZE, tr("Block size (pixels)"), QgsProcessingParameterNumber.Integer,
            defaultValue=512, minValue=1)
        self.add_parameter(
            param, tr("Edge of the raster blocks predicted at once; smaller uses less memory."),
            advanced=True)
        param = QgsProcessingParameterBoolean(
            self.REQUIRE_SIGNED, tr("Refuse unsigned or untrusted model files"), defaultValue=False)
        self.add_parameter(
            param, tr("Only accept a model signed (Sign model file) with one of the trusted keys."),
            advanced=True)
        param = QgsProcessingParameterFile(self.TRUSTED_KEYS, tr("Trusted public key(s)"), optional=True)
        self.add_parameter(
            param, tr("A public key file, or a folder of *.pub/*.pem files, separated by ';'; empty = the "
                      "setting smdownscale/trusted_keys."), advanced=True)
        self.add_scheduler_parameter()
        param = QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Fine soil moisture"))
        self.add_parameter(param, tr("GeoTIFF series, one band per date, m3/m3."))
        self.addOutput(QgsProcessingOutputNumber(self.N_DATES, tr("Dates written")))
        self.addOutput(QgsProcessingOutputNumber(self.N_PIXELS, tr("Pixels predicted")))

    def parameter_error(self, parameters, context):
        error = (dataset_folder_error(self.parameterAsFile(parameters, self.DATASET, context))
                 or model_file_error(self.parameterAsFile(parameters, self.MODEL, context)))
        return (error or core_error(parse_dates, self.parameterAsString(parameters, self.DATES, context))
                or core_error(parse_block_size, self.parameterAsDouble(parameters, self.BLOCK_SIZE, context))
                or self.scheduler_error(parameters, context))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        self.require_packages()
        from ...core.predict import predict
        from ...resources import trusted_key_paths

        dataset = self.dataset_folder(parameters, self.DATASET, context)
        output = self.geotiff_output(parameters, self.OUTPUT, context)
        with core_errors():
            report = predict(
                dataset, self.parameterAsFile(parameters, self.MODEL, context), output,
                dates=self.parameterAsString(parameters, self.DATES, context),
                residual_correction=self.parameterAsBoolean(parameters, self.RESIDUAL_CORRECTION, context),
                use_global=self.parameterAsBoolean(parameters, self.USE_GLOBAL, context),
                global_only=self.parameterAsBoolean(parameters, self.GLOBAL_ONLY, context),
                # as a number: core refuses 2.5 where parameterAsInt would round it
                block_size=self.parameterAsDouble(parameters, self.BLOCK_SIZE, context),
                require_signed=self.parameterAsBoolean(parameters, self.REQUIRE_SIGNED, context),
                trusted_keys=trusted_key_paths(self.parameterAsString(parameters, self.TRUSTED_KEYS, context)),
                scheduler=self.scheduler(parameters, context), progress=self.progress(feedback))
        for key, value in report.to_dict().items():
            if key != "dates":
                feedback.pushInfo(f"{key}: {value}")
        style_on_load(context, output, SoilMoistureStyle)
        return {self.OUTPUT: output, self.N_DATES: len(report.dates), self.N_PIXELS: report.pixels_predicted}


ALGORITHMS = [PredictAlgorithm]
