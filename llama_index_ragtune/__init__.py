"""llama-index-ragtune: tune both halves of a RAG system and drop them into LlamaIndex.

Heavy modules are imported lazily, so ``import llama_index_ragtune`` is cheap.

Example::

    from llama_index_ragtune import HybridRetriever, CrossEncoderRerank
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "StructuredMarkdownNodeParser": "llama_index_ragtune.node_parser",
    "StructuredHTMLNodeParser": "llama_index_ragtune.node_parser",
    "HybridRetriever": "llama_index_ragtune.retrievers",
    "CrossEncoderRerank": "llama_index_ragtune.postprocessor",
    "RetrievalEvaluator": "llama_index_ragtune.evaluation",
    "load_beir": "llama_index_ragtune.data",
    "RetrievalDataset": "llama_index_ragtune.data",
    "HardNegativeMiner": "llama_index_ragtune.data",
    "EncoderFinetuneEngine": "llama_index_ragtune.finetuning",
    "RerankerFinetuneEngine": "llama_index_ragtune.finetuning",
    "CitationQueryEngine": "llama_index_ragtune.query_engine",
    "GroundedSFTBuilder": "llama_index_ragtune.data",
    "PreferenceBuilder": "llama_index_ragtune.data",
    "DecoderFinetuneEngine": "llama_index_ragtune.finetuning",
    "GenerationEvaluator": "llama_index_ragtune.evaluation",
    "default_encoder": "llama_index_ragtune.models",
    "default_decoder": "llama_index_ragtune.models",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llama_index_ragtune' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
