"""Fine-tune engines for the encoder, the reranker and the decoder.

Names are imported lazily from their modules, so importing this package is cheap.
"""

# ruff: noqa: F401  (names imported under TYPE_CHECKING are re-exported lazily)
from __future__ import annotations

from typing import TYPE_CHECKING

from llama_index_ragtune._lazy import lazy_exports

if TYPE_CHECKING:  # the lazily loaded names, for type checkers and IDEs
    from llama_index_ragtune.finetuning.answerability import AnswerabilityFinetuneEngine
    from llama_index_ragtune.finetuning.budget import TrainingBudget
    from llama_index_ragtune.finetuning.decoder import DecoderFinetuneEngine
    from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine
    from llama_index_ragtune.finetuning.hybrid_eval import HybridRetrievalEvaluator
    from llama_index_ragtune.finetuning.promotion import PromotionDecision, decide_promotion
    from llama_index_ragtune.finetuning.ranking_eval import (
        CandidateRerankingEvaluator,
        DenseRetrievalEvaluator,
    )
    from llama_index_ragtune.finetuning.reranker import (
        RerankerFinetuneEngine,
        RerankerNotPromotedError,
    )
    from llama_index_ragtune.finetuning.result import FinetuneResult

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
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
