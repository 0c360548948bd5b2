"""Model file: native round trip, no pickle, integrity checks."""
import hashlib
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from smdownscale.core import modelfile
from smdownscale.core.common import SmdError
from smdownscale.core.stack import StackEnsemble

PREDICTORS = [{"name": "ndvi", "kind": "continuous", "dynamic": True},
              {"name": "lc", "kind": "categorical", "dynamic": False, "categories": [1, 2, 3]},
              {"name": "doy", "kind": "continuous", "dynamic": True, "derived": True}]
PARTITIONS = {"names": ["north", "south"], "crs": "EPSG:32650",
              "geometries": [{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
                             {"type": "Polygon", "coordinates": [[[0, 0], [0, -1], [1, -1], [0, 0]]]}]}
FEW = {"xgboost": {"n_estimators": 30}, "lightgbm": {"n_estimators": 30}, "catboost": {"n_estimators": 30}}


def make_data(seed, sign):
    rng = np.random.default_rng(seed)
    n = 300
    X = np.column_stack([rng.random(n), rng.integers(1, 4, n), rng.integers(1, 366, n)]).astype("float32")
    y = 0.2 + sign * 0.1 * X[:, 0] + 0.02 * (X[:, 1] == 2) + 0.05 * np.sin(X[:, 2] / 58)
    return X, y


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    models = {}
    for i, name in enumerate(["north", "south"]):
        X, y = make_data(i, 1 if i == 0 else -1)
        models[name] = StackEnsemble(params=FEW, n_threads=1, seed=0, feature_names=["ndvi", "lc", "doy"],
                                     categorical={"lc": [1, 2, 3]}).fit(X, y)
    Xg, yg = make_data(9, 1)
    global_model = StackEnsemble(base_models=("lightgbm", "catboost"), params=FEW, n_threads=1,
                                 feature_names=["ndvi", "lc", "doy"], categorical=["lc"]).fit(Xg, yg)
    path = str(folder / "model.zip")
    modelfile.save_model(path, models=models, global_model=global_model, predictors=PREDICTORS,
                         partitions_json=PARTITIONS, dates=["2019-04-01", "2019-04-02"],
                         metrics={"rows": []}, params={"folds": 5},
                         fine_grid={"crs": "EPSG:32650", "transform": [1000, 0, 0, 0, -1000, 0], "width": 9,
                                    "height": 9})
    return path, models, global_model, Xg


def rewrite(src, dst, change, *, redigest=False):
    """Copy zip ``src`` to ``dst`` passing every (name, bytes) through ``change`` (None drops it).

    ``redigest``: write manifest.sha256 for the changed manifest (a deliberate edit)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        manifest = None
        for name in zin.namelist():
            out = change(name, zin.read(name))
            if out is not None and out[0] == "manifest.json":
                manifest = out[1]
            if out is not None and out[0] == "manifest.sha256" and redigest:
                out = (out[0], hashlib.sha256(manifest).hexdigest().encode())
            if out is not None:
                zout.writestr(out[0], out[1])
    return dst


def test_round_trip_gives_identical_predictions(saved):
    path, models, global_model, X = saved
    loaded = modelfile.load_model(path)
    assert list(loaded.models) == ["north", "south"]
    assert loaded.predictor_names == ["ndvi", "lc", "doy"]
    assert loaded.partitions_json == PARTITIONS
    assert loaded.dates == ["2019-04-01", "2019-04-02"]
    assert loaded.manifest["fine_grid"]["width"] == 9
    for name, model in models.items():
        np.testing.assert_array_equal(loaded.models[name].predict(X), model.predict(X))
        np.testing.assert_array_equal(loaded.models[name].base_predict(X), model.base_predict(X))
        assert loaded.models[name].encoded_feature_names_ == ["ndvi", "lc_1", "lc_2", "lc_3", "doy"]
    np.testing.assert_array_equal(loaded.global_model.predict(X), global_model.predict(X))
    assert loaded.global_model.base_model_names_ == ["lightgbm", "catboost"]
    # the two partitions learned opposite ndvi slopes and keep them after loading
    grid = np.array([[0.1, 1, 100], [0.9, 1, 100]], dtype="float32")
    assert np.diff(loaded.models["north"].predict(grid))[0] > 0.04
    assert np.diff(loaded.models["south"].predict(grid))[0] < -0.04


def test_members_are_native_formats_and_no_pickle(saved):
    path = saved[0]
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["format"] == "smdownscale-model" and manifest["version"] == 2
        assert set(manifest["checksums"]) == set(names) - {"manifest.json", "manifest.sha256"}
        assert archive.read("manifest.sha256").decode().strip() == \
            hashlib.sha256(archive.read("manifest.json")).hexdigest()
        assert set(manifest["library_versions"]) >= {"xgboost", "lightgbm", "catboost"}
        for name in names:
            data = archive.read(name)
            assert manifest["checksums"].get(name, hashlib.sha256(data).hexdigest()) == \
                hashlib.sha256(data).hexdigest()
            assert os.path.splitext(name)[1] in (".json", ".ubj", ".txt", ".cbm", ".sha256"), name
            # pickle streams start with the PROTO opcode 0x80; none of the members is one
            assert not data.startswith(b"\x80"), name
            assert b"joblib" not in data and b"sklearn" not in data, name
        xgb_member = [n for n in names if n.endswith("xgboost.ubj")][0]
        assert archive.read(xgb_member)[:1] == b"{"             # UBJSON object
        lgb_member = [n for n in names if n.endswith("lightgbm.txt")][0]
        assert archive.read(lgb_member).startswith(b"tree\n")  # LightGBM text model
        meta = json.loads(archive.read("models/global/meta.json"))
        assert meta["base_models"] == ["lightgbm", "catboost"] and min(meta["weights"]) >= 0


def test_tampered_member_fails_with_checksum_mismatch(saved, tmp_path):
    def flip(name, data):
        if name.endswith("north/meta.json"):
            meta = json.loads(data)
            meta["weights"][0] += 1.0
            data = json.dumps(meta).encode()
        return name, data
    bad = rewrite(saved[0], str(tmp_path / "bad.zip"), flip)
    with pytest.raises(SmdError, match=r"checksum mismatch for models/p0_north/meta.json"):
        modelfile.load_model(bad)


def test_extra_pickled_member_is_rejected(saved, tmp_path):
    evil = pickle.dumps({"weights": [1.0]})
    def add(name, data):
        return name, data
    bad = rewrite(saved[0], str(tmp_path / "extra.zip"), add)
    with zipfile.ZipFile(bad, "a") as archive:
        archive.writestr("models/p0_north/model.pkl", evil)
    with pytest.raises(SmdError, match="unexpected member"):
        modelfile.load_model(bad)


def test_missing_member_truncated_and_not_a_zip(saved, tmp_path):
    dropped = rewrite(saved[0], str(tmp_path / "drop.zip"),
                      lambda n, d: None if n.endswith("catboost.cbm") and "south" in n else (n, d))
    with pytest.raises(SmdError, match="lacks member"):
        modelfile.load_model(dropped)
    data = open(saved[0], "rb").read()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(SmdError, match="not a zip, or truncated"):
        modelfile.load_model(str(truncated))
    text = tmp_path / "model.zip"
    text.write_text("hello")
    with pytest.raises(SmdError, match="not a readable"):
        modelfile.load_model(str(text))
    with pytest.raises(SmdError, match="does not exist"):
        modelfile.load_model(str(tmp_path / "nothing.zip"))


def test_unknown_version_and_format(saved, tmp_path):
    def version(name, data):
        if name == "manifest.json":
            manifest = json.loads(data)
            manifest["version"] = 99
            data = json.dumps(manifest).encode()
        return name, data
    with pytest.raises(SmdError, match="version 99"):
        modelfile.load_model(rewrite(saved[0], str(tmp_path / "v99.zip"), version, redigest=True))
    # a version-1 file (no manifest.sha256) asks for retraining
    def version1(name, data):
        if name == "manifest.sha256":
            return None
        if name == "manifest.json":
            manifest = json.loads(data)
            manifest["version"] = 1
            data = json.dumps(manifest).encode()
        return name, data
    with pytest.raises(SmdError, match="version 1; this plugin reads version 2. Retrain"):
        modelfile.load_model(rewrite(saved[0], str(tmp_path / "v1.zip"), version1))

    def fmt(name, data):
        return name, (b'{"format": "other"}' if name == "manifest.json" else data)
    with pytest.raises(SmdError, match="not an smdownscale model file"):
        modelfile.load_model(rewrite(saved[0], str(tmp_path / "fmt.zip"), fmt, redigest=True))


def test_save_is_atomic_and_leaves_nothing_on_failure(tmp_path):
    X, y = make_data(0, 1)
    model = StackEnsemble(base_models=("lightgbm",), params=FEW, n_threads=1,
                          feature_names=["ndvi", "lc", "doy"]).fit(X, y)
    target = tmp_path / "m.zip"
    with pytest.raises(SmdError, match="JSON"):
        modelfile.save_model(str(target), models={"a": model}, predictors=PREDICTORS,
                             metrics={"bad": object()})
    assert os.listdir(tmp_path) == []
    with pytest.raises(SmdError, match="no trained model"):
        modelfile.save_model(str(target), models={}, predictors=PREDICTORS)
