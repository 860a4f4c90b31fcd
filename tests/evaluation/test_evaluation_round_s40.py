"""Hostile-input battery (round s40) on evaluation: shares out of [0, 1] in evaluation
files and builders (an nDCG of 1.7, a recall of -0.2, a rate in percent), metrics over
generators, ids of two types, huge grades and queries with no relevant document, custom
answer metrics returning NaN, refusal combinations fed NaN, NaN latencies in reports and
charts."""

import json
import math
import re
import warnings

import pytest
from dashboard_fixture import sample_results
from llama_index.core.schema import NodeWithScore, TextNode

from llama_index_ragtune.cli import main
from llama_index_ragtune.evaluation import GenerationEvaluator, RetrievalEvaluator
from llama_index_ragtune.evaluation.dashboard import write_report
from llama_index_ragtune.evaluation.metrics import compute_metrics, mean_metrics, ndcg_at_k
from llama_index_ragtune.evaluation.refusal_calibration import (
    RefusalCombination,
    fit_refusal_combination,
)
from llama_index_ragtune.evaluation.report import QueryResult, RetrievalReport
from llama_index_ragtune.evaluation.results import EvaluationFileError, EvaluationResults
from llama_index_ragtune.evaluation.svg_charts import (
    Series,
    latency_boxes,
    metric_bars,
    percentile,
    timing_bars,
)

NOT_FINITE_ATTRIBUTE = re.compile(r'="[^"]*(nan|inf)[^"]*"', re.I)


# ---------------------------------------------------------------------- shares in [0, 1]
@pytest.mark.parametrize(
    ("section", "index", "metric", "value", "hint"),
    [
        ("retrieval", 1, "ndcg@10", 1.7, "given in percent? divide by 100"),
        ("retrieval", 2, "recall@10", -0.2, "a negative share"),
        ("generation", 1, "answer_f1", 73.0, "given in percent? divide by 100 (0.73)"),
        ("generation", 0, "refusal_rate", 20.0, "given in percent? divide by 100 (0.2)"),
    ],
)
def test_a_share_out_of_zero_one_is_refused_naming_file_system_and_metric(
    tmp_path, capsys, section, index, metric, value, hint
):
    data = sample_results().to_dict()
    system = data[section][index]
    system["metrics"][metric] = value
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(data), "utf-8")
    with pytest.raises(EvaluationFileError) as caught:
        EvaluationResults.load(path)
    message = str(caught.value)
    assert caught.value.field == f"{section}[{index}].metrics.{metric}"
    assert f"system {system['name']!r} ({system['stage']})" in message
    assert f"{metric} is {value!r}, not in [0, 1]" in message and hint in message
    assert message.startswith(str(path))
    assert main(["report", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and hint in err
    assert not (tmp_path / "r").exists()


def test_custom_metrics_latencies_and_counts_keep_any_value_but_a_share_does_not(tmp_path):
    data = sample_results().to_dict()
    data["retrieval"][1]["metrics"].update(
        {"custom_bleu": 37.5, "p50_ms": 812.0, "n_queries": 40.0, "ndcg_gain": -3.0}
    )
    results = EvaluationResults.from_dict(data)
    assert results.retrieval[1].metrics["custom_bleu"] == 37.5
    write_report(results, tmp_path / "report")  # renders
    data["retrieval"][1]["metrics"]["hybrid_mrr@10"] = 1.25
    with pytest.raises(EvaluationFileError, match=r"hybrid_mrr@10 is 1\.25, not in \[0, 1\]"):
        EvaluationResults.from_dict(data)


def test_a_decision_on_a_share_refuses_a_value_in_percent():
    data = sample_results().to_dict()
    decision = next(d for d in data["decisions"] if d["metric"] == "ndcg@10")
    decision["challenger"] = 70.0
    with pytest.raises(EvaluationFileError) as caught:
        EvaluationResults.from_dict(data)
    assert caught.value.field.endswith(".challenger")
    assert "the challenger's ndcg@10 is 70.0" in str(caught.value)
    assert "divide by 100 (0.7)" in str(caught.value)


@pytest.mark.parametrize(
    ("key", "index", "value"), [("threshold", None, 42.0), ("probabilities", 3, 73.0)]
)
def test_a_refusal_threshold_or_probability_in_percent_says_so(key, index, value):
    data = sample_results().to_dict()
    refusal = next(s["refusal"] for s in data["generation"] if "refusal" in s)
    if index is None:
        refusal[key] = value
    else:
        refusal[key][index] = value
    with pytest.raises(EvaluationFileError, match=r"given in percent\? divide by 100 \(0\.\d+\)"):
        EvaluationResults.from_dict(data)


def test_builders_refuse_a_share_out_of_range_when_it_is_added():
    results = sample_results()
    before = len(results.retrieval)
    with pytest.raises(ValueError, match=r"add_retrieval\('bm25', 'after'\): ndcg@10 is 73\.0"):
        results.add_retrieval("bm25", "after", {"ndcg@10": 73.0})
    assert len(results.retrieval) == before  # nothing half added
    with pytest.raises(ValueError, match=r"add_generation\('g', 'after'\): citation_recall"):
        results.add_generation("g", "after", {"citation_recall": -0.2})
    with pytest.raises(ValueError, match=r"add_decision\('encoder'\): the champion's recall@10"):
        results.add_decision("encoder", True, "recall@10", 61.0, 0.7, 0.005, "r")
    results.add_generation("g", "after", {"custom_bleu": 37.5, "answer_f1": 0.61})  # fine
    results.validate()


def test_which_metrics_are_shares():
    from llama_index_ragtune.evaluation.metric_bounds import bounded_range

    shares = [
        "ndcg@10", "hybrid_ndcg@10", "recall@100", "mrr@10", "map@10", "hit@1",
        "precision@5", "answer_f1", "refusal_f1", "citation_precision", "refusal_auc_decoder",
        "label_accuracy", "exact_match", "answer_rate", "right_store_citation_rate", "ece",
        "citation_valid", "quote_valid",
    ]  # fmt: skip
    free = [
        "custom_bleu", "custom_recall", "answer_score", "p50_ms", "latency", "n_examples",
        "refusal_tp", "loss", "perplexity", "ndcg_gain", "recall_delta", "answer_rate_pct",
        "tokens_per_s", "glossary",
    ]  # fmt: skip
    assert [m for m in shares if bounded_range(m) != (0.0, 1.0)] == []
    assert [m for m in free if bounded_range(m) is not None] == []


# ---------------------------------------------------------------------- retrieval metrics
def test_compute_metrics_reads_a_generator_of_ids_or_of_qrels_once():
    expected = compute_metrics(["a", "b"], {"a": 1}, (1, 10))
    assert compute_metrics(iter(["a", "b"]), {"a": 1}, (1, 10)) == expected
    assert compute_metrics(["a", "b"], (d for d in ["a"]), (1, 10)) == expected
    assert expected["recall@10"] == 1.0  # every metric saw the ids (later ones scored 0)


@pytest.mark.parametrize(("ranked", "qrels"), [([1, 2], {"1": 1}), (["7"], {7: 2})])
def test_ids_of_two_types_with_the_same_text_are_named(ranked, qrels):
    with pytest.raises(TypeError, match=r"same text but never equal: give both as strings"):
        compute_metrics(ranked, qrels, (10,))
    with pytest.raises(TypeError, match=r"in ranked and .* in qrels"):
        ndcg_at_k(ranked, qrels, 10)
    assert compute_metrics([1, 2], {1: 1}, (10,))["recall@10"] == 1.0  # one type: fine


def test_grades_at_the_edges_of_floats():
    with pytest.raises(ValueError, match=r"grade of 'a' must be finite, got an integer of about"):
        ndcg_at_k(["a"], {"a": 10**400}, 10)  # was a bare OverflowError
    huge = ndcg_at_k(["c", "b", "a"], {"a": 1e308, "b": 1e308, "c": 1e308}, 10)
    assert huge == pytest.approx(1.0)  # was NaN (inf / inf)
    assert ndcg_at_k(["x", "a"], {"a": 1e308, "b": 1e308}, 10) == pytest.approx(
        ndcg_at_k(["x", "a"], {"a": 1, "b": 1}, 10)
    )


def test_mean_metrics_and_unhashable_ids_name_what_is_wrong():
    with pytest.raises(ValueError, match=r"query 'q2' has no \['ndcg@10'\]"):
        mean_metrics({"q1": {"ndcg@10": 1.0}, "q2": {"recall@10": 1.0}})  # was KeyError
    with pytest.raises(TypeError, match=r"document ids must be strings, got list \['a'\]"):
        compute_metrics([["a"]], {"a": 1}, (3,))


class _Retriever:
    def __init__(self, ids):
        self.ids = ids

    def retrieve(self, bundle):
        return [NodeWithScore(node=TextNode(id_=str(i), text="t"), score=1.0) for i in self.ids]


def test_evaluator_reads_integer_doc_ids_as_the_qrels_text():
    evaluator = RetrievalEvaluator(
        _Retriever(["7"]), k_values=(1,), doc_id_fn=lambda node: int(node.node.node_id)
    )
    report = evaluator.evaluate({"q": "x"}, {"q": {"7": 1}}, show_progress=False)
    assert report["recall@1"] == 1.0  # was 0.0: 7 != "7"


def test_evaluator_warns_about_queries_with_no_relevant_document():
    evaluator = RetrievalEvaluator(_Retriever(["1"]), k_values=(1,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = evaluator.evaluate(
            {"q1": "x", "q2": "y", "q3": "z"},
            {"q1": {"1": 1}, "q2": {"1": 0}, "q3": {}},
            show_progress=False,
        )
    messages = [str(w.message) for w in caught]
    assert any(
        "2 of 3 queries have no relevant document" in m and "'q2', 'q3'" in m for m in messages
    )
    assert report["recall@1"] == pytest.approx(1 / 3)  # the numbers are unchanged


@pytest.mark.parametrize("grade", [10**400, "9" * 5000, 10**7])
def test_evaluator_names_a_grade_no_judgement_has(grade):
    evaluator = RetrievalEvaluator(_Retriever(["1"]), k_values=(1,))
    with pytest.raises(ValueError, match=r"qrels for query 'q': the grade of '1' must be a whole"):
        evaluator.evaluate({"q": "x"}, {"q": {"1": grade}}, show_progress=False)


# ---------------------------------------------------------------------- generation
def test_a_custom_metric_returning_nan_or_text_is_named_and_none_is_undefined():
    example = dict(question="q", answer_text="a [1]", source_node_ids=["n1"], gold_answers=["a"])
    for bad in (float("nan"), "x", float("inf")):
        evaluator = GenerationEvaluator(answer_metric=lambda a, g, v=bad: {"score": 1, "bleu": v})
        with pytest.raises(ValueError, match=r"for custom_bleu; each value of its dict"):
            evaluator.evaluate([example], show_progress=False)
    values = iter([None, 0.5])
    evaluator = GenerationEvaluator(answer_metric=lambda a, g: {"score": 1.0, "bleu": next(values)})
    report = evaluator.evaluate([example, dict(example)], show_progress=False)
    assert report["custom_bleu"] == 0.5  # None was a TypeError; it is left out of the mean


# ---------------------------------------------------------------------- refusal
def test_a_refusal_combination_refuses_nan_and_out_of_range_signals():
    with pytest.raises(ValueError, match=r"signal 'd'\[0\] is nan, not a number in \[0, 1\]"):
        fit_refusal_combination({"d": [math.nan, 0.2]}, [True, False])  # weights were NaN
    with pytest.raises(TypeError, match=r"answerable\[0\] must be True or False"):
        fit_refusal_combination({"d": [0.9, 0.2]}, ["no", "yes"])
    with pytest.raises(ValueError, match=r"l2 must be a finite number"):
        fit_refusal_combination({"d": [0.9, 0.2]}, [False, True], l2=math.nan)
    combo = fit_refusal_combination({"d": [0.9, 0.2]}, [False, True])
    with pytest.raises(ValueError, match=r"signal 'd' is nan"):
        combo.probability({"d": math.nan})  # was 0.0: never refuse
    with pytest.raises(ValueError, match=r"signal 'd' is 5"):
        combo.probability({"d": 5})
    assert 0.0 <= combo.probability({"d": 1.0 + 1e-9}) <= 1.0  # rounding is fine


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scales": [0.0]}, r"scales\[0\] is 0\.0"),  # was ZeroDivisionError
        ({"weights": [math.nan]}, r"weights\[0\] must be a finite number"),  # was 0.0 always
        ({"signals": ["d", "e"]}, r"weights must hold one number per signal \(2\)"),
    ],
)
def test_a_stored_refusal_combination_is_checked_when_read(change, message):
    data = {"signals": ["d"], "weights": [1.0], "intercept": 0.0, "means": [0.0], "scales": [1.0]}
    with pytest.raises(ValueError, match=message):
        RefusalCombination.from_dict({**data, **change})


# ---------------------------------------------------------------------- latencies, charts
def test_a_report_with_unknown_latencies_has_the_same_percentiles_in_any_order():
    seen = set()
    for latencies in (
        [math.nan, 1.0, 2.0, 3.0],
        [3.0, math.nan, 1.0, 2.0],
        [1.0, 2.0, 3.0, math.nan],
    ):
        rows = [QueryResult(str(i), {"ndcg@1": 1.0}, [], v) for i, v in enumerate(latencies)]
        report = RetrievalReport(rows, k_values=(1,), metrics=("ndcg",))
        seen.add(tuple(report.latency.values()))
    assert seen == {(2.0, 2.9, 2.0)}  # were NaN or 1.5 / 2.5 depending on the order


def test_charts_never_draw_nan_geometry():
    with pytest.raises(ValueError, match=r"latency_boxes: series 'a': value 1 is nan"):
        latency_boxes([Series("a", "#2563eb", [1.0, math.nan, 3.0])], "t")
    with pytest.raises(ValueError, match=r"series 'a': value 0 is -5\.0; expected a number >= 0"):
        latency_boxes([Series("a", "#2563eb", [-5.0, 1.0])], "t")
    with pytest.raises(ValueError, match=r"timing_bars: step 'parse': value 0 is nan"):
        timing_bars({"parse": math.nan}, "t")
    with pytest.raises(ValueError, match=r"percentile: value 0 is nan"):
        percentile([math.nan, 1.0, 2.0], 50)  # was 1.0, or NaN in another order
    svg = metric_bars([Series("a", "#2563eb", {"m": math.nan})], ["m"], title="t")
    assert not NOT_FINITE_ATTRIBUTE.search(svg) and "n/a" in svg
