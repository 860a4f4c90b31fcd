"""``python -m benchmarks.load`` end to end on a tiny BEIR folder (tiny bi-encoder and cross-encoder)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks import load, loadgen

ROOT = Path(__file__).resolve().parents[2]
DOCS = {
    "d1": ("Apple returns", "Perishable groceries such as apples are refunded, not returned."),
    "d2": ("Electronics", "Opened electronics can be returned within 14 days in the box."),
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
}


@pytest.fixture()
def beir_dir(tmp_path) -> Path:
    root = tmp_path / "tinybeir"
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as f:
        for doc_id, (title, text) in DOCS.items():
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for qid, text in QUERIES.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(1, 5)]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture()
def tiny_cross_encoder(tiny_encoder_path, tmp_path) -> str:
    from sentence_transformers import CrossEncoder

    out = tmp_path / "cross_encoder"
    CrossEncoder(tiny_encoder_path, num_labels=1, max_length=64).save(str(out))
    return str(out)


def test_load_benchmark_end_to_end(
    beir_dir, tiny_encoder_path, tiny_cross_encoder, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("RAGTUNE_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "results"
    argv = [
        "--beir", str(beir_dir), "--out", str(out), "--model", tiny_encoder_path,
        "--reranker", tiny_cross_encoder, "--cache-dir", str(tmp_path / "vectors"), "--queries", "30",
        "--memory-queries", "60", "--rerank-queries", "4", "--rerank-depth", "3",
        "--concurrency", "5", "--threads", "3", "--warmup", "2",
    ]  # fmt: skip
    assert load.main(argv) == 0

    results = json.loads((out / "load_tinybeir.json").read_text())
    markdown = (out / "load_tinybeir.md").read_text()
    rows = results["rows"]
    systems = ["hybrid", "hybrid, micro_batch=False", "hybrid + rerank"]
    assert [(r["system"], r["mode"]) for r in rows] == [
        (s, m) for s in systems for m in ("sequential", "async", "threads")
    ]
    for row in rows:
        expected = 4 if row["system"] == "hybrid + rerank" else 30
        assert row["queries"] == expected and row["errors"] == 0, row
        assert row["qps"] > 0 and 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        batches = row["micro_batches"]
        if row["system"] == "hybrid, micro_batch=False":
            assert batches is None
        else:  # every query embedding went through the shared queue, in <= as many batches
            assert batches["queries"] == expected and 1 <= batches["batches"] <= expected
            assert batches["mean_batch"] == pytest.approx(expected / batches["batches"], abs=0.01)
        sequential = next(r for r in rows if r["system"] == row["system"])
        assert row["x_sequential"] == pytest.approx(row["qps"] / sequential["qps"], abs=0.01)
    # concurrent (batched) results against the unbatched retriever one query at a time
    agreement = results["agreement"]
    assert agreement["queries"] == len(QUERIES) and agreement["same_results"] == len(QUERIES)
    assert 0 <= agreement["max_fused_score_difference"] < 1e-4
    assert f"{len(QUERIES)} of {len(QUERIES)} distinct queries with the same nodes" in markdown
    assert results["summary"]["hybrid_vs_unbatched_one_at_a_time"]["async"] > 0
    memory = results["memory"]
    assert memory["queries"] == 60 and memory["errors"] == 0
    assert [s["queries"] for s in memory["rss"]] == [0, 60]
    assert all(s["rss_mb"] > 0 for s in memory["rss"])

    # recorded: the command (relative paths only) and a table per row
    strings = list(_strings(results))
    assert strings and not any(os.path.isabs(s) or str(ROOT) in s for s in strings)
    command = results["command"]
    assert command.startswith("python -m benchmarks.load --beir ")
    assert "--queries 30" in command and "--concurrency 5" in command
    assert all(not os.path.isabs(part) for part in command.split())
    assert markdown.count("| hybrid") == len(rows) and f"`{command}`" in markdown
    assert "| hybrid | async (5) | 30 | 0 |" in markdown
    assert "resident memory" in markdown
    assert list((tmp_path / "vectors").glob("*.sqlite"))  # the corpus vectors were cached
    assert "| hybrid | sequential |" in capsys.readouterr().out


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_bad_arguments_are_refused_before_loading_anything(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no such folder"):
        load.main(["--beir", str(tmp_path / "missing")])
    with pytest.raises(SystemExit) as info:
        load.main(["--beir", str(tmp_path), "--concurrency", "0"])
    assert info.value.code == 2
    assert (
        "argument --concurrency: expected a whole number >= 1, got '0'" in capsys.readouterr().err
    )
    # a caller passing parsed arguments is checked too
    args = load.build_parser().parse_args(["--beir", str(tmp_path)])
    args.concurrency = 0
    with pytest.raises(SystemExit, match="--concurrency must be >= 1"):
        load.run(args)


def test_percentiles_interpolate():
    assert loadgen.percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert loadgen.percentile([5.0], 99) == 5.0
    assert loadgen.percentile([1.0, 3.0], 100) == 3.0


def test_ragtune_bench_load_is_wired(tmp_path, capsys):
    from llama_index_ragtune import cli

    with pytest.raises(SystemExit) as done:
        cli.main(["bench", "load", "--help"])
    assert done.value.code == 0
    assert "--concurrency" in capsys.readouterr().out
    # run through the CLI, the recorded command is the CLI's
    args = load.build_parser().parse_args(["--beir", "data/x", "--rerank-queries", "30"])
    assert load.command_line(args) == "ragtune bench load --beir data/x --rerank-queries 30"
    # an unknown folder is refused before anything loads, with status 2
    assert cli.main(["bench", "load", "--beir", str(tmp_path / "missing")]) == 2
    assert "BEIR folder not found" in capsys.readouterr().err
