"""Markup repairs so that lxml reads a page's headings as browsers do.

lxml (libxml2's HTML 4 parser) ends an open ``h1``..``h6`` at a ``<p>`` start tag, where the
HTML standard nests the paragraph in the heading: ``<h2><p>Shipping</p></h2>`` (as rich-text
editors, Word and wiki exports write headings) became an empty heading and a paragraph, so
the section had no title and its text was filed under the previous heading.
:func:`nest_paragraphs_in_headings` writes the paragraphs inside a closed heading as
``div`` elements, which lxml keeps in the heading (a block boundary there still separates
words), so both tree builders give the heading its title. Linear time.

Example::

    from llama_index_ragtune.node_parser.html_lxml_repairs import nest_paragraphs_in_headings

    nest_paragraphs_in_headings("<h2><p>Shipping</p></h2><p>Two days.</p>")
    # '<h2><div>Shipping</div></h2><p>Two days.</p>'
"""

from __future__ import annotations

import re

_HEADING_START = re.compile(r"<h[1-6](?=[\s/>])[^<>]*>", re.I)
#: Any heading end tag ends an open heading (HTML standard).
_HEADING_END = re.compile(r"</h[1-6]\s*>", re.I)
_PARAGRAPH_TAG = re.compile(r"<(/?)p(?=[\s/>])", re.I)
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
    """``markup`` with the ``<p>`` / ``</p>`` tags inside each closed heading element written
    as ``<div>`` / ``</div>`` (see the module docstring); a heading never closed before the
    next one starts, or holding comments, scripts or foreign content, is left as it is, and so
    is a page with ``xmp`` / ``plaintext`` / CDATA. Linear: each heading's content is scanned
    once, up to the next heading's start.

    Example::

        nest_paragraphs_in_headings("<h1 id=t><P class=x>Title</P></h1>")
        # '<h1 id=t><div class=x>Title</div></h1>'
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
        heading = following
    if not parts:
        return markup
    parts.append(markup[position:])
    return "".join(parts)


def _as_divs(content: str) -> str:
    """``content`` with its paragraph tags as ``div`` tags, those left open closed at its end
    (a ``</h2>`` ends them in browsers, where lxml would keep the heading open)."""
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
