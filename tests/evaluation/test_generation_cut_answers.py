"""``GenerationEvaluator`` reads an answer cut by the token limit as serving does.

Was: the evaluator rescored ``metadata["raw_answer"]`` without the finish reason, so a
citation made only in the unfinished last sentence (which ``CitationQueryEngine`` does not
count) was scored as a correct citation, and no report said how many answers were cut.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llama_index_ragtune.evaluation import GenerationEvaluator
from llama_index_ragtune.query_engine import CitationQueryEngine
from tests.query_engine.test_citation import ListRetriever
from tests.query_engine.test_prompt_window_and_cut_answers import (
    PATHS,
    WindowedLLM,
    long_sources,
    run,
)

CUT = "Fact 1 is here [1]. Fact 2 is [2] the fi"  # [2] only in the unfinished sentence
GOLD = {"gold_node_ids": ["doc-1"], "gold_answers": ["Fact 2"]}


def _engine(answer: str, raw) -> CitationQueryEngine:
    llm = WindowedLLM(answer=answer, calls=[], finish_raw=raw)
    return CitationQueryEngine(ListRetriever(long_sources(3, 2)), llm=llm)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "raw",
    [
        {"finish_reason": "length"},  # LocalChatLLM
        SimpleNamespace(choices=[SimpleNamespace(finish_reason="length")]),  # OpenAI object
        {"stop_reason": "max_tokens"},  # Anthropic
    ],
)
def test_a_citation_only_the_cut_sentence_makes_is_scored_as_served(raw, path):
    _, response = run(_engine(CUT, raw), "q?", path)
    row = GenerationEvaluator().evaluate_response(response, **GOLD)
    assert row["cited_node_ids"] == response.metadata["cited_node_ids"] == ["doc-0"]
    assert row["citation_precision"] == 0.0 and row["citation_recall"] == 0.0
    assert row["citation_hit"] == 0.0 and row["cited"] == [1]
    assert row["truncated"] is True and row["cut_claim"] == response.metadata["cut_claim"]
    assert row["answer"] == CUT  # the model's whole text is kept and scored for its answer


def test_an_answer_cited_only_in_its_cut_sentence_is_uncited():
    response = _engine("Fact 2 is [2] the fi", {"finish_reason": "length"}).query("q?")
    row = GenerationEvaluator().evaluate_response(response, **GOLD)
    assert response.metadata["uncited"] is True
    assert row["uncited"] is True and row["cited_node_ids"] == [] and row["citation_valid"] is None
    assert row["citation_precision"] is None and row["citation_recall"] == 0.0


@pytest.mark.parametrize("raw", [None, {"finish_reason": "stop"}])
def test_a_whole_or_unreported_answer_keeps_every_citation(raw):
    response = _engine("Fact 2 is [2] the fi", raw).query("q?")
    row = GenerationEvaluator().evaluate_response(response, **GOLD)
    assert row["cited_node_ids"] == ["doc-1"] and row["citation_recall"] == 1.0
    assert row["truncated"] is False and row["cut_claim"] is None


def test_a_cut_right_after_a_whole_sentence_keeps_its_citations():
    row = GenerationEvaluator().evaluate_example(
        "q", "Fact 1 [1]. Fact 2 [2].", ["doc-0", "doc-1"], ["doc-1"], finish_reason="length"
    )
    assert row["truncated"] is True and row["cut_claim"] is None
    assert row["cited_node_ids"] == ["doc-0", "doc-1"] and row["citation_recall"] == 1.0


def test_the_report_counts_truncated_answers():
    evaluator = GenerationEvaluator()
    examples = [
        {"response": _engine(CUT, {"finish_reason": "length"}).query("q?"), **GOLD},
        {"response": _engine("Fact 2 [2].", {"finish_reason": "stop"}).query("q?"), **GOLD},
        {"response": _engine("Fact 2 [2].", None).query("q?"), **GOLD},
        {"response": _engine("Fact 2 [2].", {"finish_reason": "stop"}).query("q?"), **GOLD},
    ]
    report = evaluator.evaluate(examples, show_progress=False)
    assert report["truncated_rate"] == 0.25
    assert report["citation_recall"] == 0.75  # the cut answer's [2] is not a citation
    assert "truncated_rate" in report.to_markdown()
    # no finish reason anywhere: unknown, not 0
    plain = evaluator.evaluate(
        [dict(question="q", answer_text="a [1].", source_node_ids=["n1"])], show_progress=False
    )
    assert plain["truncated_rate"] is None


def test_nli_citation_metrics_leave_out_the_cut_sentences_own_citations():
    judged = []

    def entail(claim, text):
        judged.append(claim)
        return True

    evaluator = GenerationEvaluator(entailment=entail)
    row = evaluator.evaluate_example(
        "q",
        CUT,
        ["doc-0", "doc-1"],
        ["doc-0"],
        source_texts=["Fact 1 is here.", "Fact 2 is there."],
        finish_reason="length",
    )
    assert row["nli_citation_precision"] == 1.0 and row["nli_citation_recall"] == 1.0
    assert all("Fact 2" not in claim for claim in judged)


def test_a_finish_reason_that_is_not_a_string_is_a_clear_error():
    with pytest.raises(TypeError, match=r"example 'ex-1': finish_reason must be .*'length'"):
        GenerationEvaluator().evaluate_example(
            "q", "a [1].", ["n1"], example_id="ex-1", finish_reason={"finish_reason": "length"}
        )


def test_an_async_stream_is_scored_once_read_and_a_clear_error_before():
    """Was: AttributeError ("'coroutine' object has no attribute 'source_nodes'")."""
    import asyncio

    engine = _engine(CUT, {"finish_reason": "length"})
    engine.streaming = True
    unread = asyncio.run(engine.aquery("q?"))
    with pytest.raises(TypeError, match="AsyncStreamingResponse whose stream was not read"):
        GenerationEvaluator().evaluate_response(unread, **GOLD)
    _, response = run(engine, "q?", "astream")
    row = GenerationEvaluator().evaluate_response(response, **GOLD)
    assert row["answer"] == CUT and row["truncated"] is True
