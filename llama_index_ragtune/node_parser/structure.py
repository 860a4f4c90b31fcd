"""Block model, sections and packing shared by the structured node parsers.

A parser turns a document into an ordered list of :class:`Block` objects
(headings, paragraphs, lists, tables, code, ...). This module then

1. groups the blocks into sections by their headings (:func:`group_sections`);
2. splits every block that is larger than the token budget (:func:`~.split.split_block`:
   list items, table rows with the header repeated, code lines with the fences
   repeated, prose paragraphs; then sentences, words and, as a last resort,
   characters, so every unit fits);
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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llama_index_ragtune.node_parser.block import Block
from llama_index_ragtune.node_parser.split import (
    LINE_KINDS,
    PROSE_KINDS,
    Piece,
    TokenCounter,
    longest_fit,
    render_span,
    split_block,
)
from llama_index_ragtune.node_parser.tokens import CharBoundedCounter

__all__ = [
    "LINE_KINDS",
    "PROSE_KINDS",
    "Block",
    "Chunk",
    "Piece",
    "Section",
    "chunk_blocks",
    "group_sections",
    "render_span",
    "split_block",
]


@dataclass
class Section:
    """Blocks under one heading; ``path`` is the heading chain including its own heading."""

    path: tuple[str, ...]
    blocks: list[Block]


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
    partial: bool = False

    @property
    def oversized(self) -> bool:
        """True when the node is over its budget (only a single character can be: see :mod:`.split`)."""
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


# ------------------------------------------------------------------ packing


def _join(pieces: Sequence[Piece], source: str | None) -> str:
    if source is not None and all(p.verbatim for p in pieces):
        return source[pieces[0].start : pieces[-1].end]
    return "\n\n".join(p.text for p in pieces)


class _Packer:
    """Greedy packing of consecutive pieces into node texts of at most ``budget`` tokens.

    Pieces are added on an estimate (their token counts plus separators) and every
    node is counted exactly when it is closed; a node over the budget (a tokenizer
    that is not additive, or source text between pieces) gives back its last
    pieces to the next node. So a node costs a few counts, not one per piece.
    """

    def __init__(self, budget: int, count: TokenCounter, source: str | None):
        if isinstance(count, CharBoundedCounter):  # a node of source text between its pieces
            count = count.over(budget)  # (deep indentation) is over the budget by its length
        self.budget, self.count, self.source = budget, count, source
        self.groups: list[tuple[list[Piece], int]] = []
        self.current: list[Piece] = []
        self.estimate = 0
        self.separator = count("\n\n")

    def room(self) -> int | None:
        """Tokens left in the node being filled (None when it is empty or already full)."""
        left = self.budget - self.estimate - self.separator
        return left if self.current and left > 0 else None

    def add(self, piece: Piece) -> None:
        grown = self.estimate + self.separator + piece.tokens
        if self.current and not piece.oversized and grown <= self.budget:
            self.current.append(piece)
            self.estimate = grown
            return
        self._flush()
        self.current, self.estimate = [piece], piece.tokens

    def _flush(self) -> None:
        pieces = self.current
        while pieces:
            tokens = (
                pieces[0].tokens if len(pieces) == 1 else self.count(_join(pieces, self.source))
            )
            if tokens <= self.budget or len(pieces) == 1:
                self.groups.append((pieces, tokens))
                return

            def measure(i: int, j: int, pieces=pieces) -> int:
                return (
                    pieces[i].tokens if j == i + 1 else self.count(_join(pieces[i:j], self.source))
                )

            j, tokens = longest_fit(0, len(pieces) - 1, len(pieces) - 1, measure, self.budget)
            if j == 0:
                j, tokens = 1, pieces[0].tokens
            self.groups.append((pieces[:j], tokens))
            pieces = pieces[j:]

    def close(self) -> list[tuple[list[Piece], int]]:
        self._flush()
        self.current, self.estimate = [], 0
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
    carried: list[Block] = []
    for i, section in enumerate(sections):
        following = sections[i + 1] if i + 1 < len(sections) else None
        depth = len(section.path)
        if (
            _is_heading_only(section)
            and following is not None
            and len(following.path) > depth
            and following.path[:depth] == section.path
        ):
            carried.extend(section.blocks)  # split with the budget of the node it lands in
            continue
        budget = budget_for(section)
        packer = _Packer(budget, count, source)
        for block in [*carried, *section.blocks]:
            for piece in split_block(block, budget, count, packer.room()):
                packer.add(piece)
        carried = []
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
                    partial=any(p.partial for p in group),
                )
            )
    return chunks
