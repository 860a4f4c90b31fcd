"""Bad inputs to ``ragtune tune``: one-line errors naming the file, found before the index step,
and no output folder left behind."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from llama_index_ragtune.cli import main
from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.pipeline import steps
from llama_index_ragtune.pipeline.sources import parse_documents, read_documents, read_metadata

SKIP = "encoder,fusion,reranker,decoder,evaluate"


def _copy_docs(tiny_corpus, tmp_path, extra: dict[str, bytes]):
    docs = tmp_path / "docs"
    shutil.copytree(tiny_corpus["docs"], docs)
    for rel, data in extra.items():
        (docs / rel).write_bytes(data)
    return docs


def _tune(docs, out, queries, encoder, *extra):
    argv = ["tune", "--docs", str(docs), "--queries", str(queries), "--encoder", encoder]
    return main([*argv, "--out", str(out), "--skip", SKIP, *extra])


@pytest.fixture
def no_index(monkeypatch):
    """The index step fails the test: bad input must be found before it."""

    def index(ctx):
        raise AssertionError("the index step ran")

    monkeypatch.setitem(steps.STEP_FUNCTIONS, "index", index)


@pytest.mark.parametrize("name,data", [("n.txt", b"\x00" * 1000), ("x.md", b"# X\n\nab \x00 cd\n")])
def test_a_document_with_nul_bytes_is_a_data_error_naming_it(tiny_corpus, tmp_path, name, data):
    docs = _copy_docs(tiny_corpus, tmp_path, {name: data})
    with pytest.raises(DataError, match="contains NUL bytes") as info:
        read_documents(docs, metadata=tiny_corpus["metadata"])
    assert info.value.path == docs / name


def test_a_binary_document_fails_the_cli_in_one_line_and_leaves_nothing(
    tiny_corpus, tiny_encoder_path, tmp_path, capsys
):
    docs = _copy_docs(tiny_corpus, tmp_path, {"n.txt": b"\x00" * 1000})
    out = tmp_path / "o"
    code = _tune(docs, out, tiny_corpus["queries"], tiny_encoder_path)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"ragtune tune: error: {docs / 'n.txt'}: Document 'n.txt' contains NUL bytes" in err
    assert not out.exists()


def test_a_document_parse_error_is_a_one_line_cli_error():
    from llama_index_ragtune.cli import _user_error_types
    from llama_index_ragtune.node_parser import DocumentParseError

    assert DocumentParseError in _user_error_types()


@pytest.mark.parametrize("entry", [{"store": "\\ud800"}, {"\\udc00": "x"}])
def test_a_lone_surrogate_in_metadata_is_a_data_error(tmp_path, entry):
    path = tmp_path / "metadata.json"
    body = ", ".join(f'"{k}": "{v}"' for k, v in entry.items())
    path.write_text('{"ok.md": {' + body + "}}", encoding="utf-8")
    with pytest.raises(DataError, match="lone surrogate") as info:
        read_metadata(path, ["ok.md"])
    assert info.value.path == path and "ok.md" in str(info.value)


def test_metadata_too_large_to_embed_names_the_metadata_file(
    tiny_corpus, tiny_encoder_path, tmp_path, capsys, no_index
):
    docs = _copy_docs(tiny_corpus, tmp_path, {})
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps({"grocery/produce.md": {f"k{i}": "v" for i in range(2000)}}))
    out = tmp_path / "o"
    code = _tune(docs, out, tiny_corpus["queries"], tiny_encoder_path, "--metadata", str(meta))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and err.startswith(f"ragtune tune: error: {meta}: the metadata of ")
    assert "'grocery/produce.md' is too large to embed" in err
    assert not out.exists()


def _with_splits(tiny_corpus, tmp_path, split_of):
    lines = tiny_corpus["queries"].read_text(encoding="utf-8").splitlines()
    rows = [split_of(json.loads(line)) for line in lines]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if r), encoding="utf-8")
    return path


@pytest.mark.parametrize("case", ["all_train", "one_question"])
def test_a_queries_file_without_a_test_question_fails_before_the_index(
    tiny_corpus, tiny_encoder_path, tmp_path, capsys, no_index, case
):
    if case == "all_train":
        queries = _with_splits(tiny_corpus, tmp_path, lambda r: {**r, "split": "train"})
    else:
        queries = _with_splits(tiny_corpus, tmp_path, lambda r: r if r["id"] == "q00" else None)
    out = tmp_path / "o"
    code = _tune(tiny_corpus["docs"], out, queries, tiny_encoder_path)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"ragtune tune: error: {queries}: no test question: all " in err
    assert not out.exists()


def test_a_bad_gold_reference_fails_before_the_index_and_keeps_an_existing_out(
    tiny_corpus, tiny_encoder_path, tmp_path, capsys, no_index
):
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"question": "x", "gold": [{"doc_id": "nope.md"}]}) + "\n")
    out = tmp_path / "o"
    out.mkdir()
    code = _tune(tiny_corpus["docs"], out, queries, tiny_encoder_path)
    assert code == 1 and f"{queries}:1: gold doc_id 'nope.md'" in capsys.readouterr().err
    assert out.is_dir() and list(out.iterdir()) == []  # the folder was the user's: only work/ goes


def test_a_failure_after_a_finished_step_keeps_the_work_for_resume(
    tiny_corpus, make_config, tmp_path, no_index
):
    from llama_index_ragtune.pipeline import TuningPipeline

    out = tmp_path / "o"
    pipeline = TuningPipeline(
        tiny_corpus["docs"], out, queries=tiny_corpus["queries"], config=make_config()
    )
    with pytest.raises(AssertionError, match="the index step ran"):
        pipeline.run()
    assert (out / "work" / "nodes.json").is_file()
    assert pipeline.context.state.done("parse")


def test_textless_files_are_skipped_with_a_warning_naming_them(tiny_corpus, tmp_path, caplog):
    extra = {
        "shell.html": b"<html><body> </body></html>",
        "heads.md": b"#\n##\n---\n",
        "zw.md": "\u200b\u200b\ufeff".encode(),
        "ws.txt": "\u00a0\u3000\u200b\n".encode(),
    }
    docs = _copy_docs(tiny_corpus, tmp_path, extra)
    with caplog.at_level(logging.WARNING):
        documents = read_documents(docs, metadata=tiny_corpus["metadata"])
        nodes = parse_documents(documents, tokenizer=None)
    ids = {d.id_ for d in documents}
    assert "zw.md" not in ids and "ws.txt" not in ids
    assert {n.ref_doc_id for n in nodes}.isdisjoint(extra)
    text = caplog.text
    assert "skipped 2 empty file(s)" in text and "'ws.txt'" in text and "'zw.md'" in text
    assert "with no text after parsing" in text and "'heads.md'" in text
    assert "'shell.html'" in text


@pytest.mark.parametrize("doc_id", ["shell.html", "zw.md"])
def test_a_gold_reference_to_a_skipped_file_says_it_has_no_text(
    tiny_corpus, tiny_encoder_path, tmp_path, capsys, no_index, doc_id
):
    extra = {"shell.html": b"<html><body> </body></html>", "zw.md": "\u200b\ufeff".encode()}
    docs = _copy_docs(tiny_corpus, tmp_path, extra)
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"question": "x", "gold": [{"doc_id": doc_id}]}) + "\n")
    out = tmp_path / "o"
    code = _tune(docs, out, queries, tiny_encoder_path, "--metadata", str(tiny_corpus["metadata"]))
    err = capsys.readouterr().err
    assert code == 1
    assert f"{queries}:1: gold doc_id '{doc_id}' was skipped because it has no text" in err
    assert not out.exists()
