"""Defaults of the decoder engine: TRL ``SFTConfig`` / ``DPOConfig`` / ``ORPOConfig`` and PEFT ``LoraConfig``.

CPU-friendly recipes for LoRA on a small chat model, and the CPU speed-up that
lets TRL's fused LM head score only the completion tokens. Upstream config
objects are returned untouched by anything else: pass your own to
``DecoderFinetuneEngine`` to change any field.

Example::

    from llama_index_ragtune.finetuning.decoder_config import default_lora_config, default_sft_config

    sft = default_sft_config("runs/decoder/sft")       # lr 2e-4, batch 2 x 2, max_length 1024
    lora = default_lora_config()                       # r=16, alpha=32, all linear layers
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.llms.loading import cpu_has_native_bf16

if TYPE_CHECKING:
    from peft import LoraConfig
    from trl import DPOConfig, SFTConfig


def on_gpu(device: str) -> bool:
    return device.startswith("cuda")


def bf16_default(device: str) -> bool:
    """bf16 mixed precision where the hardware computes it natively (GPU, or a CPU with
    ``avx512_bf16``/``amx_bf16``, where it roughly halves a training step)."""
    import torch

    if on_gpu(device):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


@contextlib.contextmanager
def score_completion_tokens_only(device: str) -> Iterator[None]:
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
    if on_gpu(device) or original is None:
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
    bf16 = bf16_default(device)
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
        "use_cpu": not on_gpu(device),
        "dataloader_pin_memory": on_gpu(device),
        "report_to": "none",
        "seed": 0,
    }


def default_sft_config(output_dir: str | Path, device: str = "cpu") -> SFTConfig:
    """SFT defaults for LoRA on a small model: lr 2e-4, batch 2 x 2 accumulation, max_length 1024.

    bf16 mixed precision where the hardware has it natively (see ``bf16_default``).
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


def check_lora_config(owner: str, config: Any) -> None:
    """``TypeError`` / ``ValueError`` naming ``lora_config.<field>`` when the adapter's rank is
    not a whole number >= 1, its alpha not a finite number > 0, or its dropout outside
    [0, 1): peft accepts them all, and the run then failed when the adapter was built (after
    the "before" loss) or trained NaN weights (a NaN alpha).

    Example::

        check_lora_config("DecoderFinetuneEngine", default_lora_config())
    """
    import math
    import numbers

    from llama_index_ragtune.finetuning.training_args_check import check_count

    if not hasattr(config, "r"):
        raise TypeError(
            f"{owner}: lora_config must be a peft LoraConfig (e.g. default_lora_config()), got "
            f"{type(config).__name__}"
        )
    check_count(owner, "lora_config.r", config.r, 1, 16)
    for field, low, high, example in (("lora_alpha", 0, None, 32), ("lora_dropout", 0, 1, 0.05)):
        value = getattr(config, field, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"{owner}: lora_config.{field} must be a number (e.g. {example}), got "
                f"{type(value).__name__} {value!r}"
            )
        ok = math.isfinite(value) and (value > low if high is None else low <= value < high)
        if not ok:
            rule = f"> {low}" if high is None else f"in [{low}, {high})"
            raise ValueError(
                f"{owner}: lora_config.{field} must be a finite number {rule} (e.g. {example}), "
                f"got {value!r}"
            )
