"""``ragtune bench tuning`` on a tiny BEIR folder: every main row, tables written."""

from __future__ import annotations

import json

import pytest

from llama_index_ragtune.cli import main


@pytest.fixture()
def beir_dir(tmp_path):
    from test_train_commands import write_toy_beir

    return write_toy_beir(tmp_path / "toybeir")


def test_main_rows_are_measured_and_written(beir_dir, tiny_encoder_path, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(
        [
            "bench",
            "tuning",
            "--beir",
            str(beir_dir),
            "--out",
            str(out),
            "--rows",
            "dense-before,dense-after,hybrid,hybrid+reranker-blend",
            "--rerank-retrieval-weight",
            "1.0",
            "--model",
            tiny_encoder_path,
            "--reranker-model",
            tiny_encoder_path,
            "--device",
            "cpu",
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--reranker-max-steps",
            "2",
            "--reranker-batch-size",
            "4",
            "--rerank-depth",
            "5",
        ]
    )
    assert code == 0
    data = json.loads((out / "tuning.json").read_text())
    rows = {row["name"]: row for row in data["rows"]}
    assert set(rows) == {
        "dense-before",
        "dense-after",
        "hybrid",
        "hybrid+reranker",
        "hybrid+reranker-blend",
        "both-neg",
    }
    for row in rows.values():
        assert set(row["metrics"]) == {"ndcg@10", "recall@100", "mrr@10"}
    assert rows["dense-before"]["train_minutes"] is None
    assert rows["dense-after"]["details"]["steps"] == 2 and rows["dense-after"]["train_minutes"] > 0
    assert rows["dense-after"]["details"]["mining"]["sources"] == ["bm25", "dense"]
    assert rows["hybrid+reranker"]["details"]["steps"] == 2
    assert rows["hybrid+reranker"]["details"]["loss"] == "MarginMSELoss"  # distils the encoder
    # All the weight on the hybrid's own score keeps the hybrid's order.
    assert rows["hybrid+reranker-blend"]["details"]["retrieval_weight"] == 1.0
    assert rows["hybrid+reranker-blend"]["metrics"] == pytest.approx(rows["hybrid"]["metrics"])
    # BM25 finds every test query's unique topic word: the hybrid beats the random tiny encoder.
    assert rows["hybrid"]["metrics"]["mrr@10"] > rows["dense-before"]["metrics"]["mrr@10"]
    assert data["meta"]["eval_queries"] == 4 and data["meta"]["train_queries"] == 12
    table = (out / "tuning.md").read_text()
    assert "| hybrid + fine-tuned reranker (top 5) |" in table
    assert (
        "| hybrid + fine-tuned reranker (top 5), blended with the hybrid score (w=1.0) |" in table
    )
    assert "nDCG@10" in capsys.readouterr().out


def test_unknown_row_is_rejected(beir_dir, tmp_path):
    with pytest.raises(SystemExit, match="unknown row"):
        main(
            [
                "bench",
                "tuning",
                "--beir",
                str(beir_dir),
                "--rows",
                "dense-before,colbert",
                "--out",
                str(tmp_path),
            ]
        )


def test_resume_reuses_finished_training(beir_dir, tiny_encoder_path, tmp_path):
    out = tmp_path / "bench"
    argv = [
        "bench",
        "tuning",
        "--beir",
        str(beir_dir),
        "--out",
        str(out),
        "--rows",
        "dense-after",
        "--model",
        tiny_encoder_path,
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--batch-size",
        "8",
    ]
    assert main(argv) == 0
    first = json.loads((out / "tuning.json").read_text())
    assert main([*argv, "--resume"]) == 0
    again = {row["name"]: row for row in json.loads((out / "tuning.json").read_text())["rows"]}
    first_rows = {row["name"]: row for row in first["rows"]}
    assert first_rows["dense-after"]["details"]["resumed_from"] is None
    steps = first_rows["dense-after"]["details"]["steps"]
    assert again["dense-after"]["details"]["resumed_from"].endswith(f"checkpoint-{steps}")
    assert again["dense-after"]["details"]["steps"] == steps  # nothing left to train
    assert again["dense-after"]["metrics"] == pytest.approx(first_rows["dense-after"]["metrics"])
    assert f"(resumed from checkpoint-{steps})" in (out / "tuning.md").read_text()
