"""Reading a documents folder with metadata, and parsing it into stable node ids."""

from __future__ import annotations

import json

import pytest
from llama_index.core.schema import Document

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.pipeline.sources import (
    check_documents,
    load_nodes,
    parse_documents,
    read_documents,
    save_nodes,
)


def _write(root, files: dict[str, str], metadata=None):
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    if metadata is not None:
        (root / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")


def test_metadata_globs_merge_in_order_and_paths_become_ids(tmp_path):
    _write(
        tmp_path,
        {"a/x.md": "# X\n\nText.", "a/y.html": "<h1>Y</h1><p>Text.</p>", "b/z.txt": "Plain."},
        {
            "a/*": {"store": "grocery", "kind": "page"},
            "a/y.html": {"kind": "html"},
            "**/*.txt": {"n": 1},
        },
    )
    docs = read_documents(tmp_path)
    by_id = {d.id_: d.metadata for d in docs}
    assert list(by_id) == ["a/x.md", "a/y.html", "b/z.txt"]
    assert by_id["a/x.md"] == {"store": "grocery", "kind": "page", "file_path": "a/x.md"}
    assert by_id["a/y.html"]["kind"] == "html"  # the later entry wins
    assert by_id["b/z.txt"] == {"n": 1, "file_path": "b/z.txt"}
    nodes = parse_documents(docs)
    assert [n.node_id for n in nodes if n.ref_doc_id == "a/x.md"] == ["a/x.md#0"]
    html = [n for n in nodes if n.ref_doc_id == "a/y.html"]
    assert (
        html and html[0].metadata["section_path"] == "Y" and html[0].metadata["store"] == "grocery"
    )
    assert "file_path" not in html[0].get_content(metadata_mode="embed")


def test_parse_is_stable_and_nodes_round_trip(tmp_path):
    docs = [Document(id_="faq.md", text="# FAQ\n\n## Hours\nOpen 9-5.\n\n## Parking\nFree.")]
    first, second = parse_documents(docs), parse_documents(docs)
    assert [n.node_id for n in first] == [n.node_id for n in second]
    save_nodes(first, tmp_path / "nodes.json")
    again = load_nodes(tmp_path / "nodes.json")
    assert [(n.node_id, n.text, n.metadata) for n in again] == [
        (n.node_id, n.text, n.metadata) for n in first
    ]


def test_unmatched_or_reserved_metadata_is_an_error_naming_the_file(tmp_path):
    _write(tmp_path, {"a.md": "# A\n\nText."}, {"b.md": {"store": "x"}})
    with pytest.raises(DataError, match=r"metadata\.json.*match no document.*'b\.md'"):
        read_documents(tmp_path)
    _write(tmp_path, {}, {"a.md": {"section_path": "x"}})
    with pytest.raises(DataError, match="set by the node parsers"):
        read_documents(tmp_path)
    _write(tmp_path, {}, {"a.md": {"tags": ["x"]}})
    with pytest.raises(DataError, match="string, number, boolean or null"):
        read_documents(tmp_path)
    (tmp_path / "metadata.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"metadata\.json:1: not valid JSON"):
        read_documents(tmp_path)


def test_missing_empty_or_undecodable_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="documents folder not found"):
        read_documents(tmp_path / "nope")
    (tmp_path / "file.md").write_text("# A", encoding="utf-8")
    with pytest.raises(NotADirectoryError):
        read_documents(tmp_path / "file.md")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.pdf").write_bytes(b"%PDF")
    with pytest.raises(DataError, match="no documents"):
        read_documents(empty)
    bad = tmp_path / "bad"
    _write(bad, {"x.md": b"\xff\xfe\x00bad"})
    with pytest.raises(DataError, match=r"x\.md: not UTF-8"):
        read_documents(bad)


def test_empty_files_are_skipped_with_a_warning(tmp_path, caplog):
    _write(tmp_path, {"a.md": "# A\n\nText.", "blank.md": "  \n"})
    docs = read_documents(tmp_path)
    assert [d.id_ for d in docs] == ["a.md"]
    assert "blank.md" in caplog.text


def test_document_lists_need_unique_ids():
    with pytest.raises(ValueError, match="share the id 'a'"):
        check_documents([Document(id_="a", text="x"), Document(id_="a", text="y")])
    with pytest.raises(TypeError, match=r"documents\[0\] is a str"):
        check_documents(["text"])
