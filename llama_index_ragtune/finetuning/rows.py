"""Training rows for the encoder-side trainers, built from a ``RetrievalDataset``.

- bi-encoder: ``{"anchor", "positive"}`` pairs, or with hard negatives
  ``{"anchor", "positive", "negative"}`` (``negative_1..n`` for several), the
  layouts of ``MultipleNegativesRankingLoss``;
- cross-encoder: pointwise ``{"query", "passage", "label"}`` rows
  (``BinaryCrossEntropyLoss``), listwise ``{"query", "docs", "labels"}`` rows
  (``LambdaLoss`` / ``ListNetLoss``), or ``{"query", "positive", "negative"}``
  triplets, one per (positive, negative) (``MarginMSELoss`` after a teacher
  labels them).

Every (query, positive) pair gives one row. A query's negatives are shuffled
(seeded per query) and handed out round-robin, so its rows use different
negatives and mined sources mix (a query with fewer negatives than asked reuses
them). A query without any negative gets random corpus passages that are none
of its positives (counted in the stats), so no pair is silently dropped.

A negative is never the same passage as a positive: a mined negative that is a
positive of the query's twin (the same question under another id) or has the
same text as one of its positives (a duplicated document) is left out with a
warning naming it (``RowStats.dropped_negatives``), a negative listed twice is
used once, and random fillers skip such passages too. A query whose every
document is such a passage is a ``DataError`` naming it.

Example::

    from llama_index_ragtune.finetuning.rows import encoder_rows

    rows, stats = encoder_rows(train, max_negatives_per_query=1, seed=0)
    Dataset.from_dict(rows)     # columns anchor, positive, negative
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.records import twin_key
from llama_index_ragtune.data.validation import fmt_ids

if TYPE_CHECKING:
    from llama_index_ragtune.data.schema import RetrievalDataset

logger = logging.getLogger(__name__)


@dataclass
class RowStats:
    """How the rows were built: counts of rows, mined negatives used and random fillers."""

    rows: int = 0
    queries: int = 0
    mined_negatives: int = 0
    random_negatives: int = 0
    sources: dict[str, int] = field(default_factory=dict)
    #: ``"query:doc"`` of mined negatives left out: a positive of the query (or of its
    #: twin), or the same text as one
    dropped_negatives: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "queries": self.queries,
            "mined_negatives": self.mined_negatives,
            "random_negatives": self.random_negatives,
            "sources": dict(self.sources),
            "dropped_negatives": list(self.dropped_negatives),
        }

    def warn_dropped(self) -> None:
        """Log the negatives left out because they are the same passage as a positive."""
        if self.dropped_negatives:
            logger.warning(
                "training rows: left out %d negatives that are the same passage as a positive "
                "of their query or of its twin (same doc id, or the same text under another "
                "id), query:doc %s; remove them from the negatives, or the duplicated "
                "documents from the corpus",
                len(self.dropped_negatives),
                fmt_ids(self.dropped_negatives),
            )


def check_trainable(dataset: Any, what: str) -> RetrievalDataset:
    """Return ``dataset`` as a ``RetrievalDataset`` with at least one (query, positive) pair.

    LlamaIndex's ``EmbeddingQAFinetuneDataset`` (or anything with its fields) is converted.
    """
    from llama_index_ragtune.data.schema import RetrievalDataset

    if dataset is None:
        raise ValueError(
            f"{what} is None; pass a RetrievalDataset (e.g. RetrievalDataset.from_beir(path, 'train'))"
        )
    if not isinstance(dataset, RetrievalDataset):
        if all(hasattr(dataset, k) for k in ("queries", "corpus", "relevant_docs")):
            dataset = RetrievalDataset.from_llama_index(dataset)
        else:
            raise TypeError(
                f"{what} must be a RetrievalDataset (or LlamaIndex EmbeddingQAFinetuneDataset), "
                f"got {type(dataset).__name__}"
            )
    if len(dataset) == 0 or dataset.num_pairs == 0:
        raise ValueError(
            f"{what} has no (query, positive document) pairs to train on; give each query at least one "
            "relevant doc id in relevant_docs"
        )
    return dataset


class _NegativeSampler:
    """Hands out a query's mined negatives (shuffled, round-robin), or random passages when it
    has none; never a passage that is one of its positives (see the module doc)."""

    def __init__(self, dataset: RetrievalDataset, seed: int, stats: RowStats) -> None:
        self.dataset = dataset
        self.seed = seed
        self.stats = stats
        self.doc_ids = list(dataset.corpus)
        self._text_keys: dict[str, str] = {}
        # a query's positives and its twins' (the same question under another id)
        twins: dict[str, set[str]] = {}
        for qid, text in dataset.queries.items():
            twins.setdefault(twin_key(text), set()).update(dataset.relevant_docs.get(qid, ()))
        self._positives_of = {q: twins[twin_key(t)] for q, t in dataset.queries.items()}

    def _text_key(self, doc_id: str) -> str:
        if doc_id not in self._text_keys:
            self._text_keys[doc_id] = twin_key(self.dataset.corpus[doc_id])
        return self._text_keys[doc_id]

    def _is_positive(self, doc_id: str, positives: set[str], texts: set[str]) -> bool:
        return doc_id in positives or self._text_key(doc_id) in texts

    def for_query(self, qid: str, count: int, distinct: bool = False) -> list[str]:
        """``count`` negative doc ids for ``qid``: its mined ones (shuffled; reused
        round-robin when it has fewer, or only the available ones when ``distinct``),
        else random passages (reused the same way when the corpus has fewer)."""
        rng = random.Random(f"{self.seed}:{qid}")
        positives = self._positives_of[qid]
        texts = {self._text_key(d) for d in positives}
        mined, seen = [], set()
        for neg in self.dataset.negatives.get(qid, []):
            if neg.doc_id in seen:  # listed twice: used once
                continue
            seen.add(neg.doc_id)
            if self._is_positive(neg.doc_id, positives, texts):
                self.stats.dropped_negatives.append(f"{qid}:{neg.doc_id}")
            else:
                mined.append(neg)
        if mined:
            rng.shuffle(mined)
            picked = mined[:count] if distinct else [mined[i % len(mined)] for i in range(count)]
            for neg in picked:
                self.stats.sources[neg.source] = self.stats.sources.get(neg.source, 0) + 1
            self.stats.mined_negatives += len(picked)
            return [neg.doc_id for neg in picked]
        out = self._random(qid, count, rng, positives, texts)
        self.stats.random_negatives += len(out)
        return out if distinct else [out[i % len(out)] for i in range(count)]

    def _random(
        self, qid: str, count: int, rng: random.Random, positives: set[str], texts: set[str]
    ) -> list[str]:
        """Up to ``count`` distinct random passages that are not positives of ``qid``."""
        if count < 1:
            return []
        out: list[str] = []
        taken: set[str] = set()
        for _ in range(8 * count + 64):  # draws; a corpus of mostly positives is listed below
            doc = self.doc_ids[rng.randrange(len(self.doc_ids))]
            if doc not in taken and not self._is_positive(doc, positives, texts):
                out.append(doc)
                if len(out) == count:
                    return out
            taken.add(doc)
        eligible = [d for d in self.doc_ids if not self._is_positive(d, positives, texts)]
        if not eligible:
            raise DataError(
                f"query {qid!r} has no negatives and every document in the corpus is one of its "
                "positives (or has the same text as one), so there is nothing to train it "
                "against; add other documents to the corpus, give it negatives, or drop it "
                "(dataset.subset(...))"
            )
        rest = [d for d in eligible if d not in taken]
        rng.shuffle(rest)
        return out + rest[: count - len(out)]


def _negatives_per_pair(
    sampler: _NegativeSampler, qid: str, positives: Sequence[str], n: int
) -> list[list[str]]:
    pool = sampler.for_query(qid, n * len(positives))
    return [pool[i * n : (i + 1) * n] for i in range(len(positives))]


def encoder_rows(
    dataset: RetrievalDataset,
    max_negatives_per_query: int = 1,
    seed: int = 0,
    positives: Mapping[str, Sequence[str]] | None = None,
) -> tuple[dict[str, list[str]], RowStats]:
    """Columns for a bi-encoder trainer: pairs when the dataset has no negatives (or
    ``max_negatives_per_query=0``), else anchor/positive/negative(s).

    ``positives`` (``{qid: doc ids}``, e.g. from ``budget.select_positives``) restricts
    the rows to those pairs and those queries; by default every pair gives a row.
    """
    if max_negatives_per_query < 0:
        raise ValueError(f"max_negatives_per_query must be >= 0, got {max_negatives_per_query}")
    chosen = positives if positives is not None else dataset.relevant_docs
    stats = RowStats(queries=len(chosen))
    n = max_negatives_per_query if dataset.num_negatives else 0
    neg_cols = [] if n == 0 else ["negative"] if n == 1 else [f"negative_{i + 1}" for i in range(n)]
    columns: dict[str, list[str]] = {"anchor": [], "positive": [], **{c: [] for c in neg_cols}}
    sampler = _NegativeSampler(dataset, seed, stats)
    for qid, query, all_positives, _ in dataset:
        if qid not in chosen:
            continue
        positives_of_query = list(chosen[qid])
        unknown = [d for d in positives_of_query if d not in all_positives]
        if unknown:
            raise ValueError(f"query {qid!r}: {unknown[:3]} are not among its positives")
        negatives = (
            _negatives_per_pair(sampler, qid, positives_of_query, n)
            if n
            else [[] for _ in positives_of_query]
        )
        for pos, negs in zip(positives_of_query, negatives, strict=True):
            columns["anchor"].append(query)
            columns["positive"].append(dataset.corpus[pos])
            for col, doc in zip(neg_cols, negs, strict=True):
                columns[col].append(dataset.corpus[doc])
    stats.rows = len(columns["anchor"])
    stats.warn_dropped()
    return columns, stats


CrossEncoderLayout = Literal["pointwise", "listwise", "triplets"]


def cross_encoder_rows(
    dataset: RetrievalDataset,
    layout: CrossEncoderLayout = "pointwise",
    max_negatives_per_query: int = 4,
    seed: int = 0,
    positives: Mapping[str, Sequence[str]] | None = None,
) -> tuple[dict[str, list[Any]], RowStats]:
    """Columns for a cross-encoder trainer in the given ``layout`` (see module doc).

    Every layout takes up to ``max_negatives_per_query`` distinct negatives per
    query; triplets pair each positive with each of them (one row per pair).
    ``positives`` (``{qid: doc ids}``) restricts the rows to those queries and pairs.
    """
    if max_negatives_per_query < 1:
        raise ValueError(
            f"a cross-encoder needs negatives: max_negatives_per_query must be >= 1, got {max_negatives_per_query}"
        )
    stats = RowStats()
    # negatives are drawn against every positive, not only the ones trained on: a positive
    # left out by the budget is still relevant, never a negative
    sampler = _NegativeSampler(dataset, seed, stats)
    if positives is not None:
        dataset = dataset._replace(
            queries={q: dataset.queries[q] for q in positives},
            relevant_docs={q: list(p) for q, p in positives.items()},
            negatives={q: dataset.negatives[q] for q in positives if q in dataset.negatives},
        )
    stats.queries = len(dataset)
    if layout == "pointwise":
        columns: dict[str, list[Any]] = {"query": [], "passage": [], "label": []}
        for qid, query, positives, _ in dataset:
            for doc, label in [(p, 1.0) for p in positives] + [
                (d, 0.0) for d in sampler.for_query(qid, max_negatives_per_query, distinct=True)
            ]:
                columns["query"].append(query)
                columns["passage"].append(dataset.corpus[doc])
                columns["label"].append(label)
    elif layout == "listwise":
        columns = {"query": [], "docs": [], "labels": []}
        for qid, query, positives, _ in dataset:
            negatives = sampler.for_query(qid, max_negatives_per_query, distinct=True)
            columns["query"].append(query)
            columns["docs"].append([dataset.corpus[d] for d in [*positives, *negatives]])
            columns["labels"].append([1.0] * len(positives) + [0.0] * len(negatives))
    elif layout == "triplets":
        columns = {"query": [], "positive": [], "negative": []}
        for qid, query, positives, _ in dataset:
            negatives = sampler.for_query(qid, max_negatives_per_query, distinct=True)
            for pos in positives:
                for neg in negatives:
                    columns["query"].append(query)
                    columns["positive"].append(dataset.corpus[pos])
                    columns["negative"].append(dataset.corpus[neg])
    else:
        raise ValueError(f"unknown layout {layout!r}; use 'pointwise', 'listwise' or 'triplets'")
    stats.rows = len(columns["query"])
    stats.warn_dropped()
    return columns, stats


def teacher_margins(
    teacher: Callable[[list[tuple[str, str]]], Sequence[float]],
    columns: dict[str, list[str]],
    batch_size: int = 256,
) -> list[float]:
    """``teacher(query, positive) - teacher(query, negative)`` for every triplet row."""
    margins: list[float] = []
    rows = list(zip(columns["query"], columns["positive"], columns["negative"], strict=True))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        scores = list(teacher([(q, p) for q, p, _ in chunk] + [(q, n) for q, _, n in chunk]))
        if len(scores) != 2 * len(chunk):
            raise ValueError(
                f"the teacher returned {len(scores)} scores for {2 * len(chunk)} pairs; it must return one score per pair"
            )
        margins.extend(float(scores[i]) - float(scores[len(chunk) + i]) for i in range(len(chunk)))
    return margins
