"""What counts as visible text in HTML, shared by the HTML block converter and table renderer.

- text nodes (comments, CDATA, doctype and the contents of script/style/template are not);
- ruby annotations (``<rt>``), shown above the base text;
- the ``alt`` text of images (``<img>``, ``<area>``, ``<input type="image">``): what a
  reader gets when the image does not load, and often the only words of a figure;
- ``<br>`` breaks a line; entering or leaving a block element separates words, so
  ``Title<div>Subtitle</div>`` reads "Title Subtitle", never "TitleSubtitle".

Every walk here is iterative (an explicit stack), so nesting depth is unlimited.

Example::

    from bs4 import BeautifulSoup
    from llama_index_ragtune.node_parser.html_text import flat_text

    soup = BeautifulSoup('<h2>Title<div>Subtitle</div><img alt="a chart"></h2>', "html.parser")
    flat_text(soup.h2.children)     # 'Title Subtitle a chart'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details",
    "dialog", "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form",
    "frameset", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr", "html", "legend",
    "li", "listing", "main", "menu", "nav", "ol", "optgroup", "option", "p", "plaintext", "pre",
    "search", "section", "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
    "xmp",
})  # fmt: skip
#: Marks a ``<br>`` line break inside collected text (a character no HTML text contains
#: after whitespace normalisation, turned into a newline by :func:`normalize`).
BR = "\u2028"
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
    """The text of a ``<pre>`` element as it shows: whitespace kept, ``<br>`` and block
    elements inside it start a new line, image alt text kept, CR and CRLF line ends read
    as LF (``get_text()`` glues ``a<br>b`` into "ab", and ``html.parser`` keeps CRs).

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
