"""Steps skip and resume: the state file, checkpoints, and what a skipped part leaves served."""

from __future__ import annotations

import json

import pytest

from llama_index_ragtune.pipeline import PipelineStateError, TuningPipeline, load_bundle


def _pipeline(corpus, out, config, **kwargs):
    lines: list[str] = []
    pipeline = TuningPipeline(
        corpus["docs"], out, queries=corpus["queries"], config=config, echo=lines.append, **kwargs
    )
    return pipeline, lines


def _state(out):
    return json.loads((out / "work" / "state.json").read_text())["steps"]


def test_skipped_parts_keep_what_they_would_replace(tmp_path, tiny_corpus, make_config):
    skip = ("encoder", "fusion", "reranker", "decoder")
    pipeline, lines = _pipeline(tiny_corpus, tmp_path, make_config(), skip=skip)
    result = pipeline.run()
    steps = _state(tmp_path)
    assert all(steps[s]["status"] == "skipped" for s in skip)
    assert "[4/9] encoder: skipped" in lines
    manifest = json.loads((result.bundle_path / "manifest.json").read_text())
    assert manifest["models"]["encoder"]["path"] is None
    assert manifest["models"]["reranker"] is None
    assert manifest["models"]["decoder"]["path"] is None
    assert not (result.bundle_path / "encoder").exists()
    assert [s.stage for s in result.evaluation.generation] == ["before"]  # no tuned decoder
    reasons = {d.part: d.reason for d in result.evaluation.decisions}
    assert reasons["reranker"] == "step skipped: kept no reranker"
    bundle = load_bundle(tmp_path)
    assert bundle.postprocessors == [] and bundle.llm.model == manifest["models"]["decoder"]["base"]


def test_resume_skips_finished_steps_and_training_resumes_from_its_checkpoint(
    tmp_path, tiny_corpus, make_config
):
    config = make_config(
        encoder_args={"max_steps": 2, "save_steps": 1, "per_device_train_batch_size": 4}
    )
    first, _ = _pipeline(tiny_corpus, tmp_path, config)
    first.run(until="encoder")
    before = _state(tmp_path)
    assert before["encoder"]["status"] == "done" and "fusion" not in before
    assert (tmp_path / "work" / "encoder" / "checkpoint-2").is_dir()
    # a crash while the encoder trained: its checkpoints are there, its step is not done
    state = json.loads((tmp_path / "work" / "state.json").read_text())
    del state["steps"]["encoder"]
    (tmp_path / "work" / "state.json").write_text(json.dumps(state))
    skip = ("reranker", "decoder", "evaluate")
    second, lines = _pipeline(tiny_corpus, tmp_path, config, resume=True, skip=skip)
    result = second.run()
    after = _state(tmp_path)
    for step in ("parse", "index", "data"):
        assert after[step]["finished"] == before[step]["finished"]
        assert f"{step}: done in an earlier run (resumed)" in "\n".join(lines)
    info = json.loads((tmp_path / "work" / "encoder" / "result.json").read_text())["info"]
    assert info["resumed_from"].endswith("checkpoint-2")
    assert result.version == "v1"
    # everything finished: a resumed rerun does nothing and writes no new version
    third, lines = _pipeline(tiny_corpus, tmp_path, config, resume=True, skip=skip)
    assert third.run().version == "v1" and all("earlier run" in x for x in lines)


def test_a_fresh_run_starts_over_and_other_inputs_cannot_resume(tmp_path, tiny_corpus, make_config):
    config = make_config()
    pipeline, _ = _pipeline(tiny_corpus, tmp_path, config)
    pipeline.run(until="parse")
    marker = tmp_path / "work" / "index"
    marker.mkdir()
    again, _ = _pipeline(tiny_corpus, tmp_path, config)
    again.run(until="parse")
    assert not marker.exists()  # cleared: a run without --resume starts from nothing
    other = tmp_path / "other.jsonl"
    other.write_text(tiny_corpus["queries"].read_text().splitlines()[0] + "\n")
    changed = TuningPipeline(
        tiny_corpus["docs"], tmp_path, queries=other, config=config, resume=True, echo=print
    )
    with pytest.raises(PipelineStateError, match="changed since the run"):
        changed.run()


def test_a_foreign_work_folder_is_never_cleared(tmp_path, tiny_corpus, make_config):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "mine.txt").write_text("keep")
    pipeline, _ = _pipeline(tiny_corpus, tmp_path, make_config())
    with pytest.raises(PipelineStateError, match="not a pipeline work folder"):
        pipeline.run()
    assert (tmp_path / "work" / "mine.txt").read_text() == "keep"
