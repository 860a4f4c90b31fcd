"""The training stages of ``DecoderFinetuneEngine``: LoRA SFT, then DPO or ORPO.

``DecoderStages`` is the engine's base class: it loads the starting model, runs each
stage with TRL's trainer (resuming from a checkpoint when asked), and under a time
budget plans a stage's steps from a timed probe, so that the learning-rate schedule ends
in time. It works on what :class:`~.decoder.DecoderFinetuneEngine` sets up (``args``,
``preference_args``, ``lora_config``, ``budget``, ``eval_points``...); the engine
decides the validation split, promotion and saving.

Example::

    from llama_index_ragtune.finetuning.decoder import DecoderFinetuneEngine

    engine = DecoderFinetuneEngine(sft_dataset, preference_dataset=dpo_pairs, output_dir="runs/decoder")
    engine.train_sft()            # sft-adapter/ holds the SFT adapter
    engine.train_preference()     # DPO on every pair (finetune() keeps validation's out)
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index_ragtune._atomic import atomic_dir
from llama_index_ragtune.finetuning.base import BaseFinetuneEngine
from llama_index_ragtune.finetuning.checkpoint_evidence import older_adapter_fits
from llama_index_ragtune.finetuning.checkpoints import weights_fingerprint
from llama_index_ragtune.finetuning.decoder_config import on_gpu, score_completion_tokens_only
from llama_index_ragtune.finetuning.decoder_data import PREFERENCE_COLUMNS, SFT_COLUMNS, _columns
from llama_index_ragtune.models import load_model

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

_SFT_DONE = "sft_complete.json"
PROBE_REPEATS = 5
"""Micro-batches of a time-limited SFT's probe: the first warms up, the mean of the others is
the step time (grounded prompts differ in length, so one micro-batch is a poor estimate)."""


class DecoderStages(BaseFinetuneEngine):
    """Loading the starting model, the SFT and preference stages, and saving an adapter:
    the training half of :class:`~.decoder.DecoderFinetuneEngine` (see this module)."""

    # ------------------------------------------------------------------- paths
    @property
    def sft_adapter_dir(self) -> Path:
        return self.output_dir / "sft-adapter"

    # ----------------------------------------------------------------- loading
    def _load_base(self) -> Any:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # GPU bf16 training holds bf16 weights; on CPU, bf16 is autocast over float32 weights.
        bf16_weights = getattr(self.args, "bf16", False) and on_gpu(self.device)
        dtype = torch.bfloat16 if bf16_weights else torch.float32
        if self.tokenizer is None:
            self.tokenizer = AutoTokenizer.from_pretrained(self.base_model)
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            if getattr(self.tokenizer, "chat_template", None) is None:
                raise ValueError(
                    f"The tokenizer of '{self.base_model}' has no chat template; grounded SFT needs a "
                    "chat/instruct model (or set tokenizer.chat_template and save it with the model)."
                )
        return load_model(AutoModelForCausalLM.from_pretrained, self.base_model, dtype=dtype)

    # ---------------------------------------------------------------- training
    def train_sft(
        self,
        resume_from_checkpoint: bool | str | None = None,
        train: datasets.Dataset | None = None,
        val: datasets.Dataset | None = None,
    ) -> None:
        """Stage 1: LoRA SFT on the completion tokens; saves ``sft-adapter/``.

        With ``resume_from_checkpoint=True`` and a finished ``sft-adapter/``,
        the adapter is loaded and SFT is skipped. ``val`` rows are evaluated during
        training to keep the best checkpoint.
        """
        from peft import PeftModel
        from trl import SFTTrainer

        train = self.train_dataset if train is None else train
        base = self._load_base()
        base_start = weights_fingerprint(base)
        if resume_from_checkpoint and self._finished_sft_of(base_start, base):
            logger.info("SFT already finished in %s; loading its adapter.", self.sft_adapter_dir)
            self.model = load_model(
                PeftModel.from_pretrained, base, str(self.sft_adapter_dir), is_trainable=True
            )
            return
        if self.budget is not None and self.budget.max_pairs and len(train) > self.budget.max_pairs:
            keep = sorted(
                random.Random(self.args.seed).sample(range(len(train)), self.budget.max_pairs)
            )
            train = train.select(keep)
        self._check_full_batch(len(train))
        # checkpoint selection configured here (not by the caller's args) follows a plan
        selecting = val is not None and self.args.eval_strategy == "no" and self.eval_points > 0
        if val is not None:
            self._configure_checkpoint_selection(
                _LossPool(), _sft_steps(self.args, len(train)), self.eval_points
            )
        callbacks, timer = self._budget_callbacks(self.budget)
        if timer is not None and timer.deadline is not None and self._stage2_pairs is not None:
            timer.deadline = time.time() + (timer.deadline - time.time()) / 2  # half for DPO
        start = time.perf_counter()
        self.sft_trainer = SFTTrainer(
            model=base,
            args=self.args,
            train_dataset=_columns(train, SFT_COLUMNS),
            eval_dataset=None if val is None else _columns(val, SFT_COLUMNS),
            processing_class=self.tokenizer,
            peft_config=self.lora_config,
            callbacks=callbacks or None,
        )
        checkpoint = self._checkpoint_to_resume(
            resume_from_checkpoint, Path(self.args.output_dir), self.sft_trainer
        )
        with score_completion_tokens_only(self.device):
            if timer is not None:
                self.plan = self._plan_stage(
                    self.sft_trainer, self.args, len(train), timer.deadline, checkpoint
                )
                if selecting:
                    _follow_plan(self.args, self.eval_points)
            self.sft_trainer.train(resume_from_checkpoint=checkpoint)
        self.model = self.sft_trainer.model
        self.timings["sft_seconds"] = time.perf_counter() - start
        self._save_adapter(self.sft_adapter_dir)
        if self.is_main_process:
            (self.sft_adapter_dir / _SFT_DONE).write_text(
                json.dumps({"steps": self.sft_trainer.state.global_step, "start": base_start})
            )

    def _finished_sft_of(self, start: str, base: Any = None) -> bool:
        """Whether ``sft-adapter/`` holds a finished SFT of the starting model whose
        ``weights_fingerprint`` is ``start`` (one of another starting model: a warning, so
        SFT runs again instead of serving that model's adapter on this one)."""
        try:
            done = json.loads((self.sft_adapter_dir / _SFT_DONE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        written = done.get("start") if isinstance(done, dict) else None
        if not isinstance(written, str):  # written before it recorded the starting model
            return older_adapter_fits(self.sft_adapter_dir, base)
        if written != start:
            logger.warning(
                "%s holds a finished SFT of another starting model (weights fingerprint %s, "
                "this run's %s); not reused: SFT runs again from the start",
                self.sft_adapter_dir,
                written,
                start,
            )
            return False
        return True

    def _plan_stage(
        self, trainer: Any, args: Any, rows: int, deadline: float | None, checkpoint: str | None
    ) -> dict[str, Any]:
        """Plan the steps of a time-limited stage (``trainer`` with its ``args``) from a timed
        probe (see ``_plan_steps``); a run resumed from a checkpoint keeps the step count it
        was planned with."""
        planned = _planned_steps(checkpoint) if args.max_steps <= 0 else None
        if planned is not None:
            args.max_steps = planned
            return {"rows": rows, "resumed_plan": True}
        return self._plan_steps(
            self.budget, rows, _probe_step(trainer), deadline, repeats=PROBE_REPEATS, args=args
        )

    def train_preference(
        self,
        resume_from_checkpoint: bool | str | None = None,
        pairs: datasets.Dataset | None = None,
    ) -> None:
        """Stage 2: DPO (reference = the SFT model) or ORPO on ``pairs`` (default: every
        row of ``preference_dataset``; ``finetune()`` passes those of training questions)."""
        pairs = self.preference_dataset if pairs is None else pairs
        if pairs is None:
            raise ValueError(
                "DecoderFinetuneEngine: no preference_dataset was given; build one with PreferenceBuilder."
            )
        if self.model is None:
            raise RuntimeError("DecoderFinetuneEngine: run train_sft() before train_preference().")
        self._check_full_batch(len(pairs), self.preference_args, "preference_args")
        start = time.perf_counter()
        if self.preference_method == "dpo":
            from trl import DPOTrainer as Trainer
        else:
            from trl.experimental.orpo import ORPOTrainer as Trainer
        callbacks, timer = self._budget_callbacks(self.budget, "preference_args")
        self.preference_trainer = Trainer(
            model=self.model,
            args=self.preference_args,
            train_dataset=_columns(pairs, PREFERENCE_COLUMNS),
            processing_class=self.tokenizer,
            callbacks=callbacks or None,
        )
        checkpoint = self._checkpoint_to_resume(
            resume_from_checkpoint, Path(self.preference_args.output_dir), self.preference_trainer
        )
        with score_completion_tokens_only(self.device):
            if timer is not None:
                self.preference_plan = self._plan_stage(
                    self.preference_trainer,
                    self.preference_args,
                    len(pairs),
                    timer.deadline,
                    checkpoint,
                )
            self.preference_trainer.train(resume_from_checkpoint=checkpoint)
        self.model = self.preference_trainer.model
        if "ref" in getattr(self.model, "peft_config", {}):
            self.model.delete_adapter("ref")  # DPO's frozen copy of the SFT adapter
        self.timings[f"{self.preference_method}_seconds"] = time.perf_counter() - start

    # ------------------------------------------------------------------ saving
    def _save_adapter(self, folder: Path) -> None:
        if not self.is_main_process:  # under DDP every process holds the weights; one writes
            return
        with atomic_dir(folder) as tmp:
            self.model.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))


def _probe_step(trainer: Any) -> Any:
    """One forward and backward pass of ``trainer``'s model on its next training micro-batch,
    through the trainer's own loss and precision (to time a step before planning); no weight
    changes."""
    batches: Any = iter(())

    def probe() -> None:
        nonlocal batches
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(trainer.get_train_dataloader())
            batch = next(batches)
        model = trainer.model
        model.train()
        tokens = getattr(trainer, "_total_train_tokens", None)
        # mixed precision as in training, where accelerate's prepared model autocasts
        with trainer.accelerator.autocast(), trainer.compute_loss_context_manager():
            loss = trainer.compute_loss(model, batch)
        loss.backward()
        model.zero_grad(set_to_none=True)
        # TRL's running token count and metrics: the probe is not part of training's logs
        if tokens is not None:
            trainer._total_train_tokens = tokens
        for logged in getattr(trainer, "_metrics", {}).values():
            logged.clear()

    return probe


def _planned_steps(checkpoint: str | None) -> int | None:
    """The ``max_steps`` a checkpoint's run trained towards (its ``trainer_state.json``)."""
    if checkpoint is None:
        return None
    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
        steps = int(state["max_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return steps if steps > 0 else None


def _follow_plan(args: Any, eval_points: int) -> None:
    """Spread the engine's checkpoint-selection passes (configured for the unplanned
    length) over the planned ``max_steps``."""
    if args.max_steps > 0 and args.eval_strategy == "steps":
        every = max(1, math.ceil(args.max_steps / eval_points))
        if args.eval_steps > every:
            args.eval_steps = args.save_steps = every


class _LossPool:
    """Names the SFT trainer's own validation loss for checkpoint selection."""

    name = "sft"
    primary_metric = "loss"
    metric_key = "eval_loss"
    greater_is_better = False


def _sft_steps(args: Any, rows: int) -> int:
    if args.max_steps and args.max_steps > 0:
        return int(args.max_steps)
    per_step = (
        args.per_device_train_batch_size
        * max(1, args.gradient_accumulation_steps)
        * max(1, args.world_size)  # under DDP a step takes every process's batch
    )
    return math.ceil(rows / per_step) * int(math.ceil(args.num_train_epochs))
