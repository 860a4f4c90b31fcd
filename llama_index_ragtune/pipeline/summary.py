"""Plain-text output of a run: the cost estimate before training and the before/after tables.

Example::

    from llama_index_ragtune.evaluation import EvaluationResults
    from llama_index_ragtune.pipeline.summary import format_tables

    print(format_tables(EvaluationResults.load("runs/shop/bundles/v1/evaluation.json")))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from llama_index_ragtune.pipeline.config import PipelineConfig

RETRIEVAL_COLUMNS = (("ndcg@10", "nDCG@10"), ("recall@10", "Recall@10"), ("mrr@10", "MRR@10"))
GENERATION_COLUMNS = (
    ("citation_precision", "cit. prec."),
    ("citation_recall", "cit. recall"),
    ("right_source_citation_rate", "right source"),
    ("right_store_citation_rate", "right store"),
    ("answer_f1", "answer F1"),
    ("refusal_f1", "refusal F1"),
    ("answer_rate", "answer rate"),
    ("refusal_rate", "refusal rate"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (also readable as plain text)."""
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def retrieval_table(systems: Sequence[Any]) -> str:
    """Rows of retrieval / reranking systems: metrics and latency p50 / p95 in ms."""
    head = ["system", "stage", *(label for _, label in RETRIEVAL_COLUMNS), "p50 ms", "p95 ms"]
    rows = [
        [
            s.name,
            s.stage,
            *(s.metrics.get(key) for key, _ in RETRIEVAL_COLUMNS),
            _ms(_percentile(s.latency_ms, 0.5)),
            _ms(_percentile(s.latency_ms, 0.95)),
        ]
        for s in systems
    ]
    return markdown_table(head, rows)


def generation_table(systems: Sequence[Any]) -> str:
    """Rows of answering systems: citation, answer and refusal metrics, time-to-answer p50 / p95."""
    head = [
        "decoder",
        *(label for _, label in GENERATION_COLUMNS),
        "p50 s",
        "p95 s",
        "refusal policy",
    ]
    rows = []
    for s in systems:
        rows.append(
            [
                f"{s.name} ({s.stage})",
                *(s.metrics.get(key) for key, _ in GENERATION_COLUMNS),
                _s(_percentile(s.latency_ms, 0.5)),
                _s(_percentile(s.latency_ms, 0.95)),
                _policy(s.refusal),
            ]
        )
    return markdown_table(head, rows)


def _policy(refusal: Any) -> str:
    """``"decoder @ 0.38"``, ``"none"`` (no forced refusal) or ``"-"`` (not recorded)."""
    if refusal is None:
        return "-"
    name = refusal.policy
    if refusal.threshold is None:
        return name or "-"
    return f"{name} @ {refusal.threshold:.3g}" if name else f"{refusal.threshold:.3g}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value / 1000:.2f}"


def format_tables(results: Any) -> str:
    """The retrieval, reranking and generation tables of an ``EvaluationResults``, with counts."""
    parts = []
    queries = results.queries
    if results.retrieval:
        parts.append(
            f"Retrieval ({queries.get('retrieval_test', '?')} answerable test questions):\n"
            + retrieval_table(results.retrieval)
        )
    if results.reranking:
        parts.append("Reranking:\n" + retrieval_table(results.reranking))
    if results.generation:
        parts.append(
            f"Generation ({queries.get('generation_test', '?')} test questions over the served "
            f"retriever; refusal policy chosen on {queries.get('dev', '?')} held-out training "
            "questions by cross-validation):\n" + generation_table(results.generation)
        )
    if results.decisions:
        parts.append(
            "Decisions:\n"
            + "\n".join(
                f"  {d.part:<9} {'PROMOTED' if d.promoted else 'kept    '} {d.reason}"
                for d in results.decisions
            )
        )
    return "\n\n".join(parts)


#: Fewer answerable test questions than this and the run says its figures are coarse.
FEW_TEST_QUESTIONS = 20

_KEPT_STATS = ("nodes", "generated", "kept", "failed_nodes")
_SOURCES = {
    "file": "from the questions file",
    "feedback": "from feedback",
    "synthetic": "synthetic",
}


def questions_text(info: Mapping[str, Any], test_with_gold: int | None = None) -> str:
    """What the ``data`` step found: where the questions came from, the synthetic filter's
    counts, the split, and a caution when the test questions are too few to measure on.

    Example::

        print(questions_text({"queries_source": "file", "train": 40, "test": 12,
                              "dev_ids": ["q1", "q2"]}, test_with_gold=10))
        # Questions: 52 from the questions file: 40 train (2 of them dev), 12 test
        #   Few test questions: one of the 10 answerable test questions moves a rate by 0.10; ...
    """
    train, test = int(info.get("train", 0)), int(info.get("test", 0))
    dev = len(info.get("dev_ids") or ())
    origin = _SOURCES.get(str(info.get("queries_source")), str(info.get("queries_source")))
    line = f"Questions: {train + test} {origin}"
    stats = info.get("synthetic") or {}
    if stats.get("generated"):
        dropped = {k: v for k, v in stats.items() if k not in _KEPT_STATS and v}
        what = ", ".join(f"{k} {v}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1]))
        line += (
            f" (the LLM wrote {stats['generated']} for {stats.get('nodes', '?')} passages"
            + (f"; dropped: {what}" if what else "")
            + ")"
        )
    line += f": {train} train ({dev} of them dev), {test} test"
    shown = test if test_with_gold is None else test_with_gold
    if not shown:
        line += "\n  No answerable test question with gold: nothing to measure retrieval on."
    elif shown < FEW_TEST_QUESTIONS:
        line += (
            f"\n  Few test questions: one of the {shown} answerable test questions moves a rate "
            f"by {1 / shown:.2f}; read the before/after figures as a rough guide, or add "
            "labelled questions (--queries) or documents."
        )
    return line


def estimate_text(config: PipelineConfig, counts: dict[str, Any], skip: Sequence[str]) -> str:
    """The cost estimate printed before training starts (pairs, steps, minutes per part)."""
    lines = ["Cost estimate (the engines plan their steps to fit each time budget):"]
    total = 0.0
    for part in ("encoder", "reranker", "decoder"):
        if part in skip:
            lines.append(f"  {part:<9} skipped")
            continue
        budget = config.budget(part)
        minutes = budget.minutes if budget is not None else None
        rows = counts.get(f"{part}_rows", 0)
        batch = counts.get(f"{part}_batch", 1)
        epochs = counts.get(f"{part}_epochs", 1)
        # a fraction of an epoch is a fraction of its steps (was cut to 0 by int()); a
        # positive max_steps is what the trainer stops at, whatever the epochs
        steps = math.ceil(math.ceil(rows / max(batch, 1)) * epochs)
        max_steps = counts.get(f"{part}_max_steps", -1)
        if max_steps > 0:
            steps = max_steps
        what = "SFT examples" if part == "decoder" else "training pairs"
        extra = " + DPO" if part == "decoder" and config.dpo else ""
        limit = "no time limit" if minutes is None else f"at most {minutes:g} min"
        lines.append(
            f"  {part:<9} {rows} {what}, up to {steps} steps of {batch} ({epochs:g} epoch(s)){extra}, "
            f"{limit}"
        )
        total += minutes or 0.0
    lines.append(
        f"  evaluate  {counts.get('retrieval_test', 0)} retrieval test questions; "
        f"{counts.get('generation_test', 0)} generation questions per decoder, "
        f"{counts.get('dev', 0)} dev questions for the refusal policy"
    )
    if total:
        lines.append(f"  training time budget: {total:g} min in all (plus evaluation)")
    if config.time_limit_minutes is not None:
        lines.append(
            f"  time limit: {config.time_limit_minutes:g} min for the whole run; the decoder "
            "trains for what is left once its evaluation is reserved"
        )
    return "\n".join(lines)
