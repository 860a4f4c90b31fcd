"""Hostile inputs, round s38: `--queries` read as JSON Lines like `--qa`; Document ids and metadata."""

from __future__ import annotations

import datetime
import json
from decimal import Decimal

import pytest
from llama_index.core.schema import Document

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.pipeline.queries import load_queries
from llama_index_ragtune.pipeline.sources import check_documents, parse_documents, save_nodes

RECORD = {"id": "q1", "question": "How long is the return window?", "gold": [{"doc_id": "a.md"}]}
TEXT = "# Returns\n\nItems can be returned within 30 days of delivery."


@pytest.fixture(scope="module")
def nodes():
    return parse_documents([Document(id_="a.md", text=TEXT)])


def _queries(tmp_path, text: str):
    path = tmp_path / "q.jsonl"
    path.write_bytes(text.encode("utf-8"))
    return path


def _line(**changes) -> str:
    return json.dumps({**RECORD, **changes})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (json.dumps([RECORD, {**RECORD, "id": "q2"}]), r"q\.jsonl:1: the line holds a JSON array"),
        (json.dumps([RECORD], indent=2), r"q\.jsonl:1: .*looks like one JSON document"),
        (json.dumps(RECORD, indent=2), r"q\.jsonl:1: .*looks like one JSON document"),
    ],
    ids=["array-on-one-line", "indented-array", "indented-object"],
)
def test_a_json_document_given_as_queries_says_it_is_not_json_lines(
    tmp_path, nodes, text, expected
) -> None:
    with pytest.raises(DataError, match=expected) as caught:
        load_queries(_queries(tmp_path, text), nodes)
    assert "one JSON object per line" in str(caught.value)


@pytest.mark.parametrize(
    ("renamed", "meant"),
    [("query", "question"), ("golds", "gold"), ("anwser", "answer"), ("qid", "id")],
)
def test_an_unknown_query_field_suggests_the_accepted_one(tmp_path, nodes, renamed, meant):
    path = _queries(tmp_path, _line(**{renamed: "x"}) + "\n")
    with pytest.raises(DataError, match=rf"unknown field\(s\) \['{renamed}'\]") as caught:
        load_queries(path, nodes)
    assert f"{renamed!r}: did you mean {meant!r}?" in str(caught.value)
    assert "the accepted fields are: id, question" in str(caught.value)


def test_a_queries_file_cut_off_mid_line_says_so(tmp_path, nodes) -> None:
    path = _queries(tmp_path, _line() + "\n" + _line(id="q2")[:25])
    with pytest.raises(DataError, match=r"q\.jsonl:2: the last line ends in the middle") as caught:
        load_queries(path, nodes)
    assert "delete line 2" in str(caught.value)


def test_a_zero_filled_queries_file_end_is_named(tmp_path, nodes) -> None:
    path = _queries(tmp_path, _line() + "\n" + "\x00" * 64)
    with pytest.raises(DataError, match=r"q\.jsonl:2: the line holds only NUL bytes"):
        load_queries(path, nodes)


def test_queries_files_concatenated_with_a_bom_each_are_read(tmp_path, nodes) -> None:
    path = _queries(tmp_path, "\ufeff" + _line() + "\n\ufeff" + _line(id="q2") + "\n")
    assert [q.id for q in load_queries(path, nodes)] == ["q1", "q2"]


@pytest.mark.parametrize("doc_id", ["x\ny", "evil\u202egpj.md", "ok\x1b[31m.md", "a\u2028b"])
def test_a_document_id_that_breaks_printed_lines_is_refused(doc_id) -> None:
    with pytest.raises(ValueError, match=r"documents\[1\] has the id ") as caught:
        check_documents([Document(id_="a.md", text=TEXT), Document(id_=doc_id, text=TEXT)])
    message = str(caught.value)
    assert repr(doc_id) in message and "\n" not in message
    assert "give it an id_ without that character" in message


class _Custom:
    pass


@pytest.mark.parametrize(
    ("value", "type_name", "fix"),
    [
        (datetime.date(2024, 1, 31), "date", "value.isoformat()"),
        (datetime.datetime(2024, 1, 31, 9, 30), "datetime", "value.isoformat()"),
        ({"b", "a"}, "set", "sorted(value)"),
        (b"raw", "bytes", "value.decode('utf-8')"),
        (Decimal("1.5"), "Decimal", "str(value)"),
        (_Custom(), "_Custom", "str(value)"),
    ],
)
def test_metadata_json_cannot_hold_is_refused_naming_document_key_and_type(
    value, type_name, fix
) -> None:
    docs = [Document(id_="a.md", text=TEXT), Document(id_="b.md", text=TEXT, metadata={"k": value})]
    with pytest.raises(TypeError, match=r"documents\[1\] \('b\.md'\): metadata\['k'\] is a ") as e:
        check_documents(docs)
    assert f"is a {type_name} " in str(e.value) and fix in str(e.value)


def test_nested_metadata_names_the_path_to_the_value() -> None:
    metadata = {"tags": ["x", {"seen": datetime.date(2024, 1, 1)}]}
    with pytest.raises(TypeError, match=r"metadata\['tags'\]\[1\]\['seen'\] is a date"):
        check_documents([Document(id_="a.md", text=TEXT, metadata=metadata)])


def test_json_metadata_is_accepted_and_saved(tmp_path) -> None:
    metadata = {"store": "grocery", "n": 3, "score": 0.5, "ok": True, "none": None}
    metadata |= {"tags": ["a", "b"], "pair": (1, 2), "nested": {"k": [1, {"d": "x"}]}}
    documents = check_documents([Document(id_="a.md", text=TEXT, metadata=metadata)])
    saved = json.loads(save_nodes(parse_documents(documents), tmp_path / "n.json").read_text())
    assert saved[0]["metadata"]["nested"] == {"k": [1, {"d": "x"}]}
