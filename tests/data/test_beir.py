"""load_beir: the BEIR layout, its quirks (CRLF, gzip, header rows) and clear errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from llama_index.core.schema import MetadataMode

from llama_index_ragtune.data.beir import BeirFormatError, available_splits, load_beir


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
