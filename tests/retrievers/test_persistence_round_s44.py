"""Persisted retriever folders, round 44: what persist writes must load as it was, and a
folder edited by hand (its manifest re-hashed, so the content hashes pass) must be refused
by name, never served as a silently different index.

- metadata holding a tuple (JSON gives back a list: filters matched otherwise after loading)
  or nested deeper than :data:`MAX_METADATA_DEPTH` (saved, then the load failed);
- ``docstore.json``: a node id given twice, a node's text removed, a template that cannot be
  formatted;
- BM25: ``params.node_ids`` reordered, bm25s arrays of the wrong type, an edited
  ``params.index.json``;
- FAISS: vectors with NaN, filter metadata that is not the docstore's, a negative
  ``exhaustive_below``.
"""

from __future__ import annotations

import hashlib
import json
import math

import faiss
import numpy as np
import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

from llama_index_ragtune.retrievers import BM25Retriever, HybridRetriever
from llama_index_ragtune.retrievers.faiss_store import (
    FilterableFaissVectorStore,
    read_faiss_file,
    write_faiss_file,
)
from llama_index_ragtune.retrievers.persistence import PersistenceError

HYBRID = "hybrid_retriever.json"
BM25 = "bm25_retriever.json"
FAISS_FILE = "storage/default__vector_store.json"
FAISS_META = FAISS_FILE + ".metadata.json"
MAX_METADATA_DEPTH = 100  # persistence.MAX_METADATA_DEPTH, spelled out (the old code lacks it)


def _ids(results) -> list[str]:
    return [r.node.node_id for r in results]


def _rehash(folder, manifest=HYBRID) -> None:
    """Record the files' current SHA-256 and size in the manifest, as an editor who knows
    the format would: only the loaders' own checks remain."""
    path = folder / manifest
    data = json.loads(path.read_text())
    for rel in data["files"]:
        raw = (folder / rel).read_bytes()
        data["files"][rel] = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
    path.write_text(json.dumps(data))


def _edit_json(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _node_data(docstore: dict, node_id: str) -> dict:
    return docstore["docstore/data"][node_id]["__data__"]


def _nested(depth: int):
    value = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def _bm25_folder(store_nodes, tmp_path):
    folder = tmp_path / "bm25"
    BM25Retriever(nodes=store_nodes).persist(folder)
    return folder


# ------------------------------------------------------------------ metadata JSON would change


@pytest.mark.parametrize("kind", ["hybrid", "bm25"])
def test_a_tuple_in_metadata_is_refused_by_name_and_the_old_folder_kept(
    store_nodes, keyword_embedding, tmp_path, kind
):
    folder = tmp_path / "idx"

    def build(nodes):
        if kind == "hybrid":
            return HybridRetriever.from_defaults(nodes=nodes, embed_model=keyword_embedding)
        return BM25Retriever(nodes=nodes)

    build(store_nodes).persist(folder)
    before = sorted(p.name for p in folder.rglob("*"))
    store_nodes[2].metadata["sizes"] = ("S", "M")
    # was: saved as a list, so `sizes == ["S", "M"]` matched g3 after loading and not before
    with pytest.raises(TypeError, match=r"node 'g3' has a tuple as metadata \['sizes'\].*list"):
        build(store_nodes).persist(folder)
    assert sorted(p.name for p in folder.rglob("*")) == before
    if kind == "hybrid":
        loaded = HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)
        assert "sizes" not in loaded.sparse_retriever.nodes[2].metadata
    else:
        assert "sizes" not in BM25Retriever.from_persist_dir(folder).nodes[2].metadata


def test_a_tuple_deep_inside_metadata_is_named_with_its_path(store_nodes, tmp_path):
    store_nodes[0].metadata["dims"] = {"box": [1, (2, 3)]}
    with pytest.raises(
        TypeError, match=r"node 'g1' has a tuple as metadata \['dims'\]\['box'\]\[1\]"
    ):
        BM25Retriever(nodes=store_nodes).persist(tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_a_list_in_metadata_filters_the_same_before_and_after_loading(
    store_nodes, keyword_embedding, tmp_path
):
    store_nodes[2].metadata["sizes"] = ["S", "M"]
    retriever = HybridRetriever.from_defaults(nodes=store_nodes, embed_model=keyword_embedding)
    retriever.persist(tmp_path / "h")
    loaded = HybridRetriever.from_persist_dir(tmp_path / "h", embed_model=keyword_embedding)
    only = MetadataFilters(filters=[MetadataFilter(key="sizes", operator="==", value=["S", "M"])])
    assert _ids(retriever.with_filters(only).retrieve("hours")) == ["g3"]
    assert _ids(loaded.with_filters(only).retrieve("hours")) == ["g3"]


def test_faiss_store_persist_refuses_a_tuple(tmp_path):
    index = faiss.IndexFlatIP(4)
    index.add(np.eye(4, dtype=np.float32)[:2])
    store = FilterableFaissVectorStore(faiss_index=index, metadata=[{"a": 1}, {"a": (1, 2)}])
    with pytest.raises(TypeError, match=r"vector at position 1 has a tuple as metadata \['a'\]"):
        store.persist(str(tmp_path / "v.faiss"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["hybrid", "bm25"])
def test_metadata_nested_too_deeply_to_load_is_refused_before_writing(
    store_nodes, keyword_embedding, tmp_path, kind
):
    store_nodes[1].metadata["tree"] = _nested(MAX_METADATA_DEPTH + 50)
    folder = tmp_path / "idx"
    # was: saved; at a few hundred levels the folder then failed to load (RecursionError
    # while reading docstore.json), having replaced the previous index. A hybrid index
    # refuses it when built (embedding metadata that deep fails in LlamaIndex near 985
    # levels), a BM25 index when persisted.
    with pytest.raises(ValueError, match=r"node 'g2' is nested too deeply .*'tree'.*flatten"):
        if kind == "hybrid":
            HybridRetriever.from_defaults(nodes=store_nodes, embed_model=keyword_embedding)
        else:
            BM25Retriever(nodes=store_nodes).persist(folder)
    assert not folder.exists()


def test_metadata_nested_within_the_limit_persists_and_loads(store_nodes, tmp_path):
    store_nodes[1].metadata["tree"] = _nested(MAX_METADATA_DEPTH - 5)
    BM25Retriever(nodes=store_nodes).persist(tmp_path / "b")
    loaded = BM25Retriever.from_persist_dir(tmp_path / "b")
    assert loaded.nodes[1].metadata["tree"] == _nested(MAX_METADATA_DEPTH - 5)


def test_nan_metadata_still_persists_and_loads_with_the_same_results(
    store_nodes, keyword_embedding, tmp_path
):
    store_nodes[0].metadata["price"] = float("nan")
    retriever = HybridRetriever.from_defaults(nodes=store_nodes, embed_model=keyword_embedding)
    retriever.persist(tmp_path / "h")
    loaded = HybridRetriever.from_persist_dir(tmp_path / "h", embed_model=keyword_embedding)
    assert math.isnan(loaded.sparse_retriever.nodes[0].metadata["price"])
    assert _ids(loaded.retrieve("apple return")) == _ids(retriever.retrieve("apple return"))


# ------------------------------------------------------------------ docstore.json edited


def test_a_node_id_given_twice_in_the_docstore_is_refused(persisted, keyword_embedding):
    _, folder = persisted
    path = folder / "storage" / "docstore.json"
    text = path.read_text()
    twin = json.dumps({"__data__": {"id_": "g1", "text": "Buy our gift cards."}, "__type__": "1"})
    path.write_text(text.replace('"g2": {', f'"g1": {twin}, "g2": {{', 1))
    _rehash(folder)
    # was: the last entry won, so g1 was served with the gift-card text it was never indexed on
    with pytest.raises(
        PersistenceError, match=r"docstore\.json is damaged: the key 'g1' appears twice"
    ):
        HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)


def test_a_node_id_given_twice_in_a_bm25_docstore_is_refused(store_nodes, tmp_path):
    folder = _bm25_folder(store_nodes, tmp_path)
    path = folder / "docstore.json"
    path.write_text(
        path.read_text().replace('"docstore/data": {', '"docstore/data": {"e3": {}, ', 1)
    )
    _rehash(folder, BM25)
    with pytest.raises(
        PersistenceError, match=r"docstore\.json is damaged: the key 'e3' appears twice"
    ):
        BM25Retriever.from_persist_dir(folder)


def test_a_node_whose_text_was_removed_is_named(persisted, keyword_embedding):
    _, folder = persisted
    _edit_json(folder / "storage" / "docstore.json", lambda d: _node_data(d, "g1").pop("text"))
    _rehash(folder)
    # was: loaded; "apple return" returned g1 first, with an empty text
    with pytest.raises(
        PersistenceError, match=r"holds \d+ term\(s\) that node 'g1' of .*docstore\.json"
    ):
        HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [("text_template", "{nope}", "KeyError"), ("metadata_template", "{key", "ValueError")],
)
def test_a_template_that_cannot_be_formatted_is_named(
    persisted, keyword_embedding, field, value, error
):
    _, folder = persisted
    _edit_json(
        folder / "storage" / "docstore.json", lambda d: _node_data(d, "e2").update({field: value})
    )
    _rehash(folder)
    # was: loaded, then every query returning e2 failed with a bare KeyError / ValueError
    with pytest.raises(
        PersistenceError, match=rf"node 'e2', whose text cannot be formatted .*{error}"
    ):
        HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)


# ------------------------------------------------------------------ BM25 files edited


def test_bm25_node_order_edited_is_refused(store_nodes, tmp_path):
    folder = _bm25_folder(store_nodes, tmp_path)
    _edit_json(folder / BM25, lambda m: m["params"]["node_ids"].reverse())
    _rehash(folder, BM25)
    # was: loaded; each document's scores returned another node ("apple return" -> g4 first)
    with pytest.raises(
        PersistenceError, match=r"document 0 of .*bm25s holds .* node 'e4'.*node_ids"
    ):
        BM25Retriever.from_persist_dir(folder)


def test_bm25_node_order_edited_inside_a_hybrid_folder_is_refused(persisted, keyword_embedding):
    _, folder = persisted
    path = folder / "bm25" / BM25
    _edit_json(path, lambda m: m["params"]["node_ids"].reverse())
    _rehash(folder)
    with pytest.raises(PersistenceError, match=r"node_ids' of .*bm25_retriever\.json"):
        HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("data", lambda a: a.astype(str)),
        ("data", lambda a: np.zeros(len(a), dtype=[("x", "f4")])),
        ("data", lambda a: a.astype(bool)),
        ("indices", lambda a: a.astype(np.float32) + 0.5),
        ("indptr", lambda a: a.astype(np.float64)),
    ],
    ids=["data-text", "data-struct", "data-bool", "indices-float", "indptr-float"],
)
def test_bm25s_arrays_of_the_wrong_type_are_named(store_nodes, tmp_path, name, change):
    folder = _bm25_folder(store_nodes, tmp_path)
    path = folder / "bm25s" / f"{name}.csc.index.npy"
    np.save(path, change(np.load(path)))
    _rehash(folder, BM25)
    # was a bare TypeError / IndexError from numpy, at load or at the first query
    with pytest.raises(
        PersistenceError,
        match=r"bm25s holds a damaged bm25s index \(score arrays of the wrong type",
    ):
        BM25Retriever.from_persist_dir(folder).retrieve("apple")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(num_docs="8"), r"'num_docs' must be a whole number"),
        (lambda p: p.update(num_docs=8.0), r"'num_docs' must be a whole number"),
        (lambda p: p.pop("num_docs"), r"'num_docs' must be a whole number .*None"),
        (lambda p: p.update(dtype="object"), r"'dtype' must name a float type"),
        (lambda p: p.update(k1=9.0), r"'k1' is 9\.0 but the manifest says 1\.5"),
        (lambda p: p.update(method="zzz"), r"'method' is 'zzz'"),
    ],
    ids=["num-docs-text", "num-docs-float", "num-docs-missing", "dtype", "k1", "method"],
)
def test_an_edited_bm25s_params_file_is_named(store_nodes, tmp_path, change, message):
    folder = _bm25_folder(store_nodes, tmp_path)
    _edit_json(folder / "bm25s" / "params.index.json", change)
    _rehash(folder, BM25)
    # was: loaded, then a bare TypeError at the first query, or scored with other settings
    with pytest.raises(PersistenceError, match=rf"params\.index\.json is damaged .*{message}"):
        BM25Retriever.from_persist_dir(folder).retrieve("apple")


# ------------------------------------------------------------------ FAISS files edited


def _replace_faiss(folder, change) -> None:
    """Rewrite the hybrid folder's FAISS index through ``change(index)``, record its new
    digest beside it and in the manifest (a consistent, edited folder)."""
    path = folder / FAISS_FILE
    index = read_faiss_file(path)
    change(index)
    write_faiss_file(index, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _edit_json(folder / FAISS_META, lambda m: m.update(faiss_sha256=digest))
    _rehash(folder)


def _poison_row(index, row: int) -> None:
    vectors = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d)
    vectors[row * index.d] = np.nan


def test_faiss_vectors_with_nan_are_refused(persisted, keyword_embedding):
    _, folder = persisted
    _replace_faiss(folder, lambda index: _poison_row(index, 5))
    # was: loaded; node e2 was never found by the dense side (its every score NaN)
    with pytest.raises(
        PersistenceError, match=r"holds 1 vector\(s\) with NaN or infinity \(positions \[5\]\)"
    ):
        HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)


def test_an_hnsw_file_with_nan_vectors_is_refused(tmp_path):
    index = faiss.IndexHNSWFlat(4, 8, faiss.METRIC_INNER_PRODUCT)
    index.add(np.eye(4, dtype=np.float32))
    path = tmp_path / "v.faiss"
    FilterableFaissVectorStore(faiss_index=index, metadata=[{}] * 4).persist(str(path))
    assert FilterableFaissVectorStore.from_persist_path(str(path)).client.ntotal == 4
    _poison_row(faiss.downcast_index(index.storage), 2)
    FilterableFaissVectorStore(faiss_index=index, metadata=[{}] * 4).persist(str(path))
    with pytest.raises(PersistenceError, match=r"v\.faiss holds 1 vector\(s\) with NaN .*\[2\]"):
        FilterableFaissVectorStore.from_persist_path(str(path))


def test_an_ivf_file_with_nan_vectors_or_centroids_is_refused(tmp_path):
    from llama_index_ragtune.retrievers.faiss_index import FaissIndexConfig

    vectors = np.random.default_rng(0).random((400, 8), dtype=np.float32)
    index = FaissIndexConfig(kind="ivf", nlist=4).build(vectors)
    path = tmp_path / "v.faiss"
    store = FilterableFaissVectorStore(faiss_index=index, metadata=[{}] * 400)
    store.persist(str(path))
    assert FilterableFaissVectorStore.from_persist_path(str(path)).client.ntotal == 400
    lists = index.invlists
    codes = faiss.rev_swig_ptr(lists.get_codes(1), lists.list_size(1) * 8 * 4).view(np.float32)
    codes[3 * 8] = np.inf
    stored_id = int(faiss.rev_swig_ptr(lists.get_ids(1), lists.list_size(1))[3])
    store.persist(str(path))
    with pytest.raises(PersistenceError, match=rf"1 vector\(s\) with NaN .*\[{stored_id}\]"):
        FilterableFaissVectorStore.from_persist_path(str(path))
    codes[3 * 8] = 0.5
    _poison_row(faiss.downcast_index(index.quantizer), 0)
    store.persist(str(path))
    with pytest.raises(PersistenceError, match=r"centroids or codebooks with NaN"):
        FilterableFaissVectorStore.from_persist_path(str(path))


@pytest.mark.parametrize("value", ["electronics", float("nan")])
def test_faiss_filter_metadata_unlike_the_docstore_is_refused(persisted, keyword_embedding, value):
    _, folder = persisted
    _edit_json(folder / FAISS_META, lambda m: m["metadata"][0].update(store=value))
    _rehash(folder)
    # was: loaded; `store == "grocery"` left g1 out on the dense side and kept it on BM25's
    with pytest.raises(
        PersistenceError,
        match=r"metadata\.json holds other metadata for node 'g1' \(position 0; keys \['store'\]\)",
    ):
        HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)


def test_a_negative_exhaustive_below_is_refused(persisted, keyword_embedding):
    _, folder = persisted
    _edit_json(folder / FAISS_META, lambda m: m.update(exhaustive_below=-5))
    _rehash(folder)
    with pytest.raises(PersistenceError, match=r"'exhaustive_below' must be >= 0, got -5"):
        HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)


def test_an_unedited_folder_still_loads_with_the_same_results(persisted, keyword_embedding):
    retriever, folder = persisted
    loaded = HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)
    for query in ("apple return", "store opening hours", "laptop warranty"):
        assert _ids(loaded.retrieve(query)) == _ids(retriever.retrieve(query))
    nodes = [TextNode(id_=f"n{i}", text=f"word{i} common text") for i in range(40)]
    BM25Retriever(nodes=nodes).persist(folder.parent / "many")
    assert len(BM25Retriever.from_persist_dir(folder.parent / "many").nodes) == 40


@pytest.mark.parametrize("docstore", [{}, "bm25/docstore.json", 5])
def test_a_docstore_argument_of_the_wrong_type_is_named(store_nodes, tmp_path, docstore):
    folder = tmp_path / "bm25"
    BM25Retriever(nodes=store_nodes).persist(folder, save_nodes=False)
    # was: PersistenceError "the docstore holds damaged node data ... rebuild the BM25Retriever"
    with pytest.raises(TypeError, match=r"docstore must be a LlamaIndex document store"):
        BM25Retriever.from_persist_dir(folder, docstore=docstore)
