"""Synthetic queries: prompt, parsing, copy and quality filters, dedupe, async, failures, Settings.llm."""

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
    QualityFilter,
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
            "Q4: What can be returned to the department?",  # a question shared with the other node
        ]
    ),
    "electronics": "\n".join(
        [
            "What is the return window for a phone?",
            "What can be returned to the department?",
            "ok?",
            "I'm ready to help. What's your question?",  # about nothing in the passage
        ]
    ),
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


def test_parse_questions_strips_labels_the_small_model_writes():
    text = (
        "Sentence 1: What is the fee?\n**Question 2:** Is it free?\n- 2. Bulleted number?\n"
        "Query #3: How long?\nQuery performance in Postgres?\nSentences about apples?"
    )
    assert parse_questions(text) == [
        "What is the fee?",
        "Is it free?",
        "Bulleted number?",
        "How long?",
        "Query performance in Postgres?",  # a question that starts with a label word
        "Sentences about apples?",
    ]


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


def test_quality_filter_drops_rambling_looping_and_off_passage_lines():
    f = QualityFilter()
    # good questions meet the passage in a topic word, inflections included
    assert f.reason("How long do I have to bring back fruit I bought?", APPLES) is None
    assert f.reason("returning produce", APPLES) is None
    assert f.reason("Is there a fee to return an iPhone?", IPHONE) is None
    loop = "What is the answer to the question: " * 4 + "apples?"
    assert f.reason(loop, APPLES) == "degenerate"
    assert f.reason("Can I return apples " + "and pears " * 25 + "?", APPLES) == "too_long"
    # the prompt's or the assistant's words, not the passage's
    assert f.reason("I'm ready to help. What's your question?", APPLES) == "off_passage"
    assert f.reason("What is the difference between a retrieval test and a search query?", IPHONE)
    # answers and statements instead of queries; a keyword query is a query
    assert f.reason("Answer: apples can be returned within seven days", APPLES) == "not_a_question"
    statement = "Fresh apples are sold loose in the grocery department."
    assert f.reason(statement, APPLES) == "not_a_question"
    assert f.reason("### Returning fresh apples", APPLES) == "not_a_question"
    assert f.reason("apple return receipt", APPLES) is None
    keep_all = QualityFilter(
        max_query_tokens=None, max_ngram_repeats=None, min_shared_words=0, drop_statements=False
    )
    assert keep_all.reason(loop, IPHONE) is None


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
    assert reasons[("What can be returned", "grocery")] == "duplicate"  # asked for both nodes
    assert reasons[("ok?", "electronics")] == "too_short"
    assert reasons[("I'm ready to help. W", "electronics")] == "off_passage"
    assert result.stats == {
        "nodes": 2,
        "generated": 8,
        "kept": 2,
        "too_short": 1,
        "copy": 1,
        "too_long": 0,
        "degenerate": 0,
        "off_passage": 1,
        "not_a_question": 0,
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
    shared = [n for q, n in merge.pairs if q == "What can be returned to the department?"]
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
    assert [n for q, n in first.pairs if q == "What can be returned to the department?"] == [
        "grocery"
    ]


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
    assert ("What can be returned to the department?", "grocery") in result.pairs
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


class BatchingCannedLLM(CannedLLM):
    """CannedLLM with ``generate_batch`` (as ``LocalChatLLM`` has); records each batch call."""

    batches: list[tuple[int, int]] = []
    batch_fails: bool = False

    def generate_batch(self, conversations, *, batch_size=8, show_progress=False):
        from llama_index.core.llms import ChatMessage, ChatResponse

        self.batches.append((len(conversations), batch_size))
        if self.batch_fails:
            raise RuntimeError("out of memory")
        replies = []
        for messages in conversations:
            text = messages[-1].content
            key = "grocery" if "grocery" in text else "electronics"
            replies.append(ChatResponse(message=ChatMessage(role="assistant", content=CANNED[key])))
        return replies


def test_an_llm_that_answers_in_batches_gets_every_passage_in_one_call():
    one_by_one = generate_synthetic_queries(
        NODES, llm=CannedLLM(prompts=[]), num_questions_per_node=4, show_progress=False
    )
    llm = BatchingCannedLLM(prompts=[], batches=[])
    batched = generate_synthetic_queries(
        NODES, llm=llm, num_questions_per_node=4, batch_size=16, show_progress=False
    )
    assert llm.batches == [(2, 16)] and llm.prompts == []  # no prompt was sent one by one
    assert batched.pairs == one_by_one.pairs and batched.stats == one_by_one.stats
    plain = BatchingCannedLLM(prompts=[], batches=[])
    generate_synthetic_queries(NODES, llm=plain, batch_size=1, show_progress=False)
    assert plain.batches == [] and len(plain.prompts) == 2  # batch_size=1: one at a time


def test_a_failed_batch_is_asked_again_one_passage_at_a_time(caplog):
    llm = BatchingCannedLLM(prompts=[], batches=[], batch_fails=True)
    result = generate_synthetic_queries(
        NODES, llm=llm, num_questions_per_node=4, show_progress=False
    )
    assert len(llm.batches) == 1 and len(llm.prompts) == 2
    assert result.stats["kept"] == 2 and result.stats["failed_nodes"] == 0
    assert "batched generation failed (out of memory)" in caplog.text
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1, got 0"):
        generate_synthetic_queries(NODES, llm=llm, batch_size=0)


def test_local_chat_llm_answers_synthetic_prompts_in_batches(tiny_causal_lm_path, monkeypatch):
    from llama_index_ragtune.llms import LocalChatLLM

    calls: list[int] = []
    original = LocalChatLLM.generate_batch

    def counted(self, conversations, **kwargs):
        calls.append(len(conversations))
        return original(self, conversations, **kwargs)

    monkeypatch.setattr(LocalChatLLM, "generate_batch", counted)
    llm = LocalChatLLM(tiny_causal_lm_path, max_new_tokens=8, device="cpu")
    result = generate_synthetic_queries(NODES, llm=llm, show_progress=False)
    assert calls == [2]  # both passages in one call of the real model
    assert result.stats["nodes"] == 2 and result.stats["failed_nodes"] == 0
