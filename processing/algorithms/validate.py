"""smdownscale:validate - compare soil-moisture rasters with in-situ stations."""
import math
import time

from qgis.core import (
    QgsFeature,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from ...core.common import whole_number
from ...core.outputs import check_outputs
from ...core.stations import DEFAULT_DATE_FIELD, DEFAULT_SITE_FIELD, DEFAULT_VALUE_FIELD, station_fields
from ...core.validate import ALL_SITES, PER_SITE_FIELDS, check_report_path, report_outputs
from ..layers import (CheckedSink, UbrmseStyle, crs_wkt, observations_from_source, partitions_from_source,
                      raster_path, source_file, style_on_load)
from .base import SmdAlgorithm, core_error, core_errors, tr

#: attributes of a validation point: core's per-site fields without the coordinates (the geometry)
POINT_FIELDS = tuple(f for f in PER_SITE_FIELDS if f not in ("x", "y"))
_FIELD_TYPES = {"product": QVariant.String, "site_id": QVariant.String, "n": QVariant.Int}


def output_fields():
    fields = QgsFields()
    for name in POINT_FIELDS:
        fields.append(QgsField(name, _FIELD_TYPES.get(name, QVariant.Double)))
    return fields


def point_attributes(row):
    """The attributes of one validation point (:data:`POINT_FIELDS`) from a core per-site row."""
    convert = {QVariant.String: str, QVariant.Int: int}
    return [convert.get(_FIELD_TYPES.get(name), _number)(row[name]) for name in POINT_FIELDS]


def unique_product_names(layers):
    """Layer names made unique (``name``, ``name_2``...), in order."""
    names = []
    for layer in layers:
        base = layer.name() or "product"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def _number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


class ValidateAlgorithm(SmdAlgorithm):
    DOWNSCALED = "DOWNSCALED"
    OTHER_PRODUCTS = "OTHER_PRODUCTS"
    STATIONS = "STATIONS"
    SITE_FIELD = "SITE_FIELD"
    DATE_FIELD = "DATE_FIELD"
    VALUE_FIELD = "VALUE_FIELD"
    PARTITIONS = "PARTITIONS"
    PARTITION_FIELD = "PARTITION_FIELD"
    PRECIPITATION = "PRECIPITATION"
    N_TIMESERIES_SITES = "N_TIMESERIES_SITES"
    OUTPUT = "OUTPUT"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    MEAN_R = "MEAN_R"
    MEDIAN_R = "MEDIAN_R"
    MEAN_UBRMSE = "MEAN_UBRMSE"
    MEAN_BIAS = "MEAN_BIAS"

    ALG_ID = "validate"
    DISPLAY_NAME = "Validate against stations"
    GROUP_ID = "validation"
    HELP = (
        "Compares soil-moisture rasters with in-situ station readings, site by site, with the "
        "paper's metrics: R, RMSE, bias (estimate minus station) and unbiased RMSE, all in m3/m3."
        "<h3>Inputs</h3>"
        "<b>Downscaled soil moisture</b>: a series raster (band description = date YYYY-MM-DD), "
        "e.g. the output of <i>Predict fine soil moisture</i>.<br>"
        "<b>Other products</b>: optional rasters of the same kind (e.g. the coarse SMAP series) "
        "compared side by side; each is named after its layer.<br>"
        "<b>Stations</b>: a point layer in long format, one feature per site and date, with a "
        "site id field, a date field (date or text YYYY-MM-DD) and a soil-moisture value field "
        "(m3/m3). Any CRS: points are reprojected onto each raster. The pixel under each station "
        "is compared on the dates both have values.<br>"
        "<b>Partitions</b> (optional): polygons with a name field; adds each site's partition and "
        "per-partition summary rows. <b>Precipitation</b> (optional, advanced): a series drawn as "
        "bars in the HTML report's time series."
        "<h3>Outputs</h3><b>Validation points</b>: one feature per site and product with n, r, "
        "rmse, bias and ubrmse, styled by ubRMSE (meets &lt; 0.04, acceptable 0.04 - 0.06, poor). "
        "<b>Report</b> (.html, .csv or .json) with per-site rows, the summary per product and "
        "the sites that could not be matched; the .html page (Results Viewer) adds one sentence per "
        "product comparison, the paper's classes, boxplots, site maps, R against ubRMSE per partition "
        "and time series at selected sites (cf. the paper's Figures 5-8). <b>MEAN_R, MEDIAN_R, MEAN_UBRMSE, MEAN_BIAS</b>: "
        "the summary of the downscaled product over the sites.")

    def initAlgorithm(self, config=None):  # noqa: N802
        param = QgsProcessingParameterRasterLayer(self.DOWNSCALED, tr("Downscaled soil moisture"))
        self.add_parameter(param, tr("Series raster, one band per date described YYYY-MM-DD."))
        param = QgsProcessingParameterMultipleLayers(
            self.OTHER_PRODUCTS, tr("Other products to compare"), QgsProcessing.TypeRaster,
            optional=True)
        self.add_parameter(param, tr("Further series rasters (e.g. SMAP 9 km) validated side by side."))
        param = QgsProcessingParameterFeatureSource(
            self.STATIONS, tr("Station observations"), [QgsProcessing.TypeVectorPoint])
        self.add_parameter(param, tr("Points, one per site and date, with site id, date and value fields."))
        for name, label, default, kind, help_text in (
                (self.SITE_FIELD, "Site id field", DEFAULT_SITE_FIELD, QgsProcessingParameterField.Any,
                 "Identifies the station; readings with the same id form one site."),
                (self.DATE_FIELD, "Date field", DEFAULT_DATE_FIELD, QgsProcessingParameterField.Any,
                 "Date of the reading (date type or text YYYY-MM-DD)."),
                (self.VALUE_FIELD, "Soil moisture field (m3/m3)", DEFAULT_VALUE_FIELD,
                 QgsProcessingParameterField.Numeric,
                 "Volumetric soil moisture measured at the station.")):
            # optional with a default: qgis_process (3.22) rejects a missing mandatory field
            # parameter even when it has a default; an empty value falls back to the default
            # (core.stations.station_fields)
            param = QgsProcessingParameterField(name, tr(label), defaultValue=default,
                                                parentLayerParameterName=self.STATIONS, type=kind,
                                                optional=True)
            self.add_parameter(param, tr(help_text))
        param = QgsProcessingParameterFeatureSource(
            self.PARTITIONS, tr("Terrain partitions (optional)"), [QgsProcessing.TypeVectorPolygon], optional=True)
        self.add_parameter(param, tr("Polygons with a name field: adds each site's partition, per-partition "
                                     "summary rows and the partition panels and outlines of the report."))
        param = QgsProcessingParameterField(self.PARTITION_FIELD, tr("Partition name field"),
                                            parentLayerParameterName=self.PARTITIONS, optional=True)
        self.add_parameter(param, tr("Field holding the partition names."))
        param = QgsProcessingParameterRasterLayer(self.PRECIPITATION, tr("Precipitation series (optional)"),
                                                  optional=True)
        self.add_parameter(param, tr("One band per date described YYYY-MM-DD; drawn as bars in the HTML "
                                     "report's time series."), advanced=True)
        param = QgsProcessingParameterNumber(
            self.N_TIMESERIES_SITES, tr("Sites with a time series in the HTML report"),
            QgsProcessingParameterNumber.Integer, defaultValue=12, minValue=0)
        self.add_parameter(param, tr("Chosen spread over the partitions, most station days first; 0 = none."),
                           advanced=True)
        param = QgsProcessingParameterFeatureSink(
            self.OUTPUT, tr("Validation points"), QgsProcessing.TypeVectorPoint)
        self.add_parameter(param, tr("One point per site and product with n, r, rmse, bias, ubrmse."))
        param = QgsProcessingParameterFileDestination(
            self.OUTPUT_REPORT, tr("Validation report"), tr("HTML (*.html);;CSV (*.csv);;JSON (*.json)"),
            optional=True, createByDefault=True)
        self.add_parameter(param, tr("Per-site metrics, the summary per product and unmatched sites."))
        self.addOutput(QgsProcessingOutputNumber(self.MEAN_R, tr("Mean R (downscaled)")))
        self.addOutput(QgsProcessingOutputNumber(self.MEDIAN_R, tr("Median R (downscaled)")))
        self.addOutput(QgsProcessingOutputNumber(self.MEAN_UBRMSE, tr("Mean ubRMSE (downscaled)")))
        self.addOutput(QgsProcessingOutputNumber(self.MEAN_BIAS, tr("Mean bias (downscaled)")))

    def station_fields(self, parameters, context, source):
        """(site, date, value) field names, resolved and checked by core.stations.station_fields."""
        return station_fields(source.fields().names(),
                              *(self.parameterAsString(parameters, name, context)
                                for name in (self.SITE_FIELD, self.DATE_FIELD, self.VALUE_FIELD)))

    def parameter_error(self, parameters, context):
        layers = [self.parameterAsRasterLayer(parameters, self.DOWNSCALED, context)]
        layers += self.parameterAsLayerList(parameters, self.OTHER_PRODUCTS, context)
        for layer in layers:
            if layer is not None and not layer.crs().isValid():
                return tr("Raster {!r} has no coordinate reference system; assign one "
                          "first.").format(layer.name())
        source = self.parameterAsSource(parameters, self.STATIONS, context)
        if source is None:
            return tr("The station layer could not be loaded.")
        if not source.sourceCrs().isValid():
            return tr("The station layer has no coordinate reference system; assign one first.")
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        partitions = self.parameterAsSource(parameters, self.PARTITIONS, context)
        if partitions is not None and not self.parameterAsString(parameters, self.PARTITION_FIELD, context):
            return tr("Choose the partition name field of the partition layer.")
        return (core_error(self.station_fields, parameters, context, source)
                or (core_error(check_report_path, report_path) if report_path else None)
                or core_error(whole_number, self.parameterAsDouble(parameters, self.N_TIMESERIES_SITES, context),
                              "N_TIMESERIES_SITES", minimum=0))

    def station_source_path(self, parameters, context):
        """The station layer's source (file path, maybe with |layername=), or None."""
        layer = self.parameterAsVectorLayer(parameters, self.STATIONS, context)
        return layer.source() if layer is not None else None

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ...core.validate import validate, write_validation_report

        layers = [self.parameterAsRasterLayer(parameters, self.DOWNSCALED, context)]
        layers += self.parameterAsLayerList(parameters, self.OTHER_PRODUCTS, context)
        names = unique_product_names(layers)
        products = {name: raster_path(layer, name) for name, layer in zip(names, layers)}
        source = self.parameterAsSource(parameters, self.STATIONS, context)
        if source is None:
            raise QgsProcessingException(tr("The station layer could not be loaded."))
        # the destination is resolved and checked before anything is created or computed
        output = CheckedSink(self, parameters, self.OUTPUT, context, tr("validation points"))
        protected = [(tr("station layer"), self.station_source_path(parameters, context))]
        protected += [(tr("raster {!r}").format(name), path) for name, path in products.items()]
        partitions = None
        partition_source = self.parameterAsSource(parameters, self.PARTITIONS, context)
        if partition_source is not None:
            layer = self.parameterAsVectorLayer(parameters, self.PARTITIONS, context)
            partitions = partitions_from_source(
                partition_source, self.parameterAsString(parameters, self.PARTITION_FIELD, context),
                source_path=layer.source() if layer is not None else None)
            protected.append((tr("partition layer"), partitions.source_path))
        precipitation = None
        rain_layer = self.parameterAsRasterLayer(parameters, self.PRECIPITATION, context)
        if rain_layer is not None:
            precipitation = raster_path(rain_layer, tr("Precipitation series"))
            protected.append((tr("precipitation series"), precipitation))
        output.resolve(protected)
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        with core_errors():
            if report_path:
                check_outputs([(source_file(output.destination), "vector"), *report_outputs(report_path)],
                              inputs=[path for _, path in protected if path])
            fields = self.station_fields(parameters, context, source)
        observations, skipped = observations_from_source(source, *fields)
        if skipped:
            feedback.pushWarning(tr("{} station features without site id, point, date or value were "
                                    "skipped.").format(skipped))
        if not observations:
            raise QgsProcessingException(tr("The station layer has no readings with a site id, a point, "
                                            "a date and a value."))
        feedback.pushInfo(tr("{} readings, products: {}").format(len(observations), ", ".join(names)))
        with core_errors():
            # the time series are gathered only for an HTML report (nothing extra otherwise)
            html_report = bool(report_path) and report_path.lower().endswith((".html", ".htm"))
            n_series = self.parameterAsDouble(parameters, self.N_TIMESERIES_SITES, context) if html_report else 0
            result = validate(products, observations, stations_crs=crs_wkt(source.sourceCrs()),
                              partitions=partitions, precipitation=precipitation if html_report else None,
                              timeseries_sites=n_series, progress=self.progress(feedback))
        for row in result.unmatched:
            feedback.pushWarning(tr("{} site {}: {}").format(row["product"], row["site_id"], row["reason"]))

        output.create(output_fields(), QgsWkbTypes.Point, source.sourceCrs())
        try:
            fields = output_fields()
            for row in result.per_site:
                feature = QgsFeature(fields)
                feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(float(row["x"]), float(row["y"]))))
                feature.setAttributes(point_attributes(row))
                output.add(feature)
            sink_id = output.finish()
            results = {self.OUTPUT: sink_id}
            if report_path:
                started = time.perf_counter()
                with core_errors():
                    write_validation_report(result, report_path)
                feedback.pushInfo(tr("report written in {:.1f} s: {}").format(time.perf_counter() - started,
                                                                            report_path))
                results[self.OUTPUT_REPORT] = report_path
        except BaseException:
            output.discard()  # a failed run leaves no validation layer it created
            raise
        style_on_load(context, sink_id, UbrmseStyle)
        summary = result.summary_for(names[0])
        results.update({self.MEAN_R: summary["mean_r"], self.MEDIAN_R: summary["median_r"],
                        self.MEAN_UBRMSE: summary["mean_ubrmse"], self.MEAN_BIAS: summary["mean_bias"]})
        for row in result.summary:
            feedback.pushInfo(tr("{product}: {n_sites} sites compared ({n_pairs} station-days, R defined at "
                                 "{n_sites_with_r}), {n_unmatched} not compared ({n_outside} outside the "
                                 "raster, {n_no_shared_dates} without a shared date, {n_only_nodata} on "
                                 "nodata)").format(**{**row, "product": row["product"] + (
                                     f" (partition {row['partition']})" if row.get("partition") not in (
                                         None, ALL_SITES) else "")}))
            feedback.pushInfo(", ".join(
                f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
                for key, value in row.items()))
        if not math.isfinite(summary["mean_r"]):
            feedback.pushWarning(tr("R is undefined at every site of {!r}: it needs at least 3 dates shared "
                                    "by the station and the raster.").format(names[0]))
        return results


ALGORITHMS = [ValidateAlgorithm]
