"""The built-in scenario as the "raw" inputs an analyst starts from (the demo's ``--raw`` path).

:func:`make_raw_inputs` turns the prepared predictors of :func:`demo.scenario.make_scenario`
back into what one downloads, so that the data-preparation algorithms can rebuild them:

* ``mod09a1/MOD09A1.AYYYYDDD.h28v05.061.tif`` - MOD09A1-like 8-day surface reflectance at 500 m,
  7 bands, int16 with scale 0.0001 and fill value -28672, one file per 8-day date (the MODIS
  ``AYYYYDDD`` name gives the date, see :mod:`core.dataprep.series_io`). Red and nir are built so
  that NDVI = the scenario's ndvi; blue, green and swir2 are solved so that EVI, NDWI and NSDSI
  reproduce the scenario's values where that takes a plausible reflectance, and are clipped to
  a plausible range otherwise. Interior composites carry cloud patches (bright reflectance,
  flagged cloudy in the state QA) and scattered fill pixels, to be gap-filled.
* ``mod09a1/MOD09A1_state_500m.tif`` - the state QA of those dates as one uint16 series (bands
  described by date, as ``gapfill`` takes its QC): bits 0-1 = cloud state (0 clear, 1 cloudy),
  65535 = fill. Good-quality rule: ``bits 0-1 == 0``.
* ``s1/vv/`` and ``s1/vh/`` - Sentinel-1-like scenes in dB every 6 days, one single-band file per
  scene (date in name, DATE tag and band description): the scenario's backscatter times
  gamma-distributed speckle in linear power.
* ``mcd12q1/MCD12Q1.A2019001.h28v05.061.LC_Type5.tif`` - MCD12Q1 LC_Type5 (plant functional
  types) at 500 m, uint8 with 255 unclassified, mapped back from the scenario's classes so that
  Table-2 reclassification gives them back exactly.
* ``smap/SMAP_L4_SM_gph_YYYYMMDDT073000_Vv7032_001.h5`` - SPL4SMGP-like HDF5 granules (one per
  date at 07:30 UTC, inside the demo's 06:00-09:00 window) holding the scenario's 9 km soil
  moisture as a native EASE-Grid 2.0 M09 subset; a few extra granules at 22:30 UTC hold other
  values that the time window must drop.

The other predictors (lai, lst, albedo, sand, silt, clay, dem) are prepared products in the
paper too; the returned ``kept_predictors`` are the scenario's own files.
"""
import datetime as dt
import json
import os

import numpy as np

from ..core.common import Progress, SmdError
from ..core.outputs import atomic_output

#: MOD09A1 storage: int16 reflectance x 10000, fill value.
REFLECTANCE_SCALE = 0.0001
REFLECTANCE_FILL = -28672
#: State QA: cloud state in bits 0-1, fill value.
STATE_QA_FILL = 65535
STATE_QA_CLOUDY = 1
#: Range of the cloud cover drawn for each interior composite, and the share of fill pixels.
CLOUD_FRACTION = (0.05, 0.20)
FILL_FRACTION = 0.01
QC_RULE = "bits 0-1 == 0"

COMPOSITE_DAYS = 8
S1_REPEAT_DAYS = 6
#: Equivalent number of looks of the speckle added to the 1 km backscatter.
S1_LOOKS = 25.0

#: Scenario land-cover class -> MCD12Q1 LC_Type5 codes it is drawn from (with probabilities).
PFT_CODES = {
    0: ((0,), (1.0,)),                                 # water
    1: ((1, 2, 3, 4, 5), (0.25, 0.25, 0.15, 0.25, 0.10)),   # needleleaf/broadleaf forest, shrub
    2: ((6,), (1.0,)),                                 # grass
    3: ((7, 8), (0.6, 0.4)),                           # cereal / broadleaf cropland
    4: ((9, 10, 11), (0.6, 0.1, 0.3)),                 # urban, snow and ice, non-vegetated
}
LC_FILL = 255

SMAP_TIME_WINDOW = "06:00-09:00"
SMAP_FILL = -9999.0
SMAP_TIME_UNITS = "seconds since 2000-01-01 11:58:55.816"
#: SMAP counts /time from 12:00:00 of 2000-01-01 without leap seconds (see core.dataprep.smap).
SMAP_EPOCH = dt.datetime(2000, 1, 1, 12, 0, 0)
SMAP_GRANULE_TIME = dt.time(7, 30)
SMAP_OUTSIDE_TIME = dt.time(22, 30)
#: Every this many dates, one extra granule outside the window (values the window must drop).
SMAP_OUTSIDE_EVERY = 5

MODIS_TILE = "h28v05"
KEPT = ("lai", "lst", "albedo", "sand", "silt", "clay", "dem")


def _modis_name(product, date, suffix=""):
    day = dt.date.fromisoformat(date)
    return f"{product}.A{day.year}{day.timetuple().tm_yday:03d}.{MODIS_TILE}.061{suffix}.tif"


def _smooth_unit_field(rng, shape, sigma):
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (field - field.min()) / max(float(np.ptp(field)), 1e-12)


def _grid_profile(src):
    return dict(crs=src.crs, transform=src.transform, width=src.width, height=src.height)


def _scenario_paths(scenario):
    by_name = {os.path.splitext(os.path.basename(p))[0]: p for p in scenario["predictors"]}
    needed = ("ndvi", "evi", "ndwi", "nsdsi", "vv", "vh", "lc") + KEPT
    missing = [name for name in needed if name not in by_name]
    if missing or not os.path.isfile(scenario.get("soil_moisture", "")):
        raise SmdError(f"The scenario lacks {', '.join(missing) or 'its soil moisture'}; pass the dict "
                       "returned by demo.scenario.make_scenario.")
    return by_name


def reflectance_from_indices(ndvi, evi, ndwi, nsdsi, brightness):
    """Seven MOD09A1 reflectance bands (float, unscaled) whose indices match the given ones.

    ``red + nir = brightness`` and ``(nir - red) / (nir + red) = ndvi`` fix red and nir; blue,
    green and swir2 are solved from EVI, NDWI and NSDSI and clipped to plausible reflectance
    (there the derived index departs from the given one). Returns an array (7, rows, cols) in
    MOD09A1 band order: red, nir, blue, green, nir2 (1240 nm), swir1, swir2.
    """
    ndvi = np.clip(ndvi.astype("float64"), -0.95, 0.95)
    red = brightness * (1.0 - ndvi) / 2.0
    nir = brightness * (1.0 + ndvi) / 2.0
    # EVI = 2.5 (nir - red) / (nir + 6 red - 7.5 blue + 1)  ->  blue
    with np.errstate(divide="ignore", invalid="ignore"):
        blue = (nir + 6.0 * red + 1.0 - 2.5 * (nir - red) / evi) / 7.5
    blue = np.where(np.isfinite(blue) & (evi > 0), blue, 0.02)
    blue = np.clip(blue, 0.005, 0.25)
    # NDWI = (green - nir) / (green + nir)  ->  green
    with np.errstate(divide="ignore", invalid="ignore"):
        green = nir * (1.0 + ndwi) / (1.0 - ndwi)
    green = np.clip(np.where(np.isfinite(green), green, 0.05), 0.01, 0.6)
    # NSDSI = (swir1 - swir2) / swir1  ->  swir2
    swir1 = 0.12 + 0.12 * (1.0 - np.clip(ndvi, 0.0, 1.0))
    swir2 = np.clip(swir1 * (1.0 - nsdsi), 0.005, 0.6)
    nir2 = 0.95 * nir + 0.01
    return np.stack([red, nir, blue, green, nir2, swir1, swir2])


def _scaled_int16(reflectance):
    return np.clip(np.round(reflectance / REFLECTANCE_SCALE), -100, 16000).astype("int16")


def _write_raster(path, array, profile, *, tags=None, descriptions=None):
    import rasterio

    count = array.shape[0]
    with atomic_output(path) as tmp:
        with rasterio.open(tmp, "w", driver="GTiff", count=count, dtype=array.dtype.name,
                           compress="deflate", **profile) as dst:
            dst.write(array)
            if tags:
                dst.update_tags(**tags)
            for band, text in enumerate(descriptions or [], start=1):
                dst.set_band_description(band, text)
    return path


def _write_reflectance(scenario_paths, dates, folder, rng, progress):
    """8-day reflectance files and the state-QA series; returns (paths, dates, qa_path)."""
    import rasterio

    composite_dates = dates[::COMPOSITE_DAYS]
    band_of = {date: band for band, date in enumerate(dates, start=1)}
    os.makedirs(folder)
    sources = {name: rasterio.open(scenario_paths[name]) for name in ("ndvi", "evi", "ndwi", "nsdsi")}
    try:
        grid = _grid_profile(sources["ndvi"])
        shape = (grid["height"], grid["width"])
        brightness = 0.30 + 0.10 * _smooth_unit_field(rng, shape, 6)
        paths = []
        qa_path = os.path.join(folder, "MOD09A1_state_500m.tif")
        with atomic_output(qa_path) as qa_tmp:
            with rasterio.open(qa_tmp, "w", driver="GTiff", count=len(composite_dates), dtype="uint16",
                           nodata=STATE_QA_FILL, compress="deflate", **grid) as qa:
                for index, date in enumerate(composite_dates):
                    progress.check()
                    band = band_of[date]
                    indices = {name: src.read(band).astype("float64") for name, src in sources.items()}
                    bands = reflectance_from_indices(indices["ndvi"], indices["evi"], indices["ndwi"],
                                                     indices["nsdsi"], brightness)
                    stored = _scaled_int16(bands)
                    state = np.zeros(shape, "uint16")
                    # clouds and fill only on interior composites: gap filling never extrapolates,
                    # so cloudy first/last composites would cut the series' ends
                    if 0 < index < len(composite_dates) - 1:
                        field = _smooth_unit_field(rng, shape, 4)
                        cloud = field > np.quantile(field, 1.0 - rng.uniform(*CLOUD_FRACTION))
                        cloud_reflectance = rng.uniform(0.35, 0.55, shape)
                        stored[:, cloud] = _scaled_int16(cloud_reflectance[cloud])
                        state[cloud] = STATE_QA_CLOUDY
                        fill = rng.random(shape) < FILL_FRACTION
                        stored[:, fill] = REFLECTANCE_FILL
                        state[fill] = STATE_QA_FILL
                    name = _modis_name("MOD09A1", date)
                    paths.append(_write_raster(os.path.join(folder, name), stored,
                                               dict(grid, nodata=REFLECTANCE_FILL),
                                               tags={"DATE": date, "scale_factor": str(REFLECTANCE_SCALE)}))
                    qa.write(state, index + 1)
                    qa.set_band_description(index + 1, date)
                    progress.update((index + 1) / len(composite_dates), f"MOD09A1 {date}")
    finally:
        for src in sources.values():
            src.close()
    return paths, composite_dates, qa_path


def _write_s1(scenario_paths, dates, folder, rng, progress):
    """Speckled VV and VH scenes (dB) every 6 days; returns {pol: [paths]} and the scene dates."""
    import rasterio

    scene_dates = dates[::S1_REPEAT_DAYS]
    band_of = {date: band for band, date in enumerate(dates, start=1)}
    scenes = {}
    for step, pol in enumerate(("vv", "vh")):
        pol_folder = os.path.join(folder, pol)
        os.makedirs(pol_folder)
        scenes[pol] = []
        with rasterio.open(scenario_paths[pol]) as src:
            grid = _grid_profile(src)
            for index, date in enumerate(scene_dates):
                progress.check()
                db = src.read(band_of[date]).astype("float64")
                power = np.power(10.0, db / 10.0) * rng.gamma(S1_LOOKS, 1.0 / S1_LOOKS, db.shape)
                scene = (10.0 * np.log10(power)).astype("float32")[np.newaxis]
                path = os.path.join(pol_folder, f"S1A_IW_GRDH_{pol.upper()}_{date}.tif")
                scenes[pol].append(_write_raster(path, scene, dict(grid, nodata=float("nan")),
                                                 tags={"DATE": date, "POLARISATION": pol.upper(),
                                                       "UNITS": "dB"}, descriptions=[date]))
                progress.update((step + (index + 1) / len(scene_dates)) / 2, f"Sentinel-1 {pol.upper()} {date}")
    return scenes, scene_dates


def pft_from_classes(classes, rng):
    """MCD12Q1 LC_Type5 codes drawn for the paper's Table-2 classes (uint8, 255 elsewhere)."""
    codes = np.full(classes.shape, LC_FILL, "uint8")
    for value, (choices, weights) in PFT_CODES.items():
        where = classes == value
        codes[where] = rng.choice(np.array(choices, "uint8"), size=int(where.sum()), p=weights)
    return codes


def _write_landcover(scenario_paths, folder, rng):
    """LC_Type5 at 500 m: each 1 km class pixel split into 2 x 2 PFT pixels."""
    import rasterio
    from rasterio.transform import Affine

    os.makedirs(folder)
    with rasterio.open(scenario_paths["lc"]) as src:
        classes = src.read(1)
        t = src.transform
        grid = dict(crs=src.crs, transform=Affine(t.a / 2, t.b, t.c, t.d, t.e / 2, t.f),
                    width=src.width * 2, height=src.height * 2)
    classes_500 = np.repeat(np.repeat(classes, 2, axis=0), 2, axis=1)
    codes = pft_from_classes(classes_500, rng)
    path = os.path.join(folder, _modis_name("MCD12Q1", "2019-01-01", ".LC_Type5"))
    return _write_raster(path, codes[np.newaxis], dict(grid, nodata=LC_FILL), tags={"LAYER": "LC_Type5"})


def _granule_name(date, time_of_day):
    return f"SMAP_L4_SM_gph_{date.replace('-', '')}T{time_of_day.strftime('%H%M%S')}_Vv7032_001.h5"


def _write_granule(path, values, row0, col0, when, cell_lat, cell_lon):
    """One SPL4SMGP-like granule: a native EASE-Grid 2.0 M09 subset starting at (row0, col0)."""
    try:
        import h5py  # writing HDF5 (GDAL's HDF5 driver reads only); a development dependency
    except ImportError as err:
        raise SmdError("Writing the SMAP-like granules needs h5py (pip install -r requirements-dev.txt).") from err

    from ..core.grids import M09_CELL_SIZE, M09_ULX, M09_ULY

    rows, cols = values.shape
    surface = np.where(np.isfinite(values), values, SMAP_FILL).astype("float32")
    rootzone = np.where(np.isfinite(values), 0.8 * values + 0.05, SMAP_FILL).astype("float32")
    index_rows, index_cols = np.indices((rows, cols), dtype="uint32")

    def text(value):
        return np.bytes_(value)

    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["Title"] = text("SMAP L4_SM Geophysical (GPH) Data Granule (synthetic demo)")
            h5.attrs["Conventions"] = text("CF")
            projection = h5.create_dataset("EASE2_global_projection", shape=(), dtype="S1")
            projection.attrs["grid_mapping_name"] = text("lambert_cylindrical_equal_area")
            projection.attrs["standard_parallel"] = 30.0
            projection.attrs["longitude_of_central_meridian"] = 0.0
            projection.attrs["false_easting"] = 0.0
            projection.attrs["false_northing"] = 0.0
            group = h5.create_group("Geophysical_Data")
            for name, data, long_name in (("sm_surface", surface, "Top layer soil moisture (0-5 cm)"),
                                          ("sm_rootzone", rootzone, "Root zone soil moisture (0-100 cm)")):
                dataset = group.create_dataset(name, data=data, fillvalue=np.float32(SMAP_FILL))
                dataset.attrs["_FillValue"] = np.float32(SMAP_FILL)
                dataset.attrs["units"] = text("m3 m-3")
                dataset.attrs["long_name"] = text(long_name)
                dataset.attrs["valid_min"] = np.float32(0.0)
                dataset.attrs["valid_max"] = np.float32(0.9)
                dataset.attrs["grid_mapping"] = text("EASE2_global_projection")
            for name, data, axis in (("cell_row", index_rows + row0, "row"),
                                     ("cell_column", index_cols + col0, "column")):
                dataset = h5.create_dataset(name, data=data.astype("uint32"))
                dataset.attrs["_FillValue"] = np.uint32(4294967294)
                dataset.attrs["long_name"] = text(f"The {axis} index of each cell in the cylindrical 9 km "
                                                  "Earth-fixed EASE-Grid 2.0.")
            for name, data in (("cell_lat", cell_lat), ("cell_lon", cell_lon)):
                dataset = h5.create_dataset(name, data=data.astype("float32"))
                dataset.attrs["units"] = text("degrees")
            x = h5.create_dataset("x", data=M09_ULX + (col0 + np.arange(cols) + 0.5) * M09_CELL_SIZE)
            x.attrs["units"] = text("m")
            y = h5.create_dataset("y", data=M09_ULY - (row0 + np.arange(rows) + 0.5) * M09_CELL_SIZE)
            y.attrs["units"] = text("m")
            seconds = (when - SMAP_EPOCH).total_seconds()
            time = h5.create_dataset("time", data=np.array([seconds], "float64"))
            time.attrs["units"] = text(SMAP_TIME_UNITS)
            time.attrs["long_name"] = text("Time")
    return path


def _write_smap(soil_moisture_path, folder, progress):
    """One granule per date at 07:30 UTC plus a few at 22:30 with other values."""
    import rasterio
    from rasterio.warp import transform as transform_points

    from ..core.grids import M09_CELL_SIZE, M09_ULX, M09_ULY

    os.makedirs(folder)
    granules = []
    with rasterio.open(soil_moisture_path) as src:
        t = src.transform
        col0 = int(round((t.c - M09_ULX) / M09_CELL_SIZE))
        row0 = int(round((M09_ULY - t.f) / M09_CELL_SIZE))
        if abs(t.a - M09_CELL_SIZE) > 1e-6 or abs(t.c - (M09_ULX + col0 * M09_CELL_SIZE)) > 1e-3 \
                or abs(t.f - (M09_ULY - row0 * M09_CELL_SIZE)) > 1e-3:
            raise SmdError(f"{soil_moisture_path} is not on the EASE-Grid 2.0 9 km grid.")
        rows, cols = np.indices((src.height, src.width))
        xs = (t.c + (cols + 0.5) * t.a).ravel()
        ys = (t.f + (rows + 0.5) * t.e).ravel()
        lon, lat = transform_points(src.crs, "EPSG:4326", xs, ys)
        cell_lon = np.asarray(lon).reshape(rows.shape)
        cell_lat = np.asarray(lat).reshape(rows.shape)
        dates = list(src.descriptions)
        for band, date in enumerate(dates, start=1):
            progress.check()
            values = src.read(band)
            day = dt.date.fromisoformat(date)
            when = dt.datetime.combine(day, SMAP_GRANULE_TIME)
            path = os.path.join(folder, _granule_name(date, SMAP_GRANULE_TIME))
            granules.append(_write_granule(path, values, row0, col0, when, cell_lat, cell_lon))
            if band % SMAP_OUTSIDE_EVERY == 0:
                # an evening granule of the same day: drier values the 06:00-09:00 window must drop
                when = dt.datetime.combine(day, SMAP_OUTSIDE_TIME)
                path = os.path.join(folder, _granule_name(date, SMAP_OUTSIDE_TIME))
                granules.append(_write_granule(path, values - 0.03, row0, col0, when, cell_lat, cell_lon))
            progress.update(band / len(dates), f"SMAP granule {date}")
    return granules


def make_raw_inputs(scenario, folder, *, seed=1, progress=None):
    """Write the scenario's "raw" inputs (see the module docstring) into ``folder``.

    Parameters
    ----------
    scenario : dict
        As returned by :func:`demo.scenario.make_scenario` (its rasters are read one date at
        a time).
    folder : str
        Created (or replaced) atomically: a failure or cancellation leaves nothing.
    seed : int
        Seed of the speckle, clouds, brightness and PFT draws.
    progress : Progress, optional

    Returns
    -------
    dict with keys ``reflectance`` (paths, one per 8-day date), ``reflectance_dates``,
    ``state_qa`` (uint16 series), ``qc_rule``, ``s1_vv`` and ``s1_vh`` (scene paths),
    ``s1_dates``, ``landcover`` (LC_Type5), ``smap_granules``, ``smap_time_window``,
    ``kept_predictors`` (the scenario's lai, lst, albedo, sand, silt, clay, dem),
    ``dates`` (the scenario's daily dates), ``truth``, ``partitions``, ``stations``.
    """
    progress = Progress.wrap(progress)
    by_name = _scenario_paths(scenario)
    dates = list(scenario["dates"])
    if len(dates) < 2:
        raise SmdError("The scenario needs at least 2 dates.")
    rng = np.random.default_rng(seed)
    folder = os.path.abspath(folder)
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    with atomic_output(folder, folder=True) as tmp:
        reflectance, reflectance_dates, qa = _write_reflectance(
            by_name, dates, os.path.join(tmp, "mod09a1"), rng, progress.sub(0.0, 0.45))
        s1, s1_dates = _write_s1(by_name, dates, os.path.join(tmp, "s1"), rng, progress.sub(0.45, 0.7))
        landcover = _write_landcover(by_name, os.path.join(tmp, "mcd12q1"), rng)
        granules = _write_smap(scenario["soil_moisture"], os.path.join(tmp, "smap"), progress.sub(0.7, 1.0))

        def final(path):
            return os.path.join(folder, os.path.relpath(path, tmp))

        result = {
            "reflectance": [final(p) for p in reflectance], "reflectance_dates": reflectance_dates,
            "state_qa": final(qa), "qc_rule": QC_RULE,
            "s1_vv": [final(p) for p in s1["vv"]], "s1_vh": [final(p) for p in s1["vh"]], "s1_dates": s1_dates,
            "landcover": final(landcover), "smap_granules": [final(p) for p in granules],
            "smap_time_window": SMAP_TIME_WINDOW, "kept_predictors": [by_name[name] for name in KEPT],
            "dates": dates, "truth": scenario.get("truth"), "partitions": scenario.get("partitions"),
            "stations": scenario.get("stations"),
        }
        with open(os.path.join(tmp, "raw_inputs.json"), "w") as handle:
            json.dump(result, handle, indent=1)
    progress.update(1.0, "Raw inputs written")
    return result
