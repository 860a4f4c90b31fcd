"""Metadata filters on a vector-store dense side (Qdrant, Milvus): translatable, and read
as the BM25 side reads them.

A database evaluates its own translation of LlamaIndex ``MetadataFilters``, which differs
from LlamaIndex's in-memory semantics (the BM25 side's, and FAISS's) for some operators
and value types; :func:`check_store_parity` compares the two on the indexed nodes and
refuses a filter they answer differently, naming a node they disagree on.

Example::

    check_store_filters(qdrant_store, filters)         # refuses what Qdrant cannot translate
    check_store_parity(index, filters, lexical_nodes)  # refuses what it reads differently
"""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import MetadataFilters

from llama_index_ragtune.retrievers import external_milvus
from llama_index_ragtune.retrievers.external_store import STORE_KINDS, STORE_NAMES, store_kind

__all__ = ["check_store_filters", "check_store_parity", "forget_filters"]

logger = logging.getLogger(__name__)


def check_store_filters(store: Any, filters: MetadataFilters | None) -> None:
    """Refuse, when the filter is set, an operator the store's integration cannot translate.

    Example::

        check_store_filters(qdrant_store, MetadataFilters(filters=[...]))
    """
    if filters is None or not filters.filters:
        return
    kind = store_kind(store)
    if kind == "milvus":
        external_milvus.check_filters(store, filters)
    if kind != "qdrant":
        return
    try:
        store._build_subfilter(filters)
    except (NotImplementedError, ValueError, TypeError) as exc:  # pydantic's errors included
        raise ValueError(
            f"filters {filters.model_dump(mode='json')} cannot run on Qdrant: the Qdrant "
            f"integration cannot translate them ({type(exc).__name__}: {exc})"
        ) from exc


class _Corpus:
    """What the parity check needs of an index's nodes, read once per index size."""

    def __init__(self, nodes: list[BaseNode], kind: str) -> None:
        from llama_index_ragtune.retrievers.checks import metadata_value_kinds
        from llama_index_ragtune.retrievers.filters import filterable_metadata

        self.size = len(nodes)
        self.stamp: tuple[int, int] = (-1, -1)  # (index size, lexical nodes) it was read at
        self.ids = [n.node_id for n in nodes]
        self.metadata = [filterable_metadata(n) for n in nodes]
        self.keys = frozenset(key for metadata in self.metadata for key in metadata)
        self.value_kinds = metadata_value_kinds(self.metadata)
        # the database's id of each node (Qdrant writes UUIDs canonically)
        self.by_store_id = {(_canonical_uuid(i) if kind == "qdrant" else i): i for i in self.ids}
        # filter keys found exact on this corpus, most recently used last
        self.accepted: OrderedDict[str, None] = OrderedDict()
        self.lock = threading.Lock()  # concurrent requests share the index


_PARITY: weakref.WeakKeyDictionary[Any, _Corpus] = weakref.WeakKeyDictionary()
_PARITY_CACHE_SIZE = 1024
"""Filters remembered as exact per index (each new one costs one scan of the ids it selects)."""


def forget_filters(index: Any) -> None:
    """Drop the filters found exact on ``index`` (its nodes changed).

    Example::

        forget_filters(retriever.index)
    """
    _PARITY.pop(index, None)


def check_store_parity(
    index: Any, filters: MetadataFilters | None, lexical_nodes: Sequence[BaseNode] | None = None
) -> None:
    """Refuse filters that the store would answer differently from the BM25 side.

    The BM25 side (and FAISS) evaluate filters with LlamaIndex's in-memory semantics; a
    database evaluates its own translation, which differs for some operators and value
    types (Qdrant's ``!=`` and ``nin`` drop nodes missing the key, ``text_match_insensitive``
    is case-sensitive there, its ``==`` on a list matches any element; Milvus's ``is_empty``
    and ``not`` differ, a ``None`` value drops the clause, ...). So when a filter is set, the
    nodes of the index's docstore passing it in memory are compared with the ids the store
    selects with its translation (one id scan per new filter; the 1,024 most recent are
    remembered); any difference, or a translation the database rejects, is a
    ``ValueError`` naming the filter, the store and a node on which they disagree; so is a
    key that no node has (usually a typo). The nodes compared are the docstore's, or when
    it holds none (a store that keeps the text) ``lexical_nodes``, the BM25 side's; with
    neither, nothing can be compared and a warning says the filter is unchecked.

    Example::

        check_store_parity(index, MetadataFilters(filters=[...]))
    """
    if filters is None or not filters.filters:
        return
    store = index.vector_store
    kind = store_kind(store)
    if kind not in STORE_KINDS:
        return
    from llama_index_ragtune.retrievers.checks import check_filter_keys
    from llama_index_ragtune.retrievers.filters import build_filter_fn, filter_key

    stamp = (len(index.index_struct.nodes_dict), len(lexical_nodes or ()))
    corpus = _PARITY.get(index)
    if corpus is None or corpus.stamp != stamp:
        nodes = list(index.docstore.docs.values()) or list(lexical_nodes or ())
        if not nodes:
            logger.warning(
                "filters %s are set on a %s dense side whose nodes this process cannot see (empty "
                "docstore, no BM25 side): their keys and their %s semantics are not checked",
                filters.model_dump(mode="json"),
                STORE_NAMES[kind],
                STORE_NAMES[kind],
            )
            return
        corpus = _Corpus(nodes, kind)
        corpus.stamp = stamp
        _PARITY[index] = corpus
    key = filter_key(filters)
    with corpus.lock:
        if key in corpus.accepted:
            corpus.accepted.move_to_end(key)
            return
    product = STORE_NAMES[kind]
    check_filter_keys(filters, corpus.keys, f"the {product} dense side", corpus.value_kinds)
    where = f"filters {filters.model_dump(mode='json')} cannot run exactly on {product}"
    metadata = corpus.metadata
    passes = build_filter_fn(lambda i: metadata[i], filters)
    try:
        expected = {node_id for i, node_id in enumerate(corpus.ids) if passes(i)}
    except TypeError as exc:
        raise ValueError(
            f"{where}: they cannot be evaluated on the indexed nodes with LlamaIndex's "
            f"in-memory semantics (the BM25 side's): {exc}"
        ) from exc
    try:
        found = (
            external_milvus.ids_passing(store, filters)
            if kind == "milvus"
            else _qdrant_ids_passing(store, filters)
        )
    except Exception as exc:  # the integration's translation or the database refused it
        raise ValueError(
            f"{where}: the {product} integration or database rejects them "
            f"({type(exc).__name__}: {str(exc)[:300]})"
        ) from exc
    selected = {corpus.by_store_id[i] for i in found if i in corpus.by_store_id}
    if selected != expected:
        differ = sorted(selected ^ expected)
        position = corpus.ids.index(differ[0])
        verdict = "selects" if differ[0] in selected else "drops"
        raise ValueError(
            f"{where}: {product} selects {len(selected)} of the {corpus.size} indexed nodes "
            f"where LlamaIndex's in-memory semantics (the BM25 side's) select {len(expected)}, "
            f"so the two sides would return different nodes; e.g. {product} {verdict} node "
            f"{differ[0]!r} with metadata {metadata[position]!r}. Filter with an operator both "
            "read alike (==, in, <, >, ... on a key whose nodes all hold a value of that type), "
            "or give the nodes uniform metadata"
        )
    with corpus.lock:
        corpus.accepted[key] = None
        while len(corpus.accepted) > _PARITY_CACHE_SIZE:
            corpus.accepted.popitem(last=False)  # per-request filters: the least recent go


def _canonical_uuid(value: Any) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(value)


def _qdrant_ids_passing(store: Any, filters: MetadataFilters) -> set[str]:
    """Ids (canonical UUIDs) of the points passing the store's translation of ``filters``."""
    client, name = store.client, store.collection_name
    condition = store._build_subfilter(filters)
    ids: set[str] = set()
    offset = None
    while True:
        points, offset = client.scroll(
            name,
            scroll_filter=condition,
            limit=4096,
            offset=offset,
            with_payload=False,
            with_vectors=False,
        )
        ids.update(_canonical_uuid(p.id) for p in points)
        if offset is None:
            return ids
