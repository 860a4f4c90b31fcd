"""``FeedbackStore``: a log of questions, sources, answers and user feedback in one SQLite file.

Every answer is one record: the query, its sources in rank order with scores
(and their texts, kept per node id + text hash so exports work after the index
changed), the cited node ids, the answer, the refused flag, latency, bundle
version, a timestamp and free JSON metadata. A rating (+1 / -1) or a clicked
citation attaches to the record later through its id.

Safe to share: several processes (and threads) may write at once; each write
is one short transaction that waits up to ``timeout`` seconds for the lock, and
the database runs in WAL mode, so a writer killed mid-write loses only its
uncommitted record. All SQL is parameterised; texts are stored verbatim.
``records()`` takes one short read transaction a page (500 records), so iterating a
long log never holds the WAL back. An export reads through :meth:`FeedbackStore.snapshot`,
one read transaction (on a connection of its own: writers go on), so its records, ratings
and node texts are of one moment; while it runs, as while another program keeps a read
transaction open, ``<file>-wal`` grows with every write, and is cut back to 4 MiB
(``schema.WAL_SIZE_LIMIT``) at the next checkpoint after.

Example::

    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index_ragtune.feedback import FeedbackStore

    with FeedbackStore("feedback.sqlite") as store:
        sources = [NodeWithScore(node=TextNode(id_="grocery-returns", text="Apples: 7 days."), score=0.9)]
        rid = store.record("apple return policy?", retrieved=sources,
                           cited_node_ids=["grocery-returns"], answer="7 days [1].", latency_ms=412.0)
        store.rate(rid, +1)
        store.click(rid, "grocery-returns")
        len(store), store.stats().upvoted          # (1, 1)
"""

from __future__ import annotations

import numbers
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llama_index_ragtune.feedback.entries import check_rating, check_text, prepare_entry, show
from llama_index_ragtune.feedback.records import FeedbackRecord, FeedbackStats
from llama_index_ragtune.feedback.responses import response_fields
from llama_index_ragtune.feedback.schema import (
    FeedbackStoreError,
    SnapshotConnection,
    file_error,
    is_damage,
    open_database,
    wal_file,
)
from llama_index_ragtune.feedback.sql import (
    COLUMNS,
    build_records,
    insert_entry,
    join_where,
    read_node_text,
    read_node_texts,
    read_stats,
    where_clause,
)

if TYPE_CHECKING:
    import datasets

    from llama_index_ragtune.data.schema import RetrievalDataset

__all__ = ["FeedbackStore"]

RatingFilter = Literal[1, -1, "unrated"]


_CHUNK = 500  # ids per `IN (...)` query and records per page


def _record_id(record_id: Any) -> str:
    """A record id argument, checked like any other text."""
    if record_id is None:
        raise TypeError(
            "record_id is None: that answer was not recorded (FeedbackQueryEngine sets "
            "feedback_id=None when the store failed); pass the id record() returned"
        )
    return check_text(record_id, "record_id")


def check_path(path: Any) -> str | Path:
    """The ``path`` argument of a store: ``":memory:"`` or a file path, ``~`` expanded (raises naming it)."""
    if isinstance(path, str) and path == ":memory:":
        return path
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"FeedbackStore: path must be a file path (str or pathlib.Path) or ':memory:', "
            f"got {type(path).__name__}"
        )
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(
            f"FeedbackStore: path must be a text path, got {type(text).__name__}; decode it first"
        )
    if not text.strip():
        raise ValueError("FeedbackStore: path must not be empty; pass the database file's path")
    if "\0" in text:
        raise ValueError(
            f"FeedbackStore: path {text!r} contains a NUL character (\\0), which no file name "
            "can hold; pass the database file's path"
        )
    return Path(text).expanduser()  # like every other path the package takes


class FeedbackStore:
    """A feedback log on SQLite (WAL mode); share one file between processes.

    Args:
        path: the database file (``~`` is expanded; created with its folder's permissions
            when missing), or ``":memory:"`` for a private throw-away store.
        timeout: seconds a write waits for another writer's lock before ``TimeoutError``.
        create: ``False`` raises ``FileNotFoundError`` for a missing file instead of
            starting an empty store (use it where a typo must not go unnoticed).
        synchronous: ``"NORMAL"`` keeps every committed record when a process is
            killed; ``"FULL"`` also through a power loss (one fsync per write).
        read_only: ``True`` opens an existing store for reading only (stats, records,
            exports), also in a folder this user may not write; every write then raises
            ``PermissionError``. Opened while no writer has the file open, it reads the
            file as it is and switches to following the writer once one appears.

    A write SQLite cannot make raises an ``OSError`` naming the file, and stores
    nothing of that write: ``PermissionError`` for a read-only file or folder (WAL
    mode writes ``<file>-wal`` and ``<file>-shm`` next to it), ``errno.ENOSPC`` for a
    full disk.

    Open one store per process (a store opened before ``fork`` reconnects in the
    child); it is safe to use from several threads.

    Example::

        store = FeedbackStore("feedback.sqlite")
        rid = store.record("apple return policy?", answer="Insufficient information.", refused=True)
        store.rate(rid, -1)
        [r.query for r in store.records(rating=-1)]     # ['apple return policy?']
        store.close()
    """

    def __init__(
        self,
        path: str | Path,
        *,
        timeout: float = 30.0,
        create: bool = True,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        read_only: bool = False,
    ) -> None:
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, numbers.Real)
            or not 0 < timeout < 10**9
        ):
            raise ValueError(
                "FeedbackStore: timeout must be a positive (finite) number of seconds, got "
                f"{show(timeout)}"
            )
        if not isinstance(synchronous, str):
            raise TypeError(
                "FeedbackStore: synchronous must be 'NORMAL' or 'FULL', got "
                f"{type(synchronous).__name__} {show(synchronous)}"
            )
        if not isinstance(read_only, bool):
            raise TypeError(
                f"FeedbackStore: read_only must be True or False, got {show(read_only)}"
            )
        self._path = check_path(path)
        self._timeout = float(timeout)
        self._synchronous = synchronous
        self._read_only = read_only
        self._lock = threading.RLock()
        self._pinned: sqlite3.Connection | None = None  # the transaction of snapshot()
        self._conn: sqlite3.Connection | None = self._open(create)
        self._pid = os.getpid()
        self._inherited: list[sqlite3.Connection] = []

    # ------------------------------------------------------------------ plumbing
    @property
    def path(self) -> str | Path:
        """The database file (or ``":memory:"``)."""
        return self._path

    @property
    def read_only(self) -> bool:
        """Whether this store was opened with ``read_only=True`` (every write raises)."""
        return self._read_only

    def __repr__(self) -> str:
        extra = ", read_only=True" if self._read_only else ""
        return f"FeedbackStore({str(self._path)!r}{extra})"

    def __getstate__(self) -> dict[str, Any]:
        if str(self._path) == ":memory:":
            raise TypeError(
                "an in-memory FeedbackStore cannot be sent to another process; use a file"
            )
        return {
            "path": self._path,
            "timeout": self._timeout,
            "synchronous": self._synchronous,
            "read_only": self._read_only,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(
            state["path"],
            timeout=state["timeout"],
            synchronous=state["synchronous"],
            read_only=state.get("read_only", False),
        )

    def _open(self, create: bool) -> sqlite3.Connection:
        return open_database(
            self._path,
            timeout=self._timeout,
            create=create,
            synchronous=self._synchronous,
            read_only=self._read_only,
        )

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f"{self!r} is closed; open a new FeedbackStore")
        if os.getpid() != self._pid:  # forked: a SQLite connection must not cross fork()
            if str(self._path) == ":memory:":
                raise RuntimeError(
                    "an in-memory FeedbackStore cannot be used after fork(); use a file"
                )
            self._inherited.append(self._conn)  # keep it referenced: closing it here is unsafe
            self._conn = self._open(create=False)
            self._pid = os.getpid()
        if isinstance(self._conn, SnapshotConnection) and wal_file(self._path).exists():
            # a writer has opened the store since: the file alone is no longer the whole log
            self._conn.close()
            self._conn = None
            self._conn = self._open(create=False)
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
        with self._lock:
            if self._read_only:
                raise PermissionError(
                    f"the feedback store {self._path} was opened with read_only=True: it can be "
                    f"read, not written; open FeedbackStore({str(self._path)!r}) to write (SQLite "
                    "needs to write the file and its folder)"
                )
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise TimeoutError(
                        f"{self._path} stayed locked by another writer for {self._timeout} s; "
                        "retry, or open the store with a larger timeout="
                    ) from exc
                problem = file_error(exc, self._path)
                if problem is None:
                    raise
                raise problem from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):  # the original error is the one to report
                        conn.execute("ROLLBACK")
                if is_damage(exc):
                    raise self._damaged(exc) from exc
                problem = file_error(exc, self._path)
                if problem is not None:
                    raise problem from exc
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every statement inside sees the same snapshot (inside
        :meth:`snapshot`, its one transaction)."""
        with self._lock:
            if self._pinned is not None:
                yield self._pinned
                return
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                yield conn
            except sqlite3.DatabaseError as exc:
                if is_damage(exc):
                    raise self._damaged(exc) from exc
                problem = file_error(exc, self._path)
                if problem is None:
                    raise
                raise problem from exc
            finally:
                if conn.in_transaction:  # a read-only transaction: ending it cannot lose data
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")

    @contextmanager
    def snapshot(self) -> Iterator[FeedbackStore]:
        """A reader of the store as it is now: every read through it (``records``,
        ``node_texts``, ``stats``...) sees one read transaction, whatever is committed
        meanwhile, so what it reads agrees (no rating without its record, no record of a
        batch without the others). The exports read through one. On a file it is a
        connection of its own: this store's other threads go on writing (the WAL grows
        until it is closed); ``":memory:"`` holds this store's lock instead.

        Example::

            with store.snapshot() as view:
                records, stats = list(view.records()), view.stats()
        """
        if str(self._path) == ":memory:" or self._pinned is not None:
            with self._lock, self._read() as conn:
                outer, self._pinned = self._pinned, conn
                try:
                    yield self
                finally:
                    self._pinned = outer
            return
        view = FeedbackStore(
            self._path,
            timeout=self._timeout,
            create=False,
            synchronous=self._synchronous,  # type: ignore[arg-type]
            read_only=self._read_only,
        )
        try:
            with view._read() as conn:
                conn.execute("SELECT count(*) FROM records").fetchone()  # starts the snapshot
                view._pinned = conn
                yield view
        finally:
            view._pinned = None
            view.close()

    def _damaged(self, exc: BaseException) -> FeedbackStoreError:
        return FeedbackStoreError(
            f"{self._path} is damaged ({exc}); restore it from a backup (SQLite's `.recover` "
            "command can save what is left) or start a new store"
        )

    def close(self) -> None:
        """Close the connection (idempotent); committed records are on disk already."""
        with self._lock:
            if self._conn is not None and os.getpid() == self._pid:
                self._conn.close()
            self._conn = None

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writes
    def record(
        self,
        query: str,
        *,
        retrieved: Sequence[Any] = (),
        cited_node_ids: Sequence[str] = (),
        answer: str | None = None,
        refused: bool = False,
        rating: int | None = None,
        clicked_node_ids: Sequence[str] = (),
        latency_ms: float | None = None,
        bundle_version: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        created_at: datetime | float | None = None,
        record_id: str | None = None,
    ) -> str:
        """Store one answered question and return its record id.

        ``retrieved`` are the answer's sources in rank order: LlamaIndex
        ``NodeWithScore`` (or bare nodes, no score). Their texts are stored as
        ``get_content()`` (what ``CitationQueryEngine`` shows the LLM) and as
        embedded (``MetadataMode.EMBED``, what the encoder sees), with the node's
        metadata. ``cited_node_ids`` and ``clicked_node_ids`` must be among the
        sources. ``created_at`` defaults to now (for imports and simulations pass
        a datetime or a UNIX time). Raises ``ValueError`` / ``TypeError`` naming the
        bad argument; nothing is stored then.

        Example::

            rid = store.record("Apple return policy?", retrieved=response.source_nodes,
                               cited_node_ids=["electronics-returns"], answer="14 days [1].")
        """
        entry = prepare_entry(
            query=query,
            retrieved=retrieved,
            cited_node_ids=cited_node_ids,
            answer=answer,
            refused=refused,
            rating=rating,
            clicked_node_ids=clicked_node_ids,
            latency_ms=latency_ms,
            bundle_version=bundle_version,
            metadata=metadata,
            created_at=created_at,
            record_id=record_id,
        )
        with self._write() as conn:
            insert_entry(conn, entry, self._path)
        return entry["id"]

    def record_many(self, entries: Iterable[Mapping[str, Any]], batch_size: int = 500) -> list[str]:
        """Store many records (each a dict of :meth:`record`'s keyword arguments); return their ids.

        Records are committed ``batch_size`` at a time, each batch atomically, so a
        large import never holds the write lock long. A bad entry raises an error
        naming its index after the entries before it are committed (as does an error
        of ``entries`` itself, a generator say); pass the rest again once it is fixed.

        Example::

            ids = store.record_many([{"query": "q1", "answer": "a1"}, {"query": "q2", "rating": -1}])
        """
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, numbers.Integral)
            or batch_size < 1
        ):
            raise ValueError(
                f"record_many: batch_size must be a positive integer, got {batch_size!r}"
            )
        ids: list[str] = []
        pending: list[dict[str, Any]] = []

        def stored() -> str:
            return f"entries 0-{len(ids) - 1} are stored" if ids else "nothing is stored"

        def flush() -> None:
            if not pending:
                return
            try:
                with self._write() as conn:
                    for entry in pending:
                        insert_entry(conn, entry, self._path)
            except (ValueError, OSError) as exc:  # FeedbackStoreError, TimeoutError, disk full
                message = (
                    f"record_many: {exc} ({stored()}; the batch of the {len(pending)} entries "
                    "from there on was rolled back)"
                )
                try:  # the same type, so callers can still tell a damaged file from a lock
                    error = type(exc)(message)
                except TypeError:
                    error = (ValueError if isinstance(exc, ValueError) else OSError)(message)
                if isinstance(exc, OSError) and isinstance(error, OSError) and exc.errno:
                    error.errno, error.strerror = exc.errno, message  # e.g. ENOSPC kept
                raise error from exc
            ids.extend(entry["id"] for entry in pending)
            pending.clear()

        if isinstance(entries, (str, bytes, Mapping)) or not isinstance(entries, Iterable):
            raise TypeError(
                "record_many: entries must be a list (or iterable) of dicts of record() "
                f"arguments, got {type(entries).__name__}; for one record pass [entry]"
            )
        numbered = enumerate(entries)
        while True:
            try:
                i, raw = next(numbered)
            except StopIteration:
                break
            except Exception:  # the caller's iterable failed: keep what it gave so far
                flush()
                raise
            try:
                if not isinstance(raw, Mapping):
                    raise TypeError(
                        f"expected a dict of record() arguments, got {type(raw).__name__}"
                    )
                entry = prepare_entry(**raw)
            except (TypeError, ValueError) as exc:
                flush()
                raise type(exc)(
                    f"record_many: entry {i}: {exc} ({stored()}, nothing from entry {i} on)"
                ) from exc
            pending.append(entry)
            if len(pending) >= batch_size:
                flush()
        flush()
        return ids

    def record_response(
        self,
        query: str,
        response: Any,
        *,
        latency_ms: float | None = None,
        bundle_version: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Store a LlamaIndex ``Response`` (sources, ``cited_node_ids`` and ``refused`` from its metadata).

        For code that calls its query engine itself; ``FeedbackQueryEngine`` does this
        for you and sets ``response.metadata["feedback_id"]``.

        Example::

            response = engine.query("apple return policy?")
            rid = store.record_response("apple return policy?", response, latency_ms=350.0)
        """

        return self.record(
            query,
            latency_ms=latency_ms,
            bundle_version=bundle_version,
            metadata=metadata,
            **response_fields(response),
        )

    def rate(self, record_id: str, rating: int | None) -> None:
        """Attach a rating (+1 up, -1 down, ``None`` clears it) to an earlier answer; the last one wins.

        Raises ``KeyError`` for an unknown record id.

        Example::

            store.rate(response.metadata["feedback_id"], -1)
        """
        record_id = _record_id(record_id)
        rating = check_rating(rating)
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE records SET rating = ?, rated_at = ? WHERE id = ?",
                (rating, None if rating is None else time.time(), record_id),
            )
            if cursor.rowcount == 0:
                raise self._unknown(record_id)

    def click(self, record_id: str, node_id: str) -> None:
        """Record that the user opened the citation ``node_id`` of an earlier answer.

        ``node_id`` must be one of the answer's sources (``ValueError`` otherwise, naming
        them); ``KeyError`` for an unknown record id. Every click is kept with its time.

        Example::

            store.click(response.metadata["feedback_id"], response.metadata["cited_node_ids"][0])
        """
        record_id = _record_id(record_id)
        node_id = check_text(node_id, "node_id")
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM records WHERE id = ?", (record_id,)).fetchone() is None:
                raise self._unknown(record_id)
            sources = [
                row[0]
                for row in conn.execute(
                    "SELECT node_id FROM retrieved WHERE record_id = ? ORDER BY rank",
                    (record_id,),
                )
            ]
            if node_id not in sources:
                raise ValueError(
                    f"click: node {node_id!r} is not a source of record {record_id!r} "
                    f"(its sources: {sources[:10]}); pass a node id the answer showed"
                )
            conn.execute(
                "INSERT INTO clicks (record_id, node_id, clicked_at) VALUES (?, ?, ?)",
                (record_id, node_id, time.time()),
            )

    def _unknown(self, record_id: Any) -> KeyError:
        return KeyError(
            f"no feedback record {record_id!r} in {self._path}; use the id that record() returned "
            "or response.metadata['feedback_id']"
        )

    # ------------------------------------------------------------------ reads
    def get(self, record_id: str) -> FeedbackRecord:
        """The record with this id (``KeyError`` when there is none).

        Example::

            store.get(rid).rating
        """
        record_id = _record_id(record_id)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM records WHERE id = ?", (record_id,)
            ).fetchall()
            if not rows:
                raise self._unknown(record_id)
            return build_records(conn, rows)[0]

    def records(
        self,
        *,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        bundle_version: str | Sequence[str] | None = None,
        rating: RatingFilter | None = None,
    ) -> Iterator[FeedbackRecord]:
        """Records in time order (ties in the order they were stored), filtered by ``since`` <= created_at < ``until``, bundle version(s)
        and rating (``1``, ``-1`` or ``"unrated"``; ``None`` keeps all).

        Read page by page, so a large log is never in memory at once and writers are
        not held up. A naive datetime is local time (Python's rule).

        Example::

            for record in store.records(since=datetime(2025, 1, 1), bundle_version="v2", rating=-1):
                print(record.query, record.answer)
        """
        where, params = where_clause(since, until, bundle_version, rating)
        after: tuple[float, int] | None = None
        while True:
            clauses = list(where)
            page_params = list(params)
            if after is not None:
                clauses.append("(created_at > ? OR (created_at = ? AND rowid > ?))")
                page_params += [after[0], after[0], after[1]]
            sql = (
                f"SELECT {COLUMNS}, rowid FROM records{join_where(clauses)} "
                "ORDER BY created_at, rowid LIMIT ?"
            )
            with self._read() as conn:
                rows = conn.execute(sql, [*page_params, _CHUNK]).fetchall()
                page = build_records(conn, rows)
            yield from page
            if len(rows) < _CHUNK:
                return
            after = (rows[-1][1], rows[-1][-1])

    def __iter__(self) -> Iterator[FeedbackRecord]:
        return self.records()

    def __len__(self) -> int:
        return self.count()

    def count(
        self,
        *,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        bundle_version: str | Sequence[str] | None = None,
        rating: RatingFilter | None = None,
    ) -> int:
        """Number of records matching the filters of :meth:`records`."""
        where, params = where_clause(since, until, bundle_version, rating)
        with self._read() as conn:
            return conn.execute(
                f"SELECT count(*) FROM records{join_where(where)}", params
            ).fetchone()[0]

    def stats(
        self,
        *,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        bundle_version: str | Sequence[str] | None = None,
    ) -> FeedbackStats:
        """Counts, refusal / answer rate and latency p50 / p95 over the selected records.

        Example::

            store.stats(bundle_version="v2").to_dict()
        """
        where, params = where_clause(since, until, bundle_version, None)
        with self._read() as conn:
            return read_stats(conn, where, params)

    def node_text(self, node_id: str, text_hash: str | None = None, embed: bool = False) -> str:
        """A stored node text: the version ``text_hash`` (default: the one seen last).

        ``embed=True`` gives the text as embedded (with the node's embed metadata).
        ``KeyError`` when the store never saw that node (version).

        Example::

            store.node_text(record.retrieved[0].node_id, record.retrieved[0].text_hash)
        """
        node_id = check_text(node_id, "node_id", allow_empty=True)
        if text_hash is not None:
            text_hash = check_text(text_hash, "text_hash", allow_empty=True)
        with self._read() as conn:
            row = read_node_text(conn, node_id, text_hash, embed)
        if row is None:
            version = "" if text_hash is None else f" with text hash {text_hash!r}"
            raise KeyError(f"the feedback store {self._path} has no node {node_id!r}{version}")
        return row[0]

    def node_texts(
        self, keys: Iterable[tuple[str, str]], embed: bool = False
    ) -> dict[tuple[str, str], str]:
        """Texts of many ``(node_id, text_hash)`` versions at once (unknown keys are absent)."""
        wanted: list[tuple[str, str]] = []
        for i, key in enumerate(keys):
            if isinstance(key, (str, bytes)) or not isinstance(key, Sequence) or len(key) != 2:
                raise TypeError(f"keys[{i}] must be a (node_id, text_hash) pair, got {show(key)}")
            wanted.append(
                (
                    check_text(key[0], f"keys[{i}][0]", allow_empty=True),
                    check_text(key[1], f"keys[{i}][1]", allow_empty=True),
                )
            )
        wanted = list(dict.fromkeys(wanted))
        with self._read() as conn:
            return read_node_texts(conn, wanted, embed)

    # ------------------------------------------------------------------ exports
    def to_retrieval_dataset(self, **kwargs: Any) -> RetrievalDataset:
        """Training data for the encoder and reranker; see :func:`~llama_index_ragtune.feedback.export.feedback_retrieval_dataset`.

        Example::

            train = store.to_retrieval_dataset(split="train", corpus=nodes)
        """
        from llama_index_ragtune.feedback.export import feedback_retrieval_dataset

        return feedback_retrieval_dataset(self, **kwargs)

    def to_evaluation_set(self, **kwargs: Any) -> RetrievalDataset:
        """The fixed held-out queries with their positives; see :func:`~llama_index_ragtune.feedback.export.feedback_evaluation_set`.

        Example::

            eval_set = store.to_evaluation_set(eval_fraction=0.2)
        """
        from llama_index_ragtune.feedback.export import feedback_evaluation_set

        return feedback_evaluation_set(self, **kwargs)

    def to_preference_pairs(self, **kwargs: Any) -> datasets.Dataset:
        """DPO pairs in TRL's conversational format; see :func:`~llama_index_ragtune.feedback.export.feedback_preference_pairs`.

        Example::

            pairs = store.to_preference_pairs(max_source_chars=1500)
        """
        from llama_index_ragtune.feedback.export import feedback_preference_pairs

        return feedback_preference_pairs(self, **kwargs)
