"""Training killed mid-run (SIGKILL) resumes from its last checkpoint and ends where an
uninterrupted run ends.

A child process trains with a checkpoint after every step; the test kills it with
SIGKILL once ``checkpoint-2`` appears (possibly while the trainer is still writing it,
or a later one), resumes in a new process with ``finetune(resume_from_checkpoint=True)``
and compares the final weights with those of an uninterrupted run of the same config.

Tolerance: ``ATOL = 1e-6`` on every weight. The checkpoint restores the weights, the
optimizer and scheduler state, the RNG states (dropout) and the position in the data
(the encoder's ``NO_DUPLICATES`` batch sampler reshuffles from ``seed + epoch`` on every
pass, so the skipped batches are the ones already trained on), so the resumed run
replays the same float operations as the uninterrupted one: the weights come out
identical, and the tolerance only leaves room for a different kernel choice between
processes. Training itself moves the weights far more than that (checked), so a lost
step or a different data order would show.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llama_index_ragtune.finetuning.checkpoints import last_complete_checkpoint, resolve_resume

CHILD = Path(__file__).with_name("finetune_child.py")
ATOL = 1e-6
MAX_STEPS = 6


def child_env() -> dict[str, str]:
    """One thread per child (two children share the 2 cores), offline."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def start(config: dict, folder: Path, name: str) -> tuple[subprocess.Popen, Path]:
    path = folder / f"{name}-config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(path)],
            env=child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, log


def finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    assert proc.wait(timeout=timeout) == 0, log.read_text(errors="replace")[-4000:]


def kill_after(proc: subprocess.Popen, log: Path, checkpoint: Path, timeout: float = 300) -> None:
    """SIGKILL ``proc`` as soon as ``checkpoint`` exists (it may still be being written)."""
    deadline = time.monotonic() + timeout
    while not checkpoint.exists():
        if proc.poll() is not None:
            pytest.fail(
                f"the child exited before {checkpoint.name}:\n{log.read_text(errors='replace')[-4000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {checkpoint.name} after {timeout} s")
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def killed_and_resumed(config: dict, folder: Path, checkpoints: str, final: str) -> dict:
    """Run ``config`` uninterrupted and killed-then-resumed; return both final weights."""
    reference = {**config, "output_dir": str(folder / "reference")}
    interrupted = {**config, "output_dir": str(folder / "interrupted")}
    ref_proc, ref_log = start(reference, folder, "reference")  # runs alongside the killed one
    proc, log = start(interrupted, folder, "interrupted")
    run_dir = folder / "interrupted"
    kill_after(proc, log, run_dir / checkpoints / "checkpoint-2")
    assert not (run_dir / final).exists()
    last = last_complete_checkpoint(run_dir / checkpoints)
    assert last is not None and int(last.rsplit("-", 1)[1]) < MAX_STEPS

    summary = folder / "resumed-summary.json"
    proc, log = start({**interrupted, "resume": True, "summary": str(summary)}, folder, "resumed")
    finish(proc, log)
    finish(ref_proc, ref_log)
    resumed = json.loads(summary.read_text(encoding="utf-8"))
    # it continued after the last complete checkpoint: no step lost, none run twice
    step = int(last.rsplit("-", 1)[1])
    assert resumed["steps_run"] == list(range(step + 1, MAX_STEPS + 1))
    return {
        "reference": weights(folder / "reference" / final),
        "resumed": weights(run_dir / final),
        "summary": resumed,
    }


def test_encoder_killed_mid_run_resumes_to_the_uninterrupted_weights(
    tmp_path, tiny_encoder_path, make_toy
):
    # With negatives, neighbouring rows share a passage (a query's negative is the next
    # query's positive), so the NO_DUPLICATES sampler defers rows: batches depend on it.
    make_toy().save_json(tmp_path / "toy.json")
    config = {
        "kind": "encoder",
        "model": tiny_encoder_path,  # dropout 0.1: the RNG state must be restored too
        "data": str(tmp_path / "toy.json"),
        "engine": {"val_fraction": 0, "force_promotion": True},
        "args": {
            "max_steps": MAX_STEPS,  # 16 rows in batches of 4: the run crosses an epoch end
            "per_device_train_batch_size": 4,
            "learning_rate": 2e-3,
            "warmup_steps": 0,
            "save_strategy": "steps",
            "save_steps": 1,
            "save_total_limit": 3,
            "logging_steps": 50,
            "disable_tqdm": True,
            "seed": 7,
            "dataloader_num_workers": 0,
        },
    }
    out = killed_and_resumed(config, tmp_path, ".", "final/model.safetensors")
    assert out["summary"]["global_step"] == MAX_STEPS
    start_weights = weights(Path(tiny_encoder_path) / "model.safetensors")
    assert max_difference(out["reference"], start_weights) > 1000 * ATOL  # training moved them
    assert max_difference(out["resumed"], out["reference"]) <= ATOL


def test_resume_skips_a_checkpoint_left_half_written(tmp_path, caplog):
    complete = tmp_path / "checkpoint-1"
    complete.mkdir()
    (complete / "trainer_state.json").write_text('{"global_step": 1}')
    cut = tmp_path / "checkpoint-2"  # killed while writing trainer_state.json
    cut.mkdir()
    (cut / "trainer_state.json").write_text('{"global_st')
    started = tmp_path / "checkpoint-3"  # killed before trainer_state.json
    started.mkdir()
    (started / "model.safetensors").write_bytes(b"\0" * 10)

    with caplog.at_level("WARNING"):
        assert resolve_resume(True, tmp_path) == str(complete)
    assert "checkpoint-3 is incomplete" in caplog.text and "checkpoint-2" in caplog.text
    with pytest.raises(ValueError, match="checkpoint-3 is incomplete.*resume_from_checkpoint=True"):
        resolve_resume(str(started), tmp_path)
    assert resolve_resume(str(complete), tmp_path) == str(complete)
    assert resolve_resume(True, tmp_path / "missing") is None


CITIES = [
    ("Normandy", "Rouen"),
    ("Brittany", "Rennes"),
    ("Alsace", "Strasbourg"),
    ("Burgundy", "Dijon"),
    ("Provence", "Marseille"),
    ("Picardy", "Amiens"),
    ("Lorraine", "Metz"),
    ("Auvergne", "Clermont-Ferrand"),
]


def sft_rows() -> list[dict]:
    """Eight different grounded questions: a wrong data order after resuming would show."""
    rows = []
    for i, (region, city) in enumerate(CITIES):
        source = f'<source id="1">\n{city} is the capital of {region}.\n</source>'
        rows.append(
            {
                "prompt": [
                    {"role": "system", "content": "Answer from the sources; cite them like [1]."},
                    {
                        "role": "user",
                        "content": f"Sources:\n{source}\n\nQuestion: What is the capital of {region}?",
                    },
                ],
                "completion": [{"role": "assistant", "content": f"{city} [1]"}],
                "qid": f"q{i}",
            }
        )
    return rows


@pytest.mark.slow  # about 30 s: three processes load TRL; the encoder test covers the default tier
def test_decoder_killed_mid_sft_resumes_to_the_uninterrupted_adapter(tmp_path, tiny_causal_lm_path):
    (tmp_path / "sft.json").write_text(json.dumps(sft_rows()), encoding="utf-8")
    config = {
        "kind": "decoder",
        "model": tiny_causal_lm_path,
        "data": str(tmp_path / "sft.json"),
        "engine": {"val_fraction": 0, "force_promotion": True},
        "args": {
            "max_steps": MAX_STEPS,  # 8 rows in batches of 2: the run crosses an epoch end
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "learning_rate": 1e-2,
            "warmup_steps": 0,
            "save_steps": 1,
            "save_total_limit": 3,
            "logging_steps": 50,
            "max_length": 256,
            "disable_tqdm": True,
            "seed": 7,
            "dataloader_num_workers": 0,
        },
    }
    out = killed_and_resumed(config, tmp_path, "sft", "adapter/adapter_model.safetensors")
    assert out["summary"]["global_step"] == MAX_STEPS
    lora_b = {k: v for k, v in out["reference"].items() if "lora_B" in k}
    assert (
        lora_b and max(float(v.abs().max()) for v in lora_b.values()) > 1000 * ATOL
    )  # B starts at 0
    assert max_difference(out["resumed"], out["reference"]) <= ATOL
