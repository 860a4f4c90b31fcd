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
from typing import Literal

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
    """Deduplicated rankings plus, per node id, its 1-based rank and raw score on every side."""

    __slots__ = ("cleaned", "ranks", "scores")

    def __init__(self, rankings: Sequence[Ranking]) -> None:
        n = len(rankings)
        self.cleaned: list[list[tuple[str, float]]] = []
        self.ranks: dict[str, list[int | None]] = {}
        self.scores: dict[str, list[float | None]] = {}
        for side, ranking in enumerate(rankings):
            clean: list[tuple[str, float]] = []
            seen: set[str] = set()
            for node_id, score in ranking:
                if node_id in seen:  # keep the first (best) occurrence
                    continue
                seen.add(node_id)
                score = float(score)
                clean.append((node_id, score))
                ranks = self.ranks.get(node_id)
                if ranks is None:
                    ranks = self.ranks[node_id] = [None] * n
                    self.scores[node_id] = [None] * n
                ranks[side] = len(clean)
                self.scores[node_id][side] = score
            self.cleaned.append(clean)

    def hits(self, fused: dict[str, float], top_k: int | None) -> list[FusedHit]:
        """Fused hits, best first (ties: best rank on any side, then side, then id)."""
        keyed = []
        for node_id, value in fused.items():
            best_rank, best_side = 1 << 30, 0
            for side, rank in enumerate(self.ranks[node_id]):
                if rank is not None and rank < best_rank:
                    best_rank, best_side = rank, side
            keyed.append((-value, best_rank, best_side, node_id))
        keyed.sort()
        if top_k is not None:
            keyed = keyed[: max(0, int(top_k))]
        return [
            FusedHit(node_id, -neg, tuple(self.ranks[node_id]), tuple(self.scores[node_id]))
            for neg, _, _, node_id in keyed
        ]


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
    fused: dict[str, float] = dict.fromkeys(table.ranks, 0.0)
    for w, ranking in zip(weights, table.cleaned, strict=True):
        if w:
            for rank, (node_id, _) in enumerate(ranking, start=1):
                fused[node_id] += w / (k + rank)
    return table.hits(fused, top_k)


def normalize_scores(
    scores: Sequence[float], method: Literal["minmax", "zscore"]
) -> tuple[list[float], float]:
    """Normalise one side's scores; returns (normalised scores, value for a missing node).

    Degenerate input (all scores equal) gives 1.0 for every score and 0.0 for missing nodes.
    """
    values = [float(s) for s in scores]
    if not values:
        return [], 0.0
    if method == "minmax":
        low, high = min(values), max(values)
        if high - low <= 1e-12 * max(1.0, abs(high)):
            return [1.0] * len(values), 0.0
        span = high - low
        return [(v - low) / span for v in values], 0.0
    if method == "zscore":
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        if std <= 1e-12 * max(1.0, abs(mean)):
            return [1.0] * len(values), 0.0
        normed = [(v - mean) / std for v in values]
        return normed, min(normed)
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
    fused: dict[str, float] = dict.fromkeys(table.ranks, 0.0)
    for w, ranking in zip(weights, table.cleaned, strict=True):
        if not w:
            continue
        values, fill = normalize_scores([score for _, score in ranking], method)
        if fill:
            for node_id in fused:
                fused[node_id] += w * fill
            values = [
                v - fill for v in values
            ]  # nodes on this side: replace the fill with their value
        for (node_id, _), value in zip(ranking, values, strict=True):
            fused[node_id] += w * value
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
