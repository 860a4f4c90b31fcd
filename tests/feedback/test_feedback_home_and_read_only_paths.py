"""Hostile paths and folders, second battery: ``~`` in a store path, stores in read-only folders.

Each case must end in a clear error naming the store and the fix, with nothing lost,
or simply work (a store the user may read can be read).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from fb_helpers import sources
from test_feedback_files_and_values_hostile import _outcome, _unprivileged

from llama_index_ragtune.feedback import FeedbackQueryEngine, FeedbackStore, FeedbackStoreError


def _good(store):
    rid = store.record(
        "apple return policy?", retrieved=sources("g1", "e1"), cited_node_ids=["g1"], answer="7"
    )
    store.rate(rid, 1)
    return rid


# ------------------------------------------------------------------ "~" in a path


def test_a_tilde_path_is_the_home_folder_not_a_folder_named_tilde(tmp_path, monkeypatch):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    (home / "x").mkdir(parents=True)
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    (cwd / "~" / "x").mkdir(parents=True)  # a folder literally named "~" must stay untouched
    # was: the store was created in ./~/x/feedback.db (or "the folder ~/x does not exist")
    with FeedbackStore("~/x/feedback.db") as store:
        _good(store)
        assert store.path == home / "x" / "feedback.db"
        assert "~" not in repr(store)
    assert (home / "x" / "feedback.db").is_file()
    assert list((cwd / "~" / "x").iterdir()) == []
    with FeedbackStore(Path("~/x/feedback.db"), create=False) as store:
        assert [r.query for r in store] == ["apple return policy?"]
        pairs = store.to_retrieval_dataset(eval_fraction=0.0)
        assert pairs.metadata["feedback_store"] == str(home / "x" / "feedback.db")
    with pytest.raises(FileNotFoundError, match=rf"{home}/missing does not exist"):
        FeedbackStore("~/missing/feedback.db")


# ------------------------------------------------------------------ read-only folders


def _reads_and_writes(path):
    def open_read_only():
        with FeedbackStore(path, read_only=True) as store:
            return (
                [r.query for r in store],
                store.stats().records,
                len(store.to_retrieval_dataset(eval_fraction=0.0)),
                type(store._conn).__name__,  # immutable: no writer, no -shm
            )

    def write(call):
        with FeedbackStore(path, read_only=True) as store:
            rid = next(iter(store)).id
            return call(store, rid)

    return {
        "plain_open": _outcome(lambda: FeedbackStore(path, create=False)),
        "read_only": _outcome(open_read_only),
        "record": _outcome(lambda: write(lambda s, rid: s.record("q"))),
        "rate": _outcome(lambda: write(lambda s, rid: s.rate(rid, -1))),
        "click": _outcome(lambda: write(lambda s, rid: s.click(rid, "g1"))),
    }


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_store_in_a_read_only_folder_can_be_read_but_not_written():
    base = Path(tempfile.mkdtemp())  # not tmp_path: its parents are private to root
    try:
        os.chmod(base, 0o755)
        folder = base / "ro-folder"
        folder.mkdir()
        with FeedbackStore(folder / "feedback.sqlite") as store:
            _good(store)
        before = (folder / "feedback.sqlite").read_bytes()
        os.chmod(folder / "feedback.sqlite", 0o644)
        os.chmod(folder, 0o555)
        result = _unprivileged(_reads_and_writes, folder / "feedback.sqlite")
        # was: every open, even to read stats, raised PermissionError (SQLite's WAL mode
        # needs to create feedback.sqlite-shm in the folder)
        kind, message = result["plain_open"]
        assert kind == "PermissionError" and "open it with read_only=True" in message
        assert result["read_only"] == (
            "ok",
            repr((["apple return policy?"], 1, 1, "SnapshotConnection")),
        )
        for key in ("record", "rate", "click"):  # writing still refused, naming the store
            kind, message = result[key]
            assert kind == "PermissionError", result
            assert "ro-folder/feedback.sqlite was opened with read_only=True" in message
        os.chmod(folder, 0o755)
        assert sorted(os.listdir(folder)) == ["feedback.sqlite"]  # nothing written
        assert (folder / "feedback.sqlite").read_bytes() == before
    finally:
        for folder in base.iterdir():
            os.chmod(folder, 0o755)
        shutil.rmtree(base)


def test_a_read_only_store_follows_a_writer_that_opens_the_file_later(tmp_path):
    path = tmp_path / "feedback.sqlite"
    with FeedbackStore(path) as store:
        _good(store)
    reader = FeedbackStore(path, read_only=True)
    assert [r.query for r in reader] == ["apple return policy?"]
    with FeedbackStore(path) as writer:  # a writer appears: the -wal file exists now
        writer.record("warranty?")
        assert [r.query for r in reader] == ["apple return policy?", "warranty?"]
    with pytest.raises(PermissionError, match="opened with read_only=True"):
        reader.record_many([{"query": "q"}])
    assert len(reader) == 2
    reader.close()


def test_read_only_needs_an_existing_feedback_store(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing.sqlite does not exist"):
        FeedbackStore(tmp_path / "missing.sqlite", read_only=True)
    assert not (tmp_path / "missing.sqlite").exists()
    with pytest.raises(ValueError, match="read_only=True needs a database file"):
        FeedbackStore(":memory:", read_only=True)
    with pytest.raises(TypeError, match="read_only must be True or False"):
        FeedbackStore(tmp_path / "f.sqlite", read_only="yes")
    (tmp_path / "notes.sqlite").write_text("not a database " * 100)
    with pytest.raises(FeedbackStoreError, match="notes.sqlite is not a readable SQLite database"):
        FeedbackStore(tmp_path / "notes.sqlite", read_only=True)
    sqlite3.connect(tmp_path / "empty.sqlite").close()
    (tmp_path / "empty.sqlite").touch()
    with pytest.raises(FeedbackStoreError, match="empty.sqlite holds no feedback store yet"):
        FeedbackStore(tmp_path / "empty.sqlite", read_only=True)


def test_the_recorder_refuses_a_read_only_store_up_front(tmp_path):
    from llama_index.core.query_engine import CustomQueryEngine

    class Echo(CustomQueryEngine):
        def custom_query(self, query_str):
            return query_str

    path = tmp_path / "feedback.sqlite"
    FeedbackStore(path).close()
    # would otherwise warn "not recorded" on every answer and keep nothing
    with (
        FeedbackStore(path, read_only=True) as store,
        pytest.raises(PermissionError, match="records every answer.*read_only=True"),
    ):
        FeedbackQueryEngine(Echo(), store)


def test_a_refresh_opens_a_store_path_for_reading_only(tmp_path):
    """``ragtune refresh --feedback`` only reads the store: opened read-only, it reads a store
    in a folder the refresh may not write, and it can never write into the user's store."""
    from llama_index_ragtune.pipeline.refresh_data import open_store

    path = tmp_path / "feedback.sqlite"
    with FeedbackStore(path) as store:
        _good(store)
    opened = open_store(str(path))
    assert opened.read_only is True
    assert [r.query for r in opened] == ["apple return policy?"]
    with pytest.raises(PermissionError, match="opened with read_only=True"):
        opened.record("warranty?")
