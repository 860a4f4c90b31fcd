"""Micro-batching of whole hybrid retrievals: concurrent callers share one pass.

A :class:`~llama_index_ragtune.retrievers.HybridRetriever` answering many callers at
once (``aretrieve`` on an event loop, ``retrieve`` from a thread pool) would run each
query on its own: one forward pass of the query encoder, one FAISS search, one BM25
scoring, 100-200 scored nodes built and 100 nodes read back from the docstore, all
under the GIL and in several worker threads per query. :class:`HybridBatchSearch`
puts the queries of concurrent callers in one queue
(:class:`~llama_index_ragtune.embeddings.micro_batch.QueryBatcher`: a batch runs when
``max_batch_size`` queries wait or the oldest has waited ``max_wait_ms``; a lone caller
runs at once, in its own thread). One worker thread then answers the batch:

* **query embeddings**: one call of the encoder for the whole batch (ONNX / PyTorch
  batch; see :func:`~llama_index_ragtune.embeddings.micro_batch.batch_query_fn`);
* **dense side**: the FAISS store's own ``query`` per query, with the side's filters
  (so the filter, index-kind and fallback rules are exactly those of the dense retriever);
* **lexical side**: :meth:`BM25Retriever.rank <llama_index_ragtune.retrievers.BM25Retriever.rank>`
  per query, as positions and scores;
* **fusion**: the same :func:`~llama_index_ragtune.retrievers.fusion.fuse` on node ids;
* **nodes**: only the fused top-k are read from the docstore (the dense side's
  candidates are otherwise built and read back one by one).

Results are those of one-at-a-time retrieval, up to the float32 rounding of the query
vectors: an encoder run on a batch (padded to a common length) gives vectors that differ
in the last bits. Nodes, order and per-side ranks are the same unless two candidates
tie to that precision (``ragtune bench load`` reports the agreement on its queries); a
lone caller's results are bit-identical.

Used when the dense side is the built-in FAISS one (:class:`FilterableFaissVectorStore`,
any index kind) and the lexical side a :class:`BM25Retriever`; other retrievers (custom
sides, external vector stores, ``IndexNode`` objects to recurse into) run query by query
as before, with only their query embeddings micro-batched. The sides' own callback
events are not emitted for batched queries; the hybrid's retrieve event is.

Example::

    import asyncio
    from llama_index_ragtune.retrievers import HybridRetriever

    retriever = HybridRetriever.from_defaults(nodes=nodes)      # micro_batch=True
    async def serve(questions):
        return await asyncio.gather(*(retriever.aretrieve(q) for q in questions))
    asyncio.run(serve(["return opened headphones", "store hours"]))
    retriever.batch_stats           # {'requests': 2, 'batches': ..., ...}
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Any

from llama_index.core.schema import IndexNode, NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import VectorStoreQuery

from llama_index_ragtune.embeddings.micro_batch import (
    MicroBatchEmbedding,
    QueryBatcher,
    batch_query_fn,
)
from llama_index_ragtune.retrievers.bm25 import BM25Retriever
from llama_index_ragtune.retrievers.checks import check_query_vector, query_embedding_errors
from llama_index_ragtune.retrievers.faiss_store import FilterableFaissVectorStore
from llama_index_ragtune.retrievers.fused_node import FusedNodeWithScore
from llama_index_ragtune.retrievers.hybrid_update import check_in_step, until_done

__all__ = ["DEFAULT_MAX_BATCH_SIZE", "DEFAULT_MAX_WAIT_MS", "HybridBatchSearch", "batchable"]

#: Longest a query waits for others to join its batch.
DEFAULT_MAX_WAIT_MS = 2.0
#: Most queries answered in one batch.
DEFAULT_MAX_BATCH_SIZE = 32


def batchable(retriever: Any, dense_built_in: bool) -> bool:
    """Whether ``retriever``'s sides can be answered a batch at a time (module docstring).

    Example::

        batchable(HybridRetriever.from_defaults(nodes=nodes), dense_built_in=True)   # True
    """
    index, sparse = retriever.index, retriever.sparse_retriever
    if not dense_built_in or index is None or not isinstance(sparse, BM25Retriever):
        return False
    store = getattr(index, "vector_store", None)
    if not isinstance(store, FilterableFaissVectorStore) or store.stores_text:
        return False
    if not isinstance(getattr(index.index_struct, "nodes_dict", None), dict):
        return False
    if retriever.embed_model is None:
        return False
    # IndexNodes recurse into other objects inside each side's retrieve(): query by query
    return not any(isinstance(node, IndexNode) for node in sparse.nodes)


class HybridBatchSearch:
    """The queue and worker answering a :class:`HybridRetriever`'s queries in batches.

    Built by the retriever itself (``micro_batch=True``); see the module docstring.
    The retriever is held weakly: when it is garbage-collected the worker stops.

    Args:
        retriever: the hybrid retriever whose queries are answered.
        max_wait_ms: longest a query waits for others before its batch runs.
        max_batch_size: most queries per batch.

    Example::

        search = HybridBatchSearch(retriever)
        search.search(QueryBundle("return opened headphones"))   # fused results
        search.close()
    """

    def __init__(
        self,
        retriever: Any,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    ) -> None:
        ref = weakref.ref(retriever)

        def answer(bundles: list[QueryBundle]) -> list[list[NodeWithScore]]:
            owner = ref()
            if owner is None:  # pragma: no cover - only while the retriever is being collected
                raise RuntimeError("the HybridRetriever of this batch was garbage-collected")
            return search_batch(owner, bundles)

        self._batcher = QueryBatcher(
            answer,
            max_wait_ms=max_wait_ms,
            max_batch_size=max_batch_size,
            name="ragtune-hybrid-batch",
            as_result=_same,
        )
        weakref.finalize(retriever, self._batcher.close)

    @property
    def stats(self) -> dict[str, Any]:
        """Queries, batches, the largest batch and why each ran (:attr:`QueryBatcher.stats`)."""
        return self._batcher.stats

    def search(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """Blocking: the fused results of ``query_bundle`` (a lone caller runs in its own thread)."""
        return self._batcher.embed(query_bundle)  # type: ignore[arg-type]

    async def asearch(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """The fused results of ``query_bundle``; the event loop stays free meanwhile."""
        # a cancelled caller still waits for its batch: it searches on under the caller's lock
        return await until_done(asyncio.wrap_future(self._batcher.submit(query_bundle)))  # type: ignore[arg-type]

    def close(self) -> None:
        """Answer the queued queries, then stop the worker (the next query starts a new one)."""
        self._batcher.close()


def _same(result: Any) -> Any:
    return result


def _embeddings(retriever: Any, bundles: Sequence[QueryBundle]) -> list[list[float]]:
    """Each bundle's query vector, as the dense retriever would compute it; one encoder call
    for the plain queries (``embedding_strs == [query_str]``)."""
    embed = retriever.embed_model
    inner = embed.inner if isinstance(embed, MicroBatchEmbedding) else embed
    batch_fn = batch_query_fn(inner)
    vectors: list[list[float] | None] = [b.embedding for b in bundles]
    plain = [
        i
        for i, b in enumerate(bundles)
        if vectors[i] is None and b.embedding_strs == [b.query_str] and batch_fn is not None
    ]
    if plain:
        batch = batch_fn([bundles[i].query_str for i in plain])
        if len(batch) != len(plain):
            raise RuntimeError(
                f"{type(inner).__name__} returned {len(batch)} query vectors for {len(plain)} "
                "queries; it must return one per query"
            )
        for i, vector in zip(plain, batch, strict=True):
            try:
                vectors[i] = (
                    vector.tolist() if hasattr(vector, "tolist") else [float(x) for x in vector]
                )
            except (TypeError, ValueError):  # not numbers: check_query_vector names the query
                vectors[i] = vector
    for i, b in enumerate(bundles):
        if vectors[i] is None:  # several embedding strings (averaged), or a model without batches
            with query_embedding_errors(embed, b.query_str):
                vectors[i] = embed.get_agg_embedding_from_queries(b.embedding_strs)
    return vectors  # type: ignore[return-value]


def search_batch(retriever: Any, bundles: Sequence[QueryBundle]) -> list[list[NodeWithScore]]:
    """Fused results for each of ``bundles`` (already cleaned by ``prepare_query``).

    Example::

        search_batch(retriever, [QueryBundle("store hours"), QueryBundle("refunds")])
    """

    index, sparse = retriever.index, retriever.sparse_retriever
    store = index.vector_store
    nodes_dict = index.index_struct.nodes_dict
    filters = retriever.filters
    # the depth the dense retriever was built with (what one-at-a-time retrieval uses)
    dense_top_k = getattr(retriever.dense_retriever, "similarity_top_k", retriever.dense_top_k)
    check_in_step(retriever, [], [])  # counts first: a vector id unknown to nodes_dict fails here
    vectors = _embeddings(retriever, bundles)
    # a batch failing is retried query by query: each caller gets its own error
    rankable = [
        check_query_vector(vector, bundle.query_str, int(store.client.d))
        for bundle, vector in zip(bundles, vectors, strict=True)
    ]
    answers: list[list[NodeWithScore]] = []
    for bundle, vector, can_rank in zip(bundles, vectors, rankable, strict=True):
        bundle.embedding = vector  # as the dense retriever does for the caller's bundle
        dense = []  # an all-zero vector ranks nothing: BM25 alone
        if can_rank:
            found = store.query(
                VectorStoreQuery(
                    query_embedding=vector,
                    similarity_top_k=dense_top_k,
                    query_str=bundle.query_str,
                    filters=filters,
                )
            )
            dense = [
                (nodes_dict[vid], float(score))
                for vid, score in zip(found.ids or [], found.similarities or [], strict=True)
            ]
        positions = sparse.rank(bundle.query_str, sparse.similarity_top_k, sparse.filters)
        sparse_ranking = [(sparse.nodes[i].node_id, score) for i, score in positions]
        lexical = {
            node_id: i for (node_id, _), (i, _) in zip(sparse_ranking, positions, strict=True)
        }
        # fuse keeps the first occurrence of a node id on a side, as BaseRetriever.retrieve does
        hits = retriever.fuse_rankings([dense, sparse_ranking])
        check_in_step(
            retriever, [i for i, _ in dense], [h.node_id for h in hits if h.ranks[0] is None]
        )
        # nodes as the sides give them: the docstore's for dense hits, BM25's for the others
        dense_ids = [h.node_id for h in hits if h.ranks[0] is not None]
        stored = {n.node_id: n for n in index.docstore.get_nodes(dense_ids, raise_error=False)}
        missing = [node_id for node_id in dense_ids if node_id not in stored]
        if missing:
            raise KeyError(
                f"node ids {missing[:3]} of the FAISS index are not in the index's docstore; "
                "rebuild the index (HybridRetriever.from_defaults) or persist it again"
            )
        answers.append(
            [
                FusedNodeWithScore(
                    node=stored[h.node_id]
                    if h.ranks[0] is not None
                    else sparse.nodes[lexical[h.node_id]],
                    score=h.score,
                    dense_rank=h.ranks[0],
                    dense_score=h.scores[0],
                    sparse_rank=h.ranks[1],
                    sparse_score=h.scores[1],
                )
                for h in hits
            ]
        )
    return answers
