"""A SQLite store of embeddings, one file per model identity, keyed by a hash of each text.

The one corpus-embedding cache of the package: :class:`CachedEmbedding` (any
LlamaIndex embedding model), the validation evaluator of the encoder engine
(``DenseRetrievalEvaluator(cache_dir=...)``) and the hard-negative miner's dense
scorer all keep their vectors here, under an identity built from the content of
the model's weights (:mod:`~llama_index_ragtune.embeddings.fingerprint`).

* **Concurrency**: WAL mode; any number of processes read while one writes.
* **Corruption**: each vector carries a CRC32; a damaged entry is a miss, recomputed
  and overwritten; a damaged file is moved aside (``*.corrupt-<time>``) and started afresh.
* **Crash safety**: each write is one transaction. Vectors are raw float32, never pickled.

Example::

    from llama_index_ragtune.embeddings.store import open_store

    store = open_store("cache", identity="my-model|v1")
    vectors, counts = store.fetch_or_embed(["a text", "another"], embed_fn)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llama_index_ragtune._atomic_reads import path_kind

logger = logging.getLogger(__name__)

__all__ = [
    "CacheSchemaError",
    "EmbeddingStore",
    "check_texts",
    "make_folder",
    "open_store",
    "path_kind",
]

_SCHEMA_VERSION = 1
_UNWRITABLE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)


class CacheSchemaError(ValueError):
    """An embedding cache file of another schema version (kept as it is, never rewritten)."""


def open_store(cache_dir: str | os.PathLike, identity: str, stem: str = "corpus") -> EmbeddingStore:
    """The store for ``identity`` in ``cache_dir``: ``<stem>-<digest of identity>.sqlite``.

    Example::

        store = open_store("~/.cache/ragtune-embeddings", encoder_identity(model))
    """
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() else "-" for c in stem)[:60]
    return EmbeddingStore(Path(cache_dir).expanduser() / f"{safe}-{digest}.sqlite", identity)


class EmbeddingStore:
    """SQLite table ``text hash -> float32 vector`` (with CRC32) for one model identity.

    Example::

        store = EmbeddingStore("cache/corpus.sqlite", identity=model_identity(embed_model))
        vectors, counts = store.fetch_or_embed(texts, embed)   # counts: hits, misses, corrupt
    """

    def __init__(self, path: str | Path, identity: str) -> None:
        self.path = Path(path)
        self.identity = identity
        self._lock = threading.Lock()
        self._unwritable = False  # a write was refused (full disk, read-only): warned once
        try:
            make_folder(self.path.parent, "the embedding cache folder")
        except OSError as exc:
            if isinstance(exc, NotADirectoryError) or exc.errno not in _UNWRITABLE_ERRNOS:
                raise
            self._conn = self._read_only(exc)  # a read-only or another user's folder
            return
        _check_cache_file(self.path)
        self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if _is_unwritable(exc) or "unable to open" in str(exc).lower():
                return self._read_only(exc)
            if not _is_corruption(exc):
                raise
            return self._recover(exc)

    def _read_only(self, exc: Exception) -> sqlite3.Connection:
        """The cache where it cannot be written (a read-only folder or mount, another user's
        folder): its vectors read as they are (``immutable``), new ones computed and not
        stored; one warning names the folder. Never an error: the cache only saves time.
        """
        self._unwritable = True
        conn = None
        if self.path.is_file():
            try:
                conn = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?immutable=1",
                    uri=True,
                    check_same_thread=False,
                    isolation_level=None,
                )
            except sqlite3.Error:
                conn = None
            if conn is not None and not self._checked_meta(conn):
                conn = None
        logger.warning(
            "embedding cache %s cannot be written (%s): %s; make the folder writable or pass "
            "another cache folder (--embedding-cache, cache_dir=) to keep vectors across runs",
            self.path.parent,
            exc,
            "the vectors stored in it are used, new ones are computed in every run"
            if conn is not None
            else "vectors are computed in every run",
        )
        if conn is None:  # an empty store of this process alone
            conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            self._create_tables(conn)
        return conn

    def _checked_meta(self, conn: sqlite3.Connection) -> bool:
        """Whether a file opened read-only holds this store's schema and identity."""
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            conn.execute("SELECT hash, dim, crc, data FROM vectors LIMIT 1").fetchall()
        except sqlite3.DatabaseError:
            conn.close()
            return False
        if meta.get("schema") == str(_SCHEMA_VERSION) and meta.get("identity") == self.identity:
            return True
        conn.close()
        return False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path), timeout=60, check_same_thread=False, isolation_level=None
        )
        try:
            conn.execute("PRAGMA busy_timeout=60000")
            conn.execute("PRAGMA journal_mode=WAL")
            self._create_tables(conn)
        except sqlite3.Error:
            conn.close()  # not left open beside the read-only or recovered one
            raise
        schema = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0]
        if schema != str(_SCHEMA_VERSION):
            conn.close()
            raise CacheSchemaError(
                f"the embedding cache {self.path} was written with cache schema {schema!r}, and "
                f"this version of llama-index-ragtune reads schema {_SCHEMA_VERSION} only (a "
                "newer release wrote it?); nothing in it was changed. Upgrade llama-index-ragtune, "
                "or pass another cache_dir"
            )
        stored = conn.execute("SELECT value FROM meta WHERE key='identity'").fetchone()[0]
        if stored != self.identity:
            conn.close()
            raise sqlite3.DatabaseError(
                f"identity mismatch (file holds vectors of {stored[:80]!r})"
            )
        return conn

    def _create_tables(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS vectors (hash BLOB PRIMARY KEY, dim INTEGER NOT NULL, "
            "crc INTEGER NOT NULL, data BLOB NOT NULL)"
        )
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('identity', ?)", (self.identity,))
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(_SCHEMA_VERSION),))

    def _recover(self, exc: Exception) -> sqlite3.Connection:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        logger.warning(
            "embedding cache %s is unusable (%s); moved to %s and starting afresh",
            self.path,
            exc,
            aside.name,
        )
        # the write-ahead log first: a crash midway must never leave the old log beside a
        # fresh database (SQLite would replay it into the new file); each move is atomic
        for suffix in ("-wal", "-shm", ""):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
        return self._connect()

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:20]

    def get_many(self, keys: list[bytes]) -> tuple[dict[bytes, np.ndarray], int]:
        """Vectors found for ``keys`` and the number of damaged entries skipped."""
        found: dict[bytes, np.ndarray] = {}
        damaged = 0
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._query(
                    f"SELECT hash, dim, crc, CAST(data AS BLOB) FROM vectors WHERE hash IN ({marks})",
                    chunk,
                )
            for key, dim, crc, data in rows:
                vector = _decode(dim, crc, data)
                if vector is None:
                    damaged += 1
                else:
                    found[bytes(key)] = vector
        return found, damaged

    def put_many(self, items: list[tuple[bytes, np.ndarray]]) -> None:
        rows = []
        for key, vector in items:
            data = np.ascontiguousarray(vector, dtype="<f4").tobytes()
            rows.append((key, int(vector.shape[0]), zlib.crc32(data), data))
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)
                self._conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self._safe_rollback()
                if _is_unwritable(exc):  # the vectors are computed: return them uncached
                    (logger.debug if self._unwritable else logger.warning)(  # once a store
                        "embedding cache %s cannot be written (%s); %d vectors were computed "
                        "and are used but not cached: free disk space or make the file "
                        "writable (or pass another cache_dir) to cache them",
                        self.path,
                        exc,
                        len(rows),
                    )
                    self._unwritable = True
                    return
                if not _is_corruption(exc):
                    raise
                self._conn.close()
                self._conn = self._recover(exc)
                self._conn.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)

    def fetch_or_embed(
        self, texts: Sequence[str], embed: Callable[[list[str]], Any]
    ) -> tuple[np.ndarray, dict[str, int]]:
        """Vectors of ``texts`` in order: read where stored, else embedded now and stored.

        ``embed`` gets the distinct missing texts, longest first, and returns one vector
        each. Returns ``(float32 array [len(texts), dim], {"hits", "misses", "corrupt"})``.
        """
        check_texts(texts)
        keys = [self.key(t) for t in texts]
        found, damaged = self.get_many(list(dict.fromkeys(keys)))
        missing: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in found:
                missing.setdefault(key, i)
        if missing:
            order = sorted(missing.values(), key=lambda i: -len(texts[i]))
            vectors = self._checked(embed([texts[i] for i in order]), order)
            new = [(keys[i], v) for i, v in zip(order, vectors, strict=True)]
            self._check_dimension(vectors[0].shape[0], found)
            self.put_many(new)
            found.update(new)
        else:
            self._check_dimension(None, found)
        hits = sum(1 for k in keys if k not in missing)
        counts = {"hits": hits, "misses": len(missing), "corrupt": damaged}
        if not keys:
            return np.zeros((0, 0), dtype=np.float32), counts
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False), counts

    def _checked(self, vectors: Any, order: list[int]) -> list[np.ndarray]:
        """The model's vectors for the texts at positions ``order``: one each, 1-D, finite, one size."""
        arrays = [np.asarray(v, dtype=np.float32) for v in vectors]
        if len(arrays) != len(order):
            raise ValueError(
                f"the embedding model returned {len(arrays)} vectors for {len(order)} texts "
                f"(cache {self.path.name}); nothing was stored"
            )
        size = arrays[0].shape
        for i, vector in zip(order, arrays, strict=True):
            if vector.ndim != 1 or not vector.size:
                raise ValueError(
                    f"the embedding model returned a vector of shape {vector.shape} for text {i}; "
                    f"each text needs one non-empty vector (cache {self.path.name}); nothing was stored"
                )
            if vector.shape != size:
                raise ValueError(
                    f"the embedding model returned a vector of shape {vector.shape} for text {i}, "
                    f"and {size} for another; every text needs one vector of the same size "
                    f"(cache {self.path.name}); nothing was stored"
                )
            if not np.isfinite(vector).all():
                raise ValueError(
                    f"the embedding model returned NaN or infinite values for text {i} "
                    f"({len(order)} texts embedded; cache {self.path.name}); nothing was stored"
                )
        return arrays

    def _check_dimension(self, new: int | None, found: dict[bytes, np.ndarray]) -> None:
        """Refuse a file whose vectors differ in size from each other or from the model's."""
        sizes = {int(v.shape[0]) for v in found.values()}
        if new is not None:
            with self._lock:
                row = self._query("SELECT dim FROM vectors LIMIT 1", [])
            sizes |= {new} | {int(r[0]) for r in row}
        if len(sizes) > 1:
            model = f"; the model now returns {new}" if new is not None else ""
            raise ValueError(
                f"the embedding cache {self.path} holds vectors of sizes {sorted(sizes)}{model}: "
                f"it was written by another model under the same identity ({self.identity[:80]!r}). "
                "Pass a distinct identity= for each model, or delete the file"
            )

    def _query(self, sql: str, params: list) -> list:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise
            self._conn.close()
            self._conn = self._recover(exc)
            return []

    def _safe_rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def check_texts(texts: Any) -> None:
    """Refuse anything but a list of ``str`` (a plain string would be embedded letter by letter)."""
    if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"text {i} is {type(text).__name__}, not str; embed only strings "
                "(e.g. skip None, decode bytes)"
            )


def make_folder(folder: Path, what: str) -> None:
    """Create ``folder`` (and its parents); a file in the way is a ``NotADirectoryError`` naming it.

    Example::

        make_folder(Path("notes.txt/cache"), "the embedding cache folder")
        # NotADirectoryError: ... notes.txt is a file, not a folder ... (when notes.txt is a file)
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        blocker = next(
            (
                p
                for p in (folder, *folder.parents)
                if (p.exists() or p.is_symlink()) and not p.is_dir()
            ),
            folder,
        )
        raise NotADirectoryError(
            f"{what} {folder} cannot be created: {blocker} is {path_kind(blocker) or 'a file'}, "
            "not a folder; pass another cache_dir or move that file"
        ) from exc


def _check_cache_file(path: Path) -> None:
    """Refuse anything but a plain file (or nothing) at the cache file's name, naming what is
    there: a folder (``IsADirectoryError``), a device, FIFO or socket, a broken or looping
    link (``ValueError``; SQLite would block on a FIFO, or fail as "unable to open", which
    read as an unwritable folder)."""
    kind = path_kind(path)
    if kind in (None, "a file"):
        return
    if kind == "a folder":
        raise IsADirectoryError(
            f"the embedding cache file {path} is a folder; remove it or pass another cache_dir"
        )
    raise ValueError(
        f"the embedding cache file {path} is {kind}, not a file; remove it or pass another "
        "cache_dir"
    )


def _is_unwritable(exc: sqlite3.DatabaseError) -> bool:
    """The file system refusing a write (full disk, quota, read-only file, I/O error)."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and any(
        cause in text for cause in ("disk is full", "readonly", "read-only", "disk i/o error")
    )


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """A damaged or foreign file (recoverable by starting afresh), not a lock or a full disk."""
    text = str(exc).lower()
    if "malformed" in text or "not a database" in text or "identity mismatch" in text:
        return True
    return not isinstance(exc, sqlite3.OperationalError)


def _decode(dim: int, crc: int, data: bytes) -> np.ndarray | None:
    if not isinstance(data, bytes) or len(data) != 4 * dim or zlib.crc32(data) != crc:
        return None
    vector = np.frombuffer(data, dtype="<f4")
    return vector if np.isfinite(vector).all() else None
