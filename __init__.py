"""smdownscale QGIS plugin: machine-learning downscaling of SMAP soil moisture."""


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .plugin import SmDownscalePlugin

    return SmDownscalePlugin(iface)
