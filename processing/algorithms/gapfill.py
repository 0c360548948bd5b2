"""smdownscale:gapfill - QC masking, +/-15-day gap filling, 8-day -> daily, Savitzky-Golay smoothing."""
from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..layers import raster_path
from .base import SmdAlgorithm, core_error, core_errors, tr


class GapFillAlgorithm(SmdAlgorithm):
    INPUT = "INPUT"
    QC = "QC"
    QC_RULE = "QC_RULE"
    MAX_GAP_DAYS = "MAX_GAP_DAYS"
    DAILY = "DAILY"
    SG_HALF_WIDTH = "SG_HALF_WIDTH"
    SG_ORDER = "SG_ORDER"
    OUTPUT = "OUTPUT"
    N_DATES = "N_DATES"

    ALG_ID = "gapfill"
    DISPLAY_NAME = "Gap-fill and smooth a time series"
    GROUP_ID = "dataprep"
    HELP = (
        "Prepares a MODIS-like time series as in the paper (Section 3.1): masks low-quality pixels "
        "with a QC raster, fills each missing value by linear interpolation between the nearest "
        "valid values before and after it when both are within the maximum gap (15 days), "
        "resamples 8-day products to daily, then smooths each pixel's series with a "
        "Savitzky-Golay filter (half-width m = 5, order d = 4)."
        "<h3>Inputs</h3>"
        "<b>Time series</b>: multi-band GeoTIFF, one band per date described YYYY-MM-DD.<br>"
        "<b>QC raster</b> (optional): same grid, one band per date with the same dates.<br>"
        "<b>QC rule</b>: which QC values are good, e.g. <i>0,1</i> (acceptable values), "
        "<i>value &lt;= 1</i>, or bit fields such as <i>bits 0-1 == 0</i> (MOD11A1 good quality); "
        "join clauses with ';'. Empty: QC value 0 is good.<br>"
        "<b>Daily output</b>: write every day from the first to the last date (else the input dates).<br>"
        "<b>Savitzky-Golay</b>: window 2m+1 days; values in unbroken runs shorter than the window "
        "stay nodata; half-width 0 turns smoothing off."
        "<h3>Output</h3>GeoTIFF series, one band per day, float32. Days before the first or after "
        "the last valid value of a pixel are not extrapolated (nodata). Works block by block, so "
        "memory does not grow with the raster size.")

    def initAlgorithm(self, config=None):  # noqa: N802
        param = QgsProcessingParameterRasterLayer(self.INPUT, tr("Time series"))
        self.add_parameter(param, tr("Multi-band raster, one band per date described YYYY-MM-DD."))
        param = QgsProcessingParameterRasterLayer(self.QC, tr("QC raster"), optional=True)
        self.add_parameter(param, tr("Optional quality raster with the same grid and band dates."))
        param = QgsProcessingParameterString(self.QC_RULE, tr("QC rule (good values)"), defaultValue="",
                                             optional=True)
        self.add_parameter(
            param, tr("e.g. '0,1', 'value <= 1' or 'bits 0-1 == 0'; empty = QC value 0 is good."))
        param = QgsProcessingParameterNumber(self.MAX_GAP_DAYS, tr("Maximum distance to a valid value (days)"),
                                             QgsProcessingParameterNumber.Double, defaultValue=15.0, minValue=0.0)
        self.add_parameter(
            param, tr("Both neighbours used for interpolation must be this close (paper: 15)."))
        param = QgsProcessingParameterBoolean(self.DAILY, tr("Daily output (8-day -> daily)"), defaultValue=True)
        self.add_parameter(param, tr("Write every day between the first and last date."))
        param = QgsProcessingParameterNumber(self.SG_HALF_WIDTH, tr("Savitzky-Golay half-width m (0 = off)"),
                                             QgsProcessingParameterNumber.Integer, defaultValue=5, minValue=0)
        self.add_parameter(param, tr("Window 2m+1 days (paper: m = 5)."), advanced=True)
        param = QgsProcessingParameterNumber(self.SG_ORDER, tr("Savitzky-Golay polynomial order d"),
                                             QgsProcessingParameterNumber.Integer, defaultValue=4, minValue=0)
        self.add_parameter(param, tr("Must be below the window length (paper: d = 4)."), advanced=True)
        param = QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Gap-filled series"))
        self.add_parameter(param, tr("GeoTIFF, one band per date described YYYY-MM-DD."))
        self.addOutput(QgsProcessingOutputNumber(self.N_DATES, tr("Dates written")))

    def parameter_error(self, parameters, context):
        from ...core.dataprep.gapfill import parse_qc_rule

        error = core_error(parse_qc_rule, self.parameterAsString(parameters, self.QC_RULE, context))
        if error is not None:
            return error
        half = self.parameterAsInt(parameters, self.SG_HALF_WIDTH, context)
        order = self.parameterAsInt(parameters, self.SG_ORDER, context)
        if half and order >= 2 * half + 1:
            return tr("The Savitzky-Golay order must be below the window length 2m+1 = {}.").format(2 * half + 1)
        return None

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ...core.dataprep.gapfill import gap_fill

        series = raster_path(self.parameterAsRasterLayer(parameters, self.INPUT, context), tr("Time series"))
        qc_layer = self.parameterAsRasterLayer(parameters, self.QC, context)
        qc = raster_path(qc_layer, tr("QC raster")) if qc_layer is not None else None
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        with core_errors():
            info = gap_fill(
                series, output, qc_path=qc,
                qc_rule=self.parameterAsString(parameters, self.QC_RULE, context).strip() or None,
                max_gap_days=self.parameterAsDouble(parameters, self.MAX_GAP_DAYS, context),
                daily=self.parameterAsBoolean(parameters, self.DAILY, context),
                savgol_half_width=self.parameterAsInt(parameters, self.SG_HALF_WIDTH, context),
                savgol_order=self.parameterAsInt(parameters, self.SG_ORDER, context),
                progress=self.progress(feedback))
        total = info["valid_values"] + info["nodata_values"]
        feedback.pushInfo(tr("{} dates ({} to {}); {:.1%} of the values are valid").format(
            len(info["dates"]), info["dates"][0], info["dates"][-1], info["valid_values"] / max(total, 1)))
        return {self.OUTPUT: output, self.N_DATES: len(info["dates"])}
