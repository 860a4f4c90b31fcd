"""Synthetic queries: prompt, parsing, copy filter, dedupe, async, failures, Settings.llm."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import Settings
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.schema import TextNode

from llama_index_ragtune.data.schema import RetrievalDataset
from llama_index_ragtune.data.synthetic import (
    CopyFilter,
    generate_synthetic_queries,
    parse_questions,
)

APPLES = (
    "Fresh apples and other produce bought in our grocery department can be returned "
    "within seven days when you bring the receipt to the customer service desk"
)
IPHONE = "Apple iPhones bought in the electronics department can be returned within fourteen days"

NODES = [TextNode(id_="grocery", text=APPLES), TextNode(id_="electronics", text=IPHONE)]

CANNED = {
    "grocery": "\n".join(
        [
            "Here are the questions:",
            "1. How long do I have to bring back fruit I bought?",
            # copies the passage nearly verbatim
            "2) Fresh apples and other produce bought in our grocery department can be returned within seven days?",
            "- how long do I have to bring back fruit I bought",  # duplicate of 1 (normalised)
            "Q4: What is the store's phone number?",  # a question shared with the other node
        ]
    ),
    "electronics": "What is the return window for a phone?\nWhat is the store's phone number?\nok?",
}


class CannedLLM(CustomLLM):
    """Answers with canned questions chosen by the passage in the prompt; records prompts."""

    prompts: list[str] = []
    fail_on: str | None = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.prompts.append(prompt)
        key = "grocery" if "grocery" in prompt else "electronics"
        if self.fail_on == key:
            raise RuntimeError("service unavailable")
        return CompletionResponse(text=CANNED[key])

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        raise NotImplementedError


def test_parse_questions_strips_numbering_and_preambles():
    text = 'Sure, here you go:\n1. First?\n2) Second?\n- "Third?"\nQ4: Fourth?\n\n3.5 mg daily?'
    assert parse_questions(text) == ["First?", "Second?", "Third?", "Fourth?", "3.5 mg daily?"]
    assert parse_questions(text, limit=2) == ["First?", "Second?"]


def test_copy_filter():
    f = CopyFilter()
    assert f.reason("How long do I have to bring back fruit?", APPLES) is None
    assert f.reason(APPLES[:90] + "?", APPLES) == "copied_ngram"
    assert f.reason("Within seven days when you bring the receipt?", APPLES) == "overlap_ratio"
    assert CopyFilter(max_copied_ngram=None, max_overlap_ratio=None).reason(APPLES, APPLES) is None
    assert CopyFilter(max_copied_ngram=3, max_overlap_ratio=None)("the receipt to the desk", APPLES)


def test_filters_copies_and_duplicates_and_uses_custom_prompt():
    llm = CannedLLM(prompts=[])
    prompt = "PASSAGE>>> {context_str} <<< write {num_questions} questions"
    result = generate_synthetic_queries(
        NODES, llm=llm, num_questions_per_node=4, prompt_template=prompt, show_progress=False
    )
    assert len(llm.prompts) == 2 and llm.prompts[0] == f"PASSAGE>>> {APPLES} <<< write 4 questions"
    assert result.pairs == [
        ("How long do I have to bring back fruit I bought?", "grocery"),
        ("What is the return window for a phone?", "electronics"),
    ]
    reasons = {(q[:20], node): why for q, node, why in result.dropped}
    assert reasons[("Fresh apples and oth", "grocery")] == "copied_ngram"
    assert reasons[("how long do I have t", "grocery")] == "duplicate"
    assert reasons[("What is the store's ", "grocery")] == "duplicate"  # asked for both nodes
    assert reasons[("ok?", "electronics")] == "too_short"
    assert result.stats == {
        "nodes": 2,
        "generated": 7,
        "kept": 2,
        "too_short": 1,
        "copy": 1,
        "duplicate": 3,
        "failed_nodes": 0,
    }


def test_duplicate_policies():
    merge = generate_synthetic_queries(
        NODES,
        llm=CannedLLM(prompts=[]),
        num_questions_per_node=4,
        on_duplicate="merge",
        show_progress=False,
    )
    shared = [n for q, n in merge.pairs if q == "What is the store's phone number?"]
    assert shared == ["grocery", "electronics"]
    ds = RetrievalDataset.from_pairs(merge.pairs, NODES)
    assert sorted(max(ds.relevant_docs.values(), key=len)) == ["electronics", "grocery"]
    first = generate_synthetic_queries(
        NODES,
        llm=CannedLLM(prompts=[]),
        num_questions_per_node=4,
        on_duplicate="first",
        show_progress=False,
    )
    assert [n for q, n in first.pairs if q == "What is the store's phone number?"] == ["grocery"]


def test_from_nodes_async_and_settings_llm(monkeypatch):
    monkeypatch.setattr(Settings, "_llm", CannedLLM(prompts=[]))
    ds = RetrievalDataset.from_nodes(
        NODES, num_questions_per_node=4, use_async=True, num_workers=2, show_progress=False
    )
    assert sorted(ds.queries.values()) == [
        "How long do I have to bring back fruit I bought?",
        "What is the return window for a phone?",
    ]
    assert set(ds.corpus) == {"grocery", "electronics"}
    assert ds.metadata["stats"]["kept"] == 2
    for _qid, query, positives, _ in ds:
        assert positives == (["grocery"] if "fruit" in query else ["electronics"])


def test_failures_are_counted_or_raised():
    llm = CannedLLM(prompts=[], fail_on="electronics")
    result = generate_synthetic_queries(
        NODES, llm=llm, num_questions_per_node=4, retries=1, show_progress=False
    )
    assert result.stats["failed_nodes"] == 1
    assert len(llm.prompts) == 1 + 2  # one try for grocery, two for electronics
    # the shared question now occurs once only, so it is kept
    assert ("What is the store's phone number?", "grocery") in result.pairs
    with pytest.raises(RuntimeError, match="'electronics'"):
        generate_synthetic_queries(
            NODES,
            llm=CannedLLM(prompts=[], fail_on="electronics"),
            retries=0,
            on_failure="raise",
            show_progress=False,
        )


def test_mock_llm_echo_is_caught_as_copy():
    """MockLLM echoes the prompt, i.e. the passage itself: every 'question' is a copy."""
    result = generate_synthetic_queries(
        NODES, llm=MockLLM(), prompt_template="{context_str}", show_progress=False
    )
    assert result.pairs == []
    assert result.stats["copy"] == 2
    with pytest.raises(ValueError, match="no synthetic query survived"):
        RetrievalDataset.from_nodes(
            NODES, llm=MockLLM(), prompt_template="{context_str}", show_progress=False
        )


def test_bad_arguments():
    with pytest.raises(ValueError, match="context_str"):
        generate_synthetic_queries(NODES, llm=MockLLM(), prompt_template="no passage here")
    with pytest.raises(ValueError, match="at least one node"):
        generate_synthetic_queries([], llm=MockLLM())
    with pytest.raises(ValueError, match="num_questions_per_node"):
        generate_synthetic_queries(NODES, llm=MockLLM(), num_questions_per_node=0)
