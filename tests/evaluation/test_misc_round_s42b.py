"""Round s42b: concurrent report writers, chart caps, training warm-up, config bounds and
FAISS search settings under hostile input.

Real parts throughout: real processes racing ``write_report`` on one folder, the real
``flock`` a writer takes, a real ``transformers.Trainer`` learning-rate schedule, real
FAISS indexes searched by threads while their settings change.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import re
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from llama_index_ragtune.evaluation.dashboard import render_html, write_report
from llama_index_ragtune.evaluation.results import EvaluationResults
from llama_index_ragtune.evaluation.svg_charts import (
    MAX_CHART_METRICS,
    MAX_CHART_SERIES,
    MAX_SHOWN_STEPS,
    Series,
    calibration_diagram,
    latency_boxes,
    metric_bars,
    shown_steps,
    timing_bars,
)


# ------------------------------------------------------------- 1. concurrent write_report
def _results(title: str) -> EvaluationResults:
    results = EvaluationResults(
        title=title, dataset_name="d", queries={"test": 2}, bundle_version="v1"
    )
    results.add_retrieval("hybrid", "before", {"ndcg@10": 0.5}, latency_ms=[1.0, 2.0])
    results.add_retrieval("hybrid", "after", {"ndcg@10": 0.6}, latency_ms=[1.0, 2.0])
    return results


def _run_of(out: Path) -> tuple[str, str]:
    page = re.search(r"<h1>(run-\w+)</h1>", (out / "report.html").read_text()).group(1)
    summary = re.search(r"run-\w+", (out / "report.md").read_text()).group(0)
    return page, summary


def _race(name: str, out: Path, barrier, rounds: int) -> None:
    results = _results(name)
    for _ in range(rounds):
        barrier.wait()
        write_report(results, out)
        barrier.wait()


def test_processes_racing_write_report_leave_one_runs_pair(tmp_path):
    # before: 20 of 60 rounds left run-A's report.html beside run-B's report.md
    out, rounds = tmp_path / "report", 40
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(3)
    writers = [
        ctx.Process(target=_race, args=(name, out, barrier, rounds)) for name in ("run-A", "run-B")
    ]
    for writer in writers:
        writer.start()
    try:
        mixed = 0
        for _ in range(rounds):
            barrier.wait(timeout=30)  # both start writing
            barrier.wait(timeout=30)  # both are done
            page, summary = _run_of(out)
            mixed += page != summary
    finally:
        for writer in writers:
            writer.join(30)
    assert [w.exitcode for w in writers] == [0, 0]
    assert mixed == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.md"]


def test_threads_racing_write_report_leave_one_runs_pair(tmp_path):
    out = tmp_path / "report"
    errors: list[BaseException] = []

    def write(name: str) -> None:
        try:
            for _ in range(15):
                write_report(_results(name), out)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"run-{n}",)) for n in "ABC"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    page, summary = _run_of(out)
    assert page == summary


def _write_when_free(out: Path, inherited: int) -> None:
    os.close(inherited)  # the parent's locked descriptor, copied by fork: not this writer's
    write_report(_results("run-child"), out)


def test_write_report_waits_for_the_folders_lock(tmp_path):
    """The writer holds ``flock`` on the folder itself while it renames (no lock file is
    added to the folder): another process holding it makes the writer wait."""
    out = tmp_path / "report"
    write_report(_results("run-old"), out)
    fd = os.open(out, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_write_when_free, args=(out, fd))
    child.start()
    try:
        time.sleep(1.0)
        assert child.is_alive()
        assert _run_of(out) == ("run-old", "run-old")  # nothing replaced while held
    finally:
        os.close(fd)  # releases the lock
        child.join(30)
    assert child.exitcode == 0
    assert _run_of(out) == ("run-child", "run-child")
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.md"]


# ------------------------------------------------------------------ 2. chart caps
def test_timing_bars_called_directly_is_capped_like_the_page():
    timings = {f"step {i}": float(i % 17) for i in range(20_000)}
    svg = timing_bars(timings, "steps")
    assert svg.count("<rect") == MAX_SHOWN_STEPS  # was 20,000 bars
    assert f"{20_000 - MAX_SHOWN_STEPS + 1:,} other steps" in svg
    assert svg == timing_bars(shown_steps(timings), "steps")  # one cap, applied once
    results = _results("run-x")
    results.timings.update(timings)
    assert timing_bars(timings, "Wall time per pipeline step") in render_html(results)


def test_metric_bars_called_directly_is_capped_with_a_note():
    metrics = [f"m{i}@10" for i in range(500)]
    series = [Series(f"s{i}", "#2563eb", {m: 0.5 for m in metrics}) for i in range(300)]
    svg = metric_bars(series, metrics, "all")
    assert svg.count('class="label"') == MAX_CHART_METRICS
    assert svg.count('class="swatch"') == MAX_CHART_SERIES
    assert "first 30 of 500 metrics drawn; first 80 of 300 systems drawn" in svg
    # references past the cap compare with nothing (no IndexError)
    svg = metric_bars(series, metrics[:2], "refs", references=[None] + [299] * 299)
    assert svg.count('class="delta') == 0
    small = metric_bars(series[:2], metrics[:2], "small")
    assert "drawn" not in small  # under the caps: unchanged, no note


def test_latency_boxes_caps_systems_and_checks_max_dots():
    series = [Series(f"s{i}", "#2563eb", [1.0, 2.0, 3.0]) for i in range(200)]
    svg = latency_boxes(series, "lat")
    assert svg.count('class="whisker"') == MAX_CHART_SERIES
    assert "first 80 of 200 systems drawn" in svg
    for bad, error in ((10**9, ValueError), (0, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="latency_boxes: max_dots"):
            latency_boxes(series[:1], "lat", max_dots=bad)


def test_calibration_diagram_refuses_too_many_bins():
    from llama_index_ragtune.evaluation.system_result import RefusalScores

    scores = RefusalScores(probabilities=[0.1, 0.9] * 50, should_refuse=[0, 1] * 50)
    assert "<svg" in calibration_diagram(scores.reliability_bins(10), 0.5, "ok")
    with pytest.raises(ValueError, match=r"calibration_diagram: 1,000 bins; at most 100"):
        calibration_diagram(scores.reliability_bins(1000), 0.5, "many")


# ------------------------------------------------------------------ 3. training warm-up
def _train(tmp_path, caplog, warmup, steps=3):
    import torch
    from transformers import Trainer, TrainingArguments

    from llama_index_ragtune.finetuning.training_args_check import warmup_check_callback

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def forward(self, x, labels=None):
            out = self.layer(x).squeeze(-1)
            return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}

    data = [
        {"x": torch.tensor([float(i), 1.0]), "labels": torch.tensor(float(i))} for i in range(8)
    ]
    args = TrainingArguments(
        str(tmp_path / "run"),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=0.1,
        warmup_steps=warmup,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=Tiny(), args=args, train_dataset=data, callbacks=[warmup_check_callback("Engine")]
    )
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.finetuning.base"):
        trainer.train()
    rates = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    warnings = [r.getMessage() for r in caplog.records if "warmup_steps" in r.getMessage()]
    return rates, warnings


def test_warmup_longer_than_the_run_is_said_once(tmp_path, caplog):
    rates, warnings = _train(tmp_path, caplog, warmup=1e308)
    assert max(rates) < 1e-300  # the run trained at a rate of about 0 (was silent)
    assert len(warnings) == 1
    assert "Engine: args.warmup_steps=1e+308 covers all 3 training steps" in warnings[0]
    assert "never reaches its peak" in warnings[0] and "warmup_steps=0.1" in warnings[0]


def test_warmup_shorter_than_the_run_says_nothing(tmp_path, caplog):
    rates, warnings = _train(tmp_path, caplog, warmup=1)
    assert warnings == [] and max(rates) == pytest.approx(0.1)


def test_every_engine_gets_the_warmup_check():
    from llama_index_ragtune.finetuning.training_plan import TrainingPlanMixin

    class Engine(TrainingPlanMixin):
        callbacks = ["user's"]
        train_deadline = None

    callbacks, timer = Engine()._budget_callbacks(None)
    assert timer is None and callbacks[0] == "user's"
    assert type(callbacks[1]).__name__ == "WarmupCheck"


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_warmup_option_refuses_non_finite_and_negative(value, capsys):
    import argparse

    from llama_index_ragtune.commands.training_data import add_training_arguments

    parser = argparse.ArgumentParser(prog="ragtune")
    add_training_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--warmup", value])
    assert "--warmup" in capsys.readouterr().err


def test_engine_args_refuse_non_finite_warmup():
    from types import SimpleNamespace

    from llama_index_ragtune.finetuning.training_args_check import check_training_args

    for value in (float("inf"), float("nan"), -1.0):
        args = SimpleNamespace(learning_rate=2e-5, num_train_epochs=1, max_steps=-1)
        args.warmup_steps = value
        with pytest.raises(ValueError, match="args.warmup_steps must be a finite number >= 0"):
            check_training_args("DecoderFinetuneEngine", args)


# ------------------------------------------------------------------ 4. PipelineConfig bounds
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("similarity_top_k", 10**30),
        ("similarity_top_k", 10_001),
        ("rerank_candidates", 2**31),
        ("max_sources", 10**6),
        ("negatives_per_source", 10**9),
        ("synthetic_questions_per_node", 10**9),
        ("refusal_cv_repeats", 10**12),
        ("max_new_tokens", 10**30),
        ("max_val_queries", 2**63),
        ("max_test_questions", 10**30),
        ("max_dev_questions", 2**31),
        ("max_synthetic_nodes", 10**30),
        ("max_source_chars", 10**30),
        ("eval_points", 10**30),
    ],
)
def test_pipeline_config_refuses_absurd_whole_numbers(field, value):
    from llama_index_ragtune.pipeline.config import PipelineConfig

    with pytest.raises(ValueError, match=rf"PipelineConfig\.{field} must be"):
        PipelineConfig(**{field: value})


def test_pipeline_config_keeps_large_sane_values():
    from llama_index_ragtune.pipeline.config import PipelineConfig

    config = PipelineConfig(
        similarity_top_k=10_000,
        rerank_candidates=10_000,
        max_test_questions=2**31 - 1,
        eval_points=0,
        seed=-1,  # the data splits' seed (random.Random): any whole number
    )
    assert (config.similarity_top_k, config.seed) == (10_000, -1)


# ------------------------------------------------------------------ 5. FAISS search settings
def _store(kind: str):
    from llama_index.core.schema import TextNode

    from llama_index_ragtune.retrievers.faiss_store import FilterableFaissVectorStore

    rng = np.random.default_rng(0)
    vectors = rng.random((400, 8), dtype=np.float32)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(8, 16, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(8), 8, 8, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
    store = FilterableFaissVectorStore(index)
    nodes = []
    for i, vector in enumerate(vectors):
        node = TextNode(text=f"n{i}", id_=f"n{i}")
        node.embedding = vector.tolist()
        nodes.append(node)
    store.add(nodes)
    return store, vectors


def test_set_search_params_waits_for_a_running_search():
    store, _ = _store("hnsw")
    done = threading.Event()
    with store._searches.reading():  # what a running query holds
        worker = threading.Thread(
            target=lambda: (store.set_search_params(ef_search=64), done.set())
        )
        worker.start()
        time.sleep(0.5)
        assert not done.is_set()  # was: changed under the running search
        assert store.search_params() != {"ef_search": 64}
    worker.join(10)
    assert done.is_set() and store.search_params() == {"ef_search": 64}


def test_set_search_params_while_threads_query():
    from llama_index.core.vector_stores.types import VectorStoreQuery

    store, vectors = _store("ivf")
    errors: list[BaseException] = []
    stop = threading.Event()

    def query() -> None:
        try:
            while not stop.is_set():
                result = store.query(
                    VectorStoreQuery(query_embedding=vectors[3].tolist(), similarity_top_k=5)
                )
                assert len(result.ids) == 5
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=query) for _ in range(3)]
    for thread in threads:
        thread.start()
    for n in range(200):
        store.set_search_params(nprobe=1 + n % 8)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert store.search_params() == {"nprobe": 8}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ef_search": 2**31 - 1}, "ef_search must be at most 1,000,000"),
        ({"ef_search": 10**30}, "ef_search must be at most"),
        ({"ef_search": 0}, "ef_search must be an integer >= 1"),
        ({"ef_search": 2.5}, "ef_search must be an integer >= 1"),
        ({"ef_search": True}, "ef_search must be an integer >= 1"),
        ({"ef_search": "64"}, "ef_search must be an integer >= 1"),
        ({"nprobe": 4}, "nprobe applies to IVF indexes"),
    ],
)
def test_set_search_params_checks_values_and_keeps_old_ones(kwargs, message):
    store, _ = _store("hnsw")
    store.set_search_params(ef_search=40)
    with pytest.raises(ValueError, match=message):
        store.set_search_params(**kwargs)
    assert store.search_params() == {"ef_search": 40}  # nothing changed


def test_set_search_params_ivf_bounds_and_numpy_integers():
    store, _ = _store("ivf")
    with pytest.raises(ValueError, match="nprobe must be at most 2,147,483,647"):
        store.set_search_params(nprobe=2**31)
    with pytest.raises(ValueError, match="ef_search applies to HNSW"):
        store.set_search_params(ef_search=10)
    store.set_search_params(nprobe=np.int64(10**6))  # above nlist: every list
    assert store.search_params() == {"nprobe": 8}


@pytest.mark.parametrize(
    "kwargs", [{"ef_search": 2**31 - 1}, {"ef_construction": 10**30}, {"nprobe": 2**31}]
)
def test_an_index_config_is_bounded_as_set_search_params_is(kwargs):
    # was: built (and then refused on load by set_search_params), or a raw SWIG OverflowError
    from pydantic import ValidationError

    from llama_index_ragtune.retrievers.faiss_index import FaissIndexConfig

    with pytest.raises(ValidationError, match=next(iter(kwargs))):
        FaissIndexConfig(kind="hnsw" if "ef" in next(iter(kwargs)) else "ivf", **kwargs)
