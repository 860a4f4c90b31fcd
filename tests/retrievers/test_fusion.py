"""Fusion math: RRF with k and weights, min-max and z-score fusion, dedupe, ties."""

from __future__ import annotations

import math

import pytest

from llama_index_ragtune.retrievers.fusion import (
    fuse,
    normalize_scores,
    reciprocal_rank_fusion,
    score_fusion,
)

DENSE = [("a", 0.9), ("b", 0.8), ("c", 0.5)]
SPARSE = [("c", 12.0), ("d", 6.0), ("a", 3.0)]


def scores(hits):
    return {h.node_id: h.score for h in hits}


def test_rrf_uses_k_and_one_based_ranks():
    hits = reciprocal_rank_fusion([DENSE, SPARSE], weights=(1.0, 1.0), k=10)
    got = scores(hits)
    assert got["a"] == pytest.approx(1 / 11 + 1 / 13)
    assert got["c"] == pytest.approx(1 / 13 + 1 / 11)
    assert got["b"] == pytest.approx(1 / 12)
    assert got["d"] == pytest.approx(1 / 12)
    assert [h.node_id for h in hits][:2] == ["a", "c"]  # tie broken by best rank, then side order


def test_rrf_weights_change_the_order():
    dense_heavy = [
        h.node_id for h in reciprocal_rank_fusion([DENSE, SPARSE], weights=(0.9, 0.1), k=1)
    ]
    sparse_heavy = [
        h.node_id for h in reciprocal_rank_fusion([DENSE, SPARSE], weights=(0.1, 0.9), k=1)
    ]
    assert dense_heavy[0] == "a"
    assert sparse_heavy[0] == "c"
    hits = reciprocal_rank_fusion([DENSE, SPARSE], weights=(0.9, 0.1), k=1)
    assert scores(hits)["d"] == pytest.approx(0.1 / 3)


def test_rrf_k_changes_the_order():
    # "x" is 1st on one side only; "y" is 3rd on both sides: x wins iff k < 1.
    a = [("x", 1.0), ("w", 0.7), ("y", 0.5)]
    b = [("z", 1.0), ("v", 0.7), ("y", 0.5)]
    small_k = [h.node_id for h in reciprocal_rank_fusion([a, b], k=0.5)]
    large_k = [h.node_id for h in reciprocal_rank_fusion([a, b], k=100)]
    assert small_k[0] == "x"
    assert large_k[0] == "y"


def test_ranks_and_raw_scores_per_side():
    hit = next(h for h in reciprocal_rank_fusion([DENSE, SPARSE]) if h.node_id == "c")
    assert hit.ranks == (3, 1)
    assert hit.scores == (0.5, 12.0)
    only_dense = next(h for h in reciprocal_rank_fusion([DENSE, SPARSE]) if h.node_id == "b")
    assert only_dense.ranks == (2, None) and only_dense.scores == (0.8, None)


def test_duplicates_within_a_ranking_keep_their_best_rank():
    hits = reciprocal_rank_fusion([[("a", 1.0), ("b", 0.9), ("a", 0.1)]], k=1)
    assert [h.node_id for h in hits] == ["a", "b"]
    assert hits[0].score == pytest.approx(1 / 2)


def test_minmax_fusion_values_and_missing_nodes():
    hits = score_fusion([DENSE, SPARSE], weights=(0.5, 0.5), method="minmax")
    got = scores(hits)
    # dense: a=1, b=0.75, c=0 ; sparse: c=1, d=(6-3)/9, a=0 ; missing -> 0
    assert got["a"] == pytest.approx(0.5)
    assert got["c"] == pytest.approx(0.5)
    assert got["b"] == pytest.approx(0.375)
    assert got["d"] == pytest.approx(0.5 * 3 / 9)


def test_alpha_is_a_convex_weight():
    only_dense = [
        h.node_id for h in score_fusion([DENSE, SPARSE], weights=(1.0, 0.0), method="minmax")
    ]
    assert only_dense[:3] == ["a", "b", "c"]
    only_sparse = [
        h.node_id for h in score_fusion([DENSE, SPARSE], weights=(0.0, 1.0), method="minmax")
    ]
    assert only_sparse[:3] == ["c", "d", "a"]


def test_zscore_fusion_values_and_missing_nodes():
    values, missing = normalize_scores([12.0, 6.0, 3.0], "zscore")
    mean = 7.0
    std = math.sqrt(((12 - 7) ** 2 + (6 - 7) ** 2 + (3 - 7) ** 2) / 3)
    assert values == pytest.approx([(12 - mean) / std, (6 - mean) / std, (3 - mean) / std])
    assert missing == pytest.approx(min(values))
    got = scores(score_fusion([DENSE, SPARSE], weights=(0.5, 0.5), method="zscore"))
    dense_z, dense_missing = normalize_scores([0.9, 0.8, 0.5], "zscore")
    assert got["d"] == pytest.approx(0.5 * dense_missing + 0.5 * values[1])
    assert got["a"] == pytest.approx(0.5 * dense_z[0] + 0.5 * values[2])


def test_degenerate_side_scores():
    assert normalize_scores([2.0, 2.0], "minmax") == ([1.0, 1.0], 0.0)
    assert normalize_scores([5.0], "zscore") == ([1.0], 0.0)
    assert normalize_scores([], "minmax") == ([], 0.0)
    hits = score_fusion([[("a", 3.0)], []], method="zscore")
    assert [h.node_id for h in hits] == ["a"]


def test_ties_are_deterministic():
    a = [("p", 1.0), ("q", 0.5)]
    b = [("q", 1.0), ("p", 0.5)]
    first = [h.node_id for h in reciprocal_rank_fusion([a, b])]
    again = [h.node_id for h in reciprocal_rank_fusion([a, b])]
    assert first == again == ["p", "q"]  # equal scores and best ranks: the earlier side wins
    same_everything = [("m", 1.0)], [("n", 1.0)]
    assert [h.node_id for h in reciprocal_rank_fusion(list(same_everything))] == ["m", "n"]


def test_fuse_dispatch_top_k_and_errors():
    assert len(fuse([DENSE, SPARSE], mode="rrf", top_k=2)) == 2
    assert [h.node_id for h in fuse([DENSE, SPARSE], mode="minmax")] == [
        h.node_id for h in score_fusion([DENSE, SPARSE], method="minmax")
    ]
    with pytest.raises(ValueError, match="unknown fusion mode"):
        fuse([DENSE], mode="borda")
    with pytest.raises(ValueError, match="one weight per ranking"):
        fuse([DENSE, SPARSE], weights=(1.0,))
    with pytest.raises(ValueError, match="k must be > 0"):
        reciprocal_rank_fusion([DENSE], k=0)
    with pytest.raises(ValueError, match="at least one weight"):
        fuse([DENSE, SPARSE], weights=(0.0, 0.0))
