"""Issue 8 for train / validate / explain: every write checked (full disk, read-only folder),
nothing left under the final name, implausible soil moisture refused with a message, inputs
never overwritten by a sink, and no traceback through qgis_process.

Full-disk cases use a small tmpfs filled to the last byte (we run as root in the container);
they are skipped with the reason when mounting is not permitted.
"""
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import uuid

import numpy as np
import pytest

from smdownscale.core.common import SmdError, write_series
from smdownscale.core.dataset import write_manifest
from smdownscale.core.grids import Grid
from smdownscale.core.partitions import Partitions
from smdownscale.core.stations import Observation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WRAPPER = os.path.join(ROOT, "scripts", "qgis-process")
CRS = "EPSG:32650"
CELL = 9000.0
X0, Y0 = 500000.0, 4000000.0
N, N_DATES = 6, 6
FAST = {"lightgbm": {"n_estimators": 10, "min_child_samples": 3}}
_KEEP = []


# ------------------------------------------------------------------ helpers and fixtures
def _mount(folder, options):
    os.makedirs(folder, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); the "
                    "full-disk and read-only cases need one")


def _umount(folder):
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _full_disk(folder, fill):
    _mount(folder, "size=64k")
    try:
        if fill:
            with contextlib.suppress(OSError):  # ENOSPC, on a write or when closing
                with open(folder / "filler", "wb") as handle:
                    while True:
                        handle.write(b"\0" * 4096)
                        handle.flush()
        yield folder
    finally:
        _umount(folder)


@pytest.fixture()
def full_disk(tmp_path):
    """A folder on a 64 KiB tmpfs with no byte left."""
    yield from _full_disk(tmp_path / "full", True)


@pytest.fixture(params=["no byte left", "64 KiB left"])
def sink_disk(request, tmp_path):
    """No byte left (creating the GeoPackage fails), or 64 KiB left (a GeoPackage, ~96 KiB,
    fails while it is written or committed, which QGIS alone reports as success)."""
    yield from _full_disk(tmp_path / "full", request.param == "no byte left")


@pytest.fixture()
def read_only(tmp_path):
    """A folder on a read-only tmpfs (root ignores permission bits, not a read-only mount)."""
    folder = tmp_path / "ro"
    _mount(folder, "ro,size=64k")
    try:
        yield folder
    finally:
        _umount(folder)


def _entries(folder, ignore=("filler",)):
    return sorted(name for name in os.listdir(folder) if name not in ignore)


def _sha(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _dataset(folder, target=lambda x: 0.1 + 0.3 * x):
    """A tiny prepared dataset (6 x 6 coarse cells, 6 dates, predictor x, target = target(x))."""
    folder = str(folder)
    os.makedirs(os.path.join(folder, "fine"))
    os.makedirs(os.path.join(folder, "coarse"))
    coarse = Grid(CRS, [CELL, 0, X0, 0, -CELL, Y0], N, N)
    fine = Grid(CRS, [CELL / 2, 0, X0, 0, -CELL / 2, Y0], 2 * N, 2 * N)
    dates = [f"2019-04-{d:02d}" for d in range(1, N_DATES + 1)]
    x = np.random.default_rng(0).random((N_DATES, N, N)).astype("float32")
    sm = np.stack([np.asarray(target(x[d]), dtype="float32") for d in range(N_DATES)])
    up = lambda a: np.kron(a, np.ones((2, 2), dtype="float32"))  # noqa: E731
    write_series(os.path.join(folder, "coarse", "x.tif"), list(x), dates, coarse.profile())
    write_series(os.path.join(folder, "fine", "x.tif"), [up(b) for b in x], dates, fine.profile())
    write_series(os.path.join(folder, "coarse", "soil_moisture.tif"), list(sm), dates, coarse.profile())
    write_manifest(folder, dates=dates, fine_grid=fine, coarse_grid=coarse, min_valid_fraction=0.5,
                   mask_classes={}, predictors=[
                       {"name": "x", "kind": "continuous", "dynamic": True},
                       {"name": "doy", "kind": "continuous", "dynamic": True, "derived": True}])
    return folder


def _box(col0, col1):
    x0, x1, y0, y1 = X0 + col0 * CELL, X0 + col1 * CELL, Y0 - N * CELL, Y0
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def _train(dataset, model_path, **kwargs):
    from smdownscale.core.train import train_model

    settings = dict(base_models=("lightgbm",), folds=2, params=FAST, n_threads=1, min_samples=10)
    settings.update(kwargs)
    return train_model(dataset, str(model_path), **settings)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _dataset(tmp_path_factory.mktemp("reliability") / "dataset")


@pytest.fixture(scope="module")
def model(dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("reliability_model") / "m.smdmodel.zip"
    _train(dataset, path)
    return str(path)


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    """A 4 x 4 UTM raster, 4 dated bands of 0.25 (and a percent twin), and stations on it."""
    from rasterio.transform import from_origin

    folder = tmp_path_factory.mktemp("reliability_validate")
    dates = ["2019-04-01", "2019-04-02", "2019-04-03", "2019-04-04"]
    profile = {"crs": CRS, "transform": from_origin(X0, Y0, 1000, 1000), "width": 4, "height": 4}
    bands = [np.full((4, 4), 0.2 + 0.02 * t, dtype="float32") for t in range(4)]
    raster = str(folder / "downscaled.tif")
    write_series(raster, bands, dates, profile)
    percent = str(folder / "percent.tif")
    write_series(percent, [b * 100 for b in bands], dates, profile)
    stations = [Observation(site, d, 0.21 + 0.01 * t + (0.02 if site == "B" else 0.0), X0 + x, Y0 - y)
                for site, x, y in (("A", 500, 500), ("B", 2500, 2500))
                for t, d in enumerate(dates)]
    return {"raster": raster, "percent": percent, "dates": dates, "stations": stations}


def _validate(product, stations, products=None):
    from smdownscale.core.validate import validate

    return validate(products or {"downscaled": product["raster"]}, stations, stations_crs=CRS)


# ------------------------------------------------------------------ validate: plausibility
def test_station_values_in_percent_are_refused_with_a_hint(product):
    percent = [o._replace(value=o.value * 100) for o in product["stations"]]
    with pytest.raises(SmdError, match=r"look like percent \(vol. %\): divide them by 100") as caught:
        _validate(product, percent)
    assert "station readings are not volumetric soil moisture" in str(caught.value)
    assert "8 of 8 values lie outside -0.02..1" in str(caught.value)


def test_station_values_outside_0_1_are_refused(product):
    broken = list(product["stations"]) + [Observation("A", "2019-04-05", -9999.0, X0 + 500, Y0 - 500)]
    with pytest.raises(SmdError, match=r"site A on 2019-04-05: -9999.*declare them as the nodata value"):
        _validate(product, broken)
    # small negative noise on a dry soil is tolerated (calibration noise), the value is used
    noisy = [o._replace(value=-0.01) if o.date == "2019-04-01" else o for o in product["stations"]]
    assert _validate(product, noisy).site("downscaled", "A")["n"] == 4


def test_product_in_percent_is_refused_naming_the_product(product):
    with pytest.raises(SmdError, match=r"product 'pct'.*look like percent") as caught:
        _validate(product, product["stations"], {"ok": product["raster"], "pct": product["percent"]})
    assert product["percent"] in str(caught.value)


def test_station_dates_outside_the_products_dates_are_refused(product):
    old = [o._replace(date=o.date.replace("2019", "2017")) for o in product["stations"]]
    with pytest.raises(SmdError, match=r"cannot be compared with any of the 2 station sites: 2 have no "
                                       r"date in common with it \(stations 2017-04-01..2017-04-04, "
                                       r"raster 2019-04-01..2019-04-04\)"):
        _validate(product, old)


def test_all_nan_station_values_are_refused(product):
    empty = [o._replace(value=float("nan")) for o in product["stations"]]
    with pytest.raises(SmdError, match="None of the 8 station readings has a finite soil-moisture value"):
        _validate(product, empty)


def test_summary_reports_sample_sizes_and_unmatched_reasons(product):
    stations = list(product["stations"]) + [Observation("FAR", "2019-04-01", 0.2, X0 - 5e5, Y0)]
    summary = _validate(product, stations).summary_for("downscaled")
    assert (summary["n_sites"], summary["n_pairs"], summary["n_sites_with_r"]) == (2, 8, 2)
    assert (summary["n_unmatched"], summary["n_outside"], summary["n_no_shared_dates"]) == (1, 1, 0)


# ------------------------------------------------------------------ reports: write errors
def test_validation_report_on_a_full_disk_names_the_file_and_leaves_nothing(product, full_disk):
    from smdownscale.core.validate import write_validation_report

    result = _validate(product, product["stations"])
    for name in ("report.csv", "report.json", "report.html"):
        with pytest.raises(SmdError, match=r"Could not write .*report.*: the disk is full"):
            write_validation_report(result, full_disk / name)
        assert _entries(full_disk) == []


def test_html_report_on_a_disk_with_room_for_the_page_only_leaves_neither(product, tmp_path):
    """The page fits, its companion folder of PNG/CSV files does not: neither is left."""
    from smdownscale.core.validate import write_validation_report

    result = _validate(product, product["stations"])
    page, folder = write_validation_report(result, tmp_path / "sized.html")
    pages = lambda size: -(-size // 4096) * 4096  # noqa: E731 - tmpfs allocates whole pages
    files = [os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)]
    assert max(files) > 2 * 4096  # a figure larger than the room left below
    disk = tmp_path / "disk"
    _mount(disk, f"size={pages(os.path.getsize(page)) + 2 * 4096}")
    try:
        with pytest.raises(SmdError, match=r"Could not write .*report_files.*: the disk is full"):
            write_validation_report(result, disk / "report.html")
        assert _entries(disk) == []
    finally:
        _umount(disk)


def test_validation_report_in_a_read_only_folder(product, read_only):
    from smdownscale.core.validate import write_validation_report

    result = _validate(product, product["stations"])
    with pytest.raises(SmdError, match=r"read-only"):
        write_validation_report(result, read_only / "report.csv")
    assert _entries(read_only) == []


def test_explain_table_on_a_full_disk(full_disk):
    from smdownscale.core.explain import write_explain_table

    rows = [{"partition": "WP", "predictor": "x", "mean_abs_shap": 0.1, "n_samples": 10}] * 200
    with pytest.raises(SmdError, match=r"Could not write .*shap.csv: the disk is full"):
        write_explain_table(rows, str(full_disk / "shap.csv"))
    assert _entries(full_disk) == []


# ------------------------------------------------------------------ train
def test_refused_report_path_leaves_no_model(dataset, tmp_path, read_only):
    from smdownscale.core.train import train_model

    model_path = tmp_path / "m.smdmodel.zip"
    # a wrong extension is refused before any training
    with pytest.raises(SmdError, match=r"use a .json, .csv or .html file name"):
        train_model(dataset, str(model_path), report_path=str(tmp_path / "report.txt"))
    # a report that cannot be written (read-only folder): no model either
    with pytest.raises(SmdError, match=r"report.json.*the file system is read-only"):
        _train(dataset, model_path, report_path=str(read_only / "report.json"))
    assert not model_path.exists() and _entries(tmp_path, ignore=("ro",)) == []
    assert _entries(read_only) == []


def test_model_on_a_full_disk_leaves_no_report(dataset, tmp_path, full_disk):
    report_path = tmp_path / "report.json"
    with pytest.raises(SmdError, match=r"Could not write .*m.smdmodel.zip: the disk is full"):
        _train(dataset, full_disk / "m.smdmodel.zip", report_path=str(report_path))
    assert _entries(full_disk) == [] and not report_path.exists()


def test_model_and_report_written_together(dataset, tmp_path):
    report = _train(dataset, tmp_path / "m.smdmodel.zip", report_path=str(tmp_path / "r.json"))
    assert sorted(os.listdir(tmp_path)) == ["m.smdmodel.zip", "r.json"]
    with open(tmp_path / "r.json", encoding="utf-8") as handle:
        rows = json.load(handle)["rows"]
    assert rows == json.loads(json.dumps(report.rows()))
    assert rows[-1]["n_train"] + rows[-1]["n_test"] == N * N * N_DATES


def test_all_nan_and_percent_targets_are_refused(tmp_path):
    empty = _dataset(tmp_path / "empty", target=lambda x: np.full_like(x, np.nan))
    with pytest.raises(SmdError, match=r"soil moisture of the dataset .* is empty \(no valid value on any "
                                       r"of its 6 dates"):
        _train(empty, tmp_path / "e.zip")
    percent = _dataset(tmp_path / "percent", target=lambda x: 10 + 30 * x)
    with pytest.raises(SmdError, match=r"look like percent \(vol. %\): divide them by 100"):
        _train(percent, tmp_path / "p.zip")
    assert not (tmp_path / "e.zip").exists() and not (tmp_path / "p.zip").exists()


def test_tiny_partition_gives_a_message_not_a_scikit_learn_traceback(dataset, tmp_path):
    from smdownscale.core.dataset import Dataset
    from smdownscale.core.train import build_samples, split_train_test

    halves = Partitions(["west", "east"], [_box(0, 3), _box(3, 6)], CRS)
    with pytest.raises(SmdError, match=r"Partition 'west' has only 1 training samples for 2 folds"):
        _train(dataset, tmp_path / "t.zip", partitions=halves, min_samples=1, test_fraction=0.99)
    assert os.listdir(tmp_path) == []
    samples = build_samples(Dataset.open(dataset))
    with pytest.raises(SmdError, match=r"1 samples \(samples\) cannot be split into a training and a test set"):
        split_train_test(samples, np.arange(1), test_fraction=0.3, cv_strategy="random",
                         spatial_block_cells=4, seed=0)


def test_partition_names_and_geometries_are_checked():
    with pytest.raises(SmdError, match=r"Partition names must be unique; repeated: 'a' \(features 1, 3\)"):
        Partitions(["a", "b", "a"], [_box(0, 1), _box(1, 2), _box(2, 3)], CRS)
    with pytest.raises(SmdError, match=r"feature\(s\) 2 have an empty name"):
        Partitions(["a", " "], [_box(0, 1), _box(1, 2)], CRS)
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    with pytest.raises(SmdError, match=r"Partition 'x' \(feature 1\) has an invalid geometry.*Fix Geometries"):
        Partitions(["x"], [bowtie], CRS)
    with pytest.raises(SmdError, match=r"is not a polygon \(Point\)"):
        Partitions(["p"], [{"type": "Point", "coordinates": [0, 0]}], CRS)


# ------------------------------------------------------------------ explain
def test_explain_max_samples_guarded_and_reported(model, dataset):
    from smdownscale.core.explain import explain

    for bad in (0, -5, "many", 2.5, True, float("nan")):
        with pytest.raises(SmdError, match="max_samples"):
            explain(model, dataset, max_samples=bad)
    rows = explain(model, dataset, max_samples=10 ** 9)
    train_size = rows[0]["n_samples"]
    assert 0 < train_size < N * N * N_DATES and {r["n_samples"] for r in rows} == {train_size}


# ------------------------------------------------------------------ Processing shells
@pytest.fixture(scope="module")
def processing_module(qgis_processing):
    from qgis.core import QgsApplication

    from smdownscale.processing.provider import SmDownscaleProvider

    registry = QgsApplication.processingRegistry()
    if registry.providerById("smdownscale") is None:
        _KEEP.append(SmDownscaleProvider())
        registry.addProvider(_KEEP[-1])
    from qgis import processing

    return processing


def _station_gpkg(path, stations):
    from osgeo import ogr, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32650)
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer("stations", srs, ogr.wkbPoint)
    for name, kind in (("site_id", ogr.OFTString), ("date", ogr.OFTString), ("sm", ogr.OFTReal)):
        layer.CreateField(ogr.FieldDefn(name, kind))
    for o in stations:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("site_id", o.site_id)
        feature.SetField("date", o.date)
        feature.SetField("sm", o.value)
        point = ogr.Geometry(ogr.wkbPoint)
        point.AddPoint_2D(o.x, o.y)
        feature.SetGeometry(point)
        layer.CreateFeature(feature)
    source = None
    return str(path)


def _raises(processing_module, alg_id, parameters, message):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as caught:
        processing_module.run(alg_id, parameters)
    assert message in str(caught.value), str(caught.value)
    return str(caught.value)


def test_validate_refuses_to_write_over_the_station_layer(processing_module, product, tmp_path):
    stations = _station_gpkg(tmp_path / "stations.gpkg", product["stations"])
    before = _sha(stations)
    for output in (stations, stations + "|layername=stations"):
        _raises(processing_module, "smdownscale:validate", {
            "DOWNSCALED": product["raster"], "STATIONS": stations, "OUTPUT": output},
            "is the station layer")
    assert _sha(stations) == before and os.listdir(tmp_path) == ["stations.gpkg"]


def test_validate_sink_on_a_full_disk_fails_and_leaves_nothing(processing_module, product, tmp_path,
                                                               sink_disk):
    full_disk = sink_disk
    stations = _station_gpkg(tmp_path / "stations.gpkg", product["stations"])
    message = _raises(processing_module, "smdownscale:validate", {
        "DOWNSCALED": product["raster"], "STATIONS": stations, "OUTPUT": str(full_disk / "v.gpkg")},
        "Could not write the validation points output")
    assert "the disk is full" in message and str(full_disk / "v.gpkg") in message
    assert _entries(full_disk) == []


def test_validate_report_failure_removes_the_sink_it_created(processing_module, product, tmp_path,
                                                             read_only):
    stations = _station_gpkg(tmp_path / "stations.gpkg", product["stations"])
    out = tmp_path / "out"
    out.mkdir()
    _raises(processing_module, "smdownscale:validate", {
        "DOWNSCALED": product["raster"], "STATIONS": stations, "OUTPUT": str(out / "v.gpkg"),
        "OUTPUT_REPORT": str(read_only / "report.html")}, "read-only")
    assert os.listdir(out) == [] and _entries(read_only) == []


def test_validate_csv_report_refuses_a_summary_path_holding_the_users_folder(processing_module, product,
                                                                           tmp_path):
    # a .csv report also writes <stem>_summary.csv: that name is checked before the run too
    stations = _station_gpkg(tmp_path / "stations.gpkg", product["stations"])
    out = tmp_path / "out"
    (out / "report_summary.csv").mkdir(parents=True)
    (out / "report_summary.csv" / "mine.txt").write_text("keep")
    _raises(processing_module, "smdownscale:validate", {
        "DOWNSCALED": product["raster"], "STATIONS": stations, "OUTPUT": str(out / "v.gpkg"),
        "OUTPUT_REPORT": str(out / "report.csv")}, "report_summary.csv is an existing folder")
    assert sorted(os.listdir(out)) == ["report_summary.csv"]
    assert (out / "report_summary.csv" / "mine.txt").read_text() == "keep"


def test_validate_percent_stations_through_processing(processing_module, product, tmp_path):
    stations = _station_gpkg(tmp_path / "stations.gpkg",
                             [o._replace(value=o.value * 100) for o in product["stations"]])
    _raises(processing_module, "smdownscale:validate", {
        "DOWNSCALED": product["raster"], "STATIONS": stations, "OUTPUT": str(tmp_path / "v.gpkg")},
        "look like percent")
    assert os.listdir(tmp_path) == ["stations.gpkg"]


def test_explain_table_on_a_full_disk_fails(processing_module, model, dataset, sink_disk):
    full_disk = sink_disk
    message = _raises(processing_module, "smdownscale:explain", {
        "MODEL": model, "DATASET": dataset, "MAX_SAMPLES": 10, "OUTPUT_TABLE": str(full_disk / "shap.gpkg")},
        "Could not write the SHAP table output")
    assert "the disk is full" in message
    assert _entries(full_disk) == []


def test_explain_table_in_a_missing_folder_fails(processing_module, model, dataset, tmp_path):
    _raises(processing_module, "smdownscale:explain", {
        "MODEL": model, "DATASET": dataset, "MAX_SAMPLES": 10,
        "OUTPUT_TABLE": str(tmp_path / "missing" / "shap.csv")}, "shap.csv")
    assert os.listdir(tmp_path) == []


def test_features_sharing_a_partition_name_are_merged_alike_by_the_api_and_the_dialog(qgis_app, tmp_path):
    """Issue 9 drift: the dialog refused repeated names while Partitions.from_file merged them;
    both now merge (core's rule), so the same layer gives the same partitions."""
    from osgeo import ogr, osr
    from qgis.core import QgsProcessingFeatureSource, QgsProcessingContext, QgsVectorLayer

    from smdownscale.core.partitions import Partitions
    from smdownscale.processing.layers import partitions_from_source

    path = str(tmp_path / "parts.gpkg")
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32650)
    source = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    layer = source.CreateLayer("parts", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("name", ogr.OFTString))
    for name, box in (("a", _box(0, 3)), ("a", _box(3, 6)), ("b", _box(6, 9))):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("name", name)
        feature.SetGeometry(ogr.CreateGeometryFromJson(json.dumps(box)))
        layer.CreateFeature(feature)
    source = None
    from_api = Partitions.from_file(path, "name")
    vector = QgsVectorLayer(path, "parts", "ogr")
    from_dialog = partitions_from_source(QgsProcessingFeatureSource(vector, QgsProcessingContext()), "name")
    assert from_api.names == from_dialog.names == ["a", "b"]
    for api, dialog in zip(from_api.geometries, from_dialog.geometries):
        area = [ogr.CreateGeometryFromJson(json.dumps(g)).GetArea() for g in (api, dialog)]
        assert area[0] == pytest.approx(area[1])
    assert ogr.CreateGeometryFromJson(json.dumps(from_api.geometries[0])).GetArea() == pytest.approx(
        2 * ogr.CreateGeometryFromJson(json.dumps(from_api.geometries[1])).GetArea())
    del vector


# ------------------------------------------------------------------ qgis_process: exit code, no traceback
@pytest.mark.skipif(not os.path.exists("/usr/bin/qgis_process.bin"),
                    reason="Debian's /usr/bin/qgis_process.bin is not installed")
def test_qgis_process_validate_over_the_stations_exits_nonzero_without_traceback(product, tmp_path):
    stations = _station_gpkg(tmp_path / "stations.gpkg", product["stations"])
    before = _sha(stations)
    profile = tmp_path / "profile"
    env = dict(os.environ, SMDOWNSCALE_QGIS_PROFILE=str(profile), QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([WRAPPER, "run", "smdownscale:validate", "--",
                           f"DOWNSCALED={product['raster']}", f"STATIONS={stations}", f"OUTPUT={stations}"],
                          capture_output=True, text=True, env=env, timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "is the station layer" in output and "Traceback" not in output, output[-3000:]
    assert _sha(stations) == before
    shutil.rmtree(profile, ignore_errors=True)
    assert os.listdir(tmp_path) == ["stations.gpkg"]
