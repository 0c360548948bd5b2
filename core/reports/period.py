"""Period-map report (paper Figure 9): maps of the temporal mean, standard deviation and count
of valid dates of a soil-moisture series, from (decimated) preview arrays."""
import numpy as np

from . import figures
from .html import Page, format_metric

SM_RANGE = (0.0, 0.5)


@figures.styled
def figure_period_maps(previews, extent, product, period):
    keys = [key for key in ("mean", "std", "count") if previews.get(key) is not None]
    fig = figures.new_figure(12.4, 4.2)
    axes = figures.axes_grid(fig, len(keys), len(keys))
    labels = {"mean": ("mean soil moisture (m3/m3)", figures.SEQUENTIAL, SM_RANGE),
              "std": ("standard deviation (m3/m3)", "magma", None),
              "count": ("valid dates", figures.SEQUENTIAL_ALT, None)}
    for ax, key in zip(axes, keys):
        values = np.asarray(previews[key], dtype="float64")
        label, cmap, limits = labels[key]
        finite = values[np.isfinite(values)]
        if limits is None and finite.size:
            limits = (float(finite.min()), float(max(finite.max(), finite.min() + 1e-6)))
        image = ax.imshow(values, cmap=cmap, extent=extent, vmin=limits[0] if limits else None,
                          vmax=limits[1] if limits else None, interpolation="nearest")
        fig.colorbar(image, ax=ax, label=label, shrink=0.8, orientation="horizontal")
        ax.set_title(f"{product}: " + {"mean": "temporal mean", "std": "standard deviation",
                                        "count": "valid dates"}[key] + f"\n{period}")
        ax.grid(False)
        ax.ticklabel_format(style="plain", useOffset=False)
        ax.tick_params(labelsize=7)
    return figures.png_bytes(fig)


def period_html(stats, previews=None, *, extent=None, with_figures=True):
    """The period-map report page (str).

    Parameters
    ----------
    stats : dict
        ``core.summarize.summarize`` result: input, product, dates, start/end, outputs, spatial
        statistics of each output (``mean_of_mean`` ...).
    previews : dict, optional
        ``{"mean", "std", "count"}`` -> 2-D arrays (decimated reads of the outputs).
    extent : (left, right, bottom, top), optional
    """
    product = stats.get("product", "soil moisture")
    dates = list(stats.get("dates") or [])
    period = f"{dates[0]} to {dates[-1]} ({len(dates)} dates)" if dates else "no date"
    page = Page(f"Period maps: {product}", "period", subtitle=f"input {stats.get('input', '')}")
    page.paragraph(f"{product}, {period}: spatial mean of the temporal mean "
                   f"{format_metric(stats.get('mean_of_mean'))} m3/m3, of the standard deviation "
                   f"{format_metric(stats.get('mean_of_std'))} m3/m3; {stats.get('pixels_valid', 0):,} pixels with "
                   f"at least one valid date of {stats.get('pixels', 0):,}.", css="lead")
    if with_figures and previews:
        page.figure(figure_period_maps(previews, extent, product, period), figure_id="figure-period-maps",
                    alt=f"Maps of the temporal mean, standard deviation and valid-date count of {product}",
                    caption="Temporal mean and population standard deviation (m3/m3) over the valid dates of "
                            "each pixel, and the number of valid dates (cf. paper Figure 9).")
    page.table([("output", "Output", "text"), ("min", "min", "metric"), ("mean", "mean", "metric"),
                ("max", "max", "metric")],
               [{"output": key, "min": stats.get(f"min_of_{key}"), "mean": stats.get(f"mean_of_{key}"),
                 "max": stats.get(f"max_of_{key}")} for key in ("mean", "std", "count")],
               table_id="period-stats", caption="Spatial statistics of each output over its valid pixels.")
    return page.render({"stats": stats})
