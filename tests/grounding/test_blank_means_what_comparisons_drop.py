"""``grounding.is_blank`` and the comparisons of ``data`` share one set of invisible characters.

Was: ``is_blank`` kept its own list of categories, without the variation selectors that
``data.records.drop_invisible`` drops, so a question of only ``"\\ufe0f"`` was not blank
(loaded, asked, ranked) while every twin check read it as the empty question; and it
counted an unassigned code point as blank, which under Python 3.11 (Unicode 14) is what a
Unicode 15 emoji is.
"""

from __future__ import annotations

import sys
import unicodedata

import pytest

from llama_index_ragtune.data.records import drop_invisible, twin_key
from llama_index_ragtune.grounding import is_blank

VARIATION_SELECTORS = [*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)]


def test_every_character_a_comparison_drops_is_blank():
    dropped = [c for c in range(sys.maxunicode + 1) if drop_invisible(chr(c)) == ""]
    assert [f"U+{c:04X}" for c in dropped if not is_blank(chr(c))] == []
    assert is_blank("\ufe0f") and is_blank(" \ufe0e\U000e0100\u200d\n")
    assert twin_key("\ufe0f") == ""  # what made the two disagree: the empty question


def _noncharacter(code: int) -> bool:
    return 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE


def test_a_character_newer_than_pythons_unicode_tables_is_visible():
    """Was: blank, as unassigned (``Cn``): under Python 3.11 (Unicode 14) a question of one
    Unicode 15 emoji, U+1FAE8 SHAKING FACE, was refused as holding no visible character."""
    unknown = [c for c in range(0x1FA70, 0x1FB00) if unicodedata.category(chr(c)) == "Cn"]
    if not unknown:
        pytest.skip("every code point of the emoji block is known to this Python")
    assert not is_blank(chr(unknown[-1])) and not is_blank(f"{chr(unknown[-1])}?")
    assert is_blank("\uffff\ufdd0 \U0010fffe")  # noncharacters are never text


def test_only_variation_selectors_and_unassigned_characters_changed_blankness():
    before = {"Cc", "Cf", "Cs", "Cn", "Zs", "Zl", "Zp"}  # the categories is_blank used to read
    changed = [
        c
        for c in range(sys.maxunicode + 1)
        if is_blank(chr(c)) != (unicodedata.category(chr(c)) in before)
    ]
    unassigned = [
        c
        for c in range(sys.maxunicode + 1)
        if unicodedata.category(chr(c)) == "Cn" and not _noncharacter(c)
    ]
    assert changed == sorted(VARIATION_SELECTORS + unassigned)
    for text in ("a", "\U0001f355", "\u2764\ufe0f", "東京", "e\u0301", "?", "\u3164x"):
        assert not is_blank(text), ascii(text)


def test_a_long_text_of_invisible_characters_checks_each_distinct_character_once(monkeypatch):
    from llama_index_ragtune import _invisible

    seen = []
    check = _invisible._not_visible
    monkeypatch.setattr(_invisible, "_not_visible", lambda ch: seen.append(ch) or check(ch))
    assert _invisible.is_blank("\u200b \ufe0f" * 100_000)
    assert len(seen) <= 256 + 3  # the head, then each distinct character (was 300,000 checks)
