"""The embedding benchmarks run end to end on a tiny synthetic BEIR set with the tiny encoder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

TOPICS = {
    "apples": "Apples are fruit. Apples can be returned within seven days. Keep the receipt.",
    "laptops": "Laptops carry a two-year warranty. Batteries are covered for one year.",
    "vitamin": "Vitamin D supports bone density. Deficiency is common in winter.",
    "kinase": "Protein kinases phosphorylate substrates. Inhibitors block tumour growth.",
}


@pytest.fixture
def tiny_beir(tmp_path) -> Path:
    folder = tmp_path / "toy"
    (folder / "qrels").mkdir(parents=True)
    docs, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for n in range(10):
        for topic, text in TOPICS.items():
            docs.append(
                {"_id": f"{topic}-{n}", "title": f"{topic} {n}", "text": f"{text} Note {n}."}
            )
    for topic in TOPICS:
        queries.append({"_id": f"q-{topic}", "text": f"what about {topic}?"})
        qrels.append(f"q-{topic}\t{topic}-0\t1")
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return folder


def test_embedding_tiers_writes_tables(tiny_beir, tiny_encoder_path, tmp_path, monkeypatch):
    pytest.importorskip("model2vec")
    pytest.importorskip("onnxruntime")
    from benchmarks import embedding_tiers

    monkeypatch.setenv("RAGTUNE_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "results"
    args = ["--beir", str(tiny_beir), "--model", tiny_encoder_path, "--out", str(out)]
    assert embedding_tiers.main([*args, "--pca-dims", "8", "--no-progress"]) == 0
    result = json.loads((out / "embedding_tiers_toy_test.json").read_text())
    names = [r["encoder"] for r in result["rows"]]
    assert names == ["torch", "onnx", "onnx-int8", "static-pca8"]
    static = result["rows"][-1]
    assert static["dimension"] == 8 and static["distill_seconds"] > 0
    assert not os.path.isabs(static["folder"])
    assert result["command"].startswith("python -m benchmarks.embedding_tiers --beir")
    assert "static, PCA 8" in (out / "embedding_tiers_toy_test.md").read_text()


def test_embedding_scale_runs_every_engine(tiny_beir, tiny_encoder_path, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from benchmarks import embedding_scale

    monkeypatch.chdir(ROOT)  # the engines run as `python -m benchmarks.embedding_scale`
    out = tmp_path / "results"
    argv = ["--beir", str(tiny_beir), "--passages", "150", "--model", tiny_encoder_path]
    assert embedding_scale.main([*argv, "--shard-size", "64", "--out", str(out)]) == 0
    result = json.loads((out / "embedding_scale_150_st.json").read_text())
    rows = {r["engine"]: r for r in result["rows"]}
    assert set(rows) == {"local", "multiprocess", "ray"}
    for row in rows.values():
        assert row["passages"] == 150 and row["peak_tree_pss_mb"] > 0
        assert row["max_abs_diff_vs_local"] < 1e-5
