"""Hostile on-disk states and arguments for persisted retrievers, beyond what the content hashes
catch: folders without hashes (version 1) whose files were damaged or mixed with another
index's, wrong path arguments, symbolic-link loops. Each is a clear error naming the file or
argument (never a raw TypeError / KeyError, never silently wrong results); the old folder is
left as it was."""

from __future__ import annotations

import errno
import json
import os
import shutil

import numpy as np
import pytest

from llama_index_ragtune.retrievers import BM25Retriever, HybridRetriever, PersistenceError

MANIFEST = "hybrid_retriever.json"


def _load(folder, embedding):
    return HybridRetriever.from_persist_dir(folder, embed_model=embedding)


def _edit_json(path, change):
    data = json.loads(path.read_text())
    replaced = change(data)  # None: changed in place
    data = data if replaced is None else replaced
    path.write_text(json.dumps(data))


# ------------------------------------------------------------------ arguments and paths


@pytest.mark.parametrize("value", [None, 3, b"folder", ["folder"]])
def test_a_path_of_the_wrong_type_names_the_argument(persisted, store_nodes, value):
    retriever, _ = persisted
    bm25 = BM25Retriever(store_nodes)
    for call in (
        lambda: retriever.persist(value),
        lambda: HybridRetriever.from_persist_dir(value),
        lambda: bm25.persist(value),
        lambda: BM25Retriever.from_persist_dir(value),
    ):
        with pytest.raises(TypeError, match="persist_dir must be a str or a path"):
            call()


def test_an_empty_path_is_refused_not_read_as_the_working_directory(
    persisted, store_nodes, tmp_path, monkeypatch
):
    retriever, _ = persisted
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for call in (
        lambda: retriever.persist(""),
        lambda: HybridRetriever.from_persist_dir(""),
        lambda: BM25Retriever(store_nodes).persist(""),
        lambda: BM25Retriever.from_persist_dir(" "),
    ):
        with pytest.raises(ValueError, match="persist_dir is empty"):
            call()
    assert os.listdir(cwd) == [] and cwd.is_dir()  # the working directory was not replaced


def test_a_symlink_loop_or_a_file_in_the_path_is_named(persisted, tmp_path):
    retriever, _ = persisted
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    with pytest.raises(OSError, match="loop of symbolic links") as info:
        retriever.persist(tmp_path / "loop1")
    assert info.value.errno == errno.ELOOP
    (tmp_path / "file").write_text("keep")
    with pytest.raises(NotADirectoryError, match=r"file is a file, not a folder"):
        retriever.persist(tmp_path / "file" / "sub" / "index")
    assert (tmp_path / "file").read_text() == "keep"


# ------------------------------------------------------------------ docstore


def _node(data, node_id="g1"):
    return data["docstore/data"][node_id]


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: [],  # a list instead of an object
        lambda d: d["docstore/data"].update(g1=5),
        lambda d: _node(d).__delitem__("__data__"),
        lambda d: _node(d).update(__data__=5),
        lambda d: _node(d).update(__type__="zz"),
        lambda d: _node(d)["__data__"].update(text=5),
        lambda d: _node(d)["__data__"].update(metadata=[]),
        lambda d: _node(d)["__data__"].update(embedding=["x"]),
    ],
    ids=["list", "node-int", "no-data", "data-int", "type", "text-int", "metadata-list", "emb"],
)
def test_a_docstore_of_the_wrong_shape_is_named(
    downgrade_to_v1, persisted, keyword_embedding, damage
):
    _, folder = persisted
    downgrade_to_v1(folder)
    _edit_json(folder / "storage" / "docstore.json", damage)
    with pytest.raises(PersistenceError, match=r"storage/docstore\.json holds damaged node data"):
        _load(folder, keyword_embedding)


def test_a_node_stored_under_another_id_is_refused(
    downgrade_to_v1, persisted, keyword_embedding, store_nodes
):
    _, folder = persisted
    downgrade_to_v1(folder)
    _edit_json(
        folder / "storage" / "docstore.json", lambda d: _node(d)["__data__"].update(id_="zz")
    )
    with pytest.raises(PersistenceError, match="stores node 'zz' under the id 'g1'"):
        _load(folder, keyword_embedding)  # was: loaded, then a KeyError at the first query
    # the BM25 retriever's own docstore is checked the same way
    bm25 = folder.parent / "bm25"
    BM25Retriever(store_nodes).persist(bm25)
    _edit_json(bm25 / "bm25_retriever.json", lambda m: {**m, "format_version": 1, "files": None})
    _edit_json(bm25 / "docstore.json", lambda d: [])
    with pytest.raises(PersistenceError, match=r"bm25/docstore\.json holds damaged node data"):
        BM25Retriever.from_persist_dir(bm25)


# ------------------------------------------------------------------ bm25s files


def test_bm25s_files_that_do_not_fit_together_are_refused(
    downgrade_to_v1, persisted, keyword_embedding, store_nodes, tmp_path
):
    _, folder = persisted
    other = tmp_path / "other"
    HybridRetriever.from_defaults(nodes=store_nodes[:6], embed_model=keyword_embedding).persist(
        other
    )
    bm25s_dir = folder / "bm25" / "bm25s"

    def vocab_of_another_index(d):
        shutil.copy(other / "bm25" / "bm25s" / "vocab.index.json", d)

    def nan_scores(d):
        data = np.load(d / "data.csc.index.npy")
        data[0] = np.nan
        np.save(d / "data.csc.index.npy", data)

    def document_out_of_range(d):
        indices = np.load(d / "indices.csc.index.npy")
        indices[-1] = 99
        np.save(d / "indices.csc.index.npy", indices)

    for damage, message in (
        (lambda d: (d / "vocab.index.json").write_text('{"a": 1}'), "vocabulary of 1 terms"),
        (vocab_of_another_index, "vocabulary of .* terms for .* score columns"),
        (nan_scores, "NaN or infinite"),
        (document_out_of_range, r"document numbers outside 0\.\.7"),
    ):
        copy = tmp_path / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(folder, copy)
        downgrade_to_v1(copy)
        damage(copy / "bm25" / "bm25s")
        with pytest.raises(
            PersistenceError, match=f"bm25s holds a damaged bm25s index .*{message}"
        ):
            _load(copy, keyword_embedding)  # the vocabulary ones used to load, scoring wrongly
    assert bm25s_dir.is_dir()


# ------------------------------------------------------------------ dense side


def _edit_nodes_dict(folder, change):
    def edit(data):
        for entry in data["index_store/data"].values():
            struct = json.loads(entry["__data__"])
            change(struct["nodes_dict"])
            entry["__data__"] = json.dumps(struct)

    _edit_json(folder / "storage" / "index_store.json", edit)


def _move(nodes_dict, new_key):
    nodes_dict[new_key] = nodes_dict.pop("0")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda nd: _move(nd, "99"), r"positions that the FAISS index does not have .*'99'"),
        (lambda nd: _move(nd, "abc"), r"positions that the FAISS index does not have .*'abc'"),
        (lambda nd: nd.update({"1": nd["0"]}), "8 vectors of 7 distinct nodes"),
        (lambda nd: nd.update({"0": "zzz"}), r"\['zzz'\] only in the dense index"),
    ],
    ids=["out-of-range", "not-a-position", "duplicate", "unknown-id"],
)
def test_index_store_that_does_not_fit_the_other_files(
    downgrade_to_v1, persisted, keyword_embedding, change, message
):
    _, folder = persisted
    downgrade_to_v1(folder)
    _edit_nodes_dict(folder, change)
    with pytest.raises(PersistenceError, match=f"index_store.json .*{message}"):
        _load(folder, keyword_embedding)  # were: loaded, then KeyError or wrong nodes per query


def test_a_storage_file_of_the_wrong_shape_is_named(downgrade_to_v1, persisted, keyword_embedding):
    _, folder = persisted
    downgrade_to_v1(folder)
    (folder / "storage" / "graph_store.json").write_text("[]")
    with pytest.raises(PersistenceError, match=r"storage/graph_store\.json could not be loaded"):
        _load(folder, keyword_embedding)


# ------------------------------------------------------------------ manifest


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda m: m["params"].update(rerank_top_n=5),
            r"unknown parameter\(s\) \['rerank_top_n'\]",
        ),
        (
            lambda m: m["dense"].update(index_type="IndexHNSWFlat"),
            "records a IndexHNSWFlat but default__vector_store.json holds IndexFlatIP",
        ),
        (lambda m: m["dense"].update(index_type=5), "'dense.index_type' must be a string"),
    ],
    ids=["unknown-param", "index-type", "index-type-int"],
)
def test_manifest_fields_that_were_ignored(persisted, keyword_embedding, edit, message):
    _, folder = persisted
    _edit_json(folder / MANIFEST, edit)
    with pytest.raises(PersistenceError, match=message):
        _load(folder, keyword_embedding)
