"""Round s45: exports of a store holding many node texts look each text up, not scan for it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fb_helpers import sources
from llama_index.core.schema import NodeWithScore, TextNode

from llama_index_ragtune.feedback import FeedbackStore


def _nodes(count: int) -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(id_=f"n{i}", text=f"text of node {i}"), score=0.5)
        for i in range(count)
    ]


def _steps_for_texts(path: Path, nodes: int, wanted: int) -> tuple[int, dict]:
    """SQLite steps (progress-handler calls) to read ``wanted`` texts from a store of ``nodes``."""
    with FeedbackStore(path) as store:
        rid = store.record("what is in the index?", retrieved=_nodes(nodes), answer="a", rating=1)
        keys = [(s.node_id, s.text_hash) for s in store.get(rid).retrieved[:wanted]]
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        store._conn.set_progress_handler(count, 100)
        try:
            texts = store.node_texts(keys)
        finally:
            store._conn.set_progress_handler(None, 0)
    return steps[0], texts


def test_reading_some_node_texts_does_not_scan_the_whole_nodes_table(tmp_path):
    """Was: ``(node_id, text_hash) IN (VALUES ...)`` scanned every stored node for each 500
    keys, so an export of a store of 80,000 node versions spent 1.3 s on 160 scans
    (quadratic in the store); now each key is one primary-key lookup."""
    few, texts = _steps_for_texts(tmp_path / "small.sqlite", 500, 50)
    many, large_texts = _steps_for_texts(tmp_path / "large.sqlite", 8000, 50)
    assert texts == large_texts
    assert len(texts) == 50
    assert all(text == f"text of node {node_id[1:]}" for (node_id, _), text in texts.items())
    assert many < 2 * few  # 16 times the nodes; the scan took over 10 times the steps


def test_an_export_reads_the_texts_of_every_labelled_node_of_a_large_record(tmp_path):
    with FeedbackStore(tmp_path / "fb.sqlite") as store:
        store.record("which node?", retrieved=_nodes(1200), cited_node_ids=["n3"], answer="a",
                     rating=1, refused=True)  # fmt: skip
        dataset = store.to_retrieval_dataset(metadata_mode="none")
    (qid,) = dataset.relevant_docs
    assert dataset.relevant_docs[qid] == ["n3"]
    assert len(dataset.negatives[qid]) == 1199  # every other source, across three chunks
    assert dataset.corpus["n1199"] == "text of node 1199"
    assert len(dataset.corpus) == 1200


# ----------------------------------------------------------- one row longer than SQLite stores
LIMIT = 100_000  # SQLITE_LIMIT_LENGTH lowered on the store's own connection (1e9 by default)


@pytest.fixture
def limited(tmp_path):
    if not hasattr(sqlite3.Connection, "setlimit"):  # Python 3.11+
        pytest.skip("sqlite3.Connection.setlimit needs Python 3.11")
    with FeedbackStore(tmp_path / "fb.sqlite") as store:
        store.record("kept before", answer="ok")
        store._conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, LIMIT)
        yield store


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"answer": "x" * (LIMIT + 1)}, r"answer is 100,001 bytes"),
        ({"answer": "é" * (LIMIT // 2 + 1)}, r"answer is 100,002 bytes as UTF-8"),
        ({"metadata": {"trace": "x" * LIMIT}}, r"metadata \(as JSON\) is"),
        (
            {
                "retrieved": sources("g1")
                + [NodeWithScore(node=TextNode(id_="big", text="y" * LIMIT))]
            },
            r"retrieved\[1\] text (as embedded )?is 100,000 bytes as UTF-8 \(200,0\d\d with",
        ),
    ],
    ids=["answer", "answer-multibyte", "metadata", "source-text"],
)
def test_a_value_longer_than_sqlite_stores_is_named_and_nothing_is_stored(
    limited, arguments, named
):
    """Was: ``sqlite3.DataError: string or blob too big``, naming neither the value nor the
    limit (1,000,000,000 bytes by default: a 1 GB answer or source text)."""
    with pytest.raises(ValueError, match=named) as caught:
        limited.record("too long?", **arguments)
    assert f"over the {LIMIT:,} bytes SQLite stores in one row" in str(caught.value)
    assert "nothing of this record was stored" in str(caught.value)
    assert [r.query for r in limited.records()] == ["kept before"]
    with pytest.raises(KeyError):  # a source before the long one was rolled back too
        limited.node_text("g1")
    limited.record("still writable", answer="y" * (LIMIT // 2))  # the store goes on
    assert len(limited) == 2


def test_record_many_names_the_oversized_value_and_keeps_the_batches_before(limited):
    entries = [{"query": f"q{i}", "answer": "fine"} for i in range(4)]
    entries[3]["answer"] = "z" * (LIMIT + 5)
    with pytest.raises(ValueError, match=r"entries 0-1 are stored.*rolled back") as caught:
        limited.record_many(entries, batch_size=2)
    assert "answer is 100,005 bytes" in str(caught.value)
    assert sorted(r.query for r in limited.records()) == ["kept before", "q0", "q1"]
