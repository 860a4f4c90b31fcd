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

import asyncio
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

from llama_index_ragtune.grounding import AnswerStream, parse_answer, says_nothing
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
    uncited claim given the source the model finds most likely). An answer that says
    nothing -- no letter or digit once its citation markers are removed: ``""``, ``"[1]"``,
    ``"[1] [2]."`` -- is the refusal, marked ``empty_answer`` (:func:`refuse_in_place`)."""
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
    if answer.empty:
        refuse_in_place(engine, metadata, nodes, raw, decision, finish, answer.invalid_citations)
        return Response(engine.refusal, source_nodes=nodes, metadata=metadata)
    fill_metadata(metadata, nodes, answer, texts, raw, decision, finish)
    return Response(answer.text, source_nodes=nodes, metadata=metadata)


def refuse_in_place(
    engine: Any,
    metadata: dict[str, Any],
    nodes: Sequence[NodeWithScore],
    raw: str,
    decision: Any = None,
    finish: str | None = None,
    invalid: Sequence[int] = (),
) -> None:
    """Fill ``metadata`` for an answer that says nothing (``content=None``, ``""``, spaces,
    invisible characters, or citation markers alone such as ``"[1]"`` or ``"[12[9]]"``:
    served as an empty string that looked like an ``uncited`` answer): the refusal stands
    in for it (``refused``, ``empty_answer``); ``raw_answer`` keeps the LLM's own text, and
    ``invalid_citations`` the ``invalid`` numbers it named."""
    answer = parse_answer(engine.refusal, len(nodes), engine.refusal)
    fill_metadata(metadata, nodes, answer, engine.source_texts(nodes), raw, decision, finish)
    metadata.update(empty_answer=True, invalid_citations=list(invalid))


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

    tokens = _FailingLoudly(gen(), streamed)
    return StreamingResponse(tokens, source_nodes=nodes, metadata=streamed.metadata)


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

    tokens = _AsyncFailingLoudly(gen(), streamed)
    return _AsyncStream(tokens, source_nodes=nodes, metadata=streamed.metadata)


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
        self.engine = engine
        # what was cleaned while the answer said nothing (None once a letter or digit
        # outside a citation marker was shown): held, so an answer that says nothing
        # ("", "[1]", "[1] [2].") is the refusal, streamed as served whole
        self.blank: list[str] | None = []

    def feed(self, chunk: Any) -> str:
        self.decision = self.decision or llm_decision(chunk)
        self.finish = finish_reason(chunk) or self.finish
        delta = self.delta(chunk)
        out = self.stream.feed(delta)
        if self.blank is None:
            return out
        self.blank.append(out)
        # a marker comes out of the filter whole, so each piece is read once: linear
        if says_nothing(out):
            return ""
        out, self.blank = "".join(self.blank), None
        return out

    def delta(self, chunk: Any) -> str:
        """The new text of ``chunk``: its ``delta``; for an LLM whose chunks carry none
        (``delta=None``), what its ``message.content`` adds to the answer so far, or that
        content whole when it does not extend it (an LLM sending each piece as content)."""
        if not (hasattr(chunk, "delta") or hasattr(chunk, "message")):
            # a bare string or dict read as nothing: the answer was silently empty
            raise TypeError(
                f"CitationQueryEngine(streaming=True): {self.llm_name}.stream_chat yielded a "
                f"{type(chunk).__name__} ({str(chunk)[:40]!r}); a LlamaIndex LLM's stream "
                "yields ChatResponse chunks (text in .delta)"
            )
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
        rest = self.stream.finish()
        if self.blank is None:
            return rest
        if not self.stream.answer.empty:  # said something in its last, held-back piece
            rest, self.blank = "".join(self.blank) + rest, None
            return rest
        return self.engine.refusal

    def fail(self, exc: BaseException) -> None:
        """The stream broke (the LLM raised mid-answer, or the read was cancelled): the
        metadata says so -- ``finished`` (nothing more will come), ``error`` naming it,
        ``raw_answer`` the text received so far -- so no one waits on it or takes the
        part received for the whole answer."""
        self.metadata.update(
            finished=True,
            error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
            raw_answer=self.content,
            finish_reason=self.finish,
        )

    def close(self) -> None:
        if self.blank is not None:  # the answer said nothing: the refusal stood in for it
            refuse_in_place(
                self.engine,
                self.metadata,
                self.nodes,
                self.stream.raw,
                self.decision,
                self.finish,
                self.stream.answer.invalid_citations,  # type: ignore[union-attr]
            )
            return
        fill_metadata(
            self.metadata,
            self.nodes,
            self.stream.answer,  # type: ignore[arg-type]
            self.stream.source_texts,  # type: ignore[arg-type]
            decision=self.decision,
            finish=self.finish,
        )


_STOPPED = (GeneratorExit, asyncio.CancelledError, KeyboardInterrupt, SystemExit)


def _again(error: BaseException) -> BaseException:
    """What a stream that broke with ``error`` raises when it is read again: the LLM's own
    error; for a cancelled or closed read, a ``RuntimeError`` saying so (re-raising the
    cancellation would cancel the new reader)."""
    if isinstance(error, _STOPPED):
        return RuntimeError(
            f"CitationQueryEngine(streaming=True): this answer's stream was stopped "
            f"({type(error).__name__}) before its end and cannot be read again; query again"
        )
    return error


class _FailingLoudly:
    """The answer's token iterator: an error the LLM raises mid-stream reaches the reader,
    marks the response's metadata ``finished`` with its ``error``, and is raised again on
    every later read (a second ``get_response()`` was an empty answer)."""

    def __init__(self, tokens: Iterator[str], streamed: _StreamedAnswer) -> None:
        self._tokens, self._streamed = tokens, streamed
        self._error: BaseException | None = None

    def __iter__(self) -> _FailingLoudly:
        return self

    def __next__(self) -> str:
        if self._error is not None:
            raise _again(self._error)
        try:
            return next(self._tokens)
        except StopIteration:
            raise
        except BaseException as exc:
            self._error = exc
            self._streamed.fail(exc)
            raise

    def close(self) -> None:
        """Stop reading: the LLM's stream is closed (a local LLM stops decoding)."""
        self._tokens.close()  # type: ignore[attr-defined]


class _AsyncFailingLoudly:
    """Async twin of :class:`_FailingLoudly` (a cancelled read too marks the metadata)."""

    def __init__(self, tokens: AsyncIterator[str], streamed: _StreamedAnswer) -> None:
        self._tokens, self._streamed = tokens, streamed
        self._error: BaseException | None = None

    def __aiter__(self) -> _AsyncFailingLoudly:
        return self

    async def __anext__(self) -> str:
        if self._error is not None:
            raise _again(self._error)
        try:
            return await self._tokens.__anext__()
        except StopAsyncIteration:
            raise
        except BaseException as exc:
            self._error = exc
            self._streamed.fail(exc)
            raise

    async def aclose(self) -> None:
        """Stop reading: the LLM's stream is closed."""
        await self._tokens.aclose()  # type: ignore[attr-defined]


class _AsyncStream(AsyncStreamingResponse):
    """An ``AsyncStreamingResponse`` whose failed stream is not later served as a whole
    answer: core keeps the text read before the error as ``response_txt`` and returned
    that half answer from the next ``get_response()``; here it raises again."""

    async def _yield_response(self) -> AsyncIterator[str]:  # type: ignore[override]
        try:
            async for text in super()._yield_response():
                yield text
        except BaseException:
            self.response_txt = None  # the next read meets the stream's error again
            raise


async def _one(text: str) -> AsyncIterator[str]:
    yield text
