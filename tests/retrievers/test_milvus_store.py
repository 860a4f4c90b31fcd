"""The hybrid retriever's dense side on Milvus Lite (in-process, on disk): same results as
FAISS, filters pushed down, persist/reopen, and collections or filters that cannot work
refused by name before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

from llama_index_ragtune.retrievers import HybridRetriever, PersistenceError
from tests.retrievers.conftest import HashEmbedding, topical_nodes

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")
milvus_store = pytest.importorskip("llama_index.vector_stores.milvus")
from milvus_lite.server_manager import server_manager_instance  # noqa: E402

MilvusVectorStore = milvus_store.MilvusVectorStore

MANIFEST = "hybrid_retriever.json"
DIM = HashEmbedding().dim
QUERIES = [
    "returns1 returns2 word3",
    "shipping5 warranty9",
    "grocery12 billing3 word40",
    "phones2 laptops7 laptops8",
    "hours1 hours30 word2 word9",
]
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
def nodes():
    return topical_nodes(300, seed=5)  # ids n0, n1, ...: Milvus takes any string id


@pytest.fixture(scope="module")
def embed():
    return HashEmbedding()


def _release(path: Path) -> None:
    """Stop this process's Milvus Lite server on ``path`` (it reopens from disk next time)."""
    server_manager_instance.release_server(str(path))


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "milvus.db"
    yield path
    _release(path)


def _store(path: Path, name: str = "docs", **kwargs) -> MilvusVectorStore:
    return MilvusVectorStore(uri=str(path), collection_name=name, **{"dim": DIM, **kwargs})


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


@pytest.fixture(scope="module")
def pair(nodes, embed, tmp_path_factory):
    """The same nodes and vectors on exact FAISS and on Milvus Lite (on disk)."""
    path = tmp_path_factory.mktemp("milvus") / "milvus.db"
    on_milvus = _hybrid(nodes, embed, _store(path), dense_top_k=20, sparse_top_k=20)
    on_faiss = _hybrid(nodes, embed, dense_top_k=20, sparse_top_k=20)
    yield on_faiss, on_milvus
    _release(path)


@pytest.mark.parametrize(
    "filters", FILTERS, ids=lambda f: "none" if f is None else f.model_dump_json()[:60]
)
def test_same_results_as_faiss(pair, filters):
    on_faiss, on_milvus = pair
    on_faiss, on_milvus = on_faiss.with_filters(filters), on_milvus.with_filters(filters)
    for query in QUERIES:
        dense = _dense(on_milvus, query)
        assert dense  # every filter lets nodes through
        _same(dense, _dense(on_faiss, query))
        _same(_fused(on_milvus, query), _fused(on_faiss, query))


async def test_aretrieve_on_the_async_client(pair):
    on_faiss, on_milvus = pair
    for query in QUERIES[:2]:
        _same(
            [(n.node.node_id, n.score) for n in await on_milvus.aretrieve(query)],
            _fused(on_faiss, query),
        )


def test_filters_are_pushed_down_to_milvus(nodes, embed, db):
    """A few allowed nodes of 300 fill the top-3: the filter ran inside Milvus, before its cut."""
    allowed = MetadataFilters(
        filters=[
            MetadataFilter(key="topic", value="billing"),
            MetadataFilter(key="rank", value=[2, 3], operator="in"),
        ]
    )
    retriever = _hybrid(nodes, embed, _store(db), dense_top_k=3, filters=allowed)
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


def test_persist_and_reopen_from_the_same_file(nodes, embed, db, tmp_path):
    fcntl = pytest.importorskip("fcntl")  # Milvus Lite locks its file with flock on Unix

    filters = MetadataFilters(filters=[MetadataFilter(key="year", value=2010, operator="<")])
    retriever = _hybrid(nodes, embed, _store(db, "kb"), filters=filters)
    before = {q: _fused(retriever, q) for q in QUERIES}
    retriever.persist(tmp_path / "hybrid")
    manifest = json.loads((tmp_path / "hybrid" / MANIFEST).read_text())
    dense = manifest["dense"]
    assert dense["kind"] == "milvus" and dense["collection"] == "kb"
    assert dense["location"] == {"path": str(db.resolve())}
    assert (dense["num_nodes"], dense["dimension"], dense["distance"]) == (300, DIM, "IP")
    assert not any("vector_store" in f and "default" in f for f in manifest["files"])

    # an open store can be handed over, or the recorded file reopened (one server per process)
    given = HybridRetriever.from_persist_dir(
        tmp_path / "hybrid", embed_model=embed, vector_store=_store(db, "kb")
    )
    reopened = HybridRetriever.from_persist_dir(tmp_path / "hybrid", embed_model=embed)
    for again in (given, reopened):
        assert again.filters == filters
        for query in QUERIES:
            _same(_fused(again, query), before[query])
    _release(db)  # ... and, with this process's server stopped, read back from disk
    from_disk = HybridRetriever.from_persist_dir(tmp_path / "hybrid", embed_model=embed)
    assert from_disk.filters == filters
    for query in QUERIES:
        _same(_fused(from_disk, query), before[query])

    _release(db)  # another process holding the file: Milvus Lite's own lock on it
    fd = os.open(db / "LOCK", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RuntimeError, match="could not be opened .* one process"):
            HybridRetriever.from_persist_dir(tmp_path / "hybrid", embed_model=embed)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- bad input


def test_a_collection_in_use_is_refused(nodes, embed, db):
    _hybrid(nodes[:50], embed, _store(db))
    with pytest.raises(ValueError, match="collection 'docs' already holds 50 entities"):
        _hybrid(nodes[50:100], embed, _store(db))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"dim": DIM + 3},
            f"holds vectors of dimension {DIM + 3}, .* returns {DIM}; pass dim={DIM}",
        ),
        ({"similarity_metric": "L2"}, "ranks by L2 distance"),
    ],
    ids=["dimension", "l2"],
)
def test_a_collection_that_cannot_take_the_vectors_is_refused(nodes, embed, db, kwargs, message):
    store = _store(db, **kwargs)
    with pytest.raises(ValueError, match=rf"collection 'docs' {message}"):
        _hybrid(nodes[:40], embed, store)
    assert store.client.get_collection_stats("docs")["row_count"] == 0


def test_a_collection_with_another_vector_field_is_refused(nodes, embed, db):
    _store(db, embedding_field="vec")
    store = MilvusVectorStore(uri=str(db), collection_name="docs")  # opens the existing one
    with pytest.raises(
        ValueError, match="no vector field named 'embedding'; pass embedding_field="
    ):
        _hybrid(nodes[:40], embed, store)


def test_a_cosine_collection_is_used(nodes, embed, db):
    store = _store(db, similarity_metric="COSINE")
    retriever = _hybrid(nodes[:40], embed, store)
    assert store.client.get_collection_stats("docs")["row_count"] == 40
    assert retriever.retrieve("returns1 returns2")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            MetadataFilter(key="topic", value="x", operator="text_match_insensitive"),
            "not supported by Milvus",
        ),
        (MetadataFilter(key="topic", value="bill", operator="text_match"), "prefix match"),
        (MetadataFilter(key="my key", value=1), "'my key' is not a Milvus identifier"),
        (MetadataFilter(key="id", value="n1"), "'id' is one of the collection's own fields"),
        (MetadataFilter(key="text", value="x"), "'text' is one of the collection's own fields"),
        (MetadataFilter(key="topic", value="a\\b"), "holds a backslash"),
    ],
    ids=["operator", "text-match", "key", "id", "text", "backslash"],
)
def test_filters_milvus_would_get_wrong_are_refused_when_set(embed, db, bad, message):
    metadata = {"topic": "billing", "my key": 1, "id": "m", "text": "t"}
    small = [TextNode(id_=f"m{i}", text=f"billing{i} word{i}", metadata=metadata) for i in range(8)]
    retriever = _hybrid(small, embed, _store(db))
    with pytest.raises(ValueError, match=f"cannot run on Milvus: .*{message}"):
        retriever.filters = MetadataFilters(filters=[bad])
    assert retriever.filters is None


def _persisted(nodes, embed, db, tmp_path):
    retriever = _hybrid(nodes[:60], embed, _store(db, "kb"))
    retriever.persist(tmp_path / "hybrid")
    return retriever.index.vector_store.client


def test_changed_collection_is_refused(nodes, embed, db, tmp_path):
    client = _persisted(nodes, embed, db, tmp_path)
    folder = tmp_path / "hybrid"
    client.drop_collection("kb")
    with pytest.raises(PersistenceError, match="collection 'kb' recorded in .* does not exist"):
        HybridRetriever.from_persist_dir(folder, embed_model=embed)
    _hybrid(nodes[100:110], embed, _store(db, "kb"))  # a different, smaller collection
    with pytest.raises(PersistenceError, match="holds 10 entities but .* records 60 nodes"):
        HybridRetriever.from_persist_dir(folder, embed_model=embed)
    client.drop_collection("kb")
    _store(db, "kb", dim=DIM - 1)
    with pytest.raises(PersistenceError, match=f"dimension {DIM - 1} under 'embedding', but"):
        HybridRetriever.from_persist_dir(folder, embed_model=embed)
    with pytest.raises(PersistenceError, match="records the collection 'kb', but .* uses 'other'"):
        HybridRetriever.from_persist_dir(
            folder, embed_model=embed, vector_store=_store(db, "other")
        )


def test_missing_local_database_is_refused(nodes, embed, db, tmp_path):
    _persisted(nodes, embed, db, tmp_path)
    manifest_path = tmp_path / "hybrid" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["dense"]["location"] = {"path": str(tmp_path / "moved.db")}
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(
        PersistenceError, match="Milvus Lite database .*moved.db, which does not exist"
    ):
        HybridRetriever.from_persist_dir(tmp_path / "hybrid", embed_model=embed)


def test_the_faiss_side_never_imports_milvus(tmp_path):
    """Milvus is an optional extra: building, persisting and reloading on FAISS leaves it out."""
    code = (
        "import sys\n"
        "from llama_index_ragtune.retrievers import HybridRetriever\n"
        "from tests.retrievers.conftest import HashEmbedding, topical_nodes\n"
        "embed = HashEmbedding()\n"
        "r = HybridRetriever.from_defaults(nodes=topical_nodes(40, seed=1), embed_model=embed,\n"
        "                                  dense_index='flat', micro_batch=False)\n"
        f"r.persist({str(tmp_path / 'hybrid')!r})\n"
        f"again = HybridRetriever.from_persist_dir({str(tmp_path / 'hybrid')!r}, embed_model=embed)\n"
        "assert again.retrieve('billing3 word2')\n"
        "optional = ('pymilvus', 'milvus_lite', 'llama_index.vector_stores.milvus')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(optional))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
