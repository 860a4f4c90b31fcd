"""``response_fields``: what a finished LlamaIndex response tells the feedback store.

Its own module so that the store and the recording query engine both use it without
importing each other.

Example::

    from llama_index_ragtune.feedback.responses import response_fields

    store.record("q", **response_fields(engine.query("q")))
"""

from __future__ import annotations

import warnings
from typing import Any

from llama_index.core.base.response.schema import (
    AsyncStreamingResponse,
    PydanticResponse,
    StreamingResponse,
)

__all__ = ["response_fields"]


def response_fields(response: Any) -> dict[str, Any]:
    """``record()`` arguments read from a finished LlamaIndex response.

    ``retrieved`` = ``source_nodes``; ``cited_node_ids`` / ``refused`` from its
    metadata when present (a cited id that is not a source is dropped with a warning); ``answer`` = the text (a ``PydanticResponse``'s model as
    JSON, a finished stream's collected text).

    Example::

        store.record("q", **response_fields(engine.query("q")))
    """
    metadata = getattr(response, "metadata", None) or {}
    if isinstance(response, PydanticResponse):
        answer = None if response.response is None else response.response.model_dump_json()
    elif isinstance(response, (StreamingResponse, AsyncStreamingResponse)):
        answer = response.response_txt
    else:
        answer = getattr(response, "response", None)
        answer = None if answer is None else str(answer)
    sources = list(getattr(response, "source_nodes", None) or [])
    source_ids = {n.node.node_id for n in sources}
    cited = list(metadata.get("cited_node_ids") or [])
    strays = [i for i in cited if i not in source_ids]
    if strays:
        warnings.warn(
            f"the response cites node ids that are not among its source_nodes: {strays[:5]}; "
            "recording the answer without them",
            stacklevel=2,
        )
        cited = [i for i in cited if i in source_ids]
    return {
        "retrieved": sources,
        "cited_node_ids": cited,
        "refused": bool(metadata.get("refused", False)),
        "answer": answer,
    }
