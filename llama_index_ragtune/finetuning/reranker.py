"""Fine-tune the cross-encoder reranker on a ``RetrievalDataset``; keep it only where it helps.

``RerankerFinetuneEngine`` wraps sentence-transformers' ``CrossEncoderTrainer``
and keeps the engine contract of :mod:`~llama_index_ragtune.finetuning.base`.
It starts from a cross-encoder, or from a bi-encoder checkpoint with a new
one-logit head (the offline default: the bundled all-MiniLM-L6-v2), and trains
with one of:

- ``"margin_mse"`` (default when a teacher is given): ``MarginMSELoss`` distilling a
  teacher's score margins on (query, positive, negative) triplets (``teacher=`` a
  CrossEncoder path, a ``SentenceTransformer`` bi-encoder whose scaled cosine
  similarity is the score, e.g. the fine-tuned encoder, or a callable ``pairs -> scores``);
- ``"bce"``: ``BinaryCrossEntropyLoss`` on (query, passage, label) rows, positives
  weighted by the negative-to-positive ratio (default without a teacher);
- ``"lambda"`` / ``"listnet"``: ``LambdaLoss`` / ``ListNetLoss`` over
  (query, [positives + negatives], [labels]) lists.

A new head on a bi-encoder learns slowly from binary labels: on SciFact, one
CPU epoch of BCE leaves it ranking at random. Distilling a fine-tuned
bi-encoder's margins gives every pair a graded target and trains in the same budget.

Validation reranks the first-stage candidates of held-out queries (the hybrid
retriever's top ``rerank_depth`` over the validation corpus, or ``candidates=``):
"before" is the first-stage order (or the starting cross-encoder's, when it is a
trained one), "after" the tuned reranker blended with the first-stage score at the
``retrieval_weights`` value that validates best. The reranker is promoted only
when that beats "before" by more than ``promotion_margin``; otherwise
``get_finetuned_model()`` raises ``RerankerNotPromotedError`` (leave the reranker
out: it does not help on this data) and the tuned model waits in ``challenger/``.

Example::

    from llama_index_ragtune.finetuning import RerankerFinetuneEngine

    engine = RerankerFinetuneEngine(train, output_dir="runs/reranker", encoder="runs/encoder/final",
                                    teacher=SentenceTransformer("runs/encoder/final"))
    result = engine.finetune()
    print(result.format_table())
    if result.promoted:
        reranker = engine.get_finetuned_model(top_n=10)   # CrossEncoderRerank, blend weight chosen
        query_engine = index.as_query_engine(similarity_top_k=50, node_postprocessors=[reranker])
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from sentence_transformers.cross_encoder import (
    CrossEncoder,
    CrossEncoderTrainer,
    CrossEncoderTrainingArguments,
)
from torch import nn
from transformers import set_seed

from llama_index_ragtune.evaluation.metrics import copy_metrics
from llama_index_ragtune.finetuning.base import BaseFinetuneEngine
from llama_index_ragtune.finetuning.budget import TrainingBudget, select_positives
from llama_index_ragtune.finetuning.candidates import hybrid_candidates_with_scores
from llama_index_ragtune.finetuning.checkpoints import FINAL_DIR, check_weights
from llama_index_ragtune.finetuning.hybrid_eval import check_bm25_text, fusion_params
from llama_index_ragtune.finetuning.promotion import DEFAULT_MARGIN, decide_promotion
from llama_index_ragtune.finetuning.rerank_validation import (
    DEFAULT_WEIGHTS,
    best_blend,
    rerank_evaluators,
)
from llama_index_ragtune.finetuning.result import FinetuneResult
from llama_index_ragtune.finetuning.rows import check_trainable, cross_encoder_rows, teacher_margins
from llama_index_ragtune.finetuning.teachers import (  # noqa: F401 - bi_encoder_scorer: public here too
    Teacher,
    bi_encoder_scorer,
    teacher_scorer,
)
from llama_index_ragtune.models import load_model, resolve_model
from llama_index_ragtune.postprocessor import CrossEncoderRerank

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
DEFAULT_MAX_LENGTH = 256
DEFAULT_BUDGET = TrainingBudget(max_pairs_per_query=4, minutes=10.0)
"""Default budget: the 4 strongest positives of each query, 10 minutes of training."""
POOL_QUERY_DEPTH = 20
logger = logging.getLogger(__name__)


class RerankerNotPromotedError(RuntimeError):
    """The tuned reranker did not beat the first stage on validation: leave it out."""


class RerankerFinetuneEngine(BaseFinetuneEngine):
    """Fine-tuning of a cross-encoder reranker with hard negatives, validated and gated.

    Args:
        train_dataset: queries, corpus, positives and mined negatives (queries
            without negatives get random corpus passages).
        model: ``None`` (bundled MiniLM with a new one-logit head), a path or hub id
            of a cross-encoder or of a bi-encoder, or a ``CrossEncoder``.
        args: ``CrossEncoderTrainingArguments``; ``None`` builds ``default_args(output_dir)``.
        output_dir: the engine folder (checkpoints, ``final/``, ``challenger/``, ``decision.json``).
        val_dataset: held-out queries; ``None`` carves them off the training queries.
        loss: ``"margin_mse"``, ``"bce"``, ``"lambda"``, ``"listnet"``, a loss module
            built on the model, or a callable ``model -> loss``. ``None``: ``"margin_mse"``
            with a teacher, else ``"bce"``.
        teacher: for ``"margin_mse"``: a CrossEncoder (path, hub id or instance), a
            ``SentenceTransformer`` bi-encoder (scores: ``bi_encoder_scorer``) or a
            callable ``[(query, passage), ...] -> scores``.
        budget: a ``TrainingBudget``; ``None`` trains one epoch over every row.
        top_grade_only: train on each query's best-graded positives only (default).
        max_negatives_per_query: negatives per query in the training rows.
        candidates: ``{qid: [doc ids, best first]}`` first-stage candidates of the
            validation queries, with ``candidate_scores`` aligned to them; built with
            ``HybridRetriever`` over the validation corpus when ``None``.
        candidate_scores: ``{qid: [first-stage scores]}`` (needed to blend).
        rerank_depth: how many top candidates the reranker re-scores.
        encoder: the hybrid retriever's embedding model when building candidates
            (path, hub id or LlamaIndex ``BaseEmbedding``; e.g. a fine-tuned encoder).
        fusion: the hybrid's fusion setting when building candidates.
        bm25_analyzer: how the hybrid's BM25 reads text when building candidates,
            ``"plain"`` (default) or ``"unicode"`` (Chinese, Japanese, Thai or Korean
            text, accents, product codes): give the served retriever's. Recorded in
            ``result.info["bm25_analyzer"]`` (``None`` when ``candidates`` were given).
        bm25_language: that BM25's stemmer (``"english"``, ``"german"``, ..., ``None``:
            none; its stopwords follow): give the served retriever's. Recorded in
            ``result.info["bm25_language"]`` (``None`` when ``candidates`` were given).
        max_length: token limit of (query, passage) inputs; ``None`` keeps the
            model's, or 256 when starting from the bundled default.
        retrieval_weights: blend weights of the first-stage score tried on validation
            (``CrossEncoderRerank(retrieval_weight=...)``) besides 0 (the reranker
            alone); the best one is kept and served by ``get_finetuned_model()``.
        evaluator: a sentence-transformers evaluator replacing the default
            ``CandidateRerankingEvaluator`` (before/after).
        promotion_margin, force_promotion, val_fraction, max_val_queries: the
            engine contract (see ``finetuning.base``).
        eval_points: evaluations during training that pick the best checkpoint.
        callbacks: ``transformers.TrainerCallback`` objects passed to the trainer.
        device: where to load the model (``None``: let sentence-transformers choose).
        show_progress: progress bars for candidate retrieval and evaluation.
    """

    kind = "reranker"
    args_class = CrossEncoderTrainingArguments
    default_output_dir = "ragtune-reranker"

    def __init__(
        self,
        train_dataset: RetrievalDataset,
        *,
        model: str | CrossEncoder | None = None,
        args: CrossEncoderTrainingArguments | None = None,
        output_dir: str | os.PathLike | None = None,
        val_dataset: RetrievalDataset | None = None,
        loss: str | nn.Module | Callable[[CrossEncoder], nn.Module] | None = None,
        teacher: Teacher | None = None,
        budget: TrainingBudget | None = DEFAULT_BUDGET,
        top_grade_only: bool = True,
        max_negatives_per_query: int = 3,
        candidates: Mapping[str, Sequence[str]] | None = None,
        candidate_scores: Mapping[str, Sequence[float]] | None = None,
        rerank_depth: int = 50,
        encoder: Any = None,
        fusion: str | Mapping[str, Any] | None = None,
        bm25_analyzer: str = "plain",
        bm25_language: str | None = "english",
        max_length: int | None = None,
        retrieval_weights: Sequence[float] = DEFAULT_WEIGHTS,
        evaluator: Any = None,
        promotion_margin: float = DEFAULT_MARGIN,
        force_promotion: bool = False,
        val_fraction: float = 0.1,
        max_val_queries: int = 200,
        eval_points: int = 2,
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
        if loss is None:
            loss = "margin_mse" if teacher is not None else "bce"
        if isinstance(loss, str) and loss not in LOSSES:
            raise ValueError(
                f"unknown loss {loss!r}; use one of {LOSSES}, a loss module or a callable"
            )
        if loss == "margin_mse" and teacher is None:
            raise ValueError(
                "loss='margin_mse' distils a teacher: pass teacher= (a CrossEncoder path, a "
                "SentenceTransformer bi-encoder such as the fine-tuned encoder, or a callable)"
            )
        if rerank_depth < 1:
            raise ValueError(f"rerank_depth must be >= 1, got {rerank_depth}")
        if max_negatives_per_query < 1:
            raise ValueError(f"max_negatives_per_query must be >= 1, got {max_negatives_per_query}")
        weights = tuple(float(w) for w in retrieval_weights)
        if not weights or any(not 0.0 <= w <= 1.0 for w in weights):
            raise ValueError(
                f"retrieval_weights must be values in [0, 1], got {retrieval_weights!r}"
            )
        if budget is not None and not isinstance(budget, TrainingBudget):
            raise TypeError(f"budget must be a TrainingBudget or None, got {type(budget).__name__}")
        if candidates is not None and self.val_dataset is None and val_dataset is None:
            raise ValueError(
                "candidates= are first-stage candidates of the validation queries: pass val_dataset= too"
            )
        self.loss = loss
        self.teacher = teacher
        self.budget = budget
        self.top_grade_only = top_grade_only
        self.max_negatives_per_query = max_negatives_per_query
        self.rerank_depth = rerank_depth
        self.encoder = encoder
        self.fusion = fusion
        self.bm25_text = check_bm25_text(bm25_analyzer, bm25_language, type(self).__name__)
        self.bm25_analyzer, self.bm25_language = bm25_analyzer, bm25_language
        self.retrieval_weights = weights
        self.eval_points = eval_points
        self.device = device
        self.starts_trained = _is_trained_cross_encoder(model)
        # a new one-logit head is initialised from the global RNG: seed it with args.seed, as
        # the Trainer's model_init would, so a run is reproducible whatever ran before it
        set_seed(self.args.seed)
        self.model = self._load_model(model, loss, max_length, device)
        self._candidates = dict(candidates) if candidates is not None else None
        self._candidate_scores = dict(candidate_scores) if candidate_scores is not None else None
        self._candidates_given = candidates is not None
        self._user_evaluator = evaluator
        self.evaluator: Any = evaluator
        self.retrieval_weight: float | None = None
        self.trainer: CrossEncoderTrainer | None = None
        self.result: FinetuneResult | None = None

    # ------------------------------------------------------------------ defaults

    @classmethod
    def default_args(
        cls, output_dir: str | os.PathLike | None = None, **overrides: Any
    ) -> CrossEncoderTrainingArguments:
        """The default recipe as ``CrossEncoderTrainingArguments`` (``overrides`` win).

        One epoch at batch 16, learning rate 2e-4 with 10% linear warm-up (a new
        one-logit head learns slowly at the usual 2e-5), checkpoints when
        validation runs, no external loggers.
        """
        defaults: dict[str, Any] = {
            "output_dir": str(output_dir or cls.default_output_dir),
            "num_train_epochs": 1,
            "per_device_train_batch_size": 16,
            "learning_rate": 2e-4,
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

    default_training_args = default_args

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
            if max_length is not None:
                ce.max_length = max_length
        elif model is None or isinstance(model, (str, Path)):
            if max_length is None and model is None:
                max_length = DEFAULT_MAX_LENGTH
            # num_labels=1: a bi-encoder checkpoint gets a new one-logit head.
            ce = load_model(
                CrossEncoder,
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

    def build_train_rows(
        self, dataset: RetrievalDataset | None = None
    ) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        """The trainer's columns for the loss's layout (within the budget), and their stats."""
        dataset = dataset if dataset is not None else self.train_dataset
        positives = select_positives(
            dataset, self.budget, seed=self.args.seed, top_grade_only=self.top_grade_only
        )
        columns, stats = cross_encoder_rows(
            dataset,
            self._layout(),
            self.max_negatives_per_query,
            seed=self.args.seed,
            positives=positives,
        )
        if self.loss == "margin_mse":
            columns["label"] = teacher_margins(self._teacher_scorer(), columns)
        return columns, stats.as_dict()

    def _teacher_scorer(self) -> Callable[[list[tuple[str, str]]], Sequence[float]]:
        return teacher_scorer(self.teacher)

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

    def _first_stage(
        self, val: RetrievalDataset
    ) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
        """First-stage candidates (and scores) of the validation queries."""
        if self._candidates is not None:
            scores = self._candidate_scores or {}
            return self._candidates, scores
        self._candidates, self._candidate_scores = hybrid_candidates_with_scores(
            val.queries,
            val.corpus,
            top_k=max(100, self.rerank_depth),
            embed_model=self.encoder,
            show_progress=self.show_progress,
            bm25_kwargs=self.bm25_text.retriever_kwargs(),
            **fusion_params(self.fusion),
        )
        return self._candidates, self._candidate_scores

    def _candidates_bm25(self) -> dict[str, Any]:
        """The BM25 analyzer and language of the first-stage candidates validated on
        (``None``: none built here)."""
        if self._candidates_given or self._user_evaluator is not None or self._candidates is None:
            return {"bm25_analyzer": None, "bm25_language": None}
        return self.bm25_text.options()

    @property
    def candidates(self) -> dict[str, list[str]] | None:
        """First-stage candidates of the validation queries (built on first use)."""
        if self._candidates is None:
            _, val = self.split_validation()
            if val is not None:
                self._first_stage(val)
        return self._candidates

    def _evaluators(self, val: RetrievalDataset | None) -> tuple[Any, dict[float, Any], Any]:
        """(before/after evaluator, blend evaluators by weight, cheap pool evaluator)."""
        if self._user_evaluator is not None:
            return self._user_evaluator, {}, None
        if val is None:
            return None, {}, None
        candidates, scores = self._first_stage(val)
        return rerank_evaluators(
            val,
            candidates,
            scores,
            depth=self.rerank_depth,
            retrieval_weights=self.retrieval_weights,
            pool_depth=min(POOL_QUERY_DEPTH, self.rerank_depth) if self.eval_points > 0 else None,
            show_progress=self.show_progress,
        )

    def _measure(
        self, base: Any, blends: Mapping[float, Any]
    ) -> tuple[dict[str, float], float | None]:
        """The tuned model's metrics at its best blend weight, and that weight."""
        if base is None:
            return {}, None
        if not blends:
            return self._evaluate_with(base), None
        return best_blend(self.model, base, blends)

    def _evaluate_with(self, evaluator: Any) -> dict[str, float]:
        evaluate = getattr(evaluator, "evaluate", None)
        if callable(evaluate):
            return copy_metrics(evaluate(self.model))
        raw = evaluator(self.model)
        return (
            {k.rsplit("_", 1)[-1]: float(v) for k, v in raw.items()}
            if isinstance(raw, dict)
            else {"score": float(raw)}
        )

    def _before(self, base: Any) -> dict[str, float]:
        if base is None:
            return {}
        if self.starts_trained or not hasattr(base, "baseline"):
            return self._evaluate_with(base)
        return copy_metrics(base.baseline())

    # ------------------------------------------------------------------ planning

    def _probe_step(
        self, loss: nn.Module, columns: Mapping[str, list[Any]]
    ) -> Callable[[], None] | None:
        """One forward + backward on real rows (no optimizer step); ``None`` for listwise rows."""
        if "docs" in columns:
            return None
        batch = min(self.args.per_device_train_batch_size, len(columns["query"]))
        inputs = [list(v[:batch]) for k, v in columns.items() if k != "label"]
        labels = torch.tensor([float(x) for x in columns["label"][:batch]])

        def step() -> None:
            loss(inputs, labels).backward()
            self.model.zero_grad(set_to_none=True)

        return step

    # ------------------------------------------------------------------ public

    @property
    def final_model_path(self) -> Path:
        """``<output_dir>/final``: the promoted reranker (absent when none was promoted)."""
        return self.output_dir / FINAL_DIR

    def finetune(
        self, resume_from_checkpoint: bool | str | None = None, evaluate_before: bool = True
    ) -> FinetuneResult:
        """Train, validate against the first stage, decide; save ``final/`` or ``challenger/``.

        Args:
            resume_from_checkpoint: ``True`` continues from the last checkpoint in
                ``output_dir`` (fresh start when there is none); a path continues from it.
            evaluate_before: score the first stage (or the starting cross-encoder) first.
        """
        from datasets import Dataset

        train, val = self.split_validation()
        base, blends, pool = self._evaluators(val)
        self.evaluator = base
        columns, row_stats = self.build_train_rows(train)
        columns = self._same_on_every_process(columns)
        start_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        before = self._on_main(self._before, base) if evaluate_before else {}
        loss = self._build_loss(columns)
        plan = self._plan_steps(self.budget, len(columns["query"]), self._probe_step(loss, columns))
        self._configure_checkpoint_selection(pool, plan["steps"], self.eval_points)
        callbacks, timer = self._budget_callbacks(self.budget)
        if self._distributed() and self.args.ddp_find_unused_parameters is None:
            # every parameter scores each pair; with DDP's default search for unused ones
            # the cross-encoder's first backward fails ("... marked as ready twice")
            self.args.ddp_find_unused_parameters = False
        self.trainer = CrossEncoderTrainer(
            model=self.model,
            args=self.args,
            train_dataset=Dataset.from_dict(columns),
            loss=loss,
            evaluator=pool if self.args.eval_strategy != "no" else None,
            callbacks=callbacks,
        )
        run = self._train_measured(resume_from_checkpoint)
        after, weight = self._on_main(self._measure, base, blends)
        self.retrieval_weight = weight
        metric = getattr(base, "primary_metric", None) or "ndcg@10"
        champion = (
            "the starting cross-encoder"
            if self.starts_trained
            else "the first-stage order (no reranker)"
        )
        decision = decide_promotion(
            before,
            after,
            metric,
            self.promotion_margin,
            force=self.force_promotion,
            champion_name=champion,
        )
        decision = self._save_outcome(decision, start_state, keep_start=self.starts_trained)
        self.result = self._trained_result(
            run,
            before,
            after,
            decision,
            plan,
            timer,
            str(self.final_model_path) if self.final_model_path.exists() else None,
            loss=type(loss).__name__,
            rows=row_stats,
            best_checkpoint=self.trainer.state.best_model_checkpoint,
            rerank_depth=self.rerank_depth,
            **self._candidates_bm25(),
            retrieval_weight=weight,
            val_queries=len(val) if val is not None else 0,
            train_queries=len(train),
            starts_trained=self.starts_trained,
        )
        self._write_decision(
            decision, {"retrieval_weight": weight, "result": self.result.summary()}
        )
        self.result = self._from_main(self.result)  # under DDP: the main process's result
        return self.result

    def get_finetuned_model(
        self, model_name: str | None = None, top_n: int = 10, **kwargs: Any
    ) -> BaseNodePostprocessor:
        """The promoted reranker as our ``CrossEncoderRerank`` node postprocessor.

        Args:
            model_name: a saved reranker folder to load instead of this engine's
                ``final`` model (kept for llama-index-finetuning's signature).
            top_n: nodes kept after re-ranking.
            kwargs: passed to ``CrossEncoderRerank``; ``retrieval_weight`` defaults to
                the blend weight chosen on validation.

        Raises:
            RerankerNotPromotedError: the tuned reranker did not beat the first stage
                on validation (leave it out; ``challenger_path`` holds it for inspection).
        """
        path = Path(model_name) if model_name is not None else self.final_model_path
        if model_name is None and not path.is_dir():
            decision = self.decision
            if decision is not None and not decision.promoted:
                raise RerankerNotPromotedError(
                    f"{decision.reason}. Leave the reranker out, or load the challenger from "
                    f"{self.challenger_path} with get_finetuned_model(model_name=...) to inspect it"
                )
            raise RuntimeError(f"no fine-tuned reranker at {path}; call finetune() first")
        check_weights(path)
        if model_name is None and self.retrieval_weight is not None:
            kwargs.setdefault("retrieval_weight", self.retrieval_weight)
        return CrossEncoderRerank(model=str(path), top_n=top_n, **kwargs)


def _is_trained_cross_encoder(model: Any) -> bool:
    """Whether the starting model already is a one-score cross-encoder (not a new head)."""
    if isinstance(model, CrossEncoder):
        return True
    if model is None:
        return False
    config = Path(str(model)) / "config.json"
    if not config.is_file():
        return False  # a hub id: assume a bi-encoder checkpoint unless its config says otherwise

    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(
        str(a).endswith("ForSequenceClassification") for a in data.get("architectures") or []
    )
