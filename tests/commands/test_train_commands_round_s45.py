"""Round s45: hostile inputs of the train commands, refused before any model loads.

- a NUL character (``\\u0000``) in a text of a ``--qa`` line: named by file, line and field;
- a dev question asking a training question again (the refusal was fitted on it);
- ``--out`` that is, lies in, or writes over a model folder a train command reads.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest

from llama_index_ragtune.cli import main
from llama_index_ragtune.commands.options import UsageError, check_out_apart
from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.grounded_tasks import load_task
from llama_index_ragtune.data.qa_jsonl import load_grounded_qa
from llama_index_ragtune.data.records import twin_key

SOURCE = {"id": "returns", "text": "Opened electronics can be returned within 14 days."}


def _line(**fields) -> dict:
    line = {"question": "How long?", "sources": [SOURCE], "gold": ["returns"], "answer": "14 days"}
    line.update(fields)
    return line


def _write(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


# ------------------------------------------------------------------ NUL in a text


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"question": "How\x00 long?"}, "field 'question'"),
        ({"answer": "14\x00 days"}, "field 'answer'"),
        ({"evidence": "within\x00 14 days"}, "field 'evidence'"),
        ({"id": "q\x001"}, "field 'id'"),
        ({"sources": [{"id": "returns", "text": SOURCE["text"] + "\x00"}]}, "sources[0].text"),
        ({"sources": [{"id": "ret\x00urns", "text": SOURCE["text"]}]}, "sources[0].id"),
    ],
)
def test_a_nul_character_in_a_text_is_refused_naming_line_and_field(tmp_path, fields, named):
    path = _write(tmp_path / "qa.jsonl", [_line(question="Fine?"), _line(**fields)])
    with pytest.raises(DataError) as caught:
        load_grounded_qa(path)
    message = str(caught.value)
    assert f"{path}:2:" in message and named in message and "NUL" in message
    assert "remove the \\u0000" in message


def test_a_text_without_nul_reads_as_before(tmp_path):
    path = _write(tmp_path / "qa.jsonl", [_line(question="How long,\ttab and caf\u00e9?")])
    qa = load_grounded_qa(path)
    assert qa.train[0].question == "How long,\ttab and caf\u00e9?"
    assert qa.train[0].answers == ["14 days"]


# ------------------------------------------------------- twins out of the dev sample


def _qa_with_twins(path: Path) -> Path:
    """Six questions, each written twice: answerable over its source, unanswerable without."""
    lines = []
    for i in range(6):
        source = {"id": f"s{i}", "text": f"Shop {i} opens at {i + 7}am."}
        other = {"id": f"o{i}", "text": f"Shop {i} sells bread."}
        question = f"When does shop {i} open?"
        lines.append(
            _line(question=question, sources=[source], gold=[f"s{i}"], answer=f"{i + 7}am")
        )
        lines.append(_line(question=question.upper(), sources=[other], gold=[], answer=""))
    return _write(path, lines)


@pytest.mark.parametrize("seed", range(8))
def test_no_dev_question_asks_a_training_question_again(tmp_path, seed):
    path = _qa_with_twins(tmp_path / "qa.jsonl")
    task = load_task(qa=path, max_train=3, max_test=0, seed=seed, max_dev=9)
    trained = {twin_key(e.question) for e in task.train}
    assert task.dev, "the dev sample is not empty"
    assert all(twin_key(e.question) not in trained for e in task.dev)
    assert not {e.qid for e in task.dev} & {e.qid for e in task.train}


def test_a_dev_sample_without_twins_is_drawn_as_before(tmp_path):
    lines = [_line(question=f"Question {i}?", id=f"q{i}") for i in range(12)]
    path = _write(tmp_path / "qa.jsonl", lines)
    task = load_task(qa=path, max_train=4, max_test=0, seed=3, max_dev=5)
    taken = {e.qid for e in task.train}
    rest = [e.qid for e in load_grounded_qa(path).train if e.qid not in taken]
    assert [e.qid for e in task.dev] == random.Random(5).sample(rest, 5)


# --------------------------------------------- --out apart from the models it reads


def _model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("inside", ["", "run"])
def test_train_decoder_refuses_an_out_in_the_base_model_folder(tmp_path, capsys, inside):
    model = _model_folder(tmp_path / "model")
    qa = _write(tmp_path / "qa.jsonl", [_line()])
    before = _listing(model)
    out = model / inside if inside else model
    argv = ["train", "decoder", "--qa", str(qa), "--base-model", str(model), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "--base-model" in err and "outside it" in err
    assert _listing(model) == before  # nothing written among the model's files


def test_train_reranker_refuses_to_write_over_its_encoder(tmp_path, capsys):
    run = tmp_path / "runs" / "encoder"
    encoder = _model_folder(run / "final")
    pairs = tmp_path / "pairs.json"
    pairs.write_text("{}")
    argv = ["train", "reranker", "--dataset", str(pairs), "--encoder", str(encoder)]
    assert main([*argv, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "--encoder" in err and "writes over" in err
    assert _listing(run) == ["final", "final/config.json"]


def test_train_encoder_refuses_an_out_that_is_its_model(tmp_path, capsys):
    model = _model_folder(tmp_path / "model")
    pairs = tmp_path / "pairs.json"
    pairs.write_text("{}")
    argv = ["train", "encoder", "--dataset", str(pairs), "--model", str(model)]
    assert main([*argv, "--out", str(model)]) == 2
    assert "the folder of --model" in capsys.readouterr().err


def test_out_beside_or_above_a_model_it_keeps_is_fine(tmp_path):
    model = _model_folder(tmp_path / "runs" / "encoder" / "final")
    keep = {"--model": (str(model), ("challenger",))}
    check_out_apart(tmp_path / "runs" / "encoder", keep)  # retraining from final/: allowed
    check_out_apart(tmp_path / "runs" / "other", keep)
    check_out_apart(tmp_path / "runs", {"--model": ("BAAI/bge-small-en-v1.5", ("final",))})
    with pytest.raises(UsageError, match="--model .* writes over"):
        check_out_apart(model.parent, {"--model": (str(model), ("final",))})


# ------------------------------------------------ --multihop-* without SQuAD


@pytest.mark.parametrize("option", ["--multihop-train-examples", "--multihop-test-examples"])
def test_multihop_counts_without_squad_are_a_usage_error(tmp_path, capsys, option):
    qa = _write(tmp_path / "qa.jsonl", [_line()])
    out = tmp_path / "out"
    argv = ["train", "decoder", "--qa", str(qa), "--out", str(out), option, "100"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{option} 100" in err and "SQuAD 2.0 (--squad) only" in err and "--qa" in err
    assert not out.exists()


@pytest.mark.parametrize("value", ["0", "48"])
def test_multihop_off_or_default_with_qa_passes_the_check(tmp_path, value):
    from llama_index_ragtune.commands.decoder_arguments import check_squad_only
    from llama_index_ragtune.commands.train_decoder import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--qa", "qa.jsonl", "--out", "o", "--multihop-train-examples", value])
    check_squad_only(args)  # nothing asked that --qa cannot give
    squad = parser.parse_args(["--squad", "s.json", "--out", "o", "--multihop-dev-examples", "9"])
    check_squad_only(squad)
