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
    rollback_bundle,
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
    with pytest.raises(BundleError, match=r"refusal_policy='off'; pass 'bundle', None"):
        load_bundle(bundle_copy, refusal_policy="off")


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
    # no half-written v2 (".lock" is the writers' lock file)
    assert sorted(p.name for p in root.iterdir()) == [".lock", "CURRENT", "v1"]
    assert load_bundle(bundle_copy).version == "v1"
    monkeypatch.undo()
    assert pipeline.run().version == "v2"
    assert current_version(bundle_copy) == "v2" and bundle_versions(bundle_copy) == ["v1", "v2"]
    set_current_version(bundle_copy, "v1")  # roll back
    assert load_bundle(bundle_copy).version == "v1"
    assert load_bundle(bundle_copy, version="v2").version == "v2"


def _fake_bundles(tmp_path, versions=("v1", "v2")):
    """A ``bundles/`` folder of hand-written versions (a manifest and one listed file each)."""
    from tests.pipeline.conftest import write_minimal_version

    root = tmp_path / "out" / "bundles"
    for version in versions:
        (root / version).mkdir(parents=True)
        write_minimal_version(root / version, version)
    (root / "CURRENT").write_text(versions[-1] + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize(
    "pointer",
    [b"../../elsewhere", b"/etc", b"..", b"v1/../../x", b"\xff\xfe junk", b"v2 extra", b"  \n"],
)
def test_a_current_pointer_that_is_not_a_version_name_is_named_and_never_followed(
    tmp_path, pointer
):
    root = _fake_bundles(tmp_path)
    outside = tmp_path / "elsewhere"
    shutil.copytree(root / "v1", outside)  # a valid bundle a traversal would reach
    (root / "CURRENT").write_bytes(pointer)
    with pytest.raises(
        BundleError, match=r"CURRENT (names .*which is not a bundle version|is empty)"
    ):
        load_bundle(root.parent)
    with pytest.raises(BundleError, match=r"versions here: \['v1', 'v2'\]"):
        current_version(root)
    assert rollback_bundle(root.parent, to="v1") == "v1"  # the fix the message names
    assert current_version(root) == "v1"


@pytest.mark.parametrize("version", ["../elsewhere", "/tmp", "v1/..", "", "V1"])
def test_a_version_argument_that_is_not_a_version_name_is_refused(tmp_path, version):
    root = _fake_bundles(tmp_path)
    with pytest.raises(BundleError, match="the version argument names"):
        load_bundle(root, version=version)
    with pytest.raises(BundleError, match="the version argument names"):
        set_current_version(root, version)
    assert (root / "CURRENT").read_text() == "v2\n"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["files"].update({"../../etc/passwd": {"sha256": "0", "size": 1}}), "inside"),
        (lambda m: m["files"].update({"notes.txt": ["sha", 2]}), r"files\['notes.txt'\] must be"),
        (lambda m: m["models"]["encoder"].update(path="/abs/model"), "models.encoder.path"),
        (lambda m: m["models"]["decoder"].update(path="../../model"), "models.decoder.path"),
        (lambda m: m["models"].update(reranker={"path": None}), "models.reranker.path"),
        (lambda m: m["models"].pop("encoder"), "models.encoder must be an object"),
        (lambda m: m.update(models=[]), "'models' must be an object"),
        (lambda m: m["retrieval"].update(similarity_top_k="ten"), "similarity_top_k must be"),
        (lambda m: m["retrieval"].update(rerank_candidates=0), "rerank_candidates must be"),
        (lambda m: m["generation"].pop("max_new_tokens"), "max_new_tokens must be"),
    ],
)
def test_an_edited_manifest_is_a_bundle_error_naming_the_field(tmp_path, edit, message):
    root = _fake_bundles(tmp_path)
    path = root / "v2" / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(BundleError, match=rf"manifest\.json: .*{message}"):
        verify_bundle(root / "v2")


@pytest.mark.parametrize(
    "text", ['{"format": ' + "9" * 5000 + "}", "[" * 100_000 + "]" * 100_000, "\udcff"]
)
def test_an_unreadable_manifest_is_a_bundle_error(tmp_path, text):
    root = _fake_bundles(tmp_path)
    (root / "v2" / "manifest.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(BundleError, match=r"manifest\.json is not readable JSON"):
        verify_bundle(root / "v2")
