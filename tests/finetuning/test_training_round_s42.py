"""``ragtune train encoder`` / ``reranker`` and their engines under hostile options (round s42).

- the reranker's BM25 hard negatives are mined with the ``--bm25-analyzer`` it is given;
- ``--bm25-stopwords`` (one option for both commands) reaches every BM25 of the run: the
  miner, the encoder's validation hybrid, the reranker's candidates, and is recorded, and the
  reranker takes the encoder run's record;
- options that are wrong alone or together (``--matryoshka-dims abc``, ``--fusion bogus``,
  ``--range-min`` above ``--range-max``, ``--negatives foo``, margin_mse without a teacher) are
  usage errors before anything loads (were tracebacks after the data was mined);
- a damaged ``fusion.json`` of the ``--encoder`` run is named before anything loads (was a
  ``JSONDecodeError`` traceback after mining);
- ``--max-length`` above the model's positions, ``--matryoshka-dims`` above its size: one line
  before mining (were tensor-size tracebacks at the first long passage).
"""

from __future__ import annotations

import argparse
import json
import logging
import os

import pytest

from llama_index_ragtune.cli import main
from llama_index_ragtune.commands import options, train_encoder, train_reranker
from llama_index_ragtune.commands.options import UsageError, bm25_stopwords_value
from llama_index_ragtune.commands.training_data import bm25_options, mine_negatives
from llama_index_ragtune.data.schema import RetrievalDataset
from llama_index_ragtune.finetuning.hybrid_eval import HybridRetrievalEvaluator, check_bm25_text
from tests.finetuning.test_bm25_analyzer_in_tuning import chinese_help_centre

SHOP = RetrievalDataset(
    {"q1": "acme widget", "q2": "acme gadget"},
    {
        "w": "the widget manual",
        "g": "the gadget manual",
        "a1": "acme pricing page",
        "a2": "acme support page",
        "a3": "acme careers page",
        "r": "widget and gadget repair",
    },
    {"q1": ["w"], "q2": ["g"]},
)


def _parser(command) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser


def _args(command, tmp_path, *extra: str) -> argparse.Namespace:
    base = ["--dataset", str(tmp_path / "train.json"), "--out", str(tmp_path / "out")]
    return _parser(command).parse_args([*base, *extra])


def _exit_status(argv: list[str]) -> int:
    """``main(argv)``'s exit status, also where argparse exits while reading the options."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def _mined(args: argparse.Namespace, data: RetrievalDataset) -> RetrievalDataset:
    mined, _ = mine_negatives(args, data, embed_model=None)
    return mined


# --------------------------------------------------------------------------- known faults


def test_the_reranker_mines_with_the_bm25_analyzer_it_is_given(tmp_path):
    found = {}
    for analyzer in ("plain", "unicode"):
        args = _args(train_reranker, tmp_path, "--negatives", "bm25", "--bm25-analyzer", analyzer)
        train_reranker.settle_bm25_options(args)  # as run() does, before mining
        mined = _mined(args, chinese_help_centre())
        assert mined.metadata["mining"]["bm25_analyzer"] == analyzer
        found[analyzer] = mined.num_negatives
    # the plain analyzer reads no Chinese query term: nothing mined; unicode mines negatives
    assert found["plain"] == 0 < found["unicode"]


def test_one_stopwords_option_for_both_train_commands(tmp_path):
    for command in (train_encoder, train_reranker):
        action = _parser(command)._option_string_actions["--bm25-stopwords"]
        assert action.type is options.bm25_stopwords
        assert "bm25_stopwords" not in bm25_options(_args(command, tmp_path))  # the default
        given = _args(command, tmp_path, "--bm25-stopwords", "Acme,page")
        assert bm25_options(given)["bm25_stopwords"] == ["acme", "page"]
        assert (
            bm25_options(_args(command, tmp_path, "--bm25-stopwords", "none"))["bm25_stopwords"]
            is None
        )
        assert (
            bm25_options(_args(command, tmp_path, "--bm25-stopwords", "de"))["bm25_stopwords"]
            == "de"
        )
        for wrong in ("xx", ",", "new york,", ""):
            with pytest.raises(SystemExit):
                _args(command, tmp_path, "--bm25-stopwords", wrong)
    assert bm25_stopwords_value("sku,") == ["sku"]


def test_the_stopwords_change_what_is_mined_and_are_recorded(tmp_path):
    default = _mined(_args(train_encoder, tmp_path, "--negatives", "bm25"), SHOP)
    args = _args(train_encoder, tmp_path, "--negatives", "bm25", "--bm25-stopwords", "acme,")
    mined = _mined(args, SHOP)
    acme_pages = {"a1", "a2", "a3"}
    assert acme_pages & {n.doc_id for n in default.negatives["q1"]}
    # "acme" dropped: the pages that share only that word are no longer BM25 candidates
    assert not acme_pages & {n.doc_id for n in mined.negatives.get("q1", [])}
    assert mined.metadata["mining"]["bm25_stopwords"] == ["acme"]
    assert "bm25_stopwords" not in default.metadata["mining"]


def test_the_validation_hybrid_and_the_engines_take_the_stopwords(tiny_encoder_path, tmp_path):
    from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine
    from llama_index_ragtune.finetuning.reranker import RerankerFinetuneEngine

    qrels = {"q1": {"w": 1}, "q2": {"g": 1}}
    plain = HybridRetrievalEvaluator(SHOP.queries, SHOP.corpus, qrels)
    dropped = HybridRetrievalEvaluator(SHOP.queries, SHOP.corpus, qrels, bm25_stopwords=["acme"])
    assert {d for d, _ in plain.bm25_rankings()["q1"]} >= {"a1", "a2", "a3"}
    assert not {d for d, _ in dropped.bm25_rankings()["q1"]} & {"a1", "a2", "a3"}
    assert dropped.bm25_stopwords == ["acme"] and plain.bm25_stopwords == "language"
    for engine in (EncoderFinetuneEngine, RerankerFinetuneEngine):
        built = engine(
            SHOP,
            model=tiny_encoder_path,
            bm25_stopwords=["acme"],
            args=engine.default_args(tmp_path / engine.__name__),
            output_dir=tmp_path / engine.__name__,
        )
        assert built.bm25_text.stopwords == ("acme",)
        with pytest.raises(ValueError, match=r"bm25_stopwords='xx' is no stopword list"):
            engine(
                SHOP,
                model=tiny_encoder_path,
                bm25_stopwords="xx",
                args=engine.default_args(tmp_path / "x"),
                output_dir=tmp_path / "x",
            )
    with pytest.raises(TypeError, match="bm25_stopwords must be"):
        check_bm25_text("plain", "english", "Owner", [1, 2])


def test_the_reranker_takes_the_encoder_runs_stopwords(tmp_path, caplog):
    (tmp_path / "enc" / "final").mkdir(parents=True)
    record = {"bm25_analyzer": "plain", "bm25_language": "english", "bm25_stopwords": ["acme"]}
    (tmp_path / "enc" / "results.json").write_text(json.dumps({"info": record}), "utf-8")
    encoder = ["--encoder", str(tmp_path / "enc" / "final")]
    args = _args(train_reranker, tmp_path, *encoder)
    train_reranker.settle_bm25_options(args)
    assert bm25_options(args)["bm25_stopwords"] == ["acme"]
    args = _args(train_reranker, tmp_path, *encoder, "--bm25-stopwords", "none")
    with caplog.at_level(logging.WARNING):
        train_reranker.settle_bm25_options(args)
    assert bm25_options(args)["bm25_stopwords"] is None
    assert "--bm25-stopwords none differs" in caplog.text
    record["bm25_stopwords"] = "klingon"
    (tmp_path / "enc" / "results.json").write_text(json.dumps({"info": record}), "utf-8")
    with pytest.raises(UsageError, match="klingon"):
        train_reranker.settle_bm25_options(_args(train_reranker, tmp_path, *encoder))


def test_train_encoder_records_the_stopwords_it_validated_and_mined_with(
    tiny_encoder_path, make_toy, tmp_path
):
    data = tmp_path / "train.json"
    make_toy(with_negatives=False).save_json(data)
    out = tmp_path / "enc"
    code = main(
        ["train", "encoder", "--dataset", str(data), "--model", tiny_encoder_path]
        + ["--max-steps", "1", "--train-batch-size", "4", "--negatives", "bm25"]
        + ["--device", "cpu", "--fusion", "rrf", "--bm25-stopwords", "alpha,beta"]
        + ["--val-fraction", "0.25", "--out", str(out)]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text("utf-8"))
    assert results["info"]["bm25_stopwords"] == ["alpha", "beta"]
    assert results["mining"]["bm25_stopwords"] == ["alpha", "beta"]
    args = _args(train_reranker, tmp_path, "--encoder", str(out / "final"))
    train_reranker.settle_bm25_options(args)  # the reranker's candidates: the same BM25
    assert bm25_options(args)["bm25_stopwords"] == ["alpha", "beta"]


# --------------------------------------------------------------------------- hostile options


def _toy_file(tmp_path, make_toy) -> str:
    path = tmp_path / "train.json"
    make_toy().save_json(path)
    return str(path)


@pytest.mark.parametrize(
    ("command", "extra", "words"),
    [
        ("encoder", ["--matryoshka-dims", "abc"], "--matryoshka-dims: 'abc' is no dimension"),
        ("encoder", ["--matryoshka-dims", "0,16"], "'0' is no dimension"),
        ("encoder", ["--matryoshka-dims", "16,16"], "[16] given twice"),
        ("encoder", ["--matryoshka-dims", ","], "expected dimensions"),
        ("encoder", ["--fusion", "bogus"], "--fusion: invalid choice"),
        ("reranker", ["--fusion", "auto"], "--fusion: invalid choice"),
        ("encoder", ["--range-min", "30", "--range-max", "30"], "give a --range-min below"),
        ("reranker", ["--range-min", "40"], "give a --range-min below"),
        ("encoder", ["--negatives", "bm25,sparse"], "--negatives: unknown source(s) ['sparse']"),
        ("reranker", ["--loss", "margin_mse"], "margin_mse needs --teacher"),
        ("reranker", ["--bm25-stopwords", "xx"], "--bm25-stopwords: unknown BM25 stopword"),
    ],
)
def test_wrong_options_are_usage_errors_before_anything_loads(
    command, extra, words, make_toy, tmp_path, capsys
):
    data = _toy_file(tmp_path, make_toy)
    out = tmp_path / "out"
    code = _exit_status(["train", command, "--dataset", data, "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert words in err and "Traceback" not in err
    assert not out.exists()


def test_the_range_is_not_checked_when_nothing_is_mined(tmp_path):
    args = _args(train_encoder, tmp_path, "--negatives", "none", "--range-min", "40")
    train_encoder.check_arguments(args)  # no miner, nothing to refuse
    with pytest.raises(UsageError, match="--range-min"):
        train_encoder.check_arguments(_args(train_encoder, tmp_path, "--range-min", "40"))


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "is unreadable"),
        ("[1, 2]", "holds list"),
        ('{"fusion_mode": "rrf", "alpha": NaN}', "alpha=nan, out of range"),
        ('{"fusion_mode": "rrf", "alpha": 0.5, "dense_top_k": -3}', "dense_top_k=-3"),
        ('{"fusion_mode": "borda"}', "names the fusion mode 'borda'"),
        ("fifo", "is a named pipe (FIFO)"),
        ("folder", "is a folder"),
    ],
)
def test_a_damaged_fusion_file_of_the_encoder_run_is_named_first(
    content, words, tiny_encoder_path, make_toy, tmp_path, capsys
):
    data = _toy_file(tmp_path, make_toy)
    run = tmp_path / "enc"
    run.mkdir()
    os.symlink(tiny_encoder_path, run / "final")
    fusion = run / "fusion.json"
    if content == "fifo":
        os.mkfifo(fusion)  # never opened: it would block
    elif content == "folder":
        fusion.mkdir()
    else:
        fusion.write_text(content, encoding="utf-8")
    out = tmp_path / "rr"
    argv = ["train", "reranker", "--dataset", data, "--encoder", str(run / "final")]
    code = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "fusion.json (the fusion of the --encoder run)" in err
    assert words in err and "--fusion rrf|minmax|zscore" in err and "Traceback" not in err
    assert not out.exists()
    args = _args(train_reranker, tmp_path, "--encoder", str(run / "final"), "--fusion", "rrf")
    train_reranker.check_arguments(args)  # --fusion given: the file is not read


def test_a_good_fusion_file_is_read(tiny_encoder_path, tmp_path):
    run = tmp_path / "enc"
    run.mkdir()
    os.symlink(tiny_encoder_path, run / "final")
    saved = {"fusion_mode": "rrf", "alpha": 0.45, "rrf_k": 5.0, "dense_top_k": 200}
    (run / "fusion.json").write_text(json.dumps(saved), encoding="utf-8")
    args = _args(train_reranker, tmp_path, "--encoder", str(run / "final"))
    assert train_reranker._fusion(args) == saved


def test_a_max_length_above_the_models_positions_is_named_before_mining(
    tiny_encoder_path, make_toy, tmp_path, capsys
):
    data = _toy_file(tmp_path, make_toy)
    out = tmp_path / "rr"
    argv = ["train", "reranker", "--dataset", data, "--model", tiny_encoder_path]
    argv += ["--encoder", tiny_encoder_path, "--max-length", "100000", "--device", "cpu"]
    code = main([*argv, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert "--max-length: 100000 is more tokens than the model reads (128 positions" in captured.err
    assert "mined negatives" not in captured.err + captured.out and not out.exists()


def test_the_reranker_engine_refuses_a_max_length_its_model_cannot_read(
    tiny_encoder_path, make_toy, tmp_path
):
    from llama_index_ragtune.finetuning.reranker import RerankerFinetuneEngine

    engine = RerankerFinetuneEngine
    with pytest.raises(ValueError, match=r"max_length=4096 is more tokens .* \(128\)"):
        engine(
            make_toy(),
            model=tiny_encoder_path,
            max_length=4096,
            args=engine.default_args(tmp_path),
            output_dir=tmp_path,
        )
    fits = engine(
        make_toy(),
        model=tiny_encoder_path,
        max_length=128,
        args=engine.default_args(tmp_path),
        output_dir=tmp_path,
    )
    assert fits.model.max_length == 128


def test_matryoshka_dims_above_the_model_size_are_named_before_mining(
    tiny_encoder_path, make_toy, tmp_path, capsys
):
    data = _toy_file(tmp_path, make_toy)
    out = tmp_path / "enc"
    argv = ["train", "encoder", "--dataset", data, "--model", tiny_encoder_path]
    code = main([*argv, "--matryoshka-dims", "64,16", "--device", "cpu", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert "--matryoshka-dims: [64] exceed the model's embedding size 32" in captured.err
    assert "mined negatives" not in captured.err + captured.out and not out.exists()


STOPWORDS_ONLY = RetrievalDataset(
    {"q0": "the a", "q1": "is it"},
    {f"d{i}": "the a an" for i in range(4)},
    {"q0": ["d0"], "q1": ["d1"]},
)


@pytest.mark.parametrize(
    ("negatives", "words"),
    [
        ("bm25", "mining hard negatives (bm25) failed: none of the 4 documents"),
        ("none", "HybridRetrievalEvaluator: none of the 4 nodes"),
    ],
)
def test_a_corpus_bm25_cannot_index_is_one_line_naming_the_option(
    negatives, words, tiny_encoder_path, tmp_path, capsys
):
    data = tmp_path / "train.json"
    STOPWORDS_ONLY.save_json(data)
    out = tmp_path / "enc"
    argv = ["train", "encoder", "--dataset", str(data), "--model", tiny_encoder_path]
    argv += ["--negatives", negatives, "--max-steps", "1", "--device", "cpu"]
    code = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert words in err and "--bm25-stopwords none" in err
    assert not out.exists()  # the run's empty output folder is removed


def test_the_reranker_candidates_name_a_corpus_bm25_cannot_index(tiny_encoder_path):
    from llama_index_ragtune.data.errors import DataError
    from llama_index_ragtune.finetuning.candidates import hybrid_candidates_with_scores

    with pytest.raises(DataError, match=r"first-stage candidates .* bm25_stopwords=None"):
        hybrid_candidates_with_scores(
            STOPWORDS_ONLY.queries,
            STOPWORDS_ONLY.corpus,
            top_k=4,
            embed_model=tiny_encoder_path,
            show_progress=False,
        )
    candidates, _ = hybrid_candidates_with_scores(  # with the fix the message names
        STOPWORDS_ONLY.queries,
        STOPWORDS_ONLY.corpus,
        top_k=4,
        embed_model=tiny_encoder_path,
        show_progress=False,
        bm25_kwargs={"stopwords": None},
    )
    assert set(candidates) == {"q0", "q1"}
