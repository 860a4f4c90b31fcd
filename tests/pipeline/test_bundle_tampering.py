"""Tampered bundles: every malformed manifest field, pointer or link is a BundleError naming it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from llama_index.core.llms import MockLLM

from llama_index_ragtune._atomic import sha256_file
from llama_index_ragtune.llms.refusal_policy_records import load_refusal_policy
from llama_index_ragtune.pipeline import BundleError, load_bundle, verify_bundle
from llama_index_ragtune.pipeline.bundle_manifest import file_digests

SIMILARITY = {"type": "AnswerabilityRefusalPolicy", "threshold": 0.5, "scorer_kind": "similarity"}
COMBINATION = {
    "signals": ["decoder", "answerability"],
    "weights": [1.0, 1.0],
    "intercept": 0.0,
    "means": [0.0, 0.0],
    "scales": [1.0, 1.0],
}


@pytest.fixture
def out(tuned_run, tmp_path):
    """A private copy of the tuned run's output folder (tests tamper with it)."""
    copy = tmp_path / "out"
    shutil.copytree(tuned_run["out"], copy)
    return copy


def edit_manifest(out: Path, edit) -> Path:
    path = out / "bundles" / "v1" / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest), encoding="utf-8")
    return path


def load(out: Path, **kwargs):
    return load_bundle(out, llm=MockLLM(), verify=False, **kwargs)


def policy(value):
    return lambda m: m["generation"].update(refusal_policy=value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (policy({"type": "AnswerabilityRefusalPolicy", "scorer_kind": "similarity"}), "threshold"),
        (policy({**SIMILARITY, "threshold": "abc"}), r"threshold must be a number in \[0, 1\]"),
        (policy({**SIMILARITY, "threshold": float("nan")}), "threshold must be"),
        (policy({**SIMILARITY, "threshold": 5}), "threshold must be"),
        (policy({**SIMILARITY, "threshold": None}), "threshold must be"),
        (policy({"type": "DecoderRefusalPolicy"}), "threshold must be"),
        (policy({**SIMILARITY, "type": "CombinedRefusalPolicy"}), "combination must be an object"),
        (
            policy({**SIMILARITY, "type": "CombinedRefusalPolicy", "combination": "x"}),
            "combination",
        ),
        (
            policy(
                {
                    **SIMILARITY,
                    "type": "CombinedRefusalPolicy",
                    "combination": {**COMBINATION, "weights": [1.0]},
                }
            ),
            r"combination\.weights",
        ),
        (policy("AnswerabilityRefusalPolicy"), " must be an object"),
        (policy([1, 2]), " must be an object"),
        (policy({"type": "Bogus"}), "unknown policy type"),
        (policy({**SIMILARITY, "scorer_kind": "bogus"}), "scorer_kind"),
        (policy({**SIMILARITY, "scorer_kind": None, "scorer": "../../x"}), "scorer must be a path"),
        (policy({**SIMILARITY, "scorer_kind": None, "scorer": "/abs/x"}), "scorer must be a path"),
    ],
)
def test_a_malformed_refusal_policy_names_the_manifest_and_field(out, edit, message):
    edit_manifest(out, edit)
    with pytest.raises(
        BundleError, match=rf"manifest\.json: generation\.refusal_policy.*{message}"
    ):
        load(out)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"type": "DecoderRefusalPolicy"}, "threshold"),
        (
            {"type": "CombinedRefusalPolicy", "threshold": 0.5, "scorer_kind": "similarity"},
            "combination",
        ),
        ({"type": ["x"]}, "type"),
        ({"type": "AnswerabilityRefusalPolicy", "threshold": 0.5}, "records no scorer folder"),
    ],
)
def test_load_refusal_policy_names_the_missing_or_malformed_field(tmp_path, record, message):
    with pytest.raises(ValueError, match=message):
        load_refusal_policy(record)
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=rf"policy\.json: .*{message}"):
        load_refusal_policy(path)
    path.write_text("{")
    with pytest.raises(ValueError, match=r"policy\.json is not readable JSON"):
        load_refusal_policy(path)
    with pytest.raises(TypeError, match="source must be"):
        load_refusal_policy([record])


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("generation", "max_sources", "abc"),
        ("generation", "max_sources", float("nan")),
        ("generation", "max_sources", 2.5),
        ("generation", "max_sources", True),
        ("generation", "max_sources", 0),
        ("generation", "max_source_chars", "600"),
        ("generation", "max_source_chars", float("nan")),
        ("generation", "max_new_tokens", 10**30),
        ("retrieval", "similarity_top_k", 10**30),
        ("retrieval", "rerank_candidates", 10**30),
        ("generation", "refusal_threshold", 5),
        ("generation", "refusal_threshold", "x"),
    ],
)
def test_generation_and_retrieval_settings_are_checked_at_load(out, section, key, value):
    edit_manifest(out, lambda m: m[section].update({key: value}))
    with pytest.raises(BundleError, match=rf"manifest\.json: {section}\.{key} must be"):
        load(out)


def test_null_source_limits_load_and_answer(out):
    edit_manifest(out, lambda m: m["generation"].update(max_sources=None, max_source_chars=None))
    bundle = load(out)
    assert bundle.settings["max_sources"] is None
    assert bundle.query_engine.query("apple return policy?").source_nodes


@pytest.mark.parametrize("version", ["v999", "../x", 7, None])
def test_the_manifest_version_must_be_its_folders_name(out, version):
    edit_manifest(out, lambda m: m.update(version=version))
    with pytest.raises(BundleError, match=r"manifest\.json: version "):
        load(out)


def test_a_current_pointer_too_long_or_a_folder_is_named(out):
    pointer = out / "bundles" / "CURRENT"
    pointer.write_text("v" + "9" * 5000)
    with pytest.raises(BundleError, match=r"CURRENT names 'v999.*…, which is not a bundle version"):
        load(out)
    pointer.unlink()
    pointer.mkdir()
    with pytest.raises(BundleError, match=rf"{pointer} is not a file"):
        load(out)


def test_a_model_folder_of_another_kind_names_the_part(out):
    edit_manifest(out, lambda m: m["models"]["encoder"].update(path="decoder"))
    with pytest.raises(BundleError, match=r"manifest\.json: could not load .*models\.encoder"):
        load(out)


def test_an_unreachable_model_reference_says_the_bundle_is_incomplete(out):
    edit_manifest(out, lambda m: m["models"].update(encoder={"path": None, "reference": "bogus/x"}))
    with pytest.raises(
        BundleError, match=r"manifest\.json: could not load models\.encoder .*'bogus/x'.*offline"
    ):
        load(out)


def test_arguments_of_the_wrong_type_are_named(out):
    with pytest.raises(TypeError, match="llm must be a LlamaIndex LLM"):
        load_bundle(out, llm=5)
    with pytest.raises(TypeError, match="refusal_policy must be"):
        load_bundle(out, llm=MockLLM(), refusal_policy=5)
    with pytest.raises(TypeError, match="path must be"):
        load_bundle(None)
    # decoder settings with another LLM would be dropped without a word
    with pytest.raises(TypeError, match=r"\['max_new_tokens'\] configure the bundled decoder"):
        load_bundle(out, llm=MockLLM(), max_new_tokens=64)


@pytest.mark.parametrize("target", ["file", "folder", "dangling"])
def test_unlisted_symbolic_links_fail_verification(out, tmp_path, target):
    folder = out / "bundles" / "v1"
    outside = tmp_path / "outside"
    if target == "folder":
        outside.mkdir()
        (outside / "weights.bin").write_bytes(b"x")
    elif target == "file":
        outside.write_bytes(b"x")
    os.symlink(outside, folder / "report" / "link")
    with pytest.raises(BundleError, match=r"report/link is a symbolic link not listed"):
        verify_bundle(folder, hashes=False)
    with pytest.raises(BundleError, match="symbolic link not listed"):
        load(out)


def test_a_trained_answerability_scorer_in_the_bundle_loads(out, tmp_path, monkeypatch):
    from sentence_transformers import CrossEncoder

    from llama_index_ragtune.llms.answerability import AnswerabilityScorer

    folder = out / "bundles" / "v1"
    encoder_hf = next(p.parent for p in (folder / "encoder").rglob("config.json"))
    CrossEncoder(str(encoder_hf), num_labels=1, device="cpu").save(str(folder / "answerability"))
    record = {"type": "AnswerabilityRefusalPolicy", "threshold": 0.99, "scorer": "answerability"}

    def edit(manifest):
        manifest["generation"]["refusal_policy"] = record
        manifest["files"] = file_digests(folder)

    edit_manifest(out, edit)
    monkeypatch.chdir(tmp_path)  # resolved inside the bundle, not the working folder
    bundle = load_bundle(out, llm=MockLLM())
    scorer = bundle.settings["refusal_policy"].scorer
    assert isinstance(scorer, AnswerabilityScorer)
    assert Path(scorer.path) == (folder / "answerability").resolve()
    response = bundle.query_engine.query("apple return policy?")
    assert "refusal_decision" in response.metadata
    assert sha256_file(folder / "manifest.json")  # the bundle was left readable

    edit_manifest(out, lambda m: m["generation"]["refusal_policy"].update(scorer="report"))
    with pytest.raises(BundleError, match=r"generation\.refusal_policy\.scorer"):
        load(out)
    edit_manifest(out, lambda m: m["generation"]["refusal_policy"].update(scorer="nothere"))
    with pytest.raises(BundleError, match=r"scorer names 'nothere', which is not a folder"):
        load(out)
