"""Build processing/models/downscaling_chain.model3 (preprocess -> train -> predict -> validate).

The model is built with the QgsProcessingModelAlgorithm API instead of being drawn in the
Graphical Modeler, so it is reproducible and reviewable. Run from the repository root:

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/build_model3.py

Model parameters keep the algorithms' names (PREDICTORS, COARSE_SM, PARTITIONS, ...). Outputs are
named ``<child>:<OUTPUT>`` by QGIS: ``preprocess:DATASET``, ``train:MODEL``, ``train:REPORT``,
``predict:DOWNSCALED``, ``validate:VALIDATION``, ``validate:VALIDATION_REPORT``,
``summarize:PERIOD_REPORT`` (the period maps' mean raster stays a temporary file). The reports are HTML outputs (listed in
the Results Viewer) when given an .html name.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_PATH = os.path.join(ROOT, "processing", "models", "downscaling_chain.model3")

HELP = (
    "The whole downscaling chain of the paper in one run: <b>Prepare downscaling dataset</b> "
    "(predictors + coarse soil moisture onto the fine grid), <b>Train downscaling model</b> "
    "(stacking ensemble per terrain partition), <b>Predict fine soil moisture</b> and "
    "<b>Validate against stations</b> (the downscaled series and the coarse input side by side). "
    "Inputs follow the conventions of the single algorithms: one GeoTIFF per predictor named "
    "after it, time series with one band per date described YYYY-MM-DD, a coarse soil-moisture "
    "series (m3/m3), optional partition polygons with a name field, and station points with "
    "site_id, date and sm fields.")


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

    add_input(QgsProcessingParameterMultipleLayers("PREDICTORS", "Predictor rasters",
                                                   QgsProcessing.TypeRaster), 120, 60,
              "One GeoTIFF per predictor, named after it; time series with one band per date.")
    add_input(QgsProcessingParameterRasterLayer("COARSE_SM", "Coarse soil moisture series"), 120, 120,
              "Soil moisture (m3/m3) on the coarse grid, one band per date described YYYY-MM-DD.")
    add_input(QgsProcessingParameterString("CATEGORICAL", "Categorical predictors",
                                           defaultValue="lc", optional=True), 120, 180,
              "Comma-separated predictor names aggregated by majority.")
    add_input(QgsProcessingParameterString("MASK_CLASSES", "Classes to mask (e.g. lc:0)",
                                           optional=True), 120, 240,
              "name:class,class - pixels of these classes are excluded.")
    add_input(QgsProcessingParameterFeatureSource("PARTITIONS", "Terrain partitions",
                                                  [QgsProcessing.TypeVectorPolygon], optional=True),
              120, 300, "Polygons of terrain regions; empty = one global model.")
    add_input(QgsProcessingParameterField("PARTITION_FIELD", "Partition name field",
                                          parentLayerParameterName="PARTITIONS", optional=True),
              120, 360, "Field holding the region names.")
    add_input(QgsProcessingParameterFeatureSource("STATIONS", "Station observations",
                                                  [QgsProcessing.TypeVectorPoint]), 120, 420,
              "Points, one per site and date, with site_id, date and sm fields.")
    add_input(QgsProcessingParameterBoolean("RESIDUAL_CORRECTION", "Residual correction",
                                            defaultValue=False), 120, 480,
              "Shift fine pixels so they average to the coarse value.")
    add_input(QgsProcessingParameterNumber("N_ESTIMATORS", "Trees per base model",
                                           QgsProcessingParameterNumber.Integer, defaultValue=300,
                                           minValue=1), 120, 540, "Boosting rounds of each learner.",
              advanced)
    add_input(QgsProcessingParameterNumber("FOLDS", "Cross-validation folds",
                                           QgsProcessingParameterNumber.Integer, defaultValue=5,
                                           minValue=2, maxValue=20), 120, 600,
              "Folds of the out-of-fold predictions.", advanced)
    add_input(QgsProcessingParameterNumber("MIN_SAMPLES", "Minimum samples per partition",
                                           QgsProcessingParameterNumber.Integer, defaultValue=50,
                                           minValue=2), 120, 660,
              "A partition with fewer coarse samples is an error.", advanced)
    add_input(QgsProcessingParameterNumber("THREADS", "Threads per learner (0 = all cores)",
                                           QgsProcessingParameterNumber.Integer, defaultValue=0,
                                           minValue=0), 120, 720, "CPU threads each learner uses.",
              advanced)

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
        "FINE_RESOLUTION": Source.fromStaticValue(1000.0),
        "MIN_VALID_FRACTION": Source.fromStaticValue(0.5),
    }, [output("preprocess", "OUTPUT", "DATASET", "Prepared dataset folder")])
    child("smdownscale:train", "train", "Train downscaling model", 420, 300, {
        "DATASET": Source.fromChildOutput("preprocess", "OUTPUT"),
        "PARTITIONS": param("PARTITIONS"), "PARTITION_FIELD": param("PARTITION_FIELD"),
        "N_ESTIMATORS": param("N_ESTIMATORS"), "FOLDS": param("FOLDS"),
        "MIN_SAMPLES": param("MIN_SAMPLES"), "THREADS": param("THREADS"),
    }, [output("train", "OUTPUT_MODEL", "MODEL", "Model file"),
        output("train", "OUTPUT_REPORT", "REPORT", "Training report")])
    child("smdownscale:predict", "predict", "Predict fine soil moisture", 420, 480, {
        "DATASET": Source.fromChildOutput("preprocess", "OUTPUT"),
        "MODEL": Source.fromChildOutput("train", "OUTPUT_MODEL"),
        "RESIDUAL_CORRECTION": param("RESIDUAL_CORRECTION"),
    }, [output("predict", "OUTPUT", "DOWNSCALED", "Fine soil moisture")])
    child("smdownscale:validate", "validate", "Validate against stations", 420, 660, {
        "DOWNSCALED": Source.fromChildOutput("predict", "OUTPUT"),
        "OTHER_PRODUCTS": [param("COARSE_SM")],
        "STATIONS": param("STATIONS"),
        "SITE_FIELD": Source.fromStaticValue("site_id"),
        "DATE_FIELD": Source.fromStaticValue("date"),
        "VALUE_FIELD": Source.fromStaticValue("sm"),
    }, [output("validate", "OUTPUT", "VALIDATION", "Validation points"),
        output("validate", "OUTPUT_REPORT", "VALIDATION_REPORT", "Validation report")])
    child("smdownscale:summarize", "summarize", "Period maps of the downscaled series", 720, 480, {
        "INPUT": Source.fromChildOutput("predict", "OUTPUT"),
    }, [output("summarize", "OUTPUT_REPORT", "PERIOD_REPORT", "Period-map report")])
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
