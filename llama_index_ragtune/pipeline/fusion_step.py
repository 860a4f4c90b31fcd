"""The pipeline's fusion step: the hybrid's fusion mode and weights chosen on the training
queries, served only when choosing them that way is better out of sample.

Example::

    from llama_index_ragtune.pipeline.fusion_step import fusion

    outputs = fusion(ctx)        # {'promoted': False, 'params': {...}, 'folds': 5, ...}
"""

from __future__ import annotations

from typing import Any

from llama_index_ragtune.models import load_model
from llama_index_ragtune.pipeline.context import RunContext

QUICK_FUSION_GRID_BELOW = 300
"""Fewer training queries than this: the fusion sweep uses the quick grid (less to overfit)."""
FUSION_FOLDS = {"quick": 5, "full": 3}
"""Folds of the cross-validation that decides whether the fusion sweep's choice is served,
by grid (the full grid's sweep costs about five times the quick one's, on 300+ queries)."""


def fusion(ctx: RunContext) -> dict[str, Any]:
    """Choose the fusion mode and weights for the served encoder on the training queries.

    The library preset is the champion; the best setting of the sweep
    (``retrievers.fusion_sweep.choose_fusion``; quick grid below 300 queries)
    replaces it only when choosing that way scores better by more than the promotion
    margin out of sample: each training query is scored with the setting chosen on the
    other folds (``cross_validated_ndcg``), since the best of a grid scored on the queries
    it was chosen on always looks better than it is. The choice is made on training
    queries, never on the test split.
    """
    import dataclasses

    from sentence_transformers import SentenceTransformer

    from llama_index_ragtune.evaluation.metrics import MeanMetrics
    from llama_index_ragtune.finetuning.hybrid_eval import HybridRetrievalEvaluator
    from llama_index_ragtune.finetuning.promotion import DEFAULT_MARGIN, decide_promotion
    from llama_index_ragtune.pipeline.training_data import retrieval_dataset
    from llama_index_ragtune.retrievers.bm25_index import LANGUAGE_STOPWORDS
    from llama_index_ragtune.retrievers.defaults import fusion_preset
    from llama_index_ragtune.retrievers.fusion_sweep import choose_fusion, cross_validated_ndcg

    train = retrieval_dataset(ctx.split("train"), ctx.nodes)
    qrels = {q: dict.fromkeys(train.relevant_docs[q], 1) for q in train.queries}
    evaluator = HybridRetrievalEvaluator(
        train.queries,
        train.corpus,
        qrels,
        **ctx.config.bm25_options(),
        show_progress_bar=ctx.config.show_progress,
    )
    model = load_model(SentenceTransformer, ctx.served_encoder, device=ctx.config.device)
    metric = "hybrid_ndcg@10"
    preset = evaluator.evaluate(model)
    grid = "quick" if len(train) < QUICK_FUSION_GRID_BELOW else "full"
    rankings = evaluator.fusion_rankings()
    choice = choose_fusion(rankings, qrels, grid=grid)
    folds = FUSION_FOLDS[grid]
    out_of_fold = cross_validated_ndcg(
        rankings, qrels, grid=grid, folds=folds, show_progress=ctx.config.show_progress
    )
    preset_values = getattr(preset, "per_query", {}).get(metric, {})
    champion = {q: preset_values[q] for q in out_of_fold if q in preset_values}
    margin = (
        ctx.config.promotion_margin if ctx.config.promotion_margin is not None else DEFAULT_MARGIN
    )
    compared = [  # none with fewer than two training queries: the preset stays
        MeanMetrics({metric: sum(v.values()) / len(v)}, per_query={metric: v}) if v else None
        for v in (champion, out_of_fold)
    ]
    decision = decide_promotion(
        *compared,
        metric,
        margin,
        champion_name="the library's fusion preset",
        queries_name="training queries",
    )
    chosen_where = f"the fusion chosen on the other folds ({folds}-fold cross-validation)"
    decision = dataclasses.replace(
        decision, reason=decision.reason.replace("the tuned model", chosen_where)
    )
    params = choice.params if decision.promoted else fusion_preset(None)
    result = {
        "promoted": decision.promoted,
        "params": params,
        "chosen": choice.params,
        "chosen_in_sample_ndcg@10": choice.ndcg_at_10,
        "grid": grid,
        "folds": folds,
        "bm25_analyzer": evaluator.bm25_analyzer,
        "bm25_language": evaluator.bm25_language,
        "queries": len(train),
        "decision": decision.to_dict(),
    }
    if evaluator.bm25_stopwords != LANGUAGE_STOPWORDS:  # recorded when not the language's
        result["bm25_stopwords"] = evaluator.bm25_stopwords
    return result
