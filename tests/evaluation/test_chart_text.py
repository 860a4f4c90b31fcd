"""Label widths in the report's SVG charts: wide East Asian characters and emoji take two
glyph widths, combining marks and invisible characters none, so long labels are cut to the
room they have instead of running off the chart's left edge."""

import re

import pytest

from llama_index_ragtune.evaluation.chart_text import CHAR_W, fit_text, text_width
from llama_index_ragtune.evaluation.svg_charts import Series, metric_bars, timing_bars


def _glyph_count(text: str) -> int:
    return round(text_width(text) / CHAR_W)


def test_wide_characters_count_two_glyphs_and_invisible_ones_none():
    assert _glyph_count("recall@10") == 9
    assert _glyph_count("検索の精度") == 10  # CJK: wide
    assert _glyph_count("ＳＫＵ") == 6  # full-width Latin
    assert _glyph_count("😀🍎") == 4  # emoji: wide
    assert _glyph_count("cafe\u0301") == 4  # a combining accent adds no width
    assert _glyph_count("a\u200db\u2068c\u2069") == 3  # zero-width joiner, bidi isolate
    assert text_width("ab", size=24) == 2 * text_width("ab", size=12)


@pytest.mark.parametrize(
    "label",
    ["混合检索之后的归一化折损累计增益" * 3, "🍎" * 60, "ＡＢＣＤＥＦＧ" * 10, "electronics " * 20],
)
def test_a_cut_label_fits_its_room_and_keeps_its_start(label):
    for width in (60, 120, 234):
        cut = fit_text(label, width)
        assert cut.endswith("…") and label.startswith(cut[:-1])
        assert text_width(cut) <= max(width, 4 * CHAR_W)


def test_short_labels_and_short_wide_labels_are_not_cut():
    assert fit_text("ndcg@10", 100) == "ndcg@10"
    assert fit_text("検索", 100) == "検索"
    assert fit_text("e\u0301" * 20, 150) == "e\u0301" * 20  # 20 glyphs drawn, not 40


def _label_texts(svg: str) -> list[str]:
    return re.findall(r'<text class="label"[^>]*>([^<]*)<title>', svg)


def test_the_label_column_and_the_cut_follow_the_drawn_width():
    wide = ["検索の精度" * 6, "ndcg@10"]  # 30 CJK characters: 60 glyph widths
    svg = metric_bars([Series("after", "#2563eb", {m: 0.5 for m in wide})], wide, "t")
    first = _label_texts(svg)[0]
    assert first.endswith("…") and text_width(first) <= 250
    narrow = ["a" * 30, "ndcg@10"]  # the same length in Latin letters fits uncut
    assert _label_texts(metric_bars([Series("s", "#000000", {})], narrow, "t"))[0] == "a" * 30
    steps = timing_bars({"🍎" * 40: 3.0, "index": 1.0}, "timings")
    assert _label_texts(steps)[0].endswith("…")
