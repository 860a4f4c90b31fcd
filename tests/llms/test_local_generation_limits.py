"""``LocalChatLLM``'s answer budget against its context window: ``max_new_tokens`` past what
the window leaves after the prompt is clamped per call (and reported), a prompt that fills
the window is a clear error, and a budget that leaves no room for any prompt is refused
when the LLM is built."""

from __future__ import annotations

import pytest
from transformers import LogitsProcessorList

from llama_index_ragtune.grounding import build_messages
from llama_index_ragtune.llms import LocalChatLLM
from tests.llms.test_local_llm_hostile_round2 import Force, served, tiny_llama

SHORT = build_messages("Which colour?", ["The sky is blue."])
LONG = build_messages("Which colour?", ["The sky is blue. " * 20])


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_causal_lm_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm_path)
    return tiny_llama(tokenizer), tokenizer


@pytest.fixture(scope="module")
def endless(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    word = tokenizer.encode(" the", add_special_tokens=False)[-1]
    return LogitsProcessorList([Force(word)])  # never ends the turn


def windowed(model_and_tokenizer, window: int, max_new: int) -> LocalChatLLM:
    model, tokenizer = model_and_tokenizer
    return served(model, tokenizer, context_window=window, max_new_tokens=max_new)


def test_max_new_tokens_past_the_window_is_clamped_per_call(model_and_tokenizer, endless):
    # was: ValueError "Prompt of N tokens + max_new_tokens=40 exceeds the context window"
    probe = windowed(model_and_tokenizer, 512, 40)
    n_long = len(probe.encode(LONG))
    llm = windowed(model_and_tokenizer, n_long + 10, 40)
    left = 10
    answers = {
        "chat": llm.chat(LONG, logits_processor=endless),
        "stream": list(llm.stream_chat(LONG, logits_processor=endless))[-1],
    }
    for name, response in answers.items():
        assert response.raw["max_new_tokens"] == left, name
        assert response.raw["usage"]["completion_tokens"] == left, name
        assert response.raw["usage"]["total_tokens"] == llm.context_window, name
        assert response.raw["finish_reason"] == "length", name  # cut, and said so
    # a batch clamps only the prompt that needs it: the short one keeps its whole budget
    short, long = llm.generate_batch([SHORT, LONG], batch_size=2, logits_processor=endless)
    assert long.raw["max_new_tokens"] == left and long.raw["usage"]["completion_tokens"] == left
    assert short.raw["max_new_tokens"] == 40 and short.raw["usage"]["completion_tokens"] == 40
    assert long.message.content == answers["chat"].message.content


def test_a_per_call_budget_is_clamped_too_and_a_small_one_kept(model_and_tokenizer, endless):
    llm = windowed(model_and_tokenizer, 512, 8)
    n_short = len(llm.encode(SHORT))
    wide = llm.chat(SHORT, max_new_tokens=10_000, logits_processor=endless)
    assert wide.raw["max_new_tokens"] == 512 - n_short
    small = llm.chat(SHORT, max_new_tokens=3, logits_processor=endless)
    assert small.raw["max_new_tokens"] == 3 and small.raw["usage"]["completion_tokens"] == 3


def test_a_prompt_that_fills_the_window_is_a_clear_error(model_and_tokenizer):
    probe = windowed(model_and_tokenizer, 512, 4)
    n_long = len(probe.encode(LONG))
    llm = windowed(model_and_tokenizer, n_long, 4)
    with pytest.raises(ValueError, match=rf"Prompt of {n_long} tokens .* leaves no room"):
        llm.chat(LONG)
    with pytest.raises(ValueError, match="leaves no room"):
        list(llm.stream_chat(LONG))
    with pytest.raises(ValueError, match="generate_batch: conversation 1: Prompt of"):
        llm.generate_batch([SHORT, LONG])


def test_a_budget_of_the_whole_window_is_refused_when_built(model_and_tokenizer):
    with pytest.raises(ValueError, match="max_new_tokens=64 leaves no room for a prompt"):
        windowed(model_and_tokenizer, 64, 64)
    assert windowed(model_and_tokenizer, 64, 63).metadata.num_output == 63
