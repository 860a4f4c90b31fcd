"""HybridRetriever: dense + BM25 retrieval fused by RRF or normalised scores, filter-exact.

By default the dense side is a ``VectorStoreIndex`` on FAISS (``IndexFlatIP``
over normalised vectors, :class:`FilterableFaissVectorStore`) and the lexical
side our :class:`BM25Retriever` (bm25s, English stemming and stopwords) over
the same nodes. Either side can be any LlamaIndex ``BaseRetriever``.

* **Fusion** (:mod:`~llama_index_ragtune.retrievers.fusion`): ``"rrf"`` (k and
  side weights honoured), ``"minmax"`` or ``"zscore"`` score fusion with the
  convex weight ``alpha`` on the dense side. Defaults chosen on SciFact train
  queries (:mod:`~llama_index_ragtune.retrievers.defaults`).
* **Filters**: ``MetadataFilters`` are pushed into both built-in sides and
  applied before their top-k cut (FAISS searches only the allowed ids; BM25
  masks its scores), so every returned node passes and ``similarity_top_k`` is
  filled from allowed nodes. A custom side's results are filtered afterwards
  (give it the filters too, to keep its depth). Semantics are LlamaIndex's in-memory
  ones, a nested ``MetadataFilters`` being one more clause; a filter that a side cannot
  run exactly (values it cannot compare, a Qdrant/Milvus translation that selects other
  nodes) is refused when set, naming the filter and the side, and leaves the previous
  filters on both sides.
* **Results** are :class:`FusedNodeWithScore` (a ``NodeWithScore``) whose
  ``score`` is the fused score and whose ``dense_rank``/``dense_score``/
  ``sparse_rank``/``sparse_score`` tell where each side put the node. Nodes
  themselves are never modified (node metadata stays clean).
* **Concurrency**: with the built-in sides (FAISS + BM25) the queries of concurrent
  callers (``aretrieve`` on an event loop, ``retrieve`` from threads) are answered in
  shared batches, one encoder call per batch, with the results of one-at-a-time
  retrieval (:mod:`~llama_index_ragtune.retrievers.hybrid_batch`); a lone caller runs at
  once. ``aretrieve`` never blocks the event loop. With other sides, ``aretrieve`` runs
  both concurrently (``asyncio.gather``; sides without a native async path run in a
  worker thread) and only the query embeddings are micro-batched.
* **Degenerate input**: a query with no text (empty or whitespace only) and no
  precomputed embedding returns no results; lone surrogates and NUL characters in a
  query are replaced before either side sees it; a very long query is scored whole by
  BM25 and truncated by the embedding model (its ``max_seq_length``). Nodes with empty
  or whitespace-only text are skipped on both sides with a warning naming them.
  Numeric arguments are validated when the retriever is built (``dense_top_k=0`` is an
  error, not "dense side off"), and filters naming a metadata key that no node has
  raise ``ValueError``.
* **Changing nodes** (:mod:`~llama_index_ragtune.retrievers.hybrid_update`):
  :meth:`insert_nodes`, :meth:`update_nodes` and :meth:`delete_nodes` change both sides
  and the docstore together, safely while queries run (they see the sides before or after
  it); a change made to ``index`` directly is detected at query time and raises
  ``RuntimeError`` instead of returning one side's nodes.
* **Sides and search**: the sides are made, sized and filtered in
  :mod:`~llama_index_ragtune.retrievers.hybrid_sides`; a query is answered (both sides,
  then fusion) in :mod:`~llama_index_ragtune.retrievers.hybrid_search`.
* **Persistence** (:mod:`~llama_index_ragtune.retrievers.persist_hybrid`): atomic (a
  crash leaves the old or the new folder), every file hashed in the manifest and
  checked on load, nothing unpickled.
* **Embedding model**: ``embed_model`` if given, else an explicitly set
  ``Settings.embed_model``, else the bundled MiniLM through ONNX Runtime
  (PyTorch when the ``onnx`` extra is missing). See
  :func:`~llama_index_ragtune.embeddings.resolve_embed_model`. The queries of
  concurrent callers are embedded in shared batches
  (:class:`~llama_index_ragtune.embeddings.MicroBatchEmbedding`; ``micro_batch=False``
  turns this and the batched retrieval off).

Example::

    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index_ragtune.retrievers import HybridRetriever

    retriever = HybridRetriever.from_defaults(nodes=nodes, similarity_top_k=5)
    retriever.retrieve("apple return policy?")
    engine = RetrieverQueryEngine.from_args(retriever)
    retriever.persist("hybrid_index")
    again = HybridRetriever.from_persist_dir("hybrid_index")
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters

from llama_index_ragtune.retrievers.bm25 import BM25Retriever
from llama_index_ragtune.retrievers.checks import (
    CheckedAttribute,
    PositiveIntAttribute,
    check_nodes,
    positive_float,
    positive_int,
    unit_float,
)
from llama_index_ragtune.retrievers.defaults import fusion_mode_name, fusion_preset
from llama_index_ragtune.retrievers.dense import build_faiss_index
from llama_index_ragtune.retrievers.fused_node import FusedNodeWithScore
from llama_index_ragtune.retrievers.fusion import fuse
from llama_index_ragtune.retrievers.hybrid_search import asearch, check_query_type, search
from llama_index_ragtune.retrievers.hybrid_sides import (
    apply_side_filters,
    build_sides,
    check_side_types,
    check_sides_given,
    set_side_depths,
    sync_sides,
)
from llama_index_ragtune.retrievers.hybrid_update import reading, sides_state
from llama_index_ragtune.retrievers.node_embedding import index_embed_model
from llama_index_ragtune.retrievers.persistence import check_metadata_depth

logger = logging.getLogger(__name__)

__all__ = ["FusedNodeWithScore", "HybridRetriever", "build_faiss_index"]

_BATCH_LOCK = threading.Lock()


class HybridRetriever(BaseRetriever):
    """Dense + lexical retrieval, fused; see the module docstring.

    Args:
        dense_retriever: the dense side (built from ``index`` when omitted).
        sparse_retriever: the lexical side.
        similarity_top_k: fused results returned.
        fusion_mode: ``"rrf"``, ``"minmax"`` or ``"zscore"`` (default: the mode chosen on SciFact train).
        alpha: weight of the dense side in [0, 1]; the lexical side gets ``1 - alpha``
            (RRF weights too).
        rrf_k: RRF smoothing constant.
        dense_top_k, sparse_top_k: candidates fetched per side, integers >= 1 (set on sides
            that have ``similarity_top_k``). 0 is an error, not "side off": to rank by one
            side, use that retriever alone (or ``alpha=0``/``1`` to give a side no weight).
        filters: ``MetadataFilters`` for every query (see :attr:`filters`, :meth:`with_filters`);
            a key that no indexed node has raises ``ValueError`` (usually a typo).
        index: the ``VectorStoreIndex`` of the built-in dense side (needed by
            :meth:`persist` and to push filters down).
        embed_model: the query encoder of the built-in dense side.
        micro_batch: answer the queries of concurrent callers in shared batches
            (:mod:`~llama_index_ragtune.retrievers.hybrid_batch`; with other sides than
            the built-in ones, only their query embeddings:
            :class:`~llama_index_ragtune.embeddings.MicroBatchEmbedding`); a lone caller
            is answered at once, as without it.
    """

    similarity_top_k = PositiveIntAttribute()
    dense_top_k = PositiveIntAttribute()
    sparse_top_k = PositiveIntAttribute()
    # checked on every assignment, as when built (a late alpha=5 failed at the next query
    # with "weights must be finite and >= 0", naming neither the setting nor the retriever)
    fusion_mode = CheckedAttribute(fusion_mode_name)
    alpha = CheckedAttribute(unit_float)
    rrf_k = CheckedAttribute(positive_float)

    def __init__(
        self,
        dense_retriever: BaseRetriever | None = None,
        sparse_retriever: BaseRetriever | None = None,
        similarity_top_k: int = 10,
        fusion_mode: str | None = None,
        alpha: float | None = None,
        rrf_k: float | None = None,
        dense_top_k: int | None = None,
        sparse_top_k: int | None = None,
        filters: MetadataFilters | None = None,
        index: Any = None,
        embed_model: BaseEmbedding | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        micro_batch: bool = True,
    ) -> None:
        if fusion_mode is not None and not isinstance(fusion_mode, str):
            raise TypeError(f"fusion_mode must be a string or None, got {fusion_mode!r}")
        preset = fusion_preset(fusion_mode)
        self.fusion_mode = preset["fusion_mode"]
        self.alpha = preset["alpha"] if alpha is None else alpha
        self.rrf_k = preset["rrf_k"] if rrf_k is None else rrf_k
        self.similarity_top_k = positive_int(similarity_top_k, "similarity_top_k")
        # 0 is refused, not read as "switch the side off": use BM25Retriever or the dense
        # retriever alone for that, or alpha=0/1 to give one side no weight.
        self.dense_top_k = positive_int(
            preset["dense_top_k"] if dense_top_k is None else dense_top_k, "dense_top_k"
        )
        self.sparse_top_k = positive_int(
            preset["sparse_top_k"] if sparse_top_k is None else sparse_top_k, "sparse_top_k"
        )
        check_side_types(dense_retriever, sparse_retriever, embed_model)
        self._index = index
        self._embed_model = embed_model if embed_model is not None else index_embed_model(index)
        self._dense_built_in = dense_retriever is None
        self._micro_batch = bool(micro_batch)
        self._batch: Any = None  # HybridBatchSearch, made at the first query when batchable
        self._batch_checked = False
        if micro_batch and self._dense_built_in and self._embed_model is not None:
            from llama_index_ragtune.embeddings.micro_batch import micro_batched

            self._embed_model = micro_batched(self._embed_model)
        check_sides_given(dense_retriever, sparse_retriever, index)
        self._dense = dense_retriever
        self._sparse = sparse_retriever
        set_side_depths(self, dense_top_k is not None, sparse_top_k is not None)
        self._filters: MetadataFilters | None = None
        self._filters_broken: str | None = None  # why the filters stopped applying (fail closed)
        self._apply_filters(filters)
        self._sides_state = sides_state(self)
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_defaults(
        cls,
        nodes: Sequence[BaseNode] | None = None,
        index: Any = None,
        embed_model: BaseEmbedding | None = None,
        similarity_top_k: int = 10,
        fusion_mode: str | None = None,
        alpha: float | None = None,
        rrf_k: float | None = None,
        dense_top_k: int | None = None,
        sparse_top_k: int | None = None,
        filters: MetadataFilters | None = None,
        embed_cache_dir: str | Path | None = None,
        bm25_kwargs: dict[str, Any] | None = None,
        dense_retriever: BaseRetriever | None = None,
        sparse_retriever: BaseRetriever | None = None,
        show_progress: bool = False,
        callback_manager: CallbackManager | None = None,
        micro_batch: bool = True,
        dense_index: Any = "flat",
    ) -> HybridRetriever:
        """Build both sides over exactly one of ``nodes`` or ``index``.

        ``nodes``: a FAISS ``VectorStoreIndex`` is built (document embeddings cached in
        ``embed_cache_dir`` when given, see :class:`~llama_index_ragtune.embeddings.CachedEmbedding`)
        and BM25 indexes the same nodes. ``dense_index`` picks what holds the vectors:
        ``"flat"`` (exact), ``"hnsw"``, ``"ivf"``, ``"ivfpq"``, a
        :class:`~llama_index_ragtune.retrievers.FaissIndexConfig`, or a LlamaIndex vector
        store such as Qdrant (:mod:`~llama_index_ragtune.retrievers.external_store`).
        ``index``: its retriever is the dense side and
        BM25 indexes the nodes of its docstore. ``dense_retriever`` / ``sparse_retriever``
        replace a side. Metadata nested more than ``MAX_METADATA_DEPTH`` levels deep is
        refused (``ValueError`` naming the node), as ``persist`` refuses it.
        """
        if nodes is not None:
            nodes = _shallow_nodes(nodes, "HybridRetriever.from_defaults")
        index, embed, sparse_retriever = build_sides(
            nodes,
            index,
            embed_model,
            embed_cache_dir,
            bm25_kwargs,
            dense_retriever,
            sparse_retriever,
            show_progress,
            dense_index,
        )
        return cls(
            dense_retriever=dense_retriever,
            sparse_retriever=sparse_retriever,
            similarity_top_k=similarity_top_k,
            fusion_mode=fusion_mode,
            alpha=alpha,
            rrf_k=rrf_k,
            dense_top_k=dense_top_k,
            sparse_top_k=sparse_top_k,
            filters=filters,
            index=index if dense_retriever is None else None,
            embed_model=embed,
            callback_manager=callback_manager,
            micro_batch=micro_batch,
        )

    # ------------------------------------------------------------------ sides and filters

    @property
    def dense_retriever(self) -> BaseRetriever:
        return self._dense

    @property
    def sparse_retriever(self) -> BaseRetriever:
        return self._sparse

    @property
    def embed_model(self) -> BaseEmbedding | None:
        """The built-in dense side's query encoder (micro-batched when ``micro_batch``)."""
        return self._embed_model

    @property
    def has_built_in_dense(self) -> bool:
        """``True`` when the dense side is the built-in one over :attr:`index` (no
        ``dense_retriever`` was given): what ``persist`` can save."""
        return self._dense_built_in

    @property
    def batch_stats(self) -> dict[str, Any] | None:
        """Counts of the batched retrieval (``requests``, ``batches``, ``largest_batch``,
        ``flushes``); ``None`` while no query has been batched or when this retriever does not
        batch (``micro_batch=False``, or sides other than the built-in ones)."""
        return None if self._batch is None else self._batch.stats

    @property
    def index(self) -> Any:
        """The dense side's ``VectorStoreIndex`` (``None`` for a custom dense retriever)."""
        return self._index

    @property
    def filters(self) -> MetadataFilters | None:
        """Metadata filters applied to every query; assign to change (``None`` removes them)."""
        return self._filters

    @filters.setter
    def filters(self, filters: MetadataFilters | None) -> None:
        self._apply_filters(filters)

    def with_filters(self, filters: MetadataFilters | None) -> HybridRetriever:
        """A copy of this retriever with other filters; the indexes are shared, not copied."""
        other = copy.copy(self)
        other._batch, other._batch_checked = None, False  # its own queue, with its filters
        if isinstance(self._sparse, BM25Retriever):
            other._sparse = copy.copy(self._sparse)
        other._apply_filters(filters)
        return other

    def _apply_filters(self, filters: MetadataFilters | None) -> None:
        apply_side_filters(self, filters)

    # ------------------------------------------------------------------ changing nodes

    def insert_nodes(self, nodes: Sequence[BaseNode]) -> None:
        """Add nodes to both sides and the docstore; ids already indexed are refused.

        Only the new nodes are embedded; BM25 is rebuilt from all nodes (O(corpus)). See
        :mod:`~llama_index_ragtune.retrievers.hybrid_update`; ``persist`` saves the result.

        Example::

            retriever.insert_nodes([TextNode(id_="faq-9", text="Gift cards never expire.")])
        """
        from llama_index_ragtune.retrievers.hybrid_update import insert

        insert(self, _shallow_nodes(nodes, "HybridRetriever.insert_nodes"))

    def update_nodes(self, nodes: Sequence[BaseNode]) -> None:
        """Replace indexed nodes by new versions with the same ids (unknown ids are refused).

        Example::

            retriever.update_nodes([TextNode(id_="faq-9", text="Gift cards expire after 5 years.")])
        """
        from llama_index_ragtune.retrievers.hybrid_update import update

        update(self, _shallow_nodes(nodes, "HybridRetriever.update_nodes"))

    def delete_nodes(self, node_ids: Sequence[str]) -> None:
        """Remove nodes by id from both sides and the docstore (unknown ids are refused).

        Example::

            retriever.delete_nodes(["faq-9"])
        """
        from llama_index_ragtune.retrievers.hybrid_update import delete

        delete(self, node_ids)

    def _sync_sides(self, sparse: BM25Retriever) -> None:
        """Take the rebuilt BM25 side after a change of nodes (see :func:`.hybrid_sides.sync_sides`)."""
        sync_sides(self, sparse)

    def _check_filters_apply(self) -> None:
        if self._filters_broken is not None:
            raise RuntimeError(self._filters_broken)

    # ------------------------------------------------------------------ retrieval

    def fuse_rankings(self, rankings: Sequence[Sequence[tuple[str, float]]]) -> list[Any]:
        """Fuse ``[dense, sparse]`` rankings of ``(node_id, score)`` with this retriever's
        settings; returns the top ``similarity_top_k`` :class:`~.fusion.FusedHit`.

        Example::

            retriever.fuse_rankings([[("a", 0.9), ("b", 0.5)], [("b", 7.0)]])[0].node_id
        """
        return fuse(
            rankings,
            mode=self.fusion_mode,
            weights=(self.alpha, 1.0 - self.alpha),
            rrf_k=self.rrf_k,
            top_k=self.similarity_top_k,
        )

    def retrieve(self, str_or_query_bundle: str | QueryBundle) -> list[NodeWithScore]:
        """Fused results for a query string or ``QueryBundle`` (empty query: ``[]``)."""
        check_query_type(str_or_query_bundle)
        return super().retrieve(str_or_query_bundle)

    async def aretrieve(self, str_or_query_bundle: str | QueryBundle) -> list[NodeWithScore]:
        """Async :meth:`retrieve`; both sides run concurrently."""
        check_query_type(str_or_query_bundle)
        return await super().aretrieve(str_or_query_bundle)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return search(self, query_bundle)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asearch(self, query_bundle)

    def _batch_search(self) -> Any:
        """The batched retrieval of this retriever, made once; ``None`` when it does not batch."""
        if not self._batch_checked:
            from llama_index_ragtune.retrievers.hybrid_batch import HybridBatchSearch, batchable

            with _BATCH_LOCK:
                if not self._batch_checked:
                    if self._micro_batch and batchable(self, self._dense_built_in):
                        self._batch = HybridBatchSearch(self)
                    self._batch_checked = True
        return self._batch

    # ------------------------------------------------------------------ persistence

    def params(self) -> dict[str, Any]:
        """The fusion parameters (what :meth:`persist` records besides the indexes)."""
        return {
            "similarity_top_k": self.similarity_top_k,
            "fusion_mode": self.fusion_mode,
            "alpha": self.alpha,
            "rrf_k": self.rrf_k,
            "dense_top_k": self.dense_top_k,
            "sparse_top_k": self.sparse_top_k,
        }

    def persist(self, persist_dir: str | Path) -> None:
        """Save the FAISS index, docstore, BM25 index and parameters (JSON, versioned) to ``persist_dir``."""
        from llama_index_ragtune.retrievers.persist_hybrid import persist_hybrid
        from llama_index_ragtune.retrievers.persistence import persist_dir_path

        folder = persist_dir_path(persist_dir, "HybridRetriever.persist")
        with reading(self):  # not half of a change of nodes
            self._check_filters_apply()
            persist_hybrid(self, folder)

    @classmethod
    def from_persist_dir(
        cls,
        persist_dir: str | Path,
        embed_model: BaseEmbedding | None = None,
        **overrides: Any,
    ) -> HybridRetriever:
        """Load what :meth:`persist` wrote. ``embed_model`` defaults as in :meth:`from_defaults`;
        ``overrides`` replace saved parameters (e.g. ``similarity_top_k=20``); ``vector_store=``
        hands over an open store for a dense side kept in Qdrant."""
        from llama_index_ragtune.retrievers.persist_hybrid import load_hybrid
        from llama_index_ragtune.retrievers.persistence import persist_dir_path

        folder = persist_dir_path(persist_dir, "HybridRetriever.from_persist_dir")
        return load_hybrid(cls, folder, embed_model, overrides)


def _shallow_nodes(nodes: Any, where: str) -> list[BaseNode]:
    """``nodes`` checked (:func:`~.checks.check_nodes`), their metadata no deeper than
    ``persist`` allows (:func:`~.persistence.check_metadata_depth`), before anything is built."""
    nodes = check_nodes(nodes, where)
    check_metadata_depth(nodes, where)
    return nodes
