"""Toy retrieval data for the encoder-side engine tests.

Each query names one rare topic word that only its positive passage contains;
every passage is otherwise filler drawn from a shared small vocabulary. A
random tiny encoder ranks these poorly (mean pooling drowns the one shared
token among the filler), and a few contrastive steps fix it, so "the ranking
improved" is a reliable, fast signal.
"""

from __future__ import annotations

import random

import pytest
import torch
from transformers import TrainerCallback

from llama_index_ragtune.data.schema import Negative, RetrievalDataset

FILLER = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "sigma",
    "omega",
    "river",
    "forest",
    "stone",
    "cloud",
    "ember",
    "frost",
    "meadow",
    "harbor",
]
TOPICS = [
    "cardiology",
    "astronomy",
    "volcano",
    "penguin",
    "saxophone",
    "glacier",
    "tornado",
    "orchid",
    "mosaic",
    "lantern",
    "compass",
    "galaxy",
    "pyramid",
    "dolphin",
    "cactus",
    "violin",
]


def toy_dataset(
    seed: int = 0, with_negatives: bool = True, filler_words: int = 8
) -> RetrievalDataset:
    rng = random.Random(seed)
    corpus, queries, relevant, negatives = {}, {}, {}, {}
    for i, topic in enumerate(TOPICS):
        left = " ".join(rng.choice(FILLER) for _ in range(filler_words))
        right = " ".join(rng.choice(FILLER) for _ in range(filler_words))
        corpus[f"d{i}"] = f"{left} {topic} {right}"
        queries[f"q{i}"] = f"{rng.choice(FILLER)} {topic}"
        relevant[f"q{i}"] = [f"d{i}"]
        if with_negatives:
            negatives[f"q{i}"] = [Negative(f"d{(i + 1) % len(TOPICS)}", "curated")]
    return RetrievalDataset(queries, corpus, relevant, negatives)


@pytest.fixture(scope="session")
def make_toy():
    """The toy-data builder, for module-scoped fixtures."""
    return toy_dataset


@pytest.fixture()
def toy() -> RetrievalDataset:
    return toy_dataset()


@pytest.fixture()
def toy_without_negatives() -> RetrievalDataset:
    return toy_dataset(with_negatives=False)


def help_centre(corpus: dict[str, str], questions: dict[str, str]) -> RetrievalDataset:
    """One question per page: ``q_<page>`` asks ``questions[page]``, answered by ``page``."""
    return RetrievalDataset(
        queries={f"q_{doc}": text for doc, text in questions.items()},
        corpus=dict(corpus),
        relevant_docs={f"q_{doc}": [doc] for doc in questions},
    )


def hybrid_evaluator(data: RetrievalDataset, **kwargs):
    """A ``HybridRetrievalEvaluator`` over all of ``data`` (``kwargs``: its BM25 settings)."""
    from llama_index_ragtune.finetuning.hybrid_eval import HybridRetrievalEvaluator

    return HybridRetrievalEvaluator(
        data.queries, data.corpus, data.graded_qrels(), show_progress_bar=False, **kwargs
    )


FAST = dict(
    max_steps=2,
    per_device_train_batch_size=16,
    warmup_steps=0,
    save_strategy="no",
    logging_steps=50,
    disable_tqdm=True,
)
"""Training arguments of a two-step run (``Engine.default_args(tmp_path, **FAST)``)."""


class Diverge(TrainerCallback):
    """Training that diverged: every weight is NaN when the trainer stops."""

    def on_train_end(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            for param in model.parameters():
                param.fill_(float("nan"))


def toy_reranker_engine(data: RetrievalDataset, model: str, output_dir, **kwargs):
    """A two-step ``RerankerFinetuneEngine`` validating on ``data`` itself, every query's
    candidates the corpus's first eight passages."""
    from llama_index_ragtune.finetuning.reranker import RerankerFinetuneEngine

    candidates = {q: list(data.corpus)[:8] for q in data.query_ids}
    return RerankerFinetuneEngine(
        data,
        model=model,
        val_dataset=data,
        candidates=candidates,
        rerank_depth=8,
        budget=None,
        eval_points=0,
        args=RerankerFinetuneEngine.default_args(output_dir, **FAST),
        show_progress=False,
        **kwargs,
    )
