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

from ..resources import tr

#: Soil-moisture colour ramp, dry (brown) to wet (blue), over 0 - 0.5 m3/m3.
SM_MIN, SM_MAX = 0.0, 0.5
SM_COLOURS = ("#8c510a", "#d8b365", "#f6e8c3", "#c7eae5", "#5ab4ac", "#01665e", "#08306b")

#: Colour of each ubRMSE class of the paper; names and bounds: core.metrics.UBRMSE_CLASSES/_BOUNDS.
UBRMSE_COLOURS = {"meets": "#1a9641", "acceptable": "#fdae61", "poor": "#d7191c"}
UBRMSE_STYLE_MAX = 1.0e9


def ubrmse_style_classes():
    """(lower, upper, colour, label) per ubRMSE class, from core's bounds.

    QGIS gives a value on a shared bound to the first range, core counts ubRMSE = 0.04 as
    "acceptable": the "meets" range ends just below 0.04 so that the style and the report agree.
    """
    import numpy as np

    from ..core.metrics import UBRMSE_BOUNDS, UBRMSE_CLASSES

    (meets, acceptable, poor), (lower, upper) = UBRMSE_CLASSES, UBRMSE_BOUNDS
    return ((0.0, float(np.nextafter(lower, 0.0)), UBRMSE_COLOURS[meets], f"{meets} (< {lower:g})"),
            (lower, upper, UBRMSE_COLOURS[acceptable], f"{acceptable} ({lower:g} - {upper:g})"),
            (upper, UBRMSE_STYLE_MAX, UBRMSE_COLOURS[poor], f"{poor} (> {upper:g})"))


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


def partitions_from_source(source, field, source_path=None):
    """A core ``Partitions`` from a polygon feature source and its name field (the rules -
    field, CRS, names, merging features of one name, polygon validity - are core's)."""
    from ..core.partitions import Partitions, check_partition_layer
    from .algorithms.base import core_errors

    label = tr("The partition layer")
    names, geometries, feature_ids = [], [], []
    with core_errors():
        check_partition_layer(label, source.fields().names(), field,
                              has_crs=source.sourceCrs().isValid())
        for feature in source.getFeatures():
            geometry = feature.geometry()
            if geometry.isNull() or geometry.isEmpty():
                continue
            value = feature[field]
            names.append(None if value is None or str(value) == "NULL" else value)
            geometries.append(json.loads(geometry.asJson(17)))
            feature_ids.append(feature.id())
        return Partitions.from_features(names, geometries, crs_wkt(source.sourceCrs()),
                                        feature_ids=feature_ids, source_path=source_path, label=label)


def date_text(value):
    """ISO ``YYYY-MM-DD`` from a QDate, QDateTime or text attribute, or None."""
    if isinstance(value, QDateTime):
        value = value.date()
    if isinstance(value, QDate):
        return value.toString("yyyy-MM-dd") if value.isValid() else None
    if value is None or str(value) in ("", "NULL"):
        return None
    return str(value).strip()[:10].replace("/", "-") or None


def observations_from_source(source, site_field, date_field, value_field):
    """Core ``Observation`` records from a point feature source in long format.

    Returns
    -------
    observations : list of Observation
        One per feature with a point and a numeric value; coordinates in the source CRS.
    skipped : int
        Features without geometry or value.
    """
    from ..core.common import SmdError
    from ..core.stations import Observation, station_fields

    try:  # the one field rule (exact names, empty = default) is core's
        site_field, date_field, value_field = station_fields(source.fields().names(), site_field, date_field,
                                                             value_field)
    except SmdError as err:
        raise QgsProcessingException(str(err)) from err
    if not source.sourceCrs().isValid():
        raise QgsProcessingException(
            tr("The station layer has no coordinate reference system; assign one first."))
    observations, skipped = [], 0
    for feature in source.getFeatures():
        geometry = feature.geometry()
        value = feature[value_field]
        date = date_text(feature[date_field])
        site = feature[site_field]
        site = None if site is None or str(site) == "NULL" else str(site).strip()
        if geometry.isNull() or geometry.isEmpty() or value in (None, "") or date is None \
                or str(value) == "NULL" or not site:
            skipped += 1
            continue
        if QgsWkbTypes.geometryType(geometry.wkbType()) != QgsWkbTypes.PointGeometry:
            raise QgsProcessingException(tr("The station layer must hold points."))
        point = geometry.vertexAt(0)
        try:
            number = float(value)
        except (TypeError, ValueError) as err:
            raise QgsProcessingException(
                tr("Station feature {}: the value {!r} in field {!r} is not a number; the soil-moisture "
                   "field must hold numbers in m3/m3.").format(feature.id(), value, value_field)) from err
        observations.append(Observation(site, date, number, point.x(), point.y()))
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
    for lower, upper, colour, label in ubrmse_style_classes():
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
            # a series is named with its product and date range (the date dock steps through it)
            from ..resources import band_dates, series_layer_name

            dates = band_dates(layer)
            if dates:
                layer.setName(series_layer_name(layer.name(), dates))
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


# ------------------------------------------------------------------ checked feature sinks
def source_file(text):
    """The file behind a layer source or sink destination, or None when it is not a file.

    ``/a/b.gpkg|layername=x`` -> ``/a/b.gpkg``; ``ogr:dbname='/a/b.gpkg' table="x" (geom)`` ->
    ``/a/b.gpkg``; ``memory:``, ``postgres://...``, ``Point?crs=...`` (memory layers) -> None.
    The QGIS URI forms are recognised here; the ``|`` suffix rule is core.outputs.source_path.
    """
    import re

    from ..core.outputs import source_path

    text = str(text or "").strip()
    if not text:
        return None
    if text.startswith("ogr:"):
        match = re.search(r"dbname='((?:[^'\\]|\\.)*)'", text)
        return os.path.abspath(match.group(1).replace("\\'", "'")) if match else None
    if text.startswith("file://"):
        text = text[len("file://"):]
    path = source_path(text)
    if not path or path.startswith("memory:") or "://" in path or "?" in path or ":" in path.split(os.sep)[0]:
        return None
    return os.path.abspath(path)


def same_file(first, second):
    """True when two layer sources / destinations name the same file (real paths compared)."""
    from ..core.outputs import real_path

    first, second = source_file(first), source_file(second)
    if not first or not second:
        return False
    return real_path(first) == real_path(second)


def _ogr_feature_count(path, layer_name):
    """Feature count of a written vector file read back with OGR; raises with the reason."""
    from osgeo import gdal, ogr

    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        try:
            datasource = ogr.Open(path)
        except RuntimeError as err:  # GDAL exceptions may be on
            raise ValueError(str(err)) from err
        if datasource is None:
            raise ValueError(gdal.GetLastErrorMsg() or "OGR cannot open it")
        layer = datasource.GetLayerByName(layer_name) if layer_name else datasource.GetLayer(0)
        if layer is None:
            raise ValueError(f"it has no layer {layer_name!r}" if layer_name else "it has no layer")
        count = layer.GetFeatureCount()
        datasource = None
        return count
    finally:
        gdal.PopErrorHandler()


class CheckedSink:
    """A Processing feature sink whose every write is checked, then read back.

    1. :meth:`resolve` (before anything is created): the destination through
       ``parameterAsOutputLayer``; refused when it is one of ``protected`` (the inputs: the
       station layer, the rasters...), compared as real paths without ``|layername=``.
    2. :meth:`create`: ``parameterAsSink``; remembers whether the file existed before.
    3. :meth:`add`: every ``addFeature`` result checked.
    4. :meth:`finish`: ``flushBuffer`` and ``lastError`` checked, the writer closed, GDAL errors
       seen meanwhile collected (a GeoPackage's COMMIT on a full disk fails only at close), and
       the file reopened with OGR: its feature count must be the number written.
    5. :meth:`discard`: on any failure, removes the file when this run created it.

    Failures raise ``QgsProcessingException`` naming the file and the cause.
    """

    def __init__(self, algorithm, parameters, name, context, what):
        self.algorithm, self.parameters, self.name, self.context = algorithm, parameters, name, context
        self.what = what
        self.destination = None
        self.sink = None
        self.sink_id = None
        self.file = None
        self.created = False
        self.count = 0
        self._errors = []
        self._handler_pushed = False

    def resolve(self, protected=()):
        """The destination; refuses one that is an input (``protected``: (label, source))."""
        self.destination = self.algorithm.parameterAsOutputLayer(self.parameters, self.name, self.context)
        for label, source in protected:
            if source and same_file(self.destination, source):
                raise QgsProcessingException(
                    tr("The {} output {} is the {} ({}); an input is never overwritten. Choose "
                       "another output file.").format(self.what, source_file(self.destination), label,
                                                      source))
        return self.destination

    def _existing(self):
        path = source_file(self.destination)
        if not path:
            return set()
        # QGIS appends the default extension (.gpkg) to a name it does not recognise
        return {os.path.realpath(p) for p in (path, path + ".gpkg") if os.path.lexists(p)}

    def create(self, fields, geometry_type, crs):
        if self.destination is None:
            self.resolve()
        existed = self._existing()
        self._push_gdal_handler()
        try:
            self.sink, self.sink_id = self.algorithm.parameterAsSink(
                self.parameters, self.name, self.context, fields, geometry_type, crs)
        except QgsProcessingException as err:
            # QGIS's message quotes the whole failed SQL; say what failed and why instead
            self._pop_gdal_handler()
            self.file = source_file(self.destination)
            self.created = bool(self.file) and os.path.realpath(self.file) not in existed
            self._errors.append(str(err))
            cause = self._cause(None)
            self.discard()
            if cause is None or cause == str(err):
                if len(str(err)) <= 300:
                    raise
                cause = str(err)[:300] + "..."
            self._fail(cause)
        if self.sink is None:
            self._pop_gdal_handler()
            raise QgsProcessingException(self.algorithm.invalidSinkError(self.parameters, self.name))
        # a temporary (memory:) destination - e.g. an output a model does not expose - has a
        # layer id for sink id, no file to read back or remove
        self.file = source_file(self.sink_id) if source_file(self.destination) else None
        self.created = bool(self.file) and os.path.realpath(self.file) not in existed
        return self

    def _push_gdal_handler(self):
        try:
            from osgeo import gdal
        except ImportError:
            return
        errors = self._errors

        def handler(error_class, number, message):
            if error_class >= gdal.CE_Failure:
                errors.append(str(message))
        gdal.PushErrorHandler(handler)
        self._handler = handler  # keep the callable alive while GDAL holds it
        self._handler_pushed = True

    def _pop_gdal_handler(self):
        if self._handler_pushed:
            from osgeo import gdal

            gdal.PopErrorHandler()
            self._handler_pushed = False

    def _fail(self, cause):
        where = self.file or self.sink_id or self.destination
        raise QgsProcessingException(
            tr("Could not write the {} output {}: {}. Nothing was kept under that name; free some "
               "space, fix the permissions or choose another output path.").format(self.what, where, cause))

    def _cause(self, fallback):
        for message in self._errors:
            lowered = message.lower()
            if "disk is full" in lowered or "no space left" in lowered:
                return tr("the disk is full")
            if "readonly" in lowered or "read-only" in lowered:
                return tr("the file system is read-only")
            if "permission" in lowered:
                return tr("permission denied")
        if self._errors:
            return self._errors[0]
        return fallback

    def add(self, feature):
        from qgis.core import QgsFeatureSink

        if not self.sink.addFeature(feature, QgsFeatureSink.FastInsert):
            self._fail(self._cause(self.sink.lastError() or tr("a feature could not be added")))
        self.count += 1

    def finish(self):
        """Flush, close and verify; returns the sink id."""
        try:
            flushed = self.sink.flushBuffer()
            error = self.sink.lastError()
            if flushed is False or error:
                self._fail(self._cause(error or tr("the features could not be flushed")))
            # closing the writer commits the file (a GeoPackage's COMMIT may fail only now)
            self.sink = None
            import gc
            gc.collect()
        finally:
            self._pop_gdal_handler()
        if self._errors:
            self._fail(self._cause(self._errors[0]))
        if self.file:
            layer_name = None
            if "|layername=" in str(self.sink_id):
                layer_name = str(self.sink_id).split("|layername=", 1)[1].split("|", 1)[0]
            try:
                count = _ogr_feature_count(self.file, layer_name)
            except ValueError as err:
                self._fail(tr("the written file cannot be read back ({})").format(err))
            if count >= 0 and count != self.count:
                self._fail(tr("{} features were written but {} read back").format(self.count, count))
        return self.sink_id

    def discard(self):
        """Drop the sink and remove the file when this run created it (never a file it did not)."""
        self.sink = None
        self._pop_gdal_handler()
        if not (self.created and self.file):
            return
        import gc
        gc.collect()
        parent, base = os.path.split(self.file)
        stem = os.path.splitext(base)[0]
        for name in os.listdir(parent) if os.path.isdir(parent) else []:
            # the file and its sidecars (.shx/.dbf/.prj/.cpg of a shapefile, -wal/-shm/-journal)
            if name == base or name.startswith(base + "-") or (
                    base.lower().endswith(".shp") and os.path.splitext(name)[0] == stem
                    and os.path.splitext(name)[1].lower() in (".shx", ".dbf", ".prj", ".cpg", ".qix", ".qmd")):
                try:
                    os.remove(os.path.join(parent, name))
                except OSError:
                    pass
