"""An answerable question at probability 1.0 under a refusal cap: a threshold is still chosen.

Every threshold in [0, 1] refuses a probability of 1.0 (refuse iff p >= threshold), so
when such answerable questions alone exceed ``max_over_refusal`` no candidate met the
cap: ``choose_refusal_threshold`` returned None and ``select_refusal_policy`` failed with
an AttributeError. The least-refusing candidates now compete instead.
"""

from llama_index_ragtune.evaluation.refusal_calibration import choose_refusal_threshold
from llama_index_ragtune.llms.refusal_selection import select_refusal_policy


def test_the_least_refusing_thresholds_compete_when_none_meets_the_cap():
    # answerable at 1.0, 0.2, 0.1; unanswerable at 0.9: "refuse none" (1.0) still refuses 1 of 3
    choice = choose_refusal_threshold(
        [1.0, 0.2, 0.9, 0.1], [True, True, False, True], max_over_refusal=0.1
    )
    assert choice is not None
    assert choice.threshold == 0.55  # refuses the unanswerable one and no other answerable
    assert abs(choice.over_refusal_rate - 1 / 3) < 1e-9


def test_the_cap_still_binds_when_it_can_be_met():
    choice = choose_refusal_threshold(
        [0.8, 0.2, 0.9, 0.1, 0.3], [True, True, False, True, True], max_over_refusal=0.1
    )
    assert choice.over_refusal_rate == 0.0 and abs(choice.threshold - 0.85) < 1e-9


def test_select_refusal_policy_chooses_with_a_certain_answerable_question():
    answerable = [True, False] * 6
    decoder = [1.0 if i == 0 else (0.7 if not a else 0.2) for i, a in enumerate(answerable)]
    selection = select_refusal_policy(
        answerable, decoder_probabilities=decoder, max_over_refusal=0.1
    )
    assert selection.to_dict()["name"] in {"none", "decoder"}
    assert (
        selection.to_dict()["cross_validated"]["decoder"] > 0.5
    )  # the decoder still separates the rest
