"""FeedbackQueryEngine used the way LlamaIndex developers use query engines, hostile cases included.

Real engines (``RetrieverQueryEngine`` over a ``VectorStoreIndex`` with a mock
embedding, the package's ``CitationQueryEngine``), scripted LLMs and a real SQLite
file: streams read, stopped and broken; engines that raise; odd responses; threads;
composition with core's tools, routers, transforms and callbacks.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType
from typing import Any

import pytest
from fb_helpers import TEXTS
from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
)
from llama_index.core.base.response.schema import (
    AsyncStreamingResponse,
    PydanticResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.bridge.pydantic import BaseModel
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.indices.query.query_transform import HyDEQueryTransform
from llama_index.core.llms import CustomLLM
from llama_index.core.query_engine import (
    RetrieverQueryEngine,
    RouterQueryEngine,
    TransformQueryEngine,
)
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.selectors import LLMSingleSelector
from llama_index.core.tools import QueryEngineTool

from llama_index_ragtune.feedback import FeedbackQueryEngine, FeedbackStore
from llama_index_ragtune.query_engine import CitationQueryEngine
from llama_index_ragtune.retrievers import HybridRetriever

NODES = [TextNode(id_=k, text=v, metadata={"store": k[0]}) for k, v in TEXTS.items()]


class ScriptLLM(CustomLLM):
    """A completion LLM: answers ``answer`` (or "answer to <query>" when ``echo``), streamed in
    3-character deltas; raises ``error`` on the call (``fail_at=0``) or before delta ``fail_at``."""

    answer: str = "Seven days with the receipt."
    echo: bool = False
    error: Any = None
    fail_at: int = -1

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata()

    def _text(self, prompt: str) -> str:
        if self.echo:
            return "answer to " + re.search(r"Query: (.*)\n", prompt).group(1)
        return self.answer

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if self.fail_at == 0:
            raise self.error
        return CompletionResponse(text=self._text(prompt))

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        if self.fail_at == 0:
            raise self.error
        text = self._text(prompt)

        def gen():
            for i in range(0, len(text), 3):
                if i // 3 == self.fail_at:
                    raise self.error
                yield CompletionResponse(text=text[: i + 3], delta=text[i : i + 3])

        return gen()


class CitingLLM(ScriptLLM):
    """The chat side CitationQueryEngine uses."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=True)

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role="assistant", content=self.answer))

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any):
        text = self.answer
        return (
            ChatResponse(message=ChatMessage(role="assistant", content=text), delta=text[i : i + 3])
            for i in range(0, len(text), 3)
        )


class BrokenRetriever(BaseRetriever):
    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        raise self.error


class Returns(BaseQueryEngine):
    """A query engine that answers with whatever ``make(query_bundle)`` gives."""

    def __init__(self, make) -> None:
        self.make = make
        self.bundles: list[Any] = []
        super().__init__(None)

    def _get_prompt_modules(self) -> dict[str, Any]:
        return {}

    def _query(self, query_bundle: QueryBundle) -> Any:
        self.bundles.append(query_bundle)
        return self.make(query_bundle)

    async def _aquery(self, query_bundle: QueryBundle) -> Any:
        return self._query(query_bundle)


class Days(BaseModel):
    days: int


@pytest.fixture
def store(tmp_path):
    with FeedbackStore(tmp_path / "feedback.sqlite") as opened:
        yield opened


@pytest.fixture(scope="module")
def index():
    return VectorStoreIndex(NODES, embed_model=MockEmbedding(embed_dim=8))


def _ids(nodes) -> list[str]:
    return [n.node.node_id for n in nodes]


# ----------------------------------------------------------------------------- 1. streams


def test_a_stream_reaches_the_reader_unchanged_and_is_recorded_when_it_ends(store, index):
    llm = ScriptLLM()
    plain = index.as_query_engine(llm=llm, streaming=True, similarity_top_k=2)
    engine = FeedbackQueryEngine(plain, store, bundle_version="v1", metadata={"app": "demo"})
    expected = list(plain.query("apple?").response_gen)

    response = engine.query("apple?")
    assert isinstance(response, StreamingResponse)
    rid = response.metadata["feedback_id"]
    assert len(store) == 0  # not answered yet
    deltas = list(response.response_gen)
    assert deltas == expected and "".join(deltas) == llm.answer
    record = store.get(rid)
    assert record.answer == llm.answer and record.retrieved_node_ids == _ids(response.source_nodes)
    assert record.bundle_version == "v1" and record.metadata["app"] == "demo"
    assert 0 < record.metadata["first_token_ms"] <= record.latency_ms
    assert "stream_closed_early" not in record.metadata
    assert str(response) == llm.answer  # core's readers still work on the drained stream
    store.rate(rid, +1)
    store.click(rid, response.source_nodes[0].node.node_id)
    assert store.get(rid).rating == 1

    drained = engine.query("apple?").get_response()  # core's own way of draining
    assert store.get(drained.metadata["feedback_id"]).answer == drained.response == llm.answer


def test_async_queries_record_the_same_fields(store, index):
    llm = ScriptLLM()
    engine = FeedbackQueryEngine(index.as_query_engine(llm=llm, similarity_top_k=2), store)
    streaming = FeedbackQueryEngine(
        index.as_query_engine(llm=llm, similarity_top_k=2, streaming=True), store
    )

    async def run():
        response = await engine.aquery("apple?")
        streamed = await streaming.aquery("apple?")
        assert isinstance(streamed, AsyncStreamingResponse)
        assert len(store) == 1
        text = "".join([d async for d in streamed.async_response_gen()])
        return response, streamed, text

    response, streamed, text = asyncio.run(run())
    plain, streamed_record = store.get(response.metadata["feedback_id"]), None
    streamed_record = store.get(streamed.metadata["feedback_id"])
    for record, resp in ((plain, response), (streamed_record, streamed)):
        assert record.query == "apple?" and record.answer == llm.answer
        assert record.retrieved_node_ids == _ids(resp.source_nodes) and record.latency_ms > 0
    assert text == llm.answer and streamed_record.metadata["first_token_ms"] > 0


def test_a_stream_stopped_early_is_recorded_without_an_answer_and_can_be_rated(store, index):
    llm = ScriptLLM()
    engine = FeedbackQueryEngine(index.as_query_engine(llm=llm, streaming=True), store)
    response = engine.query("apple?")
    rid = response.metadata["feedback_id"]
    first = next(response.response_gen)
    response.response_gen.close()  # what `break` + garbage collection, or a dropped client, do
    record = store.get(rid)  # was: never recorded, so rate / click raised KeyError
    assert record.answer is None  # a cut-off text is no answer to train on
    assert record.metadata["stream_closed_early"] is True
    assert record.metadata["partial_answer"] == first == llm.answer[:3]
    assert record.retrieved_node_ids == _ids(response.source_nodes)
    store.rate(rid, -1)
    store.click(rid, response.source_nodes[0].node.node_id)

    unread = engine.query("never read")
    del unread  # a stream never started leaves no record (documented)
    assert len(store) == 1

    async_engine = FeedbackQueryEngine(index.as_query_engine(llm=llm, streaming=True), store)

    async def stop_early():
        streamed = await async_engine.aquery("apple async?")
        gen = streamed.response_gen
        await gen.__anext__()
        await gen.aclose()
        return streamed

    streamed = asyncio.run(stop_early())
    record = store.get(streamed.metadata["feedback_id"])
    assert record.answer is None and record.metadata["partial_answer"] == llm.answer[:3]


def test_citation_metadata_filled_at_stream_end_reaches_the_wrapped_response(store):
    hybrid = HybridRetriever.from_defaults(
        nodes=NODES, embed_model=MockEmbedding(embed_dim=8), similarity_top_k=3
    )
    inner = CitationQueryEngine(hybrid, llm=CitingLLM(answer="Seven days [2]."), streaming=True)
    response = FeedbackQueryEngine(inner, store).query("apple?")
    assert "".join(response.response_gen) == "Seven days [2]."
    second = response.source_nodes[1].node.node_id
    assert response.metadata["cited_node_ids"] == [second] and response.metadata["finished"]
    assert store.get(response.metadata["feedback_id"]).cited_node_ids == (second,)


# ------------------------------------------------------------------------- 2. failures

LLM_DOWN = RuntimeError("llm down")
RETRIEVER_DOWN = ConnectionError("vector store unreachable")


@pytest.mark.parametrize(
    "make",
    [
        lambda idx: idx.as_query_engine(llm=ScriptLLM(error=LLM_DOWN, fail_at=0)),
        lambda idx: RetrieverQueryEngine.from_args(
            BrokenRetriever(RETRIEVER_DOWN), llm=ScriptLLM()
        ),
        lambda idx: idx.as_query_engine(llm=ScriptLLM(error=KeyboardInterrupt(), fail_at=0)),
    ],
    ids=["llm", "retriever", "ctrl-c"],
)
def test_a_failing_engine_raises_its_own_exception_and_records_nothing(store, index, make):
    engine = FeedbackQueryEngine(make(index), store)
    with pytest.raises(BaseException) as raised:
        engine.query("apple?")
    assert type(raised.value) in (RuntimeError, ConnectionError, KeyboardInterrupt)
    if not isinstance(raised.value, KeyboardInterrupt):
        assert raised.value in (LLM_DOWN, RETRIEVER_DOWN)  # the very object, not a wrapper
        with pytest.raises(type(raised.value)) as again:
            asyncio.run(engine.aquery("apple?"))
        assert again.value is raised.value
    assert len(store) == 0


@pytest.mark.parametrize(
    ("error", "fail_at"),
    [(RuntimeError("llm died mid-answer"), 2), (RuntimeError("down"), 0), (KeyboardInterrupt(), 2)],
    ids=["mid-answer", "first-read", "ctrl-c"],
)
def test_a_stream_that_breaks_records_nothing_and_drops_its_id(store, index, error, fail_at):
    # core calls the LLM's stream lazily: even an error "on the call" comes at the first read
    llm = ScriptLLM(error=error, fail_at=fail_at)
    engine = FeedbackQueryEngine(index.as_query_engine(llm=llm, streaming=True), store)
    response = engine.query("apple?")
    assert response.metadata["feedback_id"] is not None
    seen = []
    with pytest.raises(type(error)) as raised:
        for delta in response.response_gen:
            seen.append(delta)
    assert raised.value is error and "".join(seen) == llm.answer[: 3 * max(fail_at, 0)]
    assert response.metadata["feedback_id"] is None  # was: an id no record would ever have
    assert len(store) == 0

    if isinstance(error, RuntimeError):

        async def run():
            streamed = await FeedbackQueryEngine(
                index.as_query_engine(llm=llm, streaming=True), store
            ).aquery("apple?")
            with pytest.raises(RuntimeError) as failed:
                async for _ in streamed.async_response_gen():
                    pass
            assert failed.value is error and streamed.metadata["feedback_id"] is None

        asyncio.run(run())
        assert len(store) == 0


# ---------------------------------------------------------------------- 3. response shapes

G1, E1 = NodeWithScore(node=NODES[0], score=0.9), NodeWithScore(node=NODES[2], score=0.5)


@pytest.mark.parametrize(
    ("response", "answer", "retrieved", "cited", "refused", "warns"),
    [
        (Response("a"), "a", [], (), False, None),
        (Response("a", source_nodes=None), "a", [], (), False, None),
        (Response(None, [G1], None), None, ["g1"], (), False, None),
        (Response("a", [G1, G1, E1], {"cited_node_ids": ["g1"]}), "a", ["g1", "g1", "e1"], ("g1",), False, None),
        (Response("a", [NodeWithScore(node=TextNode(text="no id given"))]), "a", 1, (), False, None),
        (PydanticResponse(Days(days=7), [G1]), '{"days":7}', ["g1"], (), False, None),
        (PydanticResponse(None), None, [], (), False, None),
        (Response("a", [G1], MappingProxyType({"refused": True})), "a", ["g1"], (), True, None),
        (StreamingResponse(None, [G1], None, response_txt="cached"), "cached", ["g1"], (), False, None),
        (Response("a", [G1], {"refused": "false"}), "a", ["g1"], (), False, "refused"),
        (Response("a", [G1], {"cited_node_ids": "g1"}), "a", ["g1"], (), False, "cited_node_ids"),
        # core engines key metadata by node id: a node named "refused" must not mark a refusal
        (Response("a", [G1], {"refused": {"store": "r"}}), "a", ["g1"], (), False, "refused"),
    ],
    ids=[
        "no-sources", "sources-None", "answer-None", "duplicate-ids", "generated-id",
        "pydantic", "pydantic-None", "read-only-metadata", "stream-without-generator",
        "refused-str", "cited-str", "node-named-refused",
    ],
)  # fmt: skip
def test_odd_responses_are_recorded_as_they_are(
    store, response, answer, retrieved, cited, refused, warns
):
    inner = Returns(lambda qb: response)
    engine = FeedbackQueryEngine(inner, store)
    if warns:
        with pytest.warns(UserWarning, match=rf"metadata\['{warns}'\]"):
            out = engine.query("apple?")
    else:
        out = engine.query("apple?")
    assert type(out) is type(response) and out.source_nodes is response.source_nodes
    record = store.get(out.metadata["feedback_id"])
    assert record.answer == answer and record.cited_node_ids == cited
    assert record.refused is refused
    if isinstance(retrieved, int):
        assert len(record.retrieved) == retrieved
    else:
        assert record.retrieved_node_ids == retrieved
    assert "feedback_id" not in (response.metadata or {})  # the engine's own object untouched


def test_an_engine_handing_out_one_shared_response_never_mixes_ids(store):
    shared_meta = {"refused": False}
    cached = Response("cached", [G1], {})
    engines = [
        FeedbackQueryEngine(Returns(lambda qb: cached), store),
        FeedbackQueryEngine(Returns(lambda qb: Response("a", [G1], shared_meta)), store),
    ]
    for engine in engines:
        first, second = engine.query("one"), engine.query("two")
        assert first.metadata["feedback_id"] != second.metadata["feedback_id"]  # were equal
        assert store.get(first.metadata["feedback_id"]).query == "one"
        assert store.get(second.metadata["feedback_id"]).query == "two"
    assert cached.metadata == {} and shared_meta == {"refused": False}


def test_query_bundles_reach_the_engine_as_given_and_bad_questions_fail_before_it(store):
    inner = Returns(lambda qb: Response("a", [G1]))
    engine = FeedbackQueryEngine(inner, store)
    bundle = QueryBundle("apple policy?", custom_embedding_strs=["apple return"], embedding=[0.1])
    response = engine.query(bundle)
    assert inner.bundles[-1] is bundle
    assert store.get(response.metadata["feedback_id"]).query == "apple policy?"

    for question in (123, None, ["apple?"]):  # core's own check, as unwrapped
        with pytest.raises(Exception) as unwrapped:
            inner.query(question)
        with pytest.raises(type(unwrapped.value)):
            engine.query(question)
    calls = len(inner.bundles)
    with pytest.raises(TypeError, match="takes a str or a QueryBundle, got bytes"):
        engine.query(b"apple?")  # was: answered, then AttributeError (the answer lost)
    with pytest.raises(TypeError, match="got bytes"):
        asyncio.run(engine.aquery(b"apple?"))
    assert len(inner.bundles) == calls  # refused before the engine ran
    with pytest.warns(UserWarning, match="query must be a non-empty string"):
        assert engine.query(QueryBundle("")).metadata["feedback_id"] is None  # still answered
    assert len(store) == 1


# -------------------------------------------------------------------------------- 4. threads


def test_many_threads_through_one_wrapper_record_each_answer_once(store, index):
    llm = ScriptLLM(echo=True)
    engines = {
        streaming: FeedbackQueryEngine(
            index.as_query_engine(llm=llm, similarity_top_k=2, streaming=streaming), store
        )
        for streaming in (False, True)
    }
    threads = set()

    def ask(i: int):
        threads.add(threading.get_ident())
        response = engines[i % 2 == 1].query(f"question {i}")
        text = "".join(response.response_gen) if i % 2 else response.response
        rid = response.metadata["feedback_id"]
        store.click(rid, response.source_nodes[i % 2].node.node_id)
        store.rate(rid, 1 if i % 3 else -1)
        return i, rid, text, _ids(response.source_nodes)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, range(240)))
    assert len(threads) > 1
    assert len({rid for _, rid, _, _ in results}) == 240 == len(store)
    for i, rid, text, shown in results:
        record = store.get(rid)
        assert (
            record.query == f"question {i}" and text == record.answer == f"answer to question {i}"
        )
        assert record.retrieved_node_ids == shown
        assert record.clicked_node_ids == (shown[i % 2],) and record.rating == (1 if i % 3 else -1)


# ------------------------------------------------------------------ 5. a LlamaIndex engine


def test_the_wrapper_composes_like_any_llama_index_query_engine(store, index, monkeypatch):
    debug = LlamaDebugHandler()
    monkeypatch.setattr(Settings, "_callback_manager", None)
    Settings.callback_manager = CallbackManager([debug])
    inner = VectorStoreIndex(NODES, embed_model=MockEmbedding(embed_dim=8)).as_query_engine(
        llm=ScriptLLM(), similarity_top_k=2
    )
    engine = FeedbackQueryEngine(inner, store)
    assert engine.callback_manager is inner.callback_manager is Settings.callback_manager
    engine.query("apple?")
    assert len(debug.get_event_pairs(CBEventType.QUERY)) == 1  # one trace, not two
    assert len(debug.get_event_pairs(CBEventType.RETRIEVE)) == 1

    tool = QueryEngineTool.from_defaults(query_engine=engine, description="grocery returns")
    output = tool.call("apple via a tool?")
    assert store.get(output.raw_output.metadata["feedback_id"]).query == "apple via a tool?"

    hyde = TransformQueryEngine(engine, HyDEQueryTransform(llm=ScriptLLM(answer="Apples: 7 d")))
    response = hyde.query("apple via hyde?")
    assert store.get(response.metadata["feedback_id"]).query == "apple via hyde?"

    selector = LLMSingleSelector.from_defaults(
        llm=ScriptLLM(answer='[{"choice": 1, "reason": "r"}]')
    )
    other = QueryEngineTool.from_defaults(query_engine=inner, description="other")
    router = RouterQueryEngine(selector=selector, query_engine_tools=[tool, other], llm=ScriptLLM())
    response = router.query("routed?")
    assert store.get(response.metadata["feedback_id"]).query == "routed?"

    # retrieve + synthesize, the two-step use of an engine: was NotImplementedError on the wrapper
    bundle = QueryBundle("two steps?")
    nodes = engine.retrieve(bundle)
    response = engine.synthesize(bundle, nodes[:1])
    record = store.get(response.metadata["feedback_id"])
    assert record.retrieved_node_ids == _ids(nodes[:1]) and record.answer == response.response
    response = asyncio.run(engine.asynthesize(bundle, nodes))
    assert store.get(response.metadata["feedback_id"]).retrieved_node_ids == _ids(nodes)
    response = engine.synthesize("a plain str", nodes)  # core's synthesizers take one too
    assert store.get(response.metadata["feedback_id"]).query == "a plain str"
    assert len(store) == 7
    assert engine.get_prompts().keys() == inner.get_prompts().keys()
