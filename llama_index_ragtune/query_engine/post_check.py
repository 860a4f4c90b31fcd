"""The citation post-check: every answered claim carries a valid citation, or is flagged.

A claim is a sentence of the answer (``grounding.split_claims``; a quotation
is never split). An answered claim without a valid citation is either

- flagged (``mode="flag"``): reported, the text left as written; or
- cited (``mode="cite"``): given the source the model itself finds most likely
  at that point -- ``choose(prefix)`` returns a probability per source for the
  answer text up to where the citation goes (``LocalChatLLM.citation_probabilities``)
  -- written as ``[n]`` after the claim's answer (before ``: "quote"``, else
  before its final full stop, else at its end).

A refusal has no claims to check. :func:`cite_uncited` is the engine's ``"cite"`` step: a
check that fails (the LLM cannot score a citation: its context window, its memory...)
leaves the answer as written, its uncited claims flagged and the check marked ``unchecked``.

Example::

    from llama_index_ragtune.query_engine.post_check import check_citations

    checked = check_citations("Rouen. Paris [2].", n_sources=2, mode="cite",
                              choose=lambda prefix: [0.7, 0.3])
    checked.text, [c.number for c in checked.added]       # ('Rouen [1]. Paris [2].', [1])
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llama_index_ragtune.grounding import (
    DEFAULT_REFUSAL,
    find_citations,
    is_refusal,
    sentence_spans,
)
from llama_index_ragtune.grounding.answers import SENTENCE_STOPS
from llama_index_ragtune.grounding.quotes import code_mask, find_quotes, footnotes_from_sources

MODES = ("flag", "cite")
_QUOTE_TAIL = re.compile(r"\s*:\s*[\"\u201c\u00ab\u300c\u300e\u201e]")
_END = SENTENCE_STOPS  # the citation goes before a danda or "\u06d4" too, as before "."


@dataclass(frozen=True)
class AddedCitation:
    """A citation the post-check wrote: after ``claim``, source ``number``, chosen with ``probability``.

    Example::

        AddedCitation("Rouen.", 2, 0.8).to_dict()   # {'claim': 'Rouen.', 'number': 2, 'probability': 0.8}
    """

    claim: str
    number: int
    probability: float

    def to_dict(self) -> dict:
        return {"claim": self.claim, "number": self.number, "probability": self.probability}


@dataclass(frozen=True)
class CitationCheck:
    """The answer after the post-check, the citations it added and the claims it flagged.

    Example::

        check_citations("Rouen. Paris [2].", n_sources=2).flagged    # ['Rouen.']
    """

    text: str
    mode: str
    added: list[AddedCitation] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "added_citations": [a.to_dict() for a in self.added],
            "uncited_claims": list(self.flagged),
        }


def claim_spans(answer: str) -> list[tuple[int, int]]:
    """Sentence spans of ``answer`` (``grounding.split_claims``), never cut inside a quotation.

    Example::

        text = 'Rouen [1]: "It is big. It is old." Paris [2].'
        [text[a:b] for a, b in claim_spans(text)]   # ['Rouen [1]: "It is big. It is old."', 'Paris [2].']
    """
    spans = sentence_spans(answer)
    quotes = [(m.start(), m.end()) for m in find_quotes(answer)]
    quote_starts = [q0 for q0, _q1 in quotes]
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        # the quotes are disjoint and in order: only the last one opened before start can hold it
        last = bisect.bisect_left(quote_starts, start) - 1
        if merged and last >= 0 and start < quotes[last][1]:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def uncited_claims(
    answer: str,
    n_sources: int,
    refusal: str = DEFAULT_REFUSAL,
    source_texts: Sequence[str] | None = None,
) -> list[tuple[int, int]]:
    """Spans of the claims of ``answer`` that cite no valid source (none for a refusal).

    With ``source_texts``, a source's own footnote quoted or copied with its text is no
    citation (``grounding.footnotes_from_sources``), as the query engine reads answers.

    Example::

        text = "Rouen is big. Paris [2]."
        [text[a:b] for a, b in uncited_claims(text, n_sources=2)]   # ['Rouen is big.']
    """
    if is_refusal(answer, refusal):
        return []
    footnotes = footnotes_from_sources(answer, source_texts) if source_texts is not None else ()
    marks = [
        (c.end - len(c.text), c.end)
        for c in find_citations(answer, n_sources)
        if c.cited and not (footnotes and c.start in footnotes)
    ]
    mark_starts = [m_start for m_start, _end in marks]
    code = code_mask(answer)
    out = []
    for start, end in claim_spans(answer):
        if all(code[start:end]):
            continue  # a code block is not a claim
        # marks are disjoint and in order: the first starting in the claim is the one to check
        first = bisect.bisect_left(mark_starts, start)
        if first == len(marks) or marks[first][1] > end:
            out.append((start, end))
    return out


def _insertion_point(answer: str, start: int, end: int) -> int:
    claim = answer[start:end]
    tail = _QUOTE_TAIL.search(claim)
    if tail is not None and tail.start() > 0:
        return start + tail.start()
    stripped = claim.rstrip()
    if stripped and stripped[-1] in _END:
        return start + len(stripped) - 1
    return start + len(stripped)


def check_citations(
    answer: str,
    n_sources: int,
    mode: str = "flag",
    choose: Callable[[str], Sequence[float]] | None = None,
    refusal: str = DEFAULT_REFUSAL,
    source_texts: Sequence[str] | None = None,
) -> CitationCheck:
    """Flag (``mode="flag"``) or cite (``mode="cite"``) the answered claims without a valid citation.

    ``choose(prefix)`` gives one probability per source (``n_sources`` of them) for
    the answer text ``prefix`` that the citation will follow; needed for ``"cite"``.
    With no source at all, ``"cite"`` cannot cite and flags instead. ``source_texts``:
    see :func:`uncited_claims`.
    """
    if mode not in MODES:
        raise ValueError(f"check_citations: mode must be one of {MODES}, got {mode!r}.")
    if mode == "cite" and choose is None:
        raise ValueError(
            "check_citations(mode='cite') needs choose= (prefix -> a probability per source), "
            "e.g. lambda prefix: llm.citation_probabilities(messages, prefix, n_sources)."
        )
    spans = uncited_claims(answer, n_sources, refusal, source_texts)
    if not spans:
        return CitationCheck(answer, mode)
    claims = [" ".join(answer[a:b].split()) for a, b in spans]
    if mode == "flag" or n_sources < 1:
        return CitationCheck(answer, mode, flagged=claims)
    added: list[AddedCitation] = []
    pieces, cursor = [], 0
    for (start, end), claim in zip(spans, claims, strict=True):
        point = _insertion_point(answer, start, end)
        prefix = "".join(pieces) + answer[cursor:point]
        probabilities = list(choose(prefix.rstrip()))
        if len(probabilities) != n_sources:
            raise ValueError(
                f"check_citations: choose() returned {len(probabilities)} probabilities for "
                f"{n_sources} sources."
            )
        number = max(range(n_sources), key=lambda i: probabilities[i]) + 1
        pieces.append(answer[cursor:point].rstrip() + f" [{number}]")
        cursor = point
        added.append(AddedCitation(claim, number, float(probabilities[number - 1])))
    pieces.append(answer[cursor:])
    return CitationCheck("".join(pieces), mode, added=added)


def cite_uncited(
    answer: str,
    n_sources: int,
    choose: Callable[[str], Sequence[float]],
    refusal: str = DEFAULT_REFUSAL,
    source_texts: Sequence[str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """``answer`` with each uncited claim cited (:func:`check_citations` ``"cite"``) and the
    check's record: ``{"mode", "added_citations", "uncited_claims"}`` (those still uncited).

    When the check raises, the answer comes back as written with its uncited claims flagged,
    ``"unchecked": True`` and the ``"error"``: a served answer is never lost to its check.

    Example::

        def fails(prefix):
            raise ValueError("past the context window")

        cite_uncited("Rouen. Paris [2].", 2, fails)[1]["unchecked"]      # True
        cite_uncited("Rouen. Paris [2].", 2, lambda p: [0.7, 0.3])[0]    # 'Rouen [1]. Paris [2].'
    """
    try:
        result = check_citations(answer, n_sources, "cite", choose, refusal, source_texts)
    except Exception as exc:  # the answer exists: a failed check must not lose it
        flagged = check_citations(
            answer, n_sources, "flag", refusal=refusal, source_texts=source_texts
        )
        record = {**flagged.to_dict(), "mode": "cite", "unchecked": True}
        return answer, {**record, "error": f"{type(exc).__name__}: {exc}"}
    checked = result.text
    still = uncited_claims(checked, n_sources, refusal, source_texts)
    record = {
        **result.to_dict(),
        "uncited_claims": [" ".join(checked[a:b].split()) for a, b in still],
    }
    return checked, record
