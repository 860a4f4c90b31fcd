"""``python -m benchmarks.bm25_analyzers`` on a tiny BEIR folder: both analyzers scored, files written."""

from __future__ import annotations

import json

from benchmarks import bm25_analyzers

DOCS = {
    "cafe": "Our café opens at eight. Pastries are baked daily.",
    "kettle": "The kettle SKU-48213 holds 1.5L and boils fast.",
    "returns": "Opened electronics can be returned within 14 days.",
    "zh": "退货政策：开封的电子产品可在十四天内退货。",
}
QUERIES = {
    "q1": "cafe",
    "q2": "SKU48213",
    "q3": "return opened laptop",
    "q4": "电子产品退货",
}
QRELS = {"q1": "cafe", "q2": "kettle", "q3": "returns", "q4": "zh"}


def test_both_analyzers_are_scored_on_every_split_and_written(tmp_path, monkeypatch):
    folder = tmp_path / "toy"
    (folder / "qrels").mkdir(parents=True)
    corpus = [{"_id": key, "title": "", "text": text} for key, text in DOCS.items()]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in corpus) + "\n")
    queries = [{"_id": key, "text": text} for key, text in QUERIES.items()]
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    qrels = ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t1" for q, d in QRELS.items())]
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    monkeypatch.chdir(tmp_path)

    assert bm25_analyzers.main(["--beir", str(folder), "--out", "results"]) == 0

    rows = json.loads((tmp_path / "results" / "bm25_analyzers.json").read_text())["rows"]
    assert [(row["data"], row["split"], row["queries"]) for row in rows] == [("toy", "test", 4)]
    plain, unicode = rows[0]["plain"], rows[0]["unicode"]
    # the accented word, the code without its hyphen and the unspaced Chinese query are found
    # by the unicode analyzer alone: every query first with it, three of four missed without
    assert unicode["mrr@10"] == 1.0
    assert plain["mrr@10"] == 0.25
    table = (tmp_path / "results" / "bm25_analyzers.md").read_text()
    assert "| toy | test | 4 | 0.2500 | 1.0000 | +0.7500 |" in table
