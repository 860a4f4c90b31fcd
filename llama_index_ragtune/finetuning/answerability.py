"""``AnswerabilityFinetuneEngine``: train the encoder side's "do these sources hold the answer?" head.

A one-logit cross-encoder (by default the bundled all-MiniLM-L6-v2 with a new
head, like the reranker) learns, from (question, source, label) rows
(``data.answerability.answerability_pairs``), whether a source holds the
answer: ``BinaryCrossEntropyLoss`` with positives weighted by the
negative-to-positive ratio. The refusal signal is question-level: P(answerable)
is the largest per-source probability (``llms.answerability.AnswerabilityScorer``).

The engine keeps the contract of :mod:`~llama_index_ragtune.finetuning.base`:
``model``, ``args`` (``CrossEncoderTrainingArguments``), ``output_dir``,
``val_dataset`` (pair rows; carved off the training rows by question when
None), ``budget`` (``TrainingBudget(minutes=...)`` plans the steps from a timed
probe), ``promotion_margin`` / ``force_promotion``. Validation is the
question-level ROC AUC of P(no answer) against the questions' labels
(``auc``; 0.5 = chance), measured on the starting model and on the tuned one;
the tuned head is promoted (``final/``) only when it wins by more than the
margin, else it waits in ``challenger/``.

Example::

    from llama_index_ragtune.data.answerability import answerability_pairs, with_gold_removed
    from llama_index_ragtune.finetuning.answerability import AnswerabilityFinetuneEngine

    pairs = answerability_pairs(with_gold_removed(builder, contexts, retrieved))
    engine = AnswerabilityFinetuneEngine(pairs, output_dir="runs/answerability")
    print(engine.finetune().format_table())     # auc before / after, and the decision
    scorer = engine.get_finetuned_model()       # an AnswerabilityScorer
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainingArguments

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.evaluation.refusal_calibration import refusal_auc
from llama_index_ragtune.finetuning.base import BaseFinetuneEngine
from llama_index_ragtune.finetuning.budget import TrainingBudget
from llama_index_ragtune.finetuning.checkpoints import check_resume_argument
from llama_index_ragtune.finetuning.promotion import decide_promotion
from llama_index_ragtune.finetuning.result import FinetuneResult
from llama_index_ragtune.finetuning.training_args_check import check_count
from llama_index_ragtune.finetuning.validation_split import (
    split_rows_by_question,
    warn_validation_rows_trained,
)
from llama_index_ragtune.llms.answerability import AnswerabilityScorer
from llama_index_ragtune.models import load_model, resolve_model

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

PAIR_COLUMNS = ("question", "source", "label")
DEFAULT_MAX_LENGTH = 320
DEFAULT_BUDGET = TrainingBudget(minutes=10.0)
"""Default budget: 10 minutes of training (steps planned from a timed probe)."""
PROMOTION_MARGIN = 0.01
"""The tuned head must raise the validation AUC by more than this."""
SPLIT_RESEEDS = 20
"""Seeds tried (``args.seed``, ``+1``, ...) for a carved validation split holding both
answerable and unanswerable questions (the first one that does is used)."""


class AnswerabilityNotPromotedError(RuntimeError):
    """The tuned head did not beat the starting model on validation."""


def _check_pairs(dataset: Any, what: str) -> datasets.Dataset:
    missing = [c for c in PAIR_COLUMNS if c not in getattr(dataset, "column_names", ())]
    if missing:
        raise ValueError(
            f"AnswerabilityFinetuneEngine: {what} lacks the columns {missing}; build it with "
            "data.answerability.answerability_pairs(contexts)."
        )
    if len(dataset) == 0:
        raise ValueError(f"AnswerabilityFinetuneEngine: {what} is empty.")
    for row, (question, source, label) in enumerate(
        zip(dataset["question"], dataset["source"], dataset["label"], strict=True)
    ):
        where = f"AnswerabilityFinetuneEngine: {what} row {row} (question {question!r:.80})"
        if isinstance(label, str) or label not in (0, 1):  # NaN, 0.5, None, inf: not a label
            raise DataError(
                f"{where}: labels must be 0 or 1 (1: the source holds the answer), got "
                f"{label!r}; fix or drop the row"
            )
        if not isinstance(question, str) or not isinstance(source, str):
            raise DataError(
                f"{where}: question and source must be text, got {type(question).__name__} "
                f"and {type(source).__name__}"
            )
    return dataset


def _missing_question_class(rows: datasets.Dataset) -> str | None:
    """``"answerable"`` / ``"unanswerable"`` when ``rows`` hold no question of that kind (a
    question is answerable when one of its rows has label 1), else None."""
    groups = rows["qid"] if "qid" in rows.column_names else range(len(rows))
    answerable: dict[str, bool] = {}
    for group, label in zip(groups, rows["label"], strict=True):
        answerable[str(group)] = answerable.get(str(group), False) or bool(int(label))
    kinds = set(answerable.values())
    if True not in kinds:
        return "answerable"
    if False not in kinds:
        return "unanswerable"
    return None


def question_level_auc(
    scores: Sequence[float], labels: Sequence[int], groups: Sequence[str]
) -> float | None:
    """ROC AUC of each question's P(no answer) (1 - the max over its sources) as a detector
    of questions whose sources hold no answer (all labels 0).

    Example::

        question_level_auc([0.9, 0.1, 0.2, 0.3], [1, 0, 0, 0], ["a", "a", "b", "b"])   # 1.0
    """
    best: dict[str, float] = {}
    answerable: dict[str, bool] = {}
    for score, label, group in zip(scores, labels, groups, strict=True):
        best[group] = max(best.get(group, 0.0), float(score))
        answerable[group] = answerable.get(group, False) or bool(label)
    keys = list(best)
    return refusal_auc([1.0 - best[k] for k in keys], [answerable[k] for k in keys])


class AnswerabilityFinetuneEngine(BaseFinetuneEngine):
    """Fine-tune a one-logit cross-encoder to tell whether a source holds a question's answer.

    Args:
        train_dataset: rows ``question``, ``source``, ``label`` (1: holds the answer) and
            ``qid`` (keeps a question's rows together when validation is carved).
        model: ``None`` (bundled MiniLM with a new head), a cross-encoder or bi-encoder
            path / hub id, or a ``CrossEncoder``.
        args: ``CrossEncoderTrainingArguments``; ``None`` builds ``default_args(output_dir)``.
        output_dir: the engine folder (checkpoints, ``final/``, ``challenger/``, ``decision.json``).
        val_dataset: held-out pair rows; ``None`` carves ``val_fraction`` of the questions off.
        budget: a ``TrainingBudget`` (``minutes`` plans the steps; ``max_pairs`` caps the rows).
        max_length: token limit of a (question, source) pair.
        promotion_margin, force_promotion, val_fraction, max_val_queries: the engine contract.
        callbacks: ``transformers.TrainerCallback`` objects passed to the trainer.
        device: where to load the model.
        show_progress: progress bars while scoring validation pairs.

    Example::

        engine = AnswerabilityFinetuneEngine(pairs, output_dir="runs/answerability",
                                             budget=TrainingBudget(minutes=8))
        result = engine.finetune()
        result.before["auc"], result.after["auc"]     # question-level validation AUC
    """

    kind = "answerability"
    args_class = CrossEncoderTrainingArguments
    default_output_dir = "ragtune-answerability"

    def __init__(
        self,
        train_dataset: datasets.Dataset,
        *,
        model: str | os.PathLike | CrossEncoder | None = None,
        args: Any | None = None,
        output_dir: str | os.PathLike | None = None,
        val_dataset: datasets.Dataset | None = None,
        budget: TrainingBudget | None = DEFAULT_BUDGET,
        max_length: int | None = DEFAULT_MAX_LENGTH,
        promotion_margin: float = PROMOTION_MARGIN,
        force_promotion: bool = False,
        val_fraction: float = 0.1,
        max_val_queries: int = 200,
        callbacks: list[Any] | None = None,
        device: str | None = None,
        show_progress: bool = True,
    ) -> None:
        if budget is not None and not isinstance(budget, TrainingBudget):
            raise TypeError(f"budget must be a TrainingBudget or None, got {type(budget).__name__}")
        if max_length is not None:
            max_length = check_count(type(self).__name__, "max_length", max_length, 1, 512)
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
        self.train_dataset = _check_pairs(train_dataset, "train_dataset")
        self.val_dataset = None if val_dataset is None else _check_pairs(val_dataset, "val_dataset")
        self._check_start_model(model)
        self.budget = budget
        self.device = device
        self.starts_trained = _is_trained(model)
        # a new head is initialised from the global RNG: seeded with args.seed (as the
        # reranker's), so a resumed run starts from the same weights as the one it resumes
        from transformers import set_seed

        set_seed(self.args.seed)
        self.model = self._load(model, max_length, device)
        self.trainer: Any = None

    @classmethod
    def default_args(
        cls, output_dir: str | os.PathLike | None = None, **overrides: Any
    ) -> CrossEncoderTrainingArguments:
        """``CrossEncoderTrainingArguments``: one epoch at batch 16, learning rate 1e-4 with 10%
        warm-up (a new head), no mid-run checkpoints or external loggers (``overrides`` win)."""
        defaults: dict[str, Any] = {
            "output_dir": str(output_dir or cls.default_output_dir),
            "num_train_epochs": 1,
            "per_device_train_batch_size": 16,
            "learning_rate": 1e-4,
            "warmup_steps": 0.1,
            "weight_decay": 0.01,
            "save_strategy": "no",
            "eval_strategy": "no",
            "logging_steps": 20,
            "seed": 42,
            "report_to": "none",
            "dataloader_num_workers": 0,
        }
        defaults.update(overrides)
        return CrossEncoderTrainingArguments(**defaults)

    @staticmethod
    def _load(model: Any, max_length: int | None, device: str | None) -> CrossEncoder:
        if isinstance(model, CrossEncoder):
            ce = model
        elif model is None or isinstance(model, (str, os.PathLike)):
            ce = load_model(
                CrossEncoder,
                resolve_model(None if model is None else str(model), kind="encoder"),
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
                f"the answerability head must output one score per pair, but the model has "
                f"{ce.num_labels} labels; load it with CrossEncoder(path, num_labels=1)."
            )
        if max_length is not None:
            ce.max_length = max_length
        return ce

    # ------------------------------------------------------------------ data
    def split_validation(self) -> tuple[datasets.Dataset, datasets.Dataset | None]:
        """``(train, val)`` pair rows: the given ``val_dataset`` (a warning names training
        rows of its questions), or questions carved off."""
        name = type(self).__name__
        if self.val_dataset is not None:
            warn_validation_rows_trained(self, self.train_dataset, self.val_dataset)
            missing = _missing_question_class(self.val_dataset)
            if missing:
                raise DataError(
                    f"{name}: val_dataset has no {missing} question, so the AUC that decides "
                    "promotion cannot be measured (the run would train and keep the starting "
                    "model)",
                    hint="give val_dataset answerable and unanswerable questions, or leave it "
                    "out to carve validation from train_dataset",
                )
            return self.train_dataset, self.val_dataset
        # a split of one kind of question cannot measure the AUC: try the next seeds
        for attempt in range(SPLIT_RESEEDS):
            train, val = split_rows_by_question(
                self.train_dataset,
                self.val_fraction,
                self.max_val_queries,
                self.args.seed + attempt,
                owner=name,
            )
            if val is None or not _missing_question_class(val):
                return train, val
        logger.warning(
            "%s: every validation split tried holds no %s question, so the AUC that decides "
            "promotion cannot be measured and the starting model is kept; add %s questions "
            "(e.g. with_gold_removed twins), raise val_fraction, or pass val_dataset=",
            name,
            _missing_question_class(val),
            _missing_question_class(val),
        )
        return train, val

    def _columns(self, train: datasets.Dataset) -> dict[str, list[Any]]:
        columns = {
            "question": list(train["question"]),
            "source": list(train["source"]),
            "label": [float(x) for x in train["label"]],
        }
        cap = self.budget.max_pairs if self.budget is not None else None
        if cap is not None and len(columns["label"]) > cap:
            from llama_index_ragtune.finetuning.budget import sample_rows

            columns = sample_rows(columns, cap, self.args.seed)
        return columns

    def validate(self, val: datasets.Dataset | None) -> dict[str, float]:
        """Question-level ``auc`` (and pair-level ``pair_auc``) of the current model on ``val``."""
        if val is None or len(val) == 0:
            return {}
        import torch

        pairs = list(zip(val["question"], val["source"], strict=True))
        scores = [
            float(x)
            for x in self.model.predict(
                pairs,
                batch_size=32,
                show_progress_bar=self.show_progress,
                activation_fn=torch.nn.Sigmoid(),
            )
        ]
        labels = [int(x) for x in val["label"]]
        groups = [str(k) for k in (val["qid"] if "qid" in val.column_names else range(len(val)))]
        out = {}
        auc = question_level_auc(scores, labels, groups)
        if auc is not None:
            out["auc"] = auc
        pair_auc = refusal_auc([1 - s for s in scores], [bool(x) for x in labels])
        if pair_auc is not None:
            out["pair_auc"] = pair_auc
        return out

    # ------------------------------------------------------------------ training
    def finetune(self, resume_from_checkpoint: bool | str | None = None) -> FinetuneResult:
        """Train, validate against the starting model, decide; save ``final/`` or ``challenger/``."""
        import torch
        from datasets import Dataset
        from sentence_transformers.cross_encoder import CrossEncoderTrainer, losses

        check_resume_argument(resume_from_checkpoint)  # before any scoring
        train, val = self.split_validation()
        columns = self._columns(train)
        positives = sum(1 for x in columns["label"] if x > 0)
        if positives == 0 or positives == len(columns["label"]):
            raise ValueError(
                f"AnswerabilityFinetuneEngine: the training rows have {positives} positive and "
                f"{len(columns['label']) - positives} negative labels; both are needed (add "
                "unanswerable questions or with_gold_removed twins)."
            )
        self._check_full_batch(len(columns["label"]))  # before the "before" scores
        start_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        before = self.validate(val)
        pos_weight = torch.tensor((len(columns["label"]) - positives) / positives)
        loss = losses.BinaryCrossEntropyLoss(self.model, pos_weight=pos_weight)
        batch = min(self.args.per_device_train_batch_size, len(columns["label"]))
        inputs = [columns["question"][:batch], columns["source"][:batch]]
        labels = torch.tensor(columns["label"][:batch])

        def probe() -> None:
            loss(inputs, labels).backward()
            self.model.zero_grad(set_to_none=True)

        plan = self._plan_steps(self.budget, len(columns["label"]), probe)
        callbacks, timer = self._budget_callbacks(self.budget)
        self.trainer = CrossEncoderTrainer(
            model=self.model,
            args=self.args,
            train_dataset=Dataset.from_dict(columns),
            loss=loss,
            callbacks=callbacks,
        )
        run = self._train_measured(resume_from_checkpoint)
        after = self.validate(val)
        decision = decide_promotion(
            before,
            after,
            "auc",
            self.promotion_margin,
            force=self.force_promotion,
            champion_name="the starting model",
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
            rows=len(columns["label"]),
            positives=positives,
            val_questions=0 if val is None else len(set(val["qid"])),
        )
        self._write_decision(decision, {"result": self.result.summary()})
        return self.result

    @property
    def final_model_path(self) -> Path:
        """``<output_dir>/final``: the promoted head (absent when none was promoted)."""
        return self.output_dir / "final"

    def get_finetuned_model(self, **kwargs: Any) -> Any:
        """The promoted head as an ``AnswerabilityScorer`` (``kwargs`` go to it).

        Raises:
            AnswerabilityNotPromotedError: the tuned head lost on validation (it waits in
                ``challenger/``; load it with ``AnswerabilityScorer(path)`` to inspect it).
        """
        if self.interrupted_run or not self.final_model_path.is_dir():
            decision = self.decision
            if decision is not None and not decision.promoted:
                raise AnswerabilityNotPromotedError(
                    f"{decision.reason}; the tuned head is in {self.challenger_path}"
                )
            raise RuntimeError(f"no answerability head at {self.final_model_path}; call finetune()")
        kwargs.setdefault("max_length", self.model.max_length)
        return AnswerabilityScorer(self.final_model_path, device=self.device, **kwargs)


def _is_trained(model: Any) -> bool:
    """Whether the starting model already is a one-score cross-encoder (not a new head)."""
    if isinstance(model, CrossEncoder):
        return True
    if model is None:
        return False
    config = Path(str(model)) / "config.json"
    if not config.is_file():
        return False

    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(
        str(a).endswith("ForSequenceClassification") for a in data.get("architectures") or []
    )
