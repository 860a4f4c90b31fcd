"""FeedbackQueryEngine around real LlamaIndex query engines: what each answer leaves in the store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from fb_helpers import TEXTS
from llama_index.core import SummaryIndex
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.base.response.schema import AsyncStreamingResponse, StreamingResponse
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import TextNode

from llama_index_ragtune.feedback import FeedbackQueryEngine, FeedbackStore
from llama_index_ragtune.query_engine import CitationQueryEngine
from llama_index_ragtune.retrievers import HybridRetriever
from tests.stub_llm import StubChatLLM

NODES = [TextNode(id_=k, text=v, metadata={"store": k[0]}) for k, v in TEXTS.items()]


class FixedLLM(StubChatLLM):
    """A chat LLM that always answers ``answer`` (streamed in 4-character chunks)."""

    answer: str = ""
    chunk: int = 4

    def reply(self, messages: Sequence[ChatMessage]) -> str:
        return self.answer

    def completion(self, prompt: str) -> str:
        return self.answer


@pytest.fixture
def store(tmp_path):
    with FeedbackStore(tmp_path / "feedback.sqlite") as opened:
        yield opened


@pytest.fixture(scope="module")
def hybrid():
    return HybridRetriever.from_defaults(
        nodes=NODES, embed_model=MockEmbedding(embed_dim=8), similarity_top_k=3
    )


def test_records_a_retriever_query_engine_over_the_hybrid_retriever(store, hybrid):
    inner = RetrieverQueryEngine.from_args(hybrid, llm=MockLLM(max_tokens=5))
    engine = FeedbackQueryEngine(inner, store, bundle_version="v1", metadata={"tenant": "demo"})
    response = engine.query("apple return policy?")
    rid = response.metadata["feedback_id"]
    record = store.get(rid)
    assert record.query == "apple return policy?"
    assert record.retrieved_node_ids == [n.node.node_id for n in response.source_nodes]
    assert [n.score for n in record.retrieved] == pytest.approx(
        [n.score for n in response.source_nodes]
    )
    assert len(record.retrieved) == 3 and record.answer == response.response
    assert record.cited_node_ids == () and record.refused is False  # core engines do not cite
    assert record.latency_ms > 0 and record.bundle_version == "v1"
    assert record.metadata == {"tenant": "demo"}
    for source in response.source_nodes:  # texts as shown and as embedded (with metadata)
        assert store.node_text(source.node.node_id) == TEXTS[source.node.node_id]
        assert "store: " in store.node_text(source.node.node_id, embed=True)

    clicked = response.source_nodes[1].node.node_id
    store.click(rid, clicked)
    store.rate(rid, +1)
    ds = store.to_retrieval_dataset()
    assert list(ds.relevant_docs.values()) == [[clicked]]

    async_response = asyncio.run(engine.aquery("warranty for phones?"))
    assert store.get(async_response.metadata["feedback_id"]).query == "warranty for phones?"
    assert len(store) == 2


def test_records_citation_query_engine_citations_and_refusals(store, hybrid):
    inner = CitationQueryEngine(hybrid, llm=FixedLLM(answer="Seven days [1]. Also [9]."))
    engine = FeedbackQueryEngine(inner, store)
    response = engine.query("apple return policy?")
    record = store.get(response.metadata["feedback_id"])
    first = response.source_nodes[0].node.node_id
    assert record.cited_node_ids == (first,) == tuple(response.metadata["cited_node_ids"])
    assert record.answer == response.response == "Seven days [1]. Also."
    assert record.refused is False

    refusing = CitationQueryEngine(hybrid, llm=FixedLLM(answer=inner.refusal))
    response = FeedbackQueryEngine(refusing, store).query("who won the cup?")
    record = store.get(response.metadata["feedback_id"])
    assert record.refused is True and record.cited_node_ids == ()
    store.rate(record.id, +1)  # the user agrees the sources lack the answer
    assert store.stats().refusal_rate == pytest.approx(0.5)


def test_streaming_answers_are_recorded_when_the_stream_ends(store, hybrid):
    answer = "Seven days with the receipt [2]."
    inner = CitationQueryEngine(hybrid, llm=FixedLLM(answer=answer), streaming=True)
    engine = FeedbackQueryEngine(inner, store, bundle_version="v2")

    response = engine.query("apple return policy?")
    assert isinstance(response, StreamingResponse)
    rid = response.metadata["feedback_id"]
    assert len(store) == 0  # nothing answered yet
    text = "".join(response.response_gen)
    record = store.get(rid)
    assert record.answer == text == answer
    assert record.cited_node_ids == (response.source_nodes[1].node.node_id,)
    assert record.metadata["first_token_ms"] <= record.latency_ms

    async def run():
        streamed = await engine.aquery("apple return policy?")
        assert isinstance(streamed, AsyncStreamingResponse)
        return streamed, "".join([d async for d in streamed.async_response_gen()])

    streamed, text = asyncio.run(run())
    assert store.get(streamed.metadata["feedback_id"]).answer == text == answer

    core = SummaryIndex(NODES[:2]).as_query_engine(llm=MockLLM(max_tokens=6), streaming=True)
    response = FeedbackQueryEngine(core, store).query("apple?")
    full = str(response)  # core's own way of draining a stream
    assert store.get(response.metadata["feedback_id"]).answer == full
    assert len(store) == 3


def test_prompts_are_the_wrapped_engines(store, hybrid):
    inner = SummaryIndex(NODES[:1]).as_query_engine(llm=MockLLM())
    engine = FeedbackQueryEngine(inner, store)
    key = "response_synthesizer:text_qa_template"
    assert engine.get_prompts().keys() == inner.get_prompts().keys()
    engine.update_prompts({key: PromptTemplate("Only {context_str} answers {query_str}")})
    assert inner.get_prompts()[key].get_template() == "Only {context_str} answers {query_str}"
    assert engine.query_engine is inner
    assert [n.node.node_id for n in engine.retrieve(_bundle("apple"))] == ["g1"]

    citing = CitationQueryEngine(hybrid, llm=FixedLLM(answer="x"))
    wrapped = FeedbackQueryEngine(citing, store)
    wrapped.update_prompts({"system_prompt": PromptTemplate("Cite or say: {refusal}")})
    assert citing.system_prompt == "Cite or say: {refusal}"
    assert wrapped.get_prompts()["system_prompt"].get_template() == "Cite or say: {refusal}"


def _bundle(text):
    from llama_index.core.schema import QueryBundle

    return QueryBundle(text)


def test_a_failing_store_warns_but_answers_unless_asked_to_raise(tmp_path):
    path = tmp_path / "feedback.sqlite"
    inner = SummaryIndex(NODES[:1]).as_query_engine(llm=MockLLM(max_tokens=3))
    engine = FeedbackQueryEngine(inner, path)  # a path opens the store
    assert engine.query("first").metadata["feedback_id"] is not None
    engine.store.close()
    with pytest.warns(UserWarning, match=r"'second' was not recorded in .*is closed"):
        response = engine.query("second")
    assert response.response and response.metadata["feedback_id"] is None
    strict = FeedbackQueryEngine(inner, engine.store, on_store_error="raise")
    with pytest.raises(ValueError, match="is closed"):
        strict.query("third")
    with FeedbackStore(path) as reopened:
        assert [r.query for r in reopened] == ["first"]

    with pytest.raises(TypeError, match="BaseQueryEngine"):
        FeedbackQueryEngine(lambda q: q, path)
    with pytest.raises(ValueError, match="on_store_error"):
        FeedbackQueryEngine(inner, path, on_store_error="ignore")
    with pytest.raises(ValueError, match="bundle_version"):
        FeedbackQueryEngine(inner, path, bundle_version="")
    with pytest.raises(ValueError, match="metadata must be JSON"):
        FeedbackQueryEngine(inner, path, metadata={"when": object()})


def test_citation_query_engine_with_a_tiny_local_decoder(store, hybrid, tiny_causal_lm_path):
    from llama_index_ragtune.llms import LocalChatLLM

    llm = LocalChatLLM(tiny_causal_lm_path, max_new_tokens=6)
    engine = FeedbackQueryEngine(CitationQueryEngine(hybrid, llm=llm), store, bundle_version="t")
    response = engine.query("apple return policy?")
    record = store.get(response.metadata["feedback_id"])
    assert record.answer == response.response
    assert record.retrieved_node_ids == response.metadata["source_node_ids"]
    assert list(record.cited_node_ids) == response.metadata["cited_node_ids"]
    assert record.refused == response.metadata["refused"]


def test_record_response_for_code_that_calls_its_engine_itself(store):
    from llama_index.core.base.response.schema import Response
    from llama_index.core.schema import NodeWithScore

    nodes = [NodeWithScore(node=NODES[0], score=0.5), NodeWithScore(node=NODES[2], score=0.4)]
    response = Response("Seven days [1].", nodes, {"cited_node_ids": ["g1"], "refused": False})
    rid = store.record_response("apple?", response, latency_ms=12.0, bundle_version="v9")
    record = store.get(rid)
    assert record.retrieved_node_ids == ["g1", "e1"] and record.cited_node_ids == ("g1",)
    assert (record.answer, record.latency_ms, record.bundle_version) == (
        "Seven days [1].",
        12.0,
        "v9",
    )

    stray = Response("x [1]", nodes, {"cited_node_ids": ["g1", "not-a-source"], "refused": False})
    with pytest.warns(UserWarning, match=r"not among its source_nodes: \['not-a-source'\]"):
        rid = store.record_response("apple?", stray)
    assert store.get(rid).cited_node_ids == ("g1",)
