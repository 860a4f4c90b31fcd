"""What counts as visible text in HTML, shared by the HTML block converter and table renderer.

- text nodes (comments, CDATA, doctype and the contents of script/style/template are not);
- ruby annotations (``<rt>``), shown above the base text;
- the ``alt`` text of images (``<img>``, ``<area>``, ``<input type="image">``): what a
  reader gets when the image does not load, and often the only words of a figure (an
  inline ``<svg>`` leaves its accessible name instead: :func:`.html_clean.svg_name`);
- ``<br>`` breaks a line; entering or leaving a block element separates words, so
  ``Title<div>Subtitle</div>`` reads "Title Subtitle", never "TitleSubtitle";
- ``pre`` and the obsolete ``listing``, ``xmp`` and ``plaintext`` (:data:`PRE_TAGS`)
  show their text preformatted; the content of ``xmp`` and ``plaintext`` (to the end of
  the page) is raw text, literal characters and not markup, which the standard
  library's ``html.parser`` does not know: :func:`escape_raw_text` escapes it first;
- a ``&#`` that starts no character reference is text (:func:`escape_stray_charrefs`
  escapes it for ``html.parser``, which would read the rest of the page as text).

Every walk here is iterative (an explicit stack), so nesting depth is unlimited.

Example::

    from bs4 import BeautifulSoup
    from llama_index_ragtune.node_parser.html_text import flat_text

    soup = BeautifulSoup('<h2>Title<div>Subtitle</div><img alt="a chart"></h2>', "html.parser")
    flat_text(soup.h2.children)     # 'Title Subtitle a chart'
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser

BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details",
    "dialog", "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form",
    "frameset", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr", "html", "legend",
    "li", "listing", "main", "menu", "nav", "ol", "optgroup", "option", "p", "plaintext", "pre",
    "search", "section", "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
    "xmp",
})  # fmt: skip
#: Elements whose text shows preformatted (whitespace and line breaks kept), as code.
PRE_TAGS = frozenset({"pre", "listing", "xmp", "plaintext"})
#: Raw text elements (HTML standard) that ``html.parser`` reads as markup.
_RAW_TEXT_TAGS = ("xmp", "plaintext")
_RAW_TEXT_START = re.compile(r"<(?:xmp|plaintext)", re.I)
#: Marks a ``<br>`` line break inside collected text (a character no HTML text contains
#: after whitespace normalisation, turned into a newline by :func:`normalize`).
BR = "\u2028"
#: ``&#`` that starts no numeric character reference (``&# 5``, ``&#;``, ``&#x;``): text for
#: browsers and lxml, where Python's ``html.parser`` (3.11) stops tokenizing.
_STRAY_CHARREF = re.compile(r"&#(?![0-9]|[xX][0-9a-fA-F])")
_SPACES = re.compile(r"[ \t\n\r\f\v\u00a0]+")
_EXACT_TEXT = ("NavigableString", "RubyTextString")


def _bs4():
    try:
        import bs4
    except ImportError as err:  # pragma: no cover - bs4 is a hard dependency
        raise ImportError(
            "StructuredHTMLNodeParser needs beautifulsoup4: pip install beautifulsoup4 lxml"
        ) from err
    return bs4


def text_types() -> tuple[type, ...]:
    """The bs4 string classes that are visible text (exact types: subclasses such as
    ``Comment`` or ``Script`` are not).

    Example::

        soup = BeautifulSoup("<p>Hi<!-- note --></p>", "html.parser")
        [str(s) for s in soup.p.contents if type(s) in text_types()]     # ['Hi']
    """
    bs4 = _bs4()
    return tuple(getattr(bs4.element, name) for name in _EXACT_TEXT if hasattr(bs4.element, name))


def alt_text(tag) -> str:
    """The alternative text an image-like element shows in place of the image ('' if none).

    Example::

        alt_text(BeautifulSoup('<img alt="A chart">', "html.parser").img)     # ' A chart '
    """
    name = tag.name
    if name in ("img", "area") or (name == "input" and str(tag.get("type", "")).lower() == "image"):
        alt = tag.get("alt")
        if isinstance(alt, str) and alt.strip():
            return f" {alt.strip()} "
    return ""


def normalize(raw: str) -> str:
    """Collapse whitespace, keep ``<br>`` breaks as newlines, drop empty lines.

    Example::

        normalize("  Line  one" + BR + "line\ttwo ")     # 'Line one\nline two'
    """
    raw = raw.replace("\ufeff", "")  # a byte-order mark / zero-width no-break space is invisible
    lines = (_SPACES.sub(" ", line).strip() for line in raw.split(BR))
    return "\n".join(line for line in lines if line)


def events(nodes: Iterable) -> Iterator[tuple[bool, object]]:
    """``(entering, node)`` for ``nodes`` and all their descendants, in document order.

    Tags are reported twice (``True`` on entry, ``False`` on exit), other nodes
    once with ``True``. Iterative: no recursion whatever the nesting depth.

    Example::

        soup = BeautifulSoup("<p>a<b>b</b></p>", "html.parser")
        [(entering, getattr(node, "name", None) or str(node)) for entering, node in events([soup.p])]
        # [(True, 'p'), (True, 'a'), (True, 'b'), (True, 'b'), (False, 'b'), (False, 'p')]
    """
    bs4 = _bs4()
    tag_type = bs4.Tag
    stack: list[tuple[object, Iterator]] = [(None, iter(list(nodes)))]
    while stack:
        parent, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            if parent is not None:
                yield False, parent
            continue
        yield True, child
        if isinstance(child, tag_type):
            stack.append((child, iter(child.contents)))


def pre_text(pre) -> str:
    """The text of a ``<pre>`` element (or another of :data:`PRE_TAGS`) as it shows:
    whitespace kept, ``<br>`` and block elements inside it start a new line, image alt
    text kept, CR and CRLF line ends read as LF (``get_text()`` glues ``a<br>b`` into
    "ab", and ``html.parser`` keeps CRs).

    Example::

        soup = BeautifulSoup("<pre>ls -la<br>cd /tmp<div>exit</div></pre>", "html.parser")
        pre_text(soup.pre)     # 'ls -la\\ncd /tmp\\nexit\\n'
    """
    bs4 = _bs4()
    tag_type, texts = bs4.Tag, text_types()
    parts: list[str] = []
    at_line_start = True
    for entering, node in events(pre.contents):
        if not isinstance(node, tag_type):
            piece = str(node) if type(node) in texts else ""
        elif node.name == "br":
            piece = "\n" if entering else ""
        elif node.name in BLOCK_TAGS:
            piece = "" if at_line_start else "\n"
        else:
            piece = alt_text(node).strip() if entering else ""
        if piece:
            parts.append(piece)
            at_line_start = piece[-1] in "\r\n"
    return "".join(parts).replace("\r\n", "\n").replace("\r", "\n")


def flat_text(nodes: Iterable) -> str:
    """The visible text of ``nodes`` on one line: block boundaries and ``<br>`` become spaces.

    Example::

        soup = BeautifulSoup("<td>Box<div>large</div>fits<br>two</td>", "html.parser")
        flat_text(soup.td.contents)     # 'Box large fits two'
    """
    bs4 = _bs4()
    tag_type, texts = bs4.Tag, text_types()
    parts: list[str] = []
    for entering, node in events(nodes):
        if not isinstance(node, tag_type):
            if type(node) in texts:
                parts.append(str(node))
        elif node.name in BLOCK_TAGS or node.name == "br":
            parts.append(" ")
        elif entering:
            parts.append(alt_text(node))
    return " ".join("".join(parts).replace("\ufeff", "").split())


class _RawTextStart(Exception):
    """Stops a :class:`_RawTextScanner` at a raw text element's start tag."""


class _RawTextScanner(HTMLParser):
    """Reads markup as ``html.parser`` does, up to the start tag of one of ``names``."""

    def __init__(self, names: frozenset[str]):
        super().__init__(convert_charrefs=False)
        self.names = names

    def handle_starttag(self, tag, attrs):
        if tag in self.names:
            raise _RawTextStart(tag, self.getpos(), self.get_starttag_text())


@functools.cache
def _markup_raw_text_tags() -> frozenset[str]:
    """The raw text elements whose content this Python's ``html.parser`` reads as markup."""
    bs4 = _bs4()

    def reads_markup(name: str) -> bool:
        soup = bs4.BeautifulSoup(f"<{name}><b>&amp;</b></{name}>", "html.parser")
        return not soup.find(name).get_text().startswith("<b>&amp;</b>")

    return frozenset(filter(reads_markup, _RAW_TEXT_TAGS))


def _raw_text_start(markup: str, position: int, names, line_starts: list[int]):
    """``(tag, where its content starts)`` of the first raw text element of ``names`` at or
    after ``position``, or None. It reads pieces of growing size, so the work is linear in
    how far it reads, not in the length of the page."""
    scanner = _RawTextScanner(names)
    fed, size = position, 1024
    try:
        while fed < len(markup):
            scanner.feed(markup[fed : fed + size])
            fed, size = fed + size, 2 * size
        scanner.close()
        return None
    except _RawTextStart as found:
        tag, (line, column), start_tag = found.args
    if line == 1:  # getpos() counts lines and columns from where this scan started
        start = position + column
    else:
        start = line_starts[bisect.bisect_right(line_starts, position) + line - 2] + column
    if not markup.startswith(start_tag, start):  # pragma: no cover - getpos() differs
        start = markup.find(start_tag, position)
    return tag, start + len(start_tag)


def escape_stray_charrefs(markup: str) -> str:
    """``markup`` with every ``&#`` that starts no numeric character reference written
    ``&amp;#``, the text browsers read there. ``html.parser`` stops tokenizing at such a
    ``&#`` and, when no ``;`` follows it, reads the rest of the page (tags, scripts and
    all) as text.

    Example::

        escape_stray_charrefs("<p>Item &# 5 &#65;</p>")     # '<p>Item &amp;# 5 &#65;</p>'
    """
    return _STRAY_CHARREF.sub("&amp;#", markup) if isinstance(markup, str) else markup


def escape_raw_text(markup: str) -> str:
    """``markup`` with the content of its ``xmp`` and ``plaintext`` elements escaped, so that
    ``html.parser`` reads it as the literal text it is (as lxml and html5lib do).

    An ``xmp`` ends at the first ``</xmp``, a ``plaintext`` at the end of the page. The start
    tags are found by ``html.parser`` itself, so one in a comment, a script or an attribute
    value is left alone. Linear time; the markup is returned as is when it holds none, or
    when this Python's ``html.parser`` already reads them as raw text.

    Example::

        escape_raw_text("<xmp><b>x</b> &amp;</xmp>")     # '<xmp>&lt;b>x&lt;/b> &amp;amp;</xmp>'
    """
    if not isinstance(markup, str) or not _RAW_TEXT_START.search(markup):
        return markup
    names = _markup_raw_text_tags()
    if not names:
        return markup
    line_starts = [0] + [match.end() for match in re.finditer("\n", markup)]
    parts: list[str] = []
    position = 0
    # After a raw text element the tokenizer is in its data state: a fresh scan goes on.
    while _RAW_TEXT_START.search(markup, position):
        found = _raw_text_start(markup, position, names, line_starts)
        if found is None:
            break
        tag, body = found
        end = len(markup)
        if tag != "plaintext":
            closing = re.compile(rf"</{tag}[\t\n\f\r />]", re.I).search(markup, body)
            end = closing.start() if closing else end
        literal = markup[body:end].replace("&", "&amp;").replace("<", "&lt;")
        parts += [markup[position:body], literal]
        position = end
    parts.append(markup[position:])
    return "".join(parts)
