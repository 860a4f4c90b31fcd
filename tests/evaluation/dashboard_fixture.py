"""FIXTURE DATA for the report tests: plausible, synthetic numbers, not measurements.

``sample_results()`` fills an ``EvaluationResults`` the way the tuning pipeline
does (before / after systems per stage, per-query latencies, refusal
probabilities, champion / challenger decisions, step timings). Every figure is
drawn from a seeded random generator; none was measured.
"""

from __future__ import annotations

import random

from llama_index_ragtune.evaluation.results import EvaluationResults


def _latencies(rng: random.Random, n: int, median_ms: float, spread: float) -> list[float]:
    """Log-normal per-query latencies around ``median_ms`` (a long right tail, like real ones)."""
    return [round(median_ms * rng.lognormvariate(0.0, spread), 2) for _ in range(n)]


def _refusal_probabilities(
    rng: random.Random, should_refuse: list[int], separation: float
) -> list[float]:
    """P(refusal) per question: higher for should-refuse ones by ``separation`` (0 = none)."""
    out = []
    for y in should_refuse:
        centre = 0.25 + separation * (0.5 if y else -0.15)
        out.append(round(min(max(rng.gauss(centre, 0.17), 0.0), 1.0), 4))
    return out


def sample_results(n_test: int = 40, seed: int = 7) -> EvaluationResults:
    """A realistic-looking evaluation of the retail help-centre demo (fixture data)."""
    rng = random.Random(seed)
    results = EvaluationResults(
        title="Retail help centre: tuned vs untuned (fixture data)",
        dataset_name="retail-help",
        queries={"train": 96, "dev": 24, "test": n_test},
        bundle_version="v2",
        created="2026-11-25T10:42:00+00:00",
        notes="Synthetic numbers for the report tests; not a measurement.",
    )
    results.add_retrieval(
        "BM25",
        "before",
        {"ndcg@10": 0.584, "recall@10": 0.762, "mrr@10": 0.531},
        _latencies(rng, n_test, 1.4, 0.35),
    )
    results.add_retrieval(
        "hybrid",
        "before",
        {"ndcg@10": 0.642, "recall@10": 0.815, "mrr@10": 0.588},
        _latencies(rng, n_test, 9.5, 0.3),
    )
    results.add_retrieval(
        "hybrid",
        "after",
        {"ndcg@10": 0.731, "recall@10": 0.893, "mrr@10": 0.684},
        _latencies(rng, n_test, 9.8, 0.3),
    )
    results.add_reranking(
        "hybrid + cross-encoder",
        "before",
        {"ndcg@10": 0.702, "recall@10": 0.893, "mrr@10": 0.655},
        _latencies(rng, n_test, 48.0, 0.25),
    )
    results.add_reranking(
        "hybrid + cross-encoder",
        "after",
        {"ndcg@10": 0.758, "recall@10": 0.893, "mrr@10": 0.716},
        _latencies(rng, n_test, 47.0, 0.25),
    )
    should_refuse = [int(i % 4 == 3) for i in range(n_test)]  # a quarter cannot be answered
    for name, stage, separation, median, threshold, metrics in (
        (
            "SmolLM2-135M",
            "before",
            0.15,
            1850.0,
            0.5,
            {"citation_precision": 0.41, "citation_recall": 0.37, "answer_f1": 0.29},
        ),
        (
            "SmolLM2-135M + grounded SFT",
            "after",
            0.85,
            1540.0,
            0.42,
            {"citation_precision": 0.83, "citation_recall": 0.76, "answer_f1": 0.58},
        ),
    ):
        probabilities = _refusal_probabilities(rng, should_refuse, separation)
        refused = [p >= threshold for p in probabilities]
        tp = sum(r and y for r, y in zip(refused, should_refuse, strict=True))
        # refusal F1 = 2 TP / (refused + should refuse); undefined with nothing to refuse
        refusal_f1 = 2 * tp / (sum(refused) + sum(should_refuse)) if any(should_refuse) else None
        rate = sum(refused) / n_test
        results.add_generation(
            name,
            stage,
            {**metrics, "refusal_f1": refusal_f1, "answer_rate": 1 - rate, "refusal_rate": rate},
            latency_ms=_latencies(rng, n_test, median, 0.35),
            refusal_probabilities=probabilities,
            should_refuse=should_refuse,
            refusal_threshold=threshold,
        )
    results.add_decision(
        "encoder", True, "ndcg@10", 0.642, 0.731, 0.005, "challenger +0.089 >= margin 0.005"
    )
    results.add_decision(
        "fusion", False, "ndcg@10", 0.731, 0.733, 0.005, "gain +0.002 below margin 0.005"
    )
    results.add_decision(
        "reranker", True, "ndcg@10", 0.702, 0.758, 0.005, "challenger +0.056 >= margin 0.005"
    )
    results.add_decision(
        "decoder", True, "citation_f1", 0.39, 0.79, 0.01, "challenger +0.40 >= margin 0.01"
    )
    for step, seconds in (
        ("parse documents", 1.8),
        ("build hybrid index", 6.2),
        ("training data", 14.5),
        ("tune encoder", 212.0),
        ("tune reranker", 305.4),
        ("tune decoder (SFT)", 398.1),
        ("evaluate", 87.3),
        ("write bundle", 3.9),
    ):
        results.timings[step] = seconds
    return results
