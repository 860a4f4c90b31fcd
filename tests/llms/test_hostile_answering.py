"""The answering side's public API with hostile and mistaken arguments: ``LocalChatLLM``,
refusal policies and the answerability scorer refuse them with a ``TypeError`` /
``ValueError`` naming the argument (when built where possible), never a silent wrong result
or a raw torch / tokenizer / pydantic error."""

from __future__ import annotations

import math

import numpy as np
import pytest
from llama_index.core.llms import ChatMessage

from llama_index_ragtune.evaluation.refusal_calibration import RefusalCombination
from llama_index_ragtune.llms import LocalChatLLM
from llama_index_ragtune.llms.answerability import AnswerabilityScorer
from llama_index_ragtune.llms.refusal_policy import (
    AnswerabilityRefusalPolicy,
    CombinedRefusalPolicy,
    DecoderRefusalPolicy,
)

HI = [ChatMessage(role="user", content="hi")]


@pytest.fixture(scope="module")
def tiny_llm(tiny_causal_lm_path) -> LocalChatLLM:
    return LocalChatLLM(tiny_causal_lm_path, max_new_tokens=3, device="cpu")


def in_memory(llm: LocalChatLLM, **kwargs) -> LocalChatLLM:
    return LocalChatLLM(hf_model=llm.hf_model, tokenizer=llm.tokenizer, device="cpu", **kwargs)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"max_new_tokens": 0}, ValueError),
        ({"max_new_tokens": True}, TypeError),
        ({"max_new_tokens": 2.5}, TypeError),
        ({"max_new_tokens": "3"}, TypeError),
        ({"temperature": math.nan}, ValueError),
        ({"temperature": math.inf}, ValueError),
        ({"temperature": True}, TypeError),
        ({"top_p": 0.0}, ValueError),
        ({"context_window": 0}, ValueError),
        ({"context_window": -5}, ValueError),
        ({"context_window": True}, TypeError),
        ({"context_window": "4"}, TypeError),
        ({"refusal_threshold": True}, TypeError),
        ({"refusal_threshold": "0.5"}, TypeError),
        ({"refusal_threshold": math.nan}, ValueError),
    ],
)
def test_numeric_settings_are_refused_before_loading(tiny_causal_lm_path, kwargs, error):
    (name,) = kwargs
    with pytest.raises(error, match=f"LocalChatLLM: {name} must be"):
        LocalChatLLM(tiny_causal_lm_path, **kwargs)


def test_output_budget_must_fit_the_context_window(tiny_llm):
    # max_new_tokens past the window used to fail on every call; a window past the model's
    # positions (or 0, which switched the length check off) used to be accepted
    with pytest.raises(ValueError, match="max_new_tokens=4096 leaves no room for a prompt"):
        in_memory(tiny_llm, max_new_tokens=4096)
    with pytest.raises(
        ValueError, match="max_new_tokens=256 leaves no room.*context window \\(10\\)"
    ):
        in_memory(tiny_llm, context_window=10)
    with pytest.raises(ValueError, match="context_window=100000 is larger than the 2048 positions"):
        in_memory(tiny_llm, context_window=100_000)


def test_unusable_model_device_and_tokenizer_are_named(tiny_llm, tiny_causal_lm_path):
    with pytest.raises(TypeError, match="LocalChatLLM: model must be None"):
        LocalChatLLM(5)
    for device in ("gpu", "", "meta"):
        with pytest.raises(ValueError, match="LocalChatLLM: device="):
            LocalChatLLM(tiny_causal_lm_path, device=device)
    with pytest.raises(TypeError, match="hf_model must be a transformers causal LM"):
        LocalChatLLM(hf_model=5, tokenizer=tiny_llm.tokenizer)
    with pytest.raises(TypeError, match="tokenizer must be a transformers tokenizer"):
        LocalChatLLM(hf_model=tiny_llm.hf_model, tokenizer="x")


@pytest.mark.parametrize("value, error", [(0, ValueError), (2.5, TypeError), (True, TypeError)])
def test_per_call_max_new_tokens_is_checked(tiny_llm, value, error):
    # 0 used to fall back to the default silently, 2.5 and True were passed to generate()
    with pytest.raises(error, match="max_new_tokens must be an integer >= 1"):
        tiny_llm.chat(HI, max_new_tokens=value)
    with pytest.raises(error, match="max_new_tokens must be an integer >= 1"):
        list(tiny_llm.stream_chat(HI, max_new_tokens=value))


def test_refuse_flags_must_be_booleans(tiny_llm):
    # refuse="no" used to be bool("no") == True: the refusal instead of an answer
    with pytest.raises(TypeError, match="refuse must be True, False or None, got str 'no'"):
        tiny_llm.chat(HI, refuse="no")
    with pytest.raises(TypeError, match="refuse must be True, False or None"):
        tiny_llm.generate_batch([HI], refuse=[1])
    assert tiny_llm.generate_batch([HI], refuse=[np.bool_(True)])[0].message.content


def test_lone_surrogates_in_messages_and_prompts_are_replaced(tiny_llm):
    # a badly decoded document used to crash the tokenizer with a raw TypeError
    bad = "caf\ud800e \udfff"
    clean = "caf\ufffde \ufffd"
    assert tiny_llm.encode([ChatMessage(role="user", content=bad)]) == tiny_llm.encode(
        [ChatMessage(role="user", content=clean)]
    )
    assert tiny_llm.chat([ChatMessage(role="user", content=bad)]).raw["usage"]
    assert tiny_llm.complete(bad, formatted=True).raw["usage"]
    assert list(tiny_llm.stream_complete(bad))[-1].raw["usage"]
    assert len(tiny_llm.citation_probabilities(HI, "x\ud800", n_sources=2)) == 2


@pytest.mark.parametrize(
    "messages, error, match",
    [
        ("hello", TypeError, "list of chat messages"),
        (None, TypeError, "list of chat messages"),
        (ChatMessage(role="user", content="hi"), TypeError, "list of chat messages"),
        ([{"role": "bogus", "content": "hi"}], ValueError, "Chat message 0: role must be one of"),
        ([{"role": "user", "content": 5}], TypeError, "Chat message 0: content must be a str"),
    ],
)
def test_wrong_messages_are_named_before_the_callback_events(tiny_llm, messages, error, match):
    # these used to be pydantic errors from LlamaIndex's start event (or str(5) answered)
    with pytest.raises(error, match=match):
        tiny_llm.chat(messages)
    with pytest.raises(error, match=match):
        tiny_llm.stream_chat(messages)
    with pytest.raises(error, match=match):
        tiny_llm.generate_batch([messages])


def test_async_chat_checks_messages_first(tiny_llm):
    import asyncio

    with pytest.raises(TypeError, match="list of chat messages"):
        asyncio.run(tiny_llm.achat("hello"))


def test_completion_prompts_must_be_non_empty_text(tiny_llm):
    for prompt in (None, 5):
        with pytest.raises(TypeError, match="prompt must be a str"):
            tiny_llm.complete(prompt)
    # an empty pre-formatted prompt used to be a raw torch reshape error
    with pytest.raises(ValueError, match="formatted prompt is empty"):
        tiny_llm.complete("", formatted=True)


def test_batch_and_citation_arguments_are_named(tiny_llm):
    for batch_size, error in ((2.5, TypeError), (True, TypeError), (0, ValueError)):
        with pytest.raises(error, match="batch_size must be an integer >= 1"):
            tiny_llm.generate_batch([HI], batch_size=batch_size)
    with pytest.raises(TypeError, match="n_sources must be an integer"):
        tiny_llm.citation_probabilities(HI, "a", n_sources=True)
    with pytest.raises(TypeError, match="answer_prefix must be a str"):
        tiny_llm.citation_probabilities(HI, None, n_sources=2)


def test_refusal_probability_past_the_context_window_is_refused(tiny_llm):
    small = in_memory(tiny_llm, context_window=40, max_new_tokens=2)
    with pytest.raises(ValueError, match="the refusal's .* tokens exceeds the context window"):
        small.conversation_refusal_probabilities([[{"role": "user", "content": "word " * 50}]])


# ------------------------------------------------------------------ refusal policies


def constant_scorer(value):
    return lambda questions, sources: [value] * len(questions)


def combination() -> RefusalCombination:
    return RefusalCombination.from_dict(
        {
            "signals": ["decoder", "answerability"],
            "weights": [1.0, 1.0],
            "means": [0.0, 0.0],
            "scales": [1.0, 1.0],
            "intercept": 0.0,
        }
    )


def test_numpy_thresholds_are_numbers():
    assert DecoderRefusalPolicy(np.float32(0.25)).threshold == 0.25


def test_combined_policy_parts_are_checked_when_built():
    with pytest.raises(TypeError, match="combination must be a RefusalCombination"):
        CombinedRefusalPolicy(constant_scorer(0.5), None, 0.5)
    with pytest.raises(TypeError, match="CombinedRefusalPolicy: scorer must be callable"):
        CombinedRefusalPolicy(None, combination(), 0.5)


@pytest.mark.parametrize("bad", [math.nan, 1.7, -0.2, "0.9", None])
def test_signals_that_are_not_probabilities_are_refused(bad):
    # NaN used to answer silently (NaN >= t is False), 1.7 became P(no answer) = -0.7
    with pytest.raises((ValueError, TypeError), match="not a number in \\[0, 1\\]|probability"):
        DecoderRefusalPolicy(0.5).decide(["q"], [["s"]], [bad])
    if bad is None or isinstance(bad, str):
        return
    policy = AnswerabilityRefusalPolicy(constant_scorer(bad), 0.5)
    with pytest.raises(
        ValueError, match="question 0 has encoder P\\(no source holds the answer\\)"
    ):
        policy.decide(["q"], [["s"]])
    combined = CombinedRefusalPolicy(constant_scorer(0.5), combination(), 0.5)
    with pytest.raises(ValueError, match="decoder probability 0 is|question 0 has"):
        combined.decide(["q"], [["s"]], [bad])


def test_decide_shapes_are_checked():
    # a scorer returning too few values used to give fewer decisions than questions
    short = AnswerabilityRefusalPolicy(lambda q, s: [], 0.5)
    with pytest.raises(ValueError, match="0 values for 1 questions"):
        short.decide(["q"], [["s"]])
    policy = AnswerabilityRefusalPolicy(constant_scorer(0.9), 0.5)
    with pytest.raises(ValueError, match="1 decoder probabilities for 2 questions"):
        policy.decide(["q", "r"], [["s"], ["t"]], [0.1])  # was a raw zip() error
    with pytest.raises(TypeError, match="not a single string"):
        DecoderRefusalPolicy(0.5).decide("qr", [["s"], ["t"]], [0.1, 0.2])
    with pytest.raises(TypeError, match="sources must be a list of source texts"):
        policy.decide(["q"], ["one source"])  # was scored character by character
    decisions = DecoderRefusalPolicy(0.5).decide(iter(["q"]), iter([["s"]]), iter([0.7]))
    assert [d.refused for d in decisions] == [True]


def test_answerability_scorer_arguments_and_folder_kind(tiny_causal_lm_path, tmp_path):
    for batch_size in (2.5, True, "3"):
        with pytest.raises(TypeError, match="AnswerabilityScorer: batch_size must be an integer"):
            AnswerabilityScorer(tiny_causal_lm_path, batch_size=batch_size)
    with pytest.raises(ValueError, match="AnswerabilityScorer: max_length must be"):
        AnswerabilityScorer(tiny_causal_lm_path, max_length=0)
    # a decoder folder used to load with a random one-logit head and score silently
    with pytest.raises(ValueError, match="AnswerabilityScorer: .* holds a LlamaForCausalLM"):
        AnswerabilityScorer(tiny_causal_lm_path)
    with pytest.raises(FileNotFoundError, match="AnswerabilityScorer: .*config.json' is a file"):
        AnswerabilityScorer(f"{tiny_causal_lm_path}/config.json")
