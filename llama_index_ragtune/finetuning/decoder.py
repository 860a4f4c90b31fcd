"""``DecoderFinetuneEngine``: grounded SFT with LoRA, then DPO (or ORPO), with TRL's trainers.

Stage 1 runs TRL's ``SFTTrainer`` on prompt-completion conversations (e.g.
``GroundedSFTBuilder.build``): for that format TRL computes the loss on the
completion only (``SFTConfig.completion_only_loss=None`` resolves to True).
The model gets a PEFT LoRA adapter (``LoraConfig``; default r=16, alpha=32,
all linear layers). Stage 2, when preference pairs are given (e.g.
``PreferenceBuilder.build``), trains the same adapter further with TRL's
``DPOTrainer``; its reference model is the SFT model itself (TRL copies the
SFT adapter into a frozen ``ref`` adapter). ``preference_method="orpo"`` uses
``trl.experimental.orpo.ORPOTrainer`` instead (reference-free; experimental
upstream).

Upstream config objects pass through untouched (``SFTConfig``, ``DPOConfig``,
``ORPOConfig``, ``LoraConfig``); when one is None a CPU-friendly default is
built (see ``default_sft_config`` and friends). Layout of ``output_dir``::

    sft/            SFT checkpoints (resume with resume_from_checkpoint=True)
    sft-adapter/    the LoRA adapter after SFT (a resumed run skips SFT when present)
    dpo/ | orpo/    preference-stage checkpoints
    adapter/        the final LoRA adapter (+ tokenizer): LocalChatLLM loads it as is
    merged/         base weights with the adapter merged in (+ tokenizer)

Example::

    from llama_index_ragtune.finetuning import DecoderFinetuneEngine

    engine = DecoderFinetuneEngine(sft_dataset, preference_dataset=dpo_pairs, output_dir="runs/decoder")
    engine.finetune()
    llm = engine.get_finetuned_model(max_new_tokens=48)   # a LlamaIndex LLM over merged/
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import datasets
    from llama_index.core.llms.llm import LLM
    from peft import LoraConfig
    from trl import DPOConfig, SFTConfig

logger = logging.getLogger(__name__)

SFT_COLUMNS = ("prompt", "completion")
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")
_SFT_DONE = "sft_complete.json"


def _on_gpu(device: str) -> bool:
    return device.startswith("cuda")


def _bf16_default(device: str) -> bool:
    """bf16 mixed precision where the hardware computes it natively (GPU, or a CPU with
    ``avx512_bf16``/``amx_bf16``, where it roughly halves a training step)."""
    import torch

    from llama_index_ragtune.llms.loading import cpu_has_native_bf16

    if _on_gpu(device):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


@contextlib.contextmanager
def _score_completion_tokens_only(device: str) -> Iterator[None]:
    """On CPU, let TRL's fused LM head score only the positions that carry a label.

    TRL projects hidden states through the 49k-token LM head in tiles. On
    CUDA/XPU it tiles only the labelled (completion) positions; elsewhere it
    scores every position, so that tile shapes stay static for graph compilers.
    Eager CPU training has no such constraint, and the prompt is most of a
    grounded example: scoring the completion only gives the same loss and
    gradients at about half the step time. A no-op on GPUs and when TRL's
    internals differ from the version this was written for.
    """
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:  # pragma: no cover - trl is a core dependency
        yield
        return
    original = getattr(trl_utils, "_use_triton", None)
    if _on_gpu(device) or original is None:
        yield
        return
    trl_utils._use_triton = lambda d: d.type == "cpu" or original(d)
    try:
        yield
    finally:
        trl_utils._use_triton = original


def _common_defaults(device: str) -> dict[str, Any]:
    from transformers import TrainingArguments

    # TRL turns activation checkpointing on by default; small models on CPU want speed
    # over memory. transformers 5 renamed the flag (the old name warns).
    fields = TrainingArguments.__dataclass_fields__
    checkpointing = (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else "gradient_checkpointing"
    )
    bf16 = _bf16_default(device)
    return {
        checkpointing: False,
        "num_train_epochs": 1,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.05,
        "logging_steps": 10,
        "save_strategy": "steps",
        "save_steps": 50,
        "save_total_limit": 2,
        "bf16": bf16,
        "use_cpu": not _on_gpu(device),
        "dataloader_pin_memory": _on_gpu(device),
        "report_to": "none",
        "seed": 0,
    }


def default_sft_config(output_dir: str | Path, device: str = "cpu") -> SFTConfig:
    """SFT defaults for LoRA on a small model: lr 2e-4, batch 2 x 2 accumulation, max_length 1024.

    bf16 mixed precision where the hardware has it natively (see ``_bf16_default``).
    Batches stay small to bound activation memory on CPU.
    """
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        learning_rate=2e-4,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_length=1024,
        **_common_defaults(device),
    )


def default_dpo_config(output_dir: str | Path, device: str = "cpu") -> DPOConfig:
    """DPO defaults for a LoRA adapter: lr 5e-5, beta 0.1, 1 pair x 4 accumulation, max_length 1024.

    The loss is DPO's sigmoid loss plus the NLL of the chosen answer (``loss_type=
    ["sigmoid", "sft"]``, as in RPO): DPO alone may lower both answers' likelihoods
    and drift towards the fixed refusal sentence, the one target shared by many pairs.
    """
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(output_dir),
        learning_rate=5e-5,
        beta=0.1,
        loss_type=["sigmoid", "sft"],
        per_device_train_batch_size=1,
        gradient_accumulation_steps=4,
        max_length=1024,
        **_common_defaults(device),
    )


def default_orpo_config(output_dir: str | Path, device: str = "cpu") -> Any:
    """ORPO defaults (``trl.experimental.orpo.ORPOConfig``): lr 5e-5, beta 0.1, 1 pair x 4 accumulation."""
    from trl.experimental.orpo import ORPOConfig

    return ORPOConfig(
        output_dir=str(output_dir),
        learning_rate=5e-5,
        beta=0.1,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=4,
        max_length=1024,
        remove_unused_columns=False,
        **_common_defaults(device),
    )


def default_lora_config() -> LoraConfig:
    """LoRA r=16, alpha=32 on every linear layer (q,k,v,o,gate,up,down for Llama-style), no dropout.

    LoRA dropout (PEFT's default is 0 too) adds about a third to a CPU training step.
    """
    from peft import LoraConfig

    return LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def _check_columns(dataset: Any, needed: tuple[str, ...], what: str, hint: str) -> datasets.Dataset:
    import datasets

    if isinstance(dataset, list):
        dataset = datasets.Dataset.from_list(dataset)
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(
            f"DecoderFinetuneEngine: {what} must be a datasets.Dataset, got {type(dataset).__name__}."
        )
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"DecoderFinetuneEngine: {what} lacks the columns {missing} (it has {dataset.column_names}). "
            f"Expected TRL's conversational {'/'.join(needed)} format, {hint}."
        )
    if len(dataset) == 0:
        raise ValueError(f"DecoderFinetuneEngine: {what} is empty.")
    # Metadata columns (qid, source ids...) stay out of the trainers' collators.
    return dataset.select_columns(list(needed))


class DecoderFinetuneEngine:
    """Fine-tune a causal LM for grounded, cited answers: LoRA SFT, then optional DPO/ORPO.

    Args:
        train_dataset: SFT rows ``prompt`` (system+user messages) and ``completion``
            (the assistant message); extra columns are ignored.
        base_model: None (bundled SmolLM2-135M-Instruct), a local folder or a hub id.
        output_dir: where checkpoints, the adapter and the merged model go.
        preference_dataset: optional ``prompt``/``chosen``/``rejected`` rows for stage 2.
        eval_dataset: optional SFT-format rows evaluated by the SFT trainer.
        sft_config / dpo_config / orpo_config / lora_config: upstream config
            objects; None builds the defaults of this module.
        preference_method: ``"dpo"`` (default) or ``"orpo"``.
        device: ``"cpu"``, ``"cuda"``...; None picks cuda when available.
        callbacks: ``transformers.TrainerCallback`` objects for both trainers.
    """

    def __init__(
        self,
        train_dataset: datasets.Dataset,
        base_model: str | Path | None = None,
        output_dir: str | Path = "ragtune-decoder",
        preference_dataset: datasets.Dataset | None = None,
        eval_dataset: datasets.Dataset | None = None,
        sft_config: SFTConfig | None = None,
        dpo_config: DPOConfig | None = None,
        orpo_config: Any | None = None,
        lora_config: LoraConfig | None = None,
        preference_method: Literal["dpo", "orpo"] = "dpo",
        device: str | None = None,
        callbacks: list[Any] | None = None,
    ) -> None:
        import torch

        from llama_index_ragtune.models import resolve_model

        if preference_method not in ("dpo", "orpo"):
            raise ValueError(
                f"DecoderFinetuneEngine: preference_method must be 'dpo' or 'orpo', got {preference_method!r}."
            )
        hint_sft = "e.g. GroundedSFTBuilder(...).build(examples)"
        self.train_dataset = _check_columns(train_dataset, SFT_COLUMNS, "train_dataset", hint_sft)
        self.eval_dataset = (
            None
            if eval_dataset is None
            else _check_columns(eval_dataset, SFT_COLUMNS, "eval_dataset", hint_sft)
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
        self.base_model = resolve_model(base_model, kind="decoder")
        self.output_dir = Path(output_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.preference_method = preference_method
        self.sft_config = sft_config or default_sft_config(self.output_dir / "sft", self.device)
        if preference_method == "dpo":
            self.preference_config = dpo_config or default_dpo_config(
                self.output_dir / "dpo", self.device
            )
        else:
            self.preference_config = orpo_config or default_orpo_config(
                self.output_dir / "orpo", self.device
            )
        self.lora_config = lora_config or default_lora_config()
        self.callbacks = list(callbacks or [])
        self.model: Any = None
        self.tokenizer: Any = None
        self.sft_trainer: Any = None
        self.preference_trainer: Any = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------- paths
    @property
    def sft_adapter_dir(self) -> Path:
        return self.output_dir / "sft-adapter"

    @property
    def adapter_dir(self) -> Path:
        return self.output_dir / "adapter"

    @property
    def merged_dir(self) -> Path:
        return self.output_dir / "merged"

    # ----------------------------------------------------------------- loading
    def _load_base(self) -> Any:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # GPU bf16 training holds bf16 weights; on CPU, bf16 is autocast over float32 weights.
        bf16_weights = getattr(self.sft_config, "bf16", False) and _on_gpu(self.device)
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
        return AutoModelForCausalLM.from_pretrained(self.base_model, dtype=dtype)

    @staticmethod
    def _resume_arg(resume: bool | str | None, output_dir: str) -> bool | str | None:
        """``True`` resumes from the last checkpoint when there is one, else starts fresh."""
        if resume is True:
            from transformers.trainer_utils import get_last_checkpoint

            folder = Path(output_dir)
            return get_last_checkpoint(str(folder)) if folder.is_dir() else None
        return resume or None

    # ---------------------------------------------------------------- training
    def train_sft(self, resume_from_checkpoint: bool | str | None = None) -> None:
        """Stage 1: LoRA SFT on the completion tokens; saves ``sft-adapter/``.

        With ``resume_from_checkpoint=True`` and a finished ``sft-adapter/``,
        the adapter is loaded and SFT is skipped.
        """
        from peft import PeftModel
        from trl import SFTTrainer

        if resume_from_checkpoint and (self.sft_adapter_dir / _SFT_DONE).exists():
            logger.info("SFT already finished in %s; loading its adapter.", self.sft_adapter_dir)
            self.model = PeftModel.from_pretrained(
                self._load_base(), str(self.sft_adapter_dir), is_trainable=True
            )
            return
        start = time.perf_counter()
        self.sft_trainer = SFTTrainer(
            model=self._load_base(),
            args=self.sft_config,
            train_dataset=self.train_dataset,
            eval_dataset=self.eval_dataset,
            processing_class=self.tokenizer,
            peft_config=self.lora_config,
            callbacks=self.callbacks or None,
        )
        with _score_completion_tokens_only(self.device):
            self.sft_trainer.train(
                resume_from_checkpoint=self._resume_arg(
                    resume_from_checkpoint, self.sft_config.output_dir
                )
            )
        self.model = self.sft_trainer.model
        self.timings["sft_seconds"] = time.perf_counter() - start
        self._save_adapter(self.sft_adapter_dir)
        (self.sft_adapter_dir / _SFT_DONE).write_text(
            json.dumps({"steps": self.sft_trainer.state.global_step})
        )

    def train_preference(self, resume_from_checkpoint: bool | str | None = None) -> None:
        """Stage 2: DPO (reference = the SFT model) or ORPO on ``preference_dataset``."""
        if self.preference_dataset is None:
            raise ValueError(
                "DecoderFinetuneEngine: no preference_dataset was given; build one with PreferenceBuilder."
            )
        if self.model is None:
            raise RuntimeError("DecoderFinetuneEngine: run train_sft() before train_preference().")
        start = time.perf_counter()
        if self.preference_method == "dpo":
            from trl import DPOTrainer as Trainer
        else:
            from trl.experimental.orpo import ORPOTrainer as Trainer
        self.preference_trainer = Trainer(
            model=self.model,
            args=self.preference_config,
            train_dataset=self.preference_dataset,
            processing_class=self.tokenizer,
            callbacks=self.callbacks or None,
        )
        with _score_completion_tokens_only(self.device):
            self.preference_trainer.train(
                resume_from_checkpoint=self._resume_arg(
                    resume_from_checkpoint, self.preference_config.output_dir
                )
            )
        self.model = self.preference_trainer.model
        if "ref" in getattr(self.model, "peft_config", {}):
            self.model.delete_adapter("ref")  # DPO's frozen copy of the SFT adapter
        self.timings[f"{self.preference_method}_seconds"] = time.perf_counter() - start

    def finetune(self, resume_from_checkpoint: bool | str | None = None) -> None:
        """SFT, then the preference stage when pairs were given, then save ``adapter/`` and ``merged/``."""
        self.train_sft(resume_from_checkpoint)
        if self.preference_dataset is not None:
            self.train_preference(resume_from_checkpoint)
        self.save()

    # ------------------------------------------------------------------ saving
    def _save_adapter(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))

    def save(self) -> None:
        """Write the LoRA adapter to ``adapter/`` and the merged model to ``merged/`` (both with the tokenizer).

        Merging folds the adapter into the base weights in memory, so the
        engine holds the merged model afterwards.
        """
        if self.model is None:
            raise RuntimeError("DecoderFinetuneEngine: nothing to save; call finetune() first.")
        if hasattr(self.model, "merge_and_unload"):
            self._save_adapter(self.adapter_dir)
            self.model = self.model.merge_and_unload()
        self.merged_dir.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(self.merged_dir))
        self.tokenizer.save_pretrained(str(self.merged_dir))
        (self.merged_dir / "ragtune_training.json").write_text(
            json.dumps(
                {
                    "base_model": self.base_model,
                    "preference_method": self.preference_method
                    if self.preference_dataset is not None
                    else None,
                    "timings": self.timings,
                },
                indent=2,
            )
        )

    def get_finetuned_model(self, **llm_kwargs: Any) -> LLM:
        """The merged model as a LlamaIndex LLM (``LocalChatLLM``); ``llm_kwargs`` go to its constructor."""
        from llama_index_ragtune.llms import LocalChatLLM

        if not (self.merged_dir / "config.json").exists():
            raise RuntimeError(
                f"No merged model in {self.merged_dir}; call finetune() (or save()) before get_finetuned_model()."
            )
        llm_kwargs.setdefault("device", self.device)
        return LocalChatLLM(model=str(self.merged_dir), **llm_kwargs)


def _register_with_llama_index_finetuning() -> None:
    """Make the engine a virtual subclass of llama-index-finetuning's ``BaseLLMFinetuneEngine``.

    The package's ``__init__`` imports every provider (OpenAI, Mistral...) and
    can fail on one of them; ``types`` is loaded before that and stays in
    ``sys.modules``, so the registration works either way.
    """
    import importlib.util
    import warnings

    try:
        if importlib.util.find_spec("llama_index.finetuning") is None:
            return
    except (ImportError, ValueError):
        return
    base = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from llama_index.finetuning.types import BaseLLMFinetuneEngine as base
        except Exception:  # noqa: BLE001 - a broken optional provider must not break this import
            module = sys.modules.get("llama_index.finetuning.types")
            base = getattr(module, "BaseLLMFinetuneEngine", None)
    if base is not None:
        base.register(DecoderFinetuneEngine)


_register_with_llama_index_finetuning()
