"""Bundles, refreshes and rollbacks under a hostile-input battery (round 41): a version
copied alone and refreshed where it lies; a refresh's ``out`` inside the bundles folder;
bundle paths that are empty (an unset setting), of the wrong type, holding NUL, an unknown
``~user`` or too long; leftovers named after process ids no process can have; a
``history.jsonl`` that is damaged, linked, a folder or a pipe; ``verify=None`` and devices
given to ``load_bundle``. Each is refused by name before anything is loaded or written, and
nothing the user has is lost.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from llama_index_ragtune._atomic import recover_dir
from llama_index_ragtune.pipeline import (
    BundleError,
    RefreshError,
    bundle_versions,
    current_version,
    load_bundle,
    read_history,
    refresh_bundle,
    rollback_bundle,
    set_current_version,
    verify_bundle,
)
from llama_index_ragtune.pipeline.bundle_folders import next_version
from llama_index_ragtune.pipeline.refresh_writer import append_history, write_refreshed_version
from tests.blocking_calls import call_in_thread
from tests.pipeline.conftest import fake_bundles

NO_PROCESS = "99999999999999999999"  # a process id above any system's (pid_t is 32 bits)


def _tree(folder):
    """Every path under ``folder`` with its bytes (files) or None (folders)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


# ------------------------------------------- a refresh of a version outside a bundles folder


def test_a_version_copied_alone_is_not_refreshed_into_its_parent(tmp_path):
    # measured before: the refresh wrote the next version as deploy/v1, replacing the user's
    # deploy/v1 (keep.txt gone), and put CURRENT and history.jsonl into deploy/
    root = fake_bundles(tmp_path, 1)
    deploy = tmp_path / "deploy"
    shutil.copytree(root / "v1", deploy / "my-bundle")
    (deploy / "v1").mkdir()
    (deploy / "v1" / "keep.txt").write_text("user data")
    before = _tree(deploy)
    with pytest.raises(RefreshError, match=r"my-bundle is a bundle version outside a bundles") as e:
        refresh_bundle(deploy / "my-bundle", tmp_path / "feedback.sqlite", out=tmp_path / "r")
    assert "<run>/bundles/v1" in str(e.value) and "--to v1" in str(e.value)
    assert _tree(deploy) == before and not (tmp_path / "r").exists()


def test_the_refresh_writer_never_writes_beside_a_version_outside_a_bundles_folder(tmp_path):
    root = fake_bundles(tmp_path, 1)
    deploy = tmp_path / "deploy"
    shutil.copytree(root / "v1", deploy / "my-bundle")
    (deploy / "v1").mkdir()
    (deploy / "v1" / "keep.txt").write_text("user data")
    before = _tree(deploy)
    with pytest.raises(BundleError, match=r"not inside a bundles folder"):
        write_refreshed_version(None, deploy / "my-bundle", {}, None, {}, {}, {})
    assert _tree(deploy) == before


def test_a_new_version_never_replaces_a_folder_holding_files(tmp_path):
    from llama_index_ragtune._atomic import atomic_dir
    from llama_index_ragtune.pipeline.bundle_folders import NEW_VERSION

    root = fake_bundles(tmp_path, 1)
    (root / "v2").mkdir()  # a folder a writer did not count (e.g. created after the count)
    (root / "v2" / "notes.md").write_text("mine")
    with (
        pytest.raises(FileExistsError, match=r"v2 already holds entries.*notes\.md"),
        atomic_dir(root / "v2", NEW_VERSION, "the bundle writer") as tmp,
    ):
        (tmp / "manifest.json").write_text("{}")
    assert (root / "v2" / "notes.md").read_text() == "mine"


@pytest.mark.parametrize("where", ["bundles", "served version"])
def test_a_refresh_out_inside_the_bundles_folder_is_refused(tmp_path, where):
    # measured before: work/ and refresh.json went into the folder; in a served version they
    # are files its manifest does not list, so the next load_bundle refused the version
    root = fake_bundles(tmp_path, 2)
    out = root if where == "bundles" else root / "v2"
    before = _tree(root)
    with pytest.raises(RefreshError, match=r"out .* is inside the bundles folder"):
        refresh_bundle(root, tmp_path / "feedback.sqlite", out=out)
    assert _tree(root) == before and verify_bundle(root / "v2")["version"] == "v2"


# ------------------------------------------------------------------ bundle paths


def _calls(run):
    return {
        "load_bundle": lambda p: load_bundle(p),
        "rollback_bundle": lambda p: rollback_bundle(p),
        "rollback_bundle --to": lambda p: rollback_bundle(p, to="v1"),
        "set_current_version": lambda p: set_current_version(p, "v1"),
        "current_version": current_version,
        "bundle_versions": bundle_versions,
        "read_history": read_history,
        "verify_bundle": verify_bundle,
        "refresh_bundle bundle": lambda p: refresh_bundle(p, run / "f.sqlite", out=run / "r"),
        "refresh_bundle out": lambda p: refresh_bundle(run, run / "f.sqlite", out=p),
    }


@pytest.mark.parametrize("name", list(_calls(None)))
@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_bundle_path_is_refused_not_read_as_the_working_folder(
    tmp_path, monkeypatch, name, empty
):
    # measured before: rollback_bundle("") rolled back the bundle of the working folder,
    # set_current_version("", ...) moved its CURRENT, load_bundle("") loaded it
    root = fake_bundles(tmp_path, 2)
    monkeypatch.chdir(root.parent)  # the run folder: "" would mean this bundle
    before = _tree(root.parent)
    with pytest.raises(BundleError, match=r"is empty .*use '\.' for the current folder"):
        _calls(root.parent)[name](empty)
    assert _tree(root.parent) == before and current_version(root) == "v2"


@pytest.mark.parametrize("name", list(_calls(None)))
@pytest.mark.parametrize("value", [None, 5, b"out", ["out"]])
def test_a_bundle_path_of_another_type_is_a_type_error_naming_it(tmp_path, name, value):
    root = fake_bundles(tmp_path, 2)
    with pytest.raises(TypeError, match=r"must be a folder path \(str or Path\), got "):
        _calls(root.parent)[name](value)


@pytest.mark.parametrize("name", ["load_bundle", "rollback_bundle", "current_version"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("runs\0/shop", r"holds a NUL byte"),
        ("~no-such-user-s41/runs", r"cannot expand the '~'"),
        ("x" * 5000, r"a name too long for this system \(5000 characters\)"),
    ],
)
def test_an_unusable_bundle_path_is_a_bundle_error_naming_it(tmp_path, name, value, message):
    # measured before: ValueError "embedded null byte", RuntimeError "Could not determine
    # home directory", OSError [Errno 36] from inside pathlib
    with pytest.raises(BundleError, match=message):
        _calls(tmp_path)[name](value)


def test_rolling_back_a_version_folder_says_to_pass_its_bundles_folder(tmp_path):
    root = fake_bundles(tmp_path, 2)
    with pytest.raises(BundleError, match=r"v2 is a bundle version itself: pass its bundles"):
        rollback_bundle(root / "v2")
    assert current_version(root) == "v2"


# ------------------------------------------------ leftovers named after impossible processes


@pytest.mark.parametrize("pid", [NO_PROCESS, "0"])
def test_leftovers_named_after_no_possible_process_do_not_stop_writers(tmp_path, pid):
    # measured before: OverflowError "Python int too large to convert to C long" from every
    # writer (next_version, refreshes, tuning runs) for the huge id; pid 0 asked os.kill about
    # this process's group, which is alive, so the leftover was kept forever
    root = fake_bundles(tmp_path, 2)
    (root / f"v3.tmp-{pid}-abcdef").mkdir()
    (root / f".CURRENT.tmp-{pid}-abcdef").write_text("v3\n")
    assert next_version(root) == "v3"
    assert not (root / f"v3.tmp-{pid}-abcdef").exists()
    assert not (root / f".CURRENT.tmp-{pid}-abcdef").exists()
    set_current_version(root, "v1")
    assert current_version(root) == "v1"


def test_a_persisted_folder_beside_such_a_leftover_recovers(tmp_path):
    (tmp_path / "index").mkdir()
    (tmp_path / f"index.tmp-{NO_PROCESS}-abcdef").mkdir()
    recover_dir(tmp_path / "index")
    assert sorted(os.listdir(tmp_path)) == ["index"]


# ------------------------------------------------------------------ history.jsonl


def test_a_history_line_naming_a_key_twice_is_named(tmp_path):
    root = fake_bundles(tmp_path)
    (root / "history.jsonl").write_text('{"action": "refresh"}\n{"served": "v1", "served": "v2"}\n')
    with pytest.raises(ValueError, match=r"history\.jsonl:2: .*the key 'served' appears twice"):
        read_history(root)


def test_history_with_a_byte_order_mark_and_nan_reads(tmp_path):
    root = fake_bundles(tmp_path)
    lines = b'\xef\xbb\xbf{"action": "refresh", "ndcg": NaN}\r\n{"action": "rollback"}\n'
    (root / "history.jsonl").write_bytes(lines)
    assert read_history(root) == [{"action": "refresh", "ndcg": None}, {"action": "rollback"}]


def test_history_written_by_append_history_reads_back(tmp_path):
    root = fake_bundles(tmp_path)
    append_history(root, {"action": "rollback", "from": "v2", "served": "v1", "x": float("inf")})
    append_history(root, {"action": "refresh", "served": "v2"})
    entries = read_history(root)
    assert [e["action"] for e in entries] == ["rollback", "refresh"] and entries[0]["x"] is None


@pytest.mark.parametrize("kind", ["folder", "named pipe", "link outside", "dangling link"])
def test_something_else_in_the_place_of_the_history_is_named_not_read(tmp_path, kind):
    # measured before: a folder or a pipe read as an empty log, a link followed to a file
    # outside the bundles folder (which append_history refuses to write through)
    root = fake_bundles(tmp_path)
    target = root / "history.jsonl"
    if kind == "folder":
        target.mkdir()
    elif kind == "named pipe":
        os.mkfifo(target)
    else:
        secret = tmp_path / "secret.jsonl"
        if kind == "link outside":
            secret.write_text(json.dumps({"action": "not this bundle's"}) + "\n")
        target.symlink_to(secret)
    result = call_in_thread(lambda: read_history(root), seconds=10)
    assert result["done"], "read_history blocked"
    error = result["error"]
    assert isinstance(error, ValueError) and str(target) in str(error)
    assert "not the log file" in str(error)


def test_a_history_line_longer_than_any_entry_is_refused_without_reading_it_whole(tmp_path):
    import tracemalloc

    root = fake_bundles(tmp_path)
    with open(root / "history.jsonl", "wb") as handle:  # one 64 MiB line of (sparse) zeros
        handle.write(b'{"action": "x"}\n')
        handle.truncate(64 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"history\.jsonl:2: a line longer than 16 MiB"):
            read_history(root)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 << 20  # one capped line, not the file (and not the file twice)


# ------------------------------------------------------------------ load_bundle arguments


@pytest.mark.parametrize("verify", [None, "no", 0, 1])
def test_verify_that_is_not_a_bool_is_a_type_error(tmp_path, verify):
    # measured before: verify=None (an unset setting) skipped every SHA-256 silently
    root = fake_bundles(tmp_path, 1)
    with pytest.raises(TypeError, match=r"load_bundle: verify must be True or False"):
        load_bundle(root, verify=verify)
    with pytest.raises(TypeError, match=r"verify_bundle: hashes must be True or False"):
        verify_bundle(root / "v1", hashes=verify)


@pytest.mark.parametrize(
    ("device", "error", "message"),
    [
        (5, TypeError, r"load_bundle: device must be a torch device name"),
        ("gpu", ValueError, r"load_bundle: device='gpu' is not a torch device"),
        ("cuda:63", ValueError, r"load_bundle: device='cuda:63' is not available here"),
    ],
)
def test_a_bad_device_is_refused_before_any_model_loads(tmp_path, device, error, message):
    # measured before: the encoder and the index loaded first; here (a bundle without an
    # index) the device was never looked at and the error blamed the index
    root = fake_bundles(tmp_path, 1)
    with pytest.raises(error, match=message):
        load_bundle(root, device=device)


# ------------------------------------------------------------------ refresh_bundle arguments


@pytest.mark.parametrize(
    ("option", "error", "message"),
    [
        ({"force": "false"}, TypeError, r"refresh_bundle: force must be True or False"),
        ({"decoder": "no"}, TypeError, r"refresh_bundle: decoder must be True or False"),
        ({"include_earlier": 0}, TypeError, r"include_earlier must be True or False"),
        ({"report": None}, TypeError, r"refresh_bundle: report must be True or False"),
        ({"reranker": "auto"}, TypeError, r"reranker must be True, False or None"),
        ({"config": {"seed": 1}}, TypeError, r"config must be a PipelineConfig or None"),
        ({"margin": "0.01"}, TypeError, r"margin must be a number from 0 to 1"),
        ({"margin": -0.5}, ValueError, r"margin must be from 0 to 1 .*got -0\.5"),
        ({"margin": float("nan")}, ValueError, r"margin must be from 0 to 1"),
        ({"time_budget": -5}, ValueError, r"refresh_bundle: time_budget must be a number"),
        ({"device": "gpu"}, ValueError, r"refresh_bundle: device='gpu' is not a torch device"),
    ],
)
def test_refresh_options_that_would_be_misread_are_refused_before_any_work(
    tmp_path, option, error, message
):
    # before: force="false" is truthy, so a losing challenger was promoted as "forced";
    # margin=-0.5 / NaN failed in decide_promotion after every part had trained, the others
    # once the champion had loaded (here: an error about the bundle's index)
    root = fake_bundles(tmp_path, 1)
    before = _tree(root)
    with pytest.raises(error, match=message):
        refresh_bundle(root, tmp_path / "feedback.sqlite", out=tmp_path / "r", **option)
    assert _tree(root) == before and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"max_new_token": 64}, TypeError, r"\['max_new_token'\] is not a setting of the bundled"),
        ({"model": "other"}, TypeError, r"\['model'\] is not a setting"),
        ({"max_new_tokens": "64"}, TypeError, r"max_new_tokens"),
        ({"temperature": float("nan")}, ValueError, r"temperature"),
    ],
)
def test_decoder_settings_are_checked_before_any_model_loads(tmp_path, settings, error, message):
    # before: a misspelt setting was dropped silently by LocalChatLLM (pydantic ignores
    # unknown fields), the others failed only after the encoder, the index and the reranker
    root = fake_bundles(tmp_path, 1)
    with pytest.raises(error, match=message):
        load_bundle(root, **settings)
