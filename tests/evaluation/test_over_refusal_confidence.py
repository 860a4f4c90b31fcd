"""``over_refusal_confidence``: a refusal cap that holds on new questions, not only on the dev ones."""

from __future__ import annotations

import math
import random

import pytest

from llama_index_ragtune.evaluation.refusal_calibration import (
    allowed_over_refusal,
    choose_refusal_threshold,
)
from llama_index_ragtune.llms.answerability import SimilarityAnswerabilityScorer
from llama_index_ragtune.llms.refusal_selection import select_refusal_policy
from llama_index_ragtune.pipeline.config import PipelineConfig


def _binomial_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def _clopper_pearson_upper(k: int, n: int, confidence: float) -> float:
    """One-sided upper bound by bisection on the binomial CDF (independent of the library)."""
    low, high = k / n, 1.0
    for _ in range(100):
        mid = (low + high) / 2
        if _binomial_cdf(k, n, mid) > 1 - confidence:
            low = mid
        else:
            high = mid
    return high


@pytest.mark.parametrize("n", [1, 5, 22, 37, 60, 150, 400])
@pytest.mark.parametrize("cap", [0.05, 0.1, 0.3])
@pytest.mark.parametrize("confidence", [0.8, 0.95])
def test_allowed_share_is_the_largest_count_whose_upper_bound_is_within_the_cap(n, cap, confidence):
    k = round(allowed_over_refusal(n, cap, confidence) * n)
    if k > 0 or _clopper_pearson_upper(0, n, confidence) <= cap:
        assert _clopper_pearson_upper(k, n, confidence) <= cap + 1e-9
    if k + 1 < n:
        assert _clopper_pearson_upper(k + 1, n, confidence) > cap - 1e-9


def test_documented_values():
    assert allowed_over_refusal(37, 0.1, 0.95) == 0.0  # 1 of 37 could be 12 % of new ones
    assert 0.11 < _clopper_pearson_upper(1, 37, 0.95) < 0.13
    assert allowed_over_refusal(1000, 0.1, 0.95) == pytest.approx(0.084)
    assert allowed_over_refusal(0, 0.1, 0.95) == 0.1  # no answerable question: nothing to refuse
    assert allowed_over_refusal(50, 1.0, 0.95) == 1.0
    assert allowed_over_refusal(50, 0.0, 0.95) == 0.0


def _signal(seed: int, n: int = 200) -> tuple[list[float], list[bool]]:
    rng = random.Random(seed)
    answerable = [rng.random() < 0.75 for _ in range(n)]
    values = [rng.gauss(0.35 if a else 0.6, 0.15) for a in answerable]
    return [min(1.0, max(0.0, v)) for v in values], answerable


def test_threshold_refuses_at_most_the_allowed_count_and_none_keeps_the_old_choice():
    for seed in range(20):
        values, answerable = _signal(seed)
        n = sum(answerable)
        plain = choose_refusal_threshold(values, answerable, max_over_refusal=0.1)
        same = choose_refusal_threshold(
            values, answerable, max_over_refusal=0.1, over_refusal_confidence=None
        )
        assert same == plain
        bounded = choose_refusal_threshold(
            values, answerable, max_over_refusal=0.1, over_refusal_confidence=0.95
        )
        refused = sum(v >= bounded.threshold for v, a in zip(values, answerable, strict=True) if a)
        assert refused <= round(allowed_over_refusal(n, 0.1, 0.95) * n)
        assert bounded.threshold >= plain.threshold  # never refuses more than the plain cap
        # without a cap the confidence changes nothing
        assert choose_refusal_threshold(
            values, answerable, over_refusal_confidence=0.95
        ) == choose_refusal_threshold(values, answerable)


def test_the_cap_holds_on_new_questions_more_often_with_the_bound():
    """What the benchmark measures, in miniature: fit on 60 questions, count how often the
    cap is broken on 2,000 new ones drawn the same way."""
    broken = {None: 0, 0.95: 0}
    for seed in range(40):
        values, answerable = _signal(seed, 60)
        new_values, new_answerable = _signal(1000 + seed, 2000)
        for confidence in broken:
            t = choose_refusal_threshold(
                values, answerable, max_over_refusal=0.1, over_refusal_confidence=confidence
            ).threshold
            answered = [v >= t for v, a in zip(new_values, new_answerable, strict=True) if a]
            broken[confidence] += sum(answered) / len(answered) > 0.1
    assert broken[0.95] <= 2 < broken[None]


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, math.nan, True, "0.95"])
def test_bad_confidence_is_named(bad):
    with pytest.raises(ValueError, match="choose_refusal_threshold: over_refusal_confidence"):
        choose_refusal_threshold([0.1, 0.9], [True, False], 0.1 and "balanced_accuracy",
                                 max_over_refusal=0.1, over_refusal_confidence=bad)  # fmt: skip
    with pytest.raises(ValueError, match="select_refusal_policy: over_refusal_confidence"):
        select_refusal_policy([True, True, False, False], [0.1, 0.2, 0.8, 0.9],
                              over_refusal_confidence=bad)  # fmt: skip
    with pytest.raises(ValueError, match="PipelineConfig: over_refusal_confidence"):
        PipelineConfig(over_refusal_confidence=bad)


def test_selection_records_and_applies_the_confidence():
    values, answerable = _signal(3, 80)
    selection = select_refusal_policy(
        answerable,
        answerability=[1.0 - v for v in values],  # P(answerable)
        scorer=SimilarityAnswerabilityScorer(object()),
        max_over_refusal=0.1,
        over_refusal_confidence=0.95,
    )
    record = selection.to_dict()
    assert record["over_refusal_confidence"] == 0.95 and record["max_over_refusal"] == 0.1
    assert selection.name == "answerability"  # the signal separates the two classes well
    n = sum(answerable)
    refused = sum(
        v >= selection.policy.threshold for v, a in zip(values, answerable, strict=True) if a
    )
    assert refused <= round(allowed_over_refusal(n, 0.1, 0.95) * n)
    unbounded = select_refusal_policy(
        answerable,
        answerability=[1.0 - v for v in values],
        scorer=SimilarityAnswerabilityScorer(object()),
        max_over_refusal=0.1,
    )
    assert unbounded.to_dict()["over_refusal_confidence"] is None
    assert selection.policy.threshold >= unbounded.policy.threshold


def test_demo_holds_its_cap_on_new_questions_and_old_runs_keep_their_fingerprint():
    assert PipelineConfig.demo().over_refusal_confidence == 0.95
    config = PipelineConfig()
    assert config.over_refusal_confidence is None
    data = config.to_dict()
    assert "over_refusal_confidence" not in data or data["over_refusal_confidence"] is None
    # a run recorded before the setting existed resumes under the same fingerprint
    from llama_index_ragtune.pipeline.config import first_changed_step

    old = {k: v for k, v in data.items() if k != "over_refusal_confidence"}
    assert first_changed_step(old, data) == (None, [])
    demo = PipelineConfig.demo().to_dict()
    assert first_changed_step({**demo, "over_refusal_confidence": None}, demo)[0] == "evaluate"
