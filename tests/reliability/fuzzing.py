"""Seeded input fuzzing of the readers: SMAP L4 granules, ISMN downloads, GeoTIFF predictors.

Every case is a mutated copy of a real input (``/work/shared/realdata``, or the synthetic
scenario's GeoTIFFs) run through the core function in its own child process
(``fuzz_child.py``, the real Python interpreter, QGIS-free) with a timeout. A case passes when
the child exits 0 and reports ``ok`` or ``refused`` (a clean SmdError that leaves nothing
behind); a signal, a timeout, a non-zero exit, a missing result line or any other exception
is a failure.

Used by ``tests/reliability/test_fuzz_inputs.py`` (bounded run) and ``scripts/fuzz-inputs``
(longer runs, ``--count`` / ``--seed``).
"""
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CHILD = os.path.join(HERE, "fuzz_child.py")
MARKER = "FUZZ-RESULT "

REALDATA = os.path.abspath(os.environ.get("SMDOWNSCALE_REALDATA") or next(
    (p for p in (os.path.join(ROOT, "..", "shared", "realdata"), "/work/shared/realdata") if os.path.isdir(p)),
    os.path.join(ROOT, "..", "shared", "realdata")))
SMAP_DIR = os.path.join(REALDATA, "smap_l4_harmony_maskfill")
ISMN_DIR = os.path.join(REALDATA, "ismn")

#: (file, weight): the small subsets most often, the 4 MB CONUS subset now and then.
SMAP_SOURCES = (("SMAP_L4_SM_aup_comparison.h5", 4), ("SMAP_L4_SM_aup_dimension_list_input.h5", 3),
                ("SMAP_L4_SM_aup_UTM_input.h5", 2), ("SMAP_L4_SM_aup_input.h5", 1))
ISMN_FILES = (
    "format_header_values/SMOSMANIA/SMOSMANIA_SMOSMANIA_Narbonne_sm_0.050000_0.050000_ThetaProbe-ML2X_20070101_20070131.stm",
    "format_ceop_sep/SMOSMANIA/SMOSMANIA_SMOSMANIA_Narbonne_sm_0.050000_0.050000_ThetaProbe-ML2X_20070101_20070131.stm",
)
ISMN_ZIP = "zip_archives/multinetwork/header_values/Data_header_values.zip"


def python_executable():
    """The real interpreter of the venv (not a QGIS binary)."""
    venv = os.path.join(ROOT, ".venv", "bin", "python")
    return venv if os.path.exists(venv) else sys.executable


def available():
    """None when the real data are present, else the reason to skip."""
    if not os.path.isfile(os.path.join(SMAP_DIR, "SMAP_L4_SM_aup_comparison.h5")):
        return f"real SMAP granules not found in {SMAP_DIR}"
    if not os.path.isfile(os.path.join(ISMN_DIR, ISMN_ZIP)):
        return f"real ISMN downloads not found in {ISMN_DIR}"
    return None


# ---------------------------------------------------------------------------------------------
# byte-level mutations (any file)

def flip_bytes(data, rng, *, region=None):
    data = bytearray(data)
    lo, hi = region or (0, len(data))
    hi = min(hi, len(data))
    for _ in range(rng.randint(1, 64)):
        position = rng.randrange(lo, hi)
        data[position] ^= 1 << rng.randrange(8) if rng.random() < 0.5 else rng.randrange(1, 256)
    return bytes(data)


def truncate(data, rng):
    return data[:rng.randrange(0, len(data))]


def overwrite_run(data, rng, *, region=None):
    data = bytearray(data)
    lo, hi = region or (0, len(data))
    start = rng.randrange(lo, min(hi, len(data)))
    length = rng.choice((4, 16, 64, 512, 4096))
    fill = rng.choice((b"\x00", b"\xff", None))
    chunk = bytes(rng.randrange(256) for _ in range(length)) if fill is None else fill * length
    data[start:start + length] = chunk[:max(0, len(data) - start)]
    return bytes(data)


def mutate_bytes(data, rng):
    """One of: bit/byte flips (anywhere or in the first 16 KiB, where headers live), truncation,
    an overwritten run. Returns (bytes, description)."""
    choice = rng.random()
    if choice < 0.3:
        return flip_bytes(data, rng), "flip"
    if choice < 0.55:
        return flip_bytes(data, rng, region=(0, min(len(data), 16384))), "flip-header"
    if choice < 0.75:
        return truncate(data, rng), "truncate"
    if choice < 0.9:
        return overwrite_run(data, rng, region=(0, min(len(data), 16384))), "overwrite-header"
    return overwrite_run(data, rng), "overwrite"


# ---------------------------------------------------------------------------------------------
# SMAP granules

def _smap_source(rng):
    names = [name for name, weight in SMAP_SOURCES for _ in range(weight)]
    return os.path.join(SMAP_DIR, rng.choice(names))


def _main_dataset(h5):
    for name in ("Analysis_Data/sm_surface_analysis", "Analysis_Data/sm_profile_analysis",
                 "Analysis_Data/sm_rootzone_analysis"):
        if name in h5:
            return name
    return None


def corrupt_chunks(path, rng):
    """Overwrite bytes inside some compressed chunks of the soil-moisture dataset (in place)."""
    import h5py

    with h5py.File(path, "r") as h5:
        name = _main_dataset(h5)
        dsid = h5[name].id
        n_chunks = dsid.get_num_chunks()
        picked = [dsid.get_chunk_info(rng.randrange(n_chunks)) for _ in range(rng.randint(1, 4))]
    with open(path, "r+b") as handle:
        for info in picked:
            handle.seek(info.byte_offset + rng.randrange(max(1, info.size)))
            handle.write(bytes(rng.randrange(256) for _ in range(rng.randint(1, 32))))
    return f"chunk:{name}"


def _set_attr(obj, key, value):
    import numpy as np

    if key in obj.attrs:
        del obj.attrs[key]
    obj.attrs.create(key, np.bytes_(value))


def corrupt_attributes(path, rng):
    """A semantic mutation through h5py: fill values, units, time, shapes, dtypes, coordinates."""
    import h5py
    import numpy as np

    with h5py.File(path, "r+") as h5:
        name = _main_dataset(h5)
        data = h5[name]
        what = rng.choice(["fill-string", "fill-array", "fill-nan", "time-units", "time-value",
                           "time-string", "drop-xy", "xy-garbage", "dataset-1d", "dataset-3d",
                           "dataset-int", "dataset-string", "dataset-empty", "grid-mapping",
                           "cell-column", "percent", "huge-values", "drop-time", "xy-short"])
        if what == "fill-string":
            del data.attrs["_FillValue"]
            data.attrs["_FillValue"] = np.bytes_(b"not a number")
        elif what == "fill-array":
            del data.attrs["_FillValue"]
            data.attrs["_FillValue"] = np.arange(rng.randint(2, 50), dtype="float32")
        elif what == "fill-nan":
            data.attrs["missing_value"] = np.float32("nan")
        elif what == "time-units":
            _set_attr(h5["time"], "units", rng.choice([b"seconds since 99999-99-99 99:99:99", b"\xff\xfe",
                                                       b"seconds since", b"days since 2000-01-01"]))
        elif what == "time-value":
            h5["time"][0] = rng.choice([float("nan"), float("inf"), 1e300, -1e300, -5e11, 9e15])
        elif what == "time-string":
            del h5["time"]
            h5["time"] = np.array([b"yesterday"])
            h5["time"].attrs["units"] = b"seconds since 2000-01-01 11:58:55.816"
        elif what == "drop-xy":
            for key in ("x", "y"):
                if key in h5:
                    del h5[key]  # unlinks the dimension scales; DIMENSION_LIST now dangles
        elif what == "xy-garbage":
            for key in ("x", "y"):
                if key in h5:
                    h5[key][...] = rng.choice([float("nan"), 1e308, 0.0])
        elif what in ("dataset-1d", "dataset-3d", "dataset-int", "dataset-string", "dataset-empty"):
            values = data[()]
            attrs = {k: v for k, v in data.attrs.items() if k not in ("DIMENSION_LIST", "REFERENCE_LIST")}
            del h5[name]
            if what == "dataset-1d":
                new = values.reshape(-1)
            elif what == "dataset-3d":
                new = values[np.newaxis]
            elif what == "dataset-int":
                new = (values * 1000).astype("int16")
            elif what == "dataset-string":
                new = np.full(values.shape[:1], b"abc")
            else:
                new = np.zeros((0, values.shape[1]), dtype="float32")
            h5.create_dataset(name, data=new)
            for key, value in attrs.items():
                try:
                    h5[name].attrs[key] = value
                except Exception:
                    pass
        elif what == "grid-mapping":
            _set_attr(h5["projection_information"], "grid_mapping_name",
                      rng.choice([b"transverse_mercator", b"\x00\x01", b"x"]))
        elif what == "cell-column":
            if "cell_column" in h5:
                column = h5["cell_column"]
                column[...] = column[()] + np.uint32(rng.choice([1, 5000, 4000000000]))
        elif what == "percent":
            values = data[()]
            valid = values != -9999.0
            values[valid] *= 100.0
            data[...] = values
        elif what == "huge-values":
            values = data[()]
            values[values != -9999.0] = rng.choice([1e30, -1e30, np.inf, np.nan])
            data[...] = values
        elif what == "drop-time":
            del h5["time"]
        elif what == "xy-short":
            for key in ("x", "y"):
                if key in h5:
                    try:
                        h5[key].resize((1,))
                    except TypeError:
                        pass
    return f"attr:{what}"


def make_smap_case(folder, rng):
    source = _smap_source(rng)
    path = os.path.join(folder, os.path.basename(source))
    kind = rng.random()
    if kind < 0.2:
        shutil.copyfile(source, path)
        os.chmod(path, 0o644)
        how = corrupt_chunks(path, rng)
    elif kind < 0.4:
        shutil.copyfile(source, path)
        os.chmod(path, 0o644)
        how = corrupt_attributes(path, rng)
    else:
        with open(source, "rb") as handle:
            data, how = mutate_bytes(handle.read(), rng)
        with open(path, "wb") as handle:
            handle.write(data)
    options = {}
    if "UTM" in source or "comparison" in source:
        options["variable"] = "sm_profile_analysis"
    elif "dimension_list" in source:
        options["variable"] = "sm_rootzone_analysis"
    return {"kind": "smap", "inputs": [path], "output": os.path.join(folder, "out", "sm.tif"),
            "options": options, "mutation": how, "source": os.path.basename(source)}


# ---------------------------------------------------------------------------------------------
# ISMN downloads

def _ismn_text_mutation(text, rng):
    lines = text.splitlines(keepends=True)
    what = rng.choice(["percent", "out-of-range", "negative", "date-9999", "date-1900", "nan",
                       "drop-header", "garbage-line", "empty", "bad-utf8", "huge-line", "bytes"])
    data_lines = [i for i, line in enumerate(lines) if line[:2] in ("19", "20")]
    if what == "percent":
        lines = [_scale_value(line, 100.0) if i in set(data_lines) else line for i, line in enumerate(lines)]
    elif what in ("out-of-range", "negative", "nan", "date-9999", "date-1900") and data_lines:
        for i in rng.sample(data_lines, min(len(data_lines), rng.choice((1, 5, len(data_lines))))):
            if what == "out-of-range":
                lines[i] = _set_value(lines[i], "1.75")
            elif what == "negative":
                lines[i] = _set_value(lines[i], "-0.2")
            elif what == "nan":
                lines[i] = _set_value(lines[i], "nan")
            elif what == "date-9999":
                lines[i] = _set_date(lines[i], "9999/12/31")
            else:
                lines[i] = _set_date(lines[i], "1900/01/01")
    elif what == "drop-header" and lines:
        lines = lines[1:]
    elif what == "garbage-line":
        lines.insert(rng.randrange(len(lines) + 1), "\x00\x01 garbage ### 1 2\n")
    elif what == "empty":
        lines = []
    elif what == "huge-line":
        lines.insert(rng.randrange(len(lines) + 1), "9" * 200000 + "\n")
    text = "".join(lines)
    data = text.encode("utf-8")
    if what == "bad-utf8":
        position = rng.randrange(len(data) + 1)
        data = data[:position] + b"\xff\xfe\xc3" + data[position:]
    elif what == "bytes":
        data, how = mutate_bytes(data, rng)
        what = f"bytes-{how}"
    return data, what


def _fields(line):
    ending = line[len(line.rstrip("\r\n")):]
    return line.rstrip("\r\n").split(" "), ending


def _value_index(tokens):
    numeric = [i for i, t in enumerate(tokens) if t and _is_float(t)]
    flags = [i for i, t in enumerate(tokens) if t and not _is_float(t)]
    # the value is the last number followed by a flag
    for i in reversed(numeric):
        if any(f > i for f in flags):
            return i
    return None


def _is_float(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _set_value(line, value):
    tokens, ending = _fields(line)
    index = _value_index(tokens)
    if index is not None:
        tokens[index] = value
    return " ".join(tokens) + ending


def _scale_value(line, factor):
    tokens, ending = _fields(line)
    index = _value_index(tokens)
    if index is not None:
        tokens[index] = f"{float(tokens[index]) * factor:.2f}"
    return " ".join(tokens) + ending


def _set_date(line, date):
    return date + line[10:]


def _zip_bomb(rng):
    """A small archive whose one .stm member inflates to 64-512 MiB (ratio > 1000)."""
    buffer = io.BytesIO()
    size = rng.choice((64, 256, 512)) * 2**20
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("bomb/Net/Sta/Net_Net_Sta_sm_0.05_0.05_x.stm", "w", force_zip64=True) as member:
            block = b"0" * 2**20
            for _ in range(size // len(block)):
                member.write(block)
    return buffer.getvalue()


def _zip_many(rng):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index in range(rng.choice((20000, 60000))):
            archive.writestr(f"n/s/f{index}.stm", b"")
    return buffer.getvalue()


def _zip_lying_sizes(data, rng):
    """Rewrite the central directory's uncompressed sizes of the members (a lie)."""
    data = bytearray(data)
    signature = b"PK\x01\x02"
    start = 0
    value = rng.choice((0, 1, 0xFFFFFFFE, 2**31))
    while True:
        found = data.find(signature, start)
        if found < 0:
            break
        data[found + 24:found + 28] = int(value).to_bytes(4, "little")
        start = found + 4
    return bytes(data)


def _zip_with_members(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def make_ismn_case(folder, rng, cache):
    choice = rng.random()
    output = os.path.join(folder, "out", "stations.gpkg")
    options = {"depth_from": 0.0, "depth_to": 0.1}
    if choice < 0.45:
        source = os.path.join(ISMN_DIR, rng.choice(ISMN_FILES))
        with open(source, "rb") as handle:
            text = handle.read().decode("utf-8")
        data, how = _ismn_text_mutation(text, rng)
        path = os.path.join(folder, os.path.basename(source))
        with open(path, "wb") as handle:
            handle.write(data)
        options["quality_flags"] = None if rng.random() < 0.3 else ["G"]
    else:
        source = os.path.join(ISMN_DIR, ISMN_ZIP)
        with open(source, "rb") as handle:
            original = handle.read()
        path = os.path.join(folder, "Data_header_values.zip")
        sub = rng.random()
        if sub < 0.45:
            data, how = mutate_bytes(original, rng)
            if rng.random() < 0.5:  # flips inside the compressed members, not the directory
                data = flip_bytes(original, rng, region=(64, max(65, len(original) - 4096)))
                how = "flip-members"
        elif sub < 0.6:
            data, how = _zip_lying_sizes(original, rng), "lying-sizes"
        elif sub < 0.8:
            with zipfile.ZipFile(io.BytesIO(original)) as archive:
                members = [(m, archive.read(m)) for m in archive.namelist()]
            stm = [i for i, (m, _) in enumerate(members) if m.endswith(".stm")]
            index = rng.choice(stm)
            mutated, what = _ismn_text_mutation(members[index][1].decode("utf-8"), rng)
            members[index] = (members[index][0], mutated)
            data, how = _zip_with_members(members), f"member-{what}"
        elif sub < 0.9:
            key = ("bomb", rng.choice((64, 256)))
            if key not in cache:
                cache[key] = _zip_bomb(random.Random(key[1]))
            data, how = cache[key], "zip-bomb"
        else:
            if "many" not in cache:
                cache["many"] = _zip_many(random.Random(0))
            data, how = cache["many"], "zip-many-members"
        with open(path, "wb") as handle:
            handle.write(data)
    return {"kind": "ismn", "inputs": [path], "output": output, "options": options, "mutation": how,
            "source": os.path.basename(source)}


# ---------------------------------------------------------------------------------------------
# GeoTIFF predictors through core.preprocess.preprocess

def scenario(workdir):
    """The small synthetic scenario, written once per work folder (in a child process)."""
    folder = os.path.join(workdir, "scenario")
    marker = os.path.join(folder, "scenario.json")
    if not os.path.isfile(marker):
        code = ("import sys; sys.path.insert(0, %r); "
                "from smdownscale.demo.scenario import make_scenario; make_scenario(%r, size='small')"
                % (os.path.join(ROOT, ".plugin-path"), folder))
        subprocess.run([python_executable(), "-c", code], check=True, timeout=300)
    predictors = sorted(os.path.join(folder, "predictors", f) for f in os.listdir(os.path.join(folder, "predictors")))
    return predictors, os.path.join(folder, "soil_moisture_9km.tif")


def make_geotiff_case(folder, rng, inputs):
    predictors, soil_moisture = inputs
    # a few predictors keep each case fast; the mutated one is one of them (or the target)
    chosen = rng.sample(predictors, 3)
    # the mutated file is one of the predictors (issue 8: "corrupt predictor GeoTIFFs") or the
    # soil-moisture target
    target_index = rng.randrange(len(chosen) + 1)
    paths = chosen + [soil_moisture]
    victim = paths[target_index]
    with open(victim, "rb") as handle:
        data, how = mutate_bytes(handle.read(), rng)
    mutated = os.path.join(folder, os.path.basename(victim))
    with open(mutated, "wb") as handle:
        handle.write(data)
    paths[target_index] = mutated
    return {"kind": "geotiff", "inputs": paths, "output": os.path.join(folder, "out", "dataset"),
            "options": {"categorical": ["lc"]}, "mutation": how, "source": os.path.basename(victim)}


# ---------------------------------------------------------------------------------------------
# driver

def make_cases(workdir, count, seed, kinds=("smap", "ismn", "geotiff")):
    """``count`` case dicts (each in its own folder under ``workdir``), deterministic in ``seed``."""
    rng = random.Random(seed)
    cache = {}
    geotiff_inputs = scenario(workdir) if "geotiff" in kinds else None
    cases = []
    for index in range(count):
        kind = kinds[index % len(kinds)]
        folder = os.path.join(workdir, f"case-{index:05d}")
        os.makedirs(os.path.join(folder, "out"), exist_ok=True)
        case_rng = random.Random(rng.getrandbits(64))
        if kind == "smap":
            case = make_smap_case(folder, case_rng)
        elif kind == "ismn":
            case = make_ismn_case(folder, case_rng, cache)
        else:
            case = make_geotiff_case(folder, case_rng, geotiff_inputs)
        case["index"] = index
        cases.append(case)
    return cases


def run_case(case, timeout=60.0):
    """Run one case in a child process; returns the case with ``outcome`` and details added."""
    job = {key: case[key] for key in ("kind", "inputs", "output", "options")}
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)
    env["PYTHONFAULTHANDLER"] = "1"  # a native crash prints the Python stack of where it happened
    # glibc fills every allocation with garbage: a native library that frees or reads
    # uninitialised memory (the SMAP crash of issue 8) then fails every time, not by luck
    env.setdefault("MALLOC_PERTURB_", "85")
    started = time.monotonic()
    try:
        proc = subprocess.run([python_executable(), CHILD, json.dumps(job)], capture_output=True,
                              timeout=timeout, env=env, cwd=os.path.dirname(case["output"]))
    except subprocess.TimeoutExpired as err:
        return dict(case, outcome="hang", seconds=time.monotonic() - started,
                    stderr=(err.stderr or b"")[-4000:].decode("utf-8", "replace"))
    seconds = time.monotonic() - started
    stdout = proc.stdout.decode("utf-8", "replace")
    stderr = proc.stderr.decode("utf-8", "replace")
    lines = [line for line in stdout.splitlines() if line.startswith(MARKER)]
    result = dict(case, seconds=seconds, returncode=proc.returncode, stderr=stderr[-4000:])
    if proc.returncode < 0 or proc.returncode > 128:
        return dict(result, outcome="crash")
    if proc.returncode != 0 or len(lines) != 1:
        return dict(result, outcome="bad-exit")
    report = json.loads(lines[0][len(MARKER):])
    result.update(report=report)
    if report["status"] == "ok":
        result["outcome"] = "all-nan" if report.get("all_nan") else "ok"
    elif report["status"] == "refused":
        result["outcome"] = "leftovers" if report.get("leftovers") else "refused"
    else:
        result["outcome"] = "exception"
    if "Traceback (most recent call last)" in stderr and result["outcome"] in ("ok", "refused"):
        result["outcome"] = "traceback"
    return result


GOOD_OUTCOMES = ("ok", "refused")


def run_cases(cases, *, workers=2, timeout=60.0, keep=False, on_result=None):
    """Run cases over ``workers`` parallel child processes; results in case order."""
    def one(case):
        result = run_case(case, timeout)
        if not keep and result["outcome"] in GOOD_OUTCOMES:
            shutil.rmtree(os.path.dirname(os.path.dirname(case["output"])), ignore_errors=True)
        if on_result is not None:
            on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, cases))


def summarise(results):
    """{kind: {outcome: count}} and the failing results."""
    table = {}
    for result in results:
        row = table.setdefault(result["kind"], {})
        row[result["outcome"]] = row.get(result["outcome"], 0) + 1
    failures = [r for r in results if r["outcome"] not in GOOD_OUTCOMES]
    return table, failures


def describe(result):
    """One readable paragraph about a failing result."""
    text = (f"case {result['index']} {result['kind']} {result['source']} [{result['mutation']}] -> "
            f"{result['outcome']} (exit {result.get('returncode')}, {result.get('seconds', 0):.1f} s) "
            f"inputs {result['inputs']}")
    report = result.get("report") or {}
    if report.get("traceback"):
        text += "\n" + report["traceback"]
    elif report.get("message"):
        text += f"\n  message: {report['message']}"
    if report.get("leftovers"):
        text += f"\n  left behind: {report['leftovers']}"
    if result.get("outcome") in ("crash", "hang", "bad-exit", "traceback"):
        text += "\n  stderr: " + result.get("stderr", "")[-2000:]
    return text
