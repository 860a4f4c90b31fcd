"""Feedback judges only the pages users saw: a refresh scores rankings on those alone."""

from __future__ import annotations

import pytest
from llama_index.core.schema import NodeWithScore, TextNode

from llama_index_ragtune.feedback import FeedbackStore
from llama_index_ragtune.pipeline.queries import LabelledQuery
from llama_index_ragtune.pipeline.refresh_data import feedback_split
from llama_index_ragtune.pipeline.refresh_eval import score


def _rank(order):
    return lambda q: list(order)


def test_unjudged_pages_neither_help_nor_hurt_a_ranking():
    q = LabelledQuery(id="q", question="apple return policy?", gold_node_ids=["gold"])
    judged = LabelledQuery(**{**q.to_dict(), "judged_node_ids": ["gold", "seen"]})
    # a refreshed encoder lifts two pages nobody was shown above the right one
    lifts_unseen = _rank(["new-1", "new-2", "gold", "seen"])
    shown_order = _rank(["gold", "seen", "new-1", "new-2"])
    demotes_gold = _rank(["new-1", "seen", "gold"])

    full, _ = score(lifts_unseen, [q])
    assert full["ndcg@10"] == pytest.approx(0.5)  # fully judged: the gold at rank 3
    condensed, _ = score(lifts_unseen, [judged])
    assert condensed == score(shown_order, [judged])[0]
    assert condensed["ndcg@10"] == pytest.approx(1.0)
    # a judged wrong page above the gold still costs what it costs
    assert score(demotes_gold, [judged])[0]["ndcg@10"] == pytest.approx(
        score(_rank(["seen", "gold"]), [q])[0]["ndcg@10"]
    )
    assert score(demotes_gold, [judged])[0]["ndcg@10"] < 1.0


def test_feedback_questions_record_the_pages_users_were_shown(tmp_path):
    nodes = [
        TextNode(id_=f"{store}-{i}", text=f"{store} page {i}", metadata={"store": store})
        for store in ("grocery", "electronics")
        for i in range(4)
    ]
    by_id = {n.node_id: n for n in nodes}
    questions = [f"question number {i}?" for i in range(12)]
    shown: dict[tuple[str, str], set[str]] = {}
    with FeedbackStore(tmp_path / "feedback.sqlite") as store:
        for i, question in enumerate(questions):
            name = ("grocery", "electronics")[i % 2]
            for day in range(2):  # asked twice, shown different pages each time
                ids = [f"{name}-{(i + day + k) % 4}" for k in range(2)]
                rid = store.record(
                    question,
                    retrieved=[NodeWithScore(node=by_id[n], score=1.0) for n in ids],
                    metadata={"store": name},
                )
                store.click(rid, ids[0])
                shown.setdefault((question, name), set()).update(ids)

    queries = feedback_split(tmp_path / "feedback.sqlite", nodes, eval_fraction=0.5)
    assert {q.split for q in queries} == {"train", "test"}
    for q in queries:
        assert set(q.judged_node_ids) == shown[(q.question, q.filters["store"])]
        assert set(q.gold_node_ids) <= set(q.judged_node_ids)
