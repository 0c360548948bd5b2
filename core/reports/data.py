"""Plain data for the validation report gathered from files: partitions of the sites, partition
outlines in the stations' CRS, and the time series at a few sites (products and precipitation).

Only the selected sites' pixels are read (1 x 1 windows over the bands), so gathering costs
milliseconds whatever the raster size. No QGIS.
"""
import math
import os

import numpy as np

from ..common import SmdError, parse_date, read_band_dates


def _srs(crs):
    from osgeo import osr

    from ..grids import parse_crs

    srs = osr.SpatialReference()
    srs.ImportFromWkt(parse_crs(crs).to_wkt())
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)  # x = easting/longitude always
    return srs


def _geometries_in(partitions, crs):
    """OGR geometries of the partitions, transformed into ``crs``."""
    import json

    from osgeo import ogr, osr

    transform = osr.CoordinateTransformation(_srs(partitions.crs), _srs(crs))
    result = []
    for geometry in partitions.geometries:
        shape = ogr.CreateGeometryFromJson(json.dumps(geometry))
        if shape is None:
            raise SmdError("A partition geometry cannot be read; fix the partition layer (Fix Geometries).")
        if shape.Transform(transform) != 0:
            raise SmdError("The partitions cannot be transformed into the stations' CRS; check both CRSs.")
        result.append(shape)
    return result


def site_partitions(partitions, xs, ys, crs):
    """The partition name containing each site (x, y in ``crs``), or None outside every partition."""
    from osgeo import ogr

    shapes = _geometries_in(partitions, crs)
    names = []
    for x, y in zip(xs, ys):
        point = ogr.Geometry(ogr.wkbPoint)
        point.AddPoint_2D(float(x), float(y))
        names.append(next((name for name, shape in zip(partitions.names, shapes) if shape.Contains(point)), None))
    return names


def partition_outlines(partitions, crs, max_points=2000):
    """``[(name, [ring, ...])]``, rings as lists of (x, y) in ``crs``, thinned to ``max_points``."""
    import json

    from ..reports.figures import outline_rings

    outlines = []
    for name, shape in zip(partitions.names, _geometries_in(partitions, crs)):
        rings = []
        for ring in outline_rings(json.loads(shape.ExportToJson())):
            step = max(1, math.ceil(len(ring) / max_points))
            thinned = ring[::step] + ([ring[-1]] if (len(ring) - 1) % step else [])
            rings.append([(float(p[0]), float(p[1])) for p in thinned])
        outlines.append((name, rings))
    return outlines


def pixel_series(path, xs, ys, crs, *, what="raster"):
    """Band dates and the values of every band at each site's pixel (NaN outside / nodata).

    Returns
    -------
    dates : list of str
    values : float64 array (n_sites, n_dates)
    """
    from rasterio.warp import transform
    from rasterio.windows import Window

    from ..rasters import open_raster, reading

    src = open_raster(path, what)
    with src:
        dates = read_band_dates(src, required=True)
        if not dates:
            raise SmdError(f"The {what} {path} has no band dates; give a series with one band per date "
                           "(band descriptions YYYY-MM-DD).")
        values = np.full((len(xs), len(dates)), np.nan)
        if not len(xs):
            return dates, values
        with reading(path, what):
            rx, ry = transform(_srs(crs).ExportToWkt(), src.crs, list(map(float, xs)), list(map(float, ys)))
            for i, (x, y) in enumerate(zip(rx, ry)):
                if not (math.isfinite(x) and math.isfinite(y)):
                    continue
                row, col = src.index(x, y)
                if 0 <= row < src.height and 0 <= col < src.width:
                    data = src.read(window=Window(col, row, 1, 1), out_dtype="float64").reshape(-1)
                    for band, nodata in enumerate(src.nodatavals):
                        if nodata is not None and not math.isnan(nodata) and data[band] == nodata:
                            data[band] = np.nan
                    data[~np.isfinite(data)] = np.nan
                    values[i] = data
    return dates, values


def site_timeseries(products, observations, sites, crs, *, precipitation=None, site_partition=None):
    """Time series of the report's Figure 8 for ``sites``.

    Parameters
    ----------
    products : dict name -> raster path
    observations : iterable of Observation(site_id, date, value, x, y)
    sites : list of site ids
    crs : CRS of the station coordinates
    precipitation : path of a precipitation series (one band per date), optional
    site_partition : dict site id -> partition name, optional

    Returns
    -------
    dict site id -> {"dates", "observed", "products": {name: values}, "precipitation", "partition"}
        Aligned on the union of the dates of the products within the site's observation span.
    """
    wanted = set(map(str, sites))
    readings, where = {}, {}
    for obs in observations:
        site = str(obs.site_id)
        if site not in wanted or not math.isfinite(float(obs.value)):
            continue
        readings.setdefault(site, {}).setdefault(parse_date(obs.date).isoformat(), []).append(float(obs.value))
        where[site] = (float(obs.x), float(obs.y))
    order = [s for s in map(str, sites) if s in where]
    xs = [where[s][0] for s in order]
    ys = [where[s][1] for s in order]
    product_series = {name: pixel_series(path, xs, ys, crs, what=f"product {name!r}")
                      for name, path in products.items()}
    rain = pixel_series(precipitation, xs, ys, crs, what="precipitation series") if precipitation else None
    result = {}
    for i, site in enumerate(order):
        observed_dates = sorted(readings[site])
        first, last = observed_dates[0], observed_dates[-1]
        dates = sorted({d for dates_, _ in product_series.values() for d in dates_ if first <= d <= last}
                       | set(observed_dates))
        position = {d: k for k, d in enumerate(dates)}

        def aligned(series_dates, values):
            out = np.full(len(dates), np.nan)
            for d, v in zip(series_dates, values):
                if d in position:
                    out[position[d]] = v
            return out

        observed = np.full(len(dates), np.nan)
        for d, values in readings[site].items():
            observed[position[d]] = float(np.mean(values))
        result[site] = {"dates": dates, "observed": observed,
                        "products": {name: aligned(d_, v[i]) for name, (d_, v) in product_series.items()},
                        "precipitation": None if rain is None else np.nan_to_num(aligned(rain[0], rain[1][i])),
                        "partition": (site_partition or {}).get(site)}
    return result


def check_precipitation(path):
    """SmdError unless ``path`` is a readable series with band dates (checked before validation)."""
    from ..rasters import open_raster

    if not os.path.isfile(os.fspath(path)):
        raise SmdError(f"The precipitation series {path} does not exist; choose a GeoTIFF with one band per date.")
    with open_raster(path, "precipitation series") as src:
        if not read_band_dates(src, required=True):
            raise SmdError(f"The precipitation series {path} has no band dates; describe each band with its "
                           "date (YYYY-MM-DD).")
