"""Persisting onto a disk that fails late, and the paths writers and loaders are given.

A full disk (or quota, or I/O error) may only show when the data is flushed: the
``fsync`` before the swap. Such a write must leave the previous folder in place, not
swap in files that never reached the disk. And a folder named with ``~`` must be the
same one for ``persist()`` and ``from_persist_dir()``.
"""

from __future__ import annotations

import errno
import os

import pytest

from llama_index_ragtune._atomic import atomic_dir
from llama_index_ragtune.retrievers import HybridRetriever
from llama_index_ragtune.retrievers.persistence import PersistenceError

MANIFEST = "hybrid_retriever.json"


def _fsync_failing_with(code: int):
    def fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    return fsync


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EDQUOT])
def test_a_folder_whose_data_did_not_reach_the_disk_does_not_replace_the_old_one(
    tmp_path, monkeypatch, code
):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "data.txt").write_text("old")
    monkeypatch.setattr(os, "fsync", _fsync_failing_with(code))
    kept = r"data\.txt to disk; the previous version is kept"
    with pytest.raises(OSError, match=kept) as info, atomic_dir(target) as tmp:
        (tmp / "data.txt").write_text("new")
    assert info.value.errno == code
    assert (target / "data.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no leftovers


def test_a_file_system_without_fsync_still_gets_the_new_folder(tmp_path, monkeypatch):
    target = tmp_path / "out"
    monkeypatch.setattr(os, "fsync", _fsync_failing_with(errno.EINVAL))
    with atomic_dir(target) as tmp:
        (tmp / "data.txt").write_text("new")
    assert (target / "data.txt").read_text() == "new"


def test_a_persist_that_fills_the_disk_leaves_the_old_index_loadable(
    persisted, store_nodes, keyword_embedding, monkeypatch
):
    _, folder = persisted
    bigger = HybridRetriever.from_defaults(
        nodes=[*store_nodes, store_nodes[0].model_copy(update={"id_": "extra"})],
        embed_model=keyword_embedding,
    )
    monkeypatch.setattr(os, "fsync", _fsync_failing_with(errno.ENOSPC))
    with pytest.raises(OSError, match="No space left on device"):
        bigger.persist(folder)
    monkeypatch.undo()
    loaded = HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)
    assert len(loaded.sparse_retriever.nodes) == len(store_nodes)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


def test_a_home_relative_folder_is_the_same_for_persist_and_load(
    persisted, keyword_embedding, tmp_path, monkeypatch
):
    retriever, _ = persisted
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    retriever.persist("~/idx")
    assert (home / "idx" / MANIFEST).is_file() and not (tmp_path / "~").exists()
    loaded = HybridRetriever.from_persist_dir("~/idx", embed_model=keyword_embedding)
    assert [n.node_id for n in loaded.sparse_retriever.nodes] == [
        n.node_id for n in retriever.sparse_retriever.nodes
    ]


def test_an_unknown_users_home_is_named(persisted, keyword_embedding):
    retriever, _ = persisted
    with pytest.raises(ValueError, match=r"HybridRetriever\.persist: cannot expand the '~'"):
        retriever.persist("~no-such-user-ragtune/idx")
    with pytest.raises(ValueError, match=r"from_persist_dir: cannot expand the '~'"):
        HybridRetriever.from_persist_dir("~no-such-user-ragtune/idx", embed_model=keyword_embedding)


def test_a_manifest_replaced_by_a_folder_is_named_as_such(persisted, keyword_embedding):
    _, folder = persisted
    (folder / MANIFEST).unlink()
    (folder / MANIFEST).mkdir()
    with pytest.raises(PersistenceError, match=rf"{MANIFEST} is not a file \(a folder"):
        HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)


def test_a_name_too_long_for_the_temporary_folder_is_named(persisted):
    retriever, folder = persisted
    name = "i" * 250  # a valid name; the temporary sibling's is not
    with pytest.raises(OSError, match=rf"cannot write .*{name}: the temporary folder beside it"):
        retriever.persist(folder.parent / name)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


@pytest.mark.parametrize("kind", ["file", "link"])
def test_a_leftover_that_is_not_a_writers_folder_is_never_put_in_place(
    persisted, keyword_embedding, tmp_path, kind
):
    retriever, folder = persisted
    target = tmp_path / "idx"
    leftover = tmp_path / f"idx.old-{os.getpid()}-abcdef"
    if kind == "file":
        leftover.write_text("junk")
    else:
        leftover.symlink_to(folder, target_is_directory=True)  # a folder elsewhere
    with pytest.raises(PersistenceError, match=r"idx does not exist; rebuild") as info:
        HybridRetriever.from_persist_dir(target, embed_model=keyword_embedding)
    assert "rename it" not in str(info.value)
    assert not os.path.lexists(target)
    retriever.persist(target)  # the next writer is not blocked either
    assert HybridRetriever.from_persist_dir(target, embed_model=keyword_embedding)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("n" * 300, r"n{300} \(recorded in .*hybrid_retriever\.json\) cannot be read"),
        ("storage/" + "n" * 300, r"n{300} \(recorded in .*hybrid_retriever\.json\) cannot be read"),
        ("storage/doc\0store.json", "which points outside the persist directory"),
    ],
)
def test_a_manifest_entry_the_system_cannot_look_up_is_named(
    persisted, keyword_embedding, name, message
):
    import json

    _, folder = persisted
    path = folder / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["files"][name] = {"sha256": "0" * 64, "bytes": 1}
    path.write_text(json.dumps(manifest))
    with pytest.raises(PersistenceError, match=message):
        HybridRetriever.from_persist_dir(folder, embed_model=keyword_embedding)
