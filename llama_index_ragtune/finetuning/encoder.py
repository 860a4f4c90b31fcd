"""Fine-tune the bi-encoder on a ``RetrievalDataset`` with mined hard negatives.

``EncoderFinetuneEngine`` wraps sentence-transformers' ``SentenceTransformerTrainer``:
it builds the training rows (query, positive, hard negative), the loss
(``MultipleNegativesRankingLoss`` by default, ``CachedMultipleNegativesRankingLoss``
for large batches in small memory, optionally inside ``MatryoshkaLoss``),
evaluates the held-out split before and after (nDCG@10, Recall@100, MRR@10
against the full corpus), saves a plain sentence-transformers folder and hands
the result back as a LlamaIndex ``BaseEmbedding``.

Hyperparameters live in the upstream ``SentenceTransformerTrainingArguments``;
``default_training_args()`` builds the defaults (tuned for a 2-core CPU).

Example::

    from llama_index.core import Settings
    from llama_index_ragtune.data import HardNegativeMiner, RetrievalDataset
    from llama_index_ragtune.finetuning import EncoderFinetuneEngine

    train = RetrievalDataset.from_beir("../shared/data/scifact", split="train")
    train = HardNegativeMiner(sources=("bm25", "dense"), num_negatives=3).mine(train)
    val = RetrievalDataset.from_beir("../shared/data/scifact", split="test")
    engine = EncoderFinetuneEngine(train, val_dataset=val,
                                   args=EncoderFinetuneEngine.default_training_args("runs/encoder"))
    result = engine.finetune()
    print(result.format_table())
    Settings.embed_model = engine.get_finetuned_model()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
from sentence_transformers.base.sampler import BatchSamplers
from sentence_transformers.sentence_transformer.training_args import (
    SentenceTransformerTrainingArguments,
)
from torch import nn

from llama_index_ragtune.finetuning.checkpoints import FINAL_DIR
from llama_index_ragtune.finetuning.compat import register_engine
from llama_index_ragtune.finetuning.ranking_eval import DenseRetrievalEvaluator
from llama_index_ragtune.finetuning.result import FinetuneResult, train_and_measure
from llama_index_ragtune.finetuning.rows import check_trainable, encoder_rows
from llama_index_ragtune.models import resolve_model

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from sentence_transformers.base.evaluation import BaseEvaluator
    from transformers import TrainerCallback

    from llama_index_ragtune.data.schema import RetrievalDataset


LOSSES = ("mnrl", "cached_mnrl")
DEFAULT_OUTPUT_DIR = "ragtune-encoder"


class EncoderFinetuneEngine:
    """Contrastive fine-tuning of a sentence-transformers bi-encoder.

    Args:
        train_dataset: queries, corpus, positives and (optionally) mined negatives.
            A LlamaIndex ``EmbeddingQAFinetuneDataset`` is accepted too.
        model: ``None`` (bundled all-MiniLM-L6-v2), a local path, a hub id or a
            ``SentenceTransformer`` (trained in place).
        val_dataset: held-out queries scored before and after training against
            their full corpus. ``None`` skips both evaluations.
        args: ``SentenceTransformerTrainingArguments``; ``None`` uses
            ``default_training_args()``. ``output_dir`` holds the checkpoints and
            the final model (``<output_dir>/final``).
        loss: ``"mnrl"`` (``MultipleNegativesRankingLoss``), ``"cached_mnrl"``
            (``CachedMultipleNegativesRankingLoss``, mini-batch 16), a loss module
            built on the model, or a callable ``model -> loss``.
        matryoshka_dims: wrap the loss in ``MatryoshkaLoss`` over these dimensions.
        query_prompt, passage_prompt: text prepended to queries / passages in
            training, evaluation and the saved model's ``prompts``.
        evaluator: a sentence-transformers evaluator that replaces the default
            ``DenseRetrievalEvaluator`` on ``val_dataset`` (for before/after and,
            when ``args.eval_strategy`` is not ``"no"``, during training).
        max_negatives_per_query: negative columns per row (0 = pairs, in-batch
            negatives only). Ignored when the dataset has no negatives.
        callbacks: ``transformers.TrainerCallback`` objects passed to the trainer.
        device: where to load the model (``None``: let sentence-transformers choose).
        show_progress: progress bars for evaluation.
    """

    def __init__(
        self,
        train_dataset: RetrievalDataset,
        model: str | SentenceTransformer | None = None,
        val_dataset: RetrievalDataset | None = None,
        args: SentenceTransformerTrainingArguments | None = None,
        loss: str | nn.Module | Callable[[SentenceTransformer], nn.Module] = "mnrl",
        matryoshka_dims: Sequence[int] | None = None,
        query_prompt: str | None = None,
        passage_prompt: str | None = None,
        evaluator: BaseEvaluator | None = None,
        max_negatives_per_query: int = 1,
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
        elif not isinstance(args, SentenceTransformerTrainingArguments):
            raise TypeError(
                f"args must be SentenceTransformerTrainingArguments, got {type(args).__name__}; "
                "build one with EncoderFinetuneEngine.default_training_args(output_dir, **overrides)"
            )
        if isinstance(loss, str) and loss not in LOSSES:
            raise ValueError(
                f"unknown loss {loss!r}; use one of {LOSSES}, a loss module or a callable"
            )
        if max_negatives_per_query < 0:
            raise ValueError(f"max_negatives_per_query must be >= 0, got {max_negatives_per_query}")
        self.args = args
        self.loss = loss
        self.matryoshka_dims = list(matryoshka_dims) if matryoshka_dims else None
        self.query_prompt, self.passage_prompt = query_prompt, passage_prompt
        self.max_negatives_per_query = max_negatives_per_query
        self.callbacks = list(callbacks or [])
        self.show_progress = show_progress
        self.model = self._load_model(model, loss, device)
        if self.matryoshka_dims:
            dim = self.model.get_embedding_dimension()
            bad = [d for d in self.matryoshka_dims if d < 1 or (dim and d > dim)]
            if bad:
                raise ValueError(
                    f"matryoshka_dims {bad} are outside 1..{dim} (the model's embedding size)"
                )
        if query_prompt is not None or passage_prompt is not None:
            self.model.prompts = {
                **self.model.prompts,
                "query": query_prompt or "",
                "document": passage_prompt or "",
            }
        self.evaluator = evaluator if evaluator is not None else self._default_evaluator()
        self.trainer: SentenceTransformerTrainer | None = None
        self.result: FinetuneResult | None = None

    # ------------------------------------------------------------------ defaults

    @staticmethod
    def default_training_args(
        output_dir: str | Path = DEFAULT_OUTPUT_DIR, **overrides: Any
    ) -> SentenceTransformerTrainingArguments:
        """The default recipe as ``SentenceTransformerTrainingArguments`` (``overrides`` win).

        One epoch at batch 32 (a few minutes per thousand pairs on a 2-core CPU),
        learning rate 5e-5 with 10% linear warm-up, no duplicate texts in a batch
        (so in-batch negatives are true negatives), a checkpoint every 50 steps
        (two kept), no evaluation during training, no external loggers.
        """
        defaults: dict[str, Any] = {
            "output_dir": str(output_dir),
            "num_train_epochs": 1,
            "per_device_train_batch_size": 32,
            "learning_rate": 5e-5,
            "warmup_steps": 0.1,
            "weight_decay": 0.01,
            "batch_sampler": BatchSamplers.NO_DUPLICATES,
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
        return SentenceTransformerTrainingArguments(**defaults)

    # ------------------------------------------------------------------ building

    @staticmethod
    def _load_model(model: Any, loss: Any, device: str | None) -> SentenceTransformer:
        loss_model = getattr(loss, "model", None) if isinstance(loss, nn.Module) else None
        if model is None and isinstance(loss_model, SentenceTransformer):
            return loss_model
        if isinstance(model, SentenceTransformer):
            st = model
        elif model is None or isinstance(model, (str, Path)):
            st = SentenceTransformer(resolve_model(model, kind="encoder"), device=device)
        else:
            raise TypeError(
                f"model must be None, a path, a hub id or a SentenceTransformer, got {type(model).__name__}"
            )
        if loss_model is not None and loss_model is not st:
            raise ValueError(
                "the loss module was built on a different model than the engine's; pass that model as "
                "model=..., or pass the loss as a callable `lambda model: Loss(model)`"
            )
        return st

    def _default_evaluator(self) -> DenseRetrievalEvaluator | None:
        if self.val_dataset is None:
            return None
        return DenseRetrievalEvaluator(
            self.val_dataset.queries,
            self.val_dataset.corpus,
            self.val_dataset.relevant_docs,
            query_prompt=self.query_prompt,
            passage_prompt=self.passage_prompt,
            show_progress_bar=self.show_progress,
        )

    def _build_loss(self) -> nn.Module:
        from sentence_transformers.sentence_transformer import losses

        if self.loss == "mnrl":
            loss: nn.Module = losses.MultipleNegativesRankingLoss(self.model)
        elif self.loss == "cached_mnrl":
            loss = losses.CachedMultipleNegativesRankingLoss(self.model, mini_batch_size=16)
        elif isinstance(self.loss, nn.Module):
            loss = self.loss
        elif callable(self.loss):
            loss = self.loss(self.model)
        else:
            raise TypeError(
                f"loss must be a name, a loss module or a callable, got {type(self.loss).__name__}"
            )
        if self.matryoshka_dims:
            loss = losses.MatryoshkaLoss(self.model, loss, matryoshka_dims=self.matryoshka_dims)
        return loss

    def build_train_rows(self) -> tuple[dict[str, list[str]], dict[str, Any]]:
        """The trainer's columns (``anchor``, ``positive``, ``negative``...) and their stats."""
        columns, stats = encoder_rows(
            self.train_dataset, self.max_negatives_per_query, seed=self.args.seed
        )
        if (
            self.query_prompt is not None or self.passage_prompt is not None
        ) and self.args.prompts is None:
            self.args.prompts = {
                col: (self.query_prompt if col == "anchor" else self.passage_prompt) or ""
                for col in columns
            }
        return columns, stats.as_dict()

    def _evaluate(self) -> dict[str, float]:
        if self.evaluator is None:
            return {}
        evaluate = getattr(self.evaluator, "evaluate", None)
        if callable(evaluate):
            return dict(evaluate(self.model))
        raw = self.evaluator(self.model)
        return (
            {_strip_prefix(k): float(v) for k, v in raw.items()}
            if isinstance(raw, dict)
            else {"score": float(raw)}
        )

    # ------------------------------------------------------------------ public

    @property
    def final_model_path(self) -> Path:
        """``<output_dir>/final``: where ``finetune()`` saves the fine-tuned model."""
        return Path(self.args.output_dir) / FINAL_DIR

    def finetune(
        self, resume_from_checkpoint: bool | str | None = None, evaluate_before: bool = True
    ) -> FinetuneResult:
        """Train, save to ``<output_dir>/final`` and return the before/after metrics.

        Args:
            resume_from_checkpoint: ``True`` continues from the last checkpoint in
                ``output_dir`` (starting fresh when there is none), a path continues
                from that checkpoint.
            evaluate_before: score the starting model on the validation split first.
        """
        from datasets import Dataset

        columns, row_stats = self.build_train_rows()
        before = self._evaluate() if evaluate_before else {}
        loss = self._build_loss()
        use_evaluator = self.evaluator if self.args.eval_strategy != "no" else None
        self.trainer = SentenceTransformerTrainer(
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
            matryoshka_dims=self.matryoshka_dims,
            val_queries=len(self.val_dataset) if self.val_dataset is not None else 0,
        )
        return self.result

    def get_finetuned_model(self, **kwargs: Any) -> BaseEmbedding:
        """The fine-tuned model as a LlamaIndex ``HuggingFaceEmbedding`` (``kwargs`` go to it).

        Ready for ``Settings.embed_model = ...`` or ``HybridRetriever.from_defaults(embed_model=...)``.
        """
        path = self.final_model_path
        if not (path / "modules.json").exists():
            raise RuntimeError(f"no fine-tuned model at {path}; call finetune() first")
        try:
            from llama_index.embeddings.huggingface import HuggingFaceEmbedding
        except ImportError as err:
            raise ImportError(
                "get_finetuned_model() needs llama-index-embeddings-huggingface: "
                "pip install llama-index-embeddings-huggingface"
            ) from err
        kwargs.setdefault("query_instruction", self.query_prompt)
        kwargs.setdefault("text_instruction", self.passage_prompt)
        return HuggingFaceEmbedding(model_name=str(path), **kwargs)


def _strip_prefix(key: str) -> str:
    """``"val_ndcg@10"`` -> ``"ndcg@10"``; ``"val_cosine_ndcg@10"`` -> ``"ndcg@10"``."""
    return key.rsplit("_", 1)[-1] if "@" in key else key


register_engine(EncoderFinetuneEngine, "embedding")
