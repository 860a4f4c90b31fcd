"""A FAISS vector store that honours LlamaIndex ``MetadataFilters`` exactly.

``llama-index-vector-stores-faiss`` raises on any filter. This subclass keeps
each vector's filterable metadata beside the FAISS index, compiles a filter to
an allowed-id mask once (cached), and lets FAISS search only those ids
(``SearchParameters(sel=IDSelectorBitmap)``), so the top-k is computed among
allowed vectors: no over-fetching, no filtered-out node, no missing hits. It
also adds whole batches at once and L2-normalises vectors (inner product =
cosine) unless told not to.

Example::

    import faiss
    from llama_index.core import StorageContext, VectorStoreIndex

    store = FilterableFaissVectorStore(faiss.IndexFlatIP(384))
    index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store))
    retriever = index.as_retriever(filters=MetadataFilters(filters=[MetadataFilter(key="store", value="grocery")]))
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryResult
from llama_index.vector_stores.faiss import FaissVectorStore

from llama_index_ragtune._atomic import atomic_path, atomic_write_text, sha256_file
from llama_index_ragtune.retrievers.filters import FilterMaskCache, filter_key, filterable_metadata
from llama_index_ragtune.retrievers.persistence import PersistenceError, field

__all__ = ["FilterableFaissVectorStore"]

METADATA_SUFFIX = ".metadata.json"


class FilterableFaissVectorStore(FaissVectorStore):
    """``FaissVectorStore`` with exact metadata filtering and batched, normalised adds.

    Args:
        faiss_index: a FAISS index whose ids are positions (e.g. ``IndexFlatIP``).
        metadata: filterable metadata per stored vector (restored by ``from_persist_path``).
        normalize: L2-normalise added vectors and queries (use with inner-product indexes).
    """

    normalize: bool = True
    _masks: FilterMaskCache = PrivateAttr()
    _selectors: dict = PrivateAttr(default_factory=dict)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    def __init__(
        self, faiss_index: Any, metadata: list[dict[str, Any]] | None = None, normalize: bool = True
    ) -> None:
        super().__init__(faiss_index=faiss_index)
        self.normalize = normalize
        metadata = list(metadata or [])
        if metadata and len(metadata) != faiss_index.ntotal:
            raise ValueError(
                f"FilterableFaissVectorStore got {len(metadata)} metadata entries for {faiss_index.ntotal} vectors"
            )
        if not metadata and faiss_index.ntotal:
            metadata = [{} for _ in range(faiss_index.ntotal)]
        self._masks = FilterMaskCache(metadata)

    @classmethod
    def class_name(cls) -> str:
        return "FilterableFaissVectorStore"

    # ------------------------------------------------------------------ writes

    def add(self, nodes: list[BaseNode], **add_kwargs: Any) -> list[str]:
        """Add the nodes' embeddings in one batch; returns their positional ids."""
        if not nodes:
            return []
        vectors = np.asarray([node.get_embedding() for node in nodes], dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self._faiss_index.d:
            raise ValueError(
                f"embeddings of shape {vectors.shape[1:]} do not fit the FAISS index of dimension {self._faiss_index.d}; "
                "the embedding model and the index disagree"
            )
        if self.normalize:
            vectors = _normalize(vectors)
        with self._lock:
            start = self._faiss_index.ntotal
            self._faiss_index.add(vectors)
            self._masks.extend([filterable_metadata(node) for node in nodes])
            self._selectors.clear()
        return [str(start + i) for i in range(len(nodes))]

    # ------------------------------------------------------------------ reads

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Top ``similarity_top_k`` among the vectors passing ``query.filters``."""

        if query.query_embedding is None:
            raise ValueError(
                "FilterableFaissVectorStore.query needs query.query_embedding (embed the query "
                "first; retrievers such as HybridRetriever return no results for an empty query)"
            )
        vector = np.asarray(query.query_embedding, dtype=np.float32)[np.newaxis, :]
        if self.normalize:
            vector = _normalize(vector)
        top_k = int(query.similarity_top_k)
        params = None
        if query.filters is not None and query.filters.filters:
            allowed, params = self._selector(query.filters)
            top_k = min(top_k, allowed)
        top_k = min(top_k, self._faiss_index.ntotal)
        if top_k <= 0:
            return VectorStoreQueryResult(similarities=[], ids=[], nodes=None)
        if params is None:
            scores, ids = self._faiss_index.search(vector, top_k)
        else:
            scores, ids = self._faiss_index.search(vector, top_k, params=params)
        keep = ids[0] >= 0
        return VectorStoreQueryResult(
            similarities=[float(s) for s in scores[0][keep]],
            ids=[str(int(i)) for i in ids[0][keep]],
        )

    def _selector(self, filters: Any) -> tuple[int, Any]:
        """(number of allowed vectors, cached faiss SearchParameters selecting them)."""
        import faiss

        key = filter_key(filters)
        with self._lock:
            hit = self._selectors.get(key)
        if hit is not None:
            return hit[0], hit[1]
        mask = self._masks.mask(filters)
        bitmap = np.packbits(mask, bitorder="little")
        selector = faiss.IDSelectorBitmap(bitmap)
        params = faiss.SearchParameters(sel=selector)
        entry = (int(mask.sum()), params, selector, bitmap)  # keep the buffers alive
        with self._lock:
            if len(self._selectors) >= 64:
                self._selectors.pop(next(iter(self._selectors)))
            self._selectors[key] = entry
        return entry[0], entry[1]

    # ------------------------------------------------------------------ persistence

    def persist(self, persist_path: str = "", fs: Any = None) -> None:
        """Write the FAISS index and, beside it, the metadata used by filters (each atomically).

        The metadata file records the SHA-256 of the FAISS file, so a pair of files from
        two different ``persist`` calls (e.g. after a crash between the two writes) is
        refused by :meth:`from_persist_path`.
        """
        import faiss

        if fs is not None and type(fs).__name__ != "LocalFileSystem":
            raise NotImplementedError("FilterableFaissVectorStore persists to local files only")
        path = Path(persist_path)
        with atomic_path(path) as tmp:
            faiss.write_index(self._faiss_index, os.fspath(tmp))
        payload = {
            "normalize": self.normalize,
            "metadata": self._masks.metadata,
            "faiss_sha256": sha256_file(path),
            "index_type": type(self._faiss_index).__name__,
        }
        atomic_write_text(Path(persist_path + METADATA_SUFFIX), json.dumps(payload, default=str))

    @classmethod
    def from_persist_path(cls, persist_path: str, fs: Any = None) -> FilterableFaissVectorStore:
        """Load what :meth:`persist` wrote (FAISS' own binary format: nothing is unpickled)."""
        return cls._load(Path(persist_path), verify=True)

    @classmethod
    def _load(cls, path: Path, verify: bool) -> FilterableFaissVectorStore:
        import faiss

        fix = "rebuild the index and persist again"
        if not path.is_file():
            raise PersistenceError(f"{path} (the FAISS index) is missing; {fix}")
        meta_path = Path(f"{path}{METADATA_SUFFIX}")
        if not meta_path.is_file():
            raise PersistenceError(
                f"{meta_path} (metadata for filters) is missing beside {path.name}; it was not written by "
                f"FilterableFaissVectorStore.persist — {fix}"
            )
        try:
            payload = json.loads(meta_path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as exc:
            raise PersistenceError(f"{meta_path} is corrupt ({exc}); {fix}") from exc
        if not isinstance(payload, dict):
            raise PersistenceError(f"{meta_path} is corrupt (not a JSON object); {fix}")
        metadata = field(payload, "metadata", (list,), meta_path, fix, where="")
        normalize = field(payload, "normalize", (bool,), meta_path, fix, where="")
        digest = field(payload, "faiss_sha256", (str, type(None)), meta_path, fix, "", None)
        if not all(isinstance(m, dict) for m in metadata):
            raise PersistenceError(f"{meta_path} is corrupt: 'metadata' must list objects; {fix}")
        if verify and digest is not None and sha256_file(path) != digest:
            raise PersistenceError(
                f"{path} does not match the SHA-256 recorded in {meta_path.name}: the two files come "
                f"from different persist() calls, or the index was edited; {fix}"
            )
        try:
            index = faiss.read_index(os.fspath(path))
        except RuntimeError as exc:
            raise PersistenceError(f"{path} is not a readable FAISS index ({exc}); {fix}") from exc
        if len(metadata) != index.ntotal:
            raise PersistenceError(
                f"{meta_path} lists {len(metadata)} vectors but {path.name} holds {index.ntotal}: the files come "
                f"from different indexes; {fix}"
            )
        return cls(faiss_index=index, metadata=metadata, normalize=normalize)


def _normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
