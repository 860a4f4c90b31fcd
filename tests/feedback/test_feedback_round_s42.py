"""Round s42 of the feedback wrapper: a stream that breaks mid-answer reaches the caller's
copy of the metadata marked finished, with its error (only a stream that ended did)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from llama_index.core import SummaryIndex
from llama_index.core.schema import TextNode

from llama_index_ragtune.feedback import FeedbackQueryEngine, FeedbackStore
from llama_index_ragtune.query_engine import CitationQueryEngine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stub_llm import DiesMidStream  # noqa: E402

ANSWER = "Perishables can be returned within 48 hours with the receipt [1]."


def _wrapped(tmp_path, llm):
    node = TextNode(id_="grocery-returns", text="Perishables: 48 hours, receipt needed.")
    engine = CitationQueryEngine(SummaryIndex([node]).as_retriever(), llm=llm, streaming=True)
    store = FeedbackStore(tmp_path / "feedback.db")
    return FeedbackQueryEngine(engine, store), store


def test_a_stream_breaking_mid_answer_marks_the_callers_copy_finished_with_the_error(tmp_path):
    engine, store = _wrapped(tmp_path, DiesMidStream(answer=ANSWER))
    response = engine.query("apple return policy?")
    with pytest.raises(ConnectionError, match="connection reset"):
        for _ in response.response_gen:
            pass
    meta = response.metadata  # was: finished False and no error in the caller's copy
    assert meta["finished"] is True
    assert meta["error"] == "ConnectionError: backend connection reset"
    assert meta["raw_answer"] and ANSWER.startswith(meta["raw_answer"])
    assert meta["feedback_id"] is None  # nothing to rate
    assert store.count() == 0


def test_an_async_stream_breaking_mid_answer_marks_the_callers_copy_alike(tmp_path):
    engine, store = _wrapped(tmp_path, DiesMidStream(answer=ANSWER))

    async def main():
        response = await engine.aquery("apple return policy?")
        with pytest.raises(ConnectionError, match="connection reset"):
            async for _ in response.async_response_gen():
                pass
        return response

    meta = asyncio.run(main()).metadata
    assert meta["finished"] is True and meta["error"].startswith("ConnectionError")
    assert meta["feedback_id"] is None and store.count() == 0
