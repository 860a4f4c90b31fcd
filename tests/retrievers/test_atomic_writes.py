"""The shared atomic-write helpers: files and folders replaced whole, leftovers of dead writers resolved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from llama_index_ragtune._atomic import (
    atomic_dir,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    recover_dir,
    sha256_file,
)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_file_writes_replace_whole_files(tmp_path):
    path = tmp_path / "sub" / "report.json"
    atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]  # no temp files
    assert len(sha256_file(path)) == 64


def test_failed_file_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "index.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.bin"]


def test_atomic_path_keeps_the_suffix(tmp_path):
    import numpy as np

    target = tmp_path / "data.npy"
    with atomic_path(target) as tmp:
        np.save(tmp, np.arange(3))  # np.save appends .npy when the name lacks it
    assert np.load(target, allow_pickle=False).tolist() == [0, 1, 2]


def test_folder_is_created_replaced_and_kept_on_error(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith("model.tmp-") and tmp.is_dir()
        (tmp / "v.txt").write_text("1")
    assert (target / "v.txt").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "v.txt").write_text("2")
        assert (target / "v.txt").read_text() == "1"  # old one intact until the swap
    assert (target / "v.txt").read_text() == "2"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "v.txt").write_text("3")
        raise RuntimeError("writer failed")
    assert (target / "v.txt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_foreign_entries_are_never_deleted(tmp_path):
    target = tmp_path / "index"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with (
        pytest.raises(
            FileExistsError, match=r"index already holds entries.*notes\.txt.*would be lost"
        ),
        atomic_dir(target, owned_entries={"manifest.json"}, what="the writer") as tmp,
    ):
        (tmp / "manifest.json").write_text("{}")
    assert (target / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "index").write_text("a file")
    with pytest.raises(NotADirectoryError, match="is not a folder"), atomic_dir(tmp_path / "index"):
        pass


def test_recover_restores_the_old_folder_of_a_dead_writer(tmp_path):
    pid = dead_pid()
    old = tmp_path / f"index.old-{pid}-abc123"
    old.mkdir()
    (old / "v.txt").write_text("old")
    stale_tmp = tmp_path / f"index.tmp-{pid}-abc123"
    stale_tmp.mkdir()
    (stale_tmp / "v.txt").write_text("half")
    live_tmp = tmp_path / f"index.tmp-{os.getppid()}-def456"  # a live writer: left alone
    live_tmp.mkdir()
    assert recover_dir(tmp_path / "index") is True
    assert (tmp_path / "index" / "v.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", live_tmp.name]
    assert recover_dir(tmp_path / "index") is False


def test_stale_old_folder_is_removed_when_the_new_one_is_in_place(tmp_path):
    with atomic_dir(tmp_path / "index") as tmp:
        (tmp / "v.txt").write_text("new")
    leftover = tmp_path / f"index.old-{dead_pid()}-abc123"
    leftover.mkdir()
    with atomic_dir(tmp_path / "index") as tmp:
        (tmp / "v.txt").write_text("newer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


@pytest.mark.parametrize("owned", [None, {f"{i}.txt" for i in range(20)}], ids=["any", "owned"])
def test_concurrent_writers_each_leave_a_whole_folder(tmp_path, owned):
    # a tiny switch interval makes threads interleave between any two file-system calls,
    # so a check that looks twice at a folder another writer is swapping shows up here
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    target = tmp_path / "index"
    errors = []

    def write(label: str) -> None:
        try:
            for _ in range(25):
                with atomic_dir(target, owned_entries=owned) as tmp:
                    for i in range(20):
                        (tmp / f"{i}.txt").write_text(label)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(name,)) for name in "abcd"]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors
    labels = {p.read_text() for p in target.iterdir()}
    assert len(labels) == 1 and len(list(target.iterdir())) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_a_writer_in_progress_is_never_cleaned_up(tmp_path):
    target = tmp_path / "index"
    with atomic_dir(target) as slow:
        (slow / "a.txt").write_text("slow")
        with atomic_dir(target) as fast:  # a second writer that starts later and finishes first
            (fast / "a.txt").write_text("fast")
        assert (target / "a.txt").read_text() == "fast"
        assert (slow / "a.txt").read_text() == "slow"  # not mistaken for a leftover
    assert (target / "a.txt").read_text() == "slow"  # the last writer to finish wins
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
