"""``response_fields``: what a finished LlamaIndex response tells the feedback store.

Its own module so that the store and the recording query engine both use it without
importing each other.

Example::

    from llama_index_ragtune.feedback.responses import response_fields

    store.record("q", **response_fields(engine.query("q")))
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from llama_index.core.base.response.schema import (
    AsyncStreamingResponse,
    PydanticResponse,
    StreamingResponse,
)

from llama_index_ragtune.feedback.entries import node_row

__all__ = ["SOURCES_LEFT_OUT", "merge_metadata", "response_fields"]

SOURCES_LEFT_OUT = "sources_left_out"
"""Record metadata key: the 1-based ranks of the sources the store could not keep (no node
id, say); the preference pairs leave such an answer out (its prompt cannot be rebuilt)."""


def response_fields(response: Any) -> dict[str, Any]:
    """``record()`` arguments read from a finished LlamaIndex response.

    ``retrieved`` = ``source_nodes``; ``cited_node_ids`` / ``refused`` from its
    metadata when present (a cited id that is not a source is dropped with a warning); ``answer`` = the text (a ``PydanticResponse``'s model as
    JSON, a finished stream's collected text). A source the store cannot keep (no node
    id, not a node) is dropped with a warning, and ``metadata`` is then
    ``{"sources_left_out": [its 1-based ranks]}``.

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
    if not isinstance(metadata, Mapping):
        metadata = {}
    sources, left_out = _keepable_sources(getattr(response, "source_nodes", None) or [])
    source_ids = {getattr(getattr(n, "node", n), "node_id", None) for n in sources}
    cited = metadata.get("cited_node_ids") or []
    if isinstance(cited, (str, bytes, Mapping)) or not isinstance(cited, Iterable):
        # core engines key their metadata by node id: a node named "cited_node_ids" lands here
        warnings.warn(
            f"the response's metadata['cited_node_ids'] is not a list of node ids "
            f"({type(cited).__name__}); recording the answer without citations",
            stacklevel=2,
        )
        cited = []
    cited = list(cited)
    strays = [i for i in cited if not _is_source(i, source_ids)]
    if strays:
        warnings.warn(
            f"the response cites node ids that are not among its source_nodes: {strays[:5]}; "
            "recording the answer without them",
            stacklevel=2,
        )
        cited = [i for i in cited if _is_source(i, source_ids)]
    fields = {
        "retrieved": sources,
        "cited_node_ids": cited,
        "refused": _refused(metadata.get("refused")),
        "answer": answer,
    }
    if left_out:  # the answer's [n] numbering no longer matches: no preference pair from it
        fields["metadata"] = {SOURCES_LEFT_OUT: left_out}
    return fields


def merge_metadata(metadata: Any, found: Mapping[str, Any] | None) -> Any:
    """The caller's record ``metadata`` with what ``response_fields`` found added (a
    ``metadata`` that is not a dict is passed on as it is, for ``record`` to refuse)."""
    if not found or not (metadata is None or isinstance(metadata, Mapping)):
        return metadata
    return {**(metadata or {}), **found}


def _keepable_sources(source_nodes: Iterable[Any]) -> tuple[list[Any], list[int]]:
    """The sources the store can keep, and the 1-based ranks of the others (no node id, an
    id that is not text, not a node at all), each said in a warning: one odd source must
    not lose the whole answer."""
    kept: list[Any] = []
    left_out: list[int] = []
    for index, item in enumerate(source_nodes):
        try:
            node_row(item, index)
        except (TypeError, ValueError) as exc:
            left_out.append(index + 1)
            warnings.warn(
                f"the response's source_nodes[{index}] cannot be recorded ({exc}); recording "
                "the answer without it (give every node a non-empty string id and a readable "
                "text)",
                stacklevel=3,
            )
            continue
        kept.append(item)
    return kept, left_out


def _is_source(node_id: Any, source_ids: set[Any]) -> bool:
    """Whether a cited id is one of the sources (an unhashable "id", a list say, is not)."""
    try:
        return node_id in source_ids
    except TypeError:
        return False


def _refused(value: Any) -> bool:
    """``metadata["refused"]`` as a bool; anything but True / False / 0 / 1 / None is not a refusal.

    (``bool("false")`` is True, and core engines key metadata by node id, so a node
    named ``refused`` puts its metadata dict here.)
    """
    if value is None:
        return False
    try:
        ok = not isinstance(value, (str, bytes)) and value in (True, False)
    except Exception:  # an array or an odd __eq__
        ok = False
    if ok:
        return bool(value)
    warnings.warn(
        f"the response's metadata['refused'] is not True or False ({type(value).__name__} "
        f"{str(value)[:40]!r}); recording the answer as not refused",
        stacklevel=3,
    )
    return False
