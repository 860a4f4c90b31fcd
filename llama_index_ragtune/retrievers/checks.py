"""Input checks shared by the retrievers: arguments, query text, node text, filter keys.

Every check raises at construction (or when filters are set) with a message that names
the argument, instead of failing later deep inside FAISS, bm25s or a tokenizer.

* :func:`positive_int`, :func:`unit_float`, :func:`positive_float`: numeric arguments
  (a bool, a float such as ``2.5``, a string or ``None`` is refused, never rounded).
* :func:`clean_text`: lone UTF-16 surrogates (which cannot be encoded as UTF-8 and crash
  Hugging Face tokenizers) become U+FFFD, NUL characters become spaces; other text is
  returned unchanged.
* :func:`prepare_query`: a cleaned ``QueryBundle``, or ``None`` for a query with no text
  and no precomputed embedding (retrievers return no results for it).
* :func:`check_query_vector`: a query embedding with NaN, infinity or only zeros.
* :func:`query_embedding_errors`: a model's query vector that is not a list of numbers.
* :func:`check_nodes`: a list of distinct LlamaIndex nodes.
* :func:`distinct_nodes`: retrieved nodes with each node id once, at its first place.
* :func:`split_blank_nodes`: nodes whose embedded text is empty or whitespace only.
* :func:`check_filter_keys`: ``MetadataFilters`` naming keys that no node has, or comparing
  a key with values of a kind no node holds there (``"1"`` for numbers).

Example::

    from llama_index_ragtune.retrievers.checks import positive_int, clean_text

    positive_int(10, "similarity_top_k")      # 10
    clean_text("caf\\ud800e")                 # 'caf\\ufffde'
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters
from pydantic import ValidationError

from llama_index_ragtune._invisible import is_blank

logger = logging.getLogger(__name__)

__all__ = [
    "CheckedAttribute",
    "PositiveIntAttribute",
    "check_filter_keys",
    "check_query_vector",
    "query_embedding_errors",
    "metadata_value_kinds",
    "check_nodes",
    "clean_text",
    "non_negative_float",
    "positive_float",
    "positive_int",
    "prepare_query",
    "split_blank_nodes",
    "unit_float",
]

_SURROGATES = re.compile("[\ud800-\udfff]")


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; ``TypeError``/``ValueError`` naming ``name`` otherwise.

    Example::

        positive_int(5, "sparse_top_k")    # 5; positive_int(2.5, ...) raises TypeError
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an integer >= {minimum}, got {type(value).__name__} {value!r}"
        )
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


class CheckedAttribute:
    """A class attribute that checks every assignment with ``check(value, name)`` (the
    function the constructor uses), so a setting changed after construction fails like the
    constructor would instead of giving wrong results or an obscure error at query time.

    Example::

        class MyRetriever(BaseRetriever):
            alpha = CheckedAttribute(unit_float)

        retriever.alpha = 5.0    # ValueError: alpha must be a number in [0, 1], got 5.0
    """

    def __init__(self, check: Callable[[Any, str], Any]) -> None:
        self.check = check

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.slot = name, f"_{name}_checked"

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        return self if obj is None else getattr(obj, self.slot)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj, self.slot, self.check(value, self.name))


class PositiveIntAttribute(CheckedAttribute):
    """A class attribute that checks every assignment with :func:`positive_int`, so
    ``retriever.similarity_top_k = 0`` after construction fails like the constructor would.

    Example::

        class MyRetriever(BaseRetriever):
            similarity_top_k = PositiveIntAttribute()
    """

    def __init__(self) -> None:
        super().__init__(positive_int)


def _real(value: Any, name: str, requirement: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {requirement}, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be {requirement}, got {value}")
    return value


def unit_float(value: Any, name: str) -> float:
    """``value`` as a float in [0, 1]; ``TypeError``/``ValueError`` naming ``name`` otherwise.

    Example::

        unit_float(0.3, "alpha")    # 0.3
    """
    value = _real(value, name, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value}")
    return value


def non_negative_float(value: Any, name: str) -> float:
    """``value`` as a finite float >= 0; ``TypeError``/``ValueError`` naming ``name`` otherwise.

    Example::

        non_negative_float(1.2, "k1")    # 1.2
    """
    value = _real(value, name, "a finite number >= 0")
    if value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def positive_float(value: Any, name: str) -> float:
    """``value`` as a finite float > 0; ``TypeError``/``ValueError`` naming ``name`` otherwise.

    Example::

        positive_float(60, "rrf_k")    # 60.0
    """
    value = _real(value, name, "a finite number > 0")
    if value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def clean_text(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD and NUL characters by spaces.

    Example::

        clean_text("a\\x00b")    # 'a b'
    """
    if "\x00" in text:
        text = text.replace("\x00", " ")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATES.sub("\ufffd", text)
    return text


def prepare_query(query_bundle: QueryBundle) -> QueryBundle | None:
    """A cleaned copy of ``query_bundle``; ``None`` when it has no text and no embedding.

    Always a copy: the dense side writes the query vector it computes into the bundle it
    is given, and a caller's bundle that kept it would hand this encoder's vector to the
    next retriever it is passed to (a tuned and a starting bundle compared on one
    ``QueryBundle`` would both search with the first one's vector). A vector the caller
    set is kept and used.

    Example::

        prepare_query(QueryBundle("   "))    # None: nothing to search for
    """
    if not isinstance(query_bundle, QueryBundle) or not isinstance(query_bundle.query_str, str):
        raise TypeError(
            f"the query must be a string or a QueryBundle with a string query_str, got "
            f"{type(query_bundle).__name__}"
        )
    text = clean_text(query_bundle.query_str)
    custom = query_bundle.custom_embedding_strs
    if custom is not None:
        custom = [clean_text(s) for s in custom if isinstance(s, str) and not is_blank(s)]
    if query_bundle.embedding is None and is_blank(query_bundle.query_str) and not custom:
        return None
    return QueryBundle(
        query_str=text,
        custom_embedding_strs=custom or None,
        embedding=query_bundle.embedding,
        image_path=query_bundle.image_path,
    )


@contextlib.contextmanager
def query_embedding_errors(model: Any, query_str: str) -> Iterator[None]:
    """Turn what LlamaIndex raises for a query vector that is not a list of numbers (``None``,
    text, a nested list: a pydantic error about ``EmbeddingEndEvent``) into a ``TypeError``
    naming the embedding model and the query.

    Example::

        with query_embedding_errors(embed_model, "apple return"):
            vector = embed_model.get_query_embedding("apple return")
    """
    try:
        yield
    except ValidationError as exc:
        if "Embedding" not in exc.title:  # another model's validation: not ours to name
            raise
        shown = query_str if len(query_str) <= 80 else query_str[:77] + "..."
        first = exc.errors()[0] if exc.errors() else {}
        got = first.get("input", "?")
        raise TypeError(
            f"the embedding model {type(model).__name__} returned "
            f"{type(got).__name__} {str(got)[:60]!r} in the query embedding of {shown!r}, not a "
            "list of numbers; it must return one float per dimension"
        ) from exc


def check_query_vector(
    vector: Sequence[float], query_str: str, dimension: int | None = None
) -> bool:
    """Whether the query vector can rank documents: ``False`` when it is all zeros (every
    document equally similar: a static embedding model gives zeros to a text of unknown
    tokens, e.g. a product code, so the caller searches with BM25 alone); ``ValueError``
    naming the query for another size than the index's ``dimension`` (when known) or a NaN
    or infinite value (a broken model, which FAISS, Qdrant and Milvus refuse in their own
    words or rank arbitrarily).

    Example::

        check_query_vector([0.6, 0.8], "apple return")       # True
        check_query_vector([0.0, 0.0], "XK-9")               # False: BM25 alone
        check_query_vector([float("nan"), 0.0], "apple")     # ValueError: ... NaN
    """
    shown = query_str if len(query_str) <= 80 else query_str[:77] + "..."
    try:
        values = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError) as exc:  # text, None, ragged lists
        raise TypeError(
            f"the query embedding of {shown!r} is not a list of numbers ({exc}); the embedding "
            "model must return one float per dimension"
        ) from exc
    if dimension is not None and values.shape != (dimension,):
        raise ValueError(
            f"the query embedding of {shown!r} has shape {values.shape} but the index holds "
            f"{dimension}-d vectors; embed the query with the index's embedding model"
        )
    if values.ndim == 1 and values.size and np.isfinite(values).all():
        peak = float(np.abs(values).max())
        if peak > float(np.finfo(np.float32).max):  # FAISS, Qdrant, Milvus hold float32
            raise ValueError(
                f"the query embedding of {shown!r} holds {peak:.3g}, past the float32 range "
                "the vector indexes search in (it would become infinite); check the "
                "embedding model, or normalise its vectors"
            )
    if not np.isfinite(values).all():
        raise ValueError(
            f"the query embedding of {shown!r} holds NaN or infinite values; check the "
            "embedding model (an fp16 overflow, damaged weights), or search this query with "
            "BM25Retriever alone"
        )
    if values.size and not values.any():
        logger.warning(
            "the query embedding of %r is all zeros (the embedding model knows none of its "
            "tokens): searched with BM25 alone",
            shown,
        )
        return False
    return True


def check_nodes(nodes: Any, where: str) -> list[BaseNode]:
    """``nodes`` as a list of ``BaseNode`` with unique ids; ``TypeError``/``ValueError`` otherwise.

    Example::

        nodes = check_nodes(nodes, "BM25Retriever")
    """
    if isinstance(nodes, (str, bytes, BaseNode)) or not isinstance(nodes, Iterable):
        raise TypeError(f"{where} needs a list of llama_index nodes, got {type(nodes).__name__}")
    nodes = list(nodes)
    seen: set[str] = set()
    for position, node in enumerate(nodes):
        if not isinstance(node, BaseNode):
            raise TypeError(
                f"{where} needs llama_index nodes (BaseNode, e.g. TextNode); item {position} is "
                f"{type(node).__name__}"
            )
        if node.node_id in seen:
            raise ValueError(
                f"duplicate node id {node.node_id!r} in the nodes given to {where}; node ids "
                "must be unique"
            )
        seen.add(node.node_id)
    return nodes


def distinct_nodes(nodes: Iterable[NodeWithScore]) -> list[NodeWithScore]:
    """``nodes`` with each node id once, at its first (best retrieved) place: the same
    passage twice would take two places of a cut and reach the LLM as two sources.

    Example::

        [n.node.node_id for n in distinct_nodes(hits)]   # ['a', 'b'] for hits a, b, a
    """
    seen: set[str] = set()
    out = []
    for item in nodes:
        if item.node.node_id not in seen:
            seen.add(item.node.node_id)
            out.append(item)
    return out


def split_blank_nodes(
    nodes: Sequence[BaseNode], metadata_mode: MetadataMode = MetadataMode.EMBED
) -> tuple[list[BaseNode], list[str]]:
    """``(nodes with text, ids of nodes whose text in metadata_mode is blank)``: empty,
    whitespace, or only invisible characters (zero-width spaces, a BOM): nothing to embed
    or match (:func:`llama_index_ragtune._invisible.is_blank`).

    Example::

        kept, blank_ids = split_blank_nodes(nodes)
    """
    kept, blank = [], []
    for node in nodes:
        if not is_blank(node.get_content(metadata_mode=metadata_mode)):
            kept.append(node)
        else:
            blank.append(node.node_id)
    return kept, blank


def _filter_leaves(filters: MetadataFilters) -> list[MetadataFilter]:
    leaves = []
    for item in filters.filters:
        if isinstance(item, MetadataFilters):
            leaves.extend(_filter_leaves(item))
        elif isinstance(item, MetadataFilter):
            leaves.append(item)
    return leaves


def _value_kind(value: Any) -> str | None:
    """``"number"`` or ``"text"`` (the kinds a filter can confuse), else ``None``."""
    if isinstance(value, str):
        return "text"
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return "number"
    return None


def _kinds(value: Any) -> set[str]:
    values = value if isinstance(value, (list, tuple)) else [value]
    return {kind for item in values if (kind := _value_kind(item)) is not None}


def metadata_value_kinds(metadata: Iterable[Mapping[str, Any]]) -> dict[str, frozenset[str]]:
    """For each metadata key, the kinds of value the nodes hold under it (``"number"``,
    ``"text"``; a list's items counted), for :func:`check_filter_keys`.

    Example::

        metadata_value_kinds([{"n": 1, "tags": ["a"]}, {"n": 2.5}])   # {'n': {'number'}, 'tags': {'text'}}

    A NaN value also adds ``"nan"`` (see :func:`check_filter_keys`).
    """
    kinds: dict[str, set[str]] = {}
    for mapping in metadata:
        for key, value in mapping.items():
            found = kinds.setdefault(key, set())
            found.update(_kinds(value))
            if _is_nan(value):  # what is_empty misses (check_filter_keys)
                found.add("nan")
    return {key: frozenset(found) for key, found in kinds.items()}


def _is_nan(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value != value


# operators comparing a node's value with the filter's (a text match or is_empty compares none)
_COMPARING = frozenset(
    {
        FilterOperator.EQ,
        FilterOperator.NE,
        FilterOperator.GT,
        FilterOperator.LT,
        FilterOperator.GTE,
        FilterOperator.LTE,
        FilterOperator.IN,
        FilterOperator.NIN,
        FilterOperator.ANY,
        FilterOperator.ALL,
        FilterOperator.CONTAINS,
    }
)


def check_filter_keys(
    filters: MetadataFilters | None,
    known_keys: Collection[str],
    where: str,
    value_kinds: Mapping[str, Collection[str]] | None = None,
) -> None:
    """Raise ``ValueError`` if ``filters`` compares with NaN, names a key that no node's
    metadata has, or (with ``value_kinds``, from :func:`metadata_value_kinds`) compares a key
    with text where every node holds a number there, or with a number where every node holds
    text, or asks ``is_empty`` of a key some node holds NaN under (not empty for LlamaIndex:
    those nodes would be missed; comparisons read NaN as a missing value already).

    Such a filter can never match (``is_empty`` excepted), so it would silently return
    nothing (or, negated, everything); the usual causes are a misspelt key and a number
    passed as a string (``"1"`` from a URL's query string for metadata ``1``).

    Example::

        check_filter_keys(filters, {"store", "department"}, "BM25Retriever")
    """
    if filters is None:
        return
    from llama_index_ragtune.retrievers.filters import check_filter_depth

    check_filter_depth(filters, where)
    leaves = _filter_leaves(filters)
    for leaf in leaves:
        values = leaf.value if isinstance(leaf.value, (list, tuple)) else [leaf.value]
        if leaf.operator in _COMPARING and any(
            isinstance(v, float) and math.isnan(v) for v in values
        ):
            raise ValueError(
                f"metadata filter {leaf.key!r} {leaf.operator.value} {leaf.value!r} holds NaN, "
                f"which equals and orders with nothing (on {where} it would match no node, or "
                "every node when negated): a missing value read as NaN? Filter with the "
                "is_empty operator for nodes without the key, or pass a number"
            )
    unknown = sorted(
        {leaf.key for leaf in leaves if leaf.operator != FilterOperator.IS_EMPTY} - set(known_keys)
    )
    if unknown:
        known = ", ".join(sorted(known_keys)[:20]) or "none"
        raise ValueError(
            f"metadata filter key(s) {unknown} appear in no node indexed by {where} (keys present: "
            f"{known}); fix the key name, or add that metadata to the nodes before indexing"
        )
    for leaf in leaves if value_kinds is not None else ():
        held = set(value_kinds.get(leaf.key, ()))
        if leaf.operator == FilterOperator.IS_EMPTY and "nan" in held:
            raise ValueError(
                f"metadata filter {leaf.key!r} is_empty: nodes indexed by {where} hold NaN under "
                f"{leaf.key!r}, which LlamaIndex's is_empty does not count as empty (only None, "
                "'' and []), so those nodes would be left out: a missing value read as NaN "
                "(pandas)? Store None there, or leave the key out of those nodes' metadata"
            )
        held.discard("nan")
        given = _kinds(leaf.value)
        if leaf.operator in _COMPARING and held and given and not given & held:
            given_kind, held_kind = (
                ("string", "number") if "number" in held else ("number", "string")
            )
            raise ValueError(
                f"metadata filter {leaf.key!r} {leaf.operator.value} {leaf.value!r} compares "
                f"with a {given_kind}, but every node indexed by {where} holds a {held_kind} "
                f"under {leaf.key!r}, so it can never match; pass the value as a {held_kind} "
                f"({_as_kind(leaf.value, held_kind)}), or store the metadata with the type you "
                "filter by"
            )


def _as_kind(value: Any, kind: str) -> str:
    """An example of ``value`` written as a ``kind`` (``"number"`` / ``"string"``)."""
    if isinstance(value, (list, tuple)):
        return "each item of the list"
    if kind == "string":
        return f"{str(value)!r}, not {value!r}"
    try:
        number = float(value)
    except ValueError:
        return f"a number, not {value!r}"
    shown = int(number) if number.is_integer() else number
    return f"{shown!r}, not {value!r}"
