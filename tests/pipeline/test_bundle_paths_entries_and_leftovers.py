"""Bundles under hostile input: relative paths and a changed working folder,
manifest entries of the wrong form (sizes, hashes, paths that escape on another system),
listed paths that are folders or links leading outside, older and newer format versions,
sections other readers use with the wrong type, leftovers of a writer killed on another
host, and folder names in another Unicode form or case. Each is named with how to fix it;
nothing is read from outside the verified folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import unicodedata

import pytest

from llama_index_ragtune._atomic import sha256_file
from llama_index_ragtune.pipeline import BundleError, rollback_bundle, verify_bundle
from llama_index_ragtune.pipeline.bundle_folders import (
    bundle_lock,
    bundles_root,
    current_version,
    next_version,
    resolve_bundle_dir,
)
from tests.pipeline.conftest import fake_bundles


def edit_manifest(folder, change):
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_a_relative_path_is_resolved_once_so_a_later_chdir_reads_the_same_bundle(
    tmp_path, monkeypatch
):
    ours = fake_bundles(tmp_path / "ours")
    theirs = fake_bundles(tmp_path / "theirs")
    (theirs / "v2" / "notes.txt").write_text("their file", encoding="utf-8")
    monkeypatch.chdir(tmp_path / "ours")
    folder = resolve_bundle_dir("out")
    root = bundles_root("out")
    monkeypatch.chdir(tmp_path / "theirs")  # a server's worker, another thread
    assert folder == ours / "v2" and root == ours
    assert verify_bundle(folder)["version"] == "v2"  # ours, not their edited copy
    assert (folder / "notes.txt").read_text(encoding="utf-8") == "v2"


def _entry(manifest):
    return manifest["files"]["notes.txt"]


def _add(name):
    return lambda m: m["files"].__setitem__(name, dict(_entry(m)))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda m: _entry(m).__setitem__("size", -1), id="negative-size"),
        pytest.param(lambda m: _entry(m).__setitem__("size", 10**30), id="huge-size"),
        pytest.param(lambda m: _entry(m).__setitem__("size", "2"), id="size-as-text"),
        pytest.param(lambda m: _entry(m).__setitem__("size", True), id="size-bool"),
        pytest.param(lambda m: _entry(m).__setitem__("sha256", "abc"), id="short-hash"),
        pytest.param(lambda m: _entry(m).__setitem__("sha256", "A" * 64), id="upper-hash"),
        pytest.param(lambda m: _entry(m).__setitem__("sha256", None), id="no-hash"),
        pytest.param(lambda m: m["files"].__setitem__("notes.txt", [1, 2]), id="entry-list"),
        pytest.param(_add("..\\..\\outside.txt"), id="backslashes"),
        pytest.param(_add("C:outside.txt"), id="drive"),
        pytest.param(_add("//host/share/x"), id="unc"),
        pytest.param(_add("./notes.txt"), id="dot-part"),
        pytest.param(_add("sub//notes.txt"), id="empty-part"),
        pytest.param(_add("notes.txt/"), id="trailing-slash"),
    ],
)
@pytest.mark.parametrize("hashes", [True, False])
def test_a_file_entry_of_the_wrong_form_is_named_even_without_hashes(tmp_path, change, hashes):
    folder = fake_bundles(tmp_path, 1) / "v1"
    edit_manifest(folder, change)
    with pytest.raises(BundleError, match=r"manifest\.json: files\[.*\] must be"):
        verify_bundle(folder, hashes=hashes)


def test_a_listed_path_that_is_a_folder_is_named_as_one(tmp_path):
    folder = fake_bundles(tmp_path, 1) / "v1"
    (folder / "sub").mkdir()
    empty = {"sha256": sha256_file(os.devnull), "size": 0}
    edit_manifest(folder, lambda m: m["files"].__setitem__("sub", empty))
    with pytest.raises(BundleError, match=r"sub is a folder, but .*lists it as a file"):
        verify_bundle(folder)


def test_a_listed_file_linked_outside_the_bundle_is_refused(tmp_path):
    folder = fake_bundles(tmp_path, 1) / "v1"
    outside = tmp_path / "outside.txt"
    shutil.copy(folder / "notes.txt", outside)  # same bytes: the hash alone would pass
    (folder / "notes.txt").unlink()
    (folder / "notes.txt").symlink_to(outside)
    with pytest.raises(BundleError, match=r"notes\.txt leads outside the bundle folder"):
        verify_bundle(folder)
    # a link that stays inside (a mounted ConfigMap's ..data/ layout) still verifies
    (folder / "notes.txt").unlink()
    (folder / "..data").mkdir()
    shutil.copy(outside, folder / "..data" / "notes.txt")
    (folder / "notes.txt").symlink_to("..data/notes.txt")
    assert verify_bundle(folder)["version"] == "v1"


@pytest.mark.parametrize(
    "found, message",
    [
        (0, r"format version 0; .* an older bundle format, .* load it with that release"),
        (99, r"format version 99; .* a newer bundle format: upgrade llama-index-ragtune"),
        ("1", r"format version '1'; .* must be a whole number"),
    ],
)
def test_a_format_version_says_whether_to_rewrite_or_upgrade(tmp_path, found, message):
    folder = fake_bundles(tmp_path, 1) / "v1"
    edit_manifest(folder, lambda m: m.__setitem__("format_version", found))
    with pytest.raises(BundleError, match=message):
        verify_bundle(folder)


@pytest.mark.parametrize(
    "change, name",
    [
        (lambda m: m.__setitem__("config", ["seed", 0]), "config"),
        (lambda m: m.__setitem__("data", "nodes"), "data"),
        (lambda m: m.__setitem__("data", {"queries": ["q.jsonl"]}), r"data\.queries"),
        (lambda m: m["retrieval"].__setitem__("fusion", "rrf"), r"retrieval\.fusion"),
        (lambda m: m.__setitem__("decisions", {"part": "encoder"}), "decisions"),
        (lambda m: m.__setitem__("decisions", [{"part": "x"}, 1]), r"decisions\[1\]"),
        (lambda m: m.__setitem__("packages", [1]), "packages"),
    ],
)
def test_a_section_other_readers_use_of_the_wrong_type_is_named(tmp_path, change, name):
    folder = fake_bundles(tmp_path, 1) / "v1"
    edit_manifest(folder, change)
    with pytest.raises(BundleError, match=rf"manifest\.json: {name} must be"):
        verify_bundle(folder)


def test_the_leftovers_of_a_writer_killed_on_another_host_are_removed_or_named(tmp_path, caplog):
    root = fake_bundles(tmp_path)
    # process id 1 is alive here, whichever host or container the writer ran on
    (root / ".CURRENT.tmp-1-abcdef").write_text("v3\n", encoding="utf-8")
    (root / ".history.jsonl.tmp-1-abcdef.jsonl").write_text("{", encoding="utf-8")
    (root / "v3.tmp-1-abcdef").mkdir()
    with caplog.at_level(logging.WARNING), bundle_lock(root):
        assert next_version(root) == "v4"
    # written only under the writers' / the log's lock: dead, removed
    assert sorted(os.listdir(root)) == [".lock", "CURRENT", "v1", "v2", "v3.tmp-1-abcdef"]
    # a folder may be a writer's that takes no lock: kept, and named with the fix
    assert "v3.tmp-1-abcdef, named after a process id that is alive here" in caplog.text
    assert "remove it" in caplog.text


def test_a_name_in_another_unicode_form_or_case_is_pointed_to(tmp_path):
    nfd = unicodedata.normalize("NFD", "bündle café")
    fake_bundles(tmp_path / nfd)
    nfc = tmp_path / unicodedata.normalize("NFC", nfd)
    with pytest.raises(BundleError, match=r"does not exist; .*only in Unicode form"):
        resolve_bundle_dir(nfc / "out")
    with pytest.raises(BundleError, match=r"holds 'out', a name that differs"):
        resolve_bundle_dir(tmp_path / nfd / "OUT")


def test_a_bundle_moved_to_a_path_with_spaces_and_unicode_rolls_back_and_verifies(tmp_path):
    root = fake_bundles(tmp_path, 3)
    moved = tmp_path / unicodedata.normalize("NFD", "déployé ici") / "my run"
    moved.parent.mkdir()
    shutil.move(str(root.parent), str(moved))
    assert rollback_bundle(moved) == "v2"
    assert current_version(moved) == "v2"
    assert verify_bundle(resolve_bundle_dir(moved))["version"] == "v2"


def test_an_empty_weight_file_in_a_bundled_model_is_named_not_blamed_on_its_kind(tmp_path):
    from llama_index_ragtune.models import default_encoder
    from llama_index_ragtune.pipeline import load_bundle
    from llama_index_ragtune.pipeline.bundle_manifest import file_digests

    root = fake_bundles(tmp_path, 1)
    folder = root / "v1"
    shutil.copytree(
        default_encoder(),
        folder / "encoder",
        ignore=shutil.ignore_patterns("*.md", "*.safetensors"),
    )
    (folder / "encoder" / "model.safetensors").write_bytes(b"")  # a save cut short
    edit_manifest(
        folder,
        lambda m: m.update(
            models={**m["models"], "encoder": {"path": "encoder", "reference": None}},
            files=file_digests(folder),
        ),
    )
    with pytest.raises(BundleError, match=r"model\.safetensors is empty \(0 bytes\)") as caught:
        load_bundle(root)
    assert "not hold a model of this kind" not in str(caught.value)


def test_a_writer_refuses_an_empty_weight_file_and_the_served_version_stays(tmp_path):
    from llama_index_ragtune._atomic import atomic_dir
    from llama_index_ragtune.pipeline.bundle_writer import _copy_tree

    root = fake_bundles(tmp_path)
    model = tmp_path / "work" / "decoder"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}", encoding="utf-8")
    (model / "model.safetensors").write_bytes(b"")
    with (
        pytest.raises(BundleError, match=r"decoder/model\.safetensors is empty \(0 bytes\)"),
        bundle_lock(root),
        atomic_dir(root / next_version(root)) as tmp,
    ):
        _copy_tree(model, tmp / "decoder")
    assert sorted(os.listdir(root)) == [".lock", "CURRENT", "v1", "v2"]
    assert current_version(root) == "v2"
