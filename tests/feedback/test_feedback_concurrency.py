"""Several writer processes at once, and writers SIGKILLed mid-write, on a real SQLite file."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time

import pytest
from fb_helpers import sources

from llama_index_ragtune.feedback import FeedbackStore

pytestmark = pytest.mark.skipif(os.name != "posix", reason="fork and SIGKILL are POSIX")
CTX = multiprocessing.get_context("fork")  # children reuse the parent's imports: fast
WRITERS, PER_WRITER = 4, 200


def _writer(path, worker, barrier, queue):
    store = FeedbackStore(path, timeout=60)
    barrier.wait()  # all writers start together
    ids = []
    for i in range(PER_WRITER):
        rid = store.record(
            f"worker {worker} question {i}",
            retrieved=sources("g1", "e1", "x"),
            cited_node_ids=["g1"],
            answer=f"answer {worker}-{i} [1]",
            latency_ms=float(i),
            metadata={"worker": worker, "i": i},
        )
        if i % 3 == 0:
            store.rate(rid, 1 if i % 2 else -1)
        if i % 5 == 0:
            store.click(rid, "e1")
        ids.append(rid)
    store.close()
    queue.put(ids)


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    path = tmp_path / "feedback.sqlite"
    FeedbackStore(path).close()
    barrier, queue = CTX.Barrier(WRITERS), CTX.Queue()
    procs = [CTX.Process(target=_writer, args=(path, w, barrier, queue)) for w in range(WRITERS)]
    for proc in procs:
        proc.start()
    written = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    ids = [rid for batch in written for rid in batch]
    assert len(ids) == len(set(ids)) == WRITERS * PER_WRITER
    with FeedbackStore(path) as store:
        records = {r.id: r for r in store}
        assert set(records) == set(ids)
        for record in records.values():  # every record arrived whole
            i = record.metadata["i"]
            assert record.retrieved_node_ids == ["g1", "e1", "x"]
            assert record.cited_node_ids == ("g1",)
            assert record.answer == f"answer {record.metadata['worker']}-{i} [1]"
            assert record.rating == ((1 if i % 2 else -1) if i % 3 == 0 else None)
            assert record.clicked_node_ids == (("e1",) if i % 5 == 0 else ())
        stats = store.stats()
        assert stats.clicks == WRITERS * len(range(0, PER_WRITER, 5))
        assert stats.node_versions == 3  # one stored text per node, shared by all writers
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_threads_share_one_store(tmp_path):
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    errors = []

    def work(t):
        try:
            for i in range(50):
                rid = store.record(f"thread {t} q{i}", retrieved=sources("g1"))
                store.rate(rid, 1)
                assert store.get(rid).rating == 1
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count(rating=1) == 200
    store.close()


def _steady_writer(path, committed):
    store = FeedbackStore(path)
    i = 0
    while True:
        store.record(f"q{i}", retrieved=sources("g1", "e1"), cited_node_ids=["e1"], answer="a")
        i += 1
        committed.value = i  # only after the commit returned


def test_writer_killed_between_commits_keeps_every_committed_record(tmp_path):
    path = tmp_path / "feedback.sqlite"
    committed = CTX.Value("i", 0)
    proc = CTX.Process(target=_steady_writer, args=(path, committed))
    proc.start()
    deadline = time.monotonic() + 60
    while committed.value < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    acknowledged = committed.value
    assert acknowledged >= 300
    with FeedbackStore(path) as store:
        # the kill may land between a commit and its acknowledgement: at most one more record
        assert acknowledged <= len(store) <= acknowledged + 1
        assert all(r.retrieved_node_ids == ["g1", "e1"] for r in store)
        store.record("after the crash")  # no lock was left behind
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def _batch_writer(path, in_batch):
    store = FeedbackStore(path)
    for i in range(100):
        store.record(f"committed {i}", retrieved=sources("g1"), rating=1, cited_node_ids=["g1"])

    def stall_inside_the_transaction():
        # Fault injection: SQLite calls this between VM steps of the batch's INSERTs, so
        # the process is frozen, and then killed, inside an open write transaction.
        in_batch.set()
        time.sleep(120)
        return 0

    store._conn.set_progress_handler(stall_inside_the_transaction, 5000)
    store.record_many(
        ({"query": f"batch {i}", "retrieved": sources("g1", "e1")} for i in range(5000)),
        batch_size=5000,
    )


def test_writer_killed_inside_a_long_batch_leaves_the_committed_records(tmp_path):
    path = tmp_path / "feedback.sqlite"
    in_batch = CTX.Event()
    proc = CTX.Process(target=_batch_writer, args=(path, in_batch))
    proc.start()
    assert in_batch.wait(timeout=60), "the writer never reached its batch"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    assert (tmp_path / "feedback.sqlite-wal").exists()  # the crash left a WAL to recover
    with FeedbackStore(path, timeout=5) as store:
        queries = [r.query for r in store]
        assert queries == [f"committed {i}" for i in range(100)]  # none of the batch
        assert store.count(rating=1) == 100
        store.record_many([{"query": "after the crash"}])
        assert len(store) == 101
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)
