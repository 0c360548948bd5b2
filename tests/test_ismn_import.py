"""ISMN import on the real ISMN downloads in realdata/ismn (TUW-GEO/ismn test data)."""
import math
import os
import shutil

import pytest

from conftest import REALDATA

from smdownscale.core.common import Cancelled, Progress, SmdError
from smdownscale.core.dataprep.ismn import import_ismn, read_ismn_observations, to_observations
from smdownscale.core.stations import Observation, read_stations

ISMN = os.path.join(REALDATA, "ismn")
HEADER_DIR = os.path.join(ISMN, "Data_seperate_files_header_20170810_20180809")
CEOP_DIR = os.path.join(ISMN, "Data_seperate_files_20170810_20180809")
NARBONNE = "SMOSMANIA_SMOSMANIA_Narbonne_sm_0.050000_0.050000_ThetaProbe-ML2X_20070101_20070131.stm"
NARBONNE_HV = os.path.join(ISMN, "format_header_values", "SMOSMANIA", NARBONNE)
NARBONNE_CEOP = os.path.join(ISMN, "format_ceop_sep", "SMOSMANIA", NARBONNE)
MULTI_ZIP = os.path.join(ISMN, "zip_archives", "multinetwork", "header_values", "Data_header_values.zip")
HEADER_ZIP = os.path.join(ISMN, "zip_archives", "header", "Data_seperate_files_header_20170810_20180809.zip")
MALFORMED = os.path.join(ISMN, "malformed", "mal_formed_file.txt")

pytestmark = pytest.mark.skipif(not os.path.isdir(ISMN), reason=f"real ISMN test data not found in {ISMN}")

# Raw lines of COSMOS_COSMOS_ARM-1_sm_0.000000_0.190000_..._20170810_20180809.stm (header+values):
# 2017/08/10 00:00..23:00, all flagged G
ARM1_2017_08_10 = [0.1410, 0.1390, 0.1390, 0.1400, 0.1470, 0.1470, 0.1710, 0.1890, 0.1990, 0.2050, 0.2330,
                   0.2520, 0.2420, 0.2440, 0.2490, 0.2510, 0.2530, 0.2540, 0.2520, 0.2510, 0.2520, 0.2510,
                   0.2550, 0.2510]
# 2017/12/29: 00:00-18:00 flagged D03 (03, 05, 06, 11 h: "D03,D05"), 19:00-23:00 flagged G
ARM1_2017_12_29 = [(0, 0.0930, "D03"), (1, 0.0930, "D03"), (2, 0.0930, "D03"), (3, 0.0950, "D03,D05"),
                   (4, 0.0950, "D03"), (5, 0.0970, "D03,D05"), (6, 0.0980, "D03,D05"), (7, 0.0970, "D03"),
                   (8, 0.0970, "D03"), (9, 0.0950, "D03"), (10, 0.0950, "D03"), (11, 0.0960, "D03,D05"),
                   (12, 0.0930, "D03"), (13, 0.0920, "D03"), (14, 0.0870, "D03"), (15, 0.0870, "D03"),
                   (16, 0.0880, "D03"), (17, 0.0880, "D03"), (18, 0.0870, "D03"), (19, 0.0900, "G"),
                   (20, 0.0880, "G"), (21, 0.0890, "G"), (22, 0.0900, "G"), (23, 0.0890, "G")]
# Narbonne 2007/01/16 (CR line endings): 13:00 and 14:00 flagged D05, the rest U
NARBONNE_2007_01_16 = [(0, 0.1688, "U"), (1, 0.1688, "U"), (2, 0.1688, "U"), (3, 0.1688, "U"), (4, 0.1688, "U"),
                       (5, 0.1688, "U"), (6, 0.1684, "U"), (7, 0.1684, "U"), (8, 0.1684, "U"), (9, 0.1684, "U"),
                       (10, 0.1684, "U"), (11, 0.1692, "U"), (12, 0.1695, "U"), (13, 0.1703, "D05"),
                       (14, 0.1707, "D05"), (15, 0.1707, "U"), (16, 0.1699, "U"), (17, 0.1692, "U"),
                       (18, 0.1684, "U"), (19, 0.1680, "U"), (20, 0.1677, "U"), (21, 0.1677, "U"),
                       (22, 0.1673, "U"), (23, 0.1673, "U")]


def _by_date(records, site_id):
    return {r.date: r for r in records if r.site_id == site_id}


def test_header_values_daily_mean_by_hand():
    records = read_ismn_observations(HEADER_DIR, depth_from=0.0, depth_to=0.2)
    arm = _by_date(records, "COSMOS:ARM-1")
    day = arm["2017-08-10"]
    assert day.sm == pytest.approx(sum(ARM1_2017_08_10) / 24, abs=1e-12)
    assert day.sm == pytest.approx(0.21279166666666668, abs=1e-12)
    assert (day.network, day.station, day.lon, day.lat) == ("COSMOS", "ARM-1", -97.4878, 36.6054)
    assert (day.depth_from, day.depth_to, day.n_sensors) == (0.0, 0.19, 1)
    # only G readings by default: 19:00-23:00 on 2017-12-29; 2017-12-27 (all D03) is absent
    good = [v for _, v, f in ARM1_2017_12_29 if f == "G"]
    assert arm["2017-12-29"].sm == pytest.approx(sum(good) / 5, abs=1e-12)
    assert arm["2017-12-29"].sm == pytest.approx(0.0892, abs=1e-12)
    assert "2017-12-27" not in arm
    # Barrow-ARM's sensor spans 0-0.21 m: outside [0, 0.2]
    assert {r.site_id for r in records} == {"COSMOS:ARM-1"}


def test_ceop_gives_the_same_daily_series_as_header_values():
    header = read_ismn_observations(HEADER_DIR, depth_to=0.25)
    ceop = read_ismn_observations(CEOP_DIR, depth_to=0.25)
    assert len(header) == len(ceop) > 500
    assert {r.site_id for r in header} == {"COSMOS:ARM-1", "COSMOS:Barrow-ARM"}
    for a, b in zip(header, ceop):
        assert a == b


def test_quality_flags_option():
    arm = _by_date(read_ismn_observations(HEADER_DIR, depth_to=0.2, quality_flags=("G", "D03")), "COSMOS:ARM-1")
    # "D03,D05" readings need D05 accepted too
    kept = [v for _, v, f in ARM1_2017_12_29 if f in ("G", "D03")]
    assert len(kept) == 20
    assert arm["2017-12-29"].sm == pytest.approx(sum(kept) / 20, abs=1e-12)
    everything = _by_date(read_ismn_observations(HEADER_DIR, depth_to=0.2, quality_flags=None), "COSMOS:ARM-1")
    assert everything["2017-12-29"].sm == pytest.approx(sum(v for _, v, _ in ARM1_2017_12_29) / 24, abs=1e-12)


def test_hour_option_takes_the_reading_at_that_hour():
    arm = _by_date(read_ismn_observations(HEADER_DIR, depth_to=0.2, hour=8), "COSMOS:ARM-1")
    assert arm["2017-08-10"].sm == 0.1990
    assert "2017-12-29" not in arm  # the 08:00 reading is D03
    arm = _by_date(read_ismn_observations(HEADER_DIR, depth_to=0.2, hour="21"), "COSMOS:ARM-1")
    assert arm["2017-12-29"].sm == 0.0890
    with pytest.raises(SmdError, match="0-23"):
        read_ismn_observations(HEADER_DIR, depth_to=0.2, hour=24)


def test_narbonne_cr_line_endings_both_formats():
    with open(NARBONNE_HV, "rb") as handle:
        raw = handle.read()
    assert b"\n" not in raw and raw.count(b"\r") > 700  # CR-only line endings
    flags = ("G", "U")  # SMOSMANIA 2007 readings are flagged U (unchecked)
    for path in (NARBONNE_HV, NARBONNE_CEOP):
        day = _by_date(read_ismn_observations(path, depth_to=0.05, quality_flags=flags), "SMOSMANIA:Narbonne")
        assert len(day) == 31
        record = day["2007-01-16"]
        kept = [v for _, v, f in NARBONNE_2007_01_16 if f == "U"]
        assert record.sm == pytest.approx(sum(kept) / 22, abs=1e-12)
        assert (record.lon, record.lat, record.depth_from, record.depth_to) == (2.9567, 43.15, 0.05, 0.05)
    hour13 = _by_date(read_ismn_observations(NARBONNE_HV, depth_to=0.05, hour=13, quality_flags=flags),
                      "SMOSMANIA:Narbonne")
    assert "2007-01-16" not in hour13  # 13:00 is D05
    assert hour13["2007-01-01"].sm == 0.2149  # raw line "2007/01/01 13:00   0.2149 U M"
    with pytest.raises(SmdError, match="No valid reading"):
        read_ismn_observations(NARBONNE_HV, depth_to=0.05)  # only G: none


def test_depth_filter():
    # the sensor (0-0.19 m) must lie wholly inside the range
    with pytest.raises(SmdError, match=r"depth range 0-0.1 m.*0-0.19 m, 0-0.21 m"):
        read_ismn_observations(HEADER_DIR)
    assert {r.site_id for r in read_ismn_observations(HEADER_DIR, depth_to=0.21)} == {
        "COSMOS:ARM-1", "COSMOS:Barrow-ARM"}
    with pytest.raises(SmdError, match="No sensor"):
        read_ismn_observations(NARBONNE_HV, depth_from=0.06, depth_to=0.3, quality_flags=None)
    with pytest.raises(SmdError, match="depth_from <= depth_to"):
        read_ismn_observations(HEADER_DIR, depth_from=0.2, depth_to=0.1)


def test_zip_input_and_geopackage_output(tmp_path):
    out = str(tmp_path / "stations.gpkg")
    result = import_ismn(MULTI_ZIP, out, depth_from=0.0, depth_to=0.06, quality_flags=("U",))
    # 0.0508 m SCAN and 0.05 m MAQU / SOILSCAPE sensors; station names from the header lines
    assert result["sites"] == ["MAQU:CST_01", "MAQU:CST_02", "SCAN:AAMU-jtg", "SCAN:Abrams",
                               "SCAN:Adams_Ranch_#1", "SOILSCAPE:node414", "SOILSCAPE:node505",
                               "SOILSCAPE:node703"]
    records = read_ismn_observations(MULTI_ZIP, depth_to=0.06, quality_flags=("U",))
    assert result["records"] == len(records)
    observations = read_stations(out)
    assert observations == to_observations(records)
    node = [o for o in observations if o.site_id == "SOILSCAPE:node414"][0]
    assert node == Observation("SOILSCAPE:node414", node.date, node.value, -120.9675, 38.43003)
    # the zipped header+values download equals the unzipped folder
    assert read_ismn_observations(HEADER_ZIP, depth_to=0.2) == read_ismn_observations(HEADER_DIR, depth_to=0.2)


def test_geopackage_fields_and_csv_output(tmp_path):
    from osgeo import ogr

    out = str(tmp_path / "arm.gpkg")
    import_ismn(HEADER_DIR, out, depth_to=0.2)
    datasource = ogr.Open(out)
    layer = datasource.GetLayer(0)
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "4326"
    definition = layer.GetLayerDefn()
    assert [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())] == [
        "site_id", "network", "station", "depth_from", "depth_to", "date", "sm", "lon", "lat", "n_sensors"]
    feature = next(iter(layer))
    assert feature.GetFieldAsString("date") == "2017/08/10"
    assert feature.GetFieldAsDouble("sm") == pytest.approx(0.21279166666666668, abs=1e-15)
    assert (feature.GetGeometryRef().GetX(), feature.GetGeometryRef().GetY()) == (-97.4878, 36.6054)
    datasource = None
    csv_out = str(tmp_path / "arm.csv")
    import_ismn(HEADER_DIR, csv_out, depth_to=0.2)
    with open(csv_out) as handle:
        lines = handle.read().splitlines()
    assert lines[0].split(",")[:9] == ["site_id", "network", "station", "depth_from", "depth_to", "date", "sm",
                                       "lon", "lat"]
    assert lines[1].startswith("COSMOS:ARM-1,COSMOS,ARM-1,0,0.19,2017-08-10,0.21279166666666")
    from_csv, from_gpkg = read_stations(csv_out), read_stations(out)
    assert len(from_csv) == len(from_gpkg) == len(lines) - 1
    for a, b in zip(from_csv, from_gpkg):
        assert (a.site_id, a.date, a.x, a.y) == (b.site_id, b.date, b.x, b.y)
        assert math.isclose(a.value, b.value, rel_tol=1e-13)


def test_malformed_file_error_names_file_and_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out.gpkg"
    with pytest.raises(SmdError, match=r"mal_formed_file\.txt, line 1"):
        import_ismn(MALFORMED, str(out))
    # a malformed .stm among good files in a download folder
    folder = tmp_path / "download"
    shutil.copytree(HEADER_DIR, folder / "COSMOS_copy")
    shutil.copyfile(MALFORMED, folder / "COSMOS_copy" / "COSMOS" / "ARM-1" / "broken_sm_0.0_0.1.stm")
    with pytest.raises(SmdError, match=r"broken_sm_0\.0_0\.1\.stm, line 1"):
        import_ismn(str(folder), str(out), depth_to=0.2)
    assert sorted(os.listdir(tmp_path)) == ["download"]
    # the folder holds no .stm
    with pytest.raises(SmdError, match=r"No ISMN data files"):
        import_ismn(os.path.dirname(MALFORMED), str(out))
    assert not out.exists()


def test_cancel_leaves_nothing(tmp_path):
    with pytest.raises(Cancelled):
        import_ismn(HEADER_DIR, str(tmp_path / "c.gpkg"), depth_to=0.2,
                    progress=Progress(is_cancelled=lambda: True))
    assert os.listdir(tmp_path) == []


def test_read_stations_errors_and_reprojection(tmp_path):
    table = tmp_path / "s.csv"
    table.write_text("site_id;date;sm;x;y\nA;2019/04/01;0.25;10.0;50.0\nB;2019-04-02;;11;51\n")
    observations = read_stations(str(table))
    assert observations == [Observation("A", "2019-04-01", 0.25, 10.0, 50.0)]
    projected = read_stations(str(table), crs="EPSG:3035")
    # ETRS89-LAEA origin is (10E, 52N) with false easting/northing 4321000/3210000
    assert projected[0].x == pytest.approx(4321000.0, abs=0.01)
    assert projected[0].y < 3210000.0
    with pytest.raises(SmdError, match="no column 'value'"):
        read_stations(str(table), value_field="value")
    table.write_text("site_id,date,sm,lon,lat\nA,2019-04-01,wet,10,50\n")
    with pytest.raises(SmdError, match="line 2: sm 'wet' is not a number"):
        read_stations(str(table))
