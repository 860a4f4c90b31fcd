"""Round s43: a feedback store's file changed by another program (triggers, constraints,
locks), special files at its path, labels that look alike, node texts gone at export."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
import unicodedata
from pathlib import Path

import pytest
from fb_helpers import sources

from llama_index_ragtune.feedback import FeedbackStore, FeedbackStoreError


def _store(path: Path) -> Path:
    with FeedbackStore(path) as store:
        store.record("apple returns?", retrieved=sources("g1", "g2"), cited_node_ids=["g1"],
                     answer="7 days [1].", rating=1)  # fmt: skip
    return path


def _rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id, query, rating FROM records ORDER BY query").fetchall()


# --------------------------------------------------------------- schema another program changed
def test_a_trigger_planted_on_the_stores_tables_is_refused_before_any_write(tmp_path):
    path = _store(tmp_path / "fb.sqlite")
    with sqlite3.connect(path) as conn:  # it deleted every new record: silently lost
        conn.execute(
            "CREATE TRIGGER eat AFTER INSERT ON records BEGIN "
            "DELETE FROM records WHERE id = new.id; END"
        )
    before = _rows(path)
    with pytest.raises(
        FeedbackStoreError, match=r"trigger\(s\) 'eat' on records.*DROP TRIGGER \"eat\""
    ):
        FeedbackStore(path)
    assert _rows(path) == before
    with FeedbackStore(path, read_only=True) as reader:  # reading runs no trigger
        assert [r.query for r in reader.records()] == ["apple returns?"]
    with sqlite3.connect(path) as conn:
        conn.execute('DROP TRIGGER "eat"')
    with FeedbackStore(path) as store:
        store.record("second?", answer="b")
        assert len(store) == 2


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("CREATE UNIQUE INDEX one_per_question ON records (query_norm)",
         "UNIQUE constraint failed: records.query_norm"),
        ("ALTER TABLE records ADD COLUMN tenant TEXT CHECK (coalesce(tenant, '') != '' OR rating IS 1)",
         "CHECK constraint failed"),
        ("CREATE UNIQUE INDEX one_node_text ON nodes (node_id)",
         "UNIQUE constraint failed: nodes.node_id"),
    ],
)  # fmt: skip
def test_a_rule_another_program_added_is_named_not_called_a_duplicate_id(tmp_path, change, reason):
    path = _store(tmp_path / "fb.sqlite")
    with sqlite3.connect(path) as conn:
        conn.execute(change)
    before = _rows(path)
    changed = {"g1": "Apples: 10 days now."}
    with FeedbackStore(path) as store:
        with pytest.raises(FeedbackStoreError, match=rf"{reason}.*another program changed") as err:
            store.record("apple returns?", retrieved=sources("g1", texts=changed), answer="b",
                         record_id="new-id")  # fmt: skip
        assert "already in" not in str(err.value)  # was: "record id 'new-id' is already in"
        with pytest.raises(FeedbackStoreError, match="record_many: .*nothing is stored"):
            store.record_many(
                [{"query": "apple returns?", "retrieved": sources("g1", texts=changed)}]
            )
    assert _rows(path) == before  # nothing of the failed writes stored


def test_a_true_duplicate_record_id_is_still_said_as_such(tmp_path):
    with FeedbackStore(tmp_path / "fb.sqlite") as store:
        store.record("q", record_id="fixed")
        with pytest.raises(ValueError, match="'fixed' is already in") as err:
            store.record("q", record_id="fixed")
        assert not isinstance(err.value, FeedbackStoreError)


# --------------------------------------------------------------------------------- locks
def _exclusive(path: Path) -> sqlite3.Connection:
    """Another program holding the whole file (a rollback journal, an exclusive transaction)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=DELETE")
    return conn


def test_reads_under_another_programs_lock_end_in_a_timeout_error_naming_the_file(tmp_path):
    path = _store(tmp_path / "fb.sqlite")
    holder = _exclusive(path)
    reader = FeedbackStore(path, timeout=0.3, read_only=True)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        for read in (len, lambda s: list(s.records()), lambda s: s.stats(),
                     lambda s: s.to_retrieval_dataset()):  # fmt: skip
            started = time.monotonic()
            with pytest.raises(TimeoutError, match=rf"{path.name} stayed locked.*timeout="):
                read(reader)
            assert time.monotonic() - started < 5
        with pytest.raises(TimeoutError, match="while opening it"):
            FeedbackStore(path, timeout=0.3, read_only=True)
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert len(reader) == 1  # the lock gone, the same store reads again
    reader.close()


def test_opening_under_an_exclusive_lock_waits_one_timeout_not_two(tmp_path):
    path = _store(tmp_path / "fb.sqlite")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO ragtune_meta VALUES ('other', 'x')")
    try:
        for read_only in (False, True):
            started = time.monotonic()
            with pytest.raises(TimeoutError, match=r"stayed locked .* 0\.4 s while opening it"):
                FeedbackStore(path, timeout=0.4, read_only=read_only)
            assert time.monotonic() - started < 0.75  # was 2 x timeout (and raw for read_only)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# ------------------------------------------------------------------- special files as the path
def _open_in_thread(path: Path, **kwargs) -> BaseException | None:
    """Open the store in a thread; a hang (a FIFO opened for reading) fails, not blocks."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            FeedbackStore(path, timeout=1, **kwargs).close()
            result.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # unblock the open() before failing
        with open(os.path.realpath(path), "wb"):
            pass
        thread.join(5)
        pytest.fail(f"opening {path} hung")
    return result[0]


@pytest.mark.parametrize("read_only", [False, True])
def test_a_named_pipe_device_or_socket_as_the_path_is_named_without_blocking(tmp_path, read_only):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "fb.sqlite"
    link.symlink_to(fifo)  # read_only=True blocked for ever on it
    error = _open_in_thread(link, read_only=read_only)
    assert isinstance(error, FeedbackStoreError)
    assert "is a named pipe (FIFO) (through the symbolic link" in str(error)
    os.mkfifo(tmp_path / "direct.sqlite")
    error = _open_in_thread(tmp_path / "direct.sqlite", read_only=read_only)
    assert "is a named pipe (FIFO), not a regular file" in str(error)
    made_in_dev = [Path(f"{os.devnull}{suffix}") for suffix in ("-journal", "-wal", "-shm")]
    existed = [side.exists() for side in made_in_dev]
    null = tmp_path / "null.sqlite"
    null.symlink_to(os.devnull)  # was "disk I/O error ... check the disk"
    error = _open_in_thread(null, read_only=read_only)
    assert isinstance(error, FeedbackStoreError) and "is a character device" in str(error)
    sock_path = tmp_path / "s.sqlite"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        error = _open_in_thread(sock_path, read_only=read_only)
    assert isinstance(error, FeedbackStoreError) and "is a socket" in str(error)
    # SQLite, run as root, had written /dev/null-journal through the link
    assert [side.exists() for side in made_in_dev] == existed


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_a_side_file_that_is_a_symbolic_link_is_named_and_its_target_untouched(tmp_path, suffix):
    path = _store(tmp_path / "fb.sqlite")
    victim = tmp_path / "precious.txt"
    victim.write_text("precious\n" * 100)
    Path(f"{path}{suffix}").symlink_to(victim)
    for read_only in (False, True):  # was "cannot be opened ... make them writable"
        with pytest.raises(
            FeedbackStoreError, match=rf"fb\.sqlite{suffix} is a symbolic link .*precious\.txt"
        ):
            FeedbackStore(path, read_only=read_only)
    assert victim.read_text() == "precious\n" * 100
    Path(f"{path}{suffix}").unlink()
    assert len(FeedbackStore(path)) == 1


def test_a_looping_link_and_a_file_as_the_folder_are_named(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    for read_only in (False, True):  # were "cannot be opened ... writable" / "does not exist"
        with pytest.raises(FeedbackStoreError, match="is a symbolic link that loops"):
            FeedbackStore(tmp_path / "a", read_only=read_only)
        with pytest.raises(FeedbackStoreError, match="goes through a folder link that loops"):
            FeedbackStore(tmp_path / "a" / "fb.sqlite", read_only=read_only)
    (tmp_path / "plain").write_text("x")
    with pytest.raises(FileNotFoundError, match="the folder .*plain is a file, not a folder"):
        FeedbackStore(tmp_path / "plain" / "fb.sqlite")
    assert (tmp_path / "plain").read_text() == "x"


# ------------------------------------------------------------------------------ labels
@pytest.mark.parametrize(
    "label", ["v1\u200b", "\ufeffv1", "v\u202e1", "v1\u2028", "v\u2029x", "v1\u2060"]
)
def test_a_bundle_label_with_an_invisible_or_separating_character_is_refused(tmp_path, label):
    with FeedbackStore(tmp_path / "fb.sqlite") as store:
        with pytest.raises(ValueError, match="bundle_version .*(invisible format|separator)"):
            store.record("q", bundle_version=label)
        assert len(store) == 0


def test_a_decomposed_bundle_label_is_stored_composed_and_found_by_either_form(tmp_path):
    composed, decomposed = "v\u00e9", "ve\u0301"
    with FeedbackStore(tmp_path / "fb.sqlite") as store:
        store.record("q1", bundle_version=decomposed)
        store.record("q2", bundle_version=composed)
        assert store.stats().bundle_versions == {composed: 2}  # was two labels that look alike
        assert store.count(bundle_version=decomposed) == store.count(bundle_version=composed) == 2
    with sqlite3.connect(tmp_path / "fb.sqlite") as conn:  # another tool's decomposed label
        conn.execute("UPDATE records SET bundle_version = ? WHERE query = 'q1'", (decomposed,))
    with FeedbackStore(tmp_path / "fb.sqlite") as store:
        assert store.count(bundle_version=decomposed) == 2
        assert unicodedata.is_normalized(
            "NFC", store.get(store.record("q3", bundle_version=decomposed)).bundle_version
        )


# ------------------------------------------------------------------ exports, texts gone
def test_labelled_nodes_whose_texts_are_gone_are_left_out_with_a_warning(tmp_path, caplog):
    path = tmp_path / "fb.sqlite"
    with FeedbackStore(path) as store:
        store.record("apple returns?", retrieved=sources("g1", "g2"), cited_node_ids=["g1"],
                     answer="7 days [1].", rating=1, bundle_version="old")  # fmt: skip
        store.record("laptop fee?", retrieved=sources("e2", "x", "w"), cited_node_ids=["e2"],
                     answer="15% [1].", rating=-1)  # fmt: skip
        store.record("laptop fee?", retrieved=sources("e2"), cited_node_ids=["e2"],
                     answer="15% [1].", rating=1)  # fmt: skip
    with sqlite3.connect(path) as conn:  # another tool pruned node rows
        conn.execute("DELETE FROM nodes WHERE node_id IN ('g1', 'x')")
    with FeedbackStore(path) as store, caplog.at_level(logging.WARNING):
        data = store.to_retrieval_dataset()  # was a DataError for the whole dataset
        assert list(data.relevant_docs.values()) == [["e2"]]
        assert [n.doc_id for negs in data.negatives.values() for n in negs] == ["w"]
        assert "'g1'" in caplog.text and "'x'" in caplog.text and "corpus=" in caplog.text
        assert data.metadata["queries_without_positive"] == 1
        kept = store.to_retrieval_dataset(corpus={"g1": "Apples: 7 days.", "x": "Ships in 2 days."})
        assert sorted(map(tuple, kept.relevant_docs.values())) == [("e2",), ("g1",)]
        with pytest.raises(
            ValueError, match="have no text.*pass the current index's nodes as corpus="
        ):
            store.to_retrieval_dataset(bundle_version="old")  # the question of g1 alone


def test_a_records_table_rebuilt_without_rowid_is_refused_when_opened(tmp_path):
    path = _store(tmp_path / "fb.sqlite")
    columns = (
        "id TEXT PRIMARY KEY, created_at REAL NOT NULL, query TEXT NOT NULL, query_norm TEXT "
        "NOT NULL, answer TEXT, refused INTEGER NOT NULL DEFAULT 0, rating INTEGER, rated_at "
        "REAL, latency_ms REAL, bundle_version TEXT, metadata TEXT NOT NULL DEFAULT '{}'"
    )
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "PRAGMA foreign_keys=OFF; CREATE TABLE copy AS SELECT * FROM records; "
            f"DROP TABLE records; CREATE TABLE records ({columns}) WITHOUT ROWID; "
            "INSERT INTO records SELECT * FROM copy; DROP TABLE copy;"
        )
    before = _rows(path)
    for read_only in (False, True):  # every read was a raw "no such column: rowid"
        with pytest.raises(FeedbackStoreError, match="table records has no rowid.*WITHOUT ROWID"):
            FeedbackStore(path, read_only=read_only)
    assert _rows(path) == before


def test_another_programs_rows_in_ragtune_meta_are_not_read_at_every_open(tmp_path):
    import tracemalloc

    path = _store(tmp_path / "fb.sqlite")
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO ragtune_meta (key, value) VALUES (?, ?)",
            ((f"other-{i}", "x" * 10_000) for i in range(2_000)),
        )
    tracemalloc.start()
    try:
        with FeedbackStore(path) as store, store.snapshot() as view:
            assert view.count() == 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # was the whole table, 20 MB, read at each open and snapshot


# ------------------------------------------------------------------ streams not read yet
def test_record_response_refuses_a_stream_whose_text_is_not_there_yet(tmp_path):
    from llama_index.core.base.response.schema import StreamingResponse

    def tokens():
        yield "7 days"
        yield " [1]."

    with FeedbackStore(tmp_path / "fb.sqlite") as store:
        unread = StreamingResponse(tokens(), source_nodes=sources("g1"))
        with pytest.raises(ValueError, match=r"no text yet.*get_response\(\).*nothing was stored"):
            store.record_response("apple returns?", unread)  # was recorded with answer None
        assert len(store) == 0
        assert "".join(unread.response_gen) == "7 days [1]."  # the caller's stream untouched
        read = StreamingResponse(tokens(), source_nodes=sources("g1"))
        read.get_response()
        rid = store.record_response("apple returns?", read)
        assert store.get(rid).answer == "7 days [1]."


# ------------------------------------------------------------- a source whose text fails
def test_a_source_whose_text_cannot_be_read_is_left_out_and_the_answer_kept(tmp_path):
    from llama_index.core.base.response.schema import Response
    from llama_index.core.query_engine import CustomQueryEngine
    from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

    from llama_index_ragtune.feedback import FeedbackQueryEngine

    class RemoteNode(TextNode):
        """A node whose embedded text comes from a service that is down."""

        def get_content(self, metadata_mode=MetadataMode.NONE):
            if metadata_mode == MetadataMode.EMBED:
                raise RuntimeError("metadata service unreachable")
            return super().get_content(metadata_mode)

    remote = NodeWithScore(node=RemoteNode(id_="remote", text="Laptops: 15% fee."), score=0.5)

    class Engine(CustomQueryEngine):
        def custom_query(self, query_str: str) -> Response:
            return Response("7 days [1].", source_nodes=[*sources("g1"), remote],
                            metadata={"cited_node_ids": ["g1"]})  # fmt: skip

    with FeedbackStore(tmp_path / "fb.sqlite") as store:
        engine = FeedbackQueryEngine(Engine(), store)
        with pytest.warns(UserWarning, match=r"source_nodes\[1\].*get_content raised RuntimeError"):
            response = engine.query("apple returns?")  # was: the whole answer unrecorded
        record = store.get(response.metadata["feedback_id"])
        assert record.retrieved_node_ids == ["g1"] and record.cited_node_ids == ("g1",)
        assert record.metadata["sources_left_out"] == [2]
        with pytest.raises(
            ValueError, match=r"retrieved\[1\] \(node 'remote'\): its text could not"
        ):
            store.record("apple returns?", retrieved=[*sources("g1"), remote])  # was raw
        assert len(store) == 1


def test_corpus_keys_that_merge_or_are_no_node_id_are_refused(tmp_path):
    import numpy as np

    with FeedbackStore(tmp_path / "fb.sqlite") as store:
        store.record("apple returns?", retrieved=sources("g1"), cited_node_ids=["g1"],
                     answer="7 days [1].", rating=1)  # fmt: skip
        with pytest.raises(ValueError, match="corpus holds node id '1' twice"):
            store.to_retrieval_dataset(corpus={1: "one", "1": "uno"})  # was: one text dropped
        for key in (None, 1.0, True):  # were nodes named "None", "1.0", "True"
            with pytest.raises(TypeError, match=rf"corpus key {key!r} is not a node id"):
                store.to_retrieval_dataset(corpus={key: "text"})
        data = store.to_retrieval_dataset(corpus={np.int64(7): "seven", np.str_("g1"): "apples"})
        assert data.corpus == {"g1": "apples", "7": "seven"}


# ---------------------------------------------------------- the file replaced while open
@pytest.mark.parametrize("how", ["backup moved over it", "deleted"])
def test_a_store_file_replaced_or_deleted_while_open_refuses_to_write_into_the_old_one(
    tmp_path, how
):
    path = tmp_path / "fb.sqlite"
    server = FeedbackStore(path)
    server.record("before", answer="a")
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink()
    else:
        with FeedbackStore(tmp_path / "backup.sqlite") as backup:
            backup.record("from the backup", answer="b")
        os.replace(tmp_path / "backup.sqlite", path)
    with pytest.raises(
        FeedbackStoreError, match="was replaced or deleted on disk.*nothing was written"
    ):
        server.record("after", answer="c")  # was stored in the old file: lost for good
    with pytest.raises(ValueError, match="is closed"):
        server.rate("x", 1)
    server.close()
    if how == "deleted":
        assert not path.exists()
    else:
        with FeedbackStore(path, read_only=True) as reader:
            assert "after" not in [r.query for r in reader.records()]


def test_a_store_opened_by_a_relative_path_keeps_writing_after_a_change_of_folder(
    tmp_path, monkeypatch
):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    with FeedbackStore("fb.sqlite") as store:
        store.record("first", answer="a")
        monkeypatch.chdir(tmp_path / "elsewhere")  # not a replaced file: the same one
        store.record("second", answer="b")
        assert len(store) == 2
    assert not (tmp_path / "elsewhere" / "fb.sqlite").exists()
