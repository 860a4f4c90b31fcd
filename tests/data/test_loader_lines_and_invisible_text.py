"""Hostile training inputs: huge lines, invisible characters, twins across splits, odd files.

- every JSONL / TSV reader of ``data/`` caps a line at ``reading.MAX_LINE_BYTES`` and
  finds an over-long one after reading about that much (memory is measured, not time);
- texts that differ only by invisible characters (zero-width spaces and joiners, soft
  hyphen, BOM, bidi controls) are one question wherever questions are compared or
  split, while the text itself is left as written;
- the BEIR and QA loaders refuse what they used to drop or guess silently.
"""

from __future__ import annotations

import gzip
import json
import random
import tracemalloc
import warnings
from pathlib import Path

import datasets
import pytest

from llama_index_ragtune.data.beir import load_beir
from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.qa_jsonl import load_grounded_qa
from llama_index_ragtune.data.reading import MAX_LINE_BYTES, iter_lines
from llama_index_ragtune.data.records import (
    drop_invisible,
    match_text,
    normalize_text,
    stable_query_id,
    twin_key,
)
from llama_index_ragtune.data.schema import RetrievalDataset
from llama_index_ragtune.data.splitting import held_out_twins, split_query_ids, twin_groups
from llama_index_ragtune.finetuning.base import split_rows_by_question
from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine

# ----------------------------------------------------------------------------- helpers


def _beir(root: Path, corpus: str, queries: str, qrels: str) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(corpus, encoding="utf-8", newline="")
    (root / "queries.jsonl").write_text(queries, encoding="utf-8", newline="")
    (root / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8", newline="")
    return root


CORPUS = '{"_id": "d1", "text": "alpha"}\n{"_id": "d2", "text": "beta"}\n'
QUERIES = '{"_id": "q1", "text": "what alpha"}\n{"_id": "q2", "text": "what beta"}\n'
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n"


def _qa_line(question: str, split: str = "train", **extra) -> str:
    record = {
        "question": question,
        "sources": [{"id": "returns", "text": "Opened items can be returned within 14 days."}],
        "gold": ["returns"],
        "answer": "within 14 days",
        "split": split,
        **extra,
    }
    return json.dumps(record) + "\n"


def _long_record(n_bytes: int) -> str:
    """A valid JSON object of exactly ``n_bytes`` bytes (so the old reader loaded it)."""
    head, tail = '{"_id": "big", "text": "', '"}'
    return head + "x" * (n_bytes - len(head) - len(tail)) + tail


# ----------------------------------------------------------------- 1. a line cap


@pytest.mark.parametrize("file", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "qa"])
def test_every_line_reader_refuses_a_line_over_the_cap_naming_file_and_line(tmp_path, file):
    """Was: no cap at all; a valid 16 MiB + 1 byte record loaded, a longer one was read whole."""
    big = _long_record(MAX_LINE_BYTES + 1)
    if file == "qa":
        path = tmp_path / "qa.jsonl"
        path.write_text(_qa_line("Return window?") + big + "\n", encoding="utf-8")
        with pytest.raises(DataError) as info:
            load_grounded_qa(path)
    else:
        root = _beir(tmp_path / "beir", CORPUS, QUERIES, QRELS)
        with open(root / file, "a", encoding="utf-8") as handle:
            handle.write(big + "\n")
        with pytest.raises(DataError) as info:
            load_beir(root)
        path = root / file
    err = info.value
    assert err.path == path and err.line == (2 if file == "qa" else 3 + (file == "qrels/test.tsv"))
    assert f"longer than {MAX_LINE_BYTES:,} bytes" in str(err)
    assert "one record" in str(err) and "newline" in str(err)


def test_a_file_without_newlines_is_refused_after_reading_about_the_cap(tmp_path):
    """Three caps' worth of bytes and no newline: the reader holds about two caps at most."""
    path = tmp_path / "corpus.jsonl"
    with open(path, "wb") as handle:
        handle.write(b'{"_id": "d1", "text": "' + b"x" * (3 * MAX_LINE_BYTES))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="longer than"):
            list(iter_lines(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * MAX_LINE_BYTES  # the old reader held the whole 3-cap line (and more)


def test_a_line_of_exactly_the_cap_and_crlf_bom_blank_and_unterminated_lines_still_read(
    tmp_path,
):
    exact = "y" * MAX_LINE_BYTES
    path = tmp_path / "lines.tsv"
    path.write_bytes(b"\xef\xbb\xbfa\r\n\r\n" + exact.encode() + b"\r\n  \nb\rc")
    assert list(iter_lines(path)) == [(1, "a"), (3, exact), (5, "b"), (6, "c")]
    gz = tmp_path / "lines.tsv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert list(iter_lines(gz)) == [(1, "a"), (3, exact), (5, "b"), (6, "c")]


def test_a_beir_folder_with_bom_crlf_blank_lines_and_no_final_newline_loads(tmp_path):
    corpus = "\ufeff" + CORPUS.replace("\n", "\r\n") + "\r\n"
    root = _beir(tmp_path / "beir", corpus, QUERIES.rstrip("\n"), QRELS.rstrip("\n"))
    ds = load_beir(root)
    assert ds.corpus == {"d1": "alpha", "d2": "beta"}
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}


# ------------------------------------------------------- 2. invisible characters

INVISIBLE = [
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\ufeff",
    "\u00ad",
    "\u200e",
    "\u202e",
    "\u2066",
]


@pytest.mark.parametrize("mark", INVISIBLE, ids=[f"U+{ord(c):04X}" for c in INVISIBLE])
def test_texts_differing_only_by_invisible_characters_are_one_question(mark):
    """Was: ``re\\u200bturn`` normalised to ``re turn``, another question than ``return``."""
    plain, marked = "What is the return policy?", f"What is the re{mark}turn policy?"
    assert normalize_text(marked) == normalize_text(plain) == "what is the return policy"
    assert twin_key(marked) == twin_key(plain)
    assert stable_query_id(marked) == stable_query_id(plain)
    assert twin_key(f"🍎{mark}?") == twin_key("🍎?") != twin_key("🍌?")
    assert match_text(f"Within 14{mark}  Days") == "within 14 days"


def test_drop_invisible_keeps_visible_text_as_is():
    assert drop_invisible("Café, naïve 東京 🍎") == "Café, naïve 東京 🍎"
    assert drop_invisible("plain ascii") == "plain ascii"
    assert drop_invisible("a\u200bb\u00adc\ufe0f") == "abc"


def _twin_data(n: int = 40) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``n`` questions, each also under a second id with a zero-width space in one word."""
    queries, relevant = {}, {}
    for i in range(n):
        queries[f"a{i}"] = f"what is topic number {i}?"
        queries[f"b{i}"] = f"What is topic num\u200bber {i}"
        relevant[f"a{i}"], relevant[f"b{i}"] = [f"da{i}"], [f"db{i}"]
    return queries, relevant


def _split_twins(train, val) -> list[str]:
    train = set(train)
    return [q for q in val if ("b" if q[0] == "a" else "a") + q[1:] in train]


@pytest.mark.parametrize("group_by_positive", [False, True])
def test_the_dataset_split_keeps_invisible_twins_on_one_side(group_by_positive):
    """Was: twins were split apart (by default, and with a zero-width space in any case)."""
    queries, relevant = _twin_data()
    train, val = split_query_ids(
        queries, relevant, 0.25, seed=0, group_by_positive=group_by_positive
    )
    assert _split_twins(train, val) == [] and len(val) >= 10
    plain = {q: t for q, t in queries.items() if q[0] == "a"}
    expected = list(plain)  # without twins, the same draw as before: the first 10 shuffled
    random.Random(0).shuffle(expected)
    expected = expected[:10]
    assert set(split_query_ids(plain, relevant, 0.25, seed=0)[1]) == set(expected)


def test_the_trainers_validation_split_keeps_twins_on_one_side(tiny_encoder_path, tmp_path):
    """Was: the encoder / reranker held out query ids at random, twins on both sides."""
    queries, relevant = _twin_data()
    corpus = {d: f"passage {d}" for docs in relevant.values() for d in docs}
    engine = EncoderFinetuneEngine(
        RetrievalDataset(queries, corpus, relevant),
        model=tiny_encoder_path,
        val_fraction=0.25,
        budget=None,
        args=EncoderFinetuneEngine.default_args(tmp_path / "run"),
        show_progress=False,
    )
    train, val = engine.split_validation()
    assert _split_twins(train.queries, val.queries) == []
    assert len(val.queries) == 20 and len(train.queries) == 60  # 10 of 40 questions, twice


def test_row_splits_keep_twins_together_and_are_unchanged_without_twins():
    """Was: rows were held out by qid only (the answerability head's pairs)."""
    queries, _ = _twin_data()
    rows = datasets.Dataset.from_dict(
        {
            "qid": [q for q in queries for _ in range(2)],
            "question": [t for t in queries.values() for _ in range(2)],
        }
    )
    train, val = split_rows_by_question(rows, 0.25, 200, seed=0)
    assert _split_twins(train["qid"], val["qid"]) == []
    assert len(set(val["qid"])) == 20
    plain = {f"q{i}": f"question {i}" for i in range(30)}
    assert twin_groups(plain) == [[q] for q in plain]
    assert held_out_twins(plain, 7, seed=3) == set(random.Random(3).sample(list(plain), 7))


def test_a_qa_question_in_both_splits_is_an_error_naming_both_lines(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(
        _qa_line("How long can I return opened items?")
        + _qa_line("How long can I re\u00adturn opened items", split="test"),
        encoding="utf-8",
    )
    with pytest.raises(DataError) as info:
        load_grounded_qa(path)
    assert info.value.line == 2 and "line 1" in str(info.value)
    assert "'train'" in str(info.value) and "same split" in str(info.value)
    path.write_text(
        _qa_line("How long can I return opened items?")
        + _qa_line("How long can I re\u200bturn opened items", id="q2"),
        encoding="utf-8",
    )
    assert len(load_grounded_qa(path).train) == 2  # twins in one split are fine


def test_a_qa_answer_is_found_across_invisible_characters_and_kept_as_written(tmp_path):
    """Was: 'the answer does not appear in any gold source' (a soft hyphen in the source)."""
    path = tmp_path / "qa.jsonl"
    source = "Opened items can be returned within 14\u00addays."
    path.write_text(
        json.dumps(
            {
                "question": "Return window?",
                "sources": [{"id": "r", "text": source}],
                "gold": ["r"],
                "answer": "within 14days",
            }
        )
        + "\n",
        encoding="utf-8",
    )
    qa = load_grounded_qa(path)
    assert qa.train[0].answers == ["within 14days"] and qa.documents[0].text == source


# ---------------------------------------------------------- 4. hostile battery


def test_a_first_qrels_row_with_a_word_grade_is_an_error_not_a_header(tmp_path):
    """Was: ``q1 d1 high`` on the first row was taken for a header and q1 silently lost."""
    root = _beir(tmp_path / "beir", CORPUS, QUERIES, "q1\td1\thigh\nq2\td2\t1\n")
    with pytest.raises(DataError, match="relevance score 'high' is not an integer") as info:
        load_beir(root)
    assert info.value.line == 1
    for header in ("query-id\tcorpus-id\tscore", "qid\tdocid\trel", "query_id corpus_id label"):
        other = _beir(tmp_path / header.replace("\t", "_").replace(" ", "_"), CORPUS, QUERIES, "")
        (other / "qrels" / "test.tsv").write_text(f"{header}\nq1\td1\t1\nq2\td2\t1\n")
        assert load_beir(other).qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}


@pytest.mark.parametrize(
    ("corpus_id", "qrels_id"),
    [("D1", "d1"), ("caf\u00e9", "cafe\u0301"), ("d1\u200b", "d1")],
    ids=["case", "unicode-form", "zero-width"],
)
def test_qrels_ids_that_nearly_match_a_corpus_id_are_named(tmp_path, corpus_id, qrels_id):
    """Was: 'dropped ... missing from the corpus' with two ids that print the same."""
    corpus = json.dumps({"_id": corpus_id, "text": "alpha"}) + '\n{"_id": "d2", "text": "b"}\n'
    root = _beir(tmp_path / "beir", corpus, QUERIES, f"q1\t{qrels_id}\t1\nq2\td2\t1\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_beir(root)
    message = " ".join(str(w.message) for w in caught)
    assert f"{ascii(qrels_id)} ~ {ascii(corpus_id)}" in message
    assert "write each id the same way" in message


@pytest.mark.parametrize("indent", [None, 2], ids=["one-line", "indented"])
def test_a_json_array_instead_of_jsonl_says_how_to_convert_it(tmp_path, indent):
    queries = json.dumps([{"_id": "q1", "text": "a"}, {"_id": "q2", "text": "b"}], indent=indent)
    root = _beir(tmp_path / "beir", CORPUS, queries, QRELS)
    with pytest.raises(DataError, match="jq -c") as info:
        load_beir(root)
    assert info.value.path == root / "queries.jsonl" and info.value.line == 1
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps([json.loads(_qa_line("Return window?"))], indent=indent))
    with pytest.raises(DataError, match="jq -c"):
        load_grounded_qa(qa)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("question", "\u200b\u200f"),
        ("question", "\ufe0f\ufe0e"),  # variation selectors: was accepted as a question
        ("answer", "\u200b"),
        ("id", "\ufeff"),
        ("sources", "\u2060"),
    ],
)
def test_qa_fields_of_only_invisible_characters_are_errors(tmp_path, field, value):
    """Was: accepted; an invisible answer even passed as found in its source (``"" in t``)."""
    record = json.loads(_qa_line("Return window?"))
    if field == "sources":
        record["sources"][0]["text"] = value
    else:
        record[field] = value
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="invisible|visible characters") as info:
        load_grounded_qa(path)
    assert info.value.line == 1


def test_beir_texts_of_only_invisible_characters_count_as_empty(tmp_path):
    """Was: a judged query ``"\u200b"`` loaded as a question and such a document unannounced."""
    corpus = CORPUS + '{"_id": "d3", "text": "\\u200b\\u00ad"}\n'
    queries = QUERIES + '{"_id": "q3", "text": "\\u200e\\u200b"}\n'
    root = _beir(tmp_path / "beir", corpus, queries, QRELS + "q3\td3\t1\n")
    with pytest.raises(DataError, match="judged queries without text: 'q3' \\(line 3\\)"):
        load_beir(root)
    selectors = QUERIES + '{"_id": "q3", "text": "\\ufe0f"}\n'  # was loaded as a question
    (root / "queries.jsonl").write_text(selectors, encoding="utf-8")
    with pytest.raises(DataError, match="judged queries without text: 'q3' \\(line 3\\)"):
        load_beir(root)
    (root / "queries.jsonl").write_text(queries, encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text(QRELS + "q1\td3\t0\n")
    with pytest.warns(UserWarning, match="neither title nor text .*'d3' \\(line 3\\)"):
        load_beir(root)
