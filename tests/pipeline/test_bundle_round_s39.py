"""Bundles under a hostile-input battery (round 39): a manifest that is a pipe, a device,
a link leading outside or far larger than any written one; a writer asked to write a
manifest no reader would load; a bundles folder copied without ``CURRENT``; a path
inside a bundle passed as the bundle; ``CURRENT`` and manifests saved by Windows tools
(byte order marks, UTF-16); a folder name that is not UTF-8; a writer's replaced copy
holding another version. Each is named with how to fix it, and nothing is lost.
"""

from __future__ import annotations

import codecs
import json
import os
import shutil

import pytest

from llama_index_ragtune._atomic import atomic_dir
from llama_index_ragtune.pipeline import (
    BundleError,
    bundle_versions,
    current_version,
    load_bundle,
    verify_bundle,
)
from llama_index_ragtune.pipeline.bundle_folders import resolve_bundle_dir
from tests.blocking_calls import call_in_thread
from tests.pipeline.conftest import fake_bundles, write_minimal_version

SIXTEEN_MIB = 16 << 20  # bundle_manifest.MAX_MANIFEST_BYTES, spelled out (the old code lacks it)


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------ manifest: not a plain file


def test_a_manifest_that_is_a_named_pipe_is_refused_without_blocking(tmp_path):
    root = fake_bundles(tmp_path, 1)
    manifest = root / "v1" / "manifest.json"
    manifest.unlink()
    os.mkfifo(manifest)
    result = call_in_thread(lambda: verify_bundle(root / "v1"))
    if not result["done"]:  # unblock the old code's read, then fail
        with open(manifest, "wb"):
            pass
    assert result["done"], "verify_bundle blocked reading a named pipe"
    assert isinstance(result["error"], BundleError)
    assert "named pipe" in str(result["error"]) and str(manifest) in str(result["error"])


@pytest.mark.parametrize("target", ["outside file", "/dev/zero", "/dev/null"])
def test_a_manifest_linked_outside_the_version_is_never_read(tmp_path, target):
    root = fake_bundles(tmp_path, 1)
    manifest = root / "v1" / "manifest.json"
    if target == "outside file":  # a whole, valid manifest, but elsewhere: it could change
        target = shutil.copy(manifest, tmp_path / "elsewhere.json")
    manifest.unlink()
    manifest.symlink_to(target)
    with pytest.raises(BundleError, match=r"manifest.json leads outside the bundle folder"):
        verify_bundle(root / "v1")


def test_a_manifest_linked_inside_the_version_still_verifies(tmp_path):
    root = fake_bundles(tmp_path, 1)
    (root / "v1" / ".manifest-real.json").write_bytes((root / "v1" / "manifest.json").read_bytes())
    (root / "v1" / "manifest.json").unlink()
    (root / "v1" / "manifest.json").symlink_to(".manifest-real.json")
    assert verify_bundle(root / "v1")["version"] == "v1"


def test_a_manifest_over_the_size_cap_is_refused(tmp_path):
    root = fake_bundles(tmp_path, 1)
    manifest = root / "v1" / "manifest.json"
    text = manifest.read_text(encoding="utf-8")  # still valid JSON: whitespace after "{"
    manifest.write_text("{" + " " * SIXTEEN_MIB + text[1:], encoding="utf-8")
    with pytest.raises(BundleError, match=r"manifest.json is larger than 16 MiB"):
        verify_bundle(root / "v1")


def test_a_manifest_just_under_the_cap_still_verifies(tmp_path):
    root = fake_bundles(tmp_path, 1)
    manifest = root / "v1" / "manifest.json"
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text("{" + " " * (SIXTEEN_MIB - len(text)) + text[1:], encoding="utf-8")
    assert manifest.stat().st_size == SIXTEEN_MIB
    assert verify_bundle(root / "v1")["version"] == "v1"


# ------------------------------------------------------------ writers: only loadable manifests


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(notes=" " * SIXTEEN_MIB), r"larger than 16 MiB"),
        (lambda m: m["retrieval"].update(similarity_top_k=0), r"similarity_top_k"),
    ],
    ids=["oversized", "out of range"],
)
def test_a_writer_refuses_a_manifest_no_reader_would_load(tmp_path, edit, message):
    from llama_index_ragtune.pipeline.bundle_manifest import write_manifest

    root = fake_bundles(tmp_path, 2)
    refused = pytest.raises(BundleError, match=rf"would not load .*{message}.*version stays")
    with refused, atomic_dir(root / "v3") as tmp:
        write_minimal_version(tmp, "v3")
        manifest = _manifest(tmp)
        edit(manifest)
        write_manifest(tmp, manifest)
    assert bundle_versions(root) == ["v1", "v2"] and current_version(root) == "v2"
    assert sorted(os.listdir(root)) == [".lock", "CURRENT", "v1", "v2"]


# ------------------------------------------------------------ what was passed as the bundle


def test_a_bundles_folder_copied_without_current_names_its_versions(tmp_path):
    root = fake_bundles(tmp_path, 2)
    (root / "CURRENT").unlink()
    for path in (root, root.parent):
        with pytest.raises(BundleError) as caught:
            resolve_bundle_dir(path)
        message = str(caught.value)
        assert "holds no bundle" not in message
        assert "['v1', 'v2']" in message and "version='v2'" in message
        assert f"ragtune rollback --bundle {root} --to v2" in message
    assert resolve_bundle_dir(root, "v2") == root / "v2"  # the fix it names works


@pytest.mark.parametrize(
    "inside, expected",
    [
        ("CURRENT", "."),
        ("v1/manifest.json", "v1"),
        ("v1/notes.txt", "v1"),
        ("v1/index", "v1"),  # a folder inside a version
    ],
)
def test_a_path_inside_a_bundle_names_the_folder_to_pass(tmp_path, inside, expected):
    root = fake_bundles(tmp_path, 1)
    (root / "v1" / "index").mkdir()
    with pytest.raises(BundleError) as caught:
        resolve_bundle_dir(root / inside)
    message = str(caught.value)
    assert f"inside a bundle, not a bundle folder: pass {os.path.normpath(root / expected)}" in (
        message
    )
    assert "CURRENT not found" not in message


# ------------------------------------------------------------ files saved by Windows tools


@pytest.mark.parametrize(
    "data",
    [
        codecs.BOM_UTF8 + b"v1\r\n",  # Notepad
        "v1\r\n".encode("utf-16"),  # PowerShell 5: echo v1 > CURRENT
        "v1".encode("utf-16-be").join([codecs.BOM_UTF16_BE, b""]),
    ],
    ids=["utf-8 bom", "utf-16", "utf-16-be"],
)
def test_a_current_saved_with_a_byte_order_mark_is_read(tmp_path, data):
    root = fake_bundles(tmp_path, 2)
    (root / "CURRENT").write_bytes(data)
    assert current_version(root) == "v1"
    assert resolve_bundle_dir(root) == root / "v1"


def test_a_manifest_saved_with_a_byte_order_mark_verifies(tmp_path):
    root = fake_bundles(tmp_path, 1)
    manifest = root / "v1" / "manifest.json"
    manifest.write_bytes(codecs.BOM_UTF8 + manifest.read_bytes())
    assert verify_bundle(root / "v1")["version"] == "v1"


def test_a_current_that_is_still_not_a_name_after_decoding_is_refused(tmp_path):
    root = fake_bundles(tmp_path, 2)
    (root / "CURRENT").write_bytes(codecs.BOM_UTF8 + b"v1 junk")
    with pytest.raises(BundleError, match=r"CURRENT names 'v1 junk', which is not a bundle"):
        current_version(root)


# ------------------------------------------------------------ names and leftovers


def test_a_folder_name_that_is_not_utf8_is_named_before_anything_loads(tmp_path):
    latin1 = tmp_path / os.fsdecode(b"caf\xe9")  # a Latin-1 name on a UTF-8 system
    root = fake_bundles(latin1)
    assert current_version(root) == "v2"  # reading and verifying there still works
    assert verify_bundle(resolve_bundle_dir(root))["version"] == "v2"
    with pytest.raises(BundleError) as caught:
        load_bundle(root)
    message = str(caught.value)
    assert "caf\\xe9 is a folder name that is not UTF-8" in message
    assert "rename that folder" in message


def test_a_replaced_copy_holding_another_version_is_not_served_as_it(tmp_path):
    root = fake_bundles(tmp_path, 2)
    planted = root / "v1.old-999999999-abcdef"  # as a writer killed mid-swap names it
    os.rename(root / "v1", tmp_path / "v1-away")
    shutil.copytree(root / "v2", planted)  # but it holds v2
    (root / "CURRENT").write_text("v1\n")
    folder = resolve_bundle_dir(root)
    assert folder == planted
    with pytest.raises(BundleError, match=r"version is 'v2' but the manifest is in the folder"):
        verify_bundle(folder)
