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
* ids compare as they are: a ranked ``1`` and a judged ``"1"`` (the same text, two
  types) is a ``TypeError`` saying to give both as strings (every metric was 0);
  ``ranked`` and ``qrels`` may be any iterables, read once.

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
    if isinstance(qrels, str) or qrels is None:
        raise TypeError(f"qrels must be {{doc_id: grade}} or a list of relevant ids, got {qrels!r}")
    if not isinstance(qrels, Mapping):
        return dict.fromkeys(qrels, 1)
    for doc_id, grade in qrels.items():
        if not isinstance(grade, Real):
            raise TypeError(
                f"qrels: the grade of {doc_id!r} must be a number (0 = not relevant), got {grade!r}"
            )
        try:
            finite = math.isfinite(grade)
        except OverflowError:  # an integer past the largest float
            finite = False
        if not finite:
            raise ValueError(f"qrels: the grade of {doc_id!r} must be finite, got {_short(grade)}")
    return qrels  # type: ignore[return-value]


def _short(value: object) -> str:
    """``repr(value)``, an integer of hundreds of digits cut to its digit count."""
    if isinstance(value, int) and abs(value) > 10**30:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    return repr(value)


def _top_k(ranked: Iterable[str], k: int) -> list[str]:
    """The first ``k`` distinct ids of ``ranked``, keeping first occurrences."""
    k = _check_k(k)
    if isinstance(ranked, str) or ranked is None:
        raise TypeError(f"ranked must be a list of document ids, got {ranked!r}")
    seen: set[str] = set()
    out: list[str] = []
    for doc_id in ranked:
        try:
            fresh = doc_id not in seen
        except TypeError:  # a list or dict as an id
            raise TypeError(
                f"ranked: document ids must be strings, got {type(doc_id).__name__} {doc_id!r}"
            ) from None
        if fresh:
            seen.add(doc_id)
            out.append(doc_id)
            if len(out) == k:
                break
    return out


def _check_id_kinds(ranked: Sequence[object], qrels: Mapping[object, object]) -> None:
    """``TypeError`` when a ranked id and a judged id are the same text of two types
    (``1`` and ``"1"``): they never compare equal, so every metric would silently be 0."""
    if not qrels or not ranked:
        return
    if all(type(key) is str for key in qrels) and all(type(d) is str for d in ranked):
        return  # the usual case, checked at C speed
    judged_text: dict[str, object] | None = None
    for doc_id in ranked:
        if doc_id in qrels:
            continue
        if judged_text is None:
            judged_text = {str(key): key for key in qrels}
        key = judged_text.get(str(doc_id), doc_id)
        if key is not doc_id and type(key) is not type(doc_id):
            raise TypeError(
                f"document id {doc_id!r} ({type(doc_id).__name__}) in ranked and {key!r} "
                f"({type(key).__name__}) in qrels are the same text but never equal: give "
                "both as strings"
            )


def _num_relevant(qrels: Qrels) -> int:
    return sum(1 for grade in qrels.values() if grade > 0)


def _judged_top(ranked: Iterable[str], qrels: Qrels | Iterable[str], k: int) -> tuple[list, Qrels]:
    """(the first ``k`` distinct ids of ``ranked``, ``qrels`` as grades), both checked."""
    grades, k = _grades(qrels), _check_k(k)
    top = _top_k(ranked, k)
    _check_id_kinds(top, grades)
    return top, grades


def _recall(top: list, qrels: Qrels, k: int) -> float:
    total = _num_relevant(qrels)
    return sum(1 for d in top if qrels.get(d, 0) > 0) / total if total else 0.0


def _precision(top: list, qrels: Qrels, k: int) -> float:
    return sum(1 for d in top if qrels.get(d, 0) > 0) / k


def _hit(top: list, qrels: Qrels, k: int) -> float:
    return float(any(qrels.get(d, 0) > 0 for d in top))


def _mrr(top: list, qrels: Qrels, k: int) -> float:
    for rank, doc_id in enumerate(top, start=1):
        if qrels.get(doc_id, 0) > 0:
            return 1.0 / rank
    return 0.0


def dcg(gains: Iterable[float]) -> float:
    """Discounted cumulative gain of gains listed best rank first: ``sum g_i / log2(i + 1)``."""
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1) if gain > 0)


def _ndcg(top: list, qrels: Qrels, k: int) -> float:
    gains = [max(qrels.get(doc_id, 0), 0) for doc_id in top]
    best = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    actual, ideal = dcg(gains), dcg(best)
    if not math.isfinite(ideal):  # grades near the largest float: the same ratio, rescaled
        scale = float(best[0])
        actual, ideal = dcg(g / scale for g in gains), dcg(g / scale for g in best)
    return actual / ideal if ideal > 0 else 0.0


def recall_at_k(ranked: Sequence[str], qrels: Qrels, k: int) -> float:
    """Share of the relevant documents found in the top ``k`` (0.0 when none is relevant)."""
    return _recall(*_judged_top(ranked, qrels, k), _check_k(k))


def precision_at_k(ranked: Sequence[str], qrels: Qrels, k: int) -> float:
    """Relevant documents in the top ``k``, divided by ``k``."""
    return _precision(*_judged_top(ranked, qrels, k), _check_k(k))


def hit_at_k(ranked: Sequence[str], qrels: Qrels, k: int) -> float:
    """1.0 when at least one relevant document is in the top ``k``, else 0.0."""
    return _hit(*_judged_top(ranked, qrels, k), _check_k(k))


def mrr_at_k(ranked: Sequence[str], qrels: Qrels, k: int) -> float:
    """Reciprocal rank of the first relevant document within the top ``k`` (0.0 if none)."""
    return _mrr(*_judged_top(ranked, qrels, k), _check_k(k))


def ndcg_at_k(ranked: Sequence[str], qrels: Qrels, k: int) -> float:
    """Graded nDCG@k: linear gains, ideal DCG over the best ``k`` judged documents."""
    return _ndcg(*_judged_top(ranked, qrels, k), _check_k(k))


_SCORERS = {"ndcg": _ndcg, "recall": _recall, "mrr": _mrr, "hit": _hit, "precision": _precision}


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
    # read once (a generator of ids or of qrels was used up by the first metric, and every
    # later one scored 0); the first max(k) distinct ids serve every cut-off
    ks = [_check_k(k) for k in k_values]
    grades = _grades(qrels)
    grades = grades if isinstance(grades, Mapping) else dict(grades)
    if isinstance(ranked, str) or ranked is None:
        raise TypeError(f"ranked must be a list of document ids, got {ranked!r}")
    if not isinstance(ranked, (list, tuple)):
        ranked = list(ranked)
    distinct = _top_k(ranked, max(ks, default=1))
    _check_id_kinds(distinct, grades)
    return {
        f"{name}@{k}": _SCORERS[name](distinct[:k], grades, k)
        if name in _SCORERS
        else METRICS[name](ranked, grades, k)  # a metric registered in METRICS
        for name in names
        for k in ks
    }


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
    for qid, scores in per_query.items():
        missing = [name for name in names if name not in scores]
        if missing:
            raise ValueError(
                f"mean_metrics: query {qid!r} has no {missing} (the first query has {names}); "
                "score every query on the same metrics"
            )
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
