"""Fine-tune the cross-encoder reranker on a ``RetrievalDataset``; keep it only where it helps.

``RerankerFinetuneEngine`` wraps sentence-transformers' ``CrossEncoderTrainer``
under the engine contract of :mod:`~llama_index_ragtune.finetuning.base`. Losses:
``"margin_mse"`` (default with a ``teacher=``: distils its score margins), ``"bce"``
(default without), ``"lambda"`` and ``"listnet"``. Validation reranks the hybrid
retriever's candidates of held-out queries, blended with the first-stage score at
the best ``retrieval_weights`` value; the reranker is promoted only when that beats
the first stage by more than ``promotion_margin``, otherwise
``get_finetuned_model()`` raises ``RerankerNotPromotedError``. Building the rows,
model and loss lives in :mod:`~llama_index_ragtune.finetuning.reranker_training`,
validation in :mod:`~llama_index_ragtune.finetuning.reranker_evaluation`.

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

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentence_transformers.cross_encoder import (
    CrossEncoder,
    CrossEncoderTrainer,
    CrossEncoderTrainingArguments,
)
from torch import nn
from transformers import set_seed

from llama_index_ragtune.finetuning.base import BaseFinetuneEngine
from llama_index_ragtune.finetuning.budget import TrainingBudget
from llama_index_ragtune.finetuning.checkpoints import (
    FINAL_DIR,
    check_resume_argument,
    check_weights,
)
from llama_index_ragtune.finetuning.hybrid_eval import check_bm25_text, check_fusion
from llama_index_ragtune.finetuning.promotion import DEFAULT_MARGIN, decide_promotion
from llama_index_ragtune.finetuning.ranking_eval import first_stage_score
from llama_index_ragtune.finetuning.rerank_validation import DEFAULT_WEIGHTS
from llama_index_ragtune.finetuning.reranker_evaluation import (  # noqa: F401 - importable here too
    POOL_QUERY_DEPTH,
    RerankerEvaluationMixin,
)
from llama_index_ragtune.finetuning.reranker_training import (  # noqa: F401 - importable here too
    _LAYOUTS,
    DEFAULT_MAX_LENGTH,
    RerankerTrainingMixin,
    _is_trained_cross_encoder,
)
from llama_index_ragtune.finetuning.result import FinetuneResult
from llama_index_ragtune.finetuning.rows import check_trainable
from llama_index_ragtune.finetuning.teachers import (  # noqa: F401 - bi_encoder_scorer: public here too
    Teacher,
    bi_encoder_scorer,
    teacher_scorer,
)
from llama_index_ragtune.finetuning.training_args_check import check_count
from llama_index_ragtune.postprocessor import CrossEncoderRerank
from llama_index_ragtune.retrievers.bm25_index import LANGUAGE_STOPWORDS

if TYPE_CHECKING:
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from transformers import TrainerCallback

    from llama_index_ragtune.data.schema import RetrievalDataset


LOSSES = ("bce", "lambda", "listnet", "margin_mse")
DEFAULT_BUDGET = TrainingBudget(max_pairs_per_query=4, minutes=10.0)
"""Default budget: the 4 strongest positives of each query, 10 minutes of training."""
logger = logging.getLogger(__name__)


class RerankerNotPromotedError(RuntimeError):
    """The tuned reranker did not beat the first stage on validation: leave it out."""


class RerankerFinetuneEngine(RerankerTrainingMixin, RerankerEvaluationMixin, BaseFinetuneEngine):
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
        bm25_stopwords: the words that BM25 drops: ``"language"`` (the language's list,
            default), ``None``, a bm25s list code (``"de"``) or a list of words: give the
            served retriever's. Recorded in ``result.info["bm25_stopwords"]`` when not the
            default.
        max_length: token limit of (query, passage) inputs; ``None`` keeps the
            model's, or 256 when starting from the bundled default.
        retrieval_weights: blend weights of the first-stage score tried on validation
            (``CrossEncoderRerank(retrieval_weight=...)``) besides 0 (the reranker
            alone); the best one is kept and served by ``get_finetuned_model()``.
        evaluator: a sentence-transformers evaluator replacing the default
            ``CandidateRerankingEvaluator`` (before/after), checked as the encoder
            engine's is (``finetuning.evaluator_output``); promotion compares its
            ``primary_metric`` (``"ndcg@10"`` when it has none).
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
        bm25_stopwords: str | Sequence[str] | None = LANGUAGE_STOPWORDS,
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
        name = type(self).__name__
        rerank_depth = check_count(name, "rerank_depth", rerank_depth, 1, 50)
        max_negatives_per_query = check_count(
            name, "max_negatives_per_query", max_negatives_per_query, 1, 3
        )
        eval_points = check_count(name, "eval_points", eval_points, 0, 2)
        if max_length is not None:  # 0 trained on empty inputs, -3 failed in the tokenizer
            max_length = check_count(name, "max_length", max_length, 1, 512)
        self._check_start_model(model)
        try:  # 0.5 or "0.5" (not a list) failed as "'float' object is not iterable" / float(".")
            if isinstance(retrieval_weights, (str, bytes)):
                raise TypeError
            weights = tuple(float(w) for w in retrieval_weights)
        except (TypeError, ValueError):
            raise TypeError(
                f"{name}: retrieval_weights must be a list of numbers in [0, 1] (e.g. "
                f"[0.0, 0.25, 0.5]), got {type(retrieval_weights).__name__} {retrieval_weights!r:.100}"
            ) from None
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
        check_fusion(type(self).__name__, fusion)
        self.fusion = fusion
        self.bm25_text = check_bm25_text(
            bm25_analyzer, bm25_language, type(self).__name__, bm25_stopwords
        )
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
        self._candidate_scores = (
            None
            if candidate_scores is None
            else {  # a NaN or text score named now, not after the "before" scores
                q: [first_stage_score(q, i, s) for i, s in enumerate(scores)]
                for q, scores in dict(candidate_scores).items()
            }
        )
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

        check_resume_argument(resume_from_checkpoint)  # before any scoring
        train, val = self.split_validation()
        base, blends, pool = self._evaluators(val)
        self.evaluator = base
        columns, row_stats = self.build_train_rows(train)
        self._check_full_batch(len(columns["query"]))  # before the "before" scores
        columns = self._same_on_every_process(columns)
        start_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        before = self._on_main(self._before, base) if evaluate_before else {}
        self._check_user_before(base, before, evaluate_before)
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
        champion = (
            "the starting cross-encoder"
            if self.starts_trained
            else "the first-stage order (no reranker)"
        )
        with self._trained_model_kept():
            after, weight = self._on_main(self._measure, base, blends)
            self.retrieval_weight = weight
            decision = decide_promotion(
                before,
                after,
                self._decision_key(base, after),
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
        if model_name is None and (self.interrupted_run or not path.is_dir()):
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
