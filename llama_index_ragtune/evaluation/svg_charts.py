"""Inline SVG charts for the evaluation report, in plain Python (no plotting dependency).

Each function returns one ``<svg class="chart">`` string ready to drop into an HTML
page: labelled axes, value labels, a legend, and a ``<title>`` tooltip on every
mark. Every string that reaches the SVG is HTML-escaped. Styling comes from the
page's CSS classes (``.axis``, ``.grid``, ``.label``, ``.value``, ...), so the
charts follow the report's look.

Example::

    from llama_index_ragtune.evaluation.svg_charts import Series, metric_bars

    before = Series("hybrid · before", "#93b4f5", {"ndcg@10": 0.61, "recall@10": 0.80})
    after = Series("hybrid · after", "#2563eb", {"ndcg@10": 0.70, "recall@10": 0.88})
    svg = metric_bars([before, after], ["ndcg@10", "recall@10"], title="Retrieval")
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

from llama_index_ragtune.evaluation.chart_text import (
    escape_text as _e,
)
from llama_index_ragtune.evaluation.chart_text import (
    fit_label,
    fixed,
    format_ms,
    format_seconds,
    isolate_bidi,
    text_width,
)

__all__ = [
    "MAX_CALIBRATION_BINS",
    "MAX_CHART_METRICS",
    "MAX_CHART_SERIES",
    "MAX_LATENCY_DOTS",
    "MAX_SHOWN_STEPS",
    "PALETTE",
    "Series",
    "calibration_diagram",
    "check_color",
    "difference",
    "format_ms",
    "format_seconds",
    "isolate_bidi",
    "latency_boxes",
    "metric_direction",
    "metric_bars",
    "percentile",
    "shown_steps",
    "timing_bars",
    "tint",
]

# Colour-blind-friendly hues, strong enough for white text-free bars.
PALETTE = ("#2563eb", "#ea580c", "#059669", "#9333ea", "#db2777", "#0891b2", "#ca8a04", "#475569")
WIDTH = 1000
LABEL_W = 250  # left column for metric / system names
MAX_AXIS_MS = 1e12  # about 32 years: the latency axis never goes further
# What one chart draws at most (called directly or from the report page, which never
# passes more): the rest is named in a note under the chart, so a huge input stays a small
# SVG instead of one mark per item (50,000 timing steps were 50,000 bars).
MAX_CHART_METRICS = 30
"""Metric groups :func:`metric_bars` draws: the first ones (a note counts the rest)."""
MAX_CHART_SERIES = 80
"""Systems :func:`metric_bars` and :func:`latency_boxes` draw: the first ones (the report
page passes at most its 40 best systems and the baselines they are compared with)."""
MAX_SHOWN_STEPS = 60
"""Bars :func:`timing_bars` draws: the longest steps, in run order, and one for the others."""
MAX_LATENCY_DOTS = 2000
"""Most per-query dots :func:`latency_boxes` draws per system (``max_dots`` above it is refused)."""
MAX_CALIBRATION_BINS = 100
"""Most probability bins :func:`calibration_diagram` draws (more is refused)."""
HIGHER_IS_BETTER = (
    "ndcg", "recall", "mrr", "map", "hit", "precision", "f1", "accuracy", "exact_match",
    "auc", "answer_score", "citation_valid",
)  # fmt: skip
LOWER_IS_BETTER = (
    "over_refusal", "uncited", "error", "calibration_error", "ece", "loss", "perplexity",
    "ppl", "mse", "rmse", "mae",
)  # fmt: skip
_LOWER_WORDS = re.compile(  # whole words: "glossary_hit" holds no loss
    "|".join(rf"(?<![a-z]){re.escape(w)}(?:e?s)?(?![a-z])" for w in LOWER_IS_BETTER)
)
MAX_LABEL_CHARS = 2_000
"""Characters of a name (system, metric, step, title) a chart shows, as the HTML report
cuts them: a 1 MB metric name was copied whole into five tooltips of one chart."""
MAX_ERROR_NAME_CHARS = 200
"""Characters of a name an error message shows."""


_HEX_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3}){1,2}")
_NAMED_COLOR = re.compile(r"[a-zA-Z]{3,30}")


def check_color(color: Any, where: str) -> str:
    """``color`` as it goes into an SVG attribute: ``#rrggbb`` (``#rgb`` widened) or a CSS
    colour name (letters only); anything else is a ``ValueError`` naming ``where``.

    A colour is written into ``fill="..."`` / ``stroke="..."`` attributes: one holding
    a quote (``'red" onload="alert(1)'``) or markup added attributes or elements to the
    chart (it was written unescaped).

    Example::

        check_color("#25e", "series 'a'"), check_color("teal", "x")   # ('#2255ee', 'teal')
    """
    if isinstance(color, str) and _HEX_COLOR.fullmatch(color):
        return color if len(color) == 7 else "#" + "".join(ch * 2 for ch in color[1:])
    if isinstance(color, str) and _NAMED_COLOR.fullmatch(color):
        return color
    raise ValueError(
        f"{where}: color must be '#rrggbb', '#rgb' or a CSS colour name (letters only), got "
        f"{str(color)[:60]!r}"
    )


@dataclass
class Series:
    """One system in a chart: its legend label, colour and values (per metric, or a list).

    ``color``: ``#rrggbb``, ``#rgb`` or a CSS colour name (``check_color``); anything
    else is a ``ValueError`` when the series is made or the colour set.
    """

    label: str
    color: str
    values: Any

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "color":
            label = str(getattr(self, "label", ""))[:60]
            value = check_color(value, f"Series {label!r}")
        super().__setattr__(name, value)


def tint(color: str, amount: float) -> str:
    """``color`` (``#rrggbb`` or ``#rgb``) mixed with white by ``amount`` (0: unchanged,
    1: white); a colour name is a ``ValueError`` saying to give it in hex."""
    color = check_color(color, "tint")
    if not color.startswith("#"):
        raise ValueError(
            f"tint: {color!r} is a colour name; box plots and calibration diagrams mix their "
            "colour with white, so give it as '#rrggbb'"
        )
    rgb = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * amount):02x}" for c in rgb)


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Linear-interpolated percentile (numpy's default); None for no values; a NaN is a
    ``ValueError`` naming its position (sorted, it put the result anywhere)."""
    if not values:
        return None
    _check_no_nan(values, "percentile")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * pct / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _check_no_nan(values: Sequence[float], where: str, low: float | None = None) -> None:
    """``ValueError`` naming ``where`` and the position of a NaN (or a value under ``low``)."""
    try:  # C-speed sums first: a report may hold millions of latencies
        clean = not math.isnan(math.fsum(values)) and (low is None or min(values) >= low)
    except (TypeError, ValueError, OverflowError):  # text, inf - inf, a sum past floats
        clean = False
    if clean:
        return
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, Real):
            raise TypeError(f"{where}: value {i} must be a number, got {value!r}")
        if math.isnan(value) or (low is not None and value < low):
            raise ValueError(
                f"{where}: value {i} is {value!r}; expected a number"
                + ("" if low is None else f" >= {low:g}")
            )


def difference(value: float | None, reference: float | None) -> float | None:
    """``value - reference``; None when either is None or the difference overflows to infinity."""
    if value is None or reference is None:
        return None
    delta = value - reference
    return delta if math.isfinite(delta) else None


def _label_column(labels: Sequence[str]) -> int:
    """Width of a left label column that fits ``labels`` (at most ``LABEL_W``)."""
    longest = max(map(text_width, labels), default=0)
    return int(min(LABEL_W, max(110, longest + 26)))


def _nice_step(span: float, target: int = 5) -> float:
    raw = span / max(target, 1)
    power = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * power:
            return mult * power
    return 10 * power  # pragma: no cover


def metric_direction(metric: str) -> int:
    """+1 when higher is better, -1 when lower is, 0 when it depends (e.g. refusal_rate).

    A lower-is-better word counts whole (``eval_loss``, ``val_losses``; not ``glossary``).

    Example::

        metric_direction("eval_loss"), metric_direction("hybrid_ndcg@10")   # (-1, 1)
    """
    name = str(metric).lower()
    if _LOWER_WORDS.search(name):
        return -1
    return 1 if any(token in name for token in HIGHER_IS_BETTER) else 0


def _cut(text: Any, cap: int = MAX_LABEL_CHARS) -> str:
    """``text``, or its first ``cap`` characters and how many more there are.

    Example::

        _cut("x" * 2_005)[-21:]   # '… (5 more characters)'
    """
    text = str(text)
    return text if len(text) <= cap else f"{text[:cap]}… ({len(text) - cap:,} more characters)"


def _svg(width: float, height: float, title: str, body: list[str], css: str = "") -> str:
    title = _cut(title)
    return (
        f'<svg class="chart {css}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" role="img" aria-label="{_e(title)}">'
        f"<title>{_e(title)}</title>" + "".join(body) + "</svg>"
    )


def _left_out(count: int, cap: int, what: str) -> str:
    """A note part naming how many of ``count`` items a chart leaves out ("" when none)."""
    return "" if count <= cap else f"first {cap} of {count:,} {what} drawn"


def _with_note(title: str, body: list[str], height: float, notes: list[str]) -> tuple[str, float]:
    """Add the left-out notes under the chart (and to its title); return the title and height."""
    text = "; ".join(n for n in notes if n)
    if not text:
        return title, height
    body.append(f'<text class="note" x="8" y="{height + 6:.1f}">{_e(text)}</text>')
    return f"{title} ({text})", height + 18


def _legend(series: Sequence[Series], y: float, x0: float = LABEL_W) -> tuple[list[str], float]:
    """Legend swatches wrapped over lines from (x0, y); returns the marks and the next free y."""
    out, x = [], x0
    for s in series:
        text, fitted = fit_label(s.label, 260)
        w = 18 + text_width(text) + 18
        if x + w > WIDTH - 8 and x > x0:
            x, y = x0, y + 20
        out.append(
            f'<rect class="swatch" x="{x:.1f}" y="{y - 10:.1f}" width="12" height="12" rx="2" '
            f'fill="{s.color}"><title>{_e(_cut(s.label))}</title></rect>'
            f'<text class="legend" x="{x + 18:.1f}" y="{y:.1f}"{fitted}>{_e(text)}</text>'
        )
        x += w
    return out, y + 22


def metric_bars(
    series: Sequence[Series],
    metrics: Sequence[str],
    title: str,
    references: Sequence[int | None] | None = None,
) -> str:
    """Grouped horizontal bars on a 0-1 axis: one group per metric, one bar per system.

    Each bar carries its value; a series whose ``references[i]`` names another series
    (default: every series after the first against the first) also carries the
    difference to it, green when better and red when worse (grey when the metric's
    direction is not known, e.g. ``refusal_rate``). Missing / null values read "n/a".
    """
    notes = [
        _left_out(len(metrics), MAX_CHART_METRICS, "metrics"),
        _left_out(len(series), MAX_CHART_SERIES, "systems"),
    ]
    metrics, series = list(metrics)[:MAX_CHART_METRICS], list(series)[:MAX_CHART_SERIES]
    if references is None:
        references = [None] + [0] * (len(series) - 1)
    # a reference to a system not drawn compares with nothing
    references = [r if r is None or r < len(series) else None for r in references]
    bar_h, gap, group_gap = 16, 3, 16
    plot_x = _label_column(metrics)
    plot_w = WIDTH - plot_x - 130
    body, y = _legend(series, 22, plot_x)
    axis_y = y + 4
    top = axis_y + 8
    group_h = len(series) * (bar_h + gap) - gap
    height = top + len(metrics) * (group_h + group_gap) + 8
    for tick in range(6):
        x = plot_x + plot_w * tick / 5
        body.append(
            f'<line class="grid" x1="{x:.1f}" y1="{top - 4:.1f}" x2="{x:.1f}" '
            f'y2="{height - 8:.1f}"/><text class="axis" x="{x:.1f}" y="{axis_y:.1f}" '
            f'text-anchor="middle">{tick / 5:.1f}</text>'
        )
    for m_index, metric in enumerate(metrics):
        gy = top + m_index * (group_h + group_gap)
        text, fitted = fit_label(metric, plot_x - 16)
        body.append(
            f'<text class="label" x="{plot_x - 10}" y="{gy + group_h / 2 + 4:.1f}" '
            f'text-anchor="end"{fitted}>{_e(text)}<title>{_e(_cut(metric))}</title></text>'
        )
        for s_index, s in enumerate(series):
            ref = references[s_index]
            base = None if ref is None else series[ref].values.get(metric)
            value = _finite_value(s.values.get(metric))  # a NaN drew width="nan": n/a
            base = _finite_value(base)
            by = gy + s_index * (bar_h + gap)
            tip = f"{isolate_bidi(_cut(s.label))} — {isolate_bidi(_cut(metric))}: " + (
                "n/a" if value is None else f"{value:.3f}"
            )
            if value is None:
                body.append(
                    f'<text class="value muted" x="{plot_x + 4}" y="{by + 12:.1f}">n/a'
                    f"<title>{_e(tip)}</title></text>"
                )
                continue
            w = max(plot_w * min(max(value, 0.0), 1.0), 1.0)
            body.append(
                f'<rect x="{plot_x}" y="{by:.1f}" width="{w:.1f}" height="{bar_h}" rx="2" '
                f'fill="{s.color}"><title>{_e(tip)}</title></rect>'
            )
            label = f'<tspan class="value">{value:.3f}</tspan>'
            delta = difference(value, base)
            if delta is not None:
                sign = metric_direction(metric) * (1 if delta > 0 else -1 if delta < 0 else 0)
                css = {1: "good", -1: "bad"}.get(sign, "muted")
                label += f' <tspan class="delta {css}">{fixed(delta, sign=True)}</tspan>'
            body.append(f'<text x="{plot_x + w + 6:.1f}" y="{by + 12:.1f}">{label}</text>')
    title, height = _with_note(title, body, height, notes)
    return _svg(WIDTH, height, title, body, "bars")


def _finite_value(value: Any) -> float | None:
    """``value`` when it is a finite number, else None (shown "n/a")."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def _scale(lo: float, hi: float, x0: float, width: float, log: bool) -> Any:
    """Value -> x; values outside [lo, hi] sit at the nearest edge."""
    if log:
        a, b = math.log10(lo), math.log10(hi)
        return lambda v: x0 + width * (math.log10(min(max(v, lo), hi)) - a) / (b - a)
    return lambda v: x0 + width * (min(max(v, lo), hi) - lo) / (hi - lo)


def _log_steps(value: float) -> list[float]:
    power = 10 ** math.floor(math.log10(value))
    return [m * power for m in (0.5, 1, 2, 5, 10, 20)]


def _log_floor(value: float) -> float:
    """The largest 1 / 2 / 5 x 10^k at or below ``value``."""
    return max(v for v in _log_steps(value) if v <= value)


def _log_ceil(value: float) -> float:
    """The smallest 1 / 2 / 5 x 10^k at or above ``value``."""
    return min(v for v in _log_steps(value) if v >= value)


def _latency_ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        ticks = []
        for power in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
            ticks += [m * 10**power for m in (1, 2, 5) if lo <= m * 10**power <= hi]
        return ticks
    step = _nice_step(hi - lo)
    return [i * step for i in range(int(hi / step + 1e-9) + 1)]


def latency_boxes(series: Sequence[Series], title: str, max_dots: int = 400) -> str:
    """Box plots of per-query latencies (ms), one row per system, with p50 and p95 marked.

    Box: 25th-75th percentile; whiskers: min-max; thick line: p50; diamond: p95; dots:
    the individual queries (at most ``max_dots`` per system, evenly spaced in rank).
    A log axis is used when the slowest query is over 30x the fastest. At most
    :data:`MAX_CHART_SERIES` systems are drawn (a note counts the rest); ``max_dots`` is
    1 to :data:`MAX_LATENCY_DOTS`.
    """
    if not isinstance(max_dots, int) or isinstance(max_dots, bool):
        raise TypeError(f"latency_boxes: max_dots must be an int, not {type(max_dots).__name__}")
    if not 1 <= max_dots <= MAX_LATENCY_DOTS:
        raise ValueError(
            f"latency_boxes: max_dots={max_dots} is outside 1..{MAX_LATENCY_DOTS} (dots per "
            "system; the default 400 is what the report draws)"
        )
    rows = [s for s in series if s.values]
    notes = [_left_out(len(rows), MAX_CHART_SERIES, "systems")]
    rows = rows[:MAX_CHART_SERIES]
    for s in rows:  # a NaN drew x="nan"; a negative time is a clock error
        _check_no_nan(
            s.values, f"latency_boxes: series {_cut(s.label, MAX_ERROR_NAME_CHARS)!r}", low=0.0
        )
    row_h = 60
    plot_x, plot_w = 40, WIDTH - 80
    top, height = 24, 24 + max(len(rows), 1) * row_h + 40
    body: list[str] = []
    if not rows:
        body.append(f'<text class="muted" x="{plot_x}" y="40">no latencies recorded</text>')
        return _svg(WIDTH, 80, title, body, "latency")
    # the axis stops at MAX_AXIS_MS: a slower (absurd) value is drawn at its edge, not overflowed
    lo = min(min(min(s.values) for s in rows), MAX_AXIS_MS)
    hi = min(max(max(s.values) for s in rows), MAX_AXIS_MS)
    log = lo > 0 and hi / lo > 30 and hi >= 1e-3
    if log:  # at most six decades: faster queries sit at the left edge (a denormal broke it)
        lo, hi = _log_floor(max(lo, hi * 1e-6)), _log_ceil(hi)
    else:
        lo, hi = 0.0, max(hi, 1e-9) * 1.05
        step = _nice_step(hi)
        hi = math.ceil(hi / step) * step
    x_of = _scale(lo, hi, plot_x, plot_w, log)
    bottom = top + len(rows) * row_h
    ticks = _latency_ticks(lo, hi, log)
    widest = max((text_width(format_ms(t), 11) + 12 for t in ticks), default=0.0)
    if log and widest * len(ticks) > plot_w:  # 6 decades of "5000.00 s" labels overlapped
        ticks = [t for t in ticks if f"{t:.0e}".startswith("1")]  # powers of ten only
    for tick in ticks:
        x, label = x_of(tick), format_ms(tick)
        # a long label at the right edge ends there, not past the chart ("1000000.00 s")
        label_x, anchor = x, "middle"
        if x + text_width(label, 11) / 2 > WIDTH - 4:
            label_x, anchor = WIDTH - 4, "end"
        body.append(
            f'<line class="grid" x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{bottom:.1f}"/>'
            f'<text class="axis" x="{label_x:.1f}" y="{bottom + 16:.1f}" text-anchor="{anchor}">'
            f"{_e(label)}</text>"
        )
    axis_name = "milliseconds per query" + (" (log scale)" if log else "")
    body.append(
        f'<text class="axis-title" x="{plot_x + plot_w / 2:.1f}" y="{bottom + 34:.1f}" '
        f'text-anchor="middle">{axis_name}</text>'
    )
    for index, s in enumerate(rows):
        cy = top + index * row_h + 36
        values = sorted(s.values)
        q = {p: percentile(values, p) for p in (25, 50, 75, 95)}
        summary = f"p50 {format_ms(q[50])} · p95 {format_ms(q[95])} · n={len(values)}"
        text, fitted = fit_label(s.label, plot_w * 0.6)
        body.append(
            f'<text x="{plot_x}" y="{cy - 20:.1f}"><tspan class="label"{fitted}>'
            f"{_e(text)}</tspan>"
            f'<tspan class="note" dx="12">{_e(summary)}</tspan><title>{_e(_cut(s.label))}</title></text>'
        )
        stride = max(1, math.ceil(len(values) / max_dots))
        for rank, v in enumerate(values[::stride]):
            jitter = ((rank * 7919) % 13 - 6) * 1.1
            body.append(
                f'<circle class="dot" cx="{x_of(v):.1f}" cy="{cy + jitter:.1f}" r="2" '
                f'fill="{s.color}"/>'
            )
        x_min, x_max = x_of(values[0]), x_of(values[-1])
        x25, x50, x75, x95 = (x_of(q[p]) for p in (25, 50, 75, 95))
        tip = f"{isolate_bidi(_cut(s.label))}: {summary}, min {format_ms(values[0])}, max {format_ms(values[-1])}"
        body.append(
            f"<g><title>{_e(tip)}</title>"
            f'<line class="whisker" x1="{x_min:.1f}" y1="{cy:.1f}" x2="{x_max:.1f}" y2="{cy:.1f}"'
            f' stroke="{s.color}"/>'
            f'<rect x="{x25:.1f}" y="{cy - 9:.1f}" width="{max(x75 - x25, 1.5):.1f}" height="18" '
            f'rx="3" fill="{tint(s.color, 0.6)}" fill-opacity="0.75" stroke="{s.color}"/>'
            f'<line x1="{x50:.1f}" y1="{cy - 11:.1f}" x2="{x50:.1f}" y2="{cy + 11:.1f}" '
            f'stroke="{s.color}" stroke-width="3"/>'
            f'<path d="M{x95:.1f},{cy - 7:.1f} l6,7 l-6,7 l-6,-7 z" fill="{s.color}" '
            f'stroke="white" stroke-width="1"/></g>'
        )
    body.append(
        f'<text class="note" x="{WIDTH - 24}" y="{12}" text-anchor="end">box: p25–p75 · '
        "bar: p50 · ◆ p95 · whiskers: min–max · dots: queries</text>"
    )
    title, height = _with_note(title, body, height, notes)
    return _svg(WIDTH, height, title, body, "latency")


def calibration_diagram(
    bins: Sequence[Any],
    threshold: float | None,
    title: str,
    color: str = PALETTE[0],
    size: int = 340,
) -> str:
    """A reliability diagram of refusal probabilities.

    ``bins`` are ``CalibrationBin``s (``RefusalScores.reliability_bins``). Bars: the
    observed share of should-refuse questions per bin; dots: that share at the bin's
    mean predicted probability; dashed diagonal: perfect calibration; red line: the
    refusal threshold (refuse at or right of it). The strip below is the histogram of
    predicted probabilities, each bin labelled with its question count.
    """
    color = check_color(color, "calibration_diagram")
    bins = list(bins)
    if len(bins) > MAX_CALIBRATION_BINS:
        raise ValueError(
            f"calibration_diagram: {len(bins):,} bins; at most {MAX_CALIBRATION_BINS} can be "
            "drawn: pass reliability_bins(n) with a smaller n (the report uses 10)"
        )
    tint(color, 0.6)  # a colour name: the error now, not halfway through the chart
    left, top, strip = 56, 28, 54
    plot = size
    y0 = top + plot
    strip_top = y0 + 46
    width, height = left + plot + 16, strip_top + strip + 34
    body = [f'<rect class="frame" x="{left}" y="{top}" width="{plot}" height="{plot}"/>']
    for tick in range(6):
        v = tick / 5
        x, y = left + plot * v, y0 - plot * v
        body.append(
            f'<line class="grid" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{y0}"/>'
            f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + plot}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{x:.1f}" y="{y0 + 15}" text-anchor="middle">{v:.1f}</text>'
            f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.1f}</text>'
        )
    body.append(
        f'<text class="axis-title" x="{left + plot / 2}" y="{y0 + 32}" text-anchor="middle">'
        "predicted refusal probability</text>"
        f'<text class="axis-title" transform="rotate(-90 16 {top + plot / 2})" x="16" '
        f'y="{top + plot / 2}" text-anchor="middle">share that should be refused</text>'
    )
    points = []
    for b in bins:
        if not b.count:
            continue
        x, w = left + plot * b.lower, plot * (b.upper - b.lower)
        h = plot * b.refuse_share
        tip = (
            f"P(refusal) {b.lower:.1f}–{b.upper:.1f}: {b.count} questions, mean predicted "
            f"{b.mean_probability:.2f}, {b.refuse_share:.0%} should be refused"
        )
        body.append(
            f'<rect x="{x + 1:.1f}" y="{y0 - h:.1f}" width="{w - 2:.1f}" height="{h:.1f}" '
            f'fill="{tint(color, 0.6)}"><title>{_e(tip)}</title></rect>'
        )
        points.append((left + plot * b.mean_probability, y0 - h, tip))
    mid = left + plot * 0.75, top + plot * 0.25
    body.append(
        f'<line class="diagonal" x1="{left}" y1="{y0}" x2="{left + plot}" y2="{top}"/>'
        f'<text class="note" x="{mid[0] - 8:.1f}" y="{mid[1] - 8:.1f}" '
        f'transform="rotate(-45 {mid[0] - 8:.1f} {mid[1] - 8:.1f})" text-anchor="middle">'
        "perfectly calibrated</text>"
    )
    if points:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
        body.append(f'<polyline class="curve" points="{path}" stroke="{color}"/>')
        body += [
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="{color}" stroke="white" '
            f'stroke-width="1.5"><title>{_e(tip)}</title></circle>'
            for x, y, tip in points
        ]
    # the predicted-probability histogram, with counts
    biggest = max((b.count for b in bins), default=0) or 1
    base_y = strip_top + strip
    body.append(
        f'<line class="axis-line" x1="{left}" y1="{base_y}" x2="{left + plot}" y2="{base_y}"/>'
        f'<text class="note" x="{left - 6}" y="{strip_top + strip / 2 + 4}" '
        'text-anchor="end">n</text>'
    )
    for b in bins:
        if b.count:
            x, w = left + plot * b.lower, plot * (b.upper - b.lower)
            h = (strip - 14) * b.count / biggest
            body.append(
                f'<rect x="{x + 1:.1f}" y="{base_y - h:.1f}" width="{w - 2:.1f}" '
                f'height="{h:.1f}" fill="{color}" fill-opacity="0.6">'
                f"<title>{b.count} questions</title></rect>"
                f'<text class="count" x="{x + w / 2:.1f}" y="{base_y - h - 3:.1f}" '
                f'text-anchor="middle">{b.count}</text>'
            )
    body.append(
        f'<text class="note" x="{left + plot / 2}" y="{base_y + 16}" text-anchor="middle">'
        "questions per probability bin</text>"
    )
    if threshold is not None:
        x = left + plot * threshold
        anchor = "end" if threshold > 0.6 else "start"
        dx = -4 if threshold > 0.6 else 4
        body.append(
            f'<line class="threshold" x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{y0}"/>'
            f'<line class="threshold" x1="{x:.1f}" y1="{strip_top}" x2="{x:.1f}" y2="{base_y}"/>'
            f'<text class="threshold-label" x="{x + dx:.1f}" y="{top - 10}" '
            f'text-anchor="{anchor}">refusal threshold {threshold:.2f}</text>'
        )
    return _svg(width, height, title, body, "calibration")


def timing_bars(timings: Mapping[str, float], title: str, color: str = PALETTE[7]) -> str:
    """Horizontal bars of each pipeline step's wall time, in run order, with the total.

    More than :data:`MAX_SHOWN_STEPS` steps: the longest ones and one bar for the others
    (:func:`shown_steps`), so the total stays right.
    """
    color = check_color(color, "timing_bars")
    timings = shown_steps(timings)
    bar_h, gap = 18, 8
    for step, seconds in timings.items():  # a NaN drew width="nan"
        _check_no_nan([seconds], f"timing_bars: step {_cut(step, MAX_ERROR_NAME_CHARS)!r}", low=0.0)
    plot_x = _label_column(list(timings))
    plot_w = WIDTH - plot_x - 160
    total = sum(timings.values())
    biggest = max(timings.values(), default=0.0) or 1.0
    body = [f'<text class="note" x="{plot_x}" y="14">total {_e(format_seconds(total))}</text>']
    for index, (step, seconds) in enumerate(timings.items()):
        y = 26 + index * (bar_h + gap)
        w = max(plot_w * (seconds / biggest), 1.0)  # not plot_w * seconds: it can overflow
        share = ""
        if total and math.isfinite(total):
            share = " · <1%" if 0 < seconds / total < 0.005 else f" · {seconds / total:.0%}"
        text, fitted = fit_label(step, plot_x - 16)
        body.append(
            f'<text class="label" x="{plot_x - 10}" y="{y + 13}" text-anchor="end"{fitted}>'
            f"{_e(text)}<title>{_e(_cut(step))}</title></text>"
            f'<rect x="{plot_x}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="2" '
            f'fill="{color}"><title>{_e(_cut(step))}: {_e(format_seconds(seconds))}</title></rect>'
            f'<text class="value" x="{plot_x + w + 6:.1f}" y="{y + 13}">'
            f"{_e(format_seconds(seconds) + share)}</text>"
        )
    height = 26 + len(timings) * (bar_h + gap) + 4
    return _svg(WIDTH, height, title, body, "timings")


def shown_steps(timings: Mapping[str, float]) -> Mapping[str, float]:
    """The steps :func:`timing_bars` draws: all of them up to ``MAX_SHOWN_STEPS``, else the
    longest ones in run order and one bar for the others (so the total stays right).

    Example::

        shown_steps({f"step {i}": float(i) for i in range(1000)})   # 59 steps + "940 other steps"
    """
    if len(timings) <= MAX_SHOWN_STEPS:
        return timings
    longest = sorted(timings, key=timings.__getitem__, reverse=True)[: MAX_SHOWN_STEPS - 1]
    kept = set(longest)
    shown = {step: seconds for step, seconds in timings.items() if step in kept}
    others = len(timings) - len(shown)
    label = f"{others:,} other steps"
    while label in shown:  # a step of that very name
        label += " (together)"
    rest = sum(seconds for step, seconds in timings.items() if step not in kept)
    shown[label] = min(rest, sys.float_info.max)  # a bar of finite width, even past floats
    return shown
