"""The block model of the structured node parsers: one structural unit of a document.

A parser (Markdown, HTML) turns a document into :class:`Block` objects; the
splitter (:mod:`~llama_index_ragtune.node_parser.split`) cuts a block that is
too large, and :mod:`~llama_index_ragtune.node_parser.structure` groups and packs
them into nodes.

Example::

    from llama_index_ragtune.node_parser.block import Block

    Block("heading", "# Returns", level=1, title="Returns")
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Block", "InnerFence", "visible_title"]

#: Invisible format characters (zero-width space, soft hyphen, bidi marks and
#: isolates, word joiner, BOM) that would make a section title differ from what a
#: reader sees. ZWJ/ZWNJ are kept: they shape emoji and some scripts.
#: Not ``llama_index_ragtune._invisible`` on purpose: that set serves comparisons (twin
#: questions, answer matching) and drops every format character and variation selector;
#: a title is shown, so only characters that neither draw nor change how their neighbours
#: draw go (ZWJ/ZWNJ, variation selectors, tag characters of flag emoji and visible format
#: marks such as the Arabic number sign U+0600 stay). Every character here is in that set.
_INVISIBLE = re.compile("[\u00ad\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def visible_title(text: str) -> str:
    """A heading's title as a reader sees it: invisible format characters removed, spaces collapsed.

    Example::

        visible_title("Re\\u200bturns \\u200f ")     # 'Returns'
    """
    return " ".join(_INVISIBLE.sub("", text).split())


@dataclass(frozen=True)
class InnerFence:
    """A fenced code (or ``$$`` math) block inside a container (list item, blockquote).

    Offsets are local to the container's text: ``content_start`` is the first line after
    the opening fence, ``content_end`` the start of the closing fence line (the end of the
    container when the fence never closes). ``opening`` / ``closing`` are the fence lines
    repeated around a part of the code, with the container's prefix (quote markers kept,
    list markers as spaces); ``closing`` is empty for a fence that never closes.

    Example::

        InnerFence(7, 13, "> ```", "> ```", "> ```")
    """

    content_start: int
    content_end: int
    opening: str
    closing: str
    short_opening: str


@dataclass
class Block:
    """One structural unit of a document, already rendered as text.

    ``units`` are local ``(start, end)`` spans of ``text`` at which the block may
    be split (list items, table body rows, code lines); prose blocks leave it
    empty. ``text[:head]`` is repeated at the top of every part when the block
    is split (a table's header and delimiter rows, a code block's opening
    fence) and ``text[tail:]`` at the bottom (a closing fence). When
    ``head_text`` is set it is used instead of ``text[:head]`` in every part
    (a Markdown table's header with a compact delimiter row: a long run of
    dashes costs one token per dash and tells the embedding model nothing).
    ``short_head``, when set, is repeated instead at the top of the second and
    later parts when ``text[:head]`` is too long to repeat (a code fence's
    opening line without its attributes, ```` ```python ```` for
    ```` ```python title="..." linenums="1" ````), so that every part is still a
    fenced block. ``inner_fences`` are the code fences inside a list or blockquote
    (:class:`InnerFence`), re-fenced in every part of them when the container is split;
    ``repeat_quote_markers`` says whether a part that starts inside a quoted line repeats
    the line's ``>`` markers (the splitter turns it off when they cost too much).
    """

    kind: str
    text: str
    start: int | None = None
    units: list[tuple[int, int]] = field(default_factory=list)
    head: int = 0
    tail: int | None = None
    level: int = 0
    title: str = ""
    head_text: str | None = None
    short_head: str | None = None
    inner_fences: tuple[InnerFence, ...] = ()
    repeat_quote_markers: bool = True
