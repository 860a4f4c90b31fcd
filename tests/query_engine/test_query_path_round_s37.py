"""Hostile input on the query path of a deployed bundle, round s37: a custom side's scores in
score fusion, document vectors with NaN, and settings changed on a built retriever, reranker
or engine (each checked like the constructor checks it)."""

from __future__ import annotations

import math

import pytest
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

from llama_index_ragtune.postprocessor import CrossEncoderRerank
from llama_index_ragtune.query_engine import CitationQueryEngine
from llama_index_ragtune.retrievers import BM25Retriever, HybridRetriever
from tests.postprocessor.conftest import untrained_dir  # noqa: F401 (a tiny reranker folder)
from tests.query_engine.test_citation import ListRetriever, engine_for
from tests.retrievers.conftest import STORE_DOCS, KeywordEmbedding

NODES = {node_id: TextNode(id_=node_id, text=text) for node_id, _, text in STORE_DOCS}
QUERY = "apple return"


def hybrid(dense_scores: list[tuple[str, float | None]], mode: str) -> HybridRetriever:
    """A hybrid retriever whose dense side is a user's retriever returning ``dense_scores``."""
    dense = ListRetriever([NodeWithScore(node=NODES[i], score=s) for i, s in dense_scores])
    sparse = BM25Retriever.from_defaults(nodes=list(NODES.values()), similarity_top_k=8)
    return HybridRetriever(dense, sparse, similarity_top_k=4, fusion_mode=mode)


# ------------------------------------------------------------ a custom side's scores


@pytest.mark.parametrize("mode", ["minmax", "zscore"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, None])
def test_a_custom_side_with_unusable_scores_is_named_not_fused(mode, bad):
    # NaN / infinity made every fused score NaN (NaN-scored nodes listed first, in arbitrary
    # order); a None beside scored nodes was read as 0.0, so the side's best node came last
    retriever = hybrid([("g3", bad), ("e4", 0.9), ("g1", 0.5)], mode)
    with pytest.raises(ValueError, match=r"dense side \(ListRetriever\).*'g3'.*fusion_mode='rrf'"):
        retriever.retrieve(QUERY)


@pytest.mark.parametrize("bad", [math.nan, None])
def test_rrf_reads_only_ranks_so_it_takes_any_scores(bad):
    fused = hybrid([("g3", bad), ("e4", 0.9), ("g1", 0.5)], "rrf").retrieve(QUERY)
    assert fused[0].node.node_id == "g1"  # first on BM25, third on the dense side
    assert all(math.isfinite(n.score) for n in fused)
    assert {n.node.node_id for n in fused} >= {"g1", "g3"}


def test_a_side_without_any_score_is_still_fused():
    # a keyword retriever that ranks without scoring: its nodes are equals, as before
    fused = hybrid([("g3", None), ("e4", None)], "minmax").retrieve(QUERY)
    assert all(math.isfinite(n.score) for n in fused)
    assert "g3" in [n.node.node_id for n in fused]


def test_a_side_given_no_weight_is_not_checked():
    retriever = hybrid([("g3", math.nan), ("e4", 0.9)], "minmax")
    retriever.alpha = 0.0  # the dense side's scores are not read at all
    assert [n.node.node_id for n in retriever.retrieve(QUERY)][:2] == ["g1", "e1"]


# ------------------------------------------------------------ document vectors with NaN


class NaNForLaptops(KeywordEmbedding):
    """Vectors with a NaN for texts that mention laptops (an fp16 overflow, broken weights)."""

    def _get_text_embedding(self, text: str) -> list[float]:
        vector = self._vector(text)
        if "laptop" in text.lower():
            vector[0] = math.nan
        return vector


def test_a_document_vector_with_nan_is_refused_naming_the_node():
    # the node was indexed, never found by the dense side (NaN similarity) and still
    # returned by BM25: the best match for "laptop warranty" was missing from the top 4
    with pytest.raises(ValueError, match=r"embedding model returned NaN.*\['e2'\]"):
        HybridRetriever.from_defaults(nodes=list(NODES.values()), embed_model=NaNForLaptops())


def test_a_node_carrying_a_nan_embedding_is_refused():
    nodes = [n.model_copy() for n in NODES.values()]
    nodes[0].embedding = [math.inf] * len(KeywordEmbedding()._vector("x"))
    with pytest.raises(ValueError, match=r"own embeddings \(node\.embedding\).*\['g1'\]"):
        HybridRetriever.from_defaults(nodes=nodes, embed_model=KeywordEmbedding())


def test_inserting_a_node_with_a_nan_vector_changes_nothing():
    retriever = HybridRetriever.from_defaults(
        nodes=list(NODES.values()), embed_model=KeywordEmbedding(), similarity_top_k=8
    )
    retriever.index._embed_model = NaNForLaptops()  # the model goes bad after the build
    before = [n.node.node_id for n in retriever.retrieve("laptop")]
    with pytest.raises(ValueError, match=r"NaN.*\['x1'\]"):
        retriever.insert_nodes([TextNode(id_="x1", text="A laptop bag.")])
    assert [n.node.node_id for n in retriever.retrieve("laptop")] == before


# ------------------------------------------------------------ settings changed after building


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("alpha", 5.0, ValueError),
        ("alpha", math.nan, ValueError),
        ("alpha", "0.5", TypeError),
        ("rrf_k", 0, ValueError),
        ("rrf_k", -1.0, ValueError),
        ("fusion_mode", "bogus", ValueError),
        ("fusion_mode", None, TypeError),
    ],
)
def test_hybrid_settings_are_checked_when_assigned(name, value, error):
    # alpha=5 failed at the next query with "weights must be finite and >= 0, got (5.0, -4.0)"
    retriever = hybrid([("e4", 0.9), ("g1", 0.5)], "minmax")
    expected = [n.node.node_id for n in retriever.retrieve(QUERY)]
    old = getattr(retriever, name)
    with pytest.raises(error, match=name):
        setattr(retriever, name, value)
    assert getattr(retriever, name) == old
    assert [n.node.node_id for n in retriever.retrieve(QUERY)] == expected


@pytest.fixture(scope="module")
def cross_encoder():
    from sentence_transformers import CrossEncoder

    from llama_index_ragtune.models import default_encoder

    return CrossEncoder(default_encoder(), num_labels=1, device="cpu")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("top_n", 0),  # kept no node: a silent refusal downstream
        ("top_n", -1),  # dropped the last node
        ("top_n", 2.5),  # a pydantic error from ReRankStartEvent at query time
        ("top_n", True),  # read as 1
        ("retrieval_weight", math.nan),  # ignored
        ("retrieval_weight", 5.0),
        ("score_threshold", math.nan),  # ignored: every node kept
        ("batch_size", 0),
        ("max_length", 0),
        ("device", "gpu"),
    ],
)
def test_reranker_settings_are_checked_when_assigned(cross_encoder, name, value):
    reranker = CrossEncoderRerank(cross_encoder, top_n=3)
    nodes = [NodeWithScore(node=n, score=0.5) for n in list(NODES.values())[:3]]
    old = getattr(reranker, name)
    with pytest.raises(ValueError, match=name):
        setattr(reranker, name, value)
    assert getattr(reranker, name) == old
    assert len(reranker.postprocess_nodes(nodes, query_str=QUERY)) == 3


def test_reranker_accepts_good_settings_after_building(cross_encoder):
    reranker = CrossEncoderRerank(cross_encoder, top_n=3)
    reranker.top_n = 1
    reranker.score_threshold = 0.0
    nodes = [NodeWithScore(node=n, score=0.5) for n in list(NODES.values())[:3]]
    assert len(reranker.postprocess_nodes(nodes, query_str=QUERY)) == 1


LONG = [
    NodeWithScore(
        node=TextNode(id_="a", text="Cats purr. " * 20 + "Statins lower LDL."), score=0.5
    ),
    NodeWithScore(
        node=TextNode(id_="b", text="Statins lower LDL. " + "Cats purr. " * 20), score=0.4
    ),
]


def scores(reranker: CrossEncoderRerank) -> list[float]:
    return [n.score for n in reranker.postprocess_nodes(LONG, query_str="LDL?")]


def test_reranker_reloads_when_its_model_settings_change(untrained_dir):  # noqa: F811
    # the first loaded model kept serving: max_length=8 set later changed nothing
    reranker = CrossEncoderRerank(untrained_dir, top_n=None)
    full = scores(reranker)
    reranker.max_length = 8
    assert reranker.cross_encoder.max_length == 8
    assert scores(reranker) != full
    reranker.max_length = None
    assert scores(reranker) == full  # the first model again, from the reranker's cache


def test_an_in_memory_cross_encoders_settings_cannot_change(cross_encoder):
    reranker = CrossEncoderRerank(cross_encoder, top_n=None)
    scores(reranker)
    reranker.max_length = 8
    with pytest.raises(ValueError, match=r"max_length=8 \(was None\).*folder path"):
        scores(reranker)


def test_a_max_length_the_given_model_would_ignore_is_refused_when_built(cross_encoder):
    # was: accepted and ignored (the loaded model kept its own max_length)
    with pytest.raises(ValueError, match=r"max_length=7 would be ignored"):
        CrossEncoderRerank(cross_encoder, max_length=7)
    same = CrossEncoderRerank(cross_encoder, max_length=cross_encoder.max_length)
    assert same.cross_encoder is cross_encoder


def test_a_pickled_reranker_of_an_in_memory_model_still_ranks(cross_encoder):
    import pickle

    # its name is no cross-encoder folder, so unpickling fell back to a plain restore that
    # left no lock or model slot: AttributeError '_model' at the first query
    clone = pickle.loads(pickle.dumps(CrossEncoderRerank(cross_encoder, top_n=1)))
    assert clone.top_n == 1
    assert len(scores(clone)) == 1


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("max_sources", 0, ValueError),  # served every node
        ("max_sources", -1, ValueError),  # dropped the last source
        ("max_sources", 1.5, TypeError),  # "slice indices must be integers" at query time
        ("max_source_chars", 0, ValueError),  # ignored
        ("uncited", "bogus", ValueError),  # read as "flag"
        ("metadata_mode", "bogus", ValueError),
        ("streaming", "yes", TypeError),  # a streaming response whose str() was 'None'
        ("system_prompt", "Answer briefly.", ValueError),  # no refusal: never checked
        ("refusal", "", ValueError),
        ("refusal_policy", "always", TypeError),
        ("prompt_helper", 4096, TypeError),
    ],
)
def test_engine_settings_are_checked_when_assigned(name, value, error):
    engine, _ = engine_for("Paris [1]. Rome [2].")
    old = getattr(engine, name)
    with pytest.raises(error, match=name):
        setattr(engine, name, value)
    assert getattr(engine, name) == old
    response = engine.query("capitals?")
    assert response.metadata["source_node_ids"] == ["doc-paris", "doc-rome", "doc-berlin"]
    assert response.metadata["cited_node_ids"] == ["doc-paris", "doc-rome"]


def test_cite_and_streaming_cannot_be_combined_after_building():
    engine, _ = engine_for("Paris [1].", streaming=True)
    with pytest.raises(ValueError, match="uncited='cite'"):
        engine.uncited = "cite"
    assert engine.uncited == "flag"
    engine.streaming = False
    with pytest.raises(ValueError, match="citation_probabilities"):
        engine.uncited = "cite"  # the scripted LLM cannot score citations
    engine2, _ = engine_for("Paris [1].")
    engine2._uncited = "cite"  # as if built with an LLM that can
    with pytest.raises(ValueError, match="uncited='cite'"):
        engine2.streaming = True


def test_engine_accepts_good_settings_after_building():
    engine, _ = engine_for("Paris [1]. Rome [2].")
    engine.max_sources = 2
    engine.max_source_chars = 500
    engine.metadata_mode = "llm"
    engine.streaming = True
    assert engine.metadata_mode is MetadataMode.LLM
    response = engine.query("capitals?")
    assert "".join(response.response_gen) == "Paris [1]. Rome [2]."
    assert response.metadata["source_node_ids"] == ["doc-paris", "doc-rome"]


def test_the_constructor_still_checks_its_arguments():
    retriever = ListRetriever([])
    with pytest.raises(ValueError, match="max_sources"):
        CitationQueryEngine(retriever, max_sources=0)
    with pytest.raises(ValueError, match="uncited='cite'"):
        CitationQueryEngine(retriever, uncited="cite", streaming=True)
    with pytest.raises(ValueError, match="metadata_mode"):
        CitationQueryEngine(retriever, metadata_mode="bogus")


# ------------------------------------------------------------ Settings.llm set after building


@pytest.mark.parametrize("asynchronous", [False, True])
def test_an_engine_on_settings_llm_checks_it_at_query_time(monkeypatch, asynchronous):
    import asyncio

    from llama_index.core import Settings

    from llama_index_ragtune.llms.refusal_policy import DecoderRefusalPolicy
    from tests.query_engine.test_citation import ScriptedLLM, make_nodes

    # built without an LLM, so the constructor could not check one; Settings.llm is read
    # at query time: uncited='cite' on an LLM that cannot score citations was served as
    # "unchecked" with an AttributeError string in post_check
    monkeypatch.setattr(Settings, "_llm", ScriptedLLM(answer="Paris. Rome [2]."))
    for kwargs, match in [
        ({"uncited": "cite"}, "citation_probabilities"),
        ({"refusal_policy": DecoderRefusalPolicy(0.5)}, "DecoderRefusalPolicy"),
    ]:
        engine = CitationQueryEngine(ListRetriever(make_nodes()), **kwargs)
        with pytest.raises(ValueError, match=match):
            if asynchronous:
                asyncio.run(engine.aquery("capitals?"))
            else:
                engine.query("capitals?")
    plain = CitationQueryEngine(ListRetriever(make_nodes()))  # nothing to check: answers
    assert plain.query("capitals?").metadata["cited_node_ids"] == ["doc-rome"]


# ------------------------------------------------------------ nodes that show no text


@pytest.mark.parametrize("asynchronous", [False, True])
def test_nodes_showing_no_text_are_not_sources(caplog, asynchronous):
    import asyncio

    from llama_index.core.schema import ImageNode

    # they were empty numbered sources: "[1][2]" counted as citing the blank and the image
    # node, and they took two of max_sources=2 places from the one source with text
    nodes = [
        NodeWithScore(node=TextNode(id_="blank", text=" \u200b\n"), score=0.9),
        NodeWithScore(node=ImageNode(id_="img", image="aGVsbG8="), score=0.8),
        NodeWithScore(node=TextNode(id_="paris", text="Paris is in France."), score=0.5),
    ]
    engine, llm = engine_for("Paris is in France [1][2].", nodes=nodes, max_sources=2)
    with caplog.at_level("WARNING"):
        if asynchronous:
            response = asyncio.run(engine.aquery("Where is Paris?"))
        else:
            response = engine.query("Where is Paris?")
    assert response.metadata["source_node_ids"] == ["paris"]
    assert response.metadata["cited_node_ids"] == ["paris"]
    assert response.metadata["invalid_citations"] == [2]
    assert "['blank', 'img']" in caplog.text
    assert '<source id="2">' not in llm.calls[-1][-1].content


def test_a_node_showing_only_metadata_is_a_source_when_metadata_is_shown():
    node = TextNode(id_="meta", text="", metadata={"city": "Paris", "country": "France"})
    nodes = [NodeWithScore(node=node, score=0.9)]
    engine, _ = engine_for("Paris is in France [1].", nodes=nodes, metadata_mode="llm")
    assert engine.query("Where is Paris?").metadata["cited_node_ids"] == ["meta"]
    engine, llm = engine_for("Paris is in France [1].", nodes=nodes)  # text only: nothing
    refused = engine.query("Where is Paris?")
    assert refused.metadata["refused"] and refused.metadata["source_node_ids"] == []
    assert llm.calls == []  # the refusal without calling the LLM
