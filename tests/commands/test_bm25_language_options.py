"""``--bm25-language`` of ``ragtune train encoder/reranker``, and the reranker taking the encoder run's.

``ragtune train encoder`` records the BM25 analyzer and language it validated with in
``<out>/results.json``; ``ragtune train reranker --encoder <out>/final`` builds its
candidates with the same ones unless told otherwise (and warns when told otherwise), as it
takes the fusion from ``<out>/fusion.json``.
"""

from __future__ import annotations

import argparse
import json
import logging

import pytest

from llama_index_ragtune.cli import main
from llama_index_ragtune.commands import train_encoder, train_reranker
from llama_index_ragtune.commands.options import UsageError
from llama_index_ragtune.commands.training_data import bm25_options, mine_negatives
from tests.finetuning.test_bm25_language_in_tuning import german_help_centre


def _parser(command) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser


def _reranker_args(tmp_path, *extra: str) -> argparse.Namespace:
    base = ["--dataset", str(tmp_path / "train.json"), "--out", str(tmp_path / "rr")]
    return _parser(train_reranker).parse_args(
        [*base, "--encoder", str(tmp_path / "enc" / "final"), *extra]
    )


def _encoder_results(tmp_path, text: str) -> None:
    (tmp_path / "enc" / "final").mkdir(parents=True, exist_ok=True)
    (tmp_path / "enc" / "results.json").write_text(text, encoding="utf-8")


@pytest.mark.parametrize("command", [train_encoder, train_reranker])
def test_the_train_commands_mine_with_the_language_they_are_given(command, tmp_path):
    parser = _parser(command)
    base = ["--dataset", str(tmp_path / "train.json"), "--out", str(tmp_path / "out")]
    default = parser.parse_args(base)
    assert bm25_options(default) == {"bm25_analyzer": "plain", "bm25_language": "english"}
    assert (
        bm25_options(parser.parse_args([*base, "--bm25-language", "none"]))["bm25_language"] is None
    )
    for wrong in ("German", "klingon"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--bm25-language", wrong])
    args = parser.parse_args([*base, "--bm25-language", "german", "--negatives", "bm25"])
    mined, _ = mine_negatives(args, german_help_centre(), embed_model=None)
    assert mined.metadata["mining"]["bm25_language"] == "german"
    # German stopwords: "werden" does not make the other pages negatives of the card question
    assert not mined.negatives.get("q_cards")


def test_the_reranker_takes_the_encoder_runs_bm25_settings(tmp_path, caplog):
    _encoder_results(
        tmp_path, json.dumps({"info": {"bm25_analyzer": "unicode", "bm25_language": "german"}})
    )
    args = _reranker_args(tmp_path)
    with caplog.at_level(logging.WARNING):
        train_reranker.settle_bm25_options(args)
    assert bm25_options(args) == {"bm25_analyzer": "unicode", "bm25_language": "german"}
    assert "differs" not in caplog.text
    # no encoder run beside --encoder: the defaults
    args = _reranker_args(tmp_path / "elsewhere")
    train_reranker.settle_bm25_options(args)
    assert bm25_options(args) == {"bm25_analyzer": "plain", "bm25_language": "english"}


def test_a_given_option_wins_over_the_encoder_run_with_a_warning(tmp_path, caplog):
    _encoder_results(
        tmp_path, json.dumps({"info": {"bm25_analyzer": "plain", "bm25_language": None}})
    )
    args = _reranker_args(tmp_path, "--bm25-language", "german", "--bm25-analyzer", "plain")
    with caplog.at_level(logging.WARNING):
        train_reranker.settle_bm25_options(args)
    assert bm25_options(args) == {"bm25_analyzer": "plain", "bm25_language": "german"}
    assert "--bm25-language german differs from the None the encoder run recorded" in caplog.text
    assert "--bm25-analyzer" not in caplog.text  # given and the same: no warning
    # the encoder run had no stemming: "none" given is the same
    caplog.clear()
    args = _reranker_args(tmp_path, "--bm25-language", "none")
    with caplog.at_level(logging.WARNING):
        train_reranker.settle_bm25_options(args)
    assert args.bm25_language is None and "differs" not in caplog.text


def test_an_encoder_run_from_before_the_language_setting(tmp_path):
    # results.json of the last release: the analyzer recorded, no language (English then)
    _encoder_results(
        tmp_path,
        json.dumps({"info": {"bm25_analyzer": "unicode"}, "arguments": {"bm25_analyzer": "x"}}),
    )
    args = _reranker_args(tmp_path)
    train_reranker.settle_bm25_options(args)
    assert bm25_options(args) == {"bm25_analyzer": "unicode", "bm25_language": "english"}
    # validated with a user's evaluator: info has None; the command's arguments say it
    _encoder_results(
        tmp_path,
        json.dumps(
            {
                "info": {"bm25_analyzer": None},
                "arguments": {"bm25_analyzer": "plain", "bm25_language": "french"},
            }
        ),
    )
    args = _reranker_args(tmp_path)
    train_reranker.settle_bm25_options(args)
    assert args.bm25_language == "french"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{not json", "is unreadable"),
        ("[1, 2]", "is unreadable"),
        (json.dumps({"info": {"bm25_analyzer": "plain", "bm25_language": "klingon"}}), "klingon"),
        (json.dumps({"info": {"bm25_analyzer": "cjk"}}), "bm25_analyzer must be one of"),
    ],
)
def test_an_unusable_encoder_record_is_named_unless_both_options_are_given(tmp_path, text, words):
    _encoder_results(tmp_path, text)
    with pytest.raises(UsageError, match=words) as caught:
        train_reranker.settle_bm25_options(_reranker_args(tmp_path))
    message = str(caught.value)
    assert "results.json" in message and "--bm25-analyzer and --bm25-language" in message
    if "unreadable" in words:  # both given: the record is not needed
        given = ("--bm25-analyzer", "plain", "--bm25-language", "german")
        args = _reranker_args(tmp_path, *given)
        train_reranker.settle_bm25_options(args)
        assert bm25_options(args) == {"bm25_analyzer": "plain", "bm25_language": "german"}


def test_train_encoder_then_reranker_share_the_language(tiny_encoder_path, tmp_path):
    data = tmp_path / "train.json"
    german_help_centre().save_json(data)
    common = ["--dataset", str(data), "--val-fraction", "0.25", "--max-steps", "1"]
    common += ["--train-batch-size", "4", "--negatives", "bm25", "--device", "cpu"]
    enc = tmp_path / "enc"
    code = main(
        ["train", "encoder", *common, "--model", tiny_encoder_path, "--bm25-language", "german"]
        + ["--fusion", "rrf", "--out", str(enc)]
    )
    assert code == 0
    results = json.loads((enc / "results.json").read_text("utf-8"))
    assert results["info"]["bm25_language"] == "german"
    assert results["mining"]["bm25_language"] == "german"
    assert results["arguments"]["bm25_language"] == "german"
    rr = tmp_path / "rr"
    code = main(
        ["train", "reranker", *common, "--model", tiny_encoder_path]
        + ["--encoder", str(enc / "final"), "--rerank-depth", "4", "--out", str(rr)]
    )
    assert code == 0
    results = json.loads((rr / "results.json").read_text("utf-8"))
    assert results["info"]["bm25_language"] == "german"
    assert results["arguments"]["bm25_language"] == "german"
    assert results["mining"]["bm25_language"] == "german"
