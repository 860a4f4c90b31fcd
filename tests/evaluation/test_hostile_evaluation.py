"""Hostile inputs to the metrics, the generation evaluator, refusal calibration and the
report: a right number or an error naming the item, never a raw traceback, a NaN / inf
in the report, or a silently wrong figure."""

from __future__ import annotations

import copy
import math
import re

import pytest
from dashboard_fixture import sample_results

from llama_index_ragtune.evaluation import GenerationEvaluator
from llama_index_ragtune.evaluation.dashboard import render_html
from llama_index_ragtune.evaluation.dashboard_markdown import render_markdown
from llama_index_ragtune.evaluation.metrics import compute_metrics, ndcg_at_k, recall_at_k
from llama_index_ragtune.evaluation.refusal_calibration import (
    choose_refusal_threshold,
    decision_scores,
    refusal_auc,
)
from llama_index_ragtune.evaluation.reliability import expected_calibration_error
from llama_index_ragtune.evaluation.results import EvaluationFileError, EvaluationResults
from llama_index_ragtune.evaluation.retrieval import _as_grades
from llama_index_ragtune.evaluation.svg_charts import Series, latency_boxes, timing_bars

NUMBER_NOT_FINITE = re.compile(r"(?<![\w-])[+-]?(nan|inf)(?![\w-])", re.IGNORECASE)


# ---------------------------------------------------------------- retrieval metrics
@pytest.mark.parametrize("k", [0, -1, True, 2.5, float("nan")])
def test_a_bad_k_is_an_error_for_every_metric_even_without_relevant_documents(k):
    with pytest.raises((TypeError, ValueError), match="k must be a positive integer"):
        recall_at_k(["d1"], {}, k)  # returned 0.0 for k=-1 (no relevant document)
    with pytest.raises((TypeError, ValueError), match="k must be a positive integer"):
        ndcg_at_k(["d1"], {"d1": 1}, k)  # 2.5: "slice indices must be integers"


@pytest.mark.parametrize(
    ("grade", "error"), [(float("inf"), ValueError), (float("nan"), ValueError), ("1", TypeError)]
)
def test_a_grade_that_is_not_a_finite_number_names_the_document(grade, error):
    with pytest.raises(error, match="'d2'"):  # inf made nDCG NaN; NaN read as not relevant
        compute_metrics(["d2"], {"d2": grade, "d1": 1}, k_values=(1,))


def test_a_set_of_relevant_ids_counts_like_grade_one_and_strings_are_refused():
    graded = compute_metrics(["d2", "d9"], {"d2": 1, "d1": 1}, k_values=(1, 2))
    assert compute_metrics(["d2", "d9"], {"d1", "d2"}, k_values=(1, 2)) == graded
    assert compute_metrics(["d2", "d9"], ["d1", "d2"], k_values=(1, 2)) == graded
    with pytest.raises(TypeError, match="ranked"):
        compute_metrics("d2", {"d2": 1}, k_values=(1,))  # was scored letter by letter
    with pytest.raises(TypeError, match="metrics"):
        compute_metrics(["d2"], {"d2": 1}, k_values=(1,), metrics="ndcg")


@pytest.mark.parametrize("grade", [0.5, float("nan"), "high", None])
def test_evaluator_qrels_grades_that_are_not_whole_numbers_name_query_and_document(grade):
    with pytest.raises(ValueError, match=r"query 'q1'.*'d1'"):
        _as_grades("q1", {"d1": grade})  # 0.5 became grade 0 (not relevant), silently
    assert _as_grades("q1", {"d1": 2.0, "d2": "1", "d3": 0}) == {"d1": 2, "d2": 1, "d3": 0}


# ---------------------------------------------------------------- generation evaluator
def _example(**changes):
    example = dict(
        question="Capital of France?",
        answer_text="Paris [1].",
        source_node_ids=["n1", "n2"],
        gold_node_ids=["n1"],
        gold_answers=["Paris"],
        answerable=True,
        example_id="e7",
    )
    return {**example, **changes}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"answerable": "false"}, "answerable"),  # bool("false") is True: scored as answerable
        ({"gold_answers": "Paris"}, "gold_answers"),  # F1 against the letters: 0.0
        ({"gold_node_ids": "n1"}, "gold_node_ids"),  # recall against {"n", "1"}: 0.0
        ({"source_node_ids": "n1n2"}, "source_node_ids"),
        ({"answer_text": None}, "answer_text"),  # was a raw TypeError
        ({"answer_text": b"Paris [1]."}, "answer_text"),  # was a raw AttributeError
    ],
)
def test_wrong_example_types_are_type_errors_naming_the_example(changes, field):
    with pytest.raises(TypeError, match=rf"example 'e7': {field}"):
        GenerationEvaluator().evaluate([_example(**changes)], show_progress=False)


def test_one_example_dict_instead_of_a_list_says_to_wrap_it():
    with pytest.raises(TypeError, match=r"pass \[example\]"):
        GenerationEvaluator().evaluate(_example(), show_progress=False)


@pytest.mark.parametrize("value", [float("nan"), None, {"score": float("inf")}])
def test_a_custom_answer_metric_returning_no_finite_number_names_the_example(value):
    evaluator = GenerationEvaluator(answer_metric=lambda prediction, gold: value)
    with pytest.raises(ValueError, match="example 'e7'.*finite number"):
        evaluator.evaluate([_example()], show_progress=False)  # NaN reached the mean


def test_edge_reports_stay_defined_one_row_all_refused_and_no_unanswerable():
    refusal = "Insufficient information in the provided sources."
    evaluator = GenerationEvaluator()
    agg = evaluator.evaluate(
        [_example(answer_text=refusal), _example(answer_text="", example_id="e8")],
        show_progress=False,
    ).aggregate
    assert agg["refusal_rate"] == 0.5 and agg["empty_rate"] == 0.5 and agg["answer_rate"] == 0.0
    assert agg["refusal_recall"] is None and agg["refusal_f1"] is None  # no unanswerable one
    assert agg["over_refusal_rate"] == 0.5 and agg["trust_score"] == 0.0
    for value in agg.values():
        assert value is None or math.isfinite(value)


# ---------------------------------------------------------------- refusal calibration
def test_refusal_labels_given_as_strings_are_type_errors_not_truthy():
    with pytest.raises(TypeError, match=r"answerable\[0\]"):
        choose_refusal_threshold([0.9, 0.1], ["false", "true"])  # said "2 answerable"
    with pytest.raises(TypeError, match=r"refused\[0\]"):
        decision_scores(["no", "no"], [True, False])  # "no" counted as a refusal
    with pytest.raises(TypeError, match=r"should_refuse\[0\]"):
        expected_calibration_error([0.5, 0.2], ["0", "1"])  # "0" counted as should-refuse
    with pytest.raises(TypeError, match="probability 0"):
        refusal_auc(["0.9", 0.1], [False, True])  # was a bare "'<=' not supported"


# ---------------------------------------------------------------- evaluation JSON, report
def _data():
    return sample_results().to_dict()


def _no_non_finite_numbers(results: EvaluationResults) -> None:
    for text in (render_html(results), render_markdown(results)):
        assert not NUMBER_NOT_FINITE.search(text)


def test_differences_that_overflow_show_no_inf():
    data = _data()
    # an unbounded (custom) metric: an nDCG of 1e308 is refused as out of [0, 1]
    data["retrieval"][1]["metrics"]["custom_score"] = 1e308  # "hybrid" before
    data["retrieval"][2]["metrics"]["custom_score"] = -1e308  # "hybrid" after: Δ was -inf
    data["decisions"][0].update(metric="custom_score", champion=-1e308, challenger=1e308)
    results = EvaluationResults.from_dict(data)
    assert results.decisions[0].gain is None
    _no_non_finite_numbers(results)


def test_a_rate_outside_zero_one_is_named_when_loaded():
    data = _data()
    data["generation"][1]["metrics"]["answer_rate"] = 1.5  # the report showed -50.0% refused
    data["generation"][1]["metrics"].pop("refusal_rate", None)
    with pytest.raises(EvaluationFileError) as caught:
        EvaluationResults.from_dict(data)
    assert caught.value.field == "generation[1].metrics.answer_rate"
    assert "in [0, 1]" in str(caught.value)


@pytest.mark.parametrize(
    "latencies",
    [[5e-324, 100.0], [1.7e308, 1.0], [1e-300, 1e300], [0.0, 0.0]],
)
def test_latency_box_plots_of_extreme_values_have_finite_geometry(latencies):
    svg = latency_boxes([Series("s", "#2563eb", latencies)], "t")  # 5e-324: math domain error
    assert not re.search(r'="[^"]*(nan|inf)[^"]*"', svg.lower())
    assert svg.count('class="grid"') <= 30  # 1e-300..1e300 drew 1,800 grid lines


def test_step_timings_that_sum_past_the_largest_float_render():
    svg = timing_bars({"a": 1e308, "b": 1e308}, "t")  # was OverflowError (round(inf))
    assert not re.search(r'="[^"]*(nan|inf)[^"]*"', svg.lower())
    data = _data()
    data["timings"] = {"a": 1e308, "b": 1e308}
    _no_non_finite_numbers(EvaluationResults.from_dict(data))


def test_ten_thousand_systems_find_their_baselines_in_one_pass(monkeypatch):
    from llama_index_ragtune.evaluation import report_summary

    results = EvaluationResults(
        title="t", dataset_name="d", queries={"test": 2}, bundle_version="v"
    )
    n = 10_000
    for i in range(n):
        stage = "before" if i % 2 else "after"
        results.add_retrieval(f"s{i}", stage, {"ndcg@10": 0.5}, [1.0, 2.0])
    calls = 0
    is_baseline = report_summary.is_baseline

    def counting(system):
        nonlocal calls
        calls += 1
        return is_baseline(system)

    monkeypatch.setattr(report_summary, "is_baseline", counting)
    # 9 s before: every tuned system searched all systems for its baseline (n² / 2 checks)
    markdown = render_markdown(results)
    assert calls <= 4 * n, f"{calls} baseline checks for {n} systems"
    assert all(f"s{i} ({'before' if i % 2 else 'after'})" in markdown for i in range(n))
    # no baseline of the same name: every tuned system is compared with the first baseline
    assert report_summary.reference_indices(results.retrieval)[:5] == [1, None, 1, None, 1]


def test_hostile_strings_stay_text_in_both_reports():
    data = copy.deepcopy(_data())
    hostile = "</script><!-- \u2028\u2029 \u202e </svg></style>]]>"
    data["retrieval"][0]["name"] = hostile
    data["title"] = "</title><!--"
    results = EvaluationResults.from_dict(data)
    html = render_html(results)
    assert "</script>" not in html and "<!--" not in html and "</title><!--" not in html
    assert html.count("</svg>") == html.count("<svg")
    assert "</script>" not in render_markdown(results)


def test_add_generation_refuses_flags_given_as_strings():
    results = EvaluationResults(title="t", dataset_name="d", queries={}, bundle_version="v")
    with pytest.raises(TypeError, match=r"should_refuse\[0\]"):
        # int(bool("0")) stored 1: a question to answer counted as one to refuse
        results.add_generation(
            "g", "after", {}, refusal_probabilities=[0.1, 0.9], should_refuse=["0", "1"]
        )


@pytest.mark.parametrize("seconds", [float("nan"), -1.0, "0.5"])
def test_from_generation_report_names_the_example_with_a_bad_latency(seconds):
    from llama_index_ragtune.evaluation.system_result import SystemResult

    report = GenerationEvaluator().evaluate([_example()], show_progress=False)
    report.rows[0]["latency_s"] = seconds
    with pytest.raises(ValueError, match="example 'e7' has latency_s"):
        SystemResult.from_generation_report(report, "after")  # failed later, at save
