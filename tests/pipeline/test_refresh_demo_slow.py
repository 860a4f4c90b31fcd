"""A day of feedback on the demo help centres, then `refresh` and `rollback` (tiny models, minutes).

The bundle is tuned on the shipped demo corpus with tiny random models; simulated
users ask its labelled questions through ``FeedbackQueryEngine`` (a real SQLite
``FeedbackStore``), open the gold source when they see it and rate the answer.
"""

from __future__ import annotations

import json
import random

import pytest

from llama_index_ragtune.demo import demo_dir
from llama_index_ragtune.feedback import FeedbackQueryEngine, FeedbackStore
from llama_index_ragtune.finetuning.budget import TrainingBudget
from llama_index_ragtune.pipeline import (
    PipelineConfig,
    TuningPipeline,
    bundle_versions,
    current_version,
    load_bundle,
    load_queries,
    read_history,
    refresh_bundle,
    rollback_bundle,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory, make_config_module):
    """The demo corpus tuned with tiny models: bundle v1 with a (forced) tuned encoder."""
    root = demo_dir()
    out = tmp_path_factory.mktemp("shop")
    TuningPipeline(
        root / "docs",
        out,
        queries=root / "queries.jsonl",
        metadata=root / "metadata.json",
        config=make_config_module(force_promotion=("encoder",)),
        skip=("reranker", "decoder"),
    ).run()
    return out


@pytest.fixture(scope="module")
def make_config_module(tiny_encoder_path, tiny_causal_lm_path):
    """``conftest.fast_config``'s settings, for module-scoped fixtures."""
    steps = {"max_steps": 1, "save_steps": 1, "logging_steps": 1}

    def make(**overrides):
        settings = {
            "encoder_model": tiny_encoder_path,
            "decoder_model": tiny_causal_lm_path,
            "encoder_budget": TrainingBudget(max_pairs_per_query=2),
            "reranker_budget": TrainingBudget(max_pairs_per_query=2),
            "decoder_budget": TrainingBudget(max_pairs=4),
            "encoder_args": dict(steps, per_device_train_batch_size=4),
            "reranker_args": dict(steps, per_device_train_batch_size=4),
            "decoder_args": dict(
                steps, per_device_train_batch_size=2, gradient_accumulation_steps=1
            ),
            "eval_points": 0,
            "max_val_queries": 8,
            "rerank_candidates": 6,
            "max_sources": 2,
            "max_source_chars": 200,
            "max_new_tokens": 6,
            "max_test_questions": 4,
            "max_dev_questions": 6,
            "show_progress": False,
            **overrides,
        }
        return PipelineConfig(**settings)

    return make


def simulate_day(bundle_out, db_path, n_questions=80, seed=0):
    """Users of both stores ask labelled questions; each opens the gold source when it is
    shown and rates the answer up when it cites the gold, down when no gold was shown."""
    bundle = load_bundle(bundle_out)
    nodes = list(bundle.retriever.index.docstore.docs.values())
    questions = [
        q
        for q in load_queries(demo_dir() / "queries.jsonl", nodes)
        if q.answerable and q.filters.get("store")
    ]
    questions = random.Random(seed).sample(questions, min(n_questions, len(questions)))
    store = FeedbackStore(db_path)
    engines = {
        name: FeedbackQueryEngine(
            bundle.as_query_engine(filters={"store": name}),
            store,
            bundle_version=bundle.version,
            metadata={"store": name},
        )
        for name in ("grocery", "electronics")
    }
    events = {"up": 0, "down": 0, "click": 0}
    for q in questions:
        response = engines[q.filters["store"]].query(q.question)
        fid = response.metadata["feedback_id"]
        shown = [n.node.node_id for n in response.source_nodes]
        gold = [d for d in shown if d in q.gold_node_ids]
        if gold:
            store.click(fid, gold[0])
            events["click"] += 1
            if set(response.metadata["cited_node_ids"]) & set(gold):
                store.rate(fid, +1)
                events["up"] += 1
        else:
            store.rate(fid, -1)
            events["down"] += 1
    store.close()
    return events


@pytest.fixture(scope="module")
def feedback_db(demo_bundle, tmp_path_factory):
    db = tmp_path_factory.mktemp("feedback") / "feedback.sqlite"
    events = simulate_day(demo_bundle, db)
    assert events["click"] > 0 and events["down"] > 0
    return db


def test_a_refresh_that_does_not_win_keeps_the_bundle_and_records_why(
    demo_bundle, feedback_db, tmp_path
):
    before = bundle_versions(demo_bundle)
    lines: list[str] = []
    result = refresh_bundle(
        demo_bundle, feedback_db, tmp_path / "r", margin=1.0, eval_fraction=0.3, echo=lines.append
    )
    assert not result.promoted and result.served_version == current_version(demo_bundle)
    assert bundle_versions(demo_bundle) == before
    assert "kept bundle" in result.decision.reason and "held-out feedback" in result.decision.reason
    assert result.questions["feedback_train"] > 0 and result.questions["feedback_test"] > 0
    assert result.questions["earlier_train"] > 0  # the bundle's own labelled questions
    champion = result.metrics["feedback"]["champion"]
    assert set(champion) == {"ndcg@10", "recall@10", "mrr@10"}
    # both sides measured on the same held-out questions, the champion being the bundle as served
    assert 0.0 <= champion["ndcg@10"] <= 1.0
    record = json.loads((tmp_path / "r" / "refresh.json").read_text())
    assert record["promoted"] is False and record["served"] == result.champion_version
    history = read_history(demo_bundle)
    assert history[-1]["action"] == "refresh" and history[-1]["promoted"] is False
    assert any("[refresh] decision" in line for line in lines)


def test_a_promoted_refresh_writes_the_next_version_and_rollback_restores_the_previous(
    demo_bundle, feedback_db, tmp_path
):
    old = current_version(demo_bundle)
    result = refresh_bundle(demo_bundle, feedback_db, tmp_path / "r", force=True, eval_fraction=0.3)
    assert result.promoted and result.decision.forced
    assert result.served_version == current_version(demo_bundle) != old
    bundle = load_bundle(demo_bundle)  # verifies every file of the new version
    manifest = bundle.manifest
    assert manifest["parent"] == old and manifest["refresh"]["champion"] == old
    assert manifest["data"]["queries"]["source"] == "feedback"
    # the encoder is the refreshed one or the previous version's, carried into the new folder
    assert manifest["models"]["encoder"]["path"] == "encoder"
    assert (bundle.path / "encoder" / "modules.json").is_file()
    assert (bundle.path / "report" / "report.html").is_file()
    response = bundle.as_query_engine(filters={"store": "grocery"}).query("apple return policy?")
    assert {n.node.metadata["store"] for n in response.source_nodes} == {"grocery"}

    assert rollback_bundle(demo_bundle) == old
    assert load_bundle(demo_bundle).version == old
    assert read_history(demo_bundle)[-1] == {
        **read_history(demo_bundle)[-1],
        "action": "rollback",
        "from": result.served_version,
        "served": old,
    }
    assert rollback_bundle(demo_bundle, to=result.served_version) == result.served_version
