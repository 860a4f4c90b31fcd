"""How the reranker engine validates: first-stage candidates, before and after scores.

``RerankerEvaluationMixin`` holds these steps of ``RerankerFinetuneEngine``
(:mod:`~llama_index_ragtune.finetuning.reranker`); use the engine, not the mixin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.evaluation.metrics import copy_metrics
from llama_index_ragtune.finetuning.candidates import hybrid_candidates_with_scores
from llama_index_ragtune.finetuning.evaluator_output import check_decision_value, user_metrics
from llama_index_ragtune.finetuning.hybrid_eval import bm25_settings, fusion_params
from llama_index_ragtune.finetuning.rerank_validation import best_blend, rerank_evaluators

if TYPE_CHECKING:
    from llama_index_ragtune.data.schema import RetrievalDataset


POOL_QUERY_DEPTH = 20


class RerankerEvaluationMixin:
    """The reranker engine's validation candidates and its before/after measurements."""

    # ------------------------------------------------------------------ evaluation

    def _first_stage(
        self, val: RetrievalDataset
    ) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
        """First-stage candidates (and scores) of the validation queries."""
        if self._candidates is not None:
            scores = self._candidate_scores or {}
            return self._candidates, scores
        self._candidates, self._candidate_scores = hybrid_candidates_with_scores(
            val.queries,
            val.corpus,
            top_k=max(100, self.rerank_depth),
            embed_model=self.encoder,
            show_progress=self.show_progress,
            bm25_kwargs=self.bm25_text.retriever_kwargs(),
            **fusion_params(self.fusion),
        )
        return self._candidates, self._candidate_scores

    def _candidates_bm25(self) -> dict[str, Any]:
        """The BM25 analyzer and language of the first-stage candidates validated on
        (``None``: none built here)."""
        if self._candidates_given or self._user_evaluator is not None or self._candidates is None:
            return {"bm25_analyzer": None, "bm25_language": None}
        return bm25_settings(self.bm25_text)

    @property
    def candidates(self) -> dict[str, list[str]] | None:
        """First-stage candidates of the validation queries (built on first use)."""
        if self._candidates is None:
            _, val = self.split_validation()
            if val is not None:
                self._first_stage(val)
        return self._candidates

    def _evaluators(self, val: RetrievalDataset | None) -> tuple[Any, dict[float, Any], Any]:
        """(before/after evaluator, blend evaluators by weight, cheap pool evaluator)."""
        if self._user_evaluator is not None:
            return self._user_evaluator, {}, None
        if val is None:
            return None, {}, None
        candidates, scores = self._first_stage(val)
        return rerank_evaluators(
            val,
            candidates,
            scores,
            depth=self.rerank_depth,
            retrieval_weights=self.retrieval_weights,
            pool_depth=min(POOL_QUERY_DEPTH, self.rerank_depth) if self.eval_points > 0 else None,
            show_progress=self.show_progress,
        )

    def _measure(
        self, base: Any, blends: Mapping[float, Any]
    ) -> tuple[dict[str, float], float | None]:
        """The tuned model's metrics at its best blend weight, and that weight."""
        if base is None:
            return {}, None
        if not blends:
            return self._evaluate_with(base), None
        return best_blend(self.model, base, blends)

    def _evaluate_with(self, evaluator: Any) -> dict[str, float]:
        evaluate = getattr(evaluator, "evaluate", None)
        if evaluator is self._user_evaluator:  # numbers only, named (``user_metrics``)
            owner = type(self).__name__
            if callable(evaluate):
                return user_metrics(owner, evaluate(self.model), str)
            return user_metrics(owner, evaluator(self.model), _unprefixed)
        if callable(evaluate):
            return copy_metrics(evaluate(self.model))
        raw = evaluator(self.model)
        return (
            {_unprefixed(k): float(v) for k, v in raw.items()}
            if isinstance(raw, dict)
            else {"score": float(raw)}
        )

    def _before(self, base: Any) -> dict[str, float]:
        if base is None:
            return {}
        if self.starts_trained or not hasattr(base, "baseline"):
            return self._evaluate_with(base)
        if base is self._user_evaluator:
            return user_metrics(type(self).__name__, base.baseline(), str)
        return copy_metrics(base.baseline())

    def _decision_key(self, base: Any, metrics: Mapping[str, float]) -> str:
        """The metric promotion compares: ``base``'s primary metric (``"ndcg@10"`` when it has
        none), without the ``"<name>_"`` prefix a sentence-transformers evaluator adds to it
        once called when ``metrics`` hold it unprefixed (``_evaluate_with`` drops it)."""
        metric = getattr(base, "primary_metric", None) or "ndcg@10"
        if metric not in metrics and _unprefixed(metric) in metrics:
            return _unprefixed(metric)
        return metric

    def _check_user_before(self, base: Any, before: Mapping[str, float], evaluated: bool) -> None:
        """Before training: a user evaluator's first score must hold a finite value of the
        decision metric (``check_decision_value``), unless promotion is forced."""
        if self._user_evaluator is None or not evaluated or self.force_promotion:
            return
        check_decision_value(type(self).__name__, before, self._decision_key(base, before))


def _unprefixed(key: str) -> str:
    """``"dev_ndcg@10"`` -> ``"ndcg@10"``: a sentence-transformers metric name without its prefix."""
    return key.rsplit("_", 1)[-1]
