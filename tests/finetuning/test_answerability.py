"""AnswerabilityFinetuneEngine on a tiny cross-encoder: trains, validates by question, decides."""

from __future__ import annotations

import json
import random

import datasets
import pytest
import torch

from llama_index_ragtune.finetuning.answerability import (
    AnswerabilityFinetuneEngine,
    AnswerabilityNotPromotedError,
    question_level_auc,
)
from llama_index_ragtune.llms.answerability import AnswerabilityScorer

TOPICS = ["volcano", "penguin", "glacier", "orchid", "violin", "galaxy", "cactus", "dolphin"]
FILLER = ["river", "stone", "cloud", "ember", "frost", "meadow", "harbor", "forest"]


def toy_pairs(n_questions: int = 64, seed: int = 0) -> datasets.Dataset:
    """Half the questions have a source naming their topic (label 1); the rest only filler."""
    rng = random.Random(seed)
    rows = {"question": [], "source": [], "label": [], "qid": []}
    for q in range(n_questions):
        topic = TOPICS[q % len(TOPICS)]
        answerable = q % 2 == 0
        for s in range(3):
            words = rng.sample(FILLER, 5)
            label = int(answerable and s == 0)
            if label:
                words.insert(2, topic)
            # one wording per question: the same text under two qids is one question
            # (twins), held out together, which would leave one topic for validation
            rows["question"].append(f"what about the {topic} of order {q}")
            rows["source"].append(" ".join(words))
            rows["label"].append(label)
            rows["qid"].append(f"q{q}")
    return datasets.Dataset.from_dict(rows)


def quick_args(engine_dir, **overrides):
    return AnswerabilityFinetuneEngine.default_args(
        engine_dir,
        max_steps=overrides.pop("max_steps", 20),
        per_device_train_batch_size=16,
        learning_rate=overrides.pop("learning_rate", 3e-3),
        logging_steps=1000,
        use_cpu=True,
        **overrides,
    )


def test_engine_trains_validates_and_serves_a_scorer(tiny_encoder_path, tmp_path):
    engine = AnswerabilityFinetuneEngine(
        toy_pairs(),
        model=tiny_encoder_path,
        args=quick_args(tmp_path / "ans"),
        budget=None,
        max_length=32,
        val_fraction=0.25,
        force_promotion=True,
        show_progress=False,
    )
    before = {k: v.detach().clone() for k, v in engine.model.state_dict().items()}
    result = engine.finetune()
    changed = [k for k, v in engine.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed  # training moved the weights
    assert set(result.before) == set(result.after) == {"auc", "pair_auc"}
    assert result.after["auc"] > result.before["auc"]  # the head learned the topic word
    assert result.info["val_questions"] == 16 and result.promoted
    decision = json.loads((tmp_path / "ans" / "decision.json").read_text())
    assert decision["decision"]["metric"] == "auc"
    scorer = engine.get_finetuned_model()
    assert isinstance(scorer, AnswerabilityScorer)
    questions = ["what about the violin", "what about the violin"]
    sources = [["river violin stone", "cloud frost"], ["cloud frost meadow"]]
    per_source = scorer.source_probabilities(questions, sources)
    assert [len(p) for p in per_source] == [2, 1]
    assert scorer(questions, sources) == [max(p) for p in per_source]
    assert scorer(["q"], [[]]) == [0.0]  # no source, no answer


def test_a_head_that_does_not_beat_the_start_waits_in_challenger(tiny_encoder_path, tmp_path):
    engine = AnswerabilityFinetuneEngine(
        toy_pairs(32),
        model=tiny_encoder_path,
        args=quick_args(tmp_path / "ans", max_steps=1, learning_rate=1e-9),
        budget=None,
        max_length=32,
        val_fraction=0.25,
        promotion_margin=0.5,  # unreachable: an AUC cannot rise by 0.5 from ~0.5 in one step
        show_progress=False,
    )
    result = engine.finetune()
    assert result.promoted is False
    assert (tmp_path / "ans" / "challenger").is_dir()
    with pytest.raises(AnswerabilityNotPromotedError, match="challenger"):
        engine.get_finetuned_model()


def test_question_level_auc_takes_the_best_source():
    # q1 answerable (one source scores 0.9), q2 not (0.2, 0.3): P(no answer) 0.1 vs 0.7
    assert question_level_auc([0.9, 0.1, 0.2, 0.3], [1, 0, 0, 0], ["q1", "q1", "q2", "q2"]) == 1.0
    assert question_level_auc([0.9], [1], ["q1"]) is None


def test_bad_training_data_is_named(tiny_encoder_path, tmp_path):
    with pytest.raises(ValueError, match="lacks the columns"):
        AnswerabilityFinetuneEngine(
            datasets.Dataset.from_dict({"question": ["q"]}), model=tiny_encoder_path
        )
    bad = toy_pairs(4).map(lambda r: {"label": 2})
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        AnswerabilityFinetuneEngine(bad, model=tiny_encoder_path)
    negatives = toy_pairs(4).map(lambda r: {"label": 0})
    engine = AnswerabilityFinetuneEngine(
        negatives,
        model=tiny_encoder_path,
        args=quick_args(tmp_path / "neg"),
        budget=None,
        val_fraction=0,
        show_progress=False,
    )
    with pytest.raises(ValueError, match="both are needed"):
        engine.finetune()
    with pytest.raises(TypeError, match="budget"):
        AnswerabilityFinetuneEngine(toy_pairs(4), model=tiny_encoder_path, budget=10)
    with pytest.raises(FileNotFoundError, match="no model folder"):
        AnswerabilityScorer(tmp_path / "missing" / "model")
