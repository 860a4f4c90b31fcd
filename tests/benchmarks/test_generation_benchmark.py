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


HEAD = ["--answerability-steps", "2", "--answerability-max-length", "64"]


def test_bench_generation_rows_and_outputs(
    tmp_path, tiny_squad, tiny_causal_lm_path, tiny_encoder_path, capsys
):
    out = tmp_path / "out"
    code = main(
        [
            "bench",
            "generation",
            "--squad",
            str(tiny_squad),
            "--base-model",
            tiny_causal_lm_path,
            "--answerability-model",
            tiny_encoder_path,
            *HEAD,
            "--max-train-examples",
            "4",
            "--max-test-examples",
            "4",
            "--max-steps",
            "1",
            "--top-k",
            "2",
            "--max-new-tokens",
            "4",
            "--generation-batch-size",
            "4",
            "--lora-top-layers",
            "1",
            "--dev-examples",
            "4",
            "--multihop-train-examples",
            "2",
            "--multihop-dev-examples",
            "2",
            "--multihop-test-examples",
            "3",
            "--rows",
            "base,sft,dpo,mined",
            "--mined-samples",
            "3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads((out / "generation-squad_v2.json").read_text())
    # the command that reproduces it, recorded with paths relative to the working directory
    assert result["command"].startswith("ragtune bench generation --squad ")
    assert "--rows base,sft,dpo,mined" in result["command"]
    assert not [part for part in result["command"].split() if part.startswith("/")]
    assert result["config"]["out"] == result["command"].split("--out ")[1].split()[0]
    assert f"Command: `{result['command']}`" in (out / "generation-squad_v2.md").read_text()
    names = ["base", "+ grounded SFT", "+ SFT + DPO"]
    assert list(result["rows"]) == names and list(result["multihop_rows"]) == names
    # the random tiny model's sampled answers all score 0: no pair to mine, the row says why
    assert result["n_mined_pairs"] == 0 and "scored the same" in result["skipped_rows"]["mined"]
    # 4 sampled questions + 2 two-hop questions, each with its gold-removed twin
    assert result["n_train"] == 4 + 4 and result["n_train_multi_source_targets"] == 2
    assert result["n_test"] == 4 and result["n_preference_pairs"] == 8
    assert result["n_multihop_test"] == 6 and result["n_multihop_test_answerable"] == 3
    # Dev questions: training-split questions outside the training sample, + two-hop ones.
    assert result["n_dev"] == 4 + 4 and 0 < result["n_dev_answerable"] < 8
    assert result["answerability_head"]["steps"] == 2
    # each set's policies are fitted on its own dev questions when they hold two of each
    # class: the 4 two-hop ones do; the 4 squad_v2 ones do not, so that set uses all 8
    assert result["dev_by_set"]["multihop"] == {"questions": 4, "answerable": 2}
    assert result["dev_by_set"]["squad_v2"]["questions"] == 8
    n_dev = {"squad_v2": 8, "multihop": 4}
    assert "multihop 4 (2 answerable)" in (out / "generation-squad_v2.md").read_text()
    for set_name, rows in (("squad_v2", result["rows"]), ("multihop", result["multihop_rows"])):
        for name, policies in result["refusal_calibration"][set_name].items():
            assert set(policies) == {"decoder", "answerability", "combined", "none"}
            # the headline is the policy with the best cross-validated balanced accuracy on dev
            headline = rows[name]["refusal_policy"]
            scores = {
                p: policies[p]["calibration"]["cross_validated"]
                for p in ("decoder", "answerability", "combined")
            }
            if headline != "none":
                assert scores[headline] == max(scores.values())
                assert policies[headline]["threshold"] == rows[name]["refusal_threshold"]
            combined = policies["combined"]
            assert combined["calibration"]["n_examples"] == n_dev[set_name]
            # the benchmark's default: one fold split, as the committed results were made
            assert combined["calibration"]["cv_repeats"] == 1
            assert combined["scorer"].endswith("final")
    for rows in (result["rows"], result["multihop_rows"]):
        for name, row in rows.items():
            assert row["tokens_per_second"] > 0
            for key in ("refusal_auc", "refusal_auc_answerability", "refusal_auc_combined"):
                assert row[key] is None or 0.0 <= row[key] <= 1.0
            assert 0.0 <= row["trust_score"] <= 1.0
            assert (row["train_seconds"] is None) == (name == "base")
    for set_name in ("squad_v2", "multihop"):
        for name in names:
            assert set(result["policies"][set_name][name]) == {
                "decoder",
                "answerability",
                "combined",
                "none",
            }
            check = result["post_check"][set_name][name]
            assert set(check) == {"flag", "cite"}
            flag, cite = check["flag"]["uncited_rate"], check["cite"]["uncited_rate"]
            assert flag is None or cite <= flag  # only empty answers stay uncited
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
    assert len(retrieved) == 4 + 4 + 4  # train + test + dev
    for rows, name in zip(answers, ("base", "+ grounded SFT", "+ SFT + DPO"), strict=True):
        for row in rows:
            assert 0.0 <= row["refusal_probability"] <= 1.0
            assert set(row["refusal_signals"]) == {"decoder", "answerability", "combined"}
            assert row["refusal_decision"]["signal"] == result["rows"][name]["refusal_policy"]
    markdown = (out / "generation-squad_v2.md").read_text()
    assert "| + SFT + DPO |" in markdown and "citation precision" in markdown
    assert "Row '+ SFT + DPO (own failures)' skipped" in markdown
    assert "refusal policies fitted per row and set on dev questions drawn like" in markdown
    assert "## Multi-hop (6 contexts, 3 answerable" in markdown
    assert "Citation post-check (multihop, headline policy)" in markdown
    assert "| base |" in capsys.readouterr().out


def test_train_decoder_command(
    tmp_path, tiny_squad, tiny_causal_lm_path, tiny_encoder_path, capsys
):
    out = tmp_path / "decoder"
    code = main(
        [
            "train",
            "decoder",
            "--squad",
            str(tiny_squad),
            "--base-model",
            tiny_causal_lm_path,
            "--answerability-model",
            tiny_encoder_path,
            *HEAD,
            "--out",
            str(out),
            "--dpo",
            "--max-train-examples",
            "4",
            "--max-test-examples",
            "2",
            "--multihop-test-examples",
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
    assert (out / "answerability" / "final").is_dir()
    if not decision["promoted"]:  # a tiny model after 3 steps may not clear the margin
        assert (out / "challenger" / "adapter" / "adapter_config.json").exists()
        assert "Kept the base model" in printed
    else:
        assert (out / "adapter" / "adapter_config.json").exists()
        assert (out / "merged" / "config.json").exists()
        training = json.loads((out / "merged" / "ragtune_training.json").read_text())
        assert training["preference_method"] == "dpo" and training["timings"]["dpo_seconds"] > 0
    assert "| tuned |" in printed and "| base |" in printed and "Multi-hop" in printed
    threshold = json.loads((out / "refusal_threshold.json").read_text())
    assert 0.0 <= threshold["threshold"] <= 1.0 and threshold["objective"] == "balanced_accuracy"
    # ragtune train decoder averages the policy choice over 10 seeded fold splits
    assert threshold["cv_repeats"] == 10 and threshold["cv_spread"] >= 0.0
    assert f"refusal_threshold={threshold['threshold']:.4g}" in printed
    from llama_index_ragtune.llms import load_refusal_policy

    # the policy with the best cross-validated balanced accuracy on the dev questions is saved
    policy = load_refusal_policy(out / "refusal_policy.json", max_length=64)
    assert f"Refusal policy {policy.signal} " in printed
    assert "refusal_policy=load_refusal_policy(" in printed


def test_bench_generation_fixed_threshold_needs_no_dev_questions(
    tmp_path, tiny_squad, tiny_causal_lm_path
):
    out = tmp_path / "out"
    args = ["bench", "generation", "--squad", str(tiny_squad), "--base-model", tiny_causal_lm_path]
    args += ["--rows", "base", "--max-train-examples", "6", "--max-test-examples", "4"]
    args += ["--max-new-tokens", "2", "--refusal-threshold", "0.5", "--out", str(out)]
    args += ["--multihop-test-examples", "0"]
    assert main(args) == 0
    result = json.loads((out / "generation-squad_v2.json").read_text())
    assert result["n_dev"] == 0 and result["rows"]["base"]["refusal_threshold"] == 0.5
    assert result["rows"]["base"]["refusal_policy"] == "decoder"
    assert result["answerability_head"] is None and result["multihop_rows"] == {}
    assert len(json.loads((out / "retrieved-squad_v2-bm25.json").read_text())) == 10


def test_bench_generation_tune_explains_a_dev_set_without_both_kinds(
    tmp_path, tiny_squad, tiny_causal_lm_path
):
    args = ["bench", "generation", "--squad", str(tiny_squad), "--base-model", tiny_causal_lm_path]
    args += ["--rows", "base", "--max-train-examples", "12", "--max-test-examples", "2"]
    args += ["--dev-examples", "5", "--out", str(tmp_path / "out"), "--answerability-minutes", "0"]
    with pytest.raises(ValueError, match="Raise --dev-examples"):
        main(args)  # every training-split question is in the training sample: no dev


def test_bench_generation_grpo_row_trains_with_the_evaluator_reward(
    tmp_path, tiny_squad, tiny_causal_lm_path
):
    out = tmp_path / "out"
    args = ["bench", "generation", "--squad", str(tiny_squad), "--base-model", tiny_causal_lm_path]
    args += ["--rows", "grpo", "--max-train-examples", "4", "--max-test-examples", "2"]
    args += ["--max-steps", "1", "--grpo-steps", "1", "--grpo-generations", "2", "--top-k", "2"]
    args += ["--max-new-tokens", "4", "--refusal-threshold", "0.5", "--lora-top-layers", "1"]
    args += ["--multihop-test-examples", "0", "--multihop-train-examples", "0", "--out", str(out)]
    assert main(args) == 0
    result = json.loads((out / "generation-squad_v2.json").read_text())
    assert list(result["rows"]) == ["+ SFT + GRPO"]
    assert result["rows"]["+ SFT + GRPO"]["train_seconds"] > 0
    assert (out / "work" / "grpo-merged" / "config.json").exists()


def test_grounded_reward_scores_completions_with_the_evaluator():
    from llama_index_ragtune.data.grounded import GroundedContext
    from llama_index_ragtune.data.qa import QAExample
    from llama_index_ragtune.evaluation.rewards import GroundedReward, reward_dataset

    example = QAExample("q", "Capital of Normandy?", ["d2"], ["Rouen"])
    context = GroundedContext(
        qid="q",
        question=example.question,
        source_ids=["d1", "d2"],
        source_texts=["Caen is a city.", "Rouen is the capital of Normandy."],
        gold_numbers=[2],
        answerable=True,
        target="Rouen [2]",
        example=example,
    )
    dataset = reward_dataset([context, context])
    columns = {k: dataset[k] for k in dataset.column_names if k != "prompt"}
    completions = [
        [{"role": "assistant", "content": "Rouen [2]"}],
        [{"role": "assistant", "content": "Caen [1]"}],
    ]
    rewards = GroundedReward()(prompts=dataset["prompt"], completions=completions, **columns)
    assert rewards == [1.0, 0.0]
    with pytest.raises(ValueError, match="reward_dataset"):
        GroundedReward()(prompts=[], completions=[])
