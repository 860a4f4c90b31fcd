"""MicroBatchEmbedding: concurrent callers share batches, each gets its own vector, errors stay put."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding

from llama_index_ragtune.embeddings import CachedEmbedding, MicroBatchEmbedding, model_identity

QUERIES = [f"query number {i} about {'apples ' * (i % 5)}returns" for i in range(64)]


class HashEmbedding(BaseEmbedding):
    """Deterministic 8-d vectors from a hash of the text; records every batch it embeds.

    With ``gate`` set, the first batch signals ``entered`` and then waits for the gate, so
    the test can queue the other callers behind it; ``fail_on`` raises for that query.
    """

    batches: list = []
    threads: list = []
    fail_on: str | None = None
    gate: threading.Event | None = None
    entered: threading.Event | None = None

    @classmethod
    def class_name(cls) -> str:
        return "HashEmbedding"

    @staticmethod
    def vector(text: str) -> list[float]:
        digest = hashlib.sha256(text.encode()).digest()
        return [b / 255.0 for b in digest[:8]]

    def encode_queries(self, queries: list[str]) -> list[list[float]]:
        if self.gate is not None and not self.batches:
            self.entered.set()
            assert self.gate.wait(30), "the test never released the first batch"
        self.batches.append(list(queries))
        self.threads.append(threading.current_thread().name)
        if self.fail_on in queries:
            raise ValueError(f"cannot embed {self.fail_on!r}")
        return [self.vector(q) for q in queries]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self.encode_queries([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self.vector("doc:" + text)


class NoBatchEmbedding(BaseEmbedding):
    """A model with no way to embed several queries in one call."""

    @classmethod
    def class_name(cls) -> str:
        return "NoBatchEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return HashEmbedding.vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return HashEmbedding.vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return HashEmbedding.vector(text)


def hash_model(gated: bool = False, **kwargs) -> HashEmbedding:
    if gated:
        kwargs.update(gate=threading.Event(), entered=threading.Event())
    return HashEmbedding(batches=[], threads=[], **kwargs)


def threaded_burst(pool, embed, model, queries):
    """Submit ``queries`` from threads: the first runs alone (held at the gate) while all
    the others queue behind it; then release the gate. Returns the futures."""
    futures = [pool.submit(embed.get_query_embedding, queries[0])]
    assert model.entered.wait(30)
    futures += [pool.submit(embed.get_query_embedding, q) for q in queries[1:]]
    while embed.stats["requests"] < len(queries):  # the threads are queuing their queries
        threading.Event().wait(0.001)
    model.gate.set()
    return futures


def worker_threads(embed: MicroBatchEmbedding) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == embed.batcher.name and t.is_alive()]


# ---------------------------------------------------------------------- vectors and batches


async def test_async_callers_share_batches_and_get_their_own_vectors():
    model = hash_model(gated=True)
    embed = MicroBatchEmbedding(model, max_wait_ms=5, max_batch_size=64)
    tasks = [asyncio.create_task(embed.aget_query_embedding(QUERIES[0]))]
    assert await asyncio.to_thread(model.entered.wait, 30)  # the model is busy with the first
    tasks += [asyncio.create_task(embed.aget_query_embedding(q)) for q in QUERIES[1:]]
    await asyncio.sleep(0)  # every task has queued its query
    assert embed.stats["requests"] == len(QUERIES)
    model.gate.set()
    vectors = await asyncio.gather(*tasks)
    assert vectors == [HashEmbedding.vector(q) for q in QUERIES]
    # the first query ran alone (the model was idle); the rest queued behind it: one batch
    assert model.batches == [QUERIES[:1], QUERIES[1:]]
    assert embed.stats["largest_batch"] == len(QUERIES) - 1
    embed.close()


def test_threads_share_batches_and_get_their_own_vectors():
    model = hash_model(gated=True)
    embed = MicroBatchEmbedding(model, max_wait_ms=5, max_batch_size=16)
    with ThreadPoolExecutor(len(QUERIES)) as pool:
        futures = threaded_burst(pool, embed, model, QUERIES)
        vectors = [f.result() for f in futures]
    assert vectors == [HashEmbedding.vector(q) for q in QUERIES]
    assert [len(b) for b in model.batches] == [1, 16, 16, 16, 15]
    assert sorted(q for b in model.batches for q in b) == sorted(QUERIES)
    embed.close()


def test_many_concurrent_callers_without_a_gate():
    """Free-running: async callers and threads at once, several rounds; nobody gets another's vector."""
    model = hash_model()
    embed = MicroBatchEmbedding(model, max_wait_ms=2, max_batch_size=8)
    queries = QUERIES * 4

    async def async_side():
        return await asyncio.gather(*(embed.aget_query_embedding(q) for q in queries))

    with ThreadPoolExecutor(8) as pool:
        threaded = pool.map(embed.get_query_embedding, queries)
        from_loop = asyncio.run(async_side())
        from_threads = list(threaded)
    expected = [HashEmbedding.vector(q) for q in queries]
    assert from_loop == expected and from_threads == expected
    stats = embed.stats
    assert stats["requests"] == 2 * len(queries)
    assert sum(len(b) for b in model.batches) == stats["requests"]
    assert stats["batches"] == len(model.batches) < stats["requests"]
    assert stats["largest_batch"] <= 8
    embed.close()


def test_real_onnx_encoder_batched_vectors_match_single_queries(tiny_encoder_path, tmp_path):
    pytest.importorskip("onnxruntime")
    from llama_index_ragtune.embeddings import OnnxEmbedding

    inner = OnnxEmbedding(tiny_encoder_path, cache_dir=tmp_path / "onnx")
    expected = np.array([inner.get_query_embedding(q) for q in QUERIES])
    embed = MicroBatchEmbedding(inner, max_wait_ms=2, max_batch_size=16)

    async def together():
        return await asyncio.gather(*(embed.aget_query_embedding(q) for q in QUERIES))

    got_async = np.array(asyncio.run(together()))
    with ThreadPoolExecutor(8) as pool:
        got_threads = np.array(list(pool.map(embed.get_query_embedding, QUERIES)))
    # batches pad queries to a common length: the same vector up to float32 rounding
    assert np.abs(got_async - expected).max() < 1e-5
    assert np.abs(got_threads - expected).max() < 1e-5
    assert embed.stats["batches"] < 2 * len(QUERIES)
    # documents pass straight through, unbatched by the wrapper
    assert embed.get_text_embedding_batch(QUERIES[:3]) == inner.get_text_embedding_batch(
        QUERIES[:3]
    )
    embed.close()


def test_pytorch_huggingface_embedding_batches(tiny_encoder_path):
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    inner = HuggingFaceEmbedding(model_name=tiny_encoder_path, device="cpu")
    expected = np.array([inner.get_query_embedding(q) for q in QUERIES[:24]])
    embed = MicroBatchEmbedding(inner, max_wait_ms=2, max_batch_size=8)
    with ThreadPoolExecutor(8) as pool:
        got = np.array(list(pool.map(embed.get_query_embedding, QUERIES[:24])))
    assert np.abs(got - expected).max() < 1e-5
    assert embed.stats["requests"] == 24
    embed.close()


# ---------------------------------------------------------------------- lone callers


def test_lone_sequential_caller_never_waits():
    """A caller alone is embedded at once: with a one-minute wait bound, 20 calls still return,
    each in a batch of its own that ran without waiting."""
    model = hash_model()
    embed = MicroBatchEmbedding(model, max_wait_ms=60_000, max_batch_size=16)
    for q in QUERIES[:20]:
        assert embed.get_query_embedding(q) == HashEmbedding.vector(q)
    assert asyncio.run(embed.aget_query_embedding(QUERIES[20])) == HashEmbedding.vector(QUERIES[20])
    assert [len(b) for b in model.batches] == [1] * 21
    assert embed.stats["flushes"] == {"alone": 21, "full": 0, "deadline": 0}
    # a blocking lone caller runs the model in its own thread: no hand-off to the worker
    assert model.threads[:20] == [threading.current_thread().name] * 20
    assert model.threads[20] == embed.batcher.name  # the async caller's query: the worker
    embed.close()


def test_after_a_burst_a_lone_caller_waits_at_most_the_bound_then_runs_alone_again():
    model = hash_model(gated=True)
    embed = MicroBatchEmbedding(model, max_wait_ms=20, max_batch_size=64)
    with ThreadPoolExecutor(8) as pool:
        [f.result() for f in threaded_burst(pool, embed, model, QUERIES[:8])]
    # the burst makes the next lone query wait for company, up to max_wait_ms (then it runs)
    assert embed.get_query_embedding("after the burst") == HashEmbedding.vector("after the burst")
    assert embed.get_query_embedding("alone again") == HashEmbedding.vector("alone again")
    assert [len(b) for b in model.batches] == [1, 7, 1, 1]
    assert embed.stats["flushes"] == {"alone": 2, "full": 0, "deadline": 2}
    embed.close()


def test_a_full_queue_runs_at_once_however_long_the_wait_bound():
    model = hash_model(gated=True)
    embed = MicroBatchEmbedding(model, max_wait_ms=60_000, max_batch_size=4)
    with ThreadPoolExecutor(9) as pool:
        futures = threaded_burst(pool, embed, model, QUERIES[:9])
        assert [f.result() for f in futures] == [HashEmbedding.vector(q) for q in QUERIES[:9]]
    assert [len(b) for b in model.batches] == [1, 4, 4]
    assert embed.stats["flushes"] == {"alone": 1, "full": 2, "deadline": 0}
    embed.close()


# ---------------------------------------------------------------------- errors


def test_an_error_reaches_only_the_caller_whose_query_caused_it():
    model = hash_model(gated=True, fail_on=QUERIES[5])
    embed = MicroBatchEmbedding(model, max_wait_ms=5, max_batch_size=64)
    with ThreadPoolExecutor(16) as pool:
        futures = threaded_burst(pool, embed, model, QUERIES[:16])
        for i, future in enumerate(futures):
            if i == 5:
                with pytest.raises(ValueError, match="query number 5 "):
                    future.result()
            else:
                assert future.result() == HashEmbedding.vector(QUERIES[i])
    # the failed batch of 15 was retried query by query
    assert [len(b) for b in model.batches] == [1, 15] + [1] * 15
    assert embed.get_query_embedding("still working") == HashEmbedding.vector("still working")
    embed.close()


async def test_async_error_and_cancellation_stay_with_their_caller():
    model = hash_model(gated=True, fail_on="bad query")
    embed = MicroBatchEmbedding(model, max_wait_ms=5, max_batch_size=64)
    first = asyncio.create_task(embed.aget_query_embedding("first"))
    assert await asyncio.to_thread(model.entered.wait, 30)
    bad = asyncio.create_task(embed.aget_query_embedding("bad query"))
    cancelled = asyncio.create_task(embed.aget_query_embedding("cancelled"))
    good = asyncio.create_task(embed.aget_query_embedding("good"))
    await asyncio.sleep(0)
    cancelled.cancel()
    model.gate.set()
    assert await first == HashEmbedding.vector("first")
    with pytest.raises(ValueError, match="bad query"):
        await bad
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await good == HashEmbedding.vector("good")
    assert model.batches[1] == ["bad query", "good"]  # the cancelled query was never embedded
    assert "cancelled" not in [q for b in model.batches for q in b]
    embed.close()


def test_batch_function_returning_the_wrong_count_fails_every_caller_clearly():
    model = hash_model()
    embed = MicroBatchEmbedding(model, batch_fn=lambda queries: [[0.0]] * (len(queries) + 1))
    with pytest.raises(RuntimeError, match="returned 2 vectors for 1 queries"):
        embed.get_query_embedding("one")
    embed.close()


def test_models_that_cannot_batch_are_refused_with_a_fix():
    with pytest.raises(TypeError, match="pass batch_fn="):
        MicroBatchEmbedding(NoBatchEmbedding())
    fallback = MicroBatchEmbedding(
        NoBatchEmbedding(), batch_fn=lambda qs: [HashEmbedding.vector(q) for q in qs]
    )
    assert fallback.get_query_embedding("q") == HashEmbedding.vector("q")
    fallback.close()
    with pytest.raises(TypeError, match="BaseEmbedding"):
        MicroBatchEmbedding("all-MiniLM-L6-v2")
    with pytest.raises(TypeError, match="only once"):
        MicroBatchEmbedding(MicroBatchEmbedding(hash_model()))
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatchEmbedding(hash_model(), max_batch_size=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        MicroBatchEmbedding(hash_model(), max_wait_ms=-1)


# ---------------------------------------------------------------------- shutdown


def test_close_embeds_queued_queries_then_stops_and_a_later_query_restarts():
    model = hash_model(gated=True)
    embed = MicroBatchEmbedding(model, max_wait_ms=5, max_batch_size=4)
    futures = [embed.batcher.submit(QUERIES[0])]
    assert model.entered.wait(30)
    futures += [embed.batcher.submit(q) for q in QUERIES[1:10]]
    with ThreadPoolExecutor(1) as pool:
        closer = pool.submit(embed.close)
        model.gate.set()
        closer.result()
    assert all(f.done() for f in futures)  # close() returned after the queue was drained
    assert [f.result() for f in futures] == [HashEmbedding.vector(q) for q in QUERIES[:10]]
    assert [len(b) for b in model.batches] == [1, 4, 4, 1]
    assert worker_threads(embed) == []
    later = asyncio.run(embed.aget_query_embedding("later"))  # queued: a new worker starts
    assert later == HashEmbedding.vector("later")
    assert len(worker_threads(embed)) == 1
    with embed:
        pass
    assert worker_threads(embed) == []


def test_worker_stops_when_the_wrapper_is_garbage_collected():
    embed = MicroBatchEmbedding(hash_model())
    asyncio.run(embed.aget_query_embedding("x"))  # queued: the worker thread starts
    name = embed.batcher.name
    thread = next(t for t in threading.enumerate() if t.name == name)
    del embed
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()


# ---------------------------------------------------------------------- wiring


def test_cache_identity_is_the_wrapped_models_and_cached_embedding_batches(tmp_path):
    model = hash_model()
    embed = MicroBatchEmbedding(model)
    assert model_identity(embed) == model_identity(model)
    # a CachedEmbedding passes queries straight through: wrapping it batches its model
    cached = MicroBatchEmbedding(CachedEmbedding(hash_model(), cache_dir=tmp_path))
    assert cached.get_query_embedding("q") == HashEmbedding.vector("q")
    assert embed.to_dict()["max_batch_size"] == 16 and embed.class_name() == "MicroBatchEmbedding"
    embed.close()
    cached.close()


async def test_hybrid_retriever_batches_concurrent_queries_by_default(tiny_encoder_path, tmp_path):
    pytest.importorskip("onnxruntime")
    from llama_index.core.schema import TextNode

    from llama_index_ragtune.embeddings import default_embed_model
    from llama_index_ragtune.retrievers import HybridRetriever

    topics = [(w, v) for w in ("apples", "phones", "milk", "laptops") for v in ("returns", "hours")]
    nodes = [TextNode(id_=f"n{i}", text=f"document {i} on {w} and {v}") for i, (w, v) in
             enumerate(topics)]  # fmt: skip
    inner = default_embed_model(tiny_encoder_path, cache_dir=tmp_path / "onnx")
    plain = HybridRetriever.from_defaults(
        nodes=nodes, embed_model=inner, similarity_top_k=3, micro_batch=False
    )
    batched = HybridRetriever.from_defaults(nodes=nodes, embed_model=inner, similarity_top_k=3)
    queries = [f"{w} {v}" for w, v in topics[2:]] * 4
    plain.retrieve(queries[0])
    assert plain.batch_stats is None  # micro_batch=False: query by query
    results = await asyncio.gather(*(batched.aretrieve(q) for q in queries))
    for query, got in zip(queries, results, strict=True):
        assert [n.node.node_id for n in got] == [n.node.node_id for n in plain.retrieve(query)]
    # the built-in sides answer whole batches: one encoder call per batch (hybrid_batch)
    assert batched.batch_stats["requests"] == len(queries)
    assert batched.batch_stats["batches"] < len(queries)
    # persisted and loaded again, the retriever still batches
    batched.persist(tmp_path / "index")
    again = HybridRetriever.from_persist_dir(tmp_path / "index", embed_model=inner)
    await asyncio.gather(*(again.aretrieve(q) for q in queries))
    assert again.batch_stats["requests"] == len(queries)
    assert again.batch_stats["batches"] < len(queries)
