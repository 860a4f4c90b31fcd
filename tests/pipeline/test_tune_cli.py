"""``ragtune tune`` / ``ragtune demo`` on the command line: arguments and bad input as one line."""

from __future__ import annotations

import json

import pytest

from llama_index_ragtune.cli import main


def test_missing_docs_folder_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--docs", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --docs: folder not found" in err and str(tmp_path / "nope") in err
    assert not (tmp_path / "o").exists()


def test_bad_options_are_one_line_errors(tmp_path, tiny_corpus, capsys):
    docs = str(tiny_corpus["docs"])
    assert main(["tune", "--docs", docs, "--out", str(tmp_path / "o"), "--skip", "parse"]) == 2
    assert "cannot be skipped" in capsys.readouterr().err
    code = main(["tune", "--docs", docs, "--out", str(tmp_path / "o"), "--time-budget", "-3"])
    assert code == 2 and "minutes > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--docs", docs, "--out", str(tmp_path / "o"), "--max-over-refusal", "2"])
    assert exit_info.value.code == 2
    assert "--max-over-refusal: expected a share in [0, 1] or 'none'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["tune", "--docs", docs, "--out", str(tmp_path / "o"), "--queries", str(tmp_path / "q")]
        )
    assert exit_info.value.code == 2
    assert "file not found" in capsys.readouterr().err


def test_a_bad_queries_file_names_the_file_and_line(
    tmp_path, tiny_corpus, tiny_encoder_path, capsys
):
    queries = tmp_path / "queries.jsonl"
    good = tiny_corpus["queries"].read_text().splitlines()[0]
    bad = json.dumps({"question": "x", "gold": [{"doc_id": "grocery/retruns.md"}]})
    queries.write_text(f"{good}\n{bad}\n", encoding="utf-8")
    code = main(
        [
            "tune",
            "--docs",
            str(tiny_corpus["docs"]),
            "--queries",
            str(queries),
            "--encoder",
            tiny_encoder_path,
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]  # progress bars go to stderr too
    assert code == 1 and err.startswith("ragtune tune: error: ")
    assert f"{queries}:2: gold doc_id 'grocery/retruns.md' is not one of the documents" in err


def test_demo_help_lists_its_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--out DIR" in out and "--resume" in out and "--time-budget" in out
    assert "--with-fusion" in out and "--with-reranker" in out


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ([], ["fusion", "reranker"]),
        (["--with-fusion"], ["reranker"]),
        (["--with-fusion", "--with-reranker"], []),
        (["--skip", "decoder", "--with-reranker"], ["decoder", "fusion"]),
        (["--skip", "fusion"], ["fusion", "reranker"]),
    ],
)
def test_the_demo_leaves_out_the_fusion_and_the_reranker_unless_asked(given, expected):
    import argparse

    from llama_index_ragtune.commands.demo import _skip, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert _skip(parser.parse_args(given)) == expected


def test_the_demo_caps_over_refusal_unless_lifted():
    import argparse

    from llama_index_ragtune.commands.demo import add_arguments
    from llama_index_ragtune.commands.tune import build_config
    from llama_index_ragtune.pipeline import PipelineConfig

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert PipelineConfig().max_over_refusal is None
    assert build_config(parser.parse_args([]), PipelineConfig.demo()).max_over_refusal == 0.1
    lifted = build_config(parser.parse_args(["--max-over-refusal", "none"]), PipelineConfig.demo())
    assert lifted.max_over_refusal is None


@pytest.mark.parametrize(("given", "expected"), [([], None), (["0.1"], 0.1), (["none"], None)])
def test_the_over_refusal_cap_reaches_the_config(given, expected):
    import argparse

    from llama_index_ragtune.commands.tune import add_pipeline_options, build_config

    parser = argparse.ArgumentParser()
    add_pipeline_options(parser)
    args = parser.parse_args(["--max-over-refusal", *given] if given else [])
    assert build_config(args).max_over_refusal == expected


@pytest.mark.parametrize(
    ("given", "base", "expected"),
    [([], None, None), (["0.9"], None, 0.9), ([], "demo", 0.95), (["none"], "demo", None)],
)
def test_the_over_refusal_confidence_reaches_the_config(given, base, expected):
    import argparse

    from llama_index_ragtune.commands.tune import add_pipeline_options, build_config
    from llama_index_ragtune.pipeline import PipelineConfig

    parser = argparse.ArgumentParser()
    add_pipeline_options(parser)
    args = parser.parse_args(["--over-refusal-confidence", *given] if given else [])
    config = build_config(args, PipelineConfig.demo() if base else None)
    assert config.over_refusal_confidence == expected


@pytest.mark.parametrize("bad", ["1", "0", "1.5", "nan", "x"])
def test_a_bad_over_refusal_confidence_is_a_one_line_error(tmp_path, tiny_corpus, capsys, bad):
    docs = str(tiny_corpus["docs"])
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["tune", "--docs", docs, "--out", str(tmp_path / "o"), "--over-refusal-confidence", bad]
        )
    assert exit_info.value.code == 2
    assert "--over-refusal-confidence: expected a probability in (0, 1) or 'none'" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "o").exists()
