"""Round s42 of the answering path: an LLM failing mid-stream, a cancelled async answer,
embeddings cutting long texts silently, and an answering "LLM" that cannot chat."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from pathlib import Path

import pytest
from llama_index.core import Settings, SummaryIndex
from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.schema import TextNode
from transformers import LogitsProcessor, LogitsProcessorList

from llama_index_ragtune.llms import LocalChatLLM
from llama_index_ragtune.query_engine import CitationQueryEngine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stub_llm import DiesMidStream, StubChatLLM  # noqa: E402

ANSWER = "Paris is the capital of France [1]. It lies on the Seine [1]."


class SlowStream(StubChatLLM):
    """Streams one chunk, then waits (a slow backend) before each next one."""

    def reply(self, messages):
        return ANSWER

    async def astream_chat(self, messages, **kwargs):
        chunks = list(super().stream_chat(messages))

        async def gen():
            for i, chunk in enumerate(chunks):
                if i:
                    await asyncio.sleep(30)
                yield chunk

        return gen()


def _engine(llm, streaming=True):
    index = SummaryIndex([TextNode(id_="paris", text="Paris is the capital of France.")])
    return CitationQueryEngine(index.as_retriever(), llm=llm, streaming=streaming)


# ------------------------------------------------------------ 1. an LLM failing mid-stream


def test_stream_error_reaches_reader_and_marks_the_response_finished_with_the_error():
    response = _engine(DiesMidStream(answer=ANSWER)).query("Capital of France?")
    read = []
    with pytest.raises(ConnectionError, match="connection reset"):
        for text in response.response_gen:
            read.append(text)
    assert read and "".join(read) in ANSWER  # the part received came through first
    meta = response.metadata
    assert meta["finished"] is True  # a consumer waiting on it does not wait for ever
    assert meta["error"] == "ConnectionError: backend connection reset"
    assert meta["raw_answer"] and ANSWER.startswith(meta["raw_answer"])
    # read again: the error again, never the empty (or half) answer as if whole
    with pytest.raises(ConnectionError):
        response.get_response()
    with pytest.raises(ConnectionError):
        str(response)


def test_good_streams_report_no_error():
    class Good(StubChatLLM):
        def reply(self, messages):
            return ANSWER

    response = _engine(Good()).query("Capital of France?")
    assert response.get_response().response == ANSWER
    assert response.metadata["finished"] is True and response.metadata["error"] is None
    assert response.metadata["cited_node_ids"] == ["paris"]


def test_async_stream_error_is_raised_again_not_served_as_a_half_answer():
    async def main():
        response = await _engine(DiesMidStream(answer=ANSWER)).aquery("Capital of France?")
        with pytest.raises(ConnectionError):
            await response.get_response()
        assert response.metadata["finished"] is True
        assert "connection reset" in response.metadata["error"]
        # core kept the text read so far and returned it as the answer the second time
        with pytest.raises(ConnectionError):
            await response.get_response()

    asyncio.run(main())


def test_cancelled_async_stream_read_is_marked_and_cannot_be_read_as_whole():
    async def main():
        response = await _engine(SlowStream()).aquery("Capital of France?")
        reader = asyncio.create_task(response.get_response())
        await asyncio.sleep(0.2)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert response.metadata["finished"] is True
        assert response.metadata["error"] == "CancelledError"
        started = time.perf_counter()
        with pytest.raises(RuntimeError, match="stopped .*CancelledError.* query again"):
            await response.get_response()
        assert time.perf_counter() - started < 5  # no wait on the dead stream

    asyncio.run(main())


# ------------------------------------------------- 1b. the local LLM failing mid-generation


class FailsAfter(LogitsProcessor):
    """Raises inside generate() after ``n`` decoding steps (a device error, say)."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __call__(self, input_ids, scores):
        self.calls += 1
        if self.calls > self.n:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return scores


def test_local_llm_failing_mid_stream_through_the_engine(tiny_causal_lm_path):
    llm = LocalChatLLM(
        tiny_causal_lm_path,
        max_new_tokens=24,
        device="cpu",
        generate_kwargs={
            "logits_processor": LogitsProcessorList([FailsAfter(4)]),
            "min_new_tokens": 20,
        },
    )
    response = _engine(llm).query("Capital of France?")
    with pytest.raises(RuntimeError, match="illegal memory access"):
        response.get_response()
    assert response.metadata["finished"] is True
    assert "illegal memory access" in response.metadata["error"]
    assert llm._lock.acquire(timeout=5)  # the generation thread let go of the model
    llm._lock.release()


def test_local_llm_stream_does_not_hang_when_the_tokenizer_fails_to_decode(tiny_causal_lm_path):
    llm = LocalChatLLM(tiny_causal_lm_path, max_new_tokens=12, device="cpu")
    tokenizer = llm._tokenizer
    real_decode = tokenizer.decode

    def decode(ids, **kwargs):  # a tokenizer that cannot decode what the model produced
        if isinstance(ids, list) and len(ids) >= 2:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        return real_decode(ids, **kwargs)

    tokenizer.decode = decode
    outcome: dict = {}

    def read():
        try:
            list(llm.stream_chat([ChatMessage(role="user", content="hi")], min_new_tokens=12))
        except Exception as exc:  # noqa: BLE001 - what the reader sees
            outcome["error"] = exc

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    assert not reader.is_alive(), "the reader hung: the streamer never ended"
    assert isinstance(outcome.get("error"), UnicodeDecodeError)


def test_cancelled_achat_stops_generating_and_frees_the_llm(tiny_causal_lm_path):
    counter = FailsAfter(10**9)  # counts decoding steps, never fails
    llm = LocalChatLLM(tiny_causal_lm_path, max_new_tokens=1500, device="cpu")
    messages = [ChatMessage(role="user", content="hi")]

    async def main():
        task = asyncio.create_task(
            llm.achat(
                messages, min_new_tokens=1500, logits_processor=LogitsProcessorList([counter])
            )
        )
        while counter.calls < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    started = time.perf_counter()
    assert llm._lock.acquire(timeout=20)  # was held until all 1500 tokens were decoded
    llm._lock.release()
    assert time.perf_counter() - started < 20
    assert counter.calls < 1500
    # the LLM answers the next request normally, with its own stopping rules
    response = asyncio.run(llm.achat(messages, max_new_tokens=3))
    assert isinstance(response, ChatResponse) and response.raw["usage"]["completion_tokens"] <= 3


# --------------------------------------------- 2. Hugging Face embeddings cutting long texts


@pytest.fixture(scope="module")
def torch_embed():
    from llama_index_ragtune.embeddings import default_embed_model

    return default_embed_model(backend="torch")


LONG = "statins lower the LDL cholesterol of adult patients " * 80  # ~640 tokens


def _cut_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "longer than the encoder" in r.getMessage()]


def test_default_torch_embedding_warns_once_naming_the_dropped_tokens(torch_embed, caplog):
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    assert isinstance(torch_embed, HuggingFaceEmbedding)
    assert torch_embed.class_name() == "HuggingFaceEmbedding"  # same cache identity
    caplog.set_level(logging.WARNING)
    torch_embed.get_text_embedding_batch(["short text", "another short one"])
    assert not _cut_warnings(caplog)
    torch_embed.get_text_embedding_batch([LONG, "short", LONG])
    torch_embed.get_text_embedding_batch([LONG])
    (message,) = _cut_warnings(caplog)
    assert "2 of the 3 texts" in message and "max_seq_length 256" in message
    assert "dropped" in message and "Split the nodes smaller" in message
    assert "raise max_seq_length" in message
    caplog.clear()
    torch_embed.get_query_embedding(LONG)
    torch_embed.get_query_embedding(LONG)
    (message,) = _cut_warnings(caplog)
    assert "a query of" in message and "tokens were dropped" in message


def test_cached_plain_hf_embedding_warns_and_vectors_are_unchanged(torch_embed, tmp_path, caplog):
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from llama_index_ragtune.embeddings import CachedEmbedding
    from llama_index_ragtune.models import default_encoder

    plain = HuggingFaceEmbedding(model_name=default_encoder(), device="cpu")
    cached = CachedEmbedding(plain, tmp_path)
    caplog.set_level(logging.WARNING)
    vectors = cached.get_text_embedding_batch([LONG, "short"])
    cached.get_text_embedding_batch(["other " * 400])
    (message,) = _cut_warnings(caplog)
    assert "1 of the 2 texts" in message and "tokens" in message
    # the warning changes nothing: the same vectors as the plain model and the default one
    assert vectors[0] == pytest.approx(plain.get_text_embedding(LONG), abs=1e-5)
    assert vectors[0] == pytest.approx(torch_embed.get_text_embedding(LONG), abs=1e-5)


# ------------------------------------------------------- 3. an answering "LLM" that cannot chat


@pytest.mark.parametrize("bad", ["gpt-4o", 5, MockEmbedding(embed_dim=4)])
def test_llm_that_cannot_chat_is_refused_when_built(bad):
    index = SummaryIndex([TextNode(id_="paris", text="Paris is the capital of France.")])
    with pytest.raises(TypeError, match="llm must be a LlamaIndex LLM .*not its name"):
        CitationQueryEngine(index.as_retriever(), llm=bad)


def test_settings_llm_that_cannot_chat_is_named_before_retrieval():
    index = SummaryIndex([TextNode(id_="paris", text="Paris is the capital of France.")])
    engine = CitationQueryEngine(index.as_retriever(), streaming=True)
    saved = Settings._llm
    Settings._llm = MockEmbedding(embed_dim=4)  # set around the setter's resolution
    try:
        with pytest.raises(TypeError, match="Settings.llm must be .*chat and stream_chat"):
            engine.query("Capital of France?")
        with pytest.raises(TypeError, match="Settings.llm"):
            asyncio.run(engine.aquery("Capital of France?"))
    finally:
        Settings._llm = saved


# ------------------------------------------- 4. an LLM answering with bare strings, not chunks


class AnswersWithStrings(StubChatLLM):
    """A custom LLM that returns / streams plain strings instead of ChatResponse objects."""

    def reply(self, messages):
        return ANSWER

    def chat(self, messages, **kwargs):
        return ANSWER

    async def achat(self, messages, **kwargs):
        return ANSWER

    def stream_chat(self, messages, **kwargs):
        return iter(["Paris is ", "the capital [1]."])


def test_stream_of_bare_strings_is_a_named_error_not_an_empty_answer():
    response = _engine(AnswersWithStrings()).query("Capital of France?")
    with pytest.raises(TypeError, match=r"AnswersWithStrings.stream_chat yielded a str"):
        response.get_response()  # was an empty answer, counted "uncited"
    assert response.metadata["finished"] is True and "TypeError" in response.metadata["error"]


def test_chat_returning_a_bare_string_is_a_named_error():
    engine = _engine(AnswersWithStrings(), streaming=False)
    with pytest.raises(TypeError, match=r"AnswersWithStrings.chat returned a str"):
        engine.query("Capital of France?")  # was AttributeError: no attribute 'message'
    with pytest.raises(TypeError, match=r"returned a str"):
        asyncio.run(engine.aquery("Capital of France?"))
