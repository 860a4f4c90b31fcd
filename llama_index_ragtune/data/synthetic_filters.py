"""The filters of synthetic questions: copies of their passage, and lines that are no question.

``generate_synthetic_queries`` (``data.synthetic``) applies them to what the LLM wrote:
``CopyFilter`` drops a query that copies its passage (an easy query teaches the encoder
nothing); ``QualityFilter`` drops a line that is too long, loops, shares no topic word
with the passage, or answers instead of asking. Both are importable from
``data.synthetic`` too.

Example::

    from llama_index_ragtune.data.synthetic_filters import CopyFilter, QualityFilter

    CopyFilter().reason("apples can be returned within 7 days", "Apples can be returned within 7 days.")
    # 'overlap_ratio'
    QualityFilter().reason("I'm ready to help. What's your question?", "Apples: 7 days.")
    # 'off_passage'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from llama_index_ragtune.data.records import twin_key
from llama_index_ragtune.data.sentences import split_sentences
from llama_index_ragtune.data.synthetic_parsing import query_tokens


@dataclass
class CopyFilter:
    """Flags queries that copy their passage.

    Args:
        max_copied_ngram: drop a query sharing a run of this many consecutive words
            with the passage (``None`` disables).
        max_overlap_ratio: drop a query when at least this fraction of its word
            n-grams (``overlap_ngram`` words each) occurs in the passage (``None``
            disables). Applied to queries of at least ``overlap_ngram + 3`` words.
        overlap_ngram: n-gram size of the ratio test (2 = word pairs; unigram overlap
            is high for good questions too).
    """

    max_copied_ngram: int | None = 10
    max_overlap_ratio: float | None = 0.8
    overlap_ngram: int = 2

    def reason(self, query: str, passage: str) -> str | None:
        """``"copied_ngram"`` or ``"overlap_ratio"`` when the query copies the passage, else None."""
        q = query_tokens(query)
        n = self.max_copied_ngram
        if n is not None and len(q) >= n and _ngrams(q, n) & _passage_ngrams(passage, n):
            return "copied_ngram"
        k = self.overlap_ngram
        if self.max_overlap_ratio is not None and len(q) >= k + 3:
            q_grams = [tuple(q[i : i + k]) for i in range(len(q) - k + 1)]
            p_grams = _passage_ngrams(passage, k)
            ratio = sum(g in p_grams for g in q_grams) / len(q_grams)
            if ratio >= self.max_overlap_ratio:
                return "overlap_ratio"
        return None

    def __call__(self, query: str, passage: str) -> bool:
        return self.reason(query, passage) is not None


# Words that say nothing about a passage's topic (question words, auxiliaries, pronouns,
# prepositions); what remains of a question must meet the passage at least once.
_FUNCTION_WORDS = frozenset(
    """a about above after again against all am an and any are as at be been before being
    below between both but by can could did do does doing down during each else ever
    every few for from further get gets got had has have having he her here hers him his
    how i if in into is it its itself just me more most my no nor not now of off on once
    only or other our out over own same she should so some such than that the their them
    then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours question
    questions answer answers passage context text""".split()  # noqa: SIM905 - reads as a list
)


def _content_stems(text: str, tokens: Sequence[str] | None = None) -> set[str]:
    """Topic words of ``text`` (or of its ``tokens``), function words left out, cut to 5
    characters so that "returns" meets "returned"."""
    words = query_tokens(text) if tokens is None else tokens
    return {w[:5] for w in words if w not in _FUNCTION_WORDS}


# an answer labelled as such, or a Markdown heading copied from the passage
_NOT_A_QUERY = re.compile(r"\s*(?:(?:answer|a)\s*:|#{1,6}\s)", re.IGNORECASE)
# the LLM declining the task or refusing to answer, with or without a question mark
_DECLINES = re.compile(
    r"^\W*(?:(?:i'?m|i\s+am)\s+(?:sorry|unable|not\s+able|afraid)\b|sorry\b(?!-)|apologies\b"
    r"|i\s+(?:cannot|can'?t|can\s+not|could\s+not|couldn'?t|won'?t|will\s+not|am\s+unable)\b"
    r"|as\s+an\s+ai\b|(?:the|this|these)\s+(?:provided\s+|given\s+)?"
    r"(?:passage|text|context|document|sources?)\s+(?:does|do|did)\s*(?:not|n'?t)\s+"
    r"(?:contain|provide|include|mention|say|answer|have|give)\b)",
    re.IGNORECASE,
)


def declines(line: str) -> bool:
    """True when ``line`` is the LLM declining or refusing, not a question: the grounded
    refusal sentence (``DEFAULT_REFUSAL``, in bold or quotes too, with or without its full
    stop), an apology, "I cannot ...", "As an AI ...", "The passage does not contain ...".

    Example::

        declines("Insufficient information in the provided sources"), declines("What is X?")
        # (True, False)
    """
    from llama_index_ragtune.grounding import is_refusal

    return bool(_DECLINES.match(line)) or (bool(line.strip()) and is_refusal(line))


@dataclass
class QualityFilter:
    """Flags generated lines that are not usable search questions.

    Small LLMs loop, ramble or answer the prompt instead of the passage; such lines
    would teach the encoder to match noise.

    Args:
        max_query_tokens: drop a question longer than this many words (``"too_long"``;
            ``None`` disables): a search question is a sentence, not a paragraph.
        max_ngram_repeats: drop a question in which a run of ``repeat_ngram`` words
            occurs more than this many times (``"degenerate"``: the model looped;
            ``None`` disables).
        min_shared_words: drop a question sharing fewer topic words (function words
            left out, compared on their first 5 letters) with its passage
            (``"off_passage"``: it is about the prompt or nothing; ``0`` disables).
        drop_statements: drop an answer or a statement instead of a query
            (``"not_a_question"``: a line labelled ``Answer:``, a Markdown heading, a
            refusal or apology (:func:`declines`), a line or sentence of the passage written
            back without a question mark (:func:`echoes_passage`), or a sentence of six
            words or more ending in a full stop; a keyword query such as "apple return
            policy" is kept).

    Example::

        QualityFilter().reason("I'm ready to help. What's your question?", "Apples: 7 days.")
        # 'off_passage'
    """

    max_query_tokens: int | None = 40
    max_ngram_repeats: int | None = 1
    repeat_ngram: int = 3
    min_shared_words: int = 1
    drop_statements: bool = True

    def reason(self, query: str, passage: str) -> str | None:
        """``"too_long"``, ``"degenerate"``, ``"off_passage"`` or ``"not_a_question"``, else None."""
        words = query_tokens(query)
        if self.max_query_tokens is not None and len(words) > self.max_query_tokens:
            return "too_long"
        n = self.repeat_ngram
        if self.max_ngram_repeats is not None and len(words) >= n:
            counts: dict[tuple[str, ...], int] = {}
            for i in range(len(words) - n + 1):
                gram = tuple(words[i : i + n])
                counts[gram] = counts.get(gram, 0) + 1
            if max(counts.values()) > self.max_ngram_repeats:
                return "degenerate"
        if self.min_shared_words > 0:
            shared = _content_stems(query) & _content_stems(passage, _passage_tokens(passage))
            if len(shared) < self.min_shared_words:
                return "off_passage"
        asks = any(mark in query for mark in "?\uff1f\u061f")
        if self.drop_statements and (
            _NOT_A_QUERY.match(query)
            or declines(query)
            or (len(words) >= 6 and query.rstrip().endswith((".", "\u3002")) and not asks)
            or (not asks and echoes_passage(query, passage))
        ):
            return "not_a_question"
        return None


def echoes_passage(line: str, passage: str) -> bool:
    """True when ``line`` is a whole line or sentence of ``passage`` (up to case, spacing and
    punctuation, ``twin_key``): the LLM writing the passage back, as "Price: 20 EUR" from a
    product sheet, not a question about it.

    Example::

        echoes_passage("price: 20 eur", "Kettle K2\nPrice: 20 EUR"), echoes_passage("K2 price", "Kettle K2")
        # (True, False)
    """
    key = twin_key(line)
    return bool(key) and len(key) <= len(passage) + 1 and key in _passage_units(passage)


@lru_cache(maxsize=8)
def _passage_units(passage: str) -> frozenset[str]:
    """The ``twin_key`` of each line and sentence of ``passage``, once per passage (the
    filters see one passage for each of its questions)."""
    units = set()
    for passage_line in passage.splitlines():
        units.add(twin_key(passage_line))
        units.update(twin_key(sentence) for sentence in split_sentences(passage_line))
    units.discard("")
    return frozenset(units)


@lru_cache(maxsize=8)
def _passage_tokens(passage: str) -> tuple[str, ...]:
    """``query_tokens(passage)``, once per passage: read again for each of its questions by
    both filters, a passage of a megabyte cost 0.4 s a question."""
    return tuple(query_tokens(passage))


@lru_cache(maxsize=8)
def _passage_ngrams(passage: str, n: int) -> frozenset[tuple[str, ...]]:
    """The word ``n``-grams of ``passage``, once per passage and size."""
    return frozenset(_ngrams(_passage_tokens(passage), n))


def _ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}
