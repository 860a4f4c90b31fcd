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
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import regex

from llama_index_ragtune._words import words
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
    "BM25_STOPWORD_CHOICES",
    "DEFAULT_TOKEN_PATTERN",
    "LANGUAGE_STOPWORDS",
    "BM25Index",
    "BM25Text",
    "BM25Tokenizer",
    "bm25_stopwords_value",
    "check_bm25_language",
    "language_stopwords",
    "stemmer_languages",
]

DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
"""Terms of 2+ word characters, for both analyzers (and indexes persisted before them).
Keeping one-digit numbers too (``iPhone 5``) lowered nDCG@10 / MRR@10 on SciFact train,
SQuAD passages and the demo queries; codes keep their digits through whole-code terms."""
ANALYZERS = ("unicode", "plain")
BM25_METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
LANGUAGE_STOPWORDS = "language"
"""``stopwords=LANGUAGE_STOPWORDS`` (the default): the stopword list of the stemmer language."""
_STOPWORDS_OF = {
    "english": "en",
    "porter": "en",
    "german": "de",
    "dutch": "nl",
    "french": "fr",
    "spanish": "es",
    "portuguese": "pt",
    "italian": "it",
    "russian": "ru",
    "swedish": "sv",
    "norwegian": "no",
    "turkish": "tr",
    "danish": "da",
}
"""bm25s' stopword list (NLTK's) of each PyStemmer language that has one."""


@cache
def stemmer_languages() -> tuple[str, ...]:
    """The PyStemmer (Snowball) stemmer names a BM25 accepts as its ``language``.

    Example::

        "german" in stemmer_languages()     # True
    """
    import Stemmer

    return tuple(Stemmer.algorithms())


def language_stopwords(language: str | None) -> str | None:
    """The bm25s stopword list that goes with a stemmer ``language`` (``None``: no list).

    ``None`` (no stemming: the language is not known) and languages bm25s has no list for
    get none, never the English one: English stopwords would drop words of another language
    (German ``was``, ``will``) and keep its own (``der``, ``die``, ``und``).

    Example::

        language_stopwords("german"), language_stopwords("finnish")   # ('de', None)
    """
    if language is None:
        return None
    return _STOPWORDS_OF.get(language, language if language in _STOPWORDS_OF.values() else None)


def check_bm25_language(language: Any, what: str) -> str | None:
    """``language`` if it is a stemmer name or ``None``, else a ``ValueError`` naming ``what``.

    PyStemmer's aliases (``"de"``, ``"ger"``) are accepted as :class:`BM25Tokenizer` accepts
    them; the stopwords follow a bm25s code (``"de"``) but not a three-letter alias.

    Example::

        check_bm25_language("german", "PipelineConfig.bm25_language")   # 'german'
    """
    if language is None or (isinstance(language, str) and language in stemmer_languages()):
        return language
    if isinstance(language, str):
        import Stemmer

        try:
            Stemmer.Stemmer(language)
            return language
        except KeyError:
            pass
    raise ValueError(
        f"{what} must be one of {', '.join(stemmer_languages())} or None (no stemming), got "
        f"{language!r}: the stemmer of your documents' language, e.g. 'german' for a German "
        "help centre"
    )


BM25_STOPWORD_CHOICES = "'language' (the BM25 language's list, default), 'none', a list code"
"""The stopword settings named in errors about them."""


def bm25_stopwords_value(option: Any) -> str | list[str] | None:
    """The ``bm25_stopwords`` setting of a value as a user gives it (``--bm25-stopwords``,
    ``PipelineConfig(bm25_stopwords=...)``, a manifest): ``"language"``,
    ``None`` (``"none"``), a bm25s list code, or a list of lower-cased words; a list (as a
    run records it) is checked word by word. ``ValueError`` naming what is wrong.

    Example::

        bm25_stopwords_value("none"), bm25_stopwords_value("The,A")   # (None, ['the', 'a'])
    """
    if option is None or option == "none":
        return None
    if isinstance(option, (list, tuple)):
        words = list(option)
    elif not isinstance(option, str):
        raise ValueError(f"BM25 stopwords must be text or a list of words, got {option!r}")
    elif "," not in option:
        if option == LANGUAGE_STOPWORDS or _is_stopword_list_code(option):
            return str(option)
        raise ValueError(
            f"unknown BM25 stopword list {option!r}: use {BM25_STOPWORD_CHOICES} (en, de, "
            "fr, ...), or your words separated by commas (one word: 'sku,')"
        )
    else:
        words = [w.strip() for w in option.split(",") if w.strip()]
    if not words:
        raise ValueError(f"no stopword in {option!r}: give words separated by commas")
    bad = [w for w in words if not isinstance(w, str) or not w or any(c.isspace() for c in w)]
    if bad:
        raise ValueError(
            f"BM25 stopwords {bad[:5]!r} can never match: a stopword is one word without "
            "spaces (BM25 splits text into words before stopwords are dropped)"
        )
    return list(dict.fromkeys(w.lower() for w in words))


def _is_stopword_list_code(text: str) -> bool:
    from bm25s.tokenization import _infer_stopwords

    try:
        return bool(_infer_stopwords(text))
    except ValueError:
        return False


@dataclass(frozen=True)
class BM25Text:
    """How a BM25 reads text: analyzer, stemmer language and stopwords, as one setting.

    Every BM25 of a tuning run (the index and bundle, the hard-negative miner, the
    validation hybrids) is built from the same ``BM25Text``, so they rank alike.
    ``stopwords`` defaults to the language's list (:func:`language_stopwords`).

    Example::

        BM25Text(language="german").tokenizer_kwargs()
        # {'analyzer': 'plain', 'language': 'german', 'stopwords': 'de'}
    """

    analyzer: str = "plain"
    language: str | None = "english"
    stopwords: str | tuple[str, ...] | None = LANGUAGE_STOPWORDS

    def __post_init__(self) -> None:
        if self.analyzer not in ANALYZERS:
            raise ValueError(
                f"bm25_analyzer must be one of {', '.join(ANALYZERS)}, got {self.analyzer!r}"
            )
        check_bm25_language(self.language, "bm25_language")
        if isinstance(self.stopwords, list):
            object.__setattr__(self, "stopwords", tuple(self.stopwords))

    def tokenizer_kwargs(self) -> dict[str, Any]:
        """:class:`BM25Tokenizer` (and ``BM25Retriever``) arguments, stopwords resolved."""
        stopwords = self.stopwords
        if stopwords == LANGUAGE_STOPWORDS:
            stopwords = language_stopwords(self.language)
        elif isinstance(stopwords, tuple):
            stopwords = list(stopwords)
        return {"analyzer": self.analyzer, "language": self.language, "stopwords": stopwords}

    def retriever_kwargs(self) -> dict[str, Any]:
        """``BM25Retriever`` arguments (``HybridRetriever``'s ``bm25_kwargs``): the analyzer,
        and the language and stopwords where they are not the retriever's defaults.

        Example::

            BM25Text(language="german").retriever_kwargs()   # {'analyzer': 'plain', 'language': 'german'}
        """
        kwargs: dict[str, Any] = {"analyzer": self.analyzer}
        if self.language != "english":
            kwargs["language"] = self.language
        if self.stopwords != LANGUAGE_STOPWORDS:
            kwargs["stopwords"] = self.tokenizer_kwargs()["stopwords"]
        return kwargs

    def options(self) -> dict[str, Any]:
        """The ``bm25_analyzer`` / ``bm25_language`` arguments of the tuning engines, the
        miner and the evaluator (and what their results record)."""
        return {"bm25_analyzer": self.analyzer, "bm25_language": self.language}


def _words_of_two_or_more(text: str) -> list[str]:
    """``re.findall(DEFAULT_TOKEN_PATTERN, text)`` with combining marks kept in their words."""
    return [w for w in words(text) if len(w) > 1]


class BM25Tokenizer:
    """Normalise, split on a regex, drop stopwords, stem (PyStemmer) — the same for documents and queries.

    Args:
        language: PyStemmer algorithm name (``"english"``, ``"german"``, ...:
            :func:`stemmer_languages`), or ``None`` for no stemming.
        stopwords: by default the list of ``language`` (:func:`language_stopwords`: German
            stopwords for ``"german"``, none for ``None`` or a language bm25s has no list
            for); or ``"en"``/``"english"`` (bm25s' NLTK list), another bm25s language code,
            a list of words, or ``None`` for none.
        token_pattern: regex whose matches are the tokens (default: runs of 2+ letters,
            digits and marks; one-character words such as ``I``, the ``t`` of ``don't`` or
            the ``5`` of ``iPhone 5`` are dropped, codes such as ``USB-C`` are kept whole by
            the analyzer; pass ``r"(?u)\\b\\w+\\b"`` to keep every one-character word).
        analyzer: ``"plain"`` (default): ``str.lower()`` and the pattern only (the default
            pattern keeps combining marks inside their words, as ``\\w`` alone does not:
            ``"हिन्दी"`` is one term, not the cut ``"न्द"``).
            ``"unicode"``: NFKC + case folding, accent-insensitive terms, character bigrams
            for Chinese/Japanese/Thai, whole codes such as ``SKU-48213`` (see
            :mod:`~llama_index_ragtune.retrievers.bm25_analysis`); for corpora in other
            scripts than Latin, or with accents, full-width text or product codes. On
            English text the two score alike (``benchmarks/bm25_analyzers.py``).
        split_marks: read text as indexes persisted before the analyzers kept combining
            marks did (plain: words cut at each vowel sign or virama, the signs dropped;
            unicode: codes such as ``"न/ब"`` found inside words), so that such an index
            still finds its terms; a persisted index records it.

    Example::

        BM25Tokenizer(analyzer="unicode")("Ｔｈｅ café's USB-C charger")
        # ['cafe', 'usb', 'charger', 'usbc']
    """

    def __init__(
        self,
        language: str | None = "english",
        stopwords: str | Sequence[str] | None = LANGUAGE_STOPWORDS,
        token_pattern: str | None = None,
        analyzer: str = "plain",
        split_marks: bool = False,
    ) -> None:
        from bm25s.tokenization import _infer_stopwords

        if analyzer not in ANALYZERS:
            raise ValueError(f"unknown BM25 analyzer {analyzer!r}; choose one of {ANALYZERS}")
        if token_pattern is None:
            token_pattern = DEFAULT_TOKEN_PATTERN
        if not isinstance(token_pattern, str):
            raise TypeError(f"token_pattern must be a regex string, got {token_pattern!r}")
        if not isinstance(split_marks, bool):
            raise TypeError(f"split_marks must be True or False, got {split_marks!r}")
        self.analyzer = analyzer
        self.split_marks = split_marks

        if language is not None and not isinstance(language, str):
            raise TypeError(f"language must be a stemmer name or None, got {language!r}")
        if stopwords == LANGUAGE_STOPWORDS:
            stopwords = language_stopwords(language)
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
            if analyzer == "plain" and token_pattern == DEFAULT_TOKEN_PATTERN and not split_marks:
                self._findall = _words_of_two_or_more
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
                    f"unknown stemmer language {language!r}; use one of {stemmer_languages()} or None"
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
        codes = code_terms(text, self.split_marks)
        return tokens + [strip_accents(c) for c in codes] + no_space

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
            "split_marks": self.split_marks,
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
