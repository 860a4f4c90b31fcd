"""Paired evidence on promotion decisions, and strict JSON decision / result files.

A decision on a small validation split is close to a coin flip, and two means hide it: the
ranking decisions (encoder, reranker, fusion, refresh) now pair champion and challenger
query by query (wins / losses / ties, a seeded bootstrap 95% interval of the mean gain) and
say when the split is too small to tell; the decision itself is unchanged. A diverged run's
NaN metrics were written as bare ``NaN`` tokens that strict JSON readers reject.
"""

from __future__ import annotations

import json
import logging
import math
import random

import pytest

from llama_index_ragtune.evaluation.metrics import MeanMetrics, compute_metrics, mean_metrics
from llama_index_ragtune.evaluation.results import EvaluationResults
from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine
from llama_index_ragtune.finetuning.promotion import (
    MIN_VALIDATION_QUERIES,
    PromotionDecision,
    decide_promotion,
    paired_evidence,
)
from llama_index_ragtune.finetuning.ranking_eval import score_rankings
from llama_index_ragtune.finetuning.result import FinetuneResult
from llama_index_ragtune.pipeline.summary import format_tables
from tests.finetuning.conftest import FAST, Diverge, hybrid_evaluator, toy_reranker_engine


def strict_loads(text: str):
    """``json.loads`` as a strict reader (JavaScript, jq): a bare NaN / Infinity is an error."""

    def refuse(token: str):
        raise ValueError(f"not strict JSON: bare {token}")

    return json.loads(text, parse_constant=refuse)


def ndcg_means(values: list[float]) -> MeanMetrics:
    return mean_metrics({f"q{i}": {"ndcg@10": v} for i, v in enumerate(values)})


# ---------------------------------------------------------------- per-query values


def test_score_rankings_keeps_each_querys_values_and_the_same_means():
    rng = random.Random(0)
    docs = [f"d{i}" for i in range(30)]
    qrels = {f"q{i}": {rng.choice(docs): rng.choice((1, 2)) for _ in range(3)} for i in range(25)}
    qrels["unjudged"] = {"d0": 0}  # no relevant document: not scored
    rankings = {q: rng.sample(docs, 20) for q in qrels if q != "q3"}  # q3: no ranking, scores 0
    metrics = (("ndcg", 10), ("recall", 100), ("mrr", 10))
    scored = score_rankings(rankings, qrels, metrics)
    judged = [q for q in qrels if q != "unjudged"]
    assert set(scored.per_query) == {"ndcg@10", "recall@100", "mrr@10"}
    for name, k in metrics:
        key = f"{name}@{k}"
        total = 0.0  # the mean exactly as it was computed before (same order, same division)
        for q in judged:
            value = compute_metrics(rankings.get(q, []), qrels[q], (k,), (name,))[key]
            assert scored.per_query[key][q] == value
            total += value
        assert scored[key] == total / len(judged)
    assert scored.per_query["ndcg@10"]["q3"] == 0.0
    assert dict(scored) == {k: scored[k] for k in ("ndcg@10", "recall@100", "mrr@10")}
    assert json.loads(json.dumps(scored)) == dict(scored)  # JSON sees only the means


# ---------------------------------------------------------------- the evidence


def test_paired_evidence_counts_wins_losses_ties_and_a_seeded_interval():
    champion = {f"q{i}": v for i, v in enumerate([0.5, 1.0, 0.0, 1.0, 0.63, 1.0] * 2)}
    challenger = {f"q{i}": v for i, v in enumerate([0.63, 1.0, 0.0, 1.0, 0.5, 1.0] * 2)}
    challenger["q0"], challenger["q10"] = 1.0, 0.63  # q0 better, q10 equal
    evidence = paired_evidence(champion, challenger)
    assert evidence["validation_size"] == 12
    assert (evidence["wins"], evidence["losses"], evidence["ties"]) == (2, 1, 9)
    low, high = evidence["gain_interval"]
    gains = [challenger[q] - champion[q] for q in champion]
    assert min(gains) <= low < sum(gains) / len(gains) < high <= max(gains)
    assert paired_evidence(champion, challenger) == evidence  # seeded: the same every time
    # a loss: lower is better, so the signs flip
    flipped = paired_evidence(champion, challenger, greater_is_better=False)
    assert (flipped["wins"], flipped["losses"]) == (1, 2)
    assert flipped["gain_interval"] == pytest.approx((-high, -low))


def test_paired_evidence_names_queries_scored_on_one_side_only():
    with pytest.raises(ValueError, match=r"different queries .*'q9'.*same validation queries"):
        paired_evidence({"q1": 0.5}, {"q1": 0.5, "q9": 1.0})
    with pytest.raises(ValueError, match="no validation query"):
        paired_evidence({}, {})


def test_values_on_different_queries_are_refused_naming_them():
    old = ndcg_means([0.5, 0.5])
    new = MeanMetrics({"ndcg@10": 1.0}, per_query={"ndcg@10": {"q0": 1.0, "other": 1.0}})
    with pytest.raises(ValueError, match=r"different queries .*'other'.*same queries"):
        decide_promotion(old, new, "ndcg@10")


def test_the_reason_gives_the_evidence_and_warns_when_the_split_is_too_small(caplog):
    many_old = ndcg_means([0.5, 1.0, 0.0, 1.0, 0.63, 1.0, 1.0, 0.5, 0.0, 1.0, 1.0, 1.0])
    many_new = ndcg_means([0.63, 1.0, 0.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.finetuning.promotion"):
        decision = decide_promotion(many_old, many_new, "ndcg@10", margin=0.005)
    assert decision.promoted  # the rule is unchanged: +0.0417 > 0.005
    assert decision.reason == (
        "promoted the tuned model over the starting model: ndcg@10 0.7608 vs 0.7192 "
        "(+0.0417; margin 0.005) on 12 validation queries: better on 2, worse on 1, 9 ties; "
        "95% interval -0.0217..+0.1358; the interval includes 0: too few validation queries "
        "to tell the two apart"
    )
    assert decision.too_small_to_tell
    assert "too few validation queries to tell the two apart" in caplog.text
    # two validation queries (10 labelled questions): fewer than 10 whatever the interval
    few = decide_promotion(ndcg_means([0.5, 0.0]), ndcg_means([1.0, 1.0]), "ndcg@10")
    assert few.promoted and few.validation_size == 2 and few.gain_interval[0] > 0
    assert (
        f"on 2 validation queries: better on 2, worse on 0, 0 ties; 95% interval "
        f"+0.5000..+1.0000; fewer than {MIN_VALIDATION_QUERIES} validation queries: too few "
        "to tell the two apart" in few.reason
    )
    # enough queries and an interval clear of 0: no warning
    caplog.clear()
    clear = decide_promotion(ndcg_means([0.2] * 30), ndcg_means([0.5] * 29 + [0.1]), "ndcg@10")
    assert clear.promoted and not clear.too_small_to_tell
    assert clear.reason.endswith("better on 29, worse on 1, 0 ties; 95% interval +0.2600..+0.3000")
    assert "too few" not in caplog.text


def test_the_decision_is_the_same_with_or_without_the_evidence():
    rng = random.Random(1)
    for _ in range(200):
        n = rng.randint(1, 15)
        old = ndcg_means([rng.choice((0.0, 0.5, 0.63, 1.0)) for _ in range(n)])
        new = ndcg_means([rng.choice((0.0, 0.5, 0.63, 1.0)) for _ in range(n)])
        margin = rng.choice((0.0, 0.005, 0.05))
        with_evidence = decide_promotion(old, new, "ndcg@10", margin)
        plain = decide_promotion(dict(old), dict(new), "ndcg@10", margin)
        assert with_evidence.promoted == plain.promoted
        assert with_evidence.reason.startswith(plain.reason)
        assert plain.validation_size is None and plain.wins is None
        counts = (with_evidence.wins, with_evidence.losses, with_evidence.ties)
        assert sum(counts) == with_evidence.validation_size == n


def test_a_loss_decision_records_the_validation_example_count():
    decision = decide_promotion(
        {"loss": 2.0}, {"loss": 1.5}, "loss", greater_is_better=False, validation_examples=40
    )
    assert decision.promoted and decision.validation_size == 40 and decision.wins is None
    assert decision.reason.endswith("(+0.5000; margin 0.005) on 40 validation examples")


# ---------------------------------------------------------------- strict JSON, old files


def test_decisions_round_trip_through_strict_json_and_read_old_files():
    decision = decide_promotion(ndcg_means([0.5, 0.0]), ndcg_means([1.0, 1.0]), "ndcg@10")
    text = json.dumps(decision.to_dict())
    assert PromotionDecision.from_dict(strict_loads(text)) == decision
    # a decision.json written before the evidence fields: read, the new fields empty
    old = {
        "promoted": False,
        "metric": "ndcg@10",
        "champion": 0.61,
        "challenger": float("nan"),  # an older version wrote a diverged run's NaN
        "margin": 0.005,
        "greater_is_better": True,
        "forced": False,
        "reason": "kept the starting model: ...",
        "gain": None,
    }
    read = PromotionDecision.from_dict(json.loads(json.dumps(old)))
    assert read.challenger is None and read.validation_size is None and read.gain_interval is None
    assert strict_loads(json.dumps(read.to_dict()))["challenger"] is None
    direct = PromotionDecision(False, "loss", float("nan"), float("inf"), 0.005)
    assert strict_loads(json.dumps(direct.to_dict()))["champion"] is None


def test_a_result_with_nan_metrics_is_written_as_strict_json(tmp_path):
    nan = float("nan")
    result = FinetuneResult(
        before={"ndcg@10": 0.5}, after={"ndcg@10": nan, "loss": float("inf")}, global_step=2
    )
    saved = strict_loads(result.save_json(tmp_path / "result.json").read_text())
    # was: "after": {"ndcg@10": NaN, "loss": Infinity} and "delta": {"ndcg@10": NaN}
    assert saved["after"] == {"ndcg@10": None, "loss": None}
    assert saved["delta"] == {"ndcg@10": None}
    assert strict_loads(json.dumps(result.summary()))["after"]["ndcg@10"] is None
    assert math.isnan(result.after["ndcg@10"])  # in memory the value is still NaN


# ---------------------------------------------------------------- real small runs


def test_a_small_encoder_run_records_paired_evidence(tiny_encoder_path, tmp_path, make_toy):
    data = make_toy()  # 16 queries, carved: a handful of validation queries
    engine = EncoderFinetuneEngine(
        data,
        model=tiny_encoder_path,
        budget=None,
        eval_points=0,
        args=EncoderFinetuneEngine.default_args(tmp_path, **FAST),
        show_progress=False,
    )
    result = engine.finetune()
    decision = result.decision
    n = result.info["val_queries"]
    assert 0 < n < MIN_VALIDATION_QUERIES and decision.validation_size == n
    assert decision.wins + decision.losses + decision.ties == n
    assert decision.too_small_to_tell and "too few to tell the two apart" in decision.reason
    assert f"on {n} validation queries: better on {decision.wins}, worse on" in decision.reason
    saved = strict_loads(engine.decision_path.read_text())["decision"]
    assert PromotionDecision.from_dict(saved) == decision
    assert (result.before[decision.metric] == decision.champion) and result.before.per_query


def test_a_small_reranker_run_pairs_the_first_stage_with_the_reranker(
    tiny_encoder_path, tmp_path, make_toy
):
    data = make_toy(with_negatives=False)
    engine = toy_reranker_engine(data, tiny_encoder_path, tmp_path)
    decision = engine.finetune().decision
    judged = [q for q in data.query_ids if q in data.relevant_docs]
    assert decision.validation_size == len(judged) == 16
    assert decision.wins + decision.losses + decision.ties == 16
    assert "on 16 validation queries: better on" in decision.reason
    assert "95% interval" in decision.reason


def test_a_diverged_run_writes_decision_json_as_strict_json(tiny_encoder_path, tmp_path, make_toy):
    data = make_toy()
    engine = EncoderFinetuneEngine(
        data,
        model=tiny_encoder_path,
        val_dataset=data,
        budget=None,
        eval_points=0,
        callbacks=[Diverge()],
        args=EncoderFinetuneEngine.default_args(tmp_path, **FAST),
        show_progress=False,
    )
    result = engine.finetune()
    assert math.isnan(result.after["ndcg@10"]) and not result.promoted
    # was: "after": {"ndcg@10": NaN, ...} in decision.json, which strict readers refuse
    saved = strict_loads(engine.decision_path.read_text())
    assert saved["result"]["after"]["ndcg@10"] is None
    assert saved["decision"]["challenger"] is None
    assert PromotionDecision.from_dict(saved["decision"]).challenger is None


def test_the_fusion_pairing_scores_the_chosen_setting_as_the_sweep_did(tiny_encoder_path, make_toy):
    from sentence_transformers import SentenceTransformer

    from llama_index_ragtune.retrievers.fusion_sweep import choose_fusion

    data = make_toy()
    evaluator = hybrid_evaluator(data)
    preset = evaluator.evaluate(SentenceTransformer(tiny_encoder_path))
    choice = choose_fusion(evaluator.fusion_rankings(), evaluator.qrels, grid="quick")
    chosen = evaluator.hybrid_metrics(evaluator.last_scored_rankings, choice.params)
    values = chosen.per_query["hybrid_ndcg@10"]
    assert sum(values.values()) / len(values) == pytest.approx(choice.ndcg_at_10, abs=1e-12)
    assert set(values) == set(preset.per_query["hybrid_ndcg@10"]) == set(data.query_ids)


def test_refresh_and_the_run_summary_say_the_evidence():
    from llama_index_ragtune.pipeline import LabelledQuery
    from llama_index_ragtune.pipeline.refresh_eval import decide, score

    questions = [
        LabelledQuery(id=f"q{i}", question=f"q{i}", gold_node_ids=[f"n{i}"]) for i in range(4)
    ]
    old, _ = score(lambda q: ["x", "n" + q.question[1:]], questions)  # each gold at rank 2
    new, _ = score(lambda q: ["n" + q.question[1:]], questions)  # each gold first
    assert old["mrr@10"] == 0.5 and set(old.per_query["ndcg@10"]) == {"q0", "q1", "q2", "q3"}
    decision = decide({"feedback": {"champion": old, "challenger": new}}, 0.005, False, "v1")
    assert decision.promoted and (decision.validation_size, decision.wins) == (4, 4)
    assert (
        "held-out feedback questions: ndcg@10 1.0000 vs 0.6309 (+0.3691) on 4 held-out "
        "questions: better on 4, worse on 0, 0 ties; 95% interval +0.3691..+0.3691; fewer "
        "than 10 held-out questions: too few to tell the two apart" in decision.reason
    )
    results = EvaluationResults("t", "d", {"test": 4}, "v1")
    results.add_promotion("encoder", decision)
    assert decision.reason in format_tables(results)
