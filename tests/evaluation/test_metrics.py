"""Retrieval metrics: hand-checked values, edge cases, and agreement with ir-measures (trec_eval)."""

from __future__ import annotations

import math
import random

import pytest

from llama_index_ragtune.evaluation.metrics import (
    compute_metrics,
    hit_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)

QRELS = {"d1": 2, "d2": 1, "d3": 0, "d4": 1}


def test_hand_computed_values() -> None:
    ranked = ["d3", "d2", "x", "d1"]
    assert recall_at_k(ranked, QRELS, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, QRELS, 4) == pytest.approx(2 / 3)
    assert precision_at_k(ranked, QRELS, 4) == pytest.approx(2 / 4)
    assert precision_at_k(ranked, QRELS, 10) == pytest.approx(2 / 10)  # divides by k
    assert mrr_at_k(ranked, QRELS, 1) == 0.0
    assert mrr_at_k(ranked, QRELS, 10) == pytest.approx(1 / 2)
    assert hit_at_k(ranked, QRELS, 1) == 0.0 and hit_at_k(ranked, QRELS, 2) == 1.0
    dcg = 1 / math.log2(3) + 2 / math.log2(5)
    ideal = 2 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, QRELS, 10) == pytest.approx(dcg / ideal)


def test_ideal_dcg_is_capped_at_k() -> None:
    # three relevant documents, k=1: a relevant doc of the best grade at rank 1 is perfect
    assert ndcg_at_k(["d1"], QRELS, 1) == pytest.approx(1.0)
    assert ndcg_at_k(["d2"], QRELS, 1) == pytest.approx(0.5)  # gain 1 against ideal gain 2
    assert ndcg_at_k(["d1", "d2"], QRELS, 2) == pytest.approx(1.0)


def test_duplicates_count_once_at_first_rank() -> None:
    ranked = ["d2", "d2", "d2", "d1"]
    assert recall_at_k(ranked, QRELS, 2) == pytest.approx(2 / 3)  # the duplicates do not use up k
    assert precision_at_k(ranked, QRELS, 2) == pytest.approx(1.0)
    assert ndcg_at_k(ranked, QRELS, 10) == ndcg_at_k(["d2", "d1"], QRELS, 10)


def test_no_relevant_and_empty_ranking() -> None:
    assert recall_at_k(["d3"], {"d3": 0}, 10) == 0.0
    assert ndcg_at_k(["d3"], {"d3": 0}, 10) == 0.0
    for fn in (recall_at_k, precision_at_k, mrr_at_k, hit_at_k, ndcg_at_k):
        assert fn([], QRELS, 5) == 0.0
    with pytest.raises(ValueError, match="k must be a positive"):
        recall_at_k(["d1"], QRELS, 0)


def test_compute_metrics_keys_and_unknown_metric() -> None:
    out = compute_metrics(["d2", "d1"], QRELS, k_values=(1, 10), metrics=("mrr", "hit"))
    assert out == {"mrr@1": 1.0, "mrr@10": 1.0, "hit@1": 1.0, "hit@10": 1.0}
    with pytest.raises(ValueError, match="unknown metric.*'map'"):
        compute_metrics(["d1"], QRELS, metrics=("map",))


# --------------------------------------------------------------------- ir-measures


def _ir_measures_compare(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> int:
    """Assert per-query equality with ir-measures; returns the number of values compared."""
    ir_measures = pytest.importorskip("ir_measures")
    from ir_measures import RR, P, R, nDCG

    ours = {
        nDCG @ 10: lambda r, q: ndcg_at_k(r, q, 10),
        nDCG @ 100: lambda r, q: ndcg_at_k(r, q, 100),
        R @ 100: lambda r, q: recall_at_k(r, q, 100),
        RR @ 10: lambda r, q: mrr_at_k(r, q, 10),
        P @ 10: lambda r, q: precision_at_k(r, q, 10),
    }
    # trec_eval orders by score and breaks ties by doc id: strictly decreasing scores keep our ranks
    scored = {
        qid: {doc_id: float(len(ranked) - i) for i, doc_id in enumerate(ranked)}
        for qid, ranked in run.items()
    }
    compared = 0
    for m in ir_measures.iter_calc(list(ours), qrels, scored):
        expected = ours[m.measure](run[m.query_id], qrels[m.query_id])
        assert expected == pytest.approx(m.value, abs=1e-6), (m.query_id, m.measure)
        compared += 1
    return compared


def test_matches_ir_measures_on_random_graded_runs() -> None:
    rng = random.Random(13)
    docs = [f"doc{i}" for i in range(300)]
    qrels, run = {}, {}
    for q in range(60):
        judged = rng.sample(docs, rng.randint(1, 40))
        qrels[f"q{q}"] = {d: rng.choice([0, 1, 1, 2, 3]) for d in judged}
        run[f"q{q}"] = rng.sample(docs, rng.randint(5, 150))
    assert _ir_measures_compare(run, qrels) == 60 * 5


@pytest.mark.data
def test_matches_ir_measures_on_bm25_scifact(scifact_dir) -> None:
    bm25s = pytest.importorskip("bm25s")
    from llama_index_ragtune.data.beir import load_beir

    ds = load_beir(scifact_dir, split="test")
    doc_ids = list(ds.corpus)
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(list(ds.corpus.values()), show_progress=False), show_progress=False
    )
    qids = list(ds.queries)
    tokens = bm25s.tokenize([ds.queries[q] for q in qids], show_progress=False)
    results, _ = retriever.retrieve(tokens, k=100, show_progress=False)
    run = {qid: [doc_ids[i] for i in row] for qid, row in zip(qids, results.tolist(), strict=True)}
    assert _ir_measures_compare(run, ds.qrels) == len(qids) * 5
    # a sanity floor for BM25 on SciFact (published: .665 nDCG@10)
    mean_ndcg = sum(ndcg_at_k(run[q], ds.qrels[q], 10) for q in qids) / len(qids)
    assert mean_ndcg > 0.55
