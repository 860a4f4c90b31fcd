"""What a retriever or postprocessor hands the citation engine: checked, each node one source."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, TextNode

from llama_index_ragtune.query_engine import CitationQueryEngine
from tests.query_engine.test_citation import ListRetriever, ScriptedLLM

PARIS = NodeWithScore(node=TextNode(id_="paris", text="Paris is in France."), score=0.9)
ROME = NodeWithScore(node=TextNode(id_="rome", text="Rome is in Italy."), score=0.5)


class Returns(BaseNodePostprocessor):
    """A postprocessor that returns ``out`` whatever it is given."""

    out: object = None

    def _postprocess_nodes(self, nodes, query_bundle=None):
        return self.out


def engine(out, **kwargs) -> CitationQueryEngine:
    return CitationQueryEngine(
        ListRetriever([PARIS, ROME]),
        llm=ScriptedLLM(answer="Rome [2]. Paris [1]."),
        node_postprocessors=[Returns(out=out)],
        **kwargs,
    )


@pytest.mark.parametrize("streaming", [False, True])
def test_a_node_given_twice_is_one_source(streaming):
    # [paris, paris, rome] used to be three sources: [2] was paris again and [3] rome
    response = engine([PARIS, PARIS, ROME], streaming=streaming).query("capitals?")
    if streaming:
        "".join(response.response_gen)
    assert response.metadata["source_node_ids"] == ["paris", "rome"]
    assert [n.node.node_id for n in response.source_nodes] == ["paris", "rome"]
    assert response.metadata["cited_node_ids"] == ["rome", "paris"]
    assert response.metadata["invalid_citations"] == []


def test_max_sources_counts_distinct_nodes():
    response = engine([PARIS, PARIS, ROME], max_sources=2).query("capitals?")
    assert response.metadata["source_node_ids"] == ["paris", "rome"]


def test_a_postprocessor_returning_none_is_named_not_a_refusal():
    # None used to read as "nothing retrieved": the refusal, hiding the postprocessor's bug
    with pytest.raises(TypeError, match=r"node postprocessor Returns returned NoneType"):
        engine(None).query("capitals?")
    with pytest.raises(TypeError, match=r"node postprocessor Returns returned NoneType"):
        asyncio.run(engine(None).aquery("capitals?"))


def test_bare_nodes_from_a_postprocessor_are_named():
    # used to fail deep inside pydantic: 'TextNode' object has no attribute 'node'
    with pytest.raises(TypeError, match=r"a TextNode at position 0.*NodeWithScore\(node=node"):
        engine([TextNode(id_="x", text="x")]).query("capitals?")


def test_a_tuple_or_generator_of_nodes_is_taken_as_a_list():
    assert engine((PARIS, ROME)).query("q").metadata["cited_node_ids"] == ["rome", "paris"]
    generated = engine(n for n in (PARIS, ROME)).query("q")  # used to raise: no len()
    assert generated.metadata["cited_node_ids"] == ["rome", "paris"]


@pytest.mark.parametrize(
    ("top_k", "error"),
    [(0, ValueError), (-1, ValueError), (True, TypeError), (2.5, TypeError), ("3", TypeError)],
)
def test_from_index_checks_similarity_top_k(top_k, error):
    # core's retriever read 0 as every node, -1 as none (a silent refusal), True as 1, 2.5 as 2
    from llama_index.core import SummaryIndex

    with pytest.raises(error, match="similarity_top_k must be an integer >= 1"):
        CitationQueryEngine.from_index(
            SummaryIndex([PARIS.node]), llm=ScriptedLLM(answer="x"), similarity_top_k=top_k
        )


def test_from_index_needs_an_index():
    with pytest.raises(TypeError, match="from_index needs a llama_index index"):
        CitationQueryEngine.from_index([PARIS.node], llm=ScriptedLLM(answer="x"))


@pytest.mark.parametrize("query_str", [None, 5, b"bytes"])
def test_a_query_bundle_without_text_is_named_before_retrieval(query_str):
    # used to fail after retrieval, inside the prompt builder: 'NoneType' has no 'strip'
    from llama_index.core.schema import QueryBundle

    with pytest.raises(TypeError, match="QueryBundle must hold a str query_str"):
        engine([PARIS]).query(QueryBundle(query_str=query_str))
    with pytest.raises(TypeError, match="QueryBundle must hold a str query_str"):
        asyncio.run(engine([PARIS]).aquery(QueryBundle(query_str=query_str)))
