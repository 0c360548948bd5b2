"""smdownscale:preprocess - align predictors and the coarse soil moisture into a dataset folder.

Every option is parsed, defaulted and checked by ``core.preprocess`` (``check_options``, called by
the parameter check and by ``preprocess`` itself): this shell only turns QGIS values into its
arguments.
"""
from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterCrs,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ...core.preprocess import (DEFAULT_CATEGORICAL, DEFAULT_FINE_RESOLUTION, DEFAULT_MIN_VALID_FRACTION,
                                check_options, predictor_name, preprocess)
from ..layers import crs_wkt, raster_path
from .base import SmdAlgorithm, core_error, core_errors, tr


class PreprocessAlgorithm(SmdAlgorithm):
    PREDICTORS = "PREDICTORS"
    CATEGORICAL = "CATEGORICAL"
    MASK_CLASSES = "MASK_CLASSES"
    COARSE_SM = "COARSE_SM"
    FINE_RESOLUTION = "FINE_RESOLUTION"
    TARGET_CRS = "TARGET_CRS"
    MIN_VALID_FRACTION = "MIN_VALID_FRACTION"
    OUTPUT = "OUTPUT"

    ALG_ID = "preprocess"
    DISPLAY_NAME = "Prepare downscaling dataset"
    GROUP_ID = "downscaling"
    HELP = (
        "Aligns the predictor rasters and the coarse soil-moisture series into a prepared "
        "dataset folder that <i>Train downscaling model</i> and <i>Predict fine soil moisture</i> read."
        "<h3>Inputs</h3>"
        "<b>Predictors</b>: one GeoTIFF per predictor; the predictor name is the file name without "
        "extension (e.g. <code>ndvi.tif</code> is <i>ndvi</i>). A time series is one multi-band "
        "raster whose band descriptions are the dates (YYYY-MM-DD); a static predictor (DEM, soil "
        "texture, land cover) has one band. Nodata = the raster nodata value or NaN. The day of "
        "year (<i>doy</i>) is added automatically.<br>"
        "<b>Categorical predictors</b>: names aggregated by majority instead of mean (default "
        "<code>lc</code>).<br>"
        "<b>Mask classes</b>: classes to drop, e.g. <code>lc:0</code> removes water, "
        "<code>lc:0,5</code> water and class 5.<br>"
        "<b>Coarse soil moisture</b>: the target series (e.g. SMAP L4 9 km, m3/m3), one band per "
        "date with the date as band description. Only dates present in every dynamic predictor "
        "are kept.<br>"
        "<b>Fine resolution / target CRS</b>: the output grid (default 1000 m in the predictors' "
        "CRS).<br>"
        "<b>Minimum valid fraction</b>: a coarse cell is used for training only if at least this "
        "share of its fine pixels has all predictors."
        "<h3>Output</h3>A folder with <code>dataset.json</code>, <code>fine/</code> and "
        "<code>coarse/</code> GeoTIFFs.")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        param = QgsProcessingParameterMultipleLayers(
            self.PREDICTORS, tr("Predictor rasters"), QgsProcessing.TypeRaster)
        self.add_parameter(param, tr("One GeoTIFF per predictor, named after the predictor; time series "
                                      "with one band per date (band description YYYY-MM-DD)."))
        param = QgsProcessingParameterString(
            self.CATEGORICAL, tr("Categorical predictors (comma-separated names)"),
            defaultValue=",".join(DEFAULT_CATEGORICAL), optional=True)
        self.add_parameter(param, tr("Predictor names aggregated by majority (mode) onto the coarse grid."))
        param = QgsProcessingParameterString(
            self.MASK_CLASSES, tr("Classes to mask (e.g. lc:0)"), optional=True)
        self.add_parameter(param, tr("name:class,class;name:class - pixels of these classes are excluded "
                                      "(e.g. lc:0 drops water)."))
        param = QgsProcessingParameterRasterLayer(self.COARSE_SM, tr("Coarse soil moisture series"))
        self.add_parameter(param, tr("Soil moisture (m3/m3) on the coarse grid, one band per date described "
                                      "YYYY-MM-DD."))
        param = QgsProcessingParameterNumber(
            self.FINE_RESOLUTION, tr("Fine resolution (target CRS units)"),
            QgsProcessingParameterNumber.Double, defaultValue=DEFAULT_FINE_RESOLUTION)
        self.add_parameter(param, tr("Pixel size of the fine output grid, in units of the target CRS."))
        param = QgsProcessingParameterCrs(self.TARGET_CRS, tr("Target CRS"), optional=True)
        self.add_parameter(param, tr("CRS of the fine grid; empty = the CRS of the first predictor."))
        param = QgsProcessingParameterNumber(
            self.MIN_VALID_FRACTION, tr("Minimum valid fraction of a coarse cell"),
            QgsProcessingParameterNumber.Double, defaultValue=DEFAULT_MIN_VALID_FRACTION)
        self.add_parameter(param, tr("Coarse cells with fewer valid fine pixels are not used for training."),
                           advanced=True)
        self.add_scheduler_parameter()
        param = QgsProcessingParameterFolderDestination(self.OUTPUT, tr("Prepared dataset folder"))
        self.add_parameter(param, tr("Folder written with dataset.json, fine/ and coarse/."))

    def options(self, parameters, context):
        """The option parameters as ``core.preprocess`` arguments (text as typed; core parses it)."""
        crs = self.parameterAsCrs(parameters, self.TARGET_CRS, context)
        return {
            "categorical": self.parameterAsString(parameters, self.CATEGORICAL, context),
            "mask_classes": self.parameterAsString(parameters, self.MASK_CLASSES, context),
            "fine_resolution": self.parameterAsDouble(parameters, self.FINE_RESOLUTION, context),
            "target_crs": crs_wkt(crs) if crs.isValid() else None,
            "min_valid_fraction": self.parameterAsDouble(parameters, self.MIN_VALID_FRACTION, context)}

    def parameter_error(self, parameters, context):
        layers = self.parameterAsLayerList(parameters, self.PREDICTORS, context)
        if not layers:
            return tr("Choose at least one predictor raster.")
        names = [predictor_name(layer.source()) for layer in layers]
        return (core_error(check_options, names, **self.options(parameters, context))
                or self.scheduler_error(parameters, context))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layers = self.parameterAsLayerList(parameters, self.PREDICTORS, context)
        predictor_paths = [raster_path(layer, tr("Predictors")) for layer in layers]
        coarse_path = raster_path(self.parameterAsRasterLayer(parameters, self.COARSE_SM, context),
                                  tr("Coarse soil moisture"))
        output = self.parameterAsString(parameters, self.OUTPUT, context)
        if not output:
            raise QgsProcessingException(tr("Choose an output folder for the prepared dataset."))
        feedback.pushInfo(tr("Predictors: {}").format(", ".join(predictor_name(path) for path in predictor_paths)))
        with core_errors():
            dataset = preprocess(predictor_paths, coarse_path, output, **self.options(parameters, context),
                                 scheduler=self.scheduler(parameters, context), progress=self.progress(feedback))
        feedback.pushInfo(tr("Prepared {} dates, {} predictors, fine grid {} x {}.").format(
            len(dataset.dates), len(dataset.predictor_names), dataset.fine_grid.width,
            dataset.fine_grid.height))
        return {self.OUTPUT: output}

ALGORITHMS = [PreprocessAlgorithm]
