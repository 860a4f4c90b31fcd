"""A disk cache of document embeddings, as a LlamaIndex ``BaseEmbedding`` wrapper.

``CachedEmbedding(embed_model, cache_dir)`` answers document (text) embeddings
from a SQLite file keyed by the wrapped model's identity and a hash of each
text, and embeds only the misses (sorted by length, in large batches). Query
embeddings are never cached: they pass straight through, so query latency
measurements stay honest.

* **Model identity**: ``embed_model.cache_identity()`` when the model has one
  (:class:`~llama_index_ragtune.embeddings.OnnxEmbedding` does); otherwise the
  class name, the ``model_name`` (for a local folder: the content of its files, so a
  model retrained in place gets a new identity; for a hub id: the id) and the model's
  settings. Each identity gets its own SQLite file, so two models never share vectors.
  The store is :class:`~llama_index_ragtune.embeddings.store.EmbeddingStore`, the one
  corpus-embedding cache of the package.
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
import json
import os
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from llama_index_ragtune.embeddings.fingerprint import model_fingerprint
from llama_index_ragtune.embeddings.store import EmbeddingStore, check_texts, open_store
from llama_index_ragtune.embeddings.truncation import CutWarner, wrapped_cut_warner

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
    _cut_warner: CutWarner | None = PrivateAttr(default=None)

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
        if not isinstance(cache_dir, str | os.PathLike) or not os.fspath(cache_dir):
            raise (ValueError if isinstance(cache_dir, str | os.PathLike) else TypeError)(
                f"cache_dir must be a folder path (str or pathlib.Path), got {cache_dir!r}"
            )
        if isinstance(embed_batch_size, bool) or not isinstance(embed_batch_size, int):
            raise TypeError(f"embed_batch_size must be an int >= 1, got {embed_batch_size!r}")
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
        stem = f"{embed_model.class_name()}-{Path(embed_model.model_name or 'model').name}"
        self._store = open_store(folder, identity, stem=stem)
        self._stats = {"hits": 0, "misses": 0, "corrupt": 0}
        # a plain HuggingFaceEmbedding cuts long texts silently: say so once (truncation.py)
        self._cut_warner = wrapped_cut_warner(embed_model)

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
        self._check_cut([query], "query")
        return self._inner.get_query_embedding(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        self._check_cut([query], "query")
        return await self._inner.aget_query_embedding(query)

    def _check_cut(self, texts: list[str], kind: str) -> None:
        if self._cut_warner is not None:
            self._cut_warner.check(texts, kind)

    # ------------------------------------------------------------------ documents: cached

    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        check_texts(texts)  # positions in the whole list, before anything is embedded
        return super().get_text_embedding_batch(texts, show_progress=show_progress, **kwargs)

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        check_texts(texts)
        return await super().aget_text_embedding_batch(texts, show_progress=show_progress, **kwargs)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        def embed(misses: list[str]) -> list[Embedding]:
            self._check_cut(misses, "text")
            return self._inner.get_text_embedding_batch(misses)

        vectors, counts = self._store.fetch_or_embed(texts, embed)
        for name, count in counts.items():
            self._stats[name] += count
        return vectors.tolist()

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
