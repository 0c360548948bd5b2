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
import sys
import traceback

from qgis.core import (Qgis, QgsApplication, QgsMessageLog, QgsProcessingAlgorithm, QgsProcessingException,
                       QgsProcessingParameterDefinition)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ...core.common import Progress, SmdError

ICONS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "icons")

#: group id -> (untranslated display name, icon file)
GROUPS = {
    "downscaling": ("Downscaling", "group_downscaling.svg"),
    "dataprep": ("Data preparation", "group_dataprep.svg"),
    "validation": ("Validation", "group_validation.svg"),
}

#: import name -> pip requirement (pins match requirements.txt: the model files are tested with these)
PIP_REQUIREMENTS = {
    "xgboost": "xgboost==2.1.3",
    "lightgbm": "lightgbm==4.5.0",
    "catboost": "catboost==1.2.7",
    "sklearn": "scikit-learn==1.5.2",
    "shap": "shap==0.46.0",
}


def tr(text, context="smdownscale"):
    """Translate ``text`` in the plugin's translation context."""
    return QCoreApplication.translate(context, text)


def qgis_python_executable():
    """The Python interpreter of the running QGIS (for the pip hint).

    Inside the QGIS desktop ``sys.executable`` is the ``qgis`` binary itself, so look for the
    interpreter beside the prefix QGIS's Python runs from.
    """
    exe = sys.executable or ""
    if os.path.basename(exe).lower().startswith("python"):
        return exe
    if os.name == "nt":
        candidates = [os.path.join(sys.exec_prefix, "python.exe"),
                      os.path.join(os.path.dirname(exe), "python3.exe"),
                      os.path.join(os.path.dirname(exe), "python.exe")]
    else:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        candidates = [os.path.join(sys.exec_prefix, "bin", f"python{version}"),
                      os.path.join(sys.exec_prefix, "bin", "python3")]
    return next((path for path in candidates if os.path.isfile(path)), exe or "python3")


def missing_packages(names):
    """Import names in ``names`` that are not installed (checked without importing them)."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def pip_command(names):
    """The exact command installing the packages ``names`` for the Python QGIS runs."""
    requirements = " ".join(PIP_REQUIREMENTS.get(name, name) for name in names)
    return f'"{qgis_python_executable()}" -m pip install {requirements}'


def require_packages(*names):
    """Raise ``QgsProcessingException`` naming the missing packages and the pip command."""
    missing = missing_packages(names)
    if missing:
        raise QgsProcessingException(
            tr("This algorithm needs the Python package(s) {} which are not installed for the "
               "Python QGIS runs. Install them with:\n  {}\nthen restart QGIS.").format(
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
        if name in PIP_REQUIREMENTS:
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


def run_core(function, *args, **kwargs):
    """Call a core function, turning its errors into ``QgsProcessingException``.

    ``SmdError`` (bad input, cancellation) keeps its message; a missing learner gives the pip
    command. Other exceptions reach :func:`user_facing_errors`, which logs their traceback.
    """
    try:
        return function(*args, **kwargs)
    except (SmdError, ImportError) as err:
        raise QgsProcessingException(core_error_message(err)) from err


def error_log_path():
    """The file unexpected errors' tracebacks are appended to (in the QGIS profile folder)."""
    folder = QgsApplication.qgisSettingsDirPath() or os.path.expanduser("~")
    return os.path.join(folder, "smdownscale-errors.log")


def log_traceback(where):
    """Put the current exception's traceback into the QGIS message log and the error log file.

    Returns the log file path, or None when it could not be written.
    """
    details = f"smdownscale: {where} failed\n{traceback.format_exc()}"
    QgsMessageLog.logMessage(details, "smdownscale", Qgis.Critical)
    path = error_log_path()
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(details + "\n")
    except OSError:
        return None
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
            return method(self, *args, **kwargs)
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
                "choices; the details are in the QGIS message log (smdownscale tab){}. Please "
                "report it.").format(self.displayName(), type(err).__name__, err,
                                     tr(" and in {}").format(log) if log else "")) from err
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
        return tr(self.HELP)

    def icon(self):
        return QIcon(os.path.join(ICONS_DIR, GROUPS[self.GROUP_ID][1]))

    def tr(self, text):
        return tr(text)

    def createInstance(self):  # noqa: N802
        return type(self)()

    def require_packages(self):
        """Fail early, before any work, when a learner this algorithm needs is missing."""
        require_packages(*self.REQUIRES)

    @staticmethod
    def progress(feedback):
        return feedback_progress(feedback)

    @staticmethod
    def run_core(function, *args, **kwargs):
        return run_core(function, *args, **kwargs)

    def add_parameter(self, param, help_text, *, advanced=False):
        """Add ``param`` with its (already translated) help text, flagged advanced if asked.

        Returns ``param``.
        """
        param.setHelp(help_text)
        if advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(param)
        return param

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
