"""FilterableFaissVectorStore: exact filtered top-k (vs brute force), normalisation, persistence."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

from llama_index_ragtune.retrievers import FilterableFaissVectorStore, PersistenceError


@pytest.fixture()
def vectors():
    rng = np.random.default_rng(0)
    return rng.normal(size=(60, 8)).astype(np.float32)


@pytest.fixture()
def store(vectors):
    store = FilterableFaissVectorStore(faiss.IndexFlatIP(8))
    nodes = [
        TextNode(
            id_=f"n{i}",
            text=f"t{i}",
            embedding=v.tolist(),
            metadata={"shard": i % 3, "tag": "even" if i % 2 == 0 else "odd"},
        )
        for i, v in enumerate(vectors)
    ]
    assert store.add(nodes) == [str(i) for i in range(60)]
    return store


def brute_force(vectors, query, allowed, k):
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = query / np.linalg.norm(query)
    scores = unit @ q
    order = [i for i in np.argsort(-scores) if allowed[i]]
    return [str(i) for i in order[:k]], scores


@pytest.mark.parametrize(
    "filters, allowed_fn",
    [
        (MetadataFilters(filters=[MetadataFilter(key="shard", value=1)]), lambda i: i % 3 == 1),
        (
            MetadataFilters(
                filters=[
                    MetadataFilter(key="shard", value=2),
                    MetadataFilter(key="tag", value="even"),
                ],
                condition=FilterCondition.AND,
            ),
            lambda i: i % 3 == 2 and i % 2 == 0,
        ),
        (
            MetadataFilters(
                filters=[MetadataFilter(key="shard", value=[0, 2], operator=FilterOperator.IN)]
            ),
            lambda i: i % 3 != 1,
        ),
    ],
)
def test_filtered_top_k_is_exact(store, vectors, filters, allowed_fn):
    rng = np.random.default_rng(1)
    allowed = [allowed_fn(i) for i in range(60)]
    for _ in range(5):
        query = rng.normal(size=8).astype(np.float32)
        result = store.query(
            VectorStoreQuery(query_embedding=query.tolist(), similarity_top_k=7, filters=filters)
        )
        expected, scores = brute_force(vectors, query, allowed, 7)
        assert result.ids == expected
        assert result.similarities == pytest.approx([scores[int(i)] for i in expected], abs=1e-5)


def test_top_k_larger_than_allowed_returns_only_allowed(store):
    filters = MetadataFilters(
        filters=[MetadataFilter(key="shard", value=0), MetadataFilter(key="tag", value="odd")]
    )
    result = store.query(
        VectorStoreQuery(query_embedding=[1.0] * 8, similarity_top_k=50, filters=filters)
    )
    assert len(result.ids) == 10 and all(int(i) % 6 == 3 for i in result.ids)
    nothing = MetadataFilters(filters=[MetadataFilter(key="shard", value=9)])
    assert (
        store.query(
            VectorStoreQuery(query_embedding=[1.0] * 8, similarity_top_k=5, filters=nothing)
        ).ids
        == []
    )


def test_persist_round_trip_and_errors(store, tmp_path):
    path = str(tmp_path / "vs.json")
    store.persist(path)
    loaded = FilterableFaissVectorStore.from_persist_path(path)
    filters = MetadataFilters(filters=[MetadataFilter(key="tag", value="even")])
    query = VectorStoreQuery(query_embedding=[0.5] * 8, similarity_top_k=4, filters=filters)
    assert loaded.query(query).ids == store.query(query).ids
    (tmp_path / "vs.json.metadata.json").unlink()
    with pytest.raises(PersistenceError, match="metadata for filters"):
        FilterableFaissVectorStore.from_persist_path(path)


def test_wrong_dimension_is_refused():
    store = FilterableFaissVectorStore(faiss.IndexFlatIP(4))
    with pytest.raises(ValueError, match="dimension 4"):
        store.add([TextNode(text="x", embedding=[1.0, 2.0])])
