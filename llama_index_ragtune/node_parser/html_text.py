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
- control characters from numeric references (``&#1;``, ``&#x81;``) are replaced
  (:func:`replace_control_characters`).

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

from llama_index_ragtune.node_parser.documents import (
    CONTROL_CHARACTERS,
    without_control_characters,
)
from llama_index_ragtune.node_parser.html_entities import spell_named_references

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
#: Escapable raw text (RCDATA) elements: text, with character references, to their end tag;
#: ``html.parser`` (3.11) reads their content as markup (``<title>a <!-- b</title>`` showed
#: the markup; ``<textarea><!-- </textarea>`` hid the rest of the page).
_RCDATA_TAGS = frozenset({"textarea", "title"})
_RAW_TEXT_START = re.compile(r"<(?:xmp|plaintext|textarea|title)", re.I)
#: Marks a ``<br>`` line break inside collected text (a character no HTML text contains
#: after whitespace normalisation, turned into a newline by :func:`normalize`).
BR = "\u2028"
#: ``&#`` that starts no numeric character reference (``&# 5``, ``&#;``, ``&#x;``): text for
#: browsers and lxml, where Python's ``html.parser`` (3.11) stops tokenizing.
_STRAY_CHARREF = re.compile(r"&#(?![0-9]|[xX][0-9a-fA-F])")
#: A numeric reference without its ``;``: ``html.parser`` (3.11) reads ``&#65b`` and, at the
#: end of the page, ``&#65`` as text, and with no ``;`` later, the rest of the page too.
_UNTERMINATED_CHARREF = re.compile(r"&#(?:[0-9]+(?![0-9;])|[xX][0-9a-fA-F]+(?![0-9a-fA-F;]))")
#: What a Python's ``html.parser`` may end otherwise than the HTML standard: ``<!-->``,
#: ``<!--->``, a comment closed by ``--!>`` or ``-- >`` (see :func:`strip_comments`).
_ODD_COMMENT = re.compile(r"<!---?>|--!>|--\s+>")
_HTML5_COMMENT_END = re.compile(r"--!?>")
#: Raw text elements (HTML standard) that ``html.parser`` reads as markup: lxml ends their
#: content, and so a comment left open in it, at their end tag.
_RAW_MARKUP_TAGS = frozenset({"iframe", "noembed", "noframes"})
_RAW_MARKUP_START = re.compile(r"<(?:iframe|noembed|noframes)", re.I)
#: Raw text elements (for browsers with frames and plugins) whose content is the page's
#: alternative content, markup that ``html.parser`` parses: parsed for lxml too (an
#: ``iframe``'s only shows where ``iframe`` is not a boilerplate tag).
_FALLBACK_CONTENT = ("noframes", "noembed", "iframe")
_SPACES = re.compile(r"[ \t\n\r\f\v\u00a0]+")
#: The HTML standard's "rules for parsing integers": ASCII whitespace, a sign, ASCII digits;
#: whatever follows the digits is ignored ("2px" is 2).
_HTML_INTEGER = re.compile(r"[\t\n\f\r ]*([-+]?)0*([0-9]+)")
#: A decimal character reference longer than any code point (leading zeros and all):
#: ``html.parser`` would pass its digits to ``int()``, which refuses more than 4300.
_LONG_DECIMAL_CHARREF = re.compile(r"&#([0-9]{8,})")
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
        self.foreign = 0  # open svg/math elements: a title there is an SVG element, not text

    def handle_starttag(self, tag, attrs):
        if tag in ("svg", "math"):
            self.foreign += 1
        if tag in self.names and not (tag == "title" and self.foreign):
            raise _RawTextStart(tag, self.getpos(), self.get_starttag_text())

    def handle_endtag(self, tag):
        if tag in ("svg", "math") and self.foreign:
            self.foreign -= 1


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


def escape_stray_charrefs(markup: str) -> str:
    """``markup`` with every ``&#`` that starts no numeric character reference written
    ``&amp;#``, the text browsers read there, and every numeric reference ended with ``;``
    (``&#65b`` is ``A`` and ``b``). ``html.parser`` stops tokenizing at such a ``&#`` or
    at ``&#65b`` and, when no ``;`` follows it, reads the rest of the page (tags, scripts
    and all) as text. A decimal reference of many digits (``&#000...065;``) is shortened:
    ``html.parser`` fails on more than 4300.

    Example::

        escape_stray_charrefs("<p>Item &# 5 &#65;&#66c</p>")     # '<p>Item &amp;# 5 &#65;&#66;c</p>'
    """
    if not isinstance(markup, str) or "&#" not in markup:
        return markup
    markup = _LONG_DECIMAL_CHARREF.sub(_shorten_decimal_charref, markup)
    return _UNTERMINATED_CHARREF.sub(r"\g<0>;", _STRAY_CHARREF.sub("&amp;#", markup))


def _shorten_decimal_charref(match: re.Match) -> str:
    """``&#0000065`` as ``&#65``, and a number past the last code point as ``&#65533`` (U+FFFD,
    as browsers read it)."""
    digits = match.group(1).lstrip("0") or "0"
    return "&#" + (digits if len(digits) <= 7 else "65533")


class _CommentScanner(HTMLParser):
    """Reads markup as ``html.parser`` does, but ends comments, doctypes, processing
    instructions and bogus comments as the HTML standard does; ``spans`` are where they are."""

    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.spans: list[tuple[int, int]] = []
        self.fed = 0
        #: the open iframe/noembed/noframes: [tag, where its end tag is (found once)]
        self.raw_open: list[list] = []

    def feed(self, data: str) -> None:
        self.fed += len(data)
        super().feed(data)

    def handle_starttag(self, tag, attrs):
        if tag in _RAW_MARKUP_TAGS:
            self.raw_open.append([tag, None])

    def handle_endtag(self, tag):
        if self.raw_open and self.raw_open[-1][0] == tag:
            self.raw_open.pop()

    def _offset(self) -> int:
        return self.fed - len(self.rawdata)  # where self.rawdata starts in the markup

    def _span(self, i: int, end: int) -> int:
        self.spans.append((self._offset() + i, self._offset() + end))
        return end

    def _limit(self, i: int) -> int:
        """Where a comment at ``i`` ends at the latest: the end tag of an open iframe,
        noembed or noframes (their content is raw text), else the end of the markup."""
        if not self.raw_open:
            return len(self.rawdata)
        entry = self.raw_open[-1]
        if entry[1] is None or entry[1] < self._offset() + i:
            found = re.compile(rf"</{entry[0]}", re.I).search(self.rawdata, i)
            entry[1] = self._offset() + (found.start() if found else len(self.rawdata))
        return entry[1] - self._offset()

    def _to_gt(self, i: int) -> int:
        """A bogus comment, doctype or processing instruction: to the first ``>``."""
        end = self.rawdata.find(">", i + 2)
        return self._span(i, len(self.rawdata) if end < 0 else end + 1)

    def parse_comment(self, i, report=1):
        raw = self.rawdata
        if raw.startswith((">", "->"), i + 4):  # <!--> and <!---> are empty comments
            return self._span(i, raw.index(">", i + 4) + 1)
        limit = self._limit(i)
        match = _HTML5_COMMENT_END.search(raw, i + 4, limit)
        return self._span(i, match.end() if match else limit)

    def parse_bogus_comment(self, i, report=1):
        return self._to_gt(i)

    def parse_pi(self, i):
        return self._to_gt(i)

    def parse_html_declaration(self, i):
        if self.rawdata.startswith("<!--", i):
            return self.parse_comment(i)
        if self.rawdata.startswith("<![", i):  # a marked section (CDATA): html.parser's reading
            end = super().parse_html_declaration(i)
            return end if end >= 0 else self._to_gt(i)
        return self._to_gt(i)


@functools.cache
def _html_parser_ends_comments_as_html5() -> bool:
    """True when this Python's ``html.parser`` ends comments as the HTML standard does."""
    bs4 = _bs4()
    markup = "<!-->a<!--->b<!-- c --!>d<!-- e -- >f-->g<!-- h"
    return bs4.BeautifulSoup(markup, "html.parser").get_text() == "abdg"


def _unclosed_markup_at_end(markup: str) -> bool:
    """A ``<!``/``<?`` with no ``>`` after it, or a ``<!--`` with no ``-->`` after it."""
    last = max(markup.rfind("<!"), markup.rfind("<?"))
    comment = markup.rfind("<!--")
    return (last >= 0 and markup.find(">", last) < 0) or (
        comment >= 0 and markup.find("-->", comment + 4) < 0
    )


def strip_comments(markup: str) -> str:
    """``markup`` without its comments, doctypes, processing instructions and bogus
    comments (``<!x>``, ``<?x>``), ended as the HTML standard ends them, when this
    Python's ``html.parser`` would end one otherwise and show it, and often what
    follows it, as text: ``<!-->``, ``--!>``, a comment or ``<!``/``<?`` left unclosed
    at the end of the page, a comment left open in an ``iframe``, ``noembed`` or
    ``noframes`` (raw text that ends at their end tag). Else ``markup`` as is. Comments in scripts and attribute
    values are left alone (``html.parser`` finds them); linear time.

    Example::

        strip_comments("<p>a</p><!-- draft <p>b</p>")     # '<p>a</p>'
    """
    if not isinstance(markup, str) or _html_parser_ends_comments_as_html5():
        return markup
    if not (
        _ODD_COMMENT.search(markup)
        or _unclosed_markup_at_end(markup)
        or ("<!--" in markup and _RAW_MARKUP_START.search(markup))
    ):
        return markup
    scanner = _CommentScanner()
    scanner.feed(markup)
    scanner.close()
    parts, position = [], 0
    for start, end in scanner.spans:
        if start < position or not markup.startswith(("<!", "<?", "</"), start):
            return markup  # pragma: no cover - this html.parser counts positions otherwise
        parts.append(markup[position:start])
        position = end
    parts.append(markup[position:])
    return "".join(parts)


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


def escape_raw_text(markup: str) -> str:
    """``markup`` with the content of its ``xmp`` and ``plaintext`` elements escaped, so that
    ``html.parser`` reads it as the literal text it is (as lxml and html5lib do), and the
    ``<`` in its ``textarea`` and ``title`` elements (their character references still count).

    An ``xmp`` ends at the first ``</xmp``, a ``plaintext`` at the end of the page. The start
    tags are found by ``html.parser`` itself, so one in a comment, a script or an attribute
    value is left alone. Linear time; the markup is returned as is when it holds none, or
    when this Python's ``html.parser`` already reads them as raw text.

    Example::

        escape_raw_text("<xmp><b>x</b> &amp;</xmp>")     # '<xmp>&lt;b>x&lt;/b> &amp;amp;</xmp>'
    """
    if not isinstance(markup, str) or not _RAW_TEXT_START.search(markup):
        return markup
    names = _markup_raw_text_tags() | _RCDATA_TAGS  # "&lt;" reads "<" in RCDATA too
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
        literal = markup[body:end]
        literal = (literal if tag in _RCDATA_TAGS else literal.replace("&", "&amp;")).replace(
            "<", "&lt;"
        )
        parts += [markup[position:body], literal]
        position = end
    parts.append(markup[position:])
    return "".join(parts)


def for_html_parser(html: str) -> str:
    """``html`` as ``html.parser`` must get it to read it as browsers do: raw text escaped,
    stray and unterminated numeric references fixed, named references spelled as the HTML
    standard reads them, comments ended as the HTML standard ends them
    (:func:`escape_raw_text`, :func:`~.html_entities.spell_named_references`,
    :func:`escape_stray_charrefs`, :func:`strip_comments`).

    Example::

        for_html_parser("<p>a&#65b</p><!-- draft")     # '<p>a&#65;b</p>'
    """
    return strip_comments(escape_stray_charrefs(spell_named_references(escape_raw_text(html))))


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
