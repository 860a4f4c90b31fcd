"""Splitting one block into parts that fit a token budget.

A block is split at the coarsest boundaries that work, one ladder per kind of
block (every level keeps all the text of the level above):

- lists, definition lists, tables, code and front matter: their units (list
  items, definition groups, table rows, code lines), then lines, then
  sentences, then words, then characters;
- blockquotes: the blocks they hold, then lines, then sentences, words and
  characters (a part that starts inside a line repeats the line's ``>`` markers);
- prose (paragraphs, headings, raw HTML): blank lines, then
  sentences, then words, then characters.

A word over the budget is first cut after runs of punctuation (:func:`_mark_spans`), and
at characters only where a piece between them is still too large.

Only a part that is still too large goes down a level, and consecutive parts
are packed greedily up to the budget. Every size decision counts the exact
text that will be emitted, so the cap holds for any tokenizer. A part cut
below the natural level of its block (a single list item, table row, code
line or, for prose, a single sentence longer than the budget) is flagged
``partial``; a part over the budget (``oversized``) can only be a single
character that alone exceeds the budget (a budget of a few tokens).

A table's header rows and a code (or math) block's fences are repeated in every
part while they take at most a third of the budget; a code fence whose opening
line is longer than that repeats its bare fence (``Block.short_head``) in the
later parts while that fits, so every part is a fenced block on its own; a larger
header is split like any other line instead, so repeated headers never multiply
the output. A code fence inside a list or blockquote (``Block.inner_fences``) is
closed at the end of a part that stops inside it and reopened at the top of the
next, with the container's prefix, under the same limit.

Example::

    from llama_index_ragtune.node_parser.split import split_block
    from llama_index_ragtune.node_parser.block import Block

    line = "- " + " ".join(f"w{i}" for i in range(30))
    pieces = split_block(Block("list", line, units=[(0, len(line))]), 10, lambda t: len(t.split()))
    [len(p.text.split()) for p in pieces]    # [10, 10, 10, 1]
    pieces[0].partial                        # True: one list item cut at words
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from llama_index_ragtune.node_parser.containers import (
    CONTAINER_KINDS,
    affordable_context,
    context_after,
    context_before,
    fence_line_boundary,
)
from llama_index_ragtune.node_parser.tokens import CharBoundedCounter

if TYPE_CHECKING:  # pragma: no cover
    from llama_index_ragtune.node_parser.block import Block

TokenCounter = Callable[[str], int]
Span = tuple[int, int]

#: Block kinds whose units and lines are natural boundaries (cut below them: ``partial``).
LINE_KINDS = frozenset({"list", "definition_list", "table", "code", "math", "front_matter"})
#: Block kinds of prose: cut at sentences is not ``partial``, below them is (a blockquote is
#: first cut between the blocks it holds and its lines, see ``_ladder``).
PROSE_KINDS = frozenset({"heading", "paragraph", "blockquote", "html"})
#: A repeated header/fence may take at most this share of the budget.
MAX_REPEATED_SHARE = 3

_BLANK_LINE = re.compile(r"(?:\r\n?|\n)[ \t>]*(?:\r\n?|\n)")  # any line ends (CR too)
# A sentence ends at ". ! ? …" (plus closing quotes/brackets) before whitespace, or at a
# CJK full stop "。！？", which takes no space after it. A match starts only where a run of
# marks starts: tried inside a run as well, each of 20,000 dots re-read the rest (6.8 s).
_SENTENCE_END = re.compile(
    r"(?<![.!?\u2026])[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s)"
    r"|[\u3002\uff01\uff1f]+[\"'\u201d\u2019)\]\u300d\u300f\uff09]*"
)
_WORD = re.compile(r"\S+")
#: Punctuation (ASCII, General Punctuation, CJK and full-width commas and stops): a word
#: over the budget (a table row of 10,000 cells, a long URL or path, CJK without spaces) is
#: cut after a run of it before any cut at a character: "|c1074|" is not cut into "c10", "74".
_MARKS = "!-/:-@\\[-`{-~\u2010-\u2027\u2030-\u205e\u3001\u3002\uff0c\uff1b"
_MARK_PIECE = re.compile(f"[^{_MARKS}]*[{_MARKS}]+|[^{_MARKS}]+")
_LINE = re.compile(r"[^\r\n]+")
_JOINERS = frozenset("\u200c\u200d")


@dataclass
class Piece:
    """A part of one block that fits the budget (unless ``oversized``).

    ``partial``: the part holds only a fragment of one unit (list item, table row,
    code line, or a prose sentence) that was larger than the budget on its own.
    """

    text: str
    kind: str
    tokens: int
    start: int | None = None
    end: int | None = None
    verbatim: bool = False
    oversized: bool = False
    partial: bool = False


# ------------------------------------------------------------- boundaries


def _trim(text: str, a: int, b: int) -> Span | None:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return (a, b) if a < b else None


def _pieces_between(text: str, a: int, b: int, cuts: list[int]) -> list[Span]:
    bounds = [a, *cuts, b]
    spans = (_trim(text, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True))
    return [span for span in spans if span is not None]


def _paragraph_spans(block: Block, span: Span) -> Sequence[Span]:
    cuts = [m.end() for m in _BLANK_LINE.finditer(block.text, *span)]
    return _pieces_between(block.text, *span, cuts)


def _sentence_spans(block: Block, span: Span) -> Sequence[Span]:
    cuts = [m.end() for m in _SENTENCE_END.finditer(block.text, *span)]
    return _pieces_between(block.text, *span, cuts)


def _word_spans(block: Block, span: Span) -> Sequence[Span]:
    return [m.span() for m in _WORD.finditer(block.text, *span)]


def _mark_spans(block: Block, span: Span) -> Sequence[Span]:
    """Pieces of a word ending after each run of punctuation (``|c1|c2|`` reads "|", "c1|", "c2|")."""
    return [m.span() for m in _MARK_PIECE.finditer(block.text, *span)]


def _line_spans(block: Block, span: Span) -> Sequence[Span]:
    """Non-blank lines, with their indentation (a nested list item keeps its place)."""
    out = []
    for m in _LINE.finditer(block.text, *span):
        a, b = m.span()
        while b > a and block.text[b - 1].isspace():
            b -= 1
        if block.text[a:b].strip():
            if out and block.inner_fences and fence_line_boundary(block, a):
                a = out.pop()[0]  # a bare fence line goes with the code line next to it
            out.append((a, b))
    return out


def _unit_spans(block: Block, span: Span) -> Sequence[Span]:
    """The block's units inside ``span``, plus any text between them as units of its own."""
    a, b = span
    out: list[Span] = []
    pos = a
    for u0, u1 in block.units:
        u0, u1 = max(u0, pos), min(u1, b)
        if u1 <= u0:
            continue
        gap = _trim(block.text, pos, u0)
        if gap is not None:
            out.append(gap)
        if block.text[u0:u1].strip():  # the unit as given (a code line keeps its indentation)
            out.append((u0, u1))
        pos = u1
    rest = _trim(block.text, pos, b)
    return [*out, rest] if rest is not None else out


class _Chars(Sequence):
    """Every character of ``text[a:b]`` as a one-character span (lazily: huge words stay cheap)."""

    def __init__(self, a: int, b: int):
        self.a, self.b = a, b

    def __len__(self) -> int:
        return self.b - self.a

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            raise TypeError("_Chars does not support slicing")
        if k < 0:
            k += len(self)
        return (self.a + k, self.a + k + 1)


def _char_spans(block: Block, span: Span) -> Sequence[Span]:
    return _Chars(*span)


def _cluster_end(text: str, lo: int, cut: int) -> int:
    """Move ``cut`` back so it does not split a character from its combining marks or joiners."""
    at = cut
    while at > lo and at < len(text) and (
        unicodedata.combining(text[at]) or text[at] in _JOINERS or text[at - 1] in _JOINERS
        or 0xFE00 <= ord(text[at]) <= 0xFE0F
    ):  # fmt: skip
        at -= 1
    return at if at > lo else cut


_PROSE_LADDER = (_paragraph_spans, _sentence_spans, _word_spans, _mark_spans, _char_spans)
_LINE_LADDER = (
    _unit_spans,
    _line_spans,
    _sentence_spans,
    _word_spans,
    _mark_spans,
    _char_spans,
)
#: Levels at and below this index of a ladder cut a natural unit (the part is ``partial``).
_NATURAL_DEPTH = 2


def _ladder(kind: str) -> tuple[tuple, int]:
    """The boundaries a block of ``kind`` is cut at, coarsest first, and its natural depth
    (a blockquote's units are the blocks it holds; a sentence of a quoted line is whole)."""
    if kind == "blockquote":
        return _LINE_LADDER, _NATURAL_DEPTH + 1
    return (_LINE_LADDER if kind in LINE_KINDS else _PROSE_LADDER), _NATURAL_DEPTH


# -------------------------------------------------------------- rendering


def _content_bounds(block: Block) -> Span:
    tail = len(block.text) if block.tail is None else block.tail
    return block.head, tail


def render_span(
    block: Block, a: int, b: int, region: Span | None = None
) -> tuple[str, int, int, bool]:
    """Text of the part of ``block`` covering ``text[a:b]``, with the repeated head/tail.

    Returns ``(text, begin, end, verbatim)`` where ``block.text[begin:end]`` is the
    part's own span and ``verbatim`` says the text is exactly that span.

    Example::

        block = Block("code", "```\\nx = 1\\ny = 2\\n```", units=[(4, 9), (10, 15)], head=4, tail=16)
        render_span(block, 10, 15)[0]     # '```\\ny = 2\\n```'
    """
    text = block.text
    lo, hi = _content_bounds(block)
    if region is None:  # the content without surrounding whitespace (pass it when known)
        region = _trim(text, lo, hi) or (lo, lo)
    at_top = a <= region[0]
    at_bottom = b >= region[1]
    begin = 0 if at_top else a
    end = len(text) if at_bottom else b
    if at_top and (block.head_text is None or block.head_text == block.short_head):
        prefix, body_start = "", 0  # the first part keeps its own head (a short head too)
    else:
        head = text[:lo] if block.head_text is None else block.head_text
        prefix = head.rstrip() + "\n" if head.strip() else ""
        body_start = a
    if at_bottom:
        suffix, body_end = "", len(text)
    else:
        suffix = "\n" + text[hi:].strip() if text[hi:].strip() else ""
        body_end = b
    body = text[body_start:body_end]
    if prefix or suffix:
        body = body.strip("\n")
    if block.kind in CONTAINER_KINDS:
        lead = "" if at_top else context_before(block, a)
        trail = "" if at_bottom else context_after(block, b)
        prefix, suffix = prefix + lead, trail + suffix
    return prefix + body + suffix, begin, end, not (prefix or suffix)


def _repeated_tokens(block: Block, count: TokenCounter) -> int:
    lo, hi = _content_bounds(block)
    head = block.text[:lo] if block.head_text is None else block.head_text
    tail = block.text[hi:]
    repeated = (head.strip() + "\n" if head.strip() else "") + tail.strip()
    return count(repeated) if repeated else 0


def _without_repetition(block: Block) -> Block:
    """The block with its header/fences treated as ordinary lines (never repeated)."""
    return replace(block, head=0, tail=None, head_text=None, short_head=None)


def _with_short_head(block: Block, budget: int, count: TokenCounter) -> Block | None:
    """``block`` repeating its ``short_head`` (not its full first line) in later parts, when
    that fits a third of ``budget`` and the full first line leaves room in the first part."""
    if block.short_head is None or block.head_text is not None:
        return None
    short = replace(block, head_text=block.short_head)
    opening = count(
        block.text[: block.head].strip() + "\n" + block.text[_content_bounds(block)[1] :].strip()
    )
    if _repeated_tokens(short, count) * MAX_REPEATED_SHARE > budget:
        return None
    if opening * MAX_REPEATED_SHARE > 2 * budget:
        return None
    return short


# ---------------------------------------------------------------- fitting


def longest_fit(
    i: int, n: int, guess: int, measure: Callable[[int, int], int], limit: int
) -> tuple[int, int]:
    """The largest ``j`` in ``(i, n]`` with ``measure(i, j) <= limit``, and that measure.

    Probes ``i + guess`` first, then interpolates from the measured tokens (sizes
    grow about linearly with the number of items), falling back to bisection
    after a few probes, so a part costs a few counts of about its own size
    whatever the number of items. Returns ``(i, 0)`` when even
    ``measure(i, i + 1)`` is over the limit.

    Example::

        longest_fit(0, 6, 1, lambda i, j: j - i, 4)     # (4, 4)
    """
    lo, lo_tokens = i, 0  # largest end known to fit
    hi = n + 1  # smallest end known not to fit
    j = min(n, i + max(1, guess))
    probes = 0
    while lo + 1 < hi:
        tokens = measure(i, j)
        probes += 1
        if tokens <= limit:
            lo, lo_tokens = j, tokens
            if tokens == limit or j == n:
                break
        else:
            hi = j
        if lo + 1 >= hi:
            break
        if probes < 4 and tokens > 0:  # interpolate: tokens grow about linearly with items
            target = i + int((j - i) * limit / tokens)
            if tokens <= limit:
                target = max(target, lo + 1) if hi > n else min(max(target, lo + 1), hi - 1)
                target = min(target, n, i + 2 * (j - i) + 1) if hi > n else target
            else:
                target = min(max(target, lo + 1), hi - 1)
            j = target
        else:
            j = (lo + hi) // 2 if hi <= n else min(n, i + 2 * (lo - i) + 1)
    return lo, lo_tokens


@dataclass
class _Group:
    a: int
    b: int
    tokens: int
    partial: bool
    oversized: bool = False


def _split(
    block: Block,
    span: Span,
    level: int,
    budget: int,
    room: int | None,
    count: TokenCounter,
    out: list[_Group],
    region: Span,
) -> None:
    ladder, natural_depth = _ladder(block.kind)
    kids: Sequence[Span] = ()
    while level < len(ladder):
        kids = ladder[level](block, span)
        if len(kids) > 1:
            break
        if len(kids) == 1:
            span = kids[0]
        level += 1
    if level >= len(ladder):  # a single character over the budget: nothing left to cut
        tokens = count(render_span(block, *span, region)[0])
        out.append(_Group(span[0], span[1], tokens, True, tokens > budget))
        return

    def measure(i: int, j: int) -> int:
        return count(render_span(block, kids[i][0], kids[j - 1][1], region)[0])

    partial = level >= natural_depth
    chars = ladder[level] is _char_spans
    n = len(kids)
    total = measure(0, n)  # one count of the whole span gives a first guess of a part's size
    i, guess = 0, max(1, n * budget // max(total, 1))
    while i < n:
        limit = room if (room is not None and not out) else budget
        j, tokens = longest_fit(i, n, guess, measure, limit)
        if j == i and limit != budget:  # not even one part fits the room left: use a fresh node
            j, tokens = longest_fit(i, n, guess, measure, budget)
        if j == i:
            _split(block, kids[i], level + 1, budget, room, count, out, region)
            i += 1
            continue
        if chars and j < n:
            cut = _cluster_end(block.text, kids[i][0], kids[j - 1][1])
            if cut != kids[j - 1][1]:
                j = cut - kids[0][0]
                tokens = measure(i, j)
        out.append(_Group(kids[i][0], kids[j - 1][1], tokens, partial))
        guess, i = j - i, j


def _widened(block: Block, region: Span, budget: int, count: TokenCounter) -> Span:
    """``region`` (the content without surrounding whitespace) grown over the whitespace
    before or after it when that whitespace alone costs more than a third of the budget
    (thousands of spaces of indentation, counted by length). Rendered against it, the
    first and last parts start and end at their own text, without that whitespace, instead
    of carrying it into a part over the budget that no further cut could shrink
    (``render_span`` gives the part at the top or bottom of the region everything up to
    the block's edge)."""
    lo, hi = _content_bounds(block)
    a, b = region
    if a > lo and count(block.text[lo:a]) * MAX_REPEATED_SHARE > budget:
        a = lo
    if b < hi and count(block.text[b:hi]) * MAX_REPEATED_SHARE > budget:
        b = hi
    return a, b


def split_block(
    block: Block, budget: int, count: TokenCounter, room: int | None = None
) -> list[Piece]:
    """Split ``block`` into pieces of at most ``budget`` tokens at its natural boundaries.

    A block that fits ``budget`` is returned whole. One that must be split anyway
    gets a first piece of at most ``room`` tokens (what is left in the node being
    filled, e.g. after the section heading) when its first part fits there.

    Example::

        block = Block("paragraph", "One two. Three four five. Six.")
        [p.text for p in split_block(block, 3, lambda t: len(t.split()))]
        # ['One two.', 'Three four five.', 'Six.']
    """
    offset = block.start
    if isinstance(count, CharBoundedCounter):  # huge texts are over the budget by length alone
        count = count.over(budget)

    def piece(text: str, begin: int, end: int, verbatim: bool, group: _Group) -> Piece:
        oversized = group.tokens > budget
        if offset is None:
            return Piece(
                text, block.kind, group.tokens, None, None, False, oversized, group.partial
            )
        return Piece(
            text, block.kind, group.tokens, offset + begin, offset + end, verbatim, oversized,
            group.partial,
        )  # fmt: skip

    lo, hi = _content_bounds(block)
    region = _trim(block.text, lo, hi)
    if region is None:  # nothing but head/tail (an empty code fence, a header-only table)
        tokens = count(block.text)
        if tokens <= budget or not block.text.strip():
            return [piece(block.text, 0, len(block.text), True, _Group(0, 0, tokens, False))]
    else:
        whole, begin, end, verbatim = render_span(block, *region)
        tokens = count(whole)
        if tokens <= budget:
            return [piece(whole, begin, end, verbatim, _Group(0, 0, tokens, False))]
    if region is not None and _repeated_tokens(block, count) * MAX_REPEATED_SHARE > budget:
        block = _with_short_head(block, budget, count) or block
    if region is None or _repeated_tokens(block, count) * MAX_REPEATED_SHARE > budget:
        block = _without_repetition(block)
        region = _trim(block.text, 0, len(block.text))
        if region is None:
            return []
    if block.kind in CONTAINER_KINDS:
        block = affordable_context(block, budget, count, MAX_REPEATED_SHARE)
    groups: list[_Group] = []
    if room is not None and not 0 < room < budget:
        room = None
    rendered = _widened(block, region, budget, count)  # what parts are rendered against
    _split(block, region, 0, budget, room, count, groups, rendered)
    pieces = []
    for group in groups:
        text, begin, end, verbatim = render_span(block, group.a, group.b, rendered)
        pieces.append(piece(text, begin, end, verbatim, group))
    return pieces


def clip_to_tokens(text: str, limit: int, count: TokenCounter, mark: str = "\u2026") -> str:
    """``text`` shortened at a word (else character) boundary to at most ``limit`` tokens, ``mark`` appended.

    Example::

        clip_to_tokens("Returns and refunds for opened items", 4, lambda t: len(t.split()))
        # 'Returns and refunds for…'
    """
    if count(text) <= limit:
        return text
    words = [m.span() for m in _WORD.finditer(text)]
    for items in (words, _Chars(*words[0]) if words else ()):
        if not items:
            continue

        def measure(i: int, j: int, items: Sequence[Span] = items) -> int:
            return count(text[items[0][0] : items[j - 1][1]] + mark)

        j, _ = longest_fit(0, len(items), 1, measure, limit)
        if j:
            return text[items[0][0] : items[j - 1][1]] + mark
    return mark
