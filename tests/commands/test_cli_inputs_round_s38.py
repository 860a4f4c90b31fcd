"""``ragtune train`` with a user's own files (round s38): a JSONL file given to ``--dataset``,
a ``--val-dataset`` of the training questions, another tool's field names in ``--qa``."""

from __future__ import annotations

import json

import pytest

from llama_index_ragtune.cli import main

DATASET = {
    "queries": {f"q{i}": f"What about topic{i}?" for i in range(4)},
    "corpus": {f"d{i}": f"passage about topic{i}" for i in range(4)},
    "relevant_docs": {f"q{i}": [f"d{i}"] for i in range(4)},
}


@pytest.mark.parametrize("command", ["encoder", "reranker"])
def test_a_jsonl_dataset_is_one_line_naming_the_kind_of_file(tmp_path, capsys, command):
    """Was: ``FILE:2:1: malformed JSON (Extra data)``."""
    path = tmp_path / "queries.jsonl"
    lines = [{"id": "q1", "question": "returns?"}, {"id": "q2", "question": "hours?"}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    argv = ["train", command, "--dataset", str(path), "--out", str(tmp_path / "out")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{path}: the file holds one JSON value per line (JSON Lines)" in err[0]
    assert "`ragtune tune --queries`" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["encoder", "reranker"])
def test_a_val_dataset_of_the_training_questions_stops_before_training(tmp_path, capsys, command):
    """Was accepted: promotion decided on the questions trained on (here: all of them, up to
    case and punctuation), so a model that memorised them was promoted."""
    train = tmp_path / "train.json"
    train.write_text(json.dumps(DATASET))
    val = tmp_path / "val.json"
    lowered = {q: text.lower().rstrip("?") for q, text in DATASET["queries"].items()}
    val.write_text(json.dumps({**DATASET, "queries": lowered}))
    argv = ["train", command, "--dataset", str(train), "--val-dataset", str(val)]
    argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "every one of the 4 training questions is also a --val-dataset question" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_qa_file_in_another_tools_field_names_says_which_to_rename(
    tmp_path, tiny_causal_lm_path, capsys
):
    line = {
        "query": "How long can I return opened electronics?",
        "contexts": [{"id": "r", "text": "Opened electronics can be returned within 14 days."}],
        "gold": ["r"],
        "answer": "within 14 days",
    }
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps(line) + "\n")
    argv = ["train", "decoder", "--qa", str(path), "--base-model", tiny_causal_lm_path]
    argv += ["--out", str(tmp_path / "out"), "--answerability-minutes", "0"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(
        f"ragtune train decoder: error: {path}:1: unknown field(s) ['query'] ('query': did you "
        "mean 'question'?); the accepted fields are: id, question, sources"
    )
    assert not (tmp_path / "out").exists()
