"""Metadata-filter parity, hostile: for every operator x value type x condition (nested too),
the nodes the BM25 side may return are the nodes the dense side may return, on every dense
backend (FAISS; Qdrant local and Milvus Lite when installed), and both are the nodes that
LlamaIndex's in-memory semantics (``build_metadata_filter_fn``) let through.

A backend that cannot run a filter exactly must refuse it when it is set, with a
``ValueError`` naming the filter and the backend: never different results on the two
sides, never a raw database or validation error, never an error at query time.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

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
from tests.retrievers.conftest import HashEmbedding

DIM = 8
QUERY = "apple"  # every node holds it: BM25 scores every node > 0

# one row per metadata shape: str (case and accent variants, empty, a longer string),
# int, float, bool, list of str, None, and keys missing altogether
ROWS: list[dict[str, Any]] = [
    {"s": "grocery", "n": 1, "f": 1.0, "b": True, "tags": ["a", "b"]},
    {"s": "Grocery", "n": 2, "f": 1.5, "b": False, "tags": ["a"]},
    {"s": "GROCERY", "n": 3, "f": 2.5, "b": True, "tags": []},
    {"s": "électronique", "n": 0, "f": 0.0, "b": False, "tags": ["c"]},
    {"s": "Électronique", "n": -1, "f": -1.5, "tags": ["b", "c"]},
    {"s": "", "n": 10, "f": 10.0, "b": True},
    {"s": None, "n": None, "f": None, "b": None, "tags": None},
    {},
    {"s": "grocery store", "n": 2, "f": 2.0, "b": False, "tags": ["a", "c"]},
    {"s": "a", "n": 1, "f": 1.0, "b": True, "tags": ["grocery"]},
]
NODES = [
    TextNode(id_=str(uuid.UUID(int=i + 1)), text=f"apple word{i} fruit{i % 3}", metadata=dict(row))
    for i, row in enumerate(ROWS * 2)
]
N = len(NODES)

VALUES: dict[str, list[Any]] = {
    "s": ["grocery", "Grocery", "électronique", "", "gro"],
    "n": [1, 2, 1.0, 1.5],
    "f": [1.0, 1.5, 2],
    "b": [1, 0],  # MetadataFilter refuses bool values; 1 == True in Python
    "tags": ["a", "grocery", ["a"], ["a", "c"]],
}
LIST_OPERATORS = (FilterOperator.IN, FilterOperator.NIN, FilterOperator.ANY, FilterOperator.ALL)


def _leaves() -> list[MetadataFilter]:
    leaves = []
    for key, values in VALUES.items():
        for op in FilterOperator:
            for value in values:
                if op in LIST_OPERATORS and not isinstance(value, list):
                    value = [value]
                # pydantic refuses some combinations (e.g. bool values): nothing to test
                with contextlib.suppress(ValueError):
                    leaves.append(MetadataFilter(key=key, value=value, operator=op))
    return leaves


def _f(key: str, value: Any, op: str = "==") -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=op)


COMBINED = (
    [
        MetadataFilters(filters=[_f("s", "grocery"), _f("n", 2, ">=")], condition=condition)
        for condition in FilterCondition
    ]
    + [
        MetadataFilters(
            filters=[
                MetadataFilters(filters=[_f("s", "grocery"), _f("n", 1, "<=")], condition=inner),
                _f("n", 2, ">"),
            ],
            condition=outer,
        )
        for inner in (FilterCondition.AND, FilterCondition.OR)
        for outer in FilterCondition
    ]
    + [
        MetadataFilters(
            filters=[
                MetadataFilters(
                    filters=[
                        MetadataFilters(filters=[_f("tags", "a", "contains")]),
                        _f("n", 3, "<"),
                    ],
                    condition="or",
                ),
                _f("s", ["grocery", "Grocery", "a"], "in"),
            ]
        ),
        MetadataFilters(filters=[_f("s", None)]),
        MetadataFilters(filters=[_f("s", None, "!=")]),
        MetadataFilters(filters=[_f("s", "GROCERY", "text_match_insensitive")]),
        MetadataFilters(filters=[_f("s", "Électronique"), _f("s", "électronique")], condition="or"),
    ]
)
FILTERS = [MetadataFilters(filters=[leaf]) for leaf in _leaves()] + COMBINED

# filters every backend runs exactly on this corpus: refusing them would be over-cautious
MUST_RUN = [
    MetadataFilters(filters=[_f("s", "grocery")]),
    MetadataFilters(filters=[_f("s", "Électronique")]),
    MetadataFilters(filters=[_f("s", ["grocery", "Grocery"], "in")]),
    MetadataFilters(filters=[_f("n", 1, ">")]),
    MetadataFilters(filters=[_f("n", 2, "<=")]),
    MetadataFilters(filters=[_f("s", "grocery"), _f("n", 2, ">=")], condition="or"),
    MetadataFilters(
        filters=[MetadataFilters(filters=[_f("s", "grocery"), _f("n", 1, ">")], condition="or")]
    ),
]


def _reference(filters: MetadataFilters, metadata: dict[str, Any]) -> bool:
    """LlamaIndex's in-memory semantics; a nested ``MetadataFilters`` is one more clause."""
    matches = [
        _reference(item, metadata)
        if isinstance(item, MetadataFilters)
        else build_metadata_filter_fn(lambda _: metadata, MetadataFilters(filters=[item]))("")
        for item in filters.filters
    ]
    if not filters.filters:
        return True
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return all(matches)
    if condition == FilterCondition.OR:
        return any(matches)
    return not any(matches)


def _expected(filters: MetadataFilters) -> set[str] | None:
    """Node ids passing ``filters`` in memory; ``None`` when the semantics cannot evaluate it."""
    try:
        return {n.node_id for n in NODES if _reference(filters, n.metadata)}
    except TypeError:
        return None


def _id(filters: MetadataFilters) -> str:
    return filters.model_dump_json(exclude_defaults=True).replace('"', "")[:90]


# ---------------------------------------------------------------------- backends

BACKEND_NAMES = {"faiss": "FAISS", "qdrant": "Qdrant", "milvus": "Milvus"}


def _build(dense_index: Any = "flat") -> HybridRetriever:
    return HybridRetriever.from_defaults(
        nodes=NODES,
        embed_model=HashEmbedding(dim=DIM),
        dense_index=dense_index,
        dense_top_k=N,
        sparse_top_k=N,
        similarity_top_k=N,
    )


@pytest.fixture(scope="module")
def faiss_retriever() -> HybridRetriever:
    return _build()


@pytest.fixture(scope="module")
def qdrant_retriever():
    qdrant_client = pytest.importorskip("qdrant_client")
    qdrant = pytest.importorskip("llama_index.vector_stores.qdrant")
    client = qdrant_client.QdrantClient(location=":memory:")
    yield _build(qdrant.QdrantVectorStore(collection_name="parity", client=client))
    client.close()


@pytest.fixture(scope="module")
def milvus_retriever(tmp_path_factory):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    milvus = pytest.importorskip("llama_index.vector_stores.milvus")
    from milvus_lite.server_manager import server_manager_instance

    path = tmp_path_factory.mktemp("milvus") / "parity.db"
    store = milvus.MilvusVectorStore(uri=str(path), collection_name="parity", dim=DIM)
    yield _build(store)
    server_manager_instance.release_server(str(path))


@pytest.fixture(params=list(BACKEND_NAMES))
def backend(request) -> tuple[str, HybridRetriever]:
    return request.param, request.getfixturevalue(f"{request.param}_retriever")


def _sides(retriever: HybridRetriever) -> tuple[set[str], set[str]]:
    dense = {n.node.node_id for n in retriever.dense_retriever.retrieve(QUERY)}
    sparse = {n.node.node_id for n in retriever.sparse_retriever.retrieve(QUERY)}
    return dense, sparse


# ---------------------------------------------------------------------- parity


@pytest.mark.parametrize("filters", FILTERS, ids=_id)
def test_both_sides_select_what_the_in_memory_semantics_select(backend, filters):
    kind, base = backend
    expected = _expected(filters)
    try:
        retriever = base.with_filters(filters)
    except ValueError as exc:  # refused when set: fine, if it says what and where
        message = str(exc)
        keys = {leaf["key"] for leaf in _leaf_dumps(filters.model_dump())}
        assert any(repr(key) in message or f"'{key}'" in message for key in keys), message
        if expected is not None:  # the semantics can run it: only the backend may refuse
            assert BACKEND_NAMES[kind] in message, message
        return
    assert expected is not None, "a filter the in-memory semantics cannot evaluate was accepted"
    dense, sparse = _sides(retriever)
    assert sparse == expected, f"BM25 side: missing {expected - sparse}, extra {sparse - expected}"
    assert dense == expected, f"{kind} side: missing {expected - dense}, extra {dense - expected}"
    fused = {n.node.node_id for n in retriever.retrieve(QUERY)}
    assert fused == expected


def _leaf_dumps(dump: dict[str, Any]) -> list[dict[str, Any]]:
    leaves = []
    for item in dump["filters"]:
        leaves.extend(_leaf_dumps(item) if "filters" in item else [item])
    return leaves


@pytest.mark.parametrize("filters", MUST_RUN, ids=_id)
def test_usual_filters_are_not_refused(backend, filters):
    _, base = backend
    dense, sparse = _sides(base.with_filters(filters))
    assert dense == sparse == _expected(filters) != set()


def test_nested_filters_run_on_bm25_alone():
    inner = MetadataFilters(filters=[_f("s", "grocery"), _f("n", 1, ">")], condition="or")
    filters = MetadataFilters(filters=[inner, _f("tags", "a", "contains")])
    retriever = BM25Retriever(NODES, similarity_top_k=N, filters=filters)
    got = {n.node.node_id for n in retriever.retrieve(QUERY)}
    assert got == _expected(filters) != set()


def test_an_unevaluable_filter_is_refused_naming_the_retriever():
    filters = MetadataFilters(filters=[_f("tags", "grocery", ">")])  # list > str
    with pytest.raises(ValueError, match=r"'tags'.*BM25Retriever|BM25Retriever.*'tags'"):
        BM25Retriever(NODES, filters=filters)


@pytest.mark.parametrize(
    "bad",
    [
        MetadataFilters(filters=[_f("tags", "grocery", ">")]),  # no in-memory answer
        MetadataFilters(filters=[_f("n", "1", "text_match")]),  # idem: int vs str
    ],
    ids=_id,
)
def test_a_refused_assignment_leaves_both_sides_on_the_old_filters(backend, bad):
    _, base = backend
    good = MetadataFilters(filters=[_f("s", "grocery")])
    retriever = base.with_filters(good)
    with pytest.raises(ValueError):
        retriever.filters = bad
    assert retriever.filters == good
    dense, sparse = _sides(retriever)
    assert dense == sparse == _expected(good)
    assert {n.node.node_id for n in retriever.retrieve(QUERY)} == _expected(good)


def test_the_parity_check_scans_once_per_recent_filter(qdrant_retriever, monkeypatch):
    """Per-request filters: a filter seen recently is not scanned again; past the cache's
    size the least recent one is forgotten (and scanned again when it comes back)."""
    from llama_index_ragtune.retrievers import store_filters

    scans: list[str] = []
    original = store_filters._qdrant_ids_passing

    def counting(store, filters):
        scans.append(filters.filters[0].value)
        return original(store, filters)

    monkeypatch.setattr(store_filters, "_qdrant_ids_passing", counting)
    monkeypatch.setattr(store_filters, "_PARITY_CACHE_SIZE", 2)
    first, second, third = (MetadataFilters(filters=[_f("n", value)]) for value in (101, 102, 103))
    for filters in (first, second, first, third, first, second):
        qdrant_retriever.with_filters(filters)
    # first, second scanned; first reused; third evicts second; first reused; second again
    assert scans == [101, 102, 103, 102]
