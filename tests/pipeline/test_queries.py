"""Labelled questions: gold resolved to node ids, every mistake named by file and line, splits."""

from __future__ import annotations

import json

import pytest

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.pipeline.queries import (
    LabelledQuery,
    carve_dev,
    load_queries,
    split_queries,
)
from llama_index_ragtune.pipeline.sources import parse_documents, read_documents


@pytest.fixture(scope="module")
def nodes(tiny_corpus):
    return parse_documents(read_documents(tiny_corpus["docs"]))


def _file(tmp_path, *lines) -> str:
    path = tmp_path / "q.jsonl"
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n",
        encoding="utf-8",
    )
    return path


def test_gold_by_section_by_document_and_by_node(tmp_path, nodes):
    path = _file(
        tmp_path,
        {
            "id": "a",
            "question": "opened laptop?",
            "store": "electronics",
            "gold": [{"doc_id": "electronics/returns.md", "section": "Returns > Opened items"}],
        },
        {"id": "b", "question": "all returns", "gold": [{"doc_id": "grocery/returns.md"}]},
        {
            "id": "c",
            "question": "by node",
            "gold": [{"node_id": "grocery/produce.md#1"}],
            "answer": " December to March. ",
            "split": "test",
        },
        {"question": "lobsters?", "answerable": False},
    )
    a, b, c, d = load_queries(path, nodes)
    assert a.gold_node_ids == ["electronics/returns.md#0"] and a.filters == {"store": "electronics"}
    grocery_returns = [n.node_id for n in nodes if n.ref_doc_id == "grocery/returns.md"]
    assert b.gold_node_ids == grocery_returns and len(grocery_returns) > 1
    assert (
        c.gold_node_ids == ["grocery/produce.md#1"]
        and c.answer == "December to March."
        and c.split == "test"
    )
    assert d.id == "line-4" and not d.answerable and d.gold_node_ids == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{bad json", r"q\.jsonl:2: malformed JSON"),
        (
            {"question": "x", "gold": [{"doc_id": "grocery/nope.md"}]},
            r"q\.jsonl:2: gold doc_id 'grocery/nope.md' is not one",
        ),
        (
            {"question": "x", "gold": [{"doc_id": "grocery/returns.md", "section": "Refunds"}]},
            r"q\.jsonl:2: no section 'Refunds' in 'grocery/returns.md'; its sections are",
        ),
        ({"question": "x", "gold": [{"node_id": "zzz#0"}]}, r"q\.jsonl:2: gold node id 'zzz#0'"),
        (
            {"question": "x", "gold": [{"doc_id": "grocery/returns.md"}], "store": "electronics"},
            r"q\.jsonl:2: gold node .* does not pass the question's filters",
        ),
        ({"question": "x", "answerable": True}, r"q\.jsonl:2: an answerable question needs 'gold'"),
        ({"question": "x", "golds": []}, r"q\.jsonl:2: unknown field\(s\) \['golds'\]"),
        ({"question": "  "}, r"q\.jsonl:2: 'question' must be a non-empty string"),
        ({"question": "x", "answerable": False, "split": "dev"}, r"q\.jsonl:2: 'split' must be"),
        (
            {"question": "x", "answerable": False, "filters": {"colour": "red"}},
            r"filter key 'colour'",
        ),
        (
            {"id": "first", "question": "again", "answerable": False},
            r"q\.jsonl:2: duplicate id 'first' \(first used on line 1\)",
        ),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, nodes, line, message):
    path = _file(tmp_path, {"id": "first", "question": "ok", "answerable": False}, line)
    with pytest.raises(DataError, match=message):
        load_queries(path, nodes)


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        ({"doc_id": "grocery/returns.md", "section": 5}, "section"),
        ({"doc_id": ["grocery/returns.md"]}, "doc_id"),
        ({"node_id": ["grocery/produce.md#1"]}, "node_id"),
        ({"node_id": {"id": "grocery/produce.md#1"}}, "node_id"),
    ],
)
def test_gold_fields_of_the_wrong_type_name_the_field_and_line(tmp_path, nodes, ref, field):
    path = _file(tmp_path, {"id": "first", "question": "ok", "answerable": False})
    path.write_text(path.read_text() + json.dumps({"question": "x", "gold": [ref]}) + "\n")
    with pytest.raises(DataError, match=rf"q\.jsonl:2: gold '{field}' must be a string"):
        load_queries(path, nodes)


def test_the_file_is_read_as_strict_utf8_jsonl(tmp_path, nodes):
    """A BOM, CR line ends and U+2028 / U+0085 inside a string are text; a repeated key, NaN,
    an oversized integer or deep nesting is a DataError at file:line, never lost or raw."""
    good = {"id": "a", "question": "opened\u2028laptop\x85?", "answerable": False}
    path = tmp_path / "q.jsonl"
    line = json.dumps(good, ensure_ascii=False)
    path.write_bytes(b"\xef\xbb\xbf" + line.encode() + b"\r" + line.replace('"a"', '"b"').encode())
    a, b = load_queries(path, nodes)
    assert (a.id, b.id) == ("a", "b") and a.question == "opened\u2028laptop\x85?"
    for bad, message in [
        ('{"question": "x", "question": "y", "answerable": false}', "'question' appears twice"),
        ('{"id": "x", "question": "x", "filters": {"store": NaN}}', "NaN is not valid JSON"),
        ('{"id": ' + "9" * 5000 + ', "question": "x"}', "bad JSON value"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ]:
        path.write_text(line + "\n" + bad + "\n", encoding="utf-8")
        with pytest.raises(DataError, match=rf"q\.jsonl:2: .*{message}"):
            load_queries(path, nodes)


def test_missing_or_empty_file(tmp_path, nodes):
    with pytest.raises(FileNotFoundError, match="queries file not found"):
        load_queries(tmp_path / "missing.jsonl", nodes)
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no questions"):
        load_queries(tmp_path / "empty.jsonl", nodes)


def _q(qid, text, answerable=True, split=None):
    return LabelledQuery(
        qid, text, ["n#0"] if answerable else [], answerable=answerable, split=split
    )


def test_split_keeps_twin_questions_together_and_honours_given_splits():
    queries = [_q(f"a{i}", f"question {i}") for i in range(20)]
    queries += [_q(f"twin{i}", "Apple return policy?") for i in range(3)]
    queries += [_q(f"u{i}", f"unanswerable {i}", answerable=False) for i in range(5)]
    queries += [_q("fixed", "fixed one", split="train")]
    train, test = split_queries(queries, test_fraction=0.25, seed=1)
    assert len(train) + len(test) == len(queries)
    sides = {q.split for q in train + test if q.id.startswith("twin")}
    assert len(sides) == 1  # the same text under several filters never straddles the split
    assert any(not q.answerable for q in test) and any(not q.answerable for q in train)
    assert "fixed" in {q.id for q in train}
    again, _ = split_queries(queries, test_fraction=0.25, seed=1)
    assert [q.id for q in again] == [q.id for q in train]
    rest, dev = carve_dev(train, 0.3, seed=0)
    assert {q.id for q in rest} | {q.id for q in dev} == {q.id for q in train}
    assert not {q.id for q in rest} & {q.id for q in dev} and dev


def test_has_gold_needs_an_answerable_question_with_a_gold_node():
    assert LabelledQuery("a", "q?", ["n1"]).has_gold
    assert not LabelledQuery("b", "q?", []).has_gold
    assert not LabelledQuery("c", "q?", ["n1"], answerable=False).has_gold
