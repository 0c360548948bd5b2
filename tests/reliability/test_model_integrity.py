"""Issue 8, groups 5-6 (and 7 in part): model files are tamper-evident, signed on request, and
crafted learner files never take the process down.

Every tampering case of the issue is rebuilt from a freshly trained tiny model file. "Recomputed"
means the attacker also rewrote the checksum and/or the manifest digest, which anybody can do:
those cases are caught by the cross-reference checks, or only by a signature (as the README says).
"""
import base64
import hashlib
import json
import os
import random
import stat
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

from smdownscale.core import modelfile, native_guard, signing
from smdownscale.core.common import SmdError
from smdownscale.core.stack import StackEnsemble

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREDICTORS = [{"name": "ndvi", "kind": "continuous", "dynamic": True},
              {"name": "lc", "kind": "categorical", "dynamic": False, "categories": [1, 2, 3]},
              {"name": "doy", "kind": "continuous", "dynamic": True, "derived": True}]
BOX_N = {"type": "Polygon", "coordinates": [[[0, 0], [9000, 0], [9000, 4000], [0, 0]]]}
BOX_S = {"type": "Polygon", "coordinates": [[[0, 0], [0, -4000], [9000, -4000], [0, 0]]]}
PARTITIONS = {"names": ["north", "south"], "crs": "EPSG:32650", "geometries": [BOX_N, BOX_S]}
FEW = {"xgboost": {"n_estimators": 8}, "lightgbm": {"n_estimators": 8}, "catboost": {"n_estimators": 8}}
NAMES = ["ndvi", "lc", "doy"]


def make_data(seed, sign, n=240):
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.random(n), rng.integers(1, 4, n), rng.integers(1, 366, n)]).astype("float32")
    y = 0.2 + sign * 0.1 * X[:, 0] + 0.02 * (X[:, 1] == 2) + 0.05 * np.sin(X[:, 2] / 58)
    return X, y


def fit(seed, sign):
    X, y = make_data(seed, sign)
    return StackEnsemble(params=FEW, n_folds=2, n_threads=1, seed=0, feature_names=NAMES,
                         categorical={"lc": [1, 2, 3]}).fit(X, y)


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Verdicts of the child-process check in a private cache folder."""
    old = os.environ.get("SMDOWNSCALE_CACHE_DIR")
    os.environ["SMDOWNSCALE_CACHE_DIR"] = str(tmp_path_factory.mktemp("verdicts"))
    native_guard._VERIFIED.clear()
    yield os.environ["SMDOWNSCALE_CACHE_DIR"]
    native_guard._VERIFIED.clear()
    if old is None:
        os.environ.pop("SMDOWNSCALE_CACHE_DIR", None)
    else:
        os.environ["SMDOWNSCALE_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("integrity")
    models = {"north": fit(0, 1), "south": fit(1, -1)}
    global_model = fit(9, 1)
    path = str(folder / "model.zip")
    modelfile.save_model(path, models=models, global_model=global_model, predictors=PREDICTORS,
                         partitions_json=PARTITIONS, dates=["2019-04-01", "2019-04-02"],
                         metrics={"rows": [{"partition": "north", "model": "Stacking", "n_train": 160,
                                            "n_test": 80, "r_train": 0.99, "rmse_train": 0.001,
                                            "r_test": 0.98, "rmse_test": 0.002}]},
                         params={"folds": 2}, extra={"fallback": {}})
    keys = folder / "keys"
    keys.mkdir()
    key_id = signing.generate_key_pair(str(keys / "alice.pem"), str(keys / "alice.pub"))
    other_id = signing.generate_key_pair(str(folder / "mallory.pem"), str(folder / "mallory.pub"))
    signed = str(folder / "signed.zip")
    signing.sign_model(path, str(keys / "alice.pem"), signed, signer="Alice")
    X = make_data(5, 1, n=50)[0]
    return {"folder": folder, "path": path, "signed": signed, "key_id": key_id, "other_id": other_id,
            "pub": str(keys / "alice.pub"), "keys": str(keys), "other_pub": str(folder / "mallory.pub"),
            "private": str(keys / "alice.pem"), "models": models, "global": global_model, "X": X}


# -- zip surgery ------------------------------------------------------------------------------------
def members(path):
    with zipfile.ZipFile(path) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def write(path, items, *, digest=False, checksums=False):
    """Write ``items`` [(name or ZipInfo, bytes)]; optionally recompute member checksums in the
    manifest and/or the manifest digest (what an attacker can always do)."""
    items = list(items)
    index = {(i.filename if isinstance(i, zipfile.ZipInfo) else i): k for k, (i, _) in enumerate(items)}
    if checksums:
        manifest = json.loads(items[index["manifest.json"]][1])
        for name, data in items:
            name = name.filename if isinstance(name, zipfile.ZipInfo) else name
            if name in manifest["checksums"]:
                manifest["checksums"][name] = hashlib.sha256(data).hexdigest()
        items[index["manifest.json"]] = ("manifest.json", json.dumps(manifest, indent=1).encode())
    if digest:
        items[index["manifest.sha256"]] = (
            "manifest.sha256", hashlib.sha256(items[index["manifest.json"]][1]).hexdigest().encode())
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in items:
            archive.writestr(name, data)
    return str(path)


def with_manifest(path, change):
    """Items of ``path`` with manifest.json edited in place by ``change(manifest dict)``."""
    items = members(path)
    out = []
    for name, data in items:
        if name == "manifest.json":
            manifest = json.loads(data)
            change(manifest)
            data = json.dumps(manifest, indent=1).encode()
        out.append((name, data))
    return out


def load_error(path, **kwargs):
    with pytest.raises(SmdError) as info:
        modelfile.load_model(path, **kwargs)
    return str(info.value)


def partition_predictions(loaded, X):
    return {name: model.predict(X) for name, model in loaded.models.items()}


# -- manifest digest, layout and cross-references ---------------------------------------------------
def test_untampered_file_loads_and_members_are_the_layout(world):
    loaded = modelfile.load_model(world["path"])
    assert list(loaded.models) == ["north", "south"] and loaded.signature["status"] == "unsigned"
    np.testing.assert_array_equal(loaded.models["south"].predict(world["X"]),
                                  world["models"]["south"].predict(world["X"]))
    names = [n for n, _ in members(world["path"])]
    assert names[:2] == ["manifest.json", "manifest.sha256"]
    assert sorted(names[2:]) == sorted(f"models/{d}/{f}" for d in ("p0_north", "p1_south", "global")
                                       for f in ("catboost.cbm", "lightgbm.txt", "meta.json", "xgboost.ubj"))


def test_swapped_partition_folders(world, tmp_path):
    def swap(name):
        return name.replace("p0_north", "@").replace("p1_south", "p0_north").replace("@", "p1_south")
    # the members swapped, nothing else: the checksums give it away
    swapped = [(swap(n), d) for n, d in members(world["path"])]
    assert "checksum mismatch for models/p0_north/" in load_error(write(tmp_path / "a.zip", swapped))
    # ... with the checksums rewritten: the manifest no longer matches its digest
    assert "manifest.json that does not match manifest.sha256" in load_error(
        write(tmp_path / "b.zip", swapped, checksums=True))
    # the manifest's entries swapped and the digest recomputed: the layout check refuses it

    def entries(manifest):
        manifest["models"][0]["dir"], manifest["models"][1]["dir"] = (manifest["models"][1]["dir"],
                                                                      manifest["models"][0]["dir"])
    message = load_error(write(tmp_path / "c.zip", with_manifest(world["path"], entries), digest=True))
    assert "the model of partition 'north' is in 'models/p1_south', the layout puts it in 'models/p0_north'" \
        in message
    # members, checksums and digest all rewritten: only a signature tells (the README says so)
    forged = write(tmp_path / "d.zip", swapped, checksums=True, digest=True)
    loaded = modelfile.load_model(forged)
    np.testing.assert_array_equal(loaded.models["north"].predict(world["X"]),
                                  world["models"]["south"].predict(world["X"]))
    signed_swapped = [(swap(n), d) for n, d in members(world["signed"])]
    forged_signed = write(tmp_path / "e.zip", signed_swapped, checksums=True, digest=True)
    assert "its signature is for another manifest" in load_error(forged_signed)
    without_signature = write(tmp_path / "f.zip", [(n, d) for n, d in signed_swapped if n != "signature.json"],
                              checksums=True, digest=True)
    assert "is not signed, and signed models are required" in load_error(
        without_signature, require_signed=True, trusted_keys=[world["pub"]])


def test_swapped_geometries(world, tmp_path):
    def swap(manifest):
        geometries = manifest["partitions"]["geometries"]
        geometries[0], geometries[1] = geometries[1], geometries[0]
    assert "does not match manifest.sha256" in load_error(write(tmp_path / "a.zip", with_manifest(world["path"], swap)))
    forged = write(tmp_path / "b.zip", with_manifest(world["signed"], swap), digest=True)
    assert "its signature is for another manifest; the file was modified after signing" in load_error(forged)


def test_dropped_partition_does_not_fall_back_silently(world, tmp_path):
    def drop(manifest):
        manifest["models"] = manifest["models"][:1]
        manifest["checksums"] = {k: v for k, v in manifest["checksums"].items() if "p1_south" not in k}
    items = [(n, d) for n, d in with_manifest(world["path"], drop) if "p1_south" not in n]
    assert "does not match manifest.sha256" in load_error(write(tmp_path / "a.zip", items))
    message = load_error(write(tmp_path / "b.zip", items, digest=True))
    assert "partition(s) ['south'] have no model and are not a recorded fallback" in message
    # only the members dropped: the manifest lists them
    gone = [(n, d) for n, d in members(world["path"]) if "p1_south" not in n]
    assert "the model folder(s) ['models/p1_south'] are missing" in load_error(write(tmp_path / "c.zip", gone))


def test_global_model_pointed_at_a_partition(world, tmp_path):
    def point(manifest):
        manifest["global_model"] = "models/p0_north"
    assert "does not match manifest.sha256" in load_error(write(tmp_path / "a.zip", with_manifest(world["path"], point)))
    message = load_error(write(tmp_path / "b.zip", with_manifest(world["path"], point), digest=True))
    assert "global_model must be 'models/global' or null, not 'models/p0_north'" in message


def test_meta_weights_edit_with_member_checksum_recomputed(world, tmp_path):
    def edit(weights_change):
        items = []
        for name, data in members(world["path"]):
            if name == "models/p0_north/meta.json":
                meta = json.loads(data)
                meta["weights"] = weights_change(meta["weights"])
                data = json.dumps(meta).encode()
            items.append((name, data))
        return items
    double = edit(lambda w: [2 * v for v in w])
    assert "checksum mismatch for models/p0_north/meta.json" in load_error(write(tmp_path / "a.zip", double))
    assert "manifest.json that does not match manifest.sha256" in load_error(
        write(tmp_path / "b.zip", double, checksums=True))
    negative = edit(lambda w: [-v for v in w])
    assert "weights must be 3 non-negative numbers" in load_error(
        write(tmp_path / "c.zip", negative, checksums=True, digest=True))
    short = edit(lambda w: w[:2])
    assert "weights must be 3 non-negative numbers" in load_error(
        write(tmp_path / "d.zip", short, checksums=True, digest=True))
    # a plausible edit with everything recomputed loads unsigned (and changes predictions) ...
    forged = modelfile.load_model(write(tmp_path / "e.zip", double, checksums=True, digest=True))
    assert not np.allclose(forged.models["north"].predict(world["X"]),
                           world["models"]["north"].predict(world["X"]))
    # ... and is refused once the model is signed
    signed_double = []
    for name, data in members(world["signed"]):
        if name == "models/p0_north/meta.json":
            meta = json.loads(data)
            meta["weights"] = [2 * v for v in meta["weights"]]
            data = json.dumps(meta).encode()
        signed_double.append((name, data))
    assert "its signature is for another manifest" in load_error(
        write(tmp_path / "f.zip", signed_double, checksums=True, digest=True),
        require_signed=True, trusted_keys=[world["pub"]])


def test_encoder_and_predictor_cross_references(world, tmp_path):
    def meta_edit(change):
        items = []
        for name, data in members(world["path"]):
            if name == "models/global/meta.json":
                meta = json.loads(data)
                change(meta)
                data = json.dumps(meta).encode()
            items.append((name, data))
        return write(tmp_path / "meta.zip", items, checksums=True, digest=True)

    message = load_error(meta_edit(lambda m: m["encoder"]["categorical"].update(lc=[1, 2, 4])))
    assert "models/global/meta.json is invalid (the categories of 'lc' [1, 2, 4] are not the manifest's [1, 2, 3])" \
        in message
    message = load_error(meta_edit(lambda m: m["encoder"].update(feature_names=["doy", "lc", "ndvi"])))
    assert "it was trained on predictors ['doy', 'lc', 'ndvi'], the manifest lists ['ndvi', 'lc', 'doy']" in message
    message = load_error(meta_edit(lambda m: m.update(base_models=["xgboost", "lightgbm"], weights=[0.5, 0.5])))
    assert "the folder holds ['catboost.cbm', 'lightgbm.txt', 'meta.json', 'xgboost.ubj'], meta.json needs" \
        in message

    def names(manifest):
        manifest["predictor_names"] = ["ndvi", "doy", "lc"]
    message = load_error(write(tmp_path / "n.zip", with_manifest(world["path"], names), digest=True))
    assert "predictor_names does not match the predictors" in message

    def rename(manifest):
        manifest["partitions"]["names"] = ["north", "north"]
    assert "the partition names repeats ['north']" in load_error(
        write(tmp_path / "r.zip", with_manifest(world["path"], rename), digest=True))


@pytest.mark.parametrize("change, expected", [
    (lambda m: m.update(predictors="ndvi"), "predictors must be a non-empty list"),
    (lambda m: m.update(models={"north": "x"}), "models must be a list"),
    (lambda m: m.update(checksums=["x"]), "checksums must map member names to sha256 hex digests"),
    (lambda m: m["partitions"].update(names=5), "the partition names must be a list of non-empty names"),
    (lambda m: m.pop("dates"), "it lacks ['dates']"),
    (lambda m: m.update(metrics={"rows": [{"r_test": "0.9"}]}), "metrics row 1: r_test must be a number"),
    (lambda m: m.update(params=json.loads("[" * 70 + "]" * 70)), "nested more than 64 levels"),
    (lambda m: m.update(dates=["2019-02-30"]), "date '2019-02-30' is not YYYY-MM-DD"),
    (lambda m: m.update(surprise=1), "it has unknown entries ['surprise']"),
])
def test_malformed_manifest_gives_one_clear_error(world, tmp_path, change, expected):
    path = write(tmp_path / "m.zip", with_manifest(world["path"], change), digest=True)
    with pytest.raises(SmdError, match="the manifest is invalid|nested more than") as info:
        modelfile.read_manifest(path)
    assert expected in str(info.value)


def test_deeply_nested_duplicate_keys_and_nan_manifests(world, tmp_path):
    items = dict(members(world["path"]))
    for text, expected in (("[" * 200000 + "]" * 200000, "nested too deeply"),
                           ('{"format": "smdownscale-model", "format": "x"}', "repeated key(s) ['format']"),
                           ('{"version": NaN}', "NaN is not allowed"),
                           ("\xff", "not valid JSON")):
        data = text.encode("latin-1")
        items["manifest.json"] = data
        items["manifest.sha256"] = hashlib.sha256(data).hexdigest().encode()
        with pytest.raises(SmdError) as info:
            modelfile.read_manifest(write(tmp_path / "deep.zip", items.items()))
        assert expected in str(info.value)


def test_random_one_character_manifest_edits(world, tmp_path):
    """100 seeded one-character edits: all refused; with the digest recomputed, never anything
    but SmdError; on a signed model every one is refused even with the digest recomputed."""
    items = members(world["path"])
    signed_items = members(world["signed"])
    manifest = dict(items)["manifest.json"]
    reference = json.loads(manifest)
    rng = random.Random(8)
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz{}[]:,.\"-_ \n/"
    outcomes = {"refused": 0, "refused_recomputed": 0, "accepted_recomputed_same": 0,
                "accepted_recomputed_changed": 0, "refused_signed": 0}
    for _ in range(100):
        position = rng.randrange(len(manifest))
        char = rng.choice([c for c in alphabet if c.encode() != manifest[position:position + 1]])
        edited = manifest[:position] + char.encode() + manifest[position + 1:]

        def swap(source):
            return [(n, edited if n == "manifest.json" else d) for n, d in source]
        with pytest.raises(SmdError, match="does not match manifest.sha256"):
            modelfile.read_manifest(write(tmp_path / "edit.zip", swap(items)))
        outcomes["refused"] += 1
        try:
            accepted = modelfile.read_manifest(write(tmp_path / "edit2.zip", swap(items), digest=True))
        except SmdError:
            outcomes["refused_recomputed"] += 1
        else:
            same = accepted == reference
            outcomes["accepted_recomputed_same" if same else "accepted_recomputed_changed"] += 1
        with pytest.raises(SmdError, match="signature is for another manifest"):
            modelfile.read_manifest(write(tmp_path / "edit3.zip", swap(signed_items), digest=True))
        outcomes["refused_signed"] += 1
    print("one-character manifest edits:", outcomes)
    assert outcomes["refused"] == outcomes["refused_signed"] == 100
    assert sum(outcomes.values()) == 300
    # whitespace edits keep the semantics; a recomputed digest defeats the unsigned check for
    # value edits (dates, metrics, creation time): that is what signing is for
    assert outcomes["refused_recomputed"] > 50, outcomes


# -- the zip directory ---------------------------------------------------------------------------------
def test_duplicate_traversal_symlink_and_extra_members(world, tmp_path):
    items = members(world["path"])
    duplicate = items + [("models/p0_north/meta.json", b"{}")]
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = write(tmp_path / "dup.zip", duplicate)
    assert "lists the member 'models/p0_north/meta.json' twice" in load_error(path)
    for name in ("../evil.json", "/etc/evil.json", "models/../manifest.json", "models\\p0_north\\meta.json",
                 "C:/models/global/meta.json"):
        assert f"has a member with an unsafe path {ascii(name)}" in load_error(
            write(tmp_path / "trav.zip", items + [(name, b"{}")]))
    link = zipfile.ZipInfo("models/p0_north/meta.json")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    linked = [(link, b"/etc/passwd") if n == "models/p0_north/meta.json" else (n, d) for n, d in items]
    assert "member 'models/p0_north/meta.json' that is a symbolic link" in load_error(write(tmp_path / "l.zip", linked))
    folder = zipfile.ZipInfo("models/p0_north/")
    assert "unexpected folder entry 'models/p0_north/'" in load_error(write(tmp_path / "d.zip", items + [(folder, b"")]))
    assert "unexpected member 'models/p0_north/model.pkl'" in load_error(
        write(tmp_path / "pkl.zip", items + [("models/p0_north/model.pkl", b"\x80\x04K\x01.")]))
    assert "the model folder(s) ['models/p7_x'] are not listed in the manifest" in load_error(
        write(tmp_path / "x.zip", items + [("models/p7_x/meta.json", b"{}")]))
    missing = [(n, d) for n, d in items if n != "models/p1_south/xgboost.ubj"]
    assert "the file lacks member(s) ['models/p1_south/xgboost.ubj']" in load_error(write(tmp_path / "m.zip", missing))
    no_digest = [(n, d) for n, d in items if n != "manifest.sha256"]
    assert "lacks manifest.sha256" in load_error(write(tmp_path / "nd.zip", no_digest))


def _patch_entry(path, name, *, method=None, file_size=None):
    """Rewrite the compression method / declared uncompressed size of one member in place."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
        start = archive.start_dir
    data = bytearray(open(path, "rb").read())
    local = info.header_offset
    position = start
    while data[position:position + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack("<HHH", data[position + 28:position + 34])
        if data[position + 46:position + 46 + n].decode() == name:
            if method is not None:
                data[position + 10:position + 12] = struct.pack("<H", method)
                data[local + 8:local + 10] = struct.pack("<H", method)
            if file_size is not None:
                data[position + 24:position + 28] = struct.pack("<I", file_size)
                data[local + 22:local + 26] = struct.pack("<I", file_size)
        position += 46 + n + m + k
    open(path, "wb").write(bytes(data))


BOMB_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from smdownscale.core import modelfile
from smdownscale.core.common import SmdError
out = {}
for key, path in (("bomb", sys.argv[2]), ("ratio", sys.argv[2]), ("liar", sys.argv[3])):
    if key == "ratio":
        modelfile.MAX_MEMBER_BYTES = 2 ** 32      # without the per-member cap, the ratio cap
    try:
        modelfile.read_manifest(path)
        out[key] = "accepted"
    except SmdError as err:
        out[key] = str(err)
# VmHWM: this program's own peak (ru_maxrss would include the forked copy of pytest)
with open("/proc/self/status") as status:
    out["peak_kb"] = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps(out))
"""


def test_compressible_bomb_refused_before_decompression_with_bounded_memory(world, tmp_path):
    # a 2.2 GB member of zeros deflated to ~2.2 MB (the case), built from one flushed
    # 1 MiB deflate block repeated: declared size and method patched into the zip headers
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(1024 ** 2)) + compressor.flush(zlib.Z_FULL_FLUSH)
    count = 2100
    stream = block * count + compressor.flush()
    items = [(n, stream if n == "models/p0_north/lightgbm.txt" else d) for n, d in members(world["path"])]
    bomb = str(tmp_path / "bomb.zip")
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in items:
            archive.writestr(name, data)
    _patch_entry(bomb, "models/p0_north/lightgbm.txt", method=zipfile.ZIP_DEFLATED, file_size=count * 1024 ** 2)
    assert os.path.getsize(bomb) < 3 * 1024 ** 2
    # a member whose directory entry under-declares its size (16 MB of zeros declared as 1 KB)
    liar = str(tmp_path / "liar.zip")
    items = [(n, bytes(16 * 1024 ** 2) if n == "models/p0_north/lightgbm.txt" else d)
             for n, d in members(world["path"])]
    write(liar, items)
    _patch_entry(liar, "models/p0_north/lightgbm.txt", file_size=1024)
    done = subprocess.run([sys.executable, "-c", BOMB_CHILD, os.path.join(ROOT, ".plugin-path"), bomb, liar],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "declares 2,202,009,600 bytes for 'models/p0_north/lightgbm.txt' (at most 268,435,456 accepted); " \
           "it was not decompressed" in result["bomb"]
    assert "declares 'models/p0_north/lightgbm.txt' compressed 1011x (at most 100x accepted: a zip bomb?)" \
        in result["ratio"]
    assert "cannot be read: 'models/p0_north/lightgbm.txt' (Bad CRC-32" in result["liar"], result["liar"]
    print(f"bomb child peak RSS: {result['peak_kb'] / 1024:.0f} MB")
    assert result["peak_kb"] < 120 * 1024, result   # ~35 MB measured (Python + numpy)


# -- learner members: never a crash ---------------------------------------------------------------------
def _flipped(data, seed, alphabet=None):
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(16):
        position = rng.randrange(len(out))
        out[position] = ord(rng.choice(alphabet)) if alphabet else rng.randrange(256)
    return bytes(out)


@pytest.mark.parametrize("booster, file_name, seeds, alphabet, crash", [
    ("xgboost", "xgboost.ubj", range(6), None, "SIGSEGV"),
    ("lightgbm", "lightgbm.txt", range(4), "0123456789-=.\n e", "SIGABRT"),
    ("catboost", "catboost.cbm", range(2), None, None),
])
def test_booster_with_flipped_bytes_and_recomputed_checksums(world, tmp_path, booster, file_name, seeds,
                                                            alphabet, crash):
    member = f"models/p1_south/{file_name}"
    original = dict(members(world["path"]))[member]
    messages = []
    for seed in seeds:
        items = [(n, _flipped(d, seed, alphabet) if n == member else d) for n, d in members(world["path"])]
        path = write(tmp_path / f"{booster}-{seed}.zip", items, checksums=True, digest=True)
        try:
            modelfile.load_model(path)
        except SmdError as err:
            messages.append(str(err))
            assert member in str(err) and "damaged or was crafted" in str(err), str(err)
    # this process is alive; most flips are refused, and a native crash became a message
    assert len(messages) >= len(seeds) - 1, messages
    if crash:
        assert any(f"crashed the check process ({crash})" in m and "would have taken QGIS down" in m
                   for m in messages), messages
    assert modelfile.load_model(world["path"]).models["south"].base_model_names_ == ["xgboost", "lightgbm",
                                                                                     "catboost"]
    assert original == dict(members(world["path"]))[member]


def test_child_verdicts_are_cached_and_timeouts_are_clear(world, tmp_path, private_cache, monkeypatch):
    # as on another machine: an empty cache, so the member is checked in a child once
    data = dict(members(world["path"]))["models/global/xgboost.ubj"]
    monkeypatch.setenv("SMDOWNSCALE_CACHE_DIR", str(tmp_path / "cold"))
    native_guard._VERIFIED.clear()
    item = {"member": "models/global/xgboost.ubj", "model": "xgboost", "data": data,
            "sha256": hashlib.sha256(data).hexdigest(), "n_features": 5}
    assert native_guard.check_members([item], label="m") == {"checked": 1, "cached": 0}
    native_guard._VERIFIED.clear()
    assert native_guard.check_members([item], label="m") == {"checked": 0, "cached": 1}
    assert len(os.listdir(tmp_path / "cold" / "verified")) == 1
    wrong = dict(item, n_features=7, sha256=item["sha256"])
    with pytest.raises(SmdError, match=r"refused by xgboost \(it has 5 input columns, meta.json describes 7\); the file is damaged"):
        native_guard.check_members([wrong], label="m")
    monkeypatch.setenv("SMDOWNSCALE_CACHE_DIR", str(tmp_path / "cold2"))
    monkeypatch.setenv("SMDOWNSCALE_GUARD_TIMEOUT", "0.001")
    native_guard._VERIFIED.clear()
    with pytest.raises(SmdError, match="took longer than 0 s; the file may be damaged or crafted"):
        native_guard.check_members([item], label="m")


def test_python_executable_is_a_python():
    assert os.path.basename(native_guard.python_executable()).startswith("python")


# -- signing ----------------------------------------------------------------------------------------------
def test_signing_round_trip(world):
    info = signing.verify_signature(world["signed"], [world["pub"]])
    assert info["status"] == "trusted" and info["key_id"] == world["key_id"] and info["signer"] == "Alice"
    assert info["key_file"] == world["pub"]
    assert signing.verify_signature(world["signed"], [world["keys"]])["status"] == "trusted"  # a folder
    assert signing.verify_signature(world["signed"])["status"] == "signed"
    assert signing.verify_signature(world["path"], [world["pub"]])["status"] == "unsigned"
    loaded = modelfile.load_model(world["signed"], require_signed=True, trusted_keys=[world["pub"]])
    assert loaded.signature["status"] == "trusted"
    X = world["X"]
    np.testing.assert_array_equal(loaded.models["north"].predict(X), world["models"]["north"].predict(X))
    np.testing.assert_array_equal(loaded.global_model.predict(X), world["global"].predict(X))
    assert stat.S_IMODE(os.stat(world["private"]).st_mode) == 0o600
    with zipfile.ZipFile(world["signed"]) as archive:
        signature = json.loads(archive.read("signature.json"))
        assert signature["manifest_sha256"] == archive.read("manifest.sha256").decode().strip()
        assert len(base64.b64decode(signature["signature"])) == 64


def test_untrusted_unsigned_and_forged_signatures_are_refused(world, tmp_path):
    message = load_error(world["signed"], require_signed=True, trusted_keys=[world["other_pub"]])
    assert f"is signed by key {world['key_id']} (Alice), which is not among the trusted keys" in message
    assert signing.verify_signature(world["signed"], [world["other_pub"]])["status"] == "untrusted"
    message = load_error(world["path"], require_signed=True, trusted_keys=[world["pub"]])
    assert "is not signed, and signed models are required (REQUIRE_SIGNED). Ask whoever trained it" in message
    assert "no trusted public key was given" in load_error(world["signed"], require_signed=True)
    assert "alice.pem' is a private key. Trusted keys must be public key files" in load_error(
        world["signed"], require_signed=True,
                                                trusted_keys=[world["private"]])
    # the signer name edited: the signature no longer verifies
    items = []
    for name, data in members(world["signed"]):
        if name == "signature.json":
            signature = json.loads(data)
            signature["signer"] = "Bob"
            data = json.dumps(signature).encode()
        items.append((name, data))
    message = load_error(write(tmp_path / "bob.zip", items), trusted_keys=[world["pub"]])
    assert f"the signature by trusted key {world['key_id']} is not valid" in message
    # re-signed by another key: untrusted
    resigned = str(tmp_path / "resigned.zip")
    signing.sign_model(world["signed"], os.path.join(world["folder"], "mallory.pem"), resigned)
    assert signing.verify_signature(resigned, [world["pub"]])["status"] == "untrusted"
    with pytest.raises(SmdError, match="already exists; choose a new file for the private key"):
        signing.generate_key_pair(world["private"], str(tmp_path / "x.pub"))


def test_missing_cryptography_only_matters_when_signing_is_used(world, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_crypto(name, *args, **kwargs):
        if name.startswith("cryptography"):
            raise ImportError("No module named 'cryptography'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_crypto)
    assert modelfile.load_model(world["path"]).signature["status"] == "unsigned"
    assert modelfile.read_manifest(world["signed"])["format"] == "smdownscale-model"
    with pytest.raises(SmdError, match="needs the Python package 'cryptography'.*apt install python3-cryptography"):
        modelfile.read_manifest(world["signed"], require_signed=True, trusted_keys=[world["pub"]])


# -- through qgis_process -----------------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.exists("/usr/bin/qgis_process.bin"), reason="no qgis_process.bin")
def test_predict_through_qgis_process_with_require_signed(world, tmp_path):
    from affine import Affine

    from smdownscale.core.common import write_series
    from smdownscale.core.dataset import write_manifest
    from smdownscale.core.grids import Grid

    dates = ["2019-04-01"]
    predictors = [{"name": "a", "kind": "continuous", "dynamic": True},
                  {"name": "doy", "kind": "continuous", "dynamic": True, "derived": True}]
    dataset = tmp_path / "dataset"
    (dataset / "fine").mkdir(parents=True)
    (dataset / "coarse").mkdir()
    fine = Grid("EPSG:32633", Affine(1000, 0, 400000, 0, -1000, 5000000), 18, 18)
    coarse = Grid("EPSG:32633", Affine(9000, 0, 400000, 0, -9000, 5000000), 2, 2)
    a = (np.arange(18 * 18).reshape(18, 18) % 7 / 10).astype("float32")
    write_series(str(dataset / "fine" / "a.tif"), [a], dates, fine.profile())
    write_series(str(dataset / "coarse" / "a.tif"), [a.reshape(2, 9, 2, 9).mean(axis=(1, 3))], dates,
                 coarse.profile())
    write_series(str(dataset / "coarse" / "soil_moisture.tif"), [np.full((2, 2), 0.3, "float32")], dates,
                 coarse.profile())
    write_manifest(str(dataset), dates=dates, predictors=predictors, fine_grid=fine, coarse_grid=coarse,
                   min_valid_fraction=0.5, mask_classes={})
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.random(120), rng.integers(80, 120, 120)]).astype("float32")
    model = StackEnsemble(base_models=("xgboost",), n_folds=2, n_threads=1, feature_names=["a", "doy"],
                          params={"xgboost": {"n_estimators": 5}}).fit(X, 0.1 + 0.5 * X[:, 0])
    unsigned = str(tmp_path / "unsigned.smdmodel.zip")
    modelfile.save_model(unsigned, models={}, global_model=model, predictors=predictors, dates=dates)
    team = tmp_path / "team"
    team.mkdir()
    profile = tmp_path / "profile"
    ini = profile / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    # plugin enabled, and the trusted keys setting the algorithm falls back to (a folder that
    # also holds the private key: skipped)
    ini.write_text(f"[PythonPlugins]\nsmdownscale=true\n\n[smdownscale]\ntrusted_keys={team}\n")
    env = dict(os.environ, SMDOWNSCALE_QGIS_PROFILE=str(profile), QT_QPA_PLATFORM="offscreen")

    def run(alg, **params):
        args = [os.path.join(ROOT, "scripts", "qgis-process"), "run", f"smdownscale:{alg}", "--json", "--"]
        args += [f"{k}={v}" for k, v in params.items()]
        return subprocess.run(args, capture_output=True, text=True, env=env, timeout=240)

    done = run("generatekeys", OUTPUT_PRIVATE=team / "me.pem", OUTPUT_PUBLIC=team / "me.pub")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    key = json.loads(done.stdout)["results"]["KEY_ID"]
    assert len(key) == 16 and key == signing.key_id(signing.load_public_key(str(team / "me.pub")))
    again = run("generatekeys", OUTPUT_PRIVATE=team / "me.pem", OUTPUT_PUBLIC=team / "other.pub")
    assert again.returncode != 0 and "already exists; choose a new file for the private key" in again.stderr
    signed = str(tmp_path / "signed.smdmodel.zip")
    done = run("signmodel", MODEL=unsigned, PRIVATE_KEY=team / "me.pem", SIGNER="Alice", OUTPUT=signed)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads(done.stdout)["results"]["KEY_ID"] == key
    refused = run("predict", DATASET=dataset, MODEL=unsigned, REQUIRE_SIGNED="true", OUTPUT=tmp_path / "u.tif")
    assert refused.returncode != 0
    assert "is not signed, and signed models are required (REQUIRE_SIGNED)" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
    assert not (tmp_path / "u.tif").exists()
    untrusted = run("predict", DATASET=dataset, MODEL=signed, REQUIRE_SIGNED="true",
                    TRUSTED_KEYS=world["other_pub"], OUTPUT=tmp_path / "x.tif")
    assert untrusted.returncode != 0 and "not among the trusted keys" in untrusted.stdout + untrusted.stderr
    done = run("predict", DATASET=dataset, MODEL=signed, REQUIRE_SIGNED="true", OUTPUT=tmp_path / "s.tif")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads(done.stdout)["results"]["N_PIXELS"] == 18 * 18


def test_model_report_shows_the_signature_status(qgis_app, world):
    from qgis.core import QgsSettings

    from smdownscale.resources import TRUSTED_KEYS_SETTING
    from smdownscale.ui.model_report import ModelReportDialog

    settings = QgsSettings()
    previous = settings.value(TRUSTED_KEYS_SETTING, None)
    try:
        settings.remove(TRUSTED_KEYS_SETTING)
        dialog = ModelReportDialog(model_path=world["path"])
        assert "Signature: none (unsigned; Predict with REQUIRE_SIGNED refuses it)" in dialog.summary.text()
        assert dialog.load(world["signed"]) is True
        assert f"Signature: by key {world['key_id']} (Alice); not checked" in dialog.summary.text()
        settings.setValue(TRUSTED_KEYS_SETTING, world["pub"])
        assert dialog.load(world["signed"]) is True
        assert f"Signature: valid, by trusted key {world['key_id']} (Alice)" in dialog.summary.text()
        settings.setValue(TRUSTED_KEYS_SETTING, world["other_pub"])
        dialog.load(world["signed"])
        assert "which is not among the trusted keys" in dialog.summary.text()
    finally:
        if previous is None:
            settings.remove(TRUSTED_KEYS_SETTING)
        else:
            settings.setValue(TRUSTED_KEYS_SETTING, previous)


def test_a_trained_model_with_a_fallback_partition_passes_every_check(tmp_path):
    """train_model's real output (partitions, fallback to the global model, Table-3 metrics)."""
    from smdownscale.core.common import write_series
    from smdownscale.core.dataset import write_manifest
    from smdownscale.core.grids import Grid
    from smdownscale.core.partitions import Partitions
    from smdownscale.core.train import train_model

    crs, cell, x0, y0, n, n_dates = "EPSG:32650", 9000.0, 500000.0, 4000000.0, 6, 6
    folder = tmp_path / "dataset"
    (folder / "fine").mkdir(parents=True)
    (folder / "coarse").mkdir()
    coarse = Grid(crs, [cell, 0, x0, 0, -cell, y0], n, n)
    fine = Grid(crs, [cell / 2, 0, x0, 0, -cell / 2, y0], 2 * n, 2 * n)
    dates = [f"2019-04-{d:02d}" for d in range(1, n_dates + 1)]
    x = np.random.default_rng(0).random((n_dates, n, n)).astype("float32")
    lc = (1 + (np.arange(n * n).reshape(n, n) % 2)).astype("float32")
    up = lambda a: np.kron(a, np.ones((2, 2), dtype="float32"))  # noqa: E731
    write_series(str(folder / "coarse" / "x.tif"), list(x), dates, coarse.profile())
    write_series(str(folder / "fine" / "x.tif"), [up(b) for b in x], dates, fine.profile())
    write_series(str(folder / "coarse" / "lc.tif"), [lc], None, coarse.profile())
    write_series(str(folder / "fine" / "lc.tif"), [up(lc)], None, fine.profile())
    write_series(str(folder / "coarse" / "soil_moisture.tif"), list(0.1 + 0.3 * x), dates, coarse.profile())
    write_manifest(str(folder), dates=dates, fine_grid=fine, coarse_grid=coarse, min_valid_fraction=0.5,
                   mask_classes={}, predictors=[
                       {"name": "x", "kind": "continuous", "dynamic": True},
                       {"name": "lc", "kind": "categorical", "dynamic": False, "categories": [1, 2]},
                       {"name": "doy", "kind": "continuous", "dynamic": True, "derived": True}])

    def box(col0, col1, row0, row1):
        xa, xb, ya, yb = x0 + col0 * cell, x0 + col1 * cell, y0 - row1 * cell, y0 - row0 * cell
        return {"type": "Polygon", "coordinates": [[[xa, ya], [xb, ya], [xb, yb], [xa, yb], [xa, ya]]]}
    partitions = Partitions(["big", "tiny"], [box(0, n, 0, n - 1), box(0, 1, n - 1, n)], crs)
    path = str(tmp_path / "trained.zip")
    train_model(str(folder), path, partitions=partitions, folds=2, n_threads=1, train_global=False,
                fallback_to_global=True, min_samples=20, base_models=("lightgbm", "xgboost"),
                params={"lightgbm": {"n_estimators": 5, "min_child_samples": 5}, "xgboost": {"n_estimators": 5}})
    loaded = modelfile.load_model(path)
    assert list(loaded.models) == ["big"] and loaded.global_model is not None
    assert loaded.manifest["extra"]["fallback"] == {"tiny": "WP"}
    assert {row["partition"] for row in loaded.metrics["rows"]} == {"big", "WP"}

    # the fallback record removed (digest recomputed): 'tiny' would silently have no model
    def forget(manifest):
        manifest["extra"]["fallback"] = {}
    message = load_error(write(tmp_path / "forgot.zip", with_manifest(path, forget), digest=True))
    assert "partition(s) ['tiny'] have no model and are not a recorded fallback" in message


def test_a_broken_check_interpreter_is_not_blamed_on_the_file(world, tmp_path, monkeypatch):
    data = dict(members(world["path"]))["models/global/catboost.cbm"]
    monkeypatch.setenv("SMDOWNSCALE_CACHE_DIR", str(tmp_path / "cache"))
    # the child sees this process's sys.path: a broken catboost install shadows the real one
    (tmp_path / "broken" / "catboost").mkdir(parents=True)
    (tmp_path / "broken" / "catboost" / "__init__.py").write_text(
        "raise ImportError(\"No module named 'catboost' (simulated broken install)\")\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "broken")] + sys.path)
    native_guard._VERIFIED.clear()
    item = {"member": "models/global/catboost.cbm", "model": "catboost", "data": data,
            "sha256": hashlib.sha256(data).hexdigest(), "n_features": 5}
    with pytest.raises(SmdError, match=r"Cannot check the catboost learners of 'm' in a separate process: it "
                                       r"could not load catboost \(ImportError: No module named 'catboost' \(simulated"):
        native_guard.check_members([item], label="m")
    assert not os.path.exists(tmp_path / "cache" / "verified")
