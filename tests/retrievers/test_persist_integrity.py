"""Persisted folders: content hashes catch edited, truncated, swapped or extra files; an edited
manifest is a PersistenceError (never KeyError/TypeError); nothing is unpickled; v1 still loads."""

from __future__ import annotations

import json
import logging
import pickle
import shutil

import numpy as np
import pytest

from llama_index_ragtune.retrievers import BM25Retriever, HybridRetriever, PersistenceError
from llama_index_ragtune.retrievers.persistence import file_digests

MANIFEST = "hybrid_retriever.json"


def load(folder, embedding):
    return HybridRetriever.from_persist_dir(folder, embed_model=embedding)


def results(retriever):
    return [(n.node.node_id, round(n.score, 6)) for n in retriever.retrieve("apple return policy")]


def test_manifest_records_every_file(persisted):
    retriever, folder = persisted
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["format_version"] == 2
    assert manifest["files"] == file_digests(folder, exclude={MANIFEST})
    assert {"storage/docstore.json", "storage/default__vector_store.json"} <= set(manifest["files"])
    assert any(name.startswith("bm25/bm25s/") for name in manifest["files"])
    assert manifest["dense"]["kind"] == "faiss" and manifest["dense"]["index_type"] == "IndexFlatIP"
    assert manifest["sparse"]["kind"] == "bm25"


@pytest.mark.parametrize(
    "damage, message",
    [
        ("flip", "docstore.json does not match the SHA-256 recorded in .*edited or swapped"),
        ("truncate", "docstore.json holds .* bytes but .* records .*truncated or replaced"),
        ("delete", "docstore.json is missing"),
        ("extra", "stray.json is not part of the persisted index"),
    ],
)
def test_damaged_files_are_named(persisted, keyword_embedding, damage, message):
    _, folder = persisted
    path = folder / "storage" / "docstore.json"
    data = path.read_bytes()
    if damage == "flip":  # same size, one character changed
        index = data.index(b"Apple")
        path.write_bytes(data[:index] + b"Maple" + data[index + 5 :])
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "delete":
        path.unlink()
    else:
        (folder / "storage" / "stray.json").write_text("{}")
    with pytest.raises(PersistenceError, match=message) as info:
        load(folder, keyword_embedding)
    assert "persist() again" in str(info.value)


def test_a_file_swapped_in_from_another_index(persisted, store_nodes, keyword_embedding, tmp_path):
    _, folder = persisted
    other = tmp_path / "other"
    HybridRetriever.from_defaults(nodes=store_nodes[:6], embed_model=keyword_embedding).persist(
        other
    )
    shutil.copy(other / "bm25" / "bm25s" / "vocab.index.json", folder / "bm25" / "bm25s")
    with pytest.raises(PersistenceError, match=r"vocab\.index\.json"):
        load(folder, keyword_embedding)


def _edit(manifest: dict, edit: str) -> None:
    target, _, key = edit.partition(":")
    section = manifest[target] if target else manifest
    if key.startswith("del "):
        del section[key[4:]]
        return
    name, value = key.split("=", 1)
    section[name] = json.loads(value)


@pytest.mark.parametrize(
    "edit, message",
    [
        (":del params", "no 'params' object"),
        (":del files", "'files' .* is missing"),
        (":del dense", "'dense' is missing"),
        ("params:del alpha", "'params.alpha' is missing"),
        ("params:del similarity_top_k", "'params.similarity_top_k' is missing"),
        ('params:alpha="high"', "'params.alpha' must be a number, got str"),
        ("params:similarity_top_k=2.5", "'params.similarity_top_k' must be an integer"),
        ("params:similarity_top_k=true", "'params.similarity_top_k' must be an integer"),
        ("params:alpha=5", r"invalid parameters \(alpha must be a number in \[0, 1\]"),
        ('params:fusion_mode="borda"', "invalid parameters .*unknown fusion mode"),
        ("params:filters=[1]", "'params.filters' must be an object or null"),
        ('params:filters={"filters": 3}', "invalid parameters"),
        ("params:embed_model=7", "'params.embed_model' must be an object or null"),
        ("dense:del num_nodes", "'dense.num_nodes' is missing"),
        ('dense:dimension="384"', "'dense.dimension' must be an integer"),
        ('dense:kind="weaviate"', "dense side is of kind 'weaviate'.*cannot load"),
        ('dense:kind="qdrant"', "'dense.collection' is missing"),
        ('sparse:kind="splade"', "lexical side is of kind 'splade'"),
        (":dense=[]", "'dense' must be an object"),
        (':files="all"', "'files' .* is missing"),
        (':files={"../../etc/passwd": {"sha256": "0", "bytes": 1}}', "points outside"),
        (':files={"storage/docstore.json": {"sha256": "x"}}', "needs a 64-digit 'sha256'"),
        (":format_version=3", "format_version 3, this version .* reads 1 or 2"),
        (':format_version="2"', "format_version '2'"),
        (":format_version=true", "format_version True"),
        (':format="ragtune-bm25"', "written by another class"),
    ],
)
def test_edited_manifest_is_a_persistence_error(persisted, keyword_embedding, edit, message):
    _, folder = persisted
    path = folder / MANIFEST
    manifest = json.loads(path.read_text())
    _edit(manifest, edit)
    path.write_text(json.dumps(manifest))
    with pytest.raises(PersistenceError, match=message) as info:
        load(folder, keyword_embedding)
    assert MANIFEST in str(info.value)


@pytest.mark.parametrize(
    "text", ["", "null", "[]", '"x"', "{", "\xff\xfe", '{"params": ' + "9" * 5000 + "}"]
)
def test_unreadable_manifest(persisted, keyword_embedding, text):
    _, folder = persisted
    (folder / MANIFEST).write_bytes(text.encode("latin-1"))
    with pytest.raises(PersistenceError, match="hybrid_retriever.json is corrupt"):
        load(folder, keyword_embedding)


def test_bm25_manifest_edits(store_nodes, tmp_path):
    folder = tmp_path / "bm25"
    BM25Retriever(store_nodes).persist(folder)
    path = folder / "bm25_retriever.json"
    good = json.loads(path.read_text())
    for edit, message in (
        ("params:del k1", "'params.k1' is missing"),
        ('params:k1="1.2"', "'params.k1' must be a number"),
        ("params:node_ids=5", "'params.node_ids' must be a list"),
        ("params:num_docs=3", "must list 3 node ids"),
        ('params:method="bm99"', "invalid parameters .*unknown BM25 method"),
        ("params:surprise=1", r"unknown parameter\(s\) \['surprise'\]"),
        ("params:stopwords=[1, 2]", "'params.stopwords' must list strings"),
    ):
        manifest = json.loads(json.dumps(good))
        _edit(manifest, edit)
        path.write_text(json.dumps(manifest))
        with pytest.raises(PersistenceError, match=message):
            BM25Retriever.from_persist_dir(folder)
    path.write_text(json.dumps(good))
    assert len(BM25Retriever.from_persist_dir(folder).nodes) == len(store_nodes)
    (folder / "bm25s" / "params.index.json").write_text('{"k1": 9}')
    with pytest.raises(PersistenceError, match="params.index.json .* bytes but"):
        BM25Retriever.from_persist_dir(folder)


def test_version_1_folders_still_load(downgrade_to_v1, persisted, keyword_embedding, caplog):
    retriever, folder = persisted
    downgrade_to_v1(folder)
    with caplog.at_level(logging.WARNING):
        loaded = load(folder, keyword_embedding)
    assert "without content hashes" in caplog.text
    assert results(loaded) == results(retriever)
    loaded.persist(folder)  # re-persisting upgrades it
    assert json.loads((folder / MANIFEST).read_text())["format_version"] == 2


class _Payload:
    """Unpickling this creates a marker file: proof that a loader unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_arrays_are_refused_not_executed(
    downgrade_to_v1, persisted, keyword_embedding, tmp_path
):
    _, folder = persisted
    downgrade_to_v1(folder)  # no hashes: the allow_pickle=False gate alone must hold
    marker = tmp_path / "unpickled.txt"
    array = np.empty(1, dtype=object)
    array[0] = _Payload(marker)
    np.save(folder / "bm25" / "bm25s" / "data.csc.index.npy", array, allow_pickle=True)
    with pytest.raises(PersistenceError, match="damaged bm25s index .*allow_pickle=False"):
        load(folder, keyword_embedding)
    assert not marker.exists()


def test_loading_never_unpickles(persisted, keyword_embedding, monkeypatch):
    retriever, folder = persisted
    loads = []

    def refuse(*args, **kwargs):
        raise AssertionError("a persisted artifact was unpickled")

    real_load = np.load

    def checked_load(*args, **kwargs):
        loads.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(np, "load", checked_load)
    assert results(load(folder, keyword_embedding)) == results(retriever)
    assert loads and all(flag is False for flag in loads)
