"""The hybrid retriever's dense side on Qdrant (local mode, in-process): same results as FAISS,
filters pushed down, persist/reload, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

from llama_index_ragtune.retrievers import HybridRetriever, PersistenceError
from tests.retrievers.conftest import HashEmbedding, topical_nodes

qdrant_client = pytest.importorskip("qdrant_client")
qdrant_store = pytest.importorskip("llama_index.vector_stores.qdrant")
QdrantClient = qdrant_client.QdrantClient
QdrantVectorStore = qdrant_store.QdrantVectorStore

MANIFEST = "hybrid_retriever.json"
QUERIES = [
    "returns1 returns2 word3",
    "shipping5 warranty9",
    "grocery12 billing3 word40",
    "phones2 laptops7 laptops8",
    "hours1 hours30 word2 word9",
]


@pytest.fixture(scope="module")
def nodes():
    return topical_nodes(300, seed=5, uuid_ids=True)


@pytest.fixture(scope="module")
def embed():
    return HashEmbedding()


def _store(client, name: str = "docs") -> QdrantVectorStore:
    return QdrantVectorStore(collection_name=name, client=client)


def _hybrid(nodes, embed, dense_index="flat", **kwargs) -> HybridRetriever:
    return HybridRetriever.from_defaults(
        nodes=nodes, embed_model=embed, dense_index=dense_index, micro_batch=False, **kwargs
    )


def _dense(retriever: HybridRetriever, query: str) -> list[tuple[str, float]]:
    return [(n.node.node_id, n.score) for n in retriever.dense_retriever.retrieve(query)]


def _fused(retriever: HybridRetriever, query: str) -> list[tuple[str, float]]:
    return [(n.node.node_id, n.score) for n in retriever.retrieve(query)]


def _same(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> None:
    assert [i for i, _ in a] == [i for i, _ in b]
    assert np.allclose([s for _, s in a], [s for _, s in b], atol=1e-5)


FILTERS = [
    None,
    MetadataFilters(filters=[MetadataFilter(key="topic", value="billing")]),
    MetadataFilters(filters=[MetadataFilter(key="year", value=2010, operator=">=")]),
    MetadataFilters(filters=[MetadataFilter(key="rank", value=[1, 3], operator="in")]),
    MetadataFilters(filters=[MetadataFilter(key="topic", value="returns", operator="!=")]),
    MetadataFilters(filters=[MetadataFilter(key="rank", value=[0, 6], operator="nin")]),
    MetadataFilters(
        filters=[
            MetadataFilter(key="topic", value="hours"),
            MetadataFilter(key="year", value=2005, operator="<"),
        ],
        condition="or",
    ),
]


@pytest.fixture(scope="module")
def pair(nodes, embed, tmp_path_factory):
    """The same nodes and vectors on exact FAISS and on Qdrant local mode (on disk)."""
    client = QdrantClient(path=str(tmp_path_factory.mktemp("qdrant") / "data"))
    on_qdrant = _hybrid(nodes, embed, _store(client), dense_top_k=20, sparse_top_k=20)
    on_faiss = _hybrid(nodes, embed, dense_top_k=20, sparse_top_k=20)
    yield on_faiss, on_qdrant
    client.close()


@pytest.mark.parametrize(
    "filters", FILTERS, ids=lambda f: "none" if f is None else f.model_dump_json()[:60]
)
def test_same_results_as_faiss(pair, filters):
    on_faiss, on_qdrant = pair
    on_faiss, on_qdrant = on_faiss.with_filters(filters), on_qdrant.with_filters(filters)
    for query in QUERIES:
        dense = _dense(on_qdrant, query)
        assert dense  # every filter lets nodes through
        _same(dense, _dense(on_faiss, query))
        _same(_fused(on_qdrant, query), _fused(on_faiss, query))


def test_filters_are_pushed_down_to_qdrant(nodes, embed):
    """A few allowed nodes of 300 fill the top-3: the filter ran inside Qdrant, before its cut."""
    client = QdrantClient(":memory:")
    allowed = MetadataFilters(
        filters=[
            MetadataFilter(key="topic", value="billing"),
            MetadataFilter(key="rank", value=[2, 3], operator="in"),
        ]
    )
    retriever = _hybrid(nodes, embed, _store(client), dense_top_k=3, filters=allowed)
    unfiltered = retriever.with_filters(None)
    expected = {
        n.node_id
        for n in nodes
        if n.metadata["topic"] == "billing" and n.metadata["rank"] in (2, 3)
    }
    assert len(expected) >= 3
    lost_by_post_filtering = 0
    for query in QUERIES:
        got = {n.node.node_id for n in retriever.dense_retriever.retrieve(query)}
        assert len(got) == 3 and got <= expected
        plain = {n.node.node_id for n in unfiltered.dense_retriever.retrieve(query)}
        lost_by_post_filtering += len(plain & expected) < 3
    assert lost_by_post_filtering  # filtering after the store's top-3 would have come up short


def test_persist_and_reload_from_the_local_path(nodes, embed, tmp_path):
    path = tmp_path / "qdrant"
    client = QdrantClient(path=str(path))
    filters = MetadataFilters(filters=[MetadataFilter(key="year", value=2010, operator="<")])
    retriever = _hybrid(nodes, embed, _store(client, "kb"), filters=filters)
    before = {q: _fused(retriever, q) for q in QUERIES}
    retriever.persist(tmp_path / "hybrid")
    manifest = json.loads((tmp_path / "hybrid" / MANIFEST).read_text())
    dense = manifest["dense"]
    assert dense["kind"] == "qdrant" and dense["collection"] == "kb"
    assert dense["location"] == {"path": str(path.resolve())}
    assert (dense["num_nodes"], dense["dimension"], dense["distance"]) == (300, 32, "Cosine")
    files = set(manifest["files"])
    assert not any("vector_store" in f and "default" in f for f in files)  # vectors stay in Qdrant

    with pytest.raises(
        RuntimeError, match="open in another client .* pass its store as vector_store="
    ):
        HybridRetriever.from_persist_dir(tmp_path / "hybrid", embed_model=embed)
    # the open store can be handed over ...
    again = HybridRetriever.from_persist_dir(
        tmp_path / "hybrid", embed_model=embed, vector_store=_store(client, "kb")
    )
    for query in QUERIES:
        _same(_fused(again, query), before[query])
    client.close()
    # ... or, once closed, reopened from the recorded path
    again = HybridRetriever.from_persist_dir(tmp_path / "hybrid", embed_model=embed)
    assert again.filters == filters
    for query in QUERIES:
        _same(_fused(again, query), before[query])
    again.index.vector_store.client.close()


async def test_aretrieve_without_an_async_client(pair):
    on_faiss, on_qdrant = pair
    for query in QUERIES[:2]:
        _same(
            [(n.node.node_id, n.score) for n in await on_qdrant.aretrieve(query)],
            _fused(on_faiss, query),
        )


# ---------------------------------------------------------------------- bad input


def test_non_uuid_node_ids_are_refused(embed):
    client = QdrantClient(":memory:")
    named = topical_nodes(20, seed=6)  # ids n0, n1, ...
    with pytest.raises(ValueError, match=r"node 'n0' \(position 0\) cannot be stored in Qdrant"):
        _hybrid(named, embed, _store(client))


def test_a_collection_in_use_is_refused(nodes, embed):
    client = QdrantClient(":memory:")
    _hybrid(nodes[:50], embed, _store(client))
    with pytest.raises(ValueError, match="collection 'docs' already holds 50 points"):
        _hybrid(nodes[50:100], embed, _store(client))


def test_in_memory_collection_cannot_be_persisted(nodes, embed, tmp_path):
    retriever = _hybrid(nodes[:50], embed, _store(QdrantClient(":memory:")))
    with pytest.raises(ValueError, match="in-memory client .* use QdrantClient\\(path=...\\)"):
        retriever.persist(tmp_path / "hybrid")
    assert not (tmp_path / "hybrid").exists()


def test_unsupported_operator_is_refused_when_set(nodes, embed):
    retriever = _hybrid(nodes[:50], embed, _store(QdrantClient(":memory:")))
    contains = MetadataFilters(
        filters=[MetadataFilter(key="topic", value="x", operator="contains")]
    )
    with pytest.raises(ValueError, match="cannot run on Qdrant: .*CONTAINS is not supported"):
        retriever.filters = contains


def _persisted(nodes, embed, tmp_path, name: str = "kb"):
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    _hybrid(nodes[:60], embed, _store(client, name)).persist(tmp_path / "hybrid")
    return client


def test_changed_collection_is_refused(nodes, embed, tmp_path):
    client = _persisted(nodes, embed, tmp_path)
    client.delete_collection("kb")
    with pytest.raises(PersistenceError, match="collection 'kb' recorded in .* does not exist"):
        HybridRetriever.from_persist_dir(
            tmp_path / "hybrid", embed_model=embed, vector_store=_store(client, "kb")
        )
    _hybrid(nodes[100:110], embed, _store(client, "kb"))  # a different, smaller collection
    with pytest.raises(PersistenceError, match="holds 10 points but .* records 60 nodes"):
        HybridRetriever.from_persist_dir(
            tmp_path / "hybrid", embed_model=embed, vector_store=_store(client, "kb")
        )
    with pytest.raises(PersistenceError, match="records the collection 'kb', but .* uses 'other'"):
        HybridRetriever.from_persist_dir(
            tmp_path / "hybrid", embed_model=embed, vector_store=_store(client, "other")
        )
    client.close()


def test_missing_local_storage_is_refused(nodes, embed, tmp_path):
    client = _persisted(nodes, embed, tmp_path)
    client.close()
    manifest_path = tmp_path / "hybrid" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["dense"]["location"] = {"path": str(tmp_path / "moved")}
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(
        PersistenceError, match="local Qdrant storage .*moved, which does not exist"
    ):
        HybridRetriever.from_persist_dir(tmp_path / "hybrid", embed_model=embed)


def test_vector_store_override_on_a_faiss_folder_is_refused(nodes, embed, tmp_path):
    _hybrid(nodes[:40], embed).persist(tmp_path / "hybrid")
    with pytest.raises(TypeError, match="holds its FAISS index itself"):
        HybridRetriever.from_persist_dir(
            tmp_path / "hybrid", embed_model=embed, vector_store=_store(QdrantClient(":memory:"))
        )


def test_the_faiss_side_never_imports_qdrant(tmp_path):
    """Qdrant is an optional extra: building, persisting and reloading on FAISS leaves it out."""
    code = (
        "import sys\n"
        "from llama_index_ragtune.retrievers import HybridRetriever\n"
        "from tests.retrievers.conftest import HashEmbedding, topical_nodes\n"
        "embed = HashEmbedding()\n"
        "r = HybridRetriever.from_defaults(nodes=topical_nodes(40, seed=1), embed_model=embed,\n"
        "                                  dense_index='hnsw', micro_batch=False)\n"
        f"r.persist({str(tmp_path / 'hybrid')!r})\n"
        f"again = HybridRetriever.from_persist_dir({str(tmp_path / 'hybrid')!r}, embed_model=embed)\n"
        "assert again.retrieve('billing3 word2')\n"
        "loaded = sorted(m for m in sys.modules if 'qdrant' in m)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def _node_ids_sent(monkeypatch) -> list:
    """The ``node_ids`` of every query the Qdrant integration receives (the real store answers)."""
    sent: list = []
    original = QdrantVectorStore.query

    def query(self, query, **kwargs):
        sent.append(query.node_ids)
        return original(self, query, **kwargs)

    monkeypatch.setattr(QdrantVectorStore, "query", query)
    return sent


def test_a_collection_of_its_own_gets_no_id_list_per_query(nodes, embed, tmp_path, monkeypatch):
    """LlamaIndex's as_retriever sends every node id with each query (an id clause as long as
    the corpus); a collection holding exactly the index's nodes needs none, same results."""
    client = QdrantClient(path=str(tmp_path / "q"))
    retriever = _hybrid(nodes, embed, dense_index=_store(client))
    sent = _node_ids_sent(monkeypatch)
    reference = _hybrid(nodes, embed)
    for filters in FILTERS[:3]:
        filtered = retriever.with_filters(filters)
        for query in QUERIES:
            _same(_dense(filtered, query), _dense(reference.with_filters(filters), query))
    assert sent and all(ids is None for ids in sent)
    client.close()


def test_a_shared_collection_answers_for_the_index_only(nodes, embed, tmp_path, monkeypatch):
    from llama_index.core import StorageContext, VectorStoreIndex

    from llama_index_ragtune.retrievers import BM25Retriever

    client = QdrantClient(path=str(tmp_path / "q"))
    store = _store(client)
    ours, theirs = nodes[:150], nodes[150:]
    for part in (theirs, ours):  # another index's nodes share the collection
        for node in part:
            node.embedding = embed.get_text_embedding(node.get_content(metadata_mode="embed"))
        index = VectorStoreIndex(
            part,
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=embed,
            store_nodes_override=True,
        )
    retriever = HybridRetriever(
        index=index, sparse_retriever=BM25Retriever(ours), embed_model=embed, micro_batch=False
    )
    sent = _node_ids_sent(monkeypatch)
    mine = {n.node_id for n in ours}
    for query in QUERIES:
        hits = retriever.dense_retriever.retrieve(query)
        assert hits and {h.node.node_id for h in hits} <= mine
    assert sent and all(set(ids) == mine for ids in sent)
    for node in nodes:
        node.embedding = None
    client.close()
