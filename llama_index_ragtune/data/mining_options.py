"""The options of ``HardNegativeMiner``: the known sources, the defaults and the checks.

Every wrong option is a ``ValueError`` (a ``TypeError`` for a wrong kind of
``curated``) that names the argument, raised when the miner is made, before any
work.

Example::

    from llama_index_ragtune.data import HardNegativeMiner

    HardNegativeMiner(sources=("bm25", "bm25"), curated={}, show_progress=False).sources
    # ['bm25', 'curated']
    HardNegativeMiner(range_min=5, range_max=5)
    # ValueError: need 0 <= range_min < range_max, got range_min=5, range_max=5
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from llama_index_ragtune.data.schema import RetrievalDataset, _fmt_ids
from llama_index_ragtune.retrievers.bm25_index import ANALYZERS, check_bm25_language

MINED_SOURCES = ("bm25", "dense")
KNOWN_SOURCES = (*MINED_SOURCES, "curated")
CuratedFn = Callable[[str, str, list[str], RetrievalDataset], Iterable[str]]
DEFAULT_RELATIVE_MARGIN: Mapping[str, float] = MappingProxyType({"dense": 0.95})


def check_miner_options(
    *,
    sources: Sequence[str],
    num_negatives: int | Mapping[str, int],
    range_min: int,
    range_max: int,
    sampling: str,
    max_score: float | Mapping[str, float] | None,
    margin: float | Mapping[str, float] | None,
    relative_margin: float | Mapping[str, float] | None,
    cross_encoder: Any,
    cross_encoder_max_score: float | None,
    cross_encoder_margin: float | None,
    curated: Mapping[str, Sequence[str]] | CuratedFn | None,
    bm25_language: str | None,
    bm25_analyzer: str,
    encode_batch_size: int,
    query_batch_size: int,
) -> list[str]:
    """The sources to mine, in order and without repeats (``"curated"`` added when
    ``curated`` is given), once every option of ``HardNegativeMiner`` is checked.

    Raises ``ValueError`` (``TypeError`` for ``curated``) naming the argument; warns about
    a ``relative_margin`` below 0.5 (likely sentence-transformers' convention, reversed).
    See the module docstring for an example.
    """
    if isinstance(sources, str):  # "bm25" is one source, not four letters
        sources = [sources]
    sources = list(dict.fromkeys(sources))
    if curated is not None and "curated" not in sources:
        sources.append("curated")
    unknown = [s for s in sources if s not in KNOWN_SOURCES]
    if unknown:
        raise ValueError(
            f"unknown negative source(s) {_fmt_ids(unknown)}; choose from {KNOWN_SOURCES}"
        )
    if not sources:
        raise ValueError("HardNegativeMiner needs at least one source")
    if "curated" in sources and curated is None:
        raise ValueError(
            "source 'curated' needs `curated=` (a {query_id: doc_ids} mapping or a callable)"
        )
    if curated is not None and not isinstance(curated, Mapping) and not callable(curated):
        raise TypeError(
            f"curated must be a {{query_id: doc_ids}} mapping or a callable, got {type(curated).__name__}"
        )
    if not 0 <= range_min < range_max:
        raise ValueError(
            f"need 0 <= range_min < range_max, got range_min={range_min}, range_max={range_max}"
        )
    for name, value, check in (
        ("num_negatives", num_negatives, _whole),
        ("max_score", max_score, _finite),
        ("margin", margin, _finite),
    ):
        for v in value.values() if isinstance(value, Mapping) else [value]:
            check(v, name)
    for name, value in (
        ("query_batch_size", query_batch_size),
        ("encode_batch_size", encode_batch_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if bm25_analyzer not in ANALYZERS:
        raise ValueError(
            f"bm25_analyzer must be one of {', '.join(ANALYZERS)}, got {bm25_analyzer!r} "
            "(the analyzer of the BM25 retriever the negatives are mined for)"
        )
    check_bm25_language(bm25_language, "HardNegativeMiner: bm25_language")
    if sampling not in ("top", "random"):
        raise ValueError(f"sampling must be 'top' or 'random', got {sampling!r}")
    for name, value in (("relative_margin", relative_margin),):
        for v in value.values() if isinstance(value, Mapping) else [value]:
            if v is not None and not 0 < v <= 1:
                raise ValueError(
                    f"{name} must be in (0, 1] (0.95 = skip above 95% of the positive's score), got {v}"
                )
            if v is not None and v < 0.5:
                warnings.warn(
                    f"relative_margin={v} skips every negative above {v:.0%} of the positive's score; "
                    f"for sentence-transformers' convention use {1 - v:g}",
                    stacklevel=3,  # the caller of HardNegativeMiner(...)
                )
    if (
        cross_encoder is not None
        and cross_encoder_max_score is None
        and cross_encoder_margin is None
    ):
        raise ValueError("cross_encoder needs cross_encoder_max_score and/or cross_encoder_margin")
    return sources


def _whole(value: Any, name: str) -> None:
    """``ValueError`` unless ``value`` is a whole number >= 0 (negatives per query)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0 per source, got {value!r}")


def _finite(value: Any, name: str) -> None:
    """``ValueError`` unless ``value`` is None or a finite number (a score bound)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number or None, got {value!r}")
