"""Spectral indices: hand-computed values, zero division, dates, band map and bad input."""
import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from smdownscale.core.common import SmdError
from smdownscale.core.dataprep.indices import compute_index, parse_band_map, spectral_indices
from smdownscale.core.dataprep.series_io import date_from_filename

TRANSFORM = from_origin(500000.0, 4000000.0, 500.0, 500.0)


def write_reflectance(path, bands, *, nodata=-28672, transform=TRANSFORM, tags=None):
    """bands: (7, rows, cols) int16 stored values (reflectance x 10000), MOD09A1 order."""
    bands = np.asarray(bands, dtype="int16")
    with rasterio.open(path, "w", driver="GTiff", width=bands.shape[2], height=bands.shape[1], count=bands.shape[0],
                       dtype="int16", crs="EPSG:32650", transform=transform, nodata=nodata) as dst:
        dst.write(bands)
        if tags:
            dst.update_tags(**tags)
    return str(path)


def reflectance_2x2():
    """7 bands x 2 x 2. Pixel (0,0) ordinary; (0,1) zero sums; (1,0) nodata red; (1,1) EVI denominator 0."""
    b = np.zeros((7, 2, 2), dtype="int16")
    # red, nir, blue, green, band5, swir1, swir2 as stored values (x 1e-4)
    b[:, 0, 0] = [1000, 3000, 500, 800, 0, 2000, 1500]
    b[:, 0, 1] = [0, 0, 0, 0, 0, 0, 0]
    b[:, 1, 0] = [-28672, 4000, 400, 600, 0, 2500, 2000]
    # nir + 6 red - 7.5 blue + 1 = 0 with red=0.1, nir=0.1 -> blue = (0.1 + 0.6 + 1)/7.5 = 0.22666..
    # use red 0.1, nir 0.2, blue 0.24 -> 0.2 + 0.6 - 1.8 + 1 = 0
    b[:, 1, 1] = [1000, 2000, 2400, 1000, 0, 1000, 1000]
    return b


def test_formulas_hand_computed(tmp_path):
    src = write_reflectance(tmp_path / "mod09a1_2019-04-07.tif", reflectance_2x2())
    out = spectral_indices(src, str(tmp_path))
    assert sorted(out) == ["evi", "ndvi", "ndwi", "nsdsi"]
    read = {}
    for name, path in out.items():
        assert os.path.basename(path) == f"{name}.tif"
        with rasterio.open(path) as ds:
            assert ds.descriptions == ("2019-04-07",)
            assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
            assert ds.transform == TRANSFORM
            read[name] = ds.read(1)
    # pixel (0,0): red .1, nir .3, blue .05, green .08, swir1 .2, swir2 .15
    assert read["ndvi"][0, 0] == pytest.approx(0.2 / 0.4, abs=1e-6)                      # 0.5
    assert read["evi"][0, 0] == pytest.approx(2.5 * 0.2 / (0.3 + 0.6 - 0.375 + 1), abs=1e-6)  # 0.327869
    assert read["ndwi"][0, 0] == pytest.approx((0.08 - 0.3) / 0.38, abs=1e-6)            # -0.578947
    assert read["nsdsi"][0, 0] == pytest.approx(0.05 / 0.2, abs=1e-6)                    # 0.25
    # pixel (0,1): all zero -> NDVI, NDWI, NSDSI are 0/0 -> NaN; EVI = 0 / 1 = 0
    assert np.isnan(read["ndvi"][0, 1]) and np.isnan(read["ndwi"][0, 1]) and np.isnan(read["nsdsi"][0, 1])
    assert read["evi"][0, 1] == 0.0
    # pixel (1,0): red is nodata -> NDVI and EVI NaN; NDWI, NSDSI still defined
    assert np.isnan(read["ndvi"][1, 0]) and np.isnan(read["evi"][1, 0])
    assert read["ndwi"][1, 0] == pytest.approx((0.06 - 0.4) / 0.46, abs=1e-6)
    assert read["nsdsi"][1, 0] == pytest.approx(0.05 / 0.25, abs=1e-6)
    # pixel (1,1): EVI denominator exactly 0 -> NaN, never inf
    assert np.isnan(read["evi"][1, 1])
    assert read["ndvi"][1, 1] == pytest.approx(0.1 / 0.3, abs=1e-6)
    for values in read.values():
        assert not np.isinf(values).any()


def test_compute_index_zero_division_is_nan():
    bands = {"nir": np.array([0.0, 0.5, -0.2]), "red": np.array([0.0, 0.5, 0.2])}
    result = compute_index("ndvi", bands)
    assert np.isnan(result[0]) and result[1] == 0.0 and np.isnan(result[2])


def test_series_of_dates_sorted_and_band_map(tmp_path):
    first = reflectance_2x2()
    second = reflectance_2x2()
    second[0, 0, 0] = 2000  # red 0.2 on the later date -> NDVI (0.3-0.2)/0.5 = 0.2
    # given out of order; dates from the DATE tag and from a compact file name
    late = write_reflectance(tmp_path / "scene_b.tif", second, tags={"DATE": "2019-04-15"})
    early = write_reflectance(tmp_path / "MOD09A1_20190407.tif", first)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = spectral_indices([late, early], str(out_dir), indices=["ndvi"], block_size=1)
    with rasterio.open(out["ndvi"]) as ds:
        assert ds.descriptions == ("2019-04-07", "2019-04-15")
        values = ds.read()
    assert values[0, 0, 0] == pytest.approx(0.5, abs=1e-6)
    assert values[1, 0, 0] == pytest.approx(0.2, abs=1e-6)
    # swapping red and nir through the band map flips the NDVI sign
    out2 = spectral_indices(early, {"ndvi": str(tmp_path / "swapped.tif")}, indices=["ndvi"],
                            band_map="red:2,nir:1")
    with rasterio.open(out2["ndvi"]) as ds:
        assert ds.read(1)[0, 0] == pytest.approx(-0.5, abs=1e-6)


def test_parse_band_map_and_filename_dates():
    assert parse_band_map("red:3, nir:4")["red"] == 3
    assert parse_band_map(None)["swir2"] == 7
    with pytest.raises(SmdError):
        parse_band_map("rouge:1")
    with pytest.raises(SmdError):
        parse_band_map("red=1")
    assert date_from_filename("/x/MOD09A1.A2019097.h27v05.006.tif") == "2019-04-07"
    assert date_from_filename("S1A_IW_GRDH_20190407T101010.tif") == "2019-04-07"
    assert date_from_filename("ndvi_2019-04-07.tif") == "2019-04-07"
    assert date_from_filename("ndvi.tif") is None


def test_bad_inputs_leave_nothing(tmp_path):
    a = write_reflectance(tmp_path / "r_2019-04-07.tif", reflectance_2x2())
    shifted = from_origin(500500.0, 4000000.0, 500.0, 500.0)
    b = write_reflectance(tmp_path / "r_2019-04-15.tif", reflectance_2x2(), transform=shifted)
    undated = write_reflectance(tmp_path / "reflectance.tif", reflectance_2x2())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(SmdError, match="not on the grid"):
        spectral_indices([a, b], str(out_dir))
    with pytest.raises(SmdError, match="cannot tell its date"):
        spectral_indices([a, undated], str(out_dir))
    with pytest.raises(SmdError, match="band map asks"):
        spectral_indices(a, str(out_dir), band_map={"swir2": 9})
    with pytest.raises(SmdError, match="same date"):
        spectral_indices([a, a], str(out_dir))
    with pytest.raises(SmdError, match="Unknown"):
        spectral_indices(a, str(out_dir), indices=["savi"])
    assert os.listdir(out_dir) == []


def test_undated_single_raster_gives_static_band(tmp_path):
    undated = write_reflectance(tmp_path / "reflectance.tif", reflectance_2x2())
    out = spectral_indices(undated, {"nsdsi": str(tmp_path / "nsdsi.tif")}, indices=["nsdsi"])
    with rasterio.open(out["nsdsi"]) as ds:
        assert ds.count == 1 and ds.descriptions == (None,)
        assert ds.read(1)[0, 0] == pytest.approx(0.25, abs=1e-6)
