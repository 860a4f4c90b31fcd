"""The decoder's preference stage never trains on the questions its validation scores.

Was: ``finetune()`` held questions out of SFT for validation (the loss that decides
promotion) but ran DPO / ORPO on every preference pair, those of the held-out questions
included, so the tuned model was validated on questions it had trained on.
"""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from llama_index_ragtune.finetuning.decoder import (  # noqa: E402
    DecoderFinetuneEngine,
    default_dpo_config,
    default_sft_config,
)
from llama_index_ragtune.finetuning.preference_holdout import leave_out_held_out  # noqa: E402
from llama_index_ragtune.grounding import build_messages  # noqa: E402


def _question(i: int) -> str:
    return f"When does store {i} open?"


def _prompt(question: str, i: int) -> list[dict[str, str]]:
    messages = build_messages(question, [f"Store {i} opens at {i} am."])
    return [{"role": m.role.value, "content": m.content} for m in messages]


def _sft_rows(indices, qid_prefix="q"):
    return datasets.Dataset.from_dict(
        {
            "prompt": [_prompt(_question(i), i) for i in indices],
            "completion": [[{"role": "assistant", "content": f"{i} am [1]"}] for i in indices],
            "qid": [f"{qid_prefix}{i}" for i in indices],
        }
    )


def _pairs(questions: dict[str, tuple[str, int]]):
    """Preference rows by qid: ``{qid: (question, store number)}``."""
    return datasets.Dataset.from_dict(
        {
            "prompt": [_prompt(q, i) for q, i in questions.values()],
            "chosen": [
                [{"role": "assistant", "content": f"{i} am [1]"}] for _, i in questions.values()
            ],
            "rejected": [[{"role": "assistant", "content": "No idea."}]] * len(questions),
            "qid": list(questions),
        }
    )


def _fast(config):
    config.max_steps = 1
    config.per_device_train_batch_size = 2
    config.gradient_accumulation_steps = 1
    config.max_length = 256
    config.save_steps = 1
    config.disable_tqdm = True
    return config


def _engine(tmp_path, model, sft, pairs, **kwargs) -> DecoderFinetuneEngine:
    return DecoderFinetuneEngine(
        sft,
        model=model,
        output_dir=tmp_path,
        preference_dataset=pairs,
        args=_fast(default_sft_config(tmp_path / "sft")),
        preference_args=_fast(default_dpo_config(tmp_path / "dpo")),
        eval_points=0,
        force_promotion=True,
        show_progress=False,
        **kwargs,
    )


def _trained_qids(engine) -> list[str]:
    """The qids of the preference rows the DPO trainer got, read back from their prompts."""
    by_prompt = {
        engine.tokenizer.apply_chat_template(p, tokenize=False): q
        for p, q in zip(
            engine.preference_dataset["prompt"], engine.preference_dataset["qid"], strict=True
        )
    }
    rows = engine.preference_trainer.train_dataset["prompt"]
    return sorted(by_prompt[engine.tokenizer.apply_chat_template(p, tokenize=False)] for p in rows)


def test_pairs_of_questions_held_out_for_validation_stay_out_of_the_preference_stage(
    tmp_path, tiny_causal_lm_path
):
    # each question's pair under its own qid, and a twin pair (same question up to case,
    # spacing and an invisible character) under another qid: both must follow the question
    questions = {f"q{i}": (_question(i), i) for i in range(8)}
    questions.update({f"t{i}": (f"when does STORE {i} o\u200bpen", i) for i in range(8)})
    engine = _engine(
        tmp_path, tiny_causal_lm_path, _sft_rows(range(8)), _pairs(questions), val_fraction=0.25
    )
    _, val = engine.split_validation()
    held = {int(q[1:]) for q in val["qid"]}
    assert len(held) == 2

    result = engine.finetune()

    expected = sorted(q for q, (_, i) in questions.items() if i not in held)
    assert _trained_qids(engine) == expected and len(expected) == 12
    assert result.info["preference_pairs"] == 12
    assert result.info["preference_pairs_held_out"] == 4
    assert result.info["preference_method"] == "dpo"


def test_a_given_val_dataset_keeps_its_questions_out_of_the_preference_stage(
    tmp_path, tiny_causal_lm_path
):
    """finetune() filters the pairs against ``split_validation()``'s rows (the first test
    runs it): a given ``val_dataset``, under qids of its own ("v8", "v9"), matched by question."""
    pairs = _pairs({f"p{i}": (_question(i), i) for i in range(10)})
    engine = _engine(
        tmp_path,
        tiny_causal_lm_path,
        _sft_rows(range(8)),
        pairs,
        val_dataset=_sft_rows([8, 9], qid_prefix="v"),
    )
    kept, left_out = leave_out_held_out(engine.preference_dataset, engine.split_validation()[1])
    assert kept["qid"] == [f"p{i}" for i in range(8)] and left_out == 2


def test_only_pairs_of_validation_questions_skip_the_preference_stage(
    tmp_path, tiny_causal_lm_path, caplog
):
    pairs = _pairs({f"p{i}": (_question(i), i) for i in (8, 9)})
    engine = _engine(
        tmp_path,
        tiny_causal_lm_path,
        _sft_rows(range(8)),
        pairs,
        val_dataset=_sft_rows([8, 9]),
    )
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.finetuning.decoder"):
        result = engine.finetune()
    assert engine.preference_trainer is None and engine.sft_trainer.state.global_step == 1
    assert result.info["preference_method"] is None
    assert result.info["preference_pairs"] == 0 and result.info["preference_pairs_held_out"] == 2
    assert "all 2 preference pairs are of validation questions" in caplog.text


def test_pairs_of_training_questions_only_are_all_kept():
    pairs = _pairs({f"q{i}": (_question(i), i) for i in range(4)})
    kept, left_out = leave_out_held_out(pairs, _sft_rows([5, 6]))
    assert kept is pairs and left_out == 0
    assert leave_out_held_out(pairs, None) == (pairs, 0)


def test_pairs_without_qids_or_grounded_prompts_match_validation_by_their_user_turn():
    chat = [[{"role": "user", "content": f"Say hello {i}."}] for i in range(3)]
    pairs = datasets.Dataset.from_dict(
        {
            "prompt": chat,
            "chosen": [[{"role": "assistant", "content": "Hello."}]] * 3,
            "rejected": [[{"role": "assistant", "content": "No."}]] * 3,
        }
    )
    val = datasets.Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": "say  HELLO 1"}]],
            "completion": [[{"role": "assistant", "content": "Hello."}]],
        }
    )
    kept, left_out = leave_out_held_out(pairs, val)
    assert [p[0]["content"] for p in kept["prompt"]] == ["Say hello 0.", "Say hello 2."]
    assert left_out == 1
