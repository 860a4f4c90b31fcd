"""Fine-tune the bi-encoder on a ``RetrievalDataset``, validated, within a budget, never worse.

``EncoderFinetuneEngine`` wraps sentence-transformers' ``SentenceTransformerTrainer``
under the engine contract of :mod:`~llama_index_ragtune.finetuning.base`: training
rows (query, positive, mined negative) within a ``TrainingBudget``; an MNRL or GIST
loss (optionally inside ``MatryoshkaLoss``); validation on held-out queries scored
dense and fused with BM25; ``<output_dir>/final`` holds the tuned model only when it
beats the starting one by more than ``promotion_margin`` (else the tuned one waits in
``challenger/``). Building the rows, model and loss lives in
:mod:`~llama_index_ragtune.finetuning.encoder_training`, validation in
:mod:`~llama_index_ragtune.finetuning.encoder_evaluation`; ``default_args()`` builds
the ``SentenceTransformerTrainingArguments`` defaults (tuned for a 2-core CPU).

Example::

    from llama_index.core import Settings
    from llama_index_ragtune.data import HardNegativeMiner, RetrievalDataset
    from llama_index_ragtune.finetuning import EncoderFinetuneEngine

    train = RetrievalDataset.from_beir("../shared/data/scifact", split="train")
    train = HardNegativeMiner(sources=("bm25", "dense"), num_negatives=3).mine(train)
    engine = EncoderFinetuneEngine(train, output_dir="runs/encoder")
    result = engine.finetune()
    print(result.format_table())          # validation before / after, and the decision
    Settings.embed_model = engine.get_finetuned_model()
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
from sentence_transformers.base.sampler import BatchSamplers
from sentence_transformers.sentence_transformer.training_args import (
    SentenceTransformerTrainingArguments,
)
from torch import nn

from llama_index_ragtune.finetuning.base import BaseFinetuneEngine
from llama_index_ragtune.finetuning.budget import TrainingBudget
from llama_index_ragtune.finetuning.checkpoints import (
    FINAL_DIR,
    check_resume_argument,
    check_weights,
)
from llama_index_ragtune.finetuning.encoder_evaluation import (  # noqa: F401 - importable here too
    MAX_POOL_DOCS,
    POOL_DEPTH,
    EncoderEvaluationMixin,
    _fusion_of,
    _fusion_params,
    _strip_prefix,
)
from llama_index_ragtune.finetuning.encoder_training import (  # noqa: F401 - importable here too
    GIST_TEMPERATURE,
    EncoderTrainingMixin,
)
from llama_index_ragtune.finetuning.hybrid_eval import bm25_settings, check_bm25_text, check_fusion
from llama_index_ragtune.finetuning.promotion import DEFAULT_MARGIN, decide_promotion
from llama_index_ragtune.finetuning.result import FinetuneResult
from llama_index_ragtune.finetuning.rows import check_trainable
from llama_index_ragtune.finetuning.training_args_check import check_count
from llama_index_ragtune.models import load_model
from llama_index_ragtune.retrievers.bm25_index import LANGUAGE_STOPWORDS

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from transformers import TrainerCallback

    from llama_index_ragtune.data.schema import RetrievalDataset

logger = logging.getLogger(__name__)

LOSSES = ("mnrl", "cached_mnrl", "gist", "cached_gist")
DEFAULT_LOSS = "mnrl"
DEFAULT_BUDGET = TrainingBudget(max_pairs_per_query=8, minutes=10.0)
"""Default training budget: the 8 strongest positives of each query, 10 minutes of training."""


class EncoderFinetuneEngine(EncoderTrainingMixin, EncoderEvaluationMixin, BaseFinetuneEngine):
    """Contrastive fine-tuning of a sentence-transformers bi-encoder, validated and gated.

    Args:
        train_dataset: queries, corpus, positives and (optionally) mined negatives.
            A LlamaIndex ``EmbeddingQAFinetuneDataset`` is accepted too.
        model: ``None`` (bundled all-MiniLM-L6-v2), a local path, a hub id or a
            ``SentenceTransformer`` (trained in place; restored when not promoted).
        args: ``SentenceTransformerTrainingArguments``; ``None`` builds
            ``default_args(output_dir)``.
        output_dir: the engine folder (checkpoints, ``final/``, ``challenger/``,
            ``decision.json``); must equal ``args.output_dir`` when both are given.
        val_dataset: held-out queries for validation. ``None`` carves
            ``val_fraction`` of the training queries off (at least ``min(50, n/4)``,
            at most ``max_val_queries``); ``val_fraction=0`` trains on every query
            and promotes only with ``force_promotion=True``.
        loss: ``"mnrl"``, ``"cached_mnrl"``, ``"gist"``, ``"cached_gist"``, a loss
            module built on the model, or a callable ``model -> loss``. Under DDP
            the named losses draw in-batch negatives from the global batch
            (``gather_across_devices=True``), as one process would.
        budget: a ``TrainingBudget`` (pairs per query, total pairs, minutes);
            ``None`` trains one epoch over every pair.
        min_grade: positives graded below this (``train_dataset.grades``) are not trained on.
        top_grade_only: train on each query's best-graded positives only (default): a
            weak positive next to a strong one teaches the encoder to rank passages that
            do not answer above mined near misses that may (see the README's tuning notes).
        max_negatives_per_query: negative columns per row (0 = pairs, in-batch
            negatives only). Ignored when the dataset has no negatives.
        matryoshka_dims: wrap the loss in ``MatryoshkaLoss`` over these dimensions.
        query_prompt, passage_prompt: text prepended to queries / passages in
            training, evaluation and the saved model's ``prompts``.
        evaluator: a sentence-transformers evaluator replacing the default
            ``HybridRetrievalEvaluator`` on the validation split (before/after). Its score
            of the starting model must give the decision metric as a finite number, checked
            before training (``finetuning.evaluator_output``); when it fails on the tuned
            model, that model is left in ``challenger/`` and the error says so.
        fusion: the hybrid setting validated against: ``"auto"`` (default) chooses
            the fusion mode and weights on the validation queries for the starting
            and for the tuned model (``retrievers.fusion_sweep``); or a mode name,
            ``HybridRetriever`` fusion arguments, ``None`` for the library preset.
        bm25_analyzer: how the validation hybrid's BM25 reads text, ``"plain"``
            (default) or ``"unicode"`` (Chinese, Japanese, Thai or Korean text, accents,
            product codes): give the served retriever's, so fusion and promotion are
            decided on the BM25 that is served. Recorded in ``result.info["bm25_analyzer"]``.
        bm25_language: the validation hybrid's BM25 stemmer (``"english"``, ``"german"``,
            ..., ``None``: none; its stopwords follow): give the served retriever's.
            Recorded in ``result.info["bm25_language"]``.
        bm25_stopwords: the words that BM25 drops: ``"language"`` (the language's list,
            default), ``None``, a bm25s list code (``"de"``) or a list of words: give the
            served retriever's. Recorded in ``result.info["bm25_stopwords"]`` when not the
            default.
        decision_metric: validation metric that decides promotion (default: the
            evaluator's primary metric, ``hybrid_ndcg@10``).
        promotion_margin: how much better the tuned model must be on it.
        force_promotion: promote the tuned model whatever validation says.
        eval_points: evaluations of the candidate pool during training that pick
            the best checkpoint (0 = keep the last one).
        cache_dir: keep validation corpus embeddings here, keyed by the model's
            weights (the starting model's are computed once across runs).
        callbacks: ``transformers.TrainerCallback`` objects passed to the trainer.
        device: where to load the model (``None``: let sentence-transformers choose).
        show_progress: progress bars for evaluation.
    """

    kind = "encoder"
    args_class = SentenceTransformerTrainingArguments
    default_output_dir = "ragtune-encoder"

    def __init__(
        self,
        train_dataset: RetrievalDataset,
        *,
        model: str | SentenceTransformer | None = None,
        args: SentenceTransformerTrainingArguments | None = None,
        output_dir: str | os.PathLike | None = None,
        val_dataset: RetrievalDataset | None = None,
        loss: str | nn.Module | Callable[[SentenceTransformer], nn.Module] = DEFAULT_LOSS,
        budget: TrainingBudget | None = DEFAULT_BUDGET,
        min_grade: int = 1,
        top_grade_only: bool = True,
        max_negatives_per_query: int = 1,
        matryoshka_dims: Sequence[int] | None = None,
        query_prompt: str | None = None,
        passage_prompt: str | None = None,
        evaluator: Any = None,
        fusion: str | Mapping[str, Any] | None = "auto",
        bm25_analyzer: str = "plain",
        bm25_language: str | None = "english",
        bm25_stopwords: str | Sequence[str] | None = LANGUAGE_STOPWORDS,
        decision_metric: str | None = None,
        promotion_margin: float = DEFAULT_MARGIN,
        force_promotion: bool = False,
        val_fraction: float = 0.1,
        max_val_queries: int = 200,
        eval_points: int = 2,
        cache_dir: str | os.PathLike | None = None,
        callbacks: list[TrainerCallback] | None = None,
        device: str | None = None,
        show_progress: bool = True,
    ) -> None:
        self._init_common(
            args,
            output_dir,
            promotion_margin,
            force_promotion,
            val_fraction,
            max_val_queries,
            callbacks,
            show_progress,
        )
        self.train_dataset = check_trainable(train_dataset, "train_dataset")
        self.val_dataset = (
            None if val_dataset is None else check_trainable(val_dataset, "val_dataset")
        )
        if isinstance(loss, str) and loss not in LOSSES:
            raise ValueError(
                f"unknown loss {loss!r}; use one of {LOSSES}, a loss module or a callable"
            )
        name = type(self).__name__
        max_negatives_per_query = check_count(
            name, "max_negatives_per_query", max_negatives_per_query, 0, 1
        )
        eval_points = check_count(name, "eval_points", eval_points, 0, 2)
        if isinstance(min_grade, bool) or not isinstance(min_grade, numbers.Real):
            raise TypeError(f"{name}: min_grade must be a number (e.g. 1), got {min_grade!r}")
        if not math.isfinite(min_grade):
            raise ValueError(f"{name}: min_grade must be a finite number (e.g. 1), got {min_grade}")
        self._check_start_model(model)
        if budget is not None and not isinstance(budget, TrainingBudget):
            raise TypeError(f"budget must be a TrainingBudget or None, got {type(budget).__name__}")
        self.loss = loss
        self.budget = budget
        self.min_grade = min_grade
        self.top_grade_only = top_grade_only
        if isinstance(matryoshka_dims, (str, bytes)):
            raise TypeError(
                f"{name}: matryoshka_dims must be a list of whole numbers (e.g. [256, 128, 64]), "
                f"got {matryoshka_dims!r}"
            )
        self.matryoshka_dims = (
            [check_count(name, "matryoshka_dims item", d, 1, 64) for d in matryoshka_dims]
            if matryoshka_dims
            else None
        )
        if self.matryoshka_dims and len(set(self.matryoshka_dims)) < len(self.matryoshka_dims):
            raise ValueError(
                f"{name}: matryoshka_dims {self.matryoshka_dims} lists a dimension twice (its loss "
                "would count twice); give each dimension once"
            )
        for label, prompt in (("query_prompt", query_prompt), ("passage_prompt", passage_prompt)):
            if prompt is not None and not isinstance(prompt, str):
                raise TypeError(
                    f"{name}: {label} must be a text (prepended to each {label.split('_')[0]}) "
                    f"or None, got {type(prompt).__name__} {prompt!r}"
                )
        self.query_prompt, self.passage_prompt = query_prompt, passage_prompt
        self.max_negatives_per_query = max_negatives_per_query
        check_fusion(type(self).__name__, fusion)
        self.fusion = fusion
        self.bm25_text = check_bm25_text(
            bm25_analyzer, bm25_language, type(self).__name__, bm25_stopwords
        )
        self.bm25_analyzer, self.bm25_language = bm25_analyzer, bm25_language
        self.eval_points = eval_points
        self.cache_dir = cache_dir
        self.device = device
        self.model = self._load_model(model, loss, device)
        self.start_model = model if isinstance(model, (str, Path)) else None
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
        self._user_evaluator = evaluator
        self.decision_metric = decision_metric
        self.evaluator: Any = evaluator
        self.trainer: SentenceTransformerTrainer | None = None
        self.result: FinetuneResult | None = None

    # ------------------------------------------------------------------ defaults

    @classmethod
    def default_args(
        cls, output_dir: str | os.PathLike | None = None, **overrides: Any
    ) -> SentenceTransformerTrainingArguments:
        """The default recipe as ``SentenceTransformerTrainingArguments`` (``overrides`` win).

        One epoch at batch 32, learning rate 5e-5 with 10% linear warm-up, no
        duplicate texts in a batch (so in-batch negatives are not copies of the
        positive), checkpoints when validation runs, no external loggers.
        """
        defaults: dict[str, Any] = {
            "output_dir": str(output_dir or cls.default_output_dir),
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

    default_training_args = default_args

    # ------------------------------------------------------------------ public

    @property
    def final_model_path(self) -> Path:
        """``<output_dir>/final``: the model to use (tuned if promoted, else the starting one)."""
        return self.output_dir / FINAL_DIR

    def finetune(
        self, resume_from_checkpoint: bool | str | None = None, evaluate_before: bool = True
    ) -> FinetuneResult:
        """Train, validate, decide, and save ``final/`` (and ``challenger/`` when kept).

        Args:
            resume_from_checkpoint: ``True`` continues from the last checkpoint in
                ``output_dir`` (fresh start when there is none); a path continues from
                that checkpoint.
            evaluate_before: score the starting model on validation first (needed for
                the decision; ``False`` only with ``force_promotion=True``).
        """
        from datasets import Dataset

        check_resume_argument(resume_from_checkpoint)  # before any scoring
        train, val = self.split_validation()
        self.evaluator = self._validation_evaluator(val)
        columns, row_stats = self.build_train_rows(train)
        columns = self._same_on_every_process(columns)
        self._check_full_batch(len(columns["anchor"]))  # before the "before" scores
        start_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        before = self._on_main(self._evaluate, self.evaluator) if evaluate_before else {}
        self._check_user_before(before, evaluate_before)
        loss = self._build_loss()
        plan = self._plan_steps(
            self.budget, len(columns["anchor"]), self._probe_step(loss, columns)
        )
        pool = self._on_main(self._pool_evaluator, val, self.evaluator)
        self._configure_checkpoint_selection(pool, plan["steps"], self.eval_points)
        callbacks, timer = self._budget_callbacks(self.budget)
        self.trainer = SentenceTransformerTrainer(
            model=self.model,
            args=self.args,
            train_dataset=Dataset.from_dict(columns),
            loss=loss,
            evaluator=pool,
            callbacks=callbacks,
        )
        run = self._train_measured(resume_from_checkpoint)
        fusion_before = getattr(self.evaluator, "chosen_fusion", None)
        with self._trained_model_kept():
            after = self._on_main(self._evaluate, self.evaluator)
            fusion_after = getattr(self.evaluator, "chosen_fusion", None)
            metric = self._decision_metric(self.evaluator, after)
            decision = decide_promotion(
                before, after, metric, self.promotion_margin, force=self.force_promotion
            )
        decision = self._save_outcome(decision, start_state)  # never a diverged (NaN) model
        self.result = self._trained_result(
            run,
            before,
            after,
            decision,
            plan,
            timer,
            str(self.final_model_path),
            loss=type(loss).__name__,
            rows=row_stats,
            best_checkpoint=self.trainer.state.best_model_checkpoint,
            val_queries=len(val) if val is not None else 0,
            train_queries=len(train),
            matryoshka_dims=self.matryoshka_dims,
            fusion=_fusion_of(decision, fusion_before, fusion_after, self.evaluator),
            fusion_start=_fusion_params(fusion_before),
            fusion_tuned=_fusion_params(fusion_after),
            bm25_analyzer=getattr(self.evaluator, "bm25_analyzer", None),
            bm25_language=getattr(self.evaluator, "bm25_language", None),
            **_stopwords_of(self.evaluator),
        )
        self._write_decision(
            decision,
            {
                "fusion": self.result.info["fusion"],
                "bm25_analyzer": self.result.info["bm25_analyzer"],
                "bm25_language": self.result.info["bm25_language"],
                **_stopwords_of(self.evaluator),
                "result": self.result.summary(),
            },
        )
        self.result = self._from_main(self.result)  # under DDP: the main process's result
        return self.result

    def get_finetuned_model(self, **kwargs: Any) -> BaseEmbedding:
        """The model that won (``final/``) as a LlamaIndex ``HuggingFaceEmbedding`` (``kwargs`` go to it)
        that warns once when it cuts a text to ``max_seq_length``.

        Ready for ``Settings.embed_model = ...`` or ``HybridRetriever.from_defaults(embed_model=...)``.
        When the tuned model lost on validation this is the starting model (see
        ``result.decision``); the tuned one is in ``challenger_path``.
        """
        path = self.final_model_path
        if self.interrupted_run:  # final/ may hold a model no decision was recorded for
            if self.start_model is None:
                raise RuntimeError(f"{self.decision.reason} (or load the starting model)")
            logger.warning(
                "%s; serving the starting model %s", self.decision.reason, self.start_model
            )
            path = self.start_model
        elif not (path / "modules.json").exists():
            raise RuntimeError(f"no fine-tuned model at {path}; call finetune() first")
        check_weights(path)
        try:
            from llama_index_ragtune.embeddings.hf_embedding import WarnedHuggingFaceEmbedding
        except ImportError as err:
            raise ImportError(
                "get_finetuned_model() needs llama-index-embeddings-huggingface: "
                "pip install llama-index-embeddings-huggingface"
            ) from err
        kwargs.setdefault("query_instruction", self.query_prompt)
        kwargs.setdefault("text_instruction", self.passage_prompt)
        return load_model(WarnedHuggingFaceEmbedding, model_name=str(path), **kwargs)


def _stopwords_of(evaluator: Any) -> dict[str, Any]:
    """``{"bm25_stopwords": ...}`` of the validation hybrid when not the language's list."""
    text = getattr(evaluator, "bm25_text", None)
    return (
        {}
        if text is None
        else {k: v for k, v in bm25_settings(text).items() if k == "bm25_stopwords"}
    )
