"""Persisted run files, round 38: non-finite numbers in every JSON the pipeline writes and in
evaluation results, two runs in one work folder, a disk that fills while a version is
written."""

from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from llama_index.core.schema import NodeWithScore, TextNode

from llama_index_ragtune import _atomic, models
from llama_index_ragtune._atomic import atomic_dir, atomic_write_json, atomic_write_text
from llama_index_ragtune.evaluation.dashboard import write_report
from llama_index_ragtune.evaluation.results import EvaluationResults
from llama_index_ragtune.feedback import FeedbackStore
from llama_index_ragtune.pipeline import current_version, load_bundle, refresh_bundle, verify_bundle
from llama_index_ragtune.pipeline.bundle_files import copy_tree
from llama_index_ragtune.pipeline.document_nodes import load_nodes, save_nodes
from llama_index_ragtune.pipeline.evaluate import _plain
from llama_index_ragtune.pipeline.labelled_query import (
    LabelledQuery,
    read_saved_queries,
    save_queries,
)
from llama_index_ragtune.pipeline.runner import TuningPipeline
from llama_index_ragtune.pipeline.state import PipelineStateError, work_folder_lock
from tests.pipeline.conftest import fake_bundles

NAN, INF = float("nan"), float("inf")
FORK = multiprocessing.get_context("fork") if hasattr(os, "fork") else None
needs_fork = pytest.mark.skipif(FORK is None, reason="forks a second run")
WAIT = 120  # seconds a marker may take to appear (never reached)


def strict_loads(text: str):
    """``json.loads`` as strict readers (JavaScript, jq) read: no NaN / Infinity tokens."""

    def refuse(token: str):
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def wait_for(path: Path, process) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        assert process.exitcode is None, f"the run exited ({process.exitcode}) before {path.name}"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


# ------------------------------------------------------------- non-finite numbers


def test_a_nan_metric_is_saved_as_null_read_back_and_shown_as_a_dash(tmp_path):
    """A diverged or undefined metric made ``save`` raise at the very end of a run (the
    whole evaluation lost); the other result files already wrote such values as null."""
    results = EvaluationResults(
        title="t", dataset_name="d", queries={"test": 2}, bundle_version="v1"
    )
    results.add_retrieval("hybrid", "before", {"ndcg@10": NAN, "recall@10": 0.5}, [3.0])
    results.add_retrieval("hybrid", "after", {"ndcg@10": np.float32("inf"), "recall@10": 0.7})
    results.add_generation(
        "decoder",
        "before",
        {"answer_f1": NAN, "answer_rate": 0.5},
        refusal_probabilities=[0.2],
        should_refuse=[0],
        refusal_threshold=NAN,
    )
    results.add_decision("encoder", False, "ndcg@10", NAN, 0.7, 0.01, "no champion value")
    path = results.save(tmp_path / "evaluation.json")
    data = strict_loads(path.read_text("utf-8"))
    assert [s["metrics"]["ndcg@10"] for s in data["retrieval"]] == [None, None]
    assert data["generation"][0]["metrics"]["answer_f1"] is None
    assert data["generation"][0]["refusal"]["threshold"] is None
    assert data["decisions"][0]["champion"] is None and data["decisions"][0]["challenger"] == 0.7
    loaded = EvaluationResults.load(path)
    assert loaded.retrieval[0].metrics == {"ndcg@10": None, "recall@10": 0.5}
    report = write_report(loaded, tmp_path / "report").markdown.read_text("utf-8")
    assert "nan" not in report.lower() and "| answer_f1 | — |" in report
    assert write_report(results, tmp_path / "again").markdown.read_text("utf-8") == report


def test_a_latency_that_is_not_a_number_is_still_refused_naming_it(tmp_path):
    """Only values that may be null become null: a per-query latency is a measurement."""
    results = EvaluationResults(title="t", dataset_name="d", queries={}, bundle_version="v1")
    results.add_retrieval("hybrid", "before", {"ndcg@10": 0.5}, [NAN])
    with pytest.raises(ValueError, match=r"retrieval\[0\]\.latency_ms\[0\]"):
        results.save(tmp_path / "evaluation.json")
    assert not (tmp_path / "evaluation.json").exists()


def test_node_and_query_dumps_are_strict_json_and_read_back(tmp_path):
    """``nodes.json`` and ``data/queries.json`` held bare NaN / Infinity tokens."""
    node = TextNode(id_="a.md#0", text="A", metadata={"price": NAN, "weight": -INF, "n": 1})
    path = save_nodes([node], tmp_path / "nodes.json")
    strict_loads(path.read_text("utf-8"))
    assert load_nodes(path)[0].metadata == {"price": None, "weight": None, "n": 1}
    query = LabelledQuery("q1", "how heavy", filters={"weight": INF, "store": "grocery"})
    path = save_queries([query], tmp_path / "queries.json")
    strict_loads(path.read_text("utf-8"))
    assert read_saved_queries(path)[0].filters == {"weight": None, "store": "grocery"}


def test_numpy_values_in_the_evaluation_files_become_strict_json(tmp_path):
    """``starting-decoder.json`` / ``answers.json`` held bare NaN tokens (NumPy's too)."""
    assert _plain(np.float64("nan")) is None and _plain(np.float32(0.5)) == 0.5
    values = {"p": np.float64("nan"), "q": np.float32("inf"), "r": np.float32(0.5)}
    path = atomic_write_json(tmp_path / "rows.json", values, strict=True, default=_plain)
    assert strict_loads(path.read_text("utf-8")) == {"p": None, "q": None, "r": 0.5}


def test_the_tree_sync_has_a_package_name_and_keeps_the_old_one(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"1234")
    _atomic.fsync_tree(tmp_path / "model")
    assert _atomic._fsync_tree is _atomic.fsync_tree
    assert models.fsync_tree is _atomic.fsync_tree


# ------------------------------------------------------------- two runs, one work folder


def _run_paused_after_parsing(corpus, out, config, signals):
    """Child: a run that, having parsed (``work/nodes.json`` written), stops until
    ``signals/go`` appears, then ends its parse step (no model runs in the forked child)."""
    from llama_index_ragtune.pipeline import steps

    parse = steps.STEP_FUNCTIONS["parse"]

    def paused(ctx):
        outputs = parse(ctx)
        (signals / "parsed").touch()
        deadline = time.monotonic() + WAIT
        while not (signals / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return outputs

    steps.STEP_FUNCTIONS["parse"] = paused
    TuningPipeline(corpus["docs"], out, queries=corpus["queries"], config=config, echo=len).run(
        until="parse"
    )


@needs_fork
def test_a_second_run_in_the_same_out_stops_before_touching_the_first(
    tiny_corpus, make_config, tmp_path
):
    """A second ``ragtune tune --out`` into the folder of a run in progress (a cron job
    overlapping the previous one) cleared its work folder under it: the first run then
    failed on missing files or went on with the second's."""
    out, signals = tmp_path / "out", tmp_path / "signals"
    signals.mkdir()
    config = make_config()
    first = FORK.Process(target=_run_paused_after_parsing, args=(tiny_corpus, out, config, signals))
    first.start()
    try:
        wait_for(signals / "parsed", first)
        nodes = (out / "work" / "nodes.json").read_bytes()
        second = TuningPipeline(
            tiny_corpus["docs"], out, queries=tiny_corpus["queries"], config=config, echo=len
        )
        with pytest.raises(PipelineStateError, match=r"another run in progress \(process \d+"):
            second.run(until="parse")
        assert (out / "work" / "nodes.json").read_bytes() == nodes
    finally:
        (signals / "go").touch()
        first.join(WAIT)
        if first.exitcode is None:
            first.kill()
    assert first.exitcode == 0
    state = json.loads((out / "work" / "state.json").read_text("utf-8"))
    assert state["steps"]["parse"]["status"] == "done"  # the first run finished its step
    with work_folder_lock(out / "work"):  # released when the first run ended
        pass


def _hold_work_folder(work, signals):
    with work_folder_lock(work):
        (signals / "held").touch()
        while not (signals / "go").exists():
            time.sleep(0.02)


@needs_fork
def test_a_refresh_into_the_out_of_a_refresh_in_progress_is_refused(tuned_run, tmp_path):
    shop = shutil.copytree(tuned_run["out"], tmp_path / "shop")
    bundle = load_bundle(shop)
    node = next(iter(bundle.retriever.index.docstore.docs.values()))
    with FeedbackStore(tmp_path / "feedback.db") as store:
        source = [NodeWithScore(node=node, score=1.0)]
        store.record(
            "how do returns work", retrieved=source, cited_node_ids=[node.node_id], rating=1
        )
    out, signals = tmp_path / "refresh", tmp_path / "signals"
    signals.mkdir()
    (out / "work").mkdir(parents=True)
    state = '{"format": "ragtune-pipeline-state", "refresh": true}'  # a refresh's work folder
    (out / "work" / "state.json").write_text(state)
    holder = FORK.Process(target=_hold_work_folder, args=(out / "work", signals))
    holder.start()
    try:
        wait_for(signals / "held", holder)
        with pytest.raises(PipelineStateError, match="another run in progress"):
            refresh_bundle(shop, tmp_path / "feedback.db", out)
        assert (out / "work" / "state.json").read_text() == state
        assert current_version(shop) == "v1"
    finally:
        (signals / "go").touch()
        holder.join(WAIT)
        if holder.exitcode is None:
            holder.kill()


def test_a_foreign_folder_gets_no_lock_file(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    with (
        pytest.raises(PipelineStateError, match="not a pipeline work folder"),
        work_folder_lock(tmp_path),
    ):
        pass
    assert sorted(os.listdir(tmp_path)) == ["mine.txt"]


# ------------------------------------------------------------- a disk that fills up


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root and mount); skipped where it cannot be mounted. It is
    mounted under ``/dev/shm`` where there is one, not under ``/tmp``: a mount there makes
    other tests' read-only remounts of ``/tmp`` (``test_read_only_deploy.py``) fail."""
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        pytest.skip("mounting a small tmpfs needs root")
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(prefix="ragtune-disk-", dir=shm if shm.is_dir() else tmp_path))
    made = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if made.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode(errors='replace')}")
    try:
        yield folder
    finally:
        with contextlib.suppress(OSError):
            subprocess.run(["umount", str(folder)], check=False)
            folder.rmdir()


def test_a_full_disk_names_the_file_and_keeps_the_old_one(small_disk):
    """``write`` meeting a full disk raised "[Errno 28] No space left on device" naming no
    file: the user could not tell which of the run's folders was on the full disk."""
    target = small_disk / "report.md"
    atomic_write_text(target, "old")
    with pytest.raises(OSError, match=r"No space left on device while writing .*report\.md") as exc:
        atomic_write_text(target, "x" * 2_000_000)
    assert exc.value.errno == errno.ENOSPC
    assert target.read_text() == "old" and os.listdir(small_disk) == ["report.md"]


def test_a_version_that_does_not_fit_on_the_disk_leaves_the_served_one(small_disk, tmp_path):
    """A model copy that filled the disk was a ``shutil.Error`` printing the list of every
    failed pair; now one ``OSError`` naming the first file and the count of the others."""
    root = fake_bundles(small_disk)
    model = tmp_path / "model"
    model.mkdir()
    for name in ("a.safetensors", "b.safetensors"):
        (model / name).write_bytes(os.urandom(700_000))
    with (
        pytest.raises(OSError, match=r"cannot copy .*\.safetensors to .*v3\.tmp-.*No space left"),
        atomic_dir(root / "v3") as tmp,
    ):
        copy_tree(model, tmp / "encoder")
    assert not [name for name in os.listdir(root) if name.startswith("v3")]
    assert verify_bundle(root / "v2")["version"] == "v2" and current_version(root) == "v2"
