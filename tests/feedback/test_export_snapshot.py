"""Each export reads one snapshot of the store: a writer committing while it runs never
gives an export whose records disagree (half of one batch, a rating without its record)."""

from __future__ import annotations

import threading

from fb_helpers import sources  # tests/feedback/fb_helpers.py

from llama_index_ragtune.feedback import FeedbackStore

EARLY, LATE = 1_000.0, 4_000_000_000.0  # created_at before / after every other record


def _pair(i: int) -> list[dict]:
    """Two upvoted answers written in one transaction: one sorts first, one last."""
    common = {"retrieved": sources("g1", "x"), "cited_node_ids": ["g1"], "rating": 1}
    return [
        {"query": f"early question {i}", "answer": "7 days [1].", "created_at": EARLY, **common},
        {"query": f"late question {i}", "answer": "7 days [1].", "created_at": LATE, **common},
    ]


def _filled_store(path) -> FeedbackStore:
    store = FeedbackStore(path)
    entries = [
        {"query": f"middle question {i}", "retrieved": sources("e1"), "answer": "14 days."}
        for i in range(1_600)  # several 500-record pages
    ]
    store.record_many(entries)
    store.record_many(_pair(10**6))  # so the first export has a positive
    return store


def _writer(path, stop: threading.Event, written: list[int]) -> None:
    with FeedbackStore(path) as store:  # its own connection, as another process has
        i = 0
        while not stop.is_set() and i < 300:
            store.record_many(_pair(i))  # one transaction: both or neither are committed
            written.append(i)
            i += 1


def _pairs_seen(queries) -> tuple[set[str], set[str]]:
    early = {q.rsplit(" ", 1)[1] for q in queries if q.startswith("early")}
    late = {q.rsplit(" ", 1)[1] for q in queries if q.startswith("late")}
    return early, late


def test_an_export_during_concurrent_writes_sees_each_write_whole(tmp_path):
    # The export read page by page, each page its own transaction: a pair committed between
    # two pages showed its late half (read last) without its early half (read first).
    path = tmp_path / "feedback.sqlite"
    store = _filled_store(path)
    stop, written = threading.Event(), []
    writer = threading.Thread(target=_writer, args=(path, stop, written))
    writer.start()
    try:
        exports = 0
        while exports < 3 or writer.is_alive():
            dataset = store.to_retrieval_dataset(negatives=False)
            early, late = _pairs_seen(dataset.queries.values())
            assert early == late, f"torn export: {sorted(late - early)[:5]} without their pair"
            pairs = store.to_preference_pairs()  # reads records and texts in one snapshot too
            assert len(pairs) == 0
            exports += 1
    finally:
        stop.set()
        writer.join()
    final, _ = _pairs_seen(store.to_retrieval_dataset(negatives=False).queries.values())
    assert len(final) == len(written) + 1  # nothing lost: the last export sees every pair
    store.close()


def test_a_snapshot_does_not_see_what_is_committed_after_it_began(tmp_path):
    path = tmp_path / "feedback.sqlite"
    store = _filled_store(path)
    other = FeedbackStore(path)
    with store.snapshot() as view:
        pages = view.records()
        first = next(pages)
        other.record_many(_pair(0))  # committed by another connection mid-read
        rid = first.id
        other.rate(rid, -1)
        rest = list(pages)
        assert view.get(rid).rating == first.rating == 1  # -1 came after the snapshot
        assert len(rest) + 1 == 1_602 and view.count() == 1_602
    assert store.count() == 1_604 and store.get(rid).rating == -1
    other.close()
    store.close()


def test_a_snapshot_of_an_in_memory_store_reads_it_and_nests():
    store = FeedbackStore(":memory:")
    store.record_many(_pair(0))
    with store.snapshot() as view, view.snapshot() as inner:
        assert inner.count() == 2 and len(list(view.records())) == 2
    store.record_many(_pair(1))  # the store is writable again after it
    assert store.count() == 4
