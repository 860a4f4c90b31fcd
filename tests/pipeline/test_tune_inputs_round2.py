"""What a user feeds ``ragtune tune``, second hostile battery: names, sizes, races, encodings
of the docs folder; paths, ids, long lines and split leakage of the queries; metadata keys."""

from __future__ import annotations

import json
import logging
import os
import signal
import unicodedata

import pytest
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.reading import iter_lines
from llama_index_ragtune.pipeline import queries as queries_module
from llama_index_ragtune.pipeline import sources
from llama_index_ragtune.pipeline.queries import (
    LabelledQuery,
    carve_dev,
    load_queries,
    split_queries,
)
from llama_index_ragtune.pipeline.sources import MAX_DOCUMENT_BYTES, read_documents, read_metadata
from tests.pipeline.test_sources_hostile import _warnings, _write

GOOD = "# Returns\n\nWithin 30 days.\n"
CAFE_NFC = unicodedata.normalize("NFC", "café")
CAFE_NFD = unicodedata.normalize("NFD", "café")


# -- the docs folder ---------------------------------------------------------------------


def test_file_names_equal_in_nfc_are_refused_naming_both(tmp_path):
    # Both used to be read as two documents whose ids print identically.
    _write(tmp_path, {f"{CAFE_NFC}.md": GOOD, f"{CAFE_NFD}.md": GOOD})
    with pytest.raises(DataError, match="same text in different Unicode forms") as err:
        read_documents(tmp_path)
    assert "'cafe\\u0301.md' and 'caf\\xe9.md'" in str(err.value)


def test_file_names_differing_in_case_are_two_documents_and_a_warning(tmp_path, caplog):
    _write(tmp_path, {"Returns.md": GOOD, "returns.md": GOOD, "other.md": GOOD})
    with caplog.at_level(logging.WARNING):
        docs = read_documents(tmp_path)
    assert [d.id_ for d in docs] == ["Returns.md", "other.md", "returns.md"]
    assert any(
        "differ only in case: [['Returns.md', 'returns.md']]" in m for m in _warnings(caplog)
    )


def test_office_lock_files_are_skipped_like_hidden_files(tmp_path):
    # A binary "~$" owner file used to fail the whole run as "contains NUL bytes".
    _write(tmp_path, {"ok.md": GOOD, "~$report.html": b"\x05John\x00\x00\x00" * 20})
    assert [d.id_ for d in read_documents(tmp_path)] == ["ok.md"]
    (tmp_path / "ok.md").unlink()
    with pytest.raises(DataError, match=r"hidden, so skipped: \['~\$report\.html'\]"):
        read_documents(tmp_path)


def test_a_file_over_the_size_limit_is_named_not_read(tmp_path):
    _write(tmp_path, {"ok.md": GOOD, "big.txt": "word " * 100})
    with pytest.raises(DataError, match=r"big\.txt: is larger than the 499-byte limit") as err:
        read_documents(tmp_path, max_bytes=499)
    assert err.value.path == tmp_path / "big.txt"
    assert len(read_documents(tmp_path, max_bytes=500)) == 2
    # the default limit: a 32 MiB text file plus one byte (was read whole, and parsed)
    (tmp_path / "big.txt").write_bytes(b"word\n" * (MAX_DOCUMENT_BYTES // 5) + b"more\n")
    with pytest.raises(DataError, match=r"larger than the 33,554,432-byte limit"):
        read_documents(tmp_path)


def _after_the_walk(monkeypatch, change) -> None:
    """Make ``change(root)`` happen between the folder's walk and the reading of its files."""
    walk = sources._scan

    def scan_then_change(root, suffixes):
        found = walk(root, suffixes)
        change(root)
        return found

    monkeypatch.setattr(sources, "_scan", scan_then_change)


def test_a_file_removed_while_the_folder_is_read_is_named(tmp_path, monkeypatch):
    # Was a raw FileNotFoundError traceback.
    _write(tmp_path, {"a.md": GOOD, "b.md": GOOD})
    _after_the_walk(monkeypatch, lambda root: (root / "b.md").unlink())
    with pytest.raises(DataError, match=r"b\.md: cannot be read \(No such file") as err:
        read_documents(tmp_path)
    assert "removed or changed while the folder was read" in str(err.value)


def test_a_file_replaced_by_a_fifo_while_the_folder_is_read_does_not_block(tmp_path, monkeypatch):
    # Reading the FIFO used to block for ever.
    _write(tmp_path, {"a.md": GOOD, "b.md": GOOD})

    def to_fifo(root):
        (root / "b.md").unlink()
        os.mkfifo(root / "b.md")

    _after_the_walk(monkeypatch, to_fifo)

    def hung(*_):
        raise AssertionError("reading blocked on the FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with pytest.raises(DataError, match=r"b\.md: is no longer a regular file"):
            read_documents(tmp_path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_every_file_that_is_not_utf8_is_named_in_one_error(tmp_path):
    # Only the first was named, so a folder of legacy files took one run per file.
    _write(
        tmp_path,
        {
            "a_latin1.md": "# Café\n\nRéponse".encode("latin-1"),
            "b_cp1252.md": "# “Quoted” €5".encode("cp1252"),
            "c_sjis.md": "# 返品\n\n返品は30日以内".encode("shift_jis"),
            "ok.md": GOOD,
        },
    )
    with pytest.raises(DataError, match=r"a_latin1\.md: not UTF-8 text \(byte 5\)") as err:
        read_documents(tmp_path)
    assert "nor are 2 other file(s): ['b_cp1252.md', 'c_sjis.md']" in str(err.value)
    assert "convert them to UTF-8" in str(err.value) and "SHIFT_JIS" in str(err.value)


class _CountedName(str):
    """A file name that counts how often it is compared."""

    comparisons = 0

    def __eq__(self, other):
        _CountedName.comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_metadata_with_an_entry_per_file_takes_linear_time(tmp_path):
    # Each literal key was compared with every file: quadratic (64 s for 50,000 files).
    n = 400
    files = [_CountedName(f"folder/doc{i:04d}.md") for i in range(n)]
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({f: {"n": i} for i, f in enumerate(files)}))
    _CountedName.comparisons = 0
    merged = read_metadata(path, files)
    assert merged["folder/doc0399.md"] == {"n": 399}
    assert _CountedName.comparisons <= 4 * n  # was n * n / 2


@pytest.mark.parametrize(
    "key", ["./grocery/returns.md", "grocery\\returns.md", "grocery//returns.md"]
)
def test_metadata_paths_spelled_with_dot_slash_or_backslashes_match_the_file(tmp_path, key):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({key: {"store": "grocery"}}))
    files = ["grocery/returns.md", "electronics/returns.md"]
    assert read_metadata(path, files)["grocery/returns.md"] == {"store": "grocery"}


def test_a_metadata_path_that_is_a_typo_names_the_closest_file(tmp_path):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({"grocery/retruns.md": {"store": "grocery"}}))
    with pytest.raises(DataError, match=r"match no document: \['grocery/retruns\.md'\]") as err:
        read_metadata(path, ["grocery/returns.md", "grocery/produce.md"])
    assert "did you mean {'grocery/retruns.md': 'grocery/returns.md'}" in str(err.value)


@pytest.mark.parametrize("key", ["doc_id", "document_id", "ref_doc_id", "_node_content"])
def test_metadata_keys_of_llamaindex_vector_stores_are_refused(tmp_path, key):
    # Were kept: the BM25 side filtered on the user's value, a vector store on the doc id.
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({"a.md": {key: "x"}}))
    with pytest.raises(DataError, match=rf"key '{key}' is set by LlamaIndex's vector stores"):
        read_metadata(path, ["a.md"])


def test_metadata_null_unsets_a_key_instead_of_embedding_none(tmp_path):
    # Was kept as None and embedded in every node's text as "store: None".
    path = tmp_path / "metadata.json"
    path.write_text(
        json.dumps({"**": {"store": "grocery", "lang": "en"}, "faq.md": {"store": None}})
    )
    merged = read_metadata(path, ["faq.md", "grocery/returns.md"])
    assert merged == {
        "faq.md": {"lang": "en"},
        "grocery/returns.md": {"store": "grocery", "lang": "en"},
    }


@pytest.mark.parametrize("key", ["", "  ", "st\nore"])
def test_a_blank_or_control_character_metadata_key_is_refused(tmp_path, key):
    # Was embedded as ": 1" in every node's text.
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({"a.md": {key: 1}}))
    with pytest.raises(DataError, match=r"a\.md\"\]: metadata key .* is blank or holds a control"):
        read_metadata(path, ["a.md"])


# -- the queries file --------------------------------------------------------------------


def _node(doc_id: str, n: int = 0) -> TextNode:
    node = TextNode(id_=f"{doc_id}#{n}", text="x", metadata={"section_path": "A"})
    node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=doc_id)
    return node


NODES = [_node("grocery/returns.md"), _node("faq.md")]


def _queries(tmp_path, lines: list) -> list[LabelledQuery]:
    path = tmp_path / "queries.jsonl"
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    )
    return load_queries(path, NODES)


@pytest.mark.parametrize(
    "ref",
    [
        {"doc_id": "grocery\\returns.md"},
        {"doc_id": "./grocery/returns.md"},
        {"node_id": ".\\grocery\\returns.md#0"},
        "./grocery/returns.md",
    ],
)
def test_gold_paths_with_backslashes_or_dot_slash_resolve(tmp_path, ref):
    # Were "not one of the documents".
    [query] = _queries(tmp_path, [{"question": "refunds?", "gold": [ref]}])
    assert query.gold_node_ids == ["grocery/returns.md#0"]


def test_a_document_really_named_with_a_backslash_is_kept_apart(tmp_path):
    nodes = [_node("a/b.md"), _node("a\\b.md")]
    path = tmp_path / "queries.jsonl"
    path.write_text(json.dumps({"question": "q", "gold": [{"doc_id": "a\\b.md"}]}))
    assert load_queries(path, nodes)[0].gold_node_ids == ["a\\b.md#0"]
    path.write_text(json.dumps({"question": "q", "gold": [{"doc_id": "./a/b.md"}]}))
    assert load_queries(path, nodes)[0].gold_node_ids == ["a/b.md#0"]


def test_question_ids_equal_in_nfc_are_duplicates_and_case_is_kept(tmp_path):
    lines = [
        {"id": CAFE_NFC, "question": "one", "gold": ["faq.md"]},
        {"id": CAFE_NFD, "question": "two", "gold": ["faq.md"]},
    ]
    with pytest.raises(DataError, match=r"queries\.jsonl:2: duplicate id .* another Unicode form"):
        _queries(tmp_path, lines)
    lines = [{"id": "Q1", "question": "one", "gold": ["faq.md"]}, {"id": "q1", "question": "two"}]
    assert [q.id for q in _queries(tmp_path, lines)] == ["Q1", "q1"]


def test_twins_given_contradicting_splits_are_refused(tmp_path):
    # Were both kept: the test question's twin was trained on.
    lines = [
        {"question": "What is the refund time?", "gold": ["faq.md"], "split": "train"},
        {"question": "what  is the refund\ttime", "gold": ["faq.md"], "split": "test"},
    ]
    with pytest.raises(DataError, match=r"queries\.jsonl:2: .* its twin on line 1 .* 'train'"):
        _queries(tmp_path, lines)


def _others(n: int, answerable: bool = True) -> list[LabelledQuery]:
    return [
        LabelledQuery(
            id=f"{answerable}-{i}",
            question=f"other question {answerable} {i}",
            gold_node_ids=["faq.md#0"] if answerable else [],
            answerable=answerable,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("side", ["train", "test"])
def test_a_question_without_a_split_follows_its_twin_that_has_one(side):
    # Was split at random: the twin landed on the other side in 15 of 20 seeds.
    fixed = LabelledQuery(id="fixed", question="What is X?", gold_node_ids=["faq.md#0"], split=side)
    twin = LabelledQuery(id="twin", question="  what IS x ", gold_node_ids=["faq.md#0"])
    for seed in range(20):
        train, test = split_queries([fixed, *_others(10), twin], test_fraction=0.5, seed=seed)
        assert {q.id for q in (train if side == "train" else test)} >= {"fixed", "twin"}


def test_an_answerable_and_an_unanswerable_twin_stay_on_one_side():
    # Were split apart in 11 of 20 seeds (grouped by answerability first).
    grocery = LabelledQuery(
        id="A", question="return policy?", gold_node_ids=["faq.md#0"], filters={"store": "g"}
    )
    pharmacy = LabelledQuery(
        id="U", question="Return policy", answerable=False, filters={"store": "p"}
    )
    queries = [*_others(10), *_others(5, answerable=False), grocery, pharmacy]
    for seed in range(20):
        train, test = split_queries(queries, test_fraction=0.5, seed=seed)
        assert len({q.split for q in train + test if q.id in ("A", "U")}) == 1
        assert any(not q.answerable for q in test) and any(not q.answerable for q in train)


def test_the_split_of_questions_without_twins_is_unchanged():
    queries = [*_others(12), *_others(6, answerable=False)]
    train, test = split_queries(queries, test_fraction=0.25, seed=3)
    # the same as before twins followed their splits
    assert sorted(q.id for q in test) == ["False-4", "False-5", "True-1", "True-5", "True-8"]
    assert len(train) == 13


def test_a_line_longer_than_the_limit_is_named(tmp_path, monkeypatch):
    # A 30 MB question used to be read and kept.
    monkeypatch.setattr(queries_module, "MAX_LINE_BYTES", 200)
    lines = [{"question": "short", "gold": ["faq.md"]}, {"question": "x" * 500, "gold": ["faq.md"]}]
    with pytest.raises(DataError, match=r"queries\.jsonl:2: the line is longer than 200 bytes"):
        _queries(tmp_path, lines)


@pytest.mark.parametrize(
    "data",
    [
        b"ab\r\ncd\ref\n\ngh",
        b"\xef\xbb\xbfa\rb\rc\r",
        b"x" * 7 + b"\r\n" + b"y" * 8 + b"\r" + b"z",
        b"\r\n\r\n" + b"q" * 5 + b"\r",
    ],
)
def test_bounded_line_reading_gives_the_same_lines(tmp_path, data):
    path = tmp_path / "f.jsonl"
    path.write_bytes(data)
    assert list(iter_lines(path, max_line_bytes=8)) == list(iter_lines(path))


def test_bounded_line_reading_names_the_first_long_line(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"short\r" + b"y" * 50 + b"\nlast\n")
    with pytest.raises(DataError, match=r"f\.jsonl:2: the line is longer than 8 bytes"):
        list(iter_lines(path, max_line_bytes=8))


def test_twins_are_carved_into_dev_together():
    # Were drawn one by one: split between dev and the decoder's training in 13 of 30 seeds.
    twins = [
        LabelledQuery(
            id="t1", question="Refund time?", gold_node_ids=["n"], filters={"store": "a"}
        ),
        LabelledQuery(
            id="t2", question="refund  time", gold_node_ids=["n"], filters={"store": "b"}
        ),
    ]
    train = [*_others(10), *twins]
    for seed in range(30):
        rest, dev = carve_dev(train, 0.3, seed)
        assert len({q.id for q in rest} | {q.id for q in dev}) == len(train)
        assert ({"t1", "t2"} <= {q.id for q in dev}) or ({"t1", "t2"} <= {q.id for q in rest})
    # without twins the draw is as before
    rest, dev = carve_dev([*_others(12), *_others(5, answerable=False)], 0.3, seed=1)
    assert sorted(q.id for q in dev) == [
        "False-1",
        "False-2",
        "True-1",
        "True-10",
        "True-5",
        "True-8",
    ]


def test_questions_without_letters_are_not_twins_of_each_other(tmp_path):
    lines = [
        {"question": "🍎?", "gold": ["faq.md"], "split": "train"},
        {"question": "🍌?", "gold": ["faq.md"], "split": "test"},
    ]
    assert [q.split for q in _queries(tmp_path, lines)] == ["train", "test"]


def test_line_ends_of_documents_are_read_as_before(tmp_path):
    # the bounded reader keeps text mode's newline translation (CRLF and CR files)
    _write(
        tmp_path,
        {"win.md": b"# A\r\n\r\nx\r\n", "mac.md": b"# B\r\ry\r", "bom.md": b"\xef\xbb\xbfz"},
    )
    texts = {d.id_: d.text for d in read_documents(tmp_path)}
    assert texts == {"bom.md": "\ufeffz", "mac.md": "# B\n\ny\n", "win.md": "# A\n\nx\n"}
