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
    "fit_text",
    "format_ms",
    "format_seconds",
    "isolate_bidi",
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
    """``value`` HTML-escaped, as a bidi isolate when it could reorder what follows it.

    Example::

        escape_text("<b>R&D</b>")   # '&lt;b&gt;R&amp;D&lt;/b&gt;'
    """
    return escape(isolate_bidi(value), quote=True)


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


def fit_text(text: str, width: float, size: float = 12) -> str:
    """``text`` cut with an ellipsis to about ``width`` pixels (at least 4 glyphs kept).

    Example::

        fit_text("electronics · after tuning", 80)   # 'electronic…'
    """
    room = max(4, int(width / (CHAR_W * size / 12)))
    if sum(map(_glyphs, text)) <= room:
        return text
    used = 0
    for end, ch in enumerate(text):
        used += _glyphs(ch)
        if used > room - 1:
            return text[:end] + "…"
    return text  # pragma: no cover - the sum above said it does not fit


def format_ms(ms: float | None) -> str:
    """``"840 ms"``, ``"1.24 s"``, ``"—"`` for None (or a value that is not finite)."""
    if ms is None or not math.isfinite(ms):
        return "—"
    if ms == 0:
        return "0 ms"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def format_seconds(seconds: float) -> str:
    """``"0.4 s"``, ``"12.3 s"``, ``"2 min 05 s"``, ``"1 h 02 min"``; ``"—"`` if not finite."""
    if not math.isfinite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
