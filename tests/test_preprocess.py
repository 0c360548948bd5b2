"""Preprocess, grids, partitions and the prepared dataset on tiny hand-built rasters."""
import json
import os

import numpy as np
import pytest
import rasterio
from affine import Affine

from smdownscale.core.common import Cancelled, Progress, SmdError
from smdownscale.core.dataset import Dataset
from smdownscale.core.grids import Grid, coarse_grid_for, snapped_grid
from smdownscale.core.partitions import Partitions, partition_index_on_grid
from smdownscale.core.preprocess import parse_mask_classes, preprocess

UTM = "EPSG:32650"
EASE_X0 = -17367530.4451615
EASE_Y0 = 7314540.8306386
EASE_RES = 9008.055210146
NAN = np.nan


def write_raster(path, bands, crs, transform, *, nodata=None, dates=None, dtype="float32"):
    bands = [np.asarray(b) for b in bands]
    profile = dict(driver="GTiff", width=bands[0].shape[1], height=bands[0].shape[0],
                   count=len(bands), dtype=dtype, transform=transform, nodata=nodata)
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        for index, band in enumerate(bands, start=1):
            dst.write(band.astype(dtype), index)
            if dates:
                dst.set_band_description(index, dates[index - 1])
    return str(path)


# --- the hand-built case: 6 x 6 fine pixels of 1 km, soil moisture on a 3 km grid ----------------
# ndvi (2019-04-01) = 0..35 row-major, nodata -9999 at (0,0) and at 3, 4, 5, 9, 10 (top-right block).
# 3 x 3 block means of the valid pixels:
#   top-left  = (1+2+6+7+8+12+13+14)/8 = 7.875 (8 of 9 valid)
#   top-right = (11+15+16+17)/4 = 14.75       (4 of 9 valid -> NaN when min_valid_fraction=0.5)
#   bottom-left = 25, bottom-right = 28
DATES = ["2019-04-01", "2019-04-02"]
LC = np.array([[1, 1, 2, 4, 4, 4],
               [1, 2, 2, 4, 2, 2],
               [1, 3, 3, 0, 0, 0],
               [2, 2, 2, 0, 0, 0],
               [2, 2, 255, 0, 0, 0],
               [3, 3, 3, 1, 1, 1]])


def ndvi_base():
    values = np.arange(36, dtype="float32").reshape(6, 6)
    for flat in (0, 3, 4, 5, 9, 10):
        values.flat[flat] = -9999
    return values


@pytest.fixture
def case(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    fine_transform = Affine(1000, 0, 400000, 0, -1000, 3006000)
    base = ndvi_base()
    doubled = np.where(base == -9999, -9999, base * 2)
    # an extra leading date the soil moisture lacks: ignored
    ndvi = write_raster(inputs / "ndvi.tif", [np.full((6, 6), 999.0), base, doubled], UTM,
                        fine_transform, nodata=-9999, dates=["2019-03-31"] + DATES)
    lc = write_raster(inputs / "lc.tif", [LC], UTM, fine_transform, nodata=255, dtype="uint8")
    # soil moisture: 4 x 4 cells of 3 km starting one cell up-left of the predictors
    sm_values = np.arange(16, dtype="float32").reshape(4, 4) / 100
    sm_values[2, 1] = -1  # nodata inside the crop
    sm_later = np.where(sm_values == -1, -1, sm_values + 0.5)
    sm = write_raster(inputs / "sm.tif", [sm_values, sm_later], UTM,
                      Affine(3000, 0, 397000, 0, -3000, 3009000), nodata=-1, dates=DATES)
    return {"ndvi": ndvi, "lc": lc, "sm": sm, "out": str(tmp_path / "dataset"), "tmp": tmp_path}


def test_mean_with_nodata_mode_and_target(case):
    ds = preprocess([case["ndvi"], case["lc"]], case["sm"], case["out"], categorical="lc")
    assert ds.dates == DATES
    assert ds.predictor_names == ["ndvi", "lc", "doy"]
    assert ds.fine_grid.transform == Affine(1000, 0, 400000, 0, -1000, 3006000)
    assert ds.fine_grid.shape == (6, 6)
    # coarse grid = the 2 x 2 soil-moisture cells under the predictors, native alignment kept
    assert ds.coarse_grid.transform == Affine(3000, 0, 400000, 0, -3000, 3006000)
    assert ds.coarse_grid.shape == (2, 2)

    np.testing.assert_array_equal(ds.read_coarse("ndvi", 0), [[7.875, NAN], [25.0, 28.0]])
    np.testing.assert_array_equal(ds.read_coarse("ndvi", 1), [[15.75, NAN], [50.0, 56.0]])
    # mode of each 3 x 3 block; lc nodata (255) does not count
    np.testing.assert_array_equal(ds.read_coarse("lc", 0), [[1, 4], [2, 0]])
    assert ds.categories("lc") == [0, 1, 2, 3, 4]
    # fine copy keeps values, nodata -> NaN
    fine = ds.read_fine("ndvi", 0)
    assert np.isnan(fine[0, 0]) and fine[0, 1] == 1 and fine[5, 5] == 35
    # target: sm rows/cols 1..2, its nodata -> NaN, NaN where the joint valid fraction < 0.5
    # (top-right: ndvi valid on 4/9 of the cell)
    np.testing.assert_allclose(ds.read_target(0), [[0.05, NAN], [NAN, 0.10]], equal_nan=True)
    np.testing.assert_allclose(ds.read_target(1), [[0.55, NAN], [NAN, 0.60]], equal_nan=True)
    # joint validity: ndvi & lc (lc nodata at one pixel of the bottom-left block)
    np.testing.assert_allclose(ds.read_valid_fraction(0), [[8 / 9, 4 / 9], [8 / 9, 1.0]], rtol=1e-6)


def test_min_valid_fraction(case):
    ds = preprocess([case["ndvi"], case["lc"]], case["sm"], case["out"], min_valid_fraction=0.4)
    np.testing.assert_array_equal(ds.read_coarse("ndvi", 0), [[7.875, 14.75], [25.0, 28.0]])
    np.testing.assert_allclose(ds.read_target(0), [[0.05, 0.06], [NAN, 0.10]], equal_nan=True)
    ds = preprocess([case["ndvi"], case["lc"]], case["sm"], case["out"], min_valid_fraction=0.9)
    # top-left 8/9 < 0.9 -> NaN; bottom-left ndvi is fully valid (lc's nodata does not matter)
    np.testing.assert_array_equal(ds.read_coarse("ndvi", 0), [[NAN, NAN], [25.0, 28.0]])


def test_mask_classes_exclude_pixels_in_every_predictor(case):
    ds = preprocess([case["ndvi"], case["lc"]], case["sm"], case["out"],
                    mask_classes=parse_mask_classes("lc:0"), min_valid_fraction=0.3)
    fine_ndvi = ds.read_fine("ndvi", 0)
    assert np.isnan(fine_ndvi[LC == 0]).all() and np.isnan(ds.read_fine("lc", 0)[LC == 0]).all()
    # top-right: only pixel 11 valid (1/9) -> NaN; bottom-right: 33, 34, 35 (3/9) -> 34
    np.testing.assert_array_equal(ds.read_coarse("ndvi", 0), [[7.875, NAN], [25.0, 34.0]])
    np.testing.assert_array_equal(ds.read_coarse("lc", 0), [[1, 4], [2, 1]])
    assert ds.categories("lc") == [1, 2, 3, 4]
    assert ds.mask_classes == {"lc": [0]}


def test_parse_mask_classes():
    assert parse_mask_classes("lc:0,5; soil: 3") == {"lc": [0, 5], "soil": [3]}
    assert parse_mask_classes("") == {} and parse_mask_classes(None) == {}
    with pytest.raises(SmdError, match="name:class"):
        parse_mask_classes("lc=0")
    with pytest.raises(SmdError, match="not a number"):
        parse_mask_classes("lc:water")


def test_dataset_round_trip_features(case):
    ds = preprocess([case["lc"], case["ndvi"]], case["sm"], case["out"])
    reopened = Dataset.open(case["out"])
    assert reopened.predictor_names == ["lc", "ndvi", "doy"]
    assert reopened.categorical_names == ["lc"]
    assert reopened.fine_grid == ds.fine_grid and reopened.coarse_grid == ds.coarse_grid
    windows = list(reopened.fine_block_windows(4))
    assert [(w.col_off, w.row_off, w.width, w.height) for w in windows] == [
        (0, 0, 4, 4), (4, 0, 2, 4), (0, 4, 4, 2), (4, 4, 2, 2)]
    features = reopened.fine_features(1, windows[1])
    assert features.dtype == np.float32 and features.shape == (8, 3)
    # window cols 4-5, rows 0-3, row-major: lc, ndvi (2019-04-02 = 2 x base), doy 92
    np.testing.assert_array_equal(features[:, 0], LC[0:4, 4:6].ravel())
    np.testing.assert_array_equal(features[:, 1], [NAN, NAN, NAN, 22, 32, 34, 44, 46])
    assert (features[:, 2] == 92).all()
    coarse = reopened.coarse_features(0)
    np.testing.assert_array_equal(coarse[:, 1], [7.875, NAN, 25.0, 28.0])
    assert (coarse[:, 2] == 91).all()
    with open(os.path.join(case["out"], "dataset.json")) as handle:
        manifest = json.load(handle)
    assert manifest["format"] == "smdownscale-dataset" and manifest["version"] == 2 and len(manifest["dataset_id"]) == 32
    assert manifest["predictors"][-1] == {"name": "doy", "kind": "continuous", "dynamic": True,
                                          "derived": True}
    assert manifest["fine_grid"]["transform"] == [1000.0, 0.0, 400000.0, 0.0, -1000.0, 3006000.0]
    assert sorted(os.listdir(os.path.join(case["out"], "fine"))) == ["lc.tif", "ndvi.tif"]


def test_two_crs_onto_ease_grid(tmp_path):
    # predictors in UTM 50N: ndvi at 1 km (dynamic), dem at 500 m (static), ~30 N 114 E
    left, top = 400000, 3340000
    ndvi = write_raster(tmp_path / "ndvi.tif", [np.full((40, 40), 0.5), np.full((40, 40), 0.25)],
                        UTM, Affine(1000, 0, left, 0, -1000, top), dates=DATES)
    dem = write_raster(tmp_path / "dem.tif", [np.full((80, 80), 120.0)], UTM,
                       Affine(500, 0, left, 0, -500, top), nodata=-32768)
    # soil moisture: a window of the global EASE-Grid 2.0 9 km grid around that area
    ease = Grid("EPSG:6933", Affine(EASE_RES, 0, EASE_X0, 0, -EASE_RES, EASE_Y0), 3856, 1624)
    fine = snapped_grid(UTM, (left, top - 40000, left + 40000, top), 1000)
    _, around = coarse_grid_for(ease, fine)
    col0, row0 = around.col_off - 2, around.row_off - 2
    shape = (around.height + 4, around.width + 4)
    sm = write_raster(tmp_path / "sm.tif", [np.full(shape, 0.3), np.full(shape, 0.2)], "EPSG:6933",
                      Affine(EASE_RES, 0, EASE_X0 + col0 * EASE_RES, 0, -EASE_RES,
                             EASE_Y0 - row0 * EASE_RES), dates=DATES)
    ds = preprocess([ndvi, dem], sm, str(tmp_path / "dataset"), categorical=())
    assert ds.fine_grid.crs.to_epsg() == 32650
    assert ds.fine_grid.transform == Affine(1000, 0, left, 0, -1000, top)
    assert ds.fine_grid.shape == (40, 40)
    assert ds.coarse_grid.crs.to_epsg() == 6933
    # the coarse origin is on the EASE grid: x = x0 + k * 9008.055210146
    t = ds.coarse_grid.transform
    k = (t.c - EASE_X0) / EASE_RES
    m = (EASE_Y0 - t.f) / EASE_RES
    assert abs(k - round(k)) < 1e-6 and abs(m - round(m)) < 1e-6
    assert (round(k), round(m)) == (around.col_off, around.row_off)
    assert t.a == pytest.approx(EASE_RES, abs=1e-6)
    # 40 km x 40 km at ~30 N is covered by 5-6 EASE columns and 5 rows
    assert 5 <= ds.coarse_grid.width <= 7 and 4 <= ds.coarse_grid.height <= 6
    np.testing.assert_array_equal(ds.read_fine("dem", 0), np.full((40, 40), 120.0, "float32"))
    fraction = ds.read_valid_fraction(0)
    for name, date_index, value in (("ndvi", 0, 0.5), ("ndvi", 1, 0.25), ("dem", 0, 120.0)):
        coarse = ds.read_coarse(name, date_index)
        kept = fraction >= 0.5 - 1e-6
        np.testing.assert_array_equal(coarse[kept], value)
        assert np.isnan(coarse[~kept]).all()
    # interior cells are fully covered, edge cells partly: both kinds exist
    assert (fraction > 0.999).any() and ((fraction > 0.01) & (fraction < 0.5)).any()
    target = ds.read_target(1)
    np.testing.assert_array_equal(target[fraction >= 0.5 - 1e-6], np.float32(0.2))
    # each cell's valid fraction = area of (fine extent, transformed by OGR) n cell / cell area
    from osgeo import ogr, osr

    utm, ease_ref = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(32650)
    ease_ref.ImportFromEPSG(6933)
    for reference in (utm, ease_ref):
        reference.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    extent = ogr.CreateGeometryFromJson(json.dumps(square(left, top - 40000, left + 40000, top)))
    extent.Segmentize(500)
    extent.Transform(osr.CoordinateTransformation(utm, ease_ref))
    for row in range(ds.coarse_grid.height):
        for col in range(ds.coarse_grid.width):
            x0, y0 = t * (col, row + 1)
            x1, y1 = t * (col + 1, row)
            box = ogr.CreateGeometryFromJson(json.dumps(square(x0, y0, x1, y1)))
            expected = extent.Intersection(box).GetArea() / box.GetArea()
            assert abs(fraction[row, col] - expected) < 0.01, (row, col, expected)


def test_only_dynamic_predictors(case):
    ds = preprocess([case["ndvi"]], case["sm"], case["out"])
    assert ds.predictor_names == ["ndvi", "doy"] and ds.categorical_names == []
    np.testing.assert_array_equal(ds.read_coarse("ndvi", 1), [[15.75, NAN], [50.0, 56.0]])


def test_date_mismatch_lists_missing_dates(case):
    ndvi = write_raster(case["tmp"] / "inputs" / "lst.tif", [np.ones((6, 6))] * 2, UTM,
                        Affine(1000, 0, 400000, 0, -1000, 3006000), dates=["2019-04-01", "2019-04-05"])
    with pytest.raises(SmdError, match=r"lst\.tif lacks 1 date\(s\): 2019-04-02"):
        preprocess([case["ndvi"], ndvi], case["sm"], case["out"])
    assert not os.path.exists(case["out"])


def test_unknown_categorical_lists_predictors(case):
    with pytest.raises(SmdError, match="landcover not among the predictors \\(ndvi, lc\\)"):
        preprocess([case["ndvi"], case["lc"]], case["sm"], case["out"], categorical=["landcover"])


def test_non_overlapping_inputs(case):
    far = write_raster(case["tmp"] / "inputs" / "far.tif", [np.ones((6, 6))], UTM,
                       Affine(1000, 0, 600000, 0, -1000, 3006000))
    with pytest.raises(SmdError, match="do not overlap: ndvi.tif, far.tif"):
        preprocess([case["ndvi"], far], case["sm"], case["out"])


def test_missing_crs(case):
    bare = write_raster(case["tmp"] / "inputs" / "bare.tif", [np.ones((6, 6))], None,
                        Affine(1000, 0, 400000, 0, -1000, 3006000))
    with pytest.raises(SmdError, match="bare.tif has no coordinate reference system"):
        preprocess([case["ndvi"], bare], case["sm"], case["out"])


def test_failed_run_leaves_nothing(case):
    calls = []

    def cancel_after_three_checks():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        preprocess([case["ndvi"], case["lc"]], case["sm"], case["out"],
                   progress=Progress(is_cancelled=cancel_after_three_checks))
    assert not os.path.exists(case["out"])
    assert [n for n in os.listdir(case["tmp"]) if n.startswith(".dataset")] == []
    # inputs untouched
    with rasterio.open(case["ndvi"]) as src:
        assert src.count == 3 and src.read(2)[5, 5] == 35


# --- partitions -------------------------------------------------------------------------------
def square(x0, y0, x1, y1):
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def test_partitions_from_geopackage(tmp_path):
    from osgeo import ogr, osr

    path = str(tmp_path / "parts.gpkg")
    driver = ogr.GetDriverByName("GPKG")
    source = driver.CreateDataSource(path)
    reference = osr.SpatialReference()
    reference.ImportFromEPSG(32650)
    layer = source.CreateLayer("parts", reference, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("zone", ogr.OFTString))
    for name, geometry in (("plain", square(0, 0, 2000, 2000)), ("hills", square(2000, 0, 4000, 2000)),
                           ("plain", square(0, 2000, 2000, 4000))):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("zone", name)
        feature.SetGeometry(ogr.CreateGeometryFromJson(json.dumps(geometry)))
        layer.CreateFeature(feature)
    source = None

    parts = Partitions.from_file(path, "zone")
    assert parts.names == ["plain", "hills"]
    assert parts.geometries[1]["type"] == "Polygon"
    grid = Grid(UTM, Affine(1000, 0, 0, 0, -1000, 4000), 4, 4)
    expected = [[0, 0, -1, -1], [0, 0, -1, -1], [0, 0, 1, 1], [0, 0, 1, 1]]
    np.testing.assert_array_equal(partition_index_on_grid(parts, grid), expected)
    restored = Partitions.from_json(json.loads(json.dumps(parts.to_json())))
    np.testing.assert_array_equal(partition_index_on_grid(restored, grid), expected)
    with pytest.raises(SmdError, match="no field 'name'; available fields: zone"):
        Partitions.from_file(path, "name")

    empty = str(tmp_path / "empty.gpkg")
    source = driver.CreateDataSource(empty)
    layer = source.CreateLayer("parts", reference, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("zone", ogr.OFTString))
    source = None
    with pytest.raises(SmdError, match="empty"):
        Partitions.from_file(empty, "zone")


def test_centre_versus_majority():
    # One 10 km cell; partition A covers its left 37 % plus a 2 km square around the centre,
    # B the rest (59 %). Sub-cell centres (500 + 1000 k) never lie on a boundary.
    a = {"type": "MultiPolygon", "coordinates": [square(0, 0, 3700, 10000)["coordinates"],
                                                 square(4000, 4000, 6000, 6000)["coordinates"]]}
    b = {"type": "Polygon", "coordinates": [
        [[3700, 0], [10000, 0], [10000, 10000], [3700, 10000], [3700, 0]],
        [[4000, 4000], [4000, 6000], [6000, 6000], [6000, 4000], [4000, 4000]]]}
    parts = Partitions(["A", "B"], [a, b], "EPSG:32650")
    cell = Grid(UTM, Affine(10000, 0, 0, 0, -10000, 10000), 1, 1)
    # centre (5000, 5000) lies in A's square; B covers 63 % - 4 % = 59 % of the area
    assert partition_index_on_grid(parts, cell, "centre").tolist() == [[0]]
    assert partition_index_on_grid(parts, cell, "majority").tolist() == [[1]]
    # a 2 x 1 grid: the right cell (10-20 km) is outside both partitions
    two = Grid(UTM, Affine(10000, 0, 0, 0, -10000, 10000), 2, 1)
    assert partition_index_on_grid(parts, two, "majority").tolist() == [[1, -1]]
    assert partition_index_on_grid(parts, two, "majority").dtype == np.int16
    # geometries in another CRS are transformed to the grid's
    from rasterio.warp import transform_geom
    parts_ll = Partitions(["A", "B"], [transform_geom(UTM, "EPSG:4326", g) for g in (a, b)],
                          "EPSG:4326")
    assert partition_index_on_grid(parts_ll, cell, "majority").tolist() == [[1]]
    assert partition_index_on_grid(parts_ll, cell, "centre").tolist() == [[0]]


# --- real data: terra's Luxembourg elevation (EPSG:4326, Int16, nodata -32768) ------------------
def _realdata(*parts):
    from conftest import REALDATA

    path = os.path.join(REALDATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"real test data {path} is absent (see /work/shared/realdata/README.md)")
    return path


def test_real_elevation_onto_utm_and_ease(tmp_path):
    from rasterio.warp import transform as transform_points

    elev = _realdata("dem_terra", "elev.tif")
    # a soil-moisture series on the global EASE 9 km grid around Luxembourg (5.7-6.6 E, 49.4-50.2 N)
    ease = Grid("EPSG:6933", Affine(EASE_RES, 0, EASE_X0, 0, -EASE_RES, EASE_Y0), 3856, 1624)
    lux = snapped_grid("EPSG:32632", (255000, 5470000, 335000, 5570000), 1000)
    _, around = coarse_grid_for(ease, lux)
    shape = (around.height, around.width)
    sm = write_raster(tmp_path / "sm.tif", [np.full(shape, 0.3), np.full(shape, 0.2)], "EPSG:6933",
                      ease.subgrid(around).transform, dates=DATES)
    # elev.tif is in degrees: a 1000 (m) resolution needs a projected target CRS
    with pytest.raises(SmdError, match="EPSG:4326 is geographic"):
        preprocess([elev], sm, str(tmp_path / "dataset"))
    ds = preprocess([elev], sm, str(tmp_path / "dataset"), target_crs="EPSG:32632",
                    min_valid_fraction=0.9)
    assert ds.fine_grid.crs.to_epsg() == 32632 and ds.fine_grid.res == (1000.0, 1000.0)
    dem = ds.read_fine("elev", 0)
    valid = np.isfinite(dem)
    # averages of the real 141..547 m elevations; nodata outside the country stays NaN
    assert 141 <= dem[valid].min() and dem[valid].max() <= 547
    assert 0.2 < valid.mean() < 0.9
    # the country's area is 2586 km2; GDAL's average keeps a fine pixel when any valid source
    # pixel overlaps it, so the border ring adds about half a pixel along the ~350 km border
    assert 2586 <= valid.sum() <= 1.08 * 2586
    coarse = ds.read_coarse("elev", 0)
    fraction = ds.read_valid_fraction(0)
    kept = np.isfinite(coarse)
    assert kept.any() and (fraction[kept] >= 0.9 - 1e-6).all() and np.isnan(coarse[fraction < 0.9]).all()
    # each kept coarse cell ~ the mean of the fine pixels whose centres fall inside it
    xs, ys = ds.fine_grid.cell_centres()
    ex, ey = transform_points("EPSG:32632", "EPSG:6933", xs.ravel(), ys.ravel())
    cols, rows = ~ds.coarse_grid.transform * (np.asarray(ex), np.asarray(ey))
    cols, rows = np.floor(cols).astype(int), np.floor(rows).astype(int)
    for row, col in zip(*np.nonzero(kept)):
        inside = (rows == row) & (cols == col) & valid.ravel()
        assert abs(coarse[row, col] - dem.ravel()[inside].mean()) < 0.03 * coarse[row, col]
    np.testing.assert_array_equal(ds.read_target(0)[kept], np.float32(0.3))


def test_real_smap_and_elevation_do_not_overlap(tmp_path):
    import shutil

    elev = _realdata("dem_terra", "elev.tif")
    smap = str(tmp_path / "smap_conus.tif")
    shutil.copy(_realdata("smap_l4_harmony_maskfill", "SMAP_L4_SM_aup_input.tif"), smap)
    with rasterio.open(smap, "r+") as dst:  # a copy: give its single band the granule's date
        dst.set_band_description(1, "2020-01-28")
    with pytest.raises(SmdError, match="do not overlap: elev.tif, smap_conus.tif"):
        preprocess([elev], smap, str(tmp_path / "dataset"), target_crs="EPSG:32632")
    assert not os.path.exists(tmp_path / "dataset")


def test_real_partitions_from_shapefile():
    from osgeo import ogr, osr

    path = _realdata("dem_terra", "lux.shp")
    parts = Partitions.from_file(path, "NAME_1")  # 12 cantons merged into 3 districts
    assert parts.names == ["Diekirch", "Grevenmacher", "Luxembourg"]
    grid = snapped_grid("EPSG:32632", (255000, 5470000, 335000, 5570000), 1000)
    index = partition_index_on_grid(parts, grid, "centre")
    # pixel counts match the polygons' areas computed by OGR in the same CRS (within 2 %)
    target = osr.SpatialReference()
    target.ImportFromEPSG(32632)
    target.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    source = osr.SpatialReference()
    source.ImportFromWkt(parts.crs)
    source.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    for number, geometry in enumerate(parts.geometries):
        polygon = ogr.CreateGeometryFromJson(json.dumps(geometry))
        polygon.Transform(osr.CoordinateTransformation(source, target))
        area_km2 = polygon.GetArea() / 1e6
        assert abs((index == number).sum() - area_km2) < 0.02 * area_km2
    # Luxembourg city, Diekirch and Echternach (Grevenmacher district) by their coordinates
    from rasterio.warp import transform as transform_points

    xs, ys = transform_points("EPSG:4326", "EPSG:32632", [6.13, 6.16, 6.42], [49.61, 49.87, 49.81])
    cols, rows = ~grid.transform * (np.asarray(xs), np.asarray(ys))
    found = [parts.names[index[int(r), int(c)]] for r, c in zip(rows, cols)]
    assert found == ["Luxembourg", "Diekirch", "Grevenmacher"]
