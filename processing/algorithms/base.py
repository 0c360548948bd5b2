"""Base class and helpers shared by every smdownscale Processing algorithm.

Algorithms are thin shells: they read parameters, convert QGIS objects into the plain inputs
of a ``core`` function, call it with a :class:`~smdownscale.core.common.Progress` bound to the
Processing feedback, and turn :class:`~smdownscale.core.common.SmdError` into
``QgsProcessingException``.
"""
import contextlib
import functools
import importlib.util
import os
import shlex
import traceback

from qgis.core import (Qgis, QgsApplication, QgsMessageLog, QgsProcessingAlgorithm, QgsProcessingException,
                       QgsProcessingParameterDefinition, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterFolderDestination)
from qgis.PyQt.QtGui import QIcon

from ...core.common import Progress, SmdError, python_interpreter
from ...resources import ICONS_DIR, deps_folder, help_url, pip_requirement, tr, warn_if_temporary  # noqa: F401 - tr is re-exported to the shells

#: group id -> (untranslated display name, icon file)
GROUPS = {
    "downscaling": ("Downscaling", "group_downscaling.svg"),
    "dataprep": ("Data preparation", "group_dataprep.svg"),
    "validation": ("Validation", "group_validation.svg"),
}
#: appended to the help of every algorithm with an OUTPUT_REPORT (core.outputs.report_files_folder)
REPORT_FILES_HELP = ("An .html report is written with a folder of the same name plus <i>_files</i> beside it "
                     "(report.html: report_files), holding each figure as PNG and each table as CSV at full "
                     "precision, for reuse; a later run replaces both, and a folder of that name the plugin "
                     "did not write is never replaced.")
#: import names of the learners the algorithms may need (pins: requirements.txt)
LEARNER_PACKAGES = ("xgboost", "lightgbm", "catboost", "sklearn", "shap")


def qgis_python_executable():
    """The Python interpreter of the running QGIS (for the pip hint; never a shim from PATH)."""
    return python_interpreter() or "python3"


def missing_packages(names):
    """Import names in ``names`` that are not installed (checked without importing them)."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def pip_command(names):
    """The command installing the packages ``names`` for the Python QGIS runs.

    Into the plugin's dependency folder (``PIP_TARGET``, i.e. ``pip install --target``), which
    the plugin puts on sys.path at load: a plain install into Debian's or Ubuntu's system Python
    is refused (PEP 668, "externally-managed-environment"), and so is ``--user``.
    """
    requirements = " ".join(pip_requirement(name) for name in names)
    folder = deps_folder()
    target = f'set "PIP_TARGET={folder}" && ' if os.name == "nt" else f"PIP_TARGET={shlex.quote(folder)} "
    return f'{target}"{qgis_python_executable()}" -m pip install {requirements}'


def require_packages(*names):
    """Raise ``QgsProcessingException`` naming the missing packages and the pip command."""
    missing = missing_packages(names)
    if missing:
        raise QgsProcessingException(
            tr("This algorithm needs the Python package(s) {} which are not installed for the "
               "Python QGIS runs. Install them with Raster > Soil moisture downscaling > Check "
               "dependencies..., or with:\n  {}\nthen restart QGIS.").format(
                ", ".join(missing), pip_command(missing)))


def dataset_folder_error(folder):
    """A message when ``folder`` is not a prepared dataset, else None."""
    if not folder:
        return tr("Choose the prepared dataset folder (output of Prepare downscaling dataset).")
    if not os.path.isfile(os.path.join(folder, "dataset.json")):
        return tr("{} is not a prepared dataset folder (no dataset.json). Run Prepare downscaling "
                  "dataset first and choose its output folder.").format(folder)
    return None


def model_file_error(path):
    """A message when the model file ``path`` does not exist, else None."""
    if not os.path.isfile(path):
        return tr("Model file {!r} does not exist; train a model first.").format(path)
    return None


def core_error(function, *args, **kwargs):
    """Call a core parser/validator; the ``SmdError`` message it raises, or None when it passes."""
    try:
        function(*args, **kwargs)
    except SmdError as err:
        return str(err)
    return None


def feedback_progress(feedback):
    """A core :class:`Progress` reporting into a ``QgsProcessingFeedback``.

    Fractions become ``setProgress`` percentages, messages (when they change) become
    ``pushInfo`` lines, and ``isCanceled`` is the cancel check.
    """
    if feedback is None:
        return Progress()
    last = {"message": None}

    def callback(fraction, message):
        feedback.setProgress(100.0 * fraction)
        if message and message != last["message"]:
            last["message"] = message
            feedback.pushInfo(message)

    return Progress(callback, feedback.isCanceled, _log=feedback.pushInfo)


def core_error_message(err):
    """The user's message for a core error: SmdError text, or the pip command for a learner."""
    if isinstance(err, ImportError):
        name = (getattr(err, "name", None) or "").split(".")[0]
        if name in LEARNER_PACKAGES:
            return tr("The Python package {} could not be imported ({}). Install it with:\n  {}").format(
                name, err, pip_command([name]))
        return tr("A Python package could not be imported ({}).").format(err)
    return str(err)


@contextlib.contextmanager
def core_errors():
    """Inside the block, core errors become ``QgsProcessingException`` with their message.

    ``with core_errors(): predict(...)`` keeps the call to core visible to readers and tools.
    SmdError (bad input, cancellation) keeps its message; a missing learner gives the pip
    command; anything else reaches :func:`user_facing_errors`, which logs its traceback.
    """
    try:
        yield
    except (SmdError, ImportError) as err:
        raise QgsProcessingException(core_error_message(err)) from err


def error_log_path():
    """The file unexpected errors' tracebacks are appended to (in the QGIS profile folder)."""
    folder = QgsApplication.qgisSettingsDirPath() or os.path.expanduser("~")
    return os.path.join(folder, "smdownscale-errors.log")


def log_traceback(where):
    """Append the current exception's traceback to the error log file; note it in the QGIS log.

    The traceback goes to the file only (qgis_process echoes the message log to the terminal).
    Returns the log file path, or None when it could not be written (then the QGIS log gets the
    traceback).
    """
    details = f"smdownscale: {where} failed\n{traceback.format_exc()}"
    path = error_log_path()
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(details + "\n")
    except OSError:
        QgsMessageLog.logMessage(details, "smdownscale", Qgis.Critical)
        return None
    QgsMessageLog.logMessage(f"smdownscale: {where} failed; traceback in {path}", "smdownscale",
                             Qgis.Critical)
    return path


def user_facing_errors(method, where):
    """Wrap a QGIS entry point so that every failure reaches the user as one message.

    Input problems (SmdError) keep their message; a missing learner gives the pip command;
    anything else is a bug or an environment failure: its traceback goes to the log only and
    the message says where to find it.
    """
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            results = method(self, *args, **kwargs)
            if where == "run":
                self.flag_temporary_outputs(results, args[2] if len(args) > 2 else None)
            return results
        except QgsProcessingException:
            raise
        except (SmdError, ImportError) as err:
            if isinstance(err, ImportError):
                log_traceback(f"{self.id()} {where}")
            raise QgsProcessingException(core_error_message(err)) from err
        except MemoryError as err:
            raise QgsProcessingException(tr(
                "{} ran out of memory. Use a coarser fine resolution, a smaller extent or a "
                "smaller block size.").format(self.displayName())) from err
        except Exception as err:  # noqa: BLE001 - the last line of defence before the user
            log = log_traceback(f"{self.id()} {where}")
            raise QgsProcessingException(tr(
                "{} failed unexpectedly ({}: {}). This is a fault of the plugin, not of your data "
                "choices; the details are in {}. Please report it.").format(
                    self.displayName(), type(err).__name__, err,
                    log or tr("the QGIS message log (smdownscale tab)"))) from err
    return wrapper


class SmdAlgorithm(QgsProcessingAlgorithm):
    """Plumbing shared by the provider's algorithms.

    Subclasses set the class attributes ``ALG_ID`` (the id after ``smdownscale:``),
    ``DISPLAY_NAME``, ``GROUP_ID`` (a key of :data:`GROUPS`), ``HELP`` (the short help, may use
    simple HTML) and ``REQUIRES`` (import names checked before the run), and implement
    ``initAlgorithm`` and ``processAlgorithm``. Parameters are added with :meth:`add_parameter`;
    checks beyond QGIS's own go in :meth:`parameter_error`.
    """

    ALG_ID = ""
    DISPLAY_NAME = ""

    def __init_subclass__(cls, **kwargs):
        # every algorithm's run and parameter check end in one message, never a traceback
        super().__init_subclass__(**kwargs)
        for name, where in (("processAlgorithm", "run"), ("parameter_error", "parameter check")):
            if name in cls.__dict__:
                setattr(cls, name, user_facing_errors(cls.__dict__[name], where))

    GROUP_ID = "downscaling"
    HELP = ""
    REQUIRES = ()

    def name(self):
        return self.ALG_ID

    def displayName(self):  # noqa: N802 (QGIS API names)
        return tr(self.DISPLAY_NAME)

    def group(self):
        return tr(GROUPS[self.GROUP_ID][0])

    def groupId(self):  # noqa: N802
        return self.GROUP_ID

    def shortHelpString(self):  # noqa: N802
        text = tr(self.HELP)
        if getattr(self, "OUTPUT_REPORT", None):  # every report-writing algorithm, one sentence
            text += "<br>" + tr(REPORT_FILES_HELP)
        return text

    def icon(self):
        return QIcon(os.path.join(ICONS_DIR, GROUPS[self.GROUP_ID][1]))

    def tr(self, text):
        return tr(text)

    def createInstance(self):  # noqa: N802
        return type(self)()

    def helpUrl(self):  # noqa: N802 (QGIS API name)
        return help_url(self.name())

    def flag_temporary_outputs(self, results, feedback):
        """Warn (log + feedback) when a model file, dataset or report went to a temporary
        location, which QGIS deletes when it quits; map layers (rasters, vectors) are left alone:
        loading them from a temporary file is the usual QGIS workflow."""
        file_kinds = (QgsProcessingParameterFileDestination, QgsProcessingParameterFolderDestination)
        for definition in self.destinationParameterDefinitions():
            if isinstance(definition, file_kinds) and isinstance(results, dict):
                warn_if_temporary(results.get(definition.name()), definition.description().lower(),
                                  feedback)

    def require_packages(self):
        """Fail early, before any work, when a learner this algorithm needs is missing."""
        require_packages(*self.REQUIRES)

    @staticmethod
    def progress(feedback):
        return feedback_progress(feedback)

    def add_parameter(self, param, help_text, *, advanced=False):
        """Add ``param`` with its (already translated) help text, flagged advanced if asked.

        Returns ``param``.
        """
        param.setHelp(help_text)
        if advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(param)
        return param

    #: the execution option of preprocess, train and predict (core.cluster; scripts rely on the name)
    DASK_SCHEDULER = "DASK_SCHEDULER"

    def add_scheduler_parameter(self):
        """The advanced DASK_SCHEDULER text parameter (empty = in this process)."""
        from qgis.core import QgsProcessingParameterString

        param = QgsProcessingParameterString(self.DASK_SCHEDULER, tr("Dask scheduler (empty = this process)"),
                                             optional=True)
        return self.add_parameter(
            param, tr("Run on Dask: local:N starts N worker processes on this machine for the run; "
                      "tcp://host:8786 uses a running cluster (every worker must read the input "
                      "paths). Empty runs in this process."), advanced=True)

    def scheduler(self, parameters, context):
        """The DASK_SCHEDULER text, parsed by core (``scheduler=`` of the core call)."""
        return self.parameterAsString(parameters, self.DASK_SCHEDULER, context)

    def scheduler_error(self, parameters, context):
        """Why DASK_SCHEDULER is wrong, or None (the rule is core.cluster.parse_scheduler)."""
        from ...core.cluster import parse_scheduler

        return core_error(parse_scheduler, self.scheduler(parameters, context))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """QGIS's own checks, then :meth:`parameter_error`."""
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        error = self.parameter_error(parameters, context)
        if error is not None:
            return False, error
        return True, ""

    def parameter_error(self, parameters, context):
        """Algorithm-specific parameter check: a message saying what is wrong, or None."""
        return None

    def dataset_folder(self, parameters, name, context):
        """The prepared dataset folder of parameter ``name``; raises when it is not one."""
        folder = self.parameterAsFile(parameters, name, context)
        error = dataset_folder_error(folder)
        if error:
            raise QgsProcessingException(error)
        return folder

    def geotiff_output(self, parameters, name, context):
        """The output raster path of parameter ``name``; raises unless it is a GeoTIFF."""
        output = self.parameterAsOutputLayer(parameters, name, context)
        if not output.lower().endswith((".tif", ".tiff")):
            raise QgsProcessingException(tr("The output must be a GeoTIFF (.tif); got {}.").format(output))
        return output
