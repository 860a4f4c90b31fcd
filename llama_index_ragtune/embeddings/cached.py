"""A disk cache of document embeddings, as a LlamaIndex ``BaseEmbedding`` wrapper.

``CachedEmbedding(embed_model, cache_dir)`` answers document (text) embeddings
from a SQLite file keyed by the wrapped model's identity and a hash of each
text, and embeds only the misses (sorted by length, in large batches). Query
embeddings are never cached: they pass straight through, so query latency
measurements stay honest.

* **Model identity**: ``embed_model.cache_identity()`` when the model has one
  (:class:`~llama_index_ragtune.embeddings.OnnxEmbedding` does); otherwise the
  class name, the ``model_name`` (for a local folder: its files' names, sizes and
  mtimes; for a hub id: the id) and the model's settings. Each identity gets its
  own SQLite file, so two models never share vectors.
* **Concurrency**: SQLite in WAL mode; any number of processes can read while
  one writes.
* **Corruption**: every vector is stored with a CRC32; a damaged entry (bad
  checksum, wrong length, non-finite values) is treated as a miss, recomputed
  and overwritten. A damaged database file is moved aside
  (``*.corrupt-<time>``, its write-ahead log first) and a fresh one is started.
* **Crash safety**: every write is one SQLite transaction (WAL journal), so a
  process killed mid-write leaves the cache as it was before that batch; no
  other file is written. Vectors are stored as raw float32 bytes, never pickled.

Example::

    from llama_index_ragtune.embeddings import CachedEmbedding, OnnxEmbedding

    embed = CachedEmbedding(OnnxEmbedding(), cache_dir="~/.cache/ragtune-embeddings")
    vectors = embed.get_text_embedding_batch(texts)   # computed once
    vectors = embed.get_text_embedding_batch(texts)   # read from disk
    embed.stats                                       # {'hits': ..., 'misses': ..., 'corrupt': 0}
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from llama_index_ragtune.embeddings.onnx_export import model_fingerprint

logger = logging.getLogger(__name__)

__all__ = ["CachedEmbedding", "EmbeddingStore", "model_identity"]

_VOLATILE_FIELDS = {
    "callback_manager",
    "embed_batch_size",
    "num_workers",
    "show_progress_bar",
    "cache_folder",
    "embeddings_cache",
    "rate_limiter",
    "class_name",
    "device",
    "parallel_process",
    "target_devices",
    "num_threads",
    "onnx_dir",
}
_SCHEMA_VERSION = 1


def model_identity(embed_model: BaseEmbedding) -> str:
    """A string that changes whenever ``embed_model`` would produce different document vectors."""
    own = getattr(embed_model, "cache_identity", None)
    if callable(own):
        return str(own())
    settings = {k: v for k, v in embed_model.to_dict().items() if k not in _VOLATILE_FIELDS}
    name = str(getattr(embed_model, "model_name", "") or "")
    return (
        f"{embed_model.class_name()}|{model_fingerprint(name) if name else 'unnamed'}|"
        + json.dumps(settings, sort_keys=True, default=str)
    )


class EmbeddingStore:
    """SQLite table ``text hash -> float32 vector`` (with CRC32) for one model identity."""

    def __init__(self, path: str | Path, identity: str) -> None:
        self.path = Path(path)
        self.identity = identity
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise
            return self._recover(exc)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path), timeout=60, check_same_thread=False, isolation_level=None
        )
        conn.execute("PRAGMA busy_timeout=60000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS vectors (hash BLOB PRIMARY KEY, dim INTEGER NOT NULL, "
            "crc INTEGER NOT NULL, data BLOB NOT NULL)"
        )
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('identity', ?)", (self.identity,))
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(_SCHEMA_VERSION),))
        stored = conn.execute("SELECT value FROM meta WHERE key='identity'").fetchone()[0]
        if stored != self.identity:
            conn.close()
            raise sqlite3.DatabaseError(
                f"identity mismatch (file holds vectors of {stored[:80]!r})"
            )
        return conn

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
                if not _is_corruption(exc):
                    raise
                self._conn.close()
                self._conn = self._recover(exc)
                self._conn.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)

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


class CachedEmbedding(BaseEmbedding):
    """Wrap any ``BaseEmbedding`` with an on-disk cache of its document embeddings.

    Args:
        embed_model: the model whose document vectors are cached.
        cache_dir: folder of the cache files (one SQLite file per model identity).
        identity: override the automatic model identity (see :func:`model_identity`).
        embed_batch_size: texts looked up per batch (misses are embedded with the
            wrapped model's own batch size).
    """

    cache_dir: str = Field(description="Folder holding one SQLite cache file per model identity.")
    identity: str = Field(description="What the wrapped model's vectors depend on (the cache key).")
    _inner: BaseEmbedding = PrivateAttr()
    _store: EmbeddingStore = PrivateAttr()
    _stats: dict = PrivateAttr(default_factory=dict)

    def __init__(
        self,
        embed_model: BaseEmbedding,
        cache_dir: str | os.PathLike,
        identity: str | None = None,
        embed_batch_size: int = 2048,
        **kwargs: Any,
    ) -> None:
        if not isinstance(embed_model, BaseEmbedding):
            raise TypeError(
                f"CachedEmbedding wraps a LlamaIndex BaseEmbedding, got {type(embed_model).__name__}"
            )
        identity = identity or model_identity(embed_model)
        folder = Path(cache_dir).expanduser()
        super().__init__(
            model_name=embed_model.model_name,
            embed_batch_size=embed_batch_size,
            callback_manager=embed_model.callback_manager,
            cache_dir=str(folder),
            identity=identity,
            **kwargs,
        )
        self._inner = embed_model
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        stem = "".join(
            c if c.isalnum() else "-"
            for c in f"{embed_model.class_name()}-{Path(embed_model.model_name or 'model').name}"
        )
        self._store = EmbeddingStore(folder / f"{stem[:60]}-{digest}.sqlite", identity)
        self._stats = {"hits": 0, "misses": 0, "corrupt": 0}

    @classmethod
    def class_name(cls) -> str:
        return "CachedEmbedding"

    @property
    def inner(self) -> BaseEmbedding:
        """The wrapped embedding model."""
        return self._inner

    @property
    def store(self) -> EmbeddingStore:
        return self._store

    @property
    def stats(self) -> dict[str, int]:
        """Counts since creation: cache ``hits``, ``misses`` (embedded now), ``corrupt`` entries recomputed."""
        return dict(self._stats)

    def cache_identity(self) -> str:
        return self.identity

    # ------------------------------------------------------------------ queries: never cached

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._inner.get_query_embedding(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await self._inner.aget_query_embedding(query)

    # ------------------------------------------------------------------ documents: cached

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        keys = [EmbeddingStore.key(t) for t in texts]
        found, damaged = self._store.get_many(list(dict.fromkeys(keys)))
        missing = [i for i, k in enumerate(keys) if k not in found]
        unique_missing: dict[bytes, int] = {}
        for i in missing:
            unique_missing.setdefault(keys[i], i)
        if unique_missing:
            order = sorted(unique_missing.values(), key=lambda i: -len(texts[i]))
            vectors = self._inner.get_text_embedding_batch([texts[i] for i in order])
            new = [
                (keys[i], np.asarray(v, dtype=np.float32))
                for i, v in zip(order, vectors, strict=True)
            ]
            self._store.put_many(new)
            found.update(new)
        self._stats["hits"] += len(texts) - len(missing)
        self._stats["misses"] += len(unique_missing)
        self._stats["corrupt"] += damaged
        return [found[k].tolist() for k in keys]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
