"""Markup repairs so that the standard library's ``html.parser`` reads a page as browsers
and lxml do; :func:`.html_text.for_html_parser` applies them in order.

- :func:`escape_raw_text`: the content of ``xmp`` / ``plaintext`` (raw text) and the ``<``
  of ``textarea`` / ``title`` (RCDATA) escaped, which ``html.parser`` would read as markup;
- :func:`escape_stray_charrefs`: a ``&#`` that starts no reference is text, a numeric
  reference needs no ``;``, a reference of thousands of digits is shortened;
- :func:`end_unclosed_tag`: a tag left open at the end of the page dropped with what follows;
- :func:`strip_comments`: comments, doctypes, processing instructions, bogus comments and
  ``<![CDATA[`` ended as the HTML standard ends them, when this Python's ``html.parser``
  would show them, and what follows them, as text (or, for ``<![CDATA[ a > b ]]>``, hide
  the text after the ``>`` that lxml and browsers show);
- :func:`close_implied_elements`: the end tags that browsers and lxml imply (a ``<p>``
  ended by the next block, a ``<li>`` by the next item, a ``<dt>``/``<dd>`` by the next
  term or definition, table cells, rows and row groups by the next, a heading by a
  heading started in it) written out.

Every scan is linear. Moved from :mod:`.html_text`, which still exports these names.

Example::

    from llama_index_ragtune.node_parser.html_parser_repairs import strip_comments

    strip_comments("<p>a</p><!-- draft <p>b</p>")     # '<p>a</p>'
"""

from __future__ import annotations

import bisect
import functools
import re
from html.parser import HTMLParser

#: Raw text elements (HTML standard) that ``html.parser`` reads as markup.
_RAW_TEXT_TAGS = ("xmp", "plaintext")
#: Escapable raw text (RCDATA) elements: text, with character references, to their end tag;
#: ``html.parser`` (3.11) reads their content as markup (``<title>a <!-- b</title>`` showed
#: the markup; ``<textarea><!-- </textarea>`` hid the rest of the page).
_RCDATA_TAGS = frozenset({"textarea", "title"})
_RAW_TEXT_START = re.compile(r"<(?:xmp|plaintext|textarea|title)", re.I)
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
#: A decimal character reference longer than any code point (leading zeros and all):
#: ``html.parser`` would pass its digits to ``int()``, which refuses more than 4300.
_LONG_DECIMAL_CHARREF = re.compile(r"&#([0-9]{8,})")


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
    from llama_index_ragtune.node_parser.html_text import _bs4  # a cycle at import time

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
        return self._to_gt(i)  # a marked section (<![CDATA[) too: a bogus comment in HTML


@functools.cache
def _html_parser_ends_marked_sections_as_html5() -> bool:
    """True when this Python's ``html.parser`` ends a ``<![CDATA[`` at the first ``>``, as the
    HTML standard (outside svg/math) and lxml do, not at ``]]>`` (hiding the text between)."""
    from llama_index_ragtune.node_parser.html_text import _bs4  # a cycle at import time

    return _bs4().BeautifulSoup("<![CDATA[a>b]]>", "html.parser").get_text() == "b]]>"


@functools.cache
def _html_parser_ends_comments_as_html5() -> bool:
    """True when this Python's ``html.parser`` ends comments as the HTML standard does."""
    from llama_index_ragtune.node_parser.html_text import _bs4  # a cycle at import time

    bs4 = _bs4()
    markup = "<!-->a<!--->b<!-- c --!>d<!-- e -- >f-->g<!-- h"
    return bs4.BeautifulSoup(markup, "html.parser").get_text() == "abdg"


def _unclosed_markup_at_end(markup: str) -> bool:
    """A ``<!``/``<?`` with no ``>`` after it, a ``<!--`` with no ``-->`` after it, or a
    ``<![CDATA[`` with no ``]]>`` (``html.parser`` shows it and the markup after it as text;
    HTML5 and lxml end it at the first ``>`` as a bogus comment)."""
    last = max(markup.rfind("<!"), markup.rfind("<?"))
    comment = markup.rfind("<!--")
    section = markup.rfind("<![")
    return (
        (last >= 0 and markup.find(">", last) < 0)
        or (comment >= 0 and markup.find("-->", comment + 4) < 0)
        or (section >= 0 and markup.find("]]>", section + 3) < 0)
    )


def strip_comments(markup: str) -> str:
    """``markup`` without its comments, doctypes, processing instructions and bogus
    comments (``<!x>``, ``<?x>``), ended as the HTML standard ends them, when this
    Python's ``html.parser`` would end one otherwise and show it, and often what
    follows it, as text: ``<!-->``, ``--!>``, a comment or ``<!``/``<?`` left unclosed
    at the end of the page, a ``<![CDATA[`` (a bogus comment in HTML: it ends at the first
    ``>``, as in lxml and browsers, where ``html.parser`` hid everything up to ``]]>``), a
    comment left open in an ``iframe``, ``noembed`` or ``noframes`` (raw text that ends at
    their end tag). Else ``markup`` as is. Comments in scripts and attribute
    values are left alone (``html.parser`` finds them); linear time.

    Example::

        strip_comments("<p>a</p><!-- draft <p>b</p>")     # '<p>a</p>'
    """
    if not isinstance(markup, str):
        return markup
    sections = "<![" in markup and not _html_parser_ends_marked_sections_as_html5()
    if _html_parser_ends_comments_as_html5() and not sections:
        return markup
    if not (
        sections
        or _ODD_COMMENT.search(markup)
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


#: The opening of a start or end tag (``<p``, ``</td``): with no ``>`` after it, never closed.
TAG_OPEN = re.compile(r"</?[A-Za-z]")


def end_unclosed_tag(markup: str) -> str:
    """``markup`` without a tag left open at its end (a ``<`` and a letter with no ``>``
    after it, a cut-off page) and what follows it: the HTML standard ("EOF in tag") and
    lxml drop them, where this Python's ``html.parser`` shows them as text and reads to the
    end again at every ``<`` after it (quadratic: 100 KB of such text took 3.5 s, 400 KB 87 s).
    Linear time.

    Example::

        end_unclosed_tag('<p>Fees</p><img alt="A pict')     # '<p>Fees</p>'
    """
    opener = TAG_OPEN.search(markup, markup.rfind(">") + 1)
    return markup if opener is None else markup[: opener.start()]


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
    # html.parser stops tokenizing at a "&#" that starts no reference (it would not see an
    # xmp after "&# 5"): the scan reads every "&#" as "&_", which keeps all offsets.
    scanned = markup.replace("&#", "&_")
    parts: list[str] = []
    position = 0
    # After a raw text element the tokenizer is in its data state: a fresh scan goes on.
    while _RAW_TEXT_START.search(markup, position):
        found = _raw_text_start(scanned, position, names, line_starts)
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


#: Start tags that end an open ``p`` (HTML standard, "close a p element"; lxml ends it at
#: these too).
_P_CLOSERS = frozenset({
    "address", "article", "aside", "blockquote", "center", "details", "dialog", "dir", "div",
    "dl", "dd", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3",
    "h4", "h5", "h6", "header", "hgroup", "hr", "li", "listing", "main", "menu", "nav", "ol",
    "p", "plaintext", "pre", "search", "section", "summary", "table", "ul", "xmp",
})  # fmt: skip
#: An open element of these hides a ``p``, ``li``, ``dt``/``dd`` opened before it from the
#: start tags that would end them (the standard's scopes, simplified).
_SCOPE = frozenset({
    "applet", "button", "caption", "html", "marquee", "math", "object", "svg", "table", "td",
    "template", "th",
})  # fmt: skip
_TABLE_SCOPE = frozenset({"html", "table", "template"})
_SECTIONS = frozenset({"tbody", "thead", "tfoot"})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
#: ``start tag -> [(open elements it ends, the innermost of them), open elements that keep
#: them open when opened after them)]``: the HTML standard's implied end tags.
_CAPTION = (frozenset({"caption"}), _TABLE_SCOPE)  # a caption ends at the table's rows
_IMPLIED_ENDS = {
    "li": [(frozenset({"li"}), frozenset({"ol", "ul", "menu", "dir"}) | _SCOPE)],
    "dt": [(frozenset({"dt", "dd"}), frozenset({"dl"}) | _SCOPE)],
    "td": [_CAPTION, (frozenset({"td", "th"}), _TABLE_SCOPE)],
    "tr": [_CAPTION, (frozenset({"tr"}), _TABLE_SCOPE)],
    **{name: [_CAPTION, (_SECTIONS, _TABLE_SCOPE)] for name in _SECTIONS},
}
_IMPLIED_ENDS["dd"], _IMPLIED_ENDS["th"] = _IMPLIED_ENDS["dt"], _IMPLIED_ENDS["td"]
for _name in _P_CLOSERS:
    _IMPLIED_ENDS.setdefault(_name, []).append((frozenset({"p"}), _SCOPE))
_VOID = frozenset({
    "area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "img", "input",
    "keygen", "link", "meta", "param", "source", "track", "wbr",
})  # fmt: skip
_IMPLIED_START = re.compile(r"<(?:p|li|dt|dd|td|th|tr|tbody|thead|tfoot|h[1-6])(?=[\s/>])", re.I)


class _ImpliedEndScanner(HTMLParser):
    """Reads markup as ``html.parser`` does, with the stack of open elements that ``bs4``
    builds from it; ``ends`` are ``(line, column, end tags)`` to write before a start tag.
    For each name the positions of its open elements are kept, so each check is O(1)."""

    def __init__(self, write: frozenset[str] | None = None):
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.open: dict[str, list[int]] = {}
        self.ends: list[tuple[int, int, str]] = []
        self.write = write  # the names whose end tags are written (None: all)

    def _last(self, names) -> int:
        return max((self.open[n][-1] for n in names if self.open.get(n)), default=-1)

    def _pop_to(self, index: int) -> None:
        while len(self.stack) > index:
            self.open[self.stack.pop()].pop()

    def handle_starttag(self, tag, attrs):
        written: list[str] = []
        for names, stoppers in _IMPLIED_ENDS.get(tag, ()):
            at = self._last(names)  # the innermost open one, unless a stopper is inside it
            if at >= 0 and at > self._last(stoppers):
                if self.write is None or self.stack[at] in self.write:
                    written.append(f"</{self.stack[at]}>")
                self._pop_to(at)
        if tag in _HEADINGS and self.write is None and self.stack and self.stack[-1] in _HEADINGS:
            written.append(f"</{self.stack[-1]}>")  # a heading ends an unclosed one
            self._pop_to(len(self.stack) - 1)
        if written:
            self.ends.append((*self.getpos(), "".join(written)))
        if tag not in _VOID:
            self.open.setdefault(tag, []).append(len(self.stack))
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:  # bs4 ends "<p/>" at once
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if self.open.get(tag):  # bs4 closes the innermost open one, with all inside it
            self._pop_to(self.open[tag][-1])


def close_implied_elements(markup: str, write: frozenset[str] | None = None) -> str:
    """``markup`` with the end tags that browsers and lxml imply written out, so that
    ``html.parser`` (which implies none) builds the same tree: an open ``<p>`` ends at the
    start of a block (``div``, ``ul``, ``table``, a heading, another ``p``, ...), an open
    ``<li>`` at the next ``<li>`` of its list, an open ``<dt>``/``<dd>`` at the next term or
    definition, a table cell at the next cell or row, a row at the next row or row group,
    a row group at the next, a caption at the table's rows, a heading at the next heading
    started right in it. Without
    them a ``<p hidden>``, ``<li hidden>``, ``<tr hidden>`` or ``<h2 hidden>`` left open took
    the rest of the page (or table) into it, and hid it. ``write``, when given, names the
    elements whose end tags are written (for lxml, which implies the others itself). Tags
    are found by ``html.parser`` itself (none in a comment, script or attribute value);
    linear time.

    Example::

        close_implied_elements("<p hidden>Old<h2>Fees</h2><ul><li>A<li>B</ul>")
        # '<p hidden>Old</p><h2>Fees</h2><ul><li>A</li><li>B</ul>'
    """
    if not isinstance(markup, str) or not _IMPLIED_START.search(markup):
        return markup
    scanner = _ImpliedEndScanner(write)
    scanner.feed(markup)
    scanner.close()
    if not scanner.ends:
        return markup
    line_starts = [0] + [match.end() for match in re.finditer("\n", markup)]
    parts, position = [], 0
    for line, column, ends in scanner.ends:
        offset = line_starts[line - 1] + column
        if offset < position or not markup.startswith("<", offset):
            return markup  # pragma: no cover - this html.parser counts positions otherwise
        parts += [markup[position:offset], ends]
        position = offset
    parts.append(markup[position:])
    return "".join(parts)
