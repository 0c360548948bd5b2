"""The SMAP granule reader child: ``python smap_child.py`` < job JSON; JSON lines on stdout.

Started by :func:`smap.import_smap_l4` (see ``smap._ISOLATION_NOTE`` for why). QGIS-free: it
imports this plugin's ``core`` only, under the name ``smdownscale`` whatever the plugin folder
is called. Prints ``{"ready": true}`` once imported, ``{"granule": path}`` before each granule
is touched, ``{"progress": f, "message": m}``, and finally ``{"result": {...}}``,
``{"error": message}`` (an SmdError) or ``{"failure": "Type: message"}``. A native crash
shows as a signal exit with the last announced granule.
"""
import importlib.util
import json
import os
import sys


def _say(**message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _load_package():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    name = "smdownscale"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(root, "__init__.py"),
                                                      submodule_search_locations=[root])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    from smdownscale.core import common
    from smdownscale.core.dataprep import smap

    return common, smap


def main():
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file from a damaged granule
    except (ImportError, ValueError, OSError):
        pass
    job = json.loads(sys.stdin.read())
    common, smap = _load_package()
    from osgeo import gdal  # noqa: F401 - fail here (before "ready") when GDAL is missing

    _say(ready=True)
    progress = common.Progress(lambda fraction, message: _say(progress=fraction, message=message))
    try:
        result = smap._import(job["granules"], job["output"], job["final_output"], variable=job["variable"],
                              time_window=job["time_window"], extent=job["extent"], progress=progress,
                              announce=lambda path: _say(granule=path))
    except common.SmdError as err:
        _say(error=str(err))
        return 0
    except Exception as err:  # noqa: BLE001 - reported as one message by the parent
        _say(failure=f"{type(err).__name__}: {err}")
        return 0
    _say(result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
