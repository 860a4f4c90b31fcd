"""The feedback database: SQLite tables, the schema version, and opening a connection safely.

One file holds the whole log. ``ragtune_meta`` names the format and its schema
version; a file of another format, of a newer schema, or not SQLite at all is
refused with :class:`FeedbackStoreError` naming the file. Connections run in
WAL mode (readers never block the writer, a killed writer leaves every
committed record), wait up to ``timeout`` seconds for another writer's lock,
and run every write in one short ``BEGIN IMMEDIATE`` transaction.

Tables (node texts are kept per (node id, text hash), so exports still work
after the index changed):

- ``records``: one row per answer (query, answer, refused, rating, latency,
  bundle version, timestamps, metadata JSON);
- ``retrieved``: the answer's sources in rank order (node id, score, text hash);
- ``cited``: the node ids the answer cites, in order;
- ``clicks``: one row per citation the user opened;
- ``nodes``: node texts (plain and as embedded) and node metadata.

Example::

    from llama_index_ragtune.feedback.schema import open_database

    conn = open_database("feedback.sqlite", timeout=30.0)
    conn.execute("PRAGMA journal_mode").fetchone()     # ('wal',)
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
import warnings
from contextlib import suppress
from pathlib import Path

from llama_index_ragtune.feedback.side_files import (
    refuse_odd_database_file,
    refuse_odd_side_files,
    refuse_orphan_log,
    wal_file,
)

__all__ = [
    "FORMAT_NAME",
    "SCHEMA_VERSION",
    "FeedbackStoreError",
    "SnapshotConnection",
    "is_lock",
    "lock_error",
    "open_database",
    "schema_error",
]

FORMAT_NAME = "llama-index-ragtune/feedback"
SCHEMA_VERSION = 1

_DDL = (
    "CREATE TABLE IF NOT EXISTS ragtune_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS records (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        query TEXT NOT NULL,
        query_norm TEXT NOT NULL,
        answer TEXT,
        refused INTEGER NOT NULL DEFAULT 0 CHECK (refused IN (0, 1)),
        rating INTEGER CHECK (rating IN (-1, 1)),
        rated_at REAL,
        latency_ms REAL,
        bundle_version TEXT,
        metadata TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX IF NOT EXISTS records_by_time ON records (created_at)",
    "CREATE INDEX IF NOT EXISTS records_by_bundle ON records (bundle_version)",
    "CREATE INDEX IF NOT EXISTS records_by_query ON records (query_norm)",
    """CREATE TABLE IF NOT EXISTS nodes (
        node_id TEXT NOT NULL,
        text_hash TEXT NOT NULL,
        text TEXT NOT NULL,
        embed_text TEXT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        PRIMARY KEY (node_id, text_hash)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS retrieved (
        record_id TEXT NOT NULL REFERENCES records (id) ON DELETE CASCADE,
        rank INTEGER NOT NULL,
        node_id TEXT NOT NULL,
        text_hash TEXT NOT NULL,
        score REAL,
        PRIMARY KEY (record_id, rank)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS cited (
        record_id TEXT NOT NULL REFERENCES records (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        node_id TEXT NOT NULL,
        PRIMARY KEY (record_id, position)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS clicks (
        id INTEGER PRIMARY KEY,
        record_id TEXT NOT NULL REFERENCES records (id) ON DELETE CASCADE,
        node_id TEXT NOT NULL,
        clicked_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS clicks_by_record ON clicks (record_id)",
)


_TABLES = frozenset({"ragtune_meta", "records", "nodes", "retrieved", "cited", "clicks"})
_COLUMNS = {  # what this version reads and writes in each table
    "records": (
        "id", "created_at", "query", "query_norm", "answer", "refused", "rating", "rated_at",
        "latency_ms", "bundle_version", "metadata",
    ),
    "nodes": ("node_id", "text_hash", "text", "embed_text", "metadata", "first_seen", "last_seen"),
    "retrieved": ("record_id", "rank", "node_id", "text_hash", "score"),
    "cited": ("record_id", "position", "node_id"),
    "clicks": ("id", "record_id", "node_id", "clicked_at"),
}  # fmt: skip
WAL_SIZE_LIMIT = 4 << 20  # bytes of ``<file>-wal`` kept after a checkpoint restarts it
_SYNCHRONOUS = {"NORMAL": "PRAGMA synchronous=NORMAL", "FULL": "PRAGMA synchronous=FULL"}


class FeedbackStoreError(ValueError):
    """The feedback database is not SQLite, of another format, or of a newer schema."""


def _retry_locked(conn: sqlite3.Connection, sql: str, timeout: float) -> sqlite3.Cursor:
    """Run ``sql``, retrying while another process holds a lock SQLite does not wait for."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return conn.execute(sql)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _missing_columns(
    conn: sqlite3.Connection, path: str, table: str, wanted: tuple[str, ...]
) -> None:
    """Raise naming ``table``'s columns that an edit of the file removed or renamed."""
    have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    missing = [c for c in wanted if c not in have]
    if missing:
        raise FeedbackStoreError(
            f"{path} is a feedback store whose table {table} lacks the columns "
            f"{', '.join(missing)}; the file was edited or damaged: restore it from a backup "
            "or start a new store"
        )


def file_error(exc: BaseException, path: str | Path) -> OSError | None:
    """The file system refusing SQLite (read-only, cannot open, disk full, I/O error) as an
    ``OSError`` naming ``path`` and the fix; ``None`` for any other error."""
    if not isinstance(exc, sqlite3.OperationalError):
        return None
    text = str(exc).lower()
    file = Path(str(path))
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        where = (
            f"SQLite needs to write the file and, next to it in {file.parent}, "
            f"{file.name}-wal and {file.name}-shm"
        )
        cause = "is read-only" if "unable to open" not in text else "cannot be opened"
        cls = PermissionError
        if "unable to open" in text and os.access(file.parent, os.W_OK):
            cls = OSError  # not (only) permissions: too many open files, say
        return cls(
            f"the feedback store {file} {cause} ({exc}): {where}; make them writable, "
            "or copy the store to a writable folder (to only read it, open it with "
            "read_only=True)"
        )
    if "disk is full" in text:
        return OSError(
            errno.ENOSPC,
            f"the feedback store {file} could not be written ({exc}); nothing of this write was "
            "stored: free disk space and retry",
        )
    if "disk i/o error" in text:
        return OSError(
            errno.EIO,
            f"the feedback store {file} hit a disk I/O error ({exc}); a write that failed "
            "stored nothing: check the disk (and that the file was not moved or deleted), "
            "then retry",
        )
    return None


def is_lock(exc: BaseException) -> bool:
    """SQLite giving up on a lock another connection held past the busy timeout."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def lock_error(exc: BaseException, path: str | Path, timeout: float, doing: str) -> TimeoutError:
    """A lock held past ``timeout`` while ``doing`` (reading, writing, opening) as a
    ``TimeoutError`` naming the file and ``timeout=``."""
    return TimeoutError(
        f"{path} stayed locked by another connection for {timeout} s while {doing} ({exc}); "
        "retry when it lets go, or open the store with a larger timeout= (another program "
        "holding an exclusive lock, PRAGMA locking_mode=EXCLUSIVE, keeps it until it closes)"
    )


_FOREIGN_SCHEMA = ("no such function", "no such table", "no such column", "no such collation")


def schema_error(exc: BaseException, path: str | Path) -> FeedbackStoreError | None:
    """A write refused by what another program added to the store's tables (a ``CHECK`` or
    ``NOT NULL`` column, a ``UNIQUE`` index, a trigger calling ``RAISE`` or a function this
    process lacks) as :class:`FeedbackStoreError` naming SQLite's reason and the fix;
    ``None`` for any other error. (``record`` once called every such refusal a record id
    that "is already in" the store.)"""
    text = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        cause = f"SQLite refused the write: {text}"
    elif isinstance(exc, sqlite3.OperationalError) and text.lower().startswith(_FOREIGN_SCHEMA):
        cause = f"SQLite could not run the write: {text}"
    else:
        return None
    return FeedbackStoreError(
        f"{path}: {cause}. This package's tables have no such rule: another program changed "
        "the store's schema (an added column, CHECK, UNIQUE index or trigger); nothing of this "
        "write was stored. Undo that change (see the tables with the sqlite3 shell's .schema), "
        "or write to a new store"
    )


def _refuse_foreign_triggers(conn: sqlite3.Connection, path: str) -> None:
    """Raise naming triggers on the store's tables: this package creates none, and one that
    another program planted runs inside every write (it may delete, change or multiply
    what is recorded; an ``AFTER INSERT ... DELETE`` lost every record silently)."""
    marks = ", ".join("?" for _ in _TABLES)
    found = conn.execute(
        f"SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN ({marks}) "
        "ORDER BY name",
        sorted(_TABLES),
    ).fetchall()
    if found:
        shown = ", ".join(f"{name!r} on {table}" for name, table in found[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        drop = " ".join(f'DROP TRIGGER "{name}";' for name, _ in found[:5])
        raise FeedbackStoreError(
            f"{path} has the trigger(s) {shown}{more}, which llama-index-ragtune never creates: "
            "another program added them, and they would run inside every write (changing or "
            "deleting what is recorded); nothing was changed. Remove them if nothing needs "
            f"them ({drop}), or open the store with read_only=True to read it"
        )


def _check_meta(conn: sqlite3.Connection, path: str) -> bool:
    """True when the schema is in place and readable; raise when it is foreign or newer."""
    tables = {
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not row[0].startswith("sqlite_")
    }
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    if "ragtune_meta" not in tables:
        if tables:
            shown = ", ".join(sorted(tables)[:8])
            raise FeedbackStoreError(
                f"{path} is an SQLite database but not a llama-index-ragtune feedback store "
                f"(it holds the tables {shown}); pass the path of a feedback store, or a new "
                "file name to create one"
            )
        _refuse_foreign_empty(conn, path, user_version)
        return False
    have = {row[1] for row in conn.execute("PRAGMA table_info(ragtune_meta)")}
    if not {"key", "value"} <= have:
        raise FeedbackStoreError(
            f"{path} has a table ragtune_meta without the columns key and value: not a "
            "llama-index-ragtune feedback store (or one edited by hand); pass the path of a "
            "feedback store, or restore it from a backup"
        )
    # the two keys read, not the whole table: another tool's 100,000 rows of 4 kB there
    # cost 400 MB and 2 s at every open (and again for every export's snapshot)
    meta = dict(
        conn.execute(
            "SELECT key, value FROM ragtune_meta WHERE key IN ('format', 'schema_version')"
        ).fetchall()
    )
    if meta.get("format") != FORMAT_NAME:
        raise FeedbackStoreError(
            f"{path} holds format {meta.get('format')!r}, expected {FORMAT_NAME!r}; "
            "pass the path of a llama-index-ragtune feedback store"
        )
    try:
        version = int(meta.get("schema_version", ""))
    except ValueError:
        raise FeedbackStoreError(
            f"{path} has an unreadable schema version {meta.get('schema_version')!r} in "
            "ragtune_meta; the file was edited or damaged"
        ) from None
    if version > SCHEMA_VERSION:
        raise FeedbackStoreError(
            f"{path} was written with feedback schema version {version}, but this "
            f"llama-index-ragtune reads versions up to {SCHEMA_VERSION}: upgrade "
            "llama-index-ragtune (`pip install -U llama-index-ragtune`)"
        )
    if user_version > SCHEMA_VERSION:
        raise FeedbackStoreError(
            f"{path} is marked as feedback schema version {user_version} (PRAGMA user_version), "
            f"but this llama-index-ragtune reads versions up to {SCHEMA_VERSION}: upgrade "
            "llama-index-ragtune (`pip install -U llama-index-ragtune`)"
        )
    if version < 1:
        raise FeedbackStoreError(
            f"{path} has an unknown feedback schema version {version} in ragtune_meta; the "
            "file was edited or damaged: restore it from a backup or start a new store"
        )
    missing = sorted(_TABLES - tables)
    if missing:
        raise FeedbackStoreError(
            f"{path} is a feedback store without the tables {', '.join(missing)}; the file was "
            "edited or damaged: restore it from a backup or start a new store"
        )
    for table, columns in _COLUMNS.items():
        _missing_columns(conn, path, table, columns)
    try:  # records are read in (time, rowid) order: a table rebuilt WITHOUT ROWID has none
        conn.execute("SELECT rowid FROM records LIMIT 0")
    except sqlite3.OperationalError as exc:
        if "no such column" not in str(exc):
            raise
        raise FeedbackStoreError(
            f"{path} is a feedback store whose table records has no rowid (it was rebuilt "
            "WITHOUT ROWID by another program), so its records cannot be read in order: "
            "restore it from a backup, or start a new store"
        ) from None
    return True


def _refuse_foreign_empty(conn: sqlite3.Connection, path: str, user_version: int) -> None:
    """Raise for a database without tables that another program has marked as its own
    (``user_version``, ``application_id``, views or triggers): a store started there would
    mix this package's tables into that program's file."""
    application_id = conn.execute("PRAGMA application_id").fetchone()[0]
    objects = sorted(
        f"{kind} {name}"
        for kind, name in conn.execute(
            "SELECT type, name FROM sqlite_master WHERE type IN ('view', 'trigger')"
        )
    )
    marks = [f"user_version {user_version}"] if user_version else []
    marks += [f"application_id {application_id}"] if application_id else []
    marks += objects[:5]
    if marks:
        raise FeedbackStoreError(
            f"{path} is an SQLite database of another program ({', '.join(marks)}; no "
            "tables yet), not a llama-index-ragtune feedback store; nothing was changed. Pass "
            "the path of a feedback store, or a new file name to create one"
        )


def is_damage(exc: BaseException) -> bool:
    """A corrupt or byte-edited file, not a lock, constraint or programming error.

    SQLite reports a broken page as a plain ``DatabaseError`` ("malformed"); bytes
    that are no longer UTF-8 inside a text column surface as an ``OperationalError``
    ("Could not decode to UTF-8") when the row is read.
    """
    if type(exc) is sqlite3.DatabaseError:
        return True
    return isinstance(exc, sqlite3.OperationalError) and "could not decode" in str(exc).lower()


def _checked(conn: sqlite3.Connection, path: str) -> bool:
    """``_check_meta`` with a damaged file reported as :class:`FeedbackStoreError`."""
    try:
        return _check_meta(conn, path)
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):  # locks and the like
            raise
        raise FeedbackStoreError(
            f"{path} is damaged ({exc}); restore it from a backup or start a new store"
        ) from exc


class SnapshotConnection(sqlite3.Connection):
    """A read-only connection opened ``immutable``: it reads the main file only, so it is
    valid only while no writer has the store open (no ``<file>-wal`` next to it)."""


def _open_read_only(file: Path, timeout: float) -> sqlite3.Connection:
    """A connection that never writes: ``mode=ro``; in a folder this user may not write,
    with no writer present (no ``-wal``), ``immutable`` (WAL's ``-shm`` cannot be made)."""
    uri = file.absolute().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None,
                           check_same_thread=False)  # fmt: skip
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if file_error(exc, file) is None or os.access(file.parent, os.W_OK):
            raise
        # immutable is safe only with no records in a -wal (none, or an empty one a writer
        # left) and where -shm cannot be made
        _refuse_unreadable_log(file)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise FeedbackStoreError(
            f"{file} is not a readable SQLite database ({exc}); pass the path of a feedback store"
        ) from exc
    return sqlite3.connect(
        uri + "&immutable=1", uri=True, timeout=timeout, isolation_level=None,
        check_same_thread=False, factory=SnapshotConnection,
    )  # fmt: skip


def _refuse_unreadable_log(file: Path) -> None:
    """``PermissionError`` when ``file``'s ``-wal`` holds records that SQLite cannot read in
    its read-only folder (no ``-shm`` there, and none can be made): read from the file
    alone, those records would be missing without a word."""
    wal = wal_file(file)
    try:
        size = wal.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    shm = Path(f"{file}-shm")
    why = "cannot read" if shm.exists() else "cannot create in the read-only folder"
    raise PermissionError(
        f"the feedback store {file} cannot be read: {wal.name} beside it holds {size} bytes of "
        f"records not yet in the file, and SQLite needs {shm.name} to read them, which it "
        f"{why} {file.parent}; open the store once where the "
        f"folder is writable (closing it folds {wal.name} into the file), or copy {file.name} "
        f"with its {wal.name} to a writable folder and read the copy",
    )


def _read_only_store(file: Path, timeout: float) -> sqlite3.Connection:
    """A read-only connection to the feedback store ``file``, its schema checked."""
    try:
        conn = _open_read_only(file, timeout)
    except sqlite3.OperationalError as exc:
        if is_lock(exc):
            raise lock_error(exc, file, timeout, "opening it") from exc
        raise
    try:
        conn.execute("PRAGMA query_only=ON")
        if not _checked(conn, str(file)):
            raise FeedbackStoreError(
                f"{file} holds no feedback store yet (no tables), so there is nothing to read; "
                "pass the path of a feedback store"
            )
    except BaseException as exc:
        conn.close()
        if is_lock(exc):
            raise lock_error(exc, file, timeout, "opening it") from exc
        raise
    return conn


def open_database(
    path: str | Path,
    timeout: float = 30.0,
    create: bool = True,
    synchronous: str = "NORMAL",
    read_only: bool = False,
) -> sqlite3.Connection:
    """Open (and, with ``create``, initialise) the feedback database at ``path``.

    ``":memory:"`` gives a private in-memory store (no WAL). Raises
    ``FileNotFoundError`` when ``create=False`` (or ``read_only``) and the file is
    missing, :class:`FeedbackStoreError` for a file that is not a feedback store of a
    schema this version can read (or whose tables were edited), and
    ``PermissionError`` when SQLite may not write the file or its folder.
    ``read_only=True`` never writes: it reads a store in a folder this user may not
    write (a :class:`SnapshotConnection` when no writer has it open).

    Example::

        conn = open_database("feedback.sqlite", create=False)   # never makes an empty file
        conn = open_database("/srv/shared/feedback.sqlite", read_only=True)
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or pathlib.Path, got {type(path).__name__}")
    path_str = str(path)
    if "\0" in path_str:
        raise ValueError(f"path {path_str!r} contains a NUL character, which no file name can hold")
    memory = path_str == ":memory:"
    if not isinstance(synchronous, str) or synchronous.upper() not in _SYNCHRONOUS:
        raise ValueError(
            f"synchronous must be 'NORMAL' (survives a killed process) or 'FULL' (also "
            f"survives power loss), got {synchronous!r}"
        )
    if memory and read_only:
        raise ValueError(
            "read_only=True needs a database file: a new ':memory:' store is empty; pass the "
            "path of a feedback store"
        )
    if not memory:
        file = Path(path_str).expanduser()  # "~/feedback.sqlite" is in the home folder
        path_str = str(file)
        if file.is_dir():
            raise FeedbackStoreError(f"{file} is a directory; pass the path of a database file")
        refuse_odd_database_file(file)
        refuse_odd_side_files(file)
        if not file.exists():
            if not create or read_only:
                hint = "" if read_only else " (or open it with create=True to start an empty store)"
                raise FileNotFoundError(
                    f"feedback store {file} does not exist; check the path{hint}"
                )
            refuse_orphan_log(file)
            link = f" (a symbolic link to {os.readlink(file)})" if file.is_symlink() else ""
            folder = Path(os.path.realpath(file)).parent if link else file.parent
            if not folder.is_dir():
                what = "is a file, not a folder" if folder.exists() else "does not exist"
                raise FileNotFoundError(
                    f"cannot create feedback store {file}{link}: the folder {folder} {what}"
                )
        elif file.stat().st_size == 0:  # a new store's file is never empty beside a log
            refuse_orphan_log(file, "is empty (0 bytes)")
    try:
        if read_only:
            return _read_only_store(Path(path_str), timeout)
        conn = sqlite3.connect(
            path_str, timeout=timeout, isolation_level=None, check_same_thread=False
        )
    except sqlite3.OperationalError as exc:
        if is_lock(exc):
            raise lock_error(exc, path_str, timeout, "opening it") from exc
        problem = file_error(exc, path_str)
        if problem is None:
            raise
        raise problem from exc
    try:
        if not memory:  # another program's file is refused before WAL mode rewrites its header
            try:
                _check_meta(conn, path_str)
            except sqlite3.DatabaseError as exc:  # not SQLite, damaged: said below
                if is_lock(exc):  # waited the whole timeout already: not a second time
                    raise lock_error(exc, path_str, timeout, "opening it") from exc
        try:
            mode = _retry_locked(conn, "PRAGMA journal_mode=WAL", timeout).fetchone()[0]
        except sqlite3.DatabaseError as exc:
            if is_lock(exc):
                raise lock_error(exc, path_str, timeout, "switching it to WAL mode") from exc
            if file_error(exc, path_str) is not None:
                raise  # a readable store in a folder SQLite may not write: said below
            raise FeedbackStoreError(
                f"{path_str} is not a readable SQLite database ({exc}); pass the path of a "
                "feedback store, or a new file name to create one"
            ) from exc
        if not memory and str(mode).lower() != "wal":
            warnings.warn(
                f"{path_str}: SQLite could not switch to WAL mode (journal mode {mode!r}; a "
                "network file system?); concurrent readers will block writers",
                stacklevel=3,
            )
        conn.execute(_SYNCHRONOUS[synchronous.upper()])
        conn.execute("PRAGMA foreign_keys=ON")
        # a reader held open stops checkpoints, so the WAL grows while it reads; once it
        # lets go, the next checkpoint that restarts the WAL cuts the file back to this
        # (else it keeps its largest size on disk until the last connection closes)
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        if not _checked(conn, path_str):
            _retry_locked(conn, "BEGIN IMMEDIATE", timeout)
            try:
                if not _checked(conn, path_str):  # another process may have won the race
                    for statement in _DDL:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    conn.executemany(
                        "INSERT OR IGNORE INTO ragtune_meta (key, value) VALUES (?, ?)",
                        [("format", FORMAT_NAME), ("schema_version", str(SCHEMA_VERSION))],
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):  # the original error is the one to report
                        conn.execute("ROLLBACK")
                raise
        _refuse_foreign_triggers(conn, path_str)
    except BaseException as exc:
        conn.close()
        if is_lock(exc):
            raise lock_error(exc, path_str, timeout, "opening it") from exc
        problem = file_error(exc, path_str)
        if problem is not None:
            raise problem from exc
        raise
    return conn
