"""The HybridRetriever's built-in dense side: a ``VectorStoreIndex`` over nodes, on FAISS or a vector store.

:func:`build_faiss_index` embeds the nodes (only those without an embedding) and
stores them in a :class:`~llama_index_ragtune.retrievers.FilterableFaissVectorStore`
over L2-normalised vectors (inner product = cosine similarity): ``IndexFlatIP``
(exact, the default) or an HNSW / IVF / IVF-PQ index
(:class:`~llama_index_ragtune.retrievers.FaissIndexConfig`). :func:`build_dense_index`
also accepts a LlamaIndex vector store (Qdrant, ...) to hold the vectors instead
(:mod:`~llama_index_ragtune.retrievers.external_store`).

Nodes whose embedded text (``MetadataMode.EMBED``) is empty or whitespace only are
skipped with a warning naming them: they have nothing to embed, and LlamaIndex's
``VectorStoreIndex`` would drop the empty ones anyway. ``HybridRetriever.from_defaults``
skips the same nodes on the BM25 side, so both sides (and a persisted index) always
hold the same nodes. Text that cannot be encoded (lone surrogates) or holds NUL
characters is cleaned before embedding (see :func:`~llama_index_ragtune.retrievers.checks.clean_text`).

Example::

    from llama_index_ragtune.retrievers import build_faiss_index

    index = build_faiss_index(nodes, embed_model)
    index.as_retriever(similarity_top_k=5).retrieve("apple return policy?")
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import MetadataFilters

from llama_index_ragtune.retrievers.checks import check_filter_keys
from llama_index_ragtune.retrievers.faiss_index import resolve_index_config
from llama_index_ragtune.retrievers.node_embedding import drop_blank_nodes, embed_nodes

logger = logging.getLogger(__name__)

__all__ = ["build_dense_index", "build_faiss_index", "drop_blank_nodes"]


def build_faiss_index(
    nodes: Sequence[BaseNode],
    embed_model: BaseEmbedding,
    show_progress: bool = False,
    dense_index: Any = "flat",
) -> Any:
    """A ``VectorStoreIndex`` on a :class:`FilterableFaissVectorStore` over ``nodes``.

    ``dense_index``: ``"flat"`` (``IndexFlatIP``, exact), ``"hnsw"``, ``"ivf"``, ``"ivfpq"``
    or a :class:`~llama_index_ragtune.retrievers.FaissIndexConfig`; IVF kinds are trained
    on the nodes' vectors. Nodes are copied before their embedding is attached; the
    caller's nodes stay untouched. Blank nodes are skipped with a warning (module docstring).

    Example::

        index = build_faiss_index(nodes, embed_model, dense_index="hnsw")
    """
    from llama_index.core import StorageContext, VectorStoreIndex

    from llama_index_ragtune.retrievers.faiss_store import FilterableFaissVectorStore, _normalize

    config = resolve_index_config(dense_index)
    embedded = embed_nodes(nodes, embed_model, "build_faiss_index", show_progress)
    vectors = _normalize(np.asarray([n.embedding for n in embedded], dtype=np.float32))
    config = config.resolve(*vectors.shape)
    faiss_index = config.build(vectors, add=False)  # created and, for IVF, trained
    del vectors
    store = FilterableFaissVectorStore(faiss_index, config=config)
    storage = StorageContext.from_defaults(vector_store=store)
    return VectorStoreIndex(
        embedded, storage_context=storage, embed_model=embed_model, show_progress=False
    )


def build_dense_index(
    nodes: Sequence[BaseNode],
    embed_model: BaseEmbedding,
    dense_index: Any = "flat",
    show_progress: bool = False,
) -> Any:
    """The dense side's ``VectorStoreIndex``: on FAISS (a kind or config) or on a vector store.

    ``dense_index``: ``"flat"``, ``"hnsw"``, ``"ivf"``, ``"ivfpq"``, a
    :class:`~llama_index_ragtune.retrievers.FaissIndexConfig`, or a LlamaIndex vector store
    such as ``QdrantVectorStore`` (an empty collection; see
    :mod:`~llama_index_ragtune.retrievers.external_store`).

    Example::

        index = build_dense_index(nodes, embed_model, "hnsw")
    """
    from llama_index.core.vector_stores.types import BasePydanticVectorStore

    if isinstance(dense_index, BasePydanticVectorStore):
        from llama_index_ragtune.retrievers.external_store import build_store_index

        return build_store_index(nodes, embed_model, dense_index, show_progress)
    return build_faiss_index(nodes, embed_model, show_progress, dense_index=dense_index)


def check_dense_filters(
    index: Any, filters: MetadataFilters | None, lexical_nodes: Sequence[BaseNode] | None = None
) -> None:
    """Refuse filters the index's vector store cannot apply, or that name unknown keys.

    A vector database's translation is compared with the in-memory semantics on the
    index's docstore nodes, or, when the docstore holds none (the store keeps the text),
    on ``lexical_nodes`` (the BM25 side's); see :func:`~llama_index_ragtune.retrievers.store_filters.check_store_parity`.
    """
    if filters is None:
        return
    from llama_index.vector_stores.faiss import FaissVectorStore

    from llama_index_ragtune.retrievers.faiss_store import FilterableFaissVectorStore

    store = index.vector_store
    from llama_index_ragtune.retrievers.store_filters import check_store_filters

    check_store_filters(store, filters)
    if isinstance(store, FaissVectorStore) and not isinstance(store, FilterableFaissVectorStore):
        raise ValueError(
            "the index's FaissVectorStore cannot filter by metadata; build the index on "
            "llama_index_ragtune.retrievers.FilterableFaissVectorStore (HybridRetriever.from_defaults(nodes=...) "
            "does), or pass a dense_retriever that applies the filters itself"
        )
    if isinstance(store, FilterableFaissVectorStore) and len(store._masks):
        check_filter_keys(filters, store._masks.keys, "the dense index", store._masks.value_kinds)
        store._masks.mask(filters)  # values it cannot compare fail now, not at query time
    elif isinstance(store, FilterableFaissVectorStore):
        logger.warning(
            "filters %s are set on an empty FAISS index: their keys are not checked",
            filters.model_dump(mode="json"),
        )
    from llama_index_ragtune.retrievers.store_filters import check_store_parity

    check_store_parity(index, filters, lexical_nodes)
