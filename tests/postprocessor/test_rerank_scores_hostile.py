"""``CrossEncoderRerank`` under hostile scores and queries: a model scoring NaN or
infinite, one returning another number or kind of scores, empty / huge / duplicate nodes,
``top_n`` out of range, and a query with nothing visible."""

from __future__ import annotations

import pytest
import torch
from llama_index.core.schema import NodeWithScore, TextNode

from llama_index_ragtune.postprocessor import CrossEncoderRerank


def scored(*texts: str, score=0.5) -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(id_=f"n{i}", text=t), score=score) for i, t in enumerate(texts)
    ]


def test_a_model_scoring_nan_is_named_not_ranked_in_arbitrary_order(untrained_dir):
    from sentence_transformers.cross_encoder import CrossEncoder

    model = CrossEncoder(str(untrained_dir), device="cpu")
    with torch.no_grad():
        model.model.classifier.bias.fill_(float("nan"))  # broken weights: every score NaN
    reranker = CrossEncoderRerank(model, top_n=2, score_threshold=0.1)
    # was: NaN scores sorted anywhere and kept past score_threshold (NaN < 0.1 is False)
    with pytest.raises(ValueError, match=r"scored 3 of 3 nodes NaN or infinite \(e.g. \['n0'"):
        reranker.postprocess_nodes(scored("a", "b", "c"), query_str="q")
    with pytest.raises(ValueError, match=r"NaN or infinite \(e.g. \['text 0'"):
        reranker.score("q", ["a"])


def test_a_model_returning_the_wrong_number_or_kind_of_scores_is_named(untrained_dir):
    from sentence_transformers.cross_encoder import CrossEncoder

    class OneScore(CrossEncoder):
        def predict(self, pairs, **kwargs):
            return super().predict(pairs[:1], **kwargs)  # was: zip() is shorter

    class ListScores(CrossEncoder):
        def predict(self, pairs, **kwargs):
            return list(super().predict(pairs, **kwargs))  # was: 'list' has no reshape

    short = CrossEncoderRerank(OneScore(str(untrained_dir), device="cpu"), top_n=None)
    with pytest.raises(ValueError, match="returned 1 values for 3 expected"):
        short.postprocess_nodes(scored("a", "b", "c"), query_str="q")
    listed = CrossEncoderRerank(ListScores(str(untrained_dir), device="cpu"), top_n=None)
    assert len(listed.postprocess_nodes(scored("a", "b"), query_str="q")) == 2


def test_hostile_nodes_and_top_n_rerank_every_node_once(untrained_dir):
    reranker = CrossEncoderRerank(untrained_dir, top_n=100)  # more than the nodes
    nodes = scored("", "   ", "x " * 50_000, "abc", score=None)
    nodes.append(NodeWithScore(node=TextNode(id_="n3", text="same id, other text"), score=0.9))
    ranked = reranker.postprocess_nodes(nodes, query_str="q")
    assert sorted(n.node.node_id for n in ranked) == ["n0", "n1", "n2", "n3"]
    assert [n.score for n in ranked] == sorted((n.score for n in ranked), reverse=True)
    for top_n in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="top_n"):
            CrossEncoderRerank(untrained_dir, top_n=top_n)


@pytest.mark.parametrize("query", ["\x00", "\u200f\u202e", "\u200b\x01 "])
def test_a_query_with_nothing_visible_is_an_empty_query_for_the_reranker(untrained_dir, query):
    # was: ranked against NUL / direction marks as if it were a question
    reranker = CrossEncoderRerank(untrained_dir, top_n=None)
    with pytest.raises(ValueError, match="empty query"):
        reranker.postprocess_nodes(scored("a"), query_str=query)
