"""The two sides of a :class:`~llama_index_ragtune.retrievers.HybridRetriever`: made, sized, filtered.

``build_sides`` makes what ``HybridRetriever.from_defaults`` needs over ``nodes`` or an
``index`` (a FAISS or external-store dense index, a BM25 side over the same nodes);
``check_side_types`` and ``check_sides_given`` refuse sides the retriever cannot use;
``set_side_depths`` gives each side its candidate depth; ``apply_side_filters`` hands
the ``MetadataFilters`` to both built-in sides only once both can run them exactly, and
``sync_sides`` takes the rebuilt BM25 side after a change of nodes.

Example::

    from llama_index_ragtune.retrievers.hybrid_sides import build_sides

    index, embed_model, bm25 = build_sides(nodes=nodes)
    index.as_retriever(similarity_top_k=5).retrieve("apple return policy?")
    bm25.retrieve("apple return policy?")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.vector_stores.types import MetadataFilters

from llama_index_ragtune.embeddings import resolve_embed_model
from llama_index_ragtune.retrievers.bm25 import BM25Retriever
from llama_index_ragtune.retrievers.dense import (
    build_dense_index,
    check_dense_filters,
    drop_blank_nodes,
)
from llama_index_ragtune.retrievers.external_store import index_retriever
from llama_index_ragtune.retrievers.filters import check_filter_depth
from llama_index_ragtune.retrievers.hybrid_update import sides_state
from llama_index_ragtune.retrievers.node_embedding import index_embed_model


def build_sides(
    nodes: Sequence[Any] | None = None,
    index: Any = None,
    embed_model: BaseEmbedding | None = None,
    embed_cache_dir: str | Path | None = None,
    bm25_kwargs: dict[str, Any] | None = None,
    dense_retriever: BaseRetriever | None = None,
    sparse_retriever: BaseRetriever | None = None,
    show_progress: bool = False,
    dense_index: Any = "flat",
) -> tuple[Any, BaseEmbedding | None, BaseRetriever]:
    """``(index, embed_model, sparse_retriever)`` over exactly one of ``nodes`` or ``index``,
    as :meth:`HybridRetriever.from_defaults <llama_index_ragtune.retrievers.HybridRetriever.from_defaults>`
    describes them (``index`` is the one given, or the one built when there is no
    ``dense_retriever``; ``sparse_retriever`` is the one given or a BM25 side).

    Example::

        index, embed_model, bm25 = build_sides(nodes=nodes, dense_index="hnsw")
    """
    given = [name for name, value in (("nodes", nodes), ("index", index)) if value is not None]
    if len(given) != 1:
        raise ValueError(
            f"pass exactly one of nodes or index to HybridRetriever.from_defaults (got {given or 'none'})"
        )
    default_dense = isinstance(dense_index, str) and dense_index == "flat"
    if not default_dense and (index is not None or dense_retriever is not None):
        raise ValueError(
            "dense_index chooses the index built over nodes=...; it does not apply to the "
            "index= or dense_retriever= given (drop one of them)"
        )
    if index is not None:
        nodes = list(index.docstore.docs.values())
        if not nodes and sparse_retriever is None:
            raise ValueError(
                "index.docstore holds no nodes (its vector store keeps the text); pass nodes=... instead, "
                "or a sparse_retriever"
            )
        embed = embed_model if embed_model is not None else index_embed_model(index)
    else:
        nodes = list(nodes)
        if not nodes:
            raise ValueError("HybridRetriever.from_defaults got an empty list of nodes")
        # the same nodes on both sides: blank ones are skipped on both, with a warning
        nodes = drop_blank_nodes(nodes, "HybridRetriever.from_defaults")
        embed = resolve_embed_model(embed_model)
        if dense_retriever is None:
            index_embed = embed
            if embed_cache_dir is not None:
                from llama_index_ragtune.embeddings import CachedEmbedding

                index_embed = CachedEmbedding(embed, cache_dir=embed_cache_dir)
            index = build_dense_index(nodes, index_embed, dense_index, show_progress)
    if sparse_retriever is None:
        sparse_retriever = BM25Retriever(nodes, show_progress=show_progress, **(bm25_kwargs or {}))
    return index, embed, sparse_retriever


def check_side_types(dense_retriever: Any, sparse_retriever: Any, embed_model: Any) -> None:
    """``TypeError`` naming the argument unless each side given is a LlamaIndex
    ``BaseRetriever`` and ``embed_model`` (when given) a ``BaseEmbedding``.

    Example::

        check_side_types(None, BM25Retriever(nodes), None)       # None: no error
    """
    for name, value in (
        ("dense_retriever", dense_retriever),
        ("sparse_retriever", sparse_retriever),
    ):
        if value is not None and not isinstance(value, BaseRetriever):
            raise TypeError(
                f"{name} must be a llama_index BaseRetriever, got {type(value).__name__}"
            )
    if embed_model is not None and not isinstance(embed_model, BaseEmbedding):
        raise TypeError(
            f"embed_model must be a llama_index BaseEmbedding, got {type(embed_model).__name__}"
        )


def check_sides_given(dense_retriever: Any, sparse_retriever: Any, index: Any) -> None:
    """``ValueError`` / ``TypeError`` unless there is a dense side (``dense_retriever``, or a
    ``VectorStoreIndex`` to build it from) and a ``sparse_retriever``.

    Example::

        check_sides_given(None, BM25Retriever(nodes), VectorStoreIndex(nodes))   # None
    """
    if dense_retriever is None and index is None:
        raise ValueError("HybridRetriever needs a dense_retriever or an index to build one from")
    if dense_retriever is None and not hasattr(index, "as_retriever"):
        raise TypeError(f"index must be a llama_index VectorStoreIndex, got {type(index).__name__}")
    if sparse_retriever is None:
        raise ValueError(
            "HybridRetriever needs a sparse_retriever (e.g. BM25Retriever); or use from_defaults()"
        )


def set_side_depths(retriever: Any, dense_explicit: bool, sparse_explicit: bool) -> None:
    """Give each side of ``retriever`` its candidate depth (``dense_top_k`` /
    ``sparse_top_k``) where it has a ``similarity_top_k``; a depth set explicitly
    (``*_explicit``) on a side without one is a ``ValueError``.

    Example::

        set_side_depths(retriever, dense_explicit=False, sparse_explicit=True)
        retriever.sparse_retriever.similarity_top_k == retriever.sparse_top_k   # True
    """
    for side, depth, explicit in (
        ("sparse", retriever.sparse_top_k, sparse_explicit),
        ("dense", retriever.dense_top_k, dense_explicit),
    ):
        side_retriever = retriever._sparse if side == "sparse" else retriever._dense
        if side_retriever is None:
            continue
        if hasattr(side_retriever, "similarity_top_k"):
            side_retriever.similarity_top_k = depth
        elif explicit:
            raise ValueError(
                f"the {side} retriever {type(side_retriever).__name__} has no similarity_top_k to set"
            )


def apply_side_filters(retriever: Any, filters: MetadataFilters | None) -> None:
    """Set ``filters`` on both built-in sides of ``retriever`` (and as its ``filters``), or
    on neither: every side checks them before any side takes them, so a refused filter
    (``TypeError`` / ``ValueError`` naming it) leaves both sides as they were.

    Example::

        apply_side_filters(retriever, MetadataFilters.from_dicts([{"key": "store", "value": "grocery"}]))
        retriever.filters.filters[0].key      # 'store'
    """
    if filters is not None and not isinstance(filters, MetadataFilters):
        raise TypeError(
            f"filters must be llama_index MetadataFilters, got {type(filters).__name__}"
        )
    # every side checks the filters before any side takes them: a refused filter
    # leaves both sides (and retriever.filters) as they were
    check_filter_depth(filters, "HybridRetriever")
    if isinstance(retriever._sparse, BM25Retriever):
        retriever._sparse.check_filters(filters)
    if retriever._dense_built_in:
        lexical = retriever._sparse.nodes if isinstance(retriever._sparse, BM25Retriever) else None
        check_dense_filters(retriever._index, filters, lexical)
        kwargs = {"similarity_top_k": retriever.dense_top_k, "filters": filters}
        if retriever._embed_model is not None:
            kwargs["embed_model"] = retriever._embed_model
        dense = index_retriever(retriever._index, **kwargs)
    if isinstance(retriever._sparse, BM25Retriever):
        retriever._sparse.filters = filters
    if retriever._dense_built_in:
        retriever._dense = dense
    retriever._filters = filters
    retriever._filters_broken = None


def sync_sides(retriever: Any, sparse: BM25Retriever) -> None:
    """Take the rebuilt BM25 side after a change of nodes and re-apply the filters.

    When a database reads the filters differently on the new nodes, they cannot apply
    to both sides: the retriever keeps them but refuses queries and ``persist`` until
    ``filters`` is set again (it never answers unfiltered in their place).

    Example::

        sync_sides(retriever, BM25Retriever(all_nodes))    # what hybrid_update does
    """
    retriever._sparse = sparse
    retriever._sides_state = sides_state(retriever)
    try:
        retriever._apply_filters(retriever._filters)
    except ValueError as exc:
        retriever._filters_broken = (
            f"the nodes were changed, but the retriever's filters no longer run exactly on "
            f"both sides ({exc}); set retriever.filters to filters both sides read alike (or "
            "None) before querying or persisting it"
        )
        raise ValueError(retriever._filters_broken) from exc
