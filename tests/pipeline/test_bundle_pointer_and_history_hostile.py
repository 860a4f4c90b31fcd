"""Hand-damaged bundles folders: what stands in the place of ``CURRENT``, the writers' lock
and ``history.jsonl``, the last version number, a damaged rollback target and a damaged
state file. Each is named with how to fix it, and what was served stays served.
"""

from __future__ import annotations

import json
import logging

import pytest

from llama_index_ragtune.pipeline import (
    BundleError,
    current_version,
    read_history,
    rollback_bundle,
    set_current_version,
    verify_bundle,
)
from llama_index_ragtune.pipeline.bundle_folders import bundle_lock, next_version
from llama_index_ragtune.pipeline.state import PipelineStateError, RunState
from tests.pipeline.conftest import fake_bundles


def test_the_highest_version_number_is_refused_not_written_unreadable(tmp_path):
    root = fake_bundles(tmp_path)
    (root / "v999999999").mkdir()  # e.g. a copy named by hand; v1000000000 is no version name
    with bundle_lock(root), pytest.raises(BundleError, match=r"numbered 999999999.*move that"):
        next_version(root)
    assert current_version(root) == "v2"
    (root / "v999999999").rmdir()
    with bundle_lock(root):
        assert next_version(root) == "v3"


def test_a_folder_in_the_place_of_current_is_named_and_the_fix_works(tmp_path):
    root = fake_bundles(tmp_path)
    (root / "CURRENT").unlink()
    (root / "CURRENT").mkdir()
    with pytest.raises(BundleError, match=r"CURRENT is not a file.*remove the folder, then"):
        current_version(root)
    for action in (lambda: set_current_version(root, "v1"), lambda: rollback_bundle(root, "v1")):
        with pytest.raises(BundleError, match=r"CURRENT is a folder.*remove the folder, then"):
            action()
    (root / "CURRENT").rmdir()
    assert rollback_bundle(root, to="v1") == "v1" == current_version(root)


def test_a_folder_in_the_place_of_the_lock_file_is_named(tmp_path):
    root = fake_bundles(tmp_path)
    (root / ".lock").unlink()
    (root / ".lock").mkdir()
    with pytest.raises(BundleError, match=r"\.lock is a folder.*remove it"):
        set_current_version(root, "v1")
    assert current_version(root) == "v2"


def test_a_rollback_keeps_a_history_it_cannot_decode_and_records_itself(tmp_path):
    root = fake_bundles(tmp_path)
    damaged = b'{"action": "refresh"}\n\xff\xfe not text'
    (root / "history.jsonl").write_bytes(damaged)
    assert rollback_bundle(root) == "v1" == current_version(root)
    data = (root / "history.jsonl").read_bytes()
    assert data.startswith(damaged + b"\n")
    assert json.loads(data.splitlines()[-1])["served"] == "v1"


def test_a_history_that_cannot_be_written_does_not_undo_or_fail_the_rollback(tmp_path, caplog):
    root = fake_bundles(tmp_path)
    (root / "history.jsonl").mkdir()
    with caplog.at_level(logging.WARNING):
        assert rollback_bundle(root) == "v1"
    assert current_version(root) == "v1"
    assert "history.jsonl could not be updated" in caplog.text and '"served": "v1"' in caplog.text


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"\xff\xfe", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON .nested too deeply"),
        (b"9" * 5000, "not valid JSON .Exceeds the limit"),
        (b"[1, 2]", "not a JSON object"),
    ],
)
def test_a_damaged_history_line_is_named(tmp_path, line, message):
    root = fake_bundles(tmp_path)
    (root / "history.jsonl").write_bytes(b'{"action": "refresh"}\n' + line + b"\n")
    with pytest.raises(ValueError, match=rf"history\.jsonl:2: {message}"):
        read_history(root)


def test_a_rollback_to_a_damaged_version_names_it_and_the_others(tmp_path):
    root = fake_bundles(tmp_path, count=3)
    (root / "v2" / "notes.txt").write_text("edited")
    with pytest.raises(BundleError, match=r"cannot roll back to v2: .*notes\.txt.*\['v1'\]"):
        rollback_bundle(root)
    assert current_version(root) == "v3"
    assert verify_bundle(root / "v1") and rollback_bundle(root, to="v1") == "v1"


@pytest.mark.parametrize(
    ("text", "message"),
    [("[" * 100_000, "nested too deeply"), ('{"format": ' + "9" * 5000 + "}", "Exceeds the limit")],
)
@pytest.mark.parametrize("resume", [True, False])
def test_a_damaged_state_file_is_named(tmp_path, text, message, resume):
    (tmp_path / "state.json").write_text(text)
    with pytest.raises(PipelineStateError, match=rf"state\.json is damaged \({message}"):
        RunState.open(tmp_path, inputs="a", config="c", resume=resume)


def test_a_linked_leftover_is_not_served_as_a_replaced_version(tmp_path):
    from llama_index_ragtune.pipeline.bundle_folders import resolve_bundle_dir

    root = fake_bundles(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (root / "v2").rename(elsewhere)  # a complete v2, outside the bundles folder
    (root / "v2.old-1-abcdef").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(BundleError, match=r"v2/manifest\.json not found"):
        resolve_bundle_dir(root)
    with pytest.raises(BundleError, match=r"v2/manifest\.json not found"):
        set_current_version(root, "v2")
    assert not (root / "v2").exists()


def test_links_in_the_place_of_the_lock_and_the_history_are_not_followed(tmp_path, caplog):
    root = fake_bundles(tmp_path)
    created = tmp_path / "elsewhere" / "created-by-a-writer"
    created.parent.mkdir()
    (root / ".lock").unlink()
    (root / ".lock").symlink_to(created)
    with pytest.raises(BundleError, match=r"\.lock is a symbolic link.*remove it"):
        rollback_bundle(root)
    assert not created.exists() and current_version(root) == "v2"
    (root / ".lock").unlink()
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.write_text("not for the bundle\n")
    (root / "history.jsonl").symlink_to(secret)
    with caplog.at_level(logging.WARNING):
        assert rollback_bundle(root) == "v1" == current_version(root)
    assert "history.jsonl could not be updated" in caplog.text
    assert (root / "history.jsonl").is_symlink() and secret.read_text() == "not for the bundle\n"


def test_a_huge_current_is_refused_without_reading_it_whole(tmp_path):
    import tracemalloc

    root = fake_bundles(tmp_path)
    with open(root / "CURRENT", "r+b") as handle:  # "v2" and 64 MiB of (sparse) zeros
        handle.truncate(64 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(BundleError, match=r"CURRENT names 'v2\\n.*…, which is not a bundle"):
            current_version(root)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
