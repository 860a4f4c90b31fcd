"""DecoderFinetuneEngine on a tiny random Llama: LoRA SFT, then DPO / ORPO, merge, resume."""

from __future__ import annotations

import time

import pytest
import torch

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402

from llama_index_ragtune.finetuning.decoder import (  # noqa: E402
    DecoderFinetuneEngine,
    default_dpo_config,
    default_orpo_config,
    default_sft_config,
    score_completion_tokens_only,
)

PROMPT = [
    {"role": "system", "content": "Answer from the numbered sources and cite them like [1]."},
    {
        "role": "user",
        "content": 'Sources:\n<source id="1">\nRouen is the capital of Normandy.\n</source>\n\n'
        "Question: What is the capital of Normandy?",
    },
]
CHOSEN = "Rouen [1]"
REJECTED = "Paris"


# eight questions, not one under eight qids: twins (one question, several qids) are held
# out together, so copies of PROMPT alone would leave no validation split
QUESTIONS = [
    "What is the capital of Normandy?",
    "Which city is the capital of Normandy?",
    "Name the capital of Normandy.",
    "What city is Normandy's capital?",
    "Capital of Normandy?",
    "Which town is the capital of Normandy?",
    "Tell me the capital of Normandy.",
    "Where is the capital of Normandy?",
]


def _prompt(question: str) -> list[dict[str, str]]:
    head, _ = PROMPT[1]["content"].rsplit("Question: ", 1)
    return [PROMPT[0], {"role": "user", "content": f"{head}Question: {question}"}]


@pytest.fixture(scope="module")
def sft_data():
    assert _prompt(QUESTIONS[0]) == PROMPT
    return datasets.Dataset.from_dict(
        {
            "prompt": [_prompt(q) for q in QUESTIONS],
            "completion": [[{"role": "assistant", "content": CHOSEN}]] * 8,
            "qid": [f"q{i}" for i in range(8)],  # metadata columns stay out of the trainers
        }
    )


@pytest.fixture(scope="module")
def preference_data():
    return datasets.Dataset.from_dict(
        {
            "prompt": [PROMPT] * 8,
            "chosen": [[{"role": "assistant", "content": CHOSEN}]] * 8,
            "rejected": [[{"role": "assistant", "content": REJECTED}]] * 8,
        }
    )


def _fast(config, steps):
    config.max_steps = steps
    config.per_device_train_batch_size = 2
    config.gradient_accumulation_steps = 1
    config.learning_rate = 1e-2
    config.warmup_steps = 0
    config.logging_steps = 1
    config.save_steps = 1
    config.max_length = 256
    config.disable_tqdm = True
    return config


class Snapshot(TrainerCallback):
    """Keeps the trainable weights as they are when training starts, and the steps run."""

    def __init__(self):
        self.before = None
        self.steps = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {
            n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
        }

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def _changed(before, model):
    params = dict(model.named_parameters())
    return [n for n, p in before.items() if n in params and not torch.equal(p, params[n])]


def _logprob(model, tokenizer, answer):
    """Sum of the answer tokens' log-probabilities after the chat prompt."""
    prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        PROMPT + [{"role": "assistant", "content": answer}], tokenize=False
    )
    ids = tokenizer(full, return_tensors="pt", add_special_tokens=False)["input_ids"]
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    logps = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
    return float(logps[n_prompt - 1 :].sum())


def test_sft_then_dpo_change_weights_improve_and_merge(
    tmp_path, tiny_causal_lm_path, sft_data, preference_data
):
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm_path)
    base = AutoModelForCausalLM.from_pretrained(tiny_causal_lm_path)
    base_logprob = _logprob(base, tokenizer, CHOSEN)
    snapshot = Snapshot()
    engine = DecoderFinetuneEngine(
        sft_data,
        model=tiny_causal_lm_path,
        output_dir=tmp_path,
        preference_dataset=preference_data,
        args=_fast(default_sft_config(tmp_path / "sft"), 3),
        preference_args=_fast(default_dpo_config(tmp_path / "dpo"), 3),
        callbacks=[snapshot],
    )
    assert {"prompt", "completion"} <= set(engine.train_dataset.column_names)
    assert engine.lora_config.r == 16 and engine.lora_config.lora_alpha == 32

    engine.train_sft()
    assert engine.sft_trainer.completion_only_loss  # loss on the answer tokens only
    lora = [n for n in snapshot.before if "lora_" in n]
    assert lora and len(_changed(snapshot.before, engine.model)) == len(snapshot.before)
    assert (engine.sft_adapter_dir / "adapter_config.json").exists()
    sft_logprob = _logprob(engine.model, tokenizer, CHOSEN)
    assert sft_logprob > base_logprob
    sft_margin = sft_logprob - _logprob(engine.model, tokenizer, REJECTED)

    engine.train_preference()
    # The snapshot was re-taken when DPO started: DPO moved the adapter further.
    assert _changed(snapshot.before, engine.model)
    assert list(engine.model.peft_config) == ["default"]  # DPO's frozen reference copy is gone
    dpo_margin = _logprob(engine.model, tokenizer, CHOSEN) - _logprob(
        engine.model, tokenizer, REJECTED
    )
    assert dpo_margin > sft_margin
    assert engine.timings["sft_seconds"] > 0 and engine.timings["dpo_seconds"] > 0

    engine.save()
    assert (engine.adapter_dir / "adapter_model.safetensors").exists()
    merged = AutoModelForCausalLM.from_pretrained(engine.merged_dir)
    assert _logprob(merged, tokenizer, CHOSEN) == pytest.approx(
        _logprob(engine.model, tokenizer, CHOSEN), abs=1e-3
    )
    assert AutoTokenizer.from_pretrained(engine.merged_dir).chat_template == tokenizer.chat_template

    llm = engine.get_finetuned_model(max_new_tokens=3)
    from llama_index.core.base.llms.types import ChatMessage

    reply = llm.chat([ChatMessage(role=m["role"], content=m["content"]) for m in PROMPT])
    assert reply.raw["usage"]["completion_tokens"] >= 1


def test_resume_from_checkpoint_and_finished_sft(tmp_path, tiny_causal_lm_path, sft_data):
    first = DecoderFinetuneEngine(
        sft_data,
        model=tiny_causal_lm_path,
        output_dir=tmp_path,
        args=_fast(default_sft_config(tmp_path / "sft"), 2),
    )
    first.train_sft()
    assert (tmp_path / "sft" / "checkpoint-2").is_dir()
    saved = {n: p.detach().clone() for n, p in first.model.named_parameters() if "lora_" in n}

    # A finished SFT stage is not run again: its adapter is loaded.
    again = DecoderFinetuneEngine(
        sft_data,
        model=tiny_causal_lm_path,
        output_dir=tmp_path,
        args=_fast(default_sft_config(tmp_path / "sft"), 2),
    )
    again.train_sft(resume_from_checkpoint=True)
    assert again.sft_trainer is None
    assert not _changed(saved, again.model)

    # An interrupted one continues from its last checkpoint (step 2 -> 3), not from scratch.
    (tmp_path / "sft-adapter" / "sft_complete.json").unlink()
    steps = Snapshot()
    longer = DecoderFinetuneEngine(
        sft_data,
        model=tiny_causal_lm_path,
        output_dir=tmp_path,
        args=_fast(default_sft_config(tmp_path / "sft"), 3),
        callbacks=[steps],
    )
    longer.train_sft(resume_from_checkpoint=True)
    assert steps.steps == [3]
    assert longer.sft_trainer.state.global_step == 3


def test_orpo_preference_stage(tmp_path, tiny_causal_lm_path, sft_data, preference_data):
    pytest.importorskip("trl.experimental.orpo")
    snapshot = Snapshot()
    engine = DecoderFinetuneEngine(
        sft_data,
        model=tiny_causal_lm_path,
        output_dir=tmp_path,
        preference_dataset=preference_data,
        preference_method="orpo",
        args=_fast(default_sft_config(tmp_path / "sft"), 1),
        preference_args=_fast(default_orpo_config(tmp_path / "orpo"), 2),
        callbacks=[snapshot],
    )
    engine.train_sft()
    engine.train_preference()
    assert _changed(snapshot.before, engine.model)
    assert "orpo_seconds" in engine.timings


def test_bad_input_and_compat(tmp_path, tiny_causal_lm_path, sft_data):
    with pytest.raises(ValueError, match=r"\['completion'\]"):
        DecoderFinetuneEngine(sft_data.remove_columns("completion"), model=tiny_causal_lm_path)
    with pytest.raises(ValueError, match="preference_dataset lacks"):
        DecoderFinetuneEngine(sft_data, model=tiny_causal_lm_path, preference_dataset=sft_data)
    with pytest.raises(ValueError, match="'dpo' or 'orpo'"):
        DecoderFinetuneEngine(sft_data, model=tiny_causal_lm_path, preference_method="kto")
    with pytest.raises(FileNotFoundError, match="missing-model"):
        DecoderFinetuneEngine(sft_data, model=str(tmp_path / "missing-model"))
    engine = DecoderFinetuneEngine(sft_data, model=tiny_causal_lm_path, output_dir=tmp_path)
    with pytest.raises(RuntimeError, match="finetune"):
        engine.get_finetuned_model()
    import sys

    base = getattr(sys.modules.get("llama_index.finetuning.types"), "BaseLLMFinetuneEngine", None)
    if base is None:
        pytest.skip("llama-index-finetuning is not installed")
    assert isinstance(engine, base)


def test_cpu_scoring_of_completion_tokens_only_matches_scoring_every_position(
    tiny_causal_lm_path,
):
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm_path)
    add_fused_lm_head(model)
    ids = torch.randint(0, 1000, (2, 24))
    labels = ids.clone()
    labels[:, :18] = -100  # the prompt
    labels[1, 22:] = -100  # padding

    def score():
        model.zero_grad()
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out.log_probs.detach(), out.loss.detach(), grads

    original = trl_utils._use_triton
    full = score()
    with score_completion_tokens_only("cpu"):
        assert trl_utils._use_triton(torch.device("cpu")) is True
        compact = score()
    assert trl_utils._use_triton is original  # restored
    with score_completion_tokens_only("cuda"):
        assert trl_utils._use_triton is original  # GPUs: untouched
    assert torch.allclose(full[0], compact[0], atol=1e-5)
    assert torch.allclose(full[1], compact[1], atol=1e-6)
    assert full[2].keys() == compact[2].keys() and full[2]
    for name, grad in full[2].items():
        assert torch.allclose(grad, compact[2][name], atol=1e-5), name


def test_dpo_default_adds_the_chosen_answer_nll(tmp_path):
    config = default_dpo_config(tmp_path)
    assert config.loss_type == ["sigmoid", "sft"]


def test_finetune_validates_promotes_and_reports(tmp_path, tiny_causal_lm_path, sft_data):
    """The contract: a validation split carved by question, loss before/after, a decision."""
    import json

    engine = DecoderFinetuneEngine(
        sft_data,
        model=tiny_causal_lm_path,
        output_dir=tmp_path,
        val_fraction=0.25,
        args=_fast(default_sft_config(tmp_path / "sft"), 4),
    )
    train, val = engine.split_validation()
    assert len(train) + len(val) == len(sft_data) and len(val) == 2
    assert not set(train["qid"]) & set(val["qid"])
    result = engine.finetune()
    assert result.before["loss"] > result.after["loss"]
    assert result.promoted and (engine.merged_dir / "config.json").exists()
    # saved for generation: TRL turns the KV cache off while training
    assert json.loads((engine.merged_dir / "config.json").read_text())["use_cache"] is True
    assert json.loads((tmp_path / "decision.json").read_text())["decision"]["metric"] == "loss"
    assert result.info["val_rows"] == 2 and result.train_seconds > 0


def test_finetune_keeps_the_starting_model_when_the_gain_is_under_the_margin(
    tmp_path, tiny_causal_lm_path, sft_data
):
    engine = DecoderFinetuneEngine(
        sft_data,
        model=tiny_causal_lm_path,
        output_dir=tmp_path,
        val_dataset=sft_data.select(range(2)),
        promotion_margin=50.0,  # more than any loss can drop
        args=_fast(default_sft_config(tmp_path / "sft"), 2),
    )
    result = engine.finetune()
    assert result.promoted is False and "kept the starting model" in result.decision.reason
    assert (engine.challenger_path / "adapter" / "adapter_config.json").exists()
    assert not engine.merged_dir.exists() and not engine.adapter_dir.exists()
    llm = engine.get_finetuned_model(max_new_tokens=2)
    assert llm.model == str(engine.base_model)


def _unplanned(config):
    """``config`` for 50 epochs with no step count of its own: only a plan bounds it."""
    config.max_steps = -1
    config.num_train_epochs = 50
    return config


def _schedule_ended(trainer):
    """Every parameter group's learning rate is at the end of its schedule (0)."""
    return all(lr == pytest.approx(0.0, abs=1e-12) for lr in trainer.lr_scheduler.get_last_lr())


def test_a_time_limited_sft_plans_its_steps_so_its_schedule_ends_in_time(
    tmp_path, tiny_causal_lm_path, sft_data
):
    """Under a deadline the steps are planned from a timed step before training, so the
    learning rate reaches the schedule's end at the last step instead of being cut off
    part-way by the timer; the checkpoint-selection passes move inside the plan."""
    config = _unplanned(_fast(default_sft_config(tmp_path / "sft"), 1))  # 150 steps of 2
    engine = DecoderFinetuneEngine(
        sft_data,
        model=tiny_causal_lm_path,
        output_dir=tmp_path,
        val_fraction=0.25,
        eval_points=2,
        args=config,
    )
    engine.train_deadline = time.time()  # already due: the plan keeps a single step
    result = engine.finetune()
    plan = result.info["plan"]
    assert plan["planned_steps"] == 1 and plan["seconds_per_step"] > 0
    assert result.global_step == engine.sft_trainer.state.max_steps == 1
    assert _schedule_ended(engine.sft_trainer)
    assert result.info["best_checkpoint"].endswith("checkpoint-1")
    assert [log["step"] for log in engine.sft_trainer.state.log_history if "eval_loss" in log] == [
        1
    ]


def test_sft_without_a_time_limit_is_not_probed(tmp_path, tiny_causal_lm_path, sft_data):
    engine = DecoderFinetuneEngine(
        sft_data,
        model=tiny_causal_lm_path,
        output_dir=tmp_path,
        val_fraction=0,
        args=_fast(default_sft_config(tmp_path / "sft"), 2),
    )
    result = engine.finetune()
    assert result.info["plan"] is None and result.global_step == 2


def test_a_resumed_time_limited_sft_keeps_the_step_count_it_was_planned_with(
    tmp_path, tiny_causal_lm_path, sft_data
):
    class StopAfterOneStep(TrainerCallback):  # a run killed after its first checkpoint
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = True

    first = DecoderFinetuneEngine(
        sft_data,
        model=tiny_causal_lm_path,
        output_dir=tmp_path,
        val_fraction=0,
        args=_fast(default_sft_config(tmp_path / "sft"), 3),  # as if planned: 3 steps
        callbacks=[StopAfterOneStep()],
    )
    first.train_sft()
    assert (tmp_path / "sft" / "checkpoint-1").is_dir()
    (tmp_path / "sft-adapter" / "sft_complete.json").unlink()
    config = _unplanned(_fast(default_sft_config(tmp_path / "sft"), 1))
    again = DecoderFinetuneEngine(
        sft_data, model=tiny_causal_lm_path, output_dir=tmp_path, val_fraction=0, args=config
    )
    again.train_deadline = time.time() + 3600  # a fresh plan would take all 200 steps
    again.train_sft(resume_from_checkpoint=True)
    assert again.plan == {"rows": 8, "resumed_plan": True}
    assert again.sft_trainer.state.global_step == again.sft_trainer.state.max_steps == 3


def test_a_time_limited_dpo_stage_plans_its_steps_too(
    tmp_path, tiny_causal_lm_path, sft_data, preference_data
):
    preference = _unplanned(_fast(default_dpo_config(tmp_path / "dpo"), 1))  # 200 steps of 2
    engine = DecoderFinetuneEngine(
        sft_data,
        model=tiny_causal_lm_path,
        output_dir=tmp_path,
        val_fraction=0,
        preference_dataset=preference_data,
        args=_fast(default_sft_config(tmp_path / "sft"), 1),
        preference_args=preference,
        force_promotion=True,
    )
    engine.train_deadline = time.time()  # already due: one planned DPO step
    result = engine.finetune()
    plan = result.info["preference_plan"]
    assert plan["planned_steps"] == 1 and plan["seconds_per_step"] > 0
    trainer = engine.preference_trainer
    assert trainer.state.global_step == trainer.state.max_steps == 1
    assert _schedule_ended(trainer)
