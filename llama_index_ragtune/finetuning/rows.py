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

Example::

    from llama_index_ragtune.finetuning.rows import encoder_rows

    rows, stats = encoder_rows(train, max_negatives_per_query=1, seed=0)
    Dataset.from_dict(rows)     # columns anchor, positive, negative
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from llama_index_ragtune.data.schema import RetrievalDataset


@dataclass
class RowStats:
    """How the rows were built: counts of rows, mined negatives used and random fillers."""

    rows: int = 0
    queries: int = 0
    mined_negatives: int = 0
    random_negatives: int = 0
    sources: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "queries": self.queries,
            "mined_negatives": self.mined_negatives,
            "random_negatives": self.random_negatives,
            "sources": dict(self.sources),
        }


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
    """Hands out a query's mined negatives (shuffled, round-robin), or random passages when it has none."""

    def __init__(self, dataset: RetrievalDataset, seed: int, stats: RowStats) -> None:
        self.dataset = dataset
        self.seed = seed
        self.stats = stats
        self.doc_ids = list(dataset.corpus)

    def for_query(self, qid: str, count: int, distinct: bool = False) -> list[str]:
        """``count`` negative doc ids for ``qid``: its mined ones (shuffled; reused
        round-robin when it has fewer, or only the available ones when ``distinct``),
        else random passages."""
        rng = random.Random(f"{self.seed}:{qid}")
        mined = list(self.dataset.negatives.get(qid, []))
        if mined:
            rng.shuffle(mined)
            picked = mined[:count] if distinct else [mined[i % len(mined)] for i in range(count)]
            for neg in picked:
                self.stats.sources[neg.source] = self.stats.sources.get(neg.source, 0) + 1
            self.stats.mined_negatives += len(picked)
            return [neg.doc_id for neg in picked]
        taken = set(self.dataset.relevant_docs[qid])
        if len(self.doc_ids) - len(taken) < count:
            raise ValueError(
                f"query {qid!r} has no negatives and the corpus has too few other documents to draw "
                f"{count} random ones; lower max_negatives_per_query or add documents"
            )
        out: list[str] = []
        while len(out) < count:
            doc = self.doc_ids[rng.randrange(len(self.doc_ids))]
            if doc not in taken:
                out.append(doc)
                taken.add(doc)
        self.stats.random_negatives += len(out)
        return out


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
    if positives is not None:
        dataset = dataset._replace(
            queries={q: dataset.queries[q] for q in positives},
            relevant_docs={q: list(p) for q, p in positives.items()},
            negatives={q: dataset.negatives[q] for q in positives if q in dataset.negatives},
        )
    stats = RowStats(queries=len(dataset))
    sampler = _NegativeSampler(dataset, seed, stats)
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
