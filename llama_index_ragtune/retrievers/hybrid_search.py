"""Answering one query with a :class:`~llama_index_ragtune.retrievers.HybridRetriever`.

``search`` (and ``asearch``, its async twin) asks both sides while no change of nodes
swaps them, or hands the query to the retriever's batched search when it has one
(:mod:`~llama_index_ragtune.retrievers.hybrid_batch`); ``fuse_sides`` filters what a
custom side returned and fuses the two rankings into :class:`FusedNodeWithScore`.

Example::

    from llama_index.core.schema import QueryBundle
    from llama_index_ragtune.retrievers.hybrid_search import search

    results = search(retriever, QueryBundle("apple return policy?"))   # = retriever.retrieve(...)
    results[0].dense_rank, results[0].sparse_rank
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from llama_index_ragtune.retrievers.bm25 import BM25Retriever
from llama_index_ragtune.retrievers.checks import (
    check_query_vector,
    prepare_query,
    query_embedding_errors,
)
from llama_index_ragtune.retrievers.external_store import index_dimension
from llama_index_ragtune.retrievers.filters import filterable_metadata, node_passes
from llama_index_ragtune.retrievers.fused_node import FusedNodeWithScore
from llama_index_ragtune.retrievers.hybrid_update import (
    areading,
    check_in_step,
    reading,
    until_done,
)


def check_query_type(query: Any) -> None:
    """``TypeError`` naming the type unless ``query`` is a ``str`` or a ``QueryBundle``.

    Example::

        check_query_type("apple return policy?")      # None
    """
    if not isinstance(query, (str, QueryBundle)):
        raise TypeError(
            f"the query must be a str or a llama_index QueryBundle, got {type(query).__name__}"
        )


def search(retriever: Any, query_bundle: QueryBundle) -> list[NodeWithScore]:
    """``retriever``'s fused results for ``query_bundle`` (``[]`` for a query with no text
    and no embedding): what ``HybridRetriever.retrieve`` returns.

    Example::

        search(retriever, QueryBundle("apple return policy?"))[0].score
    """
    query_bundle = prepare_query(query_bundle)
    if query_bundle is None:  # no text and no embedding: nothing to search for
        return []
    with reading(retriever):  # a change of nodes swaps the sides before or after, not during
        retriever._check_filters_apply()
        batch = retriever._batch_search()
        if batch is not None:
            return batch.search(query_bundle)
        embed = _query_embed_model(retriever, query_bundle)
        if embed is not None:  # the vector the dense side would compute, checked first
            with query_embedding_errors(embed, query_bundle.query_str):
                query_bundle.embedding = embed.get_agg_embedding_from_queries(
                    query_bundle.embedding_strs
                )
        rankable = _check_vector(retriever, query_bundle)
        dense = retriever._dense.retrieve(query_bundle) if rankable else []
        sparse = retriever._sparse.retrieve(query_bundle)
        return fuse_sides(retriever, dense, sparse)


async def asearch(retriever: Any, query_bundle: QueryBundle) -> list[NodeWithScore]:
    """Async :func:`search`: both sides run concurrently, and the event loop is never blocked.

    A call cancelled (or one whose side fails) while a side searches in a worker thread
    returns only once that search has ended, so no change of nodes runs beside it.

    Example::

        await asearch(retriever, QueryBundle("apple return policy?"))
    """
    query_bundle = prepare_query(query_bundle)
    if query_bundle is None:
        return []
    async with areading(retriever):  # yields the event loop while a swap runs
        retriever._check_filters_apply()
        batch = retriever._batch_search()
        if batch is not None:
            return await batch.asearch(query_bundle)
        embed = _query_embed_model(retriever, query_bundle)
        if embed is not None:
            with query_embedding_errors(embed, query_bundle.query_str):
                query_bundle.embedding = await embed.aget_agg_embedding_from_queries(
                    query_bundle.embedding_strs
                )
        if not _check_vector(retriever, query_bundle):  # all zeros: BM25 alone
            return fuse_sides(retriever, [], await _aretrieve_side(retriever._sparse, query_bundle))
        # both sides end before the lock is released, also when one fails or the caller is
        # cancelled (gather would return at the first error, a thread searching on)
        dense, sparse = await asyncio.gather(
            _aretrieve_side(retriever._dense, query_bundle),
            _aretrieve_side(retriever._sparse, query_bundle),
            return_exceptions=True,
        )
        for found in (dense, sparse):
            if isinstance(found, BaseException):
                raise found
        return fuse_sides(retriever, dense, sparse)


def _query_embed_model(retriever: Any, query_bundle: QueryBundle) -> Any:
    """The model the built-in dense side embeds ``query_bundle`` with, when it has no vector
    yet (``None`` for a custom dense side, which embeds on its own, or a text-only store)."""
    if query_bundle.embedding is not None or not retriever._dense_built_in:
        return None
    store = getattr(retriever._index, "vector_store", None)
    if not getattr(store, "is_embedding_query", True) or not query_bundle.embedding_strs:
        return None
    return getattr(retriever._dense, "_embed_model", None)


def _check_vector(retriever: Any, query_bundle: QueryBundle) -> bool:
    """Whether the dense side can rank this query (``checks.check_query_vector``: ``False``
    for an all-zero vector), checked against the built-in dense index's size too, which
    Qdrant and Milvus report only in a raw error of their own."""
    if query_bundle.embedding is None:
        return True
    dimension = index_dimension(retriever._index) if retriever._dense_built_in else None
    return check_query_vector(query_bundle.embedding, query_bundle.query_str, dimension)


def fuse_sides(
    retriever: Any, dense: list[NodeWithScore], sparse: list[NodeWithScore]
) -> list[NodeWithScore]:
    """The two sides' results fused with ``retriever``'s settings, as
    :class:`FusedNodeWithScore` telling where each side put the node (a custom side's
    results are filtered first).

    Example::

        fused = fuse_sides(retriever, dense_results, sparse_results)
        fused[0].dense_rank, fused[0].sparse_rank
    """
    dense = _post_filter(retriever, dense, retriever._dense_built_in)
    sparse = _post_filter(retriever, sparse, isinstance(retriever._sparse, BM25Retriever))
    _check_side_scores(retriever, ("dense", dense), ("sparse", sparse))
    by_id: dict[str, NodeWithScore] = {}
    rankings = []
    for side in (dense, sparse):
        ranking = []
        for n in side:
            node_id = n.node.node_id
            by_id.setdefault(node_id, n)
            ranking.append((node_id, 0.0 if n.score is None else float(n.score)))
        rankings.append(ranking)
    hits = retriever.fuse_rankings(rankings)
    lexical_only = [h.node_id for h in hits if h.ranks[0] is None]
    check_in_step(retriever, [node_id for node_id, _ in rankings[0]], lexical_only)
    return [
        FusedNodeWithScore(
            node=by_id[h.node_id].node,
            score=h.score,
            dense_rank=h.ranks[0],
            dense_score=h.scores[0],
            sparse_rank=h.ranks[1],
            sparse_score=h.scores[1],
        )
        for h in hits
    ]


def _check_side_scores(retriever: Any, *sides: tuple[str, list[NodeWithScore]]) -> None:
    """``ValueError`` naming the side, its retriever and the nodes when score fusion would
    read a NaN or infinite score, or a missing one beside scored nodes (a custom side's bug).

    Such scores made every fused score NaN in an arbitrary order, or put a node the side
    ranked first last (``None`` was read as 0.0). RRF reads only ranks, so it takes them.
    """
    if retriever.fusion_mode == "rrf":
        return
    weights = {"dense": retriever.alpha, "sparse": 1.0 - retriever.alpha}
    for name, nodes in sides:
        if not weights[name] or not nodes:
            continue
        missing = [n.node.node_id for n in nodes if n.score is None]
        bad = [n.node.node_id for n in nodes if n.score is not None and not math.isfinite(n.score)]
        if bad or (missing and len(missing) < len(nodes)):
            component = getattr(retriever, f"_{name}")
            what = "a NaN or infinite score" if bad else "no score (None) beside scored nodes"
            raise ValueError(
                f"HybridRetriever: the {name} side ({type(component).__name__}) returned "
                f"{len(bad or missing)} node(s) with {what} (e.g. {(bad or missing)[:3]}); "
                f"{retriever.fusion_mode!r} fusion cannot rank them. Fix that retriever's "
                "scores, or use fusion_mode='rrf', which reads only ranks."
            )


def _post_filter(retriever: Any, nodes: list[NodeWithScore], built_in: bool) -> list[NodeWithScore]:
    if retriever._filters is None or built_in:
        return nodes
    return [n for n in nodes if node_passes(filterable_metadata(n.node), retriever._filters)]


async def _aretrieve_side(
    retriever: BaseRetriever, query_bundle: QueryBundle
) -> list[NodeWithScore]:
    if _has_native_async(retriever):
        return await retriever.aretrieve(query_bundle)
    # a cancelled caller waits for the thread: it searches on, and must not outlive the lock
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, retriever.retrieve, query_bundle)
    return await until_done(loop.run_in_executor(None, call))


def _has_native_async(retriever: BaseRetriever) -> bool:
    from llama_index_ragtune.retrievers.external_store import store_supports_async

    native = type(retriever)._aretrieve is not BaseRetriever._aretrieve
    return native and store_supports_async(getattr(retriever, "_vector_store", None))
