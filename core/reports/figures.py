"""Report figures as PNG bytes, drawn with matplotlib's Agg canvas (no pyplot, no GUI backend).

matplotlib is imported inside :func:`new_figure`, i.e. only when a report is written; the
object-oriented API (``Figure`` + ``FigureCanvasAgg``) never touches pyplot's global backend,
so a QGIS session keeps its own. One style for every report: :data:`PALETTE` (Okabe-Ito,
colour-blind safe) for categories, ``viridis`` / ``cividis`` for continuous values and the
diverging ``PuOr`` for signed ones (bias), soil moisture in m3/m3 on every axis that shows it.
"""
import io
import math

import numpy as np

#: Okabe & Ito (2008) colour-blind-safe palette
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
SEQUENTIAL = "viridis"
SEQUENTIAL_ALT = "cividis"
DIVERGING = "PuOr"
UNITS = "m3/m3"
DPI = 100

_RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
       "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.grid": True, "grid.alpha": 0.3,
       "grid.linewidth": 0.5, "axes.spines.top": False, "axes.spines.right": False,
       "font.family": "DejaVu Sans", "figure.dpi": DPI}


def colour(index):
    return PALETTE[index % len(PALETTE)]


def new_figure(width, height, *, layout="constrained"):
    """A matplotlib Figure of ``width`` x ``height`` inches on an Agg canvas, in the report style.

    ``layout=None`` for many-panel figures with twin axes (constrained layout is slow there);
    place them with ``subplots_adjust``."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(width, height), dpi=DPI, layout=layout)
        FigureCanvasAgg(figure)
    return figure


def axes_grid(figure, n, ncols, **kwargs):
    """``n`` axes in rows of ``ncols``; unused cells removed. Returns a flat list."""
    import matplotlib

    nrows = max(1, math.ceil(n / ncols))
    with matplotlib.rc_context(_RC):
        grid = figure.subplots(nrows, ncols, squeeze=False, **kwargs)
    flat = list(grid.ravel())
    for extra in flat[n:]:
        extra.remove()
    return flat[:n]


def styled(function):
    """Run a drawing function inside the report rc style (tick sizes, grid, fonts)."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(_RC):
            return function(*args, **kwargs)
    return wrapper


def png_bytes(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)  # no figure.clear(): it costs as much as drawing
    return buffer.getvalue()


def finite(values):
    values = np.asarray(values, dtype="float64")
    return values[np.isfinite(values)]


def no_data(ax, text="no data"):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def draw_outlines(ax, outlines, *, colour_="#333333", label=True):
    """Partition outlines: ``[(name, [ring, ...]), ...]``, a ring = list of (x, y)."""
    for name, rings in outlines or ():
        longest = None
        for ring in rings:
            ring = np.asarray(ring, dtype="float64")
            if ring.ndim != 2 or len(ring) < 2:
                continue
            ax.plot(ring[:, 0], ring[:, 1], color=colour_, linewidth=0.8, zorder=1)
            if longest is None or len(ring) > len(longest):
                longest = ring
        if label and longest is not None:
            cx, cy = longest[:, 0].mean(), longest[:, 1].mean()
            ax.text(cx, cy, str(name), fontsize=8, color=colour_, ha="center", va="center", alpha=0.8,
                    zorder=1)


def outline_rings(geometry):
    """Exterior and interior rings of a GeoJSON Polygon / MultiPolygon as lists of (x, y)."""
    kind = geometry.get("type")
    coords = geometry.get("coordinates") or []
    polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else []
    return [ring for polygon in polygons for ring in polygon]
