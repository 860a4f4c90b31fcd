"""``GenerationReport``: per-example rows of a generation evaluation, their aggregate and exports.

The rows are the dicts of ``GenerationEvaluator.evaluate_example`` (see
:mod:`llama_index_ragtune.evaluation.generation` for every metric's definition).

Example::

    from llama_index_ragtune.evaluation import GenerationEvaluator

    evaluator = GenerationEvaluator()
    examples = [
        dict(question="Capital of France?", answer_text="Paris [1].", source_node_ids=["n1"],
             gold_node_ids=["n1"], gold_answers=["Paris"]),
        dict(question="Capital of Mars?", answer_text="Olympus [1].", source_node_ids=["n1"],
             answerable=False),
    ]
    report = evaluator.evaluate(examples, show_progress=False, name="base")
    report["exact_match"], report["refusal_recall"]      # (1.0, 0.0)
    print(report.to_markdown())
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llama_index_ragtune.evaluation.chart_text import fixed
from llama_index_ragtune.evaluation.refusal_calibration import refusal_auc
from llama_index_ragtune.evaluation.report import (
    ReportIO,
    check_digits,
    markdown_cell,
    metric_key_list,
)
from llama_index_ragtune.evaluation.report_reading import check_generation_report
from llama_index_ragtune.evaluation.trust import trust_score

__all__ = ["GenerationReport"]


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _cell(value: Any, digits: int, sign: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else fixed(value, digits, sign)
    return markdown_cell(value)


@dataclass
class GenerationReport(ReportIO):
    """Per-example rows of a generation evaluation and their aggregate.

    ``rows`` are the dicts returned by ``GenerationEvaluator.evaluate_example``;
    ``aggregate`` maps each metric to its mean over the examples where it is
    defined (None where it is defined for none), plus the refusal confusion
    counts and rates. ``report[key]`` reads the aggregate.

    Example::

        from llama_index_ragtune.evaluation import GenerationReport

        rows = [{"answerable": True, "refused": False, "uncited": False, "f1": 1.0},
                {"answerable": True, "refused": True, "uncited": False, "f1": 0.0}]
        report = GenerationReport(rows=rows, metric_keys=("f1",))
        report["f1"], report["over_refusal_rate"]      # (0.5, 0.5)
    """

    rows: list[dict[str, Any]]
    name: str | None = None
    metric_keys: tuple[str, ...] = field(default=())

    @property
    def aggregate(self) -> dict[str, Any]:
        """Counts, the mean of every metric key, and the refusal confusion counts and rates.

        When every row has a ``refusal_probability`` (``LocalChatLLM(refusal_threshold=...)``
        reports it), ``refusal_auc`` says how well it separates unanswerable questions;
        rows with ``refusal_signals`` (a dict of refusal signals, e.g. ``decoder``,
        ``answerability``, ``combined``) add ``refusal_auc_<signal>`` for each. The
        Trust-Score-style ``trust_score`` and its parts (``evaluation.trust``) close it.
        ``truncated_rate``: the share of answers the token limit cut (None when no row
        reports a ``finish_reason``).
        """
        rows = self.rows
        answerable = [r for r in rows if r["answerable"]]
        unanswerable = [r for r in rows if not r["answerable"]]
        answered = [r for r in rows if not r["refused"]]
        tp = sum(1 for r in unanswerable if r["refused"])
        fp = sum(1 for r in answerable if r["refused"])
        fn = len(unanswerable) - tp
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        if recall is None:  # no unanswerable example
            f1 = None
        elif precision is None or precision + recall == 0:  # no refusal at all -> recall is 0
            f1 = 0.0
        else:
            f1 = 2 * precision * recall / (precision + recall)
        agg: dict[str, Any] = {
            "n_examples": len(rows),
            "n_answerable": len(answerable),
            "n_unanswerable": len(unanswerable),
        }
        for key in self.metric_keys:
            agg[key] = _mean(r.get(key) for r in rows)
        empty = sum(1 for r in answered if r.get("empty"))
        # answers cut by the token limit (max_new_tokens too small); None when no row
        # reports a finish reason
        reported = any(r.get("finish_reason") is not None for r in rows)
        truncated = sum(1 for r in rows if r.get("truncated"))
        agg.update(
            answer_rate=_ratio(len(answered) - empty, len(rows)),
            empty_rate=_ratio(empty, len(rows)),
            refusal_rate=_ratio(sum(r["refused"] for r in rows), len(rows)),
            refusal_precision=precision,
            refusal_recall=recall,
            refusal_f1=f1,
            over_refusal_rate=_ratio(fp, len(answerable)),
            uncited_rate=_ratio(sum(1 for r in answered if r["uncited"]), len(answered)),
            truncated_rate=_ratio(truncated, len(rows)) if reported else None,
            refusal_tp=tp,
            refusal_fp=fp,
            refusal_fn=fn,
        )

        labels = [r["answerable"] for r in rows]
        probabilities = [r.get("refusal_probability") for r in rows]
        if rows and all(p is not None for p in probabilities):
            agg["refusal_auc"] = refusal_auc(probabilities, labels)
        # refusal_signals: {"decoder": p, "answerability": q, "combined": r} per row
        names = [n for r in rows[:1] for n in (r.get("refusal_signals") or {})]
        for name in names:
            values = [(r.get("refusal_signals") or {}).get(name) for r in rows]
            if all(v is not None for v in values):
                agg[f"refusal_auc_{name}"] = refusal_auc(values, labels)
        if rows:
            agg.update(trust_score(rows))
        return agg

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: name, metric keys, aggregate and every row."""
        return {
            "name": self.name,
            "metric_keys": list(self.metric_keys),
            "aggregate": self.aggregate,
            "rows": self.rows,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationReport:
        """Rebuild a report written by ``to_dict`` (``EvaluationFileError`` naming the
        field when ``data`` is not of that shape)."""
        check_generation_report(data)
        return cls(
            rows=list(data["rows"]),
            name=data.get("name"),
            metric_keys=tuple(data.get("metric_keys", ())),
        )

    def _records(self) -> list[dict[str, Any]]:
        return list(self.rows)

    def to_markdown(self, digits: int = 3) -> str:
        """A two-column Markdown table (metric, value); undefined metrics show as "—"."""
        check_digits(digits, "GenerationReport.to_markdown")
        lines = ["| metric | value |", "| --- | --- |"]
        lines += [
            f"| {markdown_cell(key)} | {_cell(value, digits)} |"
            for key, value in self.aggregate.items()
        ]
        if self.name:
            lines.insert(0, f"**{markdown_cell(self.name)}**\n")
        return "\n".join(lines)

    def compare(
        self, other: GenerationReport, keys: Sequence[str] | None = None, digits: int = 3
    ) -> str:
        """A Markdown table of this report (before) against ``other`` (after), with deltas.

        ``keys`` defaults to every aggregate value that is a float in either report.

        Example::

            tuned = GenerationReport(rows=[dict(rows[0])], metric_keys=("f1",), name="tuned")
            print(report.compare(tuned, keys=["f1"]))     # | f1 | 0.500 | 1.000 | +0.500 |
        """
        check_digits(digits, "GenerationReport.compare")
        keys = metric_key_list(keys, "GenerationReport.compare")
        left, right = self.aggregate, other.aggregate
        if keys is None:
            keys = [
                k
                for k, v in left.items()
                if isinstance(v, float) or isinstance(right.get(k), float)
            ]
        names = (markdown_cell(self.name or "before"), markdown_cell(other.name or "after"))
        lines = [f"| metric | {names[0]} | {names[1]} | Δ |", "| --- | --- | --- | --- |"]
        for key in keys:
            a, b = left.get(key), right.get(key)
            both = isinstance(a, (int, float)) and isinstance(b, (int, float))
            delta = _cell(float(b - a), digits, sign=True) if both else "—"
            lines.append(
                f"| {markdown_cell(key)} | {_cell(a, digits)} | {_cell(b, digits)} | {delta} |"
            )
        return "\n".join(lines)
