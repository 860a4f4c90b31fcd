"""The one BM25 of the package: a tokenizer and a bm25s index over plain texts.

:class:`~llama_index_ragtune.retrievers.BM25Retriever` (nodes, filters,
persistence) and the hard-negative miner's BM25 scorer
(:class:`~llama_index_ragtune.data.negative_sources.BM25Scorer`) both score with
:class:`BM25Index`, so a query ranks the same documents in either.

Example::

    from llama_index_ragtune.retrievers.bm25_index import BM25Index, BM25Tokenizer

    index = BM25Index.build(["Opened electronics: 14 days.", "Groceries are refunded."],
                            BM25Tokenizer())
    scores = index.get_scores("return opened headphones")
    index.top(scores, k=1)          # array([0]): positions, best first, score > 0 only
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import regex

from llama_index_ragtune.retrievers.bm25_analysis import (
    code_terms,
    fold_text,
    no_space_terms,
    strip_accents,
)
from llama_index_ragtune.retrievers.checks import clean_text

__all__ = [
    "ANALYZERS",
    "BM25_METHODS",
    "DEFAULT_TOKEN_PATTERN",
    "BM25Index",
    "BM25Tokenizer",
]

DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
"""Terms of 2+ word characters, for both analyzers (and indexes persisted before them).
Keeping one-digit numbers too (``iPhone 5``) lowered nDCG@10 / MRR@10 on SciFact train,
SQuAD passages and the demo queries; codes keep their digits through whole-code terms."""
ANALYZERS = ("unicode", "plain")
BM25_METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")


class BM25Tokenizer:
    """Normalise, split on a regex, drop stopwords, stem (PyStemmer) — the same for documents and queries.

    Args:
        language: PyStemmer algorithm name (``"english"``), or ``None`` for no stemming.
        stopwords: ``"en"``/``"english"`` (bm25s' NLTK list), another bm25s language code,
            a list of words, or ``None`` for none.
        token_pattern: regex whose matches are the tokens (default: runs of 2+ letters,
            digits and marks; one-character words such as ``I``, the ``t`` of ``don't`` or
            the ``5`` of ``iPhone 5`` are dropped, codes such as ``USB-C`` are kept whole by
            the analyzer; pass ``r"(?u)\\b\\w+\\b"`` to keep every one-character word).
        analyzer: ``"plain"`` (default): ``str.lower()`` and the pattern only.
            ``"unicode"``: NFKC + case folding, accent-insensitive terms, character bigrams
            for Chinese/Japanese/Thai, whole codes such as ``SKU-48213`` (see
            :mod:`~llama_index_ragtune.retrievers.bm25_analysis`); for corpora in other
            scripts than Latin, or with accents, full-width text or product codes. On
            English text the two score alike (``benchmarks/bm25_analyzers.py``).

    Example::

        BM25Tokenizer(analyzer="unicode")("Ｔｈｅ café's USB-C charger")
        # ['cafe', 'usb', 'charger', 'usbc']
    """

    def __init__(
        self,
        language: str | None = "english",
        stopwords: str | Sequence[str] | None = "en",
        token_pattern: str | None = None,
        analyzer: str = "plain",
    ) -> None:
        from bm25s.tokenization import _infer_stopwords

        if analyzer not in ANALYZERS:
            raise ValueError(f"unknown BM25 analyzer {analyzer!r}; choose one of {ANALYZERS}")
        if token_pattern is None:
            token_pattern = DEFAULT_TOKEN_PATTERN
        if not isinstance(token_pattern, str):
            raise TypeError(f"token_pattern must be a regex string, got {token_pattern!r}")
        self.analyzer = analyzer

        if language is not None and not isinstance(language, str):
            raise TypeError(f"language must be a stemmer name or None, got {language!r}")
        word_list = isinstance(stopwords, Sequence) and all(isinstance(w, str) for w in stopwords)
        if stopwords is not None and not isinstance(stopwords, str) and not word_list:
            raise TypeError(
                "stopwords must be a language code, a list of words or None, got "
                f"{type(stopwords).__name__}"
            )
        self.language = language
        self.stopwords_spec = (
            stopwords if stopwords is None or isinstance(stopwords, str) else list(stopwords)
        )
        self.token_pattern = token_pattern
        try:
            words = _infer_stopwords(stopwords) if stopwords is not None else ()
            # compared with the analysed text, so a list word matches whatever its spelling
            self._stopwords = frozenset(map(fold_text, words) if analyzer == "unicode" else words)
            compile_pattern = regex.compile if analyzer == "unicode" else re.compile
            self._findall = compile_pattern(token_pattern).findall
        except (re.error, regex.error) as exc:
            raise ValueError(
                f"token_pattern {token_pattern!r} is not a valid regular expression: {exc}"
            ) from exc
        except ValueError as exc:
            raise ValueError(f"stopwords={stopwords!r}: {exc}") from exc
        self._stem = None
        if language:
            import Stemmer

            try:
                self._stem = Stemmer.Stemmer(language).stemWords
            except KeyError as exc:
                raise ValueError(
                    f"unknown stemmer language {language!r}; use one of {Stemmer.algorithms()} or None"
                ) from exc

    def __call__(self, text: str) -> list[str]:
        if self.analyzer == "plain":
            tokens = [
                t for t in self._findall(clean_text(text).lower()) if t not in self._stopwords
            ]
            return self._stem(tokens) if self._stem is not None and tokens else tokens
        no_space, text = no_space_terms(fold_text(text))
        tokens = [strip_accents(t) for t in self._findall(text) if t not in self._stopwords]
        if self._stem is not None and tokens:
            tokens = self._stem(tokens)
        return tokens + [strip_accents(c) for c in code_terms(text)] + no_space

    def no_terms_hint(self) -> str:
        """How to get terms from a corpus that yields none (for the error that says so):
        the advice that can help with this tokenizer's settings, never one already taken."""
        steps = ["give texts with words in them"]
        if self.stopwords_spec is not None:
            steps.append("pass stopwords=None")
        if self.token_pattern == DEFAULT_TOKEN_PATTERN:
            steps.append(
                "pass a token_pattern that matches your terms (the default keeps runs of 2 or "
                "more letters or digits: one-character words, emoji and symbols are dropped)"
            )
        return ", or ".join(steps)

    def config(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "stopwords": self.stopwords_spec,
            "token_pattern": self.token_pattern,
            "analyzer": self.analyzer,
        }


class BM25Index:
    """A bm25s index over texts tokenised by a :class:`BM25Tokenizer`; scores and top-k.

    Args:
        bm25: a built (or loaded) ``bm25s.BM25``.
        tokenizer: the tokenizer its corpus went through (queries go through it too).

    Example::

        index = BM25Index.build(texts, BM25Tokenizer(), k1=1.2, b=0.75)
        best = index.top(index.get_scores("apple return policy"), k=10)
    """

    def __init__(self, bm25: Any, tokenizer: BM25Tokenizer) -> None:
        self.bm25 = bm25
        self.tokenizer = tokenizer
        self.vocab: dict[str, int] = bm25.vocab_dict

    @classmethod
    def build(
        cls,
        texts: Sequence[str] | None,
        tokenizer: BM25Tokenizer,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        show_progress: bool = False,
        corpus_tokens: list[list[str]] | None = None,
    ) -> BM25Index:
        """Tokenise ``texts`` (or take ``corpus_tokens``) and index them with bm25s.

        Raises ``ValueError`` when no document keeps a term after tokenisation (an empty or
        stopword-only corpus): BM25 would have nothing to score.

        Example::

            index = BM25Index.build(["a text", "another text"], BM25Tokenizer())
        """
        import bm25s

        if method not in BM25_METHODS:
            raise ValueError(f"unknown BM25 method {method!r}; choose one of {BM25_METHODS}")
        if corpus_tokens is None:
            corpus_tokens = [tokenizer(t) for t in texts or ()]
        if not any(corpus_tokens):
            raise ValueError(
                f"none of the {len(corpus_tokens)} documents has a term BM25 can index after "
                f"lower-casing, stopword removal (stopwords={tokenizer.stopwords_spec!r}) and "
                f"stemming (token_pattern={tokenizer.token_pattern!r}); {tokenizer.no_terms_hint()}"
            )
        bm25 = bm25s.BM25(k1=k1, b=b, method=method)
        bm25.index(corpus_tokens, show_progress=show_progress)
        return cls(bm25, tokenizer)

    @property
    def num_docs(self) -> int:
        """How many texts the index holds."""
        return int(self.bm25.scores["num_docs"])

    def get_scores(self, query: str) -> np.ndarray:
        """BM25 score of every text for ``query`` (index order; 0 = no query term)."""
        ids = [self.vocab[t] for t in self.tokenizer(query) if t in self.vocab]
        if not ids:
            return np.zeros(self.num_docs, dtype=np.float32)
        return np.asarray(self.bm25.get_scores_from_ids(ids), dtype=np.float32)

    @staticmethod
    def top(scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
        """Positions of the ``k`` best scores above 0 (within ``allowed``), best first.

        Ties go to the earlier position, so rankings are deterministic.
        """
        mask = scores > 0
        if allowed is not None:
            mask &= allowed
        candidates = np.flatnonzero(mask)
        if candidates.size > k:
            keep = np.argpartition(-scores[candidates], k - 1)[:k]
            candidates = candidates[keep]
        return candidates[np.lexsort((candidates, -scores[candidates]))]
