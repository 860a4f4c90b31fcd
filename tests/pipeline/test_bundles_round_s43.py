"""Hostile states of bundles, refresh and rollback (round s43).

A refresh stopped after it moved ``CURRENT`` but before it logged its line, a refresh
killed while it started or cleared its work folder, a rollback after a refresh made from
a rolled-back version, version folders replaced by files or deleted, and logs read from
their end (torn, padded, huge). Real files and real processes (forked), no models.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import time

import pytest
from conftest import fake_bundles, write_minimal_version  # tests/pipeline/conftest.py

from llama_index_ragtune._atomic import atomic_dir
from llama_index_ragtune.pipeline import (
    BundleError,
    current_version,
    load_bundle,
    read_history,
    rollback_bundle,
    set_current_version,
)
from llama_index_ragtune.pipeline.refresh import REFRESH_MARK, check_refresh_out
from llama_index_ragtune.pipeline.refresh_writer import append_history, reconcile_history
from llama_index_ragtune.pipeline.state import RunState

FORK = multiprocessing.get_context("fork") if hasattr(os, "fork") else None
needs_fork = pytest.mark.skipif(FORK is None, reason="needs fork")


def _refreshed_version(root, number, parent, reason="nDCG@10 +0.1"):
    """Write ``v<number>`` as a refresh writes it: a manifest naming its ``parent`` and
    holding the refresh's record (no models)."""
    with atomic_dir(root / f"v{number}") as tmp:
        write_minimal_version(tmp, f"v{number}")
        manifest = json.loads((tmp / "manifest.json").read_text())
        manifest.update(
            parent=parent,
            created=f"2026-01-{number:02d}T00:00:00+00:00",
            refresh={"champion": parent, "decision": {"reason": reason}, "out": "r"},
        )
        (tmp / "manifest.json").write_text(json.dumps(manifest))


def _log(root):
    return [(e["action"], e.get("served"), e.get("recovered", False)) for e in read_history(root)]


# ------------------------------------------------- a refresh stopped before its log line


def test_a_refresh_stopped_before_logging_is_logged_by_the_next_rollback(tmp_path, caplog):
    """CURRENT moved to v2, the refresh was killed before its history line (the state it
    leaves): the rollback adds that line, from v2's manifest, before its own."""
    root = fake_bundles(tmp_path, 1)
    _refreshed_version(root, 2, "v1")
    set_current_version(root, "v2")  # what the killed refresh did; nothing logged
    assert read_history(root) == []
    with caplog.at_level(logging.WARNING):
        assert rollback_bundle(root) == "v1"
    history = read_history(root)
    assert [(e["action"], e["served"]) for e in history] == [("refresh", "v2"), ("rollback", "v1")]
    recovered, rollback = history
    assert recovered["recovered"] is True and recovered["promoted"] is True
    assert recovered["champion"] == "v1" and recovered["time"] == "2026-01-02T00:00:00+00:00"
    assert "nDCG@10 +0.1" in recovered["reason"] and "recorded afterwards" in recovered["reason"]
    assert rollback["from"] == "v2"
    assert "the refresh that wrote v2 (served now) was not logged" in caplog.text
    # serving v2 again and reconciling again add no second line
    assert rollback_bundle(root, to="v2") == "v2"
    assert reconcile_history(root) is None
    assert _log(root) == [
        ("refresh", "v2", True),
        ("rollback", "v1", False),
        ("rollback", "v2", False),
    ]


def test_a_logged_refresh_is_not_logged_again(tmp_path):
    root = fake_bundles(tmp_path, 1)
    _refreshed_version(root, 2, "v1")
    set_current_version(root, "v2")
    append_history(root, {"action": "refresh", "promoted": True, "served": "v2"})
    append_history(root, {"action": "rollback", "from": "v2", "served": "v1"})
    append_history(root, {"action": "rollback", "from": "v1", "served": "v2"})
    append_history(root, {"action": "refresh", "promoted": False, "served": "v2"})
    assert reconcile_history(root) is None
    # a torn last line (a killed append) is read past
    with open(root / "history.jsonl", "ab") as log:
        log.write(b'{"action": "refresh", "prom')
    assert reconcile_history(root) is None
    assert [e["action"] for e in read_history(root)][-1] == "refresh"  # the torn one skipped
    # so is a line of another program (read_history names it; reconciling never raises)
    with open(root / "history.jsonl", "ab") as log:
        log.write(b"\nnot json\n")
    assert reconcile_history(root) is None


def test_only_the_missing_line_of_the_served_version_is_added(tmp_path):
    """v2 was logged, v3's refresh was stopped: one line for v3, none for a tuning run's
    version (no refresh record) or when CURRENT is missing or damaged."""
    root = fake_bundles(tmp_path, 1)
    assert reconcile_history(root) is None  # v1: a tuning run's version
    _refreshed_version(root, 2, "v1")
    set_current_version(root, "v2")
    append_history(root, {"action": "refresh", "promoted": True, "served": "v2"})
    _refreshed_version(root, 3, "v2")
    set_current_version(root, "v3")  # no line for v3
    (root / "CURRENT").write_bytes(b"\x00junk")
    assert reconcile_history(root) is None  # damaged: left to the writers' own checks
    (root / "CURRENT").write_text("v3\n")
    entry = reconcile_history(root)
    assert entry["served"] == "v3" and entry["champion"] == "v2"
    assert reconcile_history(root) is None
    assert _log(root) == [("refresh", "v2", False), ("refresh", "v3", True)]


def test_a_log_in_the_way_or_huge_does_not_stop_the_writer(tmp_path):
    root = fake_bundles(tmp_path, 1)
    _refreshed_version(root, 2, "v1")
    set_current_version(root, "v2")
    (root / "history.jsonl").mkdir()  # a folder in its place: named by its writers, not here
    assert reconcile_history(root) is None
    assert rollback_bundle(root) == "v1"
    (root / "history.jsonl").rmdir()
    # two lines no writer made, each over any entry's size (16 MiB): read backwards past
    # them without holding them, the missing line added once
    with open(root / "history.jsonl", "wb") as log:
        log.write(b'{"action": "refresh", "promoted": true, "served": "v1"}\n')
        for _ in range(2):
            log.write(b"x" * ((16 << 20) + 5) + b"\n")
    set_current_version(root, "v2")  # reconciles first: CURRENT is v1 then, nothing to add
    started = time.monotonic()
    entry = reconcile_history(root)
    assert entry is not None and entry["served"] == "v2"
    assert time.monotonic() - started < 10
    assert reconcile_history(root) is None


def _move_current_and_die(root, signals):
    """Child: a refresh's last steps, killed between moving CURRENT and logging."""
    from llama_index_ragtune.pipeline.bundle_folders import bundle_lock

    with bundle_lock(root):
        _refreshed_version(root, 3, "v2")
        set_current_version(root, "v3")
        os.kill(os.getpid(), signal.SIGKILL)


def _roll_back_in_a_loop(root, to, count):
    for _ in range(count):
        rollback_bundle(root, to=to)


@needs_fork
def test_rollbacks_racing_after_a_killed_refresh_add_its_line_once(tmp_path):
    root = fake_bundles(tmp_path, 2)
    append_history(root, {"action": "refresh", "promoted": True, "served": "v2"})
    killed = FORK.Process(target=_move_current_and_die, args=(root, tmp_path))
    killed.start()
    killed.join(60)
    assert killed.exitcode == -signal.SIGKILL and current_version(root) == "v3"
    racers = [
        FORK.Process(target=_roll_back_in_a_loop, args=(root, to, 5)) for to in ("v1", "v2", "v3")
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(60)
        assert racer.exitcode == 0
    recovered = [e for e in read_history(root) if e.get("recovered")]
    assert [(e["served"], e["champion"]) for e in recovered] == [("v3", "v2")]
    assert current_version(root) in ("v1", "v2", "v3")
    assert len(read_history(root)) >= 2 + 1  # v2's, v3's recovered, the rollbacks that moved


# ------------------------------------------------- rollback after a refresh of a rolled-back version


def test_rolling_back_a_refresh_serves_the_version_it_was_made_from(tmp_path, caplog):
    """v2 refreshed, rolled back to v1 (v2 was bad), v3 refreshed from v1: rolling back v3
    serves v1 (was v2, the version the operator had rolled back from)."""
    root = fake_bundles(tmp_path, 1)
    _refreshed_version(root, 2, "v1")
    set_current_version(root, "v2")
    assert rollback_bundle(root) == "v1"
    _refreshed_version(root, 3, "v1")
    set_current_version(root, "v3")
    with caplog.at_level(logging.INFO):
        assert rollback_bundle(root) == "v1"
    assert "the version v3 was refreshed from (not v2" in caplog.text


def test_versions_of_tuning_runs_still_roll_back_to_the_one_before(tmp_path):
    root = fake_bundles(tmp_path, 3)  # no refresh record: v3 -> v2 as before
    assert rollback_bundle(root) == "v2"
    _refreshed_version(root, 4, "v9")  # a parent that is not here: the one before
    set_current_version(root, "v4")
    assert rollback_bundle(root) == "v3"


# ------------------------------------------------- a refresh killed as it starts or clears


def test_a_refresh_killed_at_its_first_state_write_does_not_block_the_next(tmp_path):
    out = tmp_path / "refresh"
    work = out / "work"
    work.mkdir(parents=True)
    (work / ".lock").write_text("4242\n")
    (work / ".state.json.tmp-4242-0a1b2c.json").write_text('{"form')  # cut short
    check_refresh_out(out)  # was: "already holds work/ (not a refresh's)"
    state = RunState.open(work, "inputs", "config", resume=False)  # was PipelineStateError
    state.save()
    assert (work / "state.json").is_file()


def _fill(work):
    """A refresh's work folder: its marked state file and 1,200 files of its steps."""
    for part in range(30):
        folder = work / f"part{part:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(40):
            (folder / f"f{n}.json").write_text("[]")
    (work / "nodes.json").write_text("[]")
    state = {"format": "ragtune-pipeline-state", REFRESH_MARK: True}
    (work / "state.json").write_text(json.dumps(state))


def _clear(work, started):
    started.touch()
    RunState.open(work, "inputs", "config", resume=False)


@needs_fork
def test_a_refresh_killed_while_clearing_its_work_folder_does_not_block_the_next(tmp_path):
    """The state file is removed last: a kill at any point leaves a folder the next
    refresh recognises and clears (was: 13 of 20 kills spread over the clear left a folder
    refused as "work/ (not a refresh's)", to be cleaned by hand)."""
    out = tmp_path / "refresh"
    work = out / "work"
    _fill(work)
    began = time.monotonic()
    RunState.open(work, "inputs", "config", resume=False)
    takes = time.monotonic() - began
    rounds = 10
    for round_ in range(rounds):
        _fill(work)
        started = tmp_path / f"started-{round_}"
        child = FORK.Process(target=_clear, args=(work, started))
        child.start()
        while not started.exists():
            time.sleep(0.0005)
        time.sleep(takes * round_ / rounds)
        os.kill(child.pid, signal.SIGKILL)
        child.join(60)
        check_refresh_out(out)  # was RefreshError
        RunState.open(work, "inputs", "config", resume=False)  # was PipelineStateError
        assert {p.name for p in work.iterdir()} <= {".lock"}


# ------------------------------------------------- versions replaced by files, deleted


def test_a_version_replaced_by_a_file_is_named_as_one(tmp_path, caplog):
    root = fake_bundles(tmp_path, 3)
    (root / "v3").rename(tmp_path / "v3-moved")
    (root / "v3").write_text("a copy gone wrong")
    with pytest.raises(BundleError, match=r"v3 \(a file, not a version folder\)"):
        load_bundle(root)
    (root / "v2").rename(tmp_path / "v2-moved")
    os.symlink(tmp_path / "gone", root / "v2")
    with caplog.at_level(logging.WARNING):
        assert rollback_bundle(root) == "v1"
    assert "v2 (a symbolic link to nothing, not a version folder)" in caplog.text
    assert "v3 (a file, not a version folder)" in caplog.text


def test_a_current_naming_a_deleted_version_says_so(tmp_path, caplog):
    root = fake_bundles(tmp_path, 3)
    import shutil

    shutil.rmtree(root / "v3")
    with pytest.raises(BundleError, match=r"version 'v3' is missing or incomplete; versions here"):
        load_bundle(root)
    with caplog.at_level(logging.WARNING):
        assert rollback_bundle(root) == "v2"
    assert "CURRENT names v3, which does not exist (deleted or moved)" in caplog.text
