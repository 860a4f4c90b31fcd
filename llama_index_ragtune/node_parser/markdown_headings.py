"""Markdown heading titles written in other syntaxes: a raw HTML heading element on its
own (``<h1 align="center">Shop</h1>``), and a heading's trailing attribute list
(``## Refunds {#refunds}``) that is an anchor, not part of the title.

Example::

    from llama_index_ragtune.node_parser.markdown_headings import html_heading, without_attributes

    html_heading("<h2 id='r'>Refunds &amp; returns</h2>")   # (2, 'Refunds & returns')
    without_attributes("Refunds {#refunds .small}")          # 'Refunds'
"""

from __future__ import annotations

import html
import re

from llama_index_ragtune.node_parser.block import visible_title

#: A heading's trailing attribute list (Pandoc / kramdown / MkDocs / Hugo: ``{#id .class
#: key=value}``, ``{: #id}``, ``{-}``): an anchor for links, not part of the title.
_HEADING_ATTRIBUTE = r"(?:[#.][\w:-]+|[\w-]+=(?:\"[^\"\r\n]*\"|'[^'\r\n]*'|[^\s}\"']+)|-)"
_HEADING_ATTRIBUTES = re.compile(
    rf"[ \t]\{{:?[ \t]*{_HEADING_ATTRIBUTE}(?:[ \t]+{_HEADING_ATTRIBUTE})*[ \t]*\}}[ \t]*"
)
#: A raw HTML block that is one heading element, its image alt texts and its tags.
_HTML_HEADING = re.compile(r"\s*<(h([1-6]))\b[^>]*>(.*?)</\1\s*>\s*", re.S | re.I)
#: (Every scan stops at the next ``<``: a run of unclosed tags is read in linear time.)
#: The alt value may be unquoted (``<img src=logo.png alt=Acme>``), as HTML allows.
_HTML_IMAGE_ALT = re.compile(
    r"<img\b[^<>]*?\balt\s*=\s*(?:\"([^\"<>]*)\"|'([^'<>]*)'|([^\s\"'=<>`]++))[^<>]*>", re.I
)
_HTML_TAG = re.compile(r"<(br\b)?[^<>]*>", re.I)
_HEADING_OPEN = re.compile(r"<(h[1-6])\b[^<>]*>", re.I)


def html_heading(block: str) -> tuple[int, str]:
    """The level and title of a raw HTML block that is one heading element
    (``<h1 align="center">Shop</h1>``, as READMEs and converted pages write them), or that
    holds one with nothing visible before it (``<div align="center"><h1>Shop</h1><p>Fresh
    food</p></div>``), else ``(0, "")``: it opens a section like ``#`` does (an image's alt
    text is its title). A block of two headings is left as HTML."""
    found = _HTML_HEADING.fullmatch(block) or _HTML_HEADING.fullmatch(_wrapped_heading(block))
    if found is None or "</h" in found.group(3).lower():  # two headings: left as HTML
        return 0, ""
    inner = _HTML_IMAGE_ALT.sub(_alt_text, found.group(3))
    inner = _HTML_TAG.sub(lambda m: " " if m.group(1) else "", inner)  # <br>: a space
    return int(found.group(2)), visible_title(html.unescape(inner))


def _alt_text(match: re.Match) -> str:
    return f" {match.group(1) or match.group(2) or match.group(3) or ''} "


def _wrapped_heading(block: str) -> str:
    """The one heading element of an HTML block that starts with it (only tags, comments
    and spaces before it, no other heading after it), else ''. Linear: one search each."""
    opener = _HEADING_OPEN.search(block)
    if opener is None:
        return ""
    before = _HTML_IMAGE_ALT.sub(_alt_text, block[: opener.start()])
    comment = before.rfind("<!--")
    if comment >= 0 and before.find("-->", comment + 4) < 0:  # the heading is commented out
        return ""
    if visible_title(html.unescape(_HTML_TAG.sub("", _without_comments(before)))):
        return ""
    closer = re.compile(rf"</{opener.group(1)}\s*>", re.I).search(block, opener.end())
    if closer is None or _HEADING_OPEN.search(block, closer.end()):
        return ""
    return block[opener.start() : closer.end()]


def _without_comments(markup: str) -> str:
    """``markup`` without its ``<!-- -->`` comments (one left open runs to the end); linear."""
    parts, position = [], 0
    while (start := markup.find("<!--", position)) >= 0:
        parts.append(markup[position:start])
        end = markup.find("-->", start + 4)
        position = len(markup) if end < 0 else end + 3
    parts.append(markup[position:])
    return "".join(parts)


def without_attributes(heading: str) -> str:
    """A heading's inline text without its trailing attribute list (``Returns {#returns}``
    reads "Returns"); braces that are no attribute list (``{like this}``) are kept.
    Only the last `` {`` is tried: linear in the heading's length."""
    brace = max(heading.rfind(" {"), heading.rfind("\t{"))
    if brace > 0 and _HEADING_ATTRIBUTES.fullmatch(heading, brace):
        return heading[:brace]
    return heading
