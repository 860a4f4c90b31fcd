"""Block model, splitting and packing shared by the structured node parsers.

A parser turns a document into an ordered list of :class:`Block` objects
(headings, paragraphs, lists, tables, code, ...). This module then

1. groups the blocks into sections by their headings (:func:`group_sections`);
2. splits every block that is larger than the token budget at its natural
   boundaries (:func:`split_block`): list items, table rows (the header row is
   repeated in every part), code lines (the fences are repeated), and for prose
   paragraphs, then sentences, then words. A single line (or word) that is
   still too large is never cut and is flagged ``oversized``;
3. packs adjacent pieces of the same section greedily up to the budget
   (:func:`chunk_blocks`), so small paragraphs do not become tiny nodes.

Every size decision is checked with the real token counter on the exact text
that will be emitted, so the cap holds for any tokenizer.

Example::

    from llama_index_ragtune.node_parser.structure import Block, chunk_blocks

    blocks = [
        Block("heading", "# Returns", level=1, title="Returns"),
        Block("paragraph", "Unopened items can be returned within 30 days."),
    ]
    chunks = chunk_blocks(blocks, lambda section: 50, lambda text: len(text.split()))
    assert chunks[0].section_path == ("Returns",)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

TokenCounter = Callable[[str], int]

#: Block kinds that are never cut in the middle of a line.
LINE_KINDS = frozenset({"list", "definition_list", "table", "code", "front_matter"})
#: Block kinds split like prose: paragraphs, then sentences, then words.
PROSE_KINDS = frozenset({"heading", "paragraph", "blockquote", "html"})

_BLANK_LINE = re.compile(r"\n[ \t\r>]*\n")
# A sentence ends at ". ! ? …" (plus closing quotes/brackets) before whitespace, or at a
# CJK full stop "。！？", which takes no space after it.
_SENTENCE_END = re.compile(
    r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s)"
    r"|[\u3002\uff01\uff1f]+[\"'\u201d\u2019)\]\u300d\u300f\uff09]*"
)
_WORD = re.compile(r"\S+")
_LINE = re.compile(r"[^\n]+")


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


@dataclass
class Section:
    """Blocks under one heading; ``path`` is the heading chain including its own heading."""

    path: tuple[str, ...]
    blocks: list[Block]


@dataclass
class Piece:
    """A part of one block that fits the budget (unless ``oversized``)."""

    text: str
    kind: str
    tokens: int
    start: int | None = None
    end: int | None = None
    verbatim: bool = False
    oversized: bool = False


@dataclass
class Chunk:
    """The text of one output node with its section and source span."""

    text: str
    section_path: tuple[str, ...]
    block_types: list[str]
    tokens: int
    budget: int
    start: int | None = None
    end: int | None = None

    @property
    def oversized(self) -> bool:
        """True when the node is over its budget (one line or word that cannot be cut)."""
        return self.tokens > self.budget


def group_sections(blocks: Sequence[Block]) -> list[Section]:
    """Group blocks into sections; a heading closes every open heading of the same or a deeper level."""
    stack: list[tuple[int, str]] = []
    sections = [Section((), [])]
    for block in blocks:
        if block.kind == "heading":
            while stack and stack[-1][0] >= block.level:
                stack.pop()
            stack.append((block.level, block.title))
            sections.append(Section(tuple(title for _, title in stack), [block]))
        else:
            sections[-1].blocks.append(block)
    return [section for section in sections if section.blocks]


# ---------------------------------------------------------------- splitting


def _trim(text: str, a: int, b: int) -> tuple[int, int] | None:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return (a, b) if a < b else None


def _pieces_between(text: str, a: int, b: int, cuts: list[int]) -> list[tuple[int, int]]:
    bounds = [a, *cuts, b]
    spans = (_trim(text, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True))
    return [span for span in spans if span is not None]


def _paragraph_spans(block: Block, span: tuple[int, int]) -> list[tuple[int, int]]:
    a, b = span
    cuts = [m.end() for m in _BLANK_LINE.finditer(block.text, a, b)]
    return _pieces_between(block.text, a, b, cuts)


def _sentence_spans(block: Block, span: tuple[int, int]) -> list[tuple[int, int]]:
    a, b = span
    cuts = [m.end() for m in _SENTENCE_END.finditer(block.text, a, b)]
    return _pieces_between(block.text, a, b, cuts)


def _word_spans(block: Block, span: tuple[int, int]) -> list[tuple[int, int]]:
    return [m.span() for m in _WORD.finditer(block.text, *span)]


def _line_spans(block: Block, span: tuple[int, int]) -> list[tuple[int, int]]:
    spans = (_trim_right(block.text, *m.span()) for m in _LINE.finditer(block.text, *span))
    return [s for s in spans if s is not None]


def _trim_right(text: str, a: int, b: int) -> tuple[int, int] | None:
    while b > a and text[b - 1].isspace():
        b -= 1
    return (a, b) if text[a:b].strip() else None


def _unit_spans(block: Block, span: tuple[int, int]) -> list[tuple[int, int]]:
    a, b = span
    return [u for u in block.units if a <= u[0] and u[1] <= b]


_PROSE_LADDER = (_paragraph_spans, _sentence_spans, _word_spans)
_LINE_LADDER = (_unit_spans, _line_spans)


def _children(block: Block, span: tuple[int, int], depth: int):
    """The next finer split of ``span`` that yields several parts, or None when it is a single line/word."""
    ladder = _LINE_LADDER if block.kind in LINE_KINDS else _PROSE_LADDER
    while depth < len(ladder):
        kids = ladder[depth](block, span)
        depth += 1
        if len(kids) > 1:
            return kids, depth
        if len(kids) == 1:
            span = kids[0]
    return None, depth


def _content_bounds(block: Block) -> tuple[int, int]:
    tail = len(block.text) if block.tail is None else block.tail
    return block.head, tail


def render_span(block: Block, a: int, b: int) -> tuple[str, int, int, bool]:
    """Text of the part of ``block`` covering ``text[a:b]``, with the repeated head/tail.

    Returns ``(text, begin, end, verbatim)`` where ``block.text[begin:end]`` is the
    part's own span and ``verbatim`` says the text is exactly that span.
    """
    text = block.text
    lo, hi = _content_bounds(block)
    at_top = not text[lo:a].strip()
    at_bottom = not text[b:hi].strip()
    begin = 0 if at_top else a
    end = len(text) if at_bottom else b
    if at_top and block.head_text is None:
        prefix, body_start = "", 0
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
    return prefix + body + suffix, begin, end, not (prefix or suffix)


@dataclass
class _Leaf:
    a: int
    b: int
    tokens: int  # tokens of the rendered part
    raw: int  # tokens of text[a:b] alone (for estimating merges)
    oversized: bool = False


def _leaves(block: Block, span, depth: int, budget: int, count: TokenCounter) -> list[_Leaf]:
    kids, next_depth = _children(block, span, depth)
    if kids is None:
        tokens = count(render_span(block, *span)[0])
        return [_Leaf(span[0], span[1], tokens, count(block.text[span[0] : span[1]]), True)]
    plain = block.head == 0 and block.tail is None and block.head_text is None
    out: list[_Leaf] = []
    for a, b in kids:
        tokens = count(render_span(block, a, b)[0])
        if tokens <= budget:
            raw = tokens if plain else count(block.text[a:b])
            out.append(_Leaf(a, b, tokens, raw))
        else:
            out.extend(_leaves(block, (a, b), next_depth, budget, count))
    return out


def _merge_leaves(
    block: Block, leaves: list[_Leaf], budget: int, count: TokenCounter, first_budget: int
):
    groups: list[_Leaf] = []
    current: _Leaf | None = None
    for leaf in leaves:
        limit = first_budget if not groups else budget
        if (
            current is not None
            and not current.oversized
            and not leaf.oversized
            and current.tokens + leaf.raw <= limit
        ):
            tokens = count(render_span(block, current.a, leaf.b)[0])
            if tokens <= limit:
                current = _Leaf(current.a, leaf.b, tokens, current.raw + leaf.raw)
                continue
        if current is not None:
            groups.append(current)
        current = leaf
    if current is not None:
        groups.append(current)
    return groups


def split_block(
    block: Block, budget: int, count: TokenCounter, room: int | None = None
) -> list[Piece]:
    """Split ``block`` into pieces of at most ``budget`` tokens at its natural boundaries.

    A block that fits ``budget`` is returned whole. One that must be split anyway
    gets a first piece of at most ``room`` tokens (what is left in the node being
    filled, e.g. after the section heading) when its first part fits there.
    """
    offset = block.start

    def piece(text: str, begin: int, end: int, verbatim: bool, tokens: int) -> Piece:
        if offset is None:
            return Piece(text, block.kind, tokens, oversized=tokens > budget)
        return Piece(
            text, block.kind, tokens, offset + begin, offset + end, verbatim, tokens > budget
        )

    lo, hi = _content_bounds(block)
    region = _trim(block.text, lo, hi)
    if region is None:  # nothing but head/tail (e.g. an empty code fence): keep it whole
        return [piece(block.text, 0, len(block.text), True, count(block.text))]
    whole, begin, end, verbatim = render_span(block, *region)
    tokens = count(whole)
    if tokens <= budget:
        return [piece(whole, begin, end, verbatim, tokens)]
    leaves = _leaves(block, region, 0, budget, count)
    first_budget = budget
    if room is not None and 0 < room < budget and leaves and leaves[0].tokens <= room:
        first_budget = room
    pieces = []
    for group in _merge_leaves(block, leaves, budget, count, first_budget):
        text, begin, end, verbatim = render_span(block, group.a, group.b)
        pieces.append(piece(text, begin, end, verbatim, group.tokens))
    return pieces


# ------------------------------------------------------------------ packing


def _join(pieces: Sequence[Piece], source: str | None) -> str:
    if source is not None and all(p.verbatim for p in pieces):
        return source[pieces[0].start : pieces[-1].end]
    return "\n\n".join(p.text for p in pieces)


class _Packer:
    """Greedy packing of consecutive pieces into node texts of at most ``budget`` tokens."""

    def __init__(self, budget: int, count: TokenCounter, source: str | None):
        self.budget, self.count, self.source = budget, count, source
        self.groups: list[tuple[list[Piece], int]] = []
        self.current: list[Piece] = []
        self.tokens = 0
        self.separator = count("\n\n")

    def room(self) -> int | None:
        """Tokens left in the node being filled (None when it is empty or already full)."""
        left = self.budget - self.tokens - self.separator
        return left if self.current and left > 0 else None

    def add(self, piece: Piece) -> None:
        if self.current and self.tokens + piece.tokens <= self.budget and not piece.oversized:
            merged = self.count(_join([*self.current, piece], self.source))
            if merged <= self.budget:
                self.current.append(piece)
                self.tokens = merged
                return
        self.close()
        self.current, self.tokens = [piece], piece.tokens

    def close(self) -> list[tuple[list[Piece], int]]:
        if self.current:
            self.groups.append((self.current, self.tokens))
        self.current, self.tokens = [], 0
        return self.groups


def _is_heading_only(section: Section) -> bool:
    return len(section.blocks) == 1 and section.blocks[0].kind == "heading"


def chunk_blocks(
    blocks: Sequence[Block],
    budget_for: Callable[[Section], int],
    count: TokenCounter,
    source: str | None = None,
) -> list[Chunk]:
    """Group ``blocks`` into sections, split what is too large and pack the rest up to the budget.

    ``budget_for(section)`` gives the token budget of a section's nodes (the cap
    minus whatever metadata the embedding model will also see). ``source`` is
    the document text when block offsets point into it; verbatim neighbours are
    then joined as one source slice, so a node's text is ``source[start:end]``.

    A node never spans two sections, with one exception: a section that holds
    nothing but its heading is carried into its first subsection's first node
    (its words stay in the node text, and its title is in that node's path).
    """
    chunks: list[Chunk] = []
    sections = group_sections(blocks)
    carried: list[Piece] = []
    for i, section in enumerate(sections):
        budget = budget_for(section)
        following = sections[i + 1] if i + 1 < len(sections) else None
        depth = len(section.path)
        if (
            _is_heading_only(section)
            and following is not None
            and len(following.path) > depth
            and following.path[:depth] == section.path
        ):
            for block in section.blocks:
                carried.extend(split_block(block, budget, count))
            continue
        packer = _Packer(budget, count, source)
        for piece in carried:
            packer.add(piece)
        carried = []
        for block in section.blocks:
            for piece in split_block(block, budget, count, packer.room()):
                packer.add(piece)
        for group, tokens in packer.close():
            kinds = list(dict.fromkeys(p.kind for p in group))
            starts = [p.start for p in group if p.start is not None]
            ends = [p.end for p in group if p.end is not None]
            chunks.append(
                Chunk(
                    text=_join(group, source),
                    section_path=section.path,
                    block_types=kinds,
                    tokens=tokens,
                    budget=budget,
                    start=min(starts) if len(starts) == len(group) else None,
                    end=max(ends) if len(ends) == len(group) else None,
                )
            )
    return chunks
