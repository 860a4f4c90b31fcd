"""``ragtune bench retrieval`` end to end on a tiny synthetic BEIR folder (tiny encoder)."""

from __future__ import annotations

import json
import sys

import pytest

from llama_index_ragtune.cli import main

DOCS = {
    "d1": ("Apple returns", "Perishable groceries such as apples are refunded, not returned."),
    "d2": (
        "Electronics returns",
        "Opened electronics can be returned within 14 days in the original box.",
    ),
    "d3": ("Opening hours", "The grocery store opens at 8am and closes at 9pm."),
    "d4": ("Laptop warranty", "Laptops carry a two-year warranty against hardware faults."),
    "d5": ("Phone cases", "Phone cases ship within two business days."),
    "d6": ("Milk", "Fresh milk is delivered every morning to the dairy aisle."),
}
QUERIES = {
    "q1": "can I return apples",
    "q2": "return opened electronics",
    "q3": "when does the grocery store open",
    "q4": "laptop warranty length",
    "q5": "how fast do phone cases ship",
    "q6": "fresh milk delivery",
}
QRELS = {
    "test": {"q1": "d1", "q2": "d2", "q3": "d3", "q4": "d4"},
    "train": {"q5": "d5", "q6": "d6", "q1": "d1"},
}


@pytest.fixture()
def beir_dir(tmp_path):
    root = tmp_path / "tinybeir"
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as f:
        for doc_id, (title, text) in DOCS.items():
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for qid, text in QUERIES.items():
            f.write(json.dumps({"_id": qid, "text": text, "metadata": {}}) + "\n")
    for split, pairs in QRELS.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, d in pairs.items()]
        (root / "qrels" / f"{split}.tsv").write_text("\r\n".join(lines) + "\r\n")
    return root


def test_cli_writes_json_and_markdown(beir_dir, tiny_encoder_path, tmp_path, capsys):
    out = tmp_path / "results"
    code = main(
        [
            "bench",
            "retrieval",
            "--beir",
            str(beir_dir),
            "--split",
            "test",
            "--out",
            str(out),
            "--model",
            tiny_encoder_path,
            "--embedding-cache",
            str(tmp_path / "cache"),
            "--warmup",
            "1",
            "--no-progress",
        ]
    )
    assert code == 0
    result = json.loads((out / "retrieval_tinybeir_test.json").read_text())
    markdown = (out / "retrieval_tinybeir_test.md").read_text()
    names = [row["system"] for row in result["rows"]]
    assert names == [
        "BM25 (llama-index BM25Retriever)",
        "BM25 (ragtune BM25Retriever)",
        "dense (VectorStoreIndex, PyTorch)",
        "dense (ragtune FAISS, onnx)",
        "QueryFusionRetriever RRF (anchor)",
        "hybrid rrf (ragtune)",
        "hybrid minmax (ragtune)",
        "hybrid zscore (ragtune)",
    ]
    assert result["num_queries"] == 4 and result["num_documents"] == 6
    for row in result["rows"]:
        assert 0.0 <= row["metrics"]["ndcg@10"] <= 1.0
        assert row["latency_ms"]["p50_ms"] > 0
        assert row["system"] in markdown
    bm25 = result["rows"][1]["metrics"]
    assert bm25["ndcg@10"] > 0.9  # every test query shares a stemmed keyword with its document
    assert result["rows"][1]["metrics"]["recall@100"] == 1.0
    assert "p50 latency ratio" in markdown
    assert "| system | nDCG@10 |" in capsys.readouterr().out

    # a rerun reads the corpus vectors from the cache
    main(
        [
            "bench",
            "retrieval",
            "--beir",
            str(beir_dir),
            "--out",
            str(out),
            "--model",
            tiny_encoder_path,
            "--embedding-cache",
            str(tmp_path / "cache"),
            "--warmup",
            "0",
            "--no-progress",
        ]
    )
    rerun = json.loads((out / "retrieval_tinybeir_test.json").read_text())
    assert "from cache" in rerun["rows"][2]["notes"] and "from cache" in rerun["rows"][3]["notes"]


def test_cli_onnx_comparison_and_sweep(beir_dir, tiny_encoder_path, tmp_path):
    out = tmp_path / "results"
    common = [
        "--beir",
        str(beir_dir),
        "--out",
        str(out),
        "--model",
        tiny_encoder_path,
        "--embedding-cache",
        "none",
        "--warmup",
        "0",
        "--no-progress",
    ]
    assert main(["bench", "retrieval", *common, "--onnx", "--max-queries", "2"]) == 0
    result = json.loads((out / "retrieval_tinybeir_test_q2.json").read_text())
    assert set(result["encoders"]) == {"torch", "onnx", "onnx-int8"}
    assert all(e["corpus_seconds"] > 0 and e["texts"] == 6 for e in result["encoders"].values())
    assert "dense (ragtune FAISS, onnx-int8)" in [row["system"] for row in result["rows"]]
    assert "speed-up vs PyTorch" in (out / "retrieval_tinybeir_test_q2.md").read_text()

    assert main(["bench", "retrieval", *common, "--split", "train", "--sweep"]) == 0
    sweep = json.loads((out / "fusion_sweep_tinybeir_train.json").read_text())
    assert set(sweep["best_per_mode"]) == {"rrf", "minmax", "zscore"}
    assert sweep["default_fusion_mode"] in sweep["best_per_mode"]
    assert sweep["num_queries"] == 3
    assert "FUSION_PRESETS" in (out / "fusion_sweep_tinybeir_train.md").read_text()
    assert sweep["command"].startswith("ragtune bench retrieval --beir ")
    assert sweep["command"].endswith("--sweep") and "--embedding-cache none" in sweep["command"]
    assert not [part for part in sweep["command"].split() if part.startswith("/")]


def test_cli_with_reranker(beir_dir, tiny_encoder_path, tmp_path):
    from pathlib import Path

    from sentence_transformers import CrossEncoder

    reranker = tmp_path / "reranker"
    CrossEncoder(str(Path(tiny_encoder_path).parent / "hf"), num_labels=1, device="cpu").save(
        str(reranker)
    )
    out = tmp_path / "results"
    args = [
        "bench",
        "retrieval",
        "--beir",
        str(beir_dir),
        "--out",
        str(out),
        "--model",
        tiny_encoder_path,
        "--embedding-cache",
        str(tmp_path / "cache"),
        "--warmup",
        "0",
        "--no-progress",
        "--reranker",
        str(reranker),
        "--rerank-depth",
        "5",
    ]
    assert main(args) == 0
    result = json.loads((out / "retrieval_tinybeir_test.json").read_text())
    row = result["rows"][-1]
    assert row["system"].endswith("+ CrossEncoderRerank") and row["reranked"]
    assert "rerank top 5 -> 10" in row["notes"]
    assert (
        "| — |" in (out / "retrieval_tinybeir_test.md").read_text()
    )  # no Recall@100 after a top-10 cut


def test_cli_skips_the_stock_bm25_rows_without_the_bench_extra(
    beir_dir, tiny_encoder_path, tmp_path, monkeypatch, capsys
):
    # `import llama_index.retrievers.bm25` raises ImportError, as without the `bench` extra
    monkeypatch.setitem(sys.modules, "llama_index.retrievers.bm25", None)
    out = tmp_path / "results"
    argv = ["bench", "retrieval", "--beir", str(beir_dir), "--out", str(out)]
    argv += [
        "--model",
        tiny_encoder_path,
        "--embedding-cache",
        "none",
        "--warmup",
        "0",
        "--no-progress",
    ]
    assert main(argv) == 0
    result = json.loads((out / "retrieval_tinybeir_test.json").read_text())
    names = [row["system"] for row in result["rows"]]
    assert "BM25 (llama-index BM25Retriever)" not in names
    assert "QueryFusionRetriever RRF (anchor)" not in names
    assert "BM25 (ragtune BM25Retriever)" in names and "hybrid rrf (ragtune)" in names
    assert set(result["skipped_rows"]) == {
        "BM25 (llama-index BM25Retriever)",
        "QueryFusionRetriever RRF (anchor)",
    }
    assert "anchor" not in result["summary"]
    assert "pip install" in result["skipped_rows"]["QueryFusionRetriever RRF (anchor)"]
    markdown = (out / "retrieval_tinybeir_test.md").read_text()
    assert "skipped: llama-index-retrievers-bm25 is not installed" in markdown
    assert "skipped: BM25 (llama-index BM25Retriever)" in capsys.readouterr().err
    # the recorded command names no absolute path (paths relative to the working directory)
    assert not [part for part in result["command"].split() if part.startswith("/")]
    assert result["command"].startswith("ragtune bench retrieval --beir ")
