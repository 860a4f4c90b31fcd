"""Hostile argument values and bad rows already in a file: clear errors, never a poisoned store."""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timezone

import pytest
from fb_helpers import sources
from llama_index.core.schema import NodeWithScore, TextNode

from llama_index_ragtune.feedback import FeedbackQueryEngine, FeedbackStore


@pytest.fixture
def store(tmp_path):
    with FeedbackStore(tmp_path / "feedback.sqlite") as s:
        yield s


def _good(store):
    rid = store.record("apple return policy?", retrieved=sources("g1", "e1"), answer="7 days [1].")
    store.rate(rid, 1)
    store.click(rid, "g1")
    return rid


def _node_with_metadata(metadata):
    """A node whose metadata skipped validation (a custom node type, say)."""
    node = TextNode(id_="n", text="t")
    node.__dict__["metadata"] = metadata  # pydantic would refuse it; other node types may not
    return node


def _reads(store):
    """Every read path; each must still work."""
    return (
        list(store.records()),
        store.stats(),
        store.to_retrieval_dataset(),
        store.to_evaluation_set(eval_fraction=1.0),
        store.to_preference_pairs(),
    )


@pytest.mark.parametrize(
    "created_at",
    [1e300, -1e20, 253402300800, -62135596801, 10**400, datetime(1, 1, 1), datetime.max],
)
def test_out_of_range_created_at_is_refused_before_anything_is_written(store, created_at):
    _good(store)
    with pytest.raises(ValueError, match="created_at"):
        store.record("bad", created_at=created_at)
    with pytest.raises(ValueError, match=r"entry 1: created_at"):
        store.record_many([{"query": "fine"}, {"query": "bad", "created_at": created_at}])
    records, stats, train, held_out, pairs = _reads(store)
    assert [r.query for r in records] == ["apple return policy?", "fine"]
    assert stats.records == 2 and len(train.queries) == 1 and len(held_out.queries) == 1


def test_the_edges_of_the_time_range_are_stored_and_read_back(store):
    first = datetime(1, 1, 1, tzinfo=timezone.utc)
    last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    store.record("first", created_at=first)
    store.record("last", created_at=last)
    assert [r.created_at for r in store.records()] == [first, last]
    assert store.stats().first == first and store.stats().last == last
    assert [r.query for r in store.records(since=-1e300, until=1e300)] == ["first", "last"]


@pytest.mark.parametrize(
    ("column", "bad", "read_as"),
    [
        ("created_at", 1e300, datetime.max.replace(tzinfo=timezone.utc)),
        ("created_at", -1e20, datetime.min.replace(tzinfo=timezone.utc)),
        ("created_at", "not a time", datetime.min.replace(tzinfo=timezone.utc)),
        ("created_at", "2024-05-01T12:00:00", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
        ("rated_at", 9e18, datetime.max.replace(tzinfo=timezone.utc)),
    ],
)
def test_one_bad_time_in_the_file_does_not_poison_any_read(store, caplog, column, bad, read_as):
    good = _good(store)
    poisoned = store.record(
        "warranty?", retrieved=sources("w"), cited_node_ids=["w"], answer="Two years [1].", rating=1
    )
    with sqlite3.connect(store.path) as conn:  # another tool, or an older version, wrote it
        conn.execute(f"UPDATE records SET {column} = ? WHERE id = ?", (bad, poisoned))
    conn.close()
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.feedback.sql"):
        records, stats, train, _, _ = _reads(store)
        record = store.get(poisoned)
    assert getattr(record, column) == read_as
    assert {r.id for r in records} == {good, poisoned} and stats.records == 2
    assert len(train.queries) == 2  # the bad row's labels still count
    assert store.get(good).created_at.year > 2000
    if not (isinstance(bad, str) and bad.startswith("2024")):  # ISO 8601 text reads as is
        assert poisoned in caplog.text and column in caplog.text  # says which row to fix
    with sqlite3.connect(store.path) as conn:  # and the stored value is left as it was
        assert (
            conn.execute(f"SELECT {column} FROM records WHERE id = ?", (poisoned,)).fetchone()[0]
            == bad
        )
    conn.close()


def test_bad_scores_latencies_and_metadata_in_the_file_are_read_leniently(store, caplog):
    rid = store.record("q", retrieved=sources("g1"), latency_ms=5.0, metadata={"a": 1})
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "UPDATE records SET latency_ms = 'slow', metadata = '{oops' WHERE id = ?", (rid,)
        )
        conn.execute("UPDATE retrieved SET score = 'high' WHERE record_id = ?", (rid,))
    conn.close()
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.feedback.sql"):
        record = store.get(rid)
        stats = store.stats()
    assert record.latency_ms is None and record.metadata == {}
    assert record.retrieved[0].score is None
    assert stats.latency_p50_ms is None and stats.records == 1
    assert rid in caplog.text


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda s: s.rate("\udc80", 1), ValueError, "record_id is not valid Unicode"),
        (lambda s: s.click("\udc80", "g1"), ValueError, "record_id is not valid Unicode"),
        (lambda s: s.get("\udc80"), ValueError, "record_id is not valid Unicode"),
        (lambda s: s.rate(None, 1), TypeError, "record_id is None"),
        (lambda s: s.get(5), TypeError, "record_id must be a string"),
        (lambda s: s.node_text("\udc80"), ValueError, "node_id is not valid Unicode"),
        (lambda s: s.node_text("g1", 5), TypeError, "text_hash must be a string"),
        (lambda s: s.node_texts(["g1"]), TypeError, r"keys\[0\] must be a \(node_id, text_hash\)"),
        (lambda s: s.node_texts([("g1", "\udc80")]), ValueError, r"keys\[0\]\[1\]"),
        (lambda s: s.count(bundle_version="\udc80"), ValueError, "bundle_version is not valid"),
        (lambda s: s.count(bundle_version=5), TypeError, "bundle_version must be a string"),
        (lambda s: s.count(since=datetime(1, 1, 1)), ValueError, "since"),
        (lambda s: s.count(until=10**400), ValueError, "until"),
        (lambda s: s.record("q", latency_ms=10**400), ValueError, "latency_ms must be a finite"),
        (lambda s: s.record("q", created_at=10**400), ValueError, "created_at must be a time"),
        (
            lambda s: s.record(
                "q",
                retrieved=[
                    NodeWithScore.model_construct(node=TextNode(id_="n", text="t"), score="abc")
                ],
            ),
            TypeError,
            r"retrieved\[0\]\.score must be a number",
        ),
        (
            lambda s: s.record(
                "q",
                retrieved=[
                    NodeWithScore.model_construct(node=TextNode(id_="n", text="t"), score=[1])
                ],
            ),
            ValueError,
            r"retrieved\[0\]\.score must be a number",
        ),
        (
            lambda s: s.record(
                "q",
                retrieved=[
                    NodeWithScore(node=TextNode(id_="n", text="t", metadata={"src": "\udc80"}))
                ],
            ),
            ValueError,
            r"retrieved\[0\]\.metadata\['src'\] is not valid Unicode",
        ),
        (
            lambda s: s.record(
                "q",
                retrieved=[NodeWithScore(node=_node_with_metadata({1: "a", "b": 2}))],
            ),
            ValueError,
            r"retrieved\[0\]\.metadata must be JSON-serialisable",
        ),
        (lambda s: s.to_retrieval_dataset(eval_fraction="abc"), ValueError, "eval_fraction"),
        (lambda s: s.to_retrieval_dataset(eval_fraction=None), ValueError, "eval_fraction"),
        (lambda s: s.to_retrieval_dataset(seed="1"), TypeError, "seed must be an integer"),
        (
            lambda s: s.to_retrieval_dataset(query_metadata_keys="store"),
            TypeError,
            "query_metadata_keys",
        ),
        (
            lambda s: s.to_retrieval_dataset(query_metadata_keys=[5]),
            TypeError,
            r"query_metadata_keys\[0\]",
        ),
        (lambda s: s.to_preference_pairs(max_source_chars="100"), ValueError, "max_source_chars"),
        (lambda s: s.to_preference_pairs(refusal=None), TypeError, "refusal"),
    ],
)
def test_bad_arguments_get_an_error_naming_them_and_nothing_is_written(store, call, error, match):
    rid = _good(store)
    with pytest.raises(error, match=match):
        call(store)
    assert len(store) == 1 and store.get(rid).rating == 1 and store.stats().clicks == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"path": None}, TypeError, "path must be a file path"),
        ({"path": 5}, TypeError, "path must be a file path"),
        ({"path": b"feedback.sqlite"}, TypeError, "path must be a file path"),
        ({"path": "a\0b.sqlite"}, ValueError, "path .* contains a NUL"),
        ({"path": ""}, ValueError, "path must not be empty"),
        ({"synchronous": 1}, TypeError, "synchronous must be 'NORMAL' or 'FULL'"),
        ({"synchronous": "OFF"}, ValueError, "synchronous must be 'NORMAL'"),
        ({"timeout": float("inf")}, ValueError, "timeout"),
        ({"timeout": True}, ValueError, "timeout"),
    ],
)
def test_bad_store_arguments_are_named_and_no_file_is_made(
    tmp_path, monkeypatch, kwargs, error, match
):
    monkeypatch.chdir(tmp_path)
    kwargs = {"path": tmp_path / "feedback.sqlite", **kwargs}
    with pytest.raises(error, match=match):
        FeedbackStore(**kwargs)
    assert list(tmp_path.iterdir()) == []


def test_the_recording_engine_checks_its_metadata_and_bundle_version(tmp_path):
    from llama_index.core import SummaryIndex
    from llama_index.core.llms import MockLLM

    engine = SummaryIndex([TextNode(id_="g1", text="Apples: 7 days.")]).as_query_engine(
        llm=MockLLM()
    )
    with FeedbackStore(tmp_path / "f.sqlite") as store:
        with pytest.raises(ValueError, match="bundle_version is not valid Unicode"):
            FeedbackQueryEngine(engine, store, bundle_version="v\udc80")
        with pytest.raises(TypeError, match="metadata must be a dict"):
            FeedbackQueryEngine(engine, store, metadata="abc")
        with pytest.raises(TypeError, match="path must be a file path"):
            FeedbackQueryEngine(engine, 5)
        assert len(store) == 0
