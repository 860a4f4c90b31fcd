"""The HybridRetriever's built-in dense side: a FAISS ``VectorStoreIndex`` over nodes.

:func:`build_faiss_index` embeds the nodes (only those without an embedding) and
stores them in a :class:`~llama_index_ragtune.retrievers.FilterableFaissVectorStore`
(``IndexFlatIP`` over L2-normalised vectors, i.e. cosine similarity).

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

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import MetadataFilters

from llama_index_ragtune.retrievers.checks import (
    check_filter_keys,
    check_nodes,
    clean_text,
    split_blank_nodes,
)

logger = logging.getLogger(__name__)

__all__ = ["build_faiss_index", "drop_blank_nodes"]


def drop_blank_nodes(nodes: Sequence[BaseNode], where: str) -> list[BaseNode]:
    """``nodes`` without those whose embedded text is blank; warns naming the skipped ids.

    Raises ``TypeError`` for items that are not nodes, ``ValueError`` for duplicate ids or
    when no node is left.

    Example::

        nodes = drop_blank_nodes(nodes, "HybridRetriever.from_defaults")
    """
    kept, blank = split_blank_nodes(check_nodes(nodes, where))
    if blank:
        if not kept:
            raise ValueError(
                f"{where}: all {len(blank)} nodes have empty or whitespace-only text (e.g. node ids "
                f"{blank[:5]}); there is nothing to index"
            )
        shown = ", ".join(repr(i) for i in blank[:20]) + (" ..." if len(blank) > 20 else "")
        logger.warning(
            "%s: skipping %d node(s) with empty or whitespace-only text (nothing to embed or "
            "match), on both the dense and the BM25 side: %s",
            where,
            len(blank),
            shown,
        )
    return kept


def build_faiss_index(
    nodes: Sequence[BaseNode],
    embed_model: BaseEmbedding,
    show_progress: bool = False,
) -> Any:
    """A ``VectorStoreIndex`` on a :class:`FilterableFaissVectorStore` (``IndexFlatIP``) over ``nodes``.

    Nodes are copied before their embedding is attached; the caller's nodes stay untouched.
    Blank nodes are skipped with a warning (module docstring).

    Example::

        index = build_faiss_index(nodes, embed_model)
    """
    import faiss
    from llama_index.core import StorageContext, VectorStoreIndex

    from llama_index_ragtune.retrievers.faiss_store import FilterableFaissVectorStore

    nodes = check_nodes(nodes, "build_faiss_index")
    if not nodes:
        raise ValueError("cannot build a dense index over an empty list of nodes")
    nodes = drop_blank_nodes(nodes, "build_faiss_index")
    todo = [i for i, n in enumerate(nodes) if n.embedding is None]
    texts = [clean_text(nodes[i].get_content(metadata_mode=MetadataMode.EMBED)) for i in todo]
    vectors = (
        embed_model.get_text_embedding_batch(texts, show_progress=show_progress) if texts else []
    )
    embedded = [n.model_copy() for n in nodes]
    for i, vector in zip(todo, vectors, strict=True):
        embedded[i].embedding = list(vector)
    dims = {len(n.embedding) for n in embedded}
    if len(dims) != 1:
        raise ValueError(
            f"nodes carry embeddings of different sizes {sorted(dims)}; re-embed them with one model"
        )
    store = FilterableFaissVectorStore(faiss.IndexFlatIP(dims.pop()))
    storage = StorageContext.from_defaults(vector_store=store)
    return VectorStoreIndex(
        embedded, storage_context=storage, embed_model=embed_model, show_progress=False
    )


def check_dense_filters(index: Any, filters: MetadataFilters | None) -> None:
    """Refuse filters the index's vector store cannot apply, or that name unknown keys."""
    if filters is None:
        return
    from llama_index.vector_stores.faiss import FaissVectorStore

    from llama_index_ragtune.retrievers.faiss_store import FilterableFaissVectorStore

    store = index.vector_store
    if isinstance(store, FaissVectorStore) and not isinstance(store, FilterableFaissVectorStore):
        raise ValueError(
            "the index's FaissVectorStore cannot filter by metadata; build the index on "
            "llama_index_ragtune.retrievers.FilterableFaissVectorStore (HybridRetriever.from_defaults(nodes=...) "
            "does), or pass a dense_retriever that applies the filters itself"
        )
    if isinstance(store, FilterableFaissVectorStore) and len(store._masks):
        check_filter_keys(filters, store._masks.keys, "the dense index")
