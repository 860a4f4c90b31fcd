"""Hostile inputs to the fine-tune engines (round s44): the engines' own counts given as NaN,
2.5, text or True; an output_dir that is, or lies inside, the starting model's folder; a
starting model inside a folder the run replaces; a batch the data cannot fill with
``dataloader_drop_last``; NaN first-stage scores for the reranker's validation; a text
``force_promotion``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("datasets")

from llama_index_ragtune.finetuning.decoder import (  # noqa: E402
    DecoderFinetuneEngine,
    default_sft_config,
)
from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine  # noqa: E402
from llama_index_ragtune.finetuning.ranking_eval import (  # noqa: E402
    CandidateRerankingEvaluator,
    first_stage_score,
)
from llama_index_ragtune.finetuning.reranker import RerankerFinetuneEngine  # noqa: E402
from llama_index_ragtune.finetuning.training_args_check import check_count  # noqa: E402
from tests.finetuning.conftest import FAST, toy_dataset  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return toy_dataset()


@pytest.fixture(scope="module")
def bert_folder(tiny_encoder_path) -> str:
    """The tiny BERT as a plain Hugging Face folder (a cross-encoder gets a new head)."""
    return str(Path(tiny_encoder_path).parent / "hf")


def _encoder(data, model, out, targs=None, **options) -> EncoderFinetuneEngine:
    args = EncoderFinetuneEngine.default_args(out, **{**FAST, **(targs or {})})
    options.setdefault("eval_points", 0)
    return EncoderFinetuneEngine(
        data, model=model, val_dataset=data, budget=None, fusion=None, args=args,
        show_progress=False, **options,
    )  # fmt: skip


def _reranker(data, model, out, **options) -> RerankerFinetuneEngine:
    candidates = {q: list(data.corpus)[:8] for q in data.query_ids}
    return RerankerFinetuneEngine(
        data, model=model, val_dataset=data, candidates=candidates, rerank_depth=8, budget=None,
        eval_points=0, args=RerankerFinetuneEngine.default_args(out, **FAST),
        show_progress=False, **options,
    )  # fmt: skip


def _decoder(model, out, **options) -> DecoderFinetuneEngine:
    import datasets

    rows = datasets.Dataset.from_dict(
        {
            "prompt": [
                [{"role": "user", "content": f"When does store {i} open?"}] for i in range(4)
            ],
            "completion": [[{"role": "assistant", "content": f"At {i} am."}] for i in range(4)],
            "qid": [f"q{i}" for i in range(4)],
        }
    )
    config = default_sft_config(Path(out) / "sft")
    config.max_steps, config.per_device_train_batch_size, config.max_length = 1, 2, 64
    return DecoderFinetuneEngine(
        rows, model=model, output_dir=out, args=config, budget=None, show_progress=False,
        **options,
    )  # fmt: skip


# ---------------------------------------------------------------- the engines' own counts


@pytest.mark.parametrize(
    ("value", "error"),
    [(float("nan"), ValueError), (2.5, ValueError), (-1, ValueError), ("2", TypeError),
     (True, TypeError), (None, TypeError)],
)  # fmt: skip
def test_check_count_names_the_argument(value, error):
    with pytest.raises(error, match=r"Engine: eval_points must be a whole number >= 0"):
        check_count("Engine", "eval_points", value, 0, 2)


def test_check_count_keeps_whole_numbers():
    """Good input unchanged: ints pass, a whole float is read as its int."""
    assert check_count("Engine", "eval_points", 3, 0, 2) == 3
    assert isinstance(check_count("Engine", "eval_points", 2.0, 0, 2), int)


@pytest.mark.parametrize(
    ("argument", "value"),
    [("eval_points", float("nan")), ("eval_points", 2.5), ("eval_points", "2"),
     ("max_negatives_per_query", 1.5), ("max_negatives_per_query", True),
     ("min_grade", float("nan"))],
)  # fmt: skip
def test_encoder_counts_refused_when_built(data, tiny_encoder_path, tmp_path, argument, value):
    """Were: NaN eval_points "cannot convert float NaN to integer" after the "before" scores;
    1.5 negatives "'float' object cannot be interpreted as an integer"; True one negative;
    a NaN min_grade "no training pair left"."""
    with pytest.raises((ValueError, TypeError), match=f"EncoderFinetuneEngine: {argument} must"):
        _encoder(data, tiny_encoder_path, tmp_path / "out", **{argument: value})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argument", "value"),
    [("rerank_depth", 2.5), ("rerank_depth", float("nan")), ("max_negatives_per_query", 2.5),
     ("eval_points", float("inf")), ("max_length", 0), ("max_length", -3),
     ("max_length", "64")],
)  # fmt: skip
def test_reranker_counts_refused_when_built(data, bert_folder, tmp_path, argument, value):
    """Were: max_length=0 trained on empty inputs, -3 an OverflowError in the tokenizer, 2.5
    negatives a TypeError after the "before" scores."""
    options = {"rerank_depth": 8, argument: value}
    candidates = {q: list(data.corpus)[:8] for q in data.query_ids}
    with pytest.raises((ValueError, TypeError), match=f"RerankerFinetuneEngine: {argument} must"):
        RerankerFinetuneEngine(
            data, model=bert_folder, val_dataset=data, candidates=candidates, budget=None,
            args=RerankerFinetuneEngine.default_args(tmp_path / "out", **FAST),
            show_progress=False, **options,
        )  # fmt: skip


def test_decoder_eval_points_refused(tiny_causal_lm_path, tmp_path):
    with pytest.raises(ValueError, match="DecoderFinetuneEngine: eval_points must be a whole"):
        _decoder(tiny_causal_lm_path, tmp_path / "out", eval_points=float("nan"))


@pytest.mark.parametrize("value", ["false", "no", 0, 1])
def test_force_promotion_must_be_a_bool(data, tiny_encoder_path, tmp_path, value):
    """Was: bool("false") is True, so force_promotion="false" promoted whatever validation said."""
    with pytest.raises(TypeError, match="force_promotion must be True or False"):
        _encoder(data, tiny_encoder_path, tmp_path / "out", force_promotion=value)


@pytest.mark.parametrize("value", [False, np.bool_(False)])
def test_force_promotion_takes_python_and_numpy_bools(data, tiny_encoder_path, tmp_path, value):
    engine = _encoder(data, tiny_encoder_path, tmp_path / "out", force_promotion=value)
    assert not engine.force_promotion


def test_val_fraction_as_text_is_named(data, tiny_encoder_path, tmp_path):
    """Was: "'<=' not supported between instances of 'float' and 'str'"."""
    with pytest.raises(TypeError, match="val_fraction must be a number in"):
        _encoder(data, tiny_encoder_path, tmp_path / "out", val_fraction="0.1")


# ---------------------------------------------------------------- output_dir and the model


def _model_copy(tiny_encoder_path, where: Path) -> Path:
    shutil.copytree(tiny_encoder_path, where)
    return where


def test_output_dir_is_the_starting_models_folder(data, tiny_encoder_path, tmp_path):
    """Was: checkpoints, final/ and decision.json written among the model's files."""
    model = _model_copy(tiny_encoder_path, tmp_path / "model")
    files = sorted(p.name for p in model.iterdir())
    with pytest.raises(ValueError, match="is the starting model's folder"):
        _encoder(data, str(model), model)
    with pytest.raises(ValueError, match="lies inside the starting model's folder"):
        _encoder(data, str(model), model / "runs" / "encoder")
    assert sorted(p.name for p in model.iterdir()) == files


def test_starting_model_in_a_folder_the_run_replaces(
    data, tiny_encoder_path, bert_folder, tmp_path
):
    """A starting model in challenger/ was overwritten by the losing model; one in a
    checkpoint-N was rotated away; the decoder's merged/ was deleted when the tuned model lost."""
    out = tmp_path / "out"
    for folder in ("challenger", "checkpoint-50"):
        model = _model_copy(tiny_encoder_path, out / folder)
        with pytest.raises(ValueError, match=f"lies in .*{folder}.*copy the model elsewhere"):
            _encoder(data, str(model), out)
        with pytest.raises(ValueError, match=f"lies in .*{folder}"):
            _reranker(data, str(model), out)
    # final/ holds the model in use: tuning on from it is allowed (replaced only by a winner)
    final = _model_copy(tiny_encoder_path, out / "final")
    assert _encoder(data, str(final), out).output_dir == out


def test_decoder_starting_model_in_its_merged_folder(tiny_causal_lm_path, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tiny_causal_lm_path, out / "merged")
    with pytest.raises(ValueError, match=r"DecoderFinetuneEngine: the starting model .* lies in"):
        _decoder(str(out / "merged"), out)
    assert (out / "merged" / "config.json").is_file()


# ---------------------------------------------------------------- batches the data cannot fill


def test_drop_last_with_a_batch_larger_than_the_data(data, tiny_encoder_path, tmp_path):
    """Was: the "before" scores, then "args.max_steps must be set to a positive value if
    dataloader does not have a length" from the trainer."""
    targs = {"per_device_train_batch_size": 1000, "dataloader_drop_last": True, "max_steps": -1}
    engine = _encoder(data, tiny_encoder_path, tmp_path / "out", targs=targs)
    with pytest.raises(ValueError, match=r"args.dataloader_drop_last=True drops every batch"):
        engine.finetune()
    assert not (tmp_path / "out" / "decision.json").exists()


def test_a_batch_larger_than_the_data_still_trains(data, tiny_encoder_path, tmp_path):
    """Good input unchanged: without drop_last the one short batch trains."""
    targs = {"per_device_train_batch_size": 1000, "max_steps": 1}
    result = _encoder(data, tiny_encoder_path, tmp_path / "out", targs=targs).finetune()
    assert result.global_step == 1
    assert (tmp_path / "out" / "final" / "modules.json").is_file()


# ---------------------------------------------------------------- first-stage scores


@pytest.mark.parametrize(
    ("bad", "error"),
    [(float("nan"), ValueError), (float("-inf"), ValueError), ("x", TypeError), (None, TypeError)],
)
def test_reranker_first_stage_scores_must_be_finite(data, bert_folder, tmp_path, bad, error):
    """Was: a NaN score made that query's blended list NaN (arbitrary order) and the tuned
    model was promoted on it; text or None failed as a bare float() error."""
    scores = {q: [1.0 - i / 10 for i in range(8)] for q in data.query_ids}
    scores["q3"][2] = bad
    with pytest.raises(error, match=r"candidate_scores\['q3'\]\[2\]"):
        _reranker(data, bert_folder, tmp_path / "out", candidate_scores=scores)
    with pytest.raises(error, match=r"candidate_scores\['q3'\]\[2\]"):
        CandidateRerankingEvaluator(
            data.queries, data.corpus, data.relevant_docs,
            {q: list(data.corpus)[:8] for q in data.query_ids}, candidate_scores=scores,
            retrieval_weight=0.5,
        )  # fmt: skip


def test_first_stage_scores_of_numpy_and_torch_are_read():
    import numpy as np
    import torch

    assert first_stage_score("q", 0, np.float32(0.5)) == 0.5
    assert first_stage_score("q", 1, torch.tensor(0.25)) == 0.25
    assert first_stage_score("q", 2, 3) == 3.0


# ---------------------------------------------------------------- matryoshka dimensions, prompts


@pytest.mark.parametrize(
    ("dims", "error", "match"),
    [([float("nan")], ValueError, "matryoshka_dims item must be a whole number"),
     ([16.5], ValueError, "matryoshka_dims item must be a whole number"),
     (["16"], TypeError, "matryoshka_dims item must be a whole number"),
     ([16, 16], ValueError, "lists a dimension twice"),
     ("16", TypeError, "matryoshka_dims must be a list")],
)  # fmt: skip
def test_matryoshka_dims_checked_when_built(data, tiny_encoder_path, tmp_path, dims, error, match):
    """Was: NaN passed the range check (NaN < 1 is False) and failed in the loss after the
    "before" scores; [16, 16] counted the 16-dimension loss twice."""
    with pytest.raises(error, match=match):
        _encoder(data, tiny_encoder_path, tmp_path / "out", matryoshka_dims=dims)


def test_prompts_must_be_texts(data, tiny_encoder_path, tmp_path):
    with pytest.raises(TypeError, match="EncoderFinetuneEngine: query_prompt must be a text"):
        _encoder(data, tiny_encoder_path, tmp_path / "out", query_prompt=5)


# ---------------------------------------------------------------- a damaged decision.json


@pytest.mark.parametrize(
    ("text", "match"),
    [('{"decision": {"promoted": "false", "metric": "m", "champion": 0.1, '
      '"challenger": 0.2, "margin": 0.0}}', "'promoted' must be true or false"),
     ('{"decision": {"promoted": false, "metric": "m"}}', "without"),
     ('{"decision": {"promoted": false, "metric": "m", "champion": "0.1", '
      '"challenger": 0.2, "margin": 0.0}}', "'champion' must be a number"),
     ('{"decision": {"promot', "damaged"),
     ("[1]", "damaged")],
)  # fmt: skip
def test_a_damaged_decision_file_is_named(data, tiny_encoder_path, tmp_path, text, match):
    """Was: "promoted": "false" read as promoted (a text is true), a cut-short file a bare
    JSONDecodeError, a missing field a TypeError from the dataclass."""
    engine = _encoder(data, tiny_encoder_path, tmp_path / "out")
    (tmp_path / "out").mkdir()
    engine.decision_path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=match) as caught:
        engine.decision  # noqa: B018
    assert "decision.json is damaged" in str(caught.value)


def test_a_good_decision_file_is_read(data, tiny_encoder_path, tmp_path):
    engine = _encoder(data, tiny_encoder_path, tmp_path / "out", targs={"max_steps": 1})
    engine.finetune()
    engine.result = None  # read back from decision.json
    assert engine.decision.promoted in (True, False)
    assert engine.decision.metric


# ---------------------------------------------------------------- resume_from_checkpoint


@pytest.mark.parametrize("resume", [1, 5, 2.5, ["checkpoint-1"]])
def test_resume_argument_of_another_type_is_named_before_scoring(
    data, tiny_encoder_path, tmp_path, resume
):
    """Was: the "before" scores, then "expected str, bytes or os.PathLike object, not int"."""
    engine = _encoder(data, tiny_encoder_path, tmp_path / "out")
    with pytest.raises(TypeError, match="resume_from_checkpoint must be True"):
        engine.finetune(resume_from_checkpoint=resume)
    assert engine.trainer is None  # nothing scored or trained


def test_decoder_stage_checkpoints_inside_the_starting_model(tiny_causal_lm_path, tmp_path):
    """The SFT stage's own output_dir (args.output_dir) inside the starting model's folder: its
    checkpoints would be written among the model's files."""
    model = tmp_path / "lm"
    shutil.copytree(tiny_causal_lm_path, model)
    config = default_sft_config(model / "sft-checkpoints")
    with pytest.raises(ValueError, match=r"\(args.output_dir\): output_dir .* lies inside"):
        DecoderFinetuneEngine(
            _decoder(str(model), tmp_path / "out").train_dataset, model=str(model),
            output_dir=tmp_path / "out", args=config, budget=None, show_progress=False,
        )  # fmt: skip
    assert not (model / "sft-checkpoints").exists()


@pytest.mark.parametrize("weights", [0.5, "0.5", None, [0.0, "x"]])
def test_reranker_retrieval_weights_not_a_list(data, bert_folder, tmp_path, weights):
    """Was: "'float' object is not iterable" / "could not convert string to float: '.'"."""
    with pytest.raises(TypeError, match="retrieval_weights must be a list of numbers"):
        _reranker(data, bert_folder, tmp_path / "out", retrieval_weights=weights)


@pytest.mark.parametrize(
    ("fields", "match"),
    [({"r": 0}, "lora_config.r must be a whole number >= 1"),
     ({"r": 2.5}, "lora_config.r must be"),
     ({"lora_alpha": float("nan")}, "lora_config.lora_alpha must be a finite number > 0"),
     ({"lora_dropout": 1.5}, r"lora_config.lora_dropout must be a finite number in \[0, 1\)")],
)  # fmt: skip
def test_decoder_lora_config_checked_when_built(tiny_causal_lm_path, tmp_path, fields, match):
    """Were: r=0 "`r` should be a positive integer" after the "before" loss, a NaN alpha a
    whole run trained to NaN weights, dropout 1.5 a torch error when the adapter was built."""
    from peft import LoraConfig

    config = LoraConfig(**{"r": 4, "lora_alpha": 8, "task_type": "CAUSAL_LM", **fields})
    with pytest.raises((ValueError, TypeError), match=match):
        _decoder(tiny_causal_lm_path, tmp_path / "out", lora_config=config)


# ---------------------------------------------------------------- fusion settings


@pytest.mark.parametrize(
    ("fusion", "error", "match"),
    [({"fusion_mode": "minmax", "alpha": float("nan")}, ValueError, r"fusion\['alpha'\]"),
     ({"fusion_mode": "rrf", "rrf_k": -5}, ValueError, r"fusion\['rrf_k'\] must be"),
     ({"fusion_mode": "zscore", "dense_top_k": 2.5}, ValueError, r"fusion\['dense_top_k'\]"),
     ({"fusion_mode": "zscore", "dense_top_k": 0}, ValueError, r"fusion\['dense_top_k'\]"),
     ({"alpha": "0.5"}, TypeError, r"fusion\['alpha'\] must be a number"),
     (5, TypeError, "fusion must be a mode name")],
)  # fmt: skip
def test_fusion_settings_checked_when_built(
    data, tiny_encoder_path, bert_folder, tmp_path, fusion, error, match
):
    """Were errors at the "before" scores naming no argument (a NaN alpha, 2.5 candidates, a
    text); dense_top_k=0 validated the encoder on BM25's ranking alone."""
    args = EncoderFinetuneEngine.default_args(tmp_path / "e", **FAST)
    with pytest.raises(error, match=f"EncoderFinetuneEngine: {match}"):
        EncoderFinetuneEngine(data, model=tiny_encoder_path, fusion=fusion, args=args)
    with pytest.raises(error, match=f"RerankerFinetuneEngine: {match}"):
        _reranker(data, bert_folder, tmp_path / "r", fusion=fusion)


def test_good_fusion_settings_pass(data, tiny_encoder_path, tmp_path):
    args = EncoderFinetuneEngine.default_args(tmp_path / "e", **FAST)
    for fusion in (None, "auto", "rrf", {"fusion_mode": "minmax", "alpha": 0.4, "rrf_k": 60.0}):
        engine = EncoderFinetuneEngine(data, model=tiny_encoder_path, fusion=fusion, args=args)
        assert engine.fusion == fusion
