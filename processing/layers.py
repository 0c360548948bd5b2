"""Conversions between QGIS objects and the plain inputs of ``core``, and output styles.

Only ``qgis.core`` here; ``core`` modules are imported inside the functions that need them.
"""
import json
import os

from qgis.core import (
    QgsClassificationRange,
    QgsColorRampShader,
    QgsCoordinateReferenceSystem,
    QgsGradientColorRamp,
    QgsGraduatedSymbolRenderer,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterShader,
    QgsRendererRange,
    QgsSingleBandPseudoColorRenderer,
    QgsSymbol,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QDate, QDateTime
from qgis.PyQt.QtGui import QColor

from .algorithms.base import tr

#: Soil-moisture colour ramp, dry (brown) to wet (blue), over 0 - 0.5 m3/m3.
SM_MIN, SM_MAX = 0.0, 0.5
SM_COLOURS = ("#8c510a", "#d8b365", "#f6e8c3", "#c7eae5", "#5ab4ac", "#01665e", "#08306b")

#: ubRMSE classes of the paper (m3/m3): meets SMAP's 0.04 target, acceptable up to 0.06, poor.
UBRMSE_CLASSES = ((0.0, 0.04, "#1a9641", "meets (< 0.04)"),
                  (0.04, 0.06, "#fdae61", "acceptable (0.04 - 0.06)"),
                  (0.06, 1.0e9, "#d7191c", "poor (> 0.06)"))


def crs_wkt(crs):
    """WKT of a ``QgsCoordinateReferenceSystem`` in the flavour GDAL/OSR reads."""
    return crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL)


def raster_path(layer, what):
    """File path behind a raster layer; the core reads files with GDAL/rasterio."""
    if layer is None:
        raise QgsProcessingException(tr("{}: the raster layer could not be loaded.").format(what))
    source = layer.source()
    if layer.providerType() != "gdal" or not os.path.isfile(source):
        raise QgsProcessingException(
            tr("{}: layer {!r} is not a raster file on disk ({}). Save it as a GeoTIFF "
               "(Export > Save As...) and use that file.").format(what, layer.name(), source))
    if not layer.crs().isValid():
        raise QgsProcessingException(
            tr("{}: raster {!r} has no coordinate reference system. Assign one "
               "(Raster > Projections > Assign Projection) and run again.").format(what, source))
    return source


def partitions_from_source(source, field):
    """A core ``Partitions`` from a polygon feature source and its name field."""
    from ..core.partitions import Partitions

    if not source.sourceCrs().isValid():
        raise QgsProcessingException(
            tr("The partition layer has no coordinate reference system; assign one first."))
    if source.fields().lookupField(field) < 0:
        raise QgsProcessingException(
            tr("The partition layer has no field {!r}. Fields: {}.").format(
                field, ", ".join(source.fields().names())))
    from ..core.common import SmdError

    names, geometries, feature_ids = [], [], []
    for feature in source.getFeatures():
        geometry = feature.geometry()
        if geometry.isNull() or geometry.isEmpty():
            continue
        if QgsWkbTypes.geometryType(geometry.wkbType()) != QgsWkbTypes.PolygonGeometry:
            raise QgsProcessingException(tr("The partition layer must hold polygons."))
        value = feature[field]
        if value is None or str(value).strip() == "" or str(value) == "NULL":
            raise QgsProcessingException(
                tr("Partition feature {} has an empty {!r}; give every polygon a name.").format(
                    feature.id(), field))
        names.append(str(value))
        geometries.append(json.loads(geometry.asJson(17)))
        feature_ids.append(feature.id())
    if not names:
        raise QgsProcessingException(tr("The partition layer has no polygons."))
    try:
        return Partitions(names, geometries, crs_wkt(source.sourceCrs()), feature_ids=feature_ids)
    except SmdError as err:  # repeated names, invalid geometries: a message, not a traceback
        raise QgsProcessingException(str(err)) from err


def date_text(value):
    """ISO ``YYYY-MM-DD`` from a QDate, QDateTime or text attribute, or None."""
    if isinstance(value, QDateTime):
        value = value.date()
    if isinstance(value, QDate):
        return value.toString("yyyy-MM-dd") if value.isValid() else None
    if value is None or str(value) in ("", "NULL"):
        return None
    return str(value).strip()[:10]


def observations_from_source(source, site_field, date_field, value_field):
    """Core ``Observation`` records from a point feature source in long format.

    Returns
    -------
    observations : list of Observation
        One per feature with a point and a numeric value; coordinates in the source CRS.
    skipped : int
        Features without geometry or value.
    """
    from ..core.stations import Observation

    fields = source.fields()
    for field in (site_field, date_field, value_field):
        if fields.lookupField(field) < 0:
            raise QgsProcessingException(
                tr("The station layer has no field {!r}. Fields: {}.").format(
                    field, ", ".join(fields.names())))
    if not source.sourceCrs().isValid():
        raise QgsProcessingException(
            tr("The station layer has no coordinate reference system; assign one first."))
    observations, skipped = [], 0
    for feature in source.getFeatures():
        geometry = feature.geometry()
        value = feature[value_field]
        date = date_text(feature[date_field])
        if geometry.isNull() or geometry.isEmpty() or value in (None, "") or date is None \
                or str(value) == "NULL":
            skipped += 1
            continue
        if QgsWkbTypes.geometryType(geometry.wkbType()) != QgsWkbTypes.PointGeometry:
            raise QgsProcessingException(tr("The station layer must hold points."))
        point = geometry.vertexAt(0)
        try:
            number = float(value)
        except (TypeError, ValueError) as err:
            raise QgsProcessingException(
                tr("Station value {!r} in field {!r} is not a number.").format(value, value_field)) from err
        observations.append(Observation(str(feature[site_field]), date, number, point.x(), point.y()))
    return observations, skipped


def soil_moisture_renderer(layer, band=1):
    """Pseudocolour renderer over SM_MIN..SM_MAX m3/m3 for ``band``."""
    ramp = QgsGradientColorRamp(QColor(SM_COLOURS[0]), QColor(SM_COLOURS[-1]))
    ramp.setStops([])
    shader_function = QgsColorRampShader(SM_MIN, SM_MAX)
    shader_function.setColorRampType(QgsColorRampShader.Interpolated)
    step = (SM_MAX - SM_MIN) / (len(SM_COLOURS) - 1)
    shader_function.setColorRampItemList([
        QgsColorRampShader.ColorRampItem(SM_MIN + i * step, QColor(colour), f"{SM_MIN + i * step:.2f}")
        for i, colour in enumerate(SM_COLOURS)])
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(shader_function)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), band, shader)
    renderer.setClassificationMin(SM_MIN)
    renderer.setClassificationMax(SM_MAX)
    return renderer


def ubrmse_renderer(geometry_type, field="ubrmse"):
    """Graduated renderer of a point layer by ubRMSE, in the paper's classes."""
    ranges = []
    for lower, upper, colour, label in UBRMSE_CLASSES:
        symbol = QgsSymbol.defaultSymbol(geometry_type)
        symbol.setColor(QColor(colour))
        ranges.append(QgsRendererRange(QgsClassificationRange(label, lower, upper), symbol))
    renderer = QgsGraduatedSymbolRenderer(field, ranges)
    renderer.setClassAttribute(field)
    return renderer


class SoilMoistureStyle(QgsProcessingLayerPostProcessorInterface):
    """Applies the soil-moisture colour ramp to a raster output when QGIS loads it."""

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        if layer is not None and layer.isValid():
            layer.setRenderer(soil_moisture_renderer(layer))
            layer.triggerRepaint()


class UbrmseStyle(QgsProcessingLayerPostProcessorInterface):
    """Styles a validation point layer by its ``ubrmse`` field when QGIS loads it."""

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        if layer is not None and layer.isValid():
            layer.setRenderer(ubrmse_renderer(layer.geometryType()))
            layer.triggerRepaint()


# QGIS keeps only a C++ pointer to a post-processor: the Python objects must stay alive.
_POST_PROCESSORS = []


def style_on_load(context, layer_id, post_processor_class):
    """Attach a style post-processor to an output if QGIS will load it on completion."""
    if context.willLoadLayerOnCompletion(layer_id):
        post_processor = post_processor_class()
        _POST_PROCESSORS.append(post_processor)
        del _POST_PROCESSORS[:-100]
        context.layerToLoadOnCompletionDetails(layer_id).setPostProcessor(post_processor)
