"""Bundles folders under hostile edits: a ``CURRENT`` pointer that is a symbolic link, pointer
texts that would lead outside the bundles folder, and manifests naming a key twice. Each
is refused naming the file (and the key), nothing outside the folder is read into an
error or written through a link, and the fix the message names works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_index_ragtune.pipeline import (
    BundleError,
    current_version,
    rollback_bundle,
    set_current_version,
    verify_bundle,
)
from llama_index_ragtune.pipeline.bundle_folders import resolve_bundle_dir
from tests.pipeline.conftest import fake_bundles

# ------------------------------------------------------------------ CURRENT as a link


@pytest.mark.parametrize("content", ["v1\n", "db-password-hunter2\n", None])
def test_a_linked_current_is_refused_by_name_and_never_read(tmp_path, content):
    root = fake_bundles(tmp_path)
    outside = tmp_path / "elsewhere.txt"
    if content is not None:  # None: a dangling link
        outside.write_text(content)
    (root / "CURRENT").unlink()
    (root / "CURRENT").symlink_to(outside)
    for read in (current_version, resolve_bundle_dir, rollback_bundle):
        with pytest.raises(BundleError, match=r"CURRENT is a symbolic link.*rollback --to") as err:
            read(root)
        assert "hunter2" not in str(err.value)
    assert (root / "CURRENT").is_symlink()


def test_rolling_to_a_version_replaces_the_link_not_its_target(tmp_path):
    root = fake_bundles(tmp_path)
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("keep me\n")
    (root / "CURRENT").unlink()
    (root / "CURRENT").symlink_to(outside)
    assert rollback_bundle(root, to="v1") == "v1"
    assert not (root / "CURRENT").is_symlink() and current_version(root) == "v1"
    assert outside.read_text() == "keep me\n"
    (root / "CURRENT").unlink()
    (root / "CURRENT").symlink_to(outside)
    set_current_version(root, "v2")
    assert current_version(root) == "v2" and outside.read_text() == "keep me\n"


@pytest.mark.parametrize(
    "pointer", ["../x", "/etc", "v1/../../etc", "v1/..", "./v1", "v1\x00", "~/v1"]
)
def test_a_pointer_naming_a_place_outside_the_bundles_folder_is_refused(tmp_path, pointer):
    root = fake_bundles(tmp_path)
    (root / "CURRENT").write_text(pointer)
    with pytest.raises(BundleError, match=r"CURRENT names .*which is not a bundle version"):
        resolve_bundle_dir(root)


# ------------------------------------------------------------------ manifests with a key twice


def _twice(manifest: Path, key: str, value: str, nested: str | None = None) -> None:
    """Append ``key: value`` again to the top object (or the object under ``nested``)."""
    text = manifest.read_text()
    if nested is None:
        text = text.rstrip()[:-1] + f', "{key}": {value}}}'
    else:
        start = text.index(f'"{nested}": {{') + len(f'"{nested}": {{')
        text = text[:start] + f'"{key}": {value}, ' + text[start:]
    manifest.write_text(text)


@pytest.mark.parametrize(
    ("key", "value", "nested"),
    [
        ("version", '"v1"', None),
        ("files", "{}", None),
        ("max_new_tokens", "4096", "generation"),
    ],
)
def test_a_manifest_naming_a_key_twice_is_refused_naming_key_and_file(tmp_path, key, value, nested):
    root = fake_bundles(tmp_path)
    manifest = root / "v1" / "manifest.json"
    if nested is None:  # the same key, the same value: still refused (which counts is unclear)
        value = json.dumps(json.loads(manifest.read_text())[key])
    _twice(manifest, key, value, nested)
    with pytest.raises(
        BundleError, match=rf"v1/manifest\.json is damaged: the key '{key}' appears twice"
    ):
        verify_bundle(root / "v1")
    with pytest.raises(BundleError, match=rf"cannot roll back to v1: .*'{key}' appears twice"):
        rollback_bundle(root)
    assert current_version(root) == "v2"
