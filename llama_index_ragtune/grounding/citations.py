"""The citation grammar: ``[1]``, ``[1, 3]``, ``[2-4]``, ``[Source 2]`` marks, found, parsed, removed.

Part of :mod:`llama_index_ragtune.grounding` (import the names from there); the
grammar's table is in that module's documentation, the scanner in ``_scanner``.

Example::

    from llama_index_ragtune.grounding import find_citations, strip_citations

    [c.numbers for c in find_citations("14 days [1][2-3].", n_sources=3)]   # [(1,), (2, 3)]
    strip_citations("14 days [1].")                                         # '14 days.'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llama_index_ragtune.grounding._scanner import (
    CodeReader,
    Lexer,
    Token,
)
from llama_index_ragtune.grounding.arguments import require_text


def cite(numbers: Sequence[int]) -> str:
    """The canonical citation of ``numbers``: ``[1]`` for one source, ``[1][3]`` for several.

    Example::

        cite([1, 3])   # '[1][3]'
    """
    return "".join(f"[{n}]" for n in numbers)


@dataclass(frozen=True)
class Citation:
    """One citation marker found outside code.

    ``start``/``end`` span the marker in the text, with the whitespace before it
    (what a removal takes away); ``text`` is the marker as written; ``cited`` the
    source numbers it maps to, ``invalid`` the numbers it names that map to none.

    Example::

        find_citations("Rome [2-3].", n_sources=2)[0].cited   # (2,)
    """

    start: int
    end: int
    text: str
    cited: tuple[int, ...]
    invalid: tuple[int, ...]


class CitationFilter:
    """Keeps citations to sources ``1..n_sources``, removes and reports the rest, chunk by chunk.

    ``n_sources=None`` keeps every well-formed number >= 1 (parsing without a
    source list); ``0`` removes every citation. Text that may still turn out to
    be a citation or code is held back -- at most one bracket group, or an
    inline code span's reach (``MAX_CODE_SPAN_CHARS``) -- and each character is
    read once, so a stream costs time linear in its length. Feeding a text in
    any chunks gives the same output as feeding it whole. ``cited`` and
    ``invalid`` list the kept and removed numbers in order of first appearance.

    Example::

        cleaner = CitationFilter(n_sources=2)
        "".join(cleaner.feed(part) for part in ["Paris [1][", "9]. `x[7]` Rome [2, 7]."])
        cleaner.flush()                      # ''
        cleaner.cited, cleaner.invalid       # ([1, 2], [9, 7])
    """

    def __init__(self, n_sources: int | None, *, record: bool = False) -> None:
        if n_sources is not None and (
            isinstance(n_sources, bool) or not isinstance(n_sources, int) or n_sources < 0
        ):
            raise ValueError(f"n_sources must be an int >= 0 or None, got {n_sources!r}.")
        self.n_sources = n_sources
        self.cited: list[int] = []
        self.invalid: list[int] = []
        self.numbers: list[int] = []  # every number named outside code, valid or not
        self.markers: list[Citation] | None = [] if record else None
        # the lists' members, for a constant-time "seen?": a list scan made an answer
        # naming thousands of distinct numbers quadratic (110 s for 790 kB)
        self._seen_cited: set[int] = set()
        self._seen_invalid: set[int] = set()
        self._seen_numbers: set[int] = set()
        self._parts: list[str] = []
        self._code = CodeReader(self._out)
        self._lexer = Lexer(n_sources, self._code.push)
        self._done = False

    def _out(self, tok: Token, code: bool) -> None:
        if code:
            self._parts.append(tok.raw)
            return
        self._parts.append(tok.clean)
        for numbers, found, seen in (
            (tok.valid, self.cited, self._seen_cited),
            (tok.invalid, self.invalid, self._seen_invalid),
        ):
            for n in numbers:
                if n not in seen:
                    seen.add(n)
                    found.append(n)
                if n not in self._seen_numbers:
                    self._seen_numbers.add(n)
                    self.numbers.append(n)
        if self.markers is not None and tok.kind == "mark":
            citation = Citation(
                tok.start, tok.start + len(tok.raw), tok.raw.lstrip(), tok.valid, tok.invalid
            )
            self.markers.append(citation)

    def _take(self) -> str:
        out, self._parts = "".join(self._parts), []
        return out

    def feed(self, chunk: str) -> str:
        """Filter the next chunk; what may still become a citation or code is held back."""
        require_text(chunk, "CitationFilter.feed: chunk")
        if self._done:
            raise RuntimeError("CitationFilter: feed() after flush(); use a new filter per answer.")
        self._lexer.feed(chunk)
        self._lexer.drain()
        return self._take()

    def flush(self) -> str:
        """The text held back at the end of the input."""
        if not self._done:
            self._lexer.finish()
            self._code.finish()
            self._done = True
        return self._take()

    def clean(self, text: str) -> str:
        """Filter a whole text (``feed`` then ``flush``)."""
        return self.feed(text) + self.flush()

    @property
    def held(self) -> int:
        """Visible characters held back right now: at most ``MAX_HELD_CHARS``, whatever the input."""
        return self._lexer.held + self._code.held_chars

    @property
    def steps(self) -> int:
        """Characters read plus tokens moved so far: a measure of work, linear in the input."""
        return self._lexer.steps + self._code.steps


def find_citations(text: str, n_sources: int | None = None) -> list[Citation]:
    """The citation markers of ``text`` outside code, in order (see the module's grammar table).

    Example::

        [c.text for c in find_citations("Rome [Source 2]; `a[1]`; Paris [1](link).")]
        # ['[Source 2]']
    """
    require_text(text, "find_citations: text")
    cleaner = CitationFilter(n_sources, record=True)
    cleaner.clean(text)
    return list(cleaner.markers or [])


def parse_citations(answer: str) -> list[int]:
    """Source numbers cited in ``answer`` outside code, in order of first appearance, no repeats.

    Example::

        parse_citations("Paris [2][1-3]. `x[9]`")   # [2, 1, 3]
    """
    require_text(answer, "parse_citations: answer")
    cleaner = CitationFilter(None)
    cleaner.clean(answer)
    return cleaner.cited


def strip_citations(text: str) -> str:
    """``text`` without any citation marker (and the whitespace before each); code untouched.

    Example::

        strip_citations("Paris [1]. Rome [Source 2]. `a[1]`")   # 'Paris. Rome. `a[1]`'
    """
    require_text(text, "strip_citations: text")
    return CitationFilter(0).clean(text)
