"""Retrievers: the dense + BM25 HybridRetriever, our BM25Retriever, fusion functions, a filterable
FAISS store (flat, HNSW, IVF, IVF-PQ) and the dense side on a vector database (Qdrant).

Names are imported lazily from their modules, so importing this package is cheap.

Example::

    from llama_index_ragtune.retrievers import HybridRetriever

    retriever = HybridRetriever.from_defaults(nodes=nodes, similarity_top_k=10)
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module (relative to this package). One concept per module.
_EXPORTS = {
    "HybridRetriever": "hybrid",
    "FusedNodeWithScore": "hybrid",
    "build_faiss_index": "dense",
    "BM25Retriever": "bm25",
    "BM25Tokenizer": "bm25",
    "FilterableFaissVectorStore": "faiss_store",
    "FaissIndexConfig": "faiss_index",
    "build_dense_index": "dense",
    "fuse": "fusion",
    "reciprocal_rank_fusion": "fusion",
    "score_fusion": "fusion",
    "FusedHit": "fusion",
    "PersistenceError": "persistence",
    "DEFAULT_FUSION_MODE": "defaults",
    "FUSION_PRESETS": "defaults",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
