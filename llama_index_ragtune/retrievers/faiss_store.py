"""A FAISS vector store that honours LlamaIndex ``MetadataFilters`` exactly, on any index type.

``llama-index-vector-stores-faiss`` raises on any filter. This subclass keeps
each vector's filterable metadata beside the FAISS index, compiles a filter to
an allowed-id mask once (cached), and lets FAISS search only those ids
(``IDSelectorBitmap`` in the search parameters), so the top-k is computed among
allowed vectors: no over-fetching, no filtered-out node, no missing hits. It
also adds whole batches at once and L2-normalises vectors (inner product =
cosine) unless told not to.

Filters on approximate indexes (HNSW, IVF, IVF-PQ; see
:class:`~llama_index_ragtune.retrievers.FaissIndexConfig`): every returned vector
passes the filter (the selector is applied inside FAISS' search), and the result is
filled to ``min(similarity_top_k, allowed vectors)``:

* a filter passing at most ``exhaustive_below`` vectors (default 20,000) is answered
  by scanning exactly those vectors: HNSW scans its flat vector storage (exact), IVF
  probes every list (exact for IVF-Flat, product-quantised scores for IVF-PQ);
* a broader filter runs the approximate search with its breadth widened by the
  inverse of the allowed fraction (``efSearch`` up to 1,024, ``nprobe`` up to
  ``nlist``), because a graph or list search finds allowed neighbours at that
  rate; recall stays close to the unfiltered recall (measured in
  ``benchmarks/scale.py``);
* when that search still returns fewer than top-k hits (e.g. a small IVF list set),
  the query is repeated as the exhaustive scan above. The same fallback fills
  unfiltered queries that an IVF index answers short.

Threads: searches run side by side; an ``add`` (FAISS grows the index in place, so a
search reading it meanwhile would read freed memory and crash the process) and the swap
of ``keep_positions`` wait for the searches running and hold back new ones; changes
run one at a time.

Example::

    import faiss
    from llama_index.core import StorageContext, VectorStoreIndex

    store = FilterableFaissVectorStore(faiss.IndexFlatIP(384))
    index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store))
    retriever = index.as_retriever(filters=MetadataFilters(filters=[MetadataFilter(key="store", value="grocery")]))
"""

from __future__ import annotations

import json
import math
import numbers
import threading
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryResult
from llama_index.vector_stores.faiss import FaissVectorStore

from llama_index_ragtune._atomic import atomic_write_text, sha256_file
from llama_index_ragtune.retrievers.checks import check_filter_keys
from llama_index_ragtune.retrievers.faiss_index import (
    MAX_EF_SEARCH,
    MAX_NPROBE,
    FaissIndexConfig,
    index_kind,
)
from llama_index_ragtune.retrievers.faiss_persist import (
    METADATA_SUFFIX,
    check_metadata_size,
    header_vector_count,
    nonfinite_vectors,
    read_faiss_file,
    read_metadata_bytes,
    write_faiss_file,
)
from llama_index_ragtune.retrievers.filters import FilterMaskCache, filter_key, filterable_metadata
from llama_index_ragtune.retrievers.persist_errors import read_only_as_persistence_error
from llama_index_ragtune.retrievers.persist_files import not_a_file
from llama_index_ragtune.retrievers.persistence import (
    PersistenceError,
    check_json_mapping,
    field,
    loads_unique_keys,
)

__all__ = ["FilterableFaissVectorStore", "read_faiss_file", "write_faiss_file"]
#: Widest ``efSearch`` a filtered HNSW query is given (see the module docstring).
MAX_FILTERED_EF_SEARCH = 1024


def _search_lock() -> Any:
    """Searches of one FAISS index share it; an add or the swap of a delete waits for
    those running and holds back new ones (the hybrid retriever's readers/writer lock)."""
    from llama_index_ragtune.retrievers.hybrid_update import SidesLock

    return SidesLock()


class FilterableFaissVectorStore(FaissVectorStore):
    """``FaissVectorStore`` with exact metadata filtering and batched, normalised adds.

    Args:
        faiss_index: a FAISS index whose ids are positions: ``IndexFlatIP``, ``IndexHNSWFlat``,
            ``IndexIVFFlat``, ``IndexIVFPQ`` (IVF ones trained), e.g. from
            :meth:`FaissIndexConfig.build <llama_index_ragtune.retrievers.FaissIndexConfig.build>`.
        metadata: filterable metadata per stored vector (restored by ``from_persist_path``).
        normalize: L2-normalise added vectors and queries (use with inner-product indexes).
        exhaustive_below: on approximate indexes, filters passing at most this many vectors
            are answered by an exhaustive scan of them (module docstring).
        config: the config the index was built from (recorded by ``persist``; what the
            index itself does not store, e.g. ``train_size``).
    """

    normalize: bool = True
    exhaustive_below: int = 20_000
    _masks: FilterMaskCache = PrivateAttr()
    _selectors: dict = PrivateAttr(default_factory=dict)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)
    _searches: Any = PrivateAttr(default_factory=_search_lock)
    _change: Any = PrivateAttr(default_factory=threading.Lock)
    _kind: str = PrivateAttr(default="flat")
    _node_ids: list = PrivateAttr(default_factory=list)  # per position; None once loaded
    _config: Any = PrivateAttr(default=None)

    def __init__(
        self,
        faiss_index: Any,
        metadata: list[dict[str, Any]] | None = None,
        normalize: bool = True,
        exhaustive_below: int = 20_000,
        config: FaissIndexConfig | None = None,
    ) -> None:
        super().__init__(faiss_index=faiss_index)
        self.normalize = normalize
        if isinstance(exhaustive_below, bool) or not isinstance(exhaustive_below, int):
            raise TypeError(f"exhaustive_below must be an integer, got {exhaustive_below!r}")
        self.exhaustive_below = max(0, exhaustive_below)
        self._kind = index_kind(faiss_index)
        if config is not None and not isinstance(config, FaissIndexConfig):
            raise TypeError(
                f"config must be a FaissIndexConfig or None, got {type(config).__name__}"
            )
        self._config = config
        metadata = list(metadata or [])
        if metadata and len(metadata) != faiss_index.ntotal:
            raise ValueError(
                f"FilterableFaissVectorStore got {len(metadata)} metadata entries for {faiss_index.ntotal} vectors"
            )
        if not metadata and faiss_index.ntotal:
            metadata = [{} for _ in range(faiss_index.ntotal)]
        self._masks = FilterMaskCache(metadata, owner="FilterableFaissVectorStore (FAISS)")
        self._node_ids = [None] * len(metadata)

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
        if not self._faiss_index.is_trained:
            raise ValueError(
                f"the FAISS index {type(self._faiss_index).__name__} is not trained; train it on the "
                "corpus vectors first (FaissIndexConfig.build(vectors, add=False) does)"
            )
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            bad = [nodes[i].node_id for i in np.flatnonzero(~finite)[:5]]
            raise ValueError(
                f"FilterableFaissVectorStore.add: the embeddings of {int((~finite).sum())} node(s) "
                f"hold NaN or infinite values (e.g. {bad}); nothing was added (such a vector is "
                "never found by a search). Check the embedding model's output for these texts"
            )
        if self.normalize:
            vectors = _normalize(vectors)
        # FAISS grows the index in place: a search reading it meanwhile reads freed memory
        # (a segmentation fault), so the add waits for running searches and holds new ones
        with self._change, self._searches.writing(), self._lock:
            start = self._faiss_index.ntotal
            self._faiss_index.add(vectors)
            self._masks.extend([filterable_metadata(node) for node in nodes])
            self._node_ids.extend(node.node_id for node in nodes)
            self._selectors.clear()
        return [str(start + i) for i in range(len(nodes))]

    def keep_positions(self, positions: list[int]) -> None:
        """Keep only the vectors at ``positions`` (in that order): they become positions 0..n-1.

        What deleting nodes costs here: the kept vectors are copied out and added to an
        emptied copy of the index (an HNSW graph is rebuilt; IVF lists keep their trained
        centroids), O(vectors kept). IVF-PQ stores lossy codes, so its vectors cannot be
        re-added unchanged: refused, naming the fix. Each position must be a stored one, given
        once (``TypeError`` / ``ValueError`` naming it; nothing changed). Not while queries run.

        Example::

            store.keep_positions([0, 2])   # drops the vector at position 1
        """
        with self._change:  # one change at a time: an add meanwhile would be dropped
            self._keep_positions(_checked_positions(positions, int(self._faiss_index.ntotal)))

    def _keep_positions(self, positions: list[int]) -> None:
        import faiss

        index = self._faiss_index
        if self._kind == "ivfpq":
            raise ValueError(
                "nodes cannot be deleted from an IVF-PQ FAISS index (its vectors are stored as "
                "lossy codes and could not be re-added unchanged); rebuild the retriever with "
                "HybridRetriever.from_defaults(nodes=...) over the nodes to keep"
            )
        keep = np.asarray(positions, dtype=np.int64)
        source = index
        if self._kind == "ivf":  # reconstruct needs the id -> list map, made on a copy
            source = faiss.clone_index(index)
            faiss.extract_index_ivf(source).make_direct_map()
        try:
            vectors = source.reconstruct_batch(keep) if len(keep) else None
        except RuntimeError as exc:
            raise ValueError(
                f"the FAISS index {type(index).__name__} cannot return its stored vectors ({exc}), "
                "so nodes cannot be deleted from it; rebuild the retriever with "
                "HybridRetriever.from_defaults(nodes=...) over the nodes to keep"
            ) from exc
        fresh = faiss.clone_index(index)
        fresh.reset()
        if vectors is not None:
            fresh.add(np.ascontiguousarray(vectors, dtype=np.float32))
        metadata, node_ids = self._masks.metadata, self._node_ids
        with self._searches.writing(), self._lock:  # searches see the old or the new index
            self._faiss_index = fresh
            self._masks = FilterMaskCache(
                [metadata[int(i)] for i in keep], owner="FilterableFaissVectorStore (FAISS)"
            )
            self._node_ids = [node_ids[int(i)] for i in keep]
            self._selectors.clear()

    # ------------------------------------------------------------------ reads

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Top ``similarity_top_k`` among the vectors passing ``query.filters``."""

        if query.query_embedding is None:
            raise ValueError(
                "FilterableFaissVectorStore.query needs query.query_embedding (embed the query "
                "first; retrievers such as HybridRetriever return no results for an empty query)"
            )
        vector = np.asarray(query.query_embedding, dtype=np.float32)
        if vector.ndim != 1 or vector.shape[0] != self._faiss_index.d:
            raise ValueError(
                f"the query embedding has shape {tuple(vector.shape)} but the index holds "
                f"{self._faiss_index.d}-d vectors; embed the query with the index's embedding model"
            )
        if not np.isfinite(vector).all():
            raise ValueError(
                "the query embedding holds NaN or infinite values; check the embedding model"
            )
        vector = vector[np.newaxis, :]
        if self.normalize:
            vector = _normalize(vector)
        with self._searches.reading():  # an add waits (module docstring: Threads)
            return self._query(vector, query)

    def _query(self, vector: np.ndarray, query: VectorStoreQuery) -> VectorStoreQueryResult:
        top_k = int(query.similarity_top_k)
        entry = None
        if query.filters is not None and query.filters.filters:
            entry = self._selector(query.filters)
            top_k = min(top_k, entry["allowed"])
        top_k = min(top_k, self._faiss_index.ntotal)
        if top_k <= 0:
            return VectorStoreQueryResult(similarities=[], ids=[], nodes=None)
        scores, ids = self._search(vector, top_k, entry)
        keep = ids[0] >= 0
        return VectorStoreQueryResult(
            similarities=[float(s) for s in scores[0][keep]],
            ids=[str(int(i)) for i in ids[0][keep]],
        )

    def _search(self, vector: np.ndarray, top_k: int, entry: dict | None) -> tuple[Any, Any]:
        """Search policy of the module docstring: exact, widened approximate, exhaustive fallback."""
        index = self._faiss_index
        if self._kind in ("flat", "other"):
            if entry is None:
                return index.search(vector, top_k)
            return index.search(vector, top_k, params=entry["exact"])
        if entry is None:
            scores, ids = index.search(vector, top_k)
        elif entry["approx"] is not None:
            scores, ids = index.search(vector, top_k, params=entry["approx"])
        else:  # a narrow filter: scan its vectors
            return self._exhaustive(vector, top_k, entry)
        if int((ids[0] >= 0).sum()) >= top_k:
            return scores, ids
        return self._exhaustive(vector, top_k, entry)

    def _exhaustive(self, vector: np.ndarray, top_k: int, entry: dict | None) -> tuple[Any, Any]:
        import faiss

        index = self._faiss_index
        if self._kind == "hnsw":
            storage = faiss.downcast_index(index.storage)
            params = None if entry is None else entry["exact"]
            return storage.search(vector, top_k, params=params)
        sel = None if entry is None else entry["selector"]
        params = faiss.SearchParametersIVF(sel=sel, nprobe=int(index.nlist))
        return index.search(vector, top_k, params=params)

    def set_search_params(self, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Change the query-time breadth of an approximate index.

        ``ef_search``: HNSW candidate list size (1 to ``MAX_EF_SEARCH``); ``nprobe``: IVF
        lists scanned (1 to ``MAX_NPROBE``, capped at ``nlist``). A parameter the index does
        not have, or a value out of range, raises ``ValueError`` naming it; nothing changes.
        The change waits for running searches and searches started meanwhile wait for it,
        so each search runs wholly with the old settings or wholly with the new ones.

        Example::

            retriever.index.vector_store.set_search_params(ef_search=256)
        """
        checked = {}
        for name, value, top in (
            ("ef_search", ef_search, MAX_EF_SEARCH),
            ("nprobe", nprobe, MAX_NPROBE),
        ):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
            if value > top:
                raise ValueError(
                    f"{name} must be at most {top:,}, got {value!r} (a larger search breadth "
                    "allocates per query: ef_search=2**31-1 took 16 GB and 28 s for one query)"
                )
            checked[name] = int(value)
        index = self._faiss_index
        if "ef_search" in checked and self._kind != "hnsw":
            raise ValueError(
                f"ef_search applies to HNSW indexes; this store holds {type(index).__name__}"
            )
        if "nprobe" in checked and self._kind not in ("ivf", "ivfpq"):
            raise ValueError(
                f"nprobe applies to IVF indexes; this store holds {type(index).__name__}"
            )
        # a search reads these settings throughout: it runs with the old ones or the new ones
        with self._searches.writing(), self._lock:
            index = self._faiss_index  # a delete meanwhile may have swapped the index
            if "ef_search" in checked:
                index.hnsw.efSearch = checked["ef_search"]
            if "nprobe" in checked:
                index.nprobe = min(checked["nprobe"], int(index.nlist))
            self._selectors.clear()

    def index_config(self) -> FaissIndexConfig | None:
        """The :class:`~llama_index_ragtune.retrievers.FaissIndexConfig` of the held index, with its
        current search settings (``None`` for FAISS index types outside the four kinds).

        Example::

            store.index_config().kind  # 'hnsw'
        """
        return FaissIndexConfig.from_index(self._faiss_index, base=self._config)

    def search_params(self) -> dict[str, int]:
        """The index's query-time settings: ``{"ef_search": ...}`` or ``{"nprobe": ...}`` (``{}``: exact).

        Example::

            retriever.index.vector_store.search_params()  # {'ef_search': 128}
        """
        if self._kind == "hnsw":
            return {"ef_search": int(self._faiss_index.hnsw.efSearch)}
        if self._kind in ("ivf", "ivfpq"):
            return {"nprobe": int(self._faiss_index.nprobe)}
        return {}

    def _selector(self, filters: Any) -> dict[str, Any]:
        """Cached per filter: allowed count, the selector and the search parameters using it.

        A filter that can never match as meant is a ``ValueError`` naming it (``checks.
        check_filter_keys``: NaN, a key no vector's metadata holds, ``"1"`` for numbers)."""
        import faiss

        key = filter_key(filters)
        with self._lock:
            hit = self._selectors.get(key)
        if hit is not None:
            return hit
        if len(self._masks):  # as the hybrid retriever checks them: never a silent nothing
            check_filter_keys(
                filters, self._masks.keys, "FilterableFaissVectorStore", self._masks.value_kinds
            )
        mask = self._masks.mask(filters)
        bitmap = np.packbits(mask, bitorder="little")
        selector = faiss.IDSelectorBitmap(bitmap)
        allowed = int(mask.sum())
        entry = {
            "allowed": allowed,
            "selector": selector,
            "exact": faiss.SearchParameters(sel=selector),
            "approx": self._approx_params(selector, allowed),
            "buffers": bitmap,  # keeps the bitmap alive while FAISS reads it
        }
        with self._lock:
            if len(self._selectors) >= 64:
                self._selectors.pop(next(iter(self._selectors)))
            self._selectors[key] = entry
        return entry

    def _approx_params(self, selector: Any, allowed: int) -> Any:
        """Widened approximate-search parameters, or ``None`` when the filter is narrow enough
        for an exhaustive scan (or the index is exact)."""
        import faiss

        index = self._faiss_index
        if self._kind not in ("hnsw", "ivf", "ivfpq") or allowed <= self.exhaustive_below:
            return None
        widen = index.ntotal / max(allowed, 1)
        if self._kind == "hnsw":
            ef = int(index.hnsw.efSearch)
            ef = min(max(ef, math.ceil(ef * widen)), max(ef, MAX_FILTERED_EF_SEARCH))
            return faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
        nprobe = min(int(index.nlist), math.ceil(int(index.nprobe) * widen))
        return faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)

    # ------------------------------------------------------------------ persistence

    def persist(self, persist_path: str = "", fs: Any = None) -> None:
        """Write the FAISS index and, beside it, the metadata used by filters (each atomically).

        The metadata file records the SHA-256 of the FAISS file, so a pair of files from
        two different ``persist`` calls (e.g. after a crash between the two writes) is
        refused by :meth:`from_persist_path`. Metadata over what a loader reads
        (:func:`~llama_index_ragtune.retrievers.faiss_persist.metadata_cap`) is refused
        before anything is written, and so is metadata JSON would not give back as it is
        (``bytes``, a ``set``, a ``date``, a key that is not a ``str``): a ``TypeError``
        naming the node and key. A folder that cannot be written (read-only) is a
        ``PersistenceError`` naming it. An ``add`` on another thread waits for the persist
        (and the persist for it), so the two files always hold the same vectors.
        """
        if fs is not None and type(fs).__name__ != "LocalFileSystem":
            raise NotImplementedError("FilterableFaissVectorStore persists to local files only")
        path = Path(persist_path)
        # a persist reads the index and the metadata as one: an add on another thread waits
        with self._searches.reading():
            metadata = list(self._masks.metadata)
            node_ids = list(self._node_ids)[: len(metadata)]
            node_ids += [None] * (len(metadata) - len(node_ids))
            for position, (mapping, node_id) in enumerate(zip(metadata, node_ids, strict=True)):
                owner = (
                    f"the vector at position {position}"
                    if node_id is None
                    else f"node {node_id!r} (position {position})"
                )
                check_json_mapping(mapping, owner, "FilterableFaissVectorStore.persist")
            text = json.dumps({"metadata": metadata})
            check_metadata_size(text, metadata, int(self._faiss_index.ntotal))
            with read_only_as_persistence_error(path, "FilterableFaissVectorStore.persist"):
                write_faiss_file(self._faiss_index, path)
                payload = {
                    "normalize": self.normalize,
                    "metadata": metadata,
                    "faiss_sha256": sha256_file(path),
                    "index_type": type(self._faiss_index).__name__,
                    "exhaustive_below": self.exhaustive_below,
                }
                atomic_write_text(Path(f"{path}{METADATA_SUFFIX}"), json.dumps(payload))

    @classmethod
    def from_persist_path(cls, persist_path: str, fs: Any = None) -> FilterableFaissVectorStore:
        """Load what :meth:`persist` wrote (FAISS' own binary format: nothing is unpickled)."""
        return cls._load(Path(persist_path), verify=True)

    @classmethod
    def _load(cls, path: Path, verify: bool) -> FilterableFaissVectorStore:
        fix = "rebuild the index and persist again"
        if not path.is_file():
            raise PersistenceError(f"{path} (the FAISS index) is {not_a_file(path)}; {fix}")
        meta_path = Path(f"{path}{METADATA_SUFFIX}")
        if not meta_path.is_file():
            what = not_a_file(meta_path)
            raise PersistenceError(
                f"{meta_path} (metadata for filters) is {what} beside {path.name}"
                + (
                    "; it was not written by FilterableFaissVectorStore.persist"
                    if what == "missing"
                    else ""
                )
                + f" — {fix}"
            )
        actual = sha256_file(path) if verify else None
        raw = read_metadata_bytes(meta_path, header_vector_count(path), fix)
        try:
            payload = loads_unique_keys(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise PersistenceError(f"{meta_path} is corrupt ({exc}); {fix}") from exc
        if not isinstance(payload, dict):
            raise PersistenceError(f"{meta_path} is corrupt (not a JSON object); {fix}")
        metadata = field(payload, "metadata", (list,), meta_path, fix, where="")
        normalize = field(payload, "normalize", (bool,), meta_path, fix, where="")
        digest = field(payload, "faiss_sha256", (str, type(None)), meta_path, fix, "", None)
        exhaustive = field(payload, "exhaustive_below", (int,), meta_path, fix, "", 20_000)
        if not all(isinstance(m, dict) for m in metadata):
            raise PersistenceError(f"{meta_path} is corrupt: 'metadata' must list objects; {fix}")
        if verify and digest is not None and actual != digest:
            raise PersistenceError(
                f"{path} does not match the SHA-256 recorded in {meta_path.name}: the two files come "
                f"from different persist() calls, or the index was edited; {fix}"
            )
        try:
            index = read_faiss_file(path)
        except RuntimeError as exc:
            raise PersistenceError(f"{path} is not a readable FAISS index ({exc}); {fix}") from exc
        if len(metadata) != index.ntotal:
            raise PersistenceError(
                f"{meta_path} lists {len(metadata)} vectors but {path.name} holds {index.ntotal}: the files come "
                f"from different indexes; {fix}"
            )
        if exhaustive < 0:
            raise PersistenceError(
                f"{meta_path} is corrupt: 'exhaustive_below' must be >= 0, got {exhaustive}; {fix}"
            )
        bad = nonfinite_vectors(index)
        if bad == [-1]:
            raise PersistenceError(
                f"{path} holds centroids or codebooks with NaN or infinity: the file was edited "
                f"or damaged; {fix}"
            )
        if bad:
            raise PersistenceError(
                f"{path} holds {len(bad)} vector(s) with NaN or infinity (positions {bad[:3]}), "
                f"which add() refuses: the file was edited or damaged; {fix}"
            )
        return cls(
            faiss_index=index, metadata=metadata, normalize=normalize, exhaustive_below=exhaustive
        )


def _checked_positions(positions: Any, total: int) -> list[int]:
    """``positions`` as a list of distinct ints in ``[0, total)``; ``TypeError`` / ``ValueError``
    naming the first that is not (``-1`` read the last vector, ``0.5`` the first, a repeat
    stored a vector twice)."""
    if isinstance(positions, (str, bytes)) or not hasattr(positions, "__iter__"):
        raise TypeError(
            f"keep_positions needs a list of int positions, got {type(positions).__name__}"
        )
    checked: list[int] = []
    seen: set[int] = set()
    for item in positions:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, np.integer)):
            raise TypeError(
                f"keep_positions: position {item!r} is {type(item).__name__}, not an int"
            )
        position = int(item)
        if not 0 <= position < total:
            raise ValueError(
                f"keep_positions: position {position} is outside the {total} stored vectors "
                f"(0..{total - 1}); nothing was changed"
            )
        if position in seen:
            raise ValueError(
                f"keep_positions: position {position} is given twice; each vector is kept once"
                "; nothing was changed"
            )
        seen.add(position)
        checked.append(position)
    return checked


def _normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
