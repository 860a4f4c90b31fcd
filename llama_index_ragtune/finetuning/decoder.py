"""``DecoderFinetuneEngine``: grounded SFT with LoRA, then DPO (or ORPO), validated and gated.

Stage 1 runs TRL's ``SFTTrainer`` on prompt-completion conversations (e.g.
``GroundedSFTBuilder.build``): for that format TRL computes the loss on the
completion only (``SFTConfig.completion_only_loss=None`` resolves to True).
The model gets a PEFT LoRA adapter (``LoraConfig``; default r=16, alpha=32,
all linear layers). Stage 2, when preference pairs are given (e.g.
``PreferenceBuilder.build``), trains the same adapter further with TRL's
``DPOTrainer``, on the pairs of training questions only (``finetune()`` leaves out
those of validation questions: validation must score questions it never trained on);
its reference model is the SFT model itself (TRL copies the SFT adapter into a frozen
``ref`` adapter). ``preference_method="orpo"`` uses
``trl.experimental.orpo.ORPOTrainer`` instead (reference-free; experimental
upstream).

The engine keeps the contract of :mod:`~llama_index_ragtune.finetuning.base`:
``model`` (the starting causal LM), ``args`` (TRL's ``SFTConfig``; the preference
stage takes ``preference_args``, a ``DPOConfig`` or ``ORPOConfig``), ``output_dir``,
``val_dataset`` (SFT rows; carved off the training rows by question when None),
``finetune()`` returning a ``FinetuneResult`` and ``get_finetuned_model()``.
Validation is the mean negative log-likelihood of the held-out completions
(``loss``): measured on the starting model, during SFT to keep the best
checkpoint, and on the tuned model; the tuned adapter is promoted only when it
lowers it by more than ``promotion_margin``.

Upstream config objects pass through untouched (``SFTConfig``, ``DPOConfig``,
``ORPOConfig``, ``LoraConfig``); when one is None a CPU-friendly default is
built (see ``default_sft_config`` and friends). The stages themselves (loading, SFT,
DPO / ORPO, step planning under a time budget) are in
:mod:`~llama_index_ragtune.finetuning.decoder_stages`, the row formats in
:mod:`~llama_index_ragtune.finetuning.decoder_data`. Layout of ``output_dir``::

    sft/            SFT checkpoints (resume with resume_from_checkpoint=True)
    sft-adapter/    the LoRA adapter after SFT (a resumed run skips SFT when present)
    dpo/ | orpo/    preference-stage checkpoints
    adapter/        the promoted LoRA adapter (+ tokenizer): LocalChatLLM loads it as is
    merged/         base weights with the promoted adapter merged in (+ tokenizer)
    challenger/     the adapter of a tuned model that lost on validation
    decision.json   the promotion decision

Example::

    from llama_index_ragtune.finetuning import DecoderFinetuneEngine

    engine = DecoderFinetuneEngine(sft_dataset, preference_dataset=dpo_pairs, output_dir="runs/decoder")
    print(engine.finetune().format_table())   # validation loss before / after, and the decision
    llm = engine.get_finetuned_model(max_new_tokens=48)   # a LlamaIndex LLM over merged/
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llama_index_ragtune._atomic import atomic_dir
from llama_index_ragtune.finetuning.budget import TrainingBudget
from llama_index_ragtune.finetuning.checkpoints import check_resume_argument, check_weights
from llama_index_ragtune.finetuning.decoder_config import (
    check_lora_config,
    default_dpo_config,
    default_lora_config,
    default_orpo_config,
    default_sft_config,
    on_gpu,
    score_completion_tokens_only,
)
from llama_index_ragtune.finetuning.decoder_data import (
    PREFERENCE_COLUMNS,
    SFT_COLUMNS,
    _check_columns,
    _with_questions,
)
from llama_index_ragtune.finetuning.decoder_stages import PROBE_REPEATS, DecoderStages
from llama_index_ragtune.finetuning.decoder_validation import completion_nll
from llama_index_ragtune.finetuning.output_dir_check import (
    check_apart_from_start_model,
    check_output_dir,
)
from llama_index_ragtune.finetuning.preference_holdout import leave_out_held_out
from llama_index_ragtune.finetuning.promotion import DEFAULT_MARGIN, decide_promotion
from llama_index_ragtune.finetuning.result import FinetuneResult, PeakMemory, process_peak_rss_mb
from llama_index_ragtune.finetuning.training_args_check import (
    check_count,
    check_training_args,
)
from llama_index_ragtune.finetuning.validation_split import (
    split_rows_by_question,
    warn_validation_rows_trained,
)
from llama_index_ragtune.llms import LocalChatLLM
from llama_index_ragtune.models import resolve_model

if TYPE_CHECKING:
    import datasets
    from llama_index.core.llms.llm import LLM
    from peft import LoraConfig
    from trl import SFTConfig

__all__ = [
    "PREFERENCE_COLUMNS",
    "PROBE_REPEATS",
    "SAVE_SECONDS",
    "SFT_COLUMNS",
    "DecoderFinetuneEngine",
    "default_dpo_config",
    "default_lora_config",
    "default_orpo_config",
    "default_sft_config",
    "on_gpu",
    "score_completion_tokens_only",
]

logger = logging.getLogger(__name__)

SAVE_SECONDS = 15.0
"""Seconds kept after training for merging and saving the adapter (a deadline's margin)."""


class DecoderFinetuneEngine(DecoderStages):
    """Fine-tune a causal LM for grounded, cited answers: LoRA SFT, then optional DPO/ORPO.

    Args:
        train_dataset: SFT rows ``prompt`` (system+user messages) and ``completion``
            (the assistant message); extra columns are kept out of the trainers (a
            ``qid`` column keeps one question's rows together when validation is carved,
            and a ``question`` column, or the question read from a grounded prompt, keeps
            twins, the same question under two qids, on one side).
        model: None (bundled SmolLM2-135M-Instruct), a local folder or a hub id.
        args: TRL ``SFTConfig`` for the SFT stage; None builds ``default_args``
            (checkpoints in ``<output_dir>/sft``).
        output_dir: where checkpoints, the adapter, the merged model and the decision go.
        val_dataset: SFT-format rows for validation; None carves ``val_fraction`` of
            the training rows off (by question), at most ``max_val_queries`` of them.
        preference_dataset: optional ``prompt``/``chosen``/``rejected`` rows for stage 2;
            ``finetune()`` leaves out the pairs of validation questions (same ``qid``, or
            same question: a ``question`` column, or the one of a grounded prompt).
        preference_args: ``DPOConfig`` or ``ORPOConfig`` (``trl.experimental.orpo``);
            None builds the defaults of this module.
        lora_config: PEFT ``LoraConfig``; None builds ``default_lora_config()``.
        preference_method: ``"dpo"`` (default) or ``"orpo"``.
        budget: a ``TrainingBudget``: ``max_pairs`` caps the SFT rows (sampled),
            ``minutes`` plans each stage's steps to fit (from a timed step, as does a
            ``train_deadline``, so the learning-rate schedule ends in time) and stops
            each stage when its time is up.
        promotion_margin: how much the validation loss must drop to promote the adapter.
        force_promotion: promote whatever validation says.
        eval_points: validation passes during SFT that pick the best checkpoint.
        device: ``"cpu"``, ``"cuda"``...; None picks cuda when available.
        callbacks: ``transformers.TrainerCallback`` objects for both trainers.
    """

    kind = "decoder"
    default_output_dir = "ragtune-decoder"
    output_folders = ("adapter", "merged", "challenger", "sft-adapter")

    def __init__(
        self,
        train_dataset: datasets.Dataset,
        *,
        model: str | os.PathLike | None = None,
        args: SFTConfig | None = None,
        output_dir: str | os.PathLike | None = None,
        val_dataset: datasets.Dataset | None = None,
        preference_dataset: datasets.Dataset | None = None,
        preference_args: Any | None = None,
        lora_config: LoraConfig | None = None,
        preference_method: Literal["dpo", "orpo"] = "dpo",
        budget: TrainingBudget | None = None,
        promotion_margin: float = DEFAULT_MARGIN,
        force_promotion: bool = False,
        val_fraction: float = 0.1,
        max_val_queries: int = 50,
        eval_points: int = 2,
        device: str | None = None,
        callbacks: list[Any] | None = None,
        show_progress: bool = True,
    ) -> None:
        import torch

        if preference_method not in ("dpo", "orpo"):
            raise ValueError(
                f"DecoderFinetuneEngine: preference_method must be 'dpo' or 'orpo', got {preference_method!r}."
            )
        if budget is not None and not isinstance(budget, TrainingBudget):
            raise TypeError(f"budget must be a TrainingBudget or None, got {type(budget).__name__}")
        eval_points = check_count(type(self).__name__, "eval_points", eval_points, 0, 2)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._root = Path(output_dir or self.default_output_dir)
        self._init_common(
            args,
            None,
            promotion_margin,
            force_promotion,
            val_fraction,
            max_val_queries,
            callbacks,
            show_progress,
        )
        hint_sft = "e.g. GroundedSFTBuilder(...).build(examples)"
        self.train_dataset = _check_columns(train_dataset, SFT_COLUMNS, "train_dataset", hint_sft)
        self.val_dataset = (
            None
            if val_dataset is None
            else _check_columns(val_dataset, SFT_COLUMNS, "val_dataset", hint_sft)
        )
        self.preference_dataset = (
            None
            if preference_dataset is None
            else _check_columns(
                preference_dataset,
                PREFERENCE_COLUMNS,
                "preference_dataset",
                "e.g. PreferenceBuilder().build(contexts)",
            )
        )
        self.base_model = resolve_model(model, kind="decoder")
        self._check_start_model(self.base_model)
        for label, stage_args in (("args", self.args), ("preference_args", preference_args)):
            if stage_args is not None:  # the stages' checkpoints: not among the model's files
                check_apart_from_start_model(
                    f"{type(self).__name__} ({label}.output_dir)",
                    stage_args.output_dir,
                    self.base_model,
                )
        self.preference_method = preference_method
        if preference_args is None:
            preference_args = (
                default_dpo_config(self._root / "dpo", self.device)
                if preference_method == "dpo"
                else default_orpo_config(self._root / "orpo", self.device)
            )
        check_training_args(type(self).__name__, preference_args, "preference_args")
        check_output_dir(type(self).__name__, preference_args.output_dir)
        self.preference_args = preference_args
        self.lora_config = lora_config or default_lora_config()
        check_lora_config(type(self).__name__, self.lora_config)
        self.budget = budget
        self.eval_points = eval_points
        self.model: Any = None
        self.tokenizer: Any = None
        self.sft_trainer: Any = None
        self.preference_trainer: Any = None
        self.timings: dict[str, float] = {}
        self.plan: dict[str, Any] | None = None  # the step plan of a time-limited SFT
        self.preference_plan: dict[str, Any] | None = None  # ... and of its DPO / ORPO
        self._after_training_seconds = 0.0
        # the pairs stage 2 trains on: finetune() leaves out those of validation questions
        self._stage2_pairs: datasets.Dataset | None = self.preference_dataset
        self.preference_pairs_held_out = 0

    # ------------------------------------------------------------------ config

    @classmethod
    def default_args(
        cls, output_dir: str | os.PathLike | None = None, **overrides: Any
    ) -> SFTConfig:
        """TRL ``SFTConfig`` defaults (see ``default_sft_config``) for ``<output_dir>/sft``."""
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        root = Path(output_dir or cls.default_output_dir)
        config = default_sft_config(root / "sft", device)
        # through __init__ (dataclasses.replace): __post_init__ then sets up fsdp=, deepspeed=...
        return dataclasses.replace(config, **overrides) if overrides else config

    def _resolve_args(self, args: Any, output_dir: Any) -> Any:
        from trl import SFTConfig

        if args is None:
            return default_sft_config(self._root / "sft", self.device)
        if not isinstance(args, SFTConfig):
            raise TypeError(
                f"DecoderFinetuneEngine: args must be trl.SFTConfig, got {type(args).__name__}; "
                "build one with DecoderFinetuneEngine.default_args(output_dir, **overrides)"
            )
        return args

    def _args_root(self, args: Any) -> Path:
        return self._root

    # ------------------------------------------------------------------- paths
    @property
    def adapter_dir(self) -> Path:
        return self.output_dir / "adapter"

    @property
    def merged_dir(self) -> Path:
        return self.output_dir / "merged"

    # ---------------------------------------------------------------- validation
    def split_validation(self) -> tuple[datasets.Dataset, datasets.Dataset | None]:
        """``(train, val)`` rows: the given ``val_dataset`` (a warning names training
        rows of its questions), or rows carved off by question."""
        if self.val_dataset is not None:
            warn_validation_rows_trained(self, self.train_dataset, self.val_dataset)
            return self.train_dataset, self.val_dataset
        return split_rows_by_question(
            _with_questions(self.train_dataset),
            self.val_fraction,
            self.max_val_queries,
            self.args.seed,
            owner=type(self).__name__,
        )

    def _validation_loss(self, model: Any, val: datasets.Dataset | None) -> dict[str, float]:
        if val is None:
            return {}
        max_length = getattr(self.args, "max_length", None) or 1024
        return {"loss": completion_nll(model, self.tokenizer, val, max_length=max_length)}

    # ------------------------------------------------ tuning (stages: decoder_stages)
    def finetune(self, resume_from_checkpoint: bool | str | None = None) -> FinetuneResult:
        """SFT, then the preference stage when pairs were given; validate, decide, save.

        Promoted: ``adapter/`` and ``merged/`` hold the tuned model. Kept: they are
        removed, the adapter goes to ``challenger/adapter`` and ``get_finetuned_model()``
        serves the starting model.
        """
        check_resume_argument(resume_from_checkpoint)  # before any scoring
        train, val = self.split_validation()
        self._stage2_pairs = self._pairs_of_training_questions(val)
        before: dict[str, float] = {}
        started = time.perf_counter()
        if val is not None:
            self.tokenizer = None
            base = self._load_base()
            before = self._validation_loss(base, val)
            del base
        # after training: the same validation on the tuned model, then merging and saving
        self._after_training_seconds = time.perf_counter() - started + SAVE_SECONDS
        with PeakMemory() as memory:
            self.train_sft(resume_from_checkpoint, train=train, val=val)
            if self._stage2_pairs is not None:
                self.train_preference(resume_from_checkpoint, pairs=self._stage2_pairs)
        self.broken_weights = self._nonfinite_trained_weights()
        after = self._validation_loss(self.model, val)
        decision = decide_promotion(
            before,
            after,
            "loss",
            self.promotion_margin,
            greater_is_better=False,
            force=self.force_promotion,
            validation_examples=None if val is None else len(val),
        )
        decision = self._final_decision(decision)  # never a diverged (NaN) model
        self._mark_saving(decision)  # a kill while saving: the starting model stays in use
        if decision.promoted:
            self.save()
            if self.is_main_process:
                shutil.rmtree(self.challenger_path, ignore_errors=True)
        else:
            self._save_adapter(self.challenger_path / "adapter")
            if self.is_main_process:
                for folder in (self.adapter_dir, self.merged_dir):
                    shutil.rmtree(folder, ignore_errors=True)
        steps = sum(
            t.state.global_step
            for t in (self.sft_trainer, self.preference_trainer)
            if t is not None
        )
        self.result = FinetuneResult(
            before=before,
            after=after,
            train_seconds=memory.seconds,
            peak_memory_mb=memory.peak_mb,
            process_peak_memory_mb=process_peak_rss_mb(),
            global_step=steps,
            model_path=str(self.merged_dir if decision.promoted else self.base_model),
            decision=decision,
            info={
                "timings": dict(self.timings),
                "train_rows": len(train),
                "val_rows": 0 if val is None else len(val),
                "preference_method": self.preference_method
                if self.preference_trainer is not None
                else None,
                "preference_pairs": 0 if self._stage2_pairs is None else len(self._stage2_pairs),
                "preference_pairs_held_out": self.preference_pairs_held_out,
                "plan": self.plan,
                "preference_plan": self.preference_plan,
                "best_checkpoint": None
                if self.sft_trainer is None
                else self.sft_trainer.state.best_model_checkpoint,
                "challenger_path": None if decision.promoted else str(self.challenger_path),
                "nonfinite_weights": list(self.broken_weights),
            },
        )
        self._write_decision(decision, {"result": self.result.summary()})
        self.result = self._from_main(self.result)  # under DDP: the main process's result
        return self.result

    def _pairs_of_training_questions(self, val: datasets.Dataset | None) -> datasets.Dataset | None:
        """The preference pairs stage 2 may train on: none of a validation question's
        (validation decides promotion, so it must score questions the model never trained
        on); None when there are none."""
        self.preference_pairs_held_out = 0
        if self.preference_dataset is None:
            return None
        kept, held_out = leave_out_held_out(self.preference_dataset, val)
        self.preference_pairs_held_out = held_out
        if held_out:
            logger.info(
                "preference stage: left out %d of %d pairs whose question is held out for "
                "validation",
                held_out,
                len(self.preference_dataset),
            )
        if len(kept) == 0:
            logger.warning(
                "preference stage skipped: all %d preference pairs are of validation questions; "
                "build pairs for the training questions too (e.g. PreferenceBuilder().build("
                "contexts) over every training context)",
                held_out,
            )
            return None
        return kept

    def _training_deadline(self) -> float | None:
        """``train_deadline`` minus the validation, merging and saving that follow training."""
        if self.train_deadline is None:
            return None
        return self.train_deadline - self._after_training_seconds

    # ------------------------------------------------------------------ saving
    def save(self) -> None:
        """Write the LoRA adapter to ``adapter/`` and the merged model to ``merged/`` (both with the tokenizer).

        Merging folds the adapter into the base weights in memory, so the
        engine holds the merged model afterwards. Both folders are written atomically.
        """
        if self.model is None:
            raise RuntimeError("DecoderFinetuneEngine: nothing to save; call finetune() first.")
        if hasattr(self.model, "merge_and_unload"):
            self._save_adapter(self.adapter_dir)
            self.model = self.model.merge_and_unload()
        # TRL turns the KV cache off for training; the saved model is for generation
        self.model.config.use_cache = True
        if not self.is_main_process:
            return
        with atomic_dir(self.merged_dir) as tmp:
            self.model.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            (tmp / "ragtune_training.json").write_text(
                json.dumps(
                    {
                        "base_model": self.base_model,
                        "preference_method": self.preference_method
                        if self.preference_trainer is not None
                        else None,
                        "timings": self.timings,
                    },
                    indent=2,
                )
            )

    def get_finetuned_model(self, **llm_kwargs: Any) -> LLM:
        """The model that won, as a LlamaIndex LLM (``LocalChatLLM``); ``llm_kwargs`` go to it.

        The merged tuned model when it was promoted, else the starting model.
        """
        llm_kwargs.setdefault("device", self.device)
        decision = self.decision
        if decision is not None and not decision.promoted:
            logger.warning("%s; serving the starting model %s", decision.reason, self.base_model)
            return LocalChatLLM(model=str(self.base_model), **llm_kwargs)
        if not (self.merged_dir / "config.json").exists():
            raise RuntimeError(
                f"No merged model in {self.merged_dir}; call finetune() (or save()) before get_finetuned_model()."
            )
        check_weights(self.merged_dir)
        return LocalChatLLM(model=str(self.merged_dir), **llm_kwargs)
