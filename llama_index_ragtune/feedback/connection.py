"""``StoreConnection``: how a ``FeedbackStore`` holds its SQLite file.

One connection per process (reopened after ``fork``), a lock for its threads, one short
``BEGIN IMMEDIATE`` transaction a write and one read transaction a read, with SQLite's
errors turned into errors naming the file. :meth:`StoreConnection.snapshot` pins one read
transaction for a whole export. What is written and read lives in ``writing.py`` and
``reading.py``; ``store.py`` puts them together as ``FeedbackStore``.

Example::

    from llama_index_ragtune.feedback import FeedbackStore

    with FeedbackStore(":memory:") as store, store.snapshot() as view:
        view.count()                                   # 0
"""

from __future__ import annotations

import numbers
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal, TypeVar

from llama_index_ragtune.feedback.entries import show
from llama_index_ragtune.feedback.schema import (
    FeedbackStoreError,
    SnapshotConnection,
    file_error,
    is_damage,
    is_lock,
    lock_error,
    open_database,
    schema_error,
    wal_file,
)
from llama_index_ragtune.feedback.times import use_time_function
from llama_index_ragtune.feedback.undecodable import column_of, undecodable_row

__all__ = ["StoreConnection", "check_path"]

_REPLACED: list[sqlite3.Connection] = []
"""Connections to a store file that was replaced on disk, kept open for good: closing one
makes SQLite checkpoint and delete ``<path>-wal``, which may by then be the new file's."""


def _file_identity(path: str | Path) -> tuple[int, int] | None:
    """``(device, inode)`` of the database file (``None`` in memory); ``(-1, -1)`` once it is gone."""
    if str(path) == ":memory:":
        return None
    try:
        info = os.stat(path)
    except OSError:
        return (-1, -1)
    return (info.st_dev, info.st_ino)


_Store = TypeVar("_Store", bound="StoreConnection")


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


class StoreConnection:
    """The SQLite file of a feedback store: opening, transactions, snapshots, closing.

    The base of ``FeedbackStore`` (its arguments are documented there); it reads and
    writes no record itself.
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
        self._file: tuple[int, int] | None = None  # (device, inode) of the file opened
        # where that file is, whatever the working folder later (SQLite keeps it absolute)
        self._where = self._path if str(self._path) == ":memory:" else Path(self._path).absolute()
        self._conn: sqlite3.Connection | None = self._open(create)
        self._pid = os.getpid()
        self._inherited: list[sqlite3.Connection] = []

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
        conn = open_database(
            self._path,
            timeout=self._timeout,
            create=create,
            synchronous=self._synchronous,
            read_only=self._read_only,
        )
        use_time_function(conn)  # times another tool stored as text compare as times
        self._file = _file_identity(self._where)
        return conn

    def _check_same_file(self) -> None:
        """Raise before a write when the file at ``path`` is no longer the one this store
        opened (a backup moved over it, the file deleted): SQLite would write into the old
        file, which nothing reads any more (every later record silently lost), and a restored
        backup was read with the old file's ``-wal``, losing its records."""
        if self._file is None or self._file == _file_identity(self._where):
            return
        conn, self._conn = self._conn, None
        if conn is not None:  # never closed: closing it deletes the -wal beside the path
            _REPLACED.append(conn)
        raise FeedbackStoreError(
            f"the feedback store {self._path} was replaced or deleted on disk after this "
            "FeedbackStore opened it: its writes would go to the old file, which nothing reads "
            "any more; nothing was written, and this store is closed. Stop every program using "
            "the store before you restore, move or delete its file (its -wal and -shm belong "
            f"to the old file), then open FeedbackStore({str(self._path)!r}) again"
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
            self._check_same_file()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if is_lock(exc):
                    raise lock_error(exc, self._path, self._timeout, "writing") from exc
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
                    raise self._damaged(exc, conn) from exc
                if is_lock(exc):  # a COMMIT waiting for readers (no WAL on this file system)
                    raise lock_error(exc, self._path, self._timeout, "writing") from exc
                problem = file_error(exc, self._path) or schema_error(exc, self._path)
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
                    raise self._damaged(exc, conn) from exc
                if is_lock(exc):  # another program's exclusive lock, or no WAL
                    raise lock_error(exc, self._path, self._timeout, "reading") from exc
                problem = file_error(exc, self._path)
                if problem is None:
                    raise
                raise problem from exc
            finally:
                if conn.in_transaction:  # a read-only transaction: ending it cannot lose data
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")

    @contextmanager
    def snapshot(self: _Store) -> Iterator[_Store]:
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
        view = type(self)(
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

    def _damaged(
        self, exc: BaseException, conn: sqlite3.Connection | None = None
    ) -> FeedbackStoreError:
        """The error for a damaged file; for text that is not UTF-8 it names the row and the
        SQL that repairs it (found through ``conn``, still in the failed read's snapshot)."""
        if conn is not None and "could not decode" in str(exc).lower():
            with suppress(sqlite3.Error):
                row = undecodable_row(conn, column_of(exc))
                if row is not None:
                    return FeedbackStoreError(f"{self._path} is damaged ({exc}): {row}")
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

    def __enter__(self: _Store) -> _Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unknown(self, record_id: Any) -> KeyError:
        return KeyError(
            f"no feedback record {record_id!r} in {self._path}; use the id that record() returned "
            "or response.metadata['feedback_id']"
        )
