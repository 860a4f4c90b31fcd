"""Hostile inputs to the fine-tune engines (round s39): a diverged decoder run forced to
promotion, a file where an engine saves a model folder, and resuming a checkpoint of another
run (another engine, another starting model)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

datasets = pytest.importorskip("datasets")

from llama_index_ragtune.finetuning.checkpoints import (  # noqa: E402
    RUN_MARKER,
    foreign_checkpoint,
    resolve_resume,
    run_identity,
)
from llama_index_ragtune.finetuning.decoder import (  # noqa: E402
    DecoderFinetuneEngine,
    default_sft_config,
)
from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine  # noqa: E402
from tests.finetuning.conftest import FAST, Diverge, toy_reranker_engine  # noqa: E402

CHECKPOINTS = "llama_index_ragtune.finetuning.checkpoints"

QUESTIONS = [f"When does store {i} open?" for i in range(8)]


def _sft_rows():
    return datasets.Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": q}] for q in QUESTIONS],
            "completion": [[{"role": "assistant", "content": f"At {i} am."}] for i in range(8)],
            "qid": [f"q{i}" for i in range(8)],
        }
    )


def _decoder(model, out, steps=2, **options) -> DecoderFinetuneEngine:
    config = default_sft_config(out / "sft")
    config.max_steps, config.per_device_train_batch_size = steps, 2
    config.warmup_steps, config.save_steps, config.max_length = 0, 1, 128
    config.disable_tqdm, config.logging_steps = True, 50
    return DecoderFinetuneEngine(
        _sft_rows(), model=model, output_dir=out, args=config, budget=None, eval_points=0,
        show_progress=False, **options,
    )  # fmt: skip


def _encoder(data, model, out, max_steps=2, **options) -> EncoderFinetuneEngine:
    args = EncoderFinetuneEngine.default_args(
        out, **{**FAST, "max_steps": max_steps, "save_strategy": "steps", "save_steps": 1}
    )
    return EncoderFinetuneEngine(
        data, model=model, val_dataset=data, budget=None, eval_points=0, fusion=None,
        args=args, show_progress=False, **options,
    )  # fmt: skip


@pytest.fixture(scope="module")
def encoder_run(tiny_encoder_path, tmp_path_factory, make_toy):
    """An encoder run with checkpoints 1 and 2 in its folder."""
    out = tmp_path_factory.mktemp("encoder_run")
    _encoder(make_toy(), tiny_encoder_path, out).finetune()
    assert (out / "checkpoint-2" / RUN_MARKER).is_file()
    return out


# ---------------------------------------------------------------- a diverged decoder


def test_a_diverged_decoder_is_never_promoted_even_when_forced(tiny_causal_lm_path, tmp_path):
    """Was: "promoted (forced)", the NaN adapter saved to adapter/ and merged/ (the encoder,
    reranker and answerability engines already refused such a model)."""
    engine = _decoder(tiny_causal_lm_path, tmp_path, callbacks=[Diverge()], force_promotion=True)
    result = engine.finetune()
    assert not result.decision.promoted and not result.decision.forced
    assert "weights are NaN or infinite" in result.decision.reason
    assert "lower the learning rate" in result.decision.reason
    assert result.info["nonfinite_weights"]
    assert not engine.adapter_dir.exists() and not engine.merged_dir.exists()
    saved = json.loads(engine.decision_path.read_text(encoding="utf-8"))["decision"]
    assert saved["promoted"] is False
    assert engine.get_finetuned_model().model == str(tiny_causal_lm_path)  # the start served


# ---------------------------------------------------------------- output paths


def test_a_file_where_an_engine_saves_a_model_folder_fails_when_built(
    tiny_encoder_path, tmp_path, make_toy
):
    """Was: a ``NotADirectoryError`` from the atomic save after the whole training run."""
    for name in ("final", "challenger"):
        out = tmp_path / name
        out.mkdir()
        (out / name).write_text("keep me", encoding="utf-8")
        with pytest.raises(NotADirectoryError, match=rf"EncoderFinetuneEngine: .*{name} is a file"):
            _encoder(make_toy(), tiny_encoder_path, out)
        assert (out / name).read_text(encoding="utf-8") == "keep me"  # nothing lost
    (tmp_path / "json" / "decision.json").mkdir(parents=True)
    with pytest.raises(IsADirectoryError, match=r"decision\.json is a folder"):
        _encoder(make_toy(), tiny_encoder_path, tmp_path / "json")
    (tmp_path / "dec").mkdir()
    (tmp_path / "dec" / "merged").write_text("x", encoding="utf-8")
    with pytest.raises(NotADirectoryError, match="DecoderFinetuneEngine: .*merged is a file"):
        DecoderFinetuneEngine(_sft_rows(), model="org/not-loaded", output_dir=tmp_path / "dec")


# ---------------------------------------------------------------- resuming another run


def test_resuming_another_engines_checkpoint_or_folder_is_refused_or_skipped(
    encoder_run, tiny_encoder_path, make_toy, tmp_path, caplog
):
    """Was: a reranker resumed from an encoder's checkpoint failed deep in the optimizer
    ("loaded state dict contains a parameter group that doesn't match ..."); one trained in
    the encoder's folder replaced the encoder's ``final/`` and ``decision.json``."""
    data = make_toy()
    with pytest.raises(FileExistsError, match="holds a EncoderFinetuneEngine run"):
        toy_reranker_engine(data, tiny_encoder_path, encoder_run)  # would replace its final/
    reranker = toy_reranker_engine(data, tiny_encoder_path, tmp_path / "reranker")
    with pytest.raises(ValueError, match="written by EncoderFinetuneEngine, not Reranker"):
        reranker.finetune(resume_from_checkpoint=str(encoder_run / "checkpoint-2"))
    assert not (tmp_path / "reranker" / "final").exists()
    run = run_identity("RerankerFinetuneEngine", reranker.model)
    with caplog.at_level(logging.WARNING, logger=CHECKPOINTS):
        assert resolve_resume(True, encoder_run, run) is None  # trains from the start
    assert "checkpoint-2 is not of this run" in caplog.text
    assert "checkpoint-1 is not of this run" in caplog.text


def test_resuming_a_checkpoint_of_another_starting_model_is_refused_or_skipped(
    encoder_run, tiny_encoder_path, make_tiny_encoder, tmp_path, make_toy, caplog
):
    """Was: the run silently continued the other model's training (its weights replaced the
    starting model's, which validation had scored as the champion)."""
    other = make_tiny_encoder(tmp_path / "other", seed=1)
    engine = _encoder(make_toy(), other, tmp_path / "run")
    with pytest.raises(ValueError, match="trained from another starting model"):
        engine.finetune(resume_from_checkpoint=str(encoder_run / "checkpoint-1"))
    run = run_identity("EncoderFinetuneEngine", engine.model)
    with caplog.at_level(logging.WARNING, logger=CHECKPOINTS):
        assert resolve_resume(True, encoder_run, run) is None
    assert "another starting model" in caplog.text
    # the same starting model, loaded again: its own checkpoint, resumed
    same = _encoder(make_toy(), tiny_encoder_path, tmp_path / "same")
    own = run_identity("EncoderFinetuneEngine", same.model)
    assert foreign_checkpoint(encoder_run / "checkpoint-2", own) is None
    assert resolve_resume(True, encoder_run, own) == str(encoder_run / "checkpoint-2")


def test_a_finished_sft_of_another_base_model_is_not_reused(tiny_causal_lm_path, tmp_path, caplog):
    """Was: ``resume_from_checkpoint=True`` loaded the other base's SFT adapter onto this base
    and skipped SFT."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    other = tmp_path / "other_lm"
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm_path)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01)
    model.save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny_causal_lm_path).save_pretrained(other)
    out = tmp_path / "run"
    first = _decoder(str(other), out, steps=1)
    first.train_sft()
    assert first.sft_trainer is not None
    again = _decoder(str(other), out, steps=1)
    again.train_sft(resume_from_checkpoint=True)
    assert again.sft_trainer is None  # its own finished SFT: reused
    switched = _decoder(tiny_causal_lm_path, out, steps=1)
    with caplog.at_level(logging.WARNING):
        switched.train_sft(resume_from_checkpoint=True)
    assert switched.sft_trainer is not None  # trained again
    assert "finished SFT of another starting model" in caplog.text
    assert switched.sft_trainer.state.global_step == 1


# ---------------------------------------------------------------- answerability validation


def _answerability(data, model, out, **options):
    from llama_index_ragtune.finetuning.answerability import AnswerabilityFinetuneEngine

    args = AnswerabilityFinetuneEngine.default_args(
        out, max_steps=2, per_device_train_batch_size=16, use_cpu=True,
        seed=options.pop("seed", 42),
    )  # fmt: skip
    return AnswerabilityFinetuneEngine(
        data, model=model, args=args, budget=None, show_progress=False, **options
    )


def _kinds(rows) -> set[bool]:
    answerable: dict[str, bool] = {}
    for qid, label in zip(rows["qid"], rows["label"], strict=True):
        answerable[qid] = answerable.get(qid, False) or bool(label)
    return set(answerable.values())


def test_a_carved_answerability_split_holds_both_kinds_of_question(tiny_encoder_path, tmp_path):
    """Was: with seed 1, both held-out questions of eight were answerable: the AUC that decides
    was undefined, the run trained and kept the start saying "no validation metrics"."""
    from tests.finetuning.test_answerability import toy_pairs

    for seed in range(6):
        engine = _answerability(toy_pairs(8), tiny_encoder_path, tmp_path / f"s{seed}", seed=seed)
        train, val = engine.split_validation()
        assert _kinds(val) == {True, False}, seed
        assert not set(train["qid"]) & set(val["qid"])


def test_answerability_validation_of_one_kind_fails_before_training_or_says_why(
    tiny_encoder_path, tmp_path, caplog
):
    from llama_index_ragtune.data.errors import DataError
    from tests.finetuning.test_answerability import toy_pairs

    data = toy_pairs(16)
    unanswerable = data.filter(lambda row: int(row["qid"][1:]) % 2 == 1)
    engine = _answerability(data, tiny_encoder_path, tmp_path / "given", val_dataset=unanswerable)
    with pytest.raises(DataError, match="val_dataset has no answerable question"):
        engine.finetune()
    assert not (tmp_path / "given").exists()  # nothing trained, nothing written
    # every question answerable (each has unanswering sources): no split can measure the AUC
    answerable = data.filter(lambda row: int(row["qid"][1:]) % 2 == 0)
    engine = _answerability(answerable, tiny_encoder_path, tmp_path / "carved")
    with caplog.at_level(logging.WARNING):
        engine.split_validation()
    assert "every validation split tried holds no unanswerable question" in caplog.text
