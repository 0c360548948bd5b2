"""Land-cover reclassification: paper Table 2 mapping, water as nodata, table parsing, bad input."""
import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from smdownscale.core.common import SmdError
from smdownscale.core.dataprep.landcover import parse_reclass_table, reclassify_landcover

TRANSFORM = from_origin(100000.0, 3300000.0, 463.3127, 463.3127)
#: every LC_Type5 value (0-11) and 255 unclassified, as a 3 x 5 uint8 raster
PFT = np.array([[0, 1, 2, 3, 4],
                [5, 6, 7, 8, 9],
                [10, 11, 255, 6, 7]], dtype="uint8")


def write_lc(path, values=PFT, *, nodata=None):
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[1], height=values.shape[0], count=1,
                       dtype=values.dtype, crs="ESRI:54008", transform=TRANSFORM,
                       nodata=nodata) as dst:
        dst.write(values, 1)
    return str(path)


def test_table2_mapping(tmp_path):
    src = write_lc(tmp_path / "mcd12q1_lc_type5.tif")
    out = tmp_path / "lc.tif"
    info = reclassify_landcover(src, str(out))
    with rasterio.open(out) as ds:
        values = ds.read(1)
        assert ds.transform == TRANSFORM and ds.shape == PFT.shape and ds.crs.to_string() == "ESRI:54008"
        assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
    expected = np.array([[0, 1, 1, 1, 1],
                         [1, 2, 3, 3, 4],
                         [4, 4, np.nan, 2, 3]], dtype="float32")
    np.testing.assert_array_equal(values, expected)
    assert info == {"class_counts": {0: 1, 1: 5, 2: 2, 3: 3, 4: 3}, "nodata_pixels": 1}


def test_water_as_nodata_and_custom_table(tmp_path):
    src = write_lc(tmp_path / "pft.tif")
    out = tmp_path / "lc.tif"
    info = reclassify_landcover(src, str(out), water_as_nodata=True, block_size=2)
    with rasterio.open(out) as ds:
        values = ds.read(1)
    assert np.isnan(values[0, 0]) and np.isnan(values[2, 2])
    assert values[0, 1] == 1 and values[1, 1] == 2 and values[1, 4] == 4
    assert info["class_counts"] == {1: 5, 2: 2, 3: 3, 4: 3} and info["nodata_pixels"] == 2
    # a custom table: croplands kept apart, urban only, snow/barren dropped
    reclassify_landcover(src, str(out), table="0:nodata, 1-5:1, 6:2, 7:3, 8:5, 9:4")
    with rasterio.open(out) as ds:
        values = ds.read(1)
    assert np.isnan(values[0, 0]) and values[1, 2] == 3 and values[1, 3] == 5
    assert np.isnan(values[2, 0]) and np.isnan(values[2, 1])


def test_input_nodata_is_nodata(tmp_path):
    src = write_lc(tmp_path / "pft.tif", nodata=6)   # declared nodata wins over the table
    out = tmp_path / "lc.tif"
    reclassify_landcover(src, str(out))
    with rasterio.open(out) as ds:
        values = ds.read(1)
    assert np.isnan(values[1, 1]) and np.isnan(values[2, 3]) and values[1, 2] == 3


def test_parse_reclass_table():
    assert parse_reclass_table("0:0,1-5:1,6:2,7-8:3,9-11:4") == [
        (0, 0, 0), (1, 5, 1), (6, 6, 2), (7, 8, 3), (9, 11, 4)]
    assert parse_reclass_table("0:nodata; 1:1") == [(0, 0, None), (1, 1, 1)]
    for bad in ("", "1-5", "a:1", "5-1:1", "1-5:1,3:2", "1:x", ",,"):
        with pytest.raises(SmdError):
            parse_reclass_table(bad)


def test_bad_inputs_leave_nothing(tmp_path):
    src = write_lc(tmp_path / "pft.tif")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = str(out_dir / "lc.tif")
    with pytest.raises(SmdError, match="overlaps"):
        reclassify_landcover(src, out, table="1-5:1,5-6:2")
    with pytest.raises(SmdError, match="band 2 does not exist"):
        reclassify_landcover(src, out, band=2)
    with pytest.raises(SmdError, match="does not exist"):
        reclassify_landcover(str(tmp_path / "missing.tif"), out)
    with pytest.raises(SmdError, match="also an input"):
        reclassify_landcover(src, src)
    assert os.listdir(out_dir) == []
