"""``ragtune train decoder --qa FILE``: your own grounded QA JSONL, end to end on a tiny decoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_index_ragtune.cli import main

STORES = ["grocery", "electronics", "pharmacy", "bakery", "garden", "toys"]


def _qa_lines() -> list[dict]:
    lines = []
    for i, store in enumerate(STORES):
        policy = {
            "id": f"{store}-returns",
            "text": f"The {store} store takes returns within {i + 2} days.",
        }
        hours = {"id": f"{store}-hours", "text": f"The {store} store opens at {i + 7}am."}
        split = "test" if i >= 4 else "train"
        lines.append(
            {
                "id": f"{store}-r",
                "question": f"How long can I return items to the {store} store?",
                "sources": [hours, policy],
                "gold": [policy["id"]],
                "answer": f"within {i + 2} days",
                "split": split,
            }
        )
        lines.append(
            {
                "id": f"{store}-h",
                "question": f"When does the {store} store open?",
                "sources": [policy, hours],
                "gold": [hours["id"]],
                "answer": "in the morning",
                "evidence": f"opens at {i + 7}am",
                "split": split,
            }
        )
        lines.append(
            {
                "id": f"{store}-u",
                "question": f"Does the {store} store sell concert tickets?",
                "sources": [hours],
                "answer": "",
                "split": split,
            }
        )
    return lines


@pytest.fixture
def qa_file(tmp_path: Path) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in _qa_lines()) + "\n")
    return path


def test_train_decoder_on_a_qa_file(qa_file, tmp_path, tiny_causal_lm_path, capsys) -> None:
    out = tmp_path / "decoder"
    argv = ["train", "decoder", "--qa", str(qa_file), "--base-model", tiny_causal_lm_path]
    argv += ["--out", str(out), "--refusal-threshold", "0.5", "--answerability-minutes", "0"]
    argv += ["--max-steps", "1", "--max-new-tokens", "2", "--top-k", "2", "--seed", "1"]
    argv += ["--max-test-examples", "3", "--generation-batch-size", "8"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    decision = json.loads((out / "decision.json").read_text())["decision"]
    assert decision["metric"] == "loss"
    tuned = out / ("adapter" if decision["promoted"] else "challenger/adapter")
    assert (tuned / "adapter_config.json").exists()
    evaluation = (out / "evaluation.md").read_text()
    assert "| base |" in evaluation and "| tuned |" in evaluation and "| tuned |" in printed
    # the QA file's own sources were used: nothing was retrieved or cached
    assert not list(out.glob("retrieved-*.json"))


def test_train_decoder_qa_file_error_names_file_and_line(tmp_path, tiny_causal_lm_path, capsys):
    lines = _qa_lines()
    lines[2] = {**lines[2], "gold": ["nowhere"], "answer": "yes"}
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    argv = ["train", "decoder", "--qa", str(path), "--base-model", tiny_causal_lm_path]
    argv += ["--out", str(tmp_path / "out"), "--answerability-minutes", "0"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"ragtune train decoder: error: {path}:3: gold id(s) ['nowhere']")
    assert not (tmp_path / "out").exists()  # the failed run leaves no empty folder


def test_train_decoder_qa_file_must_exist(tmp_path, capsys) -> None:
    argv = ["train", "decoder", "--qa", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "argument --qa: file not found" in capsys.readouterr().err


@pytest.mark.parametrize("repeats", ["0", "-3", "2.5", "ten"])
def test_refusal_cv_repeats_must_be_a_whole_number(tmp_path, qa_file, repeats, capsys) -> None:
    argv = ["train", "decoder", "--qa", str(qa_file), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--refusal-cv-repeats", repeats])
    assert exit_info.value.code == 2
    assert f"--refusal-cv-repeats: expected a whole number >= 1, got {repeats!r}" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "o").exists()
