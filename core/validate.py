"""Validation of soil-moisture rasters against in-situ stations (paper Section 3.4 / 4.2).

For every product (a multi-band GeoTIFF series, bands described by ISO date) the stations are
transformed into the raster's CRS, the pixel containing each station is read for the dates that
the station and the raster share (1 x 1 windows, only the needed bands: a large raster is never
read whole), and per site n, R, RMSE, bias and ubRMSE are computed (core.metrics). Sites that
cannot be compared - outside the raster, only nodata at their pixel, no shared date - are listed
in ``ValidationResult.unmatched`` with the reason, per product.

Station readings: several readings of one site on one date (e.g. hourly) are averaged to a daily
value; non-finite readings are ignored.

Plausibility: station readings and the product values read at the sites must be volumetric soil
moisture in m3/m3 (:data:`core.common.SOIL_MOISTURE_RANGE`); values in percent or undeclared fill values are
refused with a message instead of giving an RMSE of 23. A product that no site can be compared
with (stations outside it, no shared date, only nodata) is refused with the reasons.
"""
import csv
import io
import json
import math
import os
from collections import OrderedDict

import numpy as np

from . import metrics
from .common import (SOIL_MOISTURE_RANGE, Progress, SmdError, is_nodata, parse_date, read_band_dates,
                     soil_moisture_units_hint, whole_number)
from .outputs import check_outputs, write_text_temporary, write_together
from .train import REPORT_EXTENSIONS

PER_SITE_FIELDS = ("product", "site_id", "x", "y", "n") + metrics.METRIC_NAMES
UNMATCHED_FIELDS = ("product", "site_id", "x", "y", "reason")
SUMMARY_METRICS = metrics.METRIC_NAMES
#: unmatched reason -> short key of the summary counts
REASON_KEYS = (("outside the raster", "n_outside"), ("no overlapping dates", "n_no_shared_dates"),
               ("only nodata", "n_only_nodata"))
MAX_EXAMPLES = 5


class ValidationResult:
    """Outcome of :func:`validate`.

    Attributes
    ----------
    per_site : list of dict
        One row per (product, site) compared: ``product, site_id, x, y, n, r, rmse, bias,
        ubrmse`` (x, y in the stations' CRS; R is NaN with fewer than 3 pairs).
    summary : list of dict
        One row per product: ``product, n_sites, n_unmatched``, ``mean_<m>`` and ``median_<m>``
        for m in r, rmse, bias, ubrmse (NaN-free sites only), and the paper's class counts
        ``r_high`` (> 0.6), ``r_moderate`` (0.4..0.6), ``r_low`` (< 0.4), ``r_undefined``,
        ``ubrmse_meets`` (< 0.04), ``ubrmse_acceptable`` (0.04..0.06), ``ubrmse_poor`` (> 0.06),
        ``ubrmse_undefined``.
    unmatched : list of dict
        ``product, site_id, x, y, reason`` for every site that could not be compared.

    With ``partitions``, per-site and unmatched rows carry ``partition`` (None outside every
    partition), the product rows ``partition`` = :data:`ALL_SITES`, and one summary row per
    product and partition follows the product rows (same keys).
    """

    def __init__(self, per_site, summary, unmatched, *, outlines=None, timeseries=None, axis_labels=None):
        self.per_site = per_site
        self.summary = summary
        self.unmatched = unmatched
        #: partition outlines in the stations' CRS, ``[(name, [ring, ...])]`` (HTML report), or None
        self.outlines = outlines
        #: site id -> time series of the HTML report's Figure 8 (``timeseries_sites`` > 0), or None
        self.timeseries = timeseries
        #: axis labels of the stations' coordinates (report maps), e.g. ("longitude", "latitude")
        self.axis_labels = axis_labels

    def summary_for(self, product):
        """The summary row of one product."""
        for row in self.summary:
            if row["product"] == product:
                return row
        raise KeyError(product)

    def site(self, product, site_id):
        """The per-site row of one product and site."""
        for row in self.per_site:
            if row["product"] == product and row["site_id"] == site_id:
                return row
        raise KeyError((product, site_id))

    def to_dict(self):
        return {"format": "smdownscale-validation", "version": 1, "summary": self.summary,
                "per_site": self.per_site, "unmatched": self.unmatched}


def _group_stations(stations):
    """site_id -> {"x", "y", "values": {date: mean value}} (insertion ordered)."""
    sites = OrderedDict()
    sums = {}
    count = 0
    for row in stations:
        count += 1
        try:
            site_id, date, value, x, y = (row.site_id, row.date, row.value, row.x, row.y) \
                if hasattr(row, "site_id") else tuple(row)
        except (TypeError, ValueError) as err:
            raise SmdError(f"Station row {count} ({row!r}) is not (site_id, date, value, x, y).") from err
        site_id = str(site_id)
        date = parse_date(date).isoformat()
        try:
            x, y, value = float(x), float(y), float(value)
        except (TypeError, ValueError) as err:
            raise SmdError(f"Station {site_id!r} on {date}: value and coordinates must be numbers, "
                           f"got value={value!r}, x={x!r}, y={y!r}.") from err
        if not (math.isfinite(x) and math.isfinite(y)):
            raise SmdError(f"Station {site_id!r} has no valid coordinates (x={x}, y={y}).")
        site = sites.get(site_id)
        if site is None:
            site = sites[site_id] = {"x": x, "y": y}
        elif not (math.isclose(site["x"], x, rel_tol=1e-9, abs_tol=1e-9)
                  and math.isclose(site["y"], y, rel_tol=1e-9, abs_tol=1e-9)):
            raise SmdError(f"Station {site_id!r} has two locations ({site['x']}, {site['y']}) and "
                           f"({x}, {y}); give each location its own site id.")
        if math.isfinite(value):
            total, n = sums.get((site_id, date), (0.0, 0))
            sums[(site_id, date)] = (total + value, n + 1)
    if count == 0:
        raise SmdError("The station list is empty: give at least one in-situ reading "
                       "(site id, date, value, x, y).")
    if not sums:
        raise SmdError(f"None of the {count} station readings has a finite soil-moisture value (all "
                       "NaN, inf or empty); check the value field.")
    _check_range(((site_id, date, total / n) for (site_id, date), (total, n) in sums.items()),
                 "The station readings", "Fix or remove these readings, or convert the station values "
                 "to m3/m3.")
    for site in sites.values():
        site["values"] = {}
    for (site_id, date), (total, n) in sums.items():
        sites[site_id]["values"][date] = total / n
    return sites


def _check_range(items, what, advice):
    """SmdError when any (site_id, date, value) lies outside :data:`SOIL_MOISTURE_RANGE`.

    The message counts the offending values, gives a few examples, and hints at percent when
    the values fit 0..100.
    """
    low, high = SOIL_MOISTURE_RANGE
    bad, n, lowest, highest = [], 0, math.inf, -math.inf
    for site_id, date, value in items:
        n += 1
        lowest, highest = min(lowest, value), max(highest, value)
        if not low <= value <= high:
            bad.append((site_id, date, value))
    if not bad:
        return
    examples = ", ".join(f"site {s} on {d}: {v:g}" for s, d, v in bad[:MAX_EXAMPLES])
    hint = f" The values range {lowest:g}..{highest:g}.{soil_moisture_units_hint(lowest, highest)}"
    raise SmdError(f"{what} are not volumetric soil moisture in m3/m3 (0..1): {len(bad)} of {n} "
                   f"values lie outside {low:g}..{high:g} ({examples}).{hint} {advice}")


def _unmatched_counts(rows):
    """Counts of unmatched sites per reason kind (:data:`REASON_KEYS`)."""
    counts = {key: 0 for _, key in REASON_KEYS}
    for row in rows:
        for prefix, key in REASON_KEYS:
            if row["reason"].startswith(prefix):
                counts[key] += 1
    return counts


def _nothing_compared(name, path, n_sites, unmatched, station_span, dates):
    counts = _unmatched_counts(unmatched)
    parts = []
    if counts["n_outside"]:
        parts.append(f"{counts['n_outside']} lie outside the raster (check the station layer's CRS)")
    if counts["n_no_shared_dates"]:
        parts.append(f"{counts['n_no_shared_dates']} have no date in common with it (stations "
                     f"{station_span[0]}..{station_span[1]}, raster {dates[0]}..{dates[-1]})")
    if counts["n_only_nodata"]:
        parts.append(f"{counts['n_only_nodata']} sit on nodata pixels on every shared date")
    return SmdError(f"Product {name!r} ({path}) cannot be compared with any of the {n_sites} station "
                    f"sites: {'; '.join(parts)}. Use stations and rasters of the same area and period.")


def _open_product(name, path):
    import rasterio

    if not os.path.exists(path):
        raise SmdError(f"Product {name!r}: the raster {path!r} does not exist.")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as err:
        raise SmdError(f"Product {name!r}: {path!r} cannot be read as a raster ({err}).") from err
    try:
        dates = read_band_dates(src)
        if not dates:
            raise SmdError(f"Product {name!r}: {path!r} has no dates. Describe every band with its "
                           "date (YYYY-MM-DD) as a GDAL band description.")
        if src.crs is None:
            raise SmdError(f"Product {name!r}: {path!r} has no coordinate reference system.")
    except BaseException:
        src.close()
        raise
    return src, dates


def _sample_site(src, row, col, band_indexes):
    """Values of ``band_indexes`` (1-based) at pixel (row, col) as float64 with nodata -> NaN."""
    from rasterio.windows import Window

    values = src.read(band_indexes, window=Window(col, row, 1, 1)).reshape(-1).astype("float64")
    nodatavals = [src.nodatavals[i - 1] for i in band_indexes]
    invalid = np.array([bool(is_nodata(np.array([v]), nd)[0]) for v, nd in zip(values, nodatavals)])
    scales = np.array([src.scales[i - 1] for i in band_indexes], dtype="float64")
    offsets = np.array([src.offsets[i - 1] for i in band_indexes], dtype="float64")
    values = values * scales + offsets
    values[invalid] = np.nan
    return values


def _summary_row(name, rows, unmatched):
    row = {"product": name, "n_sites": len(rows), "n_unmatched": len(unmatched),
           "n_pairs": int(sum(r["n"] for r in rows)),
           "n_sites_with_r": sum(1 for r in rows if isinstance(r["r"], float) and math.isfinite(r["r"]))}
    row.update(_unmatched_counts(unmatched))
    for key in SUMMARY_METRICS:
        stats = metrics.summarise(r[key] for r in rows)
        row[f"mean_{key}"] = stats["mean"]
        row[f"median_{key}"] = stats["median"]
    for cls, n in metrics.r_classes(r["r"] for r in rows).items():
        row[f"r_{cls}"] = n
    for cls, n in metrics.ubrmse_classes(r["ubrmse"] for r in rows).items():
        row[f"ubrmse_{cls}"] = n
    return row


#: ``partition`` of the summary rows over all sites when partitions are given
ALL_SITES = "all sites"


def validate(products, stations, *, stations_crs="EPSG:4326", partitions=None, precipitation=None,
             timeseries_sites=0, progress=None):
    """Compare raster products with in-situ readings, per site and summarised per product.

    Parameters
    ----------
    products : dict
        Product name -> path of a GeoTIFF series whose band descriptions are ISO dates (e.g.
        the downscaled 1 km result, the original 9 km SMAP, the global-model result). Any CRS.
    stations : iterable
        ``core.stations.Observation(site_id, date, value, x, y)`` rows (or 5-tuples in that
        order), long format. Readings of one site on one date are averaged.
    stations_crs : str or CRS
        CRS of the station coordinates (default longitude/latitude, EPSG:4326).
    partitions : Partitions, optional
        Adds each site's partition and per-partition summary rows (and outlines for the report).
    precipitation : str, optional
        A precipitation series (one band per date) drawn as bars in the report's time series.
    timeseries_sites : int
        Sites whose time series the HTML report draws (0: none gathered; the report asks for
        12). Chosen spread over the partitions, most pairs first.
    progress : Progress or None

    Returns
    -------
    ValidationResult

    Raises
    ------
    SmdError
        Empty station list, a date that is not YYYY-MM-DD, a product without band dates or
        without CRS, an unknown ``stations_crs``, no products.
    """
    import rasterio
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from rasterio.warp import transform

    progress = Progress.wrap(progress)
    if not products:
        raise SmdError("No product to validate: give at least one raster series.")
    timeseries_sites = whole_number(timeseries_sites, "timeseries_sites", minimum=0)
    if precipitation:
        from .reports.data import check_precipitation

        check_precipitation(precipitation)
    sites = _group_stations(stations)
    try:
        source_crs = CRS.from_user_input(stations_crs)
    except CRSError as err:
        raise SmdError(f"The stations' CRS {stations_crs!r} is not a known CRS (e.g. EPSG:4326).") from err

    site_ids = list(sites)
    all_dates = sorted({d for site in sites.values() for d in site["values"]})
    station_span = (all_dates[0], all_dates[-1])
    xs = [sites[s]["x"] for s in site_ids]
    ys = [sites[s]["y"] for s in site_ids]
    per_site, summary, unmatched = [], [], []
    for product_index, (name, path) in enumerate(products.items()):
        product_progress = progress.sub(product_index / len(products), (product_index + 1) / len(products))
        src, dates = _open_product(name, os.fspath(path))
        with src:
            band_of_date = {date: band for band, date in enumerate(dates, start=1)}
            try:
                with rasterio.Env(CHECK_WITH_INVERT_PROJ=True):
                    raster_xs, raster_ys = transform(source_crs, src.crs, xs, ys)
            except Exception as err:  # rasterio/PROJ raise several classes for impossible transforms
                raise SmdError(f"Product {name!r}: the station coordinates cannot be transformed from "
                               f"the stations' CRS to the raster's ({err}); check the station layer's "
                               "CRS.") from err
            product_rows, product_unmatched, product_values = [], [], []
            for i, site_id in enumerate(site_ids):
                product_progress.update(i / len(site_ids), f"{name}: site {site_id}")
                site = sites[site_id]
                base = {"product": name, "site_id": site_id, "x": site["x"], "y": site["y"]}
                rx, ry = raster_xs[i], raster_ys[i]
                row = col = -1
                if math.isfinite(rx) and math.isfinite(ry):
                    row, col = src.index(rx, ry)
                if not (0 <= row < src.height and 0 <= col < src.width):
                    product_unmatched.append({**base, "reason": "outside the raster"})
                    continue
                shared = sorted(set(site["values"]) & set(band_of_date))
                if not shared:
                    station_dates = sorted(site["values"])
                    span = f"{station_dates[0]}..{station_dates[-1]}" if station_dates else "none valid"
                    product_unmatched.append({**base, "reason": (
                        f"no overlapping dates (station: {span}; raster: {dates[0]}..{dates[-1]})")})
                    continue
                try:
                    predicted = _sample_site(src, row, col, [band_of_date[d] for d in shared])
                except rasterio.errors.RasterioError as err:
                    raise SmdError(f"Product {name!r}: {path} cannot be read at site {site_id!r} "
                                   f"(row {row}, col {col}): {err}. The file may be damaged; write "
                                   "it again.") from err
                if not np.isfinite(predicted).any():
                    product_unmatched.append({**base, "reason": (
                        f"only nodata at pixel (row {row}, col {col}) on the {len(shared)} shared dates")})
                    continue
                observed = np.array([site["values"][d] for d in shared], dtype="float64")
                product_values += [(site_id, d, float(v)) for d, v in zip(shared, predicted) if math.isfinite(v)]
                product_rows.append({**base, **metrics.all_metrics(predicted, observed)})
            product_progress.update(1.0, f"{name}: {len(product_rows)} sites compared")
        per_site.extend(product_rows)
        unmatched.extend(product_unmatched)
        if not product_rows:
            raise _nothing_compared(name, path, len(site_ids), product_unmatched, station_span, dates)
        _check_range(product_values, f"The values of product {name!r} ({path}) at the stations",
                     "Use a soil-moisture raster in m3/m3 (e.g. the output of Predict fine soil "
                     "moisture), or rescale it first.")
        summary.append(_summary_row(name, product_rows, product_unmatched))
    outlines = timeseries = None
    if partitions is not None:
        from .reports.data import partition_outlines, site_partitions

        site_partition = dict(zip(site_ids, site_partitions(partitions, xs, ys, stations_crs)))
        for row in per_site + unmatched:
            row["partition"] = site_partition[row["site_id"]]
        for row in summary:
            row["partition"] = ALL_SITES
        for name in products:
            for partition in partitions.names:
                rows = [r for r in per_site if r["product"] == name and r["partition"] == partition]
                missed = [r for r in unmatched if r["product"] == name and r["partition"] == partition]
                if rows or missed:
                    summary.append({**_summary_row(name, rows, missed), "partition": partition})
        outlines = partition_outlines(partitions, stations_crs)
    if timeseries_sites:
        from .reports.data import site_timeseries
        from .reports.validation import select_sites
        from .stations import Observation

        chosen = select_sites(per_site, next(iter(products)), timeseries_sites)
        observations = [Observation(s, d, v, sites[s]["x"], sites[s]["y"])
                        for s in chosen for d, v in sites[s]["values"].items()]
        timeseries = site_timeseries(products, observations, chosen, stations_crs, precipitation=precipitation,
                                     site_partition={r["site_id"]: r.get("partition") for r in per_site})
    labels = ("longitude (degrees)", "latitude (degrees)") if source_crs.is_geographic else (
        f"x ({source_crs.linear_units or 'map units'})", f"y ({source_crs.linear_units or 'map units'})")
    return ValidationResult(per_site, summary, unmatched, outlines=outlines, timeseries=timeseries,
                            axis_labels=labels)


# ---------------------------------------------------------------- reports
def _json_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(value):
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def check_report_path(path):
    """SmdError unless ``path`` ends in one of :data:`REPORT_EXTENSIONS` (.csv, .json, .html, .htm).

    The validate algorithm calls it before the run, :func:`write_validation_report` before writing.
    """
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in REPORT_EXTENSIONS:
        raise SmdError(f"Validation report {os.fspath(path)}: unknown report format "
                       f"{ext or '(no extension)'!r}; use .csv, .json or .html.")
    return ext


def summary_csv_path(path):
    """The per-product summary a .csv validation report writes beside it (``report.csv`` ->
    ``report_summary.csv``)."""
    return os.path.splitext(os.fspath(path))[0] + "_summary.csv"


def report_outputs(path):
    """``(path, kind)`` of every file the validation report at ``path`` writes, for
    :func:`.outputs.check_outputs`: a .csv report also writes :func:`summary_csv_path`. Raises
    SmdError for an unknown report format (:func:`check_report_path`)."""
    outputs = [(os.fspath(path), "report")]
    if check_report_path(path) == ".csv":
        outputs.append((summary_csv_path(path), "report"))
    return outputs


def write_validation_report(result, path):
    """Write ``result`` as .csv, .json or .html (chosen by the extension of ``path``).

    - ``.json``: ``{"summary": [...], "per_site": [...], "unmatched": [...]}``, NaN as null.
    - ``.csv``: one row per (product, site): the per-site metrics, then the unmatched sites with
      empty metrics and their reason in ``status`` (``ok`` for compared sites). The per-product
      summary goes to ``<stem>_summary.csv`` beside it.
    - ``.html``: a self-contained page (core.reports.validation): one sentence per other
      product, summary and class tables, boxplots, site maps, R vs ubRMSE per partition, time
      series at ``result.timeseries``' sites, every site's metrics; numbers in its JSON block.
      Its companion folder ``<stem>_files`` beside it holds the figures (PNG) and tables (CSV).

    Returns
    -------
    list of str
        The files written (for .html: the page, then its companion folder).
    """
    ext = check_report_path(path)
    path = os.fspath(path)
    if ext == ".json":
        data = result.to_dict()
        data = {k: ([{f: _json_value(v) for f, v in row.items()} for row in rows] if isinstance(rows, list) else rows)
                for k, rows in data.items()}
        texts = [(path, json.dumps(data, indent=1, allow_nan=False))]
    elif ext == ".csv":
        fields = PER_SITE_FIELDS + ("status",)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\r\n")
        writer.writeheader()
        for row in result.per_site:
            writer.writerow({**{f: _cell(row[f]) for f in PER_SITE_FIELDS}, "status": "ok"})
        for row in result.unmatched:
            writer.writerow({"product": row["product"], "site_id": row["site_id"],
                             "x": _cell(row["x"]), "y": _cell(row["y"]), "status": row["reason"]})
        summary_buffer = io.StringIO()
        summary_fields = list(result.summary[0]) if result.summary else ["product"]
        writer = csv.DictWriter(summary_buffer, fieldnames=summary_fields, lineterminator="\r\n")
        writer.writeheader()
        for row in result.summary:
            writer.writerow({f: _cell(v) for f, v in row.items()})
        texts = [(path, buffer.getvalue()), (summary_csv_path(path), summary_buffer.getvalue())]
        # checked again at write time, as the HTML writer does: e.g. a folder made during the run
        check_outputs([(final, "report") for final, _ in texts])
    else:  # the page of core.reports.validation: sentences, classes, Figures 5-8, every site
        from .reports import validation_html, write_report

        page = validation_html(result.summary, result.per_site, result.unmatched,
                               outlines=getattr(result, "outlines", None),
                               timeseries=getattr(result, "timeseries", None),
                               axis_labels=getattr(result, "axis_labels", None))
        return write_report(path, page)  # the page and its companion folder (PNG/CSV): both or neither
    # the CSV report and its summary are written together: both or neither
    write_together([(final, (lambda tmp, text=text, final=final: write_text_temporary(tmp, text, final)))
                    for final, text in texts])
    return [final for final, _ in texts]
