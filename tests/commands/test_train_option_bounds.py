"""``ragtune train ...``: a count, share, rate or budget no run can use (NaN, inf, 0, a
negative number) is a usage error naming the option, found when the command line is
parsed: it used to be a traceback from deep inside the data builders or the trainer, or
a silent start of a training run that failed (or promoted nothing) at its end."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from llama_index_ragtune.cli import _build_parser, main
from llama_index_ragtune.commands.options import bounded

DECODER = ["train", "decoder", "--qa", "qa.jsonl", "--out", "o"]
ENCODER = ["train", "encoder", "--dataset", "d.json", "--out", "o"]
RERANKER = ["train", "reranker", "--dataset", "d.json", "--out", "o"]


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        # were raw ValueErrors from GroundedSFTBuilder / random.sample before training
        (DECODER, "--top-k", "0"),
        (DECODER, "--p-no-gold", "nan"),
        (DECODER, "--p-no-gold", "-0.5"),
        (DECODER, "--train-answerable-share", "nan"),
        (DECODER, "--max-test-examples", "-1"),
        (DECODER, "--max-train-examples", "-1"),
        # were accepted: training started, and failed or made no sense only later
        (DECODER, "--max-context-chars", "0"),  # "none of the questions has an answer"
        (DECODER, "--epochs", "nan"),
        (DECODER, "--epochs", "inf"),
        (DECODER, "--learning-rate", "-1"),
        (DECODER, "--dpo-learning-rate", "nan"),
        (DECODER, "--max-length", "0"),
        (DECODER, "--max-new-tokens", "0"),
        (DECODER, "--generation-batch-size", "0"),
        (DECODER, "--lora-top-layers", "0"),
        (DECODER, "--dev-examples", "-1"),
        (DECODER, "--answerability-minutes", "inf"),
        (DECODER, "--answerability-max-length", "0"),
        (ENCODER, "--epochs", "0"),
        (ENCODER, "--learning-rate", "nan"),
        (ENCODER, "--train-batch-size", "0"),
        (ENCODER, "--val-fraction", "1.5"),
        (ENCODER, "--max-pairs", "0"),
        (ENCODER, "--time-budget", "nan"),
        (ENCODER, "--time-budget", "1e308"),
        (ENCODER, "--promotion-margin", "-1"),  # decide_promotion refused it after training
        (RERANKER, "--promotion-margin", "inf"),
        (RERANKER, "--num-negatives", "-1"),
        (RERANKER, "--save-steps", "0"),
    ],
)
def test_an_unusable_number_is_a_usage_error_naming_the_option(command, option, value, capsys):
    argv = [*command, option, value]
    with pytest.raises(SystemExit) as info:
        _build_parser(argv).parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and f"got '{value}'" in err


@pytest.mark.parametrize(
    ("command", "given"),
    [
        (DECODER, ["--top-k", "2", "--p-no-gold", "0", "--max-test-examples", "0"]),
        (DECODER, ["--answerability-minutes", "0", "--multihop-test-examples", "0"]),
        (ENCODER, ["--time-budget", "none", "--val-fraction", "0", "--warmup", "2"]),
        (ENCODER, ["--time-budget", "2.5", "--promotion-margin", "0", "--lr", "2e-5"]),
    ],
)
def test_the_values_at_the_edges_still_work(command, given):
    argv = [*command, *given]
    _build_parser(argv).parse_args(argv)


def test_bounded_names_what_it_expects():
    with pytest.raises(argparse.ArgumentTypeError, match=r"a whole number >= 1, got '1\.5'"):
        bounded(int, 1)("1.5")
    with pytest.raises(argparse.ArgumentTypeError, match="a number from 0 to 1, got 'nan'"):
        bounded(float, 0, 1)("nan")
    with pytest.raises(argparse.ArgumentTypeError, match="a number > 0 and at most 5, got '0'"):
        bounded(float, 0, 5, above=True)("0")
    assert bounded(float, 0, 1)("1") == 1.0 and bounded(int, 0)("0") == 0


# ---------------------------------------------------------------------- before any data


def _qa(tmp_path: Path) -> Path:
    hours = {"id": "hours", "text": "The store opens at 8am."}
    fees = {"id": "fees", "text": "A restocking fee of 15 percent applies."}
    lines = [
        {"question": f"When do you open {i}?", "sources": [fees, hours], "gold": ["hours"]}
        | {"answer": "8am"}
        for i in range(4)
    ]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dtype", "float99"], "argument --dtype: Unknown dtype 'float99'"),
        (["--device", "gpu"], "argument --device: device='gpu' is not a torch device"),
    ],
)
def test_a_dtype_or_device_typo_fails_before_the_data_is_prepared(
    tmp_path, capsys, monkeypatch, tiny_causal_lm_path, flags, message
):
    """Were found only when the models answered the test questions, after training (a
    dtype) or when the trainer moved the model (a device)."""
    from llama_index_ragtune.commands import train_decoder

    def prepared(*args, **kwargs):
        raise AssertionError("the data was prepared")

    monkeypatch.setattr(train_decoder, "prepare_grounded_data", prepared)
    out = tmp_path / "out"
    argv = ["train", "decoder", "--qa", str(_qa(tmp_path)), "--out", str(out)]
    assert main([*argv, "--base-model", tiny_causal_lm_path, *flags]) == 2
    err = capsys.readouterr().err
    assert f"ragtune train decoder: error: {message}" in err and "Traceback" not in err
    assert not out.exists()


def test_p_no_gold_of_one_names_the_option_not_the_file(tmp_path, capsys, tiny_causal_lm_path):
    """Every training answer became a refusal, and the error blamed the QA file."""
    out = tmp_path / "out"
    argv = ["train", "decoder", "--qa", str(_qa(tmp_path)), "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--base-model", tiny_causal_lm_path, "--p-no-gold", "1"]) == 1
    err = capsys.readouterr().err
    assert "ragtune train decoder: error: --p-no-gold 1 turns every training answer" in err
    assert not out.exists()


# ------------------------------------------------------------- every numeric option

# Checked by the command before its work instead (a usage error naming the option, exit status 2):
# tests/pipeline/test_cli_inputs_hostile.py covers each.
CHECKED_BY_THE_COMMAND = {
    ("llama_index_ragtune/commands/refresh.py", "--time-budget"),
    ("llama_index_ragtune/commands/refresh.py", "--eval-fraction"),
    ("llama_index_ragtune/commands/refresh.py", "--margin"),
    ("llama_index_ragtune/commands/tune.py", "--time-budget"),
}


def _plain_number_options() -> list[tuple[str, str]]:
    import ast

    root = Path(__file__).resolve().parents[2]
    found = []
    for path in sorted([*root.glob("llama_index_ragtune/**/*.py"), *root.glob("benchmarks/*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in ast.walk(tree):
            if not (
                isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "add_argument"
            ):
                continue
            kind = next((k.value for k in call.keywords if k.arg == "type"), None)
            if isinstance(kind, ast.Name) and kind.id in ("int", "float") and call.args:
                found.append((path.relative_to(root).as_posix(), ast.literal_eval(call.args[0])))
    return found


def test_every_numeric_option_says_which_values_it_takes():
    # was: about 35 options (`bench load --threads 0`, `bench generation --grpo-generations 1`,
    # `train reranker --rerank-depth 0`, `tune --max-test-questions -1`, ...) were plain
    # `int` / `float`: the bad value surfaced as a traceback after loading models and data
    plain = set(_plain_number_options())
    assert plain - CHECKED_BY_THE_COMMAND == set()
    assert plain >= CHECKED_BY_THE_COMMAND, "an exemption no longer needed: remove it"


@pytest.mark.parametrize(
    ("argv", "option", "value"),
    [
        (["bench", "load", "--beir", "b"], "--threads", "0"),
        (["bench", "load", "--beir", "b"], "--warmup", "-1"),
        (["bench", "retrieval", "--beir", "b"], "--rerank-depth", "0"),
        (["bench", "generation", "--squad", "s"], "--grpo-generations", "1"),
        (["bench", "generation", "--squad", "s"], "--mined-temperature", "0"),
        (["bench", "synthetic", "--out", "o"], "--per-node", "0"),
        (["bench", "synthetic", "--out", "o"], "--encoder-minutes", "inf"),
        (["bench", "tuning", "--beir", "b", "--out", "o"], "--max-test-queries", "0"),
        (["bench", "hostile"], "--scale", "nan"),
        (["bench", "scale"], "--noise", "-0.1"),
        (["tune", "--docs", ".", "--out", "o"], "--max-test-questions", "0"),
        (RERANKER, "--rerank-depth", "0"),
        (RERANKER, "--max-length", "-5"),
        (ENCODER, "--max-negatives-per-query", "0"),
        (DECODER, "--max-steps", "-2"),
    ],
)
def test_a_bad_count_of_a_bench_or_tune_option_is_a_usage_error(argv, option, value, capsys):
    argv = [*argv, option, value]
    with pytest.raises(SystemExit) as info:
        _build_parser(argv).parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: expected" in err and f"got '{value}'" in err


@pytest.mark.parametrize(
    ("argv", "given"),
    [
        (["bench", "load", "--beir", "b"], ["--memory-queries", "0", "--warmup", "0"]),
        (["bench", "generation", "--squad", "s"], ["--grpo-generations", "2"]),
        (["bench", "scale"], ["--noise", "0", "--spread", "0"]),
        (DECODER, ["--max-steps", "-1", "--answerability-steps", "-1"]),
    ],
)
def test_the_documented_off_values_of_bench_options_still_work(argv, given):
    argv = [*argv, *given]
    _build_parser(argv).parse_args(argv)
