"""Runs one engine's ``finetune()`` in its own process, for the kill-and-resume and DDP tests.

Usage (the tests build the config)::

    python tests/finetuning/finetune_child.py config.json
    torchrun --nproc_per_node 2 tests/finetuning/finetune_child.py config.json

``config.json`` holds:

- ``kind``: ``"encoder"``, ``"reranker"`` or ``"decoder"``;
- ``model``: the starting model's folder; ``data``: the training data (a
  ``RetrievalDataset.save_json`` file, or for the decoder a JSON list of
  prompt/completion rows);
- ``output_dir``; ``args``: overrides for ``Engine.default_args``;
  ``engine``: more engine keyword arguments;
- ``budget``: ``TrainingBudget`` fields (default: no budget); ``torch_seed``: seeds
  torch before the engine is built (a new head's initialisation);
- ``resume``: passed as ``finetune(resume_from_checkpoint=...)``;
- ``summary``: where the process writes what ``finetune()`` returned, the steps it ran
  and the world size (JSON; rank ``r > 0`` of a DDP run writes ``<stem>.rank<r>.json``).

The engine runs exactly as a user's script would: no test hook inside.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers import TrainerCallback  # noqa: E402


class StepLog(TrainerCallback):
    """Records the optimizer steps this process ran (a resumed run starts after its checkpoint)."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def build_engine(config: dict, callbacks: list):
    kind = config["kind"]
    from llama_index_ragtune.finetuning.budget import TrainingBudget

    budget = config.get("budget")
    common = {
        "model": config["model"],
        "budget": None if budget is None else TrainingBudget(**budget),
        "show_progress": False,
        "callbacks": callbacks,
        **config.get("engine", {}),
    }
    if kind == "decoder":
        import datasets

        from llama_index_ragtune.finetuning.decoder import DecoderFinetuneEngine

        rows = json.loads(Path(config["data"]).read_text(encoding="utf-8"))
        args = DecoderFinetuneEngine.default_args(config["output_dir"], **config.get("args", {}))
        common.pop("show_progress")
        return DecoderFinetuneEngine(
            datasets.Dataset.from_list(rows),
            args=args,
            output_dir=config["output_dir"],
            device="cpu",
            **common,
        )
    from llama_index_ragtune.data.schema import RetrievalDataset

    data = RetrievalDataset.load_json(config["data"])
    if kind == "encoder":
        from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine as Engine
    elif kind == "reranker":
        from llama_index_ragtune.finetuning.reranker import RerankerFinetuneEngine as Engine
    else:
        raise ValueError(f"unknown kind {kind!r} in the config (encoder, reranker or decoder)")
    args = Engine.default_args(config["output_dir"], **config.get("args", {}))
    return Engine(data, args=args, device="cpu", **common)


def main(path: str) -> int:
    config = json.loads(Path(path).read_text(encoding="utf-8"))
    if "torch_seed" in config:  # e.g. a reranker's new head: the same start in every run
        import torch

        torch.manual_seed(config["torch_seed"])
    steps = StepLog()
    engine = build_engine(config, [steps])
    result = engine.finetune(resume_from_checkpoint=config.get("resume"))
    if config.get("summary"):
        # every process writes what its finetune() returned: under DDP, the main process's result
        rank = int(os.environ.get("RANK", "0"))
        summary = {
            "global_step": result.global_step,
            "promoted": result.promoted,
            "before": result.before,
            "after": result.after,
            "resumed_from": result.info.get("resumed_from"),
            "steps_run": steps.steps,
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        }
        path = Path(config["summary"])
        if rank:
            path = path.with_name(f"{path.stem}.rank{rank}{path.suffix}")
        path.write_text(json.dumps(summary), encoding="utf-8")
    return 0


def end_process_group() -> None:
    """Destroy the process group, as a torchrun script should before it exits: left to the
    interpreter's exit, gloo's threads could still be running and abort the process after
    its work was done ("terminate called without an active exception", exit code -6)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    code = main(sys.argv[1])
    end_process_group()
    sys.exit(code)
