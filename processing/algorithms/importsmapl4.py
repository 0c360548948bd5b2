"""smdownscale:importsmapl4 - SMAP L4 HDF5 granules -> GeoTIFF series on EASE-Grid 2.0."""
from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputNumber,
    QgsProcessingParameterExtent,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from ..layers import SoilMoistureStyle, crs_wkt, style_on_load
from .base import SmdAlgorithm, core_error, core_errors, tr


class ImportSmapL4Algorithm(SmdAlgorithm):
    INPUT = "INPUT"
    VARIABLE = "VARIABLE"
    TIME_WINDOW = "TIME_WINDOW"
    EXTENT = "EXTENT"
    OUTPUT = "OUTPUT"
    N_DATES = "N_DATES"

    ALG_ID = "importsmapl4"
    DISPLAY_NAME = "Import SMAP L4 soil moisture (HDF5)"
    GROUP_ID = "dataprep"
    HELP = (
        "Converts SMAP Level-4 soil-moisture granules (HDF5, as downloaded from NSIDC: SPL4SMGP "
        "geophysical or SPL4SMAU analysis-update files, whole-globe or subsetted) into one GeoTIFF "
        "time series on the 9 km EASE-Grid 2.0 (EPSG:6933), one band per date (band description "
        "YYYY-MM-DD), m3/m3, nodata where the granule has its -9999 fill value."
        "<h3>Inputs</h3>"
        "<b>SMAP L4 granules</b>: one or more .h5 files on their native 9 km grid. Granules "
        "reprojected by the download service (e.g. to UTM or geographic) are refused, because "
        "their cells can no longer be placed exactly on the EASE grid; download them without "
        "reprojection.<br>"
        "<b>Variable</b>: dataset path inside the granule, e.g. <i>Geophysical_Data/sm_surface</i>, "
        "<i>Geophysical_Data/sm_rootzone</i> or <i>Analysis_Data/sm_surface_analysis</i>. Empty: "
        "the product's surface soil moisture.<br>"
        "<b>UTC time window</b>: e.g. <i>06:00-09:00</i> keeps only granules whose time is in "
        "[06:00, 09:00) UTC (the paper matched the stations' 08:00 readings). Several granules on "
        "one date are averaged cell by cell (without a window: the daily mean).<br>"
        "<b>Extent</b>: optional clip, widened to whole 9 km cells."
        "<h3>Output</h3>GeoTIFF series georeferenced from the EASE-Grid 2.0 definition (cell "
        "9008.055210146 m), not from the files' rounded x/y arrays.")

    def initAlgorithm(self, config=None):  # noqa: N802
        param = QgsProcessingParameterMultipleLayers(self.INPUT, tr("SMAP L4 granules (.h5)"),
                                                     QgsProcessing.TypeFile)
        self.add_parameter(param, tr("SMAP L4 HDF5 files (SPL4SMGP or SPL4SMAU), global or subsetted."))
        param = QgsProcessingParameterString(self.VARIABLE, tr("Variable (dataset path)"),
                                             defaultValue="", optional=True)
        self.add_parameter(param, tr("e.g. Geophysical_Data/sm_rootzone; empty = surface soil moisture."))
        param = QgsProcessingParameterString(self.TIME_WINDOW, tr("UTC time window (HH:MM-HH:MM)"),
                                             defaultValue="", optional=True)
        self.add_parameter(
            param, tr("Keep granules whose UTC time is inside, e.g. 06:00-09:00; empty = all."))
        param = QgsProcessingParameterExtent(self.EXTENT, tr("Clip extent"), optional=True)
        self.add_parameter(param, tr("Optional; the clip is widened to whole 9 km cells."))
        param = QgsProcessingParameterRasterDestination(self.OUTPUT, tr("SMAP soil moisture series"))
        self.add_parameter(param, tr("GeoTIFF, EPSG:6933, one band per date described YYYY-MM-DD."))
        self.addOutput(QgsProcessingOutputNumber(self.N_DATES, tr("Dates written")))

    def parameter_error(self, parameters, context):
        from ...core.dataprep.smap import parse_time_window

        error = core_error(parse_time_window, self.parameterAsString(parameters, self.TIME_WINDOW, context))
        if error is not None:
            return error
        if not self.parameterAsFileList(parameters, self.INPUT, context):
            return tr("Choose one or more SMAP L4 .h5 granules.")
        return None

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ...core.dataprep.smap import import_smap_l4

        granules = self.parameterAsFileList(parameters, self.INPUT, context)
        output = self.geotiff_output(parameters, self.OUTPUT, context)
        extent = None
        if parameters.get(self.EXTENT) not in (None, ""):
            rect = self.parameterAsExtent(parameters, self.EXTENT, context)
            if not rect.isNull() and not rect.isEmpty():
                crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
                extent = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum(),
                          crs_wkt(crs) if crs.isValid() else None)
        with core_errors():
            info = import_smap_l4(
                granules, output,
                variable=self.parameterAsString(parameters, self.VARIABLE, context).strip() or None,
                time_window=self.parameterAsString(parameters, self.TIME_WINDOW, context).strip() or None,
                extent=extent, progress=self.progress(feedback))
        feedback.pushInfo(tr("Variable {}: {} dates, {} x {} cells (global column {}, row {})").format(
            info["variable"], len(info["dates"]), info["width"], info["height"],
            info["column_offset"], info["row_offset"]))
        if info["granules_skipped"]:
            feedback.pushInfo(tr("Outside the time window: {}").format(", ".join(info["granules_skipped"])))
        style_on_load(context, output, SoilMoistureStyle)
        return {self.OUTPUT: output, self.N_DATES: len(info["dates"])}
