"""smdownscale QGIS plugin: machine-learning downscaling of SMAP soil moisture."""


def _add_dependency_folder():
    """Append ``<QGIS profile>/python/smdownscale-deps`` (where the dependency dialog installs the
    learners) to ``sys.path`` before anything imports them. Only inside QGIS / qgis_process (when
    ``qgis.core`` is already loaded) or when ``SMDOWNSCALE_DEPS`` names the folder: plain-Python
    children importing ``smdownscale.core`` get it through their PYTHONPATH."""
    import os
    import sys

    if "qgis.core" not in sys.modules and not os.environ.get("SMDOWNSCALE_DEPS"):
        return
    try:
        from .resources import add_deps_folder_to_sys_path

        add_deps_folder_to_sys_path()
    except Exception:  # noqa: BLE001 - never keep the plugin from loading
        pass


_add_dependency_folder()


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .plugin import SmDownscalePlugin

    return SmDownscalePlugin(iface)
