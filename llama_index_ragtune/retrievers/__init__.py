"""Retrievers: the dense + BM25 HybridRetriever, our BM25Retriever, fusion functions, a filterable
FAISS store (flat, HNSW, IVF, IVF-PQ) and the dense side on a vector database (Qdrant).

Names are imported lazily from their modules, so importing this package is cheap.

Example::

    from llama_index_ragtune.retrievers import HybridRetriever

    retriever = HybridRetriever.from_defaults(nodes=nodes, similarity_top_k=10)
"""

# ruff: noqa: F401  (names imported under TYPE_CHECKING are re-exported lazily)
from __future__ import annotations

from typing import TYPE_CHECKING

from llama_index_ragtune._lazy import lazy_exports

if TYPE_CHECKING:  # the lazily loaded names, for type checkers and IDEs
    from llama_index_ragtune.retrievers.bm25 import BM25Retriever, BM25Tokenizer
    from llama_index_ragtune.retrievers.defaults import DEFAULT_FUSION_MODE, FUSION_PRESETS
    from llama_index_ragtune.retrievers.dense import build_dense_index, build_faiss_index
    from llama_index_ragtune.retrievers.faiss_index import FaissIndexConfig
    from llama_index_ragtune.retrievers.faiss_store import FilterableFaissVectorStore
    from llama_index_ragtune.retrievers.fused_node import FusedNodeWithScore
    from llama_index_ragtune.retrievers.fusion import (
        FusedHit,
        fuse,
        reciprocal_rank_fusion,
        score_fusion,
    )
    from llama_index_ragtune.retrievers.hybrid import HybridRetriever
    from llama_index_ragtune.retrievers.persist_errors import PersistWriteError
    from llama_index_ragtune.retrievers.persistence import PersistenceError

# public name -> module (relative to this package). One concept per module.
_EXPORTS = {
    "HybridRetriever": "hybrid",
    "FusedNodeWithScore": "fused_node",
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
    "PersistWriteError": "persist_errors",
    "DEFAULT_FUSION_MODE": "defaults",
    "FUSION_PRESETS": "defaults",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
