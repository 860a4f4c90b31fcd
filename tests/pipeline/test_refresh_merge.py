"""A refresh never trains on a question it is judged on (feedback and earlier data merged)."""

from __future__ import annotations

from llama_index_ragtune.pipeline.queries import LabelledQuery
from llama_index_ragtune.pipeline.refresh_data import merge_queries


def _q(qid, question, split, source, store="grocery"):
    return LabelledQuery(
        id=qid,
        question=question,
        gold_node_ids=["n1"],
        filters={"store": store},
        split=split,
        source=source,
    )


def test_a_held_out_question_is_not_trained_on_from_the_other_side():
    feedback = [
        _q("f1", "Apple return policy?", "test", "feedback"),  # held out by the feedback split
        _q("f2", "Do you deliver on Sundays?", "train", "feedback"),
        _q("f3", "apple return policy", "train", "feedback", store="electronics"),  # other store
    ]
    earlier = [
        _q("e1", "apple return  policy?", "train", "file"),  # the held-out question again
        _q("e2", "do you deliver on sundays", "test", "file"),  # earlier test, asked again
        _q("f2", "Where is my order?", "train", "file"),  # an id feedback also uses
    ]
    said: list[str] = []
    merged = merge_queries(feedback, earlier, said.append)
    train = {(q.id, q.question) for q in merged if q.split == "train"}
    assert train == {
        ("f3", "apple return policy"),
        ("earlier:f2", "Where is my order?"),
    }
    assert {q.id for q in merged if q.split == "test"} == {"f1", "e2"}
    assert said == [
        "[refresh] 2 training question(s) left out: the same question is held out "
        "(feedback test side or the earlier test split)"
    ]


def test_nothing_is_dropped_without_an_overlap():
    feedback = [_q("f1", "a?", "train", "feedback"), _q("f2", "b?", "test", "feedback")]
    said: list[str] = []
    assert merge_queries(feedback, [_q("e1", "c?", "train", "file")], said.append) == [
        *feedback,
        _q("e1", "c?", "train", "file"),
    ]
    assert said == []
