"""smdownscale:importismn - ISMN station downloads -> daily station points in long format."""
from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from .base import SmdAlgorithm, core_errors, tr


class ImportIsmnAlgorithm(SmdAlgorithm):
    INPUT = "INPUT"
    DEPTH_FROM = "DEPTH_FROM"
    DEPTH_TO = "DEPTH_TO"
    HOUR = "HOUR"
    QUALITY_FLAGS = "QUALITY_FLAGS"
    OUTPUT = "OUTPUT"
    N_RECORDS = "N_RECORDS"
    N_SITES = "N_SITES"

    ALG_ID = "importismn"
    DISPLAY_NAME = "Import ISMN station data"
    GROUP_ID = "dataprep"
    HELP = (
        "Reads an ISMN (International Soil Moisture Network) download - the .zip as downloaded "
        "or its unzipped folder, in the 'header+values' or 'CEOP' format - and writes one point "
        "per station and day in the long format that <i>Validate against stations</i> takes: "
        "site_id (network:station), network, station, depth_from, depth_to, date, sm (m3/m3), "
        "lon, lat, n_sensors."
        "<h3>Options</h3>"
        "<b>Depth from / to</b> (m): a sensor is used when its whole depth range lies inside; "
        "several sensors of a station inside the range are averaged.<br>"
        "<b>Hour (UTC)</b>: optional; the day's value is the reading at that hour (the paper used "
        "08:00). Empty: the mean of the day's valid readings.<br>"
        "<b>Accepted quality flags</b>: ISMN flags kept, comma separated (default G = good). "
        "A reading flagged e.g. 'D03,D05' needs every flag accepted."
        "<h3>Input</h3>A folder path can be typed in the file box (or passed to qgis_process). "
        "A malformed data file stops the run with its name and line; nothing is written.")

    def initAlgorithm(self, config=None):  # noqa: N802
        param = QgsProcessingParameterFile(
            self.INPUT, tr("ISMN download (.zip or folder)"), QgsProcessingParameterFile.File,
            fileFilter=tr("ISMN download (*.zip *.stm);;All files or a folder (*)"))
        self.add_parameter(param, tr("The ISMN .zip, a single .stm file, or (typed) the unzipped folder."))
        for name, label, default in ((self.DEPTH_FROM, "Depth from (m)", 0.0),
                                     (self.DEPTH_TO, "Depth to (m)", 0.1)):
            param = QgsProcessingParameterNumber(name, tr(label), QgsProcessingParameterNumber.Double,
                                                 defaultValue=default, minValue=0.0)
            self.add_parameter(param, tr("Sensors whose depth range lies inside [from, to] are used."))
        param = QgsProcessingParameterNumber(self.HOUR, tr("Hour of the daily reading (UTC)"),
                                             QgsProcessingParameterNumber.Integer, optional=True,
                                             minValue=0, maxValue=23)
        self.add_parameter(
            param, tr("Optional: take the reading at this UTC hour instead of the daily mean."))
        param = QgsProcessingParameterString(self.QUALITY_FLAGS, tr("Accepted quality flags"),
                                             defaultValue="G")
        self.add_parameter(param, tr("Comma separated ISMN flags, e.g. G or G,U (U = not checked)."),
                           advanced=True)
        param = QgsProcessingParameterVectorDestination(self.OUTPUT, tr("Station observations"),
                                                        QgsProcessing.TypeVectorPoint)
        self.add_parameter(param, tr("GeoPackage point layer (EPSG:4326), one feature per station and day."))
        self.addOutput(QgsProcessingOutputNumber(self.N_RECORDS, tr("Station-days written")))
        self.addOutput(QgsProcessingOutputNumber(self.N_SITES, tr("Stations")))

    def parameter_error(self, parameters, context):
        low = self.parameterAsDouble(parameters, self.DEPTH_FROM, context)
        high = self.parameterAsDouble(parameters, self.DEPTH_TO, context)
        if high < low:
            return tr("Depth to ({} m) must not be less than depth from ({} m).").format(high, low)
        return None

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ...core.dataprep.ismn import import_ismn

        source = self.parameterAsFile(parameters, self.INPUT, context)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        hour = None
        if parameters.get(self.HOUR) not in (None, ""):
            hour = self.parameterAsInt(parameters, self.HOUR, context)
        flags = [f.strip() for f in self.parameterAsString(parameters, self.QUALITY_FLAGS, context).split(",")
                 if f.strip()]
        with core_errors():
            info = import_ismn(
                source, output,
                depth_from=self.parameterAsDouble(parameters, self.DEPTH_FROM, context),
                depth_to=self.parameterAsDouble(parameters, self.DEPTH_TO, context),
                hour=hour, quality_flags=flags or None, progress=self.progress(feedback))
        feedback.pushInfo(tr("{} station-days from {} stations, {} to {}").format(
            info["records"], len(info["sites"]), info["first_date"], info["last_date"]))
        return {self.OUTPUT: output, self.N_RECORDS: info["records"], self.N_SITES: len(info["sites"])}
