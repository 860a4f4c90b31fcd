"""Hostile inputs for the data loaders, round s39: one JSON document given as JSON Lines
wherever it starts, quoted / repeated-header qrels, ids in two Unicode forms, SQuAD
answers outside their paragraph, invisible-only SQuAD text and repeated paragraphs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from llama_index_ragtune.data.beir import load_beir
from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.qa_jsonl import load_grounded_qa
from llama_index_ragtune.data.squad import load_squad_v2

NFC, NFD = "caf\u00e9", "cafe\u0301"  # one id in two Unicode forms: they print alike
QA = {
    "question": "How long can I return opened electronics?",
    "sources": [{"id": "returns", "text": "Opened electronics can be returned within 14 days."}],
    "gold": ["returns"],
    "answer": "within 14 days",
}
QA2 = {**QA, "question": "What is the return window?"}
CORPUS = [{"_id": "d1", "title": "", "text": "alpha"}, {"_id": "d2", "title": "t", "text": "b"}]
QUERIES = [{"_id": "q1", "text": "what is alpha"}, {"_id": "q2", "text": "what is b"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n"


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _beir(root: Path, corpus: str = "", queries: str = "", qrels: str = QRELS) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(corpus or _jsonl(CORPUS), encoding="utf-8")
    (root / "queries.jsonl").write_text(queries or _jsonl(QUERIES), encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return root


def _qa(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------ one JSON document given as JSON Lines


def _documents(first: dict, second: dict) -> dict[str, tuple[str, int, str]]:
    """name -> (file text, line of the error, the jq filter it names)."""
    return {
        "array-after-a-blank-line": ("\n" + json.dumps([first, second]) + "\n", 2, "'.[]'"),
        "array-after-two-blank-lines": ("\n\n" + json.dumps([first, second]), 3, "'.[]'"),
        "array-one-record-a-line": (f"[{json.dumps(first)},\n{json.dumps(second)}]\n", 1, "'.[]'"),
        "indented-objects": (
            json.dumps(first, indent=2) + "\n" + json.dumps(second, indent=2) + "\n",
            1,
            ".",
        ),
        "indented-object-after-a-blank-line": ("\n" + json.dumps(first, indent="\t"), 2, "."),
    }


@pytest.mark.parametrize("case", list(_documents(QA, QA2)))
def test_a_json_document_as_a_qa_file_is_named_wherever_it_starts(tmp_path, case) -> None:
    """Was: ``expected a JSON object, got list`` for an array after a blank line, and
    ``jq -c '.[]'`` (which lists an object's values) for indented objects."""
    text, line, jq_filter = _documents(QA, QA2)[case]
    with pytest.raises(DataError, match="looks like one JSON document, not JSON Lines") as info:
        load_grounded_qa(_qa(tmp_path, text))
    assert info.value.line == line
    assert f"jq -c {jq_filter} qa.jsonl > qa.fixed.jsonl" in str(info.value)


@pytest.mark.parametrize("case", list(_documents(*CORPUS)))
def test_a_json_document_as_a_beir_corpus_is_named_wherever_it_starts(tmp_path, case) -> None:
    text, line, jq_filter = _documents(*CORPUS)[case]
    root = _beir(tmp_path / "beir", corpus=text)
    with pytest.raises(DataError, match="not JSON Lines") as info:
        load_beir(root)
    assert (info.value.path, info.value.line) == (root / "corpus.jsonl", line)
    assert f"jq -c {jq_filter} corpus.jsonl" in str(info.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (_jsonl([QA]) + json.dumps(QA2, indent=2) + "\n", "not finished at the end of the line"),
        (json.dumps(QA) + ",\n" + json.dumps(QA2) + ",\n", "a comma follows the record"),
    ],
    ids=["indented-record-later", "comma-after-each-record"],
)
def test_a_record_spanning_lines_or_followed_by_a_comma_is_named(tmp_path, text, needle):
    """Was a bare ``malformed JSON (Expecting ...)`` with 'each line must hold one JSON
    object'."""
    with pytest.raises(DataError, match=r"malformed JSON \(") as info:
        load_grounded_qa(_qa(tmp_path, text))
    assert needle in str(info.value) and "JSON Lines keep each record whole" in str(info.value)


def test_json_lines_with_blank_lines_still_load(tmp_path) -> None:
    qa = load_grounded_qa(_qa(tmp_path, "\n" + _jsonl([QA, QA2]) + "\n"))
    assert [e.question for e in qa.train] == [QA["question"], QA2["question"]]


# ------------------------------------------------------------------------ BEIR qrels


def test_qrels_fields_in_double_quotes_are_read_as_beir_reads_them(tmp_path) -> None:
    """A CSV writer's quotes (``"q1"``): BEIR's ``csv.reader`` drops them; was an error on
    the grade ``'"1"'`` (or every judgement dropped as unknown ids)."""
    qrels = '"query-id"\t"corpus-id"\t"score"\n"q1"\t"d1"\t"1"\n"q2"\td2\t1\n'
    ds = load_beir(_beir(tmp_path / "beir", qrels=qrels))
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}


def test_a_repeated_header_row_is_named_as_one(tmp_path) -> None:
    """Was only ``relevance score 'score' is not an integer``."""
    root = _beir(tmp_path / "beir", qrels=QRELS + "query-id\tcorpus-id\tscore\nq1\td2\t0\n")
    with pytest.raises(DataError, match="the row repeats the header row") as info:
        load_beir(root)
    assert info.value.line == 4 and "delete line 4" in str(info.value)


def test_a_qrels_column_in_front_is_not_read_as_trec(tmp_path) -> None:
    """pandas' ``to_csv(sep="\t")`` writes row numbers first; the rows were read as TREC
    (``qid iteration doc grade``): judgements of queries '0', '1', ... all dropped."""
    qrels = "\tquery-id\tcorpus-id\tscore\n0\tq1\td1\t1\n1\tq2\td2\t1\n"
    with pytest.raises(DataError, match="the 2nd column holds 'q1', no iteration") as info:
        load_beir(_beir(tmp_path / "beir", qrels=qrels))
    assert info.value.line == 2 and "to_csv" in str(info.value)
    trec = "qid\titer\tdocno\trel\nq1\t0\td1\t1\nq2\tQ0\td2\t2\n"
    assert load_beir(_beir(tmp_path / "trec", qrels=trec)).qrels == {
        "q1": {"d1": 1},
        "q2": {"d2": 2},
    }


def test_qrels_ids_that_lost_their_leading_zeros_are_named(tmp_path) -> None:
    """A spreadsheet turns ``007`` into ``7``: the dropped judgements now name the pair."""
    corpus = _jsonl([{"_id": "007", "text": "alpha"}, CORPUS[1]])
    root = _beir(tmp_path / "beir", corpus=corpus, qrels="q1\t7\t1\nq2\td2\t1\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_beir(root)
    message = " ".join(str(w.message) for w in caught)
    assert "'7' ~ '007'" in message and "leading zeros" in message


# ------------------------------------------------------------- ids in two Unicode forms


@pytest.mark.parametrize("file", ["corpus", "queries"])
def test_beir_ids_in_two_unicode_forms_are_one_duplicated_id(tmp_path, file) -> None:
    """Was: two documents (or queries) whose ids print alike, a qrels row reaching one."""
    records = {"corpus": CORPUS, "queries": QUERIES}[file]
    text = _jsonl(
        [*records, {**records[0], "_id": NFC}, {**records[1], "_id": NFD, "text": "other"}]
    )
    qrels = QRELS + f"q1\t{NFC}\t1\n" if file == "corpus" else QRELS
    root = _beir(tmp_path / "beir", qrels=qrels, **{file: text})
    with pytest.raises(DataError, match="another Unicode form") as info:
        load_beir(root)
    assert (info.value.path.name, info.value.line) == (f"{file}.jsonl", 4)
    assert f"{ascii(NFD)} ~ {ascii(NFC)}" in str(info.value)


def test_a_beir_line_repeated_whole_says_to_remove_the_copy(tmp_path) -> None:
    root = _beir(tmp_path / "beir", corpus=_jsonl([*CORPUS, CORPUS[0]]))
    with pytest.raises(DataError, match="first on line 1\\), with the same text") as info:
        load_beir(root)
    assert "remove the repeated line" in str(info.value)


def _qa_line(**changes) -> dict:
    return {**QA, **changes}


@pytest.mark.parametrize(
    ("lines", "line", "needle"),
    [
        (
            [_qa_line(sources=[{"id": NFD, "text": "Returns within 14 days."}], gold=[NFC])],
            1,
            "names the source written as",
        ),
        (
            [
                _qa_line(sources=[{"id": NFC, "text": "Returns within 14 days."}], gold=[NFC]),
                _qa_line(
                    question="Other?",
                    sources=[{"id": NFD, "text": "Returns within 14 days."}],
                    gold=[NFD],
                ),
            ],
            2,
            "is written on line 1 as",
        ),
        (
            [
                _qa_line(
                    sources=[
                        {"id": NFC, "text": "Returns within 14 days."},
                        {"id": NFD, "text": "Other."},
                    ],
                    gold=[NFC],
                )
            ],
            1,
            "appears twice on the line as",
        ),
        ([_qa_line(id=NFC), _qa_line(id=NFD, question="Other?")], 2, "is used on line 1 too as"),
    ],
    ids=["gold-in-another-form", "source-across-lines", "source-twice-on-a-line", "question-id"],
)
def test_qa_ids_in_two_unicode_forms_are_named_with_both_spellings(tmp_path, lines, line, needle):
    """Were two sources (or questions) whose ids print alike, or a gold error listing
    ``['café']`` as missing from ``['café']``."""
    with pytest.raises(DataError, match=needle) as info:
        load_grounded_qa(_qa(tmp_path, _jsonl(lines)))
    assert info.value.line == line and "another Unicode form" in str(info.value)
    assert ascii(NFC) in str(info.value) and ascii(NFD) in str(info.value)


# ------------------------------------------------------------------------------ SQuAD

CONTEXT = "Paris is the capital of France. It is big."


def _squad(tmp_path: Path, *articles: tuple[str, list[dict]]) -> Path:
    data = [
        {"title": f"T{i}", "paragraphs": [{"context": context, "qas": qas}]}
        for i, (context, qas) in enumerate(articles)
    ]
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "v2.0", "data": data}), encoding="utf-8")
    return path


def _question(qid: str = "a1", **changes) -> dict:
    answers = [{"text": "Paris", "answer_start": 0}]
    return {"id": qid, "question": "What is the capital?", "answers": answers, **changes}


def test_a_squad_answer_not_in_its_paragraph_is_an_error_whichever_it_is(tmp_path) -> None:
    """Was: only the first answer was looked for; 'London' was kept as a right answer."""
    answers = [{"text": "Paris", "answer_start": 0}, {"text": "London", "answer_start": 3}]
    path = _squad(tmp_path, (CONTEXT, [_question(answers=answers)]))
    with pytest.raises(DataError, match="the answer 'London' does not occur") as info:
        load_squad_v2(path)
    assert info.value.location == "$.data[0].paragraphs[0].qas[0].answers[1]"


@pytest.mark.parametrize(
    ("article", "location"),
    [
        ((CONTEXT, [_question(question="\u200b\u200f")]), "qas[0].question"),
        (("\u200b\ufeff", [_question(answers=[], is_impossible=True)]), "context"),
    ],
    ids=["question", "paragraph"],
)
def test_squad_text_of_only_invisible_characters_is_empty(tmp_path, article, location) -> None:
    """Were loaded: a question the twin checks read as empty, a paragraph with no text."""
    with pytest.raises(DataError, match="only invisible characters") as info:
        load_squad_v2(_squad(tmp_path, article))
    assert info.value.location == f"$.data[0].paragraphs[0].{location}"


def test_a_squad_paragraph_in_two_articles_makes_both_copies_gold(tmp_path) -> None:
    """Was: each question's gold was its own copy only, so the other was a wrong negative
    (and shown without its twin the target was the refusal)."""
    other = _question("a2", question="Which city is big?")
    path = _squad(tmp_path, (CONTEXT, [_question()]), (" " + CONTEXT, [other]), ("x y", []))
    with pytest.warns(UserWarning, match="1 paragraph text\\(s\\) occur more than once"):
        examples, documents = load_squad_v2(path)
    assert [d.id_ for d in documents] == ["0-0", "1-0", "2-0"]
    assert [e.gold_doc_ids for e in examples] == [["0-0", "1-0"], ["1-0", "0-0"]]


def test_squad_paragraphs_with_other_texts_keep_one_gold_and_no_warning(tmp_path) -> None:
    path = _squad(tmp_path, (CONTEXT, [_question()]), ("Paris again.", [_question("a2")]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        examples, _ = load_squad_v2(path)
    assert [e.gold_doc_ids for e in examples] == [["0-0"], ["1-0"]]


# ------------------------------------------------------------- hard-negative mining inputs


def _mining_dataset():
    from llama_index_ragtune.data.schema import RetrievalDataset

    corpus = {"d1": "alpha is a letter", "d2": "beta is a letter", "d": "d", "2": "two"}
    return RetrievalDataset(
        queries={"q1": "what is alpha", "q2": "what is beta"},
        corpus=corpus,
        relevant_docs={"q1": ["d1"], "q2": ["d2"]},
    )


@pytest.mark.parametrize(
    "curated",
    [{"q1": "d2"}, lambda qid, query, positives, ds: "d2" if qid == "q1" else None],
    ids=["mapping", "callable"],
)
def test_a_curated_negative_given_as_a_bare_string_is_one_doc_id(curated) -> None:
    """Was read letter by letter: ``"d2"`` mined the documents ``'d'`` and ``'2'``; a
    callable's ``None`` was a raw ``TypeError``."""
    from llama_index_ragtune.data.negatives import HardNegativeMiner

    miner = HardNegativeMiner(sources=(), curated=curated, show_progress=False)
    out = miner.mine(_mining_dataset())
    assert {q: [n.doc_id for n in v] for q, v in out.negatives.items() if v} == {"q1": ["d2"]}


def test_curated_negatives_that_are_not_doc_ids_name_the_query() -> None:
    from llama_index_ragtune.data.negatives import HardNegativeMiner

    for bad in ([1], 7):
        miner = HardNegativeMiner(sources=(), curated={"q1": bad}, show_progress=False)
        with pytest.raises(TypeError, match="curated negatives for query 'q1' must be"):
            miner.mine(_mining_dataset())


# --------------------------------------------------------------------------- SciFact


@pytest.mark.parametrize(
    ("metadata", "named"),
    [
        ({"d1": []}, "d1"),  # was a raw StopIteration
        ({"d1": [{"label": "SUPPORT", "sentences": [0]}], "d2": []}, "d2"),  # d2 was gold
    ],
    ids=["only-document", "one-of-two"],
)
def test_a_scifact_rationale_document_without_rationales_is_named(tmp_path, metadata, named):
    from llama_index_ragtune.data.scifact import load_scifact_claims

    claim = {"_id": "q1", "text": "Statins lower LDL.", "metadata": metadata}
    corpus = _jsonl([{"_id": "d1", "title": "T", "text": "Statins lower LDL."}, CORPUS[1]])
    root = _beir(tmp_path / "sf", corpus=corpus, queries=_jsonl([claim]), qrels="q1\td1\t1\n")
    with pytest.raises(DataError, match=f"rationale document '{named}' lists no rationale") as info:
        load_scifact_claims(root)
    assert info.value.location == f"query 'q1', $.metadata[{named!r}]"
