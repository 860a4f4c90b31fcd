"""Serving limits of ``CitationQueryEngine``: sources past the LLM's context window are fitted
(left out, or the last one cut at a sentence) instead of failing the query; a question
that cannot fit is a clear error; an answer cut by the token limit says so; a citation
check that fails still serves the answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, LLMMetadata
from llama_index.core.schema import NodeWithScore, TextNode
from transformers import LogitsProcessorList

from llama_index_ragtune.grounding import read_grounded_prompt
from llama_index_ragtune.llms import LocalChatLLM
from llama_index_ragtune.llms.refusal_policy import DecoderRefusalPolicy
from llama_index_ragtune.query_engine import CitationQueryEngine
from llama_index_ragtune.query_engine.prompt_fit import fit_sources, token_counter
from tests.query_engine.test_citation import ListRetriever, ScriptedLLM
from tests.query_engine.test_refusal_and_post_check import CitingLLM

PATHS = ["sync", "async", "stream", "astream"]


def run(engine: CitationQueryEngine, question: str, path: str) -> tuple[str, Any]:
    """The answer text and the response, by the sync, async, streaming or async streaming path."""
    engine.streaming = path in ("stream", "astream")
    if path == "sync":
        response = engine.query(question)
        return response.response, response
    if path == "stream":
        response = engine.query(question)
        return "".join(response.response_gen), response

    async def go() -> tuple[str, Any]:
        response = await engine.aquery(question)
        if path == "astream":
            return "".join([t async for t in response.async_response_gen()]), response
        return response.response, response

    return asyncio.run(go())


def long_sources(n: int = 6, sentences: int = 8) -> list[NodeWithScore]:
    return [
        NodeWithScore(
            node=TextNode(
                id_=f"doc-{i}",
                text=" ".join(f"Fact {j} of document {i} is here." for j in range(sentences)),
            ),
            score=1.0 - i / 10,
        )
        for i in range(n)
    ]


class WindowedLLM(ScriptedLLM):
    """A scripted LLM that declares a context window and an answer budget, and may report
    a finish reason in ``raw`` (``finish_raw``: LocalChatLLM's or OpenAI's shape)."""

    window: int = 3900
    budget: int = 256
    finish_raw: Any = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=True, context_window=self.window, num_output=self.budget)

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        response = super().chat(messages)
        response.raw = self.finish_raw
        return response

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any):
        chunks = list(super().stream_chat(messages))
        chunks[-1].raw = self.finish_raw
        return iter(chunks)


# ---------------------------------------------------------------- 1. the context window


@pytest.fixture(scope="module")
def small_window_llm(tiny_causal_lm_path) -> LocalChatLLM:
    return LocalChatLLM(tiny_causal_lm_path, max_new_tokens=16, context_window=340, device="cpu")


@pytest.mark.parametrize("path", PATHS)
def test_sources_past_the_window_are_fitted_instead_of_failing(small_window_llm, path):
    # was: ValueError "Prompt of 643 tokens + max_new_tokens=16 exceeds the context window (340)"
    nodes = long_sources()
    engine = CitationQueryEngine(ListRetriever(nodes), llm=small_window_llm)
    _, response = run(engine, "What is fact 3 of document 1?", path)
    meta = response.metadata
    shown = [n.node.node_id for n in response.source_nodes]
    assert meta["source_node_ids"] == shown
    assert 1 <= len(shown) < len(nodes)
    assert shown + meta["left_out_node_ids"] == [n.node.node_id for n in nodes]  # rank order
    assert meta["cut_node_ids"] == shown[-1:]
    cut = response.source_nodes[-1].node.text
    original = nodes[len(shown) - 1].node.text
    assert original.startswith(cut) and cut.endswith(".") and len(cut) < len(original)
    # the prompt sent fits with the answer's budget, and says so
    prompt_tokens = len(
        small_window_llm.encode(
            engine.messages("What is fact 3 of document 1?", response.source_nodes)
        )
    )
    assert meta["prompt"] == {
        "prompt_tokens": prompt_tokens,
        "context_window": 340,
        "num_output": 16,
    }
    assert prompt_tokens + 16 <= 340


@pytest.mark.parametrize("policy_on", ["llm", "engine"])
def test_the_window_keeps_room_for_the_refusal_a_policy_scores(tiny_causal_lm_path, policy_on):
    # was: "Prompt of 337 tokens + the refusal's 8 tokens exceeds the context window (340)"
    # with an answer budget (2 tokens) shorter than the refusal the decoder policy scores
    threshold = {"refusal_threshold": 0.99} if policy_on == "llm" else {}
    llm = LocalChatLLM(
        tiny_causal_lm_path, max_new_tokens=2, context_window=340, device="cpu", **threshold
    )
    policy = DecoderRefusalPolicy(0.99) if policy_on == "engine" else None
    engine = CitationQueryEngine(ListRetriever(long_sources()), llm=llm, refusal_policy=policy)
    meta = engine.query("What is fact 3 of document 1?").metadata
    n_refusal = len(llm.refusal_token_ids())
    assert meta["prompt"]["num_output"] == n_refusal > 2
    assert meta["prompt"]["prompt_tokens"] + n_refusal <= 340
    assert meta["refusal_decision"]["signal"] == "decoder" and meta["left_out_node_ids"]


@pytest.mark.parametrize("path", PATHS)
def test_citations_number_the_sources_that_were_shown(path):
    nodes = long_sources()
    llm = WindowedLLM(answer="Fact 1 [1]. Fact 2 [2]. Fact 6 [6].", calls=[], window=400, budget=64)
    text, response = run(CitationQueryEngine(ListRetriever(nodes), llm=llm), "Facts?", path)
    meta = response.metadata
    prompt = read_grounded_prompt(llm.calls[0])
    assert len(prompt.source_texts) == len(response.source_nodes) < len(nodes)
    assert meta["cited_node_ids"] == ["doc-0", "doc-1"]
    assert meta["invalid_citations"] == [6]  # source 6 was left out: not citable
    assert "[6]" not in text
    assert meta["prompt"]["prompt_tokens"] <= 400 - 64
    assert token_counter(llm)(llm.calls[0]) == meta["prompt"]["prompt_tokens"]


@pytest.mark.parametrize("path", PATHS)
def test_a_question_that_cannot_fit_is_a_clear_error(path):
    llm = WindowedLLM(answer="x [1].", calls=[], window=200, budget=50)
    engine = CitationQueryEngine(ListRetriever(long_sources(2)), llm=llm)
    question = "why " * 400
    with pytest.raises(
        ValueError,
        match=r"question \(1600 characters\) does not fit.*"
        r"context_window of 200 tokens minus num_output=50",
    ):
        run(engine, question, path)
    assert llm.calls == []


def test_an_answer_budget_past_the_window_is_named_not_blamed_on_the_question(small_window_llm):
    llm = WindowedLLM(answer="x [1].", calls=[], window=200, budget=200)
    with pytest.raises(ValueError, match="num_output=200 .* leaves no room for a prompt"):
        CitationQueryEngine(ListRetriever(long_sources(2)), llm=llm).query("q?")
    assert llm.calls == []
    # a LocalChatLLM whose max_new_tokens was raised after it was built
    wide = small_window_llm.model_copy(update={"max_new_tokens": 400})
    with pytest.raises(ValueError, match="LocalChatLLM's num_output=400"):
        CitationQueryEngine(ListRetriever(long_sources(2)), llm=wide).query("q?")


@pytest.mark.parametrize("path", PATHS)
def test_no_source_fitting_is_the_refusal_with_the_sources_named(path):
    one_long_sentence = NodeWithScore(node=TextNode(id_="long", text="word " * 500), score=1.0)
    llm = WindowedLLM(answer="x [1].", calls=[], window=300, budget=50)
    engine = CitationQueryEngine(ListRetriever([one_long_sentence]), llm=llm)
    text, response = run(engine, "q?", path)
    assert response.metadata["refused"] and text == engine.refusal
    assert response.metadata["left_out_node_ids"] == ["long"] and response.source_nodes == []
    assert llm.calls == []


def test_sources_that_fit_are_sent_unchanged():
    nodes = long_sources(3, sentences=2)
    llm = WindowedLLM(answer="Fact [1].", calls=[])
    response = CitationQueryEngine(ListRetriever(nodes), llm=llm).query("q?")
    engine = CitationQueryEngine(ListRetriever(nodes), llm=llm)
    assert llm.calls[0] == engine.messages("q?", nodes)
    assert response.metadata["left_out_node_ids"] == [] and response.metadata["cut_node_ids"] == []
    assert [n.node.text for n in response.source_nodes] == [n.node.text for n in nodes]


# ---------------------------------------------------------------- 2. answers cut short


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "raw",
    [
        {"finish_reason": "length"},  # LocalChatLLM
        {"choices": [{"finish_reason": "length"}]},  # OpenAI as a dict
        SimpleNamespace(choices=[SimpleNamespace(finish_reason="length")]),  # OpenAI object
        {"stop_reason": "max_tokens"},  # Anthropic
    ],
)
def test_an_answer_cut_by_the_token_limit_says_so(raw, path):
    answer = "Fact 1 is here [1]. Fact 2 is [2] the fi"
    llm = WindowedLLM(answer=answer, calls=[], finish_raw=raw)
    text, response = run(
        CitationQueryEngine(ListRetriever(long_sources(3, 2)), llm=llm), "q?", path
    )
    meta = response.metadata
    assert text == answer  # served as written, nothing lost
    assert meta["truncated"] is True and meta["finish_reason"] in ("length", "max_tokens")
    assert meta["cut_claim"] == {"claim": "Fact 2 is [2] the fi", "citations": [2]}
    assert meta["cited_node_ids"] == ["doc-0"]  # [2] backs only the cut sentence
    assert [c["number"] for c in meta["citations"]] == [1]
    assert meta["uncited"] is False


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "raw", [None, {}, {"finish_reason": None}, "text", {"finish_reason": "stop"}]
)
def test_a_whole_or_unreported_finish_is_not_truncated(raw, path):
    llm = WindowedLLM(answer="Fact 2 is [2] the fi", calls=[], finish_raw=raw)
    _, response = run(CitationQueryEngine(ListRetriever(long_sources(3, 2)), llm=llm), "q?", path)
    meta = response.metadata
    assert meta["truncated"] is False and meta["cut_claim"] is None
    assert meta["finish_reason"] == (raw.get("finish_reason") if isinstance(raw, dict) else None)
    assert meta["cited_node_ids"] == ["doc-1"]


def test_a_cut_that_falls_after_a_whole_sentence_keeps_its_citations():
    llm = WindowedLLM(
        answer="Fact 1 [1]. Fact 2 [2].", calls=[], finish_raw={"finish_reason": "length"}
    )
    meta = CitationQueryEngine(ListRetriever(long_sources(3, 2)), llm=llm).query("q?").metadata
    assert meta["truncated"] is True and meta["cut_claim"] is None
    assert meta["cited_node_ids"] == ["doc-0", "doc-1"]
    # cited only in the cut sentence: nothing backs the answer
    llm = WindowedLLM(answer="Fact 1 is [1] the", calls=[], finish_raw={"finish_reason": "length"})
    meta = CitationQueryEngine(ListRetriever(long_sources(3, 2)), llm=llm).query("q?").metadata
    assert meta["cited_node_ids"] == [] and meta["uncited"] is True and not meta["refused"]


class Script:
    """A logits processor that makes the model write ``ids`` then ``filler`` forever."""

    def __init__(self, ids: list[int], filler: int, start: int) -> None:
        self.ids, self.filler, self.start = ids, filler, start

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.start
        token = self.ids[step] if step < len(self.ids) else self.filler
        scores = scores.clone().fill_(float("-inf"))
        scores[:, token] = 0.0
        return scores


@pytest.mark.parametrize("path", PATHS)
def test_a_local_llm_answer_cut_by_max_new_tokens_is_flagged(tiny_causal_lm_path, path):
    loaded = LocalChatLLM(tiny_causal_lm_path, device="cpu")
    tokenizer = loaded.tokenizer
    ids = tokenizer.encode("Fact 0 is here [1]. Fact 1 is [2]", add_special_tokens=False)
    llm = LocalChatLLM(hf_model=loaded.hf_model, tokenizer=tokenizer, max_new_tokens=len(ids) + 3)
    nodes = long_sources(2, 2)
    engine = CitationQueryEngine(ListRetriever(nodes), llm=llm)
    filler = tokenizer.encode(" the", add_special_tokens=False)[-1]
    start = len(llm.encode(engine.messages("q?", nodes)))
    llm.generate_kwargs = {"logits_processor": LogitsProcessorList([Script(ids, filler, start)])}
    text, response = run(engine, "q?", path)
    meta = response.metadata
    assert meta["finish_reason"] == "length" and meta["truncated"] is True
    assert text.startswith("Fact 0 is here [1]. Fact 1 is [2] the")
    assert meta["cut_claim"]["citations"] == [2]
    assert meta["cited_node_ids"] == ["doc-0"]


# ---------------------------------------------------------------- 4. the citation post-check


class FailingCitingLLM(CitingLLM):
    def citation_probabilities(self, messages, answer_prefix, n_sources):
        raise ValueError("the answer prefix + citation exceeds the context window")


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_failing_citation_check_still_serves_the_answer(path):
    llm = FailingCitingLLM(answer="Rome is big. Paris [1].", calls=[], preferences=[], prefixes=[])
    engine = CitationQueryEngine(ListRetriever(long_sources(2, 2)), llm=llm, uncited="cite")
    text, response = run(engine, "q?", path)
    meta = response.metadata
    assert text == "Rome is big. Paris [1]."
    assert meta["post_check"]["unchecked"] is True
    assert "exceeds the context window" in meta["post_check"]["error"]
    assert meta["post_check"]["uncited_claims"] == ["Rome is big."]
    assert meta["post_check"]["added_citations"] == []
    assert meta["cited_node_ids"] == ["doc-0"] and meta["finished"]


def test_a_local_llm_citation_check_past_its_window_still_serves(tiny_causal_lm_path):
    # the prompt and the whole answer fill the window: scoring "answer [n]" does not fit
    nodes = long_sources(2, 2)
    probe = LocalChatLLM(tiny_causal_lm_path, max_new_tokens=8, device="cpu")
    engine = CitationQueryEngine(ListRetriever(nodes), llm=probe)
    prompt = len(probe.encode(engine.messages("q?", nodes)))
    llm = LocalChatLLM(
        tiny_causal_lm_path, max_new_tokens=8, context_window=prompt + 8, device="cpu"
    )
    filler = llm.tokenizer.encode(" the", add_special_tokens=False)[-1]
    llm.generate_kwargs = {"logits_processor": LogitsProcessorList([Script([], filler, prompt)])}
    engine = CitationQueryEngine(ListRetriever(nodes), llm=llm, uncited="cite")
    response = engine.query("q?")
    meta = response.metadata
    assert response.response == "the" + " the" * 7
    assert meta["post_check"]["unchecked"] is True
    assert "context window" in meta["post_check"]["error"]
    assert meta["truncated"] is True and meta["source_node_ids"] == ["doc-0", "doc-1"]


def test_fitting_many_sources_counts_few_prompts():
    nodes = long_sources(200, sentences=8)
    calls = []

    def count(messages):
        calls.append(1)
        return sum(len(m.content.split()) for m in messages)

    engine = CitationQueryEngine(ListRetriever(nodes), llm=WindowedLLM(answer="", calls=[]))
    fit = fit_sources(
        "q?", nodes, lambda shown: engine.messages("q?", shown), count, 2000, 100, "llm"
    )
    assert 1 <= len(fit.nodes) < 200 and len(fit.left_out_node_ids) == 200 - len(fit.nodes)
    assert fit.prompt_tokens <= 1900
    assert len(calls) <= 2 + 8 + 4  # whole, bare, log2(200) prefixes, log2(8) cuts
    calls.clear()
    fit_sources("q?", nodes[:3], lambda shown: engine.messages("q?", shown), count, 2000, 100)
    assert len(calls) == 1  # everything fits: one count
