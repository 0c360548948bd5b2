"""smdownscale:s1composite - Sentinel-1 scenes -> daily series by a +/-6-day sliding mean."""
from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from ..layers import raster_path
from .base import SmdAlgorithm, core_error, core_errors, tr


class S1CompositeAlgorithm(SmdAlgorithm):
    INPUT = "INPUT"
    HALF_WINDOW = "HALF_WINDOW"
    INPUT_DB = "INPUT_DB"
    OUTPUT_DB = "OUTPUT_DB"
    START = "START"
    END = "END"
    OUTPUT = "OUTPUT"
    N_DATES = "N_DATES"

    ALG_ID = "s1composite"
    DISPLAY_NAME = "Sentinel-1 daily composite (sliding window)"
    GROUP_ID = "dataprep"
    HELP = (
        "Builds daily radar backscatter as in the paper (Section 2.2.4): each day is the mean of all "
        "Sentinel-1 scenes acquired within +/- 6 days of it (a 12-day sliding window). The mean is "
        "taken in linear power, per pixel, over the scenes that have a value there."
        "<h3>Inputs</h3>"
        "<b>Scenes</b>: VV or VH rasters (one polarisation per run). A single-band raster is one "
        "scene dated by a DATE metadata tag, its band description (YYYY-MM-DD) or its file name "
        "(YYYY-MM-DD or YYYYMMDD); a multi-band raster with bands described by date holds one scene "
        "per band. The output uses the grid of the first scene; scenes on another grid are warped "
        "onto it (bilinear, on the stored values).<br>"
        "<b>Inputs in dB</b>: tick for dB values (as Google Earth Engine's S1_GRD); untick for "
        "linear power.<br>"
        "<b>Start / end</b>: first and last day written (YYYY-MM-DD); empty = first and last scene."
        "<h3>Output</h3>GeoTIFF series, one band per day, in dB or linear power; days with no scene "
        "within the window are nodata.")

    def initAlgorithm(self, config=None):  # noqa: N802
        param = QgsProcessingParameterMultipleLayers(self.INPUT, tr("Sentinel-1 scenes"), QgsProcessing.TypeRaster)
        self.add_parameter(
            param, tr("VV or VH scenes, each dated by DATE tag, band description or file name."))
        param = QgsProcessingParameterNumber(self.HALF_WINDOW, tr("Half window (days)"),
                                             QgsProcessingParameterNumber.Integer, defaultValue=6, minValue=0)
        self.add_parameter(
            param, tr("Scenes within this many days before or after a day are averaged (paper: 6)."))
        param = QgsProcessingParameterBoolean(self.INPUT_DB, tr("Inputs are in dB"), defaultValue=True)
        self.add_parameter(param, tr("Untick when the scenes hold linear power."))
        param = QgsProcessingParameterBoolean(self.OUTPUT_DB, tr("Write dB"), defaultValue=True)
        self.add_parameter(param, tr("Untick to write linear power."))
        param = QgsProcessingParameterString(self.START, tr("First day (YYYY-MM-DD)"), defaultValue="", optional=True)
        self.add_parameter(param, tr("Empty: the date of the first scene."))
        param = QgsProcessingParameterString(self.END, tr("Last day (YYYY-MM-DD)"), defaultValue="", optional=True)
        self.add_parameter(param, tr("Empty: the date of the last scene."))
        param = QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Daily backscatter series"))
        self.add_parameter(param, tr("GeoTIFF, one band per day described YYYY-MM-DD."))
        self.addOutput(QgsProcessingOutputNumber(self.N_DATES, tr("Days written")))

    def parameter_error(self, parameters, context):
        from ...core.common import parse_date

        for name in (self.START, self.END):
            text = self.parameterAsString(parameters, name, context).strip()
            error = core_error(parse_date, text) if text else None
            if error is not None:
                return error
        return None

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ...core.dataprep.s1 import s1_composite

        layers = self.parameterAsLayerList(parameters, self.INPUT, context)
        paths = [raster_path(layer, tr("Sentinel-1 scene")) for layer in layers]
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        with core_errors():
            info = s1_composite(
                paths, output,
                half_window_days=self.parameterAsInt(parameters, self.HALF_WINDOW, context),
                input_db=self.parameterAsBoolean(parameters, self.INPUT_DB, context),
                output_db=self.parameterAsBoolean(parameters, self.OUTPUT_DB, context),
                start=self.parameterAsString(parameters, self.START, context).strip() or None,
                end=self.parameterAsString(parameters, self.END, context).strip() or None,
                progress=self.progress(feedback))
        feedback.pushInfo(tr("{} days from {} scenes").format(len(info["dates"]), info["scenes"]))
        if info["days_without_scene"]:
            feedback.reportError(tr("No scene within the window (nodata): {}").format(
                ", ".join(info["days_without_scene"])), False)
        return {self.OUTPUT: output, self.N_DATES: len(info["dates"])}
