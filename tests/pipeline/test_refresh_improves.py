"""A day of feedback that a refresh measurably improves on; the figures alone decide promotion.

The bundle (v1) serves an encoder nobody tuned: a tiny random BERT (seeded) with
the real MiniLM tokenizer, fused with BM25 over the shipped demo help centres.
Simulated users of both stores ask the labelled questions, see the top 10
pages and open every right one shown (a real SQLite ``FeedbackStore``). The
refresh retrains the encoder from that feedback plus the bundle's own training
questions, never on a question it is judged on, and is compared with v1 on the
same held-out questions; nothing is forced.
"""

from __future__ import annotations

import pytest

from llama_index_ragtune.demo import demo_dir
from llama_index_ragtune.feedback import FeedbackStore
from llama_index_ragtune.finetuning.budget import TrainingBudget
from llama_index_ragtune.pipeline import (
    PipelineConfig,
    TuningPipeline,
    bundle_versions,
    current_version,
    load_bundle,
    load_queries,
    refresh_bundle,
)
from llama_index_ragtune.pipeline.context import metadata_filters

MARGIN = 0.005


@pytest.fixture(scope="module")
def seeded_tiny_encoder(tmp_path_factory, make_tiny_encoder) -> str:
    return make_tiny_encoder(
        tmp_path_factory.mktemp("seeded_encoder"), seed=0, max_positions=512, max_seq_length=128
    )


def test_a_day_of_feedback_gives_a_refresh_that_improves_the_held_out_questions(
    seeded_tiny_encoder, tiny_causal_lm_path, tmp_path
):
    config = PipelineConfig(
        encoder_model=seeded_tiny_encoder,
        decoder_model=tiny_causal_lm_path,
        encoder_budget=TrainingBudget(max_pairs_per_query=4),
        encoder_args={"max_steps": 120, "per_device_train_batch_size": 16, "learning_rate": 5e-4},
        eval_points=0,
        max_val_queries=48,
        max_new_tokens=4,
        max_test_questions=4,
        max_dev_questions=4,
        max_sources=3,
        max_source_chars=300,
        show_progress=False,
    )
    root, shop = demo_dir(), tmp_path / "shop"
    TuningPipeline(
        root / "docs",
        shop,
        queries=root / "queries.jsonl",
        metadata=root / "metadata.json",
        config=config,
        skip=("encoder", "reranker", "decoder"),
    ).run()

    bundle = load_bundle(shop)
    nodes = list(bundle.retriever.index.docstore.docs.values())
    asked = [
        q
        for q in load_queries(root / "queries.jsonl", nodes)
        if q.answerable and q.filters.get("store")
    ]
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    per_store = {
        name: bundle.retriever.with_filters(metadata_filters({"store": name}))
        for name in ("grocery", "electronics")
    }
    for q in asked:
        shown = per_store[q.filters["store"]].retrieve(q.question)[:10]
        record = store.record(
            q.question, retrieved=shown, bundle_version="v1", metadata=dict(q.filters)
        )
        right = [n.node.node_id for n in shown if n.node.node_id in q.gold_node_ids]
        for node_id in right:
            store.click(record, node_id)
        if not right:
            store.rate(record, -1)
    store.close()

    lines: list[str] = []
    result = refresh_bundle(
        shop,
        tmp_path / "feedback.sqlite",
        tmp_path / "r",
        config=config,
        eval_fraction=0.3,
        echo=lines.append,
    )
    gains = {
        name: pair["challenger"]["ndcg@10"] - pair["champion"]["ndcg@10"]
        for name, pair in result.metrics.items()
    }
    assert set(gains) == {"feedback", "earlier"}
    # the refreshed encoder measurably improves the bundle's held-out test questions
    assert gains["earlier"] > MARGIN, result.decision.reason
    # and it is served exactly when it is worse by more than the margin on no held-out set
    # (the feedback side can only label pages v1 showed, so it can vote the refresh down)
    assert not result.decision.forced
    assert result.promoted == (gains["feedback"] >= -MARGIN), result.decision.reason
    assert bundle_versions(shop) == (["v1", "v2"] if result.promoted else ["v1"])
    assert current_version(shop) == ("v2" if result.promoted else "v1")
    # no held-out question was trained on from the other side
    assert any("left out: the same question is held out" in line for line in lines)
