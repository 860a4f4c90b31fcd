"""Cross-validated choice of the refusal policy, and the embedder's answerability signal."""

from __future__ import annotations

import logging
import random

import pytest

from llama_index_ragtune.evaluation.refusal_calibration import decision_scores
from llama_index_ragtune.llms.answerability import SimilarityAnswerabilityScorer
from llama_index_ragtune.llms.refusal_policy import (
    AnswerabilityRefusalPolicy,
    CombinedRefusalPolicy,
    DecoderRefusalPolicy,
    NoRefusalPolicy,
)
from llama_index_ragtune.llms.refusal_policy_records import load_refusal_policy
from llama_index_ragtune.llms.refusal_selection import select_refusal_policy


def _labels(n_answerable: int, n_unanswerable: int) -> list[bool]:
    return [True] * n_answerable + [False] * n_unanswerable


class TableScorer:
    """P(answerable) looked up per question (stands in for a model in the selection)."""

    def __init__(self, table):
        self.table = table

    def __call__(self, questions, sources):
        return [self.table[q] for q in questions]


def test_decision_scores_counts_both_classes():
    scores = decision_scores([True, True, False, False], [False, True, True, False])
    assert scores["refusal_f1"] == pytest.approx(0.5) and scores["answer_f1"] == pytest.approx(0.5)
    assert scores["over_refusal_rate"] == pytest.approx(0.5)
    assert scores["balanced_accuracy"] == pytest.approx(0.5)
    never = decision_scores([False] * 4, [True, True, True, False])
    assert never["refusal_f1"] == 0.0 and never["answer_f1"] == pytest.approx(6 / 7)
    always = decision_scores([True] * 4, [True, True, True, False])
    assert never["balanced_accuracy"] == always["balanced_accuracy"] == pytest.approx(0.5)
    assert decision_scores([True, False], [False, True])["balanced_accuracy"] == 1.0
    with pytest.raises(ValueError, match="3 decisions for 2"):
        decision_scores([True] * 3, [True, False])


def test_a_signal_that_cannot_separate_forces_no_refusal():
    """A constant signal finds no threshold that beats answering everything out of fold."""
    labels = _labels(24, 8)
    selection = select_refusal_policy(labels, decoder_probabilities=[0.3] * len(labels))
    assert selection.name == "none" and isinstance(selection.policy, NoRefusalPolicy)
    assert not selection.policy.decide(["q"], [["s"]])[0].refused
    assert selection.scores["none"] >= selection.scores["decoder"]
    assert selection.to_dict()["threshold"] is None


def test_noise_is_not_rewarded_over_answering_everything():
    """Uniform noise: a threshold fitted on the same dev questions looks better than answering
    everything there, but not out of fold (the optimism the selection exists to remove)."""
    from llama_index_ragtune.evaluation.refusal_calibration import choose_refusal_threshold

    rng = random.Random(7)
    labels = _labels(160, 40)
    rng.shuffle(labels)
    noise = [rng.random() for _ in labels]
    in_sample = choose_refusal_threshold(noise, labels).score
    selection = select_refusal_policy(labels, decoder_probabilities=noise)
    assert in_sample > selection.scores["decoder"]
    assert selection.scores["decoder"] < selection.scores["none"] + 0.05


def test_a_weak_signal_on_a_mostly_unanswerable_dev_set_does_not_refuse_most_questions():
    """62 % of the dev questions should be refused and the signal barely ranks them (AUC ~0.55):
    macro F1 prefers a threshold that refuses nearly everything over answering everything;
    balanced accuracy does not, because it does not move with the share of unanswerable questions.
    """
    rng = random.Random(3)
    labels = _labels(50, 82)
    rng.shuffle(labels)
    weak = [min(1.0, rng.random() + (0.0 if a else 0.08)) for a in labels]
    by_macro = select_refusal_policy(labels, decoder_probabilities=weak, objective="macro_f1")
    assert by_macro.name == "decoder" and by_macro.scores["none"] < 0.3
    assert by_macro.details["decoder"]["over_refusal_rate"] > 0.6
    balanced = select_refusal_policy(labels, decoder_probabilities=weak)
    assert balanced.objective == "balanced_accuracy" and balanced.scores["none"] == 0.5
    chosen = balanced.details[balanced.name]
    assert chosen["over_refusal_rate"] < by_macro.details["decoder"]["over_refusal_rate"]
    assert balanced.to_dict()["objective"] == "balanced_accuracy"
    with pytest.raises(ValueError, match="objective must be one of"):
        select_refusal_policy(labels, decoder_probabilities=weak, objective="accuracy")


def test_a_separating_decoder_wins_and_is_refitted_on_every_question():
    labels = _labels(20, 10)
    probabilities = [0.1 + 0.01 * i if a else 0.7 + 0.01 * i for i, a in enumerate(labels)]
    selection = select_refusal_policy(labels, decoder_probabilities=probabilities, folds=5)
    assert selection.name == "decoder" and isinstance(selection.policy, DecoderRefusalPolicy)
    assert selection.scores["decoder"] == pytest.approx(1.0) and selection.folds == 5
    refused = [d.refused for d in selection.policy.decide(["q"] * 30, [[]] * 30, probabilities)]
    assert refused == [not a for a in labels]
    assert selection.policy.calibration["n_examples"] == 30


def test_the_encoder_signal_wins_when_only_it_separates_and_ties_go_to_the_simpler():
    labels = _labels(20, 10)
    rng = random.Random(0)
    questions = [f"q{i}" for i in range(30)]
    table = {q: (0.9 if a else 0.2) for q, a in zip(questions, labels, strict=True)}
    scorer = TableScorer(table)
    selection = select_refusal_policy(
        labels,
        decoder_probabilities=[rng.random() for _ in labels],
        answerability=[table[q] for q in questions],
        scorer=scorer,
    )
    assert set(selection.scores) == {"none", "decoder", "answerability", "combined"}
    # the combination separates as well as the encoder alone: the simpler policy is kept
    assert selection.name == "answerability"
    assert isinstance(selection.policy, AnswerabilityRefusalPolicy)
    decisions = selection.policy.decide(questions, [["s"]] * 30)
    assert [d.refused for d in decisions] == [not a for a in labels]


def test_combined_is_chosen_when_both_signals_are_needed():
    """Unanswerable questions are caught by one signal or the other, never both alone."""
    labels = _labels(20, 12)
    decoder = [0.2] * 20 + [0.9] * 6 + [0.2] * 6
    answerability = [0.9] * 20 + [0.9] * 6 + [0.1] * 6
    questions = [f"q{i}" for i in range(32)]
    scorer = TableScorer(dict(zip(questions, answerability, strict=True)))
    selection = select_refusal_policy(
        labels, decoder_probabilities=decoder, answerability=answerability, scorer=scorer
    )
    assert selection.name == "combined" and isinstance(selection.policy, CombinedRefusalPolicy)
    assert selection.scores["combined"] > max(
        selection.scores["decoder"], selection.scores["answerability"]
    )


def test_an_over_refusal_cap_keeps_most_answerable_questions_answered():
    """A signal that catches most unanswerable questions only by refusing a quarter of the
    answerable ones: uncapped, balanced accuracy takes that trade; with a 10 % cap every
    threshold (per fold and in the final fit) refuses at most that share of them."""
    # 45 answerable questions score low; 15 answerable and all 20 unanswerable ones score
    # high, interleaved: refusing all high scorers is the best balanced accuracy (0.875)
    low = [0.01 * i for i in range(45)]
    high = [0.6 + 0.01 * i for i in range(35)]
    labels = [True] * 45 + [i % 7 in (0, 3, 5) for i in range(35)]
    signal = low + high
    assert labels.count(False) == 20
    free = select_refusal_policy(labels, decoder_probabilities=signal)
    capped = select_refusal_policy(labels, decoder_probabilities=signal, max_over_refusal=0.1)
    assert free.name == capped.name == "decoder"
    assert free.policy.calibration["over_refusal_rate"] > 0.2
    assert capped.policy.calibration["over_refusal_rate"] <= 0.1
    assert (
        capped.details["decoder"]["over_refusal_rate"]
        < free.details["decoder"]["over_refusal_rate"]
    )
    assert (
        capped.to_dict()["max_over_refusal"] == 0.1 and free.to_dict()["max_over_refusal"] is None
    )
    # a cap of 0 leaves only "refuse none" for every threshold: nothing beats answering
    never = select_refusal_policy(labels, decoder_probabilities=signal, max_over_refusal=0.0)
    assert never.name == "none"
    with pytest.raises(ValueError, match="max_over_refusal must be None or a share"):
        select_refusal_policy(labels, decoder_probabilities=signal, max_over_refusal=1.5)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="at least two answerable and two unanswerable"):
        select_refusal_policy([True, True, False], decoder_probabilities=[0.1, 0.2, 0.9])
    with pytest.raises(ValueError, match="2 decoder_probabilities for 4"):
        select_refusal_policy(_labels(2, 2), decoder_probabilities=[0.1, 0.2])
    with pytest.raises(ValueError, match="needs the scorer"):
        select_refusal_policy(_labels(2, 2), answerability=[0.1] * 4)


@pytest.fixture(scope="module")
def embed_model():
    from llama_index_ragtune.embeddings import default_embed_model

    return default_embed_model(backend="torch")  # the bundled MiniLM


def test_similarity_scorer_ranks_the_source_that_answers_higher(embed_model):
    scorer = SimilarityAnswerabilityScorer(embed_model)
    answered, unrelated, empty = scorer(
        ["How long do I have to return an opened iPhone?"] * 3,
        [
            ["Opened Apple products can be returned within 14 days with the receipt.", "Bananas."],
            ["Our bakery bakes sourdough every morning."],
            [],
        ],
    )
    assert 0.0 <= unrelated < answered <= 1.0 and empty == 0.0
    with pytest.raises(ValueError, match="2 questions for 1 source lists"):
        scorer(["a", "b"], [["x"]])


def test_similarity_policy_saves_without_a_folder_and_loads_over_an_embedder(embed_model, tmp_path):
    scorer = SimilarityAnswerabilityScorer(embed_model)
    policy = AnswerabilityRefusalPolicy(scorer, threshold=0.4)
    data = policy.to_dict()
    assert data["scorer"] is None and data["scorer_kind"] == "similarity"
    loaded = load_refusal_policy(policy.save(tmp_path / "policy.json"), embed_model=embed_model)
    question, sources = ["Do you sell car tires?"], [["Opened iPhones: 14-day returns."]]
    assert loaded.decide(question, sources)[0] == policy.decide(question, sources)[0]
    assert loaded.scorer.embed_model is embed_model


def test_bundle_policy_reading_the_decoder_is_dropped_for_another_llm(embed_model, caplog):
    from types import SimpleNamespace

    from llama_index_ragtune.pipeline.bundle import _refusal_policy

    retriever = SimpleNamespace(embed_model=embed_model)
    decoder = {"refusal_policy": DecoderRefusalPolicy(0.5).to_dict()}
    with caplog.at_level(logging.WARNING):
        assert _refusal_policy(decoder, retriever, bundled_llm=False) is None
    assert "DecoderRefusalPolicy" in caplog.text
    assert _refusal_policy(decoder, retriever, bundled_llm=True).threshold == 0.5
    similarity = AnswerabilityRefusalPolicy(SimilarityAnswerabilityScorer(embed_model), 0.3)
    kept = _refusal_policy({"refusal_policy": similarity.to_dict()}, retriever, bundled_llm=False)
    assert kept.scorer.embed_model is embed_model
    assert _refusal_policy({"refusal_threshold": 0.4}, retriever, bundled_llm=True) is None


def _small_noisy_dev_set():
    """36 dev questions, 6 unanswerable, two weak signals of about the same strength."""
    rng = random.Random(7)
    labels = _labels(30, 6)
    decoder = [rng.gauss(0.35 if a else 0.5, 0.12) for a in labels]
    answerability = [rng.gauss(0.62 if a else 0.5, 0.12) for a in labels]
    return labels, decoder, answerability


def test_repeated_cross_validation_averages_differently_seeded_splits():
    labels, decoder, answerability = _small_noisy_dev_set()
    scorer = TableScorer({})
    repeated = select_refusal_policy(
        labels, decoder, answerability, scorer=scorer, seed=3, repeats=3
    )
    single = [
        select_refusal_policy(labels, decoder, answerability, scorer=scorer, seed=s)
        for s in (3, 4, 5)
    ]
    for name in ("none", "decoder", "answerability", "combined"):
        runs = [s.scores[name] for s in single]
        assert repeated.scores[name] == pytest.approx(sum(runs) / 3)
        spread = (sum((r - sum(runs) / 3) ** 2 for r in runs) / 3) ** 0.5
        assert repeated.spread[name] == pytest.approx(spread)
        over_refusal = [s.details[name]["over_refusal_rate"] for s in single]
        assert repeated.details[name]["over_refusal_rate"] == pytest.approx(sum(over_refusal) / 3)
    assert repeated.spread["none"] == 0.0
    summary = repeated.to_dict()
    assert summary["repeats"] == 3 and summary["spread"] == repeated.spread
    assert single[0].repeats == 1 and single[0].to_dict()["repeats"] == 1


def test_repeats_steady_the_choice_on_a_small_dev_set():
    """One split of 36 questions (6 unanswerable) picks the policy by the luck of the folds;
    ten splits averaged pick the same one whatever the seed."""
    labels, decoder, answerability = _small_noisy_dev_set()
    scorer = TableScorer({})

    def majority_share(repeats: int) -> float:
        names = [
            select_refusal_policy(
                labels, decoder, answerability, scorer=scorer, seed=s, repeats=repeats
            ).name
            for s in range(0, 200, 10)  # disjoint seed ranges for the repeated runs
        ]
        return max(names.count(n) for n in set(names)) / len(names)

    one_split, ten_splits = majority_share(1), majority_share(10)
    assert one_split <= 0.75, one_split
    assert ten_splits >= 0.9 and ten_splits > one_split


@pytest.mark.parametrize("repeats", [0, -1, True, 1.5])
def test_repeats_must_be_a_whole_number_of_at_least_one(repeats):
    with pytest.raises(ValueError, match="repeats must be a whole number >= 1"):
        select_refusal_policy(_labels(4, 4), [0.1] * 4 + [0.9] * 4, repeats=repeats)
