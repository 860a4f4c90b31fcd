"""Hostile query-time use of the hybrid retriever, round s41: node changes asked for on an
event loop whose coroutines are querying (hung forever), FAISS grown while it is searched
(a segmentation fault), metadata filters nested past what pydantic and Python can walk (raw
serialisation / recursion errors), and long ``in`` / ``nin`` lists (nodes x values)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.core.vector_stores.utils import build_metadata_filter_fn

from llama_index_ragtune.retrievers import BM25Retriever, HybridRetriever
from llama_index_ragtune.retrievers.filters import MAX_FILTER_DEPTH, build_filter_fn
from tests.retrievers.conftest import STORE_DOCS, KeywordEmbedding


class SlowAsyncEmbedding(KeywordEmbedding):
    """Query vectors that take 0.3 s to come back (a remote encoder): awaited on the event
    loop, or in the batch worker's thread."""

    def _get_query_embedding(self, query: str) -> list[float]:
        time.sleep(0.3)
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        await asyncio.sleep(0.3)
        return self._vector(query)


def _nodes() -> list[TextNode]:
    return [
        TextNode(id_=i, text=text, metadata={"store": store, "n": k})
        for k, (i, store, text) in enumerate(STORE_DOCS)
    ]


def _hybrid(**kwargs) -> HybridRetriever:
    return HybridRetriever.from_defaults(
        nodes=_nodes(), embed_model=kwargs.pop("embed_model", KeywordEmbedding()), **kwargs
    )


def _ids(hits) -> list[str]:
    return [hit.node.node_id for hit in hits]


def _run_bounded(coroutine_fn, seconds: float = 20.0):
    """``asyncio.run(coroutine_fn())`` in a thread; a hang fails the test instead of the run."""
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coroutine_fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "hung: the event loop never came back"
    if "error" in box:
        raise box["error"]
    return box["result"]


GIFT = TextNode(id_="x1", text="Gift cards never expire.", metadata={"store": "grocery", "n": 99})


# ------------------------------------------------- node changes beside coroutine queries


@pytest.mark.parametrize("micro_batch", [True, False], ids=["batched", "one-by-one"])
def test_a_change_on_the_loop_thread_while_its_aretrieve_runs_is_refused_not_hung(micro_batch):
    # an async web app: one handler awaits a query, another calls insert_nodes on the loop
    retriever = _hybrid(embed_model=SlowAsyncEmbedding(), micro_batch=micro_batch)

    async def app():
        query = asyncio.create_task(retriever.aretrieve("apple return"))
        await asyncio.sleep(0.05)  # the query holds the sides, awaiting its vector
        with pytest.raises(RuntimeError, match=r"aretrieve.*asyncio\.to_thread") as refused:
            retriever.insert_nodes([GIFT])
        results = await query
        await asyncio.to_thread(retriever.insert_nodes, [GIFT])  # the fix the error names
        return refused.value, results, await retriever.aretrieve("gift cards expire")

    error, results, after = _run_bounded(app)
    assert "Nothing was changed" in str(error)
    assert _ids(results)[:2] == ["g1", "e1"] and "x1" not in _ids(results)
    assert "x1" in _ids(after)
    assert len(retriever.sparse_retriever.nodes) == len(STORE_DOCS) + 1


def test_a_sync_query_in_a_coroutine_runs_while_a_change_waits_for_that_loop():
    retriever = _hybrid(embed_model=SlowAsyncEmbedding(), micro_batch=False)

    async def app():
        query = asyncio.create_task(retriever.aretrieve("apple return"))
        await asyncio.sleep(0.05)
        change = threading.Thread(target=retriever.insert_nodes, args=([GIFT],), daemon=True)
        change.start()
        time.sleep(0.2)  # the change now waits for the coroutine's query
        sync_hits = retriever.retrieve("apple return")  # waited for the change: forever
        results = await query
        await asyncio.to_thread(change.join, 10)
        return sync_hits, results, change.is_alive()

    sync_hits, results, change_alive = _run_bounded(app)
    assert _ids(sync_hits) == _ids(results) and "x1" not in _ids(results)
    assert not change_alive
    assert "x1" in _ids(retriever.retrieve("gift cards expire"))


def test_a_cancelled_aretrieve_leaves_the_retriever_usable_and_changeable():
    retriever = _hybrid(embed_model=SlowAsyncEmbedding(), micro_batch=False)

    async def app():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(retriever.aretrieve("apple return"), 0.05)
        await asyncio.to_thread(retriever.insert_nodes, [GIFT])  # the read lock was released
        return await retriever.aretrieve("gift cards expire")

    assert "x1" in _ids(_run_bounded(app))


# ------------------------------------------------------ FAISS grown while it is searched

_GROW_WHILE_SEARCHING = textwrap.dedent(
    """
    import threading, numpy as np, faiss
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores.types import VectorStoreQuery
    from llama_index_ragtune.retrievers.faiss_store import FilterableFaissVectorStore
    d, rng = 256, np.random.default_rng(0)
    index = faiss.IndexFlatIP(d)
    index.add(rng.random((60000, d), dtype=np.float32))
    store = FilterableFaissVectorStore(index, normalize=False)
    stop, seen = False, []
    def search():
        query = VectorStoreQuery(query_embedding=rng.random(d).tolist(), similarity_top_k=5)
        while not stop:
            seen.append(len(store.query(query).ids))
    threads = [threading.Thread(target=search) for _ in range(2)]
    [t.start() for t in threads]
    for k in range(25):
        vectors = rng.random((2000, d), dtype=np.float32)
        store.add([TextNode(id_=f"x{k}_{j}", text="t", embedding=v.tolist()) for j, v in enumerate(vectors)])
    stop = True
    [t.join() for t in threads]
    print("ntotal", store._faiss_index.ntotal, "searches", len(seen), "short", seen.count(0))
    """
)


def test_faiss_store_grown_while_threads_search_it_does_not_crash():
    # FAISS reallocates its vectors when it grows; a search reading them meanwhile read freed
    # memory: the process died with SIGSEGV (exit -11) within a few adds
    done = subprocess.run(
        [sys.executable, "-c", _GROW_WHILE_SEARCHING],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    words = done.stdout.split()
    assert words[:2] == ["ntotal", "110000"] and int(words[3]) > 0 and words[-1] == "0"


# ------------------------------------------------------------- filters nested too deep


def _nested(levels: int) -> MetadataFilters:
    """``store == grocery`` wrapped so that ``levels`` MetadataFilters sit inside each other."""
    filters = MetadataFilters(filters=[MetadataFilter(key="store", value="grocery")])
    for level in range(levels - 1):
        condition = FilterCondition.OR if level % 2 else FilterCondition.AND
        filters = MetadataFilters(filters=[filters], condition=condition)
    return filters


@pytest.mark.parametrize("levels", [MAX_FILTER_DEPTH + 1, 130, 3000])
def test_filters_nested_too_deep_are_refused_by_name_on_every_side(levels):
    # were: pydantic's "Maximum serialization depth exceeded" (from ~127 levels) or a bare
    # RecursionError, naming neither the filter nor what to do
    match = rf"nested more than {MAX_FILTER_DEPTH} levels.*flatten"
    with pytest.raises(ValueError, match="BM25Retriever: metadata filters " + match):
        BM25Retriever(_nodes(), similarity_top_k=3, filters=_nested(levels))
    with pytest.raises(ValueError, match=match):
        _hybrid(similarity_top_k=3, filters=_nested(levels))
    retriever = _hybrid(similarity_top_k=3, filters=_nested(2))
    with pytest.raises(ValueError, match=match):
        retriever.filters = _nested(levels)
    assert retriever.filters == _nested(2)  # the old filters stay
    assert {hit.node.metadata["store"] for hit in retriever.retrieve("apple")} == {"grocery"}


def test_filters_nested_up_to_the_limit_still_filter_like_the_flat_filter():
    flat = _hybrid(similarity_top_k=8, filters=_nested(1))
    deep = _hybrid(similarity_top_k=8, filters=_nested(MAX_FILTER_DEPTH))
    assert _ids(deep.retrieve("apple return")) == _ids(flat.retrieve("apple return"))
    assert {hit.node.metadata["store"] for hit in deep.retrieve("apple return")} == {"grocery"}


def test_qdrant_hybrid_refuses_filters_nested_too_deep_before_the_database_sees_them():
    qdrant_client = pytest.importorskip("qdrant_client")
    vector_stores = pytest.importorskip("llama_index.vector_stores.qdrant")
    import uuid

    store = vector_stores.QdrantVectorStore(
        collection_name="deep", client=qdrant_client.QdrantClient(":memory:")
    )
    nodes = [
        TextNode(id_=str(uuid.uuid5(uuid.NAMESPACE_DNS, i)), text=text, metadata={"store": s})
        for i, s, text in STORE_DOCS
    ]
    retriever = HybridRetriever.from_defaults(
        nodes=nodes, embed_model=KeywordEmbedding(), similarity_top_k=3, dense_index=store
    )
    with pytest.raises(ValueError, match=rf"nested more than {MAX_FILTER_DEPTH} levels"):
        retriever.filters = _nested(3000)
    assert retriever.filters is None and len(retriever.retrieve("apple")) == 3


# ------------------------------------------------------------------ long in / nin lists


def _catalogue(n: int) -> list[TextNode]:
    return [
        TextNode(id_=f"n{i}", text=f"apple item{i}", metadata={"sku": f"s{i}", "n": i})
        for i in range(n)
    ]


def test_a_long_in_list_filters_in_linear_time_with_the_same_result():
    # access control as `doc id in [allowed]`: every node was compared with every value
    # (5,000 nodes x 50,000 values: 2.5 s per side and filter; 100k nodes: minutes)
    retriever = BM25Retriever(_catalogue(5000), similarity_top_k=5)
    allowed = [f"x{j}" for j in range(50_000)] + ["s3", "s7"]
    started = time.perf_counter()
    retriever.filters = MetadataFilters(
        filters=[MetadataFilter(key="sku", value=allowed, operator=FilterOperator.IN)]
    )
    hits = retriever.retrieve("apple")
    assert time.perf_counter() - started < 1.0
    assert sorted(_ids(hits)) == ["n3", "n7"]
    retriever.filters = MetadataFilters(
        filters=[MetadataFilter(key="n", value=list(range(20, 5000)), operator=FilterOperator.NIN)]
    )
    assert {hit.node.metadata["n"] for hit in retriever.retrieve("apple")} <= set(range(20))


@pytest.mark.parametrize("operator", [FilterOperator.IN, FilterOperator.NIN])
@pytest.mark.parametrize("condition", [FilterCondition.AND, FilterCondition.OR])
def test_long_membership_lists_keep_llama_index_semantics_on_every_value_kind(operator, condition):
    # ints, floats equal to ints, bools (True == 1), text, None, missing keys, lists (which
    # cannot be hashed) and dicts: the set lookup answers as LlamaIndex's list scan does
    values = [1, 2.0, True, False, 0, "1", "a", None, [1, 2], ["a"], {"k": 1}, 1.5, -0.0, ""]
    metadata = [{"v": value, "w": "a"} for value in values] + [{"w": "b"}, {}]
    long_ints = list(range(-3, 20))
    long_text = ["a", "1", "", *[f"z{j}" for j in range(20)]]
    long_floats = [0.0, 1.5, 2.0, *[100.0 + j for j in range(20)]]
    for probe in (long_ints, long_text, long_floats):
        filters = MetadataFilters(
            filters=[
                MetadataFilter(key="v", value=probe, operator=operator),
                MetadataFilter(key="w", value="a"),
            ],
            condition=condition,
        )
        ours = build_filter_fn(lambda i: metadata[i], filters)
        theirs = build_metadata_filter_fn(lambda i: metadata[i], filters)
        assert [ours(i) for i in range(len(metadata))] == [
            theirs(i) for i in range(len(metadata))
        ], probe


# ------------------------------------------------- a query vector that is not numbers


class GarbageQueryVectors(KeywordEmbedding):
    """Indexes like KeywordEmbedding; query vectors replaced by ``garbage`` (a broken model)."""

    garbage: object = None

    def _get_query_embedding(self, query: str) -> list[float]:
        return self.garbage  # type: ignore[return-value]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self.garbage  # type: ignore[return-value]


@pytest.mark.parametrize("micro_batch", [True, False], ids=["batched", "one-by-one"])
@pytest.mark.parametrize(
    "garbage", [None, ["a"] * 20, [[0.1] * 20]], ids=["None", "text", "nested"]
)
def test_a_query_vector_that_is_not_numbers_names_the_model_and_the_query(garbage, micro_batch):
    # was pydantic's "1 validation error for EmbeddingEndEvent", naming neither
    model = GarbageQueryVectors()
    retriever = _hybrid(embed_model=model, similarity_top_k=3, micro_batch=micro_batch)
    model.garbage = garbage
    match = r"embedding model GarbageQueryVectors returned .* 'apple return', not a list of numbers"
    with pytest.raises(TypeError, match=match):
        retriever.retrieve("apple return")
    with pytest.raises(TypeError, match=match):
        asyncio.run(retriever.aretrieve("apple return"))
    model.garbage = [0.0] * 19 + [1.0]  # the model mended: the same retriever serves again
    assert len(retriever.retrieve("apple return")) == 3


@pytest.mark.parametrize(
    "embedding, error, match",
    [
        (["x"] * 20, TypeError, r"'apple' is not a list of numbers"),
        ([1e39] * 20, ValueError, r"'apple' holds 1e\+39, past the float32 range"),
    ],
    ids=["text", "float32-overflow"],
)
def test_a_callers_query_vector_that_cannot_be_searched_names_the_query(embedding, error, match):
    from llama_index.core.schema import QueryBundle

    retriever = _hybrid(similarity_top_k=3)
    with pytest.raises(error, match=match):
        retriever.retrieve(QueryBundle("apple", embedding=embedding))
    assert _ids(retriever.retrieve("apple return"))[:2] == ["g1", "e1"]
