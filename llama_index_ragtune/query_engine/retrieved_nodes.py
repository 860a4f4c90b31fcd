"""The numbered sources of ``CitationQueryEngine``: retrieved, postprocessed, checked and capped.

What a retriever or a node postprocessor returns must be a list of ``NodeWithScore``;
anything else (``None``, a string, bare nodes) is a ``TypeError`` naming who returned
what, also when LlamaIndex core is the one that fails reading it.

Example::

    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    nodes = checked_nodes([NodeWithScore(node=TextNode(text="Rome"))], retriever, "retriever")
    sources = retrieve_sources(retriever, [], QueryBundle("Capital of Italy?"), max_sources=3)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle

from llama_index_ragtune.grounding import is_blank
from llama_index_ragtune.retrievers.checks import distinct_nodes

logger = logging.getLogger(__name__)

__all__ = [
    "aretrieve_sources",
    "checked_nodes",
    "retrieve_sources",
    "shown_text",
    "unreadable_output",
    "visible_nodes",
]

# core's BaseRetriever.retrieve / aretrieve read what _retrieve returned in these methods
_CORE_READS_RETRIEVED = frozenset({"_handle_recursive_retrieval", "_ahandle_recursive_retrieval"})


def retrieve_sources(
    retriever: Any,
    postprocessors: Sequence[Any],
    query_bundle: QueryBundle,
    max_sources: int | None,
    metadata_mode: MetadataMode = MetadataMode.NONE,
) -> list[NodeWithScore]:
    """The retrieved nodes, postprocessed in order, each once, without those that show no text
    (:func:`visible_nodes`), at most ``max_sources`` of them."""
    with _naming_unreadable_output(retriever):
        found = retriever.retrieve(query_bundle)
    nodes = checked_nodes(found, retriever, "retriever")
    for postprocessor in postprocessors:
        nodes = postprocessor.postprocess_nodes(nodes, query_bundle=query_bundle)
        nodes = checked_nodes(nodes, postprocessor, "node postprocessor")
    return _capped(visible_nodes(distinct_nodes(nodes), metadata_mode), max_sources)


async def aretrieve_sources(
    retriever: Any,
    postprocessors: Sequence[Any],
    query_bundle: QueryBundle,
    max_sources: int | None,
    metadata_mode: MetadataMode = MetadataMode.NONE,
) -> list[NodeWithScore]:
    """Async twin of :func:`retrieve_sources` (``aretrieve`` and ``apostprocess_nodes``)."""
    with _naming_unreadable_output(retriever):
        found = await retriever.aretrieve(query_bundle)
    nodes = checked_nodes(found, retriever, "retriever")
    for postprocessor in postprocessors:
        nodes = await postprocessor.apostprocess_nodes(nodes, query_bundle=query_bundle)
        nodes = checked_nodes(nodes, postprocessor, "node postprocessor")
    return _capped(visible_nodes(distinct_nodes(nodes), metadata_mode), max_sources)


def visible_nodes(
    nodes: list[NodeWithScore], metadata_mode: MetadataMode = MetadataMode.NONE
) -> list[NodeWithScore]:
    """``nodes`` without those whose text in ``metadata_mode`` has no visible character (an
    image or a blank node), each skipped with a warning naming it.

    Such a node was an empty numbered source: the model's citation of it counted as citing
    that node, and it took a place of ``max_sources`` from a source with text.

    Example::

        [n.node.node_id for n in visible_nodes(nodes)]   # without 'blank' for text="  "
    """
    kept, skipped = [], []
    for n in nodes:
        if is_blank(shown_text(n.node, metadata_mode)):
            skipped.append(n.node.node_id)
        else:
            kept.append(n)
    if skipped:
        logger.warning(
            "CitationQueryEngine: skipping %d retrieved node(s) that show no text "
            "(metadata_mode=%s), so they cannot be sources: %s",
            len(skipped),
            metadata_mode.value,
            skipped[:20],
        )
    return kept


def shown_text(node: BaseNode, metadata_mode: MetadataMode = MetadataMode.NONE) -> str:
    """``node.get_content(metadata_mode)``, or a ``ValueError`` naming the node and its template
    when one of them has a slot LlamaIndex cannot fill (``metadata_template="{key}: {x}"``,
    ``text_template="{content} {source}"``; was a bare ``KeyError: 'x'`` from core).

    Example::

        shown_text(TextNode(text="Rome.", metadata={"city": "Rome"}), MetadataMode.LLM)
        # 'city: Rome\n\nRome.'
    """
    try:
        return node.get_content(metadata_mode=metadata_mode)
    except (KeyError, IndexError, ValueError) as exc:
        templates = {
            name: getattr(node, name, None) for name in ("text_template", "metadata_template")
        }
        raise ValueError(
            f"CitationQueryEngine: node {node.node_id!r} cannot show its text with "
            f"metadata_mode={metadata_mode.value!r} ({type(exc).__name__}: {exc}); its "
            f"templates are {templates}: text_template may only use {{content}} and "
            "{metadata_str}, metadata_template {key} and {value}; write literal braces "
            "as {{ and }}"
        ) from exc


def _capped(nodes: list[NodeWithScore], max_sources: int | None) -> list[NodeWithScore]:
    return nodes[:max_sources] if max_sources else nodes


@contextmanager
def _naming_unreadable_output(retriever: Any) -> Iterator[None]:
    """Turn core's failure to read what ``retriever`` returned into :func:`unreadable_output`."""
    try:
        yield
    except (TypeError, AttributeError) as exc:
        problem = unreadable_output(exc, retriever)
        if problem is None:
            raise
        raise problem from exc


def unreadable_output(exc: BaseException, retriever: Any) -> TypeError | None:
    """When LlamaIndex core failed reading what a retriever's ``_retrieve`` returned (``None``,
    a string, bare nodes), the error naming that retriever and what it must return; ``None``
    when what it returned was fine (the error is someone else's: the retriever's own, say)."""
    reader, tb = None, exc.__traceback__
    while tb is not None:  # the innermost core frame that read a retriever's output
        if tb.tb_frame.f_code.co_name in _CORE_READS_RETRIEVED:
            reader = tb.tb_frame
        tb = tb.tb_next
    if reader is None:
        return None
    method = "_aretrieve / _retrieve" if reader.f_code.co_name.startswith("_a") else "_retrieve"
    where = reader.f_locals.get("self", retriever)
    try:
        checked_nodes(reader.f_locals.get("nodes"), where, "retriever", f"'s {method}")
    except TypeError as problem:
        return problem
    return None


def checked_nodes(nodes: Any, where: Any, role: str, via: str = "") -> list[NodeWithScore]:
    """``nodes`` as a list of ``NodeWithScore``, or a ``TypeError`` naming the ``role`` at fault
    (``via``: the method that returned them, e.g. ``"'s _retrieve"``)."""
    name = f"the {role} {type(where).__name__}{via}"
    if nodes is None or isinstance(nodes, (str, bytes)) or not isinstance(nodes, Iterable):
        raise TypeError(
            f"{name} returned {type(nodes).__name__}, not a list of NodeWithScore (return [] "
            "when nothing is found)"
        )
    nodes = list(nodes)
    for position, item in enumerate(nodes):
        if not isinstance(item, NodeWithScore):
            hint = (
                "; wrap each node as NodeWithScore(node=node, score=None)"
                if isinstance(item, BaseNode)
                else ""
            )
            raise TypeError(
                f"{name} returned a {type(item).__name__} at position {position}, not a "
                f"NodeWithScore{hint}"
            )
    return nodes
