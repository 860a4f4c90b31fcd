"""``ragtune bench scale`` (benchmarks/scale.py) end to end at a tiny size, and its parts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from llama_index_ragtune.cli import main


def _tiny_squad(path: Path) -> Path:
    paragraphs = [
        {
            "context": "The Nile flows north. It ends in the Mediterranean Sea. Cairo lies on it.",
            "qas": [{"question": "Where does the Nile end?", "id": "q1", "answers": []}],
        },
        {
            "context": "Copper conducts heat well. Pans are often made of it. It turns green in air.",
            "qas": [{"question": "Why does copper turn green?", "id": "q2", "answers": []}],
        },
    ]
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


def test_scale_benchmark_synthetic_and_bm25(toy_beir_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    squad = _tiny_squad(tmp_path / "squad.json")
    code = main(
        [
            "bench",
            "scale",
            "--parts",
            "synthetic,bm25",
            "--kinds",
            "flat,hnsw,ivf",
            "--synthetic",
            "2000",
            "--bm25",
            "1000",
            "--queries",
            "40",
            "--flat-queries",
            "20",
            "--filter-queries",
            "20",
            "--warmup",
            "2",
            "--clusters",
            "20",
            "--ef-construction",
            "24",
            "--beir",
            str(toy_beir_dir),  # absolute, inside the working directory: recorded relative
            "--squad",
            str(squad),
            "--work-dir",
            "work",
            "--out",
            "results",
        ]
    )
    assert code == 0
    text = (tmp_path / "results" / "scale.json").read_text()
    assert str(tmp_path) not in text  # every recorded path is relative
    data = json.loads(text)
    assert data["command"].startswith("ragtune bench scale --out results --work-dir work")
    assert "--beir toybeir" in data["command"]
    block = data["dense"]["synthetic"]
    rows = {r["index"]: r for r in block["rows"]}
    assert list(rows) == ["flat", "hnsw", "ivf"]
    assert "efConstruction=24" in rows["hnsw"]["params"]  # --ef-construction reaches the build
    assert "--ef-construction 24" in data["command"]
    assert rows["flat"]["recall_at_10"] == 1.0  # exact search agrees with the exact top-10
    assert rows["flat"]["queries"] == 20 and rows["hnsw"]["queries"] == 40
    for row in rows.values():
        assert row["vectors"] == 2000
        assert 0.0 <= row["recall_at_10"] <= 1.0
        assert 0 < row["p50_ms"] <= row["p95_ms"]
        assert row["peak_rss_mib"] >= row["baseline_rss_mib"] > 0
        assert row["disk_mib"] > 0
    assert rows["hnsw"]["faiss_type"] == "IndexHNSWFlat"
    # the sweep re-queries the built index: more candidates never lose much recall
    sweep = [s for s in block["sweep"] if s["index"] == "hnsw"]
    assert [s["setting"] for s in sweep][0] == "ef_search=16"
    assert sweep[-1]["recall_at_10"] >= sweep[0]["recall_at_10"]
    # filtered queries: every hit passes its filter, on each approximate index
    assert {(f["index"], f["filter"].split()[0]) for f in block["filtered"]} == {
        (k, f) for k in ("hnsw", "ivf") for f in ("10%", "1%")
    }
    assert all(f["all_pass"] for f in block["filtered"])
    assert data["target"]["vectors"] == 2000
    assert data["target"]["met"] == (
        rows["hnsw"]["recall_at_10"] >= 0.95 and rows["hnsw"]["p50_ms"] < 1.0
    )
    bm = data["bm25"]
    assert bm["documents"] == 1000 and bm["queries"] > 0
    assert 0 < bm["p50_ms"] <= bm["p95_ms"]
    assert bm["queries_without_hits"] < bm["queries"]
    markdown = (tmp_path / "results" / "scale.md").read_text()
    assert "## BM25 (BM25Retriever, bm25s), 1,000 documents" in markdown
    assert f"Command: `{data['command']}`" in markdown
    assert not (tmp_path / "work" / "synthetic-2000.npy").exists()  # removed unless kept
    assert "wrote results/scale.json" in capsys.readouterr().out


def test_scale_benchmark_bad_arguments(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["bench", "scale", "--parts", "synthetic", "--synthetic", "0"])
    assert exc.value.code == 2
    assert "argument --synthetic: must be >= 1, got 0" in capsys.readouterr().err
    assert main(["bench", "scale", "--parts", "bm25", "--beir", "nope"]) == 2
    assert "--beir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["bench", "scale", "--kinds", "hnsw,lsh"])
    assert exc.value.code == 2
    assert "choose from flat,hnsw,ivf,ivfpq" in capsys.readouterr().err
    assert not (tmp_path / "benchmarks").exists()  # nothing written by a refused run


def test_exact_top_k_matches_a_full_sort_with_and_without_filters():
    from benchmarks.scale_data import FILTERS, _filter_mask, exact_top_k

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((70_000, 8)).astype(np.float32)  # more than one chunk
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    groups = rng.integers(0, 100, len(vectors)).astype(np.int16)
    truth = exact_top_k(vectors, queries, groups)
    scores = queries @ vectors.T
    assert np.array_equal(truth["none"], np.argsort(-scores, axis=1, kind="stable")[:, :10])
    for name in FILTERS:
        masked = np.where(_filter_mask(groups, name), scores, -np.inf)
        expected = np.argsort(-masked, axis=1, kind="stable")[:, :10]
        assert np.array_equal(truth[name], expected), name
        assert _filter_mask(groups[truth[name]], name).all()


def test_synthetic_vectors_are_unit_clustered_and_reproducible(tmp_path):
    from benchmarks.scale_data import nn_stats, synthetic_vectors

    args = argparse.Namespace(clusters=10, rank=4, spread=0.5, noise=0.3, seed=0)
    meta = synthetic_vectors(tmp_path / "a.npy", 2000, args, seed=1)
    synthetic_vectors(tmp_path / "b.npy", 2000, args, seed=1)
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.shape == (2000, 384) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert meta["vectors"] == 2000
    assert meta["cluster_sizes"]["max"] > meta["cluster_sizes"]["min"]  # uneven, like topics
    stats = nn_stats(a)
    uniform = np.random.default_rng(0).standard_normal((2000, 384)).astype(np.float32)
    uniform /= np.linalg.norm(uniform, axis=1, keepdims=True)
    assert stats["nn1_cosine"] > nn_stats(uniform)["nn1_cosine"] + 0.3  # clustered, not noise


@pytest.mark.slow
def test_scale_benchmark_real_minilm_vectors(
    scifact_dir, squad_path, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "bench",
            "scale",
            "--parts",
            "real",
            "--real",
            "300",
            "--queries",
            "30",
            "--beir",
            str(scifact_dir),
            "--squad",
            str(squad_path),
            "--work-dir",
            "work",
            "--out",
            "results",
        ]
    )
    assert code == 0
    data = json.loads((tmp_path / "results" / "scale.json").read_text())
    real = data["datasets"]["real"]
    assert real["windows"] == 300 and real["corpus_embedding"]["from_cache"] is False
    rows = {r["index"]: r for r in data["dense"]["real"]["rows"]}
    assert rows["flat"]["recall_at_10"] == 1.0
    assert list(rows) == ["flat", "hnsw", "ivf", "ivfpq"]
    assert all(row["vectors"] == 300 for row in rows.values())
    assert "target" not in data or data["target"] is None  # the target is the synthetic set's
    # a second run reuses the cached vectors (same texts)
    capsys.readouterr()
    again = ["--real", "300", "--queries", "30", "--work-dir", "work"]
    again += ["--beir", str(scifact_dir), "--squad", str(squad_path)]
    assert main(["bench", "scale", "--parts", "embed", *again]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{") :])["corpus_embedding"]["from_cache"] is True
