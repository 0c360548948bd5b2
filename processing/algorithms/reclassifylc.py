"""smdownscale:reclassifylc - MCD12Q1 LC_Type5 (PFT) -> the paper's Table 2 land-cover classes."""
import json

from qgis.core import (
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..layers import raster_path
from .base import SmdAlgorithm, core_error, core_errors, tr

#: paper Table 2; equal to core.dataprep.landcover.TABLE2 (kept here so loading the provider imports no core)
TABLE2 = "0:0,1-5:1,6:2,7-8:3,9-11:4"


class ReclassifyLandCoverAlgorithm(SmdAlgorithm):
    INPUT = "INPUT"
    BAND = "BAND"
    TABLE = "TABLE"
    WATER_AS_NODATA = "WATER_AS_NODATA"
    OUTPUT = "OUTPUT"
    CLASS_COUNTS = "CLASS_COUNTS"

    ALG_ID = "reclassifylc"
    DISPLAY_NAME = "Reclassify land cover (MCD12Q1 PFT)"
    GROUP_ID = "dataprep"
    HELP = (
        "Reclassifies MODIS MCD12Q1 Land Cover Type 5 (plant functional types) into the paper's "
        "classes (Table 2): 0 water -> 0; 1-5 forest and shrub -> 1 forest; 6 grass -> 2 "
        "grassland; 7-8 croplands -> 3 cropland; 9-11 urban, snow and ice, non-vegetated -> 4 "
        "urban and other. 255 (unclassified), input nodata and values not in the table become "
        "nodata."
        "<h3>Inputs</h3>"
        "<b>Table</b>: original:new pairs, ranges allowed, e.g. <i>0:0,1-5:1,6:2,7-8:3,9-11:4</i>; "
        "<i>nodata</i> as new value drops a class.<br>"
        "<b>Water as nodata</b>: writes the new class 0 (water) as nodata, so it is excluded "
        "downstream as in the paper."
        "<h3>Output</h3>Single-band float32 GeoTIFF on the input grid (classes as whole numbers, "
        "nodata NaN); the pixel count of each class is logged and returned.")

    def initAlgorithm(self, config=None):  # noqa: N802
        param = QgsProcessingParameterRasterLayer(self.INPUT, tr("Land-cover raster (MCD12Q1 LC_Type5)"))
        self.add_parameter(param, tr("Plant-functional-type land cover, values 0-11 and 255."))
        param = QgsProcessingParameterBand(self.BAND, tr("Band"), defaultValue=1, parentLayerParameterName=self.INPUT,
                                           optional=True)
        self.add_parameter(
            param, tr("Band holding LC_Type5 when the file has several land-cover layers (default 1)."))
        param = QgsProcessingParameterString(self.TABLE, tr("Reclassification table"), defaultValue=TABLE2)
        self.add_parameter(param, tr("original:new pairs, e.g. 0:0,1-5:1,6:2,7-8:3,9-11:4 (paper Table 2)."))
        param = QgsProcessingParameterBoolean(self.WATER_AS_NODATA, tr("Write water (class 0) as nodata"),
                                              defaultValue=False)
        self.add_parameter(param, tr("Exclude water bodies downstream, as the paper does."))
        param = QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Reclassified land cover"))
        self.add_parameter(param, tr("Single-band GeoTIFF on the input grid."))
        self.addOutput(QgsProcessingOutputString(self.CLASS_COUNTS, tr("Pixels per class (JSON)")))

    def parameter_error(self, parameters, context):
        from ...core.dataprep.landcover import parse_reclass_table

        return core_error(parse_reclass_table, self.parameterAsString(parameters, self.TABLE, context))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ...core.dataprep.landcover import reclassify_landcover

        source = raster_path(self.parameterAsRasterLayer(parameters, self.INPUT, context), tr("Land cover"))
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        with core_errors():
            info = reclassify_landcover(
                source, output,
                table=self.parameterAsString(parameters, self.TABLE, context),
                water_as_nodata=self.parameterAsBoolean(parameters, self.WATER_AS_NODATA, context),
                band=self.parameterAsInt(parameters, self.BAND, context) or 1,
                progress=self.progress(feedback))
        for value, count in info["class_counts"].items():
            feedback.pushInfo(tr("class {}: {} pixels").format(value, count))
        feedback.pushInfo(tr("nodata: {} pixels").format(info["nodata_pixels"]))
        counts = json.dumps({str(k): v for k, v in info["class_counts"].items()})
        return {self.OUTPUT: output, self.CLASS_COUNTS: counts}
