"""Embedding models: ONNX Runtime encoding, an on-disk embedding cache, micro-batched queries,
default-model resolution.

Names are imported lazily from their modules, so importing this package is cheap.

Example::

    from llama_index_ragtune.embeddings import CachedEmbedding, OnnxEmbedding

    embed_model = CachedEmbedding(OnnxEmbedding(quantize=True), cache_dir=".ragtune_cache/embeddings")
"""

# ruff: noqa: F401  (names imported under TYPE_CHECKING are re-exported lazily)
from __future__ import annotations

from typing import TYPE_CHECKING

from llama_index_ragtune._lazy import lazy_exports

if TYPE_CHECKING:  # the lazily loaded names, for type checkers and IDEs
    from llama_index_ragtune.embeddings.cached import CachedEmbedding, model_identity
    from llama_index_ragtune.embeddings.corpus import embed_corpus
    from llama_index_ragtune.embeddings.corpus_ray import RayCorpusEncoder
    from llama_index_ragtune.embeddings.defaults import (
        default_embed_model,
        onnx_available,
        resolve_embed_model,
    )
    from llama_index_ragtune.embeddings.micro_batch import MicroBatchEmbedding, micro_batched
    from llama_index_ragtune.embeddings.onnx import OnnxEmbedding
    from llama_index_ragtune.embeddings.onnx_export import export_sentence_transformer
    from llama_index_ragtune.embeddings.static import StaticEmbeddingModel
    from llama_index_ragtune.embeddings.static_distill import distill_static_embedding

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
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
