"""Reading a hostile documents folder: links, special files, unreadable folders, odd names."""

from __future__ import annotations

import logging
import os

import pytest
from llama_index.core.schema import Document, TextNode

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.pipeline.sources import (
    check_documents,
    document_files,
    parse_documents,
    read_documents,
)

GOOD = "# Returns\n\nWithin 30 days."


def _write(root, files: dict[str, str | bytes]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_broken_links_fifos_and_devices_are_named_in_a_warning(tmp_path, caplog):
    # They used to be skipped silently (reading a FIFO or /dev/zero would hang).
    _write(tmp_path, {"ok.md": GOOD})
    (tmp_path / "dangling.md").symlink_to(tmp_path / "missing.md")
    (tmp_path / "loop1.md").symlink_to(tmp_path / "loop2.md")
    (tmp_path / "loop2.md").symlink_to(tmp_path / "loop1.md")
    (tmp_path / "zero.html").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "pipe.txt")
    with caplog.at_level(logging.WARNING):
        docs = read_documents(tmp_path)
    assert [d.id_ for d in docs] == ["ok.md"]
    broken = [m for m in _warnings(caplog) if "broken symbolic links" in m]
    special = [m for m in _warnings(caplog) if "not regular files" in m]
    assert len(broken) == 1 and "['dangling.md', 'loop1.md', 'loop2.md']" in broken[0]
    assert len(special) == 1 and "['pipe.txt', 'zero.html']" in special[0]
    assert document_files(tmp_path) == ["ok.md"]


def test_a_linked_folder_is_named_not_followed(tmp_path, caplog):
    docs_dir, shared = tmp_path / "docs", tmp_path / "shared"
    _write(docs_dir, {"ok.md": GOOD, "sub/loop_target.md": GOOD})
    _write(shared, {"faq.md": GOOD})
    (docs_dir / "shared").symlink_to(shared)
    (docs_dir / "sub" / "up").symlink_to(docs_dir)  # a loop back to the root
    with caplog.at_level(logging.WARNING):
        docs = read_documents(docs_dir)
    assert [d.id_ for d in docs] == ["ok.md", "sub/loop_target.md"]
    linked = [m for m in _warnings(caplog) if "links to folders are not followed" in m]
    assert len(linked) == 1 and "['shared', 'sub/up']" in linked[0]


def test_an_unreadable_subfolder_is_an_error_naming_it(tmp_path, monkeypatch):
    # It used to be skipped silently, with every document in it.
    _write(tmp_path, {"ok.md": GOOD, "locked/policy.md": GOOD})
    locked = str(tmp_path / "locked")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match="cannot list this folder") as err:
        read_documents(tmp_path)
    assert err.value.path == tmp_path / "locked"
    assert "Permission denied" in str(err.value) and "chmod" in str(err.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads all")
def test_an_unreadable_subfolder_on_disk_is_an_error_naming_it(tmp_path):
    _write(tmp_path, {"ok.md": GOOD, "locked/policy.md": GOOD})
    (tmp_path / "locked").chmod(0)
    try:
        with pytest.raises(DataError, match="cannot list this folder") as err:
            read_documents(tmp_path)
        assert err.value.path == tmp_path / "locked"
    finally:
        (tmp_path / "locked").chmod(0o755)


def test_a_folder_of_only_hidden_documents_says_they_are_hidden(tmp_path):
    _write(tmp_path, {".draft.md": GOOD, ".git/notes.md": GOOD, "image.png": b"\x89PNG"})
    with pytest.raises(DataError, match="no documents") as err:
        read_documents(tmp_path)
    assert "hidden, so skipped: ['.draft.md', '.git']" in str(err.value)


def test_a_utf16_file_is_read_by_its_byte_order_mark(tmp_path):
    # was refused with "convert it to UTF-8 (`iconv -f UTF-16 -t UTF-8`)"; a BOM names the
    # encoding, as browsers and iconv read it
    _write(tmp_path, {"ok.md": GOOD, "export.html": "<p>Héllo</p>".encode("utf-16")})
    docs = {doc.id_: doc.text for doc in read_documents(tmp_path)}
    assert docs["export.html"] == "<p>Héllo</p>"


@pytest.mark.parametrize(
    "data",
    ["café".encode("latin-1"), b"\x89PNG\r\n\x1a\n\x00\x00", "\u20ac 5".encode("cp1252")],
)
def test_other_undecodable_files_are_named_with_the_byte(tmp_path, data):
    _write(tmp_path, {"ok.md": GOOD, "bad.md": data})
    with pytest.raises(DataError, match=r"not UTF-8 text \(byte \d+\); convert it to UTF-8"):
        read_documents(tmp_path)


def test_odd_but_valid_names_are_distinct_document_ids(tmp_path):
    # "new\nline.md" was here: control characters in a name are refused since (they broke
    # every log line printing the id): tests/node_parser/test_hostile_round_s38.py
    names = ["FAQ.md", "faq.md", "a#1.md", "back\\slash.md", "x" * 200 + ".md"]
    _write(tmp_path, {name: f"# {i}\n\nText {i}." for i, name in enumerate(names)})
    docs = read_documents(tmp_path)
    assert [d.id_ for d in docs] == sorted(names)
    nodes = parse_documents(docs)
    assert sorted(n.node_id for n in nodes) == sorted(f"{name}#0" for name in names)


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        (Document(id_="a.md", text="x"), "got one Document; wrap it in a list: [document]"),
        (TextNode(text="x"), "got one TextNode; wrap it in a list"),
        (5, "a folder (a str or pathlib.Path) or a list of llama_index Documents, got a int"),
        (b"/tmp/docs", "got a bytes"),
        ({"a.md": "text"}, "got a dict"),
    ],
)
def test_documents_that_are_not_a_list_are_a_clear_type_error(documents, message):
    # A single Document used to read as "documents[0] is a tuple"; an int was a raw TypeError.
    with pytest.raises(TypeError) as err:
        check_documents(documents)
    assert message in str(err.value)


@pytest.mark.parametrize("doc_id", ["", "   "])
def test_an_empty_document_id_is_refused(doc_id):
    # It used to give node ids like "#0" that no question can name.
    docs = [Document(id_="ok.md", text="x"), Document(id_=doc_id, text="y")]
    with pytest.raises(ValueError, match=r"documents\[1\] has an empty id_"):
        check_documents(docs)


def test_none_is_no_documents():
    with pytest.raises(ValueError, match="no documents given"):
        check_documents(None)


@pytest.mark.parametrize("kind", ["broken link", "folder"])
def test_a_metadata_file_that_cannot_be_read_is_named_not_passed_over(tmp_path, kind):
    # A broken metadata.json link used to be passed over: every document lost its metadata.
    _write(tmp_path, {"a.md": GOOD})
    if kind == "broken link":
        (tmp_path / "metadata.json").symlink_to(tmp_path / "moved.json")
    else:
        (tmp_path / "metadata.json").mkdir()
    with pytest.raises(DataError, match="is not a readable file") as err:
        read_documents(tmp_path)
    assert err.value.path == tmp_path / "metadata.json"
    assert "--metadata" in str(err.value)
