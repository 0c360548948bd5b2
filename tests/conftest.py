"""Makes the checkout importable as ``smdownscale`` whatever its folder is called."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_PATH = os.path.join(ROOT, ".plugin-path")
LINK = os.path.join(PLUGIN_PATH, "smdownscale")
if not os.path.lexists(LINK):
    os.makedirs(PLUGIN_PATH, exist_ok=True)
    try:
        os.symlink(ROOT, LINK)
    except FileExistsError:
        pass
if PLUGIN_PATH not in sys.path:
    sys.path.insert(0, PLUGIN_PATH)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REALDATA = os.environ.get("SMDOWNSCALE_REALDATA") or next(
    (p for p in (os.path.join(ROOT, "..", "shared", "realdata"), "/work/shared/realdata") if os.path.isdir(p)),
    os.path.join(ROOT, "..", "shared", "realdata"))
REALDATA = os.path.abspath(REALDATA)

# QGIS's own "processing" plugin must win over the repository's processing/ package, which
# `python -m pytest` run from the repository root would otherwise put first on sys.path.
QGIS_PLUGINS = next((p for p in ("/usr/share/qgis/python/plugins", "/usr/lib/qgis/python/plugins")
                     if os.path.isdir(os.path.join(p, "processing"))), None)
if QGIS_PLUGINS and QGIS_PLUGINS not in sys.path:
    sys.path.insert(0, QGIS_PLUGINS)


def pytest_report_header(config):
    """QGIS, GDAL and Qt versions in the report, so a CI log says what it ran on."""
    from osgeo import gdal
    from qgis.core import Qgis
    from qgis.PyQt.QtCore import QT_VERSION_STR

    return f"QGIS {Qgis.QGIS_VERSION}, GDAL {gdal.__version__}, Qt {QT_VERSION_STR}"
