"""``ragtune bench tuning`` (benchmarks/tuning.py) end to end on a tiny BEIR folder and tiny models."""

from __future__ import annotations

import json

from llama_index_ragtune.cli import main


def test_tuning_benchmark_rows_decisions_and_records(
    toy_beir_dir, tiny_encoder_path, tmp_path, capsys, monkeypatch
):
    from llama_index_ragtune.finetuning import TrainingBudget

    # a tiny, time-bounded run: every engine default stays, only the budgets shrink
    monkeypatch.setattr(
        "llama_index_ragtune.finetuning.encoder.DEFAULT_BUDGET", TrainingBudget(minutes=0.02)
    )
    monkeypatch.setattr(
        "llama_index_ragtune.finetuning.reranker.DEFAULT_BUDGET", TrainingBudget(minutes=0.02)
    )
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench"
    code = main(
        [
            "bench",
            "tuning",
            "--beir",
            str(toy_beir_dir),  # absolute, inside the working directory: recorded relative
            "--out",
            "bench",
            "--model",
            tiny_encoder_path,
            "--ablations",
            "inbatch",
        ]
    )
    assert code == 0
    data = json.loads((out / "tuning.json").read_text())
    rows = {row["name"]: row for row in data["rows"]}
    assert list(rows) == [
        "bm25",
        "dense-before",
        "hybrid-preset",
        "hybrid-before",
        "dense-after",
        "hybrid-after",
        "reranker",
        "stack",
        "ablation-inbatch",
    ]
    for row in rows.values():
        assert set(row["metrics"]) >= {"ndcg@10", "recall@100", "mrr@10"}
    assert rows["bm25"]["metrics"]["recall@100"] == 1.0  # each query names its topic word
    for name in ("dense-after", "reranker", "ablation-inbatch"):
        assert rows[name]["decision"].startswith(("promoted", "kept"))
        assert rows[name]["train_minutes"] > 0
    assert rows["ablation-inbatch"]["details"]["mining"] == {"sources": []}
    # the stack is what validation promoted: never below the untuned hybrid by construction
    assert data["meta"]["command"].startswith("ragtune bench tuning --beir toybeir --out bench")
    assert data["meta"]["finished"] is True
    text = (out / "tuning.md").read_text()
    assert "| system | nDCG@10 |" in text and "validation decision" in text
    assert str(tmp_path) not in json.dumps(data["meta"])
    printed = capsys.readouterr().out
    assert "written:" in printed


def test_bench_needs_the_harness_of_a_checkout(monkeypatch, capsys):
    import importlib

    import pytest

    harness = importlib.import_module("benchmarks")
    monkeypatch.setattr(harness, "HARNESS_OF", "something else")
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "tuning", "--help"])
    assert exit_info.value.code == 2
    assert "source checkout" in capsys.readouterr().err
