"""The evaluation report as Markdown: the HTML page's tables and business proxies, no charts.

For a pull request, a chat message or a terminal: business proxies, champion /
challenger decisions, one table per stage, the refusal reliability bins and step
timings. Strings from the evaluation JSON are escaped so they cannot break a
table, open a link or inject HTML.

Example::

    from llama_index_ragtune.evaluation.dashboard_markdown import render_markdown
    from llama_index_ragtune.evaluation.results import EvaluationResults

    print(render_markdown(EvaluationResults.load("runs/bundle/evaluation.json")))
"""

from __future__ import annotations

import math

from llama_index_ragtune.evaluation.report import markdown_cell as _md
from llama_index_ragtune.evaluation.report_summary import (
    SECTION_TITLES,
    business_proxies,
    decision_label,
    format_gain,
    format_number,
    format_rate,
    metric_keys,
    reference_indices,
)
from llama_index_ragtune.evaluation.results import (
    EvaluationResults,
    SystemResult,
    checked_results,
)
from llama_index_ragtune.evaluation.svg_charts import (
    difference,
    format_ms,
    format_seconds,
    percentile,
)

__all__ = ["render_markdown"]


def _md_table(head: list[str], rows: list[list[str]], align: str = "l") -> list[str]:
    rule = [
        "---:" if (align[i] if i < len(align) else "r") == "r" else "---" for i in range(len(head))
    ]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _md_system(system: SystemResult) -> str:
    return f"{_md(system.name)} ({_md(system.stage)})"


def _section_table(systems: list[SystemResult], latency: str) -> list[str]:
    """Metrics as rows, systems as columns; a tuned system's cell adds its Δ to its reference."""
    refs = reference_indices(systems)
    rows = []
    for key in metric_keys(systems):
        cells = [_md(key)]
        for system, ref in zip(systems, refs, strict=True):
            value = system.metrics.get(key)
            other = None if ref is None else systems[ref].metrics.get(key)
            delta = difference(value, other)
            delta = "" if delta is None else f" ({format_gain(delta)})"
            cells.append(format_number(value) + delta)
        rows.append(cells)
    for pct in (50, 95):
        rows.append(
            [f"{latency} p{pct}"] + [format_ms(percentile(s.latency_ms, pct)) for s in systems]
        )
    return _md_table(["metric", *(_md_system(s) for s in systems)], rows)


def render_markdown(results: EvaluationResults) -> str:
    """The report's tables as Markdown (no charts): proxies, decisions, stages, calibration.

    ``results`` is validated first (``EvaluationResults.validate``; a dict is read as the
    evaluation JSON): a bad field is an ``EvaluationFileError`` naming it.

    Example::

        print(render_markdown(EvaluationResults.load("evaluation.json")))
    """
    return markdown_page(checked_results(results, "render_markdown"))


def markdown_page(results: EvaluationResults) -> str:
    """``render_markdown`` of results already validated (``write_report`` validates once)."""
    queries = ", ".join(f"{_md(split)} {_md(n)}" for split, n in results.queries.items())
    out = [
        f"# {_md(results.title)}",
        "",
        f"Bundle **{_md(results.bundle_version)}** · dataset **{_md(results.dataset_name)}** "
        f"({queries} queries) · created {_md(results.created)}",
        "",
    ]
    if results.notes:
        out += [f"> {_md(results.notes)}", ""]
    if results.generation:
        out += ["## Business proxies", ""]
        rows = []
        for s in results.generation:
            p = business_proxies(s)
            rows.append(
                [
                    _md_system(s),
                    format_rate(p.answer_rate),
                    format_rate(p.refusal_rate),
                    format_ms(p.p50_ms),
                    format_ms(p.p95_ms),
                    str(p.questions),
                ]
            )
        head = ["system", "answer rate", "refusal rate", "time to answer p50", "p95", "questions"]
        out += _md_table(head, rows)
    out += ["## Champion / challenger", ""]
    if results.decisions:
        rows = [
            [
                _md(d.part),
                decision_label(d),
                _md(d.metric) + ("" if d.greater_is_better else " (lower is better)"),
                format_number(d.champion),
                format_number(d.challenger),
                format_gain(d.gain),
                format_number(d.margin),
                _md(d.reason),
            ]
            for d in results.decisions
        ]
        head = ["part", "decision", "metric", "champion", "challenger", "gain", "margin", "reason"]
        out += _md_table(head, rows, align="lllrrrrl")
    else:
        out += ["No champion / challenger decisions recorded.", ""]
    for section, title in SECTION_TITLES.items():
        systems: list[SystemResult] = getattr(results, section)
        if not systems:
            continue
        latency = "time to answer" if section == "generation" else "latency"
        out += [f"## {title}", "", *_section_table(systems, latency)]
    calibrated = [s for s in results.generation if s.refusal is not None]
    if calibrated:
        out += ["## Refusal calibration", ""]
        for s in calibrated:
            scores = s.refusal
            assert scores is not None
            threshold = "none" if scores.threshold is None else f"{scores.threshold:.2f}"
            out += [
                f"**{_md_system(s)}**: {len(scores.probabilities)} questions, "
                f"{sum(scores.should_refuse)} should be refused, "
                + (f"policy {_md(scores.policy)}, " if scores.policy else "")
                + f"threshold {threshold}, "
                f"calibration error {format_number(scores.calibration_error())}",
                "",
            ]
            rows = [
                [
                    f"{b.lower:.1f}–{b.upper:.1f}",
                    str(b.count),
                    format_number(b.mean_probability),
                    format_rate(b.refuse_share),
                ]
                for b in scores.reliability_bins(10)
                if b.count
            ]
            head = ["P(refusal)", "questions", "mean predicted", "should be refused"]
            out += _md_table(head, rows)
    if results.timings:
        total = sum(results.timings.values())
        rows = [
            [
                _md(step),
                format_seconds(sec),
                f"{sec / total:.0%}" if total and math.isfinite(total) else "—",
            ]
            for step, sec in results.timings.items()
        ]
        rows.append(["**total**", f"**{format_seconds(total)}**", ""])
        out += ["## Timings", "", *_md_table(["step", "wall time", "share"], rows)]
    return "\n".join(out).rstrip() + "\n"
