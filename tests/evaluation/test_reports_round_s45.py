"""Round s45: a megabyte string in the evaluation JSON, and colliding metric names of a
sentence-transformers evaluator handed to the encoder engine.

Real pages (Chromium measures one when installed), a real sentence-transformers
``InformationRetrievalEvaluator`` over the tiny test encoder.
"""

from __future__ import annotations

import re

import pytest
from headless_chromium import chromium, data_attribute, measured_dom  # tests/evaluation

from llama_index_ragtune.evaluation.dashboard import (
    MAX_SHOWN_CHARS,
    MAX_SHOWN_NOTE_CHARS,
    render_html,
    write_report,
)
from llama_index_ragtune.evaluation.results import EvaluationResults
from llama_index_ragtune.finetuning.encoder_evaluation import EncoderEvaluationMixin

BIG = "y" * 1_000_000


def _results(name: str = "hybrid", stage: str = "after", title: str = "t", notes: str = ""):
    results = EvaluationResults(
        title=title, dataset_name="d", queries={"test": 2}, bundle_version="v1", notes=notes
    )
    results.add_retrieval("BM25", "before", {"ndcg@10": 0.4}, latency_ms=[1.0, 2.0])
    results.add_retrieval(name, stage, {"ndcg@10": 0.5}, latency_ms=[1.0, 3.0])
    results.add_generation(
        name,
        stage,
        {"answer_rate": 0.5},
        latency_ms=[1.0, 2.0],
        refusal_probabilities=[0.2, 0.9],
        should_refuse=[0, 1],
        refusal_threshold=0.5,
        refusal_policy=BIG if name == BIG else None,
    )
    results.add_decision("encoder", True, "ndcg@10", 0.4, 0.5, 0.0, BIG if name == BIG else "ok")
    return results


def _longest_run(page: str) -> int:
    return max((len(m.group()) for m in re.finditer("y+", page)), default=0)


# ---------------------------------------------------------------- a megabyte string


def test_megabyte_names_stage_title_and_policy_are_cut_on_the_page_not_in_the_json(tmp_path):
    results = _results(name=BIG, stage=BIG, title=BIG)
    paths = write_report(results, tmp_path / "report")
    page = paths.html.read_text(encoding="utf-8")
    # was 8 full copies of the name (tables, captions, chart tooltips): 31 MB, 2.2 Mpx tall
    assert len(page) < 200_000
    assert _longest_run(page) <= MAX_SHOWN_NOTE_CHARS  # the decision's reason: prose cap
    assert f"… ({len(BIG) - MAX_SHOWN_CHARS:,} more characters in the evaluation JSON)" in page
    again = EvaluationResults.load(results.save(tmp_path / "copy.json"))
    assert again.retrieval[1].name == BIG and again.title == BIG  # nothing lost


def test_strings_up_to_the_caps_are_shown_whole_as_before():
    name, notes = "n" * MAX_SHOWN_CHARS, "word " * (MAX_SHOWN_NOTE_CHARS // 5)
    page = render_html(_results(name=name, notes=notes.strip()))
    assert "more characters in the evaluation JSON" not in page
    assert name in page and notes.strip() in page
    page = render_html(_results(name=name + "n"))
    assert "… (1 more characters in the evaluation JSON)" in page


def _page_height(browser: str, page: str, folder) -> int:
    measure = (
        "<script>addEventListener('load',()=>{document.body.dataset.m=JSON.stringify("
        "{h:document.documentElement.scrollHeight,"
        "w:document.documentElement.scrollWidth-innerWidth})})</script>"
    )
    measured = data_attribute(measured_dom(browser, page, folder, measure, timeout=120)[0], "m")
    assert measured["w"] <= 2, measured  # no sideways scrolling
    return measured["h"]


def test_a_megabyte_name_keeps_the_page_a_few_screens_tall_in_headless_chromium(tmp_path):
    browser = chromium()
    ordinary = _page_height(browser, render_html(_results()), tmp_path / "a")
    hostile = _page_height(browser, render_html(_results(name=BIG, title=BIG)), tmp_path / "b")
    assert hostile < ordinary + 30_000, (ordinary, hostile)  # was 2,208,155 px


# ---------------------------------------------------------------- colliding metric names


class _Engine(EncoderEvaluationMixin):
    """The engine's evaluation steps over a model and a user evaluator (no training)."""

    decision_metric = None

    def __init__(self, model, evaluator):
        self.model, self._user_evaluator = model, evaluator


class _TwoScores:
    """A user evaluator shaped like sentence-transformers' with two score functions."""

    def __init__(self, primary):
        self.primary_metric = primary

    def __call__(self, model):
        return {"val_cosine_ndcg@10": 0.7, "val_dot_ndcg@10": 0.2, "val_cosine_mrr@10": 0.6}


@pytest.mark.parametrize(
    ("primary", "ndcg"), [("val_cosine_ndcg@10", 0.7), ("val_dot_ndcg@10", 0.2)]
)
def test_colliding_names_take_the_evaluators_primary_score_function(primary, ndcg):
    evaluator = _TwoScores(primary)
    engine = _Engine(None, evaluator)
    after = engine._evaluate(evaluator)  # was 0.2 whatever the primary: the last key won
    assert after["ndcg@10"] == ndcg
    assert after["val_cosine_ndcg@10"] == 0.7 and after["val_dot_ndcg@10"] == 0.2  # kept
    assert after["mrr@10"] == 0.6  # no collision: as before
    assert after[engine._decision_metric(evaluator, after)] == ndcg


def test_colliding_names_without_a_primary_metric_are_refused_naming_both():
    evaluator = _TwoScores(None)
    with pytest.raises(ValueError, match="'val_cosine_ndcg@10', 'val_dot_ndcg@10'.*'ndcg@10'"):
        _Engine(None, evaluator)._evaluate(evaluator)


def test_a_real_information_retrieval_evaluator_with_two_score_functions(tiny_encoder_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim, dot_score

    model = SentenceTransformer(tiny_encoder_path, device="cpu")
    corpus = {f"d{i}": f"passage {i} about topic {i % 3}" for i in range(6)}
    queries = {"q1": "topic 1", "q2": "topic 2"}
    relevant = {"q1": {"d1", "d4"}, "q2": {"d2"}}
    single = InformationRetrievalEvaluator(queries, corpus, relevant, name="val")
    raw = single(model)
    # one score function: keys lose their prefix exactly as before
    assert _Engine(model, single)._evaluate(single) == {
        key.rsplit("_", 1)[-1] if "@" in key else key: value for key, value in raw.items()
    }
    both = InformationRetrievalEvaluator(
        queries,
        corpus,
        relevant,
        name="val",
        score_functions={"cosine": cos_sim, "dot": dot_score},
        main_score_function="dot",
    )
    raw = both(model)
    assert both.primary_metric == "val_dot_ndcg@10"
    after = _Engine(model, both)._evaluate(both)
    assert after["ndcg@10"] == pytest.approx(raw["val_dot_ndcg@10"])
    assert after["val_cosine_ndcg@10"] == pytest.approx(raw["val_cosine_ndcg@10"])
