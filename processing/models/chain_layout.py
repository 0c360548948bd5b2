"""The layout of the shipped downscaling chain (downscaling_chain.model3), shared by
scripts/build_model3.py (which writes the model) and the plugin (which shows it): the inputs in
the order an analyst fills them and the readable names of the outputs. Plain Python: no QGIS."""

#: model inputs in workflow order: predictors, categorical, mask, coarse soil moisture, partitions
#: + field, stations + their fields, options (QGIS 3.22 reads model inputs back in name order;
#: :func:`order_model_inputs` restores this one)
INPUT_ORDER = ("PREDICTORS", "CATEGORICAL", "MASK_CLASSES", "COARSE_SM", "PARTITIONS", "PARTITION_FIELD",
               "STATIONS", "SITE_FIELD", "DATE_FIELD", "VALUE_FIELD", "FINE_RESOLUTION", "RESIDUAL_CORRECTION",
               "N_ESTIMATORS", "FOLDS", "MIN_SAMPLES", "THREADS", "DASK_SCHEDULER")

#: role -> model output name (QGIS names loaded layers after it; parameter ``<child>:<name>``)
OUTPUT_NAMES = {
    "dataset": "Prepared dataset",
    "model": "Model file",
    "report": "Training report",
    "downscaled": "Downscaled soil moisture",
    "validation": "Validation points",
    "validation_report": "Validation report",
    "period_report": "Period-map report",
    "explanation_report": "Explanation report",
}

#: role -> file name used when an output folder is chosen (the stem names the product in reports)
OUTPUT_FILES = {
    "dataset": "dataset",
    "model": "model.smdmodel.zip",
    "report": "training_report.html",
    "downscaled": "downscaled_soil_moisture.tif",
    "validation": "validation_points.gpkg",
    "validation_report": "validation_report.html",
    "period_report": "period_report.html",
    "explanation_report": "explanation_report.html",
}


def order_model_inputs(model, order=INPUT_ORDER):
    """Re-add the model's inputs in ``order`` (others keep their place after them); returns the
    names in the new order. Call on every instance (QGIS rebuilds a model in name order whenever
    it copies it: ``createInstance`` for a dialog, ``fromFile``)."""
    from qgis.core import QgsProcessingModelParameter

    present = [name for name in order if model.parameterDefinition(name) is not None]
    saved = [(model.parameterDefinition(name).clone(), QgsProcessingModelParameter(model.parameterComponent(name)))
             for name in present]
    for name in present:
        model.removeModelParameter(name)
    for definition, component in saved:
        model.addModelParameter(definition, component)
    model.updateDestinationParameters()
    return [definition.name() for definition in model.parameterDefinitions()]


#: QgsSettings key of the output folder the chain's dialog and the workflow dialog default to
#: (the workflow dialog writes it; the same key as ui.workflow.OUTPUT_FOLDER_SETTING)
OUTPUT_FOLDER_SETTING = "smdownscale/workflow_output_folder"
#: model output role -> child algorithm of the chain
OUTPUT_CHILDREN = {"dataset": "preprocess", "model": "train", "report": "train", "downscaled": "predict",
                   "validation": "validate", "validation_report": "validate", "period_report": "summarize",
                   "explanation_report": "explain"}
#: SHAP samples per partition of the chain's explain step (the algorithm's default: 2000)
CHAIN_EXPLAIN_SAMPLES = 500


def output_parameter_names():
    """role -> the chain's destination parameter name (``predict:Downscaled soil moisture``)."""
    return {role: f"{OUTPUT_CHILDREN[role]}:{name}" for role, name in OUTPUT_NAMES.items()}


def apply_output_defaults(model, folder=None):
    """Default every chain output to a file in ``folder`` (default: the remembered output folder
    of the QgsSettings), so nothing goes to a temporary location unless asked; returns
    ``{parameter name: path}`` of the defaults set (empty when no folder is known)."""
    import os

    if folder is None:
        from qgis.core import QgsSettings

        folder = QgsSettings().value(OUTPUT_FOLDER_SETTING, "") or ""
    if not folder or not os.path.isdir(folder):
        return {}
    applied = {}
    for role, name in output_parameter_names().items():
        definition = model.parameterDefinition(name)
        if definition is not None:
            path = os.path.join(folder, OUTPUT_FILES[role])
            definition.setDefaultValue(path)
            applied[name] = path
    return applied
