"""How ``CitationQueryEngine`` answers from its numbered sources, sync and async.

No source, or a blank question: the refusal, without calling the LLM. Otherwise the
sources are fitted to the context window, the refusal policy decides (the refusal
again, without the LLM), and the LLM answers -- whole, or streamed.
``engine`` is the ``CitationQueryEngine`` that answers.

Example::

    nodes = engine.retrieve(QueryBundle("Capital of Italy?"))
    answer(engine, QueryBundle("Capital of Italy?"), nodes).metadata["cited_node_ids"]
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.response.schema import RESPONSE_TYPE
from llama_index.core.schema import NodeWithScore, QueryBundle

from llama_index_ragtune.grounding import is_blank
from llama_index_ragtune.query_engine.engine_checks import is_local
from llama_index_ragtune.query_engine.response_metadata import finish_reason, llm_decision
from llama_index_ragtune.query_engine.responses import (
    astream_response,
    complete_response,
    refusal_response,
    stream_response,
)

__all__ = ["aanswer", "answer"]


def answer(engine: Any, query_bundle: QueryBundle, nodes: list[NodeWithScore]) -> RESPONSE_TYPE:
    """The engine's response to ``query_bundle`` from ``nodes`` (its retrieved sources)."""
    question = query_bundle.query_str
    if not nodes:
        return refusal_response(engine, question)
    if is_blank(question):  # nothing for the model to answer
        return refusal_response(engine, question, nodes=nodes)
    fit = engine.fit_prompt(question, nodes)
    nodes = fit.nodes
    if not nodes:  # not one source fits the window: nothing to answer from
        return refusal_response(engine, question, fit=fit)
    messages = engine.messages(query_bundle, nodes)
    decision = engine.decide_refusal(question, nodes, messages)
    if decision is not None and decision.refused:
        return refusal_response(engine, question, nodes=nodes, decision=decision, fit=fit)
    kwargs = _chat_kwargs(engine, decision)
    if engine.streaming:
        chunks = engine.llm.stream_chat(messages, **kwargs)
        return stream_response(engine, question, nodes, chunks, decision, fit)
    response = engine.llm.chat(messages, **kwargs)
    raw = _answer_text(engine, response)
    decision = decision or llm_decision(response)
    return complete_response(
        engine, question, nodes, raw, messages, decision, fit, finish_reason(response)
    )


async def aanswer(
    engine: Any, query_bundle: QueryBundle, nodes: list[NodeWithScore]
) -> RESPONSE_TYPE:
    """Async twin of :func:`answer` (tokenizing and scoring off the event loop)."""
    question = query_bundle.query_str
    if not nodes:
        return refusal_response(engine, question, asynchronous=True)
    if is_blank(question):
        return refusal_response(engine, question, asynchronous=True, nodes=nodes)
    fit = await asyncio.to_thread(engine.fit_prompt, question, nodes)  # tokenizes: off the loop
    nodes = fit.nodes
    if not nodes:
        return refusal_response(engine, question, asynchronous=True, fit=fit)
    messages = engine.messages(query_bundle, nodes)
    decision = await asyncio.to_thread(engine.decide_refusal, question, nodes, messages)
    if decision is not None and decision.refused:
        return refusal_response(engine, question, True, nodes, decision, fit)
    kwargs = _chat_kwargs(engine, decision)
    if engine.streaming:
        chunks = await engine.llm.astream_chat(messages, **kwargs)
        return astream_response(engine, question, nodes, chunks, decision, fit)
    response = await engine.llm.achat(messages, **kwargs)
    raw = _answer_text(engine, response)
    decision = decision or llm_decision(response)
    args = (engine, question, nodes, raw, messages, decision, fit)
    finish = finish_reason(response)
    if engine.uncited == "cite":  # the post-check asks the model again: off the event loop
        return await asyncio.to_thread(complete_response, *args, finish)
    return complete_response(*args, finish)


def _answer_text(engine: Any, response: Any) -> str:
    """The text of the LLM's ``ChatResponse``; a ``TypeError`` naming the LLM for anything
    else (a bare string was an ``AttributeError`` about ``message``)."""
    content = getattr(getattr(response, "message", None), "content", None)
    if content is None and not hasattr(getattr(response, "message", None), "content"):
        raise TypeError(
            f"CitationQueryEngine: {type(engine.llm).__name__}.chat returned a "
            f"{type(response).__name__} ({str(response)[:40]!r}); a LlamaIndex LLM returns a "
            "ChatResponse (text in .message.content)"
        )
    if content is not None and not isinstance(content, str):
        raise TypeError(
            f"CitationQueryEngine: {type(engine.llm).__name__}.chat answered "
            f"message.content of type {type(content).__name__}; it must be a str"
        )
    return content or ""


def _chat_kwargs(engine: Any, decision: Any) -> dict[str, Any]:
    # the policy decided to answer: a LocalChatLLM answers with the refusal barred
    return {"refuse": False} if decision is not None and is_local(engine.llm) else {}
