"""Crash safety and hostile inputs of the feedback -> refresh -> rollback loop (round s45).

A rollback killed at each point between writing its intent, moving ``CURRENT`` and
logging its line (real forked processes that ``os._exit`` there), blank step names
given to ``TuningPipeline(skip=...)``, and a feedback store read in a read-only folder
beside a ``-wal`` file. Real files, real SQLite, no models.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from conftest import fake_bundles  # tests/pipeline/conftest.py

from llama_index_ragtune.feedback import FeedbackStore
from llama_index_ragtune.pipeline import current_version, read_history, rollback_bundle
from llama_index_ragtune.pipeline.rollback import PENDING
from llama_index_ragtune.pipeline.runner import TuningPipeline

FORK = multiprocessing.get_context("fork") if hasattr(os, "fork") else None
needs_fork = pytest.mark.skipif(FORK is None, reason="needs fork")

# where the child dies: (module, attribute replaced by os._exit), in the order a switch runs
KILL_POINTS = {
    "before CURRENT moves": ("llama_index_ragtune.pipeline.bundle_folders", "set_current_version"),
    "after CURRENT moved, before its line": (
        "llama_index_ragtune.pipeline.refresh_writer",
        "append_history",
    ),
    "after its line, before the mark is removed": (
        "llama_index_ragtune.pipeline.rollback",
        "_drop_mark",
    ),
}


def _roll_back_and_die(root, point):
    import importlib

    module, name = KILL_POINTS[point]
    setattr(importlib.import_module(module), name, lambda *a, **k: os._exit(17))
    rollback_bundle(root)
    os._exit(0)  # not reached


def _kill_rollback(root, point):
    child = FORK.Process(target=_roll_back_and_die, args=(root, point))
    child.start()
    child.join(60)
    assert child.exitcode == 17


def _switches(root):
    return [(e["from"], e["served"], e.get("recovered", False)) for e in read_history(root)]


@needs_fork
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_rollback_killed_at_any_point_leaves_a_log_that_explains_current(tmp_path, point):
    root = fake_bundles(tmp_path, 3)  # v3 served
    _kill_rollback(root, point)
    served = current_version(root)
    moved = point != "before CURRENT moves"
    assert served == ("v2" if moved else "v3")
    # was: killed after CURRENT moved, the log held no line for v2 (served, unexplained)
    expected = [("v3", "v2", point.startswith("after CURRENT"))] if moved else []
    assert _switches(root) == expected  # readers see the switch before any writer runs
    assert (root / PENDING).exists()
    assert rollback_bundle(root, to="v1") == "v1"  # the next writer settles the mark first
    assert not (root / PENDING).exists()
    logged = _switches(root)
    assert logged == [*expected, ("v2" if moved else "v3", "v1", False)]
    assert logged[-1][1] == current_version(root)


@needs_fork
def test_a_rollback_killed_before_its_line_is_logged_once_by_racing_writers(tmp_path):
    root = fake_bundles(tmp_path, 3)
    _kill_rollback(root, "after CURRENT moved, before its line")
    racers = [FORK.Process(target=rollback_bundle, args=(root, to)) for to in ("v1", "v3", "v2")]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(60)
        assert racer.exitcode == 0
    logged = _switches(root)
    assert [s for s in logged if s[2]] == [("v3", "v2", True)]
    for before, after in itertools.pairwise(logged):  # each switch starts where the last ended
        assert after[0] == before[1]
    assert logged[-1][1] == current_version(root)


def test_an_ordinary_rollback_leaves_no_mark_and_one_line(tmp_path):
    root = fake_bundles(tmp_path, 2)
    assert rollback_bundle(root) == "v1"
    assert _switches(root) == [("v2", "v1", False)]
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".r")) == []


def test_a_damaged_or_stale_mark_is_removed_and_adds_nothing(tmp_path):
    root = fake_bundles(tmp_path, 2)
    (root / PENDING).write_text("{not json")
    assert read_history(root) == []
    assert rollback_bundle(root) == "v1"
    assert _switches(root) == [("v2", "v1", False)] and not (root / PENDING).exists()
    # a mark of a switch to a version not served (killed before CURRENT moved): dropped
    (root / PENDING).write_text('{"pid": 1, "entry": {"action": "rollback", "served": "v2"}}')
    assert len(read_history(root)) == 1
    assert rollback_bundle(root, to="v2") == "v2"
    assert _switches(root) == [("v2", "v1", False), ("v1", "v2", False)]


def test_the_temporary_file_of_a_mark_a_killed_writer_left_is_removed(tmp_path):
    from llama_index_ragtune.pipeline.bundle_folders import bundle_lock, clean_leftovers

    root = fake_bundles(tmp_path, 2)
    leftover = root / f".{PENDING}.tmp-{os.getpid()}-abc123.json"  # atomic_path's name
    leftover.write_text("{")
    with bundle_lock(root):
        assert clean_leftovers(root) == [leftover.name]
    assert rollback_bundle(root) == "v1"


# --------------------------------------------------- TuningPipeline(skip=...) blank names


@pytest.mark.parametrize("skip", ["", ",", " ", "encoder,", ["encoder", ""], ("decoder", " ")])
def test_a_blank_step_name_in_skip_is_refused_naming_it(tiny_corpus, tmp_path, skip):
    # was: "" and "," skipped nothing, ["encoder", ""] dropped the blank, without a word
    with pytest.raises(ValueError, match="blank step name") as err:
        TuningPipeline(tiny_corpus["docs"], tmp_path / "out", skip=skip)
    assert repr(skip) in str(err.value) and "skip=None" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_skip_given_ordinarily_is_unchanged(tiny_corpus, tmp_path):
    docs = tiny_corpus["docs"]
    assert TuningPipeline(docs, tmp_path / "a", skip=None).skip == ()
    assert TuningPipeline(docs, tmp_path / "b", skip=[]).skip == ()
    assert TuningPipeline(docs, tmp_path / "c", skip=" Decoder , report").skip == (
        "decoder",
        "report",
    )
    assert TuningPipeline(docs, tmp_path / "d", skip=iter(["encoder"])).skip == ("encoder",)


# ----------------------------------------- a feedback store in a read-only folder, -wal beside


def _as_nobody(fn, *args):
    """``fn(*args)`` in a child running as ``nobody`` (root ignores file permissions)."""
    import traceback

    if os.geteuid() != 0:
        return fn(*args)
    queue = FORK.Queue()

    def child():
        try:
            os.setgid(65534)
            os.setuid(65534)
            queue.put(("ok", fn(*args)))
        except BaseException as exc:
            queue.put((type(exc).__name__, f"{exc}\n{traceback.format_exc()}"))

    proc = FORK.Process(target=child)
    proc.start()
    result = queue.get(timeout=120)
    proc.join(60)
    return result


def _read(path):
    try:
        with FeedbackStore(path, read_only=True) as store:
            return ("ok", store.stats().records)
    except Exception as exc:
        return (type(exc).__name__, str(exc))


def _wal_records(path):
    """Commit a row into ``path``'s ``-wal`` and leave it there (killed before a checkpoint)."""
    pid = os.fork()
    if pid == 0:
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("CREATE TABLE IF NOT EXISTS other_notes(a)")
        conn.execute("INSERT INTO other_notes VALUES (1)")
        conn.commit()
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0


@needs_fork
@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("wal", ["empty", "with records"])
def test_a_store_in_a_read_only_folder_with_a_wal_but_no_shm(wal):
    base = Path(tempfile.mkdtemp())  # not tmp_path: its parents are private to root
    try:
        os.chmod(base, 0o755)
        folder = base / "ro"
        folder.mkdir()
        path = folder / "feedback.sqlite"
        with FeedbackStore(path) as store:
            store.record("apple return policy?")
        wal_file = Path(f"{path}-wal")
        if wal == "empty":
            wal_file.write_bytes(b"")  # what a writer that closed uncleanly may leave
        else:
            _wal_records(path)
            Path(f"{path}-shm").unlink()
        for file in folder.iterdir():
            os.chmod(file, 0o644)
        os.chmod(folder, 0o555)
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        status, value = _as_nobody(_read, path)
        if wal == "empty":  # was: "cannot be opened ... open it with read_only=True" (it was)
            assert (status, value) == ("ok", ("ok", 1))
        else:  # records in the -wal that SQLite cannot read here: named, never skipped
            kind, message = value
            assert kind == "PermissionError", value
            assert "feedback.sqlite-wal beside it holds" in message
            assert "feedback.sqlite-shm" in message and "copy feedback.sqlite" in message
        os.chmod(folder, 0o755)
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing written
    finally:
        for folder in base.iterdir():
            os.chmod(folder, 0o755)
        shutil.rmtree(base)
