"""smdownscale:predict - apply a trained model to the fine predictors of a dataset."""
import os

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from ..layers import SoilMoistureStyle, style_on_load
from .base import SmdAlgorithm, tr
from .train import dataset_folder_error


def parse_dates(text):
    """``"2019-04-01, 2019-04-02"`` -> list of ISO dates, or None for empty text."""
    from ...core.common import parse_date

    items = [item.strip() for item in (text or "").replace(";", ",").split(",") if item.strip()]
    return [parse_date(item).isoformat() for item in items] or None


class PredictAlgorithm(SmdAlgorithm):
    DATASET = "DATASET"
    MODEL = "MODEL"
    DATES = "DATES"
    RESIDUAL_CORRECTION = "RESIDUAL_CORRECTION"
    USE_GLOBAL = "USE_GLOBAL"
    GLOBAL_ONLY = "GLOBAL_ONLY"
    BLOCK_SIZE = "BLOCK_SIZE"
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
        param.setHelp(tr("Folder written by Prepare downscaling dataset (holds dataset.json)."))
        self.addParameter(param)
        param = QgsProcessingParameterFile(
            self.MODEL, tr("Model file"), extension="zip")
        param.setHelp(tr("The .smdmodel.zip written by Train downscaling model."))
        self.addParameter(param)
        param = QgsProcessingParameterString(self.DATES, tr("Dates (comma-separated, empty = all)"),
                                             optional=True)
        param.setHelp(tr("Subset of the dataset's dates as YYYY-MM-DD, e.g. 2019-04-01,2019-04-02."))
        self.addParameter(param)
        param = QgsProcessingParameterBoolean(
            self.RESIDUAL_CORRECTION, tr("Residual correction (keep coarse means)"), defaultValue=False)
        param.setHelp(tr("Add each coarse cell's residual back so fine pixels average to the coarse value."))
        self.addParameter(param)
        param = QgsProcessingParameterBoolean(
            self.USE_GLOBAL, tr("Predict pixels outside every partition with the global model"),
            defaultValue=False)
        param.setHelp(tr("Without it, pixels outside all partitions stay nodata."))
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(param)
        param = QgsProcessingParameterBoolean(
            self.GLOBAL_ONLY, tr("Predict every pixel with the global (WP) model"), defaultValue=False)
        param.setHelp(tr("The paper's without-partition product, for comparison."))
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(param)
        param = QgsProcessingParameterNumber(
            self.BLOCK_SIZE, tr("Block size (pixels)"), QgsProcessingParameterNumber.Integer,
            defaultValue=512, minValue=16, maxValue=8192)
        param.setHelp(tr("Edge of the raster blocks predicted at once; smaller uses less memory."))
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(param)
        param = QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Fine soil moisture"))
        param.setHelp(tr("GeoTIFF series, one band per date, m3/m3."))
        self.addParameter(param)
        self.addOutput(QgsProcessingOutputNumber(self.N_DATES, tr("Dates written")))
        self.addOutput(QgsProcessingOutputNumber(self.N_PIXELS, tr("Pixels predicted")))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        error = dataset_folder_error(self.parameterAsFile(parameters, self.DATASET, context))
        if error:
            return False, error
        model = self.parameterAsFile(parameters, self.MODEL, context)
        if not os.path.isfile(model):
            return False, tr("Model file {!r} does not exist; train a model first.").format(model)
        from ...core.common import SmdError

        try:
            parse_dates(self.parameterAsString(parameters, self.DATES, context))
        except SmdError as err:
            return False, str(err)
        return True, ""

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        self.require_packages()
        from ...core.predict import predict

        dataset = self.parameterAsFile(parameters, self.DATASET, context)
        error = dataset_folder_error(dataset)
        if error:
            raise QgsProcessingException(error)
        dates = self.run_core(parse_dates, self.parameterAsString(parameters, self.DATES, context))
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        if not output.lower().endswith((".tif", ".tiff")):
            raise QgsProcessingException(tr("The output must be a GeoTIFF (.tif); got {}.").format(output))
        info = self.run_core(
            predict, dataset, self.parameterAsFile(parameters, self.MODEL, context), output,
            dates=dates,
            residual_correction=self.parameterAsBoolean(parameters, self.RESIDUAL_CORRECTION, context),
            use_global=self.parameterAsBoolean(parameters, self.USE_GLOBAL, context),
            global_only=self.parameterAsBoolean(parameters, self.GLOBAL_ONLY, context),
            block_size=self.parameterAsInt(parameters, self.BLOCK_SIZE, context),
            progress=self.progress(feedback))
        for key, value in info.items():
            if key != "dates":
                feedback.pushInfo(f"{key}: {value}")
        style_on_load(context, output, SoilMoistureStyle)
        return {self.OUTPUT: output, self.N_DATES: len(info.get("dates", []) or []),
                self.N_PIXELS: info["pixels_predicted"]}


ALGORITHMS = [PredictAlgorithm]
