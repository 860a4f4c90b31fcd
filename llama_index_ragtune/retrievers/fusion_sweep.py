"""Choose the hybrid's fusion mode and weights on queries with known answers.

The presets in :mod:`~llama_index_ragtune.retrievers.defaults` were chosen on
SciFact train queries; another corpus may prefer another mode (on one BEIR set
with dozens of graded positives per query, z-score fusion was 0.011 nDCG@10
below min-max there). When training queries with relevance judgements exist,
``choose_fusion`` scores every setting of a grid offline, from one dense and
one BM25 ranking per query, with the same :func:`~llama_index_ragtune.retrievers.fusion.fuse`
the retriever uses, and returns the best one as ``HybridRetriever`` arguments.

Selection: the highest mean nDCG@10; among the settings within ``tolerance``
of it, the highest Recall@100 (a deeper candidate list at no cost in nDCG@10
is what a reranker needs). Choose on training or validation queries, never on
the queries you report. The chosen setting's own score flatters it (the best of
hundreds of settings on the queries it was picked on); ``cross_validated_ndcg``
scores each query with the setting chosen on the other folds, an honest estimate
to compare with the preset (the tuning pipeline serves the choice only when that
estimate wins).

Example::

    from llama_index_ragtune.retrievers.fusion_sweep import choose_fusion

    # rankings: {qid: (dense [(doc, score), ...], bm25 [(doc, score), ...])}, to depth 200
    choice = choose_fusion(rankings, qrels)
    choice.params          # {'fusion_mode': 'minmax', 'alpha': 0.45, 'rrf_k': 60.0, ...}
    HybridRetriever.from_defaults(nodes=nodes, **choice.params)
"""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm.auto import tqdm

from llama_index_ragtune.evaluation.metrics import ndcg_at_k, recall_at_k
from llama_index_ragtune.retrievers.fusion import fuse

MAX_DEPTH = 200
DEPTHS = (20, 50, 100, 200)
ALPHAS = tuple(round(0.1 * i, 2) for i in range(1, 10))
RRF_KS = (1.0, 5.0, 10.0, 20.0, 40.0, 60.0, 100.0)
TOLERANCE = 0.001

Setting = tuple[str, float, float, int, int]  # mode, alpha, rrf_k, dense depth, sparse depth
Rankings = Mapping[str, tuple[Sequence[tuple[str, float]], Sequence[tuple[str, float]]]]

__all__ = [
    "FusionChoice",
    "best_per_mode",
    "choose_fusion",
    "cross_validated_ndcg",
    "score_setting",
    "setting_as_dict",
    "sweep",
]


@dataclass(frozen=True)
class FusionChoice:
    """The chosen fusion setting, its scores, and the best setting of every mode."""

    mode: str
    alpha: float
    rrf_k: float
    dense_top_k: int
    sparse_top_k: int
    ndcg_at_10: float
    recall_at_100: float
    num_queries: int
    best_per_mode: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)
    settings_scored: int = 0

    @property
    def params(self) -> dict[str, Any]:
        """Keyword arguments for ``HybridRetriever`` / ``HybridRetriever.from_defaults``."""
        return {
            "fusion_mode": self.mode,
            "alpha": self.alpha,
            "rrf_k": self.rrf_k,
            "dense_top_k": self.dense_top_k,
            "sparse_top_k": self.sparse_top_k,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _query_values(
    rankings: Rankings, qrels: Mapping[str, Mapping[str, int]], setting: Setting
) -> Iterator[tuple[str, float, float]]:
    """``(qid, nDCG@10, Recall@100)`` of each query of ``rankings`` under one setting."""
    mode, alpha, rrf_k, dense_depth, sparse_depth = setting
    for qid, (dense, sparse) in rankings.items():
        hits = fuse(
            [list(dense[:dense_depth]), list(sparse[:sparse_depth])],
            mode=mode,
            weights=(alpha, 1 - alpha),
            rrf_k=rrf_k,
            top_k=100,
        )
        ranked = [h.node_id for h in hits]
        yield qid, ndcg_at_k(ranked, qrels[qid], 10), recall_at_k(ranked, qrels[qid], 100)


def score_setting(
    rankings: Rankings,
    qrels: Mapping[str, Mapping[str, int]],
    mode: str,
    alpha: float,
    rrf_k: float,
    dense_depth: int,
    sparse_depth: int,
) -> tuple[float, float]:
    """Mean (nDCG@10, Recall@100) of one fusion setting over the queries of ``rankings``."""
    values = list(_query_values(rankings, qrels, (mode, alpha, rrf_k, dense_depth, sparse_depth)))
    return statistics.fmean(v[1] for v in values), statistics.fmean(v[2] for v in values)


def _stage1(grid: str) -> Iterator[Setting]:
    depths = DEPTHS if grid == "full" else (100, 200)
    alphas = ALPHAS if grid == "full" else (0.3, 0.4, 0.5, 0.6, 0.7)
    rrf_ks = RRF_KS if grid == "full" else (5.0, 60.0)
    for depth in depths:
        for alpha in alphas:
            for k in rrf_ks:
                yield ("rrf", alpha, k, depth, depth)
            yield ("minmax", alpha, 60.0, depth, depth)
            yield ("zscore", alpha, 60.0, depth, depth)


def _stage2(best: Mapping[str, Setting], grid: str) -> Iterator[Setting]:
    depths = DEPTHS if grid == "full" else (100, 200)
    for mode, (_, alpha, k, _, _) in best.items():
        step = 0.05
        for a in sorted(
            {max(0.05, round(alpha - step, 2)), alpha, min(0.95, round(alpha + step, 2))}
        ):
            for dense_depth, sparse_depth in itertools.product(depths, depths):
                yield (mode, a, k, dense_depth, sparse_depth)


def best_per_mode(scored: Mapping[Setting, tuple[float, float]]) -> dict[str, Setting]:
    """Per mode: the highest nDCG@10, or within ``TOLERANCE`` of it the highest Recall@100."""
    best: dict[str, Setting] = {}
    for mode in dict.fromkeys(s[0] for s in scored):
        mine = {s: v for s, v in scored.items() if s[0] == mode}
        top = max(v[0] for v in mine.values())
        near = [s for s, v in mine.items() if v[0] >= top - TOLERANCE]
        best[mode] = max(near, key=lambda s: (mine[s][1], mine[s][0]))
    return best


def sweep(
    rankings: Rankings,
    qrels: Mapping[str, Mapping[str, int]],
    grid: str = "full",
    show_progress: bool = False,
) -> dict[Setting, tuple[float, float]]:
    """Score every setting of the two-stage grid: ``{setting: (nDCG@10, Recall@100)}``.

    ``grid="full"``: modes x 9 alphas x 7 RRF k x 4 depths, then each mode's best
    alpha +-0.05 with unequal depths (about 450 settings); ``"quick"``: 5 alphas,
    2 RRF k, depths 100/200 (about 60 settings, for small validation sets, where
    a large grid would fit noise).
    """
    if grid not in ("full", "quick"):
        raise ValueError(f"grid must be 'full' or 'quick', got {grid!r}")
    judged = {q: r for q, r in rankings.items() if any(g > 0 for g in qrels.get(q, {}).values())}
    if not judged:
        raise ValueError(
            "choose_fusion: none of the ranked queries has a relevant document in qrels; "
            "pass rankings and qrels for the same queries"
        )
    scored: dict[Setting, tuple[float, float]] = {}
    for setting in tqdm(list(_stage1(grid)), desc="fusion sweep", disable=not show_progress):
        scored[setting] = score_setting(judged, qrels, *setting)
    for setting in _stage2(best_per_mode(scored), grid):
        if setting not in scored:
            scored[setting] = score_setting(judged, qrels, *setting)
    return scored


def choose_fusion(
    rankings: Rankings,
    qrels: Mapping[str, Mapping[str, int]],
    grid: str = "full",
    modes: Sequence[str] | None = None,
    show_progress: bool = False,
) -> FusionChoice:
    """The best fusion setting for these queries (see the module docstring).

    Args:
        rankings: ``{qid: (dense ranking, BM25 ranking)}``, each ``[(doc id, score), ...]``
            best first, at least as deep as the deepest setting tried (200).
        qrels: ``{qid: {doc id: grade}}``.
        grid: ``"full"`` or ``"quick"`` (see :func:`sweep`).
        modes: restrict the choice to these fusion modes (default: all).
    """
    scored = sweep(rankings, qrels, grid=grid, show_progress=show_progress)
    if modes is not None:
        scored = {s: v for s, v in scored.items() if s[0] in modes}
        if not scored:
            raise ValueError(f"choose_fusion: no setting of the modes {list(modes)} was scored")
    best = best_per_mode(scored)
    winner_mode = max(best, key=lambda m: scored[best[m]])
    mode, alpha, rrf_k, dense_depth, sparse_depth = best[winner_mode]
    judged = {q: r for q, r in rankings.items() if any(g > 0 for g in qrels.get(q, {}).values())}
    reference = {
        "dense": statistics.fmean(
            ndcg_at_k([d for d, _ in r[0]], qrels[q], 10) for q, r in judged.items()
        ),
        "bm25": statistics.fmean(
            ndcg_at_k([d for d, _ in r[1]], qrels[q], 10) for q, r in judged.items()
        ),
    }
    return FusionChoice(
        mode=mode,
        alpha=alpha,
        rrf_k=rrf_k,
        dense_top_k=dense_depth,
        sparse_top_k=sparse_depth,
        ndcg_at_10=scored[best[winner_mode]][0],
        recall_at_100=scored[best[winner_mode]][1],
        num_queries=len(judged),
        best_per_mode={m: setting_as_dict(s, scored[s]) for m, s in best.items()},
        reference=reference,
        settings_scored=len(scored),
    )


def cross_validated_ndcg(
    rankings: Rankings,
    qrels: Mapping[str, Mapping[str, int]],
    grid: str = "full",
    folds: int = 5,
    seed: int = 0,
    show_progress: bool = False,
) -> dict[str, float]:
    """Each judged query's nDCG@10 under the setting :func:`choose_fusion` picks *without it*:
    the queries are dealt into ``folds`` seeded folds, and each fold is scored with the
    setting chosen on the others. Its mean is an honest estimate of what choosing on these
    queries gains; ``choose_fusion``'s own ``ndcg_at_10`` is the best of hundreds of
    settings on the very queries it is scored on, and flatters the choice. Empty with
    fewer than two judged queries.

    Example::

        oof = cross_validated_ndcg(rankings, qrels, grid="quick")
        statistics.fmean(oof.values())   # compare with the preset's mean nDCG@10
    """
    judged = sorted(q for q in rankings if any(g > 0 for g in qrels.get(q, {}).values()))
    folds = min(int(folds), len(judged))
    if folds < 2:
        return {}
    random.Random(seed).shuffle(judged)
    values: dict[str, float] = {}
    for fold in tqdm(range(folds), desc="fusion cross-validation", disable=not show_progress):
        held_out = set(judged[fold::folds])
        rest = {q: rankings[q] for q in judged if q not in held_out}
        choice = choose_fusion(rest, qrels, grid=grid)
        setting = (choice.mode, choice.alpha, choice.rrf_k, choice.dense_top_k, choice.sparse_top_k)
        scored = {q: rankings[q] for q in judged if q in held_out}
        values.update((qid, ndcg) for qid, ndcg, _ in _query_values(scored, qrels, setting))
    return values


def setting_as_dict(setting: Setting, value: tuple[float, float]) -> dict[str, Any]:
    """One scored setting as a record: mode, alpha, rrf_k, side depths, nDCG@10, Recall@100.

    Example::

        setting_as_dict(("zscore", 0.5, 60.0, 100, 200), (0.73, 0.95))["dense_top_k"]  # 100
    """
    mode, alpha, k, dense_depth, sparse_depth = setting
    return {
        "mode": mode,
        "alpha": alpha,
        "rrf_k": k,
        "dense_top_k": dense_depth,
        "sparse_top_k": sparse_depth,
        "ndcg@10": value[0],
        "recall@100": value[1],
    }
