"""In-situ station observations in long format (site id, date, value, coordinates)."""
import csv
import math
import os
from collections import namedtuple

from .common import SmdError

#: One in-situ reading: ``site_id`` (str), ``date`` (ISO ``YYYY-MM-DD``), ``value`` (m3/m3),
#: ``x``, ``y`` (station coordinates in the CRS passed to ``core.validate.validate``).
Observation = namedtuple("Observation", ["site_id", "date", "value", "x", "y"])

#: Default field names of the site id, the date and the soil-moisture value (read_stations and the
#: Processing validate algorithm); an empty field name means the default (station_fields).
DEFAULT_SITE_FIELD, DEFAULT_DATE_FIELD, DEFAULT_VALUE_FIELD = "site_id", "date", "sm"

_X_NAMES = ("x", "lon", "longitude", "long", "lng")
_Y_NAMES = ("y", "lat", "latitude")


def _date_text(text, where):
    from .common import parse_date

    text = str(text).strip().replace("/", "-")
    if not text:
        return None
    try:
        return parse_date(text).isoformat()
    except SmdError as err:
        raise SmdError(f"{where}: {err}") from err


def _number(text, what, where):
    if text is None:
        return None
    text = str(text).strip()
    if text == "" or text.upper() in ("NULL", "NA", "NAN"):
        return None
    try:
        value = float(text)
    except ValueError as err:
        raise SmdError(f"{where}: {what} {text!r} is not a number.") from err
    return value if math.isfinite(value) else None


def station_fields(available, site_field=None, date_field=None, value_field=None, *, where="The station layer",
                   word="field"):
    """The (site, date, value) field names to read: None or blank = the default; each must be one of
    ``available`` exactly (case-sensitive).

    Raises SmdError ``"<where>: no <word> 'x'; <word>s: ..."`` for the first missing one.
    """
    names = list(available)
    chosen = []
    for field, default in ((site_field, DEFAULT_SITE_FIELD), (date_field, DEFAULT_DATE_FIELD),
                           (value_field, DEFAULT_VALUE_FIELD)):
        field = default if field is None or not str(field).strip() else str(field)
        if field not in names:
            raise SmdError(f"{where}: no {word} {field!r}; {word}s: {', '.join(names)}.")
        chosen.append(field)
    return tuple(chosen)


def _pick(names, candidates, path, what):
    lower = {n.lower(): n for n in names}
    for candidate in candidates:
        if candidate in lower:
            return lower[candidate]
    raise SmdError(f"{path}: no {what} column (one of {', '.join(candidates)}); columns: {', '.join(names)}.")


def _read_csv(path, site_field, date_field, value_field):
    with open(path, newline="", encoding="utf-8-sig") as handle:
        sample = handle.read(4096)
        handle.seek(0)
        try:
            dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        reader = csv.DictReader(handle, dialect=dialect)
        names = reader.fieldnames or []
        site_field, date_field, value_field = station_fields(names, site_field, date_field, value_field,
                                                             where=path, word="column")
        x_field = _pick(names, _X_NAMES, path, "x/longitude")
        y_field = _pick(names, _Y_NAMES, path, "y/latitude")
        rows = []
        for number, row in enumerate(reader, start=2):
            where = f"{os.path.basename(path)}, line {number}"
            value = _number(row[value_field], value_field, where)
            date = _date_text(row[date_field] or "", where)
            x = _number(row[x_field], x_field, where)
            y = _number(row[y_field], y_field, where)
            if value is None or date is None or x is None or y is None:
                continue
            rows.append((str(row[site_field]).strip(), date, value, x, y))
    return rows, None


def _read_vector(path, site_field, date_field, value_field):
    from osgeo import ogr

    try:
        datasource = ogr.Open(path)
    except RuntimeError:  # when another module turned OGR exceptions on
        datasource = None
    if datasource is None:
        raise SmdError(f"{path} is not a readable vector file (GeoPackage, shapefile, CSV...).")
    layer = datasource.GetLayer(0)
    definition = layer.GetLayerDefn()
    names = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
    site_field, date_field, value_field = station_fields(names, site_field, date_field, value_field, where=path)
    srs = layer.GetSpatialRef()
    wkt = srs.ExportToWkt() if srs is not None else None
    use_geometry = layer.GetGeomType() != ogr.wkbNone
    if not use_geometry:
        x_field = _pick(names, _X_NAMES, path, "x/longitude")
        y_field = _pick(names, _Y_NAMES, path, "y/latitude")
    rows = []
    for feature in layer:
        where = f"{os.path.basename(path)}, feature {feature.GetFID()}"
        if not feature.IsFieldSetAndNotNull(value_field) or not feature.IsFieldSetAndNotNull(date_field):
            continue
        if definition.GetFieldDefn(definition.GetFieldIndex(value_field)).GetType() in (ogr.OFTReal, ogr.OFTInteger,
                                                                                      ogr.OFTInteger64):
            value = feature.GetFieldAsDouble(value_field)
            value = value if math.isfinite(value) else None
        else:
            value = _number(feature.GetFieldAsString(value_field), value_field, where)
        date = _date_text(feature.GetFieldAsString(date_field), where)
        if use_geometry:
            geometry = feature.GetGeometryRef()
            if geometry is None or geometry.IsEmpty():
                continue
            if ogr.GT_Flatten(geometry.GetGeometryType()) != ogr.wkbPoint:
                raise SmdError(f"{path}: the station layer must hold points ({where} is not a point).")
            x, y = geometry.GetX(), geometry.GetY()
        else:
            x = _number(feature.GetFieldAsString(x_field), x_field, where)
            y = _number(feature.GetFieldAsString(y_field), y_field, where)
        if value is None or date is None or x is None or y is None:
            continue
        rows.append((feature.GetFieldAsString(site_field).strip(), date, value, x, y))
    datasource = None
    return rows, wkt


def read_stations(path, site_field=DEFAULT_SITE_FIELD, date_field=DEFAULT_DATE_FIELD,
                  value_field=DEFAULT_VALUE_FIELD, *, crs="EPSG:4326"):
    """Station observations in long format from a point layer or a CSV table.

    Parameters
    ----------
    path : str
        A point vector file (GeoPackage, shapefile, GeoJSON...) or a ``.csv`` with the fields
        below and x/y (or lon/lat, longitude/latitude) columns (then taken as EPSG:4326).
    site_field, date_field, value_field : str
        Field names of the site id, the date (``YYYY-MM-DD`` or ``YYYY/MM/DD``) and the value;
        None or empty = the default (:func:`station_fields`).
    crs : str or None
        Coordinates are returned in this CRS (default lon/lat EPSG:4326, x = longitude);
        None keeps the layer's own coordinates.

    Returns
    -------
    list of Observation
        Rows with an empty value, date or position are skipped.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SmdError(f"Station file {path!r} does not exist.")
    if path.lower().endswith(".csv"):
        rows, layer_wkt = _read_csv(path, site_field, date_field, value_field)
        layer_crs = "EPSG:4326"
    else:
        rows, layer_wkt = _read_vector(path, site_field, date_field, value_field)
        layer_crs = layer_wkt or "EPSG:4326"
    if not rows:
        raise SmdError(f"{path}: no station observation with a site, date, value and position.")
    if crs is not None and rows:
        from rasterio.crs import CRS
        from rasterio.errors import CRSError
        from rasterio.warp import transform

        try:
            source, target = CRS.from_user_input(layer_crs), CRS.from_user_input(crs)
        except CRSError as err:
            raise SmdError(f"{path}: unknown CRS ({err}).") from err
        if source != target:
            xs, ys = transform(source, target, [r[3] for r in rows], [r[4] for r in rows])
            rows = [(r[0], r[1], r[2], x, y) for r, x, y in zip(rows, xs, ys)]
    return [Observation(*row) for row in rows]
