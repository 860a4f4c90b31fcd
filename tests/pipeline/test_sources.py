"""Reading a documents folder with metadata, and parsing it into stable node ids."""

from __future__ import annotations

import json
import os
import time

import pytest
from llama_index.core.schema import Document

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.pipeline.sources import (
    check_documents,
    glob_match,
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
    with pytest.raises(DataError, match=r"metadata\.json:1:2: malformed JSON"):
        read_documents(tmp_path)
    _write(tmp_path, {}, {"a.md": {"file_path": "elsewhere.md"}})
    with pytest.raises(
        DataError, match=r"key 'file_path' is set by the node parsers or the reader"
    ):
        read_documents(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a.md": {"store": "x"}, "a.md": {"lang": "en"}}', "'a.md' appears twice"),
        ('{"a.md": {"store": "x", "store": "y"}}', "'store' appears twice"),
        ('{"a.md": {"rank": NaN}}', "NaN is not valid JSON"),
        ('{"a.md": {"rank": ' + "9" * 5000 + "}}", "bad JSON value"),
        ('{"a.md": {"rank": ' + "[" * 100_000 + "]" * 100_000 + "}}", "nested too deeply"),
        ("", "the file is empty"),
    ],
)
def test_metadata_json_is_strict_and_never_drops_a_repeated_key(tmp_path, text, message):
    _write(tmp_path, {"a.md": "# A\n\nText."})
    (tmp_path / "metadata.json").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=rf"metadata\.json.*{message}"):
        read_documents(tmp_path)
    (tmp_path / "metadata.json").unlink()
    (tmp_path / "metadata.json").mkdir()
    with pytest.raises(DataError, match=r"metadata\.json: is a folder"):
        read_documents(tmp_path, metadata=tmp_path / "metadata.json")


def test_a_metadata_file_with_a_bom_is_read(tmp_path):
    _write(tmp_path, {"a.md": "# A\n\nText."})
    (tmp_path / "metadata.json").write_bytes(b'\xef\xbb\xbf{"a.md": {"store": "x"}}')
    assert read_documents(tmp_path)[0].metadata["store"] == "x"


def test_metadata_globs_match_in_linear_time(tmp_path):
    """A pattern of many ``**/`` against a deep path used to backtrack for minutes."""
    deep = "/".join(["d"] * 40) + "/b.md"
    _write(tmp_path, {"a.md": "# A\n\nText.", deep: "# B\n\nText."})
    pattern = "**/" * 25 + "x.md"
    (tmp_path / "metadata.json").write_text(json.dumps({pattern: {"k": "v"}}), encoding="utf-8")
    started = time.perf_counter()
    with pytest.raises(DataError, match="match no document"):
        read_documents(tmp_path)
    assert time.perf_counter() - started < 5
    cases = [
        ("**/*.md", "a/b/c.md", True),
        ("**/*.md", "c.md", True),
        ("a/**/c.md", "a/c.md", True),
        ("a/**/c.md", "a/x/y/c.md", True),
        ("a/*", "a/b/c.md", False),
        ("a/**", "a/b/c.md", True),
        ("**/", "b", False),
        ("?.md", "a.md", True),
        ("?.md", "/.md", False),
    ]
    assert [glob_match(p, f) for p, f, _ in cases] == [want for _, _, want in cases]


def test_a_file_name_that_is_not_utf8_is_named(tmp_path):
    _write(tmp_path, {"a.md": "# A\n\nText."})
    with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.md"), "wb") as handle:
        handle.write(b"# C\n\nText.")
    with pytest.raises(DataError, match=r"caf.*\.md: the file name is not valid UTF-8"):
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
    _write(bad, {"x.md": b"caf\xe9 bad"})  # a UTF-16 BOM now names the encoding
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
