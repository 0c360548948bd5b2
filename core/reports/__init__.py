"""HTML reports of the plugin's runs (training, validation, explanation, period maps).

Each ``*_html`` function takes plain data (rows, dicts, arrays) and returns one self-contained
page (str): one style, figures as PNG data URIs (matplotlib Agg, imported only here, only when a
report is written), and the page's numbers in one JSON block
``<script type="application/json" id="smdownscale-report">`` (:func:`read_report_data`).
An HTML report is written with its companion folder of PNG figures and CSV tables beside it
(:func:`write_report`, :mod:`.files`; the folder's name: ``core.outputs.report_files_folder``).
No QGIS.
"""
from .files import companion_files, report_outputs, write_report  # noqa: F401
from .html import REPORT_JSON_ID, ReportPage, format_count, format_metric, read_report_data  # noqa: F401


def training_html(report, **kwargs):
    from .training import training_html as build

    return build(report, **kwargs)


def validation_html(summary, per_site, unmatched=(), **kwargs):
    from .validation import validation_html as build

    return build(summary, per_site, unmatched, **kwargs)


def explanation_html(rows, samples=None, **kwargs):
    from .explanation import explanation_html as build

    return build(rows, samples, **kwargs)


def period_html(stats, previews=None, **kwargs):
    from .period import period_html as build

    return build(stats, previews, **kwargs)
