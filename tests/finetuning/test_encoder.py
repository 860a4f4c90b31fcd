"""EncoderFinetuneEngine on a tiny random encoder and a toy corpus (seconds each)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerCallback

from llama_index_ragtune.data.schema import RetrievalDataset
from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine
from llama_index_ragtune.finetuning.ranking_eval import DenseRetrievalEvaluator, score_rankings
from llama_index_ragtune.finetuning.rows import encoder_rows


def fast_args(output_dir, **overrides):
    settings = dict(
        max_steps=12,
        per_device_train_batch_size=16,
        learning_rate=2e-3,
        warmup_steps=0,
        save_strategy="no",
        logging_steps=50,
        disable_tqdm=True,
    )
    settings.update(overrides)
    return EncoderFinetuneEngine.default_args(output_dir, **settings)


@pytest.fixture(scope="module")
def trained(tiny_encoder_path, tmp_path_factory, make_toy):
    """One short training run shared by the assertions below."""
    data = make_toy()
    engine = EncoderFinetuneEngine(
        data,
        model=tiny_encoder_path,
        val_dataset=data,
        budget=None,
        fusion={"fusion_mode": "rrf", "alpha": 0.9},
        args=fast_args(tmp_path_factory.mktemp("encoder")),
        show_progress=False,
    )
    initial = {name: p.detach().clone() for name, p in engine.model.named_parameters()}
    result = engine.finetune()
    return engine, result, initial


def test_training_changes_the_weights(trained):
    engine, _, initial = trained
    changed = [
        name
        for name, p in engine.model.named_parameters()
        if not torch.equal(initial[name], p.detach())
    ]
    assert changed, "no parameter changed during training"
    word_embeddings = next(n for n in initial if "word_embeddings" in n)
    assert word_embeddings in changed


def test_toy_ranking_improves(trained):
    _, result, _ = trained
    assert {"ndcg@10", "recall@100", "mrr@10", "hybrid_ndcg@10"} <= set(result.before)
    assert result.before["ndcg@10"] < 0.6
    assert result.after["ndcg@10"] > result.before["ndcg@10"] + 0.25
    assert result.after["mrr@10"] > result.before["mrr@10"] + 0.25
    assert result.delta["ndcg@10"] == pytest.approx(
        result.after["ndcg@10"] - result.before["ndcg@10"]
    )


def test_result_records_run_and_saves_a_sentence_transformers_folder(trained, tmp_path):
    engine, result, _ = trained
    assert result.global_step == 12
    assert (
        result.train_seconds > 0 and result.peak_memory_mb > 0 and result.process_peak_memory_mb > 0
    )
    assert result.info["loss"] == "MultipleNegativesRankingLoss"
    assert result.info["rows"]["rows"] == 16 and result.info["rows"]["mined_negatives"] == 16
    assert (engine.final_model_path / "modules.json").exists()
    saved = json.loads(result.save_json(tmp_path / "r.json").read_text())
    assert saved["after"] == result.after and "delta" in saved
    assert saved["decision"]["promoted"] is True
    assert "ndcg@10" in result.format_table() and "promoted" in result.format_table()
    decision = json.loads((engine.output_dir / "decision.json").read_text())
    assert decision["decision"]["metric"] == "hybrid_ndcg@10"
    assert not engine.challenger_path.exists()


def test_finetuned_model_is_a_llama_index_embedding(trained):
    from llama_index.core.base.embeddings.base import BaseEmbedding

    engine, _, _ = trained
    embed = engine.get_finetuned_model(device="cpu")
    assert isinstance(embed, BaseEmbedding)
    query = torch.tensor(embed.get_query_embedding("penguin"))
    expected = engine.model.encode("penguin", convert_to_tensor=True, normalize_embeddings=True)
    assert torch.allclose(query, expected.cpu(), atol=1e-5)


class StepCounter(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def test_interrupted_training_resumes_from_its_checkpoint(tiny_encoder_path, tmp_path, toy):
    first = EncoderFinetuneEngine(
        toy,
        model=tiny_encoder_path,
        budget=None,
        val_fraction=0,
        args=fast_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=1),
    )
    assert first.finetune().global_step == 2
    assert (tmp_path / "checkpoint-2").is_dir()

    counter = StepCounter()
    second = EncoderFinetuneEngine(
        toy,
        model=tiny_encoder_path,
        budget=None,
        val_fraction=0,
        callbacks=[counter],
        args=fast_args(tmp_path, max_steps=4, save_strategy="steps", save_steps=1),
    )
    result = second.finetune(resume_from_checkpoint=True)
    assert result.info["resumed_from"].endswith("checkpoint-2")
    assert counter.steps == [3, 4]
    assert result.global_step == 4


def test_resume_without_a_checkpoint_starts_fresh_and_bad_path_fails(
    tiny_encoder_path, tmp_path, toy
):
    engine = EncoderFinetuneEngine(
        toy,
        model=tiny_encoder_path,
        budget=None,
        val_fraction=0,
        args=fast_args(tmp_path, max_steps=1),
    )
    assert engine.finetune(resume_from_checkpoint=True).info["resumed_from"] is None
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        engine.finetune(resume_from_checkpoint=str(tmp_path / "checkpoint-99"))


def test_cached_mnrl_matryoshka_and_prompts(tiny_encoder_path, tmp_path, toy):
    engine = EncoderFinetuneEngine(
        toy,
        model=tiny_encoder_path,
        loss="cached_mnrl",
        matryoshka_dims=[32, 16],
        query_prompt="query: ",
        passage_prompt="passage: ",
        max_negatives_per_query=2,
        budget=None,
        val_fraction=0,
        force_promotion=True,
        args=fast_args(tmp_path, max_steps=2),
    )
    result = engine.finetune(evaluate_before=False)
    assert result.decision.forced
    assert result.info["loss"] == "MatryoshkaLoss"
    assert engine.args.prompts == {
        "anchor": "query: ",
        "positive": "passage: ",
        "negative_1": "passage: ",
        "negative_2": "passage: ",
    }
    assert engine.model.prompts["query"] == "query: "
    embed = engine.get_finetuned_model(device="cpu")
    assert embed.query_instruction == "query: " and embed.text_instruction == "passage: "


def test_rows_pairs_without_negatives_and_source_mix(toy, toy_without_negatives):
    columns, stats = encoder_rows(toy_without_negatives, max_negatives_per_query=1)
    assert list(columns) == ["anchor", "positive"] and stats.rows == 16

    mixed = toy.with_negatives({"q0": ["d5", "d6"]}, source="bm25")
    columns, stats = encoder_rows(mixed, max_negatives_per_query=3, seed=1)
    assert list(columns) == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    row = columns["anchor"].index(mixed.queries["q0"])
    picked = {columns[f"negative_{i}"][row] for i in (1, 2, 3)}
    assert picked == {mixed.corpus[d] for d in ("d1", "d5", "d6")}
    assert stats.sources == {"curated": 46, "bm25": 2}
    assert mixed.corpus["d0"] not in picked


def test_random_negatives_fill_queries_without_mined_ones(toy):
    partial = RetrievalDataset(
        toy.queries, toy.corpus, toy.relevant_docs, {"q0": toy.negatives["q0"]}
    )
    columns, stats = encoder_rows(partial, max_negatives_per_query=1)
    assert stats.mined_negatives == 1 and stats.random_negatives == 15
    for positive, negative in zip(columns["positive"], columns["negative"], strict=True):
        assert negative != positive


def test_bad_inputs_give_clear_errors(tiny_encoder_path, toy):
    with pytest.raises(ValueError, match="empty corpus"):
        EncoderFinetuneEngine(RetrievalDataset({}, {}, {}), model=tiny_encoder_path)
    with pytest.raises(ValueError, match="without any positive"):
        EncoderFinetuneEngine(
            RetrievalDataset({"q": "x"}, {"d": "y"}, {"q": []}), model=tiny_encoder_path
        )
    with pytest.raises(TypeError, match="RetrievalDataset"):
        EncoderFinetuneEngine([("q", "d")], model=tiny_encoder_path)
    with pytest.raises(TypeError, match="SentenceTransformerTrainingArguments"):
        EncoderFinetuneEngine(toy, model=tiny_encoder_path, args={"learning_rate": 1e-5})
    with pytest.raises(ValueError, match="unknown loss"):
        EncoderFinetuneEngine(toy, model=tiny_encoder_path, loss="triplet")
    with pytest.raises(ValueError, match="matryoshka_dims"):
        EncoderFinetuneEngine(toy, model=tiny_encoder_path, matryoshka_dims=[64])
    with pytest.raises(FileNotFoundError):
        EncoderFinetuneEngine(toy, model="./no/such/model")
    with pytest.raises(ValueError, match="output_dir"):
        EncoderFinetuneEngine(
            toy,
            model=tiny_encoder_path,
            output_dir="a",
            args=EncoderFinetuneEngine.default_args("b"),
        )
    with pytest.raises(ValueError, match="val_fraction"):
        EncoderFinetuneEngine(toy, model=tiny_encoder_path, val_fraction=1.5)
    engine = EncoderFinetuneEngine(toy, model=tiny_encoder_path, output_dir="/nonexistent/x")
    with pytest.raises(RuntimeError, match="finetune"):
        engine.get_finetuned_model()


def test_dense_evaluator_matches_the_metric_functions(tiny_encoder_path, toy):
    from sentence_transformers import SentenceTransformer

    from llama_index_ragtune.evaluation.metrics import mrr_at_k, ndcg_at_k, recall_at_k

    data = toy
    qrels = {q: {d: 2 for d in docs} for q, docs in data.relevant_docs.items()}
    evaluator = DenseRetrievalEvaluator(data.queries, data.corpus, qrels, show_progress_bar=False)
    model = SentenceTransformer(tiny_encoder_path, device="cpu")
    rankings = evaluator.rank(model)
    assert all(len(r) == len(data.corpus) for r in rankings.values())
    expected = {
        "ndcg@10": sum(ndcg_at_k(rankings[q], qrels[q], 10) for q in qrels) / len(qrels),
        "recall@100": sum(recall_at_k(rankings[q], qrels[q], 100) for q in qrels) / len(qrels),
        "mrr@10": sum(mrr_at_k(rankings[q], qrels[q], 10) for q in qrels) / len(qrels),
    }
    assert evaluator.evaluate(model) == pytest.approx(expected)
    assert evaluator(model)["val_ndcg@10"] == pytest.approx(expected["ndcg@10"])
    assert evaluator.primary_metric == "val_ndcg@10"
    assert score_rankings({}, qrels)["ndcg@10"] == 0.0
