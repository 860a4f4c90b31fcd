"""``ragtune bench generation`` and ``ragtune train decoder`` end to end on a tiny model and a tiny SQuAD file."""

from __future__ import annotations

import json

import pytest

from llama_index_ragtune.cli import main


@pytest.fixture
def tiny_squad(tmp_path):
    data = []
    for a in range(6):
        paragraphs = []
        for p in range(3):
            context = f"Topic{a} part {p} is described here. Its founder was Person{a}{p}. It lies near River{a}{p}."
            paragraphs.append(
                {
                    "context": context,
                    "qas": [
                        {
                            "id": f"q{a}{p}a",
                            "question": f"Who founded Topic{a} part {p}?",
                            "is_impossible": False,
                            "answers": [
                                {
                                    "text": f"Person{a}{p}",
                                    "answer_start": context.index(f"Person{a}{p}"),
                                }
                            ],
                        },
                        {
                            "id": f"q{a}{p}u",
                            "question": f"When did Topic{a} part {p} end?",
                            "is_impossible": True,
                            "answers": [],
                        },
                    ],
                }
            )
        data.append({"title": f"Topic{a}", "paragraphs": paragraphs})
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "v2.0", "data": data}))
    return path


def test_bench_generation_rows_and_outputs(tmp_path, tiny_squad, tiny_causal_lm_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "bench",
            "generation",
            "--squad",
            str(tiny_squad),
            "--base-model",
            tiny_causal_lm_path,
            "--max-train-examples",
            "6",
            "--max-test-examples",
            "4",
            "--max-steps",
            "1",
            "--top-k",
            "2",
            "--max-new-tokens",
            "4",
            "--batch-size",
            "4",
            "--lora-top-layers",
            "1",
            "--dev-examples",
            "6",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads((out / "generation-squad_v2.json").read_text())
    assert list(result["rows"]) == ["base", "+ grounded SFT", "+ SFT + DPO"]
    assert result["n_train"] == 6 and result["n_test"] == 4 and result["n_preference_pairs"] == 6
    # Dev questions: training-split questions outside the training sample (2 train articles).
    assert result["n_dev"] == 6 and 0 < result["n_dev_answerable"] < 6
    for name, choice in result["refusal_calibration"].items():
        assert choice["threshold"] == result["rows"][name]["refusal_threshold"]
        assert choice["n_examples"] == 6 and 0.0 <= choice["score"] <= 1.0
    for name, row in result["rows"].items():
        assert set(row) == {
            "citation_precision",
            "citation_recall",
            "answer",
            "refusal_f1",
            "over_refusal_rate",
            "refusal_auc",
            "refusal_threshold",
            "train_seconds",
            "tokens_per_second",
        }
        assert row["tokens_per_second"] > 0
        # The default calibrated refusal scores every answer's refusal, with a
        # threshold chosen per row on the dev questions.
        assert row["refusal_auc"] is None or 0.0 <= row["refusal_auc"] <= 1.0
        assert 0.0 <= row["refusal_threshold"] <= 1.0
        assert (row["train_seconds"] is None) == (name == "base")
    assert (
        result["rows"]["+ SFT + DPO"]["train_seconds"]
        > result["rows"]["+ grounded SFT"]["train_seconds"]
    )
    # Every row answered over the same cached sources.
    retrieved = json.loads((out / "retrieved-squad_v2-bm25.json").read_text())
    answers = [
        json.loads((out / f"answers-squad_v2-{slug}.json").read_text())["rows"]
        for slug in ("base", "grounded-SFT", "SFT-DPO")
    ]
    assert [r["id"] for r in answers[0]] == [r["id"] for r in answers[2]]
    assert len(retrieved) == 6 + 4 + 6  # train + test + dev
    for rows in answers:
        assert all(0.0 <= r["refusal_probability"] <= 1.0 for r in rows)
    markdown = (out / "generation-squad_v2.md").read_text()
    assert "| + SFT + DPO |" in markdown and "citation precision" in markdown
    assert "refusal threshold chosen per row on 6 dev questions" in markdown
    assert "| base |" in capsys.readouterr().out


def test_train_decoder_command(tmp_path, tiny_squad, tiny_causal_lm_path, capsys):
    out = tmp_path / "decoder"
    code = main(
        [
            "train",
            "decoder",
            "--squad",
            str(tiny_squad),
            "--base-model",
            tiny_causal_lm_path,
            "--output",
            str(out),
            "--dpo",
            "--max-examples",
            "4",
            "--max-test-examples",
            "2",
            "--max-steps",
            "3",
            "--top-k",
            "2",
            "--max-new-tokens",
            "4",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    decision = json.loads((out / "decision.json").read_text())["decision"]
    assert decision["metric"] == "loss" and "validation" in printed
    if not decision["promoted"]:  # a tiny model after 3 steps may not clear the margin
        assert (out / "challenger" / "adapter" / "adapter_config.json").exists()
        assert "Kept the base model" in printed
        return
    assert (out / "adapter" / "adapter_config.json").exists()
    assert (out / "merged" / "config.json").exists()
    assert "| tuned |" in printed and "| base |" in printed
    threshold = json.loads((out / "refusal_threshold.json").read_text())
    assert 0.0 <= threshold["threshold"] <= 1.0 and threshold["objective"] == "macro_f1"
    assert f"refusal_threshold={threshold['threshold']:.4g}" in printed
    training = json.loads((out / "merged" / "ragtune_training.json").read_text())
    assert training["preference_method"] == "dpo" and training["timings"]["dpo_seconds"] > 0


def test_bench_generation_fixed_threshold_needs_no_dev_questions(
    tmp_path, tiny_squad, tiny_causal_lm_path
):
    out = tmp_path / "out"
    args = ["bench", "generation", "--squad", str(tiny_squad), "--base-model", tiny_causal_lm_path]
    args += ["--rows", "base", "--max-train-examples", "6", "--max-test-examples", "4"]
    args += ["--max-new-tokens", "2", "--refusal-threshold", "0.5", "--out", str(out)]
    assert main(args) == 0
    result = json.loads((out / "generation-squad_v2.json").read_text())
    assert result["n_dev"] == 0 and result["rows"]["base"]["refusal_threshold"] == 0.5
    assert len(json.loads((out / "retrieved-squad_v2-bm25.json").read_text())) == 10


def test_bench_generation_tune_explains_a_dev_set_without_both_kinds(
    tmp_path, tiny_squad, tiny_causal_lm_path
):
    args = ["bench", "generation", "--squad", str(tiny_squad), "--base-model", tiny_causal_lm_path]
    args += ["--rows", "base", "--max-train-examples", "12", "--max-test-examples", "2"]
    args += ["--dev-examples", "5", "--out", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="Raise --dev-examples"):
        main(args)  # every training-split question is in the training sample: no dev
