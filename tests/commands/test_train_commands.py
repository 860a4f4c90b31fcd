"""``ragtune train encoder`` / ``ragtune train reranker`` end to end on a tiny BEIR folder and tiny model."""

from __future__ import annotations

import json

import pytest

from llama_index_ragtune.cli import main


@pytest.fixture()
def beir_dir(toy_beir_dir):
    return toy_beir_dir


def test_train_encoder_on_a_beir_folder_then_resume(beir_dir, tiny_encoder_path, tmp_path, capsys):
    out = tmp_path / "enc"
    common = [
        "train",
        "encoder",
        "--beir",
        str(beir_dir),
        "--model",
        tiny_encoder_path,
        "--negatives",
        "bm25",
        "--num-negatives",
        "2",
        "--train-batch-size",
        "4",
        "--learning-rate",
        "2e-3",
        "--save-steps",
        "1",
        "--val-fraction",
        "0.25",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    assert main([*common, "--max-steps", "2"]) == 0
    printed = capsys.readouterr().out
    for word in ("validation", "hybrid_ndcg@10", "recall@100", "peak memory", "test split"):
        assert word in printed
    assert "promoted" in printed or "kept the starting model" in printed
    results = json.loads((out / "results.json").read_text())
    assert {"ndcg@10", "recall@100", "mrr@10", "hybrid_ndcg@10"} <= set(results["before"])
    assert set(results["before"]) == set(results["after"])
    assert results["info"]["val_queries"] == 3  # carved off the 12 training queries
    assert results["test"]["queries"] == 4 and "hybrid_ndcg@10" in results["test"]["after"]
    assert results["decision"]["metric"] == "hybrid_ndcg@10"
    assert results["global_step"] == 2
    assert results["mining"]["sources"] == ["bm25"] and results["mining"]["negatives"]["bm25"] > 0
    assert results["info"]["rows"]["mined_negatives"] == 9
    assert results["arguments"]["max_steps"] == 2
    assert (out / "final" / "modules.json").exists() and (out / "decision.json").exists()
    fusion = json.loads((out / "fusion.json").read_text())
    assert fusion["fusion_mode"] in ("rrf", "minmax", "zscore") and 0 < fusion["alpha"] < 1

    assert main([*common, "--max-steps", "3", "--resume"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["global_step"] == 3 and results["info"]["resumed_from"].endswith("checkpoint-2")


def test_train_encoder_from_a_llama_index_dataset_json(
    beir_dir, tiny_encoder_path, tmp_path, capsys
):
    from llama_index_ragtune.data.schema import RetrievalDataset

    path = tmp_path / "qa.json"
    RetrievalDataset.from_beir(beir_dir, split="train").save_json(path, format="llama_index")
    out = tmp_path / "enc"
    code = main(
        [
            "train",
            "encoder",
            "--dataset",
            str(path),
            "--val-fraction",
            "0.25",
            "--negatives",
            "none",
            "--model",
            tiny_encoder_path,
            "--max-steps",
            "1",
            "--train-batch-size",
            "4",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["info"]["val_queries"] == 3 and results["info"]["rows"]["rows"] == 9
    assert results["info"]["rows"]["mined_negatives"] == 0  # pairs: in-batch negatives only
    assert results["test"] == {}


@pytest.mark.parametrize("distil", [False, True], ids=["bce", "bi-encoder-teacher"])
def test_train_reranker_over_hybrid_candidates(
    beir_dir, tiny_encoder_path, tmp_path, capsys, distil
):
    out = tmp_path / "rr"
    teacher = ["--loss", "margin_mse", "--teacher-encoder", tiny_encoder_path] if distil else []
    code = main(
        [
            "train",
            "reranker",
            *teacher,
            "--beir",
            str(beir_dir),
            "--model",
            tiny_encoder_path,
            "--encoder",
            tiny_encoder_path,
            "--negatives",
            "bm25",
            "--rerank-depth",
            "5",
            "--max-steps",
            "2",
            "--train-batch-size",
            "8",
            "--val-fraction",
            "0.25",
            "--promotion-margin",
            "1",  # no reranker can gain a whole nDCG point: the left-out path, deterministically
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "ndcg@10" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["info"]["rerank_depth"] == 5 and results["global_step"] == 2
    assert results["info"]["loss"] == ("MarginMSELoss" if distil else "BinaryCrossEntropyLoss")
    # BM25 finds every query's unique topic word: the hybrid "before" is near perfect
    assert results["before"]["recall@100"] == 1.0 and results["before"]["mrr@10"] > 0.5
    assert results["decision"]["promoted"] is False
    assert "leave it out" in printed
    assert not (out / "final").exists() and (out / "challenger" / "config.json").exists()
    assert results["test"]["after"] == results["test"]["before"]


def test_bad_arguments_exit_with_a_message(beir_dir, tmp_path, capsys):
    # usage errors (exit status 2) when the command line is read, before any data loads
    with pytest.raises(SystemExit) as caught:
        main(
            [
                "train",
                "encoder",
                "--beir",
                str(beir_dir),
                "--negatives",
                "bm25,colbert",
                "--out",
                str(tmp_path),
            ]
        )
    assert caught.value.code == 2 and "unknown source" in capsys.readouterr().err
    code = main(
        [
            "train",
            "reranker",
            "--beir",
            str(beir_dir),
            "--loss",
            "margin_mse",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2 and "teacher" in capsys.readouterr().err
