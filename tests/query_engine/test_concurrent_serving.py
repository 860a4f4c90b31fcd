"""One served query stack shared by many requests, the way a web app uses it.

Engines over the same parts (``Bundle.as_query_engine``, per-request callback managers),
a reranker that keeps the retriever's score, and the feedback wrapper's async path while
another writer holds the store: no request may see another's events, scores or stalls.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.base.response.schema import AsyncStreamingResponse
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

from llama_index_ragtune.feedback import FeedbackQueryEngine, FeedbackStore
from llama_index_ragtune.pipeline.bundle import Bundle
from llama_index_ragtune.postprocessor import CrossEncoderRerank
from llama_index_ragtune.postprocessor import cross_encoder as cross_encoder_module
from llama_index_ragtune.query_engine import CitationQueryEngine
from llama_index_ragtune.retrievers import HybridRetriever
from tests.stub_llm import StubChatLLM

TEXTS = {
    "grocery-returns": "Fresh apples must be reported within 48 hours with the receipt.",
    "grocery-delivery": "Grocery delivery costs 4 dollars, free over 60 dollars.",
    "electronics-returns": "Opened electronics can be returned within 14 days.",
    "electronics-apple": "Apple iPhones can be returned within 14 days if signed out of Find My.",
}


def help_centre() -> list[TextNode]:
    return [TextNode(id_=k, text=v, metadata={"store": k.split("-")[0]}) for k, v in TEXTS.items()]


class EchoLLM(StubChatLLM):
    """Answers "<question length> [1]", streamed in 3-character deltas (async twins included)."""

    def reply(self, messages: Sequence[ChatMessage]) -> str:
        return f"{len(messages[-1].content)} [1]"


class FakeCrossEncoder:
    """A sentence-transformers ``CrossEncoder`` stand-in: scores a pair by its text's length."""

    num_labels = 1

    def predict(self, pairs, batch_size: int = 32, show_progress_bar: bool = False):
        return np.array([float(len(text)) for _, text in pairs])


def reranking_events(handler: LlamaDebugHandler) -> int:
    return len(handler.get_event_pairs(CBEventType.RERANKING))


# ------------------------------------------------------------ callback managers


def test_engines_sharing_a_reranker_keep_their_own_reranking_events():
    """A second engine (another request's or tenant's callback manager) over the same
    reranker used to rewire it: the first engine's RERANKING events went to the second's
    handlers, and the first's handlers saw none."""
    reranker = CrossEncoderRerank(FakeCrossEncoder(), top_n=2)
    nodes = [NodeWithScore(node=n, score=1.0) for n in help_centre()]

    class Retriever(BaseRetriever):
        def _retrieve(self, query_bundle):
            return [NodeWithScore(node=n.node, score=n.score) for n in nodes]

    first, second = LlamaDebugHandler(), LlamaDebugHandler()
    engine_a = CitationQueryEngine(
        Retriever(),
        llm=EchoLLM(),
        node_postprocessors=[reranker],
        callback_manager=CallbackManager([first]),
    )
    engine_b = CitationQueryEngine(
        Retriever(),
        llm=EchoLLM(),
        node_postprocessors=[reranker],
        callback_manager=CallbackManager([second]),
    )
    engine_a.query("apple return policy?")
    assert (reranking_events(first), reranking_events(second)) == (1, 0)
    engine_b.query("apple return policy?")
    assert (reranking_events(first), reranking_events(second)) == (1, 1)
    # the first engine keeps the object it was given; the second's copy shares the model
    assert engine_a._node_postprocessors[0] is reranker
    assert engine_b._node_postprocessors[0].cross_encoder is reranker.cross_encoder


def test_bundle_engines_with_their_own_callback_manager_leave_the_served_engine_alone():
    """``bundle.as_query_engine(callback_manager=...)`` per request: the bundle's own engine
    kept sending its reranking events to the last request's handlers."""
    served, request = LlamaDebugHandler(), LlamaDebugHandler()
    retriever = HybridRetriever.from_defaults(
        nodes=help_centre(), embed_model=MockEmbedding(embed_dim=8), similarity_top_k=3
    )
    reranker = CrossEncoderRerank(FakeCrossEncoder(), top_n=2)
    llm = EchoLLM()
    engine = CitationQueryEngine(
        retriever,
        llm=llm,
        node_postprocessors=[reranker],
        callback_manager=CallbackManager([served]),
    )
    bundle = Bundle(Path("v1"), {"version": "v1"}, retriever, [reranker], llm, engine, {})
    grocery = bundle.as_query_engine(
        filters=MetadataFilters(filters=[MetadataFilter(key="store", value="grocery")]),
        callback_manager=CallbackManager([request]),
    )
    bundle.query_engine.query("apple return policy?")
    assert (reranking_events(served), reranking_events(request)) == (1, 0)
    response = grocery.query("apple return policy?")
    assert (reranking_events(served), reranking_events(request)) == (1, 1)
    assert {n.node.metadata["store"] for n in response.source_nodes} == {"grocery"}


def test_engine_copies_of_a_lazy_reranker_load_its_model_once(monkeypatch):
    loads = []

    def load(self):
        loads.append(self.model)
        return FakeCrossEncoder()

    monkeypatch.setattr(cross_encoder_module, "resolve_model_path", lambda model: str(model))
    monkeypatch.setattr(CrossEncoderRerank, "_load", load)
    reranker = CrossEncoderRerank("runs/reranker", top_n=2)
    nodes = [NodeWithScore(node=n, score=1.0) for n in help_centre()]
    engines = [
        CitationQueryEngine(
            HybridRetriever.from_defaults(
                nodes=help_centre(), embed_model=MockEmbedding(embed_dim=8)
            ),
            llm=EchoLLM(),
            node_postprocessors=[reranker],
            callback_manager=CallbackManager([LlamaDebugHandler()]),
        )
        for _ in range(3)
    ]
    with ThreadPoolExecutor(3) as pool:
        list(
            pool.map(
                lambda e: e._node_postprocessors[0].postprocess_nodes(nodes, query_str="q"), engines
            )
        )
    assert loads == ["runs/reranker"]


# ------------------------------------------------------------ nodes shared by requests


def test_keep_retrieval_score_gives_each_request_its_own_score_and_leaves_the_index_alone():
    """``keep_retrieval_score=True`` wrote the score into the retrieved node itself - the
    index's object, shared by every request - so concurrent requests read each other's
    scores and the index's nodes kept the last one."""
    shared = help_centre()  # the index's node objects (BM25 hands out its own)
    reranker = CrossEncoderRerank(FakeCrossEncoder(), top_n=None, keep_retrieval_score=True)
    barrier = threading.Barrier(8)

    def request(i: int) -> list[tuple[str, float, float]]:
        nodes = [NodeWithScore(node=n, score=i + j / 10) for j, n in enumerate(shared)]
        barrier.wait()
        out = reranker.postprocess_nodes(nodes, query_str=f"question {i}")
        return [(n.node.node_id, n.node.metadata["retrieval_score"], i) for n in out]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(request, range(8)))
    ids = list(TEXTS)
    for rows in results:
        for node_id, kept, i in rows:
            assert kept == pytest.approx(i + ids.index(node_id) / 10)
    for node in shared:
        assert "retrieval_score" not in node.metadata
        assert "retrieval_score" not in node.excluded_llm_metadata_keys
    kept = reranker.postprocess_nodes([NodeWithScore(node=shared[0], score=0.5)], query_str="q")
    assert kept[0].node.metadata["retrieval_score"] == 0.5
    assert "retrieval_score" not in kept[0].node.get_content(metadata_mode=MetadataMode.LLM)


# ------------------------------------------------------------ the feedback wrapper


def _hold_write_lock(path: Path, seconds: float, ready: threading.Event) -> None:
    con = sqlite3.connect(path, timeout=10)
    try:
        con.execute("BEGIN IMMEDIATE")
        ready.set()
        time.sleep(seconds)
        con.rollback()
    finally:
        con.close()


@pytest.mark.parametrize("streaming", [False, True])
def test_feedback_aquery_waiting_for_the_store_does_not_block_the_event_loop(tmp_path, streaming):
    """The store write of ``aquery`` (and of an async stream's end) ran on the event loop:
    while another writer held the file's lock, every other request of the app stalled."""
    path = tmp_path / "feedback.sqlite"
    store = FeedbackStore(path)
    retriever = HybridRetriever.from_defaults(
        nodes=help_centre(), embed_model=MockEmbedding(embed_dim=8), similarity_top_k=2
    )
    engine = FeedbackQueryEngine(
        CitationQueryEngine(retriever, llm=EchoLLM(), streaming=streaming), store
    )
    asyncio.run(engine.aquery("warm up"))

    async def run():
        gaps: list[float] = []
        stop = asyncio.Event()

        async def heartbeat():
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ready = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(path, 1.2, ready))
        holder.start()
        ready.wait(10)
        beat = asyncio.create_task(heartbeat())
        response = await engine.aquery("apple return policy?")
        if streaming:
            assert isinstance(response, AsyncStreamingResponse)
            text = "".join([d async for d in response.async_response_gen()])
        else:
            text = response.response
        stop.set()
        await beat
        await asyncio.to_thread(holder.join)
        return response, text, max(gaps)

    response, text, longest = asyncio.run(run())
    assert longest < 0.6, f"the event loop stood still for {longest:.2f} s"
    record = store.get(response.metadata["feedback_id"])
    assert record.query == "apple return policy?" and record.answer == text
    assert text.endswith("[1]") and list(record.cited_node_ids) == [
        response.source_nodes[0].node_id
    ]
