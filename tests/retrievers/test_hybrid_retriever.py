"""HybridRetriever: fusion wiring, filters on both sides, async, custom sides, from_defaults, persistence."""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

from llama_index_ragtune.retrievers import (
    BM25Retriever,
    FusedNodeWithScore,
    HybridRetriever,
    PersistenceError,
    fuse,
)

GROCERY = MetadataFilters(filters=[MetadataFilter(key="store", value="grocery")])
ELECTRONICS = MetadataFilters(filters=[MetadataFilter(key="store", value="electronics")])
QUERIES = (
    "apple return policy?",
    "opened electronics returned",
    "store opening hours",
    "refund bananas",
)


def ids(nodes):
    return [n.node.node_id for n in nodes]


@pytest.fixture()
def hybrid(store_nodes, keyword_embedding):
    return HybridRetriever.from_defaults(
        nodes=store_nodes, embed_model=keyword_embedding, similarity_top_k=4
    )


class ListRetriever(BaseRetriever):
    """A custom side: fixed ranking, optional delay, no native async."""

    def __init__(self, nodes, delay=0.0):
        super().__init__()
        self.nodes, self.delay, self.similarity_top_k = nodes, delay, len(nodes)

    def _retrieve(self, query_bundle: QueryBundle):
        time.sleep(self.delay)
        return [
            NodeWithScore(node=n, score=1.0 - i / 10)
            for i, n in enumerate(self.nodes[: self.similarity_top_k])
        ]


def test_results_are_fused_sides(hybrid, store_nodes):
    query = QueryBundle("apple return policy?")
    dense = hybrid.dense_retriever.retrieve(query)
    sparse = hybrid.sparse_retriever.retrieve(query)
    expected = fuse(
        [[(n.node.node_id, n.score) for n in dense], [(n.node.node_id, n.score) for n in sparse]],
        mode=hybrid.fusion_mode,
        weights=(hybrid.alpha, 1 - hybrid.alpha),
        rrf_k=hybrid.rrf_k,
        top_k=4,
    )
    hits = hybrid.retrieve("apple return policy?")
    assert ids(hits) == [h.node_id for h in expected]
    assert [n.score for n in hits] == pytest.approx([h.score for h in expected])
    first = hits[0]
    assert isinstance(first, FusedNodeWithScore)
    assert (first.dense_rank, first.sparse_rank) == next(
        h.ranks for h in expected if h.node_id == first.node.node_id
    )
    # the nodes' own metadata is untouched
    assert all(set(n.metadata) == {"store", "department"} for n in store_nodes)
    assert all(set(n.node.metadata) == {"store", "department"} for n in hits)


@pytest.mark.parametrize("mode", ["rrf", "minmax", "zscore"])
def test_every_mode_returns_top_k_unique_nodes(store_nodes, keyword_embedding, mode):
    retriever = HybridRetriever.from_defaults(
        nodes=store_nodes,
        embed_model=keyword_embedding,
        fusion_mode=mode,
        alpha=0.3,
        similarity_top_k=5,
    )
    hits = retriever.retrieve("opened electronics returned within days")
    assert len(hits) == 5 and len(set(ids(hits))) == 5
    assert hits[0].node.node_id in {"e1", "e2"}
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))


@pytest.mark.parametrize("filters", [GROCERY, ELECTRONICS])
def test_filters_on_both_sides_before_the_cut(hybrid, filters):
    wanted = filters.filters[0].value
    for query in QUERIES:
        scoped = hybrid.with_filters(filters)
        hits = scoped.retrieve(query)
        assert hits and all(n.node.metadata["store"] == wanted for n in hits)
        assert (
            len(hits) == 4
        )  # filled from the 4 allowed nodes, no zero-score padding from elsewhere
        assert all(n.sparse_score is None or n.sparse_score > 0 for n in hits)  # no BM25 padding
    assert hybrid.filters is None  # with_filters leaves the original alone
    assert {n.node.metadata["store"] for n in hybrid.retrieve("apple return policy?")} == {
        "grocery",
        "electronics",
    }


def test_filters_setter_and_constructor(store_nodes, keyword_embedding):
    retriever = HybridRetriever.from_defaults(
        nodes=store_nodes, embed_model=keyword_embedding, filters=ELECTRONICS, similarity_top_k=8
    )
    assert {n.node.metadata["store"] for n in retriever.retrieve("apple")} == {"electronics"}
    retriever.filters = GROCERY
    assert {n.node.metadata["store"] for n in retriever.retrieve("apple")} == {"grocery"}
    retriever.filters = None
    assert len(retriever.retrieve("apple return store")) == 8
    with pytest.raises(TypeError, match="MetadataFilters"):
        retriever.filters = {"store": "grocery"}


def test_async_equals_sync(hybrid):
    scoped = hybrid.with_filters(GROCERY)
    for retriever in (hybrid, scoped):
        for query in QUERIES:
            sync = [(n.node.node_id, round(n.score, 9)) for n in retriever.retrieve(query)]
            async_ = [
                (n.node.node_id, round(n.score, 9)) for n in asyncio.run(retriever.aretrieve(query))
            ]
            assert sync == async_


def test_async_runs_the_sides_concurrently(store_nodes):
    slow_dense = ListRetriever(store_nodes[:4], delay=0.3)
    slow_sparse = ListRetriever(store_nodes[4:], delay=0.3)
    retriever = HybridRetriever(
        dense_retriever=slow_dense, sparse_retriever=slow_sparse, similarity_top_k=8
    )
    start = time.perf_counter()
    hits = asyncio.run(retriever.aretrieve("anything"))
    elapsed = time.perf_counter() - start
    assert len(hits) == 8
    assert elapsed < 0.5, f"sides ran one after the other ({elapsed:.2f}s)"


def test_either_side_can_be_custom(store_nodes, keyword_embedding):
    custom = ListRetriever([store_nodes[6], store_nodes[2]])
    with_custom_sparse = HybridRetriever.from_defaults(
        nodes=store_nodes,
        embed_model=keyword_embedding,
        sparse_retriever=custom,
        similarity_top_k=3,
    )
    hits = with_custom_sparse.retrieve("phone case ship")
    assert hits[0].node.node_id == "e3"
    assert hits[0].sparse_rank == 1
    with_custom_dense = HybridRetriever.from_defaults(
        nodes=store_nodes, embed_model=keyword_embedding, dense_retriever=custom, similarity_top_k=3
    )
    assert with_custom_dense.index is None
    assert "g3" in ids(with_custom_dense.retrieve("phone case ship"))
    # a custom side's results are filtered after retrieval
    with_custom_dense.filters = GROCERY
    assert {n.node.metadata["store"] for n in with_custom_dense.retrieve("phone case ship")} == {
        "grocery"
    }
    with pytest.raises(NotImplementedError, match="custom dense retriever"):
        with_custom_dense.persist("unused")


def test_depth_is_set_on_the_sides(store_nodes, keyword_embedding):
    retriever = HybridRetriever.from_defaults(
        nodes=store_nodes,
        embed_model=keyword_embedding,
        dense_top_k=2,
        sparse_top_k=3,
        similarity_top_k=8,
    )
    query = QueryBundle("apple return store hours")
    assert len(retriever.dense_retriever.retrieve(query)) == 2
    assert len(retriever.sparse_retriever.retrieve(query)) <= 3
    assert len(retriever.retrieve("apple return store hours")) <= 5


def test_from_defaults_exactly_one(store_nodes, keyword_embedding):
    with pytest.raises(ValueError, match="exactly one of nodes or index"):
        HybridRetriever.from_defaults(embed_model=keyword_embedding)
    index = VectorStoreIndex(store_nodes, embed_model=keyword_embedding)
    with pytest.raises(ValueError, match="exactly one of nodes or index"):
        HybridRetriever.from_defaults(nodes=store_nodes, index=index)
    with pytest.raises(ValueError, match="empty list"):
        HybridRetriever.from_defaults(nodes=[], embed_model=keyword_embedding)


def test_from_index_uses_its_docstore_and_filters(store_nodes, keyword_embedding):
    index = VectorStoreIndex(
        store_nodes, embed_model=keyword_embedding
    )  # in-memory store, filterable
    retriever = HybridRetriever.from_defaults(index=index, similarity_top_k=3, filters=GROCERY)
    hits = retriever.retrieve("apple return policy?")
    assert len(hits) == 3 and {n.node.metadata["store"] for n in hits} == {"grocery"}


def test_plain_faiss_store_with_filters_is_refused(store_nodes, keyword_embedding):
    import faiss
    from llama_index.core import StorageContext
    from llama_index.vector_stores.faiss import FaissVectorStore

    store = FaissVectorStore(
        faiss_index=faiss.IndexFlatIP(len(keyword_embedding.get_query_embedding("x")))
    )
    index = VectorStoreIndex(
        store_nodes,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=keyword_embedding,
    )
    with pytest.raises(ValueError, match="FilterableFaissVectorStore"):
        HybridRetriever.from_defaults(index=index, filters=GROCERY)


def test_parameter_validation(hybrid):
    with pytest.raises(ValueError, match="alpha"):
        HybridRetriever(index=hybrid.index, sparse_retriever=hybrid.sparse_retriever, alpha=1.5)
    with pytest.raises(ValueError, match="unknown fusion mode"):
        HybridRetriever(
            index=hybrid.index, sparse_retriever=hybrid.sparse_retriever, fusion_mode="borda"
        )
    with pytest.raises(ValueError, match="dense_retriever or an index"):
        HybridRetriever(sparse_retriever=hybrid.sparse_retriever)


def test_persist_round_trip(hybrid, keyword_embedding, tmp_path):
    hybrid.filters = GROCERY
    hybrid.persist(tmp_path / "h")
    loaded = HybridRetriever.from_persist_dir(tmp_path / "h", embed_model=keyword_embedding)
    assert loaded.params() == hybrid.params()
    assert loaded.filters == GROCERY
    for query in QUERIES:
        assert [(n.node.node_id, round(n.score, 6)) for n in loaded.retrieve(query)] == [
            (n.node.node_id, round(n.score, 6)) for n in hybrid.retrieve(query)
        ]
    wider = HybridRetriever.from_persist_dir(
        tmp_path / "h", embed_model=keyword_embedding, similarity_top_k=2, filters=None
    )
    assert wider.similarity_top_k == 2 and wider.filters is None


def test_persist_errors(hybrid, store_nodes, keyword_embedding, tmp_path):
    folder = tmp_path / "h"
    hybrid.persist(folder)
    load = lambda: HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)  # noqa: E731
    manifest = folder / "hybrid_retriever.json"
    good = manifest.read_text()

    manifest.write_text("[1, 2")
    with pytest.raises(PersistenceError, match="hybrid_retriever.json is corrupt"):
        load()
    data = json.loads(good)
    data["format"] = "ragtune-bm25"
    manifest.write_text(json.dumps(data))
    with pytest.raises(PersistenceError, match="written by another class"):
        load()
    manifest.write_text(good)

    vectors = folder / "storage" / "default__vector_store.json"
    saved = vectors.read_bytes()
    vectors.write_bytes(b"garbage")
    with pytest.raises(
        PersistenceError, match="default__vector_store.json holds 7 bytes.*truncated or replaced"
    ):
        load()
    vectors.write_bytes(saved)
    load()  # restored: loads again

    # a BM25 folder from another corpus: caught by the content hashes
    other = tmp_path / "other"
    HybridRetriever.from_defaults(nodes=store_nodes[:5], embed_model=keyword_embedding).persist(
        other
    )
    shutil.rmtree(folder / "bm25")
    shutil.copytree(other / "bm25", folder / "bm25")
    with pytest.raises(PersistenceError, match=r"bm25.*(truncated or replaced|does not match)"):
        load()
    hybrid.persist(folder)  # replaces the damaged folder
    (folder / "storage" / "docstore.json").unlink()
    with pytest.raises(PersistenceError, match="docstore.json is missing"):
        load()
    with pytest.raises(PersistenceError, match="hybrid_retriever.json is missing"):
        HybridRetriever.from_persist_dir(tmp_path, embed_model=keyword_embedding)


def test_wrong_encoder_dimension_is_refused(hybrid, tmp_path):
    from llama_index.core.embeddings import MockEmbedding

    hybrid.persist(tmp_path / "h")
    with pytest.raises(PersistenceError, match="pass embed_model="):
        HybridRetriever.from_persist_dir(tmp_path / "h", embed_model=MockEmbedding(embed_dim=7))


def test_usable_in_a_query_engine(hybrid):
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine

    engine = RetrieverQueryEngine.from_args(hybrid, llm=MockLLM())
    response = engine.query("apple return policy?")
    assert len(response.source_nodes) == 4


def test_bm25_side_is_ours(hybrid):
    assert isinstance(hybrid.sparse_retriever, BM25Retriever)
    assert isinstance(hybrid.dense_retriever, BaseRetriever)


def test_node_ids_stay_unique_across_sides(store_nodes, keyword_embedding):
    duplicate_text = [
        TextNode(id_=f"d{i}", text="apple return", metadata={"store": "grocery"}) for i in range(3)
    ]
    retriever = HybridRetriever.from_defaults(
        nodes=duplicate_text, embed_model=keyword_embedding, similarity_top_k=10
    )
    assert sorted(ids(retriever.retrieve("apple return"))) == ["d0", "d1", "d2"]


def test_one_query_bundle_searched_by_two_encoders_gets_each_ones_vector(store_nodes):
    # comparing a starting and a tuned stack on the same QueryBundle: the first retriever's
    # query vector must not be left in the bundle for the second to search with
    from tests.retrievers.conftest import HashEmbedding, KeywordEmbedding

    keyword = HybridRetriever.from_defaults(
        nodes=store_nodes, embed_model=KeywordEmbedding(), similarity_top_k=8, alpha=1.0
    )
    hashed = HybridRetriever.from_defaults(
        nodes=store_nodes, embed_model=HashEmbedding(dim=20), similarity_top_k=8, alpha=1.0
    )

    def ranking(hits):
        return [(h.node.node_id, round(h.score, 6)) for h in hits]

    text = "apple return policy"
    alone = ranking(hashed.retrieve(QueryBundle(text)))
    shared = QueryBundle(text)
    keyword.retrieve(shared)
    assert shared.embedding is None  # the caller's bundle is left as it was given
    assert ranking(hashed.retrieve(shared)) == alone
    assert ranking(asyncio.run(hashed.aretrieve(shared))) == alone
    # a vector the caller sets is used, not recomputed
    own = QueryBundle(text, embedding=HashEmbedding(dim=20).get_query_embedding(text))
    assert ranking(hashed.retrieve(own)) == alone
    other = QueryBundle(text, embedding=KeywordEmbedding().get_query_embedding(text))
    assert ranking(hashed.retrieve(other)) != alone
