"""Issue 8, data preparation: each concrete failure ends in one SmdError that says what is wrong
and what to do, and leaves nothing behind."""
import io
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from conftest import REALDATA

from smdownscale.core.common import SmdError

SMAP_DIR = os.path.join(REALDATA, "smap_l4_harmony_maskfill")
UTM = os.path.join(SMAP_DIR, "SMAP_L4_SM_aup_UTM_input.h5")
COMPARISON = os.path.join(SMAP_DIR, "SMAP_L4_SM_aup_comparison.h5")
ISMN = os.path.join(REALDATA, "ismn")
NARBONNE = os.path.join(ISMN, "format_header_values", "SMOSMANIA",
                        "SMOSMANIA_SMOSMANIA_Narbonne_sm_0.050000_0.050000_ThetaProbe-ML2X_20070101_20070131.stm")
MULTI_ZIP = os.path.join(ISMN, "zip_archives", "multinetwork", "header_values", "Data_header_values.zip")
TRANSFORM = from_origin(500000.0, 4000000.0, 500.0, 500.0)

needs_smap = pytest.mark.skipif(not os.path.isfile(UTM), reason="real SMAP granules missing")
needs_ismn = pytest.mark.skipif(not os.path.isfile(MULTI_ZIP), reason="real ISMN data missing")


def _copy(source, folder, name=None):
    path = os.path.join(folder, name or os.path.basename(source))
    shutil.copyfile(source, path)
    os.chmod(path, 0o644)
    return path


def _only(folder, *names):
    assert sorted(os.listdir(folder)) == sorted(names)


# --- SMAP --------------------------------------------------------------------------------------

def _crash_granule(folder):
    """The fuzzer's crashing granule: one byte of the root group's link-name heap changed."""
    path = _copy(UTM, folder)
    with open(path, "r+b") as handle:
        handle.seek(114628)
        handle.write(bytes([5]))
    return path


@needs_smap
def test_granule_that_crashed_libhdf5_is_a_clean_error(tmp_path, monkeypatch):
    """Case 6: free(): invalid pointer / SIGSEGV inside libhdf5 -> SmdError naming the granule.

    MALLOC_PERTURB_ makes the uninitialised memory libhdf5 frees garbage every time (as in a
    long-lived QGIS process), so the crash is deterministic here.
    """
    from smdownscale.core.dataprep.smap import import_smap_l4

    granule = _crash_granule(str(tmp_path))
    monkeypatch.setenv("MALLOC_PERTURB_", "85")
    with pytest.raises(SmdError) as caught:
        import_smap_l4([granule], str(tmp_path / "sm.tif"), variable="sm_profile_analysis")
    message = str(caught.value)
    assert "SMAP_L4_SM_aup_UTM_input.h5" in message
    assert "crashed the HDF5 library" in message and "Download it again" in message
    _only(tmp_path, "SMAP_L4_SM_aup_UTM_input.h5")


@needs_smap
def test_the_crash_is_in_libhdf5_itself(tmp_path):
    """Why the reader is isolated: the same granule read in-process dies of a signal."""
    granule = _crash_granule(str(tmp_path))
    code = ("from osgeo import gdal; ds = gdal.OpenEx(%r, gdal.OF_MULTIDIM_RASTER); "
            "ds.GetRootGroup().GetMDArrayNames()" % granule)
    env = dict(os.environ, MALLOC_PERTURB_="85")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=60)
    assert result.returncode < 0  # SIGSEGV / SIGABRT (free(): invalid pointer)


@needs_smap
def test_corrupt_chunks_name_file_and_dataset(tmp_path):
    """Case 8: the empty RuntimeError of the HDF5 array read -> SmdError naming file and dataset."""
    h5py = pytest.importorskip("h5py")
    from smdownscale.core.dataprep.smap import import_smap_l4

    granule = _copy(COMPARISON, str(tmp_path))
    with h5py.File(granule, "r") as h5:
        dsid = h5["Analysis_Data/sm_profile_analysis"].id
        chunks = [dsid.get_chunk_info(i) for i in range(dsid.get_num_chunks())]
    with open(granule, "r+b") as handle:
        for chunk in chunks:
            handle.seek(chunk.byte_offset + 2)
            handle.write(b"\xff" * 8)
    with pytest.raises(SmdError) as caught:
        import_smap_l4([granule], str(tmp_path / "sm.tif"), variable="sm_profile_analysis")
    message = str(caught.value)
    assert "SMAP_L4_SM_aup_comparison.h5" in message
    assert "/Analysis_Data/sm_profile_analysis" in message and "damaged" in message
    _only(tmp_path, "SMAP_L4_SM_aup_comparison.h5")


@needs_smap
@pytest.mark.parametrize("change, expected", [
    ("percent", "look like percent"),
    ("all-fill", "no valid value"),
    ("time", "/time"),
])
def test_implausible_granules(tmp_path, change, expected):
    h5py = pytest.importorskip("h5py")
    from smdownscale.core.dataprep.smap import import_smap_l4

    granule = _copy(COMPARISON, str(tmp_path))
    with h5py.File(granule, "r+") as h5:
        data = h5["Analysis_Data/sm_profile_analysis"]
        values = data[()]
        if change == "percent":
            values[values != -9999.0] *= 100.0
        elif change == "all-fill":
            values[...] = -9999.0
        else:
            h5["time"][0] = 1e300
        data[...] = values
    with pytest.raises(SmdError, match=expected):
        import_smap_l4([granule], str(tmp_path / "sm.tif"), variable="sm_profile_analysis")
    _only(tmp_path, "SMAP_L4_SM_aup_comparison.h5")


# --- ISMN --------------------------------------------------------------------------------------

def _zip(path, members, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return str(path)


def _narbonne_lines():
    with open(NARBONNE, "rb") as handle:
        return handle.read().decode("utf-8").splitlines()


def _stm(tmp_path, lines, name=os.path.basename(NARBONNE)):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@needs_ismn
def test_zip_bomb_refused_from_the_directory(tmp_path):
    """Case 7: no member-size guard -> a member inflating 1000-fold is refused unread."""
    from smdownscale.core.dataprep.ismn import import_ismn

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("N/S/N_N_S_sm_0.05_0.05_x.stm", "w") as member:
            for _ in range(32):
                member.write(b"0" * 2**20)
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(buffer.getvalue())
    with pytest.raises(SmdError, match=r"bomb\.zip:N/S/N_N_S_sm_0\.05_0\.05_x\.stm would inflate \d+-fold"):
        import_ismn(str(bomb), str(tmp_path / "out.gpkg"))
    _only(tmp_path, "bomb.zip")


@needs_ismn
def test_zip_member_count_and_size_guards(tmp_path, monkeypatch):
    from smdownscale.core.dataprep import ismn

    many = _zip(tmp_path / "many.zip", [(f"n/s/f{i}_sm_0.05_0.05_x.stm", b"") for i in range(30)])
    monkeypatch.setattr(ismn, "MAX_ZIP_MEMBERS", 20)
    with pytest.raises(SmdError, match=r"many\.zip lists 30 members, more than 20"):
        ismn.import_ismn(many, str(tmp_path / "out.gpkg"))
    monkeypatch.setattr(ismn, "MAX_MEMBER_BYTES", 100_000)
    with pytest.raises(SmdError, match=r"Data_header_values\.zip:MAQU/CST-01/.*\.stm is \d+ MiB"):
        ismn.import_ismn(MULTI_ZIP, str(tmp_path / "out.gpkg"))
    _only(tmp_path, "many.zip")


@needs_ismn
def test_damaged_zip_member_names_archive_and_member(tmp_path):
    """Case 8: BadZipFile / zlib errors -> SmdError naming archive and member."""
    from smdownscale.core.dataprep.ismn import import_ismn

    data = bytearray(open(MULTI_ZIP, "rb").read())
    with zipfile.ZipFile(MULTI_ZIP) as archive:
        first = next(m for m in archive.infolist() if m.filename.endswith(".stm"))
    # the compressed bytes of the first member (after its local header)
    start = first.header_offset + 30 + len(first.filename.encode()) + len(first.extra) + 100
    data[start:start + 64] = b"\x00" * 64
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(data))
    with pytest.raises(SmdError) as caught:
        import_ismn(str(damaged), str(tmp_path / "out.gpkg"))
    message = str(caught.value)
    assert f"damaged.zip:{first.filename}" in message and "Download it again" in message
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(open(MULTI_ZIP, "rb").read()[:5000])
    with pytest.raises(SmdError, match="not a readable zip archive"):
        import_ismn(str(truncated), str(tmp_path / "out.gpkg"))
    _only(tmp_path, "damaged.zip", "truncated.zip")


def _set_values(lines, function):
    out = [lines[0]]
    for line in lines[1:]:
        tokens = line.split()
        tokens[2] = function(float(tokens[2]))
        out.append(" ".join(tokens))
    return out


@needs_ismn
def test_percent_soil_moisture_refused_with_hint(tmp_path):
    from smdownscale.core.dataprep.ismn import import_ismn

    path = _stm(tmp_path, _set_values(_narbonne_lines(), lambda v: f"{v * 100:.2f}"))
    with pytest.raises(SmdError) as caught:
        import_ismn(path, str(tmp_path / "out.gpkg"), quality_flags=None)
    message = str(caught.value)
    assert "Narbonne" in message and "line 2" in message
    assert "percent" in message and "divide them by 100" in message


@needs_ismn
def test_soil_moisture_outside_0_1_refused(tmp_path):
    from smdownscale.core.dataprep.ismn import import_ismn

    lines = _narbonne_lines()
    tokens = lines[5].split()
    lines[5] = " ".join(tokens[:2] + ["150.0"] + tokens[3:])
    path = _stm(tmp_path, lines)
    with pytest.raises(SmdError, match=r"between -0.02 and 1\)") as caught:
        import_ismn(path, str(tmp_path / "out.gpkg"), quality_flags=None)
    assert "percent" not in str(caught.value)
    _only(tmp_path, os.path.basename(NARBONNE))


@needs_ismn
def test_reading_dated_9999_12_31_refused(tmp_path):
    from smdownscale.core.dataprep.ismn import import_ismn

    lines = _narbonne_lines()
    lines[3] = "9999/12/31" + lines[3][10:]
    path = _stm(tmp_path, lines)
    with pytest.raises(SmdError, match=r"line 4: the date 9999/12/31 lies outside 1950-01-01 \.\.\. today"):
        import_ismn(path, str(tmp_path / "out.gpkg"), quality_flags=None)
    _only(tmp_path, os.path.basename(NARBONNE))


@needs_ismn
def test_all_readings_filtered_is_a_clear_error(tmp_path):
    from smdownscale.core.dataprep.ismn import import_ismn

    with pytest.raises(SmdError, match="No valid reading passed the filters"):
        import_ismn(NARBONNE, str(tmp_path / "out.gpkg"), quality_flags=["G"])  # Narbonne: U / D05 only
    _only(tmp_path)


# --- rasters -----------------------------------------------------------------------------------

def _raster(path, values, dates=None, nodata=np.nan, dtype="float32"):
    values = np.asarray(values, dtype=dtype)
    values = values[np.newaxis] if values.ndim == 2 else values
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[2], height=values.shape[1],
                       count=values.shape[0], dtype=dtype, crs="EPSG:32650", transform=TRANSFORM,
                       nodata=nodata, tiled=True, blockxsize=16, blockysize=16, compress="deflate") as dst:
        dst.write(values)
        for band, date in enumerate(dates or [], start=1):
            dst.set_band_description(band, date)
    return str(path)


def _days(n, start=1):
    return [f"2019-04-{day:02d}" for day in range(start, start + n)]


def _corrupt_tiles(path):
    """Overwrite the middle of the file (tile data), keep the header: reads fail, open works."""
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.seek(size // 2)
        handle.write(b"\xff" * (size // 4))


def test_corrupt_predictor_names_the_file_in_preprocess(tmp_path):
    """Case 8: "Chunk and warp failed" without a file name -> SmdError naming the predictor."""
    from smdownscale.core.preprocess import preprocess
    from smdownscale.demo.scenario import make_scenario

    scenario = make_scenario(str(tmp_path / "scenario"), size="small")
    victim = str(tmp_path / "ndvi.tif")
    shutil.copyfile(scenario["predictors"][0], victim)
    _corrupt_tiles(victim)
    predictors = [victim] + scenario["predictors"][1:]
    with pytest.raises(SmdError) as caught:
        preprocess(predictors, scenario["soil_moisture"], str(tmp_path / "dataset"))
    message = str(caught.value)
    assert victim in message and "damaged" in message
    assert not os.path.exists(tmp_path / "dataset")


def test_savgol_window_longer_than_series(tmp_path):
    """Case 9: SG window longer than the series -> SmdError with the longest half-width allowed."""
    from smdownscale.core.dataprep.gapfill import gap_fill

    series = _raster(tmp_path / "s.tif", np.ones((3, 8, 8)), dates=["2019-04-01", "2019-04-05", "2019-04-07"])
    with pytest.raises(SmdError, match=r"window \(2 x 5 \+ 1 = 11 days\) is longer than the series "
                                       r"\(7 day\(s\).*at most 3 \(window 7 days\)"):
        gap_fill(series, str(tmp_path / "out.tif"))
    _only(tmp_path, "s.tif")


def test_qc_rule_masking_everything_is_refused(tmp_path):
    """Case 9: a QC rule that masks everything no longer writes a 100% NaN output with exit 0."""
    from smdownscale.core.dataprep.gapfill import gap_fill

    dates = _days(20)
    series = _raster(tmp_path / "s.tif", np.full((20, 8, 8), 0.5), dates=dates)
    qc = _raster(tmp_path / "qc.tif", np.full((20, 8, 8), 3), dates=dates, nodata=None, dtype="uint8")
    with pytest.raises(SmdError) as caught:
        gap_fill(series, str(tmp_path / "out.tif"), qc_path=qc, qc_rule="bits 0-1 == 0")
    message = str(caught.value)
    assert "QC rule 'bits 0-1 == 0' rejects every valid value" in message and "values found" in message
    assert "3" in message and "Loosen the QC rule" in message
    _only(tmp_path, "s.tif", "qc.tif")


def test_all_nodata_series_is_refused(tmp_path):
    from smdownscale.core.dataprep.gapfill import gap_fill

    series = _raster(tmp_path / "s.tif", np.full((20, 8, 8), np.nan), dates=_days(20))
    with pytest.raises(SmdError, match="holds no valid value"):
        gap_fill(series, str(tmp_path / "out.tif"))
    _only(tmp_path, "s.tif")


def test_spectralindices_failure_leaves_no_partial_files(tmp_path):
    """Case 10: a failure leaves neither some indices nor an empty folder."""
    from smdownscale.core.dataprep.indices import spectral_indices

    good = _raster(tmp_path / "r_2019-04-01.tif", np.full((7, 32, 32), 1000.0))
    bad = _raster(tmp_path / "r_2019-04-09.tif", np.full((7, 32, 32), 1000.0))
    _corrupt_tiles(bad)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SmdError) as caught:
        spectral_indices([good, bad], str(out))
    assert bad in str(caught.value)
    _only(out)
    # all reflectance nodata: the indices would be 100% NaN
    empty = _raster(tmp_path / "e_2019-04-01.tif", np.full((7, 32, 32), np.nan))
    with pytest.raises(SmdError, match="NDVI, EVI, NDWI, NSDSI would hold no valid value"):
        spectral_indices([empty], str(out))
    _only(out)


def test_spectralindices_algorithm_removes_the_folder_it_created(tmp_path, qgis_processing):
    import processing
    from qgis.core import QgsProcessingException

    from smdownscale.processing.provider import SmDownscaleProvider

    provider = SmDownscaleProvider()
    provider.refreshAlgorithms()
    empty = _raster(tmp_path / "e_2019-04-01.tif", np.full((7, 32, 32), np.nan))
    folder = tmp_path / "new" / "indices"
    with pytest.raises(QgsProcessingException, match="would hold no valid value"):
        processing.run(provider.algorithm("spectralindices"), {"INPUT": [empty], "OUTPUT": str(folder)})
    assert not os.path.exists(tmp_path / "new")


def test_reclassify_to_nothing_is_refused(tmp_path):
    from smdownscale.core.dataprep.landcover import reclassify_landcover

    lc = _raster(tmp_path / "lc.tif", np.full((8, 8), 0.0))
    with pytest.raises(SmdError, match="gives no classified pixel .*values 0.*water is written as nodata"):
        reclassify_landcover(lc, str(tmp_path / "out.tif"), water_as_nodata=True)
    _only(tmp_path, "lc.tif")


def test_s1_composite_without_any_value_is_refused(tmp_path):
    from smdownscale.core.dataprep.s1 import s1_composite

    scene = _raster(tmp_path / "vv_2019-04-01.tif", np.full((8, 8), np.nan))
    with pytest.raises(SmdError, match="hold no valid value on the output grid"):
        s1_composite([scene], str(tmp_path / "out.tif"))
    _only(tmp_path, "vv_2019-04-01.tif")
