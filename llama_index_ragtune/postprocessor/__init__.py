"""Node postprocessors: the cross-encoder reranker.

Example::

    from llama_index_ragtune.postprocessor import CrossEncoderRerank
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CrossEncoderRerank": "cross_encoder",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
