"""Hostile retriever inputs and persisted folders, round 40.

- the FAISS store's metadata file: a named pipe, a file far longer than any ``persist``
  writes (read whole before), a cap that grows with the vectors;
- symbolic links leading outside a persisted folder (the manifest, a recorded file, a
  recorded folder), as bundles refuse a manifest outside their version;
- ``persist`` onto a read-only mount (a raw ``EROFS`` naming the temporary folder);
- queries and node texts with only invisible characters, NaN filter values.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import faiss
import numpy as np
import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from llama_index_ragtune.retrievers import BM25Retriever, HybridRetriever
from llama_index_ragtune.retrievers.faiss_store import FilterableFaissVectorStore
from llama_index_ragtune.retrievers.persistence import PersistenceError
from tests.blocking_calls import call_in_thread

ROOT = Path(__file__).resolve().parents[2]
VECTORS = "storage/default__vector_store.json"
META = VECTORS + ".metadata.json"
MIB = 1 << 20


def _ids(nodes) -> list[str]:
    return [n.node.node_id for n in nodes]


def _store(n: int, meta_bytes: int = 10) -> FilterableFaissVectorStore:
    """A FAISS store of ``n`` 4-d vectors whose metadata holds ``meta_bytes`` characters each."""
    index = faiss.IndexFlatIP(4)
    index.add(np.random.default_rng(0).random((n, 4), dtype=np.float32))
    return FilterableFaissVectorStore(index, metadata=[{"t": "x" * meta_bytes} for _ in range(n)])


# ------------------------------------------------------------------ FAISS metadata file


def test_a_named_pipe_in_place_of_the_faiss_files_is_named_not_called_missing(persisted):
    _, folder = persisted
    meta = folder / META
    meta.unlink()
    os.mkfifo(meta)
    result = call_in_thread(lambda: FilterableFaissVectorStore.from_persist_path(folder / VECTORS))
    assert result["done"]
    assert isinstance(result["error"], PersistenceError)
    assert "named pipe" in str(result["error"]) and "missing" not in str(result["error"])
    meta.unlink()
    (folder / VECTORS).rename(folder / "moved")
    os.mkfifo(folder / VECTORS)
    result = call_in_thread(lambda: FilterableFaissVectorStore.from_persist_path(folder / VECTORS))
    assert result["done"] and "named pipe" in str(result["error"])


def test_a_metadata_file_far_longer_than_persist_writes_is_refused_unread(tmp_path):
    path = tmp_path / "v.faiss"
    _store(8).persist(str(path))
    meta = Path(f"{path}.metadata.json")
    # still valid JSON: the old reader read all of it and loaded the store
    meta.write_bytes(meta.read_bytes() + b" " * (20 * MIB))
    with pytest.raises(PersistenceError, match=r"metadata\.json holds more than 18 MiB"):
        FilterableFaissVectorStore.from_persist_path(str(path))


def test_the_metadata_cap_grows_with_the_vectors_and_persist_refuses_what_would_not_load(
    tmp_path,
):
    # 100 vectors of 200 KiB metadata each (20 MiB in all): under 16 MiB + 100 x 256 KiB
    big = tmp_path / "big.faiss"
    _store(100, 200 << 10).persist(str(big))
    assert FilterableFaissVectorStore.from_persist_path(str(big)).client.ntotal == 100
    # one vector with 20 MiB of metadata: over 16 MiB + 256 KiB, so refused before writing
    one = tmp_path / "one.faiss"
    with pytest.raises(ValueError, match=r"position 0.*nothing was written"):
        _store(1, 20 * MIB).persist(str(one))
    assert sorted(os.listdir(tmp_path)) == ["big.faiss", "big.faiss.metadata.json"]


def test_a_format_1_folder_with_a_padded_metadata_file_is_refused(
    persisted, downgrade_to_v1, keyword_embedding
):
    _, folder = persisted
    downgrade_to_v1(folder)
    meta = folder / META
    meta.write_bytes(meta.read_bytes() + b" " * (20 * MIB))
    with pytest.raises(PersistenceError, match=r"holds more than 18 MiB"):
        HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)


def test_the_faiss_store_persists_to_a_path_object(tmp_path):
    _store(3).persist(tmp_path / "v.faiss")  # was: TypeError (Path + str)
    loaded = FilterableFaissVectorStore.from_persist_path(tmp_path / "v.faiss")
    assert loaded.client.ntotal == 3


# ------------------------------------------------------------------ links leading outside


@pytest.mark.parametrize("entry", ["hybrid_retriever.json", "storage/docstore.json", "storage"])
def test_a_link_leading_outside_the_folder_is_refused_by_name(
    persisted, keyword_embedding, tmp_path, entry
):
    _, folder = persisted
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = elsewhere / Path(entry).name
    shutil.move(folder / entry, outside)  # the same content, outside the folder
    (folder / entry).symlink_to(outside)
    with pytest.raises(PersistenceError, match="leads outside the persist directory") as info:
        HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)
    assert str(outside) in str(info.value)


def test_links_outside_are_refused_in_bm25_and_format_1_folders_a_linked_folder_loads(
    persisted, keyword_embedding, downgrade_to_v1, tmp_path, store_nodes
):
    bm25 = tmp_path / "bm25"
    BM25Retriever(nodes=store_nodes).persist(bm25)
    shutil.move(bm25 / "bm25_retriever.json", tmp_path / "m.json")
    (bm25 / "bm25_retriever.json").symlink_to(tmp_path / "m.json")
    with pytest.raises(PersistenceError, match="leads outside"):
        BM25Retriever.from_persist_dir(bm25)
    retriever, folder = persisted
    link = tmp_path / "link"  # the folder itself reached through a link: loads
    link.symlink_to(folder)
    loaded = HybridRetriever.from_persist_dir(link, embed_model=keyword_embedding)
    assert _ids(loaded.retrieve("apple return")) == _ids(retriever.retrieve("apple return"))
    downgrade_to_v1(folder)
    shutil.move(folder / "storage" / "docstore.json", tmp_path / "docstore.json")
    (folder / "storage" / "docstore.json").symlink_to(tmp_path / "docstore.json")
    with pytest.raises(PersistenceError, match="leads outside"):
        HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)


# ------------------------------------------------------------------ read-only mount

_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from llama_index_ragtune._atomic import atomic_write_text
    from llama_index_ragtune.retrievers import HybridRetriever, PersistenceError
    from tests.retrievers.conftest import KeywordEmbedding, STORE_DOCS
    from llama_index.core.schema import TextNode
    mount = Path(sys.argv[1])
    nodes = [TextNode(id_=i, text=t, metadata={"store": s}) for i, s, t in STORE_DOCS[:4]]
    retriever = HybridRetriever.from_defaults(nodes=nodes, embed_model=KeywordEmbedding())
    calls = {
        "hybrid": lambda: retriever.persist(mount / "idx"),
        "hybrid_new": lambda: retriever.persist(mount / "new"),
        "bm25": lambda: retriever.sparse_retriever.persist(mount / "bm25"),
        "store": lambda: retriever.index.vector_store.persist(str(mount / "v.faiss")),
        "file": lambda: atomic_write_text(mount / "notes.txt", "x"),
    }
    out = {}
    for name, call in calls.items():
        try:
            call()
            out[name] = ["done"]
        except Exception as exc:
            out[name] = [type(exc).__name__, isinstance(exc, PersistenceError),
                         isinstance(exc, OSError), getattr(exc, "errno", None), str(exc)]
    loaded = HybridRetriever.from_persist_dir(mount / "idx", embed_model=KeywordEmbedding())
    out["loads"] = len(loaded.retrieve("apple return"))
    print("RESULT " + json.dumps(out))
    """
)


def _unshare_works() -> bool:
    if not shutil.which("unshare") or not shutil.which("mount"):
        return False
    probe = ["unshare", "--user", "--map-root-user", "--mount", "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.path.isdir("/sys/kernel"),
    reason="sysfs (a folder nobody may create entries in, root included) is Linux only",
)
def test_persist_into_a_folder_refusing_new_entries_names_the_target(persisted, tmp_path):
    """``/sys`` refuses ``mkdir`` with ``EPERM`` even to root: the same path as a read-only
    mount, in-process. Was: a raw ``PermissionError`` naming ``<name>.tmp-<pid>-<token>``."""
    from llama_index_ragtune._atomic import atomic_write_text

    retriever, _ = persisted
    target = Path("/sys") / f"ragtune-s40-{os.getpid()}"
    for call in (retriever.persist, retriever.sparse_retriever.persist):
        with pytest.raises(PersistenceError, match=rf"cannot write {target}: ") as info:
            call(target)
        assert type(info.value).__name__ == "PersistWriteError" and isinstance(info.value, OSError)
        assert (
            info.value.errno in (errno.EPERM, errno.EACCES)
            and ".tmp-" not in str(info.value).split("(")[0]
        )
    with pytest.raises(OSError, match=rf"cannot write {target / 'notes.txt'}: "):
        atomic_write_text(target / "notes.txt", "x")
    assert not target.exists()


@pytest.mark.slow
def test_persist_onto_a_read_only_mount_names_the_target_and_keeps_the_old_index(
    persisted, tmp_path
):
    """A real read-only bind mount (unprivileged ``unshare``; as root ``chmod`` stops no
    write). Was: a raw ``OSError`` EROFS naming ``idx.tmp-<pid>-<token>`` (for a file, a
    second EROFS from removing the temporary file hid the first)."""
    if not _unshare_works():
        pytest.skip("unprivileged unshare / mount not available")
    _, folder = persisted
    source = tmp_path / "src"
    source.mkdir()
    shutil.copytree(folder, source / "idx")
    before = sorted(p.relative_to(source).as_posix() for p in source.rglob("*"))
    mount = tmp_path / "mnt"
    mount.mkdir()
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    shell = 'mount --bind -o ro "$1" "$2" && exec "$3" "$4" "$2"'
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", shell, "sh"]
        + [str(source), str(mount), sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT ") :])
    for name, target in (("hybrid", "idx"), ("hybrid_new", "new"), ("bm25", "bm25")):
        kind, is_persistence, is_os, errno_, message = result[name]
        assert (kind, is_persistence, is_os, errno_) == ("PersistWriteError", True, True, 30)
        assert f"cannot write {mount / target}:" in message and "read-only" in message
    kind, is_persistence, is_os, errno_, message = result["store"]
    assert is_persistence and f"cannot write {mount / 'v.faiss'}:" in message
    kind, _, is_os, errno_, message = result["file"]
    assert is_os and errno_ == 30 and f"cannot write {mount / 'notes.txt'}:" in message
    assert result["loads"] == 4
    assert sorted(p.relative_to(source).as_posix() for p in source.rglob("*")) == before


# ------------------------------------------------------------------ queries, nodes, filters


@pytest.mark.parametrize("query", ["\u200b\u200b", "\ufeff", "\u200f \u00ad\n", "\ud800"])
def test_a_query_of_invisible_characters_only_returns_nothing(persisted, query):
    retriever, _ = persisted
    assert retriever.retrieve(query) == []  # was: the dense side's arbitrary order


def test_a_node_of_invisible_characters_only_is_treated_as_blank(
    store_nodes, keyword_embedding, caplog
):
    blank = TextNode(id_="zw", text="\u200b\u2060\ufeff")
    retriever = HybridRetriever.from_defaults(
        nodes=[*store_nodes, blank], embed_model=keyword_embedding
    )
    assert "zw" in caplog.text and "zw" not in {n.node_id for n in retriever.sparse_retriever.nodes}
    with pytest.raises(ValueError, match=r"\['zw'\] have empty or whitespace-only text"):
        retriever.insert_nodes([blank])  # was: inserted, found by its meaningless vector
    assert len(retriever.sparse_retriever.nodes) == len(store_nodes)


@pytest.mark.parametrize(
    ("operator", "value"),
    [
        (FilterOperator.EQ, float("nan")),
        (FilterOperator.NE, float("nan")),
        (FilterOperator.IN, [2001.0, float("nan")]),
    ],
)
def test_a_nan_filter_value_is_refused_on_both_sides(keyword_embedding, operator, value):
    nodes = [
        TextNode(id_=f"n{i}", text=f"apple return item {i}", metadata={"year": 2000 + i})
        for i in range(4)
    ]
    filters = MetadataFilters(filters=[MetadataFilter(key="year", value=value, operator=operator)])
    retriever = HybridRetriever.from_defaults(nodes=nodes, embed_model=keyword_embedding)
    with pytest.raises(ValueError, match=r"'year' .* holds NaN"):
        retriever.filters = filters  # was: nothing matched (==) or everything did (!=)
    assert retriever.filters is None
    with pytest.raises(ValueError, match="holds NaN"):
        BM25Retriever(nodes=nodes, filters=filters)


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # LlamaIndex on such keys
@pytest.mark.parametrize(
    ("metadata", "shown"),
    [({1: "one"}, "1"), ({"nested": {2: "x"}}, r"\['nested'\]\[2\]"), ({True: "t"}, "True")],
)
def test_a_metadata_key_that_is_not_a_string_is_refused_before_persisting(
    store_nodes, keyword_embedding, tmp_path, metadata, shown
):
    store_nodes[0].metadata.update(metadata)
    retriever = HybridRetriever.from_defaults(nodes=store_nodes, embed_model=keyword_embedding)
    for call in (retriever.persist, BM25Retriever(nodes=store_nodes).persist):
        # was: written, and loaded with the key as a string (1 -> '1', True -> 'true')
        with pytest.raises(TypeError, match=rf"node 'g1' has the metadata key {shown}, which"):
            call(tmp_path / "idx")
        assert not (tmp_path / "idx").exists()
