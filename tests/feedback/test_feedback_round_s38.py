"""Feedback stores, round 38: strict JSON from ``to_dict``, out-of-range latencies another
tool stored, questions with no visible character."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest
from fb_helpers import sources
from llama_index.core.schema import NodeWithScore, TextNode

from llama_index_ragtune.feedback import FeedbackStore


def strict_dumps(value) -> str:
    """``json.dumps`` refusing NaN / Infinity, as JavaScript's and jq's readers would."""
    return json.dumps(value, allow_nan=False)


@pytest.fixture
def store(tmp_path):
    with FeedbackStore(tmp_path / "feedback.db") as opened:
        yield opened


def test_to_dict_writes_infinite_scores_as_null_like_nan_ones(store):
    """A +inf score became ``Infinity`` in ``to_dict()`` (a token most JSON readers refuse)
    while a NaN one was None."""
    retrieved = [
        NodeWithScore(node=TextNode(id_="a", text="A"), score=float("inf")),
        NodeWithScore(node=TextNode(id_="b", text="B"), score=float("-inf")),
        NodeWithScore(node=TextNode(id_="c", text="C"), score=float("nan")),
        NodeWithScore(node=TextNode(id_="d", text="D"), score=0.5),
    ]
    rid = store.record("q", retrieved=retrieved, answer="x", latency_ms=3.0)
    record = store.get(rid)
    assert [n.score for n in record.retrieved][:2] == [float("inf"), float("-inf")]  # kept here
    data = json.loads(strict_dumps(record.to_dict()))
    assert [n["score"] for n in data["retrieved"]] == [None, None, None, 0.5]


def test_numbers_another_tool_stored_stay_strict_json_and_out_of_the_stats(store, caplog):
    """A NaN in the metadata and an infinite or negative latency another tool wrote made
    ``to_dict`` emit ``NaN`` / ``Infinity`` and the latency percentiles NaN."""
    ids = [store.record("q", retrieved=sources("g1"), latency_ms=ms) for ms in (10.0, 20.0, 30.0)]
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "UPDATE records SET latency_ms = ?, metadata = ? WHERE id = ?",
            (float("inf"), '{"x": NaN}', ids[0]),
        )
        conn.execute("UPDATE records SET latency_ms = -5 WHERE id = ?", (ids[1],))
    conn.close()
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.feedback.sql"):
        first, second = store.get(ids[0]), store.get(ids[1])
        stats = store.stats()
    assert first.latency_ms is None and second.latency_ms is None
    assert ids[0] in caplog.text and "records.latency_ms" in caplog.text
    assert json.loads(strict_dumps(first.to_dict()))["metadata"] == {"x": None}
    assert stats.latency_p50_ms == stats.latency_p95_ms == 30.0
    strict_dumps(stats.to_dict())


@pytest.mark.parametrize("query", ["\u200e", "\x00", "\ufeff", "\x00 \u200b\t"])
def test_a_question_with_no_visible_character_is_refused_and_nothing_stored(store, query):
    """Such a question was stored, then became a training question of the next refresh (a
    question file refuses it: ``_invisible.is_blank``)."""
    with pytest.raises(ValueError, match="query must be a non-empty string with a visible"):
        store.record(query, retrieved=sources("g1"), answer="x")
    with pytest.raises(ValueError, match=r"entry 0: query must be a non-empty string with a"):
        store.record_many([{"query": query}])
    assert len(store) == 0


def test_a_nul_inside_a_question_is_kept_as_given(store):
    rid = store.record("how\x00 do I return apples", retrieved=sources("g1"), answer="a\x00b")
    record = store.get(rid)
    assert (record.query, record.answer) == ("how\x00 do I return apples", "a\x00b")
