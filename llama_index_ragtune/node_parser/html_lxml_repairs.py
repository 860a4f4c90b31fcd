"""Markup repairs so that lxml reads a page's headings and definition lists as browsers do.

lxml (libxml2's HTML 4 parser) ends an open ``h1``..``h6`` at a ``<p>``, ``<li>``,
``<table>``, ``<form>`` or ``<fieldset>`` start tag (:data:`HEADING_BREAKERS`), where the
HTML standard nests the element in the heading: ``<h2><p>Shipping</p></h2>`` (as rich-text
editors, Word and wiki exports write headings) or ``<h2><table>...</table></h2>`` became an
empty heading and a paragraph, so the section had no title and its text was filed under the
previous heading. :func:`nest_paragraphs_in_headings` writes these elements (and a table's
rows and cells) inside a closed heading as ``div`` elements, which lxml keeps in the heading
(a block boundary there still separates words; a heading is read as one line anyway), so
both tree builders give the heading its title. A heading left open ends at the next
heading started right in it, as in browsers (lxml nested the second in the first), and an
open ``dt``/``dd`` at the next term or definition (:func:`close_definitions`). Linear time.

Example::

    from llama_index_ragtune.node_parser.html_lxml_repairs import nest_paragraphs_in_headings

    nest_paragraphs_in_headings("<h2><p>Shipping</p></h2><p>Two days.</p>")
    # '<h2><div>Shipping</div></h2><p>Two days.</p>'
"""

from __future__ import annotations

import re

from llama_index_ragtune.node_parser.html_parser_repairs import close_implied_elements

_HEADING_START = re.compile(r"<h[1-6](?=[\s/>])[^<>]*>", re.I)
#: Any heading end tag ends an open heading (HTML standard).
_HEADING_END = re.compile(r"</h[1-6]\s*>", re.I)
#: The start tags at which lxml ends an open heading (found by parsing each HTML element in
#: an ``h2``), and the parts of a table, renamed with it so that lxml keeps the cells' text.
HEADING_BREAKERS = ("p", "li", "table", "form", "fieldset")
_TABLE_PARTS = ("caption", "thead", "tbody", "tfoot", "tr", "td", "th")
_PARAGRAPH_TAG = re.compile(
    rf"<(/?)(?:{'|'.join(HEADING_BREAKERS + _TABLE_PARTS)})(?=[\s/>])", re.I
)
#: A start or end tag: ``/`` if an end tag, the name, ``/`` if self-closing.
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)[^<>]*?(/?)>")
_VOID = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
    "track", "wbr",
})  # fmt: skip
#: Raw text that shows markup literally, or content where a rename could matter: a page
#: holding one is left as it is.
_LITERAL_MARKUP = re.compile(r"<(?:xmp|plaintext|!\[CDATA\[)", re.I)
#: A heading whose content holds one of these is left as it is (a comment, a script or
#: foreign content may hold a ``<p`` that is no paragraph).
_NOT_PLAIN = re.compile(
    r"<(?:!--|script|style|textarea|title|svg|math|template|noscript|iframe|noembed|noframes)",
    re.I,
)


def nest_paragraphs_in_headings(markup: str) -> str:
    """``markup`` with the ``<p>`` / ``</p>`` tags (and those of :data:`HEADING_BREAKERS` and
    table parts) inside each closed heading element written as ``<div>`` / ``</div>`` (see
    the module docstring); a heading never closed before the next one starts is ended
    there when every element opened in it is closed (the next heading starts right in it,
    which ends it in browsers, where lxml nests it: ``<h2>Old<h3>New</h3>`` was one heading
    "Old New"); a heading holding comments, scripts or foreign content is left as it is,
    and so is a page with ``xmp`` / ``plaintext`` / CDATA. Linear: each heading's content is scanned
    once, up to the next heading's start.

    Example::

        nest_paragraphs_in_headings("<h1 id=t><P class=x>Title</P></h1>")
        # '<h1 id=t><div class=x>Title</div></h1>'
        nest_paragraphs_in_headings("<h2><table><tr><td>Fees</table></h2>")
        # '<h2><div><div><div>Fees</div></div></div></h2>'
    """
    if not isinstance(markup, str) or _LITERAL_MARKUP.search(markup):
        return markup
    parts: list[str] = []
    position = 0
    heading = _HEADING_START.search(markup)
    while heading is not None:
        following = _HEADING_START.search(markup, heading.end())
        limit = following.start() if following else len(markup)
        end = _HEADING_END.search(markup, heading.end(), limit)
        if end is not None:
            content = markup[heading.end() : end.start()]
            if _PARAGRAPH_TAG.search(content) and not _NOT_PLAIN.search(content):
                parts += [markup[position : heading.end()], _as_divs(content)]
                position = end.start()
        elif following is not None:  # never closed: a heading started right in it ends it
            content = markup[heading.end() : following.start()]
            if not _NOT_PLAIN.search(content) and _all_closed(content):
                parts += [markup[position : following.start()], f"</{heading.group()[1:3]}>"]
                position = following.start()
        heading = following
    if not parts:
        return markup
    parts.append(markup[position:])
    return "".join(parts)


def _all_closed(content: str) -> bool:
    """True when every element started in ``content`` ends in it, in order (void elements
    aside): a heading start after it is then right in the heading."""
    open_names: list[str] = []
    for match in _TAG.finditer(content):
        closing, name, self_closing = match.group(1), match.group(2).lower(), match.group(3)
        if closing:
            if not open_names or open_names.pop() != name:
                return False
        elif name not in _VOID and not self_closing:
            open_names.append(name)
    return not open_names


def _as_divs(content: str) -> str:
    """``content`` with its paragraph (list item, table, form) tags as ``div`` tags, those left
    open closed at its end (a ``</h2>`` ends them in browsers, where lxml would keep the
    heading open)."""
    opened = closed = 0

    def renamed(match: re.Match) -> str:
        nonlocal opened, closed
        if match.group(1):
            closed += 1
        else:
            opened += 1
        return f"<{match.group(1)}div"

    content = _PARAGRAPH_TAG.sub(renamed, content)
    return content + "</div>" * max(0, opened - closed)


_DEFINITION_TAG = re.compile(r"<(/?)d[dt](?=[\s/>])", re.I)
_DEFINITIONS = frozenset({"dt", "dd"})


def close_definitions(markup: str) -> str:
    """``markup`` with the ``</dt>`` / ``</dd>`` that browsers imply written out where a page
    leaves them open: lxml nests ``<dd>b`` in an open ``<dd>a`` (and a ``dt`` in a ``dt``),
    so a ``<dd hidden>`` left open hid the definitions after it. Only a page with more
    ``<dt>``/``<dd>`` start tags than end tags is read (by ``html.parser``'s tokenizer, see
    :func:`~.html_parser_repairs.close_implied_elements`); linear time.

    Example::

        close_definitions("<dl><dt>Fee<dd hidden>Old<dd>Two pounds</dl>")
        # '<dl><dt>Fee</dt><dd hidden>Old</dd><dd>Two pounds</dl>'
    """
    if not isinstance(markup, str) or _LITERAL_MARKUP.search(markup):
        return markup
    tags = [match.group(1) for match in _DEFINITION_TAG.finditer(markup)]
    if 2 * tags.count("/") >= len(tags):
        return markup
    return close_implied_elements(markup, write=_DEFINITIONS)
