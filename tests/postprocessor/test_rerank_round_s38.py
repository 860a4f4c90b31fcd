"""Hostile reranker settings and queries, round s38: a loaded model on another device than
asked for, and a query longer than the model reads."""

from __future__ import annotations

import logging

import pytest
from llama_index.core.schema import NodeWithScore, TextNode

from llama_index_ragtune.postprocessor import CrossEncoderRerank
from tests.postprocessor.conftest import untrained_dir  # noqa: F401 (a tiny reranker folder)

NODES = [
    NodeWithScore(node=TextNode(id_="a", text="Statins lower LDL."), score=0.5),
    NodeWithScore(node=TextNode(id_="b", text="Cats purr."), score=0.4),
]


@pytest.fixture()
def loaded(untrained_dir):  # noqa: F811
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(untrained_dir), device="cpu")


def test_a_device_the_loaded_model_is_not_on_is_refused_when_built(loaded):
    # was: accepted and ignored, the model served from where it was (here: no weights at
    # all, so the first query failed inside torch with "Tensor.item() on meta tensors")
    loaded.model.to("meta")
    with pytest.raises(ValueError, match=r"on meta.*device='cpu' would be ignored.*\.to\('cpu'\)"):
        CrossEncoderRerank(loaded, device="cpu")
    assert str(loaded.device) == "meta"  # the caller's model was left where it is


def test_the_loaded_models_own_device_or_none_is_taken(loaded):
    for device in ("cpu", None):
        reranker = CrossEncoderRerank(loaded, device=device, top_n=None)
        assert reranker.cross_encoder is loaded
        assert len(reranker.postprocess_nodes(NODES, query_str="LDL?")) == 2


def test_a_query_longer_than_the_model_reads_is_said_once(untrained_dir, caplog):  # noqa: F811
    # was: cut to the model's max_length (32 tokens here) without a word
    reranker = CrossEncoderRerank(untrained_dir, top_n=None)
    long_query = "what lowers LDL? " + "tell me all about it " * 20
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.postprocessor"):
        reranker.postprocess_nodes(NODES, query_str="what lowers LDL?")
        assert "longer than the cross-encoder" not in caplog.text
        for _ in range(3):
            reranker.postprocess_nodes(NODES, query_str=long_query)
    said = [r for r in caplog.records if "longer than the cross-encoder" in r.getMessage()]
    assert len(said) == 1
    assert "max_length 32" in said[0].getMessage()
