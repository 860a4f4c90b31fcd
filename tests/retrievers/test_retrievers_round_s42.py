"""Round s42: hostile input for the retrievers and the FAISS store.

A direct FAISS ``persist`` racing an ``add``; metadata JSON would change; a cancelled
``aretrieve`` whose side search runs on in a thread (Qdrant local mode, the FAISS batch);
NaN metadata through persist / load and ``is_empty``; NaN vectors added to the store;
bad ``keep_positions``.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
import uuid

import faiss
import numpy as np
import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters, VectorStoreQuery

from llama_index_ragtune.retrievers import HybridRetriever
from llama_index_ragtune.retrievers.faiss_store import FilterableFaissVectorStore
from tests.retrievers.conftest import STORE_DOCS, KeywordEmbedding


def _store_nodes(uuid_ids: bool = False, **extra) -> list[TextNode]:
    return [
        TextNode(
            id_=str(uuid.uuid5(uuid.NAMESPACE_URL, key)) if uuid_ids else key,
            text=text,
            metadata={"store": store, "key": key, **extra},
        )
        for key, store, text in STORE_DOCS
    ]


def _vector_nodes(prefix: str, count: int, rng, **metadata) -> list[TextNode]:
    return [
        TextNode(
            id_=f"{prefix}-{i}",
            text="x",
            metadata={"batch": prefix, **metadata},
            embedding=rng.standard_normal(16).tolist(),
        )
        for i in range(count)
    ]


# ------------------------------------------------------------------ FAISS persist during add


def test_a_direct_faiss_persist_never_reads_half_an_add_from_another_thread(tmp_path):
    """was: 30 of 30 persists taken while another thread added wrote a FAISS file and a
    metadata file of different sizes ('lists 270050 vectors but v.faiss holds 259850')."""
    rng = np.random.default_rng(0)
    store = FilterableFaissVectorStore(faiss.IndexFlatIP(16))
    store.add(_vector_nodes("seed", 10, rng))
    stop = threading.Event()
    added = []

    def adder() -> None:
        batch = 0
        while not stop.is_set() and batch < 400:
            store.add(_vector_nodes(f"b{batch}", 50, np.random.default_rng(batch)))
            added.append(batch)
            batch += 1

    thread = threading.Thread(target=adder)
    thread.start()
    sizes = []
    try:
        for i in range(12):
            path = tmp_path / f"v{i}.faiss"
            store.persist(str(path))
            loaded = FilterableFaissVectorStore.from_persist_path(str(path))
            total = loaded.client.ntotal
            assert len(loaded._masks.metadata) == total
            # whole batches only: the persist saw an add before or after, never within
            assert (total - 10) % 50 == 0
            sizes.append(total)
    finally:
        stop.set()
        thread.join()
    assert added and len(set(sizes)) > 1  # the adds really ran between the persists


# ------------------------------------------------------------------ metadata JSON would change


@pytest.mark.parametrize(
    ("value", "kind"),
    [(b"\x00bytes", "bytes"), ({1, 2}, "set"), (datetime.date(2024, 1, 1), "date")],
)
def test_faiss_persist_refuses_metadata_json_would_change_naming_node_and_key(
    tmp_path, value, kind
):
    """was: stringified by ``default=str`` (b'x' came back as the text "b'x'", a set as
    '{1, 2}'), so the loaded store filtered other values than the saved one."""
    rng = np.random.default_rng(1)
    store = FilterableFaissVectorStore(faiss.IndexFlatIP(16))
    nodes = _vector_nodes("n", 3, rng)
    nodes[1].metadata["odd"] = value
    store.add(nodes)
    path = tmp_path / "v.faiss"
    with pytest.raises(
        TypeError, match=rf"node 'n-1' \(position 1\) has metadata 'odd' of type {kind}"
    ):
        store.persist(str(path))
    assert not path.exists() and not (tmp_path / "v.faiss.metadata.json").exists()
    # the hybrid persist refuses the same metadata by the same node and key
    retriever = HybridRetriever.from_defaults(
        nodes=[
            TextNode(id_="n-1", text="apple return", metadata={"odd": value}),
            TextNode(id_="n-2", text="store hours", metadata={"odd": "x"}),
        ],
        embed_model=KeywordEmbedding(),
    )
    with pytest.raises(TypeError, match=rf"node 'n-1' has metadata 'odd' of type {kind}"):
        retriever.persist(tmp_path / "h")


def test_faiss_persist_refuses_a_key_that_is_not_a_string_and_keeps_the_old_files(tmp_path):
    rng = np.random.default_rng(2)
    store = FilterableFaissVectorStore(faiss.IndexFlatIP(16))
    store.add(_vector_nodes("n", 2, rng))
    path = tmp_path / "v.faiss"
    store.persist(str(path))
    before = path.read_bytes(), (tmp_path / "v.faiss.metadata.json").read_bytes()
    store.add([TextNode(id_="k", text="x", metadata={"nested": {1: "a"}}, embedding=[1.0] * 16)])
    with pytest.raises(
        TypeError, match=r"node 'k' \(position 2\) has the metadata key \['nested'\]\[1\]"
    ):
        store.persist(str(path))
    assert (path.read_bytes(), (tmp_path / "v.faiss.metadata.json").read_bytes()) == before
    # a loaded store knows positions only, and still persists what it loaded
    loaded = FilterableFaissVectorStore.from_persist_path(str(path))
    loaded.persist(str(tmp_path / "again.faiss"))
    assert (
        FilterableFaissVectorStore.from_persist_path(str(tmp_path / "again.faiss")).client.ntotal
        == 2
    )


# ------------------------------------------------------------------ a cancelled aretrieve


def _record_calls(obj, name: str, events: list, delay: float) -> None:
    """Wrap ``obj.name`` so each call is recorded and starts ``delay`` seconds late (the real
    method still runs)."""
    real = getattr(obj, name)

    def slow(*args, **kwargs):
        events.append(("search start", time.monotonic()))
        time.sleep(delay)
        try:
            return real(*args, **kwargs)
        finally:
            events.append(("search end", time.monotonic()))

    setattr(obj, name, slow)


async def _cancel_then_insert(retriever, events, node) -> None:
    task = asyncio.create_task(retriever.aretrieve("apple return"))
    while not events:  # the side search has started
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    events.append(("cancelled", time.monotonic()))

    def insert() -> None:
        events.append(("insert start", time.monotonic()))
        retriever.insert_nodes([node])
        events.append(("insert end", time.monotonic()))

    await asyncio.to_thread(insert)


def _when(events, name) -> float:
    return next(t for e, t in events if e == name)


def test_a_cancelled_aretrieve_on_qdrant_local_holds_the_sides_until_its_search_ends(tmp_path):
    """was: the cancel released the lock at once, and insert_nodes ran (0.18-0.23 s) while
    the orphaned Qdrant search thread went on (to 0.50 s)."""
    qdrant_client = pytest.importorskip("qdrant_client")
    qdrant = pytest.importorskip("llama_index.vector_stores.qdrant")
    client = qdrant_client.QdrantClient(path=str(tmp_path / "q"))
    try:
        store = qdrant.QdrantVectorStore(collection_name="docs", client=client)
        retriever = HybridRetriever.from_defaults(
            nodes=_store_nodes(uuid_ids=True), embed_model=KeywordEmbedding(), dense_index=store
        )
        events: list = []
        _record_calls(client, "query_points", events, delay=0.4)
        new = TextNode(id_=str(uuid.uuid5(uuid.NAMESPACE_URL, "w1")), text="Laptop warranty.")
        asyncio.run(_cancel_then_insert(retriever, events, new))
        assert _when(events, "search end") <= _when(events, "cancelled")
        assert _when(events, "search end") <= _when(events, "insert start")
        assert new.node_id in {n.node.node_id for n in retriever.retrieve("laptop warranty")}
    finally:
        client.close()


def test_a_side_failing_waits_for_the_other_sides_search_before_the_error(tmp_path):
    """was: gather raised the first side's error at once, the other side's thread searching on
    after the lock was released."""
    qdrant_client = pytest.importorskip("qdrant_client")
    qdrant = pytest.importorskip("llama_index.vector_stores.qdrant")
    from llama_index.core.retrievers import BaseRetriever

    class Failing(BaseRetriever):
        def _retrieve(self, query_bundle):
            raise RuntimeError("lexical side down")

    client = qdrant_client.QdrantClient(":memory:")
    store = qdrant.QdrantVectorStore(collection_name="docs", client=client)
    retriever = HybridRetriever.from_defaults(
        nodes=_store_nodes(uuid_ids=True),
        embed_model=KeywordEmbedding(),
        dense_index=store,
        sparse_retriever=Failing(),
    )
    events: list = []
    _record_calls(client, "query_points", events, delay=0.3)

    async def query() -> None:
        with pytest.raises(RuntimeError, match="lexical side down"):
            await retriever.aretrieve("apple return")
        events.append(("raised", time.monotonic()))

    asyncio.run(query())
    assert [e for e, _ in events] == ["search start", "search end", "raised"]


def test_a_cancelled_batched_faiss_aretrieve_holds_the_sides_until_its_batch_ends(monkeypatch):
    events: list = []
    real = FilterableFaissVectorStore.query

    def slow(self, query, **kwargs):
        events.append(("search start", time.monotonic()))
        time.sleep(0.3)
        try:
            return real(self, query, **kwargs)
        finally:
            events.append(("search end", time.monotonic()))

    retriever = HybridRetriever.from_defaults(nodes=_store_nodes(), embed_model=KeywordEmbedding())
    monkeypatch.setattr(FilterableFaissVectorStore, "query", slow)
    new = TextNode(id_="w1", text="Laptop warranty.", metadata={"store": "electronics"})
    asyncio.run(_cancel_then_insert(retriever, events, new))
    assert _when(events, "search end") <= _when(events, "insert start")
    monkeypatch.undo()
    assert retriever.retrieve("laptop warranty")[0].node.node_id == "w1"


async def test_a_timeout_around_aretrieve_is_still_a_timeout_after_the_wait():
    retriever = HybridRetriever.from_defaults(
        nodes=_store_nodes(), embed_model=KeywordEmbedding(), micro_batch=False
    )
    sparse = retriever.sparse_retriever
    real = sparse.retrieve
    ended = []

    def slow(query):
        time.sleep(0.3)
        ended.append(time.monotonic())
        return real(query)

    object.__setattr__(sparse, "retrieve", slow)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await retriever.aretrieve("apple return")
    assert ended  # the BM25 thread had finished when the timeout was raised
    object.__setattr__(sparse, "retrieve", real)
    assert (await retriever.aretrieve("apple return"))[0].node.node_id


# ------------------------------------------------------------------ NaN metadata


def _price_nodes() -> list[TextNode]:
    nodes = [
        TextNode(id_=key, text=text, metadata={"store": store, "price": float(i)})
        for i, (key, store, text) in enumerate(STORE_DOCS)
    ]
    nodes[0].metadata["price"] = float("nan")
    nodes[1].metadata["price"] = float("inf")
    return nodes


def _price(op: str, value) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key="price", value=value, operator=op)])


def test_nan_and_infinite_metadata_filter_alike_before_and_after_persist(tmp_path):
    """NaN reads as a missing value for comparisons (dropped by '>', kept by '!='), the same
    on both sides, and comes back from docstore.json / the FAISS metadata file unchanged."""
    retriever = HybridRetriever.from_defaults(
        nodes=_price_nodes(), embed_model=KeywordEmbedding(), similarity_top_k=10
    )
    retriever.persist(tmp_path / "h")
    again = HybridRetriever.from_persist_dir(tmp_path / "h", embed_model=KeywordEmbedding())
    for op, value in ((">", 2.0), ("<", 100.0), ("!=", 3.0)):
        before = [
            (n.node.node_id, n.dense_rank is not None, n.sparse_rank is not None)
            for n in retriever.with_filters(_price(op, value)).retrieve("apple return grocery")
        ]
        after = [
            (n.node.node_id, n.dense_rank is not None, n.sparse_rank is not None)
            for n in again.with_filters(_price(op, value)).retrieve("apple return grocery")
        ]
        assert before == after
        ids = {node_id for node_id, *_ in before}
        assert ("g1" in ids) == (op == "!="), (op, ids)  # NaN: only '!=' keeps it
        assert ("g2" in ids) == (op in (">", "!=")), (op, ids)  # inf > 2, not < 100
    stored = again.index.vector_store._masks.metadata
    assert np.isnan(stored[0]["price"]) and stored[1]["price"] == float("inf")


def test_is_empty_on_a_key_holding_nan_is_refused_naming_the_key_and_fix():
    """was: is_empty silently skipped the NaN nodes (LlamaIndex counts only None, '' and []
    as empty), though a NaN is how pandas writes a missing value."""
    retriever = HybridRetriever.from_defaults(
        nodes=_price_nodes(), embed_model=KeywordEmbedding(), similarity_top_k=10
    )
    kept = _price(">", 2.0)
    retriever.filters = kept
    with pytest.raises(ValueError, match=r"'price' is_empty: nodes .* hold NaN.*Store None"):
        retriever.filters = _price("is_empty", None)
    assert retriever.filters == kept
    nodes = _price_nodes()
    nodes[0].metadata["price"] = None  # what the message says to do
    fixed = HybridRetriever.from_defaults(
        nodes=nodes,
        embed_model=KeywordEmbedding(),
        similarity_top_k=10,
        filters=_price("is_empty", None),
    )
    assert {n.node.node_id for n in fixed.retrieve("apple return grocery")} == {"g1"}


# ------------------------------------------------------------------ the FAISS store's own input


def test_faiss_add_refuses_nan_vectors_naming_the_nodes_and_adds_nothing():
    """was: added, and never found by any search."""
    store = FilterableFaissVectorStore(faiss.IndexFlatIP(4))
    store.add([TextNode(id_="ok", text="x", embedding=[1.0, 0, 0, 0])])
    bad = [
        TextNode(id_="fine", text="x", embedding=[0, 1.0, 0, 0]),
        TextNode(id_="nan", text="x", embedding=[float("nan"), 0, 0, 0]),
        TextNode(id_="inf", text="x", embedding=[float("inf"), 0, 0, 0]),
    ]
    with pytest.raises(ValueError, match=r"2 node\(s\) hold NaN or infinite.*\['nan', 'inf'\]"):
        store.add(bad)
    assert store.client.ntotal == 1 and len(store._masks.metadata) == 1
    found = store.query(VectorStoreQuery(query_embedding=[1.0, 0, 0, 0], similarity_top_k=5))
    assert found.ids == ["0"]


@pytest.mark.parametrize(
    ("positions", "error", "match"),
    [
        ([0, 0], ValueError, "position 0 is given twice"),
        ([-1], ValueError, r"position -1 is outside the 3 stored vectors \(0..2\)"),
        ([7], ValueError, "position 7 is outside"),
        ([0.5], TypeError, "position 0.5 is float"),
        (["1"], TypeError, "position '1' is str"),
        ([True], TypeError, "position True is bool"),
        ("12", TypeError, "list of int positions, got str"),
    ],
)
def test_keep_positions_refuses_bad_positions_and_changes_nothing(positions, error, match):
    """was: [0, 0] stored a vector twice, -1 kept the last one, 0.5 the first, 7 a FAISS
    message blaming the index type."""
    store = FilterableFaissVectorStore(faiss.IndexFlatIP(4))
    store.add([TextNode(id_=f"n{i}", text="x", embedding=[1.0, i, 0, 0]) for i in range(3)])
    with pytest.raises(error, match=match):
        store.keep_positions(positions)
    assert store.client.ntotal == 3 and store._node_ids == ["n0", "n1", "n2"]
    store.keep_positions(np.array([2, 0]))
    assert store.client.ntotal == 2 and store._node_ids == ["n2", "n0"]


@pytest.mark.parametrize(
    ("leaf", "match"),
    [
        (MetadataFilter(key="n", value=float("nan"), operator="<"), "holds NaN"),
        (MetadataFilter(key="nn", value=1), r"key\(s\) \['nn'\] appear in no node"),
        (MetadataFilter(key="n", value="1"), r"pass the value as a number \(1, not '1'\)"),
    ],
)
def test_a_direct_faiss_query_refuses_filters_that_can_never_match(leaf, match):
    """was: ``index.as_retriever(filters=...)`` over the store (its documented use) silently
    returned nothing, where the hybrid retriever names the filter."""
    store = FilterableFaissVectorStore(faiss.IndexFlatIP(4))
    store.add(
        [
            TextNode(id_=f"n{i}", text="x", metadata={"n": i}, embedding=[1.0, i, 0, 0])
            for i in range(3)
        ]
    )

    def query(*leaves):
        filters = MetadataFilters(filters=list(leaves))
        return VectorStoreQuery(query_embedding=[1.0, 0, 0, 0], similarity_top_k=3, filters=filters)

    with pytest.raises(ValueError, match=match):
        store.query(query(leaf))
    assert store.query(query(MetadataFilter(key="n", value=1))).ids == ["1"]
    empty = FilterableFaissVectorStore(faiss.IndexFlatIP(4))  # nothing to check against yet
    assert empty.query(query(leaf)).ids == []
