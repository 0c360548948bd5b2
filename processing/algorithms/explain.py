"""smdownscale:explain - SHAP importance of the predictors of a trained model."""
import os
import time

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from ...core.explain import DEFAULT_MAX_SAMPLES, DEFAULT_SEED, FIELDS, parse_dependence, parse_max_samples, parse_seed
from ..layers import CheckedSink
from .base import SmdAlgorithm, core_error, core_errors, dataset_folder_error, model_file_error, tr

#: QGIS type of each column of core's explain rows (core.explain.FIELDS)
FIELD_TYPES = {"partition": QVariant.String, "predictor": QVariant.String,
               "mean_abs_shap": QVariant.Double, "n_samples": QVariant.Int}
_CONVERT = {QVariant.String: str, QVariant.Double: float, QVariant.Int: int}


def table_fields():
    fields = QgsFields()
    for name in FIELDS:
        fields.append(QgsField(name, FIELD_TYPES[name]))
    return fields


class ExplainAlgorithm(SmdAlgorithm):
    MODEL = "MODEL"
    DATASET = "DATASET"
    MAX_SAMPLES = "MAX_SAMPLES"
    SEED = "SEED"
    DEPENDENCE = "DEPENDENCE"
    OUTPUT_TABLE = "OUTPUT_TABLE"
    OUTPUT_REPORT = "OUTPUT_REPORT"

    ALG_ID = "explain"
    DISPLAY_NAME = "Explain model (SHAP importance)"
    GROUP_ID = "downscaling"
    REQUIRES = ("xgboost", "lightgbm", "catboost")
    HELP = (
        "Computes how much each predictor drives the trained model: the mean absolute SHAP "
        "value per predictor and partition (m3/m3), on a sample of the dataset's coarse cells. "
        "One-hot land-cover columns are summed back into one <i>lc</i> entry."
        "<h3>Inputs</h3><b>Model</b>: .smdmodel.zip from <i>Train downscaling model</i>. "
        "<b>Prepared dataset</b>: the dataset it was trained on (or one with the same predictors). "
        "Advanced: the number of samples explained per partition and the sampling seed."
        "<h3>Outputs</h3>A table (partition, predictor, mean_abs_shap), largest first within each "
        "partition, and an optional HTML report (Results Viewer): SHAP beeswarm per partition, "
        "importance bars over partitions and a dependence plot (advanced: the predictor pair).")

    def initAlgorithm(self, config=None):  # noqa: N802
        param = QgsProcessingParameterFile(self.MODEL, tr("Model file"), extension="zip")
        self.add_parameter(param, tr("The .smdmodel.zip written by Train downscaling model."))
        param = QgsProcessingParameterFile(
            self.DATASET, tr("Prepared dataset folder"), behavior=QgsProcessingParameterFile.Folder)
        self.add_parameter(param, tr("Folder written by Prepare downscaling dataset (holds dataset.json)."))
        param = QgsProcessingParameterNumber(
            self.MAX_SAMPLES, tr("Samples explained per partition"),
            QgsProcessingParameterNumber.Integer, defaultValue=DEFAULT_MAX_SAMPLES, minValue=1)
        self.add_parameter(param, tr("More samples = steadier importances, longer run."), advanced=True)
        param = QgsProcessingParameterNumber(
            self.SEED, tr("Random seed"), QgsProcessingParameterNumber.Integer, defaultValue=DEFAULT_SEED,
            minValue=0)
        self.add_parameter(param, tr("Seed of the sample drawn."), advanced=True)
        param = QgsProcessingParameterString(self.DEPENDENCE, tr("Dependence plot: predictor, colouring predictor"),
                                             optional=True)
        self.add_parameter(param, tr("Two predictor names, e.g. dem,ndvi (x axis, colour) for the report's "
                                     "dependence plot; empty = the most important static and dynamic "
                                     "predictors."), advanced=True)
        param = QgsProcessingParameterFeatureSink(
            self.OUTPUT_TABLE, tr("SHAP importance table"), QgsProcessing.TypeVector)
        self.add_parameter(param, tr("Table of mean |SHAP| per partition and predictor."))
        param = QgsProcessingParameterFileDestination(
            self.OUTPUT_REPORT, tr("Explanation report"), fileFilter=tr("HTML files (*.html *.htm)"),
            optional=True, createByDefault=True)
        self.add_parameter(param, tr("Web page (Results Viewer): SHAP beeswarm per partition, importance bars, "
                                     "dependence plot (cf. the paper's Figures 10 and 11)."))

    def parameter_error(self, parameters, context):
        return (dataset_folder_error(self.parameterAsFile(parameters, self.DATASET, context))
                or model_file_error(self.parameterAsFile(parameters, self.MODEL, context))
                or core_error(parse_max_samples, self.parameterAsDouble(parameters, self.MAX_SAMPLES, context))
                or core_error(parse_seed, self.parameterAsDouble(parameters, self.SEED, context))
                or core_error(parse_dependence, self.parameterAsString(parameters, self.DEPENDENCE, context)))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        self.require_packages()
        from ...core.explain import check_report_path, explain, write_explanation_report
        from ...core.outputs import check_outputs

        dataset = self.dataset_folder(parameters, self.DATASET, context)
        model_path = self.parameterAsFile(parameters, self.MODEL, context)
        # the table's destination is resolved and checked before the (long) SHAP run
        output = CheckedSink(self, parameters, self.OUTPUT_TABLE, context, tr("SHAP table"))
        output.resolve([(tr("model file"), model_path),
                        (tr("dataset manifest"), os.path.join(dataset, "dataset.json"))])
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context) or None
        with core_errors():
            dependence = parse_dependence(self.parameterAsString(parameters, self.DEPENDENCE, context))
            if report_path:  # refused before the SHAP run, not after
                check_report_path(report_path)
                check_outputs([(report_path, "report")], inputs=[model_path, dataset])
            # the samples' SHAP values are kept only for a report
            samples = {} if report_path else None
            # as numbers: core refuses 2.5 (and > 2**31) where parameterAsInt would round or wrap
            rows = explain(model_path, dataset,
                           max_samples=self.parameterAsDouble(parameters, self.MAX_SAMPLES, context),
                           seed=self.parameterAsDouble(parameters, self.SEED, context),
                           progress=self.progress(feedback), samples_out=samples)
        fields = table_fields()
        output.create(fields, QgsWkbTypes.NoGeometry, QgsCoordinateReferenceSystem())
        try:
            for row in rows:
                feature = QgsFeature(fields)
                feature.setAttributes([_CONVERT[FIELD_TYPES[name]](row[name]) for name in FIELDS])
                output.add(feature)
                feedback.pushInfo(f"{row['partition']} {row['predictor']}: {row['mean_abs_shap']:.5f}")
            sink_id = output.finish()
            results = {self.OUTPUT_TABLE: sink_id}
            if report_path:
                from ...core.modelfile import read_manifest

                started = time.perf_counter()
                with core_errors():
                    write_explanation_report(rows, samples, report_path, dependence=dependence,
                                             predictors=read_manifest(model_path).get("predictors"),
                                             model_path=model_path)
                feedback.pushInfo(tr("report written in {:.1f} s: {}").format(time.perf_counter() - started,
                                                                            report_path))
                results[self.OUTPUT_REPORT] = report_path
        except BaseException:
            output.discard()
            raise
        return results


ALGORITHMS = [ExplainAlgorithm]
