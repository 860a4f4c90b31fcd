"""One evaluated system of a run (``SystemResult``), its refusal scores, and a promotion decision.

The building blocks of :class:`~llama_index_ragtune.evaluation.results.EvaluationResults`:
a retrieval, reranking or generation system measured at one stage (``before``,
``after``, ...), the refusal probabilities behind its reliability diagram, and a
champion / challenger ``Decision``. ``SystemResult.from_retrieval_report`` and
``from_generation_report`` take them from the evaluators' reports.

Example::

    from llama_index_ragtune.evaluation.system_result import RefusalScores, SystemResult

    tuned = SystemResult("SmolLM2 + SFT", "after", {"answer_rate": 0.8}, [810.0, 950.0],
                         RefusalScores([0.1, 0.7], should_refuse=[0, 1], threshold=0.5))
    tuned.refusal.refusal_rate, tuned.refusal.calibration_error()     # (0.5, 0.2)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

from llama_index_ragtune.evaluation.reliability import (
    CalibrationBin,
    expected_calibration_error,
    reliability_bins,
)

__all__ = ["Decision", "RefusalScores", "SystemResult", "plain_metrics"]


@dataclass
class RefusalScores:
    """Per-question refusal probabilities, whether each question should be refused, the threshold.

    Example::

        scores = RefusalScores([0.1, 0.9, 0.7], should_refuse=[0, 1, 0], threshold=0.5)
        scores.refusal_rate, scores.reliability_bins(2)[1].refuse_share   # (0.666..., 0.5)
    """

    probabilities: list[float]
    should_refuse: list[int]
    threshold: float | None = None
    #: the refusal policy whose signal ``probabilities`` are (``"decoder"``, ``"combined"``,
    #: ...; ``"none"``: no forced refusal), when known
    policy: str | None = None

    @property
    def refusal_rate(self) -> float | None:
        """Share of questions refused at ``threshold`` (None without a threshold or questions)."""
        if self.threshold is None or not self.probabilities:
            return None
        return sum(p >= self.threshold for p in self.probabilities) / len(self.probabilities)

    def reliability_bins(self, n_bins: int = 10) -> list[CalibrationBin]:
        """``n_bins`` equal-width bins of the refusal probability (see ``reliability_bins``)."""
        return reliability_bins(self.probabilities, self.should_refuse, n_bins)

    def calibration_error(self, n_bins: int = 10) -> float | None:
        """Expected calibration error over ``n_bins`` bins (see ``expected_calibration_error``)."""
        return expected_calibration_error(self.probabilities, self.should_refuse, n_bins)


@dataclass
class SystemResult:
    """One evaluated system of a stage: its metrics, per-query latencies and refusal scores.

    Example::

        SystemResult("hybrid", "after", {"ndcg@10": 0.7, "recall@10": 0.9}, [6.2, 7.1])
    """

    name: str
    stage: str
    metrics: dict[str, float | None]
    latency_ms: list[float] = field(default_factory=list)
    refusal: RefusalScores | None = None

    @classmethod
    def from_retrieval_report(
        cls,
        report: Any,
        stage: str,
        name: str | None = None,
        metrics: Sequence[str] = ("ndcg@10", "recall@10", "mrr@10"),
    ) -> SystemResult:
        """A retrieval/reranking system from a ``RetrievalReport`` (its mean metrics, latencies).

        Example::

            SystemResult.from_retrieval_report(report, "before", name="hybrid")
        """
        aggregate = report.aggregate
        missing = [key for key in metrics if key not in aggregate]
        if missing:
            raise ValueError(
                f"from_retrieval_report: report {report.name!r} has no {missing}; it has "
                f"{sorted(aggregate)}. Pass metrics= with keys it has."
            )
        return cls(
            name=name or report.name or "retrieval",
            stage=stage,
            metrics={key: float(aggregate[key]) for key in metrics},
            latency_ms=[float(row.latency_ms) for row in report.rows],
        )

    @classmethod
    def from_generation_report(
        cls,
        report: Any,
        stage: str,
        name: str | None = None,
        refusal_threshold: float | None = None,
    ) -> SystemResult:
        """A generation system from a ``GenerationReport``.

        Metrics: every numeric aggregate (rates, F1s, means), ``answer_rate`` among them
        (neither refused nor empty; 1 - ``refusal_rate`` for a report without it);
        latencies: each row's ``latency_s`` (from ``GenerationEvaluator.evaluate_query_engine``)
        in milliseconds; refusal scores when every row has a ``refusal_probability``.

        Example::

            SystemResult.from_generation_report(report, "after", refusal_threshold=0.42)
        """
        metrics: dict[str, float | None] = {
            key: (None if value is None else float(value))
            for key, value in report.aggregate.items()
            if value is None or (isinstance(value, float) and not isinstance(value, bool))
        }
        rate = metrics.get("refusal_rate")
        if metrics.get("answer_rate") is None:
            metrics["answer_rate"] = None if rate is None else 1.0 - rate
        rows = report.rows
        latencies = [row.get("latency_s") for row in rows]
        for row, seconds in zip(rows, latencies, strict=True):
            if seconds is not None and (
                isinstance(seconds, bool)
                or not isinstance(seconds, Real)
                or not math.isfinite(seconds)
                or seconds < 0
            ):
                example = row.get("id") or row.get("question")
                raise ValueError(
                    f"from_generation_report: example {example!r} has latency_s {seconds!r}; "
                    "expected a finite number of seconds >= 0 (fix or drop that row's latency_s)"
                )
        probabilities = [row.get("refusal_probability") for row in rows]
        refusal = None
        if rows and all(p is not None for p in probabilities):
            refusal = RefusalScores(
                probabilities=[float(p) for p in probabilities],
                should_refuse=[int(not row["answerable"]) for row in rows],
                threshold=refusal_threshold,
            )
        return cls(
            name=name or report.name or "generation",
            stage=stage,
            metrics=metrics,
            latency_ms=[1000.0 * s for s in latencies]
            if all(s is not None for s in latencies)
            else [],
            refusal=refusal,
        )


@dataclass
class Decision:
    """A champion/challenger decision: was the tuned ``part`` promoted, on which metric, why.

    ``champion`` / ``challenger`` are the two parts' values of ``metric`` (None when
    there was nothing to compare); ``greater_is_better`` is False for losses; ``forced``
    marks a promotion made without (or against) the check.

    Example::

        Decision("reranker", promoted=False, metric="ndcg@10", champion=0.70,
                 challenger=0.69, margin=0.005, reason="challenger below champion + margin").gain
        # -0.01 (up to rounding)
    """

    part: str
    promoted: bool
    metric: str
    champion: float | None
    challenger: float | None
    margin: float
    reason: str
    greater_is_better: bool = True
    forced: bool = False

    @property
    def gain(self) -> float | None:
        """How much better the challenger is (positive = better); None without both values
        (or when their difference overflows)."""
        if self.champion is None or self.challenger is None:
            return None
        diff = self.challenger - self.champion
        if not math.isfinite(diff):
            return None
        return diff if self.greater_is_better else -diff


def plain_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Metric values as plain floats (numpy scalars too); anything else is left to validation.

    Example::

        plain_metrics({"ndcg@10": numpy.float32(0.5), "f1": None})   # {"ndcg@10": 0.5, "f1": None}
    """
    return {
        key: float(value) if isinstance(value, Real) and not isinstance(value, bool) else value
        for key, value in metrics.items()
    }
