"""Metadata filters compiled to boolean masks over a fixed list of nodes.

``MetadataFilters`` are evaluated with LlamaIndex's own
``build_metadata_filter_fn`` (same operators and semantics as the in-memory
vector store; a nested ``MetadataFilters``, which that function refuses, is one
more clause of its parent's condition, as Qdrant and Milvus read it), once per
distinct filter, and the resulting mask is cached, so a
filtered query costs one numpy ``&`` instead of a Python loop over the corpus.

Example::

    from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

    masks = FilterMaskCache([{"store": "grocery"}, {"store": "electronics"}])
    masks.mask(MetadataFilters(filters=[MetadataFilter(key="store", value="grocery")]))
    # array([ True, False])
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.core.vector_stores.utils import build_metadata_filter_fn

__all__ = [
    "MAX_FILTER_DEPTH",
    "FilterMaskCache",
    "build_filter_fn",
    "check_filter_depth",
    "filter_key",
    "filterable_metadata",
    "node_passes",
]

_ID_KEYS = ("doc_id", "document_id", "ref_doc_id")

MAX_FILTER_DEPTH = 100
"""Most levels of ``MetadataFilters`` inside one another that filters may have (pydantic
cannot serialise past ~126, Python's recursion ends near 1000)."""

_SET_LOOKUP_FROM = 16  # ``in`` / ``nin`` lists at least this long are looked up in a set


def check_filter_depth(filters: MetadataFilters | None, where: str = "filters") -> None:
    """Raise ``ValueError`` when ``filters`` nests more than :data:`MAX_FILTER_DEPTH` levels
    (found without recursion, so any depth is measured).

    Example::

        check_filter_depth(MetadataFilters(filters=[]))   # passes
    """
    if filters is None:
        return
    level, depth = [filters], 0
    while level:
        depth += 1
        if depth > MAX_FILTER_DEPTH:
            raise ValueError(
                f"{where}: metadata filters nested more than {MAX_FILTER_DEPTH} levels deep "
                "(MetadataFilters inside MetadataFilters); flatten them: a group with one "
                "clause, or an 'and' inside an 'and', is the same as the clause itself"
            )
        level = [
            item
            for group in level
            for item in getattr(group, "filters", ())
            if isinstance(item, MetadataFilters)
        ]


def filterable_metadata(node: Any) -> dict[str, Any]:
    """The mapping filters see for a node: its metadata, plus ``doc_id`` / ``document_id`` /
    ``ref_doc_id`` (its source document id) unless the metadata already has those keys —
    the same extra keys LlamaIndex's vector stores expose to filters."""
    metadata = dict(node.metadata)
    ref = node.ref_doc_id
    if ref is not None:
        for key in _ID_KEYS:
            metadata.setdefault(key, ref)
    return metadata


def filter_key(filters: MetadataFilters) -> str:
    """A stable text key of a ``MetadataFilters`` object (for caching)."""
    check_filter_depth(filters)
    return filters.model_dump_json()


def _long_membership(item: Any) -> bool:
    return (
        isinstance(item, MetadataFilter)
        and item.operator in (FilterOperator.IN, FilterOperator.NIN)
        and isinstance(item.value, list)
        and len(item.value) >= _SET_LOOKUP_FROM
    )


def _membership_fn(lookup: Callable[[Any], Mapping[str, Any]], leaf: MetadataFilter) -> Any:
    """LlamaIndex's ``in`` / ``nin`` of one leaf, with the list looked up in a set (linear in
    the nodes, not nodes x values); a metadata value that cannot be hashed (a list) is
    compared with the list itself, as LlamaIndex does."""
    values = list(leaf.value)
    try:
        lookup_set: frozenset[Any] | None = frozenset(values)
    except TypeError:
        lookup_set = None
    negate = leaf.operator == FilterOperator.NIN

    def passes(position: Any) -> bool:
        metadata_value = lookup(position).get(leaf.key, None)
        if metadata_value is None:
            return negate
        try:
            found = metadata_value in (values if lookup_set is None else lookup_set)
        except TypeError:  # unhashable metadata value
            found = metadata_value in values
        return found != negate

    return passes


def build_filter_fn(
    lookup: Callable[[Any], Mapping[str, Any]], filters: MetadataFilters
) -> Callable[[Any], bool]:
    """``build_metadata_filter_fn`` that also takes nested ``MetadataFilters``.

    Flat filters go to LlamaIndex's function unchanged. In a nested one, each leaf is
    evaluated by that function alone and each nested ``MetadataFilters`` recursively, and
    the results are combined by the parent's condition (``and``: all, ``or``: any, ``not``:
    none), every clause evaluated (so a clause that cannot be evaluated raises
    ``TypeError`` whatever the others say, as in LlamaIndex). An ``in`` / ``nin`` list of
    16 values or more is looked up in a set (same result, linear in the nodes); filters
    nested past :data:`MAX_FILTER_DEPTH` levels are a ``ValueError``.
    """
    check_filter_depth(filters)
    if not any(
        isinstance(item, MetadataFilters) or _long_membership(item) for item in filters.filters
    ):
        return build_metadata_filter_fn(lookup, filters)
    parts = [
        build_filter_fn(lookup, item)
        if isinstance(item, MetadataFilters)
        else _membership_fn(lookup, item)
        if _long_membership(item)
        else build_metadata_filter_fn(lookup, MetadataFilters(filters=[item]))
        for item in filters.filters
    ]
    condition = filters.condition or FilterCondition.AND
    if condition not in (FilterCondition.AND, FilterCondition.OR, FilterCondition.NOT):
        raise ValueError(f"Invalid filter condition: {condition}")

    def passes(position: Any) -> bool:
        matches = [part(position) for part in parts]
        if condition == FilterCondition.AND:
            return all(matches)
        if condition == FilterCondition.OR:
            return any(matches)
        return not any(matches)

    return passes


def node_passes(metadata: Mapping[str, Any], filters: MetadataFilters | None) -> bool:
    """Whether one node's metadata passes ``filters`` (``None`` passes everything)."""
    if filters is None or not filters.filters:
        return True
    return bool(build_filter_fn(lambda _: metadata, filters)(""))


class FilterMaskCache:
    """Boolean masks of ``metadata[i]`` passing a filter, cached per distinct filter (LRU).

    Args:
        metadata: one metadata mapping per position.
        max_entries: distinct filters kept.
        owner: who holds the metadata, named in the error for a filter that cannot be
            evaluated (e.g. ``"BM25Retriever"``).
    """

    def __init__(
        self,
        metadata: Sequence[Mapping[str, Any]],
        max_entries: int = 64,
        owner: str = "this corpus",
    ) -> None:
        self._metadata = list(metadata)
        self._owner = owner
        self._max = max_entries
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._keys: frozenset[str] | None = None
        self._value_kinds: dict[str, frozenset[str]] | None = None

    def __len__(self) -> int:
        return len(self._metadata)

    @property
    def metadata(self) -> list[Mapping[str, Any]]:
        """The filterable metadata, one mapping per position."""
        return self._metadata

    @property
    def keys(self) -> frozenset[str]:
        """Every metadata key present at some position (what filters can test)."""
        if self._keys is None:
            keys: set[str] = set()
            for metadata in self._metadata:
                keys.update(metadata)
            self._keys = frozenset(keys)
        return self._keys

    @property
    def value_kinds(self) -> dict[str, frozenset[str]]:
        """Per key, the kinds of value held (``checks.metadata_value_kinds``)."""
        if self._value_kinds is None:
            from llama_index_ragtune.retrievers.checks import metadata_value_kinds

            self._value_kinds = metadata_value_kinds(self._metadata)
        return self._value_kinds

    def extend(self, metadata: Sequence[Mapping[str, Any]]) -> None:
        """Append positions (invalidates cached masks)."""
        with self._lock:
            self._metadata.extend(metadata)
            self._cache.clear()
            self._keys = None
            self._value_kinds = None

    def mask(self, filters: MetadataFilters) -> np.ndarray:
        """Read-only boolean array: ``True`` where the position passes ``filters``."""
        key = filter_key(filters)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        metadata = self._metadata
        passes = build_filter_fn(lambda i: metadata[int(i)], filters)
        try:
            mask = np.fromiter(
                (passes(i) for i in range(len(metadata))), dtype=bool, count=len(metadata)
            )
        except TypeError as exc:
            raise ValueError(
                f"metadata filter {filters.model_dump(mode='json')} cannot be evaluated on the "
                f"nodes of {self._owner} (LlamaIndex's in-memory filter semantics): {exc}; "
                "compare a key with values of the type its metadata holds"
            ) from exc
        mask.setflags(write=False)
        with self._lock:
            self._cache[key] = mask
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return mask
