"""Which embedding model a component uses when none is passed.

Order: the ``embed_model`` argument; else ``Settings.embed_model`` when the user
set it explicitly (an unset ``Settings`` would resolve to OpenAI, which needs a
key and the network, so it is never triggered); else the bundled
all-MiniLM-L6-v2 — run by ONNX Runtime (:class:`OnnxEmbedding`, fp32, same
vectors as PyTorch to a cosine of 0.9999, several times faster per query) when
the ``onnx`` extra is installed, or by PyTorch (``HuggingFaceEmbedding``)
otherwise.

Example::

    from llama_index_ragtune.embeddings import default_embed_model, resolve_embed_model

    embed = resolve_embed_model(None)                       # Settings, else bundled MiniLM
    torch_embed = default_embed_model(backend="torch")      # HuggingFaceEmbedding
    int8_embed = default_embed_model(backend="onnx-int8")   # OnnxEmbedding(quantize=True)
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Literal

from llama_index.core.base.embeddings.base import BaseEmbedding

from llama_index_ragtune.models import load_model, resolve_model

Backend = Literal["auto", "onnx", "onnx-int8", "torch"]
BACKENDS: tuple[str, ...] = ("auto", "onnx", "onnx-int8", "torch")

__all__ = ["BACKENDS", "default_embed_model", "onnx_available", "resolve_embed_model"]


def onnx_available() -> bool:
    """Whether the ``onnx`` extra (onnxruntime and onnx) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def default_embed_model(
    model: str | os.PathLike | None = None,
    backend: Backend = "auto",
    **kwargs: Any,
) -> BaseEmbedding:
    """The bundled MiniLM (or ``model``: a folder or hub id) as a LlamaIndex embedding.

    ``backend``: ``"onnx"`` / ``"onnx-int8"`` (:class:`OnnxEmbedding`), ``"torch"``
    (``HuggingFaceEmbedding``, warning once when it cuts texts to ``max_seq_length``),
    or ``"auto"`` (ONNX when installed, else torch).
    Extra keyword arguments go to the embedding class.
    """
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown embedding backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    if backend == "auto":
        backend = "onnx" if onnx_available() else "torch"
    if backend in ("onnx", "onnx-int8"):
        from llama_index_ragtune.embeddings.onnx import OnnxEmbedding

        # not under the loading lock: an export loads the model through load_model itself
        return OnnxEmbedding(model, quantize=backend == "onnx-int8", **kwargs)
    # HuggingFaceEmbedding that warns (once) when it cuts texts to max_seq_length
    from llama_index_ragtune.embeddings.hf_embedding import WarnedHuggingFaceEmbedding

    kwargs.setdefault("device", "cpu")
    return load_model(
        WarnedHuggingFaceEmbedding, model_name=resolve_model(model, kind="encoder"), **kwargs
    )


def resolve_embed_model(embed_model: BaseEmbedding | None = None) -> BaseEmbedding:
    """``embed_model`` if given, else an explicitly set ``Settings.embed_model``, else :func:`default_embed_model`."""
    if embed_model is not None:
        if not isinstance(embed_model, BaseEmbedding):
            raise TypeError(
                f"embed_model must be a LlamaIndex BaseEmbedding, got {type(embed_model).__name__}; "
                "wrap your model, or use llama_index_ragtune.embeddings.default_embed_model(path)"
            )
        return embed_model
    from llama_index.core import Settings

    explicit = getattr(Settings, "_embed_model", None)
    if explicit is not None:
        return explicit
    return default_embed_model()
