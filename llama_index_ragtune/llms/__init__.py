"""Local decoders as LlamaIndex LLMs, and the refusal policies that decide when they refuse.

Example::

    from llama_index_ragtune.llms import LocalChatLLM, load_refusal_policy

    llm = LocalChatLLM()          # bundled SmolLM2-135M-Instruct, greedy
    tuned = LocalChatLLM("runs/decoder/merged",
                         refusal_policy=load_refusal_policy("runs/decoder/refusal_policy.json"))
"""

# ruff: noqa: F401  (names imported under TYPE_CHECKING are re-exported lazily)
from __future__ import annotations

from typing import TYPE_CHECKING

from llama_index_ragtune._lazy import lazy_exports

if TYPE_CHECKING:  # the lazily loaded names, for type checkers and IDEs
    from llama_index_ragtune.llms.answerability import (
        AnswerabilityScorer,
        SimilarityAnswerabilityScorer,
    )
    from llama_index_ragtune.llms.local import LocalChatLLM
    from llama_index_ragtune.llms.refusal_policy import (
        AnswerabilityRefusalPolicy,
        CombinedRefusalPolicy,
        DecoderRefusalPolicy,
        NoRefusalPolicy,
        RefusalDecision,
        RefusalPolicy,
    )
    from llama_index_ragtune.llms.refusal_policy_records import load_refusal_policy
    from llama_index_ragtune.llms.refusal_selection import PolicySelection, select_refusal_policy

_EXPORTS = {
    "LocalChatLLM": "local",
    "AnswerabilityScorer": "answerability",
    "SimilarityAnswerabilityScorer": "answerability",
    "RefusalPolicy": "refusal_policy",
    "RefusalDecision": "refusal_policy",
    "DecoderRefusalPolicy": "refusal_policy",
    "AnswerabilityRefusalPolicy": "refusal_policy",
    "CombinedRefusalPolicy": "refusal_policy",
    "NoRefusalPolicy": "refusal_policy",
    "load_refusal_policy": "refusal_policy_records",
    "select_refusal_policy": "refusal_selection",
    "PolicySelection": "refusal_selection",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
