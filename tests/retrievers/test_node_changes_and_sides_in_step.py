"""Changing the nodes of a live HybridRetriever, and sides that fell out of step.

``insert_nodes`` / ``update_nodes`` / ``delete_nodes`` keep BM25, the dense index (FAISS,
Qdrant, Milvus Lite) and the docstore in step, through ``persist`` / ``from_persist_dir``;
bad calls are refused naming the ids and change nothing; an index changed behind the
retriever's back is detected at query time instead of answering from one side only."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

from llama_index_ragtune.retrievers import HybridRetriever
from tests.retrievers.conftest import STORE_DOCS, HashEmbedding, KeywordEmbedding, topical_nodes

ELECTRONICS = MetadataFilters(filters=[MetadataFilter(key="store", value="electronics")])


def _nodes(uuid_ids: bool = False) -> list[TextNode]:
    return [
        TextNode(id_=_id(node_id, uuid_ids), text=text, metadata={"store": store, "key": node_id})
        for node_id, store, text in STORE_DOCS
    ]


def _id(key: str, uuid_ids: bool) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key)) if uuid_ids else key


def _node(key: str, text: str, store: str = "electronics", uuid_ids: bool = False) -> TextNode:
    return TextNode(id_=_id(key, uuid_ids), text=text, metadata={"store": store, "key": key})


WARRANTY = ("w1", "Laptop battery warranty: returns of a laptop battery within 30 days.")
MILK = ("w1", "Fresh milk guarantee: milk refund in two days.", "grocery")


def _hybrid(nodes, **kwargs) -> HybridRetriever:
    return HybridRetriever.from_defaults(
        nodes=nodes, embed_model=KeywordEmbedding(), similarity_top_k=4, **kwargs
    )


def _sides(retriever: HybridRetriever) -> dict[str, list[str]]:
    index = retriever.index
    return {
        "bm25": sorted(n.node_id for n in retriever.sparse_retriever.nodes),
        "dense": sorted(index.index_struct.nodes_dict.values()),
        "docstore": sorted(index.docstore.docs),
    }


def _in_step(retriever: HybridRetriever) -> list[str]:
    sides = _sides(retriever)
    assert sides["bm25"] == sides["dense"] == sides["docstore"], sides
    return sides["bm25"]


def _results(retriever: HybridRetriever, query: str) -> list[tuple]:
    return [
        (n.node.node_id, n.node.text, n.dense_rank, n.sparse_rank, round(n.score, 6))
        for n in retriever.retrieve(query)
    ]


QUERIES = ["laptop battery warranty returns", "fresh milk refund", "apple return", "store hours"]


# ------------------------------------------------------------------ FAISS: changes in step


@pytest.mark.parametrize("dense_index", ["flat", "hnsw"])
def test_insert_update_delete_match_a_retriever_built_over_the_same_nodes(dense_index):
    retriever = _hybrid(_nodes(), dense_index=dense_index)
    retriever.insert_nodes([_node(*WARRANTY)])
    assert "w1" in _in_step(retriever)
    assert _results(retriever, QUERIES[0])[0][:4] == ("w1", WARRANTY[1], 1, 1)

    retriever.update_nodes([_node(*MILK)])
    assert _results(retriever, QUERIES[1])[0][:4] == ("w1", MILK[1], 1, 1)
    assert WARRANTY[1] not in {r[1] for q in QUERIES for r in _results(retriever, q)}

    retriever.delete_nodes(["w1", "g2"])
    final = _in_step(retriever)
    assert "w1" not in final and "g2" not in final
    assert retriever.index.vector_store.client.ntotal == len(final)
    fresh = _hybrid([n for n in _nodes() if n.node_id != "g2"], dense_index=dense_index)
    for query in QUERIES:
        assert _results(retriever, query) == _results(fresh, query)


def test_changes_survive_persist_and_reload(tmp_path):
    retriever = _hybrid(_nodes())
    retriever.insert_nodes([_node(*WARRANTY)])
    retriever.delete_nodes(["g3"])
    retriever.update_nodes([_node("e3", "Phone cases ship free in one day.")])
    retriever.persist(tmp_path / "h")
    again = HybridRetriever.from_persist_dir(tmp_path / "h", embed_model=KeywordEmbedding())
    assert _in_step(again) == _in_step(retriever)
    for query in [*QUERIES, "phone case ship"]:
        assert _results(again, query) == _results(retriever, query)
    again.insert_nodes([_node("w2", "Opened laptop box returns within 14 days.")])
    assert "w2" in _in_step(again)


@pytest.mark.parametrize("micro_batch", [True, False])
def test_filters_hold_for_inserted_and_updated_nodes(micro_batch):
    retriever = _hybrid(_nodes(), filters=ELECTRONICS, micro_batch=micro_batch)
    retriever.insert_nodes([_node(*WARRANTY), _node("m1", "Fresh milk refund.", "grocery")])
    got = {n.node.node_id for q in QUERIES for n in retriever.retrieve(q)}
    assert "w1" in got and "m1" not in got
    assert {retriever.index.docstore.get_node(i).metadata["store"] for i in got} == {"electronics"}
    retriever.update_nodes([_node("w1", WARRANTY[1], store="grocery")])
    assert "w1" not in {n.node.node_id for n in retriever.retrieve(QUERIES[0])}


# ------------------------------------------------------------------ refused, nothing changed


def _refused(retriever, call, error, match):
    before = (_sides(retriever), [_results(retriever, q) for q in QUERIES])
    with pytest.raises(error, match=match):
        call()
    assert (_sides(retriever), [_results(retriever, q) for q in QUERIES]) == before


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda r: r.insert_nodes([_node("g1", "Apple again.")]), ValueError, r"\['g1'\] are already indexed.*update_nodes"),
        (lambda r: r.insert_nodes([_node("x", "a"), _node("x", "b")]), ValueError, "duplicate node id 'x'"),
        (lambda r: r.insert_nodes([TextNode(id_="x", text="  \n")]), ValueError, r"\['x'\] have empty or whitespace-only text"),
        (lambda r: r.insert_nodes(["plain text"]), TypeError, "item 0 is str"),
        (lambda r: r.update_nodes([_node("nope", "Apple.")]), ValueError, r"\['nope'\] are not indexed; use insert_nodes"),
        (lambda r: r.delete_nodes(["g1", "nope"]), ValueError, r"\['nope'\] are not indexed"),
        (lambda r: r.delete_nodes("g1"), TypeError, r"wrap a single id in a list: \['g1'\]"),
        (lambda r: r.delete_nodes(["g1", "g1"]), ValueError, "listed more than once"),
        (lambda r: r.delete_nodes([n[0] for n in STORE_DOCS]), ValueError, "would leave no node"),
    ],
)  # fmt: skip
def test_bad_changes_are_refused_by_name_and_change_nothing(call, error, match):
    retriever = _hybrid(_nodes())
    _refused(retriever, lambda: call(retriever), error, match)


def test_a_change_that_would_orphan_the_filters_is_refused_first():
    nodes = _nodes()
    nodes[0].metadata["promo"] = "spring"
    retriever = _hybrid(nodes)
    retriever.filters = MetadataFilters(filters=[MetadataFilter(key="promo", value="spring")])
    _refused(
        retriever, lambda: retriever.delete_nodes(["g1"]), ValueError, "nothing changed.*'promo'"
    )


class _FailingEmbedding(KeywordEmbedding):
    def _get_text_embedding(self, text: str) -> list[float]:
        if "boom" in text:
            raise RuntimeError("encoder down")
        return super()._get_text_embedding(text)

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return [self._get_text_embedding(t) for t in texts]


def test_an_encoder_failure_during_insert_changes_nothing():
    retriever = HybridRetriever.from_defaults(
        nodes=_nodes(), embed_model=_FailingEmbedding(), similarity_top_k=4
    )
    update = [_node("g1", "boom apple"), _node("e1", "Opened phone returns.")]
    _refused(retriever, lambda: retriever.update_nodes(update), RuntimeError, "encoder down")


def test_ivfpq_deletes_are_refused_and_change_nothing():
    nodes = topical_nodes(300, seed=2)
    retriever = HybridRetriever.from_defaults(
        nodes=nodes, embed_model=HashEmbedding(), dense_index="ivfpq", similarity_top_k=4
    )
    before = _sides(retriever)
    with pytest.raises(ValueError, match="IVF-PQ.*from_defaults"):
        retriever.delete_nodes([nodes[0].node_id])
    assert _sides(retriever) == before
    retriever.insert_nodes([TextNode(id_="new", text="returns1 returns2 word3")])
    assert "new" in _in_step(retriever)


# ------------------------------------------------------------------ out of step: detected


@pytest.mark.parametrize("micro_batch", [True, False])
def test_an_index_changed_directly_is_detected_not_answered_half(micro_batch):
    retriever = _hybrid(_nodes(), micro_batch=micro_batch)
    embedded = _node(*WARRANTY)
    embedded.embedding = KeywordEmbedding().get_text_embedding(WARRANTY[1])
    retriever.index.insert_nodes([embedded])  # the dense side only
    with pytest.raises(RuntimeError, match="changed directly.*insert_nodes / update_nodes"):
        retriever.retrieve(QUERIES[0])


async def test_a_copy_made_before_a_change_is_detected():
    retriever = _hybrid(_nodes())
    copy = retriever.with_filters(ELECTRONICS)
    retriever.update_nodes([_node("e1", "Opened phones: no returns.")])
    with pytest.raises(RuntimeError, match="call with_filters again"):
        await copy.aretrieve(QUERIES[2])
    assert retriever.with_filters(ELECTRONICS).retrieve(QUERIES[2])


def test_custom_sides_cannot_be_changed_and_say_so():
    base = _hybrid(_nodes())
    custom = HybridRetriever(
        dense_retriever=base.index.as_retriever(), sparse_retriever=base.sparse_retriever
    )
    with pytest.raises(NotImplementedError, match="custom dense retriever"):
        custom.insert_nodes([_node(*WARRANTY)])


# ------------------------------------------------------------------ Qdrant and Milvus Lite


def _qdrant(client, name="docs", **kwargs) -> HybridRetriever:
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    store = QdrantVectorStore(collection_name=name, client=client)
    return _hybrid(_nodes(uuid_ids=True), dense_index=store, **kwargs)


def _keys(retriever, query):
    return [
        (n.node.metadata["key"], n.dense_rank, n.sparse_rank) for n in retriever.retrieve(query)
    ]


def test_qdrant_memory_changes_in_step_with_filters():
    qdrant_client = pytest.importorskip("qdrant_client")
    pytest.importorskip("llama_index.vector_stores.qdrant")
    retriever = _qdrant(qdrant_client.QdrantClient(":memory:"), filters=ELECTRONICS)
    with pytest.raises(ValueError, match="insert_nodes: node 'w1'.*UUIDs"):
        retriever.insert_nodes([_node(*WARRANTY)])
    retriever.insert_nodes([_node(*WARRANTY, uuid_ids=True)])
    assert _keys(retriever, QUERIES[0])[0] == ("w1", 1, 1)
    retriever.update_nodes([_node(*MILK, uuid_ids=True)])  # now grocery: filtered out
    assert "w1" not in {k for k, *_ in _keys(retriever, QUERIES[1])}
    retriever.filters = None
    assert _keys(retriever, QUERIES[1])[0] == ("w1", 1, 1)
    retriever.delete_nodes([_id("w1", True), _id("g2", True)])
    assert len(_in_step(retriever)) == 7
    assert retriever.index.vector_store.client.count("docs").count == 7
    assert not {"w1", "g2"} & {k for q in QUERIES for k, *_ in _keys(retriever, q)}


def test_qdrant_on_disk_round_trip_and_direct_delete_detected(tmp_path):
    qdrant_client = pytest.importorskip("qdrant_client")
    pytest.importorskip("llama_index.vector_stores.qdrant")
    client = qdrant_client.QdrantClient(path=str(tmp_path / "q"))
    retriever = _qdrant(client)
    retriever.insert_nodes([_node(*WARRANTY, uuid_ids=True)])
    retriever.delete_nodes([_id("g3", True)])
    retriever.persist(tmp_path / "h")
    expected = [_keys(retriever, q) for q in QUERIES]
    client.close()
    again = HybridRetriever.from_persist_dir(tmp_path / "h", embed_model=KeywordEmbedding())
    assert [_keys(again, q) for q in QUERIES] == expected
    again.insert_nodes([_node("w2", "Opened laptop box returns.", uuid_ids=True)])  # reloaded index
    assert _id("w2", True) in _in_step(again)
    again.index.delete_nodes([_id("g1", True)], delete_from_docstore=True)  # behind its back
    with pytest.raises(RuntimeError, match="changed directly"):
        again.retrieve(QUERIES[2])
    again.index.vector_store.client.close()


async def test_filters_a_database_reads_differently_after_a_change_fail_closed(tmp_path):
    """was: the filters were removed, so the next query answered unfiltered (grocery nodes
    from a retriever filtered to exclude them); now queries and persist are refused until
    the filters are set again."""
    qdrant_client = pytest.importorskip("qdrant_client")
    pytest.importorskip("llama_index.vector_stores.qdrant")
    not_grocery = MetadataFilters(
        filters=[MetadataFilter(key="store", value="grocery", operator="!=")]
    )
    client = qdrant_client.QdrantClient(path=str(tmp_path / "q"))
    retriever = _qdrant(client, filters=not_grocery)
    assert {n.node.metadata["store"] for q in QUERIES for n in retriever.retrieve(q)} == {
        "electronics"
    }
    # Qdrant's != drops a node without the key; LlamaIndex's in-memory != (BM25) keeps it
    keyless = TextNode(id_=_id("k1", True), text="Fresh milk returns.", metadata={"key": "k1"})
    with pytest.raises(ValueError, match="nodes were changed.*cannot run exactly on Qdrant"):
        retriever.insert_nodes([keyless])
    assert retriever.filters == not_grocery  # kept, not silently dropped
    with pytest.raises(RuntimeError, match="set retriever.filters to filters both sides read"):
        retriever.retrieve(QUERIES[1])
    with pytest.raises(RuntimeError, match="set retriever.filters"):
        await retriever.aretrieve(QUERIES[1])
    with pytest.raises(RuntimeError, match="set retriever.filters"):
        retriever.persist(tmp_path / "h")
    assert not (tmp_path / "h").exists()
    retriever.filters = ELECTRONICS  # read alike by both sides: serving again
    stores = {n.node.metadata.get("store") for q in QUERIES for n in retriever.retrieve(q)}
    assert stores == {"electronics"}
    retriever.persist(tmp_path / "h")
    client.close()


def test_milvus_lite_changes_in_step_and_round_trip(tmp_path):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    milvus = pytest.importorskip("llama_index.vector_stores.milvus")
    from milvus_lite.server_manager import server_manager_instance

    db = tmp_path / "m.db"
    try:
        store = milvus.MilvusVectorStore(uri=str(db), collection_name="docs", dim=len(VOCAB_DIM))
        retriever = _hybrid(_nodes(), dense_index=store)
        retriever.insert_nodes([_node(*WARRANTY)])
        assert _keys(retriever, QUERIES[0])[0] == ("w1", 1, 1)
        retriever.update_nodes([_node(*MILK)])
        assert _keys(retriever, QUERIES[1])[0] == ("w1", 1, 1)
        retriever.delete_nodes(["w1", "g2"])
        assert len(_in_step(retriever)) == 7
        retriever.persist(tmp_path / "h")
        again = HybridRetriever.from_persist_dir(
            tmp_path / "h", embed_model=KeywordEmbedding(), vector_store=store
        )
        assert [_keys(again, q) for q in QUERIES] == [_keys(retriever, q) for q in QUERIES]
    finally:
        server_manager_instance.release_server(str(db))


VOCAB_DIM = KeywordEmbedding().get_text_embedding("x")


# ------------------------------------------------------------------ filters with an empty docstore


def _qdrant_text_index(client, nodes):
    """A plain VectorStoreIndex on Qdrant: the store keeps the text, the docstore stays empty."""
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    store = QdrantVectorStore(collection_name="text", client=client)
    context = StorageContext.from_defaults(vector_store=store)
    index = VectorStoreIndex(nodes, storage_context=context, embed_model=KeywordEmbedding())
    assert not index.docstore.docs
    return index


def test_an_empty_docstore_still_checks_filters_against_the_bm25_nodes():
    qdrant_client = pytest.importorskip("qdrant_client")
    pytest.importorskip("llama_index.vector_stores.qdrant")
    from llama_index_ragtune.retrievers import BM25Retriever

    nodes = _nodes(uuid_ids=True)
    nodes[0].metadata["dept"] = "x"
    index = _qdrant_text_index(qdrant_client.QdrantClient(":memory:"), nodes)
    retriever = HybridRetriever.from_defaults(
        index=index, sparse_retriever=BM25Retriever(nodes), embed_model=KeywordEmbedding()
    )
    # Qdrant's != drops the 7 nodes without "dept"; the BM25 side keeps them: the dense side
    # would silently answer nothing
    differ = MetadataFilters(filters=[MetadataFilter(key="dept", value="x", operator="!=")])
    with pytest.raises(ValueError, match="cannot run exactly on Qdrant.*selects 0 of the 8"):
        retriever.filters = differ
    assert retriever.filters is None
    retriever.filters = ELECTRONICS  # read alike: accepted
    assert {n.node.metadata["store"] for n in retriever.retrieve("apple return")} == {"electronics"}


def test_a_misspelt_key_is_refused_on_a_database_side_whatever_the_lexical_side(caplog):
    qdrant_client = pytest.importorskip("qdrant_client")
    store_module = pytest.importorskip("llama_index.vector_stores.qdrant")
    from llama_index.core.retrievers import BaseRetriever

    class NoLexical(BaseRetriever):
        def _retrieve(self, query_bundle):
            return []

    typo = MetadataFilters(filters=[MetadataFilter(key="stroe", value="grocery")])
    client = qdrant_client.QdrantClient(":memory:")
    store = store_module.QdrantVectorStore(collection_name="docs", client=client)
    seen = HybridRetriever.from_defaults(
        nodes=_nodes(uuid_ids=True),
        embed_model=KeywordEmbedding(),
        dense_index=store,
        sparse_retriever=NoLexical(),
    )
    with pytest.raises(ValueError, match=r"\['stroe'\] appear in no node indexed by the Qdrant"):
        seen.filters = typo
    unseen = HybridRetriever.from_defaults(
        index=_qdrant_text_index(client, _nodes(uuid_ids=True)),
        sparse_retriever=NoLexical(),
        embed_model=KeywordEmbedding(),
    )
    unseen.filters = typo  # nothing to check against: said, not silent
    assert "their keys and their Qdrant semantics are not checked" in caplog.text


# ------------------------------------------------------------------ JSON naming a key twice


def _key_twice(path, key: str) -> None:
    text = path.read_text()
    value = json.dumps(json.loads(text)[key])
    path.write_text("{" + f'"{key}": {value}, ' + text.lstrip()[1:])


@pytest.mark.parametrize("what", ["hybrid", "bm25", "faiss metadata"])
def test_persisted_json_naming_a_key_twice_is_refused_naming_key_and_file(tmp_path, what):
    from llama_index_ragtune.retrievers import BM25Retriever, PersistenceError
    from llama_index_ragtune.retrievers.faiss_store import FilterableFaissVectorStore

    retriever = _hybrid(_nodes())
    retriever.persist(tmp_path / "h")
    retriever.sparse_retriever.persist(tmp_path / "b")
    retriever.index.vector_store.persist(str(tmp_path / "f"))
    path, key, load = {
        "hybrid": (
            tmp_path / "h" / "hybrid_retriever.json",
            "format_version",
            lambda: HybridRetriever.from_persist_dir(
                tmp_path / "h", embed_model=KeywordEmbedding()
            ),
        ),
        "bm25": (
            tmp_path / "b" / "bm25_retriever.json",
            "params",
            lambda: BM25Retriever.from_persist_dir(tmp_path / "b"),
        ),
        "faiss metadata": (
            tmp_path / "f.metadata.json",
            "faiss_sha256",
            lambda: FilterableFaissVectorStore.from_persist_path(str(tmp_path / "f")),
        ),
    }[what]
    _key_twice(path, key)
    with pytest.raises(
        PersistenceError,
        match=rf"{re.escape(path.name)} is corrupt\W+the key '{key}' appears twice",
    ):
        load()


# ------------------------------------------------------------------ changes while queries run


@pytest.mark.parametrize("micro_batch", [False, True])
def test_queries_running_while_nodes_change_see_one_consistent_state(micro_batch):
    """A live help centre changes its nodes while users ask: every query sees the sides
    either before or after a change (never one side changed and the other not, which was a
    RuntimeError from the in-step check, or a node missing from the docstore), and the
    change waits only for the queries already running."""
    import threading

    retriever = _hybrid(_nodes(), micro_batch=micro_batch)
    known = {n.node_id for n in _nodes()}
    errors: list[BaseException] = []
    stop = threading.Event()
    seen: list[str] = []

    def ask() -> None:
        while not stop.is_set():
            try:
                for query in QUERIES:
                    seen.extend(n.node.node_id for n in retriever.retrieve(query))
            except BaseException as exc:  # noqa: BLE001 - recorded and asserted below
                errors.append(exc)
                return

    askers = [threading.Thread(target=ask) for _ in range(4)]
    for thread in askers:
        thread.start()
    try:
        for round_ in range(30):
            retriever.insert_nodes([_node(f"w{round_}", f"Laptop battery warranty case {round_}.")])
            retriever.update_nodes([_node(f"w{round_}", f"Fresh milk refund case {round_}.")])
            retriever.delete_nodes([f"w{round_}"])
    finally:
        stop.set()
        for thread in askers:
            thread.join()
    assert errors == []
    assert set(_in_step(retriever)) == known
    assert seen and set(seen) <= known | {f"w{i}" for i in range(30)}


async def test_async_queries_of_one_event_loop_and_changes_from_a_thread_do_not_deadlock():
    """Coroutines hold the lock across ``await``; one that must wait for a swap yields the
    loop and holds no worker thread (the sides' own ``to_thread`` calls need them), so the
    others of the same loop finish and the swap can run."""
    import asyncio
    import threading

    retriever = _hybrid(_nodes(), micro_batch=False)
    done = threading.Event()

    def change() -> None:
        for round_ in range(15):
            retriever.insert_nodes([_node(f"a{round_}", f"Apple return case {round_}.")])
            retriever.delete_nodes([f"a{round_}"])
        done.set()

    writer = threading.Thread(target=change)
    writer.start()
    answers = 0
    while not done.is_set():
        results = await asyncio.wait_for(
            asyncio.gather(*(retriever.aretrieve(q) for q in QUERIES * 3)), timeout=60
        )
        answers += len(results)
    writer.join(timeout=60)
    assert not writer.is_alive() and answers > 0
    assert set(_in_step(retriever)) == {n.node_id for n in _nodes()}


def test_a_waiting_change_lets_running_queries_finish_and_holds_new_ones():
    """The lock's order, step by step: a swap waits for the reader already in; a reader that
    comes while the swap waits goes after it (else a stream of queries starves changes);
    and a thread may read again while it reads, even with the swap waiting."""
    import threading
    import time

    from llama_index_ragtune.retrievers.hybrid_update import SidesLock

    lock, order = SidesLock(), []
    reader_in, late_trying = threading.Event(), threading.Event()

    def _until(condition) -> None:
        for _ in range(2000):
            if condition():
                return
            time.sleep(0.005)

    def first_reader() -> None:
        with lock.reading():
            reader_in.set()
            _until(lambda: lock._waiting)  # the swap is queued
            with lock.reading():  # nested in this thread: no deadlock with the waiting swap
                late_trying.wait(10)
                time.sleep(0.2)  # room for the late reader to get in, were it let in
                order.append("first reader out")

    def swap() -> None:
        reader_in.wait(10)
        with lock.writing():
            order.append("swap")

    def late_reader() -> None:
        reader_in.wait(10)
        _until(lambda: lock._waiting)
        late_trying.set()
        with lock.reading():
            order.append("late reader")

    threads = [threading.Thread(target=f) for f in (first_reader, swap, late_reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert order == ["first reader out", "swap", "late reader"]
