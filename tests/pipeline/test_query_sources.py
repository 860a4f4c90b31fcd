"""Questions without a labelled file: from a real feedback store, or synthetic from an LLM."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from llama_index.core.base.llms.types import CompletionResponse, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.schema import NodeWithScore

from llama_index_ragtune.feedback import FeedbackStore
from llama_index_ragtune.pipeline import TuningPipeline
from llama_index_ragtune.pipeline.query_sources import feedback_queries
from llama_index_ragtune.pipeline.sources import parse_documents, read_documents


class QuestionWriter(CustomLLM):
    """Writes one question per passage about its last words (a stand-in for any LLM)."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="question-writer")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        passage = prompt.split("---------------------")[1]
        words = re.findall(r"[A-Za-z]+", passage)[-3:]
        return CompletionResponse(text=f"1. What should I know about {' '.join(words)}?")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        yield self.complete(prompt)


def test_synthetic_questions_point_at_their_node(tmp_path, tiny_corpus, make_config):
    pipeline = TuningPipeline(
        tiny_corpus["docs"],
        tmp_path,
        synthetic_llm=QuestionWriter(),
        config=make_config(synthetic_questions_per_node=1, test_fraction=0.3),
        echo=lambda line: None,
    )
    pipeline.run(until="data")
    queries = pipeline.context.queries
    assert pipeline.context.state.get("data", "queries_source") == "synthetic"
    assert pipeline.context.state.get("data", "synthetic")["kept"] == len(queries) == 12
    by_gold = {q.gold_node_ids[0]: q.question for q in queries}
    assert by_gold["grocery/produce.md#1"] == "What should I know about December to March?"
    assert {q.split for q in queries} == {"train", "test"}
    assert all(q.source == "synthetic" and q.answer is None for q in queries)


def test_feedback_questions_use_upvoted_citations_and_drop_unknown_nodes(tmp_path, tiny_corpus):
    nodes = parse_documents(read_documents(tiny_corpus["docs"]))
    by_id = {n.node_id: n for n in nodes}
    store = FeedbackStore(tmp_path / "feedback.sqlite")

    def sources(*ids):
        return [NodeWithScore(node=by_id[i], score=1.0 - k / 10) for k, i in enumerate(ids)]

    for n in range(12):
        question = f"question {n} about apples"
        retrieved = sources("grocery/returns.md#1", "electronics/apple.html#0")
        rid = store.record(question, retrieved=retrieved, cited_node_ids=["grocery/returns.md#1"])
        store.rate(rid, 1 if n % 3 else -1)
    gone = store.record(
        "old page",
        retrieved=sources("grocery/produce.md#0"),
        cited_node_ids=["grocery/produce.md#0"],
    )
    store.rate(gone, 1)
    renamed = [n for n in nodes if n.node_id != "grocery/produce.md#0"]
    queries = feedback_queries(store, renamed, eval_fraction=0.3, seed=0)
    assert queries and {q.source for q in queries} == {"feedback"}
    assert "old page" not in {q.question for q in queries}  # its only positive left the index
    upvoted = [q for q in queries if q.gold_node_ids]
    assert all(q.gold_node_ids == ["grocery/returns.md#1"] for q in upvoted)
    assert {q.split for q in queries} <= {"train", "test"} and any(
        q.split == "train" for q in queries
    )
    store.close()
    with pytest.raises(FileNotFoundError, match="feedback store not found"):
        feedback_queries(tmp_path / "missing.sqlite", nodes)
    assert json.dumps([q.to_dict() for q in queries])  # plain data, saved with the run


def test_the_same_question_asked_of_two_stores_stays_two_questions(tmp_path, tiny_corpus):
    nodes = parse_documents(read_documents(tiny_corpus["docs"]))
    by_id = {n.node_id: n for n in nodes}
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    for name, gold in (
        ("grocery", "grocery/returns.md#1"),
        ("electronics", "electronics/apple.html#0"),
    ):
        for _ in range(3):
            rid = store.record(
                "apple return policy?",
                retrieved=[NodeWithScore(node=by_id[gold], score=1.0)],
                cited_node_ids=[gold],
                metadata={"store": name},
            )
            store.rate(rid, 1)
    queries = feedback_queries(store, nodes, eval_fraction=0.0)
    store.close()
    by_store = {q.filters["store"]: q for q in queries}
    assert len(queries) == 2 and set(by_store) == {"grocery", "electronics"}
    assert by_store["grocery"].gold_node_ids == ["grocery/returns.md#1"]
    assert by_store["electronics"].gold_node_ids == ["electronics/apple.html#0"]
