"""Explanation report (paper Figures 10 and 11): SHAP beeswarm per partition, importance bars,
dependence plot, from plain arrays.

Inputs: the rows of :func:`core.explain.explain` (partition, predictor, mean_abs_shap,
n_samples) and, per partition, the SHAP values and predictor values of the explained samples
(one-hot land-cover columns already summed back into one ``lc`` column):
``{partition: {"names": [...], "shap": (n, p), "values": (n, p)}}``.
"""
import numpy as np

from . import figures
from .html import Page, format_metric, slug, unique_in_order

MAX_BEESWARM_FEATURES = 15


def overall_importance(rows):
    """Predictor -> mean over partitions of mean |SHAP| (partitions where it was explained)."""
    sums, counts = {}, {}
    for row in rows:
        sums[row["predictor"]] = sums.get(row["predictor"], 0.0) + float(row["mean_abs_shap"])
        counts[row["predictor"]] = counts.get(row["predictor"], 0) + 1
    ranking = {name: sums[name] / counts[name] for name in sums}
    return dict(sorted(ranking.items(), key=lambda item: -item[1]))


def default_dependence_pair(rows, dynamic=None, static=None):
    """The most important static and the most important dynamic predictor (paper Figure 11).

    ``dynamic`` / ``static``: names of the dynamic / static predictors (``static`` default: all
    others); without them, or when one kind is missing, the two most important predictors.
    """
    ranking = list(overall_importance(rows))
    if not ranking:
        return None
    if dynamic is not None:
        dynamic = set(dynamic)
        static_names = [n for n in ranking if n not in dynamic and (static is None or n in static)]
        dynamic_names = [n for n in ranking if n in dynamic]
        if static_names and dynamic_names:
            return static_names[0], dynamic_names[0]
    return (ranking[0], ranking[1]) if len(ranking) > 1 else (ranking[0], ranking[0])


def _ranks(values):
    """Values scaled to 0..1 by their 2nd-98th percentile (colour of the beeswarm points)."""
    values = np.asarray(values, dtype="float64")
    ok = np.isfinite(values)
    out = np.full(values.shape, np.nan)
    if ok.any():
        low, high = np.percentile(values[ok], [2, 98])
        if high <= low:
            out[ok] = 0.5
        else:
            out[ok] = np.clip((values[ok] - low) / (high - low), 0, 1)
    return out


def _jitter(shap, rng, width=0.38):
    """Vertical offsets that widen with the local density of SHAP values (a beeswarm)."""
    if shap.size == 0:
        return shap
    counts, edges = np.histogram(shap, bins=60)
    where = np.clip(np.searchsorted(edges, shap, side="right") - 1, 0, len(counts) - 1)
    amplitude = width * np.sqrt(counts[where] / max(counts.max(), 1))
    return rng.uniform(-1, 1, shap.size) * amplitude


@figures.styled
def figure_beeswarm(name, sample, *, seed=0):
    names = list(sample["names"])
    shap = np.asarray(sample["shap"], dtype="float64")
    values = np.asarray(sample["values"], dtype="float64")
    importance = np.abs(shap).mean(axis=0)
    order = np.argsort(-importance, kind="stable")[:MAX_BEESWARM_FEATURES]
    fig = figures.new_figure(6.1, 0.32 * len(order) + 1.3)
    ax = fig.add_subplot()
    rng = np.random.default_rng(seed)
    points = None
    for position, j in enumerate(order[::-1]):
        y = position + _jitter(shap[:, j], rng)
        points = ax.scatter(shap[:, j], y, c=_ranks(values[:, j]), cmap=figures.SEQUENTIAL, vmin=0, vmax=1,
                            s=4, linewidths=0, rasterized=True)
    ax.axvline(0, color="#666", linewidth=0.8)
    ax.set_yticks(range(len(order)), [names[j] for j in order[::-1]])
    ax.set_xlabel("SHAP value: effect on predicted soil moisture (m3/m3)")
    ax.set_title(f"Partition {name}: SHAP summary ({shap.shape[0]:,} samples)")
    ax.grid(axis="y", alpha=0.0)
    if points is not None:
        bar = fig.colorbar(points, ax=ax, ticks=[0, 1], shrink=0.8, pad=0.01)
        bar.ax.set_yticklabels(["low", "high"])
        bar.set_label("predictor value")
    return figures.png_bytes(fig)


@figures.styled
def figure_importance(rows):
    ranking = list(overall_importance(rows))
    partitions = unique_in_order(row["partition"] for row in rows)
    lookup = {(row["partition"], row["predictor"]): float(row["mean_abs_shap"]) for row in rows}
    fig = figures.new_figure(9.0, 0.28 * len(ranking) * max(1, min(len(partitions), 4)) / 2 + 1.6)
    ax = fig.add_subplot()
    height = 0.8 / max(len(partitions), 1)
    y = np.arange(len(ranking))[::-1]
    for k, name in enumerate(partitions):
        values = [lookup.get((name, predictor), np.nan) for predictor in ranking]
        ax.barh(y + (len(partitions) - 1) / 2 * height - k * height, values, height, label=name,
                color=figures.colour(k))
    ax.set_yticks(y, ranking)
    ax.set_xlabel("mean |SHAP| (m3/m3)")
    ax.set_title("Predictor importance per partition (land-cover classes summed into lc)")
    ax.legend(title="partition", loc="lower right")
    return figures.png_bytes(fig)


@figures.styled
def figure_dependence(samples, pair):
    first, second = pair
    partitions = [p for p in samples if first in samples[p]["names"] and second in samples[p]["names"]]
    n = len(partitions)
    ncols = min(n, 3)
    import math

    fig = figures.new_figure(min(12.4, 4.0 * ncols + 0.8), 3.2 * math.ceil(max(n, 1) / max(ncols, 1)))
    axes = figures.axes_grid(fig, max(n, 1), max(ncols, 1))
    if not partitions:
        figures.no_data(axes[0], f"{first} / {second} not in the explained predictors")
        return figures.png_bytes(fig)
    for ax, name in zip(axes, partitions):
        sample = samples[name]
        names = list(sample["names"])
        a, b = names.index(first), names.index(second)
        values = np.asarray(sample["values"], dtype="float64")
        shap = np.asarray(sample["shap"], dtype="float64")
        points = ax.scatter(values[:, a], shap[:, a], c=values[:, b], cmap=figures.SEQUENTIAL, s=5,
                            linewidths=0, rasterized=True)
        fig.colorbar(points, ax=ax, label=second, shrink=0.85)
        ax.axhline(0, color="#666", linewidth=0.8)
        ax.set_xlabel(first)
        ax.set_ylabel(f"SHAP of {first} (m3/m3)")
        ax.set_title(f"Partition {name}: {first}, coloured by {second}")
    return figures.png_bytes(fig)


def explanation_html(rows, samples=None, *, dependence=None, dynamic=None, static=None, with_figures=True,
                     model_path=None):
    """The explanation report page (str).

    Parameters
    ----------
    rows : list of dict
        :func:`core.explain.explain` rows.
    samples : dict, optional
        ``partition -> {"names", "shap", "values"}`` of the explained samples.
    dependence : (str, str), optional
        Predictor pair of the dependence plot; default :func:`default_dependence_pair`.
    dynamic, static : iterable of str, optional
        Names of the dynamic / static predictors (for the default pair).
    """
    rows = [dict(row) for row in rows]
    samples = samples or {}
    partitions = unique_in_order(row["partition"] for row in rows)
    pair = tuple(dependence) if dependence else default_dependence_pair(rows, dynamic, static)
    ranking = overall_importance(rows)
    page = Page("Explanation report: SHAP importance of the predictors", "explanation",
                subtitle=(f"model {model_path} - " if model_path else "")
                + "SHAP of the stack = meta-learner weights x each booster's exact TreeSHAP (paper Section 5.1).")
    top = list(ranking)[:3]
    if top:
        page.paragraph("Most important predictors over the partitions: "
                       + ", ".join(f"{name} (mean |SHAP| {format_metric(ranking[name])} m3/m3)" for name in top)
                       + ".", css="lead")
    if with_figures and samples:
        page.heading("SHAP summary per partition (cf. paper Figure 10a-e)")
        for k, name in enumerate(partitions):
            if name in samples:
                page.figure(figure_beeswarm(name, samples[name], seed=k), figure_id=f"figure-beeswarm-{slug(name)}",
                            alt=f"SHAP beeswarm of partition {name}", half=True,
                            caption=f"Partition {name}: each point one sample; colour: the predictor's value.")
    if with_figures and rows:
        page.heading("Importance over partitions (cf. paper Figure 10f)")
        page.figure(figure_importance(rows), figure_id="figure-importance",
                    alt="Mean absolute SHAP per predictor and partition, land-cover summed into lc")
    if with_figures and samples and pair:
        page.heading(f"Dependence: {pair[0]} coloured by {pair[1]} (cf. paper Figure 11)")
        page.figure(figure_dependence(samples, pair), figure_id="figure-dependence",
                    alt=f"SHAP dependence plot of {pair[0]} coloured by {pair[1]} per partition")
    page.heading("Mean |SHAP| per predictor and partition")
    table_rows = []
    for predictor in ranking:
        row = {"predictor": predictor, "overall": ranking[predictor]}
        for row_in in rows:
            if row_in["predictor"] == predictor:
                row[f"p_{row_in['partition']}"] = row_in["mean_abs_shap"]
        table_rows.append(row)
    columns = [("predictor", "Predictor", "text")] + [(f"p_{p}", p, "metric") for p in partitions] \
        + [("overall", "mean over partitions", "metric")]
    page.table(columns, table_rows, table_id="importance",
               caption="mean |SHAP| in m3/m3 over the explained training samples of each partition.")
    counts = {}
    for row in rows:
        counts[row["partition"]] = row.get("n_samples")
    page.table([("partition", "Partition", "text"), ("n", "Samples explained", "count")],
               [{"partition": p, "n": counts[p]} for p in partitions], table_id="samples")
    data = {"rows": rows, "importance_overall": ranking, "dependence": list(pair) if pair else None,
            "partitions": partitions, "n_samples": counts}
    return page.render(data)
