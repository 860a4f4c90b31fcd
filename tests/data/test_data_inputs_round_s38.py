"""A user's own data files on the way into tuning: the wrong kind of JSON, other field names,
a writer killed mid-line, the same question labelled twice (round s38)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from llama_index_ragtune.data.beir import load_beir
from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.field_names import suggested_field, unknown_fields_message
from llama_index_ragtune.data.qa_jsonl import load_grounded_qa
from llama_index_ragtune.data.schema import RetrievalDataset
from llama_index_ragtune.data.squad import load_squad_v2

RETURNS = {"id": "returns", "text": "Opened electronics can be returned within 14 days."}
HOURS = {"id": "hours", "text": "The store opens at 8am."}
LINE = {
    "id": "q1",
    "question": "How long can I return opened electronics?",
    "sources": [RETURNS, HOURS],
    "gold": ["returns"],
    "answer": "within 14 days",
}


def _line(**fields) -> str:
    return json.dumps({**LINE, **fields})


def _write(tmp_path: Path, text: str, name: str = "qa.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


# ------------------------------------------------- a JSONL file where one JSON document goes


DATASET = {
    "queries": {"q1": "what is x", "q2": "what is y"},
    "corpus": {"d1": "x is a letter", "d2": "y is a letter"},
    "relevant_docs": {"q1": ["d1"], "q2": ["d2"]},
}


@pytest.mark.parametrize(
    "lines",
    [
        [{"id": "q1", "question": "returns?", "gold": []}, {"id": "q2", "question": "hours?"}],
        [DATASET, DATASET],  # a dataset written once per line
    ],
    ids=["queries-jsonl", "dataset-per-line"],
)
def test_a_jsonl_file_given_as_a_dataset_says_it_is_jsonl(tmp_path, lines) -> None:
    """Was: ``FILE:2:1: malformed JSON (Extra data)``, naming neither the kind of file nor
    the option that reads it."""
    path = _write(tmp_path, "".join(json.dumps(line) + "\n" for line in lines), "train.json")
    with pytest.raises(DataError) as info:
        RetrievalDataset.load_json(path)
    message = str(info.value)
    assert message.startswith(f"{path}: the file holds one JSON value per line (JSON Lines)")
    assert "RetrievalDataset JSON file" in message and "--queries" in message
    assert "Extra data" not in message


def test_a_jsonl_file_given_as_squad_says_it_is_jsonl(tmp_path) -> None:
    path = _write(tmp_path, _line() + "\n" + _line(id="q2") + "\n", "dev.json")
    with pytest.raises(DataError) as info:
        load_squad_v2(path)
    assert "one JSON value per line (JSON Lines)" in str(info.value)
    assert "SQuAD 2.0" in str(info.value) and "--qa" in str(info.value)


def test_a_broken_json_document_keeps_its_line_and_column(tmp_path) -> None:
    """Only JSONL is re-described: a real syntax error in a JSON document still points at it."""
    path = _write(tmp_path, json.dumps(DATASET, indent=2)[:-30], "train.json")
    with pytest.raises(DataError, match=r"train\.json:\d+:\d+: malformed JSON"):
        RetrievalDataset.load_json(path)


# ------------------------------------------------- other tools' field names


@pytest.mark.parametrize(
    ("renamed", "meant"),
    [
        ({"question": "query"}, "question"),
        ({"sources": "passages"}, "sources"),
        ({"sources": "context"}, "sources"),
        ({"answer": "answers"}, "answer"),
        ({"gold": "relevant_docs"}, "gold"),
        ({"id": "qid"}, "id"),
    ],
)
def test_a_qa_field_under_another_name_suggests_the_accepted_one(tmp_path, renamed, meant):
    """Was: ``unknown field(s) ['query']`` and the schema, without saying which field it is."""
    ((ours, theirs),) = renamed.items()
    record = {(theirs if key == ours else key): value for key, value in LINE.items()}
    with pytest.raises(DataError) as info:
        load_grounded_qa(_write(tmp_path, json.dumps(record) + "\n"))
    message = str(info.value)
    assert f"unknown field(s) [{theirs!r}] ({theirs!r}: did you mean {meant!r}?)" in message
    assert "the accepted fields are: id, question, sources, contexts, gold" in message


def test_squad_style_answers_say_to_keep_one_text(tmp_path) -> None:
    record = {k: v for k, v in LINE.items() if k != "answer"}
    record["answers"] = {"text": ["within 14 days"], "answer_start": [33]}
    with pytest.raises(DataError, match=r'of SQuAD-style "answers" .* keep one text'):
        load_grounded_qa(_write(tmp_path, json.dumps(record) + "\n"))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            {"doc_id": "returns", "text": "x"},
            "missing 'id'; unknown field(s) ['doc_id'] ('doc_id': ",
        ),
        ({"id": "returns", "content": "x"}, "missing 'text'; unknown field(s) ['content'] ("),
        ({"id": "returns", "title": "T", "text": "x"}, "unknown field(s) ['title']; the accepted"),
        ("Opened electronics", "exactly 'id' and 'text', got str"),
    ],
)
def test_a_source_of_another_shape_names_its_keys(tmp_path, source, expected) -> None:
    """Was: ``sources[0] must be an object with exactly 'id' and 'text'`` whatever it held."""
    text = _line(sources=[source], gold=[], answer="") + "\n"
    with pytest.raises(DataError) as info:
        load_grounded_qa(_write(tmp_path, text))
    assert "sources[0] must be an object with exactly 'id' and 'text'" in str(info.value)
    assert expected in str(info.value)


def test_suggested_field_is_scoped_to_the_accepted_names() -> None:
    assert suggested_field("Question", ["question"]) == "question"
    assert suggested_field("passage", ["id", "text"]) == "text"
    assert suggested_field("passage", ["question", "sources"]) == "sources"
    assert suggested_field("qestion", ["question", "gold"]) == "question"
    assert suggested_field("title", ["id", "text"]) is None
    assert unknown_fields_message(["zzz"], ["a"]) == (
        "unknown field(s) ['zzz']; the accepted fields are: a"
    )


# ------------------------------------------------- a writer killed mid-line


def test_a_qa_file_cut_off_mid_line_says_so(tmp_path) -> None:
    """Was: ``malformed JSON (Unterminated string ...); each line must hold one JSON object``."""
    path = _write(tmp_path, _line() + "\n" + _line(id="q2", question="Other?")[:40])
    with pytest.raises(DataError) as info:
        load_grounded_qa(path)
    message = str(info.value)
    assert message.startswith(f"{path}:2: the last line ends in the middle of a record")
    assert "delete line 2 to use the complete lines before it" in message


def test_a_beir_corpus_cut_off_mid_line_says_so(tmp_path) -> None:
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "a"}\n{"_id": "d2", "te')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "a?"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: the last line ends in the middle"):
        load_beir(folder)


def test_a_whole_last_line_without_newline_and_a_bad_middle_line_are_as_before(tmp_path):
    path = _write(tmp_path, _line() + "\n" + _line(id="q2", question="Other?"))
    assert [e.qid for e in load_grounded_qa(path).train] == ["q1", "q2"]
    cut_inside = _line()[:40] + "\n" + _line(id="q2", question="Other?") + "\n"
    with pytest.raises(DataError) as info:
        load_grounded_qa(_write(tmp_path, cut_inside))
    assert "malformed JSON" in str(info.value) and "last line" not in str(info.value)


# ------------------------------------------------- the same question labelled twice


def test_the_same_question_over_the_same_sources_with_other_gold_is_an_error(tmp_path):
    """Was accepted: the model was taught to cite ``returns`` and ``hours`` for one prompt."""
    text = _line() + "\n" + _line(id="q2", question="how long can I RETURN opened electronics")
    text += "\n" + _line(id="q3", sources=[HOURS, RETURNS], gold=["hours"], answer="8am") + "\n"
    with pytest.raises(DataError) as info:
        load_grounded_qa(_write(tmp_path, text))
    assert str(info.value).startswith(
        f"{tmp_path / 'qa.jsonl'}:3: the same question over the same sources has gold "
        "['returns'] on line 1 and ['hours'] here"
    )


def test_the_same_question_answerable_and_not_over_the_same_sources_is_an_error(tmp_path):
    text = _line() + "\n" + _line(id="q2", gold=[], answer="") + "\n"
    with pytest.raises(DataError, match="is answerable on line 1 and unanswerable on line 2"):
        load_grounded_qa(_write(tmp_path, text))


def test_copies_are_counted_and_other_sources_are_other_prompts(tmp_path, caplog) -> None:
    text = _line() + "\n" + _line(id="q2") + "\n" + _line(id="q3") + "\n"
    text += _line(id="q4", sources=[RETURNS]) + "\n"  # other sources: another prompt
    text += _line(id="q5", sources=[HOURS], gold=[], answer="") + "\n"  # and not answerable
    text += _line(id="q6", answer="14 days") + "\n"  # another wording of the answer
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.data.qa_jsonl"):
        qa = load_grounded_qa(_write(tmp_path, text))
    assert len(qa.train) == 6  # nothing dropped
    assert "2 line(s) repeat an earlier line's question, sources, gold and answer" in caplog.text
    assert "line 2 repeats line 1" in caplog.text


def test_one_question_over_many_source_sets_is_many_prompts(tmp_path) -> None:
    """One question asked of 2,000 different source sets: 2,000 prompts, none a repeat."""
    lines = [
        _line(
            id=f"q{i}",
            sources=[{"id": f"s{i}", "text": f"Store {i} opens at 8am."}],
            gold=[],
            answer="",
        )
        for i in range(2000)
    ]
    qa = load_grounded_qa(_write(tmp_path, "\n".join(lines) + "\n"))
    assert len(qa.train) == 2000 and len(qa.documents) == 2000


def test_files_concatenated_with_a_bom_each_are_read(tmp_path) -> None:
    """Was: ``FILE:2: malformed JSON (Unexpected UTF-8 BOM ...)`` for ``cat a.jsonl b.jsonl``
    of two files saved by a Windows editor."""
    text = "\ufeff" + _line() + "\r\n" + "\ufeff" + _line(id="q2", question="Other?") + "\r\n"
    assert [e.qid for e in load_grounded_qa(_write(tmp_path, text)).train] == ["q1", "q2"]


def test_a_zero_filled_file_end_is_named(tmp_path) -> None:
    """Was: ``FILE:3: malformed JSON (Expecting value at column 1)`` for the NUL bytes a
    preallocating writer leaves when it is stopped."""
    text = _line() + "\n" + _line(id="q2", question="Other?") + "\n" + "\x00" * 4096
    with pytest.raises(DataError) as info:
        load_grounded_qa(_write(tmp_path, text))
    assert str(info.value).startswith(f"{tmp_path / 'qa.jsonl'}:3: the line holds only NUL bytes")


# ------------------------------------------------- the decoder's retrieval cache


@pytest.mark.parametrize(
    "damaged",
    ['{"q1": ["store-0", "sto', '["store-0"]', '{"q1": "store-0"}', "\x00" * 64],
    ids=["cut-short", "a-list", "ids-not-a-list", "zeros"],
)
def test_a_damaged_retrieval_cache_is_retrieved_again(tmp_path, damaged, caplog) -> None:
    """Was a raw ``JSONDecodeError`` (or a ``TypeError`` later) on every later run over the
    same ``--out``: the cache was written in place, so a killed run left it cut short."""
    from llama_index.core.schema import Document

    from llama_index_ragtune.data.grounded import GroundedSFTBuilder
    from llama_index_ragtune.data.grounded_tasks import build_retriever, retrieve_all
    from llama_index_ragtune.data.qa import QAExample

    shops = ["bakery", "pharmacy", "garden"]
    documents = [Document(text=f"The {s} opens at 8am.", id_=s) for s in shops]
    builder = GroundedSFTBuilder(build_retriever(documents, "bm25", top_k=2), documents)
    examples = [QAExample("q1", "When does the pharmacy open?", ["pharmacy"], ["8am"])]
    cache = tmp_path / "retrieved-qa-bm25.json"
    cache.write_text(damaged)
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.data.grounded_tasks"):
        retrieved = retrieve_all(builder, examples, cache=cache, show_progress=False)
    assert retrieved["q1"][0] == "pharmacy"
    assert f"retrieval cache {cache} is" in caplog.text
    assert json.loads(cache.read_text()) == retrieved  # rewritten whole
    assert [p.name for p in tmp_path.iterdir()] == [cache.name]  # no temporary file left
