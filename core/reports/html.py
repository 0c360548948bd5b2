"""Self-contained HTML report pages: one style, embedded PNG figures, one JSON data block.

A page is built from plain data with :class:`Page` and rendered to one string:

- figures are embedded as ``data:image/png;base64`` URIs (no network, no side files needed);
- every number the page shows is also in one machine-readable block,
  ``<script type="application/json" id="smdownscale-report">...</script>`` (strict JSON, NaN as
  null), which :func:`read_report_data` reads back;
- tables are sized for a 1,280 px wide window (wide tables are split by the callers, long ones
  scroll inside their box); metrics are shown with 4 significant digits, counts as integers;
- :meth:`Page.render` returns a :class:`ReportPage`: the page's text (a str) that also carries
  its figures' PNG bytes and its tables' rows at full precision, which the report writers put in
  the companion folder beside the page (:mod:`.files`).

No QGIS and no matplotlib here (figures come as PNG bytes from :mod:`.figures`).
"""
import base64
import html
import json
import math
import re

#: id of the JSON block every report carries
REPORT_JSON_ID = "smdownscale-report"
REPORT_FORMAT = "smdownscale-report"
REPORT_VERSION = 1

STYLE = """
body{font-family:"DejaVu Sans",Arial,Helvetica,sans-serif;font-size:14px;color:#222;margin:0;background:#fff}
main{max-width:1240px;margin:0 auto;padding:12px 20px 40px 20px;box-sizing:border-box}
h1{font-size:22px;margin:10px 0 4px 0}h2{font-size:18px;margin:26px 0 6px 0;border-bottom:1px solid #ccc}
h3{font-size:15px;margin:16px 0 4px 0}p{margin:6px 0;line-height:1.4}
.meta{color:#555;font-size:12px}.lead{font-size:15px}
.box{max-width:100%;overflow-x:auto}.scroll{max-height:480px;overflow-y:auto}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px 0}
th,td{border:1px solid #bbb;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#eef2f6;position:sticky;top:0}td.t,th.t{text-align:left}
tr:nth-child(even) td{background:#fafafa}caption{text-align:left;font-size:12px;color:#555;caption-side:bottom;padding-top:3px}
figure{margin:10px 0 16px 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:12px;color:#444;margin-top:3px}ul{margin:4px 0 8px 0}
.warn{color:#8a4b00}figure.half{display:inline-block;width:49%;vertical-align:top;margin-right:0.5%}
"""


def _finite_number(value):
    """``(number, None)`` for a finite number, else ``(None, text to show)``: 'n/a' for None,
    NaN and infinities, the value itself as text for anything that is not a number."""
    if value is None:
        return None, "n/a"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None, str(value)
    if not math.isfinite(number):
        return None, "n/a"
    return number, None


def format_metric(value):
    """A metric as text with 4 significant digits (0.0105, 0.9704, 0.0008440), 'n/a' when undefined."""
    if isinstance(value, bool):
        return str(value)
    number, text = _finite_number(value)
    if number is None:
        return text
    if number == 0:
        return "0"
    if 1e-4 <= abs(number) < 1e6:
        digits = 3 - int(math.floor(math.log10(abs(number))))
        text = f"{number:.{max(digits, 0)}f}"
        # rounding may have gained a digit (0.099996 -> 0.10000): recompute from the rounded value
        rounded = float(text)
        if rounded != 0 and int(math.floor(math.log10(abs(rounded)))) != int(math.floor(math.log10(abs(number)))):
            digits = 3 - int(math.floor(math.log10(abs(rounded))))
            text = f"{rounded:.{max(digits, 0)}f}"
        return text
    return f"{number:.3e}"


def format_count(value):
    """A count as an integer with thousands separators ('n/a' when undefined)."""
    number, text = _finite_number(value)
    return text if number is None else f"{int(round(number)):,}"


def format_percent(value):
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return f"{float(value):+.0f}%"


def json_safe(value):
    """NaN/inf -> None, tuples -> lists, numpy scalars/arrays -> Python, recursively."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def unique_in_order(values):
    """The distinct values in first-seen order (partition, product and model names)."""
    return list(dict.fromkeys(values))


def slug(text):
    """``"HB"`` -> ``"hb"``, ``"soil_moisture 9km"`` -> ``"soil-moisture-9km"`` (figure ids)."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def format_coordinate(value):
    """A station coordinate as shown in the tables (6 significant digits)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "" if value is None else str(value)
    return f"{number:.6g}" if math.isfinite(number) else "n/a"


class ReportPage(str):
    """The HTML text of a report page, with what its companion folder holds (:mod:`.files`).

    Attributes
    ----------
    figures : dict
        figure id -> PNG bytes (the bytes embedded in the page), in page order.
    tables : dict
        table id -> (columns, rows): the ``(key, header, kind)`` columns and the rows (dicts) as
        given to :meth:`Page.table`, unformatted.
    """

    def __new__(cls, text, figures=None, tables=None):
        page = super().__new__(cls, text)
        page.figures = dict(figures or {})
        page.tables = dict(tables or {})
        return page


class Page:
    """An HTML report under construction.

    Parameters
    ----------
    title : str
        Page title and first heading.
    kind : str
        ``training``, ``validation``, ``explanation`` or ``period``; recorded in the JSON block.
    """

    def __init__(self, title, kind, *, subtitle=None):
        self.title = title
        self.kind = kind
        self.parts = []
        self.figures = []  # ids, in page order
        self.pngs = {}  # id -> PNG bytes
        self.tables = {}  # id -> (columns, rows)
        self.data = {"format": REPORT_FORMAT, "version": REPORT_VERSION, "kind": kind, "title": title}
        if subtitle:
            self.parts.append(f"<p class='meta'>{html.escape(subtitle)}</p>")

    # -- text
    def heading(self, text, level=2, *, anchor=None):
        ident = f" id='{html.escape(anchor)}'" if anchor else ""
        self.parts.append(f"<h{level}{ident}>{html.escape(text)}</h{level}>")

    def paragraph(self, text, *, css=None):
        klass = f" class='{css}'" if css else ""
        self.parts.append(f"<p{klass}>{html.escape(text)}</p>")

    def bullets(self, items):
        self.parts.append("<ul>" + "".join(f"<li>{html.escape(str(i))}</li>" for i in items) + "</ul>")

    def raw(self, markup):
        self.parts.append(markup)

    # -- tables
    def table(self, columns, rows, *, caption=None, bold=(), table_id=None, scroll=False):
        """Add a table.

        Parameters
        ----------
        columns : list of (key, header, kind)
            ``kind``: ``metric`` (4 significant digits), ``count`` (integer), ``text``,
            ``percent``, ``coordinate`` (6 significant digits).
        rows : list of dict
            Unformatted values: the page shows them formatted, the companion CSV at full
            precision.
        bold : iterable of (row index, key)
            Cells shown in bold (e.g. the best test score per partition).
        table_id : str, optional
            The table's id (and its CSV's name); default ``table-<n>``.
        """
        table_id = table_id or f"table-{len(self.tables) + 1}"
        if table_id in self.tables:
            raise ValueError(f"table id {table_id!r} used twice")
        self.tables[table_id] = (tuple(tuple(column) for column in columns), [dict(row) for row in rows])
        bold = set(bold)
        formatters = {"metric": format_metric, "count": format_count, "percent": format_percent,
                      "coordinate": format_coordinate, "text": lambda v: "" if v is None else str(v)}
        head = "".join(f"<th class='{'t' if kind == 'text' else 'n'}'>{html.escape(header)}</th>"
                       for _, header, kind in columns)
        body = []
        for i, row in enumerate(rows):
            cells = []
            for key, _, kind in columns:
                text = html.escape(formatters[kind](row.get(key)))
                if (i, key) in bold:
                    text = f"<b>{text}</b>"
                cells.append(f"<td class='{'t' if kind == 'text' else 'n'}'>{text}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        ident = f" id='{html.escape(table_id)}'"
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        box = "box scroll" if scroll else "box"
        self.parts.append(f"<div class='{box}'><table{ident}>{cap}<thead><tr>{head}</tr></thead>"
                          f"<tbody>{''.join(body)}</tbody></table></div>")

    # -- figures
    def figure(self, png, *, figure_id, alt, caption=None, half=False):
        """Embed PNG bytes as a data URI; ``figure_id`` is the <img> id (tests look for it)."""
        if figure_id in self.figures:
            raise ValueError(f"figure id {figure_id!r} used twice")
        self.figures.append(figure_id)
        self.pngs[figure_id] = bytes(png)
        encoded = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        klass = " class='half'" if half else ""
        self.parts.append(f"<figure{klass}><img id='{html.escape(figure_id)}' alt='{html.escape(alt)}' "
                          f"src='data:image/png;base64,{encoded}'>{cap}</figure>")

    # -- output
    def render(self, data=None):
        """The whole page (a :class:`ReportPage`); ``data`` (dict) is merged into the JSON block
        with the figure ids."""
        block = dict(self.data)
        block.update(data or {})
        block["figures"] = list(self.figures)
        block["tables"] = list(self.tables)
        text = json.dumps(json_safe(block), allow_nan=False, separators=(",", ":"))
        text = text.replace("</", "<\\/")  # never closes the script element
        page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                "<meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head>\n<body><main>\n"
                f"<h1>{html.escape(self.title)}</h1>\n" + "\n".join(self.parts)
                + f"\n<script type='application/json' id='{REPORT_JSON_ID}'>{text}</script>\n"
                "</main></body></html>\n")
        return ReportPage(page, figures=self.pngs, tables=self.tables)


_BLOCK_RE = re.compile(r"<script type=['\"]application/json['\"] id=['\"]" + REPORT_JSON_ID
                       + r"['\"]>(.*?)</script>", re.S)


def read_report_data(text_or_path):
    """The JSON block of a report page (its text, or the path of the .html file) as a dict."""
    text = text_or_path
    if not str(text_or_path).lstrip().startswith("<"):
        with open(text_or_path, encoding="utf-8") as handle:
            text = handle.read()
    match = _BLOCK_RE.search(text)
    if match is None:
        raise ValueError("no smdownscale-report JSON block in this page")
    return json.loads(match.group(1))
