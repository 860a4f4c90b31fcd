"""Fine-tune the cross-encoder reranker on a ``RetrievalDataset`` with mined negatives.

``RerankerFinetuneEngine`` wraps sentence-transformers' ``CrossEncoderTrainer``.
It starts from a cross-encoder, or from a bi-encoder checkpoint with a new
one-logit head (the offline default: the bundled all-MiniLM-L6-v2), and trains
with one of:

- ``"bce"``: ``BinaryCrossEntropyLoss`` on (query, passage, label) rows, positives
  weighted by the negative-to-positive ratio (default);
- ``"lambda"`` / ``"listnet"``: ``LambdaLoss`` / ``ListNetLoss`` over
  (query, [positives + negatives], [labels]) lists;
- ``"margin_mse"``: ``MarginMSELoss`` distilling a teacher's score margins on
  (query, positive, negative) triplets (``teacher=`` a CrossEncoder path, a
  ``SentenceTransformer`` bi-encoder whose scaled cosine similarity is the score,
  or a callable ``pairs -> scores``).

A new head on a bi-encoder learns slowly from binary labels: on SciFact, one
CPU epoch of BCE leaves it ranking at random. Distilling a fine-tuned
bi-encoder's margins gives every pair a graded target and trains in the same
budget (``ragtune bench tuning`` does this; see the README).

Before and after, it reports reranking nDCG@10 / Recall@100 / MRR@10 of the
validation queries' first-stage candidates (the hybrid retriever's top K, or
``candidates=`` given as ``{qid: [doc ids]}``): "before" is the first-stage
order, "after" the fine-tuned reranker's order of the top ``rerank_depth``.

Example::

    from llama_index_ragtune.finetuning import RerankerFinetuneEngine

    engine = RerankerFinetuneEngine(train, val_dataset=val, encoder="runs/encoder/final",
                                    args=RerankerFinetuneEngine.default_training_args("runs/reranker"))
    print(engine.finetune().format_table())
    reranker = engine.get_finetuned_model(top_n=10)      # a CrossEncoderRerank postprocessor
    query_engine = index.as_query_engine(similarity_top_k=50, node_postprocessors=[reranker])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.cross_encoder import (
    CrossEncoder,
    CrossEncoderTrainer,
    CrossEncoderTrainingArguments,
)
from torch import nn

from llama_index_ragtune.finetuning.checkpoints import FINAL_DIR
from llama_index_ragtune.finetuning.compat import register_engine
from llama_index_ragtune.finetuning.ranking_eval import CandidateRerankingEvaluator
from llama_index_ragtune.finetuning.result import FinetuneResult, train_and_measure
from llama_index_ragtune.finetuning.rows import check_trainable, cross_encoder_rows, teacher_margins
from llama_index_ragtune.models import resolve_model

if TYPE_CHECKING:
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from transformers import TrainerCallback

    from llama_index_ragtune.data.schema import RetrievalDataset


LOSSES = ("bce", "lambda", "listnet", "margin_mse")
_LAYOUTS = {
    "bce": "pointwise",
    "lambda": "listwise",
    "listnet": "listwise",
    "margin_mse": "triplets",
}
DEFAULT_OUTPUT_DIR = "ragtune-reranker"
DEFAULT_MAX_LENGTH = 256
Teacher = (
    str | CrossEncoder | SentenceTransformer | Callable[[list[tuple[str, str]]], Sequence[float]]
)
BI_ENCODER_TEACHER_SCALE = 10.0


def bi_encoder_scorer(
    model: SentenceTransformer, scale: float = BI_ENCODER_TEACHER_SCALE, batch_size: int = 64
) -> Callable[[list[tuple[str, str]]], list[float]]:
    """A teacher from a bi-encoder: ``scale * cos(query, passage)`` for each pair.

    Example::

        from sentence_transformers import SentenceTransformer
        teacher = bi_encoder_scorer(SentenceTransformer("runs/encoder/final"))
        teacher([("what lowers LDL?", "Statins lower LDL cholesterol.")])   # one float per pair
    """
    import numpy as np

    def score(pairs: list[tuple[str, str]]) -> list[float]:
        encode = {
            "batch_size": batch_size,
            "normalize_embeddings": True,
            "convert_to_numpy": True,
            "show_progress_bar": False,
        }
        queries = model.encode([q for q, _ in pairs], **encode)
        passages = model.encode([p for _, p in pairs], **encode)
        return (scale * np.sum(queries * passages, axis=1)).astype(float).tolist()

    return score


class RerankerFinetuneEngine:
    """Fine-tuning of a cross-encoder reranker with hard negatives.

    Args:
        train_dataset: queries, corpus, positives and mined negatives (queries
            without negatives get random corpus passages).
        model: ``None`` (bundled MiniLM with a new one-logit head), a path or hub id
            of a cross-encoder or of a bi-encoder, or a ``CrossEncoder``.
        val_dataset: held-out queries; ``None`` skips evaluation.
        args: ``CrossEncoderTrainingArguments``; ``None`` uses ``default_training_args()``.
        loss: ``"bce"``, ``"lambda"``, ``"listnet"``, ``"margin_mse"``, a loss module
            built on the model, or a callable ``model -> loss``.
        teacher: for ``"margin_mse"``: a CrossEncoder (path, hub id or instance), a
            ``SentenceTransformer`` bi-encoder (scores: ``bi_encoder_scorer``) or a
            callable ``[(query, passage), ...] -> scores``.
        max_negatives_per_query: negatives per query in pointwise / listwise rows.
        candidates: ``{qid: [doc ids, best first]}`` first-stage candidates of the
            validation queries; built with ``HybridRetriever`` over the validation
            corpus when ``None``.
        rerank_depth: how many top candidates the reranker re-scores in evaluation.
        encoder: the hybrid retriever's embedding model when building candidates
            (path, hub id or LlamaIndex ``BaseEmbedding``; e.g. a fine-tuned encoder).
        max_length: token limit of (query, passage) inputs; ``None`` keeps the
            model's, or 256 when starting from the bundled default.
        evaluator: a sentence-transformers evaluator replacing the default
            ``CandidateRerankingEvaluator`` (before/after, and during training when
            ``args.eval_strategy`` is not ``"no"``).
        callbacks: ``transformers.TrainerCallback`` objects passed to the trainer.
        device: where to load the model (``None``: let sentence-transformers choose).
        show_progress: progress bars for candidate retrieval and evaluation.
    """

    def __init__(
        self,
        train_dataset: RetrievalDataset,
        model: str | CrossEncoder | None = None,
        val_dataset: RetrievalDataset | None = None,
        args: CrossEncoderTrainingArguments | None = None,
        loss: str | nn.Module | Callable[[CrossEncoder], nn.Module] = "bce",
        teacher: Teacher | None = None,
        max_negatives_per_query: int = 4,
        candidates: Mapping[str, Sequence[str]] | None = None,
        rerank_depth: int = 50,
        encoder: Any = None,
        max_length: int | None = None,
        evaluator: Any = None,
        callbacks: list[TrainerCallback] | None = None,
        device: str | None = None,
        show_progress: bool = True,
    ) -> None:
        self.train_dataset = check_trainable(train_dataset, "train_dataset")
        self.val_dataset = (
            None if val_dataset is None else check_trainable(val_dataset, "val_dataset")
        )
        if args is None:
            args = self.default_training_args()
        elif not isinstance(args, CrossEncoderTrainingArguments):
            raise TypeError(
                f"args must be CrossEncoderTrainingArguments, got {type(args).__name__}; "
                "build one with RerankerFinetuneEngine.default_training_args(output_dir, **overrides)"
            )
        if isinstance(loss, str) and loss not in LOSSES:
            raise ValueError(
                f"unknown loss {loss!r}; use one of {LOSSES}, a loss module or a callable"
            )
        if loss == "margin_mse" and teacher is None:
            raise ValueError(
                "loss='margin_mse' distils a teacher: pass teacher= (a CrossEncoder path or a callable)"
            )
        if rerank_depth < 1:
            raise ValueError(f"rerank_depth must be >= 1, got {rerank_depth}")
        if max_negatives_per_query < 1:
            raise ValueError(f"max_negatives_per_query must be >= 1, got {max_negatives_per_query}")
        self.args = args
        self.loss = loss
        self.teacher = teacher
        self.max_negatives_per_query = max_negatives_per_query
        self.rerank_depth = rerank_depth
        self.encoder = encoder
        self.callbacks = list(callbacks or [])
        self.show_progress = show_progress
        self.model = self._load_model(model, loss, max_length, device)
        self._candidates = dict(candidates) if candidates is not None else None
        self._evaluator = evaluator
        self.trainer: CrossEncoderTrainer | None = None
        self.result: FinetuneResult | None = None

    # ------------------------------------------------------------------ defaults

    @staticmethod
    def default_training_args(
        output_dir: str | Path = DEFAULT_OUTPUT_DIR, **overrides: Any
    ) -> CrossEncoderTrainingArguments:
        """The default recipe as ``CrossEncoderTrainingArguments`` (``overrides`` win).

        One epoch at batch 32 pairs, learning rate 5e-5 with 10% linear warm-up, a
        checkpoint every 50 steps (two kept), no evaluation during training, no
        external loggers.
        """
        defaults: dict[str, Any] = {
            "output_dir": str(output_dir),
            "num_train_epochs": 1,
            "per_device_train_batch_size": 32,
            "learning_rate": 5e-5,
            "warmup_steps": 0.1,
            "weight_decay": 0.01,
            "save_strategy": "steps",
            "save_steps": 50,
            "save_total_limit": 2,
            "eval_strategy": "no",
            "logging_steps": 10,
            "seed": 42,
            "report_to": "none",
            "dataloader_num_workers": 0,
        }
        defaults.update(overrides)
        return CrossEncoderTrainingArguments(**defaults)

    # ------------------------------------------------------------------ building

    @staticmethod
    def _load_model(
        model: Any, loss: Any, max_length: int | None, device: str | None
    ) -> CrossEncoder:
        loss_model = getattr(loss, "model", None) if isinstance(loss, nn.Module) else None
        if model is None and isinstance(loss_model, CrossEncoder):
            return loss_model
        if isinstance(model, CrossEncoder):
            ce = model
        elif model is None or isinstance(model, (str, Path)):
            if max_length is None and model is None:
                max_length = DEFAULT_MAX_LENGTH
            # num_labels=1: a bi-encoder checkpoint gets a new one-logit head.
            ce = CrossEncoder(
                resolve_model(model, kind="encoder"),
                num_labels=1,
                max_length=max_length,
                device=device,
            )
        else:
            raise TypeError(
                f"model must be None, a path, a hub id or a CrossEncoder, got {type(model).__name__}"
            )
        if ce.num_labels != 1:
            raise ValueError(
                f"the reranker must output one score per pair, but the model has {ce.num_labels} labels; "
                "load it with CrossEncoder(path, num_labels=1) to get a new one-logit head"
            )
        if loss_model is not None and loss_model is not ce:
            raise ValueError(
                "the loss module was built on a different model than the engine's; pass that model as "
                "model=..., or pass the loss as a callable `lambda model: Loss(model)`"
            )
        return ce

    def _layout(self) -> str:
        return _LAYOUTS.get(self.loss, "pointwise") if isinstance(self.loss, str) else "pointwise"

    def build_train_rows(self) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        """The trainer's columns for the loss's layout, and their stats."""
        columns, stats = cross_encoder_rows(
            self.train_dataset, self._layout(), self.max_negatives_per_query, seed=self.args.seed
        )
        if self.loss == "margin_mse":
            columns["label"] = teacher_margins(self._teacher_scorer(), columns)
        return columns, stats.as_dict()

    def _teacher_scorer(self) -> Callable[[list[tuple[str, str]]], Sequence[float]]:
        teacher = self.teacher
        if isinstance(teacher, (str, Path)):
            teacher = CrossEncoder(resolve_model(teacher, kind="encoder"))
        if isinstance(teacher, CrossEncoder):
            model = teacher
            return lambda pairs: model.predict(
                pairs, batch_size=32, show_progress_bar=False, activation_fn=nn.Identity()
            )
        if isinstance(teacher, SentenceTransformer):
            return bi_encoder_scorer(teacher)
        if callable(teacher):
            return teacher
        raise TypeError(
            "teacher must be a CrossEncoder, a SentenceTransformer, a path or a callable, "
            f"got {type(teacher).__name__}"
        )

    def _build_loss(self, columns: Mapping[str, list[Any]]) -> nn.Module:
        from sentence_transformers.cross_encoder import losses

        if self.loss == "bce":
            positives = sum(1 for label in columns["label"] if label > 0)
            negatives = len(columns["label"]) - positives
            pos_weight = torch.tensor(negatives / max(positives, 1))
            return losses.BinaryCrossEntropyLoss(self.model, pos_weight=pos_weight)
        if self.loss == "lambda":
            return losses.LambdaLoss(self.model, mini_batch_size=32)
        if self.loss == "listnet":
            return losses.ListNetLoss(self.model, mini_batch_size=32)
        if self.loss == "margin_mse":
            return losses.MarginMSELoss(self.model)
        if isinstance(self.loss, nn.Module):
            return self.loss
        if callable(self.loss):
            return self.loss(self.model)
        raise TypeError(
            f"loss must be a name, a loss module or a callable, got {type(self.loss).__name__}"
        )

    # ------------------------------------------------------------------ evaluation

    @property
    def candidates(self) -> dict[str, list[str]] | None:
        """First-stage candidates of the validation queries (built on first use)."""
        if self._candidates is None and self.val_dataset is not None:
            from llama_index_ragtune.finetuning.candidates import hybrid_candidates

            self._candidates = hybrid_candidates(
                self.val_dataset.queries,
                self.val_dataset.corpus,
                top_k=max(100, self.rerank_depth),
                embed_model=self.encoder,
                show_progress=self.show_progress,
            )
        return self._candidates

    @property
    def evaluator(self) -> Any:
        """The evaluator used before/after training (``None`` without a validation split)."""
        if self._evaluator is None and self.val_dataset is not None:
            self._evaluator = CandidateRerankingEvaluator(
                self.val_dataset.queries,
                self.val_dataset.corpus,
                self.val_dataset.relevant_docs,
                self.candidates,
                depth=self.rerank_depth,
                show_progress_bar=self.show_progress,
            )
        return self._evaluator

    def _evaluate(self, baseline: bool = False) -> dict[str, float]:
        evaluator = self.evaluator
        if evaluator is None:
            return {}
        if baseline and hasattr(evaluator, "baseline"):
            return dict(evaluator.baseline())
        if hasattr(evaluator, "evaluate"):
            return dict(evaluator.evaluate(self.model))
        raw = evaluator(self.model)
        return (
            {k.rsplit("_", 1)[-1]: float(v) for k, v in raw.items()}
            if isinstance(raw, dict)
            else {"score": float(raw)}
        )

    # ------------------------------------------------------------------ public

    @property
    def final_model_path(self) -> Path:
        """``<output_dir>/final``: where ``finetune()`` saves the fine-tuned reranker."""
        return Path(self.args.output_dir) / FINAL_DIR

    def finetune(
        self, resume_from_checkpoint: bool | str | None = None, evaluate_before: bool = True
    ) -> FinetuneResult:
        """Train, save to ``<output_dir>/final`` and return the before/after metrics.

        "before" is the first-stage order of the candidates (a fresh one-logit head
        ranks at random, so scoring it would say nothing); "after" re-ranks their top
        ``rerank_depth`` with the fine-tuned model.

        Args:
            resume_from_checkpoint: ``True`` continues from the last checkpoint in
                ``output_dir`` (fresh start when there is none); a path continues
                from that checkpoint.
            evaluate_before: compute the first-stage metrics first.
        """
        from datasets import Dataset

        columns, row_stats = self.build_train_rows()
        before = self._evaluate(baseline=True) if evaluate_before else {}
        loss = self._build_loss(columns)
        use_evaluator = self.evaluator if self.args.eval_strategy != "no" else None
        self.trainer = CrossEncoderTrainer(
            model=self.model,
            args=self.args,
            train_dataset=Dataset.from_dict(columns),
            loss=loss,
            evaluator=use_evaluator,
            callbacks=self.callbacks,
        )
        self.result = train_and_measure(
            self.trainer,
            self.final_model_path,
            resume_from_checkpoint,
            self._evaluate,
            before,
            loss,
            row_stats,
            rerank_depth=self.rerank_depth,
            val_queries=len(self.val_dataset) if self.val_dataset is not None else 0,
        )
        return self.result

    def get_finetuned_model(
        self, model_name: str | None = None, top_n: int = 10, **kwargs: Any
    ) -> BaseNodePostprocessor:
        """The fine-tuned reranker as our ``CrossEncoderRerank`` node postprocessor.

        Args:
            model_name: a saved reranker folder to load instead of this engine's
                ``final`` model (kept for llama-index-finetuning's signature).
            top_n: nodes kept after re-ranking.
            kwargs: passed to ``CrossEncoderRerank``.
        """
        from llama_index_ragtune.postprocessor import CrossEncoderRerank

        path = Path(model_name) if model_name is not None else self.final_model_path
        if model_name is None and not path.is_dir():
            raise RuntimeError(f"no fine-tuned reranker at {path}; call finetune() first")
        return CrossEncoderRerank(model=str(path), top_n=top_n, **kwargs)


register_engine(RerankerFinetuneEngine, "cross_encoder")
