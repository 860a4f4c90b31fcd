"""llama-index-ragtune: tune both halves of a RAG system and drop them into LlamaIndex.

Heavy modules are imported lazily, so ``import llama_index_ragtune`` is cheap.

Example::

    from llama_index_ragtune import HybridRetriever, CrossEncoderRerank
"""

# ruff: noqa: F401  (names imported under TYPE_CHECKING are re-exported lazily)
from __future__ import annotations

from typing import TYPE_CHECKING

from llama_index_ragtune._lazy import lazy_exports

if TYPE_CHECKING:  # the lazily loaded names, for type checkers and IDEs
    from llama_index_ragtune.data import (
        GroundedSFTBuilder,
        HardNegativeMiner,
        PreferenceBuilder,
        RetrievalDataset,
        load_beir,
    )
    from llama_index_ragtune.evaluation import GenerationEvaluator, RetrievalEvaluator
    from llama_index_ragtune.finetuning import (
        DecoderFinetuneEngine,
        EncoderFinetuneEngine,
        RerankerFinetuneEngine,
    )
    from llama_index_ragtune.models import default_decoder, default_encoder
    from llama_index_ragtune.node_parser import (
        StructuredHTMLNodeParser,
        StructuredMarkdownNodeParser,
    )
    from llama_index_ragtune.postprocessor import CrossEncoderRerank
    from llama_index_ragtune.query_engine import CitationQueryEngine
    from llama_index_ragtune.retrievers import HybridRetriever

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
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
