"""Nodes ready for a dense index: blank ones dropped, the rest embedded once.

Both places that build a dense side use these: the FAISS index
(:mod:`~llama_index_ragtune.retrievers.dense`) and a vector database
(:mod:`~llama_index_ragtune.retrievers.external_store`).

Example::

    from llama_index_ragtune.retrievers.node_embedding import embed_nodes

    embedded = embed_nodes(nodes, embed_model, "build_faiss_index")
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode, MetadataMode

from llama_index_ragtune.retrievers.checks import check_nodes, clean_text, split_blank_nodes

logger = logging.getLogger(__name__)

__all__ = ["drop_blank_nodes", "embed_nodes", "index_embed_model"]


def index_embed_model(index: Any) -> BaseEmbedding | None:
    """The embedding model a LlamaIndex ``VectorStoreIndex`` embeds with (``None`` if it has none).

    ``VectorStoreIndex`` keeps it in ``_embed_model`` and offers no public accessor
    (LlamaIndex's own retrievers read it the same way); this is the one place that reads it.

    Example::

        index_embed_model(VectorStoreIndex(nodes, embed_model=embed)) is embed   # True
    """
    return getattr(index, "_embed_model", None)


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
                f"{where}: all {len(blank)} nodes have empty or whitespace-only text (or only "
                f"invisible characters; e.g. node ids {blank[:5]}); there is nothing to index"
            )
        shown = ", ".join(repr(i) for i in blank[:20]) + (" ..." if len(blank) > 20 else "")
        logger.warning(
            "%s: skipping %d node(s) with empty or whitespace-only text (or only invisible "
            "characters: nothing to embed or match), on both the dense and the BM25 side: %s",
            where,
            len(blank),
            shown,
        )
    return kept


def embed_nodes(
    nodes: Sequence[BaseNode], embed_model: BaseEmbedding, where: str, show_progress: bool = False
) -> list[BaseNode]:
    """Copies of ``nodes`` (blank ones skipped) carrying embeddings of one size.

    Only nodes without an embedding are embedded; the caller's nodes stay untouched.

    Example::

        embedded = embed_nodes(nodes, embed_model, "build_faiss_index")
    """
    nodes = check_nodes(nodes, where)
    if not nodes:
        raise ValueError(f"{where}: cannot build a dense index over an empty list of nodes")
    nodes = drop_blank_nodes(nodes, where)
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
    _check_finite(embedded, todo, where)
    return embedded


_CHECK_ROWS = 4096  # vectors checked at once


def _check_finite(embedded: list[BaseNode], todo: list[int], where: str) -> None:
    """``ValueError`` naming the nodes whose vector holds NaN or infinity, before any is indexed.

    Such a node was indexed and never found again (its similarity to every query is NaN),
    while BM25 still returned it: the two sides disagreed without a word.
    """
    bad: list[int] = []
    for start in range(0, len(embedded), _CHECK_ROWS):  # bounded memory on a large corpus
        rows = [n.embedding for n in embedded[start : start + _CHECK_ROWS]]
        with np.errstate(over="ignore"):  # a value beyond float32 (the index's) becomes inf
            finite = np.isfinite(np.asarray(rows, dtype=np.float32)).all(axis=1)
        bad.extend(start + int(i) for i in np.flatnonzero(~finite))
    if not bad:
        return
    made = set(todo)
    ids = [embedded[i].node_id for i in bad]
    origin = (
        "the embedding model returned"
        if any(i in made for i in bad)
        else "the nodes' own embeddings (node.embedding) hold"
    )
    raise ValueError(
        f"{where}: {origin} NaN or infinite values for {len(ids)} node(s) (e.g. {ids[:5]}); "
        "nothing was indexed. Fix the model or its input (a half-precision overflow, broken "
        "weights), or set node.embedding = None to embed those nodes again"
    )
