"""The vectorised fusion gives what the documented semantics give, on randomised rankings.

``reference_fuse`` below is the fusion of :mod:`llama_index_ragtune.retrievers.fusion`
written as the module docstring states it, one node at a time with dicts and a full sort.
The library must agree with it exactly on ids, order, per-side ranks and raw scores, and
on fused scores to float tolerance, for every mode and for the awkward inputs: duplicates
within a side, ties, nodes missing from a side, single hits, all-equal scores, a zero
weight, empty sides, and ``top_k`` of ``None``, 0, negative or larger than the pool.
"""

from __future__ import annotations

import math
import random

import pytest

from llama_index_ragtune.retrievers.fusion import FUSION_MODES, fuse, normalize_scores


def reference_normalize(values: list[float], method: str) -> tuple[list[float], float]:
    if not values:
        return [], 0.0
    if method == "minmax":
        low, high = min(values), max(values)
        if high - low <= 1e-12 * max(1.0, abs(high)):
            return [1.0] * len(values), 0.0
        return [(v - low) / (high - low) for v in values], 0.0
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    if std <= 1e-12 * max(1.0, abs(mean)):
        return [1.0] * len(values), 0.0
    normed = [(v - mean) / std for v in values]
    return normed, min(normed)


def reference_fuse(rankings, mode, weights, rrf_k, top_k):
    n = len(rankings)
    weights = [1.0 / n] * n if weights is None else [float(w) for w in weights]
    ranks: dict[str, list[int | None]] = {}
    raw: dict[str, list[float | None]] = {}
    sides = []
    for side, ranking in enumerate(rankings):
        clean: list[tuple[str, float]] = []
        for node_id, score in ranking:
            if node_id in {seen for seen, _ in clean}:  # first (best) occurrence only
                continue
            clean.append((node_id, float(score)))
            ranks.setdefault(node_id, [None] * n)[side] = len(clean)
            raw.setdefault(node_id, [None] * n)[side] = float(score)
        sides.append(clean)
    fused = dict.fromkeys(ranks, 0.0)
    for w, clean in zip(weights, sides, strict=True):
        if not w:
            continue
        if mode == "rrf":
            for rank, (node_id, _) in enumerate(clean, start=1):
                fused[node_id] += w / (rrf_k + rank)
            continue
        values, fill = reference_normalize([score for _, score in clean], mode)
        for node_id in fused:  # missing from this side: the side's lowest value
            fused[node_id] += w * fill
        for (node_id, _), value in zip(clean, values, strict=True):
            fused[node_id] += w * (value - fill)

    def key(node_id):
        best_rank, best_side = min(
            (rank, side) for side, rank in enumerate(ranks[node_id]) if rank is not None
        )
        return (-fused[node_id], best_rank, best_side, node_id)

    order = sorted(fused, key=key)
    if top_k is not None:
        order = order[: max(0, top_k)]
    return [(i, fused[i], tuple(ranks[i]), tuple(raw[i])) for i in order]


def random_case(rng: random.Random):
    pool = [f"node-{i}" for i in range(rng.choice([1, 3, 8, 40]))]
    rankings = []
    for _ in range(rng.choice([1, 2, 2, 2, 3])):
        kind = rng.choice(["random", "ties", "all-equal", "integers", "single"])
        length = 1 if kind == "single" else rng.choice([0, 2, 5, 20, 60])
        draw = {
            "random": lambda: rng.uniform(-2.0, 30.0),
            "ties": lambda: rng.choice([0.25, 0.5, 0.75]),
            "all-equal": lambda: 2.0,
            "integers": lambda: rng.randint(-3, 3),
            "single": lambda: rng.random(),
        }[kind]
        ranking = sorted(
            ((rng.choice(pool), draw()) for _ in range(length)),  # duplicates from small pools
            key=lambda pair: -pair[1],
        )
        rankings.append(ranking if rng.random() < 0.8 else tuple(ranking))
    weights = None
    if rng.random() < 0.8:
        weights = [rng.choice([0.0, 0.3, 0.45, 0.5, 1.0]) for _ in rankings]
        if not sum(weights):
            weights[rng.randrange(len(weights))] = 0.55
    top_k = rng.choice([None, 0, -1, 1, 3, 10, 10_000])
    rrf_k = rng.choice([0.5, 1, 5.0, 60.0])
    return rankings, weights, top_k, rrf_k


def assert_same(got, want):
    assert [(h.node_id, h.ranks, h.scores) for h in got] == [(i, r, s) for i, _, r, s in want]
    assert [h.score for h in got] == pytest.approx([v for _, v, _, _ in want], rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("mode", FUSION_MODES)
@pytest.mark.parametrize("seed", range(4))
def test_fuse_matches_the_reference_on_random_rankings(mode, seed):
    rng = random.Random(f"{mode}-{seed}")
    for _ in range(250):
        rankings, weights, top_k, rrf_k = random_case(rng)
        got = fuse(rankings, mode=mode, weights=weights, rrf_k=rrf_k, top_k=top_k)
        assert_same(got, reference_fuse(rankings, mode, weights, rrf_k, top_k))


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_fuse_matches_the_reference_at_the_retriever_depths(mode):
    # the HybridRetriever's shape: 100-200 candidates per side out of a larger corpus, top 10,
    # equal weights (mirror-image nodes of the two sides tie, also at the top_k boundary)
    rng = random.Random(mode)
    corpus = [f"doc-{i}" for i in range(1000)]
    for _ in range(20):
        dense = [(i, round(rng.random(), 2)) for i in rng.sample(corpus, 100)]
        sparse = [(i, float(rng.randint(0, 30))) for i in rng.sample(corpus[:400], 200)]
        rankings = [sorted(side, key=lambda pair: -pair[1]) for side in (dense, sparse)]
        for weights, top_k in (((0.5, 0.5), 10), ((0.45, 0.55), 10), ((1.0, 0.0), 25)):
            got = fuse(rankings, mode=mode, weights=weights, rrf_k=5.0, top_k=top_k)
            assert_same(got, reference_fuse(rankings, mode, weights, 5.0, top_k))


@pytest.mark.parametrize("mode", FUSION_MODES)
def test_ties_at_the_top_k_boundary_follow_the_documented_order(mode):
    # mirror images: a~d, b~e, c~f have equal fused scores; the earlier side wins each tie
    left = [("a", 3.0), ("b", 2.0), ("c", 1.0)]
    right = [("d", 3.0), ("e", 2.0), ("f", 1.0)]
    hits = fuse([left, right], mode=mode, weights=(0.5, 0.5), top_k=3)
    assert [h.node_id for h in hits] == ["a", "d", "b"]
    assert fuse([], mode=mode) == []
    assert fuse([[], []], mode=mode, top_k=5) == []


def test_normalize_scores_matches_the_reference():
    rng = random.Random(3)
    for _ in range(300):
        values = [
            rng.choice([rng.uniform(-50, 50), 3.0, float(rng.randint(-2, 2))])
            for _ in range(rng.randrange(0, 25))
        ]
        for method in ("minmax", "zscore"):
            got, fill = normalize_scores(values, method)
            want, want_fill = reference_normalize(values, method)
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
            assert fill == pytest.approx(want_fill, rel=1e-12, abs=1e-12)
            assert all(type(v) is float for v in got) and type(fill) is float
