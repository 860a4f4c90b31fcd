"""Feedback stores, round 37: a log left without its database, ids in another Unicode form."""

from __future__ import annotations

import shutil
import unicodedata

import pytest
from fb_helpers import sources
from llama_index.core.schema import NodeWithScore, TextNode

from llama_index_ragtune.feedback import FeedbackStore, FeedbackStoreError


@pytest.mark.parametrize(("main_file", "state"), [(None, "does not exist"), (b"", "is empty")])
def test_a_write_ahead_log_without_its_database_is_refused_and_kept(tmp_path, main_file, state):
    """A store copied or restored without its main file (or with it cut to 0 bytes) used to
    start empty there, and SQLite then reset and deleted the log holding the records."""
    store = FeedbackStore(tmp_path / "live.db")
    store.record("how do I return apples", retrieved=sources("g1"), answer="within 7 days")
    wal = tmp_path / "live.db-wal"
    assert wal.stat().st_size > 0  # the record is in the log until a checkpoint
    half = tmp_path / "copy"
    half.mkdir()
    shutil.copy(wal, half / "feedback.db-wal")  # the main file was not copied
    if main_file is not None:
        (half / "feedback.db").write_bytes(main_file)
    store.close()
    log = (half / "feedback.db-wal").read_bytes()
    with pytest.raises(FeedbackStoreError, match=rf"{state}.*feedback\.db-wal .*feedback\.db back"):
        FeedbackStore(half / "feedback.db")
    assert (half / "feedback.db-wal").read_bytes() == log
    assert (half / "feedback.db").exists() is (main_file is not None)
    (half / "feedback.db-wal").rename(half / "saved-wal")  # moved away: an empty store starts
    with FeedbackStore(half / "feedback.db") as fresh:
        assert fresh.count() == 0


def test_an_id_in_another_unicode_form_is_stored_as_its_source_spells_it(tmp_path):
    """A front end sending a composed ``café`` for a node id stored decomposed was refused
    with "'café.md#0' is not a source ... (its sources: ['café.md#0'])"."""
    decomposed = unicodedata.normalize("NFD", "café.md#0")
    composed = unicodedata.normalize("NFC", decomposed)
    assert composed != decomposed
    retrieved = [NodeWithScore(node=TextNode(id_=decomposed, text="Café opening hours"), score=1.0)]
    with FeedbackStore(tmp_path / "f.db") as store:
        first = store.record("when does the café open", retrieved=retrieved, answer="at 8")
        store.click(first, composed)
        assert store.get(first).clicked_node_ids == (decomposed,)
        second = store.record(
            "café hours", retrieved=retrieved, answer="at 8", cited_node_ids=[composed, decomposed]
        )
        assert store.get(second).cited_node_ids == (decomposed,)
        with pytest.raises(ValueError, match="is not a source"):
            store.click(first, "tea.md#0")
