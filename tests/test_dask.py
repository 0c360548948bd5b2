"""Scale-out on Dask (core.cluster, the DASK_SCHEDULER option): a real LocalCluster, and a real
`dask scheduler` with `dask worker` processes started through Dask's own command-line tools on
127.0.0.1. Every result is compared with the in-process run of the same step."""
import glob
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import rasterio

from smdownscale.core import cluster
from smdownscale.core.common import Cancelled, Progress, SmdError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASK_CLI = os.path.join(os.path.dirname(sys.executable), "dask")

pytestmark = pytest.mark.skipif(not os.path.exists(DASK_CLI), reason="dask's command-line tools are not installed")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CliCluster:
    """`dask scheduler` and `dask worker` processes (no nanny: a killed worker stays dead)."""

    def __init__(self, folder, n_workers, *, plugin_on_path=True):
        self.address = f"tcp://127.0.0.1:{free_port()}"
        env = dict(os.environ, DASK_DATAFRAME__QUERY_PLANNING="False")
        env.pop("PYTHONPATH", None)
        if plugin_on_path:
            env["PYTHONPATH"] = os.path.join(ROOT, ".plugin-path")
        port = self.address.rsplit(":", 1)[1]
        log = open(os.path.join(folder, "dask.log"), "w")  # noqa: SIM115 - closed in stop()
        self.log = log
        self.scheduler = subprocess.Popen([DASK_CLI, "scheduler", "--host", "127.0.0.1", "--port", port,
                                           "--no-dashboard"], env=env, stdout=log, stderr=log)
        self.workers = [subprocess.Popen(
            [DASK_CLI, "worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
             "--name", f"w{k}", "--local-directory", str(folder)], env=env, stdout=log, stderr=log)
            for k in range(n_workers)]
        from distributed import Client

        with Client(self.address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(n_workers, timeout=60)

    def stop(self):
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                process.terminate()
        for process in [*self.workers, self.scheduler]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.log.close()


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory):
    started = CliCluster(tmp_path_factory.mktemp("dask-cli"), 2)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A small scenario prepared and trained in this process: the reference of every comparison."""
    from smdownscale.core.partitions import Partitions
    from smdownscale.core.preprocess import preprocess
    from smdownscale.core.train import train_model
    from smdownscale.demo.scenario import make_scenario

    folder = tmp_path_factory.mktemp("dask-scene")
    scenario = make_scenario(str(folder / "scenario"), size="small", n_dates=12)
    options = dict(categorical="lc", mask_classes="lc:0", fine_resolution=1000, min_valid_fraction=0.5)
    preprocess(scenario["predictors"], scenario["soil_moisture"], str(folder / "dataset"), **options)
    partitions = Partitions.from_file(scenario["partitions"], "name")
    from smdownscale.core.stack import BASE_MODELS, learner_params

    training = dict(partitions=partitions, seed=7, params=learner_params(BASE_MODELS, n_estimators=40),
                    min_samples=20, fallback_to_global=True)
    train_model(str(folder / "dataset"), str(folder / "model.smdmodel.zip"), **training)
    return dict(folder=folder, scenario=scenario, options=options, training=training,
                dataset=str(folder / "dataset"), model=str(folder / "model.smdmodel.zip"))


def read_all(path):
    with rasterio.open(path) as src:
        return src.read(), src.descriptions, src.transform, src.crs


def dataset_rasters(folder):
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*", "*.tif"))):
        with rasterio.open(path) as src:
            out[os.path.relpath(path, folder)] = (src.read(), src.descriptions)
    return out


def assert_same_dataset(reference, other):
    a, b = dataset_rasters(reference), dataset_rasters(other)
    assert list(a) == list(b) and len(a) > 10
    for name in a:
        assert a[name][1] == b[name][1], name
        np.testing.assert_array_equal(a[name][0], b[name][0], err_msg=name)


def assert_same_model(reference, other, dataset):
    """Same members bit for bit, except CatBoost's, which embed their training time and a random
    guid: those must predict the same numbers."""
    from smdownscale.core.modelfile import load_model

    with zipfile.ZipFile(reference) as a, zipfile.ZipFile(other) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())
        differing = [n for n in a.namelist() if a.read(n) != b.read(n)]
    assert all(n.endswith("catboost.cbm") or n.startswith("manifest") for n in differing), differing
    from smdownscale.core.dataset import Dataset

    with Dataset.open(dataset) as data:
        X = data.fine_features(0, next(iter(data.fine_block_windows(64))))
    X = X[np.isfinite(X).all(axis=1)]
    first, second = load_model(reference), load_model(other)
    assert set(first.models) == set(second.models) and len(first.models) >= 2
    for name, model in first.models.items():
        np.testing.assert_array_equal(model.predict(X), second.models[name].predict(X))


# -- the option ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (None, None), ("", None), ("  ", None),
    ("local:2", cluster.Scheduler(local_workers=2)), (" LOCAL : 3 ", cluster.Scheduler(local_workers=3)),
    ("tcp://10.0.0.5:8786", cluster.Scheduler(address="tcp://10.0.0.5:8786")),
    ("10.0.0.5:8786", cluster.Scheduler(address="tcp://10.0.0.5:8786")),
    ("tls://head.example.org:8786", cluster.Scheduler(address="tls://head.example.org:8786")),
])
def test_scheduler_texts(text, expected):
    assert cluster.parse_scheduler(text) == expected


@pytest.mark.parametrize("text", ["local:0", "local:two", "local:1.5", "tcp://host", "http://x:8786",
                                  "host:99999", "yes"])
def test_bad_scheduler_texts_say_what_to_write(text):
    with pytest.raises(SmdError, match="local:N|Dask scheduler|whole number|at least"):
        cluster.parse_scheduler(text)


def test_an_unreachable_scheduler_is_refused_before_any_work(scene, tmp_path, monkeypatch):
    from smdownscale.core.predict import predict
    from smdownscale.core.preprocess import preprocess
    from smdownscale.core.train import train_model

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_SECONDS", 2)
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    calls = [
        lambda: predict(scene["dataset"], scene["model"], str(tmp_path / "p.tif"), scheduler=address),
        lambda: train_model(scene["dataset"], str(tmp_path / "m.smdmodel.zip"), scheduler=address),
        lambda: preprocess(scene["scenario"]["predictors"], scene["scenario"]["soil_moisture"],
                           str(tmp_path / "dataset"), scheduler=address, **scene["options"])]
    for call in calls:
        started = time.perf_counter()
        with pytest.raises(SmdError, match=f"The Dask scheduler {address} cannot be reached"):
            call()
        assert time.perf_counter() - started < 15
    assert os.listdir(tmp_path) == []


# -- dask scheduler / dask worker through the command line ---------------------------------------

def test_predict_on_cli_workers_equals_in_process(scene, cli_cluster, tmp_path):
    from smdownscale.core.predict import predict

    for correction in (False, True):
        local = predict(scene["dataset"], scene["model"], str(tmp_path / f"local{correction}.tif"),
                        residual_correction=correction, block_size=32)
        remote = predict(scene["dataset"], scene["model"], str(tmp_path / f"dask{correction}.tif"),
                         residual_correction=correction, block_size=32, scheduler=cli_cluster.address)
        a, b = read_all(local.output), read_all(remote.output)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]
        assert {**remote.to_dict(), "output": local.output} == local.to_dict()
        assert local.pixels_predicted > 1000
    assert remote.max_cell_mismatch_after < 1e-5


def test_train_and_preprocess_on_cli_workers_equal_in_process(scene, cli_cluster, tmp_path):
    from smdownscale.core.preprocess import preprocess
    from smdownscale.core.train import train_model

    preprocess(scene["scenario"]["predictors"], scene["scenario"]["soil_moisture"], str(tmp_path / "dataset"),
               scheduler=cli_cluster.address, **scene["options"])
    assert_same_dataset(scene["dataset"], str(tmp_path / "dataset"))
    report = train_model(scene["dataset"], str(tmp_path / "model.smdmodel.zip"), scheduler=cli_cluster.address,
                         **scene["training"])
    assert_same_model(scene["model"], str(tmp_path / "model.smdmodel.zip"), scene["dataset"])
    assert [p["partition"] for p in report["partitions"]] and report.rows


def test_a_worker_killed_mid_predict_is_retried_and_the_output_is_right(scene, tmp_path_factory, tmp_path):
    from smdownscale.core.predict import predict

    reference = predict(scene["dataset"], scene["model"], str(tmp_path / "local.tif"), block_size=16)
    own = CliCluster(tmp_path_factory.mktemp("dask-kill"), 2)
    killed = []

    def kill_once(fraction, message):
        if fraction >= 0.3 and not killed:
            own.workers[0].send_signal(signal.SIGKILL)
            own.workers[0].wait(timeout=10)
            killed.append(fraction)

    try:
        report = predict(scene["dataset"], scene["model"], str(tmp_path / "dask.tif"), block_size=16,
                         scheduler=own.address, progress=Progress(kill_once))
        assert killed and own.workers[0].returncode == -signal.SIGKILL
        assert own.workers[1].poll() is None  # the other worker did the rest
    finally:
        own.stop()
    np.testing.assert_array_equal(read_all(reference.output)[0], read_all(report.output)[0])
    assert report.pixels_predicted == reference.pixels_predicted


def test_cancelling_a_dask_run_leaves_nothing(scene, cli_cluster, tmp_path):
    from smdownscale.core.predict import predict
    from smdownscale.core.train import train_model

    seen = []
    progress = Progress(lambda fraction, message: seen.append(fraction), lambda: len(seen) > 5)
    with pytest.raises(Cancelled):
        predict(scene["dataset"], scene["model"], str(tmp_path / "p.tif"), block_size=16,
                scheduler=cli_cluster.address, progress=progress)
    seen.clear()
    with pytest.raises(Cancelled):
        train_model(scene["dataset"], str(tmp_path / "m.smdmodel.zip"), scheduler=cli_cluster.address,
                    progress=Progress(lambda f, m: seen.append(f), lambda: len(seen) > 2), **scene["training"])
    assert os.listdir(tmp_path) == []
    from distributed import Client

    with Client(cli_cluster.address, set_as_default=False) as client:  # nothing left running
        deadline = time.time() + 10
        while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) and time.time() < deadline:
            time.sleep(0.2)
        assert client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0


# -- LocalCluster, through qgis_process -----------------------------------------------------------

@pytest.mark.skipif(not os.path.exists("/usr/bin/qgis_process.bin"), reason="no qgis_process.bin")
def test_qgis_process_runs_the_steps_on_dask(scene, cli_cluster, tmp_path, tmp_path_factory):
    from test_qgis_process import run_json

    profile = str(tmp_path_factory.mktemp("qgis-profile-dask"))
    scenario = scene["scenario"]
    # preprocess on the command-line cluster, train and predict on LocalClusters started by the run
    run_json(profile, "smdownscale:preprocess", {
        "PREDICTORS": scenario["predictors"], "COARSE_SM": scenario["soil_moisture"], "CATEGORICAL": "lc",
        "MASK_CLASSES": "lc:0", "FINE_RESOLUTION": 1000, "MIN_VALID_FRACTION": 0.5,
        "DASK_SCHEDULER": cli_cluster.address, "OUTPUT": str(tmp_path / "dataset")})
    assert_same_dataset(scene["dataset"], str(tmp_path / "dataset"))
    training = scene["training"]
    run_json(profile, "smdownscale:train", {
        "DATASET": scene["dataset"], "PARTITIONS": scenario["partitions"], "PARTITION_FIELD": "name",
        "SEED": training["seed"], "N_ESTIMATORS": 40, "MIN_SAMPLES": training["min_samples"],
        "FALLBACK_TO_GLOBAL": True, "DASK_SCHEDULER": "local:2", "OUTPUT_MODEL": str(tmp_path / "model.smdmodel.zip")})
    assert_same_model(scene["model"], str(tmp_path / "model.smdmodel.zip"), scene["dataset"])
    result = run_json(profile, "smdownscale:predict", {
        "DATASET": scene["dataset"], "MODEL": scene["model"], "RESIDUAL_CORRECTION": True, "BLOCK_SIZE": 32,
        "DASK_SCHEDULER": "local:2", "OUTPUT": str(tmp_path / "dask.tif")})
    from smdownscale.core.predict import predict

    local = predict(scene["dataset"], scene["model"], str(tmp_path / "local.tif"), residual_correction=True,
                    block_size=32)
    np.testing.assert_array_equal(read_all(local.output)[0], read_all(result["results"]["OUTPUT"])[0])
    assert result["results"]["N_PIXELS"] == local.pixels_predicted
    from test_qgis_process import qgis_process

    failed = qgis_process(profile, "run", "smdownscale:predict", "--", f"DATASET={scene['dataset']}",
                          f"MODEL={scene['model']}", "DASK_SCHEDULER=local:none",
                          f"OUTPUT={tmp_path / 'bad.tif'}", check=False)
    assert failed.returncode != 0 and "local:N" in failed.stdout + failed.stderr
    assert not (tmp_path / "bad.tif").exists()


@pytest.mark.skipif(not os.path.exists("/usr/bin/qgis_process.bin"), reason="no qgis_process.bin")
def test_the_shipped_chain_runs_its_heavy_steps_on_dask(scene, cli_cluster, tmp_path, tmp_path_factory):
    """The Graphical Modeler chain passes its DASK_SCHEDULER input to preprocess, train and predict."""
    from test_qgis_process import qgis_process

    from smdownscale.core.predict import predict

    scenario = scene["scenario"]
    profile = str(tmp_path_factory.mktemp("qgis-profile-chain-dask"))
    args = [f"PREDICTORS={path}" for path in scenario["predictors"]] + [
        f"COARSE_SM={scenario['soil_moisture']}", "MASK_CLASSES=lc:0", "CATEGORICAL=lc",
        f"STATIONS={scenario['stations']}", "N_ESTIMATORS=20", "FOLDS=2", "MIN_SAMPLES=10",
        f"DASK_SCHEDULER={cli_cluster.address}",
        f"preprocess:Prepared dataset={tmp_path / 'dataset'}", f"train:Model file={tmp_path / 'model.smdmodel.zip'}",
        f"predict:Downscaled soil moisture={tmp_path / 'sm.tif'}",
        f"validate:Validation points={tmp_path / 'validation.gpkg'}"]
    done = qgis_process(profile, "run", "smdownscale:downscaling_chain", "--", *args)
    log = done.stdout + done.stderr
    assert log.count(f"Dask: scheduler {cli_cluster.address}") == 3, log[-3000:]
    local = predict(str(tmp_path / "dataset"), str(tmp_path / "model.smdmodel.zip"), str(tmp_path / "local.tif"))
    np.testing.assert_array_equal(read_all(local.output)[0], read_all(str(tmp_path / "sm.tif"))[0])


def test_a_cluster_without_the_plugin_is_refused_before_any_work(scene, tmp_path_factory, tmp_path):
    """Scheduler and worker started without the plugin on their PYTHONPATH: one message saying
    what to install where, before anything is read or written."""
    from smdownscale.core.predict import predict

    bare = CliCluster(tmp_path_factory.mktemp("dask-bare"), 1, plugin_on_path=False)
    try:
        with pytest.raises(SmdError, match="cannot run the plugin's tasks.*PYTHONPATH"):
            predict(scene["dataset"], scene["model"], str(tmp_path / "p.tif"), scheduler=bare.address)
    finally:
        bare.stop()
    assert os.listdir(tmp_path) == []


def test_the_environment_check_names_what_differs(scene, cli_cluster, monkeypatch):
    """Other plugin code (or versions) on the workers is refused: their results would not be this
    machine's. Here the client's own core digest is changed; the workers compute theirs."""
    real = cluster._core_digest()[:12]
    monkeypatch.setattr(cluster, "_core_digest", lambda: "0" * 64)
    from distributed import Client

    with Client(cli_cluster.address, set_as_default=False) as client:
        with pytest.raises(SmdError, match=f"another environment \\(smdownscale core code {real} there, "
                                           "000000000000 here\\)"):
            cluster.check_environment(client)


def test_the_model_bytes_sent_to_workers_are_the_ones_verified(scene, tmp_path):
    """load_model(data=) verifies the given bytes (what predict scatters), named after the path."""
    from smdownscale.core.modelfile import load_model, read_model_bytes

    data = read_model_bytes(scene["model"])
    with open(scene["model"], "rb") as handle:
        assert data == handle.read()
    loaded = load_model("model-on-the-client.zip", data=data)
    assert set(loaded.models) == set(load_model(scene["model"]).models)
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    with pytest.raises(SmdError, match="model-on-the-client.zip"):
        load_model("model-on-the-client.zip", data=bytes(flipped))
    with pytest.raises(SmdError, match="does not exist"):
        read_model_bytes(str(tmp_path / "missing.smdmodel.zip"))
