"""Fine-tune engines for the encoder, the reranker and the decoder.

Names are imported lazily from their modules, so importing this package is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module (relative to this package). One concept per module.
_EXPORTS = {
    "EncoderFinetuneEngine": "encoder",
    "RerankerFinetuneEngine": "reranker",
    "DecoderFinetuneEngine": "decoder",
    "AnswerabilityFinetuneEngine": "answerability",
    "FinetuneResult": "result",
    "TrainingBudget": "budget",
    "PromotionDecision": "promotion",
    "decide_promotion": "promotion",
    "RerankerNotPromotedError": "reranker",
    "DenseRetrievalEvaluator": "ranking_eval",
    "HybridRetrievalEvaluator": "hybrid_eval",
    "CandidateRerankingEvaluator": "ranking_eval",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
