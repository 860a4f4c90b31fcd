"""Regression tests from a second hostile-input battery of the command line: a ``--device``
this machine lacks (refused before any data or model is loaded), negative numbers given as
option values (``--time-budget -inf``), and the ``--seed`` of the benchmarks and of
``ragtune tune``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llama_index_ragtune.cli import _build_parser, main
from llama_index_ragtune.commands.options import UsageError, check_device_option

ENCODER = ["train", "encoder", "--dataset", "d.json", "--out", "o"]
DECODER = ["train", "decoder", "--qa", "qa.jsonl", "--out", "o"]
MPS_HERE = torch.backends.mps.is_available()
CUDA_HERE = torch.cuda.is_available()


def _parse(argv: list[str]):
    return _build_parser(argv).parse_args(argv)


# ------------------------------------------------------------------------ --device


def test_check_device_option_accepts_what_is_here():
    assert check_device_option(None) is None
    assert check_device_option("cpu") == "cpu"


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("gpu", "argument --device: device='gpu' is not a torch device"),
        ("meta", "argument --device: device='meta' holds no weights"),
        pytest.param(
            "mps",
            "argument --device: device='mps' is not available here (this machine has: cpu",
            marks=pytest.mark.skipif(MPS_HERE, reason="this machine has mps"),
        ),
        pytest.param(
            "cuda:0",
            "argument --device: device='cuda:0' is not available here",
            marks=pytest.mark.skipif(CUDA_HERE, reason="this machine has CUDA"),
        ),
    ],
)
def test_check_device_option_refuses_a_device_that_is_not_here(device, message):
    with pytest.raises(UsageError) as info:
        check_device_option(device)
    assert str(info.value).startswith(message)


@pytest.mark.skipif(MPS_HERE, reason="this machine has mps")
def test_the_library_refuses_a_missing_accelerator_as_the_cli_does():
    """One check for both: ``PipelineConfig(device="mps")``, ``LocalChatLLM`` and the reranker
    go through ``llms.loading.check_device``, which knew only CUDA (mps failed late)."""
    from llama_index_ragtune.llms.loading import check_device

    with pytest.raises(ValueError, match=r"TuningPipeline: device='mps' is not available here"):
        check_device("mps", "TuningPipeline")
    with pytest.raises(UsageError, match=r"leave out --device to pick the best available"):
        check_device_option("mps")


def _qa(tmp_path: Path) -> Path:
    line = {"question": "When do you open?", "sources": [{"id": "h", "text": "At 8am."}]}
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps(line | {"gold": ["h"], "answer": "8am"}) + "\n", encoding="utf-8")
    return path


def _never(*args, **kwargs):
    raise AssertionError("the data was loaded")


@pytest.mark.skipif(MPS_HERE, reason="this machine has mps")
@pytest.mark.parametrize("command", ["encoder", "reranker", "decoder"])
def test_train_with_a_device_that_is_not_here_fails_before_the_data_is_loaded(
    command, tmp_path, toy_beir_dir, capsys, monkeypatch
):
    # was: `--device mps` loaded the data and the model, then died with a RuntimeError
    # traceback ("PyTorch is not linked with support for mps devices")
    from llama_index_ragtune.commands import train_decoder, train_encoder, train_reranker

    monkeypatch.setattr(train_encoder, "load_training_data", _never)
    monkeypatch.setattr(train_reranker, "load_training_data", _never)
    monkeypatch.setattr(train_decoder, "prepare_grounded_data", _never)
    out = tmp_path / "out"
    data = ["--qa", str(_qa(tmp_path))] if command == "decoder" else ["--beir", str(toy_beir_dir)]
    assert main(["train", command, *data, "--out", str(out), "--device", "mps"]) == 2
    err = capsys.readouterr().err
    assert (
        f"ragtune train {command}: error: argument --device: device='mps' is not available" in err
    )
    assert "Traceback" not in err and not out.exists()


@pytest.mark.skipif(MPS_HERE, reason="this machine has mps")
def test_tune_with_a_device_that_is_not_here_fails_before_any_work(tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Returns\n\nWithin 30 days.\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["tune", "--docs", str(docs), "--out", str(out), "--device", "mps"]) == 2
    err = capsys.readouterr().err
    assert "ragtune tune: error: argument --device: device='mps' is not available" in err
    assert not out.exists()


# ------------------------------------------------------------ negative values


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        (ENCODER, "--time-budget", "-inf"),
        (ENCODER, "--time-budget", "-1e3"),
        (ENCODER, "--time-budget", "-NaN"),
        (ENCODER, "--learning-rate", "-Infinity"),
        (DECODER, "--p-no-gold", "-1e-3"),
        (["bench", "tuning"], "--time-budget", "-inf"),
    ],
)
def test_a_negative_number_is_read_as_the_value_and_refused_by_its_type(
    command, option, value, capsys
):
    # was: "-inf" and "-1e3" read as an option: "argument --time-budget: expected one argument"
    with pytest.raises(SystemExit) as info:
        _parse([*command, option, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and f"got '{value}'" in err


def test_a_negative_time_budget_reaches_the_command_as_a_number(tmp_path):
    args = _parse(["tune", "--docs", str(tmp_path), "--out", "o", "--time-budget", "-inf"])
    assert args.time_budget == float("-inf")  # refused by `tune` itself ("minutes > 0")


def test_a_value_that_looks_like_an_option_says_how_to_pass_it(capsys):
    with pytest.raises(SystemExit) as info:
        _parse(["train", "encoder", "--dataset", "d.json", "--out", "-results"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --out/--output: expected one argument ('-results' reads as an option: " in err
    assert "write --out=-results)" in err


# ---------------------------------------------------------------------------- --seed


@pytest.mark.parametrize("value", ["-1", str(2**32), "1.5", "-inf"])
@pytest.mark.parametrize(
    "command",
    [["bench", "tuning"], ["bench", "scale"], ["bench", "synthetic"], ["tune"]],
)
def test_a_seed_numpy_cannot_take_is_a_usage_error(command, value, capsys):
    # was: a plain int: -1 or 2**32 failed with a traceback once the run had started
    with pytest.raises(SystemExit) as info:
        _parse([*command, "--seed", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --seed: expected a whole number from 0 to {2**32 - 1}, got '{value}'" in err


def test_the_negatives_audit_seed_is_checked_before_anything_is_read(tmp_path, capsys):
    from benchmarks import negatives_audit

    with pytest.raises(SystemExit) as info:
        negatives_audit.main(["--beir", str(tmp_path / "nope"), "--out", "o", "--seed", "-1"])
    assert info.value.code == 2
    assert "argument --seed: expected a whole number" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["bench", "tuning", "--beir", "b"], ["tune", "--docs"]])
def test_the_edge_seeds_still_work(command, tmp_path):
    command = [*command, str(tmp_path), "--out", "o"] if command == ["tune", "--docs"] else command
    command = command if command[0] == "tune" else [*command, "--out", "o"]
    assert _parse([*command, "--seed", "0"]).seed == 0
    assert _parse([*command, "--seed", str(2**32 - 1)]).seed == 2**32 - 1
