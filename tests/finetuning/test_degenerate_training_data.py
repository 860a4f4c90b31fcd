"""The engines on degenerate or hostile data: a diverged (NaN) model, negatives that are
the same passage as a positive, splits that leave nothing, validation without candidates.

Each test names what it caught before the fix; the engine runs use the tiny random
encoder and two or three steps.
"""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.schema import Negative, RetrievalDataset
from llama_index_ragtune.finetuning.budget import TrainingBudget, select_positives
from llama_index_ragtune.finetuning.checkpoints import check_weights, nonfinite_weights
from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine
from llama_index_ragtune.finetuning.promotion import decide_promotion, refuse_broken
from llama_index_ragtune.finetuning.ranking_eval import (
    CandidateRerankingEvaluator,
    DenseRetrievalEvaluator,
)
from llama_index_ragtune.finetuning.reranker import (
    RerankerFinetuneEngine,
    RerankerNotPromotedError,
)
from llama_index_ragtune.finetuning.rows import cross_encoder_rows, encoder_rows
from tests.finetuning.conftest import FAST, Diverge, toy_reranker_engine


def _finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


# ---------------------------------------------------------------- a diverged model


@pytest.fixture(scope="module")
def diverged_encoder(tiny_encoder_path, tmp_path_factory, make_toy):
    data = make_toy()
    root = tmp_path_factory.mktemp("nan_enc")
    engine = EncoderFinetuneEngine(
        data,
        model=tiny_encoder_path,
        val_dataset=data,
        budget=None,
        fusion={"fusion_mode": "rrf", "alpha": 0.9},
        force_promotion=True,  # even a forced promotion must not ship NaN weights
        cache_dir=root / "embeddings",  # was: the cache refused the NaN vectors: a crash
        callbacks=[Diverge()],
        args=EncoderFinetuneEngine.default_args(root / "run", **FAST),
        show_progress=False,
    )
    return engine, engine.finetune()


def test_a_diverged_encoder_is_never_promoted_even_when_forced(diverged_encoder):
    # was: "promoted the tuned model (forced ...)" and final/ served NaN embeddings
    engine, result = diverged_encoder
    assert result.promoted is False and not result.decision.forced
    assert "NaN or infinite" in result.decision.reason and "learning rate" in result.decision.reason
    assert result.info["nonfinite_weights"] and result.info["challenger_path"]
    saved = json.loads(engine.decision_path.read_text())
    assert saved["decision"]["promoted"] is False and saved["result"]["promoted"] is False
    assert _finite(engine.model)  # the starting weights are back in memory
    assert nonfinite_weights(engine.final_model_path) == []  # final/ is the starting model
    embedding = engine.get_finetuned_model().get_text_embedding("volcano")
    assert all(math.isfinite(x) for x in embedding)
    with pytest.raises(RuntimeError, match="NaN or infinite weights"):
        check_weights(engine.challenger_path)  # the diverged one is kept, never loadable silently


def test_a_diverged_encoder_scores_nan_not_an_arbitrary_ranking(diverged_encoder, make_toy):
    # was: NaN embeddings ranked the corpus in index order and scored a finite nDCG
    engine, result = diverged_encoder
    assert all(math.isnan(result.after[k]) for k in ("ndcg@10", "recall@100", "mrr@10"))
    data = make_toy()
    with torch.no_grad():
        for param in engine.model.parameters():
            param.fill_(float("nan"))
    evaluator = DenseRetrievalEvaluator(
        data.queries, data.corpus, data.relevant_docs, show_progress_bar=False
    )
    assert all(math.isnan(v) for v in evaluator.evaluate(engine.model).values())


def test_a_diverged_reranker_is_never_promoted_even_when_forced(
    tiny_encoder_path, tmp_path, make_toy
):
    data = make_toy(with_negatives=False)
    engine = toy_reranker_engine(
        data, tiny_encoder_path, tmp_path, force_promotion=True, callbacks=[Diverge()]
    )
    result = engine.finetune()
    # was: promoted (forced) and served a reranker whose every score is NaN
    assert result.promoted is False and "NaN or infinite" in result.decision.reason
    assert math.isnan(result.after["ndcg@10"]) and result.model_path is None
    assert not engine.final_model_path.exists()
    with pytest.raises(RerankerNotPromotedError, match="NaN or infinite"):
        engine.get_finetuned_model()


def test_non_finite_cross_encoder_scores_are_unscorable(make_toy):
    data = make_toy()
    candidates = {q: list(data.corpus)[:4] for q in data.query_ids}
    evaluator = CandidateRerankingEvaluator(
        data.queries, data.corpus, data.relevant_docs, candidates, depth=4, show_progress_bar=False
    )
    scores = {q: [0.1, 0.2, 0.3, 0.4] for q in data.query_ids}
    assert math.isfinite(evaluator.evaluate_scores(scores)["ndcg@10"])
    scores["q3"] = [0.1, float("nan"), 0.3, float("inf")]
    assert all(math.isnan(v) for v in evaluator.evaluate_scores(scores).values())


def test_refusing_a_broken_model_keeps_the_champion_and_is_idempotent():
    won = decide_promotion({"m": 0.1}, {"m": 0.9}, "m", champion_name="the first stage")
    kept = refuse_broken(won, ["layer.0.weight", "layer.1.weight"])
    assert not kept.promoted and kept.challenger is None and kept.champion == 0.1
    assert kept.reason.startswith("kept the first stage: ") and "layer.0.weight" in kept.reason
    assert refuse_broken(kept, ["layer.0.weight", "layer.1.weight"]) == kept
    forced = decide_promotion({"m": 0.1}, {"m": 0.0}, "m", force=True)
    refused = refuse_broken(forced, ["w"])
    assert (
        not refused.promoted and not refused.forced and "forced promotion refused" in refused.reason
    )
    assert refuse_broken(won, []) is won


def test_check_weights_refuses_a_saved_model_with_nan_weights(tiny_encoder_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_encoder_path, device="cpu")
    check_weights(tiny_encoder_path)  # a healthy model passes
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("inf")
    model.save(str(tmp_path / "bad"))
    assert len(nonfinite_weights(tmp_path / "bad")) == 1
    with pytest.raises(RuntimeError, match=r"NaN or infinite weights \(model\.safetensors:"):
        check_weights(tmp_path / "bad")


def test_too_few_queries_for_a_validation_split_keep_the_start_and_say_why(
    tiny_encoder_path, tmp_path, make_toy, caplog
):
    one = make_toy().subset(["q0"])  # a single query: nothing can be held out
    engine = EncoderFinetuneEngine(
        one,
        model=tiny_encoder_path,
        budget=None,
        args=EncoderFinetuneEngine.default_args(tmp_path, **FAST),
        show_progress=False,
    )
    start = {k: v.clone() for k, v in engine.model.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.finetuning.base"):
        result = engine.finetune()
    assert "no validation split: there is one training query" in caplog.text
    assert result.promoted is False and "could not be checked" in result.decision.reason
    assert result.info["val_queries"] == 0
    assert all(torch.equal(start[k], v) for k, v in engine.model.state_dict().items())
    twins = RetrievalDataset(
        {f"q{i}": "Apple returns?" if i % 2 else "apple returns" for i in range(6)},
        one.corpus,
        {f"q{i}": ["d0"] for i in range(6)},
    )
    engine.train_dataset = twins
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.finetuning.base"):
        assert engine.split_validation() == (twins, None)
    assert "all 6 training queries are the same question" in caplog.text


# ---------------------------------------------------------------- training rows


def _data(negatives=None, queries=None, relevant=None) -> RetrievalDataset:
    corpus = {
        "d1": "The return policy for apples.",
        "d2": "the return policy for apples",  # the same passage under another id
        "d3": "bananas ripen in a week",
        "d4": "cherries are red",
    }
    queries = queries or {"q1": "apple returns?"}
    relevant = relevant or {q: ["d1"] for q in queries}
    return RetrievalDataset(queries, corpus, relevant, negatives or {})


def test_a_negative_with_a_positives_text_is_left_out_and_named(caplog):
    data = _data({"q1": [Negative("d2", "curated"), Negative("d3", "curated")]})
    with caplog.at_level(logging.WARNING, logger="llama_index_ragtune.finetuning.rows"):
        rows, stats = encoder_rows(data, max_negatives_per_query=2)
    # was: the row (apple returns?, d1, d2) taught that a passage is its own negative
    assert set(rows["negative_1"] + rows["negative_2"]) == {"bananas ripen in a week"}
    assert stats.dropped_negatives == ["q1:d2"] and stats.as_dict()["dropped_negatives"]
    assert "'q1:d2'" in caplog.text and "same passage as a positive" in caplog.text
    pointwise, _ = cross_encoder_rows(data, "pointwise", max_negatives_per_query=4)
    negatives = [
        p for p, label in zip(pointwise["passage"], pointwise["label"], strict=True) if label == 0
    ]
    assert negatives == ["bananas ripen in a week"]


def test_a_twins_positive_is_not_a_negative():
    twins = {"q1": "apple returns?", "q2": "Apple returns"}  # the same question
    data = _data(
        {"q1": [Negative("d3", "curated")], "q2": [Negative("d4", "curated")]},
        queries=twins,
        relevant={"q1": ["d1"], "q2": ["d3"]},
    )
    rows, stats = encoder_rows(data, max_negatives_per_query=1)
    # was: q1 trained with d3 as a negative while its twin q2 trained with d3 as a positive
    assert "bananas ripen in a week" not in rows["negative"]
    assert stats.dropped_negatives == ["q1:d3"]


def test_random_negatives_never_copy_a_positive_and_a_negative_listed_twice_is_used_once():
    data = _data(queries={f"q{i}": f"apple question {i}" for i in range(30)})
    data = data.with_negatives({"q0": ["d3"]})  # the others fall back to random negatives
    rows, stats = cross_encoder_rows(data, "pointwise", max_negatives_per_query=3)
    negatives = [p for p, label in zip(rows["passage"], rows["label"], strict=True) if label == 0]
    # was: d2 (d1's text) drawn as a random negative of d1's queries
    assert "the return policy for apples" not in negatives
    assert stats.random_negatives == 29 * 2  # d3, d4: all a small corpus has
    twice = _data({"q1": [Negative("d3", "a"), Negative("d3", "b")]})
    rows, _ = cross_encoder_rows(twice, "pointwise", max_negatives_per_query=4)
    assert rows["label"] == [1.0, 0.0]  # was: two identical negative rows


def test_a_small_corpus_reuses_random_negatives_instead_of_failing():
    data = _data(
        {"q2": [Negative("d1", "curated")]},
        queries={"q1": "apple returns?", "q2": "fruit"},
        relevant={"q1": ["d1", "d3"], "q2": ["d4"]},
    )
    rows, _ = encoder_rows(data, max_negatives_per_query=2)
    # q1 needs 2 x 2 random negatives and only d4 is not one of its passages: was a ValueError
    # "too few other documents to draw 4 random ones; lower max_negatives_per_query"
    assert rows["negative_1"][:2] + rows["negative_2"][:2] == ["cherries are red"] * 4


def test_a_positive_left_out_by_the_budget_is_never_a_negative():
    corpus = {f"d{i}": f"passage number {i}" for i in range(210)}
    many = {"q": [f"d{i}" for i in range(200)], "r": ["d205"]}  # q: 200 positives
    data = RetrievalDataset({"q": "many", "r": "other"}, corpus, many)
    chosen = select_positives(data, TrainingBudget(max_pairs_per_query=4), seed=0)
    for layout, column in (("pointwise", "passage"), ("triplets", "negative")):
        rows, _ = cross_encoder_rows(data, layout, max_negatives_per_query=4, positives=chosen)
        negatives = {
            int(text.split()[-1])
            for i, text in enumerate(rows[column])
            if rows["query"][i] == "many" and rows.get("label", [0] * (i + 1))[i] == 0
        }
        # was: 3 of q's 4 random "negatives" were positives the budget had not picked (label 0)
        assert len(negatives) == 4 and negatives <= set(range(200, 210)), layout


def test_a_query_whose_every_document_is_a_positive_is_a_data_error_naming_it():
    data = _data(
        {"q2": [Negative("d1", "curated")]},
        queries={"q1": "apple returns?", "q2": "fruit"},
        relevant={"q1": ["d1", "d3", "d4"], "q2": ["d4"]},
    )
    with pytest.raises(DataError, match=r"query 'q1' has no negatives and every document"):
        encoder_rows(data, max_negatives_per_query=1)


# ---------------------------------------------------------------- splits and candidates


def test_a_split_of_twins_only_says_they_are_twins():
    twins = {f"q{i}": "Apple returns?" if i % 2 else "apple returns" for i in range(6)}
    data = _data(queries=twins)
    # was: "all queries are linked by shared positives ...; use group_by_positive=False"
    # although group_by_positive was already False
    with pytest.raises(DataError, match="are the same question") as err:
        data.split(0.2)
    assert "'q0'" in str(err.value) and "group_by_positive" not in str(err.value)
    with pytest.raises(DataError, match="shared positives or the same question"):
        data.split(0.2, group_by_positive=True)


def test_validation_without_any_candidate_fails_before_training(
    tiny_encoder_path, tmp_path, make_toy
):
    data = make_toy(with_negatives=False)
    train, val = data.subset(data.query_ids[:12]), data.subset(data.query_ids[12:])
    engine = RerankerFinetuneEngine(
        train,
        model=tiny_encoder_path,
        val_dataset=val,
        candidates={q: list(data.corpus)[:5] for q in train.query_ids},  # none for val
        budget=None,
        eval_points=0,
        args=RerankerFinetuneEngine.default_args(tmp_path, **FAST),
        show_progress=False,
    )
    # was: a whole training run, then "not better: ndcg@10 0.0000 vs 0.0000"
    with pytest.raises(DataError, match=r"none of the 4 validation queries .*'q12'"):
        engine.finetune()
    assert engine.trainer is None


def test_the_served_encoder_warns_once_when_it_cuts_a_text(diverged_encoder, caplog):
    # was a plain HuggingFaceEmbedding: texts over max_seq_length were cut without a word
    engine, _ = diverged_encoder
    served = engine.get_finetuned_model()
    assert served.class_name() == "HuggingFaceEmbedding"  # same cache identity as before
    limit = int(served._model.max_seq_length)
    caplog.set_level(logging.WARNING)
    served.get_text_embedding("volcano")
    assert not [r for r in caplog.records if "longer than the encoder" in r.getMessage()]
    served.get_text_embedding_batch(["volcano " * (4 * limit)] * 2)
    served.get_text_embedding("volcano " * (4 * limit))
    (message,) = [
        r.getMessage() for r in caplog.records if "longer than the encoder" in r.getMessage()
    ]
    assert f"max_seq_length {limit}" in message and "dropped" in message
