"""Child runner of the input fuzzer: runs ONE case and prints ONE JSON line.

    python fuzz_child.py '{"kind": "smap", "inputs": [...], "output": "...", ...}'

The line starts with ``FUZZ-RESULT `` and holds ``status``: ``ok`` (the core function
returned), ``refused`` (a clean :class:`SmdError`, with its ``message``) or ``error`` (any other
exception: ``type`` and ``traceback``). ``leftovers`` lists files left in the output folder
after a refusal (there must be none), ``all_nan`` is True when an "ok" output holds no valid
value. A crash inside a native library shows as a signal in the parent (no line at all).

QGIS-free on purpose: it imports only ``smdownscale.core`` (through ``.plugin-path``).
"""
import json
import os
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGIN_PATH = os.path.join(ROOT, ".plugin-path")
if not os.path.lexists(os.path.join(PLUGIN_PATH, "smdownscale")):
    os.makedirs(PLUGIN_PATH, exist_ok=True)
    try:
        os.symlink(ROOT, os.path.join(PLUGIN_PATH, "smdownscale"))
    except FileExistsError:
        pass
sys.path.insert(0, PLUGIN_PATH)

MARKER = "FUZZ-RESULT "


def _all_nan(path):
    import numpy as np
    import rasterio

    with rasterio.open(path) as src:
        for band in range(1, src.count + 1):
            if np.isfinite(src.read(band)).any():
                return False
    return True


def run(job):
    kind = job["kind"]
    output = job["output"]
    if kind == "smap":
        from smdownscale.core.dataprep.smap import import_smap_l4

        import_smap_l4(job["inputs"], output, **job.get("options", {}))
        return {"all_nan": _all_nan(output)}
    if kind == "ismn":
        from smdownscale.core.dataprep.ismn import import_ismn

        result = import_ismn(job["inputs"][0], output, **job.get("options", {}))
        return {"records": result["records"]}
    if kind == "geotiff":
        from smdownscale.core.preprocess import preprocess

        inputs = job["inputs"]
        preprocess(inputs[:-1], inputs[-1], output, **job.get("options", {}))
        return {}
    if kind == "gapfill":
        from smdownscale.core.dataprep.gapfill import gap_fill

        gap_fill(job["inputs"][0], output, **job.get("options", {}))
        return {"all_nan": _all_nan(output)}
    if kind == "indices":
        from smdownscale.core.dataprep.indices import spectral_indices

        spectral_indices(job["inputs"], output, **job.get("options", {}))
        return {}
    raise ValueError(f"unknown fuzz kind {kind!r}")


def main(argv):
    job = json.loads(argv[1])
    out_dir = os.path.dirname(os.path.abspath(job["output"]))
    before = set(os.listdir(out_dir)) if os.path.isdir(out_dir) else set()
    try:
        from smdownscale.core.common import SmdError
    except Exception:  # pragma: no cover - the package itself is broken
        SmdError = ()
    try:
        extra = run(job)
        result = {"status": "ok", **extra}
    except SmdError as err:
        after = set(os.listdir(out_dir)) if os.path.isdir(out_dir) else set()
        result = {"status": "refused", "message": str(err), "leftovers": sorted(after - before)}
    except BaseException as err:  # noqa: B902 - everything else is a finding
        result = {"status": "error", "type": type(err).__name__, "message": str(err),
                  "traceback": traceback.format_exc()}
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
