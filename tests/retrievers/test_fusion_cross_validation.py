"""The fusion sweep's choice judged out of sample: ``cross_validated_ndcg`` scores each query
with the setting chosen on the other folds, so a choice that only fits noise gains nothing,
while choosing on the very queries it is scored on always looks like a gain."""

import random
import statistics

import pytest

from llama_index_ragtune.retrievers.defaults import fusion_preset
from llama_index_ragtune.retrievers.fusion_sweep import (
    choose_fusion,
    cross_validated_ndcg,
    score_setting,
)

DOCS = [f"d{i}" for i in range(120)]


def _ranking(rng: random.Random, relevant: str, position: int) -> list[tuple[str, float]]:
    others = [d for d in DOCS if d != relevant]
    rng.shuffle(others)
    order = others[:position] + [relevant] + others[position:]
    return [(doc, 10.0 - i * rng.uniform(0.01, 0.05)) for i, doc in enumerate(order[:100])]


def _queries(n: int, seed: int, bm25_rank: tuple[int, int], dense_rank: tuple[int, int]):
    rng = random.Random(seed)
    rankings, qrels = {}, {}
    for q in range(n):
        relevant = rng.choice(DOCS)
        rankings[f"q{q}"] = (
            _ranking(rng, relevant, rng.randint(*dense_rank)),
            _ranking(rng, relevant, rng.randint(*bm25_rank)),
        )
        qrels[f"q{q}"] = {relevant: 1}
    return rankings, qrels


def _preset_mean(rankings, qrels) -> float:
    p = fusion_preset(None)
    setting = (p["fusion_mode"], p["alpha"], p["rrf_k"], p["dense_top_k"], p["sparse_top_k"])
    return score_setting(rankings, qrels, *setting)[0]


def test_choosing_on_the_scored_queries_flatters_the_choice_cross_validation_does_not():
    # the relevant document anywhere in both sides' top 30: settings differ by chance too,
    # and the best of ~60 settings scored on the queries it was chosen on looks better
    # than it is; scoring each query with the setting chosen on the others does not
    flattery = []
    for seed in (3, 4, 6):
        rankings, qrels = _queries(20, seed=seed, bm25_rank=(0, 30), dense_rank=(0, 30))
        in_sample = choose_fusion(rankings, qrels, grid="quick").ndcg_at_10
        values = cross_validated_ndcg(rankings, qrels, grid="quick")
        assert statistics.fmean(values.values()) <= in_sample  # below the best in sample
        flattery.append(in_sample - statistics.fmean(values.values()))
    assert statistics.fmean(flattery) > 0.02


def test_a_real_gain_survives_cross_validation():
    # BM25 ranks the relevant document first or second, the dense side somewhere in 10-60:
    # weighting BM25 up is really better than the preset's even weights
    rankings, qrels = _queries(20, seed=5, bm25_rank=(0, 1), dense_rank=(10, 60))
    out_of_fold = statistics.fmean(cross_validated_ndcg(rankings, qrels, grid="quick").values())
    assert out_of_fold > _preset_mean(rankings, qrels) + 0.05


def test_every_judged_query_is_scored_once_and_the_folds_are_seeded():
    rankings, qrels = _queries(13, seed=1, bm25_rank=(0, 20), dense_rank=(0, 20))
    qrels["q0"] = {}  # no relevant document: not scored
    values = cross_validated_ndcg(rankings, qrels, grid="quick", folds=4)
    assert set(values) == set(rankings) - {"q0"}
    assert all(0.0 <= v <= 1.0 for v in values.values())
    assert values == cross_validated_ndcg(rankings, qrels, grid="quick", folds=4)


@pytest.mark.parametrize("judged", [0, 1])
def test_fewer_than_two_judged_queries_cannot_be_cross_validated(judged):
    rankings, qrels = _queries(3, seed=2, bm25_rank=(0, 5), dense_rank=(0, 5))
    for q in list(qrels)[judged:]:
        qrels[q] = {}
    assert cross_validated_ndcg(rankings, qrels, grid="quick") == {}
