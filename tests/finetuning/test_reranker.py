"""RerankerFinetuneEngine on a toy corpus.

The ranking-improvement test starts from the bundled MiniLM bi-encoder with a new
one-logit head: a random tiny BERT cannot learn the query-passage token matching
a cross-encoder needs in a few steps, while MiniLM does so in 20. The other tests
use the tiny random encoder and a couple of steps.
"""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from llama_index_ragtune.data.schema import RetrievalDataset
from llama_index_ragtune.finetuning.ranking_eval import CandidateRerankingEvaluator
from llama_index_ragtune.finetuning.reranker import RerankerFinetuneEngine
from llama_index_ragtune.finetuning.rows import cross_encoder_rows, teacher_margins


def fast_args(output_dir, **overrides):
    settings = dict(
        max_steps=20,
        per_device_train_batch_size=16,
        learning_rate=1e-3,
        warmup_steps=0,
        save_strategy="no",
        logging_steps=50,
        disable_tqdm=True,
    )
    settings.update(overrides)
    return RerankerFinetuneEngine.default_args(output_dir, **settings)


def worst_first_candidates(data: RetrievalDataset, size: int = 8) -> dict[str, list[str]]:
    """First-stage candidates that put every positive last (nDCG@10 well below 1)."""
    out = {}
    for qid, positives in data.relevant_docs.items():
        others = [d for d in data.corpus if d not in positives][: size - len(positives)]
        out[qid] = others + positives
    return out


@pytest.fixture(scope="module")
def trained(minilm_path, tmp_path_factory, make_toy):
    data = make_toy(with_negatives=False, filler_words=3)  # 4 random negatives per query
    torch.manual_seed(0)  # the new head's initialisation
    candidates = worst_first_candidates(data)
    engine = RerankerFinetuneEngine(
        data,
        model=minilm_path,
        val_dataset=data,
        candidates=candidates,
        rerank_depth=8,
        max_negatives_per_query=4,
        budget=None,
        eval_points=0,
        args=fast_args(tmp_path_factory.mktemp("reranker"), learning_rate=2e-4),
        show_progress=False,
    )
    initial = {name: p.detach().clone() for name, p in engine.model.named_parameters()}
    untrained = CandidateRerankingEvaluator(
        data.queries, data.corpus, data.relevant_docs, candidates, depth=8, show_progress_bar=False
    ).evaluate(engine.model)
    result = engine.finetune()
    return engine, result, initial, untrained


def test_training_changes_the_weights_including_the_new_head(trained):
    engine, _, initial, _ = trained
    changed = {
        name
        for name, p in engine.model.named_parameters()
        if not torch.equal(initial[name], p.detach())
    }
    assert any("classifier" in name for name in changed)
    assert any("word_embeddings" in name for name in changed)


def test_toy_reranking_improves(trained):
    _, result, _, untrained = trained
    # "before" is the first-stage order: positives last among 8 candidates.
    assert result.before["mrr@10"] == pytest.approx(1 / 8)
    assert result.after["ndcg@10"] > untrained["ndcg@10"] + 0.1
    assert result.after["mrr@10"] > untrained["mrr@10"] + 0.1
    assert result.after["ndcg@10"] > result.before["ndcg@10"] + 0.25
    assert result.after["recall@100"] == result.before["recall@100"] == 1.0


def test_result_and_saved_reranker(trained):
    engine, result, _, _ = trained
    assert result.global_step == 20 and result.info["loss"] == "BinaryCrossEntropyLoss"
    assert result.info["rows"]["rows"] == 16 * 5  # each positive and 4 random negatives
    assert result.info["rows"]["random_negatives"] == 16 * 4
    assert (engine.final_model_path / "config.json").exists()
    assert result.promoted and "first-stage order" in result.decision.reason
    reranker = engine.get_finetuned_model(top_n=3)
    from llama_index.core.schema import NodeWithScore, TextNode

    data = engine.val_dataset
    nodes = [
        NodeWithScore(node=TextNode(id_=d, text=data.corpus[d]), score=0.0)
        for d in ("d5", "d6", "d3")
    ]
    ranked = reranker.postprocess_nodes(nodes, query_str=data.queries["q3"])
    assert len(ranked) == 3 and ranked[0].node.node_id == "d3"


def test_pos_weight_matches_the_negative_ratio(tiny_encoder_path, toy_without_negatives, tmp_path):
    engine = RerankerFinetuneEngine(
        toy_without_negatives,
        model=tiny_encoder_path,
        max_negatives_per_query=3,
        budget=None,
        args=fast_args(tmp_path),
    )
    columns, _ = engine.build_train_rows()
    loss = engine._build_loss(columns)
    assert float(loss.pos_weight) == pytest.approx(3.0)


@pytest.mark.parametrize(
    "loss, layout_column, loss_name",
    [
        ("lambda", "docs", "LambdaLoss"),
        ("listnet", "docs", "ListNetLoss"),
        ("margin_mse", "positive", "MarginMSELoss"),
    ],
)
def test_listwise_and_distillation_losses_train(
    tiny_encoder_path, toy, tmp_path, loss, layout_column, loss_name
):
    def teacher(pairs):  # knows the answer: the query's topic word is in the passage
        return [5.0 if query.split()[-1] in passage else -5.0 for query, passage in pairs]

    engine = RerankerFinetuneEngine(
        toy,
        model=tiny_encoder_path,
        loss=loss,
        teacher=teacher,
        max_negatives_per_query=2,
        budget=None,
        val_fraction=0,
        force_promotion=True,
        args=fast_args(tmp_path, max_steps=2, per_device_train_batch_size=4),
    )
    columns, _ = engine.build_train_rows()
    assert layout_column in columns
    if loss == "margin_mse":
        assert columns["label"] == [10.0] * 16
    initial = [p.detach().clone() for p in engine.model.parameters()]
    result = engine.finetune()
    assert result.info["loss"] == loss_name and result.global_step == 2 and result.before == {}
    assert any(
        not torch.equal(a, b.detach())
        for a, b in zip(initial, engine.model.parameters(), strict=True)
    )


def test_a_bi_encoder_teaches_its_scaled_cosine_margins(tiny_encoder_path, toy, tmp_path):
    from sentence_transformers import SentenceTransformer

    from llama_index_ragtune.finetuning.reranker import bi_encoder_scorer

    bi_encoder = SentenceTransformer(tiny_encoder_path, device="cpu")
    pairs = [("coral reef", "coral reef bleaching"), ("coral reef", "tax law")]
    embeddings = bi_encoder.encode(
        ["coral reef", "coral reef bleaching", "tax law"], normalize_embeddings=True
    )
    expected = [
        10.0 * float(embeddings[0] @ embeddings[1]),
        10.0 * float(embeddings[0] @ embeddings[2]),
    ]
    assert bi_encoder_scorer(bi_encoder)(pairs) == pytest.approx(expected, abs=1e-4)

    engine = RerankerFinetuneEngine(
        toy,
        model=tiny_encoder_path,
        loss="margin_mse",
        teacher=bi_encoder,
        budget=None,
        args=fast_args(tmp_path, max_steps=1, per_device_train_batch_size=4),
    )
    columns, _ = engine.build_train_rows()
    scorer = bi_encoder_scorer(bi_encoder)
    first = (
        (columns["query"][0], columns["positive"][0]),
        (columns["query"][0], columns["negative"][0]),
    )
    pos, neg = scorer(list(first))
    assert columns["label"][0] == pytest.approx(pos - neg, abs=1e-4)


class StepCounter(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def test_reranker_resumes_from_its_checkpoint(tiny_encoder_path, toy, tmp_path):
    args = fast_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=1)
    quick = {"budget": None, "val_fraction": 0}
    RerankerFinetuneEngine(toy, model=tiny_encoder_path, args=args, **quick).finetune()
    counter = StepCounter()
    args = fast_args(tmp_path, max_steps=3, save_strategy="steps", save_steps=1)
    result = RerankerFinetuneEngine(
        toy, model=tiny_encoder_path, args=args, callbacks=[counter], **quick
    ).finetune(resume_from_checkpoint=True)
    assert counter.steps == [3] and result.global_step == 3
    assert result.info["resumed_from"].endswith("checkpoint-2")


def test_rows_layouts(toy, toy_without_negatives):
    columns, stats = cross_encoder_rows(
        toy_without_negatives, "pointwise", max_negatives_per_query=2
    )
    assert columns["label"].count(1.0) == 16 and columns["label"].count(0.0) == 32
    assert stats.random_negatives == 32 and stats.mined_negatives == 0
    columns, stats = cross_encoder_rows(toy, "pointwise", max_negatives_per_query=2)
    assert columns["label"].count(0.0) == 16 and stats.mined_negatives == 16  # not repeated
    columns, _ = cross_encoder_rows(toy_without_negatives, "listwise", max_negatives_per_query=2)
    assert all(labels == [1.0, 0.0, 0.0] for labels in columns["labels"])
    assert all(len(docs) == 3 for docs in columns["docs"])
    columns, _ = cross_encoder_rows(toy, "triplets")
    assert len(columns["query"]) == 16  # one mined negative per query
    columns, _ = cross_encoder_rows(toy_without_negatives, "triplets", max_negatives_per_query=2)
    assert len(columns["query"]) == 32  # each positive with each of two distinct negatives
    for start in range(0, 32, 2):
        assert columns["query"][start] == columns["query"][start + 1]
        assert columns["negative"][start] != columns["negative"][start + 1]
    with pytest.raises(ValueError, match="one score per pair"):
        teacher_margins(lambda pairs: [0.0], columns)


def test_candidate_evaluator_keeps_the_tail_after_the_rerank_depth():
    class Reverse:
        training = False

        def eval(self):
            return self

        def train(self, mode=True):
            return self

        def predict(self, pairs, **kwargs):
            return list(range(len(pairs)))  # the later the candidate, the higher its score

    corpus = {f"d{i}": f"text {i}" for i in range(6)}
    evaluator = CandidateRerankingEvaluator(
        {"q": "x"},
        corpus,
        {"q": {"d2": 1, "d5": 1}},
        {"q": ["d0", "d1", "d2", "d3", "d4", "d5"]},
        depth=3,
        show_progress_bar=False,
    )
    assert evaluator.rerank(Reverse()) == {"q": ["d2", "d1", "d0", "d3", "d4", "d5"]}
    assert evaluator.evaluate(Reverse())["mrr@10"] == 1.0
    assert evaluator.baseline()["mrr@10"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="missing from the corpus"):
        CandidateRerankingEvaluator({"q": "x"}, corpus, {"q": ["d2"]}, {"q": ["zz"]})

    # Blending in the first-stage scores: w=1 keeps the first-stage order, w=0.5 mixes.
    candidates = {"q": ["d0", "d1", "d2", "d3", "d4", "d5"]}
    first_stage = {"q": [3.0, 2.0, 1.0, 0.5, 0.4, 0.3]}
    kept = CandidateRerankingEvaluator(
        {"q": "x"},
        corpus,
        {"q": {"d2": 1}},
        candidates,
        depth=3,
        candidate_scores=first_stage,
        retrieval_weight=1.0,
        show_progress_bar=False,
    )
    assert kept.rerank(Reverse()) == candidates
    mixed = CandidateRerankingEvaluator(
        {"q": "x"},
        corpus,
        {"q": {"d2": 1}},
        candidates,
        depth=3,
        candidate_scores={"q": [1.0, 0.0, 0.0, 0.5, 0.4, 0.3]},
        retrieval_weight=0.5,
        show_progress_bar=False,
    )
    # reranker z (-1.22, 0, 1.22) + first-stage z (1.41, -0.71, -0.71): d0 0.10, d1 -0.35, d2 0.26
    assert mixed.rerank(Reverse())["q"] == ["d2", "d0", "d1", "d3", "d4", "d5"]
    # Scores of one pass serve another evaluator over the same candidates.
    assert kept.last_scores == {"q": [0.0, 1.0, 2.0]}
    assert mixed.rerank_with(kept.last_scores) == mixed.rerank(Reverse())
    assert mixed.evaluate_scores(kept.last_scores) == mixed.evaluate(Reverse())
    with pytest.raises(ValueError, match="evaluate a model first"):
        mixed.evaluate_scores(None)
    with pytest.raises(ValueError, match="2 scores for its top 3 candidates"):
        mixed.rerank_with({"q": [1.0, 2.0]})
    with pytest.raises(ValueError, match="pass candidate_scores"):
        CandidateRerankingEvaluator(
            {"q": "x"}, corpus, {"q": ["d2"]}, candidates, retrieval_weight=0.5
        )
    with pytest.raises(ValueError, match="2 candidate scores for 6 candidates"):
        CandidateRerankingEvaluator(
            {"q": "x"},
            corpus,
            {"q": ["d2"]},
            candidates,
            candidate_scores={"q": [1.0, 2.0]},
            retrieval_weight=0.5,
        )


def test_bad_inputs_give_clear_errors(tiny_encoder_path, toy):
    with pytest.raises(ValueError, match="teacher"):
        RerankerFinetuneEngine(toy, model=tiny_encoder_path, loss="margin_mse")
    with pytest.raises(ValueError, match="unknown loss"):
        RerankerFinetuneEngine(toy, model=tiny_encoder_path, loss="hinge")
    with pytest.raises(TypeError, match="CrossEncoderTrainingArguments"):
        RerankerFinetuneEngine(toy, model=tiny_encoder_path, args=object())
    with pytest.raises(ValueError, match="rerank_depth"):
        RerankerFinetuneEngine(toy, model=tiny_encoder_path, rerank_depth=0)
    with pytest.raises(ValueError, match="empty corpus"):
        RerankerFinetuneEngine(RetrievalDataset({}, {}, {}), model=tiny_encoder_path)
    with pytest.raises(ValueError, match="retrieval_weights"):
        RerankerFinetuneEngine(toy, model=tiny_encoder_path, retrieval_weights=[1.5])
    engine = RerankerFinetuneEngine(toy, model=tiny_encoder_path, output_dir="/nonexistent/rr")
    with pytest.raises(RuntimeError, match="finetune"):
        engine.get_finetuned_model()


def test_candidates_come_from_the_hybrid_retriever(tiny_encoder_path, toy):
    engine = RerankerFinetuneEngine(
        toy,
        model=tiny_encoder_path,
        val_dataset=toy,
        encoder=tiny_encoder_path,
        rerank_depth=5,
        show_progress=False,
    )
    candidates = engine.candidates
    assert set(candidates) == set(toy.queries)
    assert all(
        set(docs) <= set(toy.corpus) and len(docs) == len(set(docs)) for docs in candidates.values()
    )
    base, blends, _ = engine._evaluators(toy)
    assert set(blends) == {0.0, 0.25, 0.5, 0.75}  # hybrid scores come with the candidates
    baseline = base.baseline()
    # BM25 finds each query's unique topic word, so the positives come near the top.
    assert baseline["recall@100"] == 1.0 and baseline["mrr@10"] > 0.5


def test_reranker_that_does_not_beat_the_first_stage_is_left_out(tiny_encoder_path, toy, tmp_path):
    """Good first-stage candidates and two steps of a random head: no promotion, a clear error."""
    from llama_index_ragtune.finetuning.reranker import RerankerNotPromotedError

    perfect = {
        q: list(docs) + [d for d in toy.corpus if d not in docs][:4]
        for q, docs in toy.relevant_docs.items()
    }
    engine = RerankerFinetuneEngine(
        toy,
        model=tiny_encoder_path,
        val_dataset=toy,
        candidates=perfect,
        rerank_depth=5,
        budget=None,
        output_dir=tmp_path,
        args=fast_args(tmp_path, max_steps=2),
        show_progress=False,
    )
    result = engine.finetune()
    assert result.before["mrr@10"] == 1.0 and result.promoted is False
    assert "no reranker" in result.decision.reason
    assert not engine.final_model_path.exists()
    assert (engine.challenger_path / "config.json").exists()
    with pytest.raises(RerankerNotPromotedError, match="Leave the reranker out"):
        engine.get_finetuned_model()
    # the challenger can still be inspected explicitly
    assert engine.get_finetuned_model(model_name=str(engine.challenger_path)).top_n == 10
