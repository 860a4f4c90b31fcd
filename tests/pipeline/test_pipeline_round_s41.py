"""Round s41 of hostile input to the tuning pipeline's inputs and run control: resuming with
other settings or another ``--skip``, ``skip`` of the wrong type, input paths that are not
files. Each is checked on the real pipeline (tiny random encoder) before any training."""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import pytest

from llama_index_ragtune.pipeline import PipelineConfig, TuningPipeline
from llama_index_ragtune.pipeline.config import (
    RUN_CONTROL_SETTINGS,
    SETTING_STEPS,
    STEPS,
    check_skip,
    first_changed_step,
)
from llama_index_ragtune.pipeline.queries import load_queries
from llama_index_ragtune.pipeline.state import RunState


def _config(encoder, **overrides):
    return PipelineConfig(encoder_model=encoder, **{"show_progress": False, **overrides})


def _pipeline(corpus, out, config, **kwargs):
    return TuningPipeline(
        corpus["docs"], out, queries=corpus["queries"], config=config, echo=lambda _: None, **kwargs
    )


def _steps(out):
    return json.loads((out / "work" / "state.json").read_text())["steps"]


@pytest.fixture(scope="module")
def indexed(tiny_corpus, tiny_encoder_path, tmp_path_factory):
    """A run stopped after its index step (a crash, or ``until="index"``)."""
    out = tmp_path_factory.mktemp("indexed") / "o"
    _pipeline(tiny_corpus, out, _config(tiny_encoder_path)).run(until="index")
    return out


@pytest.fixture
def run_copy(indexed, tmp_path):
    import shutil

    out = tmp_path / "o"
    shutil.copytree(indexed, out)
    return out


# ---------------------------------------------------------------------- resume, other settings


def test_resuming_with_a_setting_of_a_finished_step_redoes_it_and_later_steps(
    run_copy, tiny_corpus, tiny_encoder_path, caplog
):
    before = _steps(run_copy)
    assert (run_copy / "work" / "index" / "baseline").is_dir()
    config = _config(tiny_encoder_path, similarity_top_k=3)  # read by the index step
    with caplog.at_level(logging.WARNING):
        _pipeline(tiny_corpus, run_copy, config, resume=True).run(until="parse")
    after = _steps(run_copy)
    assert after["parse"]["finished"] == before["parse"]["finished"]  # kept
    assert "index" not in after  # redone, not kept from the other settings
    assert not (run_copy / "work" / "index").exists()
    assert "similarity_top_k" in caplog.text and "redoing index" in caplog.text
    state = json.loads((run_copy / "work" / "state.json").read_text())
    assert state["settings"]["similarity_top_k"] == 3


def test_resuming_with_other_run_control_keeps_every_step(run_copy, tiny_corpus, tiny_encoder_path):
    before = _steps(run_copy)
    config = _config(tiny_encoder_path, time_limit_minutes=30.0, show_progress=True)
    _pipeline(tiny_corpus, run_copy, config, resume=True).run(until="index")
    assert _steps(run_copy) == before
    assert (run_copy / "work" / "index" / "baseline").is_dir()


def test_a_state_that_did_not_record_its_settings_is_redone_when_they_changed(
    run_copy, tiny_corpus, tiny_encoder_path
):
    path = run_copy / "work" / "state.json"
    state = json.loads(path.read_text())
    del state["settings"]  # a state file of an earlier release
    path.write_text(json.dumps(state))
    config = _config(tiny_encoder_path, seed=7)
    pipeline = _pipeline(tiny_corpus, run_copy, config, resume=True)
    assert pipeline.context.state.data["steps"] == {}
    assert not (run_copy / "work" / "nodes.json").exists()


def test_a_state_without_settings_resumed_with_the_same_ones_keeps_its_steps_and_records_them(
    run_copy, tiny_corpus, tiny_encoder_path
):
    path = run_copy / "work" / "state.json"
    state = json.loads(path.read_text())
    del state["settings"]
    path.write_text(json.dumps(state))
    pipeline = _pipeline(tiny_corpus, run_copy, _config(tiny_encoder_path), resume=True)
    assert pipeline.context.state.done("index")
    assert json.loads(path.read_text())["settings"]["seed"] == 0


def test_every_setting_names_the_first_step_it_shapes():
    names = {f.name for f in dataclasses.fields(PipelineConfig)}
    assert names == set(SETTING_STEPS) | set(RUN_CONTROL_SETTINGS)
    assert set(SETTING_STEPS.values()) <= set(STEPS)
    assert first_changed_step({"seed": 0, "dpo": False}, {"seed": 1, "dpo": True}) == (
        "data",
        ["dpo", "seed"],
    )
    assert first_changed_step({"device": None}, {"device": "cpu"}) == (None, [])
    assert first_changed_step({}, {"a_setting_of_a_later_release": 1})[0] == "parse"


def test_state_redo_from_removes_the_outputs_of_the_steps_forgotten(tmp_path):
    work = tmp_path / "work"
    state = RunState.open(work, "i", "c", resume=False, settings={})
    state.save()
    for name in ("nodes.json", "evaluation.json"):
        (work / name).write_text("{}")
    for name in ("index/baseline", "index/served", "encoder/checkpoint-2", "data"):
        (work / name).mkdir(parents=True)
    for step in ("parse", "index", "data", "encoder"):
        state.record(step)
    assert state.redo_from("encoder", "test") == ["encoder"]
    assert not (work / "encoder").exists() and not (work / "index" / "served").exists()
    assert (work / "index" / "baseline").is_dir() and (work / "nodes.json").is_file()
    assert state.done("data") and not state.done("encoder")


# ---------------------------------------------------------------------- resume, other --skip


def test_resuming_without_the_skip_of_a_first_run_runs_the_skipped_step(
    run_copy, tiny_corpus, tiny_encoder_path, caplog
):
    config = _config(tiny_encoder_path)
    steps = _steps(run_copy)
    steps["encoder"] = {"status": "skipped", "promoted": False}
    steps["fusion"] = {"status": "skipped", "promoted": False}
    steps["data"] = {"status": "done"}
    (run_copy / "work" / "data").mkdir()
    (run_copy / "work" / "data" / "queries.json").write_text("[]")
    state = json.loads((run_copy / "work" / "state.json").read_text())
    state["steps"] = steps
    (run_copy / "work" / "state.json").write_text(json.dumps(state))
    # the same skip: kept
    same = _pipeline(tiny_corpus, run_copy, config, resume=True, skip="encoder,fusion")
    assert same.context.state.data["steps"]["encoder"]["status"] == "skipped"
    # without it: the encoder (and what follows) is to run, not left skipped
    with caplog.at_level(logging.WARNING):
        again = _pipeline(tiny_corpus, run_copy, config, resume=True)
        recorded = again.context.state.data["steps"]
    assert "encoder" not in recorded and "fusion" not in recorded
    assert recorded["data"]["status"] == "done"
    assert "'encoder' was skipped" in caplog.text


# ---------------------------------------------------------------------- skip values


@pytest.mark.parametrize("skip", [5, b"decoder", {"decoder": True}, [None], ["decoder", 3]])
def test_a_skip_of_the_wrong_type_is_a_type_error(skip):
    with pytest.raises(TypeError, match="skip must"):
        check_skip(skip)


@pytest.mark.parametrize("skip", ["Decoder", [" decoder "], "REPORT, decoder"])
def test_skip_names_in_other_case_or_spacing_are_the_steps(skip):
    assert "decoder" in check_skip(skip)


def test_an_unknown_skip_still_lists_the_steps():
    with pytest.raises(ValueError, match="choose from encoder"):
        check_skip("decodr")


# ---------------------------------------------------------------------- input paths


@pytest.mark.parametrize("make", ["folder", "fifo", "missing"])
def test_a_queries_path_that_is_not_a_file_says_what_it_is(tiny_corpus, tmp_path, nodes, make):
    path = tmp_path / "q.jsonl"
    expected: tuple[type[Exception], str]
    if make == "folder":
        path.mkdir()
        expected = (IsADirectoryError, "is a folder")
    elif make == "fifo":
        os.mkfifo(path)
        expected = (ValueError, r"named pipe \(FIFO\), not a plain file")
    else:
        expected = (FileNotFoundError, "queries file not found")
    with pytest.raises(expected[0], match=expected[1]):
        TuningPipeline(tiny_corpus["docs"], tmp_path / "o", queries=path)
    with pytest.raises(expected[0], match=expected[1]):
        load_queries(path, nodes)
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def nodes(tiny_corpus):
    from llama_index_ragtune.pipeline.sources import parse_documents, read_documents

    return parse_documents(read_documents(tiny_corpus["docs"]), tokenizer=None)


# ---------------------------------------------------------------------- resume, outputs gone


def test_a_tuned_model_of_a_finished_step_that_is_gone_stops_a_resume(
    run_copy, tiny_corpus, tiny_encoder_path
):
    from llama_index_ragtune.pipeline import PipelineStateError

    path = run_copy / "work" / "state.json"
    state = json.loads(path.read_text())
    served = run_copy / "work" / "encoder" / "final"  # deleted to save space, or never copied
    state["steps"]["data"] = {"status": "done"}
    state["steps"]["encoder"] = {"status": "done", "promoted": True, "served": str(served)}
    (run_copy / "work" / "data").mkdir()
    (run_copy / "work" / "data" / "queries.json").write_text("[]")
    path.write_text(json.dumps(state))
    with pytest.raises(PipelineStateError, match=r"output is gone: encoder \(.*encoder/final\)"):
        _pipeline(tiny_corpus, run_copy, _config(tiny_encoder_path), resume=True).run()


# ---------------------------------------------------------------------- gold sections


def _one_line(tmp_path, section):
    path = tmp_path / "q.jsonl"
    gold = [{"doc_id": "grocery/returns.md", "section": section}]
    path.write_text(json.dumps({"question": "apple return policy?", "gold": gold}) + "\n")
    return path


@pytest.mark.parametrize(
    "section",
    ["returns > perishable items", " Returns>Perishable  items ", "RETURNS > PERISHABLE ITEMS"],
)
def test_a_section_differing_in_case_or_spacing_is_named_with_the_right_spelling(
    tmp_path, nodes, section
):
    from llama_index_ragtune.data.errors import DataError

    with pytest.raises(DataError, match=r"did you mean 'Returns > Perishable items'\?"):
        load_queries(_one_line(tmp_path, section), nodes)


def test_the_sections_sharing_words_with_a_missing_one_are_listed_first(tmp_path, nodes):
    from llama_index_ragtune.data.errors import DataError

    with pytest.raises(DataError) as info:
        load_queries(_one_line(tmp_path, "Perishable goods"), nodes)
    listed = str(info.value).split("its sections are ")[1]
    assert listed.startswith("['Returns > Perishable items'")
    assert "did you mean" not in str(info.value)


# ---------------------------------------------------------------------- inputs changing mid-run


def test_a_queries_file_edited_while_the_run_goes_stops_the_data_step(
    run_copy, tiny_corpus, tiny_encoder_path, tmp_path
):
    from llama_index_ragtune.data.errors import DataError

    queries = tmp_path / "queries.jsonl"
    queries.write_bytes(tiny_corpus["queries"].read_bytes())
    corpus = {**tiny_corpus, "queries": queries}
    pipeline = _pipeline(corpus, run_copy, _config(tiny_encoder_path), resume=True)
    assert pipeline.context.state.done("index")  # same bytes as the file the run started with
    queries.write_text(queries.read_text().replace("apple", "pear"))  # an edit meanwhile
    with pytest.raises(DataError, match="queries file changed .* while the run was going"):
        pipeline.run(until="data")
    assert "data" not in _steps(run_copy)  # nothing trained on the edited file


# ---------------------------------------------------------------------- cost estimate


def test_the_estimate_counts_a_fraction_of_an_epoch_and_max_steps():
    from llama_index_ragtune.pipeline.summary import estimate_text

    counts = {"decoder_rows": 40, "decoder_batch": 4, "decoder_epochs": 0.5}
    text = estimate_text(PipelineConfig(), counts, skip=("encoder", "reranker"))
    assert "up to 5 steps of 4 (0.5 epoch(s))" in text  # was "up to 0 steps ... (0 epoch(s))"
    counts["decoder_max_steps"] = 3
    assert "up to 3 steps of 4" in estimate_text(PipelineConfig(), counts, skip=())


# ---------------------------------------------------------------------- resume after a kill


def test_a_step_a_killed_run_half_wrote_is_redone_from_an_empty_folder(
    run_copy, tiny_corpus, tiny_encoder_path
):
    path = run_copy / "work" / "state.json"
    state = json.loads(path.read_text())
    del state["steps"]["index"]  # killed while the index step persisted its folder
    path.write_text(json.dumps(state))
    baseline = run_copy / "work" / "index" / "baseline"
    for entry in baseline.iterdir():
        if entry.is_file():
            entry.write_bytes(entry.read_bytes()[:10])  # cut short
    (baseline / "leftover.bin").write_bytes(b"\0" * 64)  # was: FileExistsError naming it
    config = _config(tiny_encoder_path)
    _pipeline(tiny_corpus, run_copy, config, resume=True).run(until="index")
    assert _steps(run_copy)["index"]["status"] == "done"
    assert not (baseline / "leftover.bin").exists()
    assert json.loads((baseline / "hybrid_retriever.json").read_text())  # whole again


@pytest.mark.parametrize(("split", "meant"), [("Test", "test"), (" train ", "train")])
def test_a_split_in_other_case_or_spacing_says_how_to_write_it(tmp_path, nodes, split, meant):
    from llama_index_ragtune.data.errors import DataError

    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "lobsters?", "answerable": False, "split": split}))
    with pytest.raises(DataError, match=rf"q\.jsonl:1: 'split' must be .*write '{meant}'"):
        load_queries(path, nodes)
