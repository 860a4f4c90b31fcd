"""Quotes in an answer checked against the sources they cite (part of :mod:`llama_index_ragtune.grounding`).

A quote is text between double quotes (``"..."``, ``“...”``, ``«...»``) outside
code, of at least ``min_words`` words. It is checked against the sources cited
right next to it (``Paris [2]: "..."`` or ``"..." [2]``), else against the
sources the answer cites anywhere, else against every source. Texts are
compared normalised (Unicode NFKC, lower case, curly quotes and dashes
unified, punctuation dropped, whitespace collapsed): a quote that occurs in a
source is ``exact``; otherwise its score is difflib's similarity ratio with
the best-matching stretch of the source (a clip marker ``...`` splits the quote
into pieces, each matched on its own, weighted by length), and it counts as
``fuzzy`` at or above ``fuzzy_threshold``.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from llama_index_ragtune.grounding._scanner import CodeReader, Lexer
from llama_index_ragtune.grounding.citations import find_citations

DEFAULT_MIN_QUOTE_WORDS = 3
DEFAULT_FUZZY_THRESHOLD = 0.9

__all__ = [
    "DEFAULT_FUZZY_THRESHOLD",
    "DEFAULT_MIN_QUOTE_WORDS",
    "QUOTE_PATTERN",
    "QuoteCheck",
    "check_quotes",
    "code_mask",
    "normalize_quote",
]

#: A quoted span: ``"..."``, ``“...”`` or ``«...»`` on one line (group 1, 2 or 3: the text).
QUOTE_PATTERN = re.compile(r"\"([^\"\n]+)\"|\u201c([^\u201d\n]+)\u201d|\u00ab([^\u00bb\n]+)\u00bb")
_ELLIPSIS = re.compile(r"\s*(?:\.\.\.|\u2026)\s*")
_JOINERS = frozenset(" \t:;,-\u2013\u2014")
_PUNCT = re.compile(r"[^\w\s]")


@dataclass(frozen=True)
class QuoteCheck:
    """One quote of an answer checked against its sources.

    ``quote``: the quoted text; ``start``/``end``: its span in the answer
    (quotation marks included); ``sources``: the source numbers it was checked
    against; ``matched_source``: the best-matching one (None when no source
    was given); ``score``: 1.0 for an exact (normalised) match, else the fuzzy
    share in [0, 1); ``match``: ``"exact"``, ``"fuzzy"`` or ``"none"``.

    Example::

        from llama_index_ragtune.grounding import check_quotes

        check = check_quotes('Rouen [1]: "the capital of Normandy"', ["The capital of Normandy is Rouen."])[0]
        check.verified, check.match, check.matched_source     # (True, 'exact', 1)
    """

    quote: str
    start: int
    end: int
    sources: tuple[int, ...]
    matched_source: int | None
    score: float
    match: str

    @property
    def verified(self) -> bool:
        """The quote was found (exactly or fuzzily) in a source it was checked against."""
        return self.match != "none"

    def to_dict(self) -> dict:
        """A JSON-ready dict (``verified`` included)."""
        return {
            "quote": self.quote,
            "sources": list(self.sources),
            "matched_source": self.matched_source,
            "score": self.score,
            "match": self.match,
            "verified": self.verified,
        }


def normalize_quote(text: str) -> str:
    """``text`` as quote checking compares it: NFKC, lower case, no punctuation, single spaces.

    Example::

        normalize_quote("  The “Capital” —  of   Normandy. ")   # 'the capital of normandy'
    """
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_PUNCT.sub(" ", text).split())


def _fuzzy(piece: str, source: str) -> float:
    """1.0 when ``piece`` occurs in ``source``; else the best ``2M / (len(piece) + len(window))``
    over stretches (windows) of ``source``, M = characters matched in order (difflib's ratio)."""
    if not piece or piece in source:
        return 1.0
    matcher = difflib.SequenceMatcher(None, piece, source, autojunk=False)
    blocks = [b for b in matcher.get_matching_blocks() if b.size]
    best = 0.0
    slack = len(piece) // 4 + 2  # a window is at most this much longer than the piece
    for i, first in enumerate(blocks):
        matched = 0
        for block in blocks[i:]:
            window = block.b + block.size - first.b
            if window > len(piece) + slack:
                break
            matched += block.size
            best = max(best, 2 * matched / (len(piece) + window))
    return min(best, 0.9999)  # only an exact occurrence scores 1.0


def _score(quote: str, source: str) -> float:
    pieces = [normalize_quote(p) for p in _ELLIPSIS.split(quote)]
    pieces = [p for p in pieces if p]
    if not pieces:
        return 0.0
    text = normalize_quote(source)
    weights = [len(p) for p in pieces]
    return sum(_fuzzy(p, text) * w for p, w in zip(pieces, weights, strict=True)) / sum(weights)


def code_mask(answer: str) -> list[bool]:
    """For each character of ``answer``: inside inline code or a fenced block.

    Example::

        code_mask("a `b` c")   # [False, False, True, True, True, False, False]
    """
    mask = [False] * len(answer)
    position = 0

    def out(tok, code: bool) -> None:
        nonlocal position
        if code:
            for i in range(position, min(len(answer), position + len(tok.raw))):
                mask[i] = True
        position += len(tok.raw)

    reader = CodeReader(out)
    lexer = Lexer(None, reader.push)
    for ch in answer:
        lexer.char(ch)
    lexer.finish()
    reader.finish()
    return mask


def _adjacent(answer: str, start: int, end: int, marks: Sequence[tuple[int, int, tuple[int, ...]]]):
    """The citations right before (``[2]: "``) or right after (``" [2]``) a quote."""
    for _start, m_end, numbers in reversed(marks):
        if m_end <= start and all(ch in _JOINERS for ch in answer[m_end:start]) and numbers:
            return numbers
    for m_start, _end, numbers in marks:
        if m_start >= end and all(ch in _JOINERS for ch in answer[end:m_start]) and numbers:
            return numbers
    return ()


def check_quotes(
    answer: str,
    source_texts: Sequence[str],
    *,
    min_words: int = DEFAULT_MIN_QUOTE_WORDS,
    fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD,
) -> list[QuoteCheck]:
    """Check every quote of ``answer`` (outside code, ``min_words`` words or more) against its sources.

    Example::

        from llama_index_ragtune.grounding import check_quotes

        sources = ["Opened iPhones can be returned within 14 days.", "Gift cards never expire."]
        [c.verified for c in check_quotes('14 days [1]: "can be returned within 14 days"', sources)]
        # [True]
        [c.verified for c in check_quotes('Forever [2]: "gift cards last a lifetime"', sources)]
        # [False]
    """
    if not 0.0 < fuzzy_threshold <= 1.0:
        raise ValueError(f"fuzzy_threshold must be in (0, 1], got {fuzzy_threshold}.")
    n_sources = len(source_texts)
    citations = find_citations(answer, n_sources)
    marks = [(c.start, c.end, c.cited) for c in citations]
    everywhere = tuple(dict.fromkeys(n for c in citations for n in c.cited))
    code = code_mask(answer)
    checks: list[QuoteCheck] = []
    for match in QUOTE_PATTERN.finditer(answer):
        quote = next(g for g in match.groups() if g is not None).strip()
        if len(quote.split()) < min_words or code[match.start()]:
            continue
        numbers = _adjacent(answer, match.start(), match.end(), marks) or everywhere
        numbers = numbers or tuple(range(1, n_sources + 1))
        best, best_score = None, 0.0
        for number in numbers:
            value = _score(quote, source_texts[number - 1])
            if best is None or value > best_score:
                best, best_score = number, value
        kind = (
            "exact" if best_score >= 1.0 else "fuzzy" if best_score >= fuzzy_threshold else "none"
        )
        checks.append(
            QuoteCheck(
                quote=quote,
                start=match.start(),
                end=match.end(),
                sources=tuple(numbers),
                matched_source=best,
                score=round(best_score, 4),
                match=kind,
            )
        )
    return checks
