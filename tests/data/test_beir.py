"""load_beir: the BEIR layout, its quirks (CRLF, gzip, header rows) and clear errors."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import pytest
from llama_index.core.schema import MetadataMode

from llama_index_ragtune.data.beir import (
    BeirFormatError,
    available_splits,
    check_beir_folder,
    load_beir,
)
from llama_index_ragtune.data.errors import DataError


def _write_beir(
    root: Path,
    corpus: list[dict],
    queries: list[dict],
    qrels: dict[str, list[tuple[str, str, int]]],
    newline: str = "\n",
    gz: bool = False,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    corpus_text = "".join(json.dumps(r) + newline for r in corpus)
    if gz:
        with gzip.open(root / "corpus.jsonl.gz", "wt", encoding="utf-8") as handle:
            handle.write(corpus_text)
    else:
        (root / "corpus.jsonl").write_text(corpus_text, encoding="utf-8", newline="")
    (root / "queries.jsonl").write_text(
        "".join(json.dumps(r) + newline for r in queries), encoding="utf-8", newline=""
    )
    (root / "qrels").mkdir(exist_ok=True)
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q, d, g in rows]
        (root / "qrels" / f"{split}.tsv").write_text(
            newline.join(lines) + newline, encoding="utf-8", newline=""
        )
    return root


CORPUS = [
    {"_id": "d1", "title": "Aspirin", "text": "Aspirin reduces fever.", "metadata": {}},
    {"_id": "d2", "title": "", "text": "Statins lower cholesterol."},
    {"_id": 3, "title": "Sleep", "text": "Sleep improves memory."},
]
QUERIES = [
    {"_id": "q1", "text": "does aspirin reduce fever", "metadata": {"d1": [{"label": "SUPPORT"}]}},
    {"_id": "q2", "text": "statins and cholesterol", "metadata": {}},
    {"_id": "q3", "text": "sleep and memory"},
    {"_id": "q4", "text": "never judged"},
]
QRELS = {
    "test": [("q1", "d1", 2), ("q1", "d2", 0), ("q2", "d2", 1), ("q3", "3", 1)],
    "train": [("q4", "d1", 1)],
}


@pytest.fixture()
def toy_dir(tmp_path: Path) -> Path:
    return _write_beir(tmp_path / "toy", CORPUS, QUERIES, QRELS)


def test_loads_standard_layout(toy_dir: Path) -> None:
    ds = load_beir(toy_dir)
    assert ds.name == "toy" and ds.split == "test"
    assert ds.corpus == {
        "d1": "Aspirin\nAspirin reduces fever.",
        "d2": "Statins lower cholesterol.",
        "3": "Sleep\nSleep improves memory.",
    }
    # only the queries judged in this split, in queries.jsonl order
    assert list(ds.queries) == ["q1", "q2", "q3"]
    assert ds.qrels == {"q1": {"d1": 2, "d2": 0}, "q2": {"d2": 1}, "q3": {"3": 1}}
    assert ds.query_metadata["q1"] == {"d1": [{"label": "SUPPORT"}]}
    assert ds.query_metadata["q2"] == {}
    assert "q3" not in ds.query_metadata
    assert ds.relevant_docs() == {"q1": ["d1"], "q2": ["d2"], "q3": ["3"]}


def test_documents_match_corpus_and_hide_title_metadata(toy_dir: Path) -> None:
    ds = load_beir(toy_dir)
    docs = ds.documents
    assert [d.id_ for d in docs] == ["d1", "d2", "3"]
    assert [d.text for d in docs] == list(ds.corpus.values())
    first = docs[0]
    assert first.metadata == {"title": "Aspirin"}
    # the title is already in the text: it must not be prepended again
    assert first.get_content(metadata_mode=MetadataMode.EMBED) == first.text
    assert first.get_content(metadata_mode=MetadataMode.LLM) == first.text
    assert ds.documents is docs  # built once


def test_other_split_and_max_queries(toy_dir: Path) -> None:
    train = load_beir(toy_dir, split="train")
    assert train.queries == {"q4": "never judged"}
    small = load_beir(toy_dir, max_queries=2)
    assert list(small.queries) == ["q1", "q2"] and set(small.qrels) == {"q1", "q2"}
    assert available_splits(toy_dir) == ["test", "train"]


def test_crlf_and_gzip(tmp_path: Path) -> None:
    root = _write_beir(tmp_path / "crlf", CORPUS, QUERIES, QRELS, newline="\r\n", gz=True)
    ds = load_beir(root)
    assert ds.corpus["d2"] == "Statins lower cholesterol."
    assert ds.qrels["q1"] == {"d1": 2, "d2": 0}
    assert ds.queries["q1"] == "does aspirin reduce fever"


def test_missing_folder_and_files(tmp_path: Path, toy_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="BEIR folder not found.*corpus.jsonl"):
        load_beir(tmp_path / "nope")
    (toy_dir / "queries.jsonl").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"missing queries\.jsonl.*expected the BEIR layout"
    ):
        load_beir(toy_dir)


def test_unknown_split_lists_available(toy_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown split 'dev'.*available splits: test, train"):
        load_beir(toy_dir, split="dev")


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    root = _write_beir(tmp_path / "bad", CORPUS, QUERIES, QRELS)
    lines = (root / "corpus.jsonl").read_text().splitlines()
    lines[1] = '{"_id": "d2", "text": '
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(BeirFormatError, match=r"corpus\.jsonl:2: malformed JSON"):
        load_beir(root)


def test_unknown_doc_ids_are_dropped_with_a_warning(tmp_path: Path) -> None:
    qrels = {
        "test": [*QRELS["test"], ("q1", "ghost-1", 1), ("q2", "ghost-2", 1), ("q4", "ghost-3", 1)]
    }
    root = _write_beir(tmp_path / "ghost", CORPUS, QUERIES, qrels)
    with pytest.warns(UserWarning, match=r"dropped 3 judgements.*'ghost-1'") as record:
        ds = load_beir(root)
    assert "1 queries had no judged document left" in str(record[0].message)
    assert ds.qrels["q1"] == {"d1": 2, "d2": 0}
    assert "q4" not in ds.queries  # its only judgement pointed at an unknown document


def test_empty_corpus(tmp_path: Path) -> None:
    root = _write_beir(tmp_path / "empty", [], QUERIES, QRELS)
    with pytest.raises(ValueError, match="corpus is empty"):
        load_beir(root)


def test_bad_qrels_row(tmp_path: Path) -> None:
    root = _write_beir(tmp_path / "rows", CORPUS, QUERIES, QRELS)
    with open(root / "qrels" / "test.tsv", "a") as handle:
        handle.write("q1\td1\n")
    with pytest.raises(BeirFormatError, match=r"test\.tsv:6: expected"):
        load_beir(root)


@pytest.mark.data
def test_scifact(scifact_dir: Path) -> None:
    test = load_beir(scifact_dir, split="test")
    assert len(test.corpus) == 5183 and len(test.documents) == 5183
    assert len(test.queries) == 300
    assert sum(len(v) for v in test.qrels.values()) == 339
    train = load_beir(scifact_dir, split="train")
    assert len(train.queries) == 809
    assert not set(train.queries) & set(test.queries)
    # claims with evidence carry it in the query metadata
    assert any(meta for meta in test.query_metadata.values())


def test_numeric_titles_are_text_and_other_types_are_errors(tmp_path: Path) -> None:
    corpus = [{"_id": "d1", "title": 1984, "text": "A novel."}, *CORPUS[1:]]
    ds = load_beir(_write_beir(tmp_path / "num", corpus, QUERIES, QRELS))
    assert ds.corpus["d1"] == "1984\nA novel." and ds.titles["d1"] == "1984"
    corpus = [{"_id": "d1", "title": {"en": "Aspirin"}, "text": "x"}, *CORPUS[1:]]
    with pytest.raises(BeirFormatError, match=r"corpus\.jsonl:1: field 'title' must be a string"):
        load_beir(_write_beir(tmp_path / "dict", corpus, QUERIES, QRELS))


def test_negative_max_queries_fails_before_reading(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_queries must be >= 0"):
        load_beir(tmp_path / "not-even-there", max_queries=-1)


# --------------------------------------------------------------------------- hostile input


def _toy(tmp_path: Path, name: str = "toy") -> Path:
    return _write_beir(tmp_path / name, CORPUS, QUERIES, QRELS)


def _error(root: Path, split: str = "test", kind: type[Exception] = DataError) -> Exception:
    with pytest.raises(kind) as info:
        load_beir(root, split=split)
    return info.value


def test_data_error_is_a_value_error_with_path_and_line(tmp_path: Path) -> None:
    root = _toy(tmp_path)
    with open(root / "qrels" / "test.tsv", "a") as handle:
        handle.write("q1\td1\thigh\n")
    err = _error(root)
    assert isinstance(err, ValueError) and isinstance(err, BeirFormatError)
    assert err.path == root / "qrels" / "test.tsv" and err.line == 6
    assert "relevance score 'high' is not an integer" in str(err) and "0 (judged" in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.line == 6


def test_bad_encoding_names_file_and_line(tmp_path: Path) -> None:
    root = _toy(tmp_path)
    raw = (root / "corpus.jsonl").read_bytes().splitlines(keepends=True)
    raw[1] = '{"_id": "d2", "text": "Statins lower cholest\xe9rol."}\n'.encode("latin-1")
    (root / "corpus.jsonl").write_bytes(b"".join(raw))
    err = _error(root)
    assert "corpus.jsonl:2: not valid UTF-8 (byte 0xe9" in str(err) and "UTF-8" in str(err)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in CORPUS), encoding="utf-16"
    )
    assert "UTF-16-encoded, not UTF-8" in str(_error(root))


def test_bom_and_cr_only_line_ends_load(tmp_path: Path) -> None:
    root = _toy(tmp_path)
    text = "".join(json.dumps(r) + "\r" for r in CORPUS)
    (root / "corpus.jsonl").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert list(load_beir(root).corpus) == ["d1", "d2", "3"]


def test_truncated_and_fake_gzip(tmp_path: Path) -> None:
    root = _write_beir(tmp_path / "gz", CORPUS * 1, QUERIES, QRELS, gz=True)
    data = (root / "corpus.jsonl.gz").read_bytes()
    (root / "corpus.jsonl.gz").write_bytes(data[: len(data) // 2])
    err = _error(root)
    assert "corpus.jsonl.gz" in str(err) and "corrupt or truncated" in str(err)
    (root / "corpus.jsonl.gz").write_text("not gzip at all")
    assert "not gzip-compressed" in str(_error(root))
    # gzip content under a plain name is detected from its bytes
    (root / "corpus.jsonl.gz").unlink()
    (root / "corpus.jsonl").write_bytes(gzip.compress(data and gzip.decompress(data)))
    assert len(load_beir(root).corpus) == 3


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"_id": "d9", "text": 1e999}', "too large for a float"),
        ('{"_id": "d9", "text": NaN}', "NaN is not valid JSON"),
        ('{"_id": ' + "9" * 5000 + ', "text": "x"}', "bad JSON value"),
        ('{"_id": "d9", "_id": "d8", "text": "x"}', "'_id' appears twice"),
        ('["d9", "text"]', "expected a JSON object with an '_id' field"),
        ('{"text": "no id"}', "expected a JSON object with an '_id' field"),
        ('{"_id": ["d9"], "text": "x"}', "'_id' must be a string or an integer, got list"),
        ('{"_id": true, "text": "x"}', "'_id' must be a string or an integer, got bool"),
        ('{"_id": " d9", "text": "x"}', "surrounding whitespace"),
        ('{"_id": "", "text": "x"}', "empty '_id'"),
        ('{"_id": "d9", "text": ["x"]}', "field 'text' must be a string, got list"),
        ("[" * 100_000, "nested too deeply"),
        ('{"_id": "d1", "text": "again"}', "duplicate document id 'd1' (first on line 1)"),
    ],
)
def test_bad_corpus_lines(tmp_path: Path, line: str, needle: str) -> None:
    root = _toy(tmp_path)
    with open(root / "corpus.jsonl", "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    err = _error(root)
    assert str(err).startswith(f"{root / 'corpus.jsonl'}:4:") and needle in str(err)


def test_bad_query_lines(tmp_path: Path) -> None:
    root = _toy(tmp_path)
    with open(root / "queries.jsonl", "a") as handle:
        handle.write('{"_id": "q2", "text": "again"}\n')
    assert "queries.jsonl:5: duplicate query id 'q2' (first on line 2)" in str(_error(root))
    root = _toy(tmp_path, "meta")
    with open(root / "queries.jsonl", "a") as handle:
        handle.write('{"_id": "q9", "text": "x", "metadata": "oops"}\n')
    assert "queries.jsonl:5: field 'metadata' must be a JSON object" in str(_error(root))


def test_judged_query_without_text(tmp_path: Path) -> None:
    queries = [*QUERIES[:2], {"_id": "q3", "text": "  "}, QUERIES[3]]
    root = _write_beir(tmp_path / "blank", CORPUS, queries, QRELS)
    err = _error(root)
    assert "judged queries without text: 'q3' (line 3)" in str(err)
    assert str(err).startswith(str(root / "queries.jsonl"))
    assert load_beir(root, split="train").queries == {"q4": "never judged"}  # q3 not judged there


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("q1\td1\t0.5", "relevance score '0.5' is not an integer"),
        ("q1\td1\t1e999", "relevance score '1e999' is not an integer"),
        ("q1\td1\tnan", "relevance score 'nan' is not an integer"),
        ("q1\td1\t99999999999", "relevance score '99999999999' is out of range"),
        ("q1\td1\t" + "9" * 5000, "relevance score '" + "9" * 40 + "' is out of range"),
        ("query-id\tcorpus-id\tscore", "relevance score 'score' is not an integer"),
        ("q1\t \t1", "empty query id or corpus id"),
    ],
)
def test_bad_qrels_grades(tmp_path: Path, row: str, needle: str) -> None:
    root = _toy(tmp_path)
    with open(root / "qrels" / "test.tsv", "a") as handle:
        handle.write(row + "\n")
    err = _error(root)
    assert f"test.tsv:6: {needle}" in str(err)


def test_integral_float_grades_and_trec_layout_load(tmp_path: Path) -> None:
    root = _toy(tmp_path)
    (root / "qrels" / "test.tsv").write_text("q1 0 d1 2.0\nq2 0 d2 1\n")
    assert load_beir(root).qrels == {"q1": {"d1": 2}, "q2": {"d2": 1}}


def test_conflicting_grades_keep_the_higher_with_a_warning(tmp_path: Path) -> None:
    root = _toy(tmp_path)
    with open(root / "qrels" / "test.tsv", "a") as handle:
        handle.write("q1\td2\t1\n")
    with pytest.warns(UserWarning, match=r"judged twice.*kept the higher.*q1/d2 \(line 6\)"):
        assert load_beir(root).qrels["q1"] == {"d1": 2, "d2": 1}


def test_unknown_ids_warn_with_lines_and_fail_when_nothing_is_left(tmp_path: Path) -> None:
    root = _toy(tmp_path)
    with open(root / "qrels" / "test.tsv", "a") as handle:
        handle.write("ghost-q\td1\t1\n")
    with pytest.warns(UserWarning, match=r"1 query ids missing.*'ghost-q' \(line 6\)"):
        assert "ghost-q" not in load_beir(root).queries
    (root / "qrels" / "test.tsv").write_text("qid\tdoc\tscore\nq1\tnope\t1\nqX\td1\t1\n")
    err = _error(root)
    assert "none of the 2 judgements names both a known query and a known document" in str(err)
    assert "'qX' (line 3)" in str(err) and "'nope' (line 2)" in str(err)
    assert "belongs to this corpus" in str(err)


def test_split_without_judgements_or_positives(tmp_path: Path) -> None:
    root = _toy(tmp_path)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    assert "no judgements" in str(_error(root))
    (root / "qrels" / "test.tsv").write_text("q1\td1\t0\nq2\td2\t-1\n")
    assert "split 'test' has no relevant judgement" in str(_error(root))


def test_empty_documents_are_kept_with_a_warning(tmp_path: Path) -> None:
    corpus = [*CORPUS, {"_id": "blank", "title": "", "text": " "}]
    root = _write_beir(tmp_path / "blank-doc", corpus, QUERIES, QRELS)
    with pytest.warns(
        UserWarning, match=r"1 documents have neither title nor text.*'blank' \(line 4\)"
    ):
        assert "blank" in load_beir(root).corpus


def test_split_names_and_paths(tmp_path: Path) -> None:
    root = _toy(tmp_path)
    for split in ("../../etc/passwd", "", "a/b"):
        err = _error(root, split=split)
        assert "invalid split name" in str(err) and "available splits: test, train" in str(err)
    (root / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a BEIR folder"):
        load_beir(root / "file.txt")
    with pytest.raises(TypeError, match="max_queries must be an int"):
        load_beir(root, max_queries=2.5)


def test_check_beir_folder_reads_nothing(tmp_path: Path) -> None:
    root = _toy(tmp_path)
    (root / "corpus.jsonl").write_bytes(b"\xff\xfe garbage")  # never opened by the check
    corpus, queries, (test,) = check_beir_folder(root, ["test"])
    assert (corpus, queries, test) == (
        root / "corpus.jsonl",
        root / "queries.jsonl",
        root / "qrels" / "test.tsv",
    )
    with pytest.raises(DataError, match="unknown split 'dev'.*available splits: test, train"):
        check_beir_folder(root, ["dev"])
    (root / "qrels" / "test.tsv").unlink()
    (root / "qrels" / "train.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="missing qrels folder"):
        check_beir_folder(root, ["test"])
