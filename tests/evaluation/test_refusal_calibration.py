"""Refusal calibration: AUC of the refusal probability and the threshold chosen on dev questions."""

import random

import pytest

from llama_index_ragtune.evaluation import choose_refusal_threshold, refusal_auc
from llama_index_ragtune.evaluation.refusal_calibration import decision_scores
from llama_index_ragtune.llms.refusal_policy import DecoderRefusalPolicy


def test_refusal_auc_ranks_unanswerable_above_answerable():
    assert refusal_auc([0.9, 0.2, 0.6], [False, True, True]) == 1.0
    assert refusal_auc([0.1, 0.8], [False, True]) == 0.0
    # 2 unanswerable x 2 answerable pairs: win, tie (1/2), loss, win -> 2.5 / 4
    assert refusal_auc([0.7, 0.3, 0.3, 0.5], [False, False, True, True]) == pytest.approx(0.625)
    assert refusal_auc([0.5, 0.4], [True, True]) is None
    with pytest.raises(ValueError, match="2 probabilities for 3"):
        refusal_auc([0.1, 0.2], [True, False, True])


def test_threshold_separates_perfectly_ranked_questions():
    choice = choose_refusal_threshold([0.9, 0.7, 0.6, 0.2], [False, False, True, True])
    assert choice.threshold == pytest.approx(0.65)
    assert choice.refusal_f1 == choice.answer_f1 == choice.score == 1.0
    assert choice.over_refusal_rate == 0.0 and choice.n_examples == 4


def test_threshold_follows_the_ranking_not_the_scale():
    """DPO can lift every refusal probability above 0.5: the cut moves with them."""
    low = [0.30, 0.20, 0.10, 0.05, 0.02]
    answerable = [False, False, True, True, True]
    shifted = [0.5 + p for p in low]
    assert choose_refusal_threshold(low, answerable).threshold == pytest.approx(0.15)
    assert choose_refusal_threshold(shifted, answerable).threshold == pytest.approx(0.65)


@pytest.mark.parametrize("objective", ["balanced_accuracy", "macro_f1"])
def test_balanced_objectives_do_not_reward_refusing_everything(objective):
    rng = random.Random(0)
    answerable = [i % 4 == 0 for i in range(200)]  # 75% unanswerable
    # Uninformative probabilities: refusing everything maximises the refusal F1 alone.
    probabilities = [rng.random() for _ in answerable]
    everything = choose_refusal_threshold(probabilities, answerable, objective="refusal_f1")
    assert everything.over_refusal_rate >= 0.9 and everything.refusal_f1 >= 6 / 7
    balanced = choose_refusal_threshold(probabilities, answerable, objective=objective)
    assert (
        balanced.objective == objective
        and balanced.over_refusal_rate < 0.8
        and balanced.answer_f1 > 2 * everything.answer_f1
    )


@pytest.mark.parametrize("objective", ["balanced_accuracy", "macro_f1"])
def test_threshold_matches_a_brute_force_search(objective):
    rng = random.Random(1)
    for _ in range(20):
        answerable = [rng.random() < 0.4 for _ in range(30)]
        answerable[0], answerable[1] = True, False
        probabilities = [round(rng.random(), 2) for _ in answerable]  # with ties
        choice = choose_refusal_threshold(probabilities, answerable, objective=objective)

        pairs = list(zip(probabilities, answerable, strict=True))

        def f1(tp, fp, fn):
            return 2 * tp / (2 * tp + fp + fn) if tp else 0.0

        def macro(t, pairs=pairs):
            tp = sum(p >= t and not a for p, a in pairs)  # refused, should refuse
            fp = sum(p >= t and a for p, a in pairs)
            fn = sum(p < t and not a for p, a in pairs)
            tn = sum(p < t and a for p, a in pairs)
            if objective == "balanced_accuracy":
                return (tp / (tp + fn) + tn / (tn + fp)) / 2
            return (f1(tp, fp, fn) + f1(tn, fn, fp)) / 2

        best = max(macro(t / 1000) for t in range(0, 1001))
        assert choice.score == pytest.approx(best)
        assert macro(choice.threshold) == pytest.approx(choice.score)


@pytest.mark.parametrize("cap", [0.0, 0.1, 0.25, 0.5])
def test_a_capped_threshold_is_the_best_one_within_the_cap(cap):
    rng = random.Random(11)
    answerable = [rng.random() < 0.7 for _ in range(60)]
    probabilities = [rng.random() * (0.7 if a else 1.0) for a in answerable]
    choice = choose_refusal_threshold(probabilities, answerable, max_over_refusal=cap)
    assert choice.over_refusal_rate <= cap
    # brute force over every distinct cut: nothing within the cap scores better
    for t in sorted(set(probabilities)) + [1.01]:
        refused = [p >= t for p in probabilities]
        scores = decision_scores(refused, answerable)
        if scores["over_refusal_rate"] <= cap:
            assert scores["balanced_accuracy"] <= choice.score + 1e-12
    uncapped = choose_refusal_threshold(probabilities, answerable)
    assert uncapped.score >= choice.score


def test_threshold_needs_both_kinds_of_question():
    with pytest.raises(ValueError, match="0 answerable and 2 unanswerable"):
        choose_refusal_threshold([0.1, 0.2], [False, False])
    with pytest.raises(ValueError, match="objective"):
        choose_refusal_threshold([0.1, 0.2], [False, True], objective="accuracy")
    with pytest.raises(ValueError, match="1 probabilities for 2"):
        choose_refusal_threshold([0.1], [False, True])


def test_refusal_combination_learns_which_signal_separates():
    from llama_index_ragtune.evaluation import RefusalCombination, fit_refusal_combination

    rng = random.Random(1)
    answerable = [i % 2 == 0 for i in range(200)]
    # "informative" separates the classes, "noise" does not
    informative = [rng.uniform(0.0, 0.45) if a else rng.uniform(0.55, 1.0) for a in answerable]
    noise = [rng.random() for _ in answerable]
    combo = fit_refusal_combination({"noise": noise, "informative": informative}, answerable)
    assert combo.signals == ("noise", "informative")
    assert abs(combo.weights[1]) > 5 * abs(combo.weights[0]) and combo.weights[1] > 0
    combined = [
        combo.probability({"noise": n, "informative": i})
        for n, i in zip(noise, informative, strict=True)
    ]
    assert refusal_auc(combined, answerable) == 1.0
    assert RefusalCombination.from_dict(combo.to_dict()) == combo


def test_a_signal_that_points_the_wrong_way_gets_no_weight():
    """Signals are oriented "higher = refuse": a fit that would invert one drops it instead."""
    from llama_index_ragtune.evaluation import fit_refusal_combination

    rng = random.Random(3)
    answerable = [i % 3 != 0 for i in range(90)]
    informative = [rng.uniform(0.0, 0.5) if a else rng.uniform(0.4, 1.0) for a in answerable]
    inverted = [rng.uniform(0.5, 1.0) if a else rng.uniform(0.0, 0.6) for a in answerable]
    signals = {"inverted": inverted, "informative": informative}
    free = fit_refusal_combination(signals, answerable, monotone=False)
    assert free.weights[0] < 0  # unconstrained, the fit leans on the inverted signal
    combo = fit_refusal_combination(signals, answerable)
    assert combo.weights[0] == 0.0 and combo.weights[1] > 0
    alone = fit_refusal_combination({"informative": informative}, answerable)
    assert combo.weights[1] == pytest.approx(alone.weights[0])
    assert combo.intercept == pytest.approx(alone.intercept)


def test_refusal_combination_checks_its_input():
    from llama_index_ragtune.evaluation import fit_refusal_combination

    with pytest.raises(ValueError, match="both answerable and unanswerable"):
        fit_refusal_combination({"a": [0.1, 0.2]}, [True, True])
    with pytest.raises(ValueError, match="signal 'a' has 1 values for 2"):
        fit_refusal_combination({"a": [0.1]}, [True, False])
    with pytest.raises(ValueError, match="at least one signal"):
        fit_refusal_combination({}, [True, False])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1, 1.7])
def test_probabilities_that_are_not_probabilities_are_named(bad):
    # a NaN compared false with every threshold: the search silently picked one
    values = [0.9, 0.8, bad, 0.2]
    labels = [False, False, True, True]
    with pytest.raises(ValueError, match="probability 2 is .* not a number in"):
        choose_refusal_threshold(values, labels)
    with pytest.raises(ValueError, match="probability 2 is"):
        refusal_auc(values, labels)
    with pytest.raises(ValueError, match="probability 2 is"):
        DecoderRefusalPolicy.fit(values, labels)
