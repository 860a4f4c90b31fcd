"""The ``Response`` an answer of ``CitationQueryEngine`` becomes: the refusal, a whole answer, or a stream.

Each fills ``Response.metadata`` (:mod:`~llama_index_ragtune.query_engine.response_metadata`)
from the final answer; a streamed one fills the same dict object when its stream ends.
``engine`` is the ``CitationQueryEngine`` that answers (its refusal, its sources' texts,
its ``uncited`` mode and LLM).

Example::

    response = refusal_response(engine, "Capital of Atlantis?")
    response.response == engine.refusal, response.metadata["no_sources"]    # True, True
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.schema import NodeWithScore

from llama_index_ragtune.grounding import AnswerStream, parse_answer
from llama_index_ragtune.query_engine.post_check import cite_uncited
from llama_index_ragtune.query_engine.prompt_fit import PromptFit
from llama_index_ragtune.query_engine.response_metadata import (
    base_metadata,
    fill_metadata,
    finish_reason,
    llm_decision,
)

__all__ = ["astream_response", "complete_response", "refusal_response", "stream_response"]


def refusal_response(
    engine: Any,
    question: str,
    asynchronous: bool = False,
    nodes: Sequence[NodeWithScore] = (),
    decision: Any = None,
    fit: PromptFit | None = None,
) -> RESPONSE_TYPE:
    """The refusal, without calling the LLM (nothing retrieved or fitting the window, or
    the policy refused)."""
    nodes = list(nodes)
    metadata = base_metadata(question, nodes, fit)
    answer = parse_answer(engine.refusal, len(nodes), engine.refusal)
    fill_metadata(metadata, nodes, answer, engine.source_texts(nodes), decision=decision)
    if not engine.streaming:
        return Response(engine.refusal, source_nodes=nodes, metadata=metadata)
    if asynchronous:
        return AsyncStreamingResponse(_one(engine.refusal), source_nodes=nodes, metadata=metadata)
    return StreamingResponse(iter([engine.refusal]), source_nodes=nodes, metadata=metadata)


def complete_response(
    engine: Any,
    question: str,
    nodes: list[NodeWithScore],
    raw: str,
    messages: Sequence[ChatMessage] = (),
    decision: Any = None,
    fit: PromptFit | None = None,
    finish: str | None = None,
) -> Response:
    """The LLM's whole answer ``raw``, cleaned and checked (with ``uncited="cite"``, each
    uncited claim given the source the model finds most likely)."""
    metadata = base_metadata(question, nodes, fit)
    checked, texts = raw, engine.source_texts(nodes)
    if engine.uncited == "cite":
        llm, n = engine.llm, len(nodes)
        checked, metadata["post_check"] = cite_uncited(
            raw,
            n,
            lambda prefix: llm.citation_probabilities(messages, prefix, n),
            engine.refusal,
            texts,
        )
        metadata["post_checked_answer"] = checked
    answer = parse_answer(checked, len(nodes), engine.refusal, source_texts=texts)
    fill_metadata(metadata, nodes, answer, texts, raw, decision, finish)
    return Response(answer.text, source_nodes=nodes, metadata=metadata)


def stream_response(
    engine: Any,
    question: str,
    nodes: list[NodeWithScore],
    chunks: Iterator[Any],
    decision: Any = None,
    fit: PromptFit | None = None,
) -> StreamingResponse:
    """The LLM's answer streamed as it is cleaned; ``metadata`` is filled when it ends."""
    streamed = _StreamedAnswer(engine, question, nodes, decision, fit)

    def gen() -> Iterator[str]:
        for chunk in chunks:
            out = streamed.feed(chunk)
            if out:
                yield out
        rest = streamed.flush()
        if rest:
            yield rest
        streamed.close()

    return StreamingResponse(gen(), source_nodes=nodes, metadata=streamed.metadata)


def astream_response(
    engine: Any,
    question: str,
    nodes: list[NodeWithScore],
    chunks: AsyncIterator[Any],
    decision: Any = None,
    fit: PromptFit | None = None,
) -> AsyncStreamingResponse:
    """Async twin of :func:`stream_response`."""
    streamed = _StreamedAnswer(engine, question, nodes, decision, fit)

    async def gen() -> AsyncIterator[str]:
        async for chunk in chunks:
            out = streamed.feed(chunk)
            if out:
                yield out
        rest = streamed.flush()
        if rest:
            yield rest
        streamed.close()

    return AsyncStreamingResponse(gen(), source_nodes=nodes, metadata=streamed.metadata)


class _StreamedAnswer:
    """An answer as its chunks come: the cleaned text out, the decision and finish reason
    seen, and ``metadata`` filled when it is closed."""

    def __init__(
        self,
        engine: Any,
        question: str,
        nodes: list[NodeWithScore],
        decision: Any,
        fit: PromptFit | None,
    ) -> None:
        self.nodes = nodes
        self.metadata = base_metadata(question, nodes, fit)
        self.stream = AnswerStream(
            len(nodes), engine.refusal, source_texts=engine.source_texts(nodes)
        )
        self.decision, self.finish = decision, None
        self.llm_name = type(engine.llm).__name__
        self.content = ""  # the answer so far, as the chunks' ``message.content`` gives it

    def feed(self, chunk: Any) -> str:
        self.decision = self.decision or llm_decision(chunk)
        self.finish = finish_reason(chunk) or self.finish
        return self.stream.feed(self.delta(chunk))

    def delta(self, chunk: Any) -> str:
        """The new text of ``chunk``: its ``delta``; for an LLM whose chunks carry none
        (``delta=None``), what its ``message.content`` adds to the answer so far, or that
        content whole when it does not extend it (an LLM sending each piece as content)."""
        delta = getattr(chunk, "delta", None)
        message = getattr(chunk, "message", None)
        content = getattr(message, "content", None)
        if delta is None and isinstance(content, str):
            seen = self.content
            delta = content[len(seen) :] if content.startswith(seen) else content
            self.content = content if content.startswith(seen) else seen + content
            return delta
        if delta is None:
            return ""
        if not isinstance(delta, str):
            raise TypeError(
                f"CitationQueryEngine(streaming=True): {self.llm_name}.stream_chat yielded a "
                f"delta of type {type(delta).__name__}; ChatResponse.delta must be a str"
            )
        self.content = content if isinstance(content, str) else self.content + delta
        return delta

    def flush(self) -> str:
        return self.stream.finish()

    def close(self) -> None:
        fill_metadata(
            self.metadata,
            self.nodes,
            self.stream.answer,  # type: ignore[arg-type]
            self.stream.source_texts,  # type: ignore[arg-type]
            decision=self.decision,
            finish=self.finish,
        )


async def _one(text: str) -> AsyncIterator[str]:
    yield text
