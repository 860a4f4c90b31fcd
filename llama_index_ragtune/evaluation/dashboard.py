"""The evaluation report: one self-contained HTML page with charts, and a Markdown summary.

``render_html`` turns :class:`~llama_index_ragtune.evaluation.results.EvaluationResults`
(the evaluation JSON) into a single page: headline business proxies (answer rate,
refusal rate, time-to-answer p50 / p95), the champion / challenger decisions,
before / after bars per stage, latency box plots, refusal reliability diagrams and
step timings. Charts are inline SVG; the page loads nothing (no script, no external
CSS, fonts or images; a Content-Security-Policy forbids it) and every string from
the JSON is HTML-escaped. ``render_markdown`` gives the same tables without charts;
``write_report`` writes both atomically.

Example::

    from llama_index_ragtune.evaluation.dashboard import write_report
    from llama_index_ragtune.evaluation.results import EvaluationResults

    results = EvaluationResults.load("runs/bundle/evaluation.json")
    paths = write_report(results, "runs/bundle/report")
    paths.html, paths.markdown      # runs/bundle/report/report.html, .../report.md
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_index_ragtune._atomic import _parent_lock, atomic_path
from llama_index_ragtune._atomic_disk import _make_parent
from llama_index_ragtune.evaluation.chart_text import escape_text
from llama_index_ragtune.evaluation.dashboard_markdown import (  # noqa: F401 - importable here
    markdown_page,
    render_markdown,
)
from llama_index_ragtune.evaluation.dashboard_style import PAGE_CSS
from llama_index_ragtune.evaluation.file_paths import checked_path
from llama_index_ragtune.evaluation.report_summary import (
    SECTION_TITLES,
    baseline_index,
    best_value,
    business_proxies,
    decision_label,
    format_gain,
    format_number,
    format_rate,
    headline,
    is_baseline,
    metric_keys,
    reference_indices,
)
from llama_index_ragtune.evaluation.results import (
    EvaluationResults,
    SystemResult,
    checked_results,
)
from llama_index_ragtune.evaluation.svg_charts import (  # noqa: F401 - caps importable here
    MAX_CHART_METRICS,
    MAX_SHOWN_STEPS,
    PALETTE,
    Series,
    calibration_diagram,
    difference,
    format_ms,
    isolate_bidi,
    latency_boxes,
    metric_bars,
    metric_direction,
    percentile,
    shown_steps,
    timing_bars,
    tint,
)

__all__ = ["REPORT_FILE_NAMES", "ReportPaths", "render_html", "write_report"]

REPORT_FILE_NAMES = ("report.html", "report.md")
"""The files ``write_report`` writes into its folder."""

SECTION_LEDES = {
    "retrieval": "First-stage retrieval on the held-out queries.",
    "reranking": "Retrieve, then rerank with the cross-encoder.",
    "generation": "Answers with citations, or a refusal, on the held-out questions.",
}


@dataclass(frozen=True)
class ReportPaths:
    """Where ``write_report`` put the two files."""

    html: Path
    markdown: Path


MAX_SHOWN_CHARS = 2_000
"""Characters of one string from the JSON (a name, a metric, the title) the page shows: a
1 MB system name, shown in every table and caption, made a page 2 million pixels tall."""
MAX_SHOWN_NOTE_CHARS = 20_000
"""Characters of the notes and of a decision's reason the page shows (prose, longer)."""


def _e(value: Any, cap: int | None = MAX_SHOWN_CHARS) -> str:
    """``value`` HTML-escaped, as a bidi isolate when it could reorder what follows it,
    control characters shown as U+FFFD (``chart_text.escape_text``); cut past ``cap``
    characters (``_cut``)."""
    return escape_text(_cut(str(value), cap))


def _cut(text: str, cap: int | None = MAX_SHOWN_CHARS) -> str:
    """``text``, or its first ``cap`` characters and how many more the evaluation JSON holds."""
    if cap is None or len(text) <= cap:
        return text
    return f"{text[:cap]}… ({len(text) - cap:,} more characters in the evaluation JSON)"


def _chart_keys(systems: list[SystemResult]) -> list[str]:
    """Metrics every system gives as a 0-1 number (or null): the ones a 0-1 bar can show."""
    return [
        key
        for key in metric_keys(systems)
        if all(0.0 <= v <= 1.0 for s in systems if (v := s.metrics.get(key)) is not None)
        and any(s.metrics.get(key) is not None for s in systems)
    ]


def _hues(results: EvaluationResults) -> dict[str, str]:
    """One palette hue per system name, in order of first appearance."""
    hues: dict[str, str] = {}
    for section in SECTION_TITLES:
        for system in getattr(results, section):
            hues.setdefault(system.name, PALETTE[len(hues) % len(PALETTE)])
    return hues


def _color(hues: dict[str, str], system: SystemResult) -> str:
    """The system's hue; a light tint of it for the baseline stage."""
    hue = hues[system.name]
    return tint(hue, 0.55) if is_baseline(system) else hue


def _policy_label(scores: Any) -> str:
    """``"policy decoder · "`` when the results name the refusal policy, else ``""``."""
    return f"policy {isolate_bidi(_cut(scores.policy))} · " if scores.policy else ""


def _label(system: SystemResult) -> str:
    return f"{isolate_bidi(_cut(system.name))} · {isolate_bidi(_cut(system.stage))}"


# ---------------------------------------------------------------------- HTML
def _kpis(results: EvaluationResults) -> str:
    head, base = headline(results.generation)
    if head is None:
        return '<p class="muted">No generation results: no business proxies to show.</p>'
    now = business_proxies(head)
    before = business_proxies(base) if base is not None else None
    base_stage = base.stage if base is not None else ""
    cards = [
        ("Answer rate", "answer_rate", format_rate, "share answered, not refused or empty", 0),
        ("Refusal rate", "refusal_rate", format_rate, "share of questions refused", 0),
        ("Time to answer · p50", "p50_ms", format_ms, "median end-to-end", -1),
        ("Time to answer · p95", "p95_ms", format_ms, "95th percentile", -1),
    ]
    out = []
    for title, attr, fmt, hint, direction in cards:
        value = getattr(now, attr)
        compare = ""
        old = getattr(before, attr) if before is not None else None
        delta = difference(value, old)
        if delta is not None:
            sign = "+" if delta >= 0 else "−"
            if attr.endswith("rate"):
                change = f"{sign}{abs(delta) * 100:.1f} pts"
            else:
                change = sign + format_ms(abs(delta))
            css = {1: "good", -1: "bad"}.get(direction * (1 if delta > 0 else -1), "muted")
            if not delta or not direction:
                css = "muted"
            compare = (
                f'<div class="kpi-compare"><span class="delta {css}">{_e(change)}</span> '
                f"vs {_e(fmt(old))} {_e(base_stage)}</div>"
            )
        out.append(
            f'<div class="kpi"><div class="kpi-title">{_e(title)}</div>'
            f'<div class="kpi-value">{_e(fmt(value))}</div>{compare}'
            f'<div class="kpi-hint">{_e(hint)}</div></div>'
        )
    caption = (
        f'{_e(head.name)} <span class="stage">{_e(head.stage)}</span> on '
        f"{now.questions} held-out questions"
    )
    return f'<p class="kpi-caption">{caption}</p><div class="kpis">{"".join(out)}</div>'


def _table(head: list[str], rows: list[list[str]], align: str = "") -> str:
    """An HTML table of already-escaped cells; ``align`` per column: "l" text, "r" number.

    Columns past ``align`` are numbers, except the first (the row's name).
    """
    align = align or "l"

    def css(i: int) -> str:
        return "num" if (align[i] if i < len(align) else "r") == "r" else ""

    th = "".join(f'<th class="{css(i)}">{h}</th>' for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f'<td class="{css(i)}">{c}</td>' for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return (
        f'<div class="table-wrap"><table><thead><tr>{th}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _decisions_html(results: EvaluationResults) -> str:
    if not results.decisions:
        return '<p class="muted">No champion / challenger decisions recorded.</p>'
    rows = []
    for d in results.decisions[:MAX_SHOWN_DECISIONS]:
        verdict = decision_label(d)
        badge = f'<span class="badge {"promoted" if d.promoted else "kept"}">{_e(verdict)}</span>'
        gain = d.gain
        css = "muted" if not gain else "good" if gain > 0 else "bad"
        rows.append(
            [
                _e(d.part),
                badge,
                _e(d.metric) + ("" if d.greater_is_better else " (lower is better)"),
                format_number(d.champion),
                format_number(d.challenger),
                f'<span class="delta {css}">{format_gain(gain)}</span>',
                format_number(d.margin),
                f'<span class="reason">{_e(d.reason, MAX_SHOWN_NOTE_CHARS)}</span>',
            ]
        )
    head = ["part", "decision", "metric", "champion", "challenger", "gain", "margin", "reason"]
    table = _table(head, rows, align="lllrrrrl")
    if len(results.decisions) > MAX_SHOWN_DECISIONS:
        table += (
            f'<p class="muted">Showing the first {MAX_SHOWN_DECISIONS} of '
            f"{len(results.decisions):,} decisions; the others are in report.md and the "
            "evaluation JSON.</p>"
        )
    return table


def _delta_html(key: str, value: float | None, reference: float | None) -> str:
    delta = difference(value, reference)
    if delta is None:
        return ""
    sign = metric_direction(key) * (1 if delta > 0 else -1 if delta < 0 else 0)
    css = {1: "good", -1: "bad"}.get(sign, "muted")
    return f' <span class="delta small {css}">{format_gain(delta)}</span>'


def _system_table(systems: list[SystemResult], keys: list[str], latency_name: str) -> str:
    """Metrics ``keys`` as rows, systems as columns (best value in bold, Δ against the
    reference)."""
    refs = reference_indices(systems)
    rows = []
    for key in keys:
        best = best_value(systems, key)
        cells = [_e(key)]
        for s, ref in zip(systems, refs, strict=True):
            value = s.metrics.get(key)
            text = format_number(value)
            text = f"<b>{text}</b>" if value is not None and value == best else text
            other = None if ref is None else systems[ref].metrics.get(key)
            cells.append(text + _delta_html(key, value, other))
        rows.append(cells)
    for pct in (50, 95):
        rows.append(
            [f"{latency_name} p{pct}"]
            + [_e(format_ms(percentile(s.latency_ms, pct))) for s in systems]
        )
    head = ["metric"] + [
        f'<span class="sys">{_e(s.name)}</span> <span class="stage">{_e(s.stage)}</span>'
        for s in systems
    ]
    return _table(head, rows)


MAX_SHOWN_METRICS = 200
"""Metric rows a section's table shows (in order of first appearance); the rest are named
by count in a note and stay in ``report.md`` and the JSON. 10,000 metrics of 40 systems
made a 107 MB page (``report.md``: 5 MB)."""
MAX_SHOWN_DECISIONS = 200
"""Champion / challenger rows the page's table shows; the others are in ``report.md``."""
MAX_SHOWN_SPLITS = 20
"""Query splits the page's header names; the others are counted."""

MAX_SHOWN_SYSTEMS = 40
"""Systems a section's charts and tables show: beyond it, the best ones by the section's
first metric (with the baselines they are compared with), and a note naming how many
are left out (every system stays in ``report.md`` and the JSON)."""


def shown_systems(systems: list[SystemResult]) -> tuple[list[SystemResult], str]:
    """The systems a section shows (in their order) and a note on those left out ("": none).

    Example::

        shown, note = shown_systems(results.retrieval)    # 10,000 systems: the best 40
    """
    if len(systems) <= MAX_SHOWN_SYSTEMS:
        return systems, ""
    keys = metric_keys(systems)
    key = keys[0] if keys else None
    sign = metric_direction(key) if key else 1

    def rank(i: int) -> tuple[bool, float, int]:
        value = systems[i].metrics.get(key) if key else None
        return (value is None, -sign * value if value is not None else 0.0, i)

    best = sorted(range(len(systems)), key=rank)[:MAX_SHOWN_SYSTEMS]
    refs = reference_indices(systems)
    keep = set(best) | {ref for i in best if (ref := refs[i]) is not None}
    shown = [s for i, s in enumerate(systems) if i in keep]
    by = f"by {_e(key)}" if key else "first"
    note = (
        f" Showing the {len(best)} best of {len(systems):,} systems {by} (with the baselines "
        f"they are compared with); the other {len(systems) - len(shown):,} are in report.md "
        "and the evaluation JSON."
    )
    return shown, note


def _section_html(results: EvaluationResults, section: str, hues: dict[str, str]) -> str:
    systems: list[SystemResult] = getattr(results, section)
    if not systems:
        return ""
    systems, left_out = shown_systems(systems)
    title = SECTION_TITLES[section]
    series = [Series(_label(s), _color(hues, s), s.metrics) for s in systems]
    keys = _chart_keys(systems)
    lede = SECTION_LEDES[section]
    if len(systems) > 1:
        lede += (
            " Δ: each tuned system against the <i>before</i> row of the same name (else the "
            f"first one, <b>{_e(_label(systems[baseline_index(systems)]), None)}</b>)."
        )
    all_keys = metric_keys(systems)
    table_keys = all_keys[:MAX_SHOWN_METRICS]
    shown = set(table_keys)
    keys = [k for k in keys if k in shown][:MAX_CHART_METRICS]  # metric_bars' cap, named here
    on_chart = set(keys)
    table_only = [k for k in table_keys if k not in on_chart]
    if table_only:
        listed = ", ".join(isolate_bidi(_cut(k)) for k in table_only)
        lede += f" Not on the 0–1 chart, in the table: {_e(listed, None)}."
    if len(all_keys) > len(table_keys):
        lede += (
            f" The table shows the first {len(table_keys)} of {len(all_keys):,} metrics; the "
            f"other {len(all_keys) - len(table_keys):,} are in report.md and the evaluation JSON."
        )
    lede += left_out
    parts = [f'<section id="{section}"><h2>{title}</h2><p class="lede">{lede}</p>']
    if keys:
        chart = metric_bars(
            series, keys, f"{title}: metrics per system", reference_indices(systems)
        )
        parts.append(f'<figure class="card">{chart}</figure>')
    latency_name = "time to answer" if section == "generation" else "latency"
    parts.append(_system_table(systems, table_keys, latency_name))
    lat_series = [Series(_label(s), _color(hues, s), s.latency_ms) for s in systems]
    if any(s.values for s in lat_series):
        what = "Time to answer" if section == "generation" else "Latency per query"
        parts.append(
            f'<h3>{what}</h3><figure class="card">'
            + latency_boxes(lat_series, f"{title}: {what.lower()}")
            + "</figure>"
        )
    if section == "generation":
        parts.append(_proxies_html(systems))
    parts.append("</section>")
    return "".join(parts)


def _proxies_html(systems: list[SystemResult]) -> str:
    rows = []
    for s in systems:
        p = business_proxies(s)
        rows.append(
            [
                f'{_e(s.name)} <span class="stage">{_e(s.stage)}</span>',
                format_rate(p.answer_rate),
                format_rate(p.refusal_rate),
                _e(format_ms(p.p50_ms)),
                _e(format_ms(p.p95_ms)),
                str(p.questions),
            ]
        )
    head = ["system", "answer rate", "refusal rate", "time to answer p50", "p95", "questions"]
    return "<h3>Business proxies</h3>" + _table(head, rows)


def _calibration_html(results: EvaluationResults, hues: dict[str, str]) -> str:
    systems = [s for s in results.generation if s.refusal is not None]
    if not systems:
        return ""
    systems, left_out = shown_systems(systems)
    figures = []
    for s in systems:
        scores = s.refusal
        assert scores is not None
        ece = scores.calibration_error()
        should = sum(scores.should_refuse)
        svg = calibration_diagram(
            scores.reliability_bins(10),
            scores.threshold,
            f"Refusal calibration: {_label(s)}",
            color=hues[s.name],
        )
        threshold = "none" if scores.threshold is None else f"{scores.threshold:.2f}"
        figures.append(
            f'<figure class="card calib"><figcaption><b>{_e(s.name)}</b> '
            f'<span class="stage">{_e(s.stage)}</span><br><span class="muted">'
            f"{len(scores.probabilities)} questions, {should} should be refused · "
            f"{_e(_policy_label(scores), None)}threshold {threshold} · calibration error "
            f"{format_number(ece)}</span></figcaption>{svg}</figure>"
        )
    return (
        '<section id="refusal"><h2>Refusal calibration</h2><p class="lede">Questions binned '
        "by the model's refusal probability: a calibrated model's bars meet the diagonal. "
        f"Right of the threshold it refuses.{left_out}</p>"
        f'<div class="calib-grid">{"".join(figures)}</div></section>'
    )


def render_html(results: EvaluationResults, source: str | None = None) -> str:
    """The self-contained HTML report of ``results`` (``source``: the JSON's name, for the footer).

    ``results`` is validated first (``EvaluationResults.validate``; a dict is read as the
    evaluation JSON): a bad field is an ``EvaluationFileError`` naming it.

    Example::

        html = render_html(EvaluationResults.load("evaluation.json"), source="evaluation.json")
    """
    return _page(checked_results(results, "render_html"), source)


def _page(results: EvaluationResults, source: str | None) -> str:
    """``render_html`` of results already validated."""
    from llama_index_ragtune import __version__

    hues = _hues(results)
    splits = list(results.queries.items())
    queries = " · ".join(f"{_e(split)} {_e(n)}" for split, n in splits[:MAX_SHOWN_SPLITS])
    if len(splits) > MAX_SHOWN_SPLITS:
        queries += f" · {len(splits) - MAX_SHOWN_SPLITS:,} more splits"
    nav = [("decisions", "Decisions")]
    nav += [(sec, SECTION_TITLES[sec]) for sec in SECTION_TITLES if getattr(results, sec)]
    if any(s.refusal is not None for s in results.generation):
        nav.append(("refusal", "Refusal calibration"))
    if results.timings:
        nav.append(("timings", "Timings"))
    notes = (
        f'<p class="notes">{_e(results.notes, MAX_SHOWN_NOTE_CHARS)}</p>' if results.notes else ""
    )
    body = [
        '<header><p class="eyebrow">ragtune · evaluation report</p>',
        f"<h1>{_e(results.title)}</h1>",
        f'<p class="meta">bundle <b>{_e(results.bundle_version)}</b> · dataset '
        f"<b>{_e(results.dataset_name)}</b> ({queries} queries) · created "
        f"{_e(results.created)}</p>{notes}",
        "<nav>" + "".join(f'<a href="#{a}">{t}</a>' for a, t in nav) + "</nav></header>",
        f'<section id="headline">{_kpis(results)}</section>',
        '<section id="decisions"><h2>Champion / challenger</h2><p class="lede">Each tuned part '
        "replaces the one before it only when it beats it by the margin on the held-out "
        f"queries.</p>{_decisions_html(results)}</section>",
    ]
    body += [_section_html(results, section, hues) for section in SECTION_TITLES]
    body.append(_calibration_html(results, hues))
    if results.timings:
        body.append(
            '<section id="timings"><h2>Timings</h2><figure class="card">'
            + timing_bars(results.timings, "Wall time per pipeline step")
            + "</figure></section>"
        )
    origin = f" from {_e(source)}" if source else ""
    body.append(
        f"<footer>Generated by llama-index-ragtune {_e(__version__)}{origin} · "
        "format ragtune-evaluation v1 · no scripts, nothing loaded from the network.</footer>"
    )
    csp = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(results.title)} · ragtune report</title><style>{PAGE_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


def write_report(
    results: EvaluationResults, out_dir: str | Path, source: str | None = None
) -> ReportPaths:
    """Validate ``results``, then write ``report.html`` and ``report.md`` into ``out_dir``.

    The folder is created; both files are written to temporary siblings, then renamed
    into place, so a crash or a failed write leaves the old report or the new one.
    Concurrent writers of one folder (threads or processes) take turns: the folder ends
    with one run's ``report.html`` and ``report.md``, never a mix. Invalid
    results raise ``EvaluationFileError`` naming the field before anything is written.

    Example::

        paths = write_report(EvaluationResults.load("evaluation.json"), "runs/report")
    """
    out = checked_path(out_dir, "write_report")
    results = checked_results(results, "write_report")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(
            f"write_report: {out} is a file, not a folder; the report is two files "
            "(report.html, report.md): pass a folder to write them into"
        )
    html_text, md_text = _page(results, source), markdown_page(results)
    paths = ReportPaths(*(out / name for name in REPORT_FILE_NAMES))
    # both written before either is renamed into place: a failure writing either one (a
    # full disk, a folder in the way) leaves both old files, not a new page beside an old
    # summary (was: report.html replaced, then "nothing was written" for report.md)
    _make_parent(paths.html)  # the folder must exist to be locked
    # one writer of a folder at a time (threads, and processes through ``flock`` on the
    # folder itself: no lock file is added to it), so two concurrent reports leave one run's
    # pair, never one's page beside the other's summary (was: 20 of 60 racing rounds mixed)
    with (
        _WRITING,
        _parent_lock(out),
        atomic_path(paths.html) as html_tmp,
        atomic_path(paths.markdown) as md_tmp,
    ):
        html_tmp.write_bytes(html_text.encode("utf-8"))
        md_tmp.write_bytes(md_text.encode("utf-8"))
    return paths


_WRITING = threading.Lock()  # serialises this process's writers where ``flock`` is missing
