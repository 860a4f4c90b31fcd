"""HybridRetriever answers concurrent callers in shared batches, with one-at-a-time results."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

from llama_index_ragtune.retrievers import HybridRetriever
from tests.retrievers.conftest import KeywordEmbedding

QUERIES = [
    "apple return",
    "refund perishable groceries",
    "opened electronics in the box",
    "store opening hours",
    "laptop warranty days",
    "phone case shipping",
    "fresh milk refund",
    "banana apple store hours",
] * 4
GROCERY = MetadataFilters(filters=[MetadataFilter(key="store", value="grocery")])


class BatchKeywordEmbedding(KeywordEmbedding):
    """KeywordEmbedding that can embed several queries in one call; records each batch.

    ``gate``: the first batch waits for it (so a test can hold the worker); ``fail_on``:
    a batch holding that query raises.
    """

    batches: list = []
    gate: threading.Event | None = None
    fail_on: str | None = None

    @classmethod
    def class_name(cls) -> str:
        return "BatchKeywordEmbedding"

    def encode_queries(self, queries: list[str]) -> list[list[float]]:
        if self.gate is not None and not self.batches:
            assert self.gate.wait(30), "the test never opened the gate"
        self.batches.append(list(queries))
        if self.fail_on in queries:
            raise ValueError(f"cannot embed {self.fail_on!r}")
        return [self._vector(q) for q in queries]


def build(nodes, embed, **kwargs) -> HybridRetriever:
    return HybridRetriever.from_defaults(
        nodes=nodes, embed_model=embed, similarity_top_k=5, dense_top_k=6, sparse_top_k=6, **kwargs
    )


def table(results):
    return [
        (n.node.node_id, n.score, n.dense_rank, n.dense_score, n.sparse_rank, n.sparse_score)
        for n in results
    ]


@pytest.fixture()
def pair(store_nodes):
    """(batched retriever, the same over one index without micro-batching, the encoder)."""
    embed = BatchKeywordEmbedding(batches=[])
    batched = build(store_nodes, embed)
    plain = HybridRetriever.from_defaults(
        index=batched.index,
        embed_model=embed,
        similarity_top_k=5,
        dense_top_k=6,
        sparse_top_k=6,
        micro_batch=False,
    )
    return batched, plain, embed


def test_concurrent_async_results_equal_one_at_a_time(pair):
    batched, plain, embed = pair
    expected = [table(plain.retrieve(q)) for q in QUERIES]
    assert batched.batch_stats is None  # nothing batched yet
    embed.batches.clear()

    async def everyone():
        return await asyncio.gather(*(batched.aretrieve(q) for q in QUERIES))

    got = [table(r) for r in asyncio.run(everyone())]
    assert got == expected  # same nodes, order, per-side ranks and scores
    stats = batched.batch_stats
    assert stats["requests"] == len(QUERIES) and stats["batches"] < len(QUERIES)
    assert stats["largest_batch"] > 1
    # concurrent callers shared encoder calls: fewer calls than queries, each one a batch
    assert sum(len(b) for b in embed.batches) == len(QUERIES)
    assert len(embed.batches) < len(QUERIES) and max(len(b) for b in embed.batches) > 1


def test_one_at_a_time_is_answered_at_once(pair):
    batched, plain, embed = pair
    embed.batches.clear()
    start = time.perf_counter()
    for query in QUERIES[:8]:
        assert table(batched.retrieve(query)) == table(plain.retrieve(query))
    assert time.perf_counter() - start < 5
    # a lone caller never waits for company: every batch held one query and ran at once
    assert batched.batch_stats["flushes"]["alone"] == 8
    assert [len(b) for b in embed.batches] == [1] * 8


def test_threads_share_batches_and_stay_correct(pair, store_nodes):
    batched, plain, _ = pair
    scoped = batched.with_filters(GROCERY)
    grocery = {n.node_id for n in store_nodes if n.metadata["store"] == "grocery"}
    expected = {q: table(plain.retrieve(q)) for q in QUERIES}
    expected_scoped = {q: table(plain.with_filters(GROCERY).retrieve(q)) for q in QUERIES}

    def ask(i):
        query = QUERIES[i % len(QUERIES)]
        if i % 2:
            return "scoped", query, scoped.retrieve(query)
        return "all", query, batched.retrieve(query)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(4 * len(QUERIES))))
    for kind, query, results in answers:
        if kind == "scoped":
            assert table(results) == expected_scoped[query]
            assert {n.node.node_id for n in results} <= grocery
        else:
            assert table(results) == expected[query]
    # each retriever has its own queue (its own filters)
    assert batched.batch_stats["requests"] == scoped.batch_stats["requests"] == 2 * len(QUERIES)


def test_aretrieve_leaves_the_event_loop_free(store_nodes):
    embed = BatchKeywordEmbedding(batches=[], gate=threading.Event())
    retriever = build(store_nodes, embed)

    async def main():
        ticks = 0
        task = asyncio.ensure_future(retriever.aretrieve("apple return"))
        for _ in range(20):  # the worker is held at the gate; the loop keeps running
            await asyncio.sleep(0.005)
            ticks += 1
        assert not task.done()
        embed.gate.set()
        return ticks, await task

    ticks, results = asyncio.run(main())
    assert ticks == 20 and results and results[0].node.node_id in {"g1", "e1"}


def test_a_failing_query_fails_alone(pair):
    batched, plain, embed = pair
    expected = {q: table(plain.retrieve(q)) for q in QUERIES[:8]}
    embed.fail_on = "refund perishable groceries"

    async def everyone():
        return await asyncio.gather(
            *(batched.aretrieve(q) for q in QUERIES[:8]), return_exceptions=True
        )

    results = asyncio.run(everyone())
    for query, result in zip(QUERIES[:8], results, strict=True):
        if query == embed.fail_on:
            assert isinstance(result, ValueError) and "cannot embed" in str(result)
        else:
            assert table(result) == expected[query]


def test_custom_sides_and_micro_batch_false_do_not_batch(store_nodes, keyword_embedding):
    off = build(store_nodes, keyword_embedding, micro_batch=False)
    off.retrieve("apple return")
    assert off.batch_stats is None
    custom = HybridRetriever(
        dense_retriever=build(store_nodes, keyword_embedding).dense_retriever,
        sparse_retriever=build(store_nodes, keyword_embedding).sparse_retriever,
    )
    assert asyncio.run(custom.aretrieve("apple return"))
    assert custom.batch_stats is None


def test_worker_stops_with_its_retriever(store_nodes, keyword_embedding):
    retriever = build(store_nodes, keyword_embedding)

    async def two(hybrid):
        return await asyncio.gather(hybrid.aretrieve("apple"), hybrid.aretrieve("milk"))

    asyncio.run(two(retriever))
    workers = [t for t in threading.enumerate() if t.name.startswith("ragtune-hybrid-batch")]
    assert workers
    mine = workers[-1]
    del retriever
    gc.collect()
    mine.join(5)
    assert not mine.is_alive()


def test_real_encoder_concurrent_equals_sequential(store_nodes):
    """The bundled MiniLM (ONNX): a batch pads queries, so scores agree to float32 rounding."""
    from llama_index_ragtune.embeddings import default_embed_model

    embed = default_embed_model()
    batched = build(store_nodes, embed)
    plain = HybridRetriever.from_defaults(
        index=batched.index,
        embed_model=embed,
        similarity_top_k=5,
        dense_top_k=6,
        sparse_top_k=6,
        micro_batch=False,
    )
    expected = [plain.retrieve(q) for q in QUERIES]

    async def everyone():
        return await asyncio.gather(*(batched.aretrieve(q) for q in QUERIES))

    got = asyncio.run(everyone())
    assert batched.batch_stats["largest_batch"] > 1
    for want, have in zip(expected, got, strict=True):
        assert [(n.node.node_id, n.dense_rank, n.sparse_rank) for n in have] == [
            (n.node.node_id, n.dense_rank, n.sparse_rank) for n in want
        ]
        assert [n.score for n in have] == pytest.approx([n.score for n in want], rel=1e-5, abs=1e-6)
        assert [n.sparse_score for n in have] == [n.sparse_score for n in want]
