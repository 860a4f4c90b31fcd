"""Hostile input on the vector-store dense sides (FAISS, Qdrant local mode, Milvus Lite).

Filters with values the stores read differently from the in-memory semantics (int vs
float, bool vs int, NaN, quotes and expression syntax, NUL and newlines, long strings,
empty lists, dotted keys) give the same nodes on every backend or are refused naming the
filter; texts, ids and metadata values longer than a Milvus field, and collection names
Qdrant refuses, two spellings of one UUID (one Qdrant point), metadata Milvus cannot
encode, are refused before anything is embedded or written; a recorded storage folder
replaced by a file is named as such on reopening.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

from llama_index_ragtune.retrievers import HybridRetriever
from llama_index_ragtune.retrievers.persistence import PersistenceError
from tests.retrievers.conftest import HashEmbedding

DIM = 8
MANIFEST = "hybrid_retriever.json"
INJECT_DOUBLE = 'a" or 1==1 or "'
INJECT_SINGLE = "a' or 1==1 or 'b"
LONG = "L" * 5000
ROWS: list[dict[str, Any]] = [
    {"n": 1, "f": 1.0, "b": True, "q": INJECT_DOUBLE, "u": "é\x00z", "long": LONG, "d.k": "v"},
    {"n": 2, "f": 2.5, "b": False, "q": 'he said "hi"', "u": "日本", "long": "S", "d.k": "w"},
    {"n": True, "f": 1, "b": 1, "q": INJECT_SINGLE, "u": "\n", "long": LONG + "x"},
    {"n": 1.0, "f": 0, "b": 0, "q": "it's", "u": "ü", "long": "", "nan": math.nan},
]
NODES = [
    TextNode(id_=str(uuid.UUID(int=i + 1)), text=f"apple word{i}", metadata=dict(row))
    for i, row in enumerate(ROWS)
]


def _f(key: str, value: Any, op: str = "==") -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=op)])


HOSTILE = [
    _f("n", 1),
    _f("n", 1.0),
    _f("f", 1),
    _f("b", 1),
    _f("b", 0),
    _f("nan", 0, ">"),
    _f("f", math.inf, "<"),
    _f("q", INJECT_DOUBLE),
    _f("q", [INJECT_DOUBLE], "in"),
    _f("q", INJECT_SINGLE),
    _f("q", [INJECT_SINGLE, "it's"], "in"),
    _f("q", [INJECT_SINGLE], "nin"),
    _f("q", 'he said "hi"'),
    _f("u", "é\x00z"),
    _f("u", ["é\x00z"], "in"),
    _f("u", "\n"),
    _f("u", ["\n"], "in"),
    _f("u", "日本"),
    _f("long", LONG),
    _f("long", [LONG], "in"),
    _f("long", "L" * 100_000),
    _f("q", [], "in"),
    _f("q", [], "nin"),
    _f("d.k", "v"),
]
BACKENDS = {"faiss": "FAISS", "qdrant": "Qdrant", "milvus": "Milvus"}


def _expected(filters: MetadataFilters) -> set[str]:
    from llama_index_ragtune.retrievers.filters import node_passes

    return {n.node_id for n in NODES if node_passes(n.metadata, filters)}


def _build(dense_index: Any, nodes: list[TextNode] = NODES) -> HybridRetriever:
    k = len(nodes)
    return HybridRetriever.from_defaults(
        nodes=nodes,
        embed_model=HashEmbedding(dim=DIM),
        dense_index=dense_index,
        dense_top_k=k,
        sparse_top_k=k,
        similarity_top_k=k,
    )


def _milvus_store(path: Any, name: str = "c") -> Any:
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    milvus = pytest.importorskip("llama_index.vector_stores.milvus")
    return milvus.MilvusVectorStore(uri=str(path), collection_name=name, dim=DIM)


def _release(path: Any) -> None:
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(str(path))


@pytest.fixture(scope="module")
def qdrant():
    qdrant_client = pytest.importorskip("qdrant_client")
    store = pytest.importorskip("llama_index.vector_stores.qdrant")
    return qdrant_client.QdrantClient, store.QdrantVectorStore


@pytest.fixture(scope="module", params=list(BACKENDS))
def backend(request, tmp_path_factory):
    kind = request.param
    if kind == "faiss":
        yield kind, _build("flat")
    elif kind == "qdrant":
        client_cls, store_cls = request.getfixturevalue("qdrant")
        client = client_cls(location=":memory:")
        yield kind, _build(store_cls(collection_name="hostile", client=client))
        client.close()
    else:
        path = tmp_path_factory.mktemp("milvus") / "hostile.db"
        yield kind, _build(_milvus_store(path))
        _release(path)


# ---------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    "filters", HOSTILE, ids=lambda f: f.model_dump_json(exclude_defaults=True)[:60]
)
def test_hostile_filter_values_give_the_same_nodes_or_a_named_refusal(backend, filters):
    kind, base = backend
    key = filters.filters[0].key
    try:
        retriever = base.with_filters(filters)
    except ValueError as exc:  # refused when set: naming the filter's key and the store
        assert repr(key) in str(exc) and BACKENDS[kind] in str(exc), str(exc)
        assert kind != "faiss", f"FAISS runs LlamaIndex's semantics itself: {exc}"
        return
    expected = _expected(filters)
    dense = {n.node.node_id for n in retriever.dense_retriever.retrieve("apple")}
    sparse = {n.node.node_id for n in retriever.sparse_retriever.retrieve("apple")}
    assert dense == sparse == expected, f"{kind}: dense {dense}, sparse {sparse}"


def test_quoted_and_expression_values_are_matched_literally(backend):
    """A value holding quotes or Milvus expression syntax selects only the node holding it."""
    _, base = backend
    for value, position in ((INJECT_DOUBLE, 0), (INJECT_SINGLE, 2), ('he said "hi"', 1)):
        got = base.with_filters(_f("q", value)).retrieve("apple")
        assert [n.node.node_id for n in got] == [NODES[position].node_id]


# ---------------------------------------------------------------------- Milvus lengths


@pytest.mark.parametrize(
    ("node", "what"),
    [
        (TextNode(id_="big", text="apple " + "x" * 70_000), "its text is 70,006 characters"),
        (TextNode(id_="i" * 70_000, text="apple"), "its id is 70,000 characters"),
    ],
    ids=["text", "id"],
)
def test_milvus_refuses_a_value_over_its_field_before_writing(tmp_path, node, what):
    path = tmp_path / "len.db"
    store = _milvus_store(path)
    nodes = [TextNode(id_=f"n{i}", text=f"apple word{i}") for i in range(3)] + [node]
    try:
        with pytest.raises(ValueError, match=rf"position 3\) cannot .*'c': {what}.*65,535"):
            _build(store, nodes)
        from llama_index_ragtune.retrievers.external_milvus import count

        assert count(store) == 0  # nothing half-written
    finally:
        _release(path)


def test_milvus_insert_nodes_refuses_an_overlong_text_and_keeps_the_retriever(tmp_path):
    path = tmp_path / "ins.db"
    store = _milvus_store(path)
    try:
        retriever = _build(store, [TextNode(id_=f"n{i}", text=f"apple w{i}") for i in range(3)])
        with pytest.raises(ValueError, match=r"insert_nodes: node 'big'.*SentenceSplitter"):
            retriever.insert_nodes([TextNode(id_="big", text="apple " * 20_000)])
        from llama_index_ragtune.retrievers.external_milvus import count

        assert count(store) == 3
        assert len(retriever.retrieve("apple")) == 3
    finally:
        _release(path)


def test_milvus_keeps_long_texts_under_its_limit_and_odd_ids_faithfully(tmp_path):
    path = tmp_path / "ok.db"
    texts = ["apple " + "é" * 40_000, "apple " + "y" * 65_000, "apple plain"]
    ids = ["a\x00b", "日本 id", "x" * 1000]
    nodes = [TextNode(id_=i, text=t) for i, t in zip(ids, texts, strict=True)]
    try:
        got = _build(_milvus_store(path), nodes).dense_retriever.retrieve("apple")
        assert {n.node.node_id: n.node.text for n in got} == dict(zip(ids, texts, strict=True))
    finally:
        _release(path)


# ---------------------------------------------------------------------- Qdrant


@pytest.mark.parametrize("name", ["a/b", "..", "x" * 256, "a\x00b", "a:b"])
def test_qdrant_refuses_a_collection_name_it_cannot_create_before_embedding(qdrant, name):
    client_cls, store_cls = qdrant
    client = client_cls(location=":memory:")
    embed = HashEmbedding(dim=DIM)
    try:
        with pytest.raises(ValueError, match=r"Qdrant collection .* cannot be created: .*Pass"):
            HybridRetriever.from_defaults(
                nodes=NODES, embed_model=embed, dense_index=store_cls(name, client=client)
            )
        assert client.get_collections().collections == []
    finally:
        client.close()


@pytest.mark.parametrize("name", ["名字", "a b", "docs-1.v2"])
def test_qdrant_takes_unusual_but_valid_collection_names(qdrant, name):
    client_cls, store_cls = qdrant
    client = client_cls(location=":memory:")
    try:
        retriever = _build(store_cls(name, client=client))
        assert len(retriever.retrieve("apple")) == len(NODES)
    finally:
        client.close()


def test_qdrant_keeps_a_text_of_several_megabytes_faithfully(qdrant):
    client_cls, store_cls = qdrant
    client = client_cls(location=":memory:")
    big = "apple " * 500_000  # 3 MB
    nodes = [TextNode(id_=str(uuid.UUID(int=1)), text=big), *NODES[1:]]
    try:
        got = _build(store_cls("big", client=client), nodes).dense_retriever.retrieve("apple")
        assert {n.node.node_id: n.node.text for n in got}[nodes[0].node_id] == big
    finally:
        client.close()


def test_a_storage_path_with_spaces_and_unicode_round_trips(qdrant, tmp_path):
    client_cls, store_cls = qdrant
    storage = tmp_path / "my vectors ü" / "日本 data"
    client = client_cls(path=str(storage))
    retriever = _build(store_cls("docs", client=client))
    retriever.persist(tmp_path / "hybrid x")
    client.close()
    reopened = HybridRetriever.from_persist_dir(
        tmp_path / "hybrid x", embed_model=HashEmbedding(dim=DIM)
    )
    try:
        assert len(reopened.retrieve("apple")) == len(NODES)
    finally:
        reopened.index.vector_store.client.close()


def test_a_qdrant_storage_replaced_by_a_file_is_named_on_reopening(qdrant, tmp_path):
    client_cls, store_cls = qdrant
    storage = tmp_path / "qdrant"
    client = client_cls(path=str(storage))
    _build(store_cls("docs", client=client)).persist(tmp_path / "hybrid")
    client.close()
    manifest_path = tmp_path / "hybrid" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    (tmp_path / "a_file").write_text("x")
    manifest["dense"]["location"] = {"path": str(tmp_path / "a_file")}
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(PersistenceError, match=r"local Qdrant storage .*a_file, which is a file"):
        HybridRetriever.from_persist_dir(tmp_path / "hybrid", embed_model=HashEmbedding(dim=DIM))


SPELLINGS = ["abcdef01-2345-6789-abcd-ef0123456789"]
SPELLINGS += [SPELLINGS[0].upper(), SPELLINGS[0].replace("-", ""), "{" + SPELLINGS[0] + "}"]


@pytest.mark.parametrize("other", SPELLINGS[1:])
def test_qdrant_refuses_two_spellings_of_one_uuid(qdrant, other):
    client_cls, store_cls = qdrant
    client = client_cls(location=":memory:")
    nodes = [TextNode(id_=SPELLINGS[0], text="apple a"), TextNode(id_=other, text="apple b")]
    try:
        with pytest.raises(ValueError, match=r"one UUID spelled two ways.*str\(uuid.UUID"):
            _build(store_cls("docs", client=client), nodes)
        assert not client.collection_exists("docs")
    finally:
        client.close()


def test_qdrant_insert_refuses_another_spelling_of_a_held_id_and_keeps_both_sides(qdrant):
    client_cls, store_cls = qdrant
    client = client_cls(location=":memory:")
    nodes = [TextNode(id_=SPELLINGS[0], text="apple a"), NODES[1]]
    try:
        retriever = _build(store_cls("docs", client=client), nodes)
        with pytest.raises(ValueError, match=r"insert_nodes: node ids .* one UUID spelled"):
            retriever.insert_nodes([TextNode(id_=SPELLINGS[1], text="apple other")])
        got = {n.node.node_id: n.node.text for n in retriever.retrieve("apple")}
        assert got == {n.node_id: n.text for n in nodes}
        assert client.count("docs").count == 2
        retriever.update_nodes([TextNode(id_=SPELLINGS[0], text="apple new")])  # same spelling
        got = {n.node.node_id: n.node.text for n in retriever.dense_retriever.retrieve("apple")}
        assert got[SPELLINGS[0]] == "apple new"
    finally:
        client.close()


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"$meta": 1}, r"metadata key '\$meta' is the name of Milvus's dynamic field"),
        ({"big": [1, 2**64]}, r"metadata value 'big' holds the integer 18446744073709551616"),
        ({"deep": {"x": -(2**63) - 1}}, r"metadata value 'deep' holds the integer -9223"),
    ],
    ids=["reserved-key", "huge-int-in-list", "small-int-nested"],
)
def test_milvus_refuses_metadata_it_cannot_encode_before_writing(tmp_path, metadata, message):
    path = tmp_path / "meta.db"
    store = _milvus_store(path)
    nodes = [
        TextNode(id_="a", text="apple a"),
        TextNode(id_="b", text="apple b", metadata=metadata),
    ]
    try:
        with pytest.raises(ValueError, match=rf"node 'b' \(position 1\) cannot .*{message}"):
            _build(store, nodes)
        from llama_index_ragtune.retrievers.external_milvus import count

        assert count(store) == 0
    finally:
        _release(path)


def test_milvus_keeps_metadata_at_the_edges_of_what_it_encodes(tmp_path):
    path = tmp_path / "edge.db"
    metadata = {"max": 2**64 - 1, "min": -(2**63), "$x": 1, "": "empty key", "a.b": [True]}
    nodes = [TextNode(id_="a", text="apple a", metadata=metadata), TextNode(id_="b", text="b")]
    try:
        got = _build(_milvus_store(path), nodes).dense_retriever.retrieve("apple")
        assert {n.node.node_id: n.node.metadata for n in got}["a"] == metadata
    finally:
        _release(path)
