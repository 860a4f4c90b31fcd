"""A run with a time limit: the decoder trains for what is left once its evaluation is reserved."""

from __future__ import annotations

import json
import time

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from llama_index_ragtune.finetuning import budget as budget_module
from llama_index_ragtune.finetuning.budget import TimeBudgetCallback
from llama_index_ragtune.pipeline import PipelineConfig, TuningPipeline
from llama_index_ragtune.pipeline.evaluate import STARTING_DECODER_FILE


def _step(callback, args, state, control, step):
    state.global_step = step
    return callback.on_step_end(args, state, control)


def test_a_deadline_stops_before_the_step_that_would_end_after_it(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(budget_module.time, "time", lambda: clock[0])
    args = TrainingArguments(output_dir="unused", report_to="none")
    state, control = TrainerState(), TrainerControl()
    state.max_steps = 100
    callback = TimeBudgetCallback(deadline=1035.0)  # 35 s from now, steps of 10 s
    callback.on_train_begin(args, state, control)
    for step in (1, 2):
        clock[0] += 10
        _step(callback, args, state, control, step)
        assert not control.should_training_stop, step  # 1020 + 10 still fits
    clock[0] += 10  # 1030: the next step would end at 1040, after the deadline
    _step(callback, args, state, control, 3)
    assert control.should_training_stop and control.should_save
    assert callback.stopped_at_step == 3 and "time limit" in callback.reason


def test_minutes_still_stop_without_a_deadline_and_one_of_them_is_needed():
    args = TrainingArguments(output_dir="unused", report_to="none")
    state, control = TrainerState(), TrainerControl()
    callback = TimeBudgetCallback(1e-9, deadline=time.time() + 3600)
    callback.on_train_begin(args, state, control)
    _step(callback, args, state, control, 1)
    assert control.should_training_stop and "time budget" in callback.reason
    with pytest.raises(ValueError, match="minutes, a deadline or both"):
        TimeBudgetCallback()


def test_the_decoder_engine_ends_training_by_its_deadline(tmp_path, tiny_causal_lm_path):
    datasets = pytest.importorskip("datasets")
    from llama_index_ragtune.finetuning.decoder import DecoderFinetuneEngine

    prompt = [{"role": "user", "content": "Question: What is the capital of Normandy?"}]
    data = datasets.Dataset.from_dict(
        {
            "prompt": [prompt] * 64,
            "completion": [[{"role": "assistant", "content": "Rouen [1]"}]] * 64,
        }
    )
    engine = DecoderFinetuneEngine(
        data,
        model=tiny_causal_lm_path,
        output_dir=tmp_path,
        args=DecoderFinetuneEngine.default_args(
            tmp_path / "sft",
            max_steps=10_000,
            per_device_train_batch_size=1,
            gradient_accumulation_steps=1,
            save_steps=10_000,
            logging_steps=1_000,
            disable_tqdm=True,
        ),
        force_promotion=True,
        show_progress=False,
    )
    engine.train_deadline = time.time()  # already due: one step, then the callback stops
    result = engine.finetune()
    timer = next(
        c
        for c in engine.sft_trainer.callback_handler.callbacks
        if isinstance(c, TimeBudgetCallback)
    )
    assert result.global_step == 1 == timer.stopped_at_step
    assert "time limit" in timer.reason and timer.minutes is None


@pytest.fixture(scope="module")
def limited_run(tmp_path_factory, tiny_corpus, tiny_encoder_path, tiny_causal_lm_path):
    from tests.pipeline.conftest import fast_config, run_tiny_pipeline

    config = fast_config(tiny_encoder_path, tiny_causal_lm_path, time_limit_minutes=30)
    return run_tiny_pipeline(tmp_path_factory.mktemp("limited"), tiny_corpus, config)


def test_the_starting_decoder_is_evaluated_before_training_and_read_back(limited_run):
    ctx = limited_run["pipeline"].context
    cached = json.loads(ctx.path(*STARTING_DECODER_FILE).read_text())
    limit = ctx.state.get("decoder", "time_limit")
    assert limit["starting_decoder_evaluation_seconds"] == pytest.approx(cached["seconds"], abs=0.1)
    assert 0 < limit["reserved_seconds"] < limit["seconds_left"] < 30 * 60
    text = "\n".join(limited_run["lines"])
    assert "time limit: 30 min for the whole run" in text  # the cost estimate
    assert "for the decoder's training, validation and saving" in text
    evaluation = limited_run["result"].evaluation
    before = next(s for s in evaluation.generation if s.stage == "before")
    assert before.latency_ms == pytest.approx([r["latency_ms"] for r in cached["rows"]])
    assert {s.stage for s in evaluation.generation} == {"before", "after"}  # decoder promoted
    answers = json.loads(ctx.path("answers.json").read_text())
    assert answers["starting decoder"] == cached["rows"]


def test_a_limit_that_leaves_no_training_time_keeps_the_starting_decoder(
    tmp_path, tiny_corpus, make_config
):
    from tests.pipeline.conftest import run_tiny_pipeline

    run = run_tiny_pipeline(tmp_path / "out", tiny_corpus, make_config(time_limit_minutes=0.01))
    result, ctx = run["result"], run["pipeline"].context
    assert "0.01 min leaves the decoder little or no time;" in "\n".join(run["lines"])
    assert result.bundle_path is not None  # the run still ends with a bundle
    decoder = ctx.state.step("decoder")
    assert decoder["promoted"] is False and "time limit" in decoder["note"]
    assert ctx.served_decoder == ctx.base_decoder
    decision = next(d for d in result.evaluation.decisions if d.part == "decoder")
    assert not decision.promoted and "kept the starting decoder" in decision.reason
    assert {s.stage for s in result.evaluation.generation} == {"before"}


def test_a_limit_shorter_than_the_earlier_budgets_is_said_up_front(
    tmp_path, tiny_corpus, make_config
):
    from llama_index_ragtune.finetuning.budget import TrainingBudget

    lines: list[str] = []
    pipeline = TuningPipeline(
        tiny_corpus["docs"],
        tmp_path / "out",
        queries=tiny_corpus["queries"],
        config=make_config(
            time_limit_minutes=3, encoder_budget=TrainingBudget(max_pairs_per_query=2, minutes=2.5)
        ),
        echo=lines.append,
    )
    pipeline.run(until="parse")
    assert any("encoder and reranker budgets alone take 2.5 min" in line for line in lines)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("5", TypeError),
        (True, TypeError),
        (0, ValueError),
        (-1.0, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
    ],
)
def test_time_limit_must_be_a_positive_number_of_minutes(value, error):
    with pytest.raises(error, match="time_limit_minutes"):
        PipelineConfig(time_limit_minutes=value)


def test_the_demo_has_a_limit_and_the_cli_option_sets_or_clears_it():
    import argparse

    from llama_index_ragtune.commands.tune import add_pipeline_options, build_config

    assert PipelineConfig.demo().time_limit_minutes == 9.25
    assert PipelineConfig().time_limit_minutes is None
    parser = argparse.ArgumentParser()
    add_pipeline_options(parser)
    assert build_config(parser.parse_args(["--time-limit", "12"])).time_limit_minutes == 12
    cleared = build_config(parser.parse_args(["--time-limit", "none"]), PipelineConfig.demo())
    assert cleared.time_limit_minutes is None
    for bad in ("0", "-3", "soon", "nan"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--time-limit", bad])


def test_a_time_limited_decoder_trains_without_warm_up_unless_asked():
    from llama_index_ragtune.finetuning.decoder import DecoderFinetuneEngine
    from llama_index_ragtune.pipeline.steps import decoder_args

    demo = PipelineConfig.demo()
    assert decoder_args(demo, time_limited=True) == {
        "warmup_steps": 0,
        "learning_rate": 5e-4,
        "num_train_epochs": 2,
    }
    assert "warmup_steps" not in decoder_args(demo, time_limited=False)  # the engine's 5 %
    asked = PipelineConfig.demo(decoder_args={"warmup_steps": 0.1})
    assert decoder_args(asked, time_limited=True) == {"warmup_steps": 0.1}
    # transformers' warm-up gives the first step a learning rate of 0: without it, step 1 learns
    args = DecoderFinetuneEngine.default_args("unused", **decoder_args(demo, time_limited=True))
    assert args.get_warmup_steps(45) == 0
    default = DecoderFinetuneEngine.default_args("unused")
    assert default.get_warmup_steps(45) > 0
