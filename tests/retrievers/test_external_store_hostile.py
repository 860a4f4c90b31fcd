"""A Qdrant collection that cannot take the hybrid retriever's vectors is refused, naming it,
before anything is written (was a raw Qdrant error, or distances fused as similarities)."""

from __future__ import annotations

import pytest

from llama_index_ragtune.retrievers import HybridRetriever
from tests.retrievers.conftest import HashEmbedding, topical_nodes

qdrant_client = pytest.importorskip("qdrant_client")
qdrant_store = pytest.importorskip("llama_index.vector_stores.qdrant")
QdrantClient = qdrant_client.QdrantClient
QdrantVectorStore = qdrant_store.QdrantVectorStore
qm = qdrant_client.models


@pytest.fixture(scope="module")
def nodes():
    return topical_nodes(40, seed=3, uuid_ids=True)


@pytest.fixture(scope="module")
def embed():
    return HashEmbedding()


@pytest.fixture()
def client():
    client = QdrantClient(location=":memory:")
    yield client
    client.close()


def _build(nodes, embed, client, name):
    return HybridRetriever.from_defaults(
        nodes=nodes,
        embed_model=embed,
        dense_index=QdrantVectorStore(collection_name=name, client=client),
        micro_batch=False,
    )


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (lambda d: qm.VectorParams(size=d + 3, distance=qm.Distance.COSINE), "vectors of size"),
        (
            lambda d: {"other": qm.VectorParams(size=d, distance=qm.Distance.COSINE)},
            "no dense vector named 'text-dense'",
        ),
        (lambda d: qm.VectorParams(size=d, distance=qm.Distance.EUCLID), "Euclid distance"),
        (lambda d: qm.VectorParams(size=d, distance=qm.Distance.MANHATTAN), "Manhattan"),
    ],
    ids=["dimension", "vector-name", "euclid", "manhattan"],
)
def test_an_empty_collection_that_cannot_take_the_vectors_is_refused(
    nodes, embed, client, vectors, message
):
    dimension = len(embed.get_text_embedding("probe"))
    client.create_collection("docs", vectors_config=vectors(dimension))
    with pytest.raises(ValueError, match=rf"collection 'docs'.*{message}"):
        _build(nodes, embed, client, "docs")
    assert client.count("docs", exact=True).count == 0


@pytest.mark.parametrize("distance", ["COSINE", "DOT"])
def test_an_empty_collection_that_fits_is_used(nodes, embed, client, distance):
    dimension = len(embed.get_text_embedding("probe"))
    client.create_collection(
        "docs",
        vectors_config={
            "text-dense": qm.VectorParams(size=dimension, distance=getattr(qm.Distance, distance))
        },
    )
    retriever = _build(nodes, embed, client, "docs")
    assert client.count("docs", exact=True).count == len(nodes)
    assert retriever.retrieve("returns1 returns2")
