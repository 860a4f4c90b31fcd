"""CrossEncoderRerank with mistaken arguments and hostile node lists: named errors, no silent
NaN ranking, each node once."""

from __future__ import annotations

import math

import pytest
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from llama_index_ragtune.postprocessor import CrossEncoderRerank


def nodes(*texts: str, scores=None) -> list[NodeWithScore]:
    return [
        NodeWithScore(
            node=TextNode(id_=f"n{i}", text=t), score=scores[i] if scores else 1.0 - i / 10
        )
        for i, t in enumerate(texts)
    ]


@pytest.fixture(scope="module")
def reranker(untrained_dir) -> CrossEncoderRerank:
    return CrossEncoderRerank(model=untrained_dir, top_n=None)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_retrieval_scores_are_named(untrained_dir, bad):
    # every blended score used to become NaN, in an arbitrary order
    blended = CrossEncoderRerank(model=untrained_dir, retrieval_weight=0.5)
    with pytest.raises(ValueError, match=r"NaN or infinite score \(e.g. \['n0'\]\)"):
        blended.postprocess_nodes(nodes("a", "b", scores=[bad, 0.5]), query_str="q")


def test_a_node_given_twice_is_ranked_once(reranker):
    twice = nodes("a", "b") + nodes("a")
    ranked = reranker.postprocess_nodes(twice, query_str="q")
    assert sorted(n.node.node_id for n in ranked) == ["n0", "n1"]


def test_query_and_nodes_of_the_wrong_type_are_named(reranker):
    with pytest.raises(TypeError, match="the query must be a str"):
        reranker.postprocess_nodes(nodes("a"), query_str=5)
    with pytest.raises(TypeError, match="the query must be a str"):
        reranker.postprocess_nodes(nodes("a"), query_bundle="q")
    with pytest.raises(TypeError, match="reranks a list of NodeWithScore"):
        reranker.postprocess_nodes([TextNode(text="a")], query_bundle=QueryBundle("q"))
    with pytest.raises(TypeError, match="query must be a str"):
        reranker.score(None, ["a"])
    with pytest.raises(TypeError, match="texts must be a list of str"):
        reranker.score("q", "abc")  # was scored character by character
    with pytest.raises(TypeError, match="texts must be a list of str"):
        reranker.score("q", [None])


def test_model_objects_and_settings_are_checked_when_built(untrained_dir):
    class Predicts:
        def predict(self, *args, **kwargs):
            return [0.0]

    with pytest.raises(TypeError, match="no num_labels"):
        CrossEncoderRerank(Predicts())
    with pytest.raises(ValueError, match="CrossEncoderRerank: device='gpu'"):
        CrossEncoderRerank(untrained_dir, device="gpu")  # was an OSError at the first query
    for kwargs in (
        {"score_threshold": True},
        {"score_threshold": "0.5"},
        {"retrieval_weight": True},
    ):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            CrossEncoderRerank(untrained_dir, **kwargs)
