"""Container context of a list or blockquote part: the fences and ``>`` markers it repeats.

When a list or blockquote is split (:mod:`.split`), a part that stops inside a code
fence the container holds (``Block.inner_fences``) gets the fence's closing line, the
next part its opening line, both with the container's prefix (quote markers kept, list
markers as spaces); a part that starts inside a quoted line repeats the line's ``>``
markers. A fence line is never left alone at the edge of a part.

Example::

    from llama_index_ragtune.node_parser.markdown import markdown_blocks

    block = markdown_blocks("> ```\\n> a = 1\\n> b = 2\\n> ```")[0]
    context_before(block, block.text.index("> b"))     # '> ```\\n'
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from llama_index_ragtune.node_parser.block import Block, InnerFence

_LINE_END = re.compile(r"\r\n?|\n")
#: The ``>`` markers (and the space after them) at the start of a line of a quote.
_QUOTE_MARKERS = re.compile(r"(?:[ \t]*>)+[ \t]?")
#: The quote and list markers (a list marker is followed by a space or the line's end, as in
#: CommonMark: the "---" of a table's delimiter row is none) a line of a container starts with.
CONTAINER_PREFIX = re.compile(r"(?:[ \t]*(?:>|(?:[-+*]|\d{1,9}[.)])(?=\s|$)))*[ \t]*")
_LINE_QUOTE_MARKERS = re.compile(r"(?:^|(?<=[\r\n]))(?:[ \t]*>)+[ \t]?", re.M)
#: Block kinds whose lines carry a container prefix (``>`` markers, list indentation).
CONTAINER_KINDS = frozenset({"list", "definition_list", "blockquote"})


def fence_line_boundary(block: Block, line_start: int) -> bool:
    """Whether the line at ``line_start`` is the first code line or the closing line of an
    inner fence (a cut before it would leave a part ending at a bare fence line)."""
    fences = block.inner_fences
    k = bisect_right(fences, line_start, key=lambda fence: fence.content_start) - 1
    if k >= 0 and line_start == fences[k].content_start:
        return True
    return k >= 0 and line_start == fences[k].content_end


@lru_cache(maxsize=4)
def _line_starts(text: str) -> list[int]:
    """Offsets of the lines of ``text`` (cached: a long block is rendered many times)."""
    return [0, *(m.end() for m in _LINE_END.finditer(text))]


def _fence_at(block: Block, at: int) -> InnerFence | None:
    """The inner fence whose code holds offset ``at`` (with its closing line not reached)."""
    fences = block.inner_fences
    k = bisect_right(fences, at, key=lambda fence: fence.content_start) - 1
    if k >= 0 and at < fences[k].content_end:
        return fences[k]
    return None


def context_before(block: Block, a: int) -> str:
    """What a part of a container starting at ``a`` repeats before its text: the opening
    line of the code fence it starts in, and the line's ``>`` markers when it starts
    inside a line."""
    fence = _fence_at(block, a) if block.inner_fences else None
    lead = fence.opening + "\n" if fence is not None and fence.opening else ""
    text = block.text
    if block.repeat_quote_markers and a > 0 and text[a - 1] not in "\r\n":
        starts = _line_starts(text)
        markers, prefix_end = _line_prefix(text, starts[bisect_right(starts, a) - 1])
        if markers and a > prefix_end:
            lead += markers  # not when the part starts in the markers themselves
    return lead


@lru_cache(maxsize=4)
def _line_prefixes(text: str) -> dict[int, tuple[str, int]]:
    """The memo of :func:`_line_prefix` for one container's text."""
    return {}


def _line_prefix(text: str, line_start: int) -> tuple[str, int]:
    """The ``>`` markers the line at ``line_start`` starts with and the end of its container
    prefix, read once per line: a line of thousands of markers (``> - > - ...``) split into
    many parts is not read again for each part (that was quadratic)."""
    prefixes = _line_prefixes(text)
    found = prefixes.get(line_start)
    if found is None:
        markers = _QUOTE_MARKERS.match(text, line_start)
        found = (markers.group() if markers else "", CONTAINER_PREFIX.match(text, line_start).end())
        prefixes[line_start] = found
    return found


def context_after(block: Block, b: int) -> str:
    """The closing line of the code fence a part of a container ends in (it ends before it)."""
    fence = _fence_at(block, b - 1) if block.inner_fences else None
    return "\n" + fence.closing if fence is not None and fence.closing else ""


def affordable_context(block: Block, budget: int, count: Callable[[str], int], share: int) -> Block:
    """``block`` repeating only the container context that fits a third of ``budget``: each
    inner fence's opening and closing lines (else its bare opening fence, else none),
    and the ``>`` markers of its most deeply quoted line."""
    fences = []
    for fence in block.inner_fences:
        kept = replace(fence, opening="", closing="")  # not repeated, still kept whole
        for opening in (fence.opening, fence.short_opening):
            if count(opening + "\n" + fence.closing) * share <= budget:
                kept = replace(fence, opening=opening)
                break
        fences.append(kept)
    deepest = max(
        (m.group() for m in _LINE_QUOTE_MARKERS.finditer(block.text)), key=len, default=""
    )
    markers = not deepest or count(deepest) * share <= budget
    return replace(block, inner_fences=tuple(fences), repeat_quote_markers=markers)
