"""Fine-tune the bi-encoder on a ``RetrievalDataset``, validated, within a budget, never worse.

``EncoderFinetuneEngine`` wraps sentence-transformers' ``SentenceTransformerTrainer``
and keeps the engine contract of :mod:`~llama_index_ragtune.finetuning.base`:

- training rows (query, positive, mined negative) within a ``TrainingBudget``:
  strongest positives first, queries covered evenly, a wall-clock budget
  planned before training starts (``finetuning.budget``);
- the loss: ``MultipleNegativesRankingLoss`` (``"mnrl"``), its cached variant,
  or GIST (``"gist"`` / ``"cached_gist"``: the starting model, frozen, guides which
  in-batch negatives count, so other queries' positives that are relevant to this
  query are not pushed away); optionally inside ``MatryoshkaLoss``;
- validation on held-out training queries (carved off when none is given),
  scored as the retriever is used: dense alone and fused with BM25
  (``HybridRetrievalEvaluator``); during training a small candidate pool of the
  validation queries picks the best checkpoint (``load_best_model_at_end``);
- champion / challenger: ``<output_dir>/final`` holds the tuned model only when
  it beats the starting model on validation (``hybrid_ndcg@10`` by default) by
  more than ``promotion_margin``; otherwise it holds the starting model and the
  tuned one waits in ``<output_dir>/challenger``.

Hyperparameters live in the upstream ``SentenceTransformerTrainingArguments``;
``default_args()`` builds the defaults (tuned for a 2-core CPU).

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

import copy
import logging
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

from llama_index_ragtune.evaluation.metrics import copy_metrics
from llama_index_ragtune.finetuning.base import BaseFinetuneEngine
from llama_index_ragtune.finetuning.budget import TrainingBudget, select_positives
from llama_index_ragtune.finetuning.checkpoints import FINAL_DIR, check_weights
from llama_index_ragtune.finetuning.hybrid_eval import check_bm25_text
from llama_index_ragtune.finetuning.promotion import DEFAULT_MARGIN, decide_promotion
from llama_index_ragtune.finetuning.result import FinetuneResult
from llama_index_ragtune.finetuning.rows import check_trainable, encoder_rows
from llama_index_ragtune.models import load_model, resolve_model

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from transformers import TrainerCallback

    from llama_index_ragtune.data.schema import RetrievalDataset

logger = logging.getLogger(__name__)

LOSSES = ("mnrl", "cached_mnrl", "gist", "cached_gist")
DEFAULT_LOSS = "mnrl"
DEFAULT_BUDGET = TrainingBudget(max_pairs_per_query=8, minutes=10.0)
"""Default training budget: the 8 strongest positives of each query, 10 minutes of training."""
POOL_DEPTH = 10
MAX_POOL_DOCS = 2000
GIST_TEMPERATURE = 0.05  # = MultipleNegativesRankingLoss's default scale of 20


class EncoderFinetuneEngine(BaseFinetuneEngine):
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
            ``HybridRetrievalEvaluator`` on the validation split (before/after).
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
        if max_negatives_per_query < 0:
            raise ValueError(f"max_negatives_per_query must be >= 0, got {max_negatives_per_query}")
        if budget is not None and not isinstance(budget, TrainingBudget):
            raise TypeError(f"budget must be a TrainingBudget or None, got {type(budget).__name__}")
        if eval_points < 0:
            raise ValueError(f"eval_points must be >= 0, got {eval_points}")
        self.loss = loss
        self.budget = budget
        self.min_grade = min_grade
        self.top_grade_only = top_grade_only
        self.matryoshka_dims = list(matryoshka_dims) if matryoshka_dims else None
        self.query_prompt, self.passage_prompt = query_prompt, passage_prompt
        self.max_negatives_per_query = max_negatives_per_query
        self.fusion = fusion
        self.bm25_text = check_bm25_text(bm25_analyzer, bm25_language, type(self).__name__)
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

    # ------------------------------------------------------------------ building

    @staticmethod
    def _load_model(model: Any, loss: Any, device: str | None) -> SentenceTransformer:
        loss_model = getattr(loss, "model", None) if isinstance(loss, nn.Module) else None
        if model is None and isinstance(loss_model, SentenceTransformer):
            return loss_model
        if isinstance(model, SentenceTransformer):
            st = model
        elif model is None or isinstance(model, (str, Path)):
            st = load_model(
                SentenceTransformer, resolve_model(model, kind="encoder"), device=device
            )
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

    def _build_loss(self) -> nn.Module:
        from sentence_transformers.sentence_transformer import losses

        # under DDP the in-batch negatives come from the whole global batch, as in one process
        gather = {"gather_across_devices": self._distributed()}
        if self.loss == "mnrl":
            loss: nn.Module = losses.MultipleNegativesRankingLoss(self.model, **gather)
        elif self.loss == "cached_mnrl":
            loss = losses.CachedMultipleNegativesRankingLoss(
                self.model, mini_batch_size=16, **gather
            )
        elif self.loss in ("gist", "cached_gist"):
            guide = self._guide_model()
            # query -> document terms only, like MultipleNegativesRankingLoss: the guide
            # only decides which in-batch and mined candidates count as negatives.
            gist = {
                "temperature": GIST_TEMPERATURE,
                "contrast_anchors": False,
                "contrast_positives": False,
                **gather,
            }
            if self.loss == "gist":
                loss = losses.GISTEmbedLoss(self.model, guide, **gist)
            else:
                loss = losses.CachedGISTEmbedLoss(self.model, guide, mini_batch_size=16, **gist)
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

    def _guide_model(self) -> SentenceTransformer:
        """A frozen copy of the starting model: GIST's judge of which in-batch negatives count."""
        guide = copy.deepcopy(self.model)
        guide.eval()
        for param in guide.parameters():
            param.requires_grad_(False)
        return guide

    def build_train_rows(
        self, dataset: RetrievalDataset | None = None
    ) -> tuple[dict[str, list[str]], dict[str, Any]]:
        """The trainer's columns (``anchor``, ``positive``, ``negative``...) within the budget."""
        dataset = dataset if dataset is not None else self.train_dataset
        positives = select_positives(
            dataset,
            self.budget,
            seed=self.args.seed,
            min_grade=self.min_grade,
            top_grade_only=self.top_grade_only,
        )
        if not positives:
            raise ValueError(
                f"no training pair left: every positive is graded below min_grade={self.min_grade}"
            )
        columns, stats = encoder_rows(
            dataset, self.max_negatives_per_query, seed=self.args.seed, positives=positives
        )
        if (
            self.query_prompt is not None or self.passage_prompt is not None
        ) and self.args.prompts is None:
            self.args.prompts = {
                col: (self.query_prompt if col == "anchor" else self.passage_prompt) or ""
                for col in columns
            }
        info = stats.as_dict()
        info["pairs_available"] = dataset.num_pairs
        return columns, info

    def _validation_evaluator(self, val: RetrievalDataset | None) -> Any:
        if self._user_evaluator is not None or val is None:
            return self._user_evaluator
        from llama_index_ragtune.finetuning.hybrid_eval import HybridRetrievalEvaluator

        return HybridRetrievalEvaluator(
            val.queries,
            val.corpus,
            val.graded_qrels(),
            fusion=self.fusion,
            **self.bm25_text.options(),
            query_prompt=self.query_prompt,
            passage_prompt=self.passage_prompt,
            show_progress_bar=self.show_progress,
            cache_dir=self.cache_dir,
        )

    def _pool_evaluator(self, val: RetrievalDataset | None, evaluator: Any) -> Any:
        """A cheap evaluator for checkpoint selection: the validation queries over a
        pool of their positives and their top BM25 / starting-model candidates."""
        from llama_index_ragtune.finetuning.hybrid_eval import HybridRetrievalEvaluator
        from llama_index_ragtune.finetuning.ranking_eval import DenseRetrievalEvaluator

        if (
            val is None
            or self.eval_points == 0
            or not isinstance(evaluator, HybridRetrievalEvaluator)
        ):
            return None
        pool: dict[str, None] = {}
        bm25 = evaluator.bm25_rankings()
        for qid in evaluator.query_ids:
            pool.update(dict.fromkeys(val.relevant_docs[qid]))
            pool.update(dict.fromkeys(d for d, _ in bm25[qid][:POOL_DEPTH]))
            pool.update(
                dict.fromkeys(
                    d for d, _ in evaluator.last_scored_rankings.get(qid, [])[:POOL_DEPTH]
                )
            )
            if len(pool) >= MAX_POOL_DOCS:
                break
        corpus = {d: val.corpus[d] for d in pool}
        qids = [q for q in evaluator.query_ids if all(d in corpus for d in val.relevant_docs[q])]
        if not qids:
            return None
        return DenseRetrievalEvaluator(
            {q: val.queries[q] for q in qids},
            corpus,
            {q: evaluator.qrels[q] for q in qids},
            query_prompt=self.query_prompt,
            passage_prompt=self.passage_prompt,
            show_progress_bar=False,
            name="pool",
        )

    def _evaluate(self, evaluator: Any) -> dict[str, float]:
        if evaluator is None:
            return {}
        evaluate = getattr(evaluator, "evaluate", None)
        if callable(evaluate):
            return copy_metrics(evaluate(self.model))
        raw = evaluator(self.model)
        return (
            {_strip_prefix(k): float(v) for k, v in raw.items()}
            if isinstance(raw, dict)
            else {"score": float(raw)}
        )

    def _decision_metric(self, evaluator: Any, after: Mapping[str, float]) -> str:
        if self.decision_metric:
            return self.decision_metric
        primary = getattr(evaluator, "primary_metric", None)
        if primary and primary in after:
            return primary
        return "ndcg@10" if "ndcg@10" in after else next(iter(after), "ndcg@10")

    # ------------------------------------------------------------------ planning

    def _probe_step(self, loss: nn.Module, columns: Mapping[str, list[str]]) -> Callable[[], None]:
        """One forward + backward on real rows, without an optimizer step (weights unchanged)."""
        batch = min(self.args.per_device_train_batch_size, len(columns["anchor"]))
        texts = [list(v[:batch]) for v in columns.values()]

        def step() -> None:
            from sentence_transformers.util import batch_to_device

            features = [
                batch_to_device(self.model.preprocess(col), self.model.device) for col in texts
            ]
            loss(features, None).backward()
            self.model.zero_grad(set_to_none=True)

        return step

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

        train, val = self.split_validation()
        self.evaluator = self._validation_evaluator(val)
        columns, row_stats = self.build_train_rows(train)
        columns = self._same_on_every_process(columns)
        start_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        before = self._on_main(self._evaluate, self.evaluator) if evaluate_before else {}
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
        )
        self._write_decision(
            decision,
            {
                "fusion": self.result.info["fusion"],
                "bm25_analyzer": self.result.info["bm25_analyzer"],
                "bm25_language": self.result.info["bm25_language"],
                "result": self.result.summary(),
            },
        )
        self.result = self._from_main(self.result)  # under DDP: the main process's result
        return self.result

    def get_finetuned_model(self, **kwargs: Any) -> BaseEmbedding:
        """The model that won (``final/``) as a LlamaIndex ``HuggingFaceEmbedding`` (``kwargs`` go to it).

        Ready for ``Settings.embed_model = ...`` or ``HybridRetriever.from_defaults(embed_model=...)``.
        When the tuned model lost on validation this is the starting model (see
        ``result.decision``); the tuned one is in ``challenger_path``.
        """
        path = self.final_model_path
        if not (path / "modules.json").exists():
            raise RuntimeError(f"no fine-tuned model at {path}; call finetune() first")
        check_weights(path)
        try:
            from llama_index.embeddings.huggingface import HuggingFaceEmbedding
        except ImportError as err:
            raise ImportError(
                "get_finetuned_model() needs llama-index-embeddings-huggingface: "
                "pip install llama-index-embeddings-huggingface"
            ) from err
        kwargs.setdefault("query_instruction", self.query_prompt)
        kwargs.setdefault("text_instruction", self.passage_prompt)
        return load_model(HuggingFaceEmbedding, model_name=str(path), **kwargs)


def _fusion_params(choice: Any) -> dict[str, Any] | None:
    return None if choice is None else dict(choice.params)


def _fusion_of(decision: Any, before: Any, after: Any, evaluator: Any) -> dict[str, Any] | None:
    """``HybridRetriever`` fusion arguments that go with the promoted model (``None`` if not hybrid).

    With ``fusion="auto"`` they were chosen on the validation queries for that model.
    """
    chosen = after if decision.promoted else before
    if chosen is not None:
        return dict(chosen.params)
    fusion = getattr(evaluator, "fusion", None)
    return dict(fusion) if fusion else None


def _strip_prefix(key: str) -> str:
    """``"val_ndcg@10"`` -> ``"ndcg@10"``; ``"val_cosine_ndcg@10"`` -> ``"ndcg@10"``."""
    return key.rsplit("_", 1)[-1] if "@" in key else key
