"""Hostile persisted retriever folders, round 39: paths, special files, files users add.

- a folder named in Latin-1 bytes (not UTF-8): FAISS took only UTF-8 file names;
- a manifest that is a named pipe, a link to ``/dev/zero`` or far too long;
- entries no manifest records (a named pipe, a device link, a folder) where LlamaIndex
  opens a file by name when present (``storage/property_graph_store.json``), in hashed
  and in format-1 folders;
- files a user put inside the index's own sub-folders, which a re-persist deleted.
"""

from __future__ import annotations

import errno
import os
import tracemalloc

import faiss
import numpy as np
import pytest

from llama_index_ragtune.retrievers import BM25Retriever, HybridRetriever
from llama_index_ragtune.retrievers.faiss_store import read_faiss_file, write_faiss_file
from llama_index_ragtune.retrievers.persistence import PersistenceError
from tests.blocking_calls import call_in_thread
from tests.retrievers.conftest import topical_nodes

MANIFEST = "hybrid_retriever.json"
SIXTEEN_MIB = 16 << 20  # persist_files.MAX_MANIFEST_BYTES, spelled out (the old code lacks it)
GRAPH_STORE = "storage/property_graph_store.json"  # read by LlamaIndex when present


def _ids(nodes) -> list[str]:
    return [n.node.node_id for n in nodes]


def _load_in_thread(folder, embed) -> dict:
    """from_persist_dir in a thread, so a read that blocks (the old code on a named pipe)
    fails the test instead of hanging it: {"done": bool, "error": exception or None}."""
    return call_in_thread(lambda: HybridRetriever.from_persist_dir(folder, embed_model=embed))


def _unblock(fifo) -> None:
    """Let a reader blocked on ``fifo`` go on (it reads end of file)."""
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    os.close(fd)


def _latin1_folder(tmp_path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9"
    try:
        os.mkdir(raw)
    except OSError as exc:  # macOS / Windows file systems take UTF-8 names only
        if exc.errno in (errno.EILSEQ, errno.EINVAL):
            pytest.skip("this file system refuses names that are not UTF-8")
        raise
    os.rmdir(raw)
    return os.fsdecode(raw) + "/index"


# ------------------------------------------------------------------ folder names


def test_a_folder_named_in_latin_1_persists_and_loads(persisted, keyword_embedding, tmp_path):
    retriever, _ = persisted
    folder = _latin1_folder(tmp_path)
    retriever.persist(folder)  # was: TypeError from faiss.write_index's overloads
    loaded = HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)
    query = "apple return"
    assert _ids(loaded.retrieve(query)) == _ids(retriever.retrieve(query))
    retriever.persist(folder)  # and again, replacing it
    assert sorted(os.listdir(os.fsencode(tmp_path))) == [b"caf\xe9", b"h"]
    assert os.listdir(os.fsencode(tmp_path) + b"/caf\xe9") == [b"index"]  # no leftovers


def test_the_faiss_file_is_streamed_not_copied_in_memory(tmp_path):
    index = faiss.IndexFlatIP(64)
    index.add(np.random.default_rng(0).random((20_000, 64), dtype=np.float32))
    path = tmp_path / "vectors.faiss"
    tracemalloc.start()
    try:
        write_faiss_file(index, path)
        written_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        loaded = read_faiss_file(path)
        read_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    size = path.stat().st_size
    assert size > 5_000_000 and loaded.ntotal == 20_000
    # Python holds at most a chunk, never a copy of the index (serialize_index would)
    assert written_peak < size // 2 and read_peak < size // 2


def test_a_failed_faiss_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "vectors.faiss"
    index = faiss.IndexFlatIP(4)
    index.add(np.ones((3, 4), dtype=np.float32))
    write_faiss_file(index, path)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_faiss_file("not an index", path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.faiss"]
    assert read_faiss_file(path).ntotal == 3


# ------------------------------------------------------------------ the manifest


def test_a_manifest_that_is_a_named_pipe_is_named(persisted, keyword_embedding):
    _, folder = persisted
    manifest = folder / MANIFEST
    manifest.unlink()
    os.mkfifo(manifest)
    result = _load_in_thread(folder, keyword_embedding)
    if not result["done"]:
        _unblock(manifest)
    assert result["done"], "from_persist_dir blocked reading a named pipe"
    assert isinstance(result["error"], PersistenceError)
    assert "is a named pipe (FIFO), not a plain file" in str(result["error"])


def test_a_manifest_linked_to_a_device_is_named(persisted, keyword_embedding):
    _, folder = persisted
    (folder / MANIFEST).unlink()
    (folder / MANIFEST).symlink_to("/dev/zero")
    with pytest.raises(PersistenceError, match=rf"{MANIFEST} is a character device"):
        HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)


def test_a_manifest_far_longer_than_any_written_is_not_read_whole(persisted, keyword_embedding):
    _, folder = persisted
    manifest = folder / MANIFEST
    text = manifest.read_text(encoding="utf-8").rstrip()
    padded = text[:-1] + ', "padding": "' + "x" * SIXTEEN_MIB + '"}'  # still valid JSON
    manifest.write_text(padded, encoding="utf-8")
    with pytest.raises(PersistenceError, match=r"holds more than 16 MiB") as info:
        HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)
    assert str(manifest) in str(info.value)


def test_a_bm25_manifest_that_is_a_named_pipe_is_named(store_nodes, tmp_path):
    folder = tmp_path / "b"
    BM25Retriever.from_defaults(nodes=store_nodes).persist(folder)
    (folder / "bm25_retriever.json").unlink()
    os.mkfifo(folder / "bm25_retriever.json")
    with pytest.raises(PersistenceError, match=r"bm25_retriever\.json is a named pipe"):
        BM25Retriever.from_persist_dir(folder)


# ------------------------------------------------------------------ unrecorded entries


def _plant(path, kind: str) -> None:
    if kind == "named pipe":
        os.mkfifo(path)
    elif kind == "device link":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()


@pytest.mark.parametrize("kind", ["named pipe", "device link", "folder"])
def test_an_unrecorded_entry_a_loader_would_open_is_named(persisted, keyword_embedding, kind):
    _, folder = persisted
    planted = folder / GRAPH_STORE
    _plant(planted, kind)
    result = _load_in_thread(folder, keyword_embedding)
    if not result["done"]:
        _unblock(planted)
    assert result["done"], f"from_persist_dir blocked on a {kind}"
    assert isinstance(result["error"], PersistenceError), result["error"]
    message = str(result["error"])
    assert str(planted) in message and "not part of the persisted index" in message
    what = {"named pipe": "a named pipe", "device link": "a symbolic link to '/dev/zero'"}
    assert what.get(kind, "a folder holding no file of the index") in message


@pytest.mark.parametrize(
    "relative", [GRAPH_STORE, "storage/docstore.json", "bm25/bm25s/data.csc.index.npy"]
)
def test_a_named_pipe_in_a_folder_without_hashes_is_named(
    persisted, keyword_embedding, downgrade_to_v1, relative
):
    _, folder = persisted
    downgrade_to_v1(folder)
    planted = folder / relative
    planted.unlink(missing_ok=True)
    os.mkfifo(planted)
    result = _load_in_thread(folder, keyword_embedding)
    if not result["done"]:
        _unblock(planted)
    assert result["done"], "from_persist_dir blocked on a named pipe"
    assert isinstance(result["error"], PersistenceError), result["error"]
    assert f"{planted} is a named pipe (FIFO)" in str(result["error"])


def test_a_bm25_folder_without_hashes_with_a_named_pipe_is_named(
    store_nodes, tmp_path, downgrade_to_v1
):
    folder = tmp_path / "b"
    BM25Retriever.from_defaults(nodes=store_nodes).persist(folder)
    manifest = folder / "bm25_retriever.json"
    import json

    params = json.loads(manifest.read_text())["params"]
    manifest.write_text(
        json.dumps({"format": "ragtune-bm25", "format_version": 1, "params": params})
    )
    planted = folder / "bm25s" / "vocab.index.json"
    planted.unlink()
    os.mkfifo(planted)
    result = call_in_thread(lambda: BM25Retriever.from_persist_dir(folder))
    if not result["done"]:
        _unblock(planted)
    assert result["done"], "BM25Retriever.from_persist_dir blocked on a named pipe"
    assert isinstance(result["error"], PersistenceError)
    assert "is a named pipe (FIFO)" in str(result["error"])


# ------------------------------------------------------------------ user files inside


def test_a_repersist_keeps_files_a_user_put_inside_the_index(
    persisted, store_nodes, keyword_embedding
):
    retriever, folder = persisted
    (folder / "storage" / "notes.txt").write_text("mine")
    (folder / "bm25" / "drafts").mkdir()
    (folder / "bm25" / "drafts" / "q.txt").write_text("mine too")
    with pytest.raises(FileExistsError, match=r"did not write \(bm25/drafts, bm25/drafts/q\.txt"):
        retriever.persist(folder)
    assert (folder / "storage" / "notes.txt").read_text() == "mine"
    assert (folder / "bm25" / "drafts" / "q.txt").read_text() == "mine too"
    (folder / "storage" / "notes.txt").unlink()
    (folder / "bm25" / "drafts" / "q.txt").unlink()
    (folder / "bm25" / "drafts").rmdir()
    retriever.persist(folder)  # once moved away, persisting works again
    loaded = HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)
    assert len(loaded.sparse_retriever.nodes) == len(store_nodes)


def test_a_bm25_repersist_keeps_files_a_user_put_inside_the_index(store_nodes, tmp_path):
    folder = tmp_path / "b"
    retriever = BM25Retriever.from_defaults(nodes=store_nodes)
    retriever.persist(folder)
    (folder / "bm25s" / "README.md").write_text("mine")
    with pytest.raises(FileExistsError, match=r"bm25s/README\.md"):
        retriever.persist(folder)
    assert (folder / "bm25s" / "README.md").read_text() == "mine"


def test_loading_writes_nothing_in_or_beside_the_folder(persisted, keyword_embedding):
    _, folder = persisted

    def snapshot():
        entries = sorted(folder.parent.rglob("*"))
        return [(str(p), p.lstat().st_mtime_ns, p.lstat().st_size) for p in entries] + [
            folder.parent.stat().st_mtime_ns
        ]

    before = snapshot()
    loaded = HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)
    loaded.retrieve("apple return")
    assert snapshot() == before


# ------------------------------------------------------------------ Qdrant local mode


def test_a_local_qdrant_storage_that_cannot_be_written_is_named(hash_embedding, tmp_path):
    """Qdrant's local mode opens its lock file for writing even to read: on a read-only
    mount that is EROFS; a folder in the lock file's place gives the same kind of error
    without a mount."""
    qdrant_client = pytest.importorskip("qdrant_client")
    qdrant_store = pytest.importorskip("llama_index.vector_stores.qdrant")
    storage = tmp_path / "qdrant"
    client = qdrant_client.QdrantClient(path=str(storage))
    store = qdrant_store.QdrantVectorStore(collection_name="docs", client=client)
    retriever = HybridRetriever.from_defaults(
        nodes=topical_nodes(12, uuid_ids=True), embed_model=hash_embedding, dense_index=store
    )
    retriever.persist(tmp_path / "h")
    client.close()
    (storage / ".lock").unlink()
    (storage / ".lock").mkdir()
    with pytest.raises(OSError, match=r"cannot open the local Qdrant storage .* writable") as info:
        HybridRetriever.from_persist_dir(tmp_path / "h", embed_model=hash_embedding)
    assert str(storage) in str(info.value) and info.value.errno == errno.EISDIR


@pytest.mark.parametrize(
    ("kind", "named"),
    [("named pipe", "a named pipe (FIFO), not the file"), ("folder", "a folder, not the file")],
)
def test_a_recorded_file_replaced_by_a_special_file_is_named_as_such(
    persisted, keyword_embedding, kind, named
):
    _, folder = persisted
    replaced = folder / "storage" / "docstore.json"
    replaced.unlink()
    _plant(replaced, kind)
    with pytest.raises(PersistenceError, match=r"docstore\.json is ") as info:
        HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)
    assert f"{replaced} is {named} (it is recorded in" in str(info.value)


# ------------------------------------------------------------------ Milvus Lite


def test_a_milvus_lite_database_that_cannot_be_written_is_not_blamed_on_another_process(
    hash_embedding, tmp_path
):
    """Milvus Lite opens its ``LOCK`` file for writing even to read: on a read-only mount
    (EROFS) the old message said another process held the database. A folder in the lock
    file's place fails the same way without a mount."""
    pytest.importorskip("milvus_lite")
    milvus_store = pytest.importorskip("llama_index.vector_stores.milvus")
    from milvus_lite.server_manager import server_manager_instance

    database = tmp_path / "milvus.db"
    store = milvus_store.MilvusVectorStore(
        uri=str(database), collection_name="docs", dim=hash_embedding.dim
    )
    retriever = HybridRetriever.from_defaults(
        nodes=topical_nodes(12), embed_model=hash_embedding, dense_index=store, micro_batch=False
    )
    retriever.persist(tmp_path / "h")
    server_manager_instance.release_server(str(database))
    (database / "LOCK").unlink()
    (database / "LOCK").mkdir()
    try:
        with pytest.raises(
            OSError, match=r"cannot open the Milvus Lite database .* writable"
        ) as info:
            HybridRetriever.from_persist_dir(tmp_path / "h", embed_model=hash_embedding)
    finally:
        server_manager_instance.release_server(str(database))
    assert str(database) in str(info.value) and "one process" not in str(info.value)
