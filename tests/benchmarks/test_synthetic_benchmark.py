"""``ragtune bench synthetic`` (benchmarks/synthetic_queries.py): tuning on synthetic questions
from the bundled decoder, judged on the real test questions, on a tiny BEIR folder."""

from __future__ import annotations

import json

import pytest

from llama_index_ragtune.cli import main


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_synthetic_benchmark_judges_the_served_stack_on_real_questions(
    toy_beir_dir, tiny_encoder_path, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    argv = ["bench", "synthetic", "--beir", str(toy_beir_dir), "--out", "bench"]
    argv += ["--synthetic-nodes", "8", "--encoder-minutes", "0.05", "--max-docs", "16"]
    # a tiny encoder; the questions come from the bundled decoder, as for a user
    argv += ["--encoder-model", tiny_encoder_path]
    assert main(argv) == 0
    result = json.loads((tmp_path / "bench" / "synthetic.json").read_text())
    stats = result["synthetic"]["stats"]
    assert stats["nodes"] == 8 and 0 < stats["kept"] <= stats["generated"]
    # every generated line is kept or dropped for a named reason
    dropped = sum(v for k, v in stats.items() if k not in ("nodes", "generated", "kept"))
    assert stats["kept"] + dropped - stats["failed_nodes"] == stats["generated"]
    assert result["corpus"]["documents"] == 16
    assert result["real_questions"] == 4  # the toy set's test queries
    rows = result["rows"]
    assert set(rows) == {"hybrid, untuned", "served after tuning on synthetic questions"}
    for metrics in rows.values():
        assert set(metrics) == {"ndcg@10", "recall@10", "mrr@10"}
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
    encoder = result["decisions"]["encoder"]
    if not encoder["promoted"] and not result["decisions"]["fusion"]["promoted"]:
        # nothing promoted: the served stack is the untuned one
        assert rows["hybrid, untuned"] == rows["served after tuning on synthetic questions"]
    assert encoder["reason"]  # why it was (not) promoted
    # the command that reproduces it, with the folder relative to the working directory
    assert result["command"].startswith("ragtune bench synthetic --beir toybeir")
    assert "--encoder-model" in result["command"]
    assert not [w for w in result["command"].split() if w.startswith("/")]
    text = (tmp_path / "bench" / "synthetic.md").read_text()
    assert "| hybrid, untuned |" in text and f"Command: `{result['command']}`" in text
    assert not (tmp_path / "bench" / "work").exists()  # the pipeline's folder is removed
