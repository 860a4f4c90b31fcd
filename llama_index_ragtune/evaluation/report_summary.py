"""What the evaluation report says about a run, shared by its HTML page and Markdown summary.

The business proxies of a generation system (answer rate, refusal rate,
time-to-answer p50 / p95), which system is the baseline and which the headline,
the order of metric columns, and how numbers are written.

Example::

    from llama_index_ragtune.evaluation.report_summary import business_proxies
    from llama_index_ragtune.evaluation.system_result import Decision, SystemResult

    tuned = SystemResult("tuned", "after", {"refusal_rate": 0.2}, [800.0, 900.0, 2000.0])
    proxies = business_proxies(tuned)
    proxies.answer_rate, proxies.p50_ms, proxies.p95_ms      # (0.8, 900.0, 1890.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llama_index_ragtune.evaluation.chart_text import fixed
from llama_index_ragtune.evaluation.svg_charts import metric_direction, percentile
from llama_index_ragtune.evaluation.system_result import Decision, SystemResult

__all__ = [
    "BASELINE_STAGES",
    "SECTION_TITLES",
    "BusinessProxies",
    "baseline_index",
    "best_value",
    "business_proxies",
    "decision_label",
    "format_gain",
    "format_number",
    "format_rate",
    "headline",
    "is_baseline",
    "metric_keys",
    "reference_indices",
]

# stages read as "the system before tuning": deltas and the headline compare against it
BASELINE_STAGES = ("before", "baseline", "base", "champion")
SECTION_TITLES = {"retrieval": "Retrieval", "reranking": "Reranking", "generation": "Generation"}


@dataclass(frozen=True)
class BusinessProxies:
    """What a product owner reads: how often the system answers, refuses, and how fast."""

    answer_rate: float | None
    refusal_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    questions: int


def business_proxies(system: SystemResult) -> BusinessProxies:
    """Answer rate, refusal rate and time-to-answer p50 / p95 of one generation system.

    The rates come from ``metrics["answer_rate"]`` / ``metrics["refusal_rate"]``; when
    only one is given the other is its complement, and when neither is, the refusal
    rate is the share of questions whose refusal probability reaches the threshold.
    Percentiles (linear interpolation) are taken over ``latency_ms``, the end-to-end
    time-to-answer of each question.

    Example::

        business_proxies(SystemResult("base", "before", {"answer_rate": 0.75})).refusal_rate  # 0.25
    """
    answer = system.metrics.get("answer_rate")
    refusal = system.metrics.get("refusal_rate")
    if answer is None and refusal is None and system.refusal is not None:
        refusal = system.refusal.refusal_rate
    if answer is None and refusal is not None:
        answer = 1.0 - refusal
    if refusal is None and answer is not None:
        refusal = 1.0 - answer
    questions = len(system.latency_ms) or (
        len(system.refusal.probabilities) if system.refusal is not None else 0
    )
    return BusinessProxies(
        answer_rate=answer,
        refusal_rate=refusal,
        p50_ms=percentile(system.latency_ms, 50),
        p95_ms=percentile(system.latency_ms, 95),
        questions=questions,
    )


def is_baseline(system: SystemResult) -> bool:
    """Whether ``system.stage`` is a before-tuning stage (``before``, ``baseline``, ...).

    Example::

        is_baseline(SystemResult("hybrid", "Before", {}))     # True
    """
    return system.stage.strip().lower() in BASELINE_STAGES


def baseline_index(systems: list[SystemResult]) -> int:
    """Index of the first baseline system (0 when none is marked as one)."""
    return next((i for i, s in enumerate(systems) if is_baseline(s)), 0)


def reference_indices(systems: list[SystemResult]) -> list[int | None]:
    """For each system, the index of the baseline its differences are taken against.

    A tuned system is compared with the baseline of the same name (``hybrid`` after vs
    ``hybrid`` before), else with the first baseline; a baseline gets None. When no
    stage reads as a baseline, the first system serves as one.

    Example::

        names = [("bm25", "before"), ("hybrid", "before"), ("hybrid", "after")]
        reference_indices([SystemResult(n, st, {}) for n, st in names])   # [None, None, 1]
    """
    first = baseline_index(systems)
    # name -> its first baseline, in one pass (10,000 systems stay fast)
    baselines: dict[str, int] = {}
    for j, b in enumerate(systems):
        if is_baseline(b):
            baselines.setdefault(b.name, j)
    out: list[int | None] = []
    for i, system in enumerate(systems):
        if i == first or is_baseline(system):
            out.append(None)
            continue
        out.append(baselines.get(system.name, first))
    return out


def headline(systems: list[SystemResult]) -> tuple[SystemResult | None, SystemResult | None]:
    """(the system to headline: the last non-baseline one, the baseline it is compared with).

    Example::

        base, tuned = SystemResult("m", "before", {}), SystemResult("m", "after", {})
        headline([base, tuned]) == (tuned, base)      # True
    """
    if not systems:
        return None, None
    tuned = [i for i, s in enumerate(systems) if not is_baseline(s)]
    index = tuned[-1] if tuned else len(systems) - 1
    reference = reference_indices(systems)[index]
    return systems[index], (None if reference is None else systems[reference])


def metric_keys(systems: list[SystemResult]) -> list[str]:
    """Every metric name of ``systems``, in order of first appearance."""
    keys: dict[str, None] = {}  # a dict keeps the order and finds a key in one step
    for system in systems:
        keys.update(dict.fromkeys(system.metrics))
    return list(keys)


def best_value(systems: list[SystemResult], key: str) -> float | None:
    """The best value of ``key`` among 2+ systems when its direction is known, else None."""
    direction = metric_direction(key)
    values = [v for s in systems if (v := s.metrics.get(key)) is not None]
    if not direction or len(values) < 2:
        return None
    return max(values) if direction > 0 else min(values)


def decision_label(decision: Decision) -> str:
    """``"promoted"``, ``"kept champion"``, or ``"promoted (forced)"``.

    Example::

        decision_label(Decision("encoder", True, "ndcg@10", 0.6, 0.7, 0.005, "", forced=True))
    """
    verdict = "promoted" if decision.promoted else "kept champion"
    return f"{verdict} (forced)" if decision.forced else verdict


def format_gain(value: float | None) -> str:
    """``"+0.089"`` / ``"-0.010"``; ``"—"`` for None (or a value that is not finite)."""
    return "—" if value is None or not math.isfinite(value) else fixed(value, sign=True)


def format_number(value: float | None, digits: int = 3) -> str:
    """``"0.712"``; ``"—"`` for None (or a value that is not finite)."""
    return "—" if value is None or not math.isfinite(value) else fixed(value, digits)


def format_rate(value: float | None) -> str:
    """``"82.5%"``; ``"—"`` for None (or a value that is not finite)."""
    return "—" if value is None or not math.isfinite(value) else f"{value:.1%}"
