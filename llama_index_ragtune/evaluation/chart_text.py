"""Text in the report's charts: escaping, bidi isolation, widths, cutting and number formats.

SVG text does not wrap or measure itself, so the charts estimate how wide a label is
drawn: a Latin letter counts one glyph width (``CHAR_W`` at 12 px), a wide or full-width
East Asian character or an emoji two, and a combining mark or an invisible format
character (zero-width joiner, bidi control) nothing. Labels are cut to the room they
have with an ellipsis; the full text stays in the mark's ``<title>`` tooltip.

Example::

    from llama_index_ragtune.evaluation.chart_text import fit_text, text_width

    text_width("hybrid") < text_width("混合检索")     # True: 6 vs 8 glyph widths
    fit_text("混合检索 · 微调之后", 60)              # '混合检…'
"""

from __future__ import annotations

import math
import unicodedata
from html import escape
from typing import Any

__all__ = [
    "CHAR_W",
    "escape_text",
    "drawn_text",
    "fit_label",
    "fit_text",
    "fixed",
    "format_ms",
    "format_seconds",
    "isolate_bidi",
    "printable_text",
    "text_width",
]

CHAR_W = 7.2  # a generous glyph width at 12 px (bold, wide fonts), for layout and truncation

# Bidi classes that can reorder the text around a string: right-to-left letters and the
# explicit embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069).
_BIDI_CLASSES = frozenset(
    {"R", "AL", "RLE", "RLO", "LRE", "LRO", "PDF", "RLI", "LRI", "FSI", "PDI"}
)
_FSI, _PDI, _ISOLATE_OPENERS = "\u2068", "\u2069", frozenset("\u2066\u2067\u2068")


def isolate_bidi(text: Any) -> str:
    """``text`` as a bidi isolate (U+2068 ... U+2069) when it holds right-to-left letters or
    bidi controls, so it cannot reorder the text after it; other text unchanged.

    A name holding U+202E (right-to-left override) otherwise reversed the rest of its line
    in the report ("on 2 held-out questions" read "gsnoitseuq tuo-dleh 2 no"). Isolates
    the text leaves open are closed, and a stray U+2069 that would close the wrapper
    early is dropped.

    Example::

        isolate_bidi("hybrid"), isolate_bidi("a\\u202eb")   # ('hybrid', '\\u2068a\\u202eb\\u2069')
    """
    text = str(text)
    if not any(unicodedata.bidirectional(ch) in _BIDI_CLASSES for ch in text):
        return text
    kept, depth = [], 0
    for ch in text:
        if ch in _ISOLATE_OPENERS:
            depth += 1
        elif ch == _PDI:
            if not depth:
                continue  # would match the wrapper's U+2068 and end the isolate early
            depth -= 1
        kept.append(ch)
    return _FSI + "".join(kept) + _PDI * (depth + 1)


def escape_text(value: Any) -> str:
    """``value`` HTML-escaped, as a bidi isolate when it could reorder what follows it,
    control characters shown as U+FFFD (see ``printable_text``).

    Example::

        escape_text("<b>R&D</b>")   # '&lt;b&gt;R&amp;D&lt;/b&gt;'
    """
    return escape(isolate_bidi(printable_text(str(value))), quote=True)


def _glyphs(ch: str) -> int:
    """How many Latin glyph widths ``ch`` takes: 0 (combining, invisible), 1 or 2 (wide)."""
    if ch.isascii():
        return 1 if ch.isprintable() else 0
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf", "Cc"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def text_width(text: str, size: float = 12) -> float:
    """About how many pixels ``text`` takes at ``size`` px (generous, never less).

    Example::

        text_width("ab"), text_width("検索"), text_width("e\\u0301")   # (14.4, 28.8, 7.2)
    """
    return sum(map(_glyphs, text)) * CHAR_W * size / 12


_KEPT_CONTROLS = frozenset("\t\n\r\f")  # the control characters HTML counts as white space


def printable_text(text: str) -> str:
    """``text`` with every control character but tab, line feed, carriage return and form
    feed as U+FFFD (the replacement character).

    A NUL, ESC or BEL from the JSON reached the page (HTML forbids them; the parser drops
    a NUL) and ``report.md``, where ``cat`` ran its escape sequences in the terminal
    (cleared the screen, set the window title).

    Example::

        printable_text("v2\\x1b[2J\\nok")   # 'v2\\ufffd[2J\\nok'
    """
    if text.isprintable() or not any(
        ch not in _KEPT_CONTROLS and unicodedata.category(ch) == "Cc" for ch in text
    ):
        return text
    return "".join(
        "\ufffd" if ch not in _KEPT_CONTROLS and unicodedata.category(ch) == "Cc" else ch
        for ch in text
    )


def drawn_text(text: str) -> str:
    """``text`` as a chart draws it: ``printable_text``, with a line break or tab as a space.

    Counting control characters as no width let a name with hundreds of line breaks (or
    NULs, drawn as boxes) run across the chart.

    Example::

        drawn_text("hybrid\\nafter\\x00")   # 'hybrid after\\ufffd'
    """
    return printable_text(text).translate(_AS_SPACE)


_AS_SPACE = str.maketrans(dict.fromkeys(_KEPT_CONTROLS, " "))


def fit_text(text: str, width: float, size: float = 12) -> str:
    """``text`` as drawn (see ``drawn_text``) cut with an ellipsis to about ``width`` pixels
    (at least 4 glyphs kept).

    Example::

        fit_text("electronics · after tuning", 80)   # 'electronic…'
    """
    text = drawn_text(text)
    room = max(4, int(width / (CHAR_W * size / 12)))
    if sum(map(_glyphs, text)) <= room:
        return text
    used = 0
    for end, ch in enumerate(text):
        used += _glyphs(ch)
        if used > room - 1:
            return text[:end] + "…"
    return text  # pragma: no cover - the sum above said it does not fit


def fit_label(text: str, width: float, size: float = 12) -> tuple[str, str]:
    """``(label, attributes)`` of an SVG text in ``width`` pixels: ``fit_text``'s cut, and
    for a label over half the room a ``textLength`` of its estimated width.

    The estimate holds for an average font; where the page's font is wider (bold DejaVu
    Sans, Linux's default, draws ``a`` 8.1 px and ``m`` 12.5 px wide, not ``CHAR_W``), the
    browser squeezes a long label into its room instead of drawing it past the chart's
    edge. A short label keeps its font's own width: even twice as wide, it fits.

    Example::

        fit_label("ndcg@10", 200)        # ('ndcg@10', '')
        fit_label("x" * 40, 200)[1]      # ' textLength="194.4" lengthAdjust="spacingAndGlyphs"'
    """
    label = fit_text(text, width, size)
    estimate = text_width(label, size)
    if estimate <= width / 2:
        return label, ""
    return label, f' textLength="{estimate:.1f}" lengthAdjust="spacingAndGlyphs"'


LARGE = 1e15
"""From this magnitude on, numbers are written in scientific notation: ``1.000e+300``, not
the 301 digits of fixed-point (a custom metric, margin or latency of 1e300 was written out
whole in table cells, the page and ``report.md``)."""


def fixed(value: float, digits: int = 3, sign: bool = False) -> str:
    """``value`` with ``digits`` decimals (``+`` shown when ``sign``); at or above ``LARGE``
    in magnitude, in scientific notation.

    Example::

        fixed(0.7123), fixed(-0.01, sign=True), fixed(1e300)   # ('0.712', '-0.010', '1.000e+300')
    """
    kind = "e" if math.isfinite(value) and abs(value) >= LARGE else "f"
    return format(value, f"{'+' if sign else ''}.{digits}{kind}")


def format_ms(ms: float | None) -> str:
    """``"840 ms"``, ``"1.24 s"``, ``"—"`` for None (or a value that is not finite)."""
    if ms is None or not math.isfinite(ms):
        return "—"
    if ms == 0:
        return "0 ms"
    if ms >= 1000:
        return f"{fixed(ms / 1000, 2)} s"
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def format_seconds(seconds: float) -> str:
    """``"0.4 s"``, ``"12.3 s"``, ``"2 min 05 s"``, ``"1 h 02 min"``; ``"—"`` if not finite;
    ``"2.778e+296 h"`` for an absurd time."""
    if not math.isfinite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds >= LARGE:
        return f"{fixed(seconds / 3600)} h"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
