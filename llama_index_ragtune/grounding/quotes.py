"""Quotes in an answer checked against the sources they cite (part of :mod:`llama_index_ragtune.grounding`).

A quote is text between double quotes (``"..."``, ``“...”``, ``«...»``, ``„...“``) or
corner brackets (``「...」``, ``『...』``) outside code, of at least ``min_words`` words
(:func:`quote_words`: in Chinese, Japanese, Thai..., written without spaces, words are
counted by letters). It is checked against the sources cited right next to it
(``Paris [2]: "..."`` or ``"..." [2]``), else against the sources the answer cites
anywhere, else against every source. Texts are
compared normalised (Unicode NFKC, lower case, curly quotes and dashes
unified, punctuation dropped, whitespace collapsed): a quote that occurs in a
source is ``exact``; otherwise its score is difflib's similarity ratio with
the best-matching stretch of the source (a clip marker ``...`` splits the quote
into pieces, each matched on its own, weighted by length), and it counts as
``fuzzy`` at or above ``fuzzy_threshold``.

difflib's work grows with quote length x source length, so past ``FUZZY_BUDGET``
(a piece of several thousand characters, or a source of hundreds of thousands) a
piece is cut into stretches of about 500 characters, each compared only with
the parts of the source its 8-character grams point to: work linear in both
lengths, and the score an estimate (exact matches are still found exactly).
"""

from __future__ import annotations

import bisect
import difflib
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from llama_index_ragtune._words import words
from llama_index_ragtune.grounding._scanner import MAX_MARKER_CHARS, CodeReader, Lexer
from llama_index_ragtune.grounding.arguments import require_text, require_texts
from llama_index_ragtune.grounding.citations import find_citations

DEFAULT_MIN_QUOTE_WORDS = 3
DEFAULT_FUZZY_THRESHOLD = 0.9

__all__ = [
    "DEFAULT_FUZZY_THRESHOLD",
    "FUZZY_BUDGET",
    "DEFAULT_MIN_QUOTE_WORDS",
    "QUOTE_PATTERN",
    "QuoteCheck",
    "check_quotes",
    "code_mask",
    "copied_from_sources",
    "find_quotes",
    "footnotes_from_sources",
    "normalize_quote",
    "quote_words",
    "quoted_from_sources",
]

#: A quoted span on one line: ``"..."``, ``“...”``, ``«...»``, the CJK corner brackets
#: ``「...」`` and ``『...』`` (Japanese, Chinese), and ``„...“`` or ``„...”`` (German,
#: Polish, Czech...); the text is the one group that matched (``next(g for g in groups)``).
QUOTE_PATTERN = re.compile(
    r"\"([^\"\n]+)\"|\u201c([^\u201d\n]+)\u201d|\u00ab([^\u00bb\n]+)\u00bb"
    r"|\u300c([^\u300d\n]+)\u300d|\u300e([^\u300f\n]+)\u300f|\u201e([^\u201c\u201d\n]+)[\u201c\u201d]"
)
_QUOTE_OPENERS = re.compile('["\u201c\u00ab\u300c\u300e\u201e]')
_QUOTE_STOPS = {
    '"': re.compile('["\\n]'),
    "\u201c": re.compile("[\u201d\\n]"),
    "\u00ab": re.compile("[\u00bb\\n]"),
    "\u300c": re.compile("[\u300d\\n]"),
    "\u300e": re.compile("[\u300f\\n]"),
    "\u201e": re.compile("[\u201c\u201d\\n]"),
}
_ELLIPSIS = re.compile(r"\s*(?:\.\.\.|\u2026)\s*")
_JOINERS = frozenset(" \t:;,-\u2013\u2014")


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


# Scripts written without spaces between words: a quote in them is one whitespace "word".
# Counted by letters instead (combining marks not counted): two Han or kana characters a
# word (Chinese, Japanese), four letters a word (Thai, Lao, Khmer, Myanmar, Tibetan).
_UNSPACED = (
    (0x3040, 0x30FF, 2),  # Hiragana, Katakana
    (0x3400, 0x4DBF, 2),  # CJK extension A
    (0x4E00, 0x9FFF, 2),  # CJK unified ideographs
    (0xF900, 0xFAFF, 2),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F, 2),  # half-width Katakana
    (0x20000, 0x3FFFF, 2),  # CJK extensions B-H
    (0x0E00, 0x0EFF, 4),  # Thai, Lao
    (0x0F00, 0x0FFF, 4),  # Tibetan
    (0x1000, 0x109F, 4),  # Myanmar
    (0x1780, 0x17FF, 4),  # Khmer
)
_UNSPACED_CHAR = re.compile(
    "[" + "".join(f"{chr(low)}-{chr(high)}" for low, high, _per_word in _UNSPACED) + "]"
)


def _letters_per_word(ch: str) -> int:
    """How many letters ``ch``'s script writes a word with when it uses no spaces; 0 otherwise."""
    code = ord(ch)
    for low, high, per_word in _UNSPACED:
        if low <= code <= high:
            return per_word if unicodedata.category(ch)[0] == "L" else 0
    return 0


def quote_words(text: str) -> int:
    """How many words ``text`` holds, for ``min_words``: its whitespace-separated words, and
    in scripts written without spaces (Chinese, Japanese, Thai, Lao, Khmer, Myanmar) a word
    per two Han or kana characters, per four letters of the others (a whole Thai or Chinese
    sentence used to count as one word, so its quotes were never checked).

    Example::

        quote_words("the capital of Normandy"), quote_words("東京は日本の首都")   # (4, 4)
    """
    require_text(text, "quote_words: text")
    tokens = text.split()
    if _UNSPACED_CHAR.search(text) is None:  # the usual case, at the speed of str.split
        return len(tokens)
    count = 0
    for token in tokens:
        shares: dict[int, int] = {}
        for ch in token:
            per_word = _letters_per_word(ch)
            if per_word:
                shares[per_word] = shares.get(per_word, 0) + 1
        unspaced = sum(-(-letters // per_word) for per_word, letters in shares.items())
        count += max(1, unspaced)
    return count


def normalize_quote(text: str) -> str:
    """``text`` as quote checking compares it: NFKC, lower case, no punctuation, single spaces
    (combining marks stay in their words: a quote with other vowel signs is another quote).

    Example::

        normalize_quote("  The “Capital” —  of   Normandy. ")   # 'the capital of normandy'
    """
    require_text(text, "normalize_quote: text")
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(words(text))


def find_quotes(text: str) -> Iterator[re.Match[str]]:
    """The matches of ``QUOTE_PATTERN.finditer(text)``, found in time linear in ``text``.

    The regular expression alone reads from every opening mark to the end of its line,
    so a line of unclosed ``\u201c`` marks costs time quadratic in its length; here the
    next closing mark (or newline) of each kind is found once and reused.

    Example::

        [m.group(1) for m in find_quotes('He said "fine" twice.')]   # ['fine']
    """
    stops: dict[str, int] = {}  # opening mark -> next closing mark or newline after it
    pos = 0
    while True:
        opener = _QUOTE_OPENERS.search(text, pos)
        if opener is None:
            return
        start = opener.start()
        mark = text[start]
        stop = stops.get(mark, -1)
        if stop <= start:
            found = _QUOTE_STOPS[mark].search(text, start + 1)
            stop = stops[mark] = len(text) if found is None else found.start()
        if stop < len(text) and text[stop] != "\n" and stop > start + 1:
            match = QUOTE_PATTERN.match(text, start, stop + 1)
            if match is not None:  # always: the pattern reads what was just found
                yield match
                pos = stop + 1
                continue
        pos = start + 1


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


#: The most characters of quote x characters of source one difflib comparison may take
#: (its cost grows with the product); a quote piece and source within it (a 500-character
#: quote in a 30,000-character source, 4,000 characters in 4,000) are compared whole.
FUZZY_BUDGET = 16_000_000
_STRETCH = 500  # a longer over-budget piece is matched in stretches of about this many characters
_GRAM = 8  # characters of the n-grams that locate a stretch in a long source
_COMMON_GRAM = 8  # a gram seen more often than this in the source locates nothing


def _gram_index(source: str) -> dict[str, list[int]]:
    """Positions of each ``_GRAM``-character gram of ``source`` (common grams dropped): linear."""
    index: dict[str, list[int]] = {}
    for j in range(len(source) - _GRAM + 1):
        index.setdefault(source[j : j + _GRAM], []).append(j)
    return {gram: spots for gram, spots in index.items() if len(spots) <= _COMMON_GRAM}


def _near(piece: str, source: str, index: dict[str, list[int]]) -> float:
    """``_fuzzy(piece, source)`` with work linear in ``len(piece)``: the piece is compared with
    the few stretches of ``source`` where its grams say it would start (at most 2 tries)."""
    votes: dict[int, int] = {}
    for i in range(len(piece) - _GRAM + 1):
        for j in index.get(piece[i : i + _GRAM], ()):
            votes[(j - i) // 32] = votes.get((j - i) // 32, 0) + 1
    starts = sorted(votes, key=lambda b: (-votes[b], b))[:2] or [0]
    slack = len(piece) // 4 + 2  # as _fuzzy: a window is at most this much longer
    best = 0.0
    for bucket in starts:
        begin = max(0, bucket * 32 - slack)
        best = max(best, _fuzzy(piece, source[begin : bucket * 32 + 32 + len(piece) + slack]))
    return best


def _bounded(piece: str, source: str, index: dict[str, list[int]] | None) -> float:
    """``_fuzzy``, or past ``FUZZY_BUDGET`` its located, stretch-wise estimate (never 1.0)."""
    if not piece or piece in source:
        return 1.0
    if len(piece) * len(source) <= FUZZY_BUDGET:
        return _fuzzy(piece, source)
    if index is None:
        index = _gram_index(source)
    stretches, start = [], 0
    while start < len(piece):  # cut at spaces, each stretch about _STRETCH characters
        cut = piece.rfind(" ", start + 1, start + _STRETCH) if len(piece) - start > _STRETCH else -1
        end = (
            len(piece)
            if len(piece) - start <= _STRETCH
            else (cut if cut > start else start + _STRETCH)
        )
        stretches.append(piece[start:end].strip())
        start = end
    stretches = [s for s in stretches if s]
    total = sum(len(s) for s in stretches)
    score = sum(_near(s, source, index) * len(s) for s in stretches) / total
    return min(score, 0.9999)  # only an exact occurrence scores 1.0


def _score(quote: str, source: str, normalized: bool = False) -> float:
    pieces = [normalize_quote(p) for p in _ELLIPSIS.split(quote)]
    pieces = [p for p in pieces if p]
    if not pieces:
        return 0.0
    text = source if normalized else normalize_quote(source)
    weights = [len(p) for p in pieces]
    index: dict[str, list[int]] | None = None  # made once, when a piece needs it
    total = 0.0
    for piece, weight in zip(pieces, weights, strict=True):
        if index is None and piece not in text and len(piece) * len(text) > FUZZY_BUDGET:
            index = _gram_index(text)
        total += _bounded(piece, text, index) * weight
    return total / sum(weights)


def code_mask(answer: str) -> list[bool]:
    """For each character of ``answer``: inside inline code or a fenced block.

    Example::

        code_mask("a `b` c")   # [False, False, True, True, True, False, False]
    """
    mask = [False] * len(answer)
    position = 0

    def out(tok, code: bool) -> None:
        nonlocal position
        end = min(len(answer), position + len(tok.raw))
        if code and end > position:
            mask[position:end] = [True] * (end - position)
        position += len(tok.raw)

    reader = CodeReader(out)
    lexer = Lexer(None, reader.push)
    lexer.feed(answer)
    lexer.finish()
    reader.finish()
    return mask


def _joiner_ends(answer: str) -> list[int]:
    """For each offset ``i`` of ``answer`` (and ``len(answer)``): the first offset ``>= i``
    that is not a joiner, so "only joiners between ``a`` and ``b``" is ``ends[a] >= b``."""
    ends = [len(answer)] * (len(answer) + 1)
    for i in range(len(answer) - 1, -1, -1):
        ends[i] = ends[i + 1] if answer[i] in _JOINERS else i
    return ends


def _adjacent(
    start: int,
    end: int,
    marks: Sequence[tuple[int, int, tuple[int, ...]]],
    bounds: tuple[Sequence[int], Sequence[int]],
    joiner_ends: Sequence[int],
):
    """The citations right before (``[2]: "``) or right after (``" [2]``) a quote.

    Only the nearest mark on each side can be next to the quote (a mark farther away has
    the nearer one, a bracket, between it and the quote), so each side is one lookup.
    """
    mark_starts, mark_ends = bounds
    before = bisect.bisect_right(mark_ends, start) - 1
    if before >= 0:
        _start, m_end, numbers = marks[before]
        if numbers and joiner_ends[m_end] >= start:
            return numbers
    after = bisect.bisect_left(mark_starts, end)
    if after < len(marks):
        m_start, _end, numbers = marks[after]
        if numbers and joiner_ends[end] >= m_start:
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
    require_text(answer, "check_quotes: answer")
    source_texts = require_texts(source_texts, "check_quotes: source_texts")
    if not 0.0 < fuzzy_threshold <= 1.0:
        raise ValueError(f"fuzzy_threshold must be in (0, 1], got {fuzzy_threshold}.")
    n_sources = len(source_texts)
    citations = find_citations(answer, n_sources)
    marks = [(c.start, c.end, c.cited) for c in citations]
    bounds = ([m[0] for m in marks], [m[1] for m in marks])
    joiner_ends: list[int] | None = None  # made at the first quote
    everywhere = tuple(dict.fromkeys(n for c in citations for n in c.cited))
    code = code_mask(answer)
    normalized: dict[int, str] = {}  # each source normalised once, not once per quote
    checks: list[QuoteCheck] = []
    for match in find_quotes(answer):
        quote = next(g for g in match.groups() if g is not None).strip()
        if code[match.start()] or quote_words(quote) < min_words:
            continue
        if joiner_ends is None:
            joiner_ends = _joiner_ends(answer)
        numbers = _adjacent(match.start(), match.end(), marks, bounds, joiner_ends)
        numbers = numbers or everywhere or tuple(range(1, n_sources + 1))
        best, best_score = None, 0.0
        for number in numbers:
            if number not in normalized:
                normalized[number] = normalize_quote(source_texts[number - 1])
            value = _score(quote, normalized[number], normalized=True)
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


def quoted_from_sources(answer: str, source_texts: Sequence[str]) -> set[int]:
    """Start offsets (as :func:`find_citations` gives them) of the markers of ``answer`` that
    belong to a quote copied from a source: the quote (normalised) occurs in a source whose
    text holds the marker as written -- the source's own footnote (``"Smith [1] found ..."``
    quoted from source 2), not a citation.

    Example::

        quoted_from_sources('"Smith [1] found it" [2]', ["Rome.", "Smith [1] found it."])  # {6}
    """
    require_text(answer, "quoted_from_sources: answer")
    source_texts = require_texts(source_texts, "quoted_from_sources: source_texts")
    quotes = [(m.start(), m.end()) for m in find_quotes(answer)]
    if not quotes:
        return set()
    citations = find_citations(answer, len(source_texts))
    if not citations:
        return set()
    code = code_mask(answer)
    starts = [start for start, _ in quotes]
    sources: dict[int, str] = {}  # source index -> its text normalised, when first needed
    quoted: dict[int, str] = {}  # quote start -> the quote normalised
    holds: dict[tuple[int, int], bool] = {}  # (quote start, source index) -> quote in source
    verbatim: dict[tuple[int, str], bool] = {}  # (quote start, marker) -> copied from a source
    found: set[int] = set()
    for citation in citations:
        at = citation.end - len(citation.text)
        index = bisect.bisect_right(starts, at) - 1
        if index < 0 or code[at] or citation.end > quotes[index][1]:
            continue
        start, end = quotes[index]
        key = (start, citation.text)
        if key not in verbatim:
            verbatim[key] = False
            for number, text in enumerate(source_texts):
                if citation.text not in text:
                    continue
                if (start, number) not in holds:
                    if start not in quoted:
                        quoted[start] = normalize_quote(answer[start + 1 : end - 1])
                    if number not in sources:
                        sources[number] = normalize_quote(text)
                    holds[start, number] = quoted[start] in sources[number]
                if holds[start, number]:
                    verbatim[key] = True
                    break
        if verbatim[key]:
            found.add(citation.start)
    return found


# A marker counts as copied with its source's text when the words around it are the source's
# words around that marker: one word on each side and a third on either, compared normalised.
_COPY_WINDOW_CHARS = 200  # enough text on each side of a marker to hold two words
# a bracket group as a citation marker can be written (ASCII, full-width, lenticular brackets)
_BRACKET_GROUP = re.compile(
    rf"[\[\uff3b\u3010][^\[\]\uff3b\uff3d\u3010\u3011\n]{{0,{MAX_MARKER_CHARS}}}[\]\uff3d\u3011]"
)


def _words_before(text: str, at: int) -> list[str]:
    """The last two normalised words of ``text[:at]``, nearest first."""
    start = max(0, at - _COPY_WINDOW_CHARS)
    words = normalize_quote(text[start:at]).split()
    if start and words and text[start - 1].isalnum():
        words = words[1:]  # the window began inside a word
    return words[::-1][:2]


def _words_after(text: str, at: int) -> list[str]:
    """The first two normalised words of ``text[at:]``."""
    end = at + _COPY_WINDOW_CHARS
    words = normalize_quote(text[at:end]).split()
    if end < len(text) and words and text[end].isalnum():
        words = words[:-1]  # the window ended inside a word
    return words[:2]


def _copy_keys(before: list[str], after: list[str]) -> set[tuple[str, ...]]:
    """Three-word contexts of a marker: two words before and one after, or one and two."""
    keys: set[tuple[str, ...]] = set()
    if before and after:
        if len(before) == 2:
            keys.add(("before", before[1], before[0], after[0]))
        if len(after) == 2:
            keys.add(("after", before[0], after[0], after[1]))
    return keys


def copied_from_sources(answer: str, source_texts: Sequence[str]) -> set[int]:
    """Start offsets (as :func:`find_citations` gives them) of the markers of ``answer`` copied
    with a source's text, unquoted: the marker as written occurs in a source with the same
    words around it there as in the answer -- one word on each side and a third on either
    (normalised as :func:`normalize_quote`) -- so it is that source's own footnote, not a
    citation. A marker at the end of a sentence the answer copies is not told apart (no word
    of the source follows it) and stays a citation. Time linear in the texts' lengths.

    Example::

        copied_from_sources("Smith [2] found it [1].", ["Smith [2] found it in 2001."])  # {5}
    """
    require_text(answer, "copied_from_sources: answer")
    source_texts = require_texts(source_texts, "copied_from_sources: source_texts")
    citations = find_citations(answer, len(source_texts))
    if not citations:
        return set()
    # marker as written -> its contexts in the sources; one pass over each source's brackets
    contexts: dict[str, set[tuple[str, ...]]] = {c.text: set() for c in citations}
    for text in source_texts:
        for group in _BRACKET_GROUP.finditer(text):
            if group.group() in contexts:
                contexts[group.group()] |= _copy_keys(
                    _words_before(text, group.start()), _words_after(text, group.end())
                )
    found: set[int] = set()
    for citation in citations:
        at = citation.end - len(citation.text)
        keys = _copy_keys(_words_before(answer, at), _words_after(answer, citation.end))
        if keys & contexts[citation.text]:
            found.add(citation.start)
    return found


def footnotes_from_sources(answer: str, source_texts: Sequence[str]) -> set[int]:
    """Start offsets of the markers of ``answer`` that are a source's own footnotes, not
    citations: quoted with the source's text (:func:`quoted_from_sources`) or copied with it
    unquoted (:func:`copied_from_sources`).

    Example::

        sources = ["Rome.", "Smith [1] found it in 2001."]
        footnotes_from_sources('"Smith [1] found it" [2]. Smith [1] found it [2].', sources)  # {6, 31}
    """
    return quoted_from_sources(answer, source_texts) | copied_from_sources(answer, source_texts)
