"""Writing a report page with its companion folder: the one home the four report writers share.

An HTML report ``X.html`` is written together with the folder ``X_files`` beside it (the name
rule is :func:`core.outputs.report_files_folder`), for reuse in papers and scripts:

- ``<figure id>.png``: every figure of the page, the very bytes embedded in its data URIs;
- ``<table id>.csv``: every table of the page, one column per table key (the keys of the rows in
  the page's JSON block), numbers at full precision (Python's shortest round-trip repr, the
  same digits as the JSON block), empty cells where a value is undefined;
- ``.smdownscale-output``: the marker that lets a later run replace the folder
  (:data:`core.outputs.FOLDER_MARKER`).

Page and folder are written as one (:func:`core.outputs.write_together`): both or neither, and
a folder the plugin did not write is never replaced (:func:`core.outputs.check_outputs`, also
checked again here, right before writing). No QGIS, no matplotlib.
"""
import csv
import io
import json
import os
import re

from ..outputs import (check_outputs, describe_os_error, report_files_folder, write_error, write_text_temporary,
                       write_together)
from .html import json_safe


def _file_name(ident, ext, taken):
    """A file name for a figure/table id: safe characters only, unique within the folder."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", str(ident)).strip(".-") or "item"
    name, number = f"{stem}{ext}", 1
    while name.lower() in taken:
        number += 1
        name = f"{stem}-{number}{ext}"
    taken.add(name.lower())
    return name


def csv_cell(value):
    """A table value as CSV text at full precision (None / NaN -> empty)."""
    value = json_safe(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, allow_nan=False)
    return str(value)


def table_csv(columns, rows):
    """CSV text of one table: a header of the column keys, then one line per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([key for key, _header, _kind in columns])
    for row in rows:
        writer.writerow([csv_cell(row.get(key)) for key, _header, _kind in columns])
    return buffer.getvalue()


def companion_files(page):
    """``[(file name, bytes)]`` of a page's companion folder: figures (PNG) then tables (CSV).

    ``page`` is a :class:`.html.ReportPage` (what every ``*_html`` builder returns)."""
    figures, tables = getattr(page, "figures", None), getattr(page, "tables", None)
    if figures is None or tables is None:
        raise TypeError("a report page built by core.reports (a ReportPage) is needed for its companion files")
    taken, files = set(), []
    for ident, png in figures.items():
        files.append((_file_name(ident, ".png", taken), bytes(png)))
    for ident, (columns, rows) in tables.items():
        files.append((_file_name(ident, ".csv", taken), table_csv(columns, rows).encode("utf-8")))
    return files


def write_companion(tmp, page, final):
    """Fill the new empty folder ``tmp`` with the companion files of ``page``; each file is
    flushed to disk and its size read back, errors name the file under its final folder."""
    for name, data in companion_files(page):
        path = os.path.join(tmp, name)
        try:
            with open(path, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            written = os.path.getsize(path)
        except OSError as err:
            raise write_error(os.path.join(os.path.abspath(final), name), describe_os_error(err)) from err
        if written != len(data):
            raise write_error(os.path.join(os.path.abspath(final), name),
                              f"{written} of {len(data)} bytes were written")


def report_outputs(path, page):
    """The :func:`core.outputs.write_together` items of a report page at ``path``: the page and,
    for an HTML report, its companion folder (checked first: a foreign folder is refused).

    ``page`` is the report's text: a :class:`.html.ReportPage` for HTML, any str for .csv/.json
    reports (no companion folder)."""
    path = os.fspath(path)
    items = [(path, lambda tmp: write_text_temporary(tmp, page, path))]
    folder = report_files_folder(path)
    if folder:
        check_outputs([(path, "report")])  # again at write time: e.g. a folder made during the run
        items.append((folder, lambda tmp: write_companion(tmp, page, folder), True))
    return items


def report_staging(path):
    """``[(path, is folder)]`` of what a report at ``path`` writes (the page, its companion
    folder), for :func:`core.outputs.outputs_together` when the page is made inside the block
    (summarize); empty for no report."""
    if not path:
        return []
    folder = report_files_folder(path)
    return [(os.fspath(path), False)] + ([(folder, True)] if folder else [])


def write_report_into(temporaries, path, page):
    """Write ``page`` (and its companion files) into the temporaries of :func:`report_staging`'s
    outputs, ``temporaries`` = the mapping :func:`core.outputs.outputs_together` yields."""
    for final, write, *_ in report_outputs(path, page):
        try:
            write(temporaries[final])
        except OSError as err:
            raise write_error(os.path.abspath(final), describe_os_error(err)) from err


def write_report(path, page, *, together=()):
    """Write a report page at ``path`` (and its companion folder), atomically, together with
    ``together`` (more ``write_together`` items, e.g. the model file): all or nothing.

    Returns
    -------
    list of str
        The paths written (the page first, then its companion folder).
    """
    items = list(together) + report_outputs(path, page)
    write_together(items)
    return [os.fspath(final) for final, *_ in items[len(together):]]

