"""Import ISMN in-situ soil-moisture downloads as daily station points in long format.

Reads the two ISMN download formats ("header+values" and "CEOP" in separate files; one ``.stm``
file per sensor) from a folder, a ``.zip`` archive or a single file. Line endings may be LF,
CRLF or CR (the SMOSMANIA files use CR only).

Header+values: first line ``CSE network station lat lon elevation depth_from depth_to sensor``,
then ``YYYY/MM/DD HH:MM value flag [provider_flag]``.
CEOP: every line ``YYYY/MM/DD HH:MM YYYY/MM/DD HH:MM CSE network station lat lon elevation
depth_from depth_to value flag [provider_flag]`` (nominal then actual UTC time).
"""
import contextlib
import datetime as _dt
import math
import os
import re
import struct
import zipfile
import zlib
from collections import OrderedDict, namedtuple

from .. import common
from ..outputs import atomic_output
from ..common import SmdError

#: One station-day: the mean over its sensors' daily values inside the depth range.
IsmnRecord = namedtuple("IsmnRecord", ["site_id", "network", "station", "depth_from", "depth_to",
                                       "date", "sm", "lon", "lat", "n_sensors"])

_DATE = re.compile(r"\d{4}/\d{2}/\d{2}$")
_TIME = re.compile(r"\d{2}:\d{2}$")
_DEPTH_TOLERANCE = 1e-6  # metres; ISMN writes depths with 2-6 decimals

#: Guards applied to a .zip from its directory, before anything is decompressed.
MAX_ZIP_MEMBERS = 100_000
#: Largest .stm read (an hourly sensor over 30 years in CEOP format is about 40 MiB).
MAX_MEMBER_BYTES = 256 * 2**20
#: Largest sum of the .stm sizes of one archive.
MAX_TOTAL_BYTES = 32 * 2**30
#: Largest compression ratio of a member bigger than 1 MiB (ISMN text compresses ~5-20x).
MAX_RATIO = 200
#: Readings dated before this year, or after today, are refused as implausible.
FIRST_PLAUSIBLE_YEAR = 1950
_FIRST_DAY = f"{FIRST_PLAUSIBLE_YEAR}-01-01"
#: ISMN file names: CSE_network_station_<variable>_<depth_from>_<depth_to>_sensor_start_end.stm
_VARIABLE = re.compile(r"_([A-Za-z]+)_(-?\d+\.\d+)_(-?\d+\.\d+)_")


class _SensorSeries:
    """Metadata of one .stm file and its valid readings per day."""

    def __init__(self, name, network, station, lat, lon, depth_from, depth_to):
        self.name = name
        self.network = network
        self.station = station
        self.lat = lat
        self.lon = lon
        self.depth_from = depth_from
        self.depth_to = depth_to
        self.days = OrderedDict()  # date -> list of (hour, minute, value)


def _float(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _split_reading(tokens, name, number):
    """value, flag from the tail ``value flag [provider_flag]`` of a data line."""
    for value_index in (-2, -3):
        if len(tokens) >= -value_index:
            value = _float(tokens[value_index])
            flag = tokens[value_index + 1]
            if value is not None and _float(flag) is None:
                return value, flag, len(tokens) + value_index
    raise SmdError(f"{name}, line {number}: cannot find 'value flag' at the end of {' '.join(tokens)!r}; "
                   "this is not an ISMN data line.")


def _parse_date_time(date_text, time_text, name, number, cache):
    """(ISO date, hour, minute) of ``YYYY/MM/DD`` ``HH:MM``; dates are cached (strptime is slow)."""
    iso = cache.get(date_text)
    try:
        if iso is None:
            day = _dt.date(int(date_text[:4]), int(date_text[5:7]), int(date_text[8:10]))
            iso = day.isoformat()
            cache[date_text] = iso
        hour, minute = int(time_text[:2]), int(time_text[3:5])
        if hour > 23 or minute > 59:
            raise ValueError(time_text)
    except ValueError as err:
        raise SmdError(f"{name}, line {number}: {date_text} {time_text!r} is not a date and time "
                       "YYYY/MM/DD HH:MM.") from err
    if not _FIRST_DAY <= iso <= (_dt.date.today() + _dt.timedelta(days=1)).isoformat():
        raise SmdError(
            f"{name}, line {number}: the date {date_text} lies outside {_FIRST_DAY} ... today; the file "
            "is damaged or not an ISMN download. Download it again or remove the line.")
    return iso, hour, minute


def _station_fields(tokens, name, number, what):
    """network, station, lat, lon, depth_from, depth_to from ``CSE network station... lat lon elev df dt``.

    The station name may contain spaces, so the five numbers are found as the last run of five
    numeric tokens after the station's first word.
    """
    best = None
    for start in range(3, len(tokens) - 4):
        numbers = [_float(t) for t in tokens[start:start + 5]]
        if all(n is not None for n in numbers):
            best = (start, numbers)
    if best is None:
        raise SmdError(f"{name}, line {number}: {what} {' '.join(tokens)!r} lacks 'network station latitude "
                       "longitude elevation depth_from depth_to'; not an ISMN file.")
    start, (lat, lon, _elevation, depth_from, depth_to) = best
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or depth_from > depth_to + _DEPTH_TOLERANCE:
        raise SmdError(f"{name}, line {number}: implausible station fields (lat {lat}, lon {lon}, depth "
                       f"{depth_from}-{depth_to} m) in {' '.join(tokens)!r}.")
    return tokens[1], " ".join(tokens[2:start]), lat, lon, depth_from, depth_to, start + 5


def _parse_stm(name, text, quality_flags, progress=None):
    """Parse one .stm file's text into a _SensorSeries (valid readings only).

    Raises SmdError naming the file and line on anything that is not ISMN data.
    """
    series = None
    ceop = None
    dates = {}
    outside = []  # (line, value) of accepted readings outside common.SOIL_MOISTURE_RANGE
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if ceop is None:  # first non-empty line decides the format
            ceop = (len(tokens) >= 4 and bool(_DATE.match(tokens[0])) and bool(_TIME.match(tokens[1]))
                    and bool(_DATE.match(tokens[2])))
            if not ceop:
                if _DATE.match(tokens[0]):
                    raise SmdError(f"{name}, line {number}: the file starts with data but has no header "
                                   "line (header+values format) nor CEOP columns.")
                network, station, lat, lon, d_from, d_to, _ = _station_fields(tokens, name, number, "header")
                series = _SensorSeries(name, network, station, lat, lon, d_from, d_to)
                continue
        if ceop:
            if len(tokens) < 14 or not _DATE.match(tokens[2]):
                raise SmdError(f"{name}, line {number}: {line.strip()!r} is not a CEOP data line "
                               "(date time date time CSE network station lat lon elevation depths value flag).")
            value, flag, value_index = _split_reading(tokens, name, number)
            network, station, lat, lon, d_from, d_to, end = _station_fields(
                tokens[4:value_index], name, number, "station fields")
            if end != value_index - 4:
                raise SmdError(f"{name}, line {number}: unexpected columns before the value in {line.strip()!r}.")
            if series is None:
                series = _SensorSeries(name, network, station, lat, lon, d_from, d_to)
            when = _parse_date_time(tokens[0], tokens[1], name, number, dates)  # nominal UTC time
        else:
            if len(tokens) < 4 or not _DATE.match(tokens[0]) or not _TIME.match(tokens[1]):
                raise SmdError(f"{name}, line {number}: {line.strip()!r} is not a data line "
                               "'YYYY/MM/DD HH:MM value flag'.")
            value, flag, value_index = _split_reading(tokens, name, number)
            if value_index != 2:
                raise SmdError(f"{name}, line {number}: {line.strip()!r} has extra columns; expected "
                               "'YYYY/MM/DD HH:MM value flag [provider_flag]'.")
            when = _parse_date_time(tokens[0], tokens[1], name, number, dates)
        if quality_flags is not None and not set(flag.split(",")) <= quality_flags:
            continue
        if not common.SOIL_MOISTURE_RANGE[0] <= value <= common.SOIL_MOISTURE_RANGE[1]:
            outside.append((number, value))
        series.days.setdefault(when[0], []).append((when[1], when[2], value))
        if progress is not None and number % 20000 == 0:
            progress.check()
    if series is None:
        raise SmdError(f"{name}: the file is empty; not an ISMN data file.")
    if outside:
        values = [v for days in series.days.values() for _, _, v in days]
        try:
            common.check_soil_moisture_range(values, f"{name} ({len(outside)} reading(s), first at line "
                                                     f"{outside[0][0]}: {outside[0][1]:g})")
        except SmdError as err:
            raise SmdError(f"{err} ISMN soil moisture is in m3/m3; check the download or accept fewer "
                           "quality flags (ISMN flags C01-C03 mark values outside the plausible range).") from None
    return series


def _is_soil_moisture_file(name):
    """False for ISMN files of another variable (ts, p, sd ...) named by the ISMN pattern."""
    match = _VARIABLE.search(os.path.basename(name))
    return match is None or match.group(1).lower() == "sm"


def _decode(data, name):
    return data.decode("utf-8", "replace")


def _check_size(size, name):
    if size > MAX_MEMBER_BYTES:
        raise SmdError(f"{name} is {size / 2**20:.0f} MiB, more than the {MAX_MEMBER_BYTES // 2**20} MiB an "
                       "ISMN sensor file can reasonably hold; it is not an ISMN data file.")


def _zip_members(source, archive):
    """The .stm members after the directory guards (count, sizes, total, compression ratio)."""
    label = os.path.basename(source)
    infos = archive.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        raise SmdError(f"{label} lists {len(infos)} members, more than {MAX_ZIP_MEMBERS}; this is not an ISMN "
                       "download (unzip it and choose the folder if it really is one).")
    members = sorted((m for m in infos if m.filename.lower().endswith(".stm") and not m.is_dir()
                      and not m.filename.startswith("__MACOSX") and _is_soil_moisture_file(m.filename)),
                     key=lambda m: m.filename)
    total = 0
    for member in members:
        where = f"{label}:{member.filename}"
        _check_size(member.file_size, where)
        if member.file_size > 2**20 and member.file_size > MAX_RATIO * max(member.compress_size, 1):
            raise SmdError(f"{where} would inflate {member.file_size / max(member.compress_size, 1):.0f}-fold "
                           f"(to {member.file_size / 2**20:.0f} MiB); ISMN text compresses far less. The "
                           "archive is damaged or crafted; download it again.")
        total += member.file_size
    if total > MAX_TOTAL_BYTES:
        raise SmdError(f"{label} would inflate to {total / 2**30:.1f} GiB of data files, more than "
                       f"{MAX_TOTAL_BYTES // 2**30} GiB; split the download.")
    return members


def _read_member(source, archive, member):
    """The member's bytes, read with a bound (a lying directory cannot make it read more)."""
    where = f"{os.path.basename(source)}:{member.filename}"
    try:
        with archive.open(member) as handle:
            data = handle.read(member.file_size + 1)
            if len(data) > member.file_size:
                raise SmdError(f"{where} holds more data than the archive directory says; the archive "
                               "is damaged. Download it again.")
    except SmdError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error,
            NotImplementedError, RuntimeError, OverflowError, MemoryError) as err:
        detail = str(err).strip() or type(err).__name__
        raise SmdError(f"{where} cannot be decompressed ({detail}); the archive is damaged or truncated. "
                       "Download it again (or unzip what you can and choose the folder).") from err
    return where, _decode(data, where)


def _iter_sources(source):
    """(display name, text) of every .stm file in a folder, a .zip or a single file."""
    source = os.fspath(source)
    if not os.path.exists(source):
        raise SmdError(f"ISMN source {source!r} does not exist; choose the unzipped download folder or its .zip.")
    if os.path.isdir(source):
        paths = []
        for root, dirs, files in os.walk(source):
            dirs.sort()
            paths += [os.path.join(root, f) for f in sorted(files)
                      if f.lower().endswith(".stm") and _is_soil_moisture_file(f)]
        if not paths:
            raise SmdError(f"No ISMN data files (soil moisture *.stm) found under {source!r}.")
        for path in paths:
            name = os.path.relpath(path, source)
            yield name, _read_file(path, name)
        return
    if source.lower().endswith(".zip") or zipfile.is_zipfile(source):
        try:
            archive = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error,
                NotImplementedError, OverflowError) as err:
            detail = str(err).strip() or type(err).__name__
            raise SmdError(f"{source} is not a readable zip archive ({detail}); the download is damaged "
                           "or truncated. Download it again.") from err
        with archive:
            members = _zip_members(source, archive)
            if not members:
                raise SmdError(f"No ISMN data files (soil moisture *.stm) inside {source!r}.")
            for member in members:
                yield _read_member(source, archive, member)
        return
    yield os.path.basename(source), _read_file(source, os.path.basename(source))


def _read_file(path, name):
    try:
        _check_size(os.path.getsize(path), name)
        with open(path, "rb") as handle:
            return _decode(handle.read(MAX_MEMBER_BYTES + 1), name)
    except OSError as err:
        raise SmdError(f"Cannot read {path}: {err.strerror or err}.") from err


def _check_options(depth_from, depth_to, hour, quality_flags):
    try:
        depth_from, depth_to = float(depth_from), float(depth_to)
    except (TypeError, ValueError) as err:
        raise SmdError(f"Depths {depth_from!r}, {depth_to!r} must be numbers in metres.") from err
    if depth_from < 0 or depth_to < depth_from:
        raise SmdError(f"Depth range {depth_from}-{depth_to} m is invalid: need 0 <= depth_from <= depth_to.")
    if hour is not None and hour != "":
        try:
            hour = int(hour)
        except (TypeError, ValueError) as err:
            raise SmdError(f"Hour {hour!r} must be a whole UTC hour 0-23.") from err
        if not 0 <= hour <= 23:
            raise SmdError(f"Hour {hour} must be a whole UTC hour 0-23.")
    else:
        hour = None
    if quality_flags is not None:
        if isinstance(quality_flags, str):
            quality_flags = [f for f in re.split(r"[,\s]+", quality_flags) if f]
        quality_flags = {str(f).strip().upper() for f in quality_flags} or None
    return depth_from, depth_to, hour, quality_flags


def read_ismn_observations(source, *, depth_from=0.0, depth_to=0.1, hour=None, quality_flags=("G",),
                           progress=None):
    """Daily station soil moisture from an ISMN download, in memory.

    Parameters
    ----------
    source : str
        Unzipped ISMN download folder, its ``.zip``, or one ``.stm`` file.
    depth_from, depth_to : float
        Metres. A sensor is kept when its whole depth range lies inside ``[depth_from, depth_to]``.
    hour : int, optional
        UTC hour: a day's value is the valid reading at ``hour:00``. Default: mean of the day's
        valid readings.
    quality_flags : iterable of str or None
        ISMN flags accepted (default only ``G``); a reading with several flags (``D03,D05``) needs
        all of them accepted. None keeps every reading.
    progress : Progress, optional

    Returns
    -------
    list of IsmnRecord
        ``(site_id, network, station, depth_from, depth_to, date, sm, lon, lat, n_sensors)``
        sorted by site and date; ``site_id`` is ``network:station``. When several sensors of a
        station are inside the depth range, ``sm`` is the mean of their daily values and the
        depths span them.
    """
    progress = common.Progress.wrap(progress)
    depth_from, depth_to, hour, flags = _check_options(depth_from, depth_to, hour, quality_flags)
    sensors, depths_seen = [], set()
    for name, text in _iter_sources(source):
        progress.update(0.0, f"Reading {name}")
        progress.check()
        series = _parse_stm(name, text, flags, progress)
        depths_seen.add((series.depth_from, series.depth_to))
        if (series.depth_from >= depth_from - _DEPTH_TOLERANCE
                and series.depth_to <= depth_to + _DEPTH_TOLERANCE):
            sensors.append(series)
    if not sensors:
        found = ", ".join(f"{a:g}-{b:g} m" for a, b in sorted(depths_seen))
        raise SmdError(f"No sensor lies inside the depth range {depth_from:g}-{depth_to:g} m "
                       f"(sensor depths in the download: {found}). Widen the depth range.")

    per_site = OrderedDict()  # site_id -> {"sensors": [...], "days": {date: [daily values]}}
    for series in sensors:
        site_id = f"{series.network}:{series.station}"
        site = per_site.setdefault(site_id, dict(sensors=[], days={}))
        site["sensors"].append(series)
        for date, readings in series.days.items():
            if hour is None:
                daily = math.fsum(v for _, _, v in readings) / len(readings)
            else:
                at_hour = [v for h, m, v in readings if h == hour and m == 0]
                if not at_hour:
                    continue
                daily = at_hour[0]
            site["days"].setdefault(date, []).append(daily)

    records = []
    for site_id in sorted(per_site):
        site = per_site[site_id]
        first = site["sensors"][0]
        d_from = min(s.depth_from for s in site["sensors"])
        d_to = max(s.depth_to for s in site["sensors"])
        for date in sorted(site["days"]):
            values = site["days"][date]
            records.append(IsmnRecord(site_id, first.network, first.station, d_from, d_to, date,
                                      math.fsum(values) / len(values), first.lon, first.lat, len(values)))
    if not records:
        raise SmdError("No valid reading passed the filters (quality flags "
                       f"{sorted(flags) if flags else 'any'}{'' if hour is None else f', hour {hour:02d}:00 UTC'}). "
                       "Accept more quality flags or drop the hour option.")
    return records


def to_observations(records):
    """IsmnRecord rows -> ``core.stations.Observation(site_id, date, value, lon, lat)``."""
    from ..stations import Observation

    return [Observation(r.site_id, r.date, r.sm, r.lon, r.lat) for r in records]


@contextlib.contextmanager
def _ogr_exceptions():
    """OGR/OSR raise Python exceptions inside the block; the previous mode is restored after."""
    from osgeo import ogr, osr

    previous = ogr.GetUseExceptions(), osr.GetUseExceptions()
    ogr.UseExceptions()
    osr.UseExceptions()
    try:
        yield
    finally:
        # undo in reverse order: GDAL keeps a stack of error handlers
        if not previous[1]:
            osr.DontUseExceptions()
        if not previous[0]:
            ogr.DontUseExceptions()


_FIELDS = (("site_id", "str"), ("network", "str"), ("station", "str"), ("depth_from", "real"),
           ("depth_to", "real"), ("date", "date"), ("sm", "real"), ("lon", "real"), ("lat", "real"),
           ("n_sensors", "int"))


def write_station_points(records, output_path, progress=None):
    """Write IsmnRecord rows as a point layer (GeoPackage, or CSV by extension), EPSG:4326."""
    from osgeo import ogr, osr

    progress = common.Progress.wrap(progress)
    ext = os.path.splitext(output_path)[1].lower()
    drivers = {".gpkg": "GPKG", ".csv": "CSV", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON"}
    if ext not in drivers:
        raise SmdError(f"Output {output_path!r}: use a .gpkg (or .csv, .geojson, .shp) file name.")
    csv = ext == ".csv"
    ogr_types = {"str": ogr.OFTString, "real": ogr.OFTReal, "int": ogr.OFTInteger,
                 "date": ogr.OFTString if csv or ext == ".geojson" else ogr.OFTDate}
    layer_name = os.path.splitext(os.path.basename(output_path))[0]
    with atomic_output(output_path) as tmp:
        with _ogr_exceptions():
            datasource = ogr.GetDriverByName(drivers[ext]).CreateDataSource(tmp)
            try:
                srs = osr.SpatialReference()
                srs.ImportFromEPSG(4326)
                srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
                layer = datasource.CreateLayer(layer_name, None if csv else srs,
                                               ogr.wkbNone if csv else ogr.wkbPoint)
                for field, kind in _FIELDS:
                    layer.CreateField(ogr.FieldDefn(field, ogr_types[kind]))
                definition = layer.GetLayerDefn()
                layer.StartTransaction()
                for index, record in enumerate(records):
                    if index % 5000 == 0:
                        progress.update(index / max(len(records), 1), "Writing station points")
                    feature = ogr.Feature(definition)
                    for field, kind in _FIELDS:
                        value = getattr(record, field)
                        if kind == "date" and ogr_types[kind] == ogr.OFTDate:
                            y, m, d = (int(p) for p in value.split("-"))
                            feature.SetField(field, y, m, d, 0, 0, 0, 0)
                        else:
                            feature.SetField(field, value)
                    if not csv:
                        point = ogr.Geometry(ogr.wkbPoint)
                        point.AddPoint_2D(record.lon, record.lat)
                        feature.SetGeometry(point)
                    layer.CreateFeature(feature)
                layer.CommitTransaction()
            finally:
                datasource = None  # closes and flushes the file
    progress.update(1.0, "Done")
    return output_path


def import_ismn(source, output_path, *, depth_from=0.0, depth_to=0.1, hour=None, quality_flags=("G",),
                progress=None):
    """ISMN download (folder, .zip or .stm) -> daily station points for validation.

    Parameters
    ----------
    source, depth_from, depth_to, hour, quality_flags
        See :func:`read_ismn_observations`.
    output_path : str
        ``.gpkg`` point layer in EPSG:4326 (``.csv``: a table with lon/lat columns). Fields:
        site_id, network, station, depth_from, depth_to, date, sm, lon, lat, n_sensors.
        Written atomically: nothing is written when any input file is malformed.
    progress : Progress, optional

    Returns
    -------
    dict
        ``output``, ``records`` (rows written), ``sites`` (site ids), ``first_date``, ``last_date``.
    """
    from ..outputs import check_outputs

    progress = common.Progress.wrap(progress)
    check_outputs([(output_path, "vector")], inputs=[source])
    records = read_ismn_observations(source, depth_from=depth_from, depth_to=depth_to, hour=hour,
                                     quality_flags=quality_flags, progress=progress.sub(0.0, 0.8))
    write_station_points(records, output_path, progress=progress.sub(0.8, 1.0))
    return dict(output=output_path, records=len(records), sites=sorted({r.site_id for r in records}),
                first_date=min(r.date for r in records), last_date=max(r.date for r in records))
