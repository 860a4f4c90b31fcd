"""Query engines: answers with citations mapped to node ids, or an explicit refusal.

The grounded format they use (prompt, refusal, citation grammar) lives in
:mod:`llama_index_ragtune.grounding`.

Example::

    from llama_index_ragtune.query_engine import CitationQueryEngine

    engine = CitationQueryEngine.from_args(retriever, llm=llm)
"""

from __future__ import annotations

from llama_index_ragtune.query_engine.citation import CitationQueryEngine

__all__ = ["CitationQueryEngine"]
