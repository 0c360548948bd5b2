"""Every algorithm's help text is well-formed simple HTML: QGIS shows it as rich text, where an
unescaped ``<`` (``R < 0.5``) starts a tag and cuts off the rest and a bare ``&`` may swallow
text. Also: the README help link of every algorithm (resources.help_url)."""
import html
import re

import pytest

#: tags a Processing help text may use
ALLOWED_TAGS = {"b", "i", "u", "em", "strong", "p", "br", "ul", "ol", "li", "tt", "code", "pre", "a", "h2", "h3",
                "h4", "sub", "sup", "table", "tr", "td", "th", "span", "div", "dl", "dt", "dd", "hr", "small",
                "html", "head", "body", "meta", "style"}
#: help texts known to be cut by QGIS today (owner of the shell: escape them, then empty this set;
#: the strict xfail below fails as soon as one is fixed, so the set stays honest)
KNOWN_BROKEN = set()
#: tags HTML closes implicitly
IMPLICIT = {"p", "li", "dt", "dd", "tr", "td", "th", "meta"}
TAG = re.compile(r"</?([a-zA-Z][a-zA-Z0-9]*)(\s[^<>]*)?/?>")
ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);")
VOID = {"br", "hr"}


def help_problems(text):
    """What is wrong with ``text`` as simple HTML (list of messages; empty: fine)."""
    problems = []
    stack = []
    position = 0
    for match in TAG.finditer(text):
        between = text[position:match.start()]
        if "<" in between:
            where = between[max(between.find("<") - 30, 0):][:60]
            problems.append(f"unescaped < near {where!r} (write &lt;)")
        name = match.group(1).lower()
        if name not in ALLOWED_TAGS:
            problems.append(f"<{match.group(1)}> is not a tag: {match.group(0)!r} (write &lt;)")
        elif match.group(0).startswith("</"):
            if stack and stack[-1] == name:
                stack.pop()
            elif name in stack:
                problems.append(f"</{name}> closes over {stack[stack.index(name) + 1:]}")
                del stack[stack.index(name):]
            elif name not in IMPLICIT:
                problems.append(f"</{name}> without <{name}>")
        elif name not in VOID and not match.group(0).endswith("/>") and name not in IMPLICIT:
            stack.append(name)
        position = match.end()
    rest = text[position:]
    if "<" in rest:
        problems.append(f"unescaped < near {rest[max(rest.find('<') - 30, 0):][:60]!r} (write &lt;)")
    if stack:
        problems.append(f"unclosed tags {stack}")
    for amp in re.finditer("&", text):
        if not ENTITY.match(text, amp.start()):
            problems.append(f"bare & near {text[max(amp.start() - 20, 0):amp.start() + 20]!r} (write &amp;)")
    return problems


def _algorithms():
    from qgis.core import QgsApplication

    from smdownscale.processing.provider import SmDownscaleProvider

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("smdownscale")
    if provider is None:
        provider = SmDownscaleProvider()
        _algorithms.keep = provider
        registry.addProvider(provider)
    return {alg.name(): alg for alg in provider.algorithms()}


def test_the_checker_catches_what_qgis_would_cut(qgis_app):
    assert help_problems("Needs R <b>above</b> 0.5 &amp; n &gt; 3.<br>Fine.") == []
    assert help_problems("Cells with fraction < 0.5 are dropped")
    assert help_problems("x <0.5 and y>1")
    assert help_problems("0 water -> 0") == []             # a lone > is shown as it is
    assert help_problems("Soil & water")
    assert help_problems("<b>bold")
    assert help_problems("<sm> field")


def _broken_help_texts(names=None):
    from qgis.PyQt.QtGui import QTextDocument

    broken = {}
    for name, alg in sorted(_algorithms().items()):
        if names is not None and name not in names:
            continue
        text = alg.shortHelpString() or ""
        problems = help_problems(text)
        # what QGIS shows must keep the text's last words (a stray "<" swallows everything after it)
        document = QTextDocument()
        document.setHtml(text)
        shown = " ".join(document.toPlainText().split())
        plain = " ".join(html.unescape(TAG.sub(" ", text)).split())
        if plain and plain.split()[-1] not in shown:
            problems.append(f"QGIS shows only {shown[-60:]!r}")
        if problems:
            broken[name] = problems
    return broken


def test_every_algorithm_has_well_formed_help(qgis_app):
    broken = {name: problems for name, problems in _broken_help_texts().items() if name not in KNOWN_BROKEN}
    assert not broken, "help texts that QGIS shows cut or garbled:\n" + "\n".join(
        f"  {name}: {'; '.join(problems)}" for name, problems in broken.items())


def test_every_algorithm_has_a_readme_help_link(qgis_app):
    from smdownscale.resources import help_url, readme_anchor

    assert readme_anchor("Reliability: what is refused, and why") == "reliability-what-is-refused-and-why"
    assert readme_anchor("Data preparation") == "data-preparation"
    readme = open(__import__("os").path.join(__import__("os").path.dirname(__import__("os").path.dirname(
        __import__("os").path.abspath(__file__))), "README.md"), encoding="utf-8").read()
    anchors = {readme_anchor(line.lstrip("#")) for line in readme.splitlines() if line.startswith("#")}
    for name in _algorithms():
        url = help_url(name)
        assert url.startswith("https://github.com/smdownscale/smdownscale/blob/main/README.md#"), url
        assert url.split("#", 1)[1] in anchors, (name, url)
    assert help_url("smdownscale:train") == help_url("train")


@pytest.mark.parametrize("kind", ["model file", "dataset", "report"])
def test_outputs_in_a_temporary_location_are_flagged(qgis_app, tmp_path, kind):
    import os
    import tempfile

    from qgis.core import QgsProcessingFeedback, QgsProcessingUtils

    from smdownscale.resources import warn_if_temporary

    class Feedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.warnings = []

        def pushWarning(self, text):  # noqa: N802
            self.warnings.append(text)

    feedback = Feedback()
    temporary = os.path.join(QgsProcessingUtils.tempFolder(), "OUTPUT_MODEL.zip")
    message = warn_if_temporary(temporary, kind, feedback)
    assert message and temporary in message and kind in message and "choose an output path" in message
    assert feedback.warnings == [message]
    kept = os.path.expanduser("~/smdownscale-kept/model.zip")
    assert warn_if_temporary(kept, kind, feedback) is None
    assert warn_if_temporary(os.path.join(tempfile.gettempdir(), "x.zip"), kind) is not None
    assert warn_if_temporary("", kind) is None
