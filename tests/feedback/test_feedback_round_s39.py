"""Feedback stores, round 39: rows another tool wrote (text that is not UTF-8, ratings and
refusal flags past the columns' CHECK, citations of nodes that were no source, a blob record
id, questions with no visible character), pages of long answers, and engines whose answers
are no LlamaIndex response or carry sources the store cannot keep."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import tracemalloc
from typing import Any

import pytest
from fb_helpers import TEXTS, sources
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import Response
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from llama_index_ragtune.feedback import (
    FeedbackQueryEngine,
    FeedbackStore,
    FeedbackStoreError,
    reading,
)

EXPORT_LOG = "llama_index_ragtune.feedback.export"
SQL_LOG = "llama_index_ragtune.feedback.sql"


@pytest.fixture
def store(tmp_path):
    with FeedbackStore(tmp_path / "feedback.sqlite") as opened:
        yield opened


def _two_questions(store: FeedbackStore) -> tuple[str, str]:
    """An upvoted and a downvoted answer to one question, and an upvoted one to another:
    ``(id of the first, id of the last)``."""
    first = store.record(
        "apple return policy?", retrieved=sources("g1", "e1"), cited_node_ids=["g1"],
        answer="7 days [1].", rating=1,
    )  # fmt: skip
    store.record(
        "apple return policy?", retrieved=sources("g1", "e1"), cited_node_ids=["g1"],
        answer="no idea", rating=-1,
    )  # fmt: skip
    last = store.record(
        "laptop fee?", retrieved=sources("e2", "x"), cited_node_ids=["e2"], answer="15% [1].",
        rating=1,
    )  # fmt: skip
    return first, last


def _edit(store: FeedbackStore, *statements: str, ignore_checks: bool = False, **params) -> None:
    """Run SQL on the store's file as another tool would (its own connection)."""
    raw = sqlite3.connect(store.path)
    if ignore_checks:
        raw.execute("PRAGMA ignore_check_constraints=ON")
    for statement in statements:
        raw.execute(statement, params)
    raw.commit()
    raw.close()


# ------------------------------------------------------------ 1. text that is not UTF-8


@pytest.mark.parametrize(
    ("statement", "where"),
    [
        ("UPDATE records SET answer = CAST(x'a5a5ff' AS TEXT) WHERE id = :rid", "records.answer"),
        ("UPDATE records SET query = CAST(x'a5a5ff' AS TEXT) WHERE id = :rid", "records.query"),
        ("UPDATE cited SET node_id = CAST(x'ff41' AS TEXT) WHERE record_id = :rid", "cited.node_id"),
        ("UPDATE nodes SET embed_text = CAST(x'c328' AS TEXT) WHERE node_id = 'e2'", "nodes.embed_text"),
    ],
    ids=["answer", "query", "cited-id", "node-text"],
)  # fmt: skip
def test_text_that_is_not_utf8_names_its_row_and_the_sql_that_repairs_it(
    store, caplog, statement, where
):
    """Was: "<file> is damaged (Could not decode to UTF-8 column 'answer' ...)", naming neither
    the table nor the row, for every read of the store; and ``stats()`` a raw
    ``OperationalError`` ("user-defined function raised exception")."""
    _, rid = _two_questions(store)
    _edit(store, statement, rid=rid)
    with pytest.raises(FeedbackStoreError, match=r"feedback.sqlite is damaged.*decode") as raised:
        store.to_retrieval_dataset()
    message = str(raised.value)
    owner = "node 'e2'" if where.startswith("nodes") else f"record '{rid}'"
    assert f"{where} of {owner}" in message and "not UTF-8" in message
    repair = message[message.index("UPDATE ") :]
    assert store.stats().records == 3  # counts need no text: no OperationalError

    _edit(store, repair)  # the message's own SQL keeps the bytes, as a blob
    with caplog.at_level(logging.WARNING):
        dataset = store.to_retrieval_dataset()
        records = list(store.records())
    assert len(records) == 3 and len(dataset.queries) == 2 - (where == "cited.node_id")
    assert where in caplog.text and "blob" in caplog.text
    raw = sqlite3.connect(store.path)
    table, column = where.split(".")
    kept = f"SELECT count(*) FROM {table} WHERE typeof({column}) = 'blob'"
    assert raw.execute(kept).fetchone() == (1,)  # the bytes are kept, not replaced
    raw.close()


# ------------------------------------------------- 2. values past the columns' CHECK


@pytest.mark.parametrize("value", [5, "'good'", 0.5, 0], ids=["5", "text", "half", "zero"])
def test_a_rating_past_the_columns_check_is_read_as_unrated_with_a_warning(store, caplog, value):
    """Was: ``record.rating == 5`` and ``KeyError: 5`` from ``to_preference_pairs()``."""
    good, bad = _two_questions(store)
    _edit(
        store,
        f"UPDATE records SET rating = {value} WHERE id = :rid",
        "UPDATE records SET refused = 'yes' WHERE id = :good",
        ignore_checks=True,
        rid=bad,
        good=good,
    )
    with caplog.at_level(logging.WARNING, logger=SQL_LOG):
        record, first = store.get(bad), store.get(good)
        pairs = store.to_preference_pairs()
        dataset = store.to_retrieval_dataset()
    assert record.rating is None and first.refused is False
    assert len(pairs) == 1 and list(dataset.relevant_docs.values()) == [["g1"]]
    assert f"record {bad!r}" in caplog.text and "records.rating" in caplog.text
    assert f"record {good!r}" in caplog.text and "records.refused" in caplog.text
    stats = store.stats()
    assert stats.refused == 0 and stats.upvoted == 1 and stats.unrated == 1
    assert [r.id for r in store.records(rating="unrated")] == [bad]


# -------------------------------------- 3. citations and clicks of nodes that were no source


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE cited SET node_id = 'w' WHERE record_id = :rid",
        "UPDATE cited SET node_id = 5 WHERE record_id = :rid",
        "UPDATE cited SET node_id = x'00ff' WHERE record_id = :rid",
        "INSERT INTO clicks (record_id, node_id, clicked_at) VALUES (:rid, 'zzz', 1.0)",
    ],
    ids=["cited-other-node", "cited-integer", "cited-blob", "clicked-unknown"],
)
def test_citations_and_clicks_of_nodes_that_were_no_source_are_left_out(store, caplog, statement):
    """``record`` refuses them; another tool's rows made every export a ``DataError``
    ("positives reference doc ids missing from the corpus: 'w'") for the whole store."""
    _, rid = _two_questions(store)
    _edit(store, statement, rid=rid)
    with caplog.at_level(logging.WARNING, logger=SQL_LOG):
        record = store.get(rid)
        dataset = store.to_retrieval_dataset()
        pairs = store.to_preference_pairs()
    assert set(record.cited_node_ids) | set(record.clicked_node_ids) <= {"e2", "x"}
    assert "e2" in record.retrieved_node_ids and len(pairs) == 1
    assert all(d in dataset.corpus for docs in dataset.relevant_docs.values() for d in docs)
    assert f"record {rid!r}" in caplog.text and "not among its retrieved nodes" in caplog.text


def test_a_record_id_stored_as_a_blob_is_read_as_text(store):
    """Was: ``FeedbackRecord.id`` a ``bytes`` object, and ``to_dict()`` not JSON."""
    _, rid = _two_questions(store)
    _edit(
        store,
        "PRAGMA foreign_keys=OFF",
        "UPDATE records SET id = CAST(id AS BLOB) WHERE id = :rid",
        rid=rid,
    )
    ids = [record.id for record in store.records()]
    assert rid in ids and all(isinstance(i, str) for i in ids)
    json.dumps([record.to_dict() for record in store.records()])


# ------------------------------------------- 4. questions with no visible character


def test_questions_without_a_visible_character_are_not_trained_on(store, caplog):
    """Stored before ``record`` refused them (round 38) or by another tool: they merged into
    one training question "\\ufeff " with the positives of both (was)."""
    first, last = _two_questions(store)
    _edit(
        store,
        "UPDATE records SET query = char(8206) WHERE id = :last",
        "UPDATE records SET query = char(65279) || ' ' WHERE id = :first",
        first=first,
        last=last,
    )
    store.record(
        "apple return policy?", retrieved=sources("g1", "e1"), cited_node_ids=["g1"],
        answer="Within a week [1].", rating=1,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger=EXPORT_LOG):
        dataset = store.to_retrieval_dataset()
        pairs = store.to_preference_pairs()
    assert list(dataset.queries.values()) == ["apple return policy?"]
    assert list(dataset.relevant_docs.values()) == [["g1"]]  # not e2 of the blank question
    assert len(pairs) == 1 and pairs[0]["chosen"][0]["content"] == "Within a week [1]."
    assert "2 record(s)" in caplog.text and first in caplog.text and last in caplog.text
    assert len(store) == 4  # nothing deleted: the export only leaves them out


# --------------------------------------------------------------- 5. long answers


def test_a_page_of_long_answers_holds_a_bounded_amount_of_text(store, monkeypatch):
    """Was: 500 records a page whatever their size: 500 answers of 10 MB, 5 GB at once."""
    monkeypatch.setattr(reading, "_PAGE_CHARS", 1 << 20)
    store.record_many(
        {"query": f"q{i}?", "retrieved": sources("g1"), "answer": "y" * 300_000, "rating": 1}
        for i in range(20)
    )
    pages: list[int] = []
    build = reading.build_records

    def counting(conn, rows):
        pages.append(sum(len(row[3] or "") for row in rows))
        return build(conn, rows)

    monkeypatch.setattr(reading, "build_records", counting)
    assert [r.query for r in store.records()] == [f"q{i}?" for i in range(20)]  # all, in order
    assert sum(pages) == 20 * 300_000 and max(pages) <= (1 << 20) + 300_000


def test_preference_pairs_hold_each_answer_by_a_digest_not_its_text(store, monkeypatch):
    """Was: every distinct answer's text (and its normalised copy) kept to the end."""
    monkeypatch.setattr(reading, "_PAGE_CHARS", 1 << 20)
    answer_chars = 200_000
    store.record_many(
        {
            "query": "apple return policy?",
            "retrieved": sources("g1"),
            "answer": f"{i} " + "y" * answer_chars,
            "rating": 1 if i % 2 else -1,
        }
        for i in range(60)
    )
    import datasets  # noqa: F401 - imported before measuring

    tracemalloc.start()
    try:
        pairs = store.to_preference_pairs(max_pairs_per_group=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(pairs) == 1 and pairs[0]["chosen"][0]["content"].startswith("1 y")
    assert pairs[0]["rejected"][0]["content"].startswith("0 y")
    assert peak < 60 * answer_chars / 2  # was over 60 answers' worth (12 MB, twice)


# ------------------------------------------------------------------- 6. the recorder


class Returns(BaseQueryEngine):
    """A query engine whose ``query`` (core's instrumentation bypassed, as an engine that
    overrides it does) answers with whatever ``make(query_bundle)`` gives."""

    def __init__(self, make) -> None:
        self.make = make
        super().__init__(None)

    def _get_prompt_modules(self) -> dict[str, Any]:
        return {}

    def query(self, str_or_query_bundle):
        return self.make(str_or_query_bundle)

    async def aquery(self, str_or_query_bundle):
        return self.make(str_or_query_bundle)

    def _query(self, query_bundle: QueryBundle) -> Any:
        return self.make(query_bundle)

    async def _aquery(self, query_bundle: QueryBundle) -> Any:
        return self.make(query_bundle)


def test_an_engine_giving_no_llamaindex_response_is_not_broken_by_the_wrapper(store):
    """Was: ``AttributeError: 'dict' object has no attribute 'metadata'`` after the engine
    answered, and a str or ``None`` failed core's own check of the wrapper's result (a
    pydantic ``ValidationError`` about ``QueryEndEvent``): the wrapper broke an engine that
    works unwrapped."""
    plain = {"response": "7 days"}
    engine = FeedbackQueryEngine(Returns(lambda qb: plain), store)
    with pytest.warns(UserWarning, match=r"not recorded.*returned dict"):
        assert engine.query("apple?") is plain
    with pytest.warns(UserWarning, match="not a LlamaIndex response"):
        assert asyncio.run(engine.aquery("apple?")) is plain
    assert len(store) == 0
    for answer in ("7 days.", None):
        engine = FeedbackQueryEngine(Returns(lambda qb, a=answer: a), store)
        with pytest.warns(UserWarning, match=f"returned {type(answer).__name__}"):
            response = engine.query("apple?")
        with pytest.warns(UserWarning, match=f"returned {type(answer).__name__}"):
            later = asyncio.run(engine.aquery("apple?"))
        for got in (response, later):
            assert isinstance(got, Response) and got.response == answer
            assert store.get(got.metadata["feedback_id"]).answer == answer
    assert len(store) == 4


def _no_id(text: str) -> NodeWithScore:
    return NodeWithScore.model_construct(node=TextNode.model_construct(id_=None, text=text))


@pytest.mark.parametrize(
    "odd",
    [
        NodeWithScore(node=TextNode(id_="", text="a node with an empty id")),
        _no_id("a node with no id"),
        "a source that is no node",
    ],
    ids=["empty-id", "no-id", "not-a-node"],
)
def test_a_source_the_store_cannot_keep_is_left_out_and_the_answer_recorded(store, caplog, odd):
    """Was: the whole answer unrecorded ("retrieved[0].node_id must be a non-empty string"),
    ``feedback_id=None``, so the user's rating was lost too."""
    g1, e1 = sources("g1", "e1")

    def answer(qb):
        return Response("7 days [2].", [odd, g1, e1], {"cited_node_ids": ["g1"]})

    engine = FeedbackQueryEngine(Returns(answer), store)
    with pytest.warns(UserWarning, match=r"source_nodes\[0\] cannot be recorded"):
        up = engine.query("apple return policy?")
    with pytest.warns(UserWarning, match=r"source_nodes\[0\] cannot be recorded"):
        down = asyncio.run(engine.aquery("apple return policy?"))
    with pytest.warns(UserWarning, match=r"source_nodes\[0\] cannot be recorded"):
        direct = store.record_response("apple return policy?", answer(None), metadata={"a": 1})
    for response in (up, down):
        record = store.get(response.metadata["feedback_id"])
        assert record.retrieved_node_ids == ["g1", "e1"] and record.cited_node_ids == ("g1",)
        assert record.answer == "7 days [2]." and record.metadata == {"sources_left_out": [1]}
    assert store.get(direct).metadata == {"a": 1, "sources_left_out": [1]}
    store.rate(up.metadata["feedback_id"], 1)
    store.rate(down.metadata["feedback_id"], -1)
    store.record(
        "apple return policy?", retrieved=[g1, e1], answer="no idea", rating=-1
    )  # a whole answer with the same sources: still no pair with the renumbered one
    dataset = store.to_retrieval_dataset()
    assert list(dataset.relevant_docs.values()) == [["g1"]]
    assert TEXTS["g1"] in dataset.corpus["g1"]
    with caplog.at_level(logging.WARNING, logger=EXPORT_LOG):
        assert len(store.to_preference_pairs()) == 0  # its [2] named another source
    assert "2 rated answer(s) left out" in caplog.text and "sources_left_out" in caplog.text


def _steps_to_read_all(store: FeedbackStore, records: int, **filters) -> int:
    """SQLite virtual-machine steps (counted in hundreds) that ``records()`` takes to read a
    store of ``records`` records, 100 to a page."""
    store.record_many(
        {"query": f"q{i}?", "bundle_version": "v1" if i % 2 else "v2", "created_at": 1e9 + i}
        for i in range(records)
    )
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    store._conn.set_progress_handler(count, 100)
    try:
        assert sum(1 for _ in store.records(**filters)) == records // (1 + bool(filters))
    finally:
        store._conn.set_progress_handler(None, 0)
    return steps[0]


@pytest.mark.parametrize("filters", [{}, {"bundle_version": "v1"}], ids=["all", "one-bundle"])
def test_reading_every_page_takes_steps_linear_in_the_store(tmp_path, monkeypatch, filters):
    """Was: each page's "created_at > ? OR (...)" scanned the time index from the first record
    (and a ``bundle_version`` filter sorted all the bundle's records for each page): 80 ms a
    page at the end of 200,000 records against 2 ms at the start, quadratic in all."""
    monkeypatch.setattr(reading, "_CHUNK", 100)
    with FeedbackStore(tmp_path / "small.sqlite") as small:
        few = _steps_to_read_all(small, 1000, **filters)
    with FeedbackStore(tmp_path / "large.sqlite") as large:
        many = _steps_to_read_all(large, 4000, **filters)
    assert many < 4 * few * 1.25  # 4 times the records; quadratic paging took 8 to 12 times
