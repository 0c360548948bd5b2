"""Training report (paper Table 3 and Figure 4): an HTML page from a training report's plain data.

Input is the dict of :class:`core.train.TrainingReport` (or any mapping with the same keys):
``rows`` (Table-3 rows: partition, model, n_train, n_test, r_train, rmse_train, r_test,
rmse_test), ``partitions`` (per-partition summaries with ``base_models``, ``weights``,
``intercept``, ``status``), ``settings`` (folds, cv_strategy, seed, test_fraction, ...),
``dates``, ``predictors``, ``n_samples``, ``warnings``, optionally ``library_versions`` and
``test_samples`` = ``{partition: {"observed": [...], "predicted": [...]}}`` (the stack's test
predictions, for the density scatter).
"""
import math

import numpy as np

from . import figures
from .html import Page, format_metric, unique_in_order

TABLE3_COLUMNS = (("partition", "Partition", "text"), ("model", "Model", "text"),
                  ("n_train", "Train samples", "count"), ("n_test", "Test samples", "count"),
                  ("r_train", "R (train)", "metric"), ("rmse_train", "RMSE train (m3/m3)", "metric"),
                  ("r_test", "R (test)", "metric"), ("rmse_test", "RMSE test (m3/m3)", "metric"))
STACK_LABEL = "Stacking"
CV_NAMES = {"random": "random samples", "spatial": "spatial blocks of coarse cells",
            "dates": "whole dates left out"}


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def best_cells(rows):
    """(row index, key) of the best test R (highest) and RMSE (lowest) within each partition."""
    cells = []
    partitions = []
    for row in rows:
        if row.get("partition") not in partitions:
            partitions.append(row.get("partition"))
    for name in partitions:
        members = [(i, row) for i, row in enumerate(rows) if row.get("partition") == name]
        scored = [(i, row) for i, row in members if _number(row.get("r_test"))]
        if scored:
            cells.append((max(scored, key=lambda item: item[1]["r_test"])[0], "r_test"))
        scored = [(i, row) for i, row in members if _number(row.get("rmse_test"))]
        if scored:
            cells.append((min(scored, key=lambda item: item[1]["rmse_test"])[0], "rmse_test"))
    return cells


@figures.styled
def figure_test_scores(rows):
    """Figure 4: grouped bars of test R and RMSE per model and partition."""
    partitions = unique_in_order(row["partition"] for row in rows)
    models = unique_in_order(row["model"] for row in rows)
    fig = figures.new_figure(min(12.4, 3.0 + 1.1 * len(partitions) * 2), 3.6)
    axes = figures.axes_grid(fig, 2, 2)
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(partitions))
    for ax, key, label in ((axes[0], "r_test", "R (test)"), (axes[1], "rmse_test", "RMSE test (m3/m3)")):
        low = []
        for k, model in enumerate(models):
            values = []
            for name in partitions:
                match = [row for row in rows if row["partition"] == name and row["model"] == model]
                value = match[0].get(key) if match else None
                values.append(value if _number(value) else np.nan)
            low += [v for v in values if np.isfinite(v)]
            ax.bar(x + (k - (len(models) - 1) / 2) * width, values, width, label=model,
                   color=figures.colour(k))
        ax.set_xticks(x, partitions)
        ax.set_xlabel("partition")
        ax.set_ylabel(label)
        if key == "r_test" and low:
            bottom = min(low)
            ax.set_ylim(max(0.0, bottom - 0.1 * (1 - bottom) - 0.02), 1.0)
        ax.set_title(f"{label} per model and partition")
    axes[0].legend(loc="lower left", ncols=min(len(models), 4))
    return figures.png_bytes(fig)


@figures.styled
def figure_density(test_samples, partitions):
    """Observed vs predicted (stack) density of the test samples, one panel per partition."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    n = len(partitions)
    ncols = min(n, 3)
    fig = figures.new_figure(min(12.4, 3.8 * ncols + 0.6), 3.4 * math.ceil(n / ncols))
    axes = figures.axes_grid(fig, n, ncols)
    values = [np.asarray(test_samples[p]["observed"], dtype="float64") for p in partitions]
    values += [np.asarray(test_samples[p]["predicted"], dtype="float64") for p in partitions]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    if finite.size:
        low, high = np.percentile(finite, [0.1, 99.9])
        pad = 0.03 * max(high - low, 1e-3)
        low, high = low - pad, high + pad
    else:
        low, high = 0.0, 0.5
    for ax, name in zip(axes, partitions):
        obs = np.asarray(test_samples[name]["observed"], dtype="float64")
        pred = np.asarray(test_samples[name]["predicted"], dtype="float64")
        ok = np.isfinite(obs) & np.isfinite(pred)
        obs, pred = obs[ok], pred[ok]
        if obs.size == 0:
            figures.no_data(ax, "no test samples")
            ax.set_title(f"Partition {name}: test samples")
            continue
        bins = int(np.clip(np.sqrt(obs.size), 20, 80))
        counts, xe, ye = np.histogram2d(obs, pred, bins=bins, range=[[low, high], [low, high]])
        counts = np.where(counts > 0, counts, np.nan)
        ax.grid(False)
        mesh = ax.pcolormesh(xe, ye, counts.T, cmap=figures.SEQUENTIAL, norm=_log_norm(counts))
        bar = fig.colorbar(mesh, ax=ax, label="test samples per bin", shrink=0.85)
        bar.ax.yaxis.set_major_formatter(ScalarFormatter())
        bar.ax.yaxis.set_minor_formatter(NullFormatter())
        ax.plot([low, high], [low, high], color="#444", linewidth=0.8, linestyle="--")
        r = np.corrcoef(obs, pred)[0, 1] if obs.size > 2 and obs.std() > 0 and pred.std() > 0 else np.nan
        rmse = float(np.sqrt(np.mean((pred - obs) ** 2)))
        ax.text(0.03, 0.97, f"n = {obs.size:,}\nR = {format_metric(r)}\nRMSE = {format_metric(rmse)} m3/m3",
                transform=ax.transAxes, va="top", fontsize=8)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_aspect("equal")
        ax.set_xlabel("observed (coarse) soil moisture (m3/m3)")
        ax.set_ylabel("predicted, stacking (m3/m3)")
        ax.set_title(f"Partition {name}: test samples, stacking")
    return figures.png_bytes(fig)


def _log_norm(counts):
    from matplotlib.colors import LogNorm

    top = np.nanmax(counts) if np.isfinite(counts).any() else 1.0
    return LogNorm(vmin=1, vmax=max(top, 2))


def training_html(report, *, library_versions=None, with_figures=True):
    """The training report page (str) for a TrainingReport-like mapping."""
    rows = [dict(row) for row in report.get("rows", [])]
    settings = dict(report.get("settings") or {})
    versions = dict(report.get("library_versions") or library_versions or {})
    summaries = [dict(p) for p in report.get("partitions", [])]
    test_samples = report.get("test_samples") or {}
    partitions = unique_in_order(row["partition"] for row in rows)
    dates = list(report.get("dates") or [])
    page = Page("Training report: Stacking models per partition", "training",
                subtitle=f"model {report.get('model_path', '')} - dataset {report.get('dataset', '')}")
    span = f"{dates[0]} to {dates[-1]} ({len(dates)} dates)" if dates else "no dates recorded"
    stack_rows = [row for row in rows if row.get("model") == STACK_LABEL]
    lead = []
    for row in stack_rows:
        lead.append(f"{row['partition']}: R {format_metric(row.get('r_test'))}, RMSE "
                    f"{format_metric(row.get('rmse_test'))} m3/m3")
    page.paragraph(f"{report.get('n_samples', 0):,} coarse samples (cells x dates), {span}. Stacking on the "
                   "test samples - " + ("; ".join(lead) if lead else "no stacking rows") + ".", css="lead")
    for warning in report.get("warnings", []):
        page.paragraph(f"Warning: {warning}", css="warn")

    page.heading("Samples and accuracy per model and partition (cf. paper Table 3)")
    page.table(TABLE3_COLUMNS, rows, bold=best_cells(rows), table_id="table3",
               caption="R and RMSE against the coarse soil moisture; best test score per partition in bold. "
                       "WP = the global model trained without partitions.")
    if with_figures and rows:
        page.figure(figure_test_scores(rows), figure_id="figure-test-scores",
                    alt="Grouped bars of test R and test RMSE per model and partition (cf. paper Figure 4)",
                    caption="Test R and RMSE per model and partition (cf. paper Figure 4).")

    page.heading("Observed vs predicted on the test samples")
    shown = [p for p in partitions if p in test_samples]
    if with_figures and shown:
        page.figure(figure_density(test_samples, shown), figure_id="figure-test-density",
                    alt="Density scatter of observed vs predicted soil moisture of the test samples per partition",
                    caption="Stacking predictions of the held-out test samples against the coarse soil moisture "
                            "(m3/m3), log-scaled sample density; dashed line 1:1.")
    elif not shown:
        page.paragraph("The test samples were not kept in this report (a report written before this "
                       "version); the density scatter needs a new training run.")

    page.heading("Meta-learner weights")
    weight_rows, models = [], []
    for summary in summaries:
        for model in summary.get("base_models") or []:
            if model not in models:
                models.append(model)
    for summary in summaries:
        row = {"partition": summary.get("partition"), "status": summary.get("status", ""),
               "n_samples": summary.get("n_samples"), "intercept": summary.get("intercept")}
        for model, weight in zip(summary.get("base_models") or [], summary.get("weights") or []):
            row[f"w_{model}"] = weight
        weight_rows.append(row)
    columns = [("partition", "Partition", "text"), ("status", "Status", "text"),
               ("n_samples", "Samples", "count")]
    columns += [(f"w_{m}", f"weight {m}", "metric") for m in models]
    columns += [("intercept", "intercept (m3/m3)", "metric")]
    page.table(columns, weight_rows, table_id="meta-weights",
               caption="Non-negative linear meta-learner: prediction = intercept + sum of weight x base prediction.")

    page.heading("Settings")
    items = [f"cross-validation: {settings.get('folds', '?')} folds by {CV_NAMES.get(settings.get('cv_strategy'), settings.get('cv_strategy', '?'))}"
             + (f" ({settings.get('spatial_block_cells')} x {settings.get('spatial_block_cells')} cells)"
                if settings.get("cv_strategy") == "spatial" else ""),
             f"test fraction: {settings.get('test_fraction', '?')}; seed: {settings.get('seed', '?')}",
             f"base models: {', '.join(settings.get('base_models') or [])}",
             f"predictors: {', '.join(report.get('predictors') or [])}"]
    if settings.get("params"):
        items.append("hyper-parameters: " + "; ".join(
            f"{model}: " + ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
            for model, params in sorted(settings["params"].items()) if isinstance(params, dict)))
    if versions:
        items.append("libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    if report.get("train_seconds") is not None:
        items.append(f"training time: {report.get('train_seconds')} s")
    page.bullets(items)

    data = {"rows": rows, "partitions": summaries, "settings": settings, "library_versions": versions,
            "n_samples": report.get("n_samples"), "dates": dates, "predictors": report.get("predictors"),
            "warnings": report.get("warnings", []),
            "test_samples": {name: {"n": int(np.isfinite(np.asarray(test_samples[name]["observed"], dtype="float64")).sum())}
                             for name in shown},
            "best": [[i, key] for i, key in best_cells(rows)]}
    return page.render(data)
