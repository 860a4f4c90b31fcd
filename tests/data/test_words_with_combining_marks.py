"""Texts compare word by word with their combining marks (Devanagari and Tamil vowel signs,
viramas): two questions that differ only in a vowel sign are two questions, not twins."""

from __future__ import annotations

import json
import re

import pytest
from llama_index.core.schema import TextNode

from llama_index_ragtune._words import words
from llama_index_ragtune.data.records import normalize_text, stable_query_id, twin_key
from llama_index_ragtune.data.splitting import twin_groups
from llama_index_ragtune.grounding.quotes import check_quotes, normalize_quote
from llama_index_ragtune.pipeline.queries import load_queries

DAY, ALMS = "दिन", "दान"  # Hindi "day" and "donation": one vowel sign apart


def test_words_keep_vowel_signs_and_viramas():
    assert words("हिन्दी, please!") == ["हिन्दी", "please"]
    assert words("தமிழ் நாடு") == ["தமிழ்", "நாடு"]
    # before: re.findall(r"\w+") gave ['द', 'न'] for both words
    assert normalize_text(DAY) != normalize_text(ALMS)
    assert twin_key(f"{DAY} की कीमत?") != twin_key(f"{ALMS} की कीमत?")
    assert stable_query_id(DAY) != stable_query_id(ALMS)


def test_text_without_marks_reads_as_before():
    for text in ("What is X?", "snake_case and 2² x", "a\u00a0b\tc\nd", "e.g. 14-day (opened)"):
        assert words(text) == re.findall(r"\w+", text)
    assert twin_key("What is X?") == twin_key("what  is x")
    # a mark with no letter before it is dropped like punctuation
    assert words("\u0301abc \u0301") == ["abc"]


def test_dotted_capital_i_is_a_twin_of_i():
    assert twin_key("İstanbul store hours") == twin_key("istanbul store hours")
    assert twin_key("ISTANBUL STORE HOURS") == twin_key("İstanbul store hours")


def test_questions_a_vowel_sign_apart_are_not_twins():
    groups = twin_groups(
        {"q1": f"{DAY} की कीमत?", "q2": f"{ALMS} की कीमत?", "q3": f"{DAY} की  कीमत"}
    )
    assert groups == [["q1", "q3"], ["q2"]]


def test_quote_with_another_vowel_sign_is_not_verbatim():
    assert normalize_quote("हिन्दी") == "हिन्दी"
    source = [f"दुकान हर {DAY} खुली है।"]
    exact = check_quotes(f'[1]: "दुकान हर {DAY} खुली"', source)[0]
    # before: both normalised to "द क न हर द न ख ल", an exact match
    other = check_quotes(f'[1]: "दुकान हर {ALMS} खुली"', source)[0]
    assert exact.match == "exact"
    assert other.match != "exact"


def test_labelled_queries_a_vowel_sign_apart_may_sit_in_different_splits(tmp_path):
    nodes = [TextNode(id_="doc#0", text=f"{DAY} {ALMS}")]
    rows = [
        {"id": "a", "question": f"{DAY} क्या है?", "gold": ["doc#0"], "split": "train"},
        {"id": "b", "question": f"{ALMS} क्या है?", "gold": ["doc#0"], "split": "test"},
    ]
    path = tmp_path / "queries.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    # before: "its twin on line 1 (same text up to case, spacing and punctuation) is in 'train'"
    loaded = load_queries(path, nodes)
    assert [(q.id, q.split) for q in loaded] == [("a", "train"), ("b", "test")]


def test_true_twins_in_different_splits_are_still_refused(tmp_path):
    from llama_index_ragtune.data.errors import DataError

    nodes = [TextNode(id_="doc#0", text=DAY)]
    rows = [
        {"id": "a", "question": f"{DAY} क्या है?", "gold": ["doc#0"], "split": "train"},
        {"id": "b", "question": f"{DAY}  क्या है", "gold": ["doc#0"], "split": "test"},
    ]
    path = tmp_path / "queries.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    with pytest.raises(DataError, match="twin"):
        load_queries(path, nodes)
