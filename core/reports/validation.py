"""Validation report (paper Figures 5-8): an HTML page from a validation result's plain data.

Inputs are the rows of :class:`core.validate.ValidationResult` (``summary``, ``per_site``,
``unmatched``; rows may carry a ``partition`` key when partitions were given), and optionally
partition outlines in the stations' coordinates and per-site time series.
"""
import math

import numpy as np

from . import figures
from .html import Page, format_metric, unique_in_order

#: the paper's classes (Section 4.2)
R_CLASS_COLUMNS = (("r_high", "R > 0.6"), ("r_moderate", "R 0.4-0.6"), ("r_low", "R < 0.4"),
                   ("r_undefined", "R undefined"))
UBRMSE_CLASS_COLUMNS = (("ubrmse_meets", "ubRMSE < 0.04"), ("ubrmse_acceptable", "ubRMSE 0.04-0.06"),
                        ("ubrmse_poor", "ubRMSE > 0.06"), ("ubrmse_undefined", "ubRMSE undefined"))
METRIC_LABELS = {"r": "R", "bias": "bias (m3/m3)", "rmse": "RMSE (m3/m3)", "ubrmse": "ubRMSE (m3/m3)"}
DEFAULT_TIMESERIES_SITES = 12
ALL = "all sites"


def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def overall_rows(summary):
    """Summary rows over all sites (no partition, or partition None/'all')."""
    return [row for row in summary if row.get("partition") in (None, "", ALL)]


def comparison_sentences(summary, main=None):
    """One plain sentence per other product: how ``main`` (default the first) compares with it."""
    rows = overall_rows(summary)
    if not rows:
        return []
    main_row = next((row for row in rows if row["product"] == main), rows[0])
    sentences = []
    for other in rows:
        if other is main_row:
            continue
        a, b = main_row.get("mean_ubrmse"), other.get("mean_ubrmse")
        text = f"{main_row['product']}: mean ubRMSE {format_metric(a)} vs {format_metric(b)} for {other['product']}"
        if _finite(a) and _finite(b) and b != 0:
            change = 100.0 * (a - b) / b
            verdict = "lower, better" if change < -0.5 else "higher, worse" if change > 0.5 else "about equal"
            shown = f"{change:+.1f}" if abs(change) < 10 else f"{change:+.0f}"
            text += f" ({'0' if shown in ('+0.0', '-0.0') else shown}%, {verdict})"
        ra, rb = main_row.get("mean_r"), other.get("mean_r")
        text += f"; mean R {format_metric(ra)} vs {format_metric(rb)}"
        if _finite(ra) and _finite(rb):
            text += " (higher, better)" if ra > rb + 5e-4 else " (lower, worse)" if ra < rb - 5e-4 else " (about equal)"
        text += f"; {main_row.get('n_sites', 0)} vs {other.get('n_sites', 0)} sites."
        sentences.append(text)
    return sentences


def select_sites(per_site, product, n=DEFAULT_TIMESERIES_SITES):
    """Up to ``n`` site ids of ``product`` spread over the partitions (round robin), most pairs first."""
    rows = [row for row in per_site if row["product"] == product]
    groups = {}
    for row in sorted(rows, key=lambda row: (-int(row.get("n") or 0), str(row["site_id"]))):
        groups.setdefault(row.get("partition") or ALL, []).append(row["site_id"])
    chosen = []
    order = sorted(groups)
    while len(chosen) < n and any(groups.values()):
        for name in order:
            if groups[name] and len(chosen) < n:
                chosen.append(groups[name].pop(0))
    return chosen


@figures.styled
def figure_boxplots(per_site, products):
    fig = figures.new_figure(12.4, 3.3)
    axes = figures.axes_grid(fig, 4, 4)
    for ax, key in zip(axes, ("r", "bias", "rmse", "ubrmse")):
        data = [figures.finite([row[key] for row in per_site if row["product"] == p]) for p in products]
        shown = [d if d.size else np.array([np.nan]) for d in data]
        parts = ax.boxplot(shown, patch_artist=True, widths=0.6, medianprops={"color": "#000"},
                           flierprops={"markersize": 3})
        for k, box in enumerate(parts["boxes"]):
            box.set_facecolor(figures.colour(k))
            box.set_alpha(0.75)
        ax.set_xticks(range(1, len(products) + 1), [_short(p) for p in products], rotation=20, ha="right")
        ax.set_ylabel(METRIC_LABELS[key])
        ax.set_title(f"{METRIC_LABELS[key].split(' (')[0]} across sites")
        if key == "ubrmse":
            ax.axhline(0.04, color="#666", linestyle="--", linewidth=0.8)
        if key == "bias":
            ax.axhline(0.0, color="#666", linewidth=0.8)
    return figures.png_bytes(fig)


def _short(name, width=18):
    name = str(name)
    return name if len(name) <= width else name[: width - 1] + "~"


@figures.styled
def figure_site_map(per_site, product, outlines=None, axis_labels=None):
    rows = [row for row in per_site if row["product"] == product]
    fig = figures.new_figure(12.4, 5.0)
    axes = figures.axes_grid(fig, 2, 2)
    xs = np.array([row["x"] for row in rows], dtype="float64")
    ys = np.array([row["y"] for row in rows], dtype="float64")
    for ax, key, cmap, label in ((axes[0], "r", figures.SEQUENTIAL, "R"),
                                 (axes[1], "ubrmse", figures.SEQUENTIAL_ALT + "_r", "ubRMSE (m3/m3)")):
        figures.draw_outlines(ax, outlines)
        values = np.array([row[key] if _finite(row[key]) else np.nan for row in rows], dtype="float64")
        ok = np.isfinite(values)
        if (~ok).any():
            ax.scatter(xs[~ok], ys[~ok], s=18, facecolors="none", edgecolors="#888", label="undefined")
        if ok.any():
            points = ax.scatter(xs[ok], ys[ok], c=values[ok], cmap=cmap, s=30, edgecolors="#222",
                                linewidths=0.4, zorder=2)
            fig.colorbar(points, ax=ax, label=label, shrink=0.85)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel((axis_labels or ("x", "y"))[0])
        ax.set_ylabel((axis_labels or ("x", "y"))[1])
        ax.set_title(f"{label.split(' (')[0]} per site, {product}")
    return figures.png_bytes(fig)


@figures.styled
def figure_r_vs_ubrmse(per_site, product):
    rows = [row for row in per_site if row["product"] == product]
    partitions = unique_in_order(row.get("partition") or ALL for row in rows)
    n = len(partitions)
    ncols = min(n, 3)
    fig = figures.new_figure(min(12.4, 4.0 * ncols + 0.8), 3.3 * math.ceil(n / ncols))
    axes = figures.axes_grid(fig, n, ncols)
    bias = figures.finite([row["bias"] for row in rows])
    limit = float(np.max(np.abs(bias))) if bias.size else 0.01
    from matplotlib.colors import Normalize

    norm = Normalize(-max(limit, 1e-4), max(limit, 1e-4))
    points = None
    for ax, name in zip(axes, partitions):
        members = [row for row in rows if (row.get("partition") or ALL) == name]
        r = np.array([row["r"] if _finite(row["r"]) else np.nan for row in members])
        u = np.array([row["ubrmse"] if _finite(row["ubrmse"]) else np.nan for row in members])
        b = np.array([row["bias"] if _finite(row["bias"]) else 0.0 for row in members])
        ok = np.isfinite(r) & np.isfinite(u)
        if not ok.any():
            figures.no_data(ax, "no site with R")
        else:
            points = ax.scatter(r[ok], u[ok], c=b[ok], cmap=figures.DIVERGING, norm=norm, s=30,
                                edgecolors="#222", linewidths=0.4)
        ax.axvline(0.6, color="#888", linestyle=":", linewidth=0.8)
        ax.axhline(0.04, color="#888", linestyle=":", linewidth=0.8)
        ax.set_xlabel("R")
        ax.set_ylabel("ubRMSE (m3/m3)")
        ax.set_title(f"{product}, partition {name} ({int(ok.sum())} sites)" if name != ALL
                     else f"{product}, all sites ({int(ok.sum())})")
    if points is not None:
        fig.colorbar(points, ax=axes, label="bias (m3/m3)", shrink=0.85)
    return figures.png_bytes(fig)


@figures.styled
def figure_timeseries(series, sites, products):
    n = len(sites)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    height = 2.6 * nrows + 0.6
    fig = figures.new_figure(12.4, height, layout=None)
    axes = figures.axes_grid(fig, n, ncols)
    fig.subplots_adjust(left=0.06, right=0.95, top=1 - 0.75 / height, bottom=0.3 / height, wspace=0.5,
                        hspace=0.45 * 2.6 / 2.2)
    import datetime as dt

    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    handles = {}
    for ax, site in zip(axes, sites):
        item = series[site]
        dates = [dt.date.fromisoformat(d) for d in item["dates"]]
        rain = item.get("precipitation")
        if rain is not None and len(rain) == len(dates):
            twin = ax.twinx()
            bars = twin.bar(dates, np.nan_to_num(np.asarray(rain, dtype="float64")), width=0.9,
                            color="#56B4E9", alpha=0.45, label="precipitation")
            twin.set_ylabel("precipitation")
            twin.grid(False)
            ax.set_zorder(twin.get_zorder() + 1)  # lines above the bars
            ax.patch.set_visible(False)
            handles.setdefault("precipitation", bars)
        obs = np.asarray(item["observed"], dtype="float64")
        handles.setdefault("measured", ax.plot(dates, obs, "o", color="#000", markersize=3.5, label="measured")[0])
        for k, product in enumerate(products):
            values = item["products"].get(product)
            if values is None:
                continue
            line, = ax.plot(dates, np.asarray(values, dtype="float64"), "-", color=figures.colour(k),
                            linewidth=1.2, marker=".", markersize=3, label=product)
            handles.setdefault(product, line)
        where = f", partition {item['partition']}" if item.get("partition") else ""
        ax.set_title(f"site {site}{where}")
        ax.set_ylabel("soil moisture (m3/m3)")
        locator = AutoDateLocator(minticks=3, maxticks=5)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="upper center", bbox_to_anchor=(0.5, 1.0),
                   ncols=min(len(handles), 6), frameon=False)
    return figures.png_bytes(fig)


SUMMARY_COLUMNS = (("product", "Product", "text"), ("partition", "Partition", "text"),
                   ("n_sites", "Sites", "count"), ("n_pairs", "Pairs", "count"),
                   ("mean_r", "mean R", "metric"), ("median_r", "median R", "metric"),
                   ("mean_rmse", "mean RMSE", "metric"), ("mean_bias", "mean bias", "metric"),
                   ("mean_ubrmse", "mean ubRMSE", "metric"), ("median_ubrmse", "median ubRMSE", "metric"))
CLASS_COLUMNS = ((("product", "Product", "text"), ("partition", "Partition", "text"))
                 + tuple((key, label, "count") for key, label in R_CLASS_COLUMNS + UBRMSE_CLASS_COLUMNS))
UNMATCHED_COUNT_COLUMNS = (("product", "Product", "text"), ("n_unmatched", "Not compared", "count"),
                           ("n_outside", "outside the raster", "count"),
                           ("n_no_shared_dates", "no shared date", "count"),
                           ("n_only_nodata", "only nodata", "count"))
SITE_COLUMNS = (("product", "Product", "text"), ("site_id", "Site", "text"), ("partition", "Partition", "text"),
                ("x", "x", "metric"), ("y", "y", "metric"), ("n", "n", "count"), ("r", "R", "metric"),
                ("rmse", "RMSE", "metric"), ("bias", "bias", "metric"), ("ubrmse", "ubRMSE", "metric"))


def _coordinate_columns(columns):
    return tuple((key, label, "coordinate" if key in ("x", "y") else kind) for key, label, kind in columns)


def validation_html(summary, per_site, unmatched=(), *, outlines=None, timeseries=None, timeseries_sites=None,
                    main_product=None, axis_labels=None, with_figures=True):
    """The validation report page (str).

    Parameters
    ----------
    summary, per_site, unmatched : list of dict
        ``ValidationResult.summary`` / ``.per_site`` / ``.unmatched``.
    outlines : list of (name, [ring, ...]), optional
        Partition outlines in the stations' coordinates (for the site map).
    timeseries : dict, optional
        ``site_id -> {"dates", "observed", "products": {name: values}, "precipitation", "partition"}``.
    timeseries_sites : list, optional
        Sites to plot (default :func:`select_sites`, up to 12).
    """
    summary = [dict(row) for row in summary]
    per_site = [dict(row) for row in per_site]
    products = unique_in_order(row["product"] for row in summary) or unique_in_order(row["product"] for row in per_site)
    main = main_product or (products[0] if products else None)
    page = Page("Validation report: soil moisture against in-situ stations", "validation",
                subtitle="R: Pearson correlation; RMSE, bias (product - station) and ubRMSE in m3/m3 "
                         "(paper Eq. 5-8).")
    sentences = comparison_sentences(summary, main)
    for sentence in sentences:
        page.paragraph(sentence, css="lead")
    if not sentences and summary:
        row = overall_rows(summary)[0] if overall_rows(summary) else summary[0]
        page.paragraph(f"{row['product']}: mean ubRMSE {format_metric(row.get('mean_ubrmse'))}, mean R "
                       f"{format_metric(row.get('mean_r'))} at {row.get('n_sites', 0)} sites.", css="lead")

    page.heading("Summary per product")
    has_partitions = any(row.get("partition") not in (None, "", ALL) for row in summary + per_site)
    display = [dict(row, partition=row.get("partition") or ALL) for row in summary]
    columns = SUMMARY_COLUMNS if has_partitions else tuple(c for c in SUMMARY_COLUMNS if c[0] != "partition")
    page.table(columns, display, table_id="summary",
               caption="Means and medians over the sites with a defined value; metrics in m3/m3 except R.")
    page.heading("Sites in the paper's classes", level=3)
    columns = CLASS_COLUMNS if has_partitions else tuple(c for c in CLASS_COLUMNS if c[0] != "partition")
    page.table(columns, display, table_id="classes",
               caption="R: high > 0.6, moderate 0.4-0.6, low < 0.4; ubRMSE: meets SMAP's 0.04 target, "
                       "acceptable 0.04-0.06, poor > 0.06. R needs at least 3 shared dates.")
    if any(row.get("n_unmatched") for row in summary):
        page.table(UNMATCHED_COUNT_COLUMNS, overall_rows(summary), table_id="not-compared-counts")

    sites_shown = []
    if with_figures and per_site:
        page.heading("Metrics across sites (cf. paper Figure 7)")
        page.figure(figure_boxplots(per_site, products), figure_id="figure-boxplots",
                    alt="Boxplots of R, bias, RMSE and ubRMSE across sites for every product",
                    caption="Boxes: quartiles over sites; whiskers 1.5 IQR; dashed: ubRMSE 0.04 m3/m3.")
        page.heading(f"Sites coloured by R and ubRMSE, {main} (cf. paper Figure 5)")
        page.figure(figure_site_map(per_site, main, outlines, axis_labels), figure_id="figure-site-map",
                    alt=f"Map of the sites coloured by R and by ubRMSE for {main}"
                        + (" with partition outlines" if outlines else ""),
                    caption="Coordinates in the station layer's CRS" + ("; lines: partition outlines." if outlines else "."))
        page.heading("R against ubRMSE per site, coloured by bias (cf. paper Figure 6)")
        page.figure(figure_r_vs_ubrmse(per_site, main), figure_id="figure-r-ubrmse",
                    alt=f"R against ubRMSE per site coloured by bias, one panel per partition, {main}",
                    caption="Dotted: R = 0.6 and ubRMSE = 0.04 m3/m3.")
        if timeseries:
            sites_shown = [s for s in (timeseries_sites or select_sites(per_site, main)) if s in timeseries]
        if sites_shown:
            page.heading("Time series at selected sites (cf. paper Figure 8)")
            page.figure(figure_timeseries(timeseries, sites_shown, products), figure_id="figure-timeseries",
                        alt="Time series of measured soil moisture and every product at selected sites",
                        caption="Measured (dots) and each product at the site's pixel, m3/m3"
                                + ("; bars: precipitation." if any(timeseries[s].get("precipitation") is not None
                                                                   for s in sites_shown) else "."))

    page.heading("Every site")
    site_columns = SITE_COLUMNS if has_partitions else tuple(c for c in SITE_COLUMNS if c[0] != "partition")
    page.table(_coordinate_columns(site_columns), per_site, table_id="per-site", scroll=True)
    if unmatched:
        page.heading("Sites not compared", level=3)
        page.table((("product", "Product", "text"), ("site_id", "Site", "text"), ("reason", "Reason", "text")),
                   list(unmatched), table_id="unmatched", scroll=True)
    data = {"summary": summary, "per_site": per_site, "unmatched": list(unmatched), "sentences": sentences,
            "products": products, "main_product": main, "timeseries_sites": sites_shown,
            "outlines": [name for name, _ in outlines or ()]}
    return page.render(data)
