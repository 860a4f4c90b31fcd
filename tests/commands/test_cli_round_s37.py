"""Hostile-input battery (round s37) on the commands: output folders inside --docs, a
report --out named like a file, and list options given more than once."""

import json
import sqlite3

import pytest

from llama_index_ragtune.cli import _build_parser, main
from llama_index_ragtune.evaluation.results import EvaluationResults


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Returns\n\nThirty days.\n", encoding="utf-8")
    (tmp_path / "link").symlink_to(folder)
    return folder


def _listing(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize("out", ["docs", "docs/run", "docs/a/b", "link/run"])
def test_tune_out_in_the_docs_folder_is_refused_before_anything_is_written(
    docs, tmp_path, capsys, out
):
    before = _listing(tmp_path)
    argv = ["tune", "--docs", str(docs), "--out", str(tmp_path / out), "--skip", "decoder"]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    # refused by the pipeline's own layout check (TuningPipeline), before any work
    assert error.startswith("ragtune tune: error: --out") and "\n" not in error
    assert "inside the documents folder" in error and "as documents" in error
    assert _listing(tmp_path) == before  # no bundle for the next run to read as documents


@pytest.mark.parametrize("option", ["--out", "--bundle"])
def test_refresh_folders_in_the_docs_folder_are_refused(docs, tmp_path, capsys, option):
    store = tmp_path / "feedback.db"
    sqlite3.connect(store).close()
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    folders = {"--out": str(tmp_path / "refresh"), "--bundle": str(bundle)}
    folders[option] = str(docs)
    argv = ["refresh", "--docs", str(docs), "--feedback", str(store)]
    before = _listing(tmp_path)
    assert main([*argv, *(x for pair in folders.items() for x in pair)]) == 2
    error = capsys.readouterr().err
    assert f"{option} {docs} is inside the documents folder {docs}" in error
    assert _listing(tmp_path) == before


def test_folders_beside_or_above_the_docs_are_accepted(docs, tmp_path):
    from llama_index_ragtune.pipeline.runner import check_outside_documents

    check_outside_documents(docs, {"--out": tmp_path / "docs-runs"})  # a sibling
    check_outside_documents(docs, {"--out": tmp_path})  # a parent holds the docs
    with pytest.raises(ValueError, match="inside the documents folder"):
        check_outside_documents(docs, {"--out": tmp_path / "link" / "run"})  # through a link


@pytest.mark.parametrize("name", ["report.html", "REPORT.MD", "r.htm", "notes.markdown"])
def test_report_out_named_like_a_file_is_refused_without_making_a_folder(tmp_path, capsys, name):
    results = EvaluationResults("t", "d", {"test": 1}, "v1", created="2026-01-01T00:00:00Z")
    results.add_retrieval("bm25", "before", {"ndcg@10": 0.5}, [1.0])
    source = results.save(tmp_path / "evaluation.json")
    out = tmp_path / "site" / name
    assert main(["report", str(source), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "names a file" in error and f"pass {out.parent}" in error
    assert not (tmp_path / "site").exists()  # was: a folder named report.html holding report.html
    out.mkdir(parents=True)  # a folder that really is named so is written into
    assert main(["report", str(source), "--out", str(out)]) == 0
    assert (out / "report.html").is_file()


@pytest.mark.parametrize(
    ("argv", "dest", "expected"),
    [
        (["tune", "--docs", ".", "--out", "o", "--skip", "encoder", "--skip", "decoder"],
         "skip", "encoder,decoder"),
        (["tune", "--docs", ".", "--out", "o", "--skip", "encoder,fusion"], "skip",
         "encoder,fusion"),
        (["tune", "--docs", ".", "--out", "o"], "skip", None),
        (["demo", "--skip", "reranker", "--skip", "evaluate"], "skip", "reranker,evaluate"),
        (["refresh", "--bundle", ".", "--feedback", __file__, "--out", "o"], "keys", "store"),
        (["refresh", "--bundle", ".", "--feedback", __file__, "--out", "o", "--keys", "store",
          "--keys", "lang"], "keys", "store,lang"),
        (["refresh", "--bundle", ".", "--feedback", __file__, "--out", "o", "--keys", "lang"],
         "keys", "lang"),
    ],
)  # fmt: skip
def test_a_list_option_given_twice_keeps_every_value(argv, dest, expected):
    parser = _build_parser(argv)
    assert getattr(parser.parse_args(argv), dest) == expected
    assert getattr(parser.parse_args(argv), dest) == expected  # parsing again: the same


@pytest.mark.parametrize("out", [None, "bundles/v1", "bundles/v1/report", "bundles/v1/x/y"])
def test_report_into_a_bundle_version_is_refused_and_the_version_left_as_it_is(
    tmp_path, capsys, out
):
    version = tmp_path / "bundles" / "v1"
    (version / "report").mkdir(parents=True)
    manifest = {"format": "ragtune-bundle", "format_version": 1, "version": "v1", "files": {}}
    (version / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    results = EvaluationResults("t", "d", {"test": 1}, "v1", created="2026-01-01T00:00:00Z")
    results.add_retrieval("bm25", "before", {"ndcg@10": 0.5}, [1.0])
    source = results.save(version / "evaluation.json")  # where a tuning run writes it
    before = _listing(tmp_path)
    argv = ["report", str(source)] + ([] if out is None else ["--out", str(tmp_path / out)])
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "is in bundle version" in error and f"--out {tmp_path}/report-v1" in error
    assert _listing(tmp_path) == before  # load_bundle would refuse a version with new files
    assert main([*argv[:2], "--out", str(tmp_path / "report-v1")]) == 0  # outside: written


@pytest.mark.parametrize("value", ["false", "No", " off ", "0", ""])
def test_a_debug_variable_saying_off_keeps_the_one_line_error(tmp_path, capsys, monkeypatch, value):
    # was: RAGTUNE_DEBUG=false (any value but "" or "0") printed a traceback
    from llama_index_ragtune import cli

    monkeypatch.setenv(cli.DEBUG_ENV, value)
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.startswith("ragtune report: error:")
    monkeypatch.setenv(cli.DEBUG_ENV, "yes")
    with pytest.raises(Exception, match="missing.json"):
        main(["report", str(tmp_path / "missing.json")])
