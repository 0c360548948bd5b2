"""Built-in synthetic scenario with a known 1 km truth, for the demo, tests and the benchmark.

The scenario mimics the paper's set-up (Anhui, UTM zone 50N):

* 14 predictors on their own grids: MODIS-like indices (ndvi, ndwi, nsdsi, evi) at 500 m,
  the other dynamic predictors (vv, vh, lai, lst, albedo) and the static ones (sand, silt, clay,
  dem, lc) at 1 km, all in EPSG:32650. Dynamic ones are daily series (band = date).
* Five terrain partitions (polygons, field ``name``) with *different* predictor -> soil moisture
  relations: the truth at 1 km is a partition-specific function of the 1 km predictors and the
  day of year, plus a small noise.
* The 9 km target on EASE-Grid 2.0 (EPSG:6933) is the area mean of the 1 km truth (GDAL
  average warp), like a coarse sensor seeing the mean of the landscape.
* Stations at random land pixels reading the truth (plus sensor noise) on the 1st, 11th and
  21st of each month, as the paper's agro-meteorological stations.

Everything is generated and written one date at a time so the benchmark size stays in memory.
"""
import csv
import datetime as dt
import json
import os

import numpy as np

from ..core.common import write_series
from ..core.grids import Grid, m09_cells_covering, m09_grid

UTM50N = "EPSG:32650"
EASE2 = "EPSG:6933"

PARTITION_NAMES = ("HB", "JH", "WX", "YJ", "WN")
DYNAMIC_500M = ("ndvi", "ndwi", "nsdsi", "evi")
DYNAMIC_1KM = ("vv", "vh", "lai", "lst", "albedo")
STATIC_1KM = ("sand", "silt", "clay", "dem", "lc")

#: name -> (columns, rows, dates) of the 1 km grid
SIZES = {
    "small": (48, 40, 24),
    "demo": (150, 120, 61),
    "bench": (500, 450, 214),
}

# Partition-specific response of soil moisture to its drivers (one row per partition):
# intercept, wetness, vv, lst, dem, clay, ndvi, season, lc-cropland
_RELATIONS = np.array([
    [0.10, 0.10, 0.030, -0.0040, -0.00030, 0.0020, 0.05, 0.030, 0.040],   # HB: plain, crops
    [0.08, 0.12, 0.020, -0.0030, -0.00020, 0.0015, 0.08, 0.040, 0.030],   # JH
    [0.05, 0.08, 0.015, -0.0020, 0.00015, 0.0010, 0.12, 0.020, 0.000],    # WX: hills, forest
    [0.12, 0.09, 0.025, -0.0035, -0.00010, 0.0025, 0.02, 0.050, 0.020],   # YJ: river plain
    [0.04, 0.14, 0.010, -0.0015, 0.00025, 0.0005, 0.15, 0.010, -0.010],   # WN: mountains
])


def _smooth_field(rng, shape, sigma, lo, hi):
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-12)
    return (lo + (hi - lo) * field).astype("float32")


def _block_mean(array, factor):
    rows, cols = array.shape
    return array.reshape(rows // factor, factor, cols // factor, factor).mean(axis=(1, 3))


def _partition_polygons(x0, y0, width_m, height_m):
    """Five bands from north to south with slanted boundaries (terrain regions)."""
    edges = [y0 - height_m * f for f in (0.0, 0.22, 0.40, 0.58, 0.78, 1.0)]
    tilt = 0.08 * height_m
    polys = []
    for k in range(5):
        top, bottom = edges[k], edges[k + 1]
        t_left, t_right = (top, top) if k == 0 else (top + tilt, top - tilt)
        b_left, b_right = (bottom, bottom) if k == 4 else (bottom + tilt, bottom - tilt)
        ring = [(x0, t_left), (x0 + width_m, t_right), (x0 + width_m, b_right), (x0, b_left), (x0, t_left)]
        polys.append({"type": "Polygon", "coordinates": [ring]})
    return polys


def _write_partitions(path, polygons, crs):
    from osgeo import ogr, osr

    srs = osr.SpatialReference()
    srs.SetFromUserInput(crs)
    driver = ogr.GetDriverByName("GPKG")
    if os.path.exists(path):
        driver.DeleteDataSource(path)
    source = driver.CreateDataSource(path)
    layer = source.CreateLayer("partitions", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("name", ogr.OFTString))
    for name, geometry in zip(PARTITION_NAMES, polygons):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("name", name)
        feature.SetGeometry(ogr.CreateGeometryFromJson(json.dumps(geometry)))
        layer.CreateFeature(feature)
    source = None


def _write_stations(folder, sites, observations, crs):
    """CSV and GeoPackage point layer in long format (site_id, date, sm), EPSG:4326."""
    from osgeo import ogr, osr
    from rasterio.warp import transform

    lon, lat = transform(crs, "EPSG:4326", [s[1] for s in sites], [s[2] for s in sites])
    where = {site[0]: (x, y) for site, x, y in zip(sites, lon, lat)}
    csv_path = os.path.join(folder, "stations.csv")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["site_id", "date", "sm", "lon", "lat"])
        for site_id, date, value in observations:
            writer.writerow([site_id, date, f"{value:.5f}", f"{where[site_id][0]:.6f}", f"{where[site_id][1]:.6f}"])
    gpkg_path = os.path.join(folder, "stations.gpkg")
    driver = ogr.GetDriverByName("GPKG")
    if os.path.exists(gpkg_path):
        driver.DeleteDataSource(gpkg_path)
    source = driver.CreateDataSource(gpkg_path)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    layer = source.CreateLayer("stations", srs, ogr.wkbPoint)
    for name, kind in (("site_id", ogr.OFTString), ("date", ogr.OFTString), ("sm", ogr.OFTReal)):
        layer.CreateField(ogr.FieldDefn(name, kind))
    for site_id, date, value in observations:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("site_id", site_id)
        feature.SetField("date", date)
        feature.SetField("sm", float(value))
        point = ogr.Geometry(ogr.wkbPoint)
        point.AddPoint_2D(*where[site_id])
        feature.SetGeometry(point)
        layer.CreateFeature(feature)
    source = None
    return csv_path, gpkg_path


def ease_grid_covering(bounds_in_ease):
    """The cropped EASE-Grid 2.0 M09 grid covering (xmin, ymin, xmax, ymax) in EPSG:6933."""
    return m09_grid(*m09_cells_covering(*bounds_in_ease))


def scenario_dates(n_dates, start="2019-04-01"):
    first = dt.date.fromisoformat(start)
    return [(first + dt.timedelta(days=k)).isoformat() for k in range(n_dates)]


def make_scenario(folder, *, size="small", seed=0, n_dates=None, n_stations=None):
    """Write the scenario into ``folder`` and return a dict of the paths written.

    Parameters
    ----------
    size : {"small", "demo", "bench"}
        Grid and series size, see ``SIZES``.
    n_dates : int, optional
        Override the number of daily dates (from 2019-04-01).

    Returns
    -------
    dict with keys ``predictors`` (list of paths), ``soil_moisture``, ``partitions``,
    ``partition_field``, ``stations_csv``, ``stations``, ``truth``, ``dates``, ``categorical``,
    ``mask_classes``.
    """
    from rasterio.transform import from_origin
    from rasterio.warp import Resampling, reproject, transform_bounds

    cols, rows, default_dates = SIZES[size]
    dates = scenario_dates(n_dates or default_dates)
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    predictor_folder = os.path.join(folder, "predictors")
    os.makedirs(predictor_folder, exist_ok=True)

    x0, y0, res = 600000.0, 3600000.0, 1000.0
    fine = Grid(UTM50N, from_origin(x0, y0, res, res), cols, rows)
    fine_500 = Grid(UTM50N, from_origin(x0, y0, res / 2, res / 2), cols * 2, rows * 2)

    # --- partitions and static predictors (1 km) -------------------------------------------
    polygons = _partition_polygons(x0, y0, cols * res, rows * res)
    partitions_path = os.path.join(folder, "partitions.gpkg")
    _write_partitions(partitions_path, polygons, UTM50N)
    from rasterio.features import rasterize

    partition = rasterize(((geometry, k) for k, geometry in enumerate(polygons)),
                          out_shape=(rows, cols), transform=fine.transform, fill=-1, dtype="int16")

    dem = np.empty((rows, cols), "float32")
    dem_base = np.array([30.0, 45.0, 250.0, 60.0, 650.0], "float32")
    dem_relief = np.array([25.0, 40.0, 350.0, 35.0, 700.0], "float32")
    relief = _smooth_field(rng, (rows, cols), 7, 0.0, 1.0)
    inside = partition >= 0
    dem[:] = dem_base[2]
    dem[inside] = dem_base[partition[inside]] + dem_relief[partition[inside]] * relief[inside]
    sand = _smooth_field(rng, (rows, cols), 6, 15.0, 60.0)
    clay = _smooth_field(rng, (rows, cols), 6, 10.0, 40.0)
    silt = (100.0 - sand - clay).astype("float32")
    greenness = _smooth_field(rng, (rows, cols), 5, 0.0, 1.0)
    lc = np.full((rows, cols), 3, "float32")                       # cropland
    lc[greenness > 0.55] = 2                                       # grass
    lc[(dem > 200) & (greenness > 0.35)] = 1                       # forest in the hills
    lc[(greenness < 0.15) & (dem < 100)] = 4                       # urban / other
    water = _smooth_field(rng, (rows, cols), 2, 0.0, 1.0) > 0.93
    lc[water] = 0
    statics = {"sand": sand, "silt": silt, "clay": clay, "dem": dem, "lc": lc}
    paths = []
    for name, values in statics.items():
        path = os.path.join(predictor_folder, f"{name}.tif")
        write_series(path, [values], None, fine.profile())
        paths.append(path)

    # vegetation vigour at 500 m; the 1 km predictors the truth depends on are its block means
    vigour_500 = _smooth_field(rng, (rows * 2, cols * 2), 8, 0.15, 0.75)
    vigour_500 += np.repeat(np.repeat((lc == 1) * 0.15 - (lc == 4) * 0.1, 2, 0), 2, 1)
    rain_a = _smooth_field(rng, (rows, cols), 8, 0.0, 1.0)
    rain_b = _smooth_field(rng, (rows, cols), 5, 0.0, 1.0)

    # --- open every dynamic output, then generate one date at a time ------------------------
    import rasterio

    from ..core.common import series_profile

    def open_series(path, grid):
        dst = rasterio.open(path, "w", **series_profile(grid.profile(), len(dates)))
        for band, date in enumerate(dates, start=1):
            dst.set_band_description(band, date)
        return dst

    outputs = {}
    for name in DYNAMIC_500M:
        outputs[name] = open_series(os.path.join(predictor_folder, f"{name}.tif"), fine_500)
    for name in DYNAMIC_1KM:
        outputs[name] = open_series(os.path.join(predictor_folder, f"{name}.tif"), fine)
    paths = [os.path.join(predictor_folder, f"{n}.tif") for n in DYNAMIC_500M + DYNAMIC_1KM] + paths
    truth_path = os.path.join(folder, "truth_1km.tif")
    truth_out = open_series(truth_path, fine)

    xmin, ymax = x0, y0
    bounds = transform_bounds(UTM50N, EASE2, xmin, ymax - rows * res, xmin + cols * res, ymax)
    coarse = ease_grid_covering(bounds)
    sm_path = os.path.join(folder, "soil_moisture_9km.tif")
    sm_out = open_series(sm_path, coarse)

    n_sites = n_stations or {"small": 12, "demo": 30, "bench": 87}[size]
    land = np.flatnonzero((lc.ravel() > 0) & inside.ravel())
    site_pixels = rng.choice(land, size=min(n_sites, land.size), replace=False)
    site_rows, site_cols = np.unravel_index(site_pixels, (rows, cols))
    site_x = x0 + (site_cols + rng.uniform(0.2, 0.8, site_cols.size)) * res
    site_y = y0 - (site_rows + rng.uniform(0.2, 0.8, site_rows.size)) * res
    sites = [(f"S{k + 1:03d}", float(x), float(y)) for k, (x, y) in enumerate(zip(site_x, site_y))]
    site_bias = rng.normal(0.0, 0.01, len(sites))
    observations = []

    coefficients = _RELATIONS[np.where(inside, partition, 2)]      # (rows, cols, 9)
    regional = 0.5
    for band, date in enumerate(dates, start=1):
        doy = dt.date.fromisoformat(date).timetuple().tm_yday
        season = np.float32(np.sin(2 * np.pi * (doy - 80) / 365.0))
        # regional wetness: persistence plus random rain pulses, spatially modulated
        regional = 0.85 * regional + (rng.exponential(0.6) if rng.random() < 0.25 else 0.0) + 0.02
        wet = np.clip(regional * (0.6 + 0.5 * rain_a) + 0.3 * rng.random() * rain_b, 0, 3).astype("float32")
        wet_500 = np.repeat(np.repeat(wet, 2, 0), 2, 1)

        ndvi_500 = vigour_500 * (0.75 + 0.25 * season) + 0.03 * wet_500 + rng.normal(0, 0.01, vigour_500.shape)
        evi_500 = 0.62 * ndvi_500 + 0.02 + rng.normal(0, 0.01, vigour_500.shape)
        ndwi_500 = 0.5 * ndvi_500 - 0.2 + 0.12 * wet_500 + rng.normal(0, 0.01, vigour_500.shape)
        nsdsi_500 = 0.45 - 0.3 * ndvi_500 - 0.08 * wet_500 + rng.normal(0, 0.01, vigour_500.shape)
        indices_500 = {"ndvi": ndvi_500, "evi": evi_500, "ndwi": ndwi_500, "nsdsi": nsdsi_500}
        ndvi = _block_mean(ndvi_500, 2)

        lst = 24 + 9 * season - 0.0065 * dem - 5.0 * wet + 3.0 * (1 - ndvi) + rng.normal(0, 0.5, wet.shape)
        albedo = 0.21 - 0.04 * wet - 0.05 * ndvi + rng.normal(0, 0.004, wet.shape)
        vv = -15 + 4.0 * wet + 2.0 * ndvi - 0.001 * dem + rng.normal(0, 0.4, wet.shape)
        vh = vv - 7.0 + 1.5 * ndvi + rng.normal(0, 0.3, wet.shape)
        lai = 6.0 * ndvi ** 1.5 + rng.normal(0, 0.05, wet.shape)
        dynamic_1km = {"vv": vv, "vh": vh, "lai": lai, "lst": lst, "albedo": albedo}

        c = coefficients
        truth = (c[..., 0] + c[..., 1] * np.tanh(wet) + c[..., 2] * (vv + 15) / 4
                 + c[..., 3] * (lst - 24) + c[..., 4] * (dem - 200) + c[..., 5] * (clay - 25)
                 + c[..., 6] * ndvi + c[..., 7] * np.cos(2 * np.pi * (doy - 200) / 365.0)
                 + c[..., 8] * (lc == 3) + rng.normal(0, 0.004, wet.shape))
        truth = np.clip(truth, 0.02, 0.55).astype("float32")
        truth[(lc == 0) | ~inside] = np.nan

        for name, values in indices_500.items():
            outputs[name].write(values.astype("float32"), band)
        for name, values in dynamic_1km.items():
            outputs[name].write(values.astype("float32"), band)
        truth_out.write(truth, band)
        coarse_sm = np.full((coarse.height, coarse.width), np.nan, "float32")
        reproject(truth, coarse_sm, src_transform=fine.transform, src_crs=UTM50N, src_nodata=np.nan,
                  dst_transform=coarse.transform, dst_crs=EASE2, dst_nodata=np.nan,
                  resampling=Resampling.average)
        sm_out.write(coarse_sm, band)
        if int(date[8:10]) in (1, 11, 21):
            for k, (site_id, _, _) in enumerate(sites):
                value = truth[site_rows[k], site_cols[k]] + site_bias[k] + rng.normal(0, 0.01)
                observations.append((site_id, date, float(np.clip(value, 0.01, 0.6))))

    for dst in list(outputs.values()) + [truth_out, sm_out]:
        dst.close()
    stations_csv, stations_gpkg = _write_stations(folder, sites, observations, UTM50N)
    result = {
        "predictors": paths, "soil_moisture": sm_path, "partitions": partitions_path,
        "partition_field": "name", "stations_csv": stations_csv, "stations": stations_gpkg,
        "truth": truth_path, "dates": dates, "categorical": ["lc"], "mask_classes": "lc:0",
    }
    with open(os.path.join(folder, "scenario.json"), "w") as handle:
        json.dump(result, handle, indent=1)
    return result
