"""Embedding models: ONNX Runtime encoding, an on-disk embedding cache, micro-batched queries,
default-model resolution.

Names are imported lazily from their modules, so importing this package is cheap.

Example::

    from llama_index_ragtune.embeddings import CachedEmbedding, OnnxEmbedding

    embed_model = CachedEmbedding(OnnxEmbedding(quantize=True), cache_dir=".ragtune_cache/embeddings")
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module (relative to this package). One concept per module.
_EXPORTS = {
    "OnnxEmbedding": "onnx",
    "CachedEmbedding": "cached",
    "MicroBatchEmbedding": "micro_batch",
    "micro_batched": "micro_batch",
    "model_identity": "cached",
    "export_sentence_transformer": "onnx_export",
    "default_embed_model": "defaults",
    "resolve_embed_model": "defaults",
    "onnx_available": "defaults",
    "StaticEmbeddingModel": "static",
    "distill_static_embedding": "static_distill",
    "embed_corpus": "corpus",
    "RayCorpusEncoder": "corpus_ray",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
