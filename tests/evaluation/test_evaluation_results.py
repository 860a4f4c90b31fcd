"""The evaluation JSON: builders, round trip, validation naming the bad field, atomic save."""

import json
import math

import pytest
from dashboard_fixture import sample_results

from llama_index_ragtune.evaluation.generation_report import GenerationReport
from llama_index_ragtune.evaluation.reliability import (
    expected_calibration_error,
    reliability_bins,
)
from llama_index_ragtune.evaluation.report import QueryResult, RetrievalReport
from llama_index_ragtune.evaluation.results import (
    FORMAT,
    EvaluationFileError,
    EvaluationResults,
    SystemResult,
)


def _minimal() -> dict:
    return {
        "format": FORMAT,
        "format_version": 1,
        "title": "t",
        "created": "2026-11-25T10:00:00Z",
        "bundle_version": "v1",
        "dataset": {"name": "d", "queries": {"test": 2}},
    }


def test_builders_save_and_load_round_trip(tmp_path):
    results = sample_results()
    results.title = 'JSON-looking text stays as written: "latency_ms": [1,\n 2]'
    path = results.save(tmp_path / "bundle" / "evaluation.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "ragtune-evaluation" and data["format_version"] == 1
    assert [s["stage"] for s in data["retrieval"]] == ["before", "before", "after"]
    assert set(data["generation"][1]["refusal"]) == {"probabilities", "should_refuse", "threshold"}
    loaded = EvaluationResults.load(path)
    assert loaded == results
    assert loaded.to_dict() == results.to_dict()
    assert [p.name for p in path.parent.iterdir()] == ["evaluation.json"]  # no temp file left


def test_minimal_file_loads_with_empty_sections():
    results = EvaluationResults.from_dict(_minimal())
    assert results.retrieval == results.generation == results.decisions == []
    assert results.timings == {} and results.notes is None
    assert results.queries == {"test": 2}


def test_timed_adds_wall_time_per_step():
    results = EvaluationResults(title="t", dataset_name="d", queries={}, bundle_version="v1")
    for _ in range(2):
        with results.timed("evaluate"):
            sum(range(10000))
    assert set(results.timings) == {"evaluate"} and results.timings["evaluate"] > 0


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (lambda d: d.update(format="other"), "format", "expected 'ragtune-evaluation'"),
        (lambda d: d.update(format_version=2), "format_version", "reads version 1"),
        (lambda d: d.pop("title"), "title", "missing"),
        (lambda d: d.update(created="yesterday"), "created", "ISO 8601"),
        (lambda d: d.update(retreival=[]), "retreival", "unknown field"),
        (lambda d: d["dataset"]["queries"].update(test=-1), "dataset.queries.test", ">= 0"),
        (
            lambda d: d.update(retrieval=[{"name": "bm25", "stage": "before", "metrics": []}]),
            "retrieval[0].metrics",
            "expected a JSON object",
        ),
        (
            lambda d: d.update(
                retrieval=[{"name": "b", "stage": "x", "metrics": {"ndcg@10": "0.5"}}]
            ),
            "retrieval[0].metrics.ndcg@10",
            "finite number or null",
        ),
        (
            lambda d: d.update(
                reranking=[{"name": "r", "stage": "x", "metrics": {}, "latency_ms": [3, -1]}]
            ),
            "reranking[0].latency_ms[1]",
            ">= 0",
        ),
        (
            lambda d: d.update(
                retrieval=[{"name": "b", "stage": "x", "metrics": {}, "refusal": None}]
            ),
            "retrieval[0].refusal",
            "unknown field",
        ),
        (
            lambda d: d.update(
                generation=[
                    {
                        "name": "g",
                        "stage": "after",
                        "metrics": {},
                        "refusal": {"probabilities": [0.2, 0.9], "should_refuse": [0]},
                    }
                ]
            ),
            "generation[0].refusal.should_refuse",
            "1 entries for 2 probabilities",
        ),
        (
            lambda d: d.update(
                generation=[
                    {
                        "name": "g",
                        "stage": "after",
                        "metrics": {},
                        "refusal": {"probabilities": [0.2], "should_refuse": [2]},
                    }
                ]
            ),
            "generation[0].refusal.should_refuse[0]",
            "expected 0 or 1",
        ),
        (
            lambda d: d.update(
                decisions=[
                    {
                        "part": "tokenizer",
                        "promoted": True,
                        "metric": "m",
                        "champion": 0.1,
                        "challenger": 0.2,
                        "margin": 0,
                        "reason": "",
                    }
                ]
            ),
            "decisions[0].part",
            "expected one of",
        ),
        (
            lambda d: d.update(
                decisions=[
                    {
                        "part": "encoder",
                        "promoted": "yes",
                        "metric": "m",
                        "champion": 0.1,
                        "challenger": 0.2,
                        "margin": 0,
                        "reason": "",
                    }
                ]
            ),
            "decisions[0].promoted",
            "true or false",
        ),
        (lambda d: d.update(timings={"tune": None}), "timings.tune", "finite number"),
    ],
)
def test_bad_fields_are_named(tmp_path, edit, field, message):
    data = _minimal()
    edit(data)
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(EvaluationFileError) as info:
        EvaluationResults.load(path)
    assert info.value.field == field
    assert str(path) in str(info.value) and f"field '{field}'" in str(info.value)
    assert message in str(info.value)


def test_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(EvaluationFileError, match="missing.json: no such file"):
        EvaluationResults.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": ', encoding="utf-8")
    with pytest.raises(EvaluationFileError, match=r"broken.json: not valid JSON \(line 1"):
        EvaluationResults.load(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[]", encoding="utf-8")
    with pytest.raises(EvaluationFileError, match="expected a JSON object at the top level"):
        EvaluationResults.load(listed)


def test_hostile_json_is_an_evaluation_file_error_and_a_bom_is_accepted(tmp_path):
    path = tmp_path / "evaluation.json"
    text = sample_results().to_json()
    for hostile, message in [
        (text.replace('"metrics": {', '"metrics": {"k": 1, "k": 2, ', 1), "'k' appears twice"),
        (text.replace('"metrics": {', '"metrics": {"k": ' + "9" * 5000 + ", ", 1), "digits"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ]:
        path.write_text(hostile, encoding="utf-8")
        with pytest.raises(
            EvaluationFileError, match=rf"evaluation\.json: not valid JSON .*{message}"
        ):
            EvaluationResults.load(path)
    path.write_text("\ufeff" + text, encoding="utf-8")
    assert EvaluationResults.load(path).to_json() == text


def test_invalid_results_are_not_saved_and_the_old_file_survives(tmp_path):
    path = sample_results().save(tmp_path / "evaluation.json")
    before = path.read_text(encoding="utf-8")
    results = sample_results()
    results.generation[0].latency_ms[3] = math.nan
    with pytest.raises(EvaluationFileError, match=r"generation\[0\].latency_ms\[3\]"):
        results.save(path)
    assert path.read_text(encoding="utf-8") == before
    assert [p.name for p in tmp_path.iterdir()] == ["evaluation.json"]


def test_add_generation_needs_probabilities_and_flags_together():
    results = EvaluationResults(title="t", dataset_name="d", queries={}, bundle_version="v1")
    with pytest.raises(ValueError, match="together"):
        results.add_generation("g", "after", {}, refusal_probabilities=[0.3])


def test_from_retrieval_report_takes_means_and_latencies():
    report = RetrievalReport(
        rows=[
            QueryResult("q1", {"ndcg@10": 1.0, "recall@10": 1.0, "mrr@10": 1.0}, ["d1"], 2.0),
            QueryResult("q2", {"ndcg@10": 0.5, "recall@10": 1.0, "mrr@10": 0.5}, ["d9"], 6.0),
        ],
        k_values=(10,),
        metrics=("ndcg", "recall", "mrr"),
        name="hybrid",
    )
    system = SystemResult.from_retrieval_report(report, "after")
    assert system.name == "hybrid" and system.stage == "after"
    assert system.metrics == {"ndcg@10": 0.75, "recall@10": 1.0, "mrr@10": 0.75}
    assert system.latency_ms == [2.0, 6.0]
    with pytest.raises(ValueError, match=r"has no \['ndcg@5'\]"):
        SystemResult.from_retrieval_report(report, "after", metrics=("ndcg@5",))


def test_from_generation_report_takes_rates_latencies_and_refusal_scores():
    rows = [
        {"answerable": True, "refused": False, "uncited": False, "f1": 1.0, "latency_s": 0.8},
        {"answerable": True, "refused": True, "uncited": False, "f1": 0.0, "latency_s": 1.2},
        {"answerable": False, "refused": True, "uncited": False, "f1": None, "latency_s": 0.5},
        {"answerable": False, "refused": False, "uncited": True, "f1": None, "latency_s": 2.0},
    ]
    for row, p in zip(rows, (0.1, 0.6, 0.9, 0.3), strict=True):
        row["refusal_probability"] = p
    report = GenerationReport(rows=rows, metric_keys=("f1",), name="tuned")
    system = SystemResult.from_generation_report(report, "after", refusal_threshold=0.5)
    assert system.metrics["refusal_rate"] == 0.5 and system.metrics["answer_rate"] == 0.5
    assert system.metrics["f1"] == 0.5 and system.metrics["refusal_f1"] == 0.5
    assert "n_examples" not in system.metrics  # counts are not metrics
    assert system.latency_ms == pytest.approx([800.0, 1200.0, 500.0, 2000.0])
    assert system.refusal.should_refuse == [0, 0, 1, 1]
    assert system.refusal.threshold == 0.5 and system.refusal.refusal_rate == 0.5
    results = EvaluationResults(title="t", dataset_name="d", queries={}, bundle_version="v1")
    results.generation.append(system)
    results.validate()


def test_reliability_bins_and_calibration_error():
    probabilities = [0.05, 0.15, 0.12, 0.85, 0.95, 1.0]
    should_refuse = [0, 0, 1, 1, 1, 0]
    bins = reliability_bins(probabilities, should_refuse, n_bins=10)
    counts = [b.count for b in bins]
    assert counts == [1, 2, 0, 0, 0, 0, 0, 0, 1, 2]  # 1.0 falls in the last bin
    assert bins[1].mean_probability == pytest.approx(0.135) and bins[1].refuse_share == 0.5
    assert bins[2].mean_probability is None and bins[2].refuse_share is None
    expected = (1 * 0.05 + 2 * abs(0.135 - 0.5) + 1 * abs(0.85 - 1) + 2 * abs(0.975 - 0.5)) / 6
    assert expected_calibration_error(probabilities, should_refuse) == pytest.approx(expected)
    assert expected_calibration_error([], []) is None
    with pytest.raises(ValueError, match="outside"):
        reliability_bins([1.5], [1])


def test_decisions_keep_missing_values_loss_direction_and_forced_promotions(tmp_path):
    from llama_index_ragtune.evaluation.dashboard import render_html
    from llama_index_ragtune.evaluation.dashboard_markdown import render_markdown

    results = EvaluationResults(title="t", dataset_name="d", queries={}, bundle_version="v1")
    unchecked = results.add_decision(
        "decoder", False, "loss", None, None, 0.0, "no validation split", greater_is_better=False
    )
    loss = results.add_decision(
        "reranker", True, "loss", 0.50, 0.40, 0.01, "lower loss", greater_is_better=False
    )
    forced = results.add_decision(
        "encoder", True, "ndcg@10", 0.7, 0.69, 0.005, "forced", forced=True
    )
    assert unchecked.gain is None and loss.gain == pytest.approx(0.10)
    assert forced.gain == pytest.approx(-0.01)
    loaded = EvaluationResults.load(results.save(tmp_path / "evaluation.json"))
    assert loaded.decisions == results.decisions
    md = render_markdown(loaded)
    assert "| decoder | kept champion | loss (lower is better) | — | — | — | 0.000 |" in md
    assert "| reranker | promoted | loss (lower is better) | 0.500 | 0.400 | +0.100 |" in md
    assert "| encoder | promoted (forced) | ndcg@10 | 0.700 | 0.690 | -0.010 |" in md
    assert "promoted (forced)" in render_html(loaded)


def test_add_promotion_records_the_engine_contract_decision():
    promotion = pytest.importorskip("llama_index_ragtune.finetuning.promotion")
    results = EvaluationResults(title="t", dataset_name="d", queries={}, bundle_version="v1")
    decision = promotion.decide_promotion({"ndcg@10": 0.30}, {"ndcg@10": 0.35}, metric="ndcg@10")
    recorded = results.add_promotion("encoder", decision)
    assert recorded.promoted and recorded.champion == 0.30 and recorded.challenger == 0.35
    assert recorded.reason == decision.reason and recorded.gain == pytest.approx(decision.gain)
    results.validate()
