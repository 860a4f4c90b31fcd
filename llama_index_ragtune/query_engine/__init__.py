"""Query engines: answers with citations mapped to node ids, or an explicit refusal.

Example::

    from llama_index_ragtune.query_engine import CitationQueryEngine

    engine = CitationQueryEngine.from_args(retriever, llm=llm)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CitationQueryEngine": "citation",
    "CitationFilter": "citation",
    "DEFAULT_REFUSAL": "prompts",
    "build_messages": "prompts",
    "parse_citations": "prompts",
    "is_refusal": "prompts",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
