"""Feedback stores, round 40: times another tool stored as text (mixed time zones, naive),
SQLite files of other programs that have no tables yet, a newer ``user_version``,
``bundle_version`` labels a filter can never match, and answers with thousands of sources."""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
import unicodedata
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.schema import NodeWithScore, TextNode

from llama_index_ragtune.feedback import (
    FeedbackQueryEngine,
    FeedbackStore,
    FeedbackStoreError,
    entries,
    reading,
)

TIMES_LOG = "llama_index_ragtune.feedback.times"
UTC = timezone.utc


def _at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 1, 1, hour, minute, tzinfo=UTC)


def _insert_text_time(path, record_id: str, created_at: Any, bundle: str | None = None) -> None:
    """A record as another tool writes it: ``created_at`` as text, straight through SQLite."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO records (id, created_at, query, query_norm, answer, bundle_version) "
            "VALUES (?, ?, ?, ?, 'an answer', ?)",
            (record_id, created_at, f"{record_id}?", f"{record_id}?", bundle),
        )
    conn.close()


@pytest.fixture
def mixed(tmp_path):
    """A store with two records of ours (05:00Z, 07:00Z) and three another tool wrote as
    text: 10:00+05:00 (05:30Z), 06:00Z and a naive 04:00 (read as UTC)."""
    path = tmp_path / "feedback.sqlite"
    with FeedbackStore(path) as store:
        store.record("ours at five?", answer="a", created_at=_at(5), record_id="r0500")
        store.record("ours at seven?", answer="b", created_at=_at(7), record_id="r0700")
    _insert_text_time(path, "t0530", "2026-01-01T10:30:00+05:00")
    _insert_text_time(path, "t0600", "2026-01-01T06:00:00Z")
    _insert_text_time(path, "t0400", "2026-01-01 04:00:00")
    return path


def test_times_stored_as_text_are_read_in_time_order_and_filtered_by_the_time_they_name(
    mixed, caplog
):
    """Was: SQLite sorts text after every number and by its characters, so the three came
    last in string order, passed every ``since`` and failed every ``until``; ``stats().last``
    was the text ``10:30+05:00`` record, and ``created_at`` kept the +05:00 zone."""
    order = ["t0400", "r0500", "t0530", "t0600", "r0700"]
    with FeedbackStore(mixed) as store, caplog.at_level(logging.WARNING, logger=TIMES_LOG):
        records = list(store.records())
        assert [r.id for r in records] == order
        assert all(r.created_at.utcoffset() == timedelta(0) for r in records)
        assert records[2].created_at == _at(5, 30)
        assert [r.id for r in store.records(until=_at(6, 30))] == order[:4]
        assert [r.id for r in store.records(since=_at(5, 15), until=_at(6, 30))] == order[2:4]
        assert [r.id for r in store.records(since=_at(6, 30))] == ["r0700"]
        assert store.count(until=_at(6, 30)) == 4 and store.count(since=_at(6, 30)) == 1
        assert store.count(since=_at(5, 15), until=_at(6, 30)) == 2
        stats = store.stats()
        assert (stats.first, stats.last) == (_at(4), _at(7))
        assert store.stats(since=_at(5, 15), until=_at(6, 30)).records == 2
    # the warning names the records, what they hold, and the SQL that converts them
    assert "3 record(s) hold records.created_at as text" in caplog.text
    assert "'t0530' ('2026-01-01T10:30:00+05:00')" in caplog.text
    assert "UPDATE records SET created_at" in caplog.text
    fix = caplog.text.split("convert them with SQL: ")[1].splitlines()[0]
    with sqlite3.connect(mixed) as conn:
        conn.execute(fix)
    conn.close()
    caplog.clear()
    with FeedbackStore(mixed) as store, caplog.at_level(logging.WARNING, logger=TIMES_LOG):
        assert [r.id for r in store.records()] == order  # the same order, now as numbers
    assert caplog.text == ""


@pytest.mark.parametrize("chunk,page_chars", [(1, 1 << 30), (2, 40), (3, 1 << 30), (7, 25)])
def test_pages_merge_text_times_in_order_at_any_page_size(tmp_path, monkeypatch, chunk, page_chars):
    """Every page boundary (records per page, or a page cut short by its text) keeps one
    time order over records of both kinds, with ``bundle_version`` and time filters."""
    monkeypatch.setattr(reading, "_CHUNK", chunk)
    monkeypatch.setattr(reading, "_PAGE_CHARS", page_chars)
    rng = random.Random(chunk * 1000 + page_chars)
    path = tmp_path / "feedback.sqlite"
    base = datetime(2026, 3, 1, tzinfo=UTC)
    expected: list[tuple[datetime, int, str, str]] = []
    with FeedbackStore(path) as store:
        for i in range(25):
            at, bundle = base + timedelta(minutes=rng.randrange(40)), rng.choice(["v1", "v2"])
            store.record(f"n{i}?", answer="x" * rng.randrange(20), created_at=at,
                         bundle_version=bundle, record_id=f"n{i}")  # fmt: skip
            expected.append((at, len(expected), f"n{i}", bundle))
    for i in range(25):
        at, bundle = base + timedelta(minutes=rng.randrange(40)), rng.choice(["v1", "v2"])
        zone = timezone(timedelta(hours=rng.choice([-5, 0, 3])))
        text = rng.choice(
            [at.astimezone(zone).isoformat(), at.strftime("%Y-%m-%dT%H:%M:%SZ"),
             at.replace(tzinfo=None).isoformat(sep=" ")]
        )  # fmt: skip
        _insert_text_time(path, f"t{i}", text, bundle)
        expected.append((at, len(expected), f"t{i}", bundle))
    expected.sort()
    since, until = base + timedelta(minutes=10), base + timedelta(minutes=30)
    with FeedbackStore(path) as store:
        assert [r.id for r in store.records()] == [e[2] for e in expected]
        chosen = [e[2] for e in expected if e[3] == "v1" and since <= e[0] < until]
        assert [r.id for r in store.records(since=since, until=until, bundle_version="v1")] == (
            chosen
        )
        assert store.count(since=since, until=until, bundle_version="v1") == len(chosen)


def test_exports_select_text_time_records_by_the_time_they_name(mixed):
    """The exports read through ``records()``: an ``until`` before 05:45Z keeps the 05:30Z
    record another tool wrote as ``10:30+05:00`` (it was always left out)."""
    with FeedbackStore(mixed) as store:
        store.rate("t0530", 1)
        store.rate("r0700", 1)
        with store.snapshot() as view:
            assert [r.id for r in view.records(rating=1, until=_at(5, 45))] == ["t0530"]
            assert [r.id for r in view.records(rating=1, since=_at(6))] == ["r0700"]


def _foreign(path, *statements: str) -> bytes:
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()
    return path.read_bytes()


@pytest.mark.parametrize(
    "statements,named",
    [
        (["PRAGMA user_version = 7"], "user_version 7"),
        (["PRAGMA application_id = 1234"], "application_id 1234"),
        (["CREATE VIEW answers AS SELECT 42 AS x"], "view answers"),
    ],
    ids=["user-version", "application-id", "view-only"],
)
def test_another_programs_database_without_tables_is_refused_and_left_unchanged(
    tmp_path, statements, named
):
    """Was: no tables, so a feedback store was started inside the other program's file
    (its journal mode switched to WAL, six tables added)."""
    path = tmp_path / "app.db"
    before = _foreign(path, *statements)
    with pytest.raises(FeedbackStoreError, match=rf"another program \({named}"):
        FeedbackStore(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]


def test_another_programs_tables_are_refused_before_its_file_is_switched_to_wal(tmp_path):
    """Was: refused, but only after ``PRAGMA journal_mode=WAL`` had rewritten the other
    program's file header (an app reading it in rollback mode now found it in WAL mode)."""
    path = tmp_path / "app.db"
    before = _foreign(path, "CREATE TABLE records (id INTEGER, title TEXT)")
    with pytest.raises(FeedbackStoreError, match="holds the tables records"):
        FeedbackStore(path)
    assert path.read_bytes() == before
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_a_store_marked_with_a_newer_user_version_is_refused_and_new_stores_are_marked(
    tmp_path,
):
    """A new store carries its schema version in ``PRAGMA user_version`` (seen by any SQLite
    tool); a store whose ``user_version`` is newer than this release reads is refused (was
    opened), one with 0 (written before this release) still opens."""
    path = tmp_path / "feedback.sqlite"
    with FeedbackStore(path) as store:
        store.record("q?", answer="a")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        conn.execute("PRAGMA user_version = 0")
    conn.close()
    with FeedbackStore(path) as store:
        assert len(store) == 1
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 9")
    conn.close()
    with pytest.raises(FeedbackStoreError, match=r"schema version 9 \(PRAGMA user_version\)"):
        FeedbackStore(path)
    with pytest.raises(FeedbackStoreError, match="upgrade"):
        FeedbackStore(path, read_only=True)


class _Echo(BaseQueryEngine):
    def __init__(self) -> None:
        super().__init__(None)

    def _get_prompt_modules(self) -> dict[str, Any]:
        return {}

    def _query(self, query_bundle):  # pragma: no cover - never asked
        raise AssertionError

    async def _aquery(self, query_bundle):  # pragma: no cover - never asked
        raise AssertionError


@pytest.mark.parametrize(
    "label,problem",
    [
        ("\u200e", "no visible character"),
        ("v1\n", "control character"),
        ("v1\x00", "control character"),
        ("\x1b[31mv1", "control character"),
        ("v1 ", "spaces at its ends"),
        ("x" * 10_000, "10,000 characters long"),
    ],
    ids=["invisible", "newline", "nul", "escape", "trailing-space", "huge"],
)
def test_bundle_version_labels_no_filter_can_match_are_refused(tmp_path, label, problem):
    """Was: stored (``"v1\\n"`` never matched ``bundle_version="v1"``, a 10,000-character
    label filled every stats dict) while ``" "`` was refused."""
    with FeedbackStore(tmp_path / "feedback.sqlite") as store:
        with pytest.raises(ValueError, match=rf"bundle_version .*{problem}"):
            store.record("q?", answer="a", bundle_version=label)
        with pytest.raises(ValueError, match=rf"bundle_version .*{problem}"):
            store.record_many([{"query": "q?", "bundle_version": label}])
        with pytest.raises(ValueError, match=rf"bundle_version .*{problem}"):
            FeedbackQueryEngine(_Echo(), store, bundle_version=label)
        assert len(store) == 0
        store.record("q?", answer="a", bundle_version=np.str_("v1.2-rc"))  # a real label
        assert [r.bundle_version for r in store.records(bundle_version="v1.2-rc")] == ["v1.2-rc"]


def test_citations_in_another_unicode_form_cost_linear_time_in_the_sources(tmp_path, monkeypatch):
    """Was: each cited or clicked id not spelled as its source normalised every source again
    (2,000 sources and 1,000 such ids: about 2,000,000 NFC normalisations, 6 s for 8,000
    sources); now each source and id once."""
    calls = [0]
    real = unicodedata.normalize

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(unicodedata, name)

        @staticmethod
        def normalize(form: str, text: str) -> str:
            calls[0] += 1
            return real(form, text)

    n = 2000
    ids = [f"caf\u00e9-{i}" for i in range(n)]  # composed, as the index spells them
    nodes = [NodeWithScore(node=TextNode(id_=i, text=f"text {i}"), score=0.5) for i in ids]
    cited = [real("NFD", i) for i in ids[::2]]  # decomposed, as a front end sent them
    monkeypatch.setattr(entries, "unicodedata", Counting())
    with FeedbackStore(tmp_path / "feedback.sqlite") as store:
        record_id = store.record("q?", retrieved=nodes, answer="a", cited_node_ids=cited,
                                 clicked_node_ids=cited[:500])  # fmt: skip
        record = store.get(record_id)
    assert record.cited_node_ids == tuple(ids[::2])
    assert record.clicked_node_ids == tuple(ids[:1000:2])
    assert calls[0] <= 4 * (n + len(cited) + 500)  # was about n * (len(cited) + 500)


def test_node_times_stored_as_text_compare_as_the_time_they_name(tmp_path):
    """Was: a ``nodes.last_seen`` another tool stored as text sorted after every number, so
    ``node_text`` gave that version as "the one seen last" for ever, and seeing a version
    again kept the text ``last_seen`` and replaced its earlier ``first_seen``."""
    path = tmp_path / "feedback.sqlite"

    def seen(text: str, at: float) -> None:
        node = TextNode(id_="g1", text=text, metadata={"v": text})
        store.record("q?", retrieved=[NodeWithScore(node=node, score=1.0)], answer="a",
                     created_at=at)  # fmt: skip

    with FeedbackStore(path) as store:
        seen("version A", 1.0e9)
    with sqlite3.connect(path) as conn:  # another tool: a version seen in 2000, as text
        conn.execute(
            "INSERT INTO nodes VALUES ('g1', 'hash-b', 'version B', 'version B', '{}', "
            "'2000-01-01T00:00:00Z', '2000-01-01T00:00:00Z')"
        )
        conn.execute(
            "UPDATE nodes SET first_seen = '2000-01-01T00:00:00Z', "
            "last_seen = '2000-01-01T00:00:00Z' WHERE text = 'version A'"
        )
    conn.close()
    with FeedbackStore(path) as store:
        seen("version C", 1.7e9)
        assert store.node_text("g1") == "version C"
        seen("version A", 1.6e9)
        assert store.node_text("g1") == "version C"
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT first_seen, last_seen FROM nodes WHERE text = 'version A'")
        assert row.fetchone() == (946684800.0, 1.6e9)
    conn.close()


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_side_file_that_is_no_regular_file_is_named_before_sqlite_opens_it(
    tmp_path, suffix, kind
):
    """Was: a folder ``-shm`` "is read-only" (a ``PermissionError``), a folder or named pipe
    elsewhere a "disk I/O error", and a named pipe as ``-journal`` blocked the open for ever
    (SQLite opens a hot journal to read it). Now each names the file and what it is."""
    path = tmp_path / "feedback.sqlite"
    with FeedbackStore(path) as store:
        store.record("q?", answer="a")
    side = tmp_path / f"feedback.sqlite{suffix}"
    if kind == "folder":
        side.mkdir()
    else:
        os.mkfifo(side)
    outcome: list[BaseException | None] = []

    def open_store(read_only: bool) -> None:
        try:
            FeedbackStore(path, read_only=read_only).close()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome.append(exc)

    for read_only in (False, True):
        worker = threading.Thread(target=open_store, args=(read_only,), daemon=True)
        worker.start()
        worker.join(60)  # a guard only: the old open of a FIFO journal never returned
        assert not worker.is_alive(), f"opening beside a {kind} {suffix} blocked"
        error = outcome.pop()
        assert isinstance(error, FeedbackStoreError), error
        what = "a folder" if kind == "folder" else "a named pipe (FIFO)"
        assert f"{side} is {what}, not a regular file" in str(error)
        assert "Remove or rename it" in str(error)
    side.rmdir() if kind == "folder" else side.unlink()
    with FeedbackStore(path) as store:
        assert len(store) == 1
