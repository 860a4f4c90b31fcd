"""Hostile pipeline inputs: a huge or special metadata file, globs at scale, and bundle
version names spelled several ways (``v02``, ``V2``, ``v٢``...), a no-op rollback on a
read-only copy."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import fake_bundles, write_minimal_version  # tests/pipeline/conftest.py

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.pipeline import sources
from llama_index_ragtune.pipeline.bundle_folders import (
    BundleError,
    bundle_versions,
    current_version,
    next_version,
    resolve_bundle_dir,
)
from llama_index_ragtune.pipeline.rollback import switch_version
from llama_index_ragtune.pipeline.sources import read_documents, read_metadata

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------ metadata.json


def test_a_metadata_file_over_the_document_limit_is_named_before_it_is_read(tmp_path):
    # It was read whole, however large (a 40 MiB file: 130 MiB of memory, then accepted).
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({"a.md": {"note": "x" * 2000}}), encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_metadata(path, ["a.md"], max_bytes=1000)
    assert err.value.path == path
    assert "1,000-byte limit of a metadata file" in str(err.value)
    assert "glob" in str(err.value)  # says how to make it smaller
    assert read_metadata(path, ["a.md"], max_bytes=4000)["a.md"]["note"] == "x" * 2000


def test_read_documents_applies_its_max_bytes_to_the_metadata_file(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\nShort.", encoding="utf-8")
    (tmp_path / "metadata.json").write_text(json.dumps({"a.md": {"k": "v" * 500}}))
    with pytest.raises(DataError, match="limit of a metadata file"):
        read_documents(tmp_path / "docs", max_bytes=100)
    assert read_documents(tmp_path / "docs")[0].metadata["k"] == "v" * 500


def test_a_fifo_passed_as_the_metadata_file_is_named_not_waited_on(tmp_path):
    # Reading it blocked for ever (until some process wrote to the FIFO).
    fifo = tmp_path / "metadata.json"
    os.mkfifo(fifo)
    done = threading.Event()
    release = threading.Thread(target=_release_readers, args=(fifo, done), daemon=True)
    release.start()
    try:
        with pytest.raises(DataError, match="not a regular file") as err:
            read_metadata(fifo, ["a.md"])
    finally:
        done.set()
    assert err.value.path == fifo


def _release_readers(fifo: Path, done: threading.Event) -> None:
    """After 3 s, open and close ``fifo`` for writing until ``done``: a reader blocked on it
    gets an empty file, so code that would block fails the test instead of hanging it."""
    done.wait(3)
    while not done.wait(0.1):
        with contextlib.suppress(OSError):  # ENXIO: nobody is reading it
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_one_glob_per_folder_compares_each_file_with_its_folders_globs_only(tmp_path, monkeypatch):
    # Every glob was compared with every file: 2,000 folder globs x 2,000 files took 30 s.
    files = [f"f{i}/doc{j}.md" for i in range(200) for j in range(5)]
    entries = {f"f{i}/*.md": {"folder": i} for i in range(200)}
    entries["**/doc0.md"] = {"first": True}
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    calls = []
    real = sources.glob_match
    monkeypatch.setattr(sources, "glob_match", lambda p, f: calls.append(1) or real(p, f))
    merged = read_metadata(path, files)
    assert merged["f7/doc0.md"] == {"folder": 7, "first": True}
    assert merged["f7/doc3.md"] == {"folder": 7}
    # 200 globs x 5 files of their folder, plus one glob with no literal head x the 200
    # files holding its literal part "doc0.md" (s43: was x all 1,000 files)
    assert len(calls) == 200 * 5 + 200


@pytest.mark.parametrize("key", ["../outside.md", "docs/../a.md", "../**"])
def test_a_key_with_dotdot_is_named_as_not_followed(tmp_path, key):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({key: {"k": 1}}), encoding="utf-8")
    with pytest.raises(DataError, match="match no document") as err:
        read_metadata(path, ["a.md"])
    assert "'..' in" in str(err.value) and "inside the docs folder" in str(err.value)


# ------------------------------------------------------------------ version names

MISNAMED = ["v02", "V2", "v2 ", "v+2", "v\u0662", "v2\n", " v2"]


@pytest.mark.parametrize("name", MISNAMED)
def test_a_folder_spelled_otherwise_is_never_a_second_name_of_a_version(tmp_path, name, caplog):
    # v02, v٢ (an Arabic-Indic two) and "v2\n" were versions of their own, numbered 2.
    root = fake_bundles(tmp_path, 1)
    (root / name).mkdir()
    write_minimal_version(root / name, "v2")
    assert bundle_versions(root) == ["v1"]
    with caplog.at_level(logging.WARNING):
        assert next_version(root) == "v3"  # never a v2 beside it
    assert f"{name!r} (not a version name; v2 is)" in caplog.text


@pytest.mark.parametrize("written", ["v02", "v\u0662", "  V2 \n"])
def test_current_naming_a_version_spelled_otherwise_is_an_error_saying_how_it_is_written(
    tmp_path, written
):
    # CURRENT "v02" served the folder v02; "v٢" served v٢.
    root = fake_bundles(tmp_path, 2)
    (root / "v02").mkdir()
    write_minimal_version(root / "v02", "v02")
    (root / "CURRENT").write_text(written, encoding="utf-8")
    for read in (current_version, resolve_bundle_dir, switch_version):
        with pytest.raises(BundleError, match=r"version 2 is written v2"):
            read(root)
    assert switch_version(root, to="v2") == (None, "v2")  # --to repairs it
    assert (root / "CURRENT").read_text() == "v2\n"


@pytest.mark.parametrize("to", ["v02", "V1", "v\u0661"])
def test_rollback_to_a_name_spelled_otherwise_says_how_it_is_written(tmp_path, to):
    root = fake_bundles(tmp_path, 2)
    (root / to).mkdir()
    write_minimal_version(root / to, to)
    with pytest.raises(BundleError, match=rf"is written v{int(to[1:])}"):
        switch_version(root, to=to)
    assert current_version(root) == "v2"


@pytest.mark.parametrize("content", [b"v2" * 500_000, b"v2\x00", b"v1\nv2\n"])
def test_a_huge_or_multi_line_current_is_named_not_read_as_a_version(tmp_path, content):
    root = fake_bundles(tmp_path, 2)
    (root / "CURRENT").write_bytes(content)
    with pytest.raises(BundleError, match="which is not a bundle version") as err:
        current_version(root)
    assert len(str(err.value)) < 1000


# ------------------------------------------------------------------ a rollback that changes nothing


def test_rollback_to_the_served_version_writes_nothing(tmp_path, capsys):
    from llama_index_ragtune.cli import main

    root = fake_bundles(tmp_path, 2)
    before = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}  # history.jsonl too
    assert main(["rollback", "--bundle", str(root), "--to", "v2"]) == 0
    assert "CURRENT: v2 already; nothing changed (versions: v1, v2)" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == before


def _read_only_rollback(root: Path, to: str) -> subprocess.CompletedProcess:
    """``ragtune rollback --to`` in a child that cannot write ``root``: a read-only bind mount
    (as root, where chmod stops nothing) or ``chmod a-w`` (as another user)."""
    command = [sys.executable, "-m", "llama_index_ragtune.cli", "rollback"]
    command += ["--bundle", str(root), "--to", to]
    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))
    env = {**os.environ, "PYTHONPATH": path}
    if os.geteuid() != 0:
        root.chmod(0o555)
        try:
            return subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        finally:
            root.chmod(0o755)
    if not shutil.which("unshare") or not shutil.which("mount"):
        pytest.skip("running as root without unshare: no read-only folder can be made")
    mount = f'mount --bind "{root}" "{root}" && mount -o remount,bind,ro "{root}" && exec "$@"'
    done = subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", mount, "sh", *command],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        check=False,
    )
    if "mount" in done.stderr and done.returncode != 0 and "ragtune" not in done.stderr:
        pytest.skip(f"read-only bind mounts not permitted here: {done.stderr[-200:]}")
    return done


def test_rollback_to_the_served_version_on_a_read_only_copy_answers_nothing_changed(tmp_path):
    # It took the writer lock and rewrote CURRENT: "cannot point CURRENT at v2 ... read-only".
    root = fake_bundles(tmp_path, 2)
    done = _read_only_rollback(root, "v2")
    assert done.returncode == 0, done.stderr
    assert "CURRENT: v2 already; nothing changed" in done.stdout
    moved = _read_only_rollback(root, "v1")  # a real switch still says why it cannot
    assert moved.returncode != 0 and "read-only" in moved.stderr
    assert current_version(root) == "v2"
