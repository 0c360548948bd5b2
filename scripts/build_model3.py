"""Build processing/models/downscaling_chain.model3 (preprocess -> train -> predict -> validate,
with the period maps of the prediction and the SHAP explanation of the trained model).

The model is built with the QgsProcessingModelAlgorithm API instead of being drawn in the
Graphical Modeler, so it is reproducible and reviewable. Run from the repository root:

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/build_model3.py

Model parameters keep the algorithms' names (PREDICTORS, COARSE_SM, PARTITIONS, ...), in workflow
order (processing/models/chain_layout.py: INPUT_ORDER). Outputs carry readable names, which QGIS
uses for the layers it loads (``<child>:<name>``: ``predict:Downscaled soil moisture``,
``validate:Validation points``, ...; OUTPUT_NAMES); the period maps' mean raster and the SHAP table
stay temporary. The reports are HTML outputs (listed in the Results Viewer) when given an .html
name, each written with its ``<name>_files`` folder of PNG figures and CSV tables.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_PATH = os.path.join(ROOT, "processing", "models", "downscaling_chain.model3")
sys.path.insert(0, os.path.join(ROOT, "processing", "models"))
from chain_layout import CHAIN_EXPLAIN_SAMPLES, INPUT_ORDER, OUTPUT_NAMES  # noqa: E402 - shared with the provider

HELP = (
    "The whole downscaling chain of the paper in one run: <b>Prepare downscaling dataset</b> "
    "(predictors + coarse soil moisture onto the fine grid), <b>Train downscaling model</b> "
    "(stacking ensemble per terrain partition), <b>Predict fine soil moisture</b> and "
    "<b>Validate against stations</b> (the downscaled series and the coarse input side by side), "
    "with the period maps of the downscaled series and <b>Explain model</b> (SHAP importance of "
    "the predictors, on a sample of {samples} training cells per partition). "
    "Inputs follow the conventions of the single algorithms: one GeoTIFF per predictor named "
    "after it, time series with one band per date described YYYY-MM-DD, a coarse soil-moisture "
    "series (m3/m3), optional partition polygons with a name field, and station points with "
    "site_id, date and sm fields. Every .html report comes with a folder of its PNG figures and "
    "CSV tables beside it (report.html: report_files).").format(samples=f"{CHAIN_EXPLAIN_SAMPLES:,}")


def build():
    from qgis.core import (
        QgsProcessing,
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource as Source,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterBoolean,
        QgsProcessingParameterDefinition,
        QgsProcessingParameterFeatureSource,
        QgsProcessingParameterField,
        QgsProcessingParameterMultipleLayers,
        QgsProcessingParameterNumber,
        QgsProcessingParameterRasterLayer,
        QgsProcessingParameterString,
    )
    from qgis.PyQt.QtCore import QPointF

    # the model name is also its id (smdownscale:downscaling_chain); the provider gives it a
    # readable display name
    model = QgsProcessingModelAlgorithm("downscaling_chain", "Downscaling", "downscaling")
    model.setHelpContent({"ALG_DESC": HELP, "ALG_CREATOR": "smdownscale developers"})
    advanced = QgsProcessingParameterDefinition.FlagAdvanced

    def add_input(definition, x, y, help_text, flags=0):
        definition.setHelp(help_text)
        definition.setDescription(definition.description())
        if flags:
            definition.setFlags(definition.flags() | flags)
        component = QgsProcessingModelParameter(definition.name())
        component.setPosition(QPointF(x, y))
        model.addModelParameter(definition, component)

    # inputs in the order an analyst fills them (positions = that order on the canvas and in the
    # dialog; the provider re-applies INPUT_ORDER, QGIS 3.22 reads model inputs in name order)
    inputs = [
        (QgsProcessingParameterMultipleLayers("PREDICTORS", "Predictor rasters", QgsProcessing.TypeRaster),
         "One GeoTIFF per predictor, named after it; time series with one band per date.", 0),
        (QgsProcessingParameterString("CATEGORICAL", "Categorical predictors", defaultValue="lc", optional=True),
         "Comma-separated predictor names aggregated by majority (land cover).", 0),
        (QgsProcessingParameterString("MASK_CLASSES", "Classes to mask (e.g. lc:0 = water)", defaultValue="lc:0",
                                      optional=True),
         "name:class,class - pixels of these classes are excluded (the paper masks water, lc:0).", 0),
        (QgsProcessingParameterRasterLayer("COARSE_SM", "Coarse soil moisture series"),
         "Soil moisture (m3/m3) on the coarse grid, one band per date described YYYY-MM-DD.", 0),
        (QgsProcessingParameterFeatureSource("PARTITIONS", "Terrain partitions", [QgsProcessing.TypeVectorPolygon],
                                             optional=True),
         "Polygons of terrain regions; empty = one global model.", 0),
        (QgsProcessingParameterField("PARTITION_FIELD", "Partition name field", defaultValue="name",
                                     parentLayerParameterName="PARTITIONS", optional=True),
         "Field holding the region names.", 0),
        (QgsProcessingParameterFeatureSource("STATIONS", "Station observations", [QgsProcessing.TypeVectorPoint]),
         "Points, one per site and date (long format).", 0),
        (QgsProcessingParameterField("SITE_FIELD", "Station site id field", defaultValue="site_id",
                                     parentLayerParameterName="STATIONS", optional=True),
         "Field identifying the site of each reading (empty: site_id).", 0),
        (QgsProcessingParameterField("DATE_FIELD", "Station date field", defaultValue="date",
                                     parentLayerParameterName="STATIONS", optional=True),
         "Field with the date, YYYY-MM-DD text or a date (empty: date).", 0),
        (QgsProcessingParameterField("VALUE_FIELD", "Station soil moisture field (m3/m3)", defaultValue="sm",
                                     parentLayerParameterName="STATIONS", optional=True, type=QgsProcessingParameterField.Numeric),
         "Field with the measured soil moisture in m3/m3 (empty: sm).", 0),
        (QgsProcessingParameterNumber("FINE_RESOLUTION", "Fine resolution (target CRS units)",
                                      QgsProcessingParameterNumber.Double, defaultValue=1000.0, minValue=0.0),
         "Pixel size of the downscaled product, in units of the first predictor's CRS.", 0),
        (QgsProcessingParameterBoolean("RESIDUAL_CORRECTION", "Residual correction", defaultValue=False),
         "Shift fine pixels so they average to the coarse value.", 0),
        (QgsProcessingParameterNumber("N_ESTIMATORS", "Trees per base model", QgsProcessingParameterNumber.Integer,
                                      defaultValue=300, minValue=1), "Boosting rounds of each learner.", advanced),
        (QgsProcessingParameterNumber("FOLDS", "Cross-validation folds", QgsProcessingParameterNumber.Integer,
                                      defaultValue=5, minValue=2, maxValue=20),
         "Folds of the out-of-fold predictions.", advanced),
        (QgsProcessingParameterNumber("MIN_SAMPLES", "Minimum samples per partition",
                                      QgsProcessingParameterNumber.Integer, defaultValue=50, minValue=2),
         "A partition with fewer coarse samples is an error.", advanced),
        (QgsProcessingParameterNumber("THREADS", "Threads per learner (0 = all cores)",
                                      QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0),
         "CPU threads each learner uses.", advanced),
        (QgsProcessingParameterString("DASK_SCHEDULER", "Dask scheduler (empty = this process)", optional=True),
         "Prepare, train and predict on Dask: local:N starts N worker processes on this machine; "
         "tcp://host:8786 uses a running cluster (every worker must read the input paths).", advanced),
    ]
    assert [definition.name() for definition, _h, _f in inputs] == list(INPUT_ORDER)
    for row, (definition, help_text, flags) in enumerate(inputs):
        add_input(definition, 120, 60 + 60 * row, help_text, flags)

    def output(child_id, child_output, name, description):
        out = QgsProcessingModelOutput(name, description)
        out.setChildId(child_id)
        out.setChildOutputName(child_output)
        out.setMandatory(False)
        return out

    def child(algorithm_id, child_id, description, x, y, sources, outputs=(), depends=()):
        alg = QgsProcessingModelChildAlgorithm(algorithm_id)
        alg.setChildId(child_id)
        alg.setDescription(description)
        alg.setPosition(QPointF(x, y))
        for name, value in sources.items():
            alg.addParameterSources(name, value if isinstance(value, list) else [value])
        # every other input keeps the algorithm's default, stored explicitly in the model
        for definition in alg.algorithm().parameterDefinitions():
            if definition.isDestination() or definition.name() in sources:
                continue
            if definition.defaultValue() is not None:
                alg.addParameterSources(definition.name(),
                                        [Source.fromStaticValue(definition.defaultValue())])
        alg.setModelOutputs({out.name(): out for out in outputs})
        alg.setDependencies(list(depends))
        model.addChildAlgorithm(alg)

    param = Source.fromModelParameter
    child("smdownscale:preprocess", "preprocess", "Prepare downscaling dataset", 420, 120, {
        "PREDICTORS": param("PREDICTORS"), "COARSE_SM": param("COARSE_SM"),
        "CATEGORICAL": param("CATEGORICAL"), "MASK_CLASSES": param("MASK_CLASSES"),
        "FINE_RESOLUTION": param("FINE_RESOLUTION"),
        "MIN_VALID_FRACTION": Source.fromStaticValue(0.5), "DASK_SCHEDULER": param("DASK_SCHEDULER"),
    }, [output("preprocess", "OUTPUT", OUTPUT_NAMES["dataset"], "Prepared dataset folder")])
    child("smdownscale:train", "train", "Train downscaling model", 420, 300, {
        "DATASET": Source.fromChildOutput("preprocess", "OUTPUT"),
        "PARTITIONS": param("PARTITIONS"), "PARTITION_FIELD": param("PARTITION_FIELD"),
        "N_ESTIMATORS": param("N_ESTIMATORS"), "FOLDS": param("FOLDS"),
        "MIN_SAMPLES": param("MIN_SAMPLES"), "THREADS": param("THREADS"),
        "DASK_SCHEDULER": param("DASK_SCHEDULER"),
    }, [output("train", "OUTPUT_MODEL", OUTPUT_NAMES["model"], "Model file"),
        output("train", "OUTPUT_REPORT", OUTPUT_NAMES["report"], "Training report (Table 3)")])
    child("smdownscale:predict", "predict", "Predict fine soil moisture", 420, 480, {
        "DATASET": Source.fromChildOutput("preprocess", "OUTPUT"),
        "MODEL": Source.fromChildOutput("train", "OUTPUT_MODEL"),
        "RESIDUAL_CORRECTION": param("RESIDUAL_CORRECTION"), "DASK_SCHEDULER": param("DASK_SCHEDULER"),
    }, [output("predict", "OUTPUT", OUTPUT_NAMES["downscaled"], "Downscaled soil moisture")])
    child("smdownscale:validate", "validate", "Validate against stations", 420, 660, {
        "DOWNSCALED": Source.fromChildOutput("predict", "OUTPUT"),
        "OTHER_PRODUCTS": [param("COARSE_SM")],
        "STATIONS": param("STATIONS"),
        "SITE_FIELD": param("SITE_FIELD"),
        "DATE_FIELD": param("DATE_FIELD"),
        "VALUE_FIELD": param("VALUE_FIELD"),
    }, [output("validate", "OUTPUT", OUTPUT_NAMES["validation"], "Validation points"),
        output("validate", "OUTPUT_REPORT", OUTPUT_NAMES["validation_report"], "Validation report")])
    child("smdownscale:summarize", "summarize", "Period maps of the downscaled series", 720, 480, {
        "INPUT": Source.fromChildOutput("predict", "OUTPUT"),
    }, [output("summarize", "OUTPUT_REPORT", OUTPUT_NAMES["period_report"], "Period-map report")])
    child("smdownscale:explain", "explain", "Explain the model (SHAP importance)", 720, 300, {
        "MODEL": Source.fromChildOutput("train", "OUTPUT_MODEL"),
        "DATASET": Source.fromChildOutput("preprocess", "OUTPUT"),
        "MAX_SAMPLES": Source.fromStaticValue(CHAIN_EXPLAIN_SAMPLES),
    }, [output("explain", "OUTPUT_REPORT", OUTPUT_NAMES["explanation_report"], "Explanation report (SHAP)")])
    return model


def main():
    sys.path.insert(0, os.path.join(ROOT, ".plugin-path"))
    if not os.path.lexists(os.path.join(ROOT, ".plugin-path", "smdownscale")):
        os.makedirs(os.path.join(ROOT, ".plugin-path"), exist_ok=True)
        os.symlink(ROOT, os.path.join(ROOT, ".plugin-path", "smdownscale"))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    from smdownscale.processing.provider import SmDownscaleProvider

    provider = SmDownscaleProvider()  # keep a Python reference while the registry uses it
    QgsApplication.processingRegistry().addProvider(provider)
    model = build()
    ok, errors = model.validate()
    if not ok:
        raise SystemExit("model does not validate: " + "; ".join(errors))
    if not model.toFile(MODEL_PATH):
        raise SystemExit(f"could not write {MODEL_PATH}")
    print(f"wrote {MODEL_PATH}: parameters {[p.name() for p in model.parameterDefinitions()]}")
    app.exitQgis()


if __name__ == "__main__":
    main()
