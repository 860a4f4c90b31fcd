"""Champion against challenger for a refresh: the bundle in use and the refreshed stack, measured
on the same held-out questions, and the decision between them.

The champion is the bundle exactly as ``load_bundle`` serves it (its retriever with its
fusion, its reranker); the challenger is the refresh's served stack. Both rank each
held-out question under its own filters; nDCG@10, Recall@10 and MRR@10 are averaged per
question set (``"feedback"``: the feedback's held-out side; ``"earlier"``: the test
questions the bundle was tuned with). :func:`decide` promotes the challenger when it is
better by more than the margin on one set (``finetuning.promotion.decide_promotion``) and
worse by more than the margin on none.

Example::

    champion_rank, challenger_rank = rankers(ctx, load_bundle("runs/shop", llm=MockLLM()))
    metrics, latency = score(champion_rank, questions)
    decision = decide({"feedback": {"champion": old, "challenger": new}}, 0.005, False, "v1")
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

METRIC = "ndcg@10"


def score(rank: Callable[[Any], list[str]], questions: Sequence[Any]) -> tuple[dict, list]:
    """``(mean metrics, per-question latency in ms)`` of ``rank`` (question -> ranked node ids)
    on ``questions`` (``LabelledQuery`` with gold nodes), after one warm-up call. The means
    are a ``MeanMetrics`` keeping each question's values (keyed by its id), so
    :func:`decide` can pair champion and challenger question by question, and refuses
    (``ValueError``) two evaluations made on different questions.

    A question with ``judged_node_ids`` (feedback: only the pages users saw are judged) is
    scored on a condensed list - the ranking with unjudged nodes left out - so neither
    side gains or loses for ranking pages nobody has looked at.

    Example::

        metrics, latency = score(lambda q: ["grocery/returns.md#1"], questions)
        metrics["ndcg@10"]
    """
    from llama_index_ragtune.evaluation.metrics import compute_metrics, mean_metrics

    rank(questions[0])  # warm-up
    per_question: dict[str, dict[str, float]] = {}
    latency = []
    for position, q in enumerate(questions):
        start = time.perf_counter()
        ranked = rank(q)
        latency.append((time.perf_counter() - start) * 1000)
        if q.judged_node_ids is not None:
            judged = set(q.judged_node_ids)
            ranked = [node_id for node_id in ranked if node_id in judged]
        key = str(q.id)  # the question's id: two evaluations pair (or refuse) by it
        if key in per_question:  # an id given twice: each question still counts once
            key = f"{key}#{position}"
        per_question[key] = compute_metrics(
            ranked, dict.fromkeys(q.gold_node_ids, 1), (10,), ("ndcg", "recall", "mrr")
        )
    return mean_metrics(per_question), latency


def rankers(ctx: Any, champion: Any) -> tuple[Callable, Callable]:
    """``(champion_rank, challenger_rank)``: the loaded bundle ``champion`` as it serves, and
    the refresh run's served stack (``ctx``), each ranking one question under its filters.

    Example::

        champion_rank, challenger_rank = rankers(ctx, load_bundle("runs/shop", llm=MockLLM()))
        champion_rank(question)[:3]
    """
    from llama_index_ragtune.pipeline.context import metadata_filters

    top_k = int(champion.manifest["retrieval"]["similarity_top_k"])

    def champion_rank(q: Any) -> list[str]:
        hits = champion.retriever.with_filters(metadata_filters(q.filters)).retrieve(q.question)
        for post in champion.postprocessors:
            hits = post.postprocess_nodes(hits, query_str=q.question)
        return [h.node.node_id for h in hits[:top_k]]

    def challenger_rank(q: Any) -> list[str]:
        hits = ctx.ranked_nodes(q.question, q.filters)
        return [h.node.node_id for h in hits[: ctx.config.similarity_top_k]]

    return champion_rank, challenger_rank


SETS = {"feedback": "held-out feedback questions", "earlier": "earlier test questions"}
QUESTIONS = "held-out questions"
"""What a decision's reason calls the questions champion and challenger were compared on."""


def decide(
    metrics: dict[str, dict[str, dict[str, float]]], margin: float, force: bool, version: str
) -> Any:
    """The refresh's ``PromotionDecision`` from ``{set: {"champion": m, "challenger": m}}``:
    promoted when the challenger's nDCG@10 is better by more than ``margin`` on one question
    set and worse by more than ``margin`` on none (or when ``force``).

    Example::

        decide({"feedback": {"champion": {"ndcg@10": 0.61}, "challenger": {"ndcg@10": 0.68}}},
               margin=0.005, force=False, version="v1").promoted      # True
    """
    from llama_index_ragtune.finetuning.promotion import (
        PromotionDecision,
        decide_promotion,
        evidence_text,
    )

    per = {
        name: decide_promotion(
            pair["champion"], pair["challenger"], METRIC, margin, queries_name=QUESTIONS
        )
        for name, pair in metrics.items()
    }
    won = [n for n, d in per.items() if d.promoted]
    lost = [n for n, d in per.items() if d.gain is not None and d.gain < -margin]
    main = won[0] if won else next(iter(per))
    figures = "; ".join(
        f"{SETS.get(n, n)}: {METRIC} {d.challenger:.4f} vs {d.champion:.4f} ({d.gain:+.4f})"
        f"{evidence_text(d, QUESTIONS)}"
        for n, d in per.items()
        if d.gain is not None
    )
    figures += f"; margin {margin:g}"

    def sets(names: list[str]) -> str:
        return " and the ".join(SETS.get(n, n) for n in names)

    promoted = force or (bool(won) and not lost)
    if force:
        reason = f"promoted the refreshed bundle over bundle {version} (forced): {figures}"
    elif promoted:
        reason = (
            f"promoted the refreshed bundle over bundle {version}: better on the {sets(won)}"
            f"{' and not worse on the others' if len(per) > len(won) else ''}: {figures}"
        )
    elif won:
        reason = (
            f"kept bundle {version}: the refreshed bundle is better on the {sets(won)} but "
            f"worse on the {sets(lost)}: {figures}"
        )
    else:
        reason = (
            f"kept bundle {version}: the refreshed bundle is not better on the "
            f"{' or the '.join(SETS.get(n, n) for n in per)}: {figures}"
        )
    return PromotionDecision(
        promoted,
        METRIC,
        per[main].champion,
        per[main].challenger,
        margin,
        forced=force,
        reason=reason,
        validation_size=per[main].validation_size,
        wins=per[main].wins,
        losses=per[main].losses,
        ties=per[main].ties,
        gain_interval=per[main].gain_interval,
    )


def evaluation_results(ctx: Any, metrics: dict, latency: dict, decision: Any, version: str) -> Any:
    """The refresh's measurements as ``EvaluationResults`` (the report's input): each part's
    decision, and champion ("before") / challenger ("after") rows per question set.

    Example::

        results = evaluation_results(ctx, metrics, latency, decision, "v1")
        results.save("runs/refresh-1/evaluation.json")
    """
    from llama_index_ragtune.evaluation.results import EvaluationResults
    from llama_index_ragtune.pipeline.evaluate import add_decisions

    counts = ctx.state.get("data", "counts") or {}
    results = EvaluationResults(
        title=f"Refresh of bundle {version} from feedback",
        dataset_name="feedback",
        queries={k: int(v) for k, v in counts.items()},
        bundle_version="unversioned",
        notes=decision.reason,
    )
    add_decisions(ctx, results)
    results.timings.update(ctx.state.timings())
    for name, label in (("feedback", "held-out feedback"), ("earlier", "earlier test")):
        if name in metrics:
            results.add_retrieval(
                f"bundle {version} ({label})",
                "before",
                metrics[name]["champion"],
                latency[name]["champion"],
            )
            results.add_retrieval(
                f"refreshed ({label})",
                "after",
                metrics[name]["challenger"],
                latency[name]["challenger"],
            )
    return results


def generation_settings(ctx: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """The bundle's answering settings for the refreshed stack: the refusal policy is chosen
    again on the dev questions (its signals come from the served encoder and decoder, and a
    refresh may have changed either); without dev questions the old settings are kept.

    Example::

        generation_settings(ctx, manifest)["refusal_policy"]
    """
    from llama_index_ragtune.pipeline.evaluate import choose_refusal, sample_questions

    generation = dict(manifest["generation"])
    dev = sample_questions(ctx.split("dev"), ctx.config.max_dev_questions, ctx.config.seed)
    if not dev:
        return generation
    choice = choose_refusal(ctx, ctx.llm(ctx.served_decoder), dev)
    policy = choice.pop("policy")
    generation["refusal_threshold"] = None if policy is not None else choice["threshold"]
    generation["refusal_policy"] = None if policy is None else policy.to_dict()
    return generation
