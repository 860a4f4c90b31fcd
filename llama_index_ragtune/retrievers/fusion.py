"""Rank fusion as pure functions: reciprocal rank fusion and normalised-score fusion.

Every function takes one ranking per retriever ("side"), each a sequence of
``(node_id, score)`` pairs best first, and returns the fused ranking as a list of
:class:`FusedHit` (deduplicated by node id, best first). Nothing here knows about
LlamaIndex, so the same code serves the :class:`~llama_index_ragtune.retrievers.HybridRetriever`
and the offline parameter sweep of the retrieval benchmark.

* :func:`reciprocal_rank_fusion` — ``sum_i w_i / (k + rank_i)`` with 1-based ranks
  (Cormack et al., 2009). Unlike LlamaIndex's ``QueryFusionRetriever``, ``k`` is
  configurable and the per-side weights are honoured.
* :func:`score_fusion` — each side's scores normalised (``"minmax"`` to [0, 1], or
  ``"zscore"``), then a weighted sum. A node missing from a side gets that side's
  lowest normalised value (0 for min-max, the lowest z-score for z-score): it is
  treated as no better than the worst node the side returned. A side whose scores
  are all equal (including a single hit) gives 1.0 to its nodes and 0.0 to the others.

Ties are broken deterministically: by the best (lowest) rank on any side, then by
the side that holds it (earlier side first), then by node id.

Cost: the fused scores are a numpy vector over the union of the sides' node ids;
the ``top_k`` best (and any node tied with the last of them) are picked with
``numpy.partition``, and only those are sorted and built into :class:`FusedHit`.
The floats are those of a plain Python loop over the pairs (sums run in the same
order), so the ranking does not depend on how it is computed.

Example::

    from llama_index_ragtune.retrievers.fusion import fuse

    dense = [("a", 0.91), ("b", 0.85), ("c", 0.40)]
    sparse = [("c", 12.0), ("a", 7.5)]
    hits = fuse([dense, sparse], mode="rrf", weights=(0.5, 0.5), rrf_k=60)
    [h.node_id for h in hits]        # ['a', 'c', 'b']
    hits[0].ranks                    # (1, 2)  (1-based rank per side, None when absent)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Literal

import numpy as np

FusionMode = Literal["rrf", "minmax", "zscore"]
FUSION_MODES: tuple[str, ...] = ("rrf", "minmax", "zscore")
Ranking = Sequence[tuple[str, float]]

__all__ = [
    "FUSION_MODES",
    "FusedHit",
    "FusionMode",
    "fuse",
    "normalize_scores",
    "reciprocal_rank_fusion",
    "score_fusion",
]


@dataclass(frozen=True)
class FusedHit:
    """One fused result: the node id, its fused score, and its rank/score on every side.

    ``ranks[i]`` is the 1-based rank on side ``i`` and ``scores[i]`` the side's raw
    score, both ``None`` when side ``i`` did not return the node.
    """

    node_id: str
    score: float
    ranks: tuple[int | None, ...]
    scores: tuple[float | None, ...]


def _check_weights(n_sides: int, weights: Sequence[float] | None) -> tuple[float, ...]:
    if weights is None:
        return tuple(1.0 / n_sides for _ in range(n_sides)) if n_sides else ()
    weights = tuple(float(w) for w in weights)
    if len(weights) != n_sides:
        raise ValueError(
            f"got {len(weights)} weights for {n_sides} rankings; pass one weight per ranking"
        )
    if any(w < 0 or not math.isfinite(w) for w in weights):
        raise ValueError(f"weights must be finite and >= 0, got {weights}")
    if n_sides and sum(weights) == 0:
        raise ValueError("at least one weight must be > 0")
    return weights


class _Table:
    """The rankings deduplicated per side and laid out over the union of their node ids.

    Node ``j`` of the union (``ids[j]``, in order of first appearance, side by side) has
    1-based rank ``ranks[side, j]`` on each side (0 when absent); fused scores are numpy
    vectors over the union, so that only the ``top_k`` best nodes become :class:`FusedHit`.
    """

    __slots__ = ("ids", "positions", "ranks", "scores")

    def __init__(self, rankings: Sequence[Ranking]) -> None:
        sides = [_dedupe(ranking) for ranking in rankings]
        #: raw scores per side, in (deduplicated) rank order
        self.scores: list[list[float]] = [scores for _, scores in sides]
        self.ids: list[str] = list(dict.fromkeys(chain.from_iterable(ids for ids, _ in sides)))
        where = dict(zip(self.ids, range(len(self.ids)), strict=True))
        #: union positions of each side's nodes, in rank order
        self.positions = [
            np.fromiter(map(where.__getitem__, ids), dtype=np.intp, count=len(ids))
            for ids, _ in sides
        ]
        self.ranks = np.zeros((len(sides), len(self.ids)), dtype=np.int64)
        for side, positions in enumerate(self.positions):
            self.ranks[side, positions] = np.arange(1, len(positions) + 1)

    def zeros(self) -> np.ndarray:
        """A fused score of 0.0 for every node of the union."""
        return np.zeros(len(self.ids))

    def hits(self, fused: np.ndarray, top_k: int | None) -> list[FusedHit]:
        """Fused hits, best first (ties: best rank on any side, then side, then id)."""
        size = len(self.ids)
        limit = size if top_k is None else min(size, max(0, int(top_k)))
        if not limit:
            return []
        neg = -fused
        if limit < size and not np.isnan(neg).any():
            # every node at least as good as the limit-th: the top_k and all ties with it
            kth = np.partition(neg, limit - 1)[limit - 1]
            candidates = np.flatnonzero(neg <= kth)
        else:  # all nodes (a NaN score compares as a plain sort of every node has it)
            candidates = np.arange(size)
        ranks = self.ranks[:, candidates]
        ranks = np.where(ranks > 0, ranks, 1 << 30)
        chosen = candidates.tolist()
        keyed = sorted(
            zip(
                neg[candidates].tolist(),
                ranks.min(axis=0).tolist(),
                ranks.argmin(axis=0).tolist(),  # the earliest side holding the best rank
                [self.ids[j] for j in chosen],
                chosen,
                strict=True,
            )
        )[:limit]
        top = [j for *_, j in keyed]
        side_ranks = self.ranks[:, top].T.tolist()
        return [
            FusedHit(
                node_id,
                -neg_value,
                tuple(rank or None for rank in node_ranks),
                tuple(
                    self.scores[side][rank - 1] if rank else None
                    for side, rank in enumerate(node_ranks)
                ),
            )
            for (neg_value, _, _, node_id, _), node_ranks in zip(keyed, side_ranks, strict=True)
        ]


def _dedupe(ranking: Ranking) -> tuple[list[str], list[float]]:
    """A side's node ids and raw scores, keeping the first (best) occurrence of each id."""
    pairs = list(ranking)
    ids = [node_id for node_id, _ in pairs]
    raw = [score for _, score in pairs]
    if len(set(ids)) < len(ids):
        first: dict[str, int] = {}
        for i, node_id in enumerate(ids):
            first.setdefault(node_id, i)
        keep = list(first.values())  # increasing: rank order
        ids, raw = [ids[i] for i in keep], [raw[i] for i in keep]
    return ids, list(map(float, raw))


def reciprocal_rank_fusion(
    rankings: Sequence[Ranking],
    weights: Sequence[float] | None = None,
    k: float = 60.0,
) -> list[FusedHit]:
    """Weighted reciprocal rank fusion: ``score = sum_i weights[i] / (k + rank_i)``.

    Args:
        rankings: one ``[(node_id, score), ...]`` per side, best first (scores unused).
        weights: one non-negative weight per side (default: equal weights).
        k: smoothing constant (> 0); small ``k`` favours top ranks more.
    """
    return _rrf(rankings, weights, k, None)


def _rrf(
    rankings: Sequence[Ranking], weights: Sequence[float] | None, k: float, top_k: int | None
) -> list[FusedHit]:
    if k <= 0:
        raise ValueError(f"rrf k must be > 0, got {k}")
    weights = _check_weights(len(rankings), weights)
    table = _Table(rankings)
    fused = table.zeros()
    for w, positions in zip(weights, table.positions, strict=True):
        if w:
            fused[positions] += w / (k + np.arange(1, len(positions) + 1))
    return table.hits(fused, top_k)


def normalize_scores(
    scores: Sequence[float], method: Literal["minmax", "zscore"]
) -> tuple[list[float], float]:
    """Normalise one side's scores; returns (normalised scores, value for a missing node).

    Degenerate input (all scores equal) gives 1.0 for every score and 0.0 for missing nodes.

    Example::

        normalize_scores([12.0, 6.0, 3.0], "minmax")   # ([1.0, 0.333..., 0.0], 0.0)
    """
    with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN scores: as Python floats
        values, fill = _normalize([float(s) for s in scores], method)
    return values.tolist(), fill


def _normalize(values: list[float], method: str) -> tuple[np.ndarray, float]:
    """:func:`normalize_scores` of float ``values``, as an array (the sums run left to right
    in Python, the element-wise steps in numpy: the same floats either way)."""
    if not values:
        return np.zeros(0), 0.0
    if method == "minmax":
        low, high = min(values), max(values)
        if high - low <= 1e-12 * max(1.0, abs(high)):
            return np.ones(len(values)), 0.0
        return (np.array(values) - low) / (high - low), 0.0
    if method == "zscore":
        mean = sum(values) / len(values)
        std = math.sqrt(sum([(v - mean) ** 2 for v in values]) / len(values))
        if std <= 1e-12 * max(1.0, abs(mean)):
            return np.ones(len(values)), 0.0
        normed = (np.array(values) - mean) / std
        return normed, float(normed.min())
    raise ValueError(f"unknown normalisation {method!r}; use 'minmax' or 'zscore'")


def score_fusion(
    rankings: Sequence[Ranking],
    weights: Sequence[float] | None = None,
    method: Literal["minmax", "zscore"] = "minmax",
) -> list[FusedHit]:
    """Weighted sum of per-side normalised scores (min-max or z-score).

    A node absent from a side gets that side's lowest normalised value (see module docs).
    """
    return _score_fusion(rankings, weights, method, None)


def _score_fusion(
    rankings: Sequence[Ranking], weights: Sequence[float] | None, method: str, top_k: int | None
) -> list[FusedHit]:
    weights = _check_weights(len(rankings), weights)
    table = _Table(rankings)
    fused = table.zeros()
    with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN scores: as Python floats
        for w, positions, scores in zip(weights, table.positions, table.scores, strict=True):
            if not w:
                continue
            values, fill = _normalize(scores, method)
            if fill:  # every node gets the fill; nodes on this side: their value instead
                fused += w * fill
                values = values - fill
            fused[positions] += w * values
    return table.hits(fused, top_k)


def fuse(
    rankings: Sequence[Ranking],
    mode: FusionMode = "rrf",
    weights: Sequence[float] | None = None,
    rrf_k: float = 60.0,
    top_k: int | None = None,
) -> list[FusedHit]:
    """Fuse rankings with ``mode`` (``"rrf"``, ``"minmax"`` or ``"zscore"``); keep ``top_k`` hits."""
    if mode == "rrf":
        return _rrf(rankings, weights, rrf_k, top_k)
    if mode in ("minmax", "zscore"):
        return _score_fusion(rankings, weights, mode, top_k)
    raise ValueError(f"unknown fusion mode {mode!r}; choose one of {', '.join(FUSION_MODES)}")
