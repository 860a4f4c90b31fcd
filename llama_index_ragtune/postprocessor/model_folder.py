"""Checks that a cross-encoder folder or hub id is usable, before any weights are loaded.

``CrossEncoderRerank`` calls :func:`resolve_model_path` when it is built, so a wrong
path fails there (naming it) instead of at the first query:

* a missing path or a file: ``FileNotFoundError``;
* a folder without ``config.json``, weights or tokenizer files: ``FileNotFoundError``
  naming what is missing; an unreadable ``config.json`` or a truncated
  ``model.safetensors`` (header and size checked, cheap): ``ValueError``;
* a bi-encoder folder (a sentence-transformers model with pooling, or a config whose
  architecture is not ``*ForSequenceClassification``): ``ValueError`` (CrossEncoder would
  silently score with an untrained head);
* a hub id that is not in the local cache while downloads are off: ``OSError``.

Example::

    from llama_index_ragtune.postprocessor.model_folder import resolve_model_path

    resolve_model_path("runs/reranker")     # absolute path of a checked folder
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["NO_MODEL_MESSAGE", "check_cross_encoder_folder", "resolve_model_path"]

NO_MODEL_MESSAGE = (
    "CrossEncoderRerank needs a cross-encoder: no pretrained cross-encoder ships offline with "
    "llama-index-ragtune. Train one on your data with "
    "`RerankerFinetuneEngine(...).finetune()` (or `ragtune train reranker`) and pass the output "
    "folder, or, with internet access, pass a hub id such as "
    "'cross-encoder/ms-marco-MiniLM-L6-v2'."
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FOLDER_FILES = "config.json, the weights and the tokenizer files that CrossEncoder.save (or RerankerFinetuneEngine) writes"
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "onnx",
    "openvino",
)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def resolve_model_path(model: Any) -> str:
    """Check and expand a local folder; check a hub id against the cache when offline.

    Example::

        resolve_model_path("~/runs/reranker")    # '/home/me/runs/reranker'
    """
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            "CrossEncoderRerank model must be a folder path, a hub id or a loaded CrossEncoder, "
            f"got {type(model).__name__}"
        )
    text = os.fspath(model)
    if not isinstance(text, str) or not text.strip() or "\x00" in text:
        raise ValueError(f"CrossEncoderRerank model {text!r} is not a usable folder path or hub id")
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(
                f"Cross-encoder path {text!r} is a file; pass the folder written by CrossEncoder.save "
                "(config.json, weights, tokenizer)."
            )
        check_cross_encoder_folder(path.resolve())
        return str(path.resolve())
    if text.startswith((".", "/", "~")) or "\\" in text or not _HUB_ID.match(text):
        raise FileNotFoundError(
            f"Cross-encoder folder {text!r} does not exist. Pass the folder written by "
            "CrossEncoder.save / RerankerFinetuneEngine, or a hub id such as "
            "'cross-encoder/ms-marco-MiniLM-L6-v2'."
        )
    _check_hub_id(text)
    return text


def _check_hub_id(repo_id: str) -> None:
    """Offline, a hub id must already be in the local cache (checked now, not at the first query)."""
    from huggingface_hub import constants, try_to_load_from_cache

    offline = constants.HF_HUB_OFFLINE or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        check_cross_encoder_folder(Path(cached).parent)
    elif offline:
        raise OSError(
            f"Cross-encoder {repo_id!r} is not a local folder and is not in the Hugging Face cache, "
            "and downloads are off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE). " + NO_MODEL_MESSAGE
        )


def check_cross_encoder_folder(path: Path) -> None:
    """Refuse a folder that is not a loadable cross-encoder, naming what is missing."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is not a cross-encoder folder: expected {_FOLDER_FILES}; "
            "config.json is missing"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config_path} is not valid JSON ({exc}); save the model again") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} is not a model config (not a JSON object)")
    if not any((path / name).exists() for name in _WEIGHT_FILES):
        raise FileNotFoundError(
            f"{str(path)!r} is not a cross-encoder folder: expected {_FOLDER_FILES}; no weights "
            f"({', '.join(_WEIGHT_FILES[:3])}) found"
        )
    if not any((path / name).exists() for name in _TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{str(path)!r} is not a cross-encoder folder: expected {_FOLDER_FILES}; no tokenizer "
            "files (tokenizer.json, vocab.txt, ...) found"
        )
    weights = path / "model.safetensors"
    if weights.is_file():
        _check_safetensors(weights)
    st_config = _read_json(path / "config_sentence_transformers.json")
    if isinstance(st_config, dict) and st_config.get("model_type") == "CrossEncoder":
        return
    modules = _read_json(path / "modules.json")
    pooling = isinstance(modules, list) and any(
        isinstance(m, dict) and "Pooling" in str(m.get("type", "")) for m in modules
    )
    architectures = [str(a) for a in config.get("architectures") or []]
    classifier = any(a.endswith("ForSequenceClassification") for a in architectures)
    if pooling or (architectures and not classifier):
        kind = "a sentence-transformers bi-encoder" if pooling else f"a {architectures[0]} model"
        raise ValueError(
            f"{str(path)!r} holds {kind}, not a cross-encoder: CrossEncoder would score with an "
            "untrained head. Pass a folder written by CrossEncoder.save / RerankerFinetuneEngine, or "
            "load the model yourself and pass the CrossEncoder object"
        )


def _check_safetensors(path: Path) -> None:
    """A truncated or garbled safetensors file is refused now (header and size only, cheap)."""
    size = path.stat().st_size
    problem = None
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if length <= 0 or 8 + length > size:
                problem = "its header is cut off"
            else:
                header = json.loads(handle.read(length))
                ends = [
                    v["data_offsets"][1]
                    for k, v in header.items()
                    if k != "__metadata__" and isinstance(v, dict)
                ]
                needed = 8 + length + max(ends, default=0)
                if size < needed:
                    problem = f"it holds {size} bytes but its header describes {needed}"
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, IndexError) as exc:
        problem = f"its header is unreadable ({exc})"
    if problem:
        raise ValueError(
            f"{path} is truncated or corrupt ({problem}); save the model again (CrossEncoder.save)"
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
