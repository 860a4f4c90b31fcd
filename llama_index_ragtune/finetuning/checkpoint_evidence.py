"""What a checkpoint written before ``ragtune_run.json`` existed still says about its model.

Checkpoints now record the engine and the starting model's fingerprint
(``checkpoints.RUN_MARKER``). An older checkpoint lacks that file, but its own files
still describe the model it holds: the saved ``config.json`` (architecture, model type,
hidden size, vocabulary), sentence-transformers' ``config_sentence_transformers.json``
(a bi-encoder or a cross-encoder) and a LoRA run's ``adapter_config.json`` (its base
model, rank) and adapter weights' shapes. ``legacy_mismatch`` compares them with the
run about to resume (``model_signature``): a checkpoint clearly of another engine's
kind of model, or of another model, is refused; one that matches can still not be
proved to come from this engine and starting model, which callers say in a warning.

Example::

    from llama_index_ragtune.finetuning.checkpoint_evidence import legacy_mismatch

    legacy_mismatch("runs/old/checkpoint-50", run["model"])   # "it holds a CrossEncoder ..." or None
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_ST_CONFIG = "config_sentence_transformers.json"
_ADAPTER_CONFIG = "adapter_config.json"
_ADAPTER_WEIGHTS = "adapter_model.safetensors"
_CONFIG_FIELDS = ("model_type", "hidden_size", "vocab_size")
PEFT = "peft adapter"


def _hf_model(model: Any) -> Any:
    """The first Hugging Face ``PreTrainedModel`` inside ``model`` (itself, a
    sentence-transformers module's ``auto_model``, a PEFT model's base), or None."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - the engines need transformers
        return None
    modules = model.modules() if hasattr(model, "modules") else ()
    return next((m for m in modules if isinstance(m, PreTrainedModel)), None)


def _model_format(model: Any) -> str:
    if getattr(model, "peft_config", None):
        return PEFT
    for cls in type(model).__mro__:
        if cls.__module__.startswith("sentence_transformers") and cls.__name__ in {
            "SentenceTransformer",
            "CrossEncoder",
        }:
            return cls.__name__
    return "transformers"


def model_signature(model: Any) -> dict[str, Any]:
    """What a checkpoint's files can be compared with: the model's format (a
    ``SentenceTransformer``, a ``CrossEncoder``, a PEFT adapter or a plain transformers
    model), its Hugging Face architecture, model type, hidden size and vocabulary size,
    and for an adapter the shapes of the weights it trains.

    Example::

        model_signature(SentenceTransformer("runs/encoder/final"))
        # {'format': 'SentenceTransformer', 'architecture': 'BertModel', 'hidden_size': 384, ...}
    """
    signature: dict[str, Any] = {"format": _model_format(model)}
    hf = _hf_model(model)
    if hf is not None:
        signature["architecture"] = type(hf).__name__
        config = getattr(hf, "config", None)
        for field in _CONFIG_FIELDS:
            value = getattr(config, field, None)
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                signature[field] = value
    if signature["format"] == PEFT:
        shapes = {
            tuple(p.shape)
            for p in model.parameters()
            if p.requires_grad and p.numel() > 0  # a sharded (ZeRO-3) weight has no shape here
        }
        signature["adapter_shapes"] = sorted(list(s) for s in shapes)
    return signature


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _adapter_shapes(path: Path) -> list[list[int]] | None:
    """The distinct tensor shapes an adapter's safetensors header lists (None: unreadable)."""
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 0 < length <= 100_000_000:
                return None
            header = json.loads(handle.read(length))
        shapes = {
            tuple(int(n) for n in info["shape"])
            for name, info in header.items()
            if name != "__metadata__"
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return sorted(list(s) for s in shapes)


def checkpoint_signature(folder: str | os.PathLike) -> dict[str, Any]:
    """What checkpoint ``folder``'s own files say about the model it holds (the fields of
    ``model_signature`` it can tell; a LoRA checkpoint's from its base model's
    ``config.json`` when that folder is still there)."""
    folder = Path(folder)
    signature: dict[str, Any] = {}
    adapter = _read_json(folder / _ADAPTER_CONFIG)
    config = _read_json(folder / "config.json")
    if isinstance(adapter, dict):
        signature["format"] = PEFT
        base = adapter.get("base_model_name_or_path")
        if isinstance(base, str) and base and config is None:
            config = _read_json(Path(base) / "config.json")
            if isinstance(config, dict):
                signature["base"] = base
        shapes = _adapter_shapes(folder / _ADAPTER_WEIGHTS)
        if shapes is not None:
            signature["adapter_shapes"] = shapes
    else:
        st = _read_json(folder / _ST_CONFIG)
        kind = st.get("model_type") if isinstance(st, dict) else None
        if kind in {"SentenceTransformer", "CrossEncoder"}:
            signature["format"] = kind
        elif isinstance(config, dict) and st is None:
            signature["format"] = "transformers"
    if isinstance(config, dict):
        architectures = config.get("architectures")
        if isinstance(architectures, list) and len(architectures) == 1:
            signature["architecture"] = architectures[0]
        for field in _CONFIG_FIELDS:
            value = config.get(field)
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                signature[field] = value
    return signature


_LABELS = {
    "format": "kind of model",
    "architecture": "architecture",
    "model_type": "model type",
    "hidden_size": "hidden size",
    "vocab_size": "vocabulary size",
    "adapter_shapes": "adapter weight shapes",
}


def legacy_mismatch(folder: str | os.PathLike, expected: dict[str, Any] | None) -> str | None:
    """Why checkpoint ``folder`` (one without ``RUN_MARKER``) clearly holds another model
    than ``expected`` (``model_signature`` of the run about to resume), or None when
    nothing its files say disagrees (which does not prove it is this run's)."""
    if not expected:
        return None
    found = checkpoint_signature(folder)
    for field, label in _LABELS.items():
        mine, theirs = expected.get(field), found.get(field)
        if mine is None or theirs is None or mine == theirs:
            continue
        what = (
            "it holds another kind of model"
            if field == "format"
            else f"its model has another {label}"
        )
        where = f" (base model {found['base']})" if "base" in found else ""
        return f"{what}{where}: {_show(theirs)}, this run's {_show(mine)}"
    return None


def _show(value: Any) -> str:
    if isinstance(value, list) and len(value) > 4:
        return f"{value[:4]} and {len(value) - 4} more"
    return str(value)


def described(expected: dict[str, Any] | None) -> str:
    """``expected`` in a few words for a log line (``"CrossEncoder BertForSequenceClassification,
    hidden size 32, vocabulary 30522"``)."""
    if not expected:
        return "an unknown model"
    parts = [f"{expected.get('format', '')} {expected.get('architecture', '')}".strip()]
    if "hidden_size" in expected:
        parts.append(f"hidden size {expected['hidden_size']}")
    if "vocab_size" in expected:
        parts.append(f"vocabulary {expected['vocab_size']}")
    return ", ".join(p for p in parts if p)


def older_adapter_fits(folder: str | os.PathLike, base: Any) -> bool:
    """Whether a finished LoRA adapter in ``folder``, saved before it recorded its starting
    model, may be loaded onto ``base``: False (with a warning) when its base model's
    ``config.json`` names another architecture, hidden size or vocabulary; True with a
    warning that it could not be fully checked otherwise."""
    expected = {k: v for k, v in model_signature(base).items() if k not in {"format"}}
    why = legacy_mismatch(folder, expected)
    if why is not None:
        logger.warning(
            "%s holds a finished SFT of another model (%s); not reused: SFT runs again "
            "from the start",
            folder,
            why,
        )
        return False
    logger.warning(
        "%s holds a finished SFT saved before it recorded its starting model: it could not be "
        "fully checked (its files match %s); reusing it. If it is another model's, remove "
        "the folder or pass resume_from_checkpoint=False",
        folder,
        described(expected),
    )
    return True
