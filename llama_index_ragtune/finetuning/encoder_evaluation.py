"""How the encoder engine validates: dense and hybrid evaluators, the metric it decides on.

``EncoderEvaluationMixin`` holds these steps of ``EncoderFinetuneEngine``
(:mod:`~llama_index_ragtune.finetuning.encoder`); use the engine, not the mixin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.evaluation.metrics import MeanMetrics, copy_metrics
from llama_index_ragtune.finetuning.evaluator_output import check_decision_value, user_metrics

if TYPE_CHECKING:
    from llama_index_ragtune.data.schema import RetrievalDataset


POOL_DEPTH = 10
MAX_POOL_DOCS = 2000


class EncoderEvaluationMixin:
    """The encoder engine's validation evaluators and before/after measurements."""

    def _validation_evaluator(self, val: RetrievalDataset | None) -> Any:
        if self._user_evaluator is not None or val is None:
            return self._user_evaluator
        from llama_index_ragtune.finetuning.hybrid_eval import (
            HybridRetrievalEvaluator,
            bm25_settings,
        )

        return HybridRetrievalEvaluator(
            val.queries,
            val.corpus,
            val.graded_qrels(),
            fusion=self.fusion,
            **bm25_settings(self.bm25_text),
            query_prompt=self.query_prompt,
            passage_prompt=self.passage_prompt,
            show_progress_bar=self.show_progress,
            cache_dir=self.cache_dir,
        )

    def _pool_evaluator(self, val: RetrievalDataset | None, evaluator: Any) -> Any:
        """A cheap evaluator for checkpoint selection: the validation queries over a
        pool of their positives and their top BM25 / starting-model candidates."""
        from llama_index_ragtune.finetuning.hybrid_eval import HybridRetrievalEvaluator
        from llama_index_ragtune.finetuning.ranking_eval import DenseRetrievalEvaluator

        if (
            val is None
            or self.eval_points == 0
            or not isinstance(evaluator, HybridRetrievalEvaluator)
        ):
            return None
        pool: dict[str, None] = {}
        bm25 = evaluator.bm25_rankings()
        for qid in evaluator.query_ids:
            pool.update(dict.fromkeys(val.relevant_docs[qid]))
            pool.update(dict.fromkeys(d for d, _ in bm25[qid][:POOL_DEPTH]))
            pool.update(
                dict.fromkeys(
                    d for d, _ in evaluator.last_scored_rankings.get(qid, [])[:POOL_DEPTH]
                )
            )
            if len(pool) >= MAX_POOL_DOCS:
                break
        corpus = {d: val.corpus[d] for d in pool}
        qids = [q for q in evaluator.query_ids if all(d in corpus for d in val.relevant_docs[q])]
        if not qids:
            return None
        return DenseRetrievalEvaluator(
            {q: val.queries[q] for q in qids},
            corpus,
            {q: evaluator.qrels[q] for q in qids},
            query_prompt=self.query_prompt,
            passage_prompt=self.passage_prompt,
            show_progress_bar=False,
            name="pool",
        )

    def _evaluate(self, evaluator: Any) -> dict[str, float]:
        if evaluator is None:
            return {}
        evaluate = getattr(evaluator, "evaluate", None)
        if evaluator is self._user_evaluator:  # numbers only, named (``user_metrics``)
            owner = type(self).__name__
            if callable(evaluate):
                return user_metrics(owner, evaluate(self.model), str)
            raw = evaluator(self.model)
            if isinstance(raw, Mapping) and not isinstance(raw, MeanMetrics):
                raw = _strip_keys(owner, raw, getattr(evaluator, "primary_metric", None))
            return user_metrics(owner, raw, str)
        if callable(evaluate):
            return copy_metrics(evaluate(self.model))
        raw = evaluator(self.model)
        if not isinstance(raw, dict):
            return {"score": float(raw)}
        primary = getattr(evaluator, "primary_metric", None)
        return {k: float(v) for k, v in _strip_keys(type(self).__name__, raw, primary).items()}

    def _decision_metric(self, evaluator: Any, after: Mapping[str, float]) -> str:
        if self.decision_metric:
            return self.decision_metric
        primary = getattr(evaluator, "primary_metric", None)
        if primary and primary in after:
            return primary
        if primary and _strip_prefix(primary) in after:  # "val_cosine_ndcg@10": its values'
            return _strip_prefix(primary)  # keys lost the prefix (``_evaluate``)
        return "ndcg@10" if "ndcg@10" in after else next(iter(after), "ndcg@10")

    def _check_user_before(self, before: Mapping[str, float], evaluated: bool) -> None:
        """Before training: a user evaluator's score of the starting model must hold a finite
        value of the decision metric (``check_decision_value``), unless promotion is forced."""
        if self._user_evaluator is None or not evaluated or self.force_promotion:
            return
        metric = self._decision_metric(self._user_evaluator, before)
        check_decision_value(
            type(self).__name__, before, metric, ", or pass decision_metric= one it returns"
        )


def _fusion_params(choice: Any) -> dict[str, Any] | None:
    return None if choice is None else dict(choice.params)


def _fusion_of(decision: Any, before: Any, after: Any, evaluator: Any) -> dict[str, Any] | None:
    """``HybridRetriever`` fusion arguments that go with the promoted model (``None`` if not hybrid).

    With ``fusion="auto"`` they were chosen on the validation queries for that model.
    """
    chosen = after if decision.promoted else before
    if chosen is not None:
        return dict(chosen.params)
    fusion = getattr(evaluator, "fusion", None)
    return dict(fusion) if fusion else None


def _strip_prefix(key: str) -> str:
    """``"val_ndcg@10"`` -> ``"ndcg@10"``; ``"val_cosine_ndcg@10"`` -> ``"ndcg@10"``."""
    return key.rsplit("_", 1)[-1] if "@" in key else key


def _strip_keys(owner: str, raw: Mapping[Any, Any], primary: str | None) -> dict[str, Any]:
    """``raw`` with its keys through :func:`_strip_prefix`, no value silently lost.

    Several keys may lose their prefix to one name: a sentence-transformers
    ``InformationRetrievalEvaluator`` with two score functions returns both
    ``val_cosine_ndcg@10`` and ``val_dot_ndcg@10``. The name then takes the value of the
    key with the prefix of the evaluator's own ``primary_metric`` (its ``main_score_function``,
    else the function it chose), and each colliding key is also kept whole (so
    ``decision_metric="val_dot_ndcg@10"`` can pick another). ``ValueError`` names the
    colliding keys when no ``primary_metric`` says which one the name stands for.
    """
    groups: dict[str, list[Any]] = {}
    for key in raw:
        groups.setdefault(_strip_prefix(str(key)), []).append(key)
    lead = primary[: -len(_strip_prefix(primary))] if isinstance(primary, str) else None
    out: dict[str, Any] = {}
    for name, keys in groups.items():
        if len(keys) == 1:
            out[name] = raw[keys[0]]
            continue
        chosen = [k for k in keys if lead is not None and str(k) == lead + name]
        if not chosen:
            raise ValueError(
                f"{owner}: the evaluator returned {', '.join(repr(str(k)) for k in keys)}, "
                f"all named {name!r} once their prefix is dropped, and its primary_metric "
                f"({primary!r}) does not say which one counts; give it one score function or "
                "main_score_function= (sentence-transformers), or return distinct names"
            )
        out[name] = raw[chosen[0]]
        out.update({str(k): raw[k] for k in keys if str(k) != name})
    return out
