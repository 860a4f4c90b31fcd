"""Hostile inputs to evaluation, second battery: entailment checks that return NaN, reports
with nothing in them, and promotion on a metric whose name says loss.

Each must give an error naming the item, or the right decision: never a silent
"not entailed", a table of zeros, or a worse model promoted.
"""

from __future__ import annotations

import pytest

from llama_index_ragtune.evaluation import GenerationEvaluator, RetrievalReport, compare_reports
from llama_index_ragtune.evaluation.report import QueryResult, reports_table
from llama_index_ragtune.evaluation.results import EvaluationResults
from llama_index_ragtune.evaluation.svg_charts import metric_direction
from llama_index_ragtune.finetuning.promotion import decide_promotion

np = pytest.importorskip("numpy")


# ---------------------------------------------------------------- entailment checks
def _judge(value):
    return GenerationEvaluator(entailment=lambda claim, source: value)


def _nli_row(evaluator):
    return evaluator.evaluate_example(
        "capital of France?",
        "Paris is the capital [1].",
        source_node_ids=["n1"],
        source_texts=["Paris is the capital of France."],
        gold_answers=["Paris"],
        example_id="ex-7",
    )


@pytest.mark.parametrize("value", [float("nan"), np.float32("nan"), float("inf"), None, "yes"])
def test_an_entailment_check_returning_no_verdict_is_an_error_naming_the_example(value):
    # was: NaN >= 0.5 is False, so a broken check silently scored every claim "not
    # entailed" (nli_citation_recall 0.0); None and "yes" raised errors naming nothing
    with pytest.raises(ValueError, match=r"example 'ex-7': the entailment check returned .*"
                       r"'Paris is the capital\.'.*True / False or a finite score"):  # fmt: skip
        _nli_row(_judge(value))


@pytest.mark.parametrize(
    ("value", "entailed"),
    [(True, 1.0), (False, 0.0), (0.7, 1.0), (0.2, 0.0), (np.float32(0.9), 1.0), (np.bool_(1), 1.0)],
)
def test_a_verdict_or_a_finite_score_still_counts(value, entailed):
    row = _nli_row(_judge(value))
    assert (row["nli_citation_precision"], row["nli_citation_recall"]) == (entailed, entailed)


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), None, "0.5", True])
def test_an_entailment_threshold_that_compares_false_with_everything_is_refused(threshold):
    # was: threshold NaN accepted, and every score then read as "not entailed"
    with pytest.raises(ValueError, match="entailment_threshold must be a finite number"):
        GenerationEvaluator(entailment_threshold=threshold)


# ---------------------------------------------------------------- empty reports
def _report(rows, name="tuned"):
    return RetrievalReport(
        rows=rows, k_values=(10,), metrics=("recall",), name=name, skipped=["q8", "q9"]
    )


def test_a_report_without_queries_says_there_is_nothing_to_report():
    empty = _report([], name="empty")
    full = _report([QueryResult("q1", {"recall@10": 1.0}, ["d1"], 2.0)])
    nothing = r"report 'empty' holds no evaluated query \(2 skipped without qrels\): there is"
    # was: recall@10 0.0000 and latency 0.0 ms, as if every query had missed
    for read in (lambda: empty.aggregate, lambda: empty["recall@10"], lambda: empty.latency):
        with pytest.raises(ValueError, match=nothing):
            read()
    assert "0.0000" not in empty.to_markdown() and "nothing to report" in empty.to_markdown()
    with pytest.raises(ValueError, match=nothing):
        compare_reports(empty, full)  # was: "+1.0000" gained over an empty baseline
    table = reports_table({"empty": empty, "tuned": full}, keys=["recall@10"])
    assert "| empty | — | no queries |" in table and "| tuned | 1.000 | 2.0 |" in table
    saved = empty.to_dict()
    assert saved["aggregate"] == {} and saved["num_queries"] == 0
    again = RetrievalReport.from_dict(saved)  # nothing lost: the skipped ids stay
    assert again.skipped == ["q8", "q9"] and len(again) == 0
    assert full["recall@10"] == 1.0 and full.latency["p50_ms"] == 2.0  # unchanged


# ---------------------------------------------------------------- promotion direction
@pytest.mark.parametrize("metric", ["loss", "eval_loss", "val_perplexity", "mean_squared_error"])
def test_a_loss_named_metric_without_a_direction_promotes_only_a_lower_value(metric):
    worse = decide_promotion({metric: 1.0}, {metric: 2.0}, metric)
    # was: greater_is_better=True by default, so a loss that doubled was "promoted"
    assert not worse.promoted and worse.greater_is_better is False
    assert worse.gain == -1.0
    better = decide_promotion({metric: 2.0}, {metric: 1.0}, metric)
    assert better.promoted and "+1.0000" in better.reason


def test_an_explicit_direction_wins_and_ranking_metrics_stay_higher_is_better():
    assert decide_promotion({"loss": 1.0}, {"loss": 2.0}, "loss", greater_is_better=True).promoted
    for metric in ("ndcg@10", "hybrid_ndcg@10", "auc", "hits@10", "glossary_hit", "my_score"):
        decision = decide_promotion({metric: 0.5}, {metric: 0.6}, metric)
        assert decision.promoted and decision.greater_is_better, metric
    for unclear in ("no", None):
        with pytest.raises(TypeError, match="greater_is_better must be True, False .* or 'auto'"):
            decide_promotion({"loss": 1.0}, {"loss": 2.0}, "loss", greater_is_better=unclear)


def test_a_recorded_loss_decision_without_a_direction_reads_lower_as_better():
    assert [metric_direction(m) for m in ("eval_loss", "losses", "lossless_recall")] == [-1, -1, 1]
    results = EvaluationResults("run", "help centre", {"test": 10}, "v1")
    # was: recorded as greater_is_better=True, so the report showed the loss rising as a gain
    decision = results.add_decision("decoder", False, "loss", 1.0, 2.0, 0.005, "kept")
    assert decision.greater_is_better is False and decision.gain == -1.0
    promoted = results.add_promotion("encoder", decide_promotion({"loss": 2}, {"loss": 1}, "loss"))
    assert promoted.greater_is_better is False and promoted.gain == 1.0
    saved = results.to_dict()
    for item in saved["decisions"]:
        del item["greater_is_better"]  # a file written by hand, without the direction
    loaded = EvaluationResults.from_dict(saved)
    assert [d.greater_is_better for d in loaded.decisions] == [False, False]
    assert [d.gain for d in loaded.decisions] == [-1.0, 1.0]
