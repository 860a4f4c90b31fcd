"""Retrieval metrics as pure functions over one query's ranking and judgements.

Every function takes ``ranked`` (document ids, best first), ``qrels`` (``{doc_id:
grade}`` for that query; grade 0 = judged non-relevant) and a cut-off ``k``. They
follow trec_eval (as used by BEIR, ir-measures and pytrec_eval):

* relevant means grade > 0;
* nDCG uses the grade itself as the gain (linear, like trec_eval's ``ndcg_cut``)
  with a ``log2(rank + 1)`` discount, and its ideal DCG is computed over the best
  ``k`` judged documents (capped at ``k``, unlike core LlamaIndex);
* precision divides by ``k`` even when fewer than ``k`` documents were retrieved;
* a document id repeated in ``ranked`` counts only at its first (best) rank;
* ``qrels`` may also be a set or list of relevant ids (each grade 1); ``k`` must be a
  whole number >= 1 and every grade a finite number, else ``ValueError`` /
  ``TypeError`` naming it (a grade of ``inf`` made nDCG NaN, a string a bare
  ``'>' not supported``).

Example::

    from llama_index_ragtune.evaluation.metrics import ndcg_at_k, recall_at_k

    qrels = {"d1": 2, "d2": 1, "d3": 0}
    ndcg_at_k(["d2", "d9", "d1"], qrels, k=10)       # 0.760...
    recall_at_k(["d2", "d9", "d1"], qrels, k=2)      # 0.5
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Integral, Real

Qrels = Mapping[str, int]
MetricFn = Callable[[Sequence[str], Qrels, int], float]


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, Integral):
        raise TypeError(f"k must be a positive integer, got {k!r}")
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    return int(k)


def _grades(qrels: Qrels | Iterable[str]) -> dict[str, float]:
    """``qrels`` as ``{doc_id: grade}``: a set / list of relevant ids gets grade 1 each."""
    if isinstance(qrels, str):
        raise TypeError(f"qrels must be {{doc_id: grade}} or a list of relevant ids, got {qrels!r}")
    if not isinstance(qrels, Mapping):
        return dict.fromkeys(qrels, 1)
    for doc_id, grade in qrels.items():
        if not isinstance(grade, Real):
            raise TypeError(
                f"qrels: the grade of {doc_id!r} must be a number (0 = not relevant), got {grade!r}"
            )
        if not math.isfinite(grade):
            raise ValueError(f"qrels: the grade of {doc_id!r} must be finite, got {grade!r}")
    return qrels  # type: ignore[return-value]


def _top_k(ranked: Iterable[str], k: int) -> list[str]:
    """The first ``k`` distinct ids of ``ranked``, keeping first occurrences."""
    k = _check_k(k)
    if isinstance(ranked, str):
        raise TypeError(f"ranked must be a list of document ids, got the string {ranked!r}")
    seen: set[str] = set()
    out: list[str] = []
    for doc_id in ranked:
        if doc_id not in seen:
            seen.add(doc_id)
            out.append(doc_id)
            if len(out) == k:
                break
    return out


def _num_relevant(qrels: Qrels) -> int:
    return sum(1 for grade in qrels.values() if grade > 0)


def recall_at_k(ranked: Sequence[str], qrels: Qrels, k: int) -> float:
    """Share of the relevant documents found in the top ``k`` (0.0 when none is relevant)."""
    qrels, k = _grades(qrels), _check_k(k)
    total = _num_relevant(qrels)
    if total == 0:
        return 0.0
    found = sum(1 for doc_id in _top_k(ranked, k) if qrels.get(doc_id, 0) > 0)
    return found / total


def precision_at_k(ranked: Sequence[str], qrels: Qrels, k: int) -> float:
    """Relevant documents in the top ``k``, divided by ``k``."""
    qrels, k = _grades(qrels), _check_k(k)
    found = sum(1 for doc_id in _top_k(ranked, k) if qrels.get(doc_id, 0) > 0)
    return found / k


def hit_at_k(ranked: Sequence[str], qrels: Qrels, k: int) -> float:
    """1.0 when at least one relevant document is in the top ``k``, else 0.0."""
    qrels, k = _grades(qrels), _check_k(k)
    return float(any(qrels.get(doc_id, 0) > 0 for doc_id in _top_k(ranked, k)))


def mrr_at_k(ranked: Sequence[str], qrels: Qrels, k: int) -> float:
    """Reciprocal rank of the first relevant document within the top ``k`` (0.0 if none)."""
    qrels, k = _grades(qrels), _check_k(k)
    for rank, doc_id in enumerate(_top_k(ranked, k), start=1):
        if qrels.get(doc_id, 0) > 0:
            return 1.0 / rank
    return 0.0


def dcg(gains: Iterable[float]) -> float:
    """Discounted cumulative gain of gains listed best rank first: ``sum g_i / log2(i + 1)``."""
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1) if gain > 0)


def ndcg_at_k(ranked: Sequence[str], qrels: Qrels, k: int) -> float:
    """Graded nDCG@k: linear gains, ideal DCG over the best ``k`` judged documents."""
    qrels, k = _grades(qrels), _check_k(k)
    actual = dcg(max(qrels.get(doc_id, 0), 0) for doc_id in _top_k(ranked, k))
    ideal = dcg(sorted((g for g in qrels.values() if g > 0), reverse=True)[:k])
    return actual / ideal if ideal > 0 else 0.0


METRICS: dict[str, MetricFn] = {
    "ndcg": ndcg_at_k,
    "recall": recall_at_k,
    "mrr": mrr_at_k,
    "hit": hit_at_k,
    "precision": precision_at_k,
}


def compute_metrics(
    ranked: Sequence[str],
    qrels: Qrels,
    k_values: Iterable[int] = (1, 3, 5, 10, 100),
    metrics: Iterable[str] = ("ndcg", "recall", "mrr", "hit", "precision"),
) -> dict[str, float]:
    """All ``metric@k`` values for one query, keyed like ``"ndcg@10"``.

    Example::

        compute_metrics(["d2", "d1"], {"d1": 1}, k_values=(1, 10), metrics=("mrr",))
        # {'mrr@1': 0.0, 'mrr@10': 0.5}
    """
    for name, value in (("k_values", k_values), ("metrics", metrics)):
        if isinstance(value, (str, int)):
            raise TypeError(f"compute_metrics: {name} must be a list, got {value!r}")
    names = list(metrics)
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {sorted(METRICS)}")
    return {f"{name}@{k}": METRICS[name](ranked, qrels, k) for name in names for k in k_values}


class MeanMetrics(dict):
    """Mean ``metric@k`` values (a plain ``dict``: ``{"ndcg@10": 0.61, ...}``) that also keep
    each query's values in ``per_query`` (``{metric: {qid: value}}``), so a champion /
    challenger decision can pair the two models query by query
    (``finetuning.promotion.decide_promotion``). ``dict(...)``, JSON and ``==`` see only
    the means.

    Example::

        means = mean_metrics({"q1": {"ndcg@10": 1.0}, "q2": {"ndcg@10": 0.5}})
        means["ndcg@10"], means.per_query["ndcg@10"]   # 0.75, {'q1': 1.0, 'q2': 0.5}
    """

    def __init__(
        self,
        *args: object,
        per_query: Mapping[str, Mapping[str, float]] | None = None,
        **kwargs: float,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.per_query: dict[str, dict[str, float]] = {
            metric: dict(values) for metric, values in (per_query or {}).items()
        }

    def prefixed(self, prefix: str) -> MeanMetrics:
        """The same values with every metric name prefixed (``"hybrid_"`` + ``"ndcg@10"``)."""
        return MeanMetrics(
            {prefix + key: value for key, value in self.items()},
            per_query={prefix + key: values for key, values in self.per_query.items()},
        )

    def merged(self, other: Mapping[str, float]) -> MeanMetrics:
        """These metrics and ``other``'s (its per-query values too, when it keeps them)."""
        return MeanMetrics(
            {**self, **other},
            per_query={**self.per_query, **getattr(other, "per_query", {})},
        )


def mean_metrics(per_query: Mapping[str, Mapping[str, float]]) -> MeanMetrics:
    """``MeanMetrics`` of ``{qid: {metric: value}}`` (every query scored on the same metrics).

    Example::

        mean_metrics({"q1": {"mrr@10": 1.0}, "q2": {"mrr@10": 0.0}})["mrr@10"]   # 0.5
    """
    if not per_query:
        raise ValueError("mean_metrics: no query was scored")
    names = list(next(iter(per_query.values())))
    by_metric = {name: {qid: scores[name] for qid, scores in per_query.items()} for name in names}
    return MeanMetrics(
        {name: sum(values.values()) / len(values) for name, values in by_metric.items()},
        per_query=by_metric,
    )


def copy_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """A copy of ``metrics`` that keeps ``MeanMetrics.per_query`` when it has it (``dict(...)``
    would drop it).

    Example::

        copy_metrics(mean_metrics({"q1": {"ndcg@10": 1.0}})).per_query   # {'ndcg@10': {'q1': 1.0}}
    """
    if isinstance(metrics, MeanMetrics):
        return MeanMetrics(metrics, per_query=metrics.per_query)
    return dict(metrics)
