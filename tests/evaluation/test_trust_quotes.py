"""GenerationEvaluator: multi-source citation recall, quote checks, per-signal AUC, trust score."""

from __future__ import annotations

import pytest

from llama_index_ragtune.evaluation import GenerationEvaluator
from llama_index_ragtune.evaluation.trust import trust_score
from llama_index_ragtune.grounding import DEFAULT_REFUSAL

SOURCES = ["Warsaw's stock exchange opened in 1817.", "It re-opened in April 1991.", "Zoo."]
IDS = ["bridge", "answer", "zoo"]


def example(answer: str, **overrides):
    kwargs = dict(
        question="When was Warsaw's stock exchange re-established?",
        answer_text=answer,
        source_node_ids=IDS,
        gold_node_ids=["bridge", "answer"],
        gold_answers=["April 1991"],
        source_texts=SOURCES,
    )
    kwargs.update(overrides)
    return kwargs


def test_both_gold_sources_cited_versus_one():
    evaluator = GenerationEvaluator()
    both = evaluator.evaluate_example(**example('April 1991 [1][2]: "re-opened in April 1991"'))
    one = evaluator.evaluate_example(**example("April 1991 [2]."))
    assert (both["citation_hit"], both["citation_all"], both["citation_recall"]) == (1.0, 1.0, 1.0)
    assert (one["citation_hit"], one["citation_all"], one["citation_recall"]) == (1.0, 0.0, 0.5)
    refused = evaluator.evaluate_example(**example(DEFAULT_REFUSAL, answerable=False))
    assert refused["citation_all"] is None and refused["quote_valid"] is None


def test_quotes_are_verified_against_the_cited_source():
    evaluator = GenerationEvaluator()
    good = evaluator.evaluate_example(**example('April 1991 [2]: "It re-opened in April 1991."'))
    wrong = evaluator.evaluate_example(**example('April 1991 [3]: "It re-opened in April 1991."'))
    made_up = evaluator.evaluate_example(**example('1991 [2]: "it was rebuilt by the mayor"'))
    none = evaluator.evaluate_example(**example("April 1991 [2]."))
    assert good["quote_valid"] == 1.0 and good["quote_checks"][0]["match"] == "exact"
    assert wrong["quote_valid"] == 0.0  # the quote is real, but not in the source it cites
    assert made_up["quote_valid"] == 0.0 and none["quote_valid"] is None
    report = evaluator.evaluate(
        [
            example('April 1991 [2]: "It re-opened in April 1991."'),
            example('1991 [2]: "it was rebuilt by the mayor"'),
        ],
        show_progress=False,
    )
    assert report["quote_valid"] == 0.5
    strict = GenerationEvaluator(quote_threshold=1.0)
    typo = strict.evaluate_example(**example('1991 [2]: "It re-opend in April 1991"'))
    assert typo["quote_valid"] == 0.0
    assert (
        GenerationEvaluator().evaluate_example(**example('1991 [2]: "It re-opend in April 1991"'))[
            "quote_valid"
        ]
        == 1.0
    )  # fuzzy match at the default 0.9
    with pytest.raises(ValueError, match="quote_threshold"):
        GenerationEvaluator(quote_threshold=0)


def test_report_has_auc_per_signal_and_the_trust_score():
    evaluator = GenerationEvaluator()
    rows = [
        example("April 1991 [1][2].", refusal_probability=None),
        example(DEFAULT_REFUSAL, answerable=False),
        example("April 1991 [3].", answerable=False),
        example(DEFAULT_REFUSAL),
    ]
    for row in rows:
        row.pop("refusal_probability", None)
    report = evaluator.evaluate(rows, show_progress=False)
    signals = [
        {"decoder": 0.1, "answerability": 0.2},  # answerable
        {"decoder": 0.9, "answerability": 0.8},  # unanswerable
        {"decoder": 0.2, "answerability": 0.7},  # unanswerable
        {"decoder": 0.3, "answerability": 0.1},  # answerable
    ]
    for row, values in zip(report.rows, signals, strict=True):
        row["refusal_signals"] = values
    agg = report.aggregate
    assert agg["refusal_auc_decoder"] == 0.75 and agg["refusal_auc_answerability"] == 1.0
    # refusal: TP 1, FP 1, FN 1 -> refuse F1 0.5, answer F1 0.5; answers: 1 correct of 2 answered,
    # of 2 answerable -> 0.5; citations: precision mean 1.0 (one cited answerable), recall 0.5
    assert agg["trust_refusal"] == pytest.approx(0.5)
    assert agg["trust_answer"] == pytest.approx(0.5)
    assert agg["trust_citation"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert agg["trust_score"] == pytest.approx((0.5 + 0.5 + 2 / 3) / 3)


def test_trust_score_edges():
    perfect = [
        {
            "answerable": True,
            "refused": False,
            "answer_score": 1.0,
            "citation_precision": 1.0,
            "citation_recall": 1.0,
        },
        {"answerable": False, "refused": True},
    ]
    assert trust_score(perfect)["trust_score"] == 1.0
    refuse_all = [  # what the evaluator writes when everything is refused
        {"answerable": True, "refused": True, "answer_score": 0.0, "citation_recall": 0.0},
        {"answerable": False, "refused": True},
    ]
    scores = trust_score(refuse_all)
    assert scores["trust_refusal"] == pytest.approx(1 / 3)  # (2/3 + 0) / 2
    assert scores["trust_answer"] == 0.0 and scores["trust_citation"] == 0.0
    only_unanswerable = trust_score([{"answerable": False, "refused": True}])
    assert only_unanswerable == {
        "trust_score": None,
        "trust_refusal": None,
        "trust_answer": None,
        "trust_citation": None,
    }
