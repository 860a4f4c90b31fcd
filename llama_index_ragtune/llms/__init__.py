"""Local decoders as LlamaIndex LLMs, and the refusal policies that decide when they refuse.

Example::

    from llama_index_ragtune.llms import LocalChatLLM, load_refusal_policy

    llm = LocalChatLLM()          # bundled SmolLM2-135M-Instruct, greedy
    tuned = LocalChatLLM("runs/decoder/merged",
                         refusal_policy=load_refusal_policy("runs/decoder/refusal_policy.json"))
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LocalChatLLM": "local",
    "AnswerabilityScorer": "answerability",
    "RefusalPolicy": "refusal_policy",
    "RefusalDecision": "refusal_policy",
    "DecoderRefusalPolicy": "refusal_policy",
    "AnswerabilityRefusalPolicy": "refusal_policy",
    "CombinedRefusalPolicy": "refusal_policy",
    "load_refusal_policy": "refusal_policy",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
