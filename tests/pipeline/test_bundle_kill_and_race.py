"""Bundle versions under process kills and concurrent writers, tried as a user hits them.

Writers are real processes (forked, so they start without importing the models again)
stopped with ``SIGKILL`` at points a hook in the child marks with a file; nothing
depends on timing: the test waits for the marker files.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from llama_index_ragtune._atomic import atomic_dir, sha256_file
from llama_index_ragtune.pipeline import (
    BundleError,
    bundle_folders,
    bundle_versions,
    bundle_writer,
    current_version,
    load_bundle,
    rollback_bundle,
    set_current_version,
    verify_bundle,
)
from llama_index_ragtune.pipeline.bundle_folders import bundle_lock, next_version
from llama_index_ragtune.pipeline.runner import TuningPipeline
from tests.pipeline.conftest import write_minimal_version

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks writer processes")

FORK = multiprocessing.get_context("fork") if hasattr(os, "fork") else None
WAIT = 120  # seconds a marker may take to appear before the test gives up (never reached)


@pytest.fixture
def out(tuned_run, tmp_path):
    """A private copy of the tuned run's output folder (bundle v1)."""
    return shutil.copytree(tuned_run["out"], tmp_path / "out")


def wait_for(path: Path, process=None) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        if process is not None and process.exitcode is not None:
            raise AssertionError(f"the writer exited ({process.exitcode}) before {path.name}")
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def bundle_step(out: Path, corpus: dict, config) -> TuningPipeline:
    """The tuned run resumed with only its bundle step left to run."""
    pipeline = TuningPipeline(
        corpus["docs"], out, queries=corpus["queries"], config=config, resume=True, echo=len
    )
    pipeline.context.state.forget(["bundle"])
    return pipeline


def _write_then_pause(out, corpus, config, signals, point):
    """Child: run the bundle step and stop for good at ``point`` (``copy``: inside the
    temporary version folder; ``current``: the folder renamed into place, CURRENT not yet
    moved), after creating ``signals/<point>``."""

    def pause(*args, **kwargs):
        (signals / point).write_text(str(os.getpid()))
        time.sleep(3600)

    if point == "copy":
        copy = bundle_writer._copy_tree
        bundle_writer._copy_tree = lambda src, dst: (copy(src, dst), pause())
    else:
        bundle_writer.atomic_write_text = pause
    bundle_step(out, corpus, config).run()


def _write_racing(out, corpus, config, signals, name):
    """Child: run the bundle step; mark when it picked a version name (then wait for
    ``signals/go``) or when it found the writer lock taken; record what it wrote."""
    pick = bundle_writer.next_version

    def next_version_then_wait(root):
        version = pick(root)
        (signals / f"{name}-picked-{version}").touch()
        wait_for(signals / "go")
        return version

    def sleep(seconds):  # bundle_lock waits for the lock in these sleeps
        (signals / f"{name}-waits").touch()
        time.sleep(seconds)

    bundle_writer.next_version = next_version_then_wait
    bundle_folders.time = type("T", (), {"monotonic": time.monotonic, "sleep": sleep})
    written = bundle_writer.write_bundle(bundle_step(out, corpus, config).context, out)
    (signals / f"{name}.json").write_text(json.dumps(written))


@pytest.mark.parametrize("point", ["copy", "current"])
def test_a_bundle_step_killed_while_writing_leaves_v1_served_and_a_rerun_works(
    out, tiny_corpus, make_config, tmp_path, point
):
    signals = tmp_path / "signals"
    signals.mkdir()
    child = FORK.Process(
        target=_write_then_pause, args=(out, tiny_corpus, make_config(), signals, point)
    )
    child.start()
    wait_for(signals / point, child)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    root = out / "bundles"
    left = sorted(p.name for p in root.iterdir())
    if point == "copy":  # a half-written folder is left beside v1, never served
        assert [n for n in left if n.startswith("v2.tmp-")] and "v2" not in left
    else:  # v2 is complete but CURRENT was not moved
        assert "v2" in left and verify_bundle(root / "v2")["version"] == "v2"
    assert current_version(out) == "v1" and load_bundle(out).version == "v1"

    result = bundle_step(out, tiny_corpus, make_config()).run()
    # the leftover is removed and uses up no number; a complete v2 is kept
    expected = "v2" if point == "copy" else "v3"
    assert result.version == expected == current_version(out)
    assert load_bundle(out).version == expected
    assert not [p.name for p in root.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert bundle_versions(out) == (["v1", "v2"] if point == "copy" else ["v1", "v2", "v3"])


def test_two_bundle_writers_at_once_get_distinct_versions(out, tiny_corpus, make_config, tmp_path):
    """The first writer stops after picking its version name; the second must wait for
    it (old code: both picked v2 and the second replaced the first one's folder)."""
    signals = tmp_path / "signals"
    signals.mkdir()
    args = (out, tiny_corpus, make_config(), signals)
    first = FORK.Process(target=_write_racing, args=(*args, "a"))
    first.start()
    wait_for(signals / "a-picked-v2", first)
    second = FORK.Process(target=_write_racing, args=(*args, "b"))
    second.start()
    deadline = time.monotonic() + WAIT
    while not ((signals / "b-waits").exists() or (signals / "b-picked-v2").exists()):
        assert time.monotonic() < deadline and second.exitcode is None
        time.sleep(0.02)
    (signals / "go").touch()
    for child in (first, second):
        child.join(WAIT)
        assert child.exitcode == 0
    written = {n: json.loads((signals / f"{n}.json").read_text()) for n in "ab"}
    assert (written["a"]["version"], written["b"]["version"]) == ("v2", "v3")
    root = out / "bundles"
    for info in written.values():  # each version holds what its writer wrote
        folder = root / info["version"]
        assert sha256_file(folder / "manifest.json") == info["manifest_sha256"]
        assert verify_bundle(folder)["version"] == info["version"]
    assert bundle_versions(out) == ["v1", "v2", "v3"] and current_version(out) == "v3"


# ----------------------------------------------------------- hand-written bundles (fast)


def fake_version(root: Path, version: str) -> None:
    """Write ``version`` as a bundle the way writers do: atomically, under the writer lock."""
    with atomic_dir(root / version) as tmp:
        write_minimal_version(tmp, version, notes=version * 1000)


def fake_bundles(tmp_path: Path, count: int = 2) -> Path:
    root = tmp_path / "out" / "bundles"
    root.mkdir(parents=True)
    for n in range(1, count + 1):
        fake_version(root, f"v{n}")
    set_current_version(root, f"v{count}")
    return root


def dead_pid() -> int:
    child = FORK.Process(target=int)
    child.start()
    child.join()
    return child.pid


def test_leftovers_of_killed_writers_are_removed_and_use_up_no_version(tmp_path):
    root = fake_bundles(tmp_path)
    pid = dead_pid()
    (root / f"v3.tmp-{pid}-abc123").mkdir()
    (root / f"v3.tmp-{pid}-abc123" / "half.bin").write_bytes(b"x")
    (root / f".CURRENT.tmp-{pid}-def456").write_text("v")
    (root / f".history.jsonl.tmp-{pid}-0a1b2c.jsonl").write_text("{")
    live = root / f"v4.tmp-{os.getppid()}-abcdef"  # a live writer's folder: kept, counted
    live.mkdir()
    with bundle_lock(root):
        assert next_version(root) == "v5"
    assert sorted(p.name for p in root.iterdir()) == [
        ".lock",
        "CURRENT",
        "v1",
        "v2",
        live.name,
    ]
    live.rmdir()
    assert next_version(root) == "v3"
    assert verify_bundle(root / "v2")["version"] == "v2" == current_version(root)


def _hold_lock(root, signals):
    with bundle_lock(root):
        (signals / "held").touch()
        wait_for(signals / "release")


def test_a_writer_waits_for_the_lock_then_gives_a_bundle_error_naming_the_folder(
    tmp_path, monkeypatch
):
    root = fake_bundles(tmp_path)
    signals = tmp_path / "signals"
    signals.mkdir()
    holder = FORK.Process(target=_hold_lock, args=(root, signals))
    holder.start()
    try:
        wait_for(signals / "held", holder)
        monkeypatch.setattr(bundle_folders, "LOCK_TIMEOUT", 0.3)
        with pytest.raises(BundleError, match=rf"{root} is locked by another process.*0\.3 s"):
            set_current_version(root, "v1")
        with pytest.raises(BundleError, match="is locked by another process"):
            rollback_bundle(root)
        assert current_version(root) == "v2"  # nothing moved
    finally:
        (signals / "release").touch()
        holder.join(WAIT)
    assert rollback_bundle(root) == "v1"  # free again


def test_the_lock_of_a_killed_holder_is_released(tmp_path):
    root = fake_bundles(tmp_path)
    signals = tmp_path / "signals"
    signals.mkdir()
    holder = FORK.Process(target=_hold_lock, args=(root, signals))
    holder.start()
    wait_for(signals / "held", holder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    with bundle_lock(root, timeout=WAIT):
        assert next_version(root) == "v3"


def _read_in_a_loop(root, signals, name):
    """Child: resolve, verify and read CURRENT until ``signals/stop``; record any error."""
    from llama_index_ragtune.pipeline.bundle_folders import resolve_bundle_dir

    errors, reads = [], 0
    while not (signals / "stop").exists():
        try:
            folder = resolve_bundle_dir(root)
            assert verify_bundle(folder)["version"] == folder.name
            assert current_version(root) in bundle_versions(root)
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            errors.append(f"{type(exc).__name__}: {exc}")
        reads += 1
        if reads == 1:
            (signals / f"{name}-reading").touch()
    (signals / f"{name}.json").write_text(json.dumps({"reads": reads, "errors": errors[:5]}))


def test_readers_never_see_a_torn_current_or_an_unverifiable_version(tmp_path):
    root = fake_bundles(tmp_path)
    signals = tmp_path / "signals"
    signals.mkdir()
    readers = [
        FORK.Process(target=_read_in_a_loop, args=(root, signals, f"r{i}")) for i in range(2)
    ]
    for reader in readers:
        reader.start()
    for i, reader in enumerate(readers):
        wait_for(signals / f"r{i}-reading", reader)
    for n in range(3, 13):  # new versions, rollbacks and flips while they read
        with bundle_lock(root):
            version = next_version(root)
            fake_version(root, version)
            set_current_version(root, version)
        assert rollback_bundle(root) == f"v{n - 1}"
        set_current_version(root, f"v{n % 3 + 1}")
        rollback_bundle(root, to=version)
    (signals / "stop").touch()
    for i, reader in enumerate(readers):
        reader.join(WAIT)
        result = json.loads((signals / f"r{i}.json").read_text())
        assert result["errors"] == [] and result["reads"] > 0
    assert bundle_versions(root) == [f"v{n}" for n in range(1, 13)]


@pytest.mark.slow
def test_a_rollback_while_a_refresh_trains_is_not_undone(out, tmp_path, monkeypatch):
    """The refresh compared its stack with v2; the operator rolled back to v1 meanwhile:
    the refresh must not promote over the rollback (old code served a v3 built on v2)."""
    from test_refresh import simulate_day  # tests/pipeline/test_refresh.py

    from llama_index_ragtune.pipeline import (
        RefreshError,
        read_history,
        refresh_bundle,
        refresh_eval,
    )

    simulate_day(out, tmp_path / "feedback.sqlite")
    root = out / "bundles"
    shutil.copytree(root / "v1", root / "v2")  # v2: the same files under the next name
    manifest = json.loads((root / "v2" / "manifest.json").read_text())
    manifest["version"] = "v2"
    (root / "v2" / "manifest.json").write_text(json.dumps(manifest))
    set_current_version(out, "v2")
    decide = refresh_eval.decide

    def rollback_meanwhile(*args, **kwargs):
        assert rollback_bundle(out) == "v1"
        return decide(*args, **kwargs)

    monkeypatch.setattr(refresh_eval, "decide", rollback_meanwhile)
    with pytest.raises(RefreshError, match=r"CURRENT moved from v2 to v1 while this refresh ran"):
        refresh_bundle(
            out, tmp_path / "feedback.sqlite", tmp_path / "r", force=True, eval_fraction=0.3
        )
    assert current_version(out) == "v1" and bundle_versions(out) == ["v1", "v2"]
    assert read_history(out)[-1]["action"] == "rollback"
