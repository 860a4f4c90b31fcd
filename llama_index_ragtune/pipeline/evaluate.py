"""The evaluation step: held-out test questions, before and after tuning, into ``evaluation.json``.

Retrieval (every answerable test question, each under its own filters; gold =
its nodes): the untuned hybrid (``before``) against the served hybrid and, when
a reranker was promoted, the served hybrid + reranker (``after``): nDCG@10,
Recall@10, MRR@10 and the latency of each query (retrieval + reranking, one at
a time after a warm-up).

Generation (``max_test_questions`` test questions, a seeded sample keeping the
answerable / unanswerable mix): the starting decoder (``before``) and the
promoted one (``after``), both over the served retrieval stack and the prompt
``CitationQueryEngine`` sends. Each decoder's refusal policy is chosen on dev
questions (training questions the decoder never trained on) with
``select_refusal_policy``: never refusing, the decoder's P(refusal), the
served encoder's question-source similarity or both combined, whichever has the
best cross-validated balanced accuracy; there a question should be refused when none of
its gold nodes is among the sources. Metrics: citation precision / recall, the
right-source citation rate (answerable questions whose answer cites a gold node),
the right-store citation rate (answerable questions whose answer cites only
nodes of its gold's ``group_key`` values, e.g. the right store, and at least
one), answer F1 (SQuAD token F1 against the reference answer), refusal F1
(refusing the questions the corpus cannot answer), answer and refusal rates and
time-to-answer per question (retrieval + generation, one question at a time).

Example::

    from llama_index_ragtune.pipeline.evaluate import evaluate

    outputs = evaluate(ctx)      # writes <work>/evaluation.json and answers.json
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from llama_index_ragtune.pipeline.context import RunContext
from llama_index_ragtune.pipeline.queries import LabelledQuery

RETRIEVAL_METRICS = ("ndcg@10", "recall@10", "mrr@10")
GENERATION_METRICS = (
    "citation_precision",
    "citation_recall",
    "right_source_citation_rate",
    "right_store_citation_rate",
    "answer_f1",
    "refusal_f1",
    "answer_rate",
    "refusal_rate",
)


def sample_questions(
    questions: Sequence[LabelledQuery], limit: int | None, seed: int
) -> list[LabelledQuery]:
    """At most ``limit`` questions, drawn per class (answerable / not) in proportion, seeded."""
    if limit is None or len(questions) <= limit:
        return list(questions)
    rng = random.Random(f"sample:{seed}")
    answerable = [q for q in questions if q.answerable]
    others = [q for q in questions if not q.answerable]
    n_other = round(limit * len(others) / len(questions))
    picked = rng.sample(answerable, limit - n_other) + rng.sample(others, n_other)
    order = {q.id: i for i, q in enumerate(questions)}
    return sorted(picked, key=lambda q: order[q.id])


# ---------------------------------------------------------------------- retrieval


def retrieval_rows(
    ctx: RunContext, questions: Sequence[LabelledQuery], served: bool, rerank: bool
) -> tuple[dict[str, float], list[float]]:
    """Mean retrieval metrics and per-query latency (ms) of one system on ``questions``."""
    from llama_index_ragtune.evaluation.metrics import compute_metrics

    reranker = ctx.reranker() if rerank else None
    retriever = ctx.served_retriever() if served else ctx.baseline_retriever
    depth = ctx.config.rerank_candidates if reranker else ctx.config.similarity_top_k
    from llama_index_ragtune.pipeline.context import metadata_filters

    def run(question: LabelledQuery) -> list[str]:
        filtered = retriever.with_filters(metadata_filters(question.filters))
        filtered.similarity_top_k = depth
        hits = filtered.retrieve(question.question)
        if reranker is not None:
            hits = reranker.postprocess_nodes(hits, query_str=question.question)
        return [h.node.node_id for h in hits[: ctx.config.similarity_top_k]]

    run(questions[0])  # warm-up: first-call costs are not a query's latency
    sums: dict[str, float] = dict.fromkeys(RETRIEVAL_METRICS, 0.0)
    latency = []
    for question in questions:
        start = time.perf_counter()
        ranked = run(question)
        latency.append((time.perf_counter() - start) * 1000)
        scores = compute_metrics(
            ranked, dict.fromkeys(question.gold_node_ids, 1), (10,), ("ndcg", "recall", "mrr")
        )
        for key in RETRIEVAL_METRICS:
            sums[key] += scores[key]
    return {k: v / len(questions) for k, v in sums.items()}, latency


def served_retrieval_name(ctx: RunContext) -> str:
    """The served hybrid's row name: what differs from the untuned one (the tuned encoder,
    the chosen fusion, or both)."""
    from llama_index_ragtune.pipeline.context import same_fusion

    changed = []
    if ctx.served_encoder != ctx.base_encoder:
        changed.append("tuned encoder")
    if not same_fusion(ctx.fusion, ctx.baseline_retriever.params()):
        changed.append("chosen fusion")
    return "hybrid, " + (" + ".join(changed) or "untuned")


def evaluate_retrieval(ctx: RunContext, results: Any, questions: Sequence[LabelledQuery]) -> None:
    """Add the retrieval (and reranking) rows to ``results``."""
    metrics, latency = retrieval_rows(ctx, questions, served=False, rerank=False)
    results.add_retrieval("hybrid, untuned", "before", metrics, latency)
    tuned = ctx.served_retriever() is not ctx.baseline_retriever
    if tuned:
        metrics, latency = retrieval_rows(ctx, questions, served=True, rerank=False)
        results.add_retrieval(served_retrieval_name(ctx), "after", metrics, latency)
    if ctx.reranker() is not None:
        metrics, latency = retrieval_rows(ctx, questions, served=False, rerank=False)
        results.add_reranking("hybrid, untuned", "before", metrics, latency)
        metrics, latency = retrieval_rows(ctx, questions, served=True, rerank=True)
        name = "hybrid + tuned reranker" if not tuned else "tuned hybrid + tuned reranker"
        results.add_reranking(name, "after", metrics, latency)


# ---------------------------------------------------------------------- generation


def choose_refusal(ctx: RunContext, llm: Any, dev: Sequence[LabelledQuery]) -> dict[str, Any]:
    """The refusal policy of ``llm`` chosen on ``dev`` over the served stack.

    Candidates: none (``NoRefusalPolicy``), the decoder's P(refusal), the served
    encoder's similarity of question and best source, and their combination,
    compared by balanced accuracy cross-validated over ``config.refusal_cv_repeats``
    fold splits (``select_refusal_policy``), each
    threshold refusing at most ``config.max_over_refusal`` of the answerable ones (of new ones
    with probability ``config.over_refusal_confidence`` when set). Returns the
    selection's summary with ``policy`` (a ``RefusalPolicy``) and ``threshold``;
    ``policy`` is None with a ``note`` when the dev questions lack one of the two classes.
    """
    from llama_index.core.schema import QueryBundle

    from llama_index_ragtune.llms.answerability import SimilarityAnswerabilityScorer
    from llama_index_ragtune.llms.refusal_selection import select_refusal_policy

    conversations, answerable, questions, sources = [], [], [], []
    for q in dev:
        engine = ctx.query_engine(llm, q.filters)
        nodes = engine.retrieve(QueryBundle(q.question))
        conversations.append(engine.messages(q.question, nodes))
        answerable.append(q.answerable and bool(set(q.gold_node_ids) & _ids(nodes)))
        questions.append(q.question)
        sources.append(engine.source_texts(nodes))
    llm.refusal_threshold = None
    llm.refusal_policy = None
    probabilities = llm.conversation_refusal_probabilities(
        conversations, show_progress=ctx.config.show_progress
    )
    scorer = SimilarityAnswerabilityScorer(ctx.embed_model(ctx.served_encoder))
    try:
        selection = select_refusal_policy(
            answerable,
            decoder_probabilities=probabilities,
            answerability=scorer(questions, sources),
            scorer=scorer,
            seed=ctx.config.seed,
            max_over_refusal=ctx.config.max_over_refusal,
            over_refusal_confidence=ctx.config.over_refusal_confidence,
            repeats=ctx.config.refusal_cv_repeats,
        )
    except ValueError as exc:
        return {"policy": None, "threshold": None, "note": str(exc), "dev_questions": len(dev)}
    return {
        **selection.to_dict(),
        "policy": selection.policy,
        "dev_answerable": sum(answerable),
    }


def _ids(nodes: Sequence[Any]) -> set[str]:
    return {n.node.node_id for n in nodes}


def answer_questions(
    ctx: RunContext,
    llm: Any,
    questions: Sequence[LabelledQuery],
    name: str,
    policy: Any = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Ask every question through the served stack with ``llm`` and refusal ``policy``
    (None: the LLM's own): (metrics, per-question rows)."""
    from llama_index.core.schema import QueryBundle
    from tqdm.auto import tqdm

    from llama_index_ragtune.evaluation.generation import GenerationEvaluator
    from llama_index_ragtune.evaluation.generation_report import GenerationReport
    from llama_index_ragtune.query_engine.response_metadata import finish_reason

    evaluator = GenerationEvaluator(answer_metric="squad")
    group = ctx.config.group_key
    rows = []
    for q in tqdm(questions, desc=f"Answering ({name})", disable=not ctx.config.show_progress):
        engine = ctx.query_engine(llm, q.filters, refusal_policy=policy)
        start = time.perf_counter()
        nodes = engine.retrieve(QueryBundle(q.question))
        decision, finish = None, None
        if nodes:
            nodes = engine.fit_prompt(q.question, nodes).nodes  # what serving shows the LLM
        if nodes:
            messages = engine.messages(q.question, nodes)
            decision = engine.decide_refusal(q.question, nodes, messages)
            if decision is not None and decision.refused:
                answer, probability = engine.refusal, decision.value
            else:
                reply = llm.chat(messages, **({} if decision is None else {"refuse": False}))
                answer, finish = reply.message.content or "", finish_reason(reply)
                probability = (reply.raw or {}).get("refusal_probability")
                if decision is not None and decision.signal != "none":
                    probability = decision.value
        else:
            answer, probability = engine.refusal, 1.0
        seconds = time.perf_counter() - start
        if probability is None and nodes:
            # no refusal signal was read: the decoder's P(refusal), for the calibration curve
            probability = llm.conversation_refusal_probabilities([messages])[0]
        row = evaluator.evaluate_example(
            question=q.question,
            answer_text=answer,
            source_node_ids=[n.node.node_id for n in nodes],
            gold_node_ids=q.gold_node_ids,
            gold_answers=[q.answer] if q.answer else [],
            answerable=q.answerable,
            example_id=q.id,
            source_texts=engine.source_texts(nodes),
            finish_reason=finish,
        )
        row["latency_ms"] = seconds * 1000
        row["refusal_probability"] = probability
        if decision is not None:
            row["refusal_decision"] = decision.to_dict()
        row["should_refuse"] = not (q.answerable and bool(set(q.gold_node_ids) & _ids(nodes)))
        row.update(_right_citations(ctx, q, row["cited_node_ids"], group))
        rows.append(row)
    agg = GenerationReport(rows=rows, metric_keys=evaluator.metric_keys()).aggregate
    answerable = [r for r in rows if r["answerable"]]
    metrics = {
        "citation_precision": agg.get("citation_precision"),
        "citation_recall": agg.get("citation_recall"),
        "right_source_citation_rate": _mean(r["right_source"] for r in answerable),
        "right_store_citation_rate": _mean(r["right_store"] for r in answerable) if group else None,
        "answer_f1": agg.get("f1"),
        "refusal_f1": agg.get("refusal_f1"),
        "answer_rate": agg.get("answer_rate"),  # neither refused nor empty
        "refusal_rate": agg.get("refusal_rate"),
    }
    return metrics, rows


def _right_citations(
    ctx: RunContext, q: LabelledQuery, cited: Sequence[str], group: str | None
) -> dict[str, Any]:
    if not q.answerable:
        return {"right_source": None, "right_store": None}
    right_source = float(bool(set(cited) & set(q.gold_node_ids)))
    if not group:
        return {"right_source": right_source, "right_store": None}
    meta = ctx.node_map
    wanted = {meta[g].metadata.get(group) for g in q.gold_node_ids if g in meta} - {None}
    if not wanted:  # the gold nodes carry no such metadata: nothing to compare
        return {"right_source": right_source, "right_store": None}
    stores = [meta[c].metadata.get(group) for c in cited if c in meta]
    right_store = float(bool(stores) and all(s in wanted for s in stores))
    return {"right_source": right_source, "right_store": right_store}


def _mean(values: Any) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def evaluate_decoder(
    ctx: RunContext,
    name: str,
    stage: str,
    path: str,
    test: Sequence[LabelledQuery],
    dev: Sequence[LabelledQuery],
) -> dict[str, Any]:
    """One decoder's refusal policy (chosen on ``dev``) and answers to ``test``, JSON-ready:
    ``name``, ``stage``, ``calibration``, ``policy`` (a dict or None), ``metrics``, ``rows``
    and ``seconds`` (the time this took)."""
    start = time.perf_counter()
    llm = ctx.llm(path)
    calibration = choose_refusal(ctx, llm, dev)
    policy = calibration.pop("policy")
    metrics, rows = answer_questions(ctx, llm, test, name, policy)
    return {
        "name": name,
        "stage": stage,
        "calibration": calibration,
        "policy": None if policy is None else policy.to_dict(),
        "metrics": metrics,
        "rows": rows,
        "seconds": time.perf_counter() - start,
    }


STARTING_DECODER_FILE = ("evaluate", "starting-decoder.json")
"""Where a time-limited run keeps the starting decoder's evaluation, made before the decoder
trains (its cost is what the tuned decoder's evaluation is reserved)."""


def _starting_decoder_key(
    ctx: RunContext, test: Sequence[LabelledQuery], dev: Sequence[LabelledQuery]
) -> dict[str, Any]:
    """What the starting decoder's evaluation depends on: the served retrieval stack, the
    decoder, the settings and the questions."""
    return {
        "encoder": ctx.served_encoder,
        "fusion": ctx.fusion,
        "reranker": ctx.served_reranker,
        "decoder": ctx.base_decoder,
        "config": ctx.config.fingerprint(),
        "test": [q.id for q in test],
        "dev": [q.id for q in dev],
    }


def generation_questions(ctx: RunContext) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
    """The sampled (test, dev) questions the generation evaluation uses."""
    config = ctx.config
    test = sample_questions(ctx.split("test"), config.max_test_questions, config.seed)
    return test, sample_questions(ctx.split("dev"), config.max_dev_questions, config.seed)


def evaluate_starting_decoder(ctx: RunContext) -> dict[str, Any] | None:
    """The starting decoder's evaluation over the served stack, made now and kept in the work
    folder (or read back from it when the stack, settings and questions are the same).

    A time-limited run calls this before the decoder trains: the retrieval stack is final
    by then, and the evaluation's measured ``seconds`` tell how long to reserve for the
    tuned decoder's. None when there are no generation test questions.
    """
    from llama_index_ragtune._atomic import atomic_write_json

    test, dev = generation_questions(ctx)
    if not test:
        return None
    cached = _cached_starting_decoder(ctx, test, dev)
    if cached is not None:
        return cached
    evaluation = evaluate_decoder(ctx, "starting decoder", "before", ctx.base_decoder, test, dev)
    evaluation["key"] = _starting_decoder_key(ctx, test, dev)
    ctx.path(*STARTING_DECODER_FILE).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(ctx.path(*STARTING_DECODER_FILE), evaluation, strict=True, default=_plain)
    return evaluation


def _plain(value: Any) -> Any:
    """JSON for numpy scalars (their Python value, NaN or infinite as None) and anything
    else (its text)."""
    from llama_index_ragtune._atomic import strict_json

    return strict_json(value.item()) if hasattr(value, "item") else str(value)


def _cached_starting_decoder(
    ctx: RunContext, test: Sequence[LabelledQuery], dev: Sequence[LabelledQuery]
) -> dict[str, Any] | None:
    import json

    from llama_index_ragtune._atomic import strict_json

    path = ctx.path(*STARTING_DECODER_FILE)
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # none yet, or damaged: evaluated again
    key = json.dumps(strict_json(_starting_decoder_key(ctx, test, dev)), default=_plain)
    if not isinstance(cached, dict) or cached.get("key") != json.loads(key):
        return None  # the file as written: strict JSON, a NaN or infinite number as null
    return cached


def evaluate_generation(
    ctx: RunContext, results: Any, test: Sequence[LabelledQuery], dev: Sequence[LabelledQuery]
) -> dict[str, Any]:
    """Add the generation rows to ``results``; return thresholds and per-question answers.

    The starting decoder's evaluation is read back when a time-limited run made it before
    the decoder trained (:func:`evaluate_starting_decoder`)."""
    evaluations = [
        _cached_starting_decoder(ctx, test, dev)
        or evaluate_decoder(ctx, "starting decoder", "before", ctx.base_decoder, test, dev)
    ]
    if ctx.served_decoder != ctx.base_decoder:
        evaluations.append(
            evaluate_decoder(ctx, "tuned decoder", "after", ctx.served_decoder, test, dev)
        )
    out: dict[str, Any] = {"thresholds": {}, "policies": {}, "answers": {}}
    for evaluation in evaluations:
        rows, calibration = evaluation["rows"], evaluation["calibration"]
        probabilities = [r["refusal_probability"] for r in rows]
        # a NaN one (null once cached in the strict JSON file): no calibration chart either way
        calibrated = all(p is not None and math.isfinite(p) for p in probabilities)
        results.add_generation(
            evaluation["name"],
            evaluation["stage"],
            evaluation["metrics"],
            latency_ms=[r["latency_ms"] for r in rows],
            refusal_probabilities=probabilities if calibrated else None,
            should_refuse=[r["should_refuse"] for r in rows] if calibrated else None,
            refusal_threshold=calibration["threshold"],
            refusal_policy=calibration.get("name"),
        )
        out["thresholds"][evaluation["stage"]] = calibration
        out["policies"][evaluation["stage"]] = evaluation["policy"]
        out["answers"][evaluation["name"]] = rows
    served_stage = "after" if len(evaluations) == 2 else "before"
    out["served_threshold"] = out["thresholds"][served_stage]["threshold"]
    out["served_policy"] = out["policies"][served_stage]
    return out


# ---------------------------------------------------------------------- the step

PART_CHAMPIONS = {
    "encoder": "the starting encoder",
    "fusion": "the library's fusion preset",
    "reranker": "no reranker",
    "decoder": "the starting decoder",
}


def add_decisions(ctx: RunContext, results: Any) -> None:
    """Record every part's champion / challenger decision (a skipped step keeps the champion)."""
    for part, champion in PART_CHAMPIONS.items():
        decision = ctx.state.get(part, "decision")
        if decision:
            results.add_decision(
                part,
                bool(decision["promoted"]),
                decision["metric"],
                decision.get("champion"),
                decision.get("challenger"),
                float(decision.get("margin") or 0.0),
                decision.get("reason") or "",
                decision.get("greater_is_better", "auto"),  # an older decision: from the name
                bool(decision.get("forced", False)),
            )
        else:
            reason = ctx.state.get(part, "note") or f"step skipped: kept {champion}"
            results.add_decision(part, False, "none", None, None, 0.0, reason)


def evaluate(ctx: RunContext) -> dict[str, Any]:
    """Measure the test split before / after tuning; write ``evaluation.json`` and ``answers.json``."""
    from llama_index_ragtune._atomic import atomic_write_json
    from llama_index_ragtune.evaluation.results import EvaluationResults

    test = ctx.split("test")
    with_gold = [q for q in test if q.has_gold]
    if not with_gold:
        raise ValueError("the test split has no answerable question with gold nodes to evaluate")
    generation_test, dev = generation_questions(ctx)
    results = EvaluationResults(
        title="Tuning run",
        dataset_name=ctx.state.get("data", "queries_source") or "queries",
        queries={
            "train": len(ctx.split("train")),
            "test": len(test),
            "retrieval_test": len(with_gold),
            "generation_test": len(generation_test),
            "dev": len(dev),
        },
        bundle_version="unversioned",
    )
    add_decisions(ctx, results)
    results.timings.update(ctx.state.timings())
    with results.timed("evaluate retrieval"):
        evaluate_retrieval(ctx, results, with_gold)
    generation: dict[str, Any] = {
        "served_threshold": None,
        "served_policy": None,
        "thresholds": {},
        "answers": {},
    }
    if generation_test:
        with results.timed("evaluate generation"):
            generation = evaluate_generation(ctx, results, generation_test, dev)
    results.save(ctx.path("evaluation.json"))
    atomic_write_json(ctx.path("answers.json"), generation["answers"], strict=True, default=str)
    return {
        "refusal_threshold": generation["served_threshold"],
        "refusal_policy": generation["served_policy"],
        "thresholds": generation["thresholds"],
        "evaluation": str(ctx.path("evaluation.json")),
    }
