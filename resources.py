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
