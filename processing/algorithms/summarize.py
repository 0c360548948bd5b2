"""smdownscale:summarize - period maps (temporal mean, standard deviation, count of valid dates)."""
from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..layers import SoilMoistureStyle, raster_path, style_on_load
from .base import SmdAlgorithm, core_error, core_errors, tr

#: core.summarize.DEFAULT_BLOCK_SIZE (kept here so loading the provider imports no core)
DEFAULT_BLOCK_SIZE = 512


class SummarizeAlgorithm(SmdAlgorithm):
    INPUT = "INPUT"
    START_DATE = "START_DATE"
    END_DATE = "END_DATE"
    BLOCK_SIZE = "BLOCK_SIZE"
    OUTPUT_MEAN = "OUTPUT_MEAN"
    OUTPUT_STD = "OUTPUT_STD"
    OUTPUT_COUNT = "OUTPUT_COUNT"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    N_DATES = "N_DATES"
    MEAN_OF_MEAN = "MEAN_OF_MEAN"

    ALG_ID = "summarize"
    DISPLAY_NAME = "Period maps (mean, standard deviation, valid dates)"
    GROUP_ID = "downscaling"
    HELP = (
        "Summarises a soil-moisture series over time, pixel by pixel: the temporal mean and "
        "standard deviation (m3/m3) and the number of valid dates, optionally over a date range "
        "(cf. the paper's Figure 9). Works block by block; memory does not grow with the number "
        "of dates."
        "<h3>Inputs</h3>"
        "<b>Soil-moisture series</b>: any multi-band GeoTIFF whose bands are described by their "
        "dates (YYYY-MM-DD), e.g. the output of <i>Predict fine soil moisture</i> or a SMAP series.<br>"
        "<b>Start / end date</b>: optional inclusive range (YYYY-MM-DD); empty = the whole series."
        "<h3>Outputs</h3>Single-band float32 GeoTIFFs on the input grid: the mean (loaded with the "
        "soil-moisture colour ramp), the population standard deviation (nodata where no date is "
        "valid) and the count of valid dates (0 where none). Optional HTML report with the three "
        "maps, listed in the Results Viewer.")

    def initAlgorithm(self, config=None):  # noqa: N802
        param = QgsProcessingParameterRasterLayer(self.INPUT, tr("Soil-moisture series"))
        self.add_parameter(param, tr("Multi-band GeoTIFF, one band per date (band description YYYY-MM-DD), m3/m3."))
        param = QgsProcessingParameterString(self.START_DATE, tr("Start date (YYYY-MM-DD, empty = first)"),
                                             optional=True)
        self.add_parameter(param, tr("First date included, e.g. 2019-07-01."))
        param = QgsProcessingParameterString(self.END_DATE, tr("End date (YYYY-MM-DD, empty = last)"),
                                             optional=True)
        self.add_parameter(param, tr("Last date included, e.g. 2019-07-31."))
        param = QgsProcessingParameterNumber(
            self.BLOCK_SIZE, tr("Block size (pixels)"), QgsProcessingParameterNumber.Integer,
            defaultValue=DEFAULT_BLOCK_SIZE, minValue=16)
        self.add_parameter(param, tr("Edge of the pixel blocks processed at once; smaller uses less memory."),
                           advanced=True)
        param = QgsProcessingParameterRasterDestination(self.OUTPUT_MEAN, tr("Temporal mean"))
        self.add_parameter(param, tr("Mean soil moisture over the valid dates of each pixel (m3/m3)."))
        param = QgsProcessingParameterRasterDestination(self.OUTPUT_STD, tr("Temporal standard deviation"),
                                                        optional=True)
        self.add_parameter(param, tr("Population standard deviation over the valid dates (m3/m3)."))
        param = QgsProcessingParameterRasterDestination(self.OUTPUT_COUNT, tr("Count of valid dates"),
                                                        optional=True)
        self.add_parameter(param, tr("Number of dates with a valid value at each pixel."))
        param = QgsProcessingParameterFileDestination(
            self.OUTPUT_REPORT, tr("Period-map report"), fileFilter=tr("HTML files (*.html *.htm)"),
            optional=True, createByDefault=False)
        self.add_parameter(param, tr("Web page with the three maps (opens from the Results Viewer)."))
        self.addOutput(QgsProcessingOutputNumber(self.N_DATES, tr("Dates summarised")))
        self.addOutput(QgsProcessingOutputNumber(self.MEAN_OF_MEAN, tr("Spatial mean of the temporal mean")))

    def parameter_error(self, parameters, context):
        from ...core.summarize import parse_block_size, parse_period

        return (core_error(parse_period, self.parameterAsString(parameters, self.START_DATE, context),
                           self.parameterAsString(parameters, self.END_DATE, context))
                or core_error(parse_block_size, self.parameterAsDouble(parameters, self.BLOCK_SIZE, context)))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ...core.summarize import summarize

        source = raster_path(self.parameterAsRasterLayer(parameters, self.INPUT, context), tr("Soil-moisture series"))
        outputs = {name: self.parameterAsOutputLayer(parameters, name, context) or None
                   for name in (self.OUTPUT_MEAN, self.OUTPUT_STD, self.OUTPUT_COUNT)}
        report = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context) or None
        with core_errors():
            result = summarize(
                source, mean_path=outputs[self.OUTPUT_MEAN], std_path=outputs[self.OUTPUT_STD],
                count_path=outputs[self.OUTPUT_COUNT], report_path=report,
                start_date=self.parameterAsString(parameters, self.START_DATE, context),
                end_date=self.parameterAsString(parameters, self.END_DATE, context),
                block_size=self.parameterAsDouble(parameters, self.BLOCK_SIZE, context),
                progress=self.progress(feedback))
        feedback.pushInfo(tr("{} dates summarised ({} .. {}); {} of {} pixels have a valid date").format(
            len(result["dates"]), result["dates"][0], result["dates"][-1], result["pixels_valid"], result["pixels"]))
        if report:
            feedback.pushInfo(tr("report written in {:.1f} s: {}").format(result.get("report_seconds") or 0.0, report))
        if outputs[self.OUTPUT_MEAN]:
            style_on_load(context, outputs[self.OUTPUT_MEAN], SoilMoistureStyle)
        answer = {name: path for name, path in outputs.items() if path}
        if report:
            answer[self.OUTPUT_REPORT] = report
        answer.update({self.N_DATES: len(result["dates"]), self.MEAN_OF_MEAN: result["mean_of_mean"]})
        return answer


ALGORITHMS = [SummarizeAlgorithm]
