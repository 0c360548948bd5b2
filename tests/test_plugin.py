"""The plugin shell: classFactory/initGui/unload, metadata, provider, algorithm definitions."""
import configparser
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: issue 4: id -> ordered (parameter name, QGIS parameter type) of the fixed interface
EXPECTED_PARAMETERS = {
    "preprocess": [("PREDICTORS", "multilayer"), ("CATEGORICAL", "string"), ("MASK_CLASSES", "string"),
                   ("COARSE_SM", "raster"), ("FINE_RESOLUTION", "number"), ("TARGET_CRS", "crs"),
                   ("MIN_VALID_FRACTION", "number"), ("DASK_SCHEDULER", "string"), ("OUTPUT", "folderDestination")],
    "train": [("DATASET", "file"), ("PARTITIONS", "source"), ("PARTITION_FIELD", "field"),
              ("BASE_MODELS", "enum"), ("FOLDS", "number"), ("TEST_FRACTION", "number"),
              ("CV_STRATEGY", "enum"), ("SEED", "number"), ("N_ESTIMATORS", "number"),
              ("LEARNING_RATE", "number"), ("MAX_DEPTH", "number"), ("SPATIAL_BLOCK_CELLS", "number"),
              ("MIN_SAMPLES", "number"), ("THREADS", "number"), ("EARLY_STOPPING_ROUNDS", "number"),
              ("TRAIN_GLOBAL", "boolean"),
              ("FALLBACK_TO_GLOBAL", "boolean"), ("DASK_SCHEDULER", "string"), ("OUTPUT_MODEL", "fileDestination"),
              ("OUTPUT_REPORT", "fileDestination")],
    "predict": [("DATASET", "file"), ("MODEL", "file"), ("DATES", "string"),
                ("RESIDUAL_CORRECTION", "boolean"), ("USE_GLOBAL", "boolean"), ("GLOBAL_ONLY", "boolean"),
                ("BLOCK_SIZE", "number"), ("REQUIRE_SIGNED", "boolean"), ("TRUSTED_KEYS", "file"),
                ("DASK_SCHEDULER", "string"), ("OUTPUT", "rasterDestination")],
    "validate": [("DOWNSCALED", "raster"), ("OTHER_PRODUCTS", "multilayer"), ("STATIONS", "source"),
                 ("SITE_FIELD", "field"), ("DATE_FIELD", "field"), ("VALUE_FIELD", "field"),
                 ("PARTITIONS", "source"), ("PARTITION_FIELD", "field"), ("PRECIPITATION", "raster"),
                 ("N_TIMESERIES_SITES", "number"), ("OUTPUT", "sink"), ("OUTPUT_REPORT", "fileDestination")],
    "explain": [("MODEL", "file"), ("DATASET", "file"), ("MAX_SAMPLES", "number"), ("SEED", "number"),
                ("DEPENDENCE", "string"), ("OUTPUT_TABLE", "sink"), ("OUTPUT_REPORT", "fileDestination")],
    "summarize": [("INPUT", "raster"), ("START_DATE", "string"), ("END_DATE", "string"), ("BLOCK_SIZE", "number"),
                  ("OUTPUT_MEAN", "rasterDestination"), ("OUTPUT_STD", "rasterDestination"),
                  ("OUTPUT_COUNT", "rasterDestination"), ("OUTPUT_REPORT", "fileDestination")],
}
ADVANCED = {"train": {"N_ESTIMATORS", "LEARNING_RATE", "MAX_DEPTH", "SPATIAL_BLOCK_CELLS", "MIN_SAMPLES",
                      "THREADS", "EARLY_STOPPING_ROUNDS", "TRAIN_GLOBAL", "FALLBACK_TO_GLOBAL", "DASK_SCHEDULER"},
            "predict": {"USE_GLOBAL", "GLOBAL_ONLY", "BLOCK_SIZE", "REQUIRE_SIGNED", "TRUSTED_KEYS", "DASK_SCHEDULER"},
            "preprocess": {"MIN_VALID_FRACTION", "DASK_SCHEDULER"}, "validate": {"PRECIPITATION", "N_TIMESERIES_SITES"},
            "explain": {"MAX_SAMPLES", "SEED", "DEPENDENCE"}, "summarize": {"BLOCK_SIZE"}}
DEFAULTS = {("preprocess", "CATEGORICAL"): "lc", ("preprocess", "FINE_RESOLUTION"): 1000.0,
            ("preprocess", "MIN_VALID_FRACTION"): 0.5, ("train", "FOLDS"): 5, ("train", "TEST_FRACTION"): 0.3,
            ("train", "BASE_MODELS"): [0, 1, 2], ("train", "SEED"): 42,
            ("predict", "RESIDUAL_CORRECTION"): False, ("validate", "SITE_FIELD"): "site_id",
            ("validate", "DATE_FIELD"): "date", ("validate", "VALUE_FIELD"): "sm"}
OUTPUT_NUMBERS = {"validate": {"MEAN_R", "MEDIAN_R", "MEAN_UBRMSE", "MEAN_BIAS"},
                  "train": {"R_TEST", "RMSE_TEST"}, "predict": {"N_DATES", "N_PIXELS"},
                  "summarize": {"N_DATES", "MEAN_OF_MEAN"}}


_KEEP = []


def _remove_registered_provider():
    from qgis.core import QgsApplication

    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("smdownscale")
    if existing is not None:
        registry.removeProvider(existing)


@pytest.fixture()
def provider(qgis_app):
    from qgis.core import QgsApplication

    from smdownscale.processing.provider import SmDownscaleProvider

    registry = QgsApplication.processingRegistry()
    if registry.providerById("smdownscale") is None:
        _KEEP.append(SmDownscaleProvider())  # the registry keeps only the C++ side alive
        registry.addProvider(_KEEP[-1])
    return registry.providerById("smdownscale")


def test_metadata_is_complete_for_the_plugin_repository():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(os.path.join(ROOT, "metadata.txt"), encoding="utf-8")
    general = parser["general"]
    assert general["name"] == "Soil Moisture Downscaling (smdownscale)"
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["version"] == "0.1.0"
    assert general["author"] == "smdownscale developers"
    assert general["repository"] == "https://github.com/smdownscale/smdownscale"
    assert general["tracker"] == "https://github.com/smdownscale/smdownscale/issues"
    assert general["homepage"] == "https://github.com/smdownscale/smdownscale"
    assert general["hasProcessingProvider"] == "yes"
    assert general["experimental"] == "True"
    assert general["category"] == "Raster"
    assert "@" in general["email"] and len(general["description"]) > 30 and len(general["about"]) > 100
    assert "SMAP" in general["tags"]
    assert os.path.isfile(os.path.join(ROOT, general["icon"]))
    for icon in ("group_downscaling.svg", "group_dataprep.svg", "group_validation.svg"):
        with open(os.path.join(ROOT, "icons", icon), encoding="utf-8") as handle:
            assert handle.read().lstrip().startswith("<svg")


def test_classfactory_initgui_and_unload(qgis_app, qgis_iface):
    from qgis.core import QgsApplication
    from qgis.PyQt.QtWidgets import QMenu, QToolBar

    import smdownscale

    _remove_registered_provider()
    # pytest-qgis' iface lacks the Raster-menu calls: give it QGIS's behaviour with real widgets
    raster_menu = QMenu("&Raster")
    toolbar = QToolBar("Plugins")
    submenus = {}

    def add_to_raster_menu(name, action):
        submenus.setdefault(name, raster_menu.addMenu(name)).addAction(action)

    def remove_from_raster_menu(name, action):
        submenus[name].removeAction(action)

    qgis_iface.addPluginToRasterMenu = add_to_raster_menu
    qgis_iface.removePluginRasterMenu = remove_from_raster_menu
    qgis_iface.addToolBarIcon = toolbar.addAction
    qgis_iface.removeToolBarIcon = toolbar.removeAction

    plugin = smdownscale.classFactory(qgis_iface)
    assert type(plugin).__name__ == "SmDownscalePlugin"
    registry = QgsApplication.processingRegistry()
    assert registry.providerById("smdownscale") is None  # nothing registered before initGui
    plugin.initGui()
    provider = registry.providerById("smdownscale")
    assert provider is not None and provider.name() == "Soil moisture downscaling"
    menu = submenus["Soil moisture downscaling"]
    algorithm_actions = [a for a in menu.actions() if a.toolTip().startswith("smdownscale:")]
    ids = [action.toolTip() for action in algorithm_actions]
    assert sorted(ids) == sorted(alg.id() for alg in provider.algorithms())
    # workflow order, grouped by step (separators), plugin dialogs where they belong
    order = [i for i in ("smdownscale:importsmapl4", "smdownscale:preprocess", "smdownscale:train",
                         "smdownscale:predict", "smdownscale:validate", "smdownscale:explain",
                         "smdownscale:generatekeys") if i in ids]
    assert [i for i in ids if i in order] == order
    assert ids.index("smdownscale:downscaling_chain") < ids.index("smdownscale:preprocess")
    separators = [a.text() for a in menu.actions() if a.isSeparator()]
    assert separators == ["1. Prepare inputs", "2. Downscale", "3. Validate and explain", "4. Share models",
                          "5. Tools"]
    plugin_entries = {a.objectName(): a.text() for a in menu.actions()
                      if not a.isSeparator() and not a.toolTip().startswith("smdownscale:")}
    assert plugin_entries["smdownscale_model_report"] == "Model report..."
    assert plugin_entries["smdownscale_dependencies"] == "Check dependencies..."
    assert plugin_entries["smdownscale_date_dock"] == "Browse series dates..."
    assert plugin_entries["smdownscale_workflow"] == "Downscaling workflow..."
    assert plugin_entries["smdownscale_load_demo"] == "Load demo data..."
    assert menu.actions()[0].objectName() == "smdownscale_workflow"
    assert toolbar.actions()[0].text() == "Soil moisture downscaling chain"
    assert len(toolbar.actions()) == (2 if plugin._workflow_available() else 1)

    plugin.unload()
    assert registry.providerById("smdownscale") is None
    assert menu.actions() == [] and toolbar.actions() == []
    assert plugin.actions == [] and plugin.provider is None


def test_provider_identity_and_every_registered_module_loads(provider):
    from smdownscale.processing.algorithms import ALGORITHM_MODULES, algorithm_classes

    assert provider.id() == "smdownscale"
    assert provider.versionInfo() == "0.1.0"
    assert not provider.icon().isNull()
    classes, errors = algorithm_classes()
    assert errors == {}, f"algorithm modules that do not import: {errors}"
    assert len(classes) >= len(ALGORITHM_MODULES)
    ids = {alg.id() for alg in provider.algorithms()}
    assert {f"smdownscale:{cls().name()}" for cls in classes} | {"smdownscale:downscaling_chain"} == ids
    groups = {alg.groupId(): alg.group() for alg in provider.algorithms()}
    assert groups == {"downscaling": "Downscaling", "validation": "Validation",
                      "dataprep": "Data preparation"}


@pytest.mark.parametrize("alg_id", sorted(EXPECTED_PARAMETERS))
def test_parameter_names_types_help_and_flags(provider, alg_id):
    from qgis.core import QgsProcessingParameterDefinition

    algorithm = provider.algorithm(alg_id)
    definitions = algorithm.parameterDefinitions()
    assert [(d.name(), d.type()) for d in definitions] == EXPECTED_PARAMETERS[alg_id]
    assert all(d.help() for d in definitions), "every parameter has help text"
    advanced = {d.name() for d in definitions if d.flags() & QgsProcessingParameterDefinition.FlagAdvanced}
    assert advanced == ADVANCED[alg_id]
    for (alg, name), value in DEFAULTS.items():
        if alg == alg_id:
            assert algorithm.parameterDefinition(name).defaultValue() == value, name
    outputs = {o.name() for o in algorithm.outputDefinitions() if o.type() == "outputNumber"}
    assert outputs == OUTPUT_NUMBERS.get(alg_id, set())
    assert len(algorithm.shortHelpString()) > 200
    assert algorithm.createInstance().name() == alg_id


def test_parameter_enums_and_destinations(provider):
    train = provider.algorithm("train")
    assert train.parameterDefinition("BASE_MODELS").options() == ["XGBoost", "LightGBM", "CatBoost"]
    assert train.parameterDefinition("BASE_MODELS").allowMultiple()
    assert train.parameterDefinition("CV_STRATEGY").options() == ["Random pixels", "Spatial blocks",
                                                                 "Leave dates out"]
    assert "*.smdmodel.zip" in train.parameterDefinition("OUTPUT_MODEL").fileFilter()
    assert provider.algorithm("validate").parameterDefinition("OTHER_PRODUCTS").flags() & 8  # optional
    assert provider.algorithm("train").parameterDefinition("PARTITIONS").flags() & 8


def test_shipped_model_chains_the_four_steps(provider):
    chain = provider.algorithm("downscaling_chain")
    assert chain is not None
    assert chain.displayName() == "Downscaling chain (prepare, train, predict, validate)"
    children = chain.childAlgorithms()
    assert {c.algorithmId() for c in children.values()} == {
        "smdownscale:preprocess", "smdownscale:train", "smdownscale:predict", "smdownscale:validate",
        "smdownscale:summarize", "smdownscale:explain"}
    assert chain.dependentChildAlgorithms("preprocess") == {"train", "predict", "validate", "summarize", "explain"}
    assert chain.dependentChildAlgorithms("train") == {"predict", "validate", "summarize", "explain"}
    # explain: the trained model on the prepared dataset, a small seeded sample, its report exposed
    from smdownscale.processing.models.chain_layout import CHAIN_EXPLAIN_SAMPLES

    explain = children["explain"]
    assert [(s.outputChildId(), s.outputName()) for s in explain.parameterSources()["MODEL"]] == [
        ("train", "OUTPUT_MODEL")]
    assert [(s.outputChildId(), s.outputName()) for s in explain.parameterSources()["DATASET"]] == [
        ("preprocess", "OUTPUT")]
    assert [s.staticValue() for s in explain.parameterSources()["MAX_SAMPLES"]] == [CHAIN_EXPLAIN_SAMPLES]
    assert {o.childOutputName() for o in explain.modelOutputs().values()} == {"OUTPUT_REPORT"}
    names = [p.name() for p in chain.parameterDefinitions()]
    inputs = [p.name() for p in chain.parameterDefinitions() if not p.isDestination()]
    # workflow order: predictors, categorical, mask, coarse SM, partitions + field, stations + fields, options
    assert inputs == ["PREDICTORS", "CATEGORICAL", "MASK_CLASSES", "COARSE_SM", "PARTITIONS", "PARTITION_FIELD",
                      "STATIONS", "SITE_FIELD", "DATE_FIELD", "VALUE_FIELD", "FINE_RESOLUTION",
                      "RESIDUAL_CORRECTION", "N_ESTIMATORS", "FOLDS", "MIN_SAMPLES", "THREADS", "DASK_SCHEDULER"]
    # the one execution option reaches the three heavy steps
    for step in ("preprocess", "train", "predict"):
        assert [s.parameterName() for s in children[step].parameterSources()["DASK_SCHEDULER"]] == ["DASK_SCHEDULER"]
    from smdownscale.processing.models.chain_layout import output_parameter_names

    assert set(output_parameter_names().values()) == {
        "predict:Downscaled soil moisture", "train:Model file", "train:Training report", "validate:Validation points",
        "validate:Validation report", "preprocess:Prepared dataset", "summarize:Period-map report",
        "explain:Explanation report"} == {p.name() for p in chain.parameterDefinitions() if p.isDestination()}
    assert set(output_parameter_names().values()) <= set(names)
    assert chain.parameterDefinition("MASK_CLASSES").defaultValue() == "lc:0"
    assert [chain.parameterDefinition(f).defaultValue() for f in ("SITE_FIELD", "DATE_FIELD", "VALUE_FIELD")] == \
        ["site_id", "date", "sm"]
    assert chain.parameterDefinition("SITE_FIELD").parentLayerParameterName() == "STATIONS"
    ok, errors = chain.validate()
    assert ok, errors
    # the dialog runs a copy (createInstance): same class, display name and order
    from qgis.core import QgsApplication

    copy = QgsApplication.processingRegistry().createAlgorithmById("smdownscale:downscaling_chain")
    assert copy.displayName() == chain.displayName()
    assert [p.name() for p in copy.parameterDefinitions() if not p.isDestination()] == inputs
    assert copy.helpUrl().endswith("README.md#downscaling")


def test_loading_plugin_and_provider_does_not_import_learners():
    code = (
        "import sys\n"
        f"sys.path.insert(0, {os.path.join(ROOT, '.plugin-path')!r})\n"
        "from qgis.core import QgsApplication\n"
        "app = QgsApplication([], False); app.initQgis()\n"
        "import smdownscale\n"
        "from smdownscale.plugin import SmDownscalePlugin\n"
        "from smdownscale.processing.provider import SmDownscaleProvider\n"
        "provider = SmDownscaleProvider()\n"
        "QgsApplication.processingRegistry().addProvider(provider)\n"
        "assert len(provider.algorithms()) >= 6, provider.algorithms()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('xgboost', 'lightgbm', 'catboost', 'shap', 'sklearn'))\n"
        "print('HEAVY=' + ','.join(heavy))\n")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "HEAVY=\n" in done.stdout


def test_missing_package_message_names_packages_and_pip_command(qgis_app):
    from qgis.core import QgsProcessingException

    from smdownscale.processing.algorithms.base import pip_command, qgis_python_executable, require_packages

    with pytest.raises(QgsProcessingException) as caught:
        require_packages("xgboost", "smd_package_that_is_not_installed")
    message = str(caught.value)
    assert "smd_package_that_is_not_installed" in message and "xgboost," not in message
    assert f'"{qgis_python_executable()}" -m pip install smd_package_that_is_not_installed' in message
    assert pip_command(["sklearn", "catboost"]).endswith("-m pip install scikit-learn==1.5.2 catboost==1.2.7")
    # into the plugin's dependency folder: PEP 668 systems refuse plain and --user installs
    from smdownscale.resources import deps_folder

    assert pip_command(["sklearn"]).startswith(f"PIP_TARGET={deps_folder()} ")
    assert os.path.basename(qgis_python_executable()).startswith("python")
    require_packages("xgboost", "lightgbm", "catboost", "sklearn", "shap")  # installed: no error


def test_feedback_progress_and_error_conversion(qgis_app):
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    from smdownscale.core.common import Cancelled, SmdError
    from smdownscale.processing.algorithms.base import core_errors, feedback_progress

    feedback = QgsProcessingFeedback()
    logged = []
    feedback.progressChanged.connect(lambda value: logged.append(round(value, 6)))
    progress = feedback_progress(feedback)
    progress.update(0.25, "first")
    progress.sub(0.5, 1.0).update(0.5, "second")
    assert logged == [25.0, 75.0]
    assert feedback.progress() == 75.0
    feedback.cancel()
    with pytest.raises(Cancelled):
        progress.check()

    def failing():
        raise SmdError("Band 3 has no date; describe it as YYYY-MM-DD.")

    with pytest.raises(QgsProcessingException, match="Band 3 has no date; describe it as YYYY-MM-DD."):
        with core_errors():
            failing()
    with core_errors():
        value = (lambda a, b=0: a + b)(2, b=3)
    assert value == 5
