"""Refusal policies: decisions from the decoder, the encoder side, or both, explained per answer."""

from __future__ import annotations

import json

import pytest
import torch

from llama_index_ragtune.grounding import build_messages
from llama_index_ragtune.llms import LocalChatLLM
from llama_index_ragtune.llms.refusal_policy import (
    AnswerabilityRefusalPolicy,
    CombinedRefusalPolicy,
    DecoderRefusalPolicy,
    RefusalDecision,
)
from llama_index_ragtune.llms.refusal_policy_records import load_refusal_policy

ROME = build_messages("What is the capital of Italy?", ["Rome is the capital of Italy.", "Milan."])
MARS = build_messages("What is the capital of Mars?", ["Paris is in France.", "Milan."])


def keyword_scorer(questions, sources):
    """A transparent answerability scorer: the question's last word appears in a source."""
    out = []
    for question, texts in zip(questions, sources, strict=True):
        key = question.rstrip("?").split()[-1].lower()
        out.append(0.9 if any(key in t.lower() for t in texts) else 0.1)
    return out


@pytest.fixture(scope="module")
def tiny_llm(tiny_causal_lm_path) -> LocalChatLLM:
    return LocalChatLLM(tiny_causal_lm_path, max_new_tokens=6, device="cpu")


def test_answerability_policy_refuses_and_explains(tiny_llm):
    tiny_llm.refusal_policy = AnswerabilityRefusalPolicy(keyword_scorer, threshold=0.5)
    try:
        answered, refused = tiny_llm.generate_batch([ROME, MARS], batch_size=2)
    finally:
        tiny_llm.refusal_policy = None
    assert refused.message.content == tiny_llm.refusal
    assert not answered.message.content.startswith(tiny_llm.refusal)
    decision = refused.raw["refusal_decision"]
    assert decision["refused"] and decision["signal"] == "answerability"
    assert decision["value"] == pytest.approx(0.9) and decision["threshold"] == 0.5
    assert decision["explanation"].startswith("refused: encoder P(no source holds the answer) 0.9")
    assert answered.raw["refusal_decision"]["refused"] is False
    assert "refusal_probability" not in answered.raw  # no decoder pass was needed


def test_decoder_policy_equals_the_threshold(tiny_causal_lm_path, tiny_llm):
    by_threshold = LocalChatLLM(tiny_causal_lm_path, max_new_tokens=6, refusal_threshold=0.0)
    by_policy = LocalChatLLM(
        tiny_causal_lm_path, max_new_tokens=6, refusal_policy=DecoderRefusalPolicy(0.0)
    )
    a, b = by_threshold.chat(ROME), by_policy.chat(ROME)
    assert a.message.content == b.message.content == by_policy.refusal
    assert a.raw["refusal_probability"] == pytest.approx(b.raw["refusal_probability"])
    assert b.raw["refusal_decision"]["signal"] == "decoder"
    # streaming and async follow the same decision
    assert list(by_policy.stream_chat(ROME))[-1].raw["refusal_decision"]["refused"] is True


def test_caller_decision_overrides_the_policy(tiny_causal_lm_path):
    llm = LocalChatLLM(tiny_causal_lm_path, max_new_tokens=6, refusal_threshold=0.0)
    forced = llm.generate_batch([ROME, MARS], refuse=[False, True], batch_size=2)
    assert not forced[0].message.content.startswith(llm.refusal)
    assert forced[1].message.content == llm.refusal
    assert "refusal_decision" not in forced[0].raw  # the caller decided
    assert llm.chat(ROME, refuse=False).message.content == forced[0].message.content
    with pytest.raises(ValueError, match="refuse flags"):
        llm.generate_batch([ROME], refuse=[True, False])


def test_combined_policy_is_fitted_and_applied(tiny_llm):
    decoder = [0.8, 0.7, 0.3, 0.1, 0.6, 0.2]
    answerability = [0.2, 0.3, 0.8, 0.9, 0.1, 0.6]
    answerable = [False, False, True, True, False, True]
    policy = CombinedRefusalPolicy.fit(keyword_scorer, decoder, answerability, answerable)
    assert policy.calibration["auc"] == 1.0  # both signals agree: perfect separation
    assert set(policy.combination.signals) == {"decoder", "answerability"}
    decisions = policy.decide(
        ["What is the capital of Italy?", "What is the capital of Mars?"],
        [["Rome is the capital of Italy."], ["Paris."]],
        decoder_probabilities=[0.2, 0.7],
    )
    assert [d.refused for d in decisions] == [False, True]
    assert set(decisions[1].signals) == {"decoder", "answerability", "combined"}
    tiny_llm.refusal_policy = policy
    try:
        responses = tiny_llm.generate_batch([ROME, MARS], batch_size=2)
    finally:
        tiny_llm.refusal_policy = None
    for response in responses:  # the decoder's probability is computed and reported
        signals = response.raw["refusal_decision"]["signals"]
        assert signals["decoder"] == pytest.approx(response.raw["refusal_probability"])


def test_policies_round_trip_through_json(tmp_path):
    decoder = [0.9, 0.6, 0.4, 0.1]
    answerability = [0.1, 0.4, 0.7, 0.8]
    answerable = [False, False, True, True]
    policy = CombinedRefusalPolicy.fit(keyword_scorer, decoder, answerability, answerable)
    path = policy.save(tmp_path / "policy.json")
    assert json.loads(path.read_text())["type"] == "CombinedRefusalPolicy"
    loaded = load_refusal_policy(path, scorer=keyword_scorer)
    questions, sources = ["Capital of Italy?"], [["Italy: Rome."]]
    assert (
        loaded.decide(questions, sources, [0.5])[0] == policy.decide(questions, sources, [0.5])[0]
    )
    plain = load_refusal_policy(DecoderRefusalPolicy.fit(decoder, answerable).to_dict())
    assert isinstance(plain, DecoderRefusalPolicy) and plain.calibration["auc"] == 1.0
    with pytest.raises(ValueError, match="records no scorer"):
        load_refusal_policy(policy.to_dict())
    with pytest.raises(ValueError, match="unknown policy type"):
        load_refusal_policy({"type": "Magic", "threshold": 0.5})
    with pytest.raises(FileNotFoundError, match="no policy file"):
        load_refusal_policy(tmp_path / "missing.json")


def test_saved_record_functions_keep_their_old_import_path():
    from llama_index_ragtune.llms import load_refusal_policy as exported
    from llama_index_ragtune.llms import refusal_policy, refusal_policy_records
    from llama_index_ragtune.llms.refusal_policy import check_policy_record

    assert refusal_policy.load_refusal_policy is load_refusal_policy is exported
    assert check_policy_record is refusal_policy_records.check_policy_record
    with pytest.raises(AttributeError, match="no_such_name"):
        refusal_policy.no_such_name  # noqa: B018


def test_bad_policy_use_is_a_clear_error(tiny_causal_lm_path, tiny_llm):
    with pytest.raises(ValueError, match="not both"):
        LocalChatLLM(
            tiny_causal_lm_path, refusal_threshold=0.5, refusal_policy=DecoderRefusalPolicy(0.5)
        )
    with pytest.raises(TypeError, match="RefusalPolicy"):
        LocalChatLLM(tiny_causal_lm_path, refusal_policy="combined")
    with pytest.raises(ValueError, match="threshold must be in"):
        DecoderRefusalPolicy(1.5)
    with pytest.raises(ValueError, match="decoder_probabilities"):
        DecoderRefusalPolicy(0.5).decide(["q"], [["s"]])
    tiny_llm.refusal_policy = AnswerabilityRefusalPolicy(keyword_scorer, threshold=0.5)
    try:
        with pytest.raises(ValueError, match="needs grounded prompts"):
            tiny_llm.chat([{"role": "user", "content": "Hi"}])
    finally:
        tiny_llm.refusal_policy = None


def test_decision_explains_itself():
    kept = RefusalDecision(False, "combined", 0.31, 0.5, {"decoder": 0.2, "combined": 0.31})
    assert kept.explanation == (
        "answered: combined P(unanswerable) 0.31 < threshold 0.5 (decoder P(refusal) 0.2)"
    )
    assert kept.to_dict()["explanation"] == kept.explanation


def test_citation_probabilities_are_the_teacher_forced_choice(tiny_llm):
    probabilities = tiny_llm.citation_probabilities(ROME, "Rome", n_sources=3)
    assert len(probabilities) == 3 and sum(probabilities) == pytest.approx(1.0)
    prompt = tiny_llm.encode(ROME)
    tokenizer = tiny_llm.tokenizer
    scores = []
    for n in (1, 2, 3):  # unbatched, unpadded: log P(whole " [n]" continuation)
        ids = tokenizer(f"Rome [{n}]", add_special_tokens=False)["input_ids"]
        full = torch.tensor([prompt + ids])
        with torch.no_grad():
            logits = tiny_llm.hf_model(input_ids=full).logits[0].float()
        logprobs = torch.log_softmax(logits[len(prompt) - 1 : -1], -1)
        scores.append(float(logprobs.gather(1, torch.tensor(ids)[:, None]).sum()))
    expected = torch.softmax(torch.tensor(scores), 0).tolist()  # the shared prefix cancels
    assert probabilities == pytest.approx(expected, rel=1e-3)
    assert tiny_llm.citation_probabilities(ROME, "Rome", n_sources=1) == [1.0]
    with pytest.raises(ValueError, match="n_sources"):
        tiny_llm.citation_probabilities(ROME, "Rome", n_sources=0)
