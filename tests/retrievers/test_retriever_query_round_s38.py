"""Hostile queries on the retrievers, round s38: a query vector that cannot rank (NaN, another
size; all zeros - a static model's vector for unknown tokens - searches with BM25 alone) and
metadata filters comparing a key with values of another type than the nodes hold."""

from __future__ import annotations

import asyncio
import math
import uuid

import pytest
from llama_index.core.schema import QueryBundle, TextNode
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from llama_index_ragtune.retrievers import BM25Retriever, HybridRetriever
from tests.retrievers.conftest import STORE_DOCS, KeywordEmbedding


class BrokenOnSomeQueries(KeywordEmbedding):
    """All zeros for queries saying "zzz", NaN for "nnn" (a model failing on some inputs)."""

    def _get_query_embedding(self, query: str) -> list[float]:
        vector = super()._get_query_embedding(query)
        if "zzz" in query:
            return [0.0] * len(vector)
        if "nnn" in query:
            return [math.nan] * len(vector)
        return vector


def nodes(uuid_ids: bool = False) -> list[TextNode]:
    return [
        TextNode(
            id_=str(uuid.uuid5(uuid.NAMESPACE_DNS, i)) if uuid_ids else i,
            text=text,
            metadata={"store": store, "n": k},
        )
        for k, (i, store, text) in enumerate(STORE_DOCS)
    ]


def hybrid(**kwargs) -> HybridRetriever:
    return HybridRetriever.from_defaults(
        nodes=kwargs.pop("nodes", None) or nodes(),
        embed_model=BrokenOnSomeQueries(),
        similarity_top_k=4,
        **kwargs,
    )


# ------------------------------------------------------------ a query vector that cannot rank


@pytest.mark.parametrize("micro_batch", [True, False], ids=["batched", "one-by-one"])
def test_a_nan_query_vector_is_refused_naming_the_query(micro_batch):
    query = "apple return nnn"
    retriever = hybrid(micro_batch=micro_batch)
    match = rf"query embedding of '{query}' holds NaN.*embedding model"
    with pytest.raises(ValueError, match=match):
        retriever.retrieve(query)
    with pytest.raises(ValueError, match=match):
        asyncio.run(retriever.aretrieve(query))

    # other queries are served as before, concurrent ones in the same batch too
    async def both():
        return await asyncio.gather(
            retriever.aretrieve("apple return"), retriever.aretrieve(query), return_exceptions=True
        )

    good, bad = asyncio.run(both())
    assert isinstance(bad, ValueError) and good[0].node.node_id == "g1"


def _bm25_order(query: str) -> list[str]:
    return [hit.node.node_id for hit in BM25Retriever(nodes(), similarity_top_k=4).retrieve(query)]


@pytest.mark.parametrize("micro_batch", [True, False], ids=["batched", "one-by-one"])
def test_an_all_zero_query_vector_searches_with_bm25_alone(micro_batch, caplog):
    # a static embedding model gives zeros to a text of tokens it does not know (a product
    # code): every document was equally similar and the dense side's arbitrary order was
    # fused ("store opening hours" came 4th for "apple return")
    query = "apple return zzz"
    retriever = hybrid(micro_batch=micro_batch)
    with caplog.at_level("WARNING", logger="llama_index_ragtune.retrievers.checks"):
        hits = retriever.retrieve(query)
    assert [hit.node.node_id for hit in hits] == _bm25_order(query)
    assert all(hit.dense_rank is None and hit.sparse_rank is not None for hit in hits)
    assert f"{query!r} is all zeros" in caplog.text and "BM25 alone" in caplog.text

    async def both():
        return await asyncio.gather(retriever.aretrieve("apple return"), retriever.aretrieve(query))

    good, zero = asyncio.run(both())
    assert [hit.node.node_id for hit in zero] == _bm25_order(query)
    assert good[0].node.node_id == "g1" and good[0].dense_rank is not None


def test_a_zero_vector_given_in_the_bundle_searches_with_bm25_alone():
    hits = hybrid().retrieve(QueryBundle("apple return", embedding=[0.0] * 20))
    assert [hit.node.node_id for hit in hits] == _bm25_order("apple return")


def test_the_vector_check_reads_real_vectors_as_before():
    from llama_index_ragtune.retrievers.checks import check_query_vector

    assert check_query_vector([0.0, 1e-30], "tiny but not zero")
    assert check_query_vector([-0.6, 0.8], "negative values")
    assert not check_query_vector([0.0, 0.0], "unknown tokens")
    with pytest.raises(ValueError, match=r"'x{77}\.\.\.' holds NaN"):  # long queries shortened
        check_query_vector([math.inf, 0.1], "x" * 500)


def test_on_qdrant_the_query_is_named_too():
    qdrant_client = pytest.importorskip("qdrant_client")
    qdrant = pytest.importorskip("llama_index.vector_stores.qdrant")
    client = qdrant_client.QdrantClient(location=":memory:")
    try:
        retriever = hybrid(
            nodes=nodes(uuid_ids=True),
            dense_index=qdrant.QdrantVectorStore(collection_name="s38", client=client),
            micro_batch=False,
        )
        # was: a raw "Query vector must not contain NaN"
        with pytest.raises(ValueError, match=r"'apple nnn' holds NaN"):
            retriever.retrieve("apple nnn")
        # was: an arbitrary dense order fused in
        assert all(hit.dense_rank is None for hit in retriever.retrieve("apple zzz"))
        # a caller's vector of another size: was a raw numpy "shapes not aligned" error
        with pytest.raises(ValueError, match=r"'apple' has shape \(7,\) but the index holds 20-d"):
            retriever.retrieve(QueryBundle("apple", embedding=[0.1] * 7))
        assert len(retriever.retrieve("apple return")) == 4
    finally:
        client.close()


def test_on_milvus_the_query_is_named_too(tmp_path):
    pytest.importorskip("milvus_lite")
    milvus = pytest.importorskip("llama_index.vector_stores.milvus")
    from milvus_lite.server_manager import server_manager_instance

    path = tmp_path / "milvus.db"
    try:
        store = milvus.MilvusVectorStore(uri=str(path), collection_name="s38", dim=20)
        retriever = hybrid(dense_index=store, micro_batch=False)
        assert all(hit.dense_rank is None for hit in retriever.retrieve("apple zzz"))
        with pytest.raises(ValueError, match=r"'apple' has shape \(7,\) but the index holds 20-d"):
            retriever.retrieve(QueryBundle("apple", embedding=[0.1] * 7))
        assert len(retriever.retrieve("apple return")) == 4
    finally:
        server_manager_instance.release_server(str(path))


# ------------------------------------------------------------ filter values of another type


def _filters(key, value, op=FilterOperator.EQ) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=op)])


@pytest.mark.parametrize(
    ("key", "value", "op", "fix"),
    [
        ("n", "1", FilterOperator.EQ, r"\(1, not '1'\)"),  # a number from a URL's query string
        ("n", "1", FilterOperator.NE, r"\(1, not '1'\)"),  # matched every node
        ("n", ["1", "2"], FilterOperator.IN, "each item"),
        ("n", "2.5", FilterOperator.GT, r"\(2\.5, not '2\.5'\)"),  # was a raw comparison error
        ("store", 5, FilterOperator.EQ, r"\('5', not 5\)"),
    ],
)
def test_a_filter_value_of_another_type_than_the_metadata_is_refused(key, value, op, fix):
    # was: [] from both sides (or every node for !=), with no word of why
    filters = _filters(key, value, op)
    for build in (
        lambda: BM25Retriever.from_defaults(nodes=nodes(), filters=filters),
        lambda: hybrid(filters=filters),
    ):
        with pytest.raises(ValueError, match=rf"{key!r} .*holds a .*can never match.*{fix}"):
            build()


def test_a_refused_filter_value_leaves_the_old_filters_in_place():
    retriever = hybrid(filters=_filters("n", 1))
    with pytest.raises(ValueError, match="can never match"):
        retriever.filters = _filters("n", "1")
    assert retriever.filters.filters[0].value == 1
    assert [n.node.node_id for n in retriever.retrieve("milk refund")] == ["g2"]


def test_filter_values_of_a_kind_some_node_holds_are_taken():
    mixed = nodes() + [TextNode(id_="x", text="apple note", metadata={"n": "seven"})]
    assert (
        BM25Retriever.from_defaults(nodes=mixed, filters=_filters("n", "seven"))
        .retrieve("apple")[0]
        .node.node_id
        == "x"
    )
    # an int and a float are one kind, as Python compares them
    assert [n.node.node_id for n in hybrid(filters=_filters("n", 1.0)).retrieve("milk")] == ["g2"]
    # text matches and is_empty compare no value
    hybrid(filters=_filters("store", "groc", FilterOperator.TEXT_MATCH))
