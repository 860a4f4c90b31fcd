"""Bundle integrity: verified loading, clear errors for missing or edited files, atomic versions."""

from __future__ import annotations

import json
import shutil

import pytest

from llama_index_ragtune.pipeline import (
    BundleError,
    bundle_versions,
    bundle_writer,
    current_version,
    load_bundle,
    set_current_version,
    verify_bundle,
)
from llama_index_ragtune.pipeline.runner import TuningPipeline


@pytest.fixture
def bundle_copy(tuned_run, tmp_path):
    """A private copy of the tuned run's output folder (tests edit it)."""
    out = tmp_path / "out"
    shutil.copytree(tuned_run["out"], out)
    return out


def test_edited_missing_or_added_files_are_named(bundle_copy):
    folder = bundle_copy / "bundles" / "v1"
    assert verify_bundle(folder)["version"] == "v1"
    weights = next((folder / "encoder").rglob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    weights.write_bytes(bytes(data))
    with pytest.raises(
        BundleError, match=rf"{weights.name} was changed after the bundle was written"
    ):
        load_bundle(bundle_copy)
    verify_bundle(folder, hashes=False)  # sizes alone cannot see it
    weights.write_bytes(bytes(data[:-1]))
    with pytest.raises(BundleError, match=r"changed after the bundle was written \(size"):
        verify_bundle(folder, hashes=False)
    weights.unlink()
    with pytest.raises(BundleError, match=rf"{weights.name} is missing from the bundle"):
        load_bundle(bundle_copy)


def test_unlisted_files_and_a_damaged_manifest(bundle_copy):
    folder = bundle_copy / "bundles" / "v1"
    (folder / "decoder" / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"extra\.bin is not listed in .*manifest\.json"):
        load_bundle(folder)
    (folder / "decoder" / "extra.bin").unlink()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"manifest\.json has format version 99"):
        load_bundle(bundle_copy)
    (folder / "manifest.json").write_text("{")
    with pytest.raises(BundleError, match=r"manifest\.json is not readable JSON"):
        load_bundle(bundle_copy)


def test_missing_bundles_and_versions(tmp_path, bundle_copy):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match=r"CURRENT not found"):
        load_bundle(tmp_path / "empty")
    with pytest.raises(
        BundleError, match=r"version 'v7' is missing or incomplete; versions here: \['v1'\]"
    ):
        load_bundle(bundle_copy, version="v7")
    with pytest.raises(BundleError, match="not a bundle version here"):
        set_current_version(bundle_copy, "v7")


def test_a_failed_write_leaves_the_previous_version_served(
    bundle_copy, tiny_corpus, make_config, monkeypatch
):
    pipeline = TuningPipeline(
        tiny_corpus["docs"],
        bundle_copy,
        queries=tiny_corpus["queries"],
        config=make_config(),
        resume=True,
        echo=lambda line: None,
    )
    state = pipeline.context.state
    state.forget(["bundle"])

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(bundle_writer, "file_digests", crash)  # after every model was copied
    with pytest.raises(OSError, match="disk full"):
        pipeline.run()
    root = bundle_copy / "bundles"
    assert current_version(bundle_copy) == "v1" and bundle_versions(bundle_copy) == ["v1"]
    assert sorted(p.name for p in root.iterdir()) == ["CURRENT", "v1"]  # no half-written v2
    assert load_bundle(bundle_copy).version == "v1"
    monkeypatch.undo()
    assert pipeline.run().version == "v2"
    assert current_version(bundle_copy) == "v2" and bundle_versions(bundle_copy) == ["v1", "v2"]
    set_current_version(bundle_copy, "v1")  # roll back
    assert load_bundle(bundle_copy).version == "v1"
    assert load_bundle(bundle_copy, version="v2").version == "v2"
