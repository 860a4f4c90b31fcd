"""Hostile inputs to the fine-tune engines (round s40): checkpoints written before
``ragtune_run.json``, hostile hyperparameters and output folders, hostile training rows, a
run killed between saving its model and writing its decision, NaN validation metrics."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest

datasets = pytest.importorskip("datasets")

from llama_index_ragtune.data.errors import DataError  # noqa: E402
from llama_index_ragtune.finetuning.base import BaseFinetuneEngine  # noqa: E402
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
from llama_index_ragtune.finetuning.promotion import decide_promotion  # noqa: E402
from tests.finetuning.conftest import FAST, toy_reranker_engine  # noqa: E402

CHECKPOINTS = "llama_index_ragtune.finetuning.checkpoints"
QUESTIONS = [f"When does store {i} open?" for i in range(8)]


def _sft_rows(answers=None):
    answers = answers or [f"At {i} am." for i in range(8)]
    return datasets.Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": q}] for q in QUESTIONS],
            "completion": [[{"role": "assistant", "content": a}] for a in answers],
            "qid": [f"q{i}" for i in range(8)],
        }
    )


def _decoder(model, out, steps=1, rows=None, **options) -> DecoderFinetuneEngine:
    config = default_sft_config(out / "sft")
    config.max_steps, config.per_device_train_batch_size = steps, 2
    config.warmup_steps, config.save_steps, config.max_length = 0, 1, 128
    config.disable_tqdm, config.logging_steps = True, 50
    return DecoderFinetuneEngine(
        rows if rows is not None else _sft_rows(), model=model, output_dir=out, args=config,
        budget=None, eval_points=0, show_progress=False, **options,
    )  # fmt: skip


def _encoder(data, model, out, max_steps=2, **options) -> EncoderFinetuneEngine:
    overrides = {**FAST, "max_steps": max_steps, "save_strategy": "steps", "save_steps": 1}
    overrides.update(options.pop("overrides", {}))
    return EncoderFinetuneEngine(
        data, model=model, val_dataset=data, budget=None, eval_points=0, fusion=None,
        args=EncoderFinetuneEngine.default_args(out, **overrides), show_progress=False,
        **options,
    )  # fmt: skip


@pytest.fixture(scope="module")
def old_encoder_run(tiny_encoder_path, tmp_path_factory, make_toy):
    """An encoder run whose checkpoints are as an older version wrote them: no RUN_MARKER."""
    out = tmp_path_factory.mktemp("old_encoder_run")
    _encoder(make_toy(), tiny_encoder_path, out).finetune()
    for marker in out.glob(f"checkpoint-*/{RUN_MARKER}"):
        marker.unlink()
    (out / "decision.json").unlink()
    return out


# ---------------------------------------------------------------- checkpoints without a marker


def test_an_old_checkpoint_of_another_kind_of_model_is_refused_or_skipped(
    old_encoder_run, tiny_encoder_path, make_toy, tmp_path, caplog
):
    """Was: resumed unchecked, then "loaded state dict contains a parameter group that doesn't
    match the size of optimizer's group" deep in the optimizer."""
    reranker = toy_reranker_engine(make_toy(), tiny_encoder_path, tmp_path / "reranker")
    with pytest.raises(ValueError, match="another kind of model: SentenceTransformer, this run's"):
        reranker.finetune(resume_from_checkpoint=str(old_encoder_run / "checkpoint-1"))
    assert not (tmp_path / "reranker" / "final").exists()
    run = run_identity("RerankerFinetuneEngine", reranker.model)
    with caplog.at_level(logging.WARNING, logger=CHECKPOINTS):
        assert resolve_resume(True, old_encoder_run, run) is None  # trains from the start
    assert "checkpoint-2 is not of this run" in caplog.text


def test_an_old_checkpoint_of_another_model_size_is_refused(
    old_encoder_run, tiny_encoder_path, tmp_path
):
    """Was: ``RuntimeError: Error(s) in loading state_dict for SentenceTransformer`` (size
    mismatch) after the index and the "before" scores were built."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    hf = tmp_path / "wide"
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=48, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    word = models.Transformer(str(hf), max_seq_length=32)
    pooling = models.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    wider = SentenceTransformer(modules=[word, pooling], device="cpu")
    run = run_identity("EncoderFinetuneEngine", wider)
    why = foreign_checkpoint(old_encoder_run / "checkpoint-1", run)
    assert why is not None and "hidden size: 32, this run's 48" in why
    with pytest.raises(ValueError, match="without ragtune_run.json"):
        resolve_resume(str(old_encoder_run / "checkpoint-1"), tmp_path, run)


def test_a_genuine_old_checkpoint_still_resumes_with_a_warning(
    old_encoder_run, tiny_encoder_path, make_toy, tmp_path, caplog
):
    engine = _encoder(make_toy(), tiny_encoder_path, tmp_path / "again", max_steps=3)
    with caplog.at_level(logging.WARNING, logger=CHECKPOINTS):
        result = engine.finetune(resume_from_checkpoint=str(old_encoder_run / "checkpoint-2"))
    assert result.info["resumed_from"] == str(old_encoder_run / "checkpoint-2")
    assert result.global_step == 3
    assert "could not be fully checked" in caplog.text
    assert "BertModel, hidden size 32" in caplog.text


def test_an_old_finished_sft_or_checkpoint_of_another_base_is_not_reused(
    tiny_causal_lm_path, tmp_path, caplog
):
    """Was: ``RuntimeError: Error(s) in loading state_dict for PeftModelForCausalLM``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(tiny_causal_lm_path)
    config.hidden_size, config.intermediate_size = 64, 128
    other = tmp_path / "lm64"
    LlamaForCausalLM(config).save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny_causal_lm_path).save_pretrained(other)
    out = tmp_path / "run"
    _decoder(str(other), out).train_sft()
    for marker in out.rglob(RUN_MARKER):
        marker.unlink()
    checkpoint = tmp_path / "old-checkpoint-1"  # this folder's is replaced by the run below
    shutil.copytree(out / "sft" / "checkpoint-1", checkpoint)
    done = out / "sft-adapter" / "sft_complete.json"
    done.write_text(json.dumps({"steps": 1}), encoding="utf-8")  # as an older version wrote it
    engine = _decoder(tiny_causal_lm_path, out)
    with caplog.at_level(logging.WARNING):
        engine.train_sft(resume_from_checkpoint=True)
    assert engine.sft_trainer is not None and engine.sft_trainer.state.global_step == 1
    assert "finished SFT of another model" in caplog.text
    assert "hidden size" in caplog.text and "64, this run's 32" in caplog.text
    # its base folder gone: the adapter's weight shapes still tell the two apart
    run = run_identity("DecoderFinetuneEngine", engine.sft_trainer.model)
    other.rename(tmp_path / "moved")
    why = foreign_checkpoint(checkpoint, run)
    assert why is not None and "another adapter weight shapes" in why
    # a genuine old checkpoint of the same base: resumed, with a warning
    (tmp_path / "moved").rename(other)
    own = _decoder(str(other), tmp_path / "own", steps=2)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=CHECKPOINTS):
        own.train_sft(resume_from_checkpoint=str(checkpoint))
    assert own.sft_trainer.state.global_step == 2
    assert "could not be fully checked" in caplog.text


# ---------------------------------------------------------------- hyperparameters, output_dir


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number > 0"),
        ({"learning_rate": -1e-3}, "learning_rate must be a finite number > 0"),
        ({"learning_rate": float("inf")}, "learning_rate must be a finite number > 0"),
        ({"learning_rate": 0.0}, "a learning rate of 0 trains nothing"),
        ({"num_train_epochs": float("nan"), "max_steps": -1}, "num_train_epochs must be"),
        ({"num_train_epochs": 0, "max_steps": -1}, "the run would train nothing"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size must be a whole"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps must be a whole"),
        ({"weight_decay": float("nan")}, "weight_decay must be a finite number"),
    ],
)
def test_hostile_hyperparameters_fail_when_the_engine_is_built(
    overrides, match, tiny_encoder_path, make_toy, tmp_path
):
    """Was: NaN / negative learning rates, batch 0 and zero accumulation failed (bare
    ``Invalid learning rate: nan``, ``ZeroDivisionError``) after the index and the "before"
    scores were built; NaN epochs as "cannot convert float NaN to integer"; an infinite
    learning rate or NaN weight decay trained NaN weights; 0 trained nothing."""
    with pytest.raises(ValueError, match=match) as caught:
        _encoder(make_toy(), tiny_encoder_path, tmp_path / "run", overrides=overrides)
    assert "EncoderFinetuneEngine: args." in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_hostile_decoder_preference_args_fail_when_built(tiny_causal_lm_path, tmp_path):
    from llama_index_ragtune.finetuning.decoder import default_dpo_config

    dpo = default_dpo_config(tmp_path / "dpo", "cpu")
    dpo.learning_rate = float("nan")
    with pytest.raises(ValueError, match=r"preference_args\.learning_rate must be"):
        _decoder(tiny_causal_lm_path, tmp_path / "run", preference_args=dpo)


def test_an_output_dir_behind_a_broken_link_or_a_file_fails_when_built(
    tiny_encoder_path, make_toy, tmp_path
):
    """Was: built, then ``FileExistsError`` / ``[Errno 40] Too many levels of symbolic
    links`` / ``NotADirectoryError`` from the trainer after the evaluation was built."""
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    dangling = tmp_path / "dangling"
    os.symlink(tmp_path / "nowhere" / "deep", dangling)
    a_file = tmp_path / "file"
    a_file.write_text("keep me", encoding="utf-8")
    cases = [
        (loop, "output_dir .*loop is a symbolic link loop"),
        (loop / "run", "a folder above output_dir .*loop is a symbolic link loop"),
        (dangling, "is a symbolic link to .*nowhere/deep, which does not exist"),
        (a_file / "run", "lies under .*file, which is a file"),
    ]
    for out, match in cases:
        with pytest.raises(NotADirectoryError, match=match):
            _encoder(make_toy(), tiny_encoder_path, out)
    assert a_file.read_text(encoding="utf-8") == "keep me"
    assert not (tmp_path / "nowhere").exists()


# ---------------------------------------------------------------- hostile rows


@pytest.mark.parametrize("label", [float("nan"), 0.5, None, float("inf"), -1.0])
def test_answerability_labels_other_than_0_or_1_are_refused_naming_the_row(
    label, tiny_encoder_path, tmp_path
):
    """Was: 0.5 trained as a soft label and validated as 0 (unanswerable); NaN / inf / None
    failed as a bare ``cannot convert float NaN to integer`` / ``OverflowError`` / ``TypeError``."""
    from llama_index_ragtune.finetuning.answerability import AnswerabilityFinetuneEngine

    rows = datasets.Dataset.from_dict(
        {"question": ["Who?", "When?"], "source": ["Ann did.", "No date."], "label": [1, label]}
    )
    with pytest.raises(DataError, match=r"train_dataset row 1 \(question 'When\?'\): labels must"):
        AnswerabilityFinetuneEngine(rows, model=tiny_encoder_path, output_dir=tmp_path / "a")


def test_decoder_rows_with_blank_answers_or_lone_surrogates_are_refused(
    tiny_causal_lm_path, tmp_path
):
    """Was: blank completions trained (and promoted) a model to answer nothing; a lone
    surrogate failed in Arrow as a ``UnicodeEncodeError`` naming no row; a preference pair
    whose rejected answer is the chosen one trained nothing."""
    answers = [f"At {i} am." for i in range(8)]
    answers[3], answers[5] = "", " \u200b "
    with pytest.raises(DataError, match=r"rows 3 \(qid 'q3'\), 5 \(qid 'q5'\): the completion"):
        _decoder(tiny_causal_lm_path, tmp_path / "blank", rows=_sft_rows(answers))
    rows = _sft_rows().to_list()
    rows[2]["completion"][0]["content"] = "At \ud800 am."
    with pytest.raises(DataError, match=r"row 2: completion\[0\]\.content holds a lone surr"):
        _decoder(tiny_causal_lm_path, tmp_path / "surrogate", rows=rows)
    pairs = datasets.Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": q}] for q in QUESTIONS[:2]],
            "chosen": [[{"role": "assistant", "content": a}] for a in ("At 1.", "At 2.")],
            "rejected": [[{"role": "assistant", "content": a}] for a in ("Never.", "At 2.")],
        }
    )
    with pytest.raises(DataError, match="row 1: the rejected answer is the chosen one"):
        _decoder(tiny_causal_lm_path, tmp_path / "pairs", preference_dataset=pairs)


# ---------------------------------------------------------------- killed while saving


class _Killed(BaseException):
    """The process dying between saving the models and writing the decision."""


def test_a_run_killed_before_its_decision_is_written_keeps_the_starting_model(
    tiny_encoder_path, make_toy, tmp_path, monkeypatch
):
    """Was: ``final/`` held the tuned model with no ``decision.json``, and
    ``get_finetuned_model()`` served it."""

    def killed(self, *args, **kwargs):
        raise _Killed

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(BaseFinetuneEngine, "_write_decision", killed)
        with pytest.raises(_Killed):
            _encoder(make_toy(), tiny_encoder_path, out, force_promotion=True).finetune()
    assert (out / "final" / "modules.json").is_file()  # the tuned model was saved
    engine = _encoder(make_toy(), tiny_encoder_path, out)
    assert engine.interrupted_run
    assert not engine.decision.promoted
    assert "interrupted after training, while saving" in engine.decision.reason
    assert engine.get_finetuned_model().model_name == str(tiny_encoder_path)
    engine.finetune()  # a new run replaces the record
    assert not engine.interrupted_run


def test_a_decoder_killed_before_its_decision_is_written_serves_the_base(
    tiny_causal_lm_path, tmp_path, monkeypatch
):
    def killed(self, *args, **kwargs):
        raise _Killed

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(BaseFinetuneEngine, "_write_decision", killed)
        with pytest.raises(_Killed):
            _decoder(tiny_causal_lm_path, out, force_promotion=True).finetune()
    assert (out / "merged" / "config.json").is_file()
    engine = _decoder(tiny_causal_lm_path, out)
    assert engine.get_finetuned_model().model == str(tiny_causal_lm_path)


# ---------------------------------------------------------------- NaN validation metrics


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_nan_validation_score_of_the_tuned_model_is_never_promoted_even_forced(bad):
    """Was: "promoted (forced)" with the tuned model's validation nDCG NaN."""
    decision = decide_promotion({"ndcg@10": 0.5}, {"ndcg@10": bad}, "ndcg@10", force=True)
    assert not decision.promoted and not decision.forced
    assert "never promoted, even when forced" in decision.reason
    # a broken starting model may still be replaced when forced
    assert decide_promotion({"ndcg@10": bad}, {"ndcg@10": 0.5}, "ndcg@10", force=True).promoted
