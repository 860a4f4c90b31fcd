"""``ragtune train decoder --qa FILE``: a file that cannot train (or tune) what the run asks
for is rejected before training, on one line naming the file, leaving no output folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from llama_index_ragtune.cli import main
from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.reading import parse_json, read_json_file


def _line(i: int, answerable: bool = True, split: str = "train") -> dict:
    policy = {"id": f"s{i}-returns", "text": f"Store {i} takes returns within {i + 2} days."}
    hours = {"id": f"s{i}-hours", "text": f"Store {i} opens at {i + 7}am."}
    line = {"id": f"q{i}", "question": f"How long can I return items to store {i}?"}
    line |= {"sources": [hours, policy], "split": split}
    if answerable:
        return line | {"gold": [policy["id"]], "answer": f"within {i + 2} days"}
    return line | {"answer": "" if i % 2 else None, "gold": []}


def _write(tmp_path: Path, lines: list[dict], raw: dict[int, str] | None = None) -> Path:
    texts = [json.dumps(line) for line in lines]
    for number, text in (raw or {}).items():
        texts[number - 1] = text
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def _fails(path: Path, tmp_path: Path, capsys, *flags: str) -> str:
    out = tmp_path / "out"
    argv = ["train", "decoder", "--qa", str(path), "--out", str(out), "--max-steps", "1"]
    argv += ["--device", "cpu", *flags]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("ragtune train decoder: ")]
    assert len(errors) == 1, err  # one line (the rest is progress bars)
    assert not out.exists()  # rejected before anything was written
    return errors[0]


def _mixed(n: int = 8, test: int = 4) -> list[dict]:
    lines = [_line(i, answerable=i % 2 == 0) for i in range(n)]
    return lines + [_line(n + i, answerable=i % 2 == 0, split="test") for i in range(test)]


@pytest.mark.parametrize(
    ("field", "escaped", "where"),
    [
        ("question", '"\\ud800 How long?"', "question"),
        ("answer", '"within \\udfff days"', "answer"),
        ("id", '"q\\udc00"', "id"),
        (
            "sources",
            '[{"id": "a", "text": "ok"}, {"id": "b", "text": "x \\ud83d"}]',
            "sources[1].text",
        ),
    ],
)
def test_lone_surrogate_in_any_text_field_names_file_and_line(
    tmp_path, capsys, tiny_causal_lm_path, field, escaped, where
):
    lines = _mixed()
    text = json.dumps({**lines[2], field: "PLACEHOLDER"}).replace('"PLACEHOLDER"', escaped)
    path = _write(tmp_path, lines, {3: text})
    error = _fails(path, tmp_path, capsys, "--base-model", tiny_causal_lm_path)
    assert error.startswith(f"ragtune train decoder: error: {path}:3: {where} contains an ")
    assert "invalid character (a lone surrogate \\u" in error


def test_shared_reader_rejects_lone_surrogates_with_file_and_line(tmp_path):
    with pytest.raises(DataError, match=r"^q\.jsonl:7: the key 'a\\udc00' in meta contains"):
        parse_json('{"meta": {"a\\udc00": 1}}', "q.jsonl", 7)
    assert parse_json('{"t": "\\ud83d\\ude00 \\\\ud800"}', "q.jsonl", 1) == {
        "t": "\U0001f600 \\ud800"
    }
    path = tmp_path / "metadata.json"
    path.write_text('{\n "ok": "\\ud83d\\ude00",\n "names": [\n  "x",\n  "y\\ude00"\n ]\n}')
    with pytest.raises(DataError, match=r"metadata\.json:5: names\[1\] contains an invalid"):
        read_json_file(path)


def test_no_train_questions_is_rejected(tmp_path, capsys, tiny_causal_lm_path):
    path = _write(tmp_path, [_line(i, split="test") for i in range(3)])
    error = _fails(path, tmp_path, capsys, "--base-model", tiny_causal_lm_path)
    assert error.startswith(f"ragtune train decoder: error: {path}: no training questions")
    assert 'mark some lines "split": "train" (or leave split out)' in error


@pytest.mark.parametrize("test_split", [True, False])
def test_only_unanswerable_questions_are_rejected(
    tmp_path, capsys, tiny_causal_lm_path, test_split
):
    lines = [_line(i, answerable=False) for i in range(4)]
    lines += [_line(9, split="test")] if test_split else []
    path = _write(tmp_path, lines)
    error = _fails(path, tmp_path, capsys, "--base-model", tiny_causal_lm_path)
    assert f"{path}: none of the 4 training questions has an answer" in error
    assert '"answer" and the "gold" ids' in error


@pytest.mark.parametrize(
    ("lines", "flags", "counts"),
    [
        (_mixed(), (), "got 0 answerable and 0 unanswerable"),  # all 8 are trained on
        (_mixed(), ("--max-train-examples", "5"), "unanswerable"),  # 3 held out: too few
        (
            [_line(i) for i in range(8)] + [_line(9, split="test")],
            ("--max-train-examples", "4"),
            "got 4 answerable and 0 unanswerable",
        ),  # only answerable: nothing to refuse
    ],
)
def test_tuned_refusal_needs_both_kinds_of_dev_questions(
    tmp_path, capsys, tiny_causal_lm_path, lines, flags, counts
):
    path = _write(tmp_path, lines)
    error = _fails(path, tmp_path, capsys, "--base-model", tiny_causal_lm_path, *flags)
    assert error.startswith(f"ragtune train decoder: error: {path}: --refusal-threshold tune")
    assert "at least 2 answerable and 2 unanswerable" in error and counts in error
    assert "--refusal-threshold (e.g. 0.5)" in error


def test_enough_dev_questions_pass_the_check(tmp_path, tiny_causal_lm_path):
    from argparse import Namespace

    from llama_index_ragtune.commands.train_decoder import check_data
    from llama_index_ragtune.data.grounded_tasks import prepare_grounded_data

    path = _write(tmp_path, _mixed(12))
    args = Namespace(
        qa=str(path),
        squad=None,
        scifact=None,
        train_answerable_share=None,
        max_test_examples=4,
        seed=0,
        dev_examples=100,
        refusal_threshold="tune",
        retriever="bm25",
        top_k=2,
        p_no_gold=0.0,
        max_context_chars=None,
        max_train_examples=6,
    )
    data = prepare_grounded_data(args, 6, tmp_path / "cache")
    check_data(args, data)  # 6 held out: 3 answerable, 3 unanswerable
    assert len(data.dev_contexts) == 6


def test_no_test_questions_and_no_refusals_warn_and_train(tmp_path, tiny_causal_lm_path, caplog):
    path = _write(tmp_path, [_line(i) for i in range(4)])  # answerable only, no test split
    out = tmp_path / "out"
    argv = ["train", "decoder", "--qa", str(path), "--base-model", tiny_causal_lm_path]
    argv += ["--out", str(out), "--answerability-steps", "1"]  # --refusal-threshold tune
    argv += ["--max-steps", "1", "--top-k", "2", "--device", "cpu", "--seed", "1"]
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    assert 'no test questions (no line has "split": "test"): nothing is scored' in caplog.text
    assert "every training question is answerable: the answerability head is not" in caplog.text
    assert not (out / "evaluation.md").exists() and not (out / "answerability").exists()
