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
- a ``&#`` that starts no character reference is text, and a numeric reference needs no
  ``;`` (:func:`escape_stray_charrefs` escapes the one and ends the other with ``;`` for
  ``html.parser``, which would read the rest of the page as text);
- comments, doctypes, processing instructions and bogus comments (``<!x>``, ``<?x>``) end
  as the HTML standard says, at ``-->`` or ``--!>`` (``<!-->`` is an empty comment) or at
  the first ``>``, and at the end of the page when unclosed: :func:`strip_comments` removes
  them for the ``html.parser`` of a Python that would show them as text;
- a tag left open at the end of the page (a cut-off file) is dropped with what follows it,
  as the HTML standard and lxml drop it (:func:`end_unclosed_tag`);
- a ``<p>`` left open ends at the next block, a ``<li>`` at the next item, a ``<dt>`` /
  ``<dd>`` at the next term or definition, as in browsers and lxml (``html.parser`` nested
  the rest of the page in them: :func:`close_implied_elements`);
- control characters from numeric references (``&#1;``, ``&#x81;``) are replaced
  (:func:`replace_control_characters`).

The markup repairs for ``html.parser`` (:func:`escape_raw_text`,
:func:`escape_stray_charrefs`, :func:`strip_comments`) live in :mod:`.html_parser_repairs`
and are importable from here; :func:`for_html_parser` applies them.

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

from llama_index_ragtune.node_parser.documents import (
    CONTROL_CHARACTERS,
    without_control_characters,
)
from llama_index_ragtune.node_parser.html_entities import spell_named_references
from llama_index_ragtune.node_parser.html_parser_repairs import (
    close_implied_elements,
    end_unclosed_tag,
    escape_raw_text,
    escape_stray_charrefs,
    strip_comments,
)

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
#: Marks a ``<br>`` line break inside collected text (a character no HTML text contains
#: after whitespace normalisation, turned into a newline by :func:`normalize`).
BR = "\u2028"
#: Raw text elements (for browsers with frames and plugins) whose content is the page's
#: alternative content, markup that ``html.parser`` parses: parsed for lxml too (an
#: ``iframe``'s only shows where ``iframe`` is not a boilerplate tag).
_FALLBACK_CONTENT = ("noframes", "noembed", "iframe")
_SPACES = re.compile(r"[ \t\n\r\f\v\u00a0]+")
#: The HTML standard's "rules for parsing integers": ASCII whitespace, a sign, ASCII digits;
#: whatever follows the digits is ignored ("2px" is 2).
_HTML_INTEGER = re.compile(r"[\t\n\f\r ]*([-+]?)0*([0-9]+)")
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


def html_integer(value, default: int) -> int:
    """``value`` read as the HTML standard reads an integer attribute (``colspan``, ``start``):
    leading ASCII whitespace, an optional sign, then ASCII digits, whatever follows them
    ignored; ``default`` when it starts otherwise. Unlike ``int()``, other scripts' digits
    (``"٣"``, ``"３"``) and underscores (``"1_000"``) are no number, and ``"2px"`` is 2.
    Numbers of more than 10 digits read as ``±10**10`` (any clamp is below that).

    Example::

        html_integer(" 3;", 1), html_integer("1e9", 1), html_integer("٣", 1)     # (3, 1, 1)
    """
    match = _HTML_INTEGER.match(value) if isinstance(value, str) else None
    if match is None:
        return default
    sign, digits = match.groups()
    number = int(digits) if len(digits) <= 10 else 10**10
    return -number if sign == "-" else number


def replace_control_characters(soup) -> None:
    """Replace, in place, the control characters in the text and attribute values of
    ``soup`` (what numeric references such as ``&#1;`` or ``&#x81;`` decode to) as
    :func:`~.documents.without_control_characters` does.

    Example::

        soup = BeautifulSoup("<p>a&#1;b &#x93;c&#x94;</p>", "html.parser")
        replace_control_characters(soup)
        soup.p.get_text()     # 'a b “c”'
    """
    for string in soup.find_all(string=CONTROL_CHARACTERS):
        string.replace_with(type(string)(without_control_characters(str(string))))
    for tag in soup.find_all(True):
        for key, value in tag.attrs.items():
            if isinstance(value, str) and CONTROL_CHARACTERS.search(value):
                tag.attrs[key] = without_control_characters(value)


def for_html_parser(html: str) -> str:
    """``html`` as ``html.parser`` must get it to read it as browsers do: raw text escaped,
    stray and unterminated numeric references fixed, named references spelled as the HTML
    standard reads them, comments ended as the HTML standard ends them, a tag left open at
    the end dropped, implied end tags written (:func:`escape_raw_text`,
    :func:`end_unclosed_tag`, :func:`~.html_entities.spell_named_references`,
    :func:`escape_stray_charrefs`, :func:`strip_comments`, :func:`close_implied_elements`).

    Example::

        for_html_parser("<p>a&#65b</p><!-- draft")     # '<p>a&#65;b</p>'
    """
    markup = end_unclosed_tag(escape_raw_text(html))
    markup = strip_comments(escape_stray_charrefs(spell_named_references(markup)))
    return close_implied_elements(markup)


def html_parser_soup(markup: str):
    """``markup`` parsed with the standard library's ``html.parser`` as browsers read it:
    prepared by :func:`for_html_parser`, and of an attribute given twice the first value
    kept (bs4 keeps the last: ``<div hidden="" hidden="until-found">``, a repeated
    ``colspan`` or ``alt`` read otherwise than with lxml and browsers).

    Example::

        html_parser_soup('<td colspan=2 colspan=9>x</td>').td["colspan"]     # '2'
    """
    return _bs4().BeautifulSoup(
        for_html_parser(markup), "html.parser", on_duplicate_attribute="ignore"
    )


def parse_fallback_content(soup, dropped: Iterable[str] = ()) -> None:
    """Parse the raw text content of the ``noframes``/``noembed``/``iframe`` elements of
    ``soup`` (lxml keeps it as text: the markup would show) as markup, with ``html.parser``,
    which reads nested ones as markup too: one parse of each element's text, linear time.
    Elements named in ``dropped`` (boilerplate tags, removed anyway) are left alone.

    Example::

        soup = BeautifulSoup("<noframes><p>No <b>frames</b></p></noframes>", "lxml")
        parse_fallback_content(soup)
        soup.noframes.get_text()     # 'No frames'
    """
    texts = text_types()
    names = [name for name in _FALLBACK_CONTENT if name not in set(dropped)]
    for tag in soup.find_all(names) if names else ():
        raw = tag.contents[0] if len(tag.contents) == 1 else None
        if type(raw) not in texts or not ("<" in raw or "&" in raw):
            continue
        fragment = html_parser_soup(str(raw))
        if "&#" in raw:
            replace_control_characters(fragment)
        tag.clear()
        tag.extend(list(fragment.contents))
