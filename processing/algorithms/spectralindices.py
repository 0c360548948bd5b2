"""smdownscale:spectralindices - NDVI, EVI, NDWI, NSDSI series from per-date reflectance rasters."""
import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..layers import raster_path
from .base import SmdAlgorithm, core_error, core_errors, tr

INDEX_NAMES = ("ndvi", "evi", "ndwi", "nsdsi")


class SpectralIndicesAlgorithm(SmdAlgorithm):
    INPUT = "INPUT"
    INDICES = "INDICES"
    BAND_MAP = "BAND_MAP"
    SCALE_FACTOR = "SCALE_FACTOR"
    OUTPUT = "OUTPUT"
    OUTPUT_LAYERS = "OUTPUT_LAYERS"
    N_DATES = "N_DATES"

    ALG_ID = "spectralindices"
    DISPLAY_NAME = "Spectral indices (NDVI, EVI, NDWI, NSDSI)"
    GROUP_ID = "dataprep"
    HELP = (
        "Computes the paper's spectral indices from surface-reflectance rasters such as MOD09A1:"
        "<br>NDVI = (nir - red) / (nir + red)<br>EVI = 2.5 (nir - red) / (nir + 6 red - 7.5 blue + 1)"
        "<br>NDWI = (green - nir) / (green + nir)<br>NSDSI = (swir1 - swir2) / swir1"
        "<h3>Inputs</h3>"
        "<b>Reflectance rasters</b>: one multi-band raster per date, all on one grid. Each file's "
        "date comes from a DATE metadata tag or its file name (..._YYYY-MM-DD.tif, YYYYMMDD or MODIS "
        "AYYYYDDD). A single undated raster gives single-band (static) indices.<br>"
        "<b>Band map</b>: band numbers of red, nir, blue, green, swir1, swir2 (default MOD09A1: "
        "red:1,nir:2,blue:3,green:4,swir1:6,swir2:7).<br>"
        "<b>Scale factor</b>: stored value x factor = reflectance (MOD09A1: 0.0001); it matters for "
        "EVI only."
        "<h3>Output</h3>A folder with one GeoTIFF series per index, &lt;index&gt;.tif, one band per "
        "date (described YYYY-MM-DD), float32. Input nodata and zero denominators become nodata, "
        "never infinity.")

    def initAlgorithm(self, config=None):  # noqa: N802
        param = QgsProcessingParameterMultipleLayers(self.INPUT, tr("Reflectance rasters (one per date)"),
                                                     QgsProcessing.TypeRaster)
        self.add_parameter(
            param, tr("Multi-band surface-reflectance rasters on one grid, dated by DATE tag or file name."))
        param = QgsProcessingParameterEnum(self.INDICES, tr("Indices"), options=[n.upper() for n in INDEX_NAMES],
                                           allowMultiple=True, defaultValue=list(range(len(INDEX_NAMES))))
        self.add_parameter(param, tr("Indices to compute; each becomes <index>.tif in the output folder."))
        param = QgsProcessingParameterString(self.BAND_MAP, tr("Band map"),
                                             defaultValue="red:1,nir:2,blue:3,green:4,swir1:6,swir2:7")
        self.add_parameter(param, tr("name:band pairs (1-based); names not given keep the MOD09A1 default."),
                           advanced=True)
        param = QgsProcessingParameterNumber(self.SCALE_FACTOR, tr("Reflectance scale factor"),
                                             QgsProcessingParameterNumber.Double, defaultValue=0.0001,
                                             minValue=0.0)
        self.add_parameter(param, tr("Stored value x factor = reflectance (MOD09A1: 0.0001)."), advanced=True)
        param = QgsProcessingParameterFolderDestination(self.OUTPUT, tr("Output folder"))
        self.add_parameter(param, tr("Receives ndvi.tif, evi.tif, ndwi.tif, nsdsi.tif (those chosen)."))
        self.addOutput(QgsProcessingOutputMultipleLayers(self.OUTPUT_LAYERS, tr("Index series")))
        self.addOutput(QgsProcessingOutputNumber(self.N_DATES, tr("Dates written")))

    def parameter_error(self, parameters, context):
        from ...core.dataprep.indices import parse_band_map

        error = core_error(parse_band_map, self.parameterAsString(parameters, self.BAND_MAP, context))
        if error is not None:
            return error
        if not self.parameterAsEnums(parameters, self.INDICES, context):
            return tr("Choose at least one index.")
        if self.parameterAsDouble(parameters, self.SCALE_FACTOR, context) <= 0:
            return tr("The scale factor must be positive.")
        return None

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        import rasterio

        from ...core.dataprep.indices import spectral_indices

        layers = self.parameterAsLayerList(parameters, self.INPUT, context)
        paths = [raster_path(layer, tr("Reflectance")) for layer in layers]
        indices = [INDEX_NAMES[i] for i in self.parameterAsEnums(parameters, self.INDICES, context)]
        folder = self.parameterAsString(parameters, self.OUTPUT, context)
        created = _make_folder(folder)
        try:
            with core_errors():
                outputs = spectral_indices(
                    paths, folder, indices=indices,
                    band_map=self.parameterAsString(parameters, self.BAND_MAP, context),
                    scale_factor=self.parameterAsDouble(parameters, self.SCALE_FACTOR, context),
                    progress=self.progress(feedback))
        except BaseException:
            # core writes all indices or none; a folder this run created is removed again
            _remove_created(created)
            raise
        with rasterio.open(next(iter(outputs.values()))) as src:
            n_dates = src.count if any(src.descriptions) else 0
        for name, path in outputs.items():
            context.addLayerToLoadOnCompletion(
                path, QgsProcessingContext.LayerDetails(name.upper(), context.project(), self.OUTPUT))
        feedback.pushInfo(tr("Wrote {} ({} dates) to {}").format(", ".join(outputs), n_dates, folder))
        return {self.OUTPUT: folder, self.OUTPUT_LAYERS: list(outputs.values()), self.N_DATES: n_dates}


def _make_folder(folder):
    """Create ``folder`` (and missing parents); the folders created, outermost first."""
    created = []
    path = os.path.abspath(folder)
    while path and not os.path.exists(path):
        created.insert(0, path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    os.makedirs(folder, exist_ok=True)
    return created


def _remove_created(created):
    """Remove the folders :func:`_make_folder` created, innermost first, when they are empty."""
    for path in reversed(created):
        try:
            os.rmdir(path)
        except OSError:
            break  # not empty (or gone): leave it and its parents
