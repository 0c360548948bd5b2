"""Validation against stations: tiny rasters in two CRSs with known pixel values."""
import csv
import json
import math
import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform

from smdownscale.core.common import SmdError, write_series
from smdownscale.core.stations import Observation
from smdownscale.core.validate import validate, write_validation_report

DATES = ["2019-04-01", "2019-04-11", "2019-04-21", "2019-05-01"]
P = [0.1, 0.2, 0.3, 0.4]
# hand-computed for P vs the station series (see tests/test_metrics.py for the first):
O_S1 = [0.12, 0.18, 0.33, 0.37]   # R = 0.045/sqrt(0.05*0.0426), RMSE = sqrt(0.00065), bias 0
O_S2 = [0.30, 0.25, 0.20, 0.15]   # perfectly anti-correlated: R = -1
#   d = p - o = [-0.2, -0.05, 0.1, 0.25]; d^2 sum = 0.04+0.0025+0.01+0.0625 = 0.115 -> RMSE = sqrt(0.02875)
#   bias = 0.25 - 0.225 = 0.025; ubRMSE = sqrt(0.02875 - 0.000625) = sqrt(0.028125)
O_S6 = [0.15, 0.10, 0.30, 0.20]   # moderate R
#   o - E[o] = [-0.0375, -0.0875, 0.1125, 0.0125] (E[o] = 0.1875)
#   sum (p-Ep)(o-Eo) = 0.005625+0.004375+0.005625+0.001875 = 0.0175; sum (o-Eo)^2 = 0.021875
#   R = 0.0175 / sqrt(0.05*0.021875) = 0.5292; d = [-0.05, 0.1, 0, 0.2] -> RMSE = sqrt(0.0525/4)
#   bias = 0.25 - 0.1875 = 0.0625; ubRMSE = sqrt(0.013125 - 0.00390625) = sqrt(0.00921875)

# fine product: UTM 33N, 1 km pixels, 6 cols x 5 rows, origin (497000, 5000000)
UTM = "EPSG:32633"
FINE_ORIGIN = (497000.0, 5000000.0)
PIXEL = {"S1": (2, 3), "S2": (0, 0), "S6": (4, 1), "S3": (1, 4)}  # (row, col) in the fine raster


def utm_centre(row, col):
    return FINE_ORIGIN[0] + 1000 * col + 500, FINE_ORIGIN[1] - 1000 * row - 500


def to_lonlat(x, y):
    lon, lat = warp_transform(UTM, "EPSG:4326", [x], [y])
    return lon[0], lat[0]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("validate")
    # fine: the sites' pixels hold P, S3's pixel only nodata, everything else 0.9; a 5th date that
    # no station has
    fine_dates = DATES + ["2019-05-11"]
    bands = []
    for t in range(len(fine_dates)):
        band = np.full((5, 6), 0.9, dtype="float32")
        for site in ("S1", "S2", "S6"):
            band[PIXEL[site]] = P[t] if t < 4 else 0.5
        band[PIXEL["S3"]] = np.nan
        bands.append(band)
    fine = str(folder / "fine.tif")
    write_series(fine, bands, fine_dates, dict(crs=UTM, transform=from_origin(*FINE_ORIGIN, 1000, 1000),
                                               width=6, height=5))
    # coarse: EASE-Grid 2.0 (EPSG:6933), 9 km, 3x3; centre cell (1, 1) holds P + 0.05, others 0.8.
    # The grid is placed so that S1 lies at the centre of cell (1, 1).
    ex, ey = warp_transform(UTM, "EPSG:6933", [utm_centre(*PIXEL["S1"])[0]], [utm_centre(*PIXEL["S1"])[1]])
    coarse_transform = from_origin(ex[0] - 1.5 * 9000, ey[0] + 1.5 * 9000, 9000, 9000)
    coarse_bands = []
    for t in range(4):
        band = np.full((3, 3), 0.8, dtype="float32")
        band[1, 1] = P[t] + 0.05
        coarse_bands.append(band)
    coarse = str(folder / "coarse.tif")
    write_series(coarse, coarse_bands, DATES, dict(crs="EPSG:6933", transform=coarse_transform,
                                                   width=3, height=3))
    stations = []
    for site, obs in (("S1", O_S1), ("S2", O_S2), ("S6", O_S6), ("S3", O_S1)):
        lon, lat = to_lonlat(*utm_centre(*PIXEL[site]))
        # one extra station date that no raster has
        stations.append(Observation(site, "2019-03-21", 0.3, lon, lat))
        stations += [Observation(site, d, v, lon, lat) for d, v in zip(DATES, obs)]
    stations.append(Observation("FAR", "2019-04-01", 0.2, 10.0, 60.0))   # outside both rasters
    lon, lat = to_lonlat(*utm_centre(3, 2))
    stations += [Observation("OLD", d, 0.2, lon, lat) for d in ("2018-04-01", "2018-04-11")]
    return {"fine": fine, "coarse": coarse, "stations": stations, "folder": folder,
            "coarse_transform": coarse_transform}


def test_sites_fall_in_the_expected_coarse_cell(scene):
    # guard for the test set-up itself: all compared sites lie in coarse cell (1, 1)
    for site in ("S1", "S2", "S6", "S3"):
        ex, ey = warp_transform(UTM, "EPSG:6933", *[[v] for v in utm_centre(*PIXEL[site])])
        assert rasterio.transform.rowcol(scene["coarse_transform"], ex[0], ey[0]) == (1, 1)


def test_per_site_metrics_match_hand_computed(scene):
    result = validate({"downscaled": scene["fine"], "smap": scene["coarse"]}, scene["stations"])
    s1 = result.site("downscaled", "S1")
    assert s1["n"] == 4
    assert s1["r"] == pytest.approx(0.045 / math.sqrt(0.05 * 0.0426), abs=1e-6)
    assert s1["rmse"] == pytest.approx(math.sqrt(0.00065), abs=1e-6)
    assert s1["bias"] == pytest.approx(0.0, abs=1e-6)
    assert s1["ubrmse"] == pytest.approx(math.sqrt(0.00065), abs=1e-5)
    s2 = result.site("downscaled", "S2")
    assert s2["r"] == pytest.approx(-1.0, abs=1e-6)
    assert s2["rmse"] == pytest.approx(math.sqrt(0.02875), abs=1e-6)
    assert s2["bias"] == pytest.approx(0.025, abs=1e-6)
    assert s2["ubrmse"] == pytest.approx(math.sqrt(0.028125), abs=1e-6)
    s6 = result.site("downscaled", "S6")
    assert s6["r"] == pytest.approx(0.0175 / math.sqrt(0.05 * 0.021875), abs=1e-6)
    assert s6["rmse"] == pytest.approx(math.sqrt(0.0525 / 4), abs=1e-6)
    assert s6["bias"] == pytest.approx(0.0625, abs=1e-6)
    assert s6["ubrmse"] == pytest.approx(math.sqrt(0.00921875), abs=1e-6)
    # the coarse product is P + 0.05 everywhere the sites are: bias +0.05, same R and ubRMSE as above
    c1 = result.site("smap", "S1")
    assert c1["bias"] == pytest.approx(0.05, abs=1e-6)
    assert c1["rmse"] == pytest.approx(math.sqrt(0.00315), abs=1e-6)
    assert c1["ubrmse"] == pytest.approx(math.sqrt(0.00065), abs=1e-5)
    c2 = result.site("smap", "S2")
    assert c2["r"] == pytest.approx(-1.0, abs=1e-6)
    assert c2["bias"] == pytest.approx(0.075, abs=1e-6)
    assert c2["ubrmse"] == pytest.approx(math.sqrt(0.028125), abs=1e-6)
    # S3 sits on nodata in the fine product but on the coarse centre cell
    assert result.site("smap", "S3")["r"] == pytest.approx(s1["r"], abs=1e-6)
    # station x, y are reported in the stations' CRS
    assert (s1["x"], s1["y"]) == pytest.approx(to_lonlat(*utm_centre(*PIXEL["S1"])))


def test_unmatched_sites_are_reported_with_reasons(scene):
    result = validate({"downscaled": scene["fine"], "smap": scene["coarse"]}, scene["stations"])
    reasons = {(u["product"], u["site_id"]): u["reason"] for u in result.unmatched}
    assert set(reasons) == {("downscaled", "FAR"), ("downscaled", "OLD"), ("downscaled", "S3"),
                            ("smap", "FAR"), ("smap", "OLD")}
    assert reasons[("downscaled", "FAR")] == "outside the raster"
    assert reasons[("smap", "FAR")] == "outside the raster"
    assert reasons[("downscaled", "OLD")].startswith("no overlapping dates (station: 2018-04-01..2018-04-11")
    assert reasons[("downscaled", "S3")].startswith("only nodata at pixel (row 1, col 4) on the 4 shared dates")
    compared = {(r["product"], r["site_id"]) for r in result.per_site}
    assert compared == {("downscaled", s) for s in ("S1", "S2", "S6")} | {("smap", s) for s in ("S1", "S2", "S6", "S3")}


def test_summary_means_medians_and_paper_classes(scene):
    result = validate({"downscaled": scene["fine"], "smap": scene["coarse"]}, scene["stations"])
    fine = result.summary_for("downscaled")
    r_values = [0.045 / math.sqrt(0.05 * 0.0426), -1.0, 0.0175 / math.sqrt(0.05 * 0.021875)]
    assert fine["n_sites"] == 3 and fine["n_unmatched"] == 3
    assert fine["mean_r"] == pytest.approx(sum(r_values) / 3, abs=1e-6)
    assert fine["median_r"] == pytest.approx(r_values[2], abs=1e-6)  # 0.529 is the middle one
    assert fine["mean_bias"] == pytest.approx((0.0 + 0.025 + 0.0625) / 3, abs=1e-6)
    # R: S1 0.975 high, S6 0.529 moderate, S2 -1 low; ubRMSE: S1 0.0255 meets, S2 0.168 and S6 0.096 poor
    assert (fine["r_high"], fine["r_moderate"], fine["r_low"], fine["r_undefined"]) == (1, 1, 1, 0)
    assert (fine["ubrmse_meets"], fine["ubrmse_acceptable"], fine["ubrmse_poor"]) == (1, 0, 2)
    smap = result.summary_for("smap")
    # S1 and S3 (same series) high/meets; S6 moderate/poor; S2 low/poor
    assert (smap["n_sites"], smap["r_high"], smap["r_moderate"], smap["r_low"]) == (4, 2, 1, 1)
    assert (smap["ubrmse_meets"], smap["ubrmse_acceptable"], smap["ubrmse_poor"]) == (2, 0, 2)
    assert smap["median_bias"] == pytest.approx((0.05 + 0.075) / 2, abs=1e-6)  # 0.05, 0.05, 0.075, 0.1125


def test_stations_in_the_raster_crs_give_the_same_result(scene):
    utm_stations = []
    for o in scene["stations"]:
        if o.site_id in PIXEL:
            x, y = utm_centre(*PIXEL[o.site_id])
            utm_stations.append(o._replace(x=x, y=y))
    result = validate({"downscaled": scene["fine"]}, utm_stations, stations_crs=UTM)
    assert result.site("downscaled", "S6")["r"] == pytest.approx(0.0175 / math.sqrt(0.05 * 0.021875), abs=1e-6)


def test_duplicate_readings_are_averaged(scene):
    lon, lat = to_lonlat(*utm_centre(*PIXEL["S1"]))
    # 0.12 given as 0.10 and 0.14 (mean 0.12): same metrics as S1
    obs = [Observation("S1", DATES[0], 0.10, lon, lat), Observation("S1", DATES[0], 0.14, lon, lat)]
    obs += [Observation("S1", d, v, lon, lat) for d, v in zip(DATES[1:], O_S1[1:])]
    result = validate({"downscaled": scene["fine"]}, obs)
    assert result.site("downscaled", "S1")["n"] == 4
    assert result.site("downscaled", "S1")["rmse"] == pytest.approx(math.sqrt(0.00065), abs=1e-6)


def test_bad_inputs_raise_smderror(scene, tmp_path):
    with pytest.raises(SmdError, match="station list is empty"):
        validate({"downscaled": scene["fine"]}, [])
    with pytest.raises(SmdError, match="YYYY-MM-DD"):
        validate({"downscaled": scene["fine"]}, [Observation("S1", "01/04/2019", 0.2, 15.0, 45.0)])
    static = str(tmp_path / "static.tif")
    write_series(static, [np.zeros((2, 2))], None, dict(crs=UTM, transform=from_origin(*FINE_ORIGIN, 1, 1),
                                                        width=2, height=2))
    with pytest.raises(SmdError, match="has no dates"):
        validate({"static": static}, scene["stations"])
    with pytest.raises(SmdError, match="does not exist"):
        validate({"missing": str(tmp_path / "nope.tif")}, scene["stations"])
    with pytest.raises(SmdError, match="two locations"):
        validate({"downscaled": scene["fine"]}, [Observation("A", DATES[0], 0.2, 15.0, 45.0),
                                                Observation("A", DATES[1], 0.2, 15.1, 45.0)])


def test_report_outputs_name_every_file_a_report_writes(scene, tmp_path):
    from smdownscale.core.validate import report_outputs

    assert report_outputs(tmp_path / "r.csv") == [(str(tmp_path / "r.csv"), "report"),
                                                   (str(tmp_path / "r_summary.csv"), "report")]
    assert report_outputs(tmp_path / "r.json") == [(str(tmp_path / "r.json"), "report")]
    with pytest.raises(SmdError, match="unknown report format"):
        report_outputs(tmp_path / "r.txt")
    # checked again at write time: a folder in the summary's place is refused, nothing written
    result = validate({"downscaled": scene["fine"]}, scene["stations"])
    out = tmp_path / "out"
    (out / "r_summary.csv").mkdir(parents=True)
    with pytest.raises(SmdError, match="r_summary.csv is an existing folder"):
        write_validation_report(result, out / "r.csv")
    assert os.listdir(out) == ["r_summary.csv"]


def test_reports_in_three_formats(scene, tmp_path):
    result = validate({"downscaled": scene["fine"], "smap": scene["coarse"]}, scene["stations"])
    written = write_validation_report(result, tmp_path / "report.csv")
    assert [p.rsplit("/", 1)[1] for p in written] == ["report.csv", "report_summary.csv"]
    with open(written[0], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 7 + 5  # compared + unmatched
    s2 = next(r for r in rows if r["product"] == "downscaled" and r["site_id"] == "S2")
    assert float(s2["r"]) == pytest.approx(-1.0, abs=1e-5) and s2["status"] == "ok"
    far = next(r for r in rows if r["product"] == "smap" and r["site_id"] == "FAR")
    assert far["status"] == "outside the raster" and far["r"] == ""
    with open(written[1], newline="") as fh:
        summary = list(csv.DictReader(fh))
    assert [r["product"] for r in summary] == ["downscaled", "smap"]
    assert summary[0]["r_high"] == "1"
    json_path = write_validation_report(result, tmp_path / "report.json")[0]
    data = json.load(open(json_path))
    assert len(data["per_site"]) == 7 and len(data["unmatched"]) == 5
    assert data["summary"][1]["ubrmse_meets"] == 2
    html_path = write_validation_report(result, tmp_path / "report.html")[0]
    page = open(html_path).read()
    assert "Sites not compared" in page and "outside the raster" in page and "S6" in page
    with pytest.raises(SmdError, match="use .csv, .json or .html"):
        write_validation_report(result, tmp_path / "report.txt")
