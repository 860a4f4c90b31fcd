"""The encoder engine, unchanged, under ``torchrun``: 2 CPU processes (gloo) match 1 process.

What "matches" means here. The single process trains with batches of 4; the DDP run
with 2 processes of 2 rows each, so the global batch is the same 4 rows: with one seed
the no-duplicates batch sampler draws the same order, and accelerate hands process 0
the first half of each global batch and process 1 the second. Under DDP the engine's
``MultipleNegativesRankingLoss`` gathers the in-batch candidates across processes
(``gather_across_devices=True``), so every query is scored against the same 4
passages as in one process, and DDP averages the two halves' gradients into the
single-process gradient. Without the gather each query would only see the 2 passages
of its own process: a different loss, and no reason for the weights to agree.

The model has dropout off (the two layouts draw different dropout masks), so what is
left is float round-off: sums in a different order, and Adam dividing by small
second moments. Tolerance: ``ATOL = 1e-4`` on every weight (about 1.4e-5 observed),
while training moves the weights by about 1.2e-2 (more than 50 times the tolerance,
checked); the same DDP run without the gather ends about 3e-2 away. Validation,
the best checkpoint on the validation pool, the time-budget plan and the promotion
decision all run too: only the main process evaluates (the other one serves its
encode calls) and decides, and both processes return the same result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine

CHILD = Path(__file__).with_name("finetune_child.py")
ATOL = 1e-4


@pytest.fixture(scope="module")
def dropout_free_encoder(tmp_path_factory, make_tiny_encoder) -> str:
    """A tiny random BERT without dropout (the MiniLM tokenizer), as a sentence-transformers folder."""
    return make_tiny_encoder(tmp_path_factory.mktemp("dropout_free_encoder"), seed=0, dropout=False)


def child_env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def launch(config: dict, folder: Path, name: str, processes: int) -> tuple[subprocess.Popen, Path]:
    path = folder / f"{name}-config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    if processes == 1:
        command = [sys.executable, str(CHILD), str(path)]
    else:  # what a user runs: torchrun from the environment, a free port picked for us
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            str(CHILD),
            str(path),
        ]
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> str:
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"no result after {timeout} s:\n{log.read_text(errors='replace')[-4000:]}")
    text = log.read_text(errors="replace")
    assert code == 0, text[-4000:]
    return text


def tuned_weights(folder: Path, promoted: bool) -> dict[str, torch.Tensor]:
    """The tuned model: ``final/`` when promoted, else ``challenger/``."""
    return load_file(str(folder / ("final" if promoted else "challenger") / "model.safetensors"))


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def one_and_two_processes(config: dict, folder: Path, batch: int) -> tuple[dict, dict, dict]:
    """Run ``config`` in 1 process at ``batch`` rows a step and in 2 gloo processes at
    ``batch / 2`` each (the same global batch), side by side; return the three summaries."""
    runs = []
    for name, processes in (("single", 1), ("ddp", 2)):
        run = {
            **config,
            "args": {**config["args"], "per_device_train_batch_size": batch // processes},
            "output_dir": str(folder / name),
            "summary": str(folder / f"{name}.json"),
        }
        runs.append(launch(run, folder, name, processes))
    for proc, log in runs:
        finish(proc, log)
    one = json.loads((folder / "single.json").read_text())
    main = json.loads((folder / "ddp.json").read_text())
    other = json.loads((folder / "ddp.rank1.json").read_text())
    assert main["world_size"] == 2 and one["world_size"] == 1
    assert other == main  # every process returns the main process's result
    assert main["steps_run"] == one["steps_run"]
    # the same validation split, scored by the main process alone (inference shared)
    assert main["before"] == pytest.approx(one["before"], abs=1e-6)
    assert main["after"] == pytest.approx(one["after"], abs=1e-4)
    assert main["promoted"] == one["promoted"]
    decision = json.loads((folder / "ddp" / "decision.json").read_text())
    assert decision["decision"]["promoted"] == main["promoted"]
    return one, main, other


def test_two_gloo_processes_train_the_encoder_like_one(tmp_path, dropout_free_encoder, make_toy):
    # 16 queries: 4 carved off for validation, 12 training pairs = 3 global batches of 4
    make_toy(with_negatives=False).save_json(tmp_path / "pairs.json")
    config = {
        "kind": "encoder",
        "model": dropout_free_encoder,
        "data": str(tmp_path / "pairs.json"),
        "budget": {"minutes": 10},  # plans steps from a probe (agreed across processes)
        "engine": {
            "val_fraction": 0.25,
            "eval_points": 2,  # best checkpoint on the validation pool, evaluated in training
            "max_negatives_per_query": 0,
            "decision_metric": "ndcg@10",
        },
        "args": {
            "num_train_epochs": 2,
            "learning_rate": 5e-3,
            "warmup_steps": 0,
            "seed": 7,
            "use_cpu": True,  # DDP without a GPU: the gloo backend
            "logging_steps": 50,
            "disable_tqdm": True,
        },
    }
    one, main, _ = one_and_two_processes(config, tmp_path, batch=4)
    assert main["global_step"] == one["global_step"] == 6  # 3 global batches x 2 epochs

    start = load_file(str(Path(dropout_free_encoder) / "model.safetensors"))
    reference = tuned_weights(tmp_path / "single", one["promoted"])
    distributed = tuned_weights(tmp_path / "ddp", main["promoted"])
    assert max_difference(reference, start) > 50 * ATOL  # training moved the weights
    assert max_difference(distributed, reference) <= ATOL


@pytest.mark.slow
def test_two_gloo_processes_train_the_reranker_like_one(tmp_path, dropout_free_encoder, make_toy):
    """The reranker engine too: a new one-logit head on the tiny encoder, BCE on
    (query, passage, label) rows (a per-row loss: DDP's averaged gradient is the
    one-process gradient), first-stage candidates from the tiny encoder + BM25."""
    make_toy().save_json(tmp_path / "toy.json")
    config = {
        "kind": "reranker",
        "model": dropout_free_encoder,
        "data": str(tmp_path / "toy.json"),
        "torch_seed": 0,  # the new head starts the same in both runs
        "budget": {"minutes": 10},
        "engine": {
            "val_fraction": 0.25,
            "eval_points": 2,
            "encoder": dropout_free_encoder,
            "rerank_depth": 8,
            "max_negatives_per_query": 1,
        },
        "args": {
            "num_train_epochs": 1,  # 12 queries x (positive + negative) = 6 batches of 4
            "learning_rate": 1e-3,
            "warmup_steps": 0,
            "seed": 7,
            "use_cpu": True,
            "logging_steps": 50,
            "disable_tqdm": True,
        },
    }
    one, main, _ = one_and_two_processes(config, tmp_path, batch=4)
    assert main["global_step"] == one["global_step"] == 6
    reference = tuned_weights(tmp_path / "single", one["promoted"])
    distributed = tuned_weights(tmp_path / "ddp", main["promoted"])
    start = load_file(str(Path(dropout_free_encoder) / "model.safetensors"))
    body = {k.removeprefix("bert."): v for k, v in reference.items() if k.startswith("bert.")}
    assert body.keys() == start.keys()
    assert max_difference(body, start) > 10 * ATOL  # training moved the encoder under the head
    assert max_difference(distributed, reference) <= ATOL


def test_several_launched_processes_but_one_seen_is_refused(
    tmp_path, dropout_free_encoder, make_toy, monkeypatch
):
    """On a machine without a GPU, DDP needs use_cpu=True: without it every launched
    process would train alone on all the data and write the same folders."""
    engine = EncoderFinetuneEngine(
        make_toy(with_negatives=False),
        model=dropout_free_encoder,
        budget=None,
        val_fraction=0,
        force_promotion=True,
        max_negatives_per_query=0,
        args=EncoderFinetuneEngine.default_args(tmp_path, max_steps=1, report_to="none"),
        show_progress=False,
    )
    assert engine.args.world_size == 1 and engine.is_main_process
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun --nproc_per_node 2 sets it
    with pytest.raises(RuntimeError, match=r"WORLD_SIZE=2.*use_cpu=True"):
        engine.finetune()
    assert not (tmp_path / "final").exists()


def test_decoder_fsdp_is_set_up_through_default_args(tmp_path):
    """FSDP for the decoder goes through TRL's SFTConfig fields; ``default_args`` builds
    it through ``__init__``, so transformers sets FSDP up (a field set afterwards would
    be ignored)."""
    pytest.importorskip("trl")
    from llama_index_ragtune.finetuning.decoder import DecoderFinetuneEngine

    args = DecoderFinetuneEngine.default_args(
        tmp_path, fsdp=True, fsdp_config={"version": 2, "reshard_after_forward": True}, max_steps=3
    )
    assert args.fsdp_plugin_args["fsdp_version"] == 2
    assert args.fsdp_plugin_args["reshard_after_forward"] is True
    assert args.max_steps == 3 and args.learning_rate == 2e-4  # the other defaults stay
    assert args.output_dir == str(tmp_path / "sft")
