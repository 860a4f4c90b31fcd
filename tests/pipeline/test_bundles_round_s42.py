"""Hostile input to bundles, refresh, rollback and resume (round s42).

A refresh's ``--out`` that holds a run folder (or any user data), a bundle version that is
a symbolic link leading outside ``bundles/``, champion / challenger evaluations made on
different questions, a feedback store that grew while a run was paused, and warnings
shown by the commands. Real files, real SQLite, no models.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest
from conftest import fake_bundles, write_corpus  # tests/pipeline/conftest.py

from llama_index_ragtune.cli import main
from llama_index_ragtune.evaluation.metrics import MeanMetrics
from llama_index_ragtune.feedback import FeedbackStore
from llama_index_ragtune.finetuning.promotion import decide_promotion
from llama_index_ragtune.pipeline import (
    BundleError,
    RefreshError,
    TuningPipeline,
    current_version,
    load_bundle,
    refresh_bundle,
    rollback_bundle,
    set_current_version,
)
from llama_index_ragtune.pipeline.bundle_manifest import verify_bundle
from llama_index_ragtune.pipeline.labelled_query import LabelledQuery
from llama_index_ragtune.pipeline.refresh import check_refresh_out
from llama_index_ragtune.pipeline.refresh_eval import decide, score


def _tree(folder):
    return sorted(
        (str(p.relative_to(folder)), p.read_bytes() if p.is_file() else None)
        for p in folder.rglob("*")
    )


def _feedback(path, *questions):
    with FeedbackStore(path) as store:
        for question in questions:
            store.record(question, answer="an answer", rating=1)
    return path


# ---------------------------------------------------------------------- refresh --out


@pytest.fixture
def run_folder(tmp_path):
    """A tuning run's --out: bundles/ (two versions) and work/ (its state and outputs)."""
    root = fake_bundles(tmp_path, 2)
    work = root.parent / "work"
    (work / "index" / "baseline").mkdir(parents=True)
    (work / "state.json").write_text(json.dumps({"format": "ragtune-pipeline-state"}))
    (work / "nodes.json").write_text("[]")
    (work / "index" / "baseline" / "vectors.bin").write_bytes(b"\0" * 64)
    return root.parent


@pytest.mark.parametrize("where", ["run", "work", "other"])
def test_a_refresh_out_holding_user_data_is_refused_and_nothing_is_lost(
    run_folder, tmp_path, where
):
    out = {"run": run_folder, "work": run_folder / "work", "other": tmp_path / "mine"}[where]
    if where == "other":
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
        (out / "work").mkdir()
        (out / "work" / "draft.md").write_text("mine too")
    before = _tree(tmp_path)
    db = _feedback(tmp_path.parent / f"{tmp_path.name}-fb.sqlite", "apple return policy?")
    with pytest.raises(RefreshError, match="which a refresh did not write") as caught:
        refresh_bundle(run_folder, db, out=out)
    assert str(out) in str(caught.value) and "new or empty folder" in str(caught.value)
    assert _tree(tmp_path) == before  # nothing cleared, nothing added


def test_the_cli_refuses_a_run_folder_as_refresh_out_with_one_line(run_folder, tmp_path, capsys):
    before = _tree(run_folder)
    db = _feedback(tmp_path / "fb.sqlite", "apple return policy?")
    code = main(
        ["refresh", "--bundle", str(run_folder), "--feedback", str(db), "--out", str(run_folder)]
    )
    err = capsys.readouterr().err
    assert code == 1 and "bundles/" in err and "work/" in err and "Traceback" not in err
    assert _tree(run_folder) == before


def test_a_new_empty_or_earlier_refresh_out_is_accepted(tmp_path):
    check_refresh_out(tmp_path / "new")  # not there yet
    (tmp_path / "empty").mkdir()
    check_refresh_out(tmp_path / "empty")
    earlier = tmp_path / "earlier"  # what a refresh leaves (marked work folder)
    (earlier / "work").mkdir(parents=True)
    (earlier / "work" / "state.json").write_text(json.dumps({"refresh": True, "steps": {}}))
    (earlier / "work" / "nodes.json").write_text("[]")
    (earlier / "refresh.json").write_text("{}")
    (earlier / ".refresh.json.tmp-123-abcdef").write_text("")  # a killed write
    check_refresh_out(earlier)
    killed = tmp_path / "killed"  # a refresh killed before refresh.json: only its work/
    (killed / "work").mkdir(parents=True)
    (killed / "work" / "state.json").write_text(json.dumps({"refresh": True}))
    check_refresh_out(killed)


def test_an_unmarked_work_folder_without_refresh_json_is_refused(tmp_path):
    out = tmp_path / "out"
    (out / "work").mkdir(parents=True)
    (out / "work" / "state.json").write_text(json.dumps({"steps": {}}))
    with pytest.raises(RefreshError, match="work/ \\(a tuning run's\\)"):
        check_refresh_out(out)


# ---------------------------------------------------------------------- linked versions


@pytest.fixture
def linked(tmp_path):
    """bundles/ whose v1 is a symbolic link to a folder outside it; v2 is CURRENT."""
    root = fake_bundles(tmp_path, 2)
    shutil.move(root / "v1", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", root / "v1")
    return root


def test_a_version_linked_outside_the_bundles_folder_is_never_loaded(linked):
    for call in (
        lambda: load_bundle(linked, version="v1"),
        lambda: load_bundle(linked / "v1"),
        lambda: verify_bundle(linked / "v1"),
    ):
        with pytest.raises(BundleError, match="symbolic link .*leading outside the bundles"):
            call()


def test_a_version_linked_outside_is_never_served_by_a_rollback(linked, capsys):
    with pytest.raises(BundleError, match=r"v1 is a symbolic link \(to .*elsewhere"):
        rollback_bundle(linked)
    with pytest.raises(BundleError, match="leading outside"):
        rollback_bundle(linked, to="v1")
    with pytest.raises(BundleError, match="leading outside"):
        set_current_version(linked, "v1")
    assert main(["rollback", "--bundle", str(linked), "--to", "v1"]) == 1
    assert "leading outside" in capsys.readouterr().err
    assert current_version(linked) == "v2"


def test_a_refresh_never_starts_from_a_version_linked_outside(linked, tmp_path):
    (linked / "CURRENT").write_text("v1\n")  # a pointer edited by hand
    db = _feedback(tmp_path / "fb.sqlite", "apple return policy?")
    with pytest.raises(BundleError, match="leading outside"):
        refresh_bundle(linked, db, out=tmp_path / "refresh-1")
    assert not (tmp_path / "refresh-1").exists()


def test_a_version_linked_to_another_of_the_same_folder_is_still_checked(tmp_path):
    root = fake_bundles(tmp_path, 2)
    os.symlink(root / "v1", root / "v3")  # inside: the manifest names v1, not v3
    with pytest.raises(BundleError, match="v1"):
        load_bundle(root, version="v3")


# ---------------------------------------------------------------------- champion / challenger


def _means(values):
    return MeanMetrics(
        {"ndcg@10": sum(values.values()) / len(values)}, per_query={"ndcg@10": values}
    )


def test_evaluations_on_different_questions_are_refused():
    old = _means({"q1": 0.2, "q2": 0.4})
    new = _means({"q7": 0.9, "q8": 0.9})
    with pytest.raises(ValueError, match=r"different queries .*'q7'.*same queries"):
        decide_promotion(old, new, "ndcg@10")
    with pytest.raises(ValueError, match="different queries"):
        decide({"feedback": {"champion": old, "challenger": new}}, 0.005, False, "v1")
    same = decide_promotion(old, _means({"q1": 0.9, "q2": 0.9}), "ndcg@10")
    assert same.promoted and same.validation_size == 2


def test_a_refresh_scores_each_question_under_its_id():
    questions = [
        LabelledQuery("fb-a", "apple?", ["n1"]),
        LabelledQuery("fb-b", "pear?", ["n2"]),
        LabelledQuery("fb-b", "pear again?", ["n2"]),  # an id given twice still counts twice
    ]
    metrics, latency = score(lambda q: ["n1", "n2"], questions)
    assert sorted(metrics.per_query["ndcg@10"]) == ["fb-a", "fb-b", "fb-b#2"]
    assert len(latency) == 3
    other, _ = score(lambda q: ["n1", "n2"], questions[:1] + [LabelledQuery("x", "x?", ["n2"])])
    with pytest.raises(ValueError, match="different queries"):
        decide({"feedback": {"champion": metrics, "challenger": other}}, 0.0, False, "v1")


# ---------------------------------------------------------------------- resume and feedback


def test_resume_redoes_the_data_step_when_the_feedback_store_grew(tmp_path, caplog):
    corpus = write_corpus(tmp_path)
    db = _feedback(tmp_path / "fb.sqlite", "apple return policy?")
    out = tmp_path / "out"

    def pipeline(resume):
        return TuningPipeline(corpus["docs"], out, feedback=db, echo=lambda _: None, resume=resume)

    pipeline(False).run(until="parse")
    work = out / "work"
    state = json.loads((work / "state.json").read_text())
    assert state["feedback_fingerprint"] == FeedbackStore(db).fingerprint()
    # the data step finished (as far as the state file says) on the store as it was
    (work / "data").mkdir()
    (work / "data" / "queries.json").write_text("[]")
    state["steps"]["data"] = {"status": "done"}
    (work / "state.json").write_text(json.dumps(state))
    assert pipeline(True).context.state.done("data")  # unchanged store: kept
    _feedback(db, "do you sell lobsters?")  # the app kept recording meanwhile
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.pipeline.state"):
        resumed = pipeline(True).context.state
    assert not resumed.done("data") and resumed.done("parse")
    assert not (work / "data").exists()  # the old questions are not mixed in
    assert "feedback store" in caplog.text and "redoing data" in caplog.text


def test_a_rating_changed_in_place_changes_the_fingerprint(tmp_path):
    db = tmp_path / "fb.sqlite"
    with FeedbackStore(db) as store:
        rid = store.record("apple?", answer="a", rating=1)
        first = store.fingerprint()
        store.rate(rid, -1)
        assert store.fingerprint() != first


# ---------------------------------------------------------------------- warnings of commands


def test_command_warnings_show_once_formatted_without_logging_configured(
    tmp_path, capsys, monkeypatch
):
    root = fake_bundles(tmp_path, 3)
    (root / "v2" / "manifest.json").unlink()  # an unfinished version the rollback passes
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # a plain `ragtune` process
    assert main(["rollback", "--bundle", str(root.parent)]) == 0
    err = capsys.readouterr().err.splitlines()
    warned = [line for line in err if "passed over" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: rollback in ")
    assert not logging.getLogger("llama_index_ragtune").handlers  # removed afterwards


# ---------------------------------------------------------------------- edited or odd files


@pytest.mark.parametrize(
    "config, named",
    [
        ({"seed": "abc"}, "seed"),
        ({"similarity_top_k": -5}, "similarity_top_k"),
        ({"encoder_budget": {"bogus": 1}}, "bogus"),
        ({"encoder_args": "zz"}, "encoder_args"),
    ],
)
def test_a_hand_edited_manifest_config_is_a_bundle_error_naming_the_manifest(
    tmp_path, config, named
):
    from llama_index_ragtune.pipeline.refresh_setup import _refresh_config

    manifest = {
        "config": config,
        "models": {"encoder": {"path": None, "reference": "e"}, "decoder": None, "reranker": None},
    }
    with pytest.raises(BundleError, match=rf"manifest\.json: its 'config' .*{named}.*config="):
        _refresh_config(manifest, tmp_path / "v1", None, None)


def test_a_huge_state_file_is_refused_without_reading_it_whole(tmp_path):
    from llama_index_ragtune.pipeline.state import MAX_STATE_BYTES, PipelineStateError, RunState

    work = tmp_path / "work"
    work.mkdir()
    with open(work / "state.json", "wb") as handle:  # sparse: no disk used
        handle.truncate(MAX_STATE_BYTES + 10)
    with pytest.raises(PipelineStateError, match="over 64 MiB"):
        RunState.open(work, "i", "c", resume=True)
    assert (work / "state.json").stat().st_size == MAX_STATE_BYTES + 10  # left as it was


def test_a_state_file_that_links_to_a_pipe_is_never_opened(tmp_path):
    from llama_index_ragtune.pipeline.state import PipelineStateError, RunState

    work = tmp_path / "work"
    work.mkdir()
    os.mkfifo(tmp_path / "pipe")
    os.symlink(tmp_path / "pipe", work / "state.json")
    with pytest.raises(PipelineStateError):  # was: not a state file, so nothing is cleared
        RunState.open(work, "i", "c", resume=False)
    assert os.path.islink(work / "state.json")
