"""What every QGIS-facing module of the plugin shares: its folders, icons, translation and
metadata, and the pinned learner requirements. Used by plugin.py, processing/ and ui/; ``core``
never imports it (it needs Qt)."""
import configparser
import os

from qgis.core import QgsSettings
from qgis.PyQt.QtCore import QCoreApplication

PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))
ICONS_DIR = os.path.join(PLUGIN_DIR, "icons")
#: the one list of pinned learner versions (model files are tested with these)
REQUIREMENTS_FILE = os.path.join(PLUGIN_DIR, "requirements.txt")
#: import names whose pip package is called differently
PIP_NAMES = {"sklearn": "scikit-learn"}


def tr(text, context="smdownscale"):
    """Translate ``text`` in the plugin's translation context."""
    return QCoreApplication.translate(context, text)


def icon_path(name):
    return os.path.join(ICONS_DIR, name)


def plugin_metadata(key, default=""):
    """A value of the ``[general]`` section of metadata.txt."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(os.path.join(PLUGIN_DIR, "metadata.txt"), encoding="utf-8")
    return parser.get("general", key, fallback=default)


def pip_requirement(import_name):
    """The pinned pip requirement for an import name, read from requirements.txt
    (``sklearn`` -> ``scikit-learn==1.5.2``); the bare pip name when it is not pinned there."""
    if import_name in LEARNER_DISTRIBUTIONS:  # xgboost: xgboost-cpu or xgboost, whichever is pinned
        return learner_requirement(import_name)
    package = PIP_NAMES.get(import_name, import_name)
    try:
        with open(REQUIREMENTS_FILE, encoding="utf-8") as handle:
            for line in handle:
                requirement = line.split("#", 1)[0].strip()
                name = requirement.split("==", 1)[0].strip().lower()
                if "==" in requirement and name == package.lower():
                    return requirement
    except OSError:
        pass
    return package


#: QgsSettings key: trusted public keys for model signatures (files or folders, ";"-separated)
TRUSTED_KEYS_SETTING = "smdownscale/trusted_keys"


def trusted_key_paths(text=None):
    """List of trusted public key paths: from ``text`` (";"-separated), else from the setting."""
    value = text
    if not value:
        value = QgsSettings().value(TRUSTED_KEYS_SETTING, "")
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        items = str(value or "").replace("\n", ";").split(";")
    return [item.strip() for item in items if item and item.strip()]


# --- learner dependencies installed by the plugin (ui/dependencies.py) ----------------------------

#: folder (inside the QGIS profile's ``python`` folder) the dependency dialog installs into
DEPS_FOLDER_NAME = "smdownscale-deps"
#: environment variable overriding that folder (tests, shared installs)
DEPS_FOLDER_ENV = "SMDOWNSCALE_DEPS"
#: import name -> pip distribution names that provide it (first = the one requirements.txt pins)
LEARNER_DISTRIBUTIONS = {
    "xgboost": ("xgboost-cpu", "xgboost"),
    "lightgbm": ("lightgbm",),
    "catboost": ("catboost",),
    "sklearn": ("scikit-learn",),
    "shap": ("shap",),
}


def deps_folder(profile_python_dir=None):
    """``<QGIS profile>/python/smdownscale-deps`` (``SMDOWNSCALE_DEPS`` overrides)."""
    override = os.environ.get(DEPS_FOLDER_ENV)
    if override:
        return override
    if profile_python_dir is None:
        from qgis.core import QgsApplication

        profile_python_dir = os.path.join(QgsApplication.qgisSettingsDirPath(), "python")
    return os.path.join(profile_python_dir, DEPS_FOLDER_NAME)


def add_deps_folder_to_sys_path(folder=None):
    """Append the plugin's dependency folder to ``sys.path`` (appended, so the packages QGIS
    itself is built against - numpy, GDAL - always win). Returns the folder, or None when it
    does not exist. Idempotent."""
    import sys

    try:
        folder = folder or deps_folder()
    except Exception:  # noqa: BLE001 - no QGIS profile (plain Python): nothing to add
        return None
    if not os.path.isdir(folder):
        return None
    if folder not in sys.path:
        sys.path.append(folder)
        import importlib

        importlib.invalidate_caches()
    return folder


#: optional packages the dependency dialog also offers (the plugin works without them; their pins
#: are the lines of requirements.txt): group -> pip names. ``compiled``: lleaves compiles LightGBM
#: models for faster prediction (core/compiled.py), with the numba/llvmlite it needs (no Windows
#: build: its requirement marker skips it there); ``dask``: the DASK_SCHEDULER option (core/cluster.py)
OPTIONAL_PACKAGES = {
    "compiled": ("lleaves", "numba", "llvmlite"),
    "dask": ("dask", "distributed"),
}


def _requirement_name(requirement):
    name = requirement
    for separator in ("==", ">=", "<=", "<", ">", "~=", "!=", "[", ";", " "):
        name = name.split(separator, 1)[0]
    return name.strip().lower()


def _pinned_requirements(requirements=None):
    """``{lower-case pip name: requirement line}`` of requirements.txt (pinned or not), in file order."""
    pins = {}
    try:
        with open(requirements or REQUIREMENTS_FILE, encoding="utf-8") as handle:
            for line in handle:
                requirement = line.split("#", 1)[0].strip()
                if not requirement or requirement.startswith("-"):
                    continue
                pins[_requirement_name(requirement)] = requirement
    except OSError:
        pass
    return pins


def requirement_applies(requirement):
    """Whether a requirement line's environment marker (``lleaves==1.3.0; sys_platform != "win32"``)
    holds for this Python: True / False, None when no marker parser is importable (pip decides)."""
    if ";" not in requirement:
        return True
    marker = requirement.split(";", 1)[1].strip()
    try:
        from packaging.markers import Marker
    except ImportError:
        try:
            from pip._vendor.packaging.markers import Marker
        except ImportError:
            return None
    try:
        return bool(Marker(marker).evaluate())
    except Exception:  # noqa: BLE001 - an unparsable marker: let pip say so
        return None


def install_packages(requirements=None, optional=None):
    """The pip names one install asks for: every package of requirements.txt except those of the
    :data:`OPTIONAL_PACKAGES` groups not in ``optional`` (default: every group). A line whose
    marker does not hold here is left out (lleaves on Windows); one that cannot be evaluated is
    given with its marker, for pip to evaluate. The versions come from requirements.txt itself,
    passed as constraints (:func:`install_arguments`)."""
    chosen = set(OPTIONAL_PACKAGES if optional is None else optional)
    unknown = chosen - set(OPTIONAL_PACKAGES)
    if unknown:
        raise ValueError(f"unknown optional package group(s): {', '.join(sorted(unknown))}")
    left_out = {name for group, names in OPTIONAL_PACKAGES.items() if group not in chosen for name in names}
    packages = []
    for name, line in _pinned_requirements(requirements).items():
        if name in left_out:
            continue
        applies = requirement_applies(line)
        if applies is False:
            continue
        bare = line.split(";", 1)[0]
        for separator in ("==", ">=", "<=", "<", ">", "~=", "!=", " "):
            bare = bare.split(separator, 1)[0]
        marker = line.split(";", 1)[1].strip().replace('"', "'") if ";" in line else ""
        packages.append(bare.strip() if applies else f"{bare.strip()}; {marker}")
    return packages


def learner_requirement(import_name):
    """The requirements.txt line for a learner import name, whichever distribution is pinned
    (``xgboost`` -> ``xgboost-cpu==2.1.3`` or ``xgboost==2.1.3``); the pip name otherwise."""
    pins = _pinned_requirements()
    names = LEARNER_DISTRIBUTIONS.get(import_name, (PIP_NAMES.get(import_name, import_name),))
    for name in names:
        if name.lower() in pins:
            return pins[name.lower()]
    return names[0]


def installed_distribution(import_name):
    """``(distribution name, version)`` providing ``import_name`` on ``sys.path``, or None.
    Reads package metadata only: nothing is imported."""
    import importlib.metadata as metadata
    import importlib.util

    if importlib.util.find_spec(import_name) is None:
        return None
    names = LEARNER_DISTRIBUTIONS.get(import_name, (PIP_NAMES.get(import_name, import_name),))
    for name in names:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        provided = metadata.packages_distributions().get(import_name) or []
    except Exception:  # noqa: BLE001
        provided = []
    for name in provided:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return import_name, ""


def learner_status(import_names=None):
    """One dict per learner: ``import`` name, ``requirement`` (the pin), ``installed``
    (``"dist version"`` or ""), ``state`` ``ok`` / ``missing`` / ``wrong version``."""
    rows = []
    for name in import_names or LEARNER_DISTRIBUTIONS:
        requirement = learner_requirement(name)
        found = installed_distribution(name)
        if found is None:
            state, installed = "missing", ""
        else:
            dist, version = found
            installed = f"{dist} {version}".strip()
            pin = requirement.split(";", 1)[0]
            wanted = pin.split("==", 1)[1].strip() if "==" in pin else None
            state = "wrong version" if wanted and version and version != wanted else "ok"
        rows.append({"import": name, "requirement": requirement, "installed": installed, "state": state})
    return rows


def missing_learners(import_names=None):
    """Import names of learners that are not installed (metadata only, nothing imported)."""
    import importlib.util

    return [name for name in import_names or LEARNER_DISTRIBUTIONS if importlib.util.find_spec(name) is None]


#: compiled packages QGIS's Python already has (Debian: python3-numpy ...): an install into the
#: dependency folder is constrained to their installed versions, because those copies are the
#: ones imported (the folder comes last on sys.path) and packages built for a newer numpy fail
ABI_PINNED = ("numpy", "scipy", "matplotlib", "pandas")


def installed_constraints(names=ABI_PINNED, exclude_folder=None):
    """``["numpy==1.24.2", ...]`` for the packages of ``names`` installed outside ``exclude_folder``."""
    import importlib.metadata as metadata

    exclude = os.path.realpath(exclude_folder) if exclude_folder else None
    lines = []
    for name in names:
        for dist in metadata.distributions(name=name):
            location = os.path.realpath(str(dist.locate_file("")))
            if exclude and (location == exclude or location.startswith(exclude + os.sep)):
                continue
            lines.append(f"{name}=={dist.version}")
            break
    return lines


def install_arguments(python, folder, requirements=None, pins=None, optional=None):
    """``[python, -m, pip, install, ...]`` installing the packages of requirements.txt into
    ``folder`` at its pins: the names of :func:`install_packages` (the learners and, of
    :data:`OPTIONAL_PACKAGES`, the groups in ``optional``, default all), with requirements.txt as
    the constraints file (``-c``), so every version, also of packages pulled in (numba by shap),
    is the one pinned there. ``--target`` works on PEP 668 systems and needs no admin rights;
    ``--upgrade`` replaces what an earlier install left there. ``pins`` (default
    :func:`installed_constraints`) keep numpy & co at the versions QGIS already imports, so what
    pip picks is built for them."""
    if pins is None:
        pins = installed_constraints(exclude_folder=folder)
    pinned = {_requirement_name(pin) for pin in pins}
    packages = [name for name in install_packages(requirements, optional) if _requirement_name(name) not in pinned]
    return [python, "-m", "pip", "install", "--disable-pip-version-check", "--upgrade",
            "--target", folder, "-c", requirements or REQUIREMENTS_FILE, *packages, *pins]


def install_command(python, folder, requirements=None, pins=None, optional=None):
    """The same as one copyable shell line (paths quoted)."""
    import shlex

    args = install_arguments(python or "python3", folder, requirements, pins, optional)
    if os.name == "nt":
        return " ".join(f'"{a}"' if (" " in a or "\\" in a) else a for a in args)
    return " ".join(shlex.quote(a) for a in args)


# --- help links, temporary outputs -------------------------------------------------------------

#: where the README is published (help links of the algorithms point at its sections)
README_URL = "https://github.com/smdownscale/smdownscale/blob/main/README.md"
#: algorithm name -> README heading it is documented under (anchor = GitHub's slug of it)
HELP_SECTIONS = {
    "preprocess": "Downscaling", "train": "Downscaling", "predict": "Downscaling",
    "validate": "Downscaling", "explain": "Downscaling",
    "generatekeys": "Downscaling", "signmodel": "Downscaling",
    "downscaling_chain": "Downscaling",
    "gapfill": "Data preparation", "importismn": "Data preparation", "importsmapl4": "Data preparation",
    "reclassifylc": "Data preparation", "s1composite": "Data preparation",
    "spectralindices": "Data preparation",
}
DEFAULT_HELP_SECTION = "Algorithms"


def readme_anchor(heading):
    """GitHub's anchor for a Markdown heading (lower case, punctuation dropped, spaces -> -)."""
    import re

    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def help_url(algorithm_name):
    """URL of the README section documenting ``algorithm_name`` (``train`` or ``smdownscale:train``);
    for ``QgsProcessingAlgorithm.helpUrl``. The README link in metadata.txt (``homepage``) wins
    over :data:`README_URL` when it is set."""
    name = algorithm_name.split(":", 1)[-1]
    homepage = plugin_metadata("homepage", "").rstrip("/")
    base = f"{homepage}/blob/main/README.md" if homepage.startswith("https://github.com/") else README_URL
    return f"{base}#{readme_anchor(HELP_SECTIONS.get(name, DEFAULT_HELP_SECTION))}"


def warn_if_temporary(path, what, feedback=None):
    """Log a warning when an output ``path`` (a model file, dataset, report) is in a temporary
    location, with the path and how to keep it. Returns the message or None. Call it from the
    Processing shells after a run (``feedback`` = the algorithm's feedback)."""
    import tempfile

    from qgis.core import Qgis, QgsMessageLog, QgsProcessingUtils

    if not path:
        return None
    real = os.path.realpath(str(path))
    roots = {os.path.realpath(tempfile.gettempdir())}
    try:
        roots.add(os.path.realpath(QgsProcessingUtils.tempFolder()))
    except Exception:  # noqa: BLE001
        pass
    if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
        return None
    message = tr("The {} was written to a temporary location and will be deleted when QGIS quits: {} - "
                 "copy it elsewhere now, or choose an output path next time to keep it.").format(what, path)
    QgsMessageLog.logMessage(message, "smdownscale", Qgis.Warning)
    if feedback is not None:
        if hasattr(feedback, "pushWarning"):
            feedback.pushWarning(message)
        else:
            feedback.reportError(message)
    return message


def qgis_python():
    """The Python interpreter QGIS itself runs on, for pip (:func:`core.common.python_interpreter`)."""
    from .core.common import python_interpreter

    return python_interpreter()


# --- soil-moisture series layers ---------------------------------------------------------------

def band_dates(layer):
    """The ISO date of every band of a raster layer (from its band descriptions / names), or
    None when the layer is not a dated series (fewer than two bands, or a band without a date)."""
    import re

    from qgis.core import QgsRasterLayer

    if not isinstance(layer, QgsRasterLayer) or not layer.isValid() or layer.bandCount() < 2:
        return None
    iso = re.compile(r"(\d{4}-\d{2}-\d{2})")
    provider = layer.dataProvider()
    dates = []
    for band in range(1, layer.bandCount() + 1):
        text = ""
        if hasattr(provider, "bandDescription"):
            text = provider.bandDescription(band) or ""
        if not iso.search(text):
            text = layer.bandName(band) or ""
        match = iso.search(text)
        if match is None:
            return None
        dates.append(match.group(1))
    return dates


def series_layer_name(product, dates):
    """Layer name carrying the product and the date range: ``"Downscaled SM 2019-04-01 to
    2019-04-30 (30 dates)"``; one date: ``"<product> 2019-04-01"``; a name that already ends with
    the range is kept."""
    dates = list(dates or [])
    if not dates:
        return product
    suffix = dates[0] if len(dates) == 1 else tr("{} to {} ({} dates)").format(dates[0], dates[-1], len(dates))
    if product.endswith(suffix):
        return product
    return f"{product} {suffix}"
