"""The evaluation JSON's format: its constants and the validation of a parsed file.

``parse_evaluation`` checks every field of the ``"ragtune-evaluation"`` format (see
:mod:`llama_index_ragtune.evaluation.results`) and returns the ``EvaluationResults``
fields; ``Invalid`` names the first bad field by its dotted path.

Example::

    from llama_index_ragtune.evaluation.results_format import parse_evaluation

    fields = parse_evaluation(json.loads(text))   # {"title": ..., "retrieval": [...], ...}
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llama_index_ragtune.evaluation._validate import Fields, Invalid
from llama_index_ragtune.evaluation.metric_bounds import out_of_range
from llama_index_ragtune.evaluation.svg_charts import metric_direction
from llama_index_ragtune.evaluation.system_result import Decision, RefusalScores, SystemResult

__all__ = ["FORMAT", "FORMAT_VERSION", "PARTS", "SECTIONS", "parse_evaluation"]

FORMAT = "ragtune-evaluation"
FORMAT_VERSION = 1
PARTS = ("encoder", "reranker", "decoder", "fusion")
SECTIONS = ("retrieval", "reranking", "generation")


def parse_evaluation(data: Any) -> dict[str, Any]:
    """The ``EvaluationResults`` fields of parsed evaluation JSON ``data``, validated;
    ``Invalid`` names the first bad field.

    Example::

        EvaluationResults(**parse_evaluation(json.loads(text)))
    """
    top = Fields(
        data,
        "",
        required=("format", "format_version", "title", "created", "bundle_version", "dataset"),
        optional=("notes", *SECTIONS, "decisions", "timings"),
    )
    if top.get("format") != FORMAT:
        raise Invalid("format", f"expected {FORMAT!r}, got {top.get('format')!r}")
    version = top.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise Invalid(
            "format_version",
            f"this version of llama-index-ragtune reads version {FORMAT_VERSION}, got "
            f"{version!r}; upgrade llama-index-ragtune or re-run the evaluation",
        )
    created = top.text("created")
    try:
        datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid("created", f"expected an ISO 8601 time, got {created!r}") from None
    dataset = top.child("dataset", required=("name", "queries"))
    queries = dataset.child("queries")
    return dict(
        title=top.text("title"),
        created=created,
        bundle_version=top.text("bundle_version"),
        dataset_name=dataset.text("name"),
        queries={key: queries.count(key) for key in queries.names("query split")},
        notes=top.text("notes", allow_empty=True) if top.has("notes") else None,
        retrieval=[_parse_system(item, False) for item in top.items("retrieval")],
        reranking=[_parse_system(item, False) for item in top.items("reranking")],
        generation=[_parse_system(item, True) for item in top.items("generation")],
        decisions=[_parse_decision(item) for item in top.items("decisions")],
        timings=_parse_timings(top.child("timings")) if top.has("timings") else {},
    )


def _parse_timings(timings: Fields) -> dict[str, float]:
    return {step: timings.number(step, low=0.0) for step in timings.names("step")}  # type: ignore[misc]


def _parse_system(item: Fields, generation: bool) -> SystemResult:
    item.check_keys(
        required=("name", "stage", "metrics"),
        optional=("latency_ms", "refusal") if generation else ("latency_ms",),
    )
    metrics = item.child("metrics")
    refusal = None
    if item.has("refusal") and item.get("refusal") is not None:
        block = item.child("refusal", required=("probabilities", "should_refuse"))
        block.check_keys(("probabilities", "should_refuse"), optional=("threshold", "policy"))
        probabilities = block.numbers("probabilities", low=0.0, high=1.0)
        should_refuse = block.flags("should_refuse")
        if len(should_refuse) != len(probabilities):
            raise Invalid(
                block.path("should_refuse"),
                f"has {len(should_refuse)} entries for {len(probabilities)} probabilities; "
                "give one 0/1 per question",
            )
        threshold = block.get("threshold")
        refusal = RefusalScores(
            probabilities,
            should_refuse,
            None if threshold is None else block.number("threshold", low=0.0, high=1.0),
            block.text("policy") if block.get("policy") is not None else None,
        )
    return SystemResult(
        name=item.text("name"),
        stage=item.text("stage"),
        metrics={key: _metric(metrics, key, item) for key in metrics.names("metric")},
        latency_ms=item.numbers("latency_ms", low=0.0) if item.has("latency_ms") else [],
        refusal=refusal,
    )


def _metric(metrics: Fields, key: str, system: Fields | None = None) -> float | None:
    """A metric value; a share (a ``*_rate``, nDCG, recall, MRR, precision, F1, ...:
    ``metric_bounds``) is in [0, 1] (the report takes a missing answer or refusal rate as
    the other's complement: 1.5 gave -50%; an nDCG of 73.0 was drawn as a bar 73 times
    the axis). Custom metrics, latencies and counts have no bound."""
    value = metrics.number(key, nullable=True)
    problem = None if value is None else out_of_range(key, value)
    if problem is not None:
        raise Invalid(metrics.path(key), _named(problem, system))
    return value


def _named(problem: str, system: Fields | None) -> str:
    """``problem`` prefixed by the system's name and stage, when they are readable."""
    if system is None:
        return problem
    name, stage = system.get("name"), system.get("stage")
    if isinstance(name, str) and isinstance(stage, str):
        return f"system {name!r} ({stage}): {problem}"
    return problem


def _parse_decision(item: Fields) -> Decision:
    item.check_keys(
        required=("part", "promoted", "metric", "champion", "challenger", "margin", "reason"),
        optional=("greater_is_better", "forced"),
    )
    part = item.text("part")
    if part not in PARTS:
        raise Invalid(item.path("part"), f"expected one of {list(PARTS)}, got {part!r}")
    return Decision(
        part=part,
        promoted=item.boolean("promoted"),
        metric=item.text("metric"),
        champion=_decision_value(item, "champion"),
        challenger=_decision_value(item, "challenger"),
        margin=item.number("margin"),  # type: ignore[arg-type]
        reason=item.text("reason", allow_empty=True),
        greater_is_better=item.boolean("greater_is_better")
        if item.has("greater_is_better")
        else metric_direction(item.text("metric")) >= 0,  # a loss: lower is better
        forced=item.boolean("forced") if item.has("forced") else False,
    )


def _decision_value(item: Fields, key: str) -> float | None:
    """The champion's or challenger's value of the decision's metric (a share in [0, 1]
    when the metric is one)."""
    value = item.number(key, nullable=True)
    metric = item.get("metric")
    problem = None if value is None or not isinstance(metric, str) else out_of_range(metric, value)
    if problem is not None:
        raise Invalid(item.path(key), f"the {key}'s {problem}")
    return value
