"""The engine contract: one signature, a validation split, champion / challenger, budgets."""

from __future__ import annotations

import inspect
import json

import pytest
import torch

from llama_index_ragtune.data.schema import RetrievalDataset
from llama_index_ragtune.finetuning.budget import (
    TimeBudgetCallback,
    TrainingBudget,
    plan_steps,
    select_positives,
    time_steps,
)
from llama_index_ragtune.finetuning.decoder import DecoderFinetuneEngine
from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine
from llama_index_ragtune.finetuning.promotion import decide_promotion
from llama_index_ragtune.finetuning.reranker import RerankerFinetuneEngine
from llama_index_ragtune.finetuning.result import FinetuneResult

ENGINES = (EncoderFinetuneEngine, RerankerFinetuneEngine, DecoderFinetuneEngine)
SHARED = (
    "model",
    "args",
    "output_dir",
    "val_dataset",
    "budget",
    "promotion_margin",
    "force_promotion",
    "val_fraction",
    "max_val_queries",
    "eval_points",
    "callbacks",
    "device",
)


def test_engines_share_argument_names_and_methods():
    for engine in ENGINES:
        params = inspect.signature(engine.__init__).parameters
        missing = [name for name in SHARED if name not in params]
        assert not missing, f"{engine.__name__} lacks {missing}"
        assert all(params[name].kind is inspect.Parameter.KEYWORD_ONLY for name in SHARED)
        for method in ("default_args", "finetune", "get_finetuned_model", "split_validation"):
            assert callable(getattr(engine, method)), f"{engine.__name__}.{method}"
        assert "resume_from_checkpoint" in inspect.signature(engine.finetune).parameters


def test_decision_rule_both_ways_and_forced():
    won = decide_promotion({"ndcg@10": 0.30}, {"ndcg@10": 0.32}, "ndcg@10", margin=0.005)
    assert won.promoted and won.gain == pytest.approx(0.02) and "promoted" in won.reason
    tie = decide_promotion({"ndcg@10": 0.30}, {"ndcg@10": 0.303}, "ndcg@10", margin=0.005)
    assert not tie.promoted and "kept the starting model" in tie.reason
    loss = decide_promotion({"loss": 2.0}, {"loss": 1.0}, "loss", greater_is_better=False)
    assert loss.promoted and loss.gain == pytest.approx(1.0)
    blind = decide_promotion({}, {"ndcg@10": 0.9}, "ndcg@10")
    assert not blind.promoted and "could not be checked" in blind.reason
    forced = decide_promotion({"ndcg@10": 0.5}, {"ndcg@10": 0.1}, "ndcg@10", force=True)
    assert forced.promoted and forced.forced and "did not win" in forced.reason
    with pytest.raises(ValueError, match="margin"):
        decide_promotion({}, {}, "ndcg@10", margin=-1)


def _graded_dataset() -> RetrievalDataset:
    corpus = {f"d{i}": f"doc {i}" for i in range(40)}
    queries = {f"q{i}": f"query {i}" for i in range(10)}
    relevant = {f"q{i}": [f"d{(i * 4 + j) % 40}" for j in range(4)] for i in range(10)}
    # the last positive of each query is the strong one (grade 2)
    grades = {q: {d: (2 if j == 3 else 1) for j, d in enumerate(ds)} for q, ds in relevant.items()}
    return RetrievalDataset(queries, corpus, relevant, grades=grades)


def test_budget_takes_strongest_positives_first_and_covers_queries_evenly():
    data = _graded_dataset()
    capped = select_positives(data, TrainingBudget(max_pairs_per_query=1), seed=0)
    assert set(capped) == set(data.queries)
    assert all(data.grades[q][ds[0]] == 2 and len(ds) == 1 for q, ds in capped.items())
    # 15 pairs over 10 queries: every query gets its best positive, 5 get a second one
    total = select_positives(data, TrainingBudget(max_pairs=15), seed=3)
    assert sum(len(ds) for ds in total.values()) == 15
    assert set(total) == set(data.queries)
    assert sorted(len(ds) for ds in total.values()) == [1] * 5 + [2] * 5
    assert all(data.grades[q][ds[0]] == 2 for q, ds in total.items())
    strong_only = select_positives(data, None, min_grade=2)
    assert all(len(ds) == 1 for ds in strong_only.values())
    top = select_positives(data, None, top_grade_only=True)
    assert top == strong_only  # every query's best grade here is 2
    mixed = RetrievalDataset(
        data.queries, data.corpus, data.relevant_docs, grades={"q0": data.grades["q0"]}
    )
    top = select_positives(mixed, None, top_grade_only=True)
    assert len(top["q0"]) == 1 and len(top["q1"]) == 4  # ungraded: all positives tie at 1
    assert select_positives(data, None) == {q: _strongest_first(data, q) for q in data.queries}
    with pytest.raises(ValueError, match="max_pairs"):
        TrainingBudget(max_pairs=0)
    with pytest.raises(ValueError, match="minutes"):
        TrainingBudget(minutes=-1)


def _strongest_first(data, qid):
    chosen = select_positives(data, None, seed=0)[qid]
    assert chosen[0] == data.relevant_docs[qid][3]
    return chosen


def test_plan_steps_fits_the_time_budget():
    assert plan_steps(10, seconds_per_step=20, rows=10_000, batch_size=32) == 27
    assert plan_steps(10, seconds_per_step=1, rows=320, batch_size=32) is None  # one epoch fits
    assert plan_steps(0.001, seconds_per_step=5, rows=1000, batch_size=32) == 1
    # every configured epoch counts: 2 epochs of 10 steps do not fit 10 minutes at 40 s/step
    assert plan_steps(10, seconds_per_step=40, rows=320, batch_size=32, epochs=2) == 13
    assert plan_steps(10, seconds_per_step=40, rows=320, batch_size=32) is None


def test_time_steps_is_the_mean_after_a_warm_up_call():
    import time

    delays = iter([0.5, 0.01, 0.03])
    seconds = time_steps(lambda: time.sleep(next(delays)), repeats=3)
    assert 0.02 <= seconds < 0.15  # 0.18 with the warm-up call counted


def _fast_args(output_dir, **overrides):
    settings = dict(
        max_steps=12,
        per_device_train_batch_size=16,
        learning_rate=2e-3,
        warmup_steps=0,
        save_strategy="no",
        logging_steps=50,
        disable_tqdm=True,
    )
    settings.update(overrides)
    return EncoderFinetuneEngine.default_args(output_dir, **settings)


def test_tuned_encoder_that_loses_on_validation_is_kept_aside(
    tiny_encoder_path, tmp_path, make_toy
):
    """Training on wrong labels makes the encoder worse on the true ones: the start stays."""
    good = make_toy()
    shifted = {q: [f"d{(int(q[1:]) + 5) % len(good.corpus)}"] for q in good.queries}
    wrong = RetrievalDataset(good.queries, good.corpus, shifted)
    engine = EncoderFinetuneEngine(
        wrong,
        model=tiny_encoder_path,
        val_dataset=good,
        budget=None,
        output_dir=tmp_path,
        args=_fast_args(tmp_path),
        show_progress=False,
    )
    start = {k: v.clone() for k, v in engine.model.state_dict().items()}
    result = engine.finetune()
    assert isinstance(result, FinetuneResult)
    assert result.promoted is False
    assert result.after["hybrid_ndcg@10"] <= result.before["hybrid_ndcg@10"] + 0.005
    assert "kept the starting model" in result.format_table()
    # final/ is the starting model, the loser waits in challenger/
    assert all(torch.equal(start[k], v) for k, v in engine.model.state_dict().items())
    assert (engine.challenger_path / "modules.json").is_file()
    decision = json.loads((tmp_path / "decision.json").read_text())
    assert decision["decision"]["promoted"] is False
    from sentence_transformers import SentenceTransformer

    final = SentenceTransformer(str(engine.final_model_path), device="cpu")
    assert all(torch.equal(start[k], v.cpu()) for k, v in final.state_dict().items() if k in start)
    # the user can still opt into the challenger explicitly
    forced = EncoderFinetuneEngine(
        wrong,
        model=tiny_encoder_path,
        val_dataset=good,
        budget=None,
        force_promotion=True,
        args=_fast_args(tmp_path / "forced"),
        show_progress=False,
    ).finetune()
    assert forced.promoted and forced.decision.forced


def test_validation_is_carved_by_query_without_leakage(tiny_encoder_path, toy):
    engine = EncoderFinetuneEngine(toy, model=tiny_encoder_path, val_fraction=0.25)
    train, val = engine.split_validation()
    assert len(val) == 4 and len(train) == 12
    assert not set(train.queries) & set(val.queries)
    assert set(train.queries) | set(val.queries) == set(toy.queries)
    again = EncoderFinetuneEngine(toy, model=tiny_encoder_path, val_fraction=0.25)
    assert again.split_validation()[1].query_ids == val.query_ids  # seeded


def test_time_budget_plans_and_stops_training(tiny_encoder_path, tmp_path, toy):
    engine = EncoderFinetuneEngine(
        toy,
        model=tiny_encoder_path,
        budget=TrainingBudget(minutes=1e-4),
        val_fraction=0,
        force_promotion=True,
        args=_fast_args(tmp_path, max_steps=-1, num_train_epochs=50),
        show_progress=False,
    )
    result = engine.finetune(evaluate_before=False)
    plan = result.info["plan"]
    assert plan["planned_steps"] == 1 and plan["seconds_per_step"] > 0
    assert result.global_step == 1


def test_time_budget_callback_stops_a_running_trainer():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    callback = TimeBudgetCallback(minutes=1e-9)
    args = TrainingArguments(output_dir="unused", report_to="none")
    state, control = TrainerState(), TrainerControl()
    state.global_step, state.max_steps = 3, 100
    callback.on_train_begin(args, state, control)
    callback.on_step_end(args, state, control)
    assert control.should_training_stop and control.should_save
    assert callback.stopped_at_step == 3


def test_gist_masks_in_batch_false_negatives(minilm_path):
    """An in-batch candidate the guide rates above the positive stops counting as a negative."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses

    model = SentenceTransformer(minilm_path, device="cpu")
    guide = SentenceTransformer(minilm_path, device="cpu")
    mnrl = losses.MultipleNegativesRankingLoss(model)
    gist = losses.GISTEmbedLoss(
        model, guide, temperature=0.05, contrast_anchors=False, contrast_positives=False
    )
    anchors = ["How long can I return opened Apple products?", "Are bananas organic?"]
    positives = ["Returns: opened items within 14 days.", "Our bananas are organic."]
    false_negative = "Opened Apple products can be returned within 14 days with the box."
    unrelated = "The store opens at 8 am on Sundays."

    def value(loss, candidate):
        # row 2's mined negative is a candidate for row 1 too (every in-batch text is)
        negatives = ["Gift cards cannot be exchanged for cash.", candidate]
        features = [model.preprocess(t) for t in (anchors, positives, negatives)]
        with torch.no_grad():
            return float(loss(features, None))

    # the same batch, with that candidate a false negative of row 1 or an unrelated text
    mnrl_gap = value(mnrl, false_negative) - value(mnrl, unrelated)
    gist_gap = value(gist, false_negative) - value(gist, unrelated)
    assert mnrl_gap > 0.5  # MNRL pushes row 1 away from a passage that answers it
    assert gist_gap < mnrl_gap / 4  # GIST no longer counts it as a negative for row 1


def test_gist_loss_trains_through_the_engine(tiny_encoder_path, tmp_path, toy):
    engine = EncoderFinetuneEngine(
        toy,
        model=tiny_encoder_path,
        loss="gist",
        budget=None,
        val_dataset=toy,
        args=_fast_args(tmp_path, max_steps=3),
        show_progress=False,
    )
    result = engine.finetune()
    assert result.info["loss"] == "GISTEmbedLoss"
    assert result.global_step == 3
