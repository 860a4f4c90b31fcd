"""Loading a local causal LM, or a PEFT/LoRA adapter folder over its base model, for ``LocalChatLLM``.

``model`` is ``None`` (the bundled SmolLM2-135M-Instruct), a local folder or a
hub id (:func:`llama_index_ragtune.models.resolve_model`). A folder holding
``adapter_config.json`` -- what ``DecoderFinetuneEngine`` and PEFT's
``save_pretrained`` write -- loads the base model named there plus the adapter.

Example::

    from llama_index_ragtune.llms.loading import load_causal_lm

    model, tokenizer, name = load_causal_lm(None, device="cpu")   # bundled SmolLM2-135M-Instruct
    tokenizer.chat_template is not None                            # True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llama_index_ragtune.models import load_model, resolve_model

__all__ = [
    "check_device",
    "cpu_has_native_bf16",
    "load_causal_lm",
    "pad_token_id",
    "require_chat_template",
    "stop_token_ids",
    "torch_dtype",
]

_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when the CPU computes bfloat16 natively (x86 ``avx512_bf16`` or ``amx_bf16``).

    There, bfloat16 matmuls run about twice as fast as float32 (training under
    autocast, generation with bfloat16 weights); elsewhere they are emulated
    and slower, so the defaults keep float32. Reads the flags in ``cpuinfo``
    (Linux); False when it cannot tell.

    Example::

        cpu_has_native_bf16()   # e.g. True on AMD Zen 4 / Intel Sapphire Rapids
    """
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(flag in flags for flag in _BF16_CPU_FLAGS)
    except OSError:
        pass
    return False


def torch_dtype(dtype: Any, device: str) -> Any:
    """The ``torch.dtype`` for a dtype name.

    None: float32 on CPU, bfloat16/float16 on GPU. ``"auto"``: the same, except
    bfloat16 on a CPU with native bfloat16 (:func:`cpu_has_native_bf16`).

    Example::

        torch_dtype("bfloat16", "cpu"), torch_dtype(None, "cpu")   # (torch.bfloat16, torch.float32)
    """
    import torch

    if dtype in (None, "auto"):
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if dtype == "auto" and cpu_has_native_bf16() else torch.float32
    if isinstance(dtype, str):
        value = getattr(torch, dtype, None)
        if not isinstance(value, torch.dtype):
            raise ValueError(f"Unknown dtype '{dtype}': use e.g. 'float32', 'bfloat16', 'float16'.")
        return value
    return dtype


def check_device(device: Any, where: str) -> str:
    """``device`` when torch can run a model there, else ``TypeError`` / ``ValueError`` naming it
    (a typo such as ``'gpu'``, CUDA or MPS on a machine without it, the data-less ``'meta'``
    device).

    Example::

        check_device("cpu", "LocalChatLLM")   # 'cpu'
    """
    import torch

    if not isinstance(device, (str, torch.device)):
        raise TypeError(
            f"{where}: device must be a torch device name such as 'cpu' or 'cuda', got "
            f"{type(device).__name__} {device!r}."
        )
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(
            f"{where}: device={device!r} is not a torch device ({exc}); use e.g. 'cpu', 'cuda', "
            "'cuda:0' or None to pick one."
        ) from None
    if parsed.type == "meta":
        raise ValueError(f"{where}: device='meta' holds no weights; use e.g. 'cpu' or 'cuda'.")
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (parsed.index is not None and parsed.index >= count):
            raise ValueError(
                f"{where}: device={device!r} is not available here ({count} CUDA devices); "
                "use 'cpu' or None to pick one."
            )
    elif parsed.type != "cpu" and not _accelerator_available(parsed):
        raise ValueError(
            f"{where}: device={device!r} is not available here (this machine has: "
            f"{', '.join(devices_here())}); use one of those, or None to pick the best available."
        )
    return str(device)


def _accelerator_available(device: Any) -> bool:
    """Whether torch can place a tensor on ``device`` (not CPU or CUDA) on this machine."""
    import torch

    if device.type == "mps":
        backend = getattr(torch.backends, "mps", None)
        return bool(backend is not None and backend.is_available()) and device.index in (None, 0)
    module = getattr(torch, device.type, None)  # xpu, npu, hpu, ... when torch has them
    if callable(getattr(module, "is_available", None)):
        try:
            count = module.device_count() if module.is_available() else 0
        except Exception:  # noqa: BLE001 - a backend without devices may raise anything
            count = 0
        return count > 0 and (device.index is None or device.index < count)
    try:
        torch.empty(0, device=device)
    except Exception:  # noqa: BLE001 - torch raises RuntimeError, AssertionError, ...
        return False
    return True


def devices_here() -> list[str]:
    """The device names this machine has, for a message.

    Example::

        devices_here()   # ['cpu'] on a machine without accelerators
    """
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    backend = getattr(torch.backends, "mps", None)
    if backend is not None and backend.is_available():
        names.append("mps")
    return names


def require_chat_template(tokenizer: Any, name: str) -> None:
    """A clear error when ``tokenizer`` has no chat template (a base model, not a chat model)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"The tokenizer of '{name}' has no chat template. LocalChatLLM needs an instruct/chat "
            "model; set `tokenizer.chat_template` and pass `hf_model=`/`tokenizer=` for a base model."
        )


def load_causal_lm(
    model: str | None,
    *,
    device: str,
    dtype: Any = None,
    merge_adapter: bool = True,
    tokenizer: Any | None = None,
) -> tuple[Any, Any, str]:
    """Load ``(hf_model, tokenizer, resolved name)``, the model moved to ``device``.

    An adapter folder loads its base model plus the adapter (merged into the base
    weights when ``merge_adapter``); its tokenizer comes from the adapter folder when
    saved there, else from the base model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = resolve_model(model, kind="decoder")
    weights_dtype = torch_dtype(dtype, device)
    adapter_cfg = Path(name) / "adapter_config.json"
    if adapter_cfg.is_file():
        try:
            from peft import PeftModel
        except ImportError as exc:  # pragma: no cover - peft is a core dependency
            raise ImportError(
                f"Loading the adapter folder '{name}' needs peft: pip install peft"
            ) from exc
        base_id = json.loads(adapter_cfg.read_text()).get("base_model_name_or_path")
        if not base_id:
            raise ValueError(
                f"{adapter_cfg} has no 'base_model_name_or_path'; load the base model yourself "
                "and pass `hf_model=PeftModel.from_pretrained(base, folder)` and `tokenizer=`."
            )
        base_name = resolve_model(base_id, kind="decoder")
        # Merge in float32: a small LoRA delta added to half-precision weights is rounded away.
        load_dtype = torch.float32 if merge_adapter else weights_dtype
        base = load_model(AutoModelForCausalLM.from_pretrained, base_name, dtype=load_dtype)
        hf_model = load_model(PeftModel.from_pretrained, base, name)
        if merge_adapter:
            hf_model = hf_model.merge_and_unload().to(weights_dtype)
        has_tokenizer = (Path(name) / "tokenizer_config.json").is_file()
        tokenizer_source = name if has_tokenizer else base_name
    else:
        hf_model = load_model(AutoModelForCausalLM.from_pretrained, name, dtype=weights_dtype)
        tokenizer_source = name
    hf_model.to(device)
    return hf_model, tokenizer or AutoTokenizer.from_pretrained(tokenizer_source), name


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids that end an answer: the model's and the tokenizer's end of sequence, and the
    end-of-turn tokens of common chat templates that the vocabulary holds."""
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (gen_eos, tokenizer.eos_token_id):
        if value is None:
            continue
        ids.extend(value if isinstance(value, (list, tuple)) else [value])
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if (
            isinstance(tid, int)
            and tid != tokenizer.unk_token_id
            and token in tokenizer.get_vocab()
        ):
            ids.append(tid)
    return sorted(set(ids))


def pad_token_id(model: Any, tokenizer: Any) -> int:
    """The id that fills padded positions (masked out, so any id works): the tokenizer's pad
    token, else its end of sequence, else the model's; the tokenizer is left as it is (it
    may be shared with a trainer, whose collator would then mask every end of turn)."""
    config = getattr(model, "generation_config", None)
    for value in (
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        getattr(config, "pad_token_id", None),
        getattr(config, "eos_token_id", None),
    ):
        value = value[0] if isinstance(value, (list, tuple)) and value else value
        if isinstance(value, int):
            return value
    return 0
