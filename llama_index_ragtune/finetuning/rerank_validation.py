"""Validation of a reranker where it will run: reordering the first stage's candidates.

``rerank_evaluators`` builds, for held-out queries and their first-stage
candidates, the evaluator of the reranker alone, one per blend weight
(``CrossEncoderRerank(retrieval_weight=w)``: the reranker's z-scored score mixed
with the first stage's), and a cheap one over fewer candidates for picking the
best checkpoint during training. ``best_blend`` scores a model once and returns
the metrics at the weight that validates best.

Example::

    from llama_index_ragtune.finetuning.rerank_validation import best_blend, rerank_evaluators

    base, blends, pool = rerank_evaluators(val, candidates, scores, depth=50)
    metrics, weight = best_blend(cross_encoder, base, blends)   # e.g. ({"ndcg@10": 0.76, ...}, 0.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.validation import fmt_ids
from llama_index_ragtune.finetuning.ranking_eval import CandidateRerankingEvaluator

if TYPE_CHECKING:
    from llama_index_ragtune.data.schema import RetrievalDataset

DEFAULT_WEIGHTS = (0.0, 0.25, 0.5, 0.75)


def rerank_evaluators(
    val: RetrievalDataset,
    candidates: Mapping[str, Sequence[str]],
    scores: Mapping[str, Sequence[float]] | None,
    depth: int = 50,
    retrieval_weights: Sequence[float] = DEFAULT_WEIGHTS,
    pool_depth: int | None = None,
    show_progress: bool = True,
) -> tuple[CandidateRerankingEvaluator, dict[float, CandidateRerankingEvaluator], Any]:
    """``(reranker alone, {weight: blended evaluator}, pool evaluator or None)``.

    Blends need the first-stage ``scores``; without them only weight 0 is built.
    ``pool_depth`` (``None``: no pool) re-scores fewer candidates, for checkpoint selection.

    A ``DataError`` naming them when no validation query has a candidate: there would be
    nothing to rerank, so every model would score 0 and training could not be judged.
    """
    if not any(candidates.get(q) for q in val.query_ids):
        raise DataError(
            f"none of the {len(val)} validation queries has a first-stage candidate "
            f"({fmt_ids(val.query_ids)}), so a reranker cannot be validated on them; give "
            "candidates={qid: [doc ids, best first]} for the validation queries, or leave "
            "candidates out to build them with the hybrid retriever"
        )
    qrels = val.graded_qrels()
    common = {"depth": depth}
    base = CandidateRerankingEvaluator(
        val.queries, val.corpus, qrels, candidates, show_progress_bar=show_progress, **common
    )
    blends: dict[float, CandidateRerankingEvaluator] = {0.0: base}
    for weight in retrieval_weights if scores else ():
        if weight > 0:
            blends[weight] = CandidateRerankingEvaluator(
                val.queries,
                val.corpus,
                qrels,
                candidates,
                candidate_scores=scores,
                retrieval_weight=weight,
                show_progress_bar=False,
                **common,
            )
    pool = None
    if pool_depth is not None:
        pool = CandidateRerankingEvaluator(
            val.queries,
            val.corpus,
            qrels,
            candidates,
            depth=pool_depth,
            show_progress_bar=False,
            name="pool",
        )
    return base, blends, pool


def best_blend(
    model: Any,
    base: CandidateRerankingEvaluator,
    blends: Mapping[float, CandidateRerankingEvaluator],
) -> tuple[dict[str, float], float]:
    """Score ``model`` once; the metrics at the blend weight with the best primary metric."""
    raw = base.predict(model)
    best_weight, best = 0.0, None
    for weight, evaluator in blends.items():
        metrics = evaluator.evaluate_scores(raw)
        if best is None or metrics[base.primary_metric] > best[base.primary_metric]:
            best_weight, best = weight, metrics
    return (best if best is not None else {}), best_weight  # keeps per-query values
