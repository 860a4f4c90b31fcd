"""Metadata filters compiled to boolean masks over a fixed list of nodes.

``MetadataFilters`` are evaluated with LlamaIndex's own
``build_metadata_filter_fn`` (same operators and semantics as the in-memory
vector store), once per distinct filter, and the resulting mask is cached, so a
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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from llama_index.core.vector_stores.types import MetadataFilters
from llama_index.core.vector_stores.utils import build_metadata_filter_fn

__all__ = ["FilterMaskCache", "filter_key", "filterable_metadata", "node_passes"]

_ID_KEYS = ("doc_id", "document_id", "ref_doc_id")


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
    return filters.model_dump_json()


def node_passes(metadata: Mapping[str, Any], filters: MetadataFilters | None) -> bool:
    """Whether one node's metadata passes ``filters`` (``None`` passes everything)."""
    if filters is None or not filters.filters:
        return True
    return bool(build_metadata_filter_fn(lambda _: metadata, filters)(""))


class FilterMaskCache:
    """Boolean masks of ``metadata[i]`` passing a filter, cached per distinct filter (LRU).

    Args:
        metadata: one metadata mapping per position.
        max_entries: distinct filters kept.
    """

    def __init__(self, metadata: Sequence[Mapping[str, Any]], max_entries: int = 64) -> None:
        self._metadata = list(metadata)
        self._max = max_entries
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._keys: frozenset[str] | None = None

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

    def extend(self, metadata: Sequence[Mapping[str, Any]]) -> None:
        """Append positions (invalidates cached masks)."""
        with self._lock:
            self._metadata.extend(metadata)
            self._cache.clear()
            self._keys = None

    def mask(self, filters: MetadataFilters) -> np.ndarray:
        """Read-only boolean array: ``True`` where the position passes ``filters``."""
        key = filter_key(filters)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        metadata = self._metadata
        passes = build_metadata_filter_fn(lambda i: metadata[int(i)], filters)
        try:
            mask = np.fromiter(
                (passes(i) for i in range(len(metadata))), dtype=bool, count=len(metadata)
            )
        except TypeError as exc:
            raise ValueError(
                f"metadata filter {filters.model_dump()} cannot be evaluated on this corpus: {exc}"
            ) from exc
        mask.setflags(write=False)
        with self._lock:
            self._cache[key] = mask
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return mask
