"""The contract every fine-tune engine keeps: train, validate, promote only what is better.

``EncoderFinetuneEngine``, ``RerankerFinetuneEngine`` and ``DecoderFinetuneEngine``
share one shape:

- the same argument names: ``model`` (the starting model: ``None`` for the
  bundled default, a folder, a hub id or a loaded model), ``args`` (the upstream
  config object: ``SentenceTransformerTrainingArguments``,
  ``CrossEncoderTrainingArguments`` or TRL's ``SFTConfig``; ``None`` builds the
  defaults with ``default_args(output_dir)``), ``output_dir``, ``val_dataset``,
  ``promotion_margin``, ``callbacks``, ``device``;
- a validation split: when none is given, ``val_fraction`` of the training
  queries is carved off by query (never trained on);
- ``finetune(resume_from_checkpoint=None)`` trains, keeps the best checkpoint
  seen on validation, and returns a ``FinetuneResult`` (validation metrics
  before and after, wall time, peak memory, and the promotion decision);
- champion / challenger: the tuned model replaces the starting one only when it
  beats it on validation by more than ``promotion_margin``
  (``promotion.decide_promotion``). Either way ``<output_dir>/decision.json``
  says what happened; a challenger that lost is kept in
  ``<output_dir>/challenger`` for inspection, and ``get_finetuned_model()``
  returns the model that won. ``force_promotion=True`` opts into the tuned
  model whatever validation says, except when training diverged: a model whose
  weights hold NaN or infinite values is never promoted (``refuse_broken``; it
  scores NaN on validation, and the reason names the broken tensors);
- distributed training: under ``torchrun`` / ``accelerate launch`` (DDP) every
  process trains on its share of each batch; only the main process evaluates (the
  others serve its model inference), decides and writes ``final/``,
  ``challenger/`` and ``decision.json``, and every process returns its result.

Step planning lives in :mod:`~llama_index_ragtune.finetuning.training_plan`, the
distributed steps in :mod:`~llama_index_ragtune.finetuning.distributed`, the
validation split's size in :mod:`~llama_index_ragtune.finetuning.validation_split`.

Example::

    from llama_index_ragtune.finetuning import EncoderFinetuneEngine

    engine = EncoderFinetuneEngine(train, output_dir="runs/encoder")   # validation carved from train
    result = engine.finetune()
    print(result.format_table())      # before / after / delta, and "promoted ..." or "kept ..."
    embed_model = engine.get_finetuned_model()
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import numbers
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from llama_index_ragtune._atomic import atomic_dir, atomic_write_json
from llama_index_ragtune.data.splitting import held_out_twins, twin_groups
from llama_index_ragtune.finetuning.checkpoints import (
    FINAL_DIR,
    lock_checkpoint_loads,
    mark_checkpoints,
    nonfinite_tensors,
    resolve_resume,
    run_identity,
)
from llama_index_ragtune.finetuning.compat import register_if_loaded
from llama_index_ragtune.finetuning.distributed import DistributedMixin
from llama_index_ragtune.finetuning.output_dir_check import (
    check_apart_from_start_model,
    check_output_dir,
)
from llama_index_ragtune.finetuning.promotion import PromotionDecision, refuse_broken
from llama_index_ragtune.finetuning.result import FinetuneResult, PeakMemory, process_peak_rss_mb
from llama_index_ragtune.finetuning.training_args_check import check_training_args
from llama_index_ragtune.finetuning.training_plan import TrainingPlanMixin
from llama_index_ragtune.finetuning.validation_split import (  # noqa: F401 - importable here too
    DEFAULT_MAX_VAL_QUERIES,
    DEFAULT_VAL_FRACTION,
    MIN_VAL_QUERIES,
    split_rows_by_question,
    validation_size,
    warn_no_validation,
    warn_validation_questions_trained,
)

logger = logging.getLogger(__name__)

DECISION_FILE = "decision.json"
SAVING = "saving_models"
"""Set in ``decision.json`` while a run saves its model folders (``_mark_saving``)."""
CHALLENGER_DIR = "challenger"


class BaseFinetuneEngine(TrainingPlanMixin, DistributedMixin, ABC):
    """Shared constructor checks, paths, resume, decision and result of the engines.

    Subclasses set ``kind``, ``args_class`` and ``default_output_dir``, implement
    ``default_args`` and the hooks ``_run`` and ``_load_model_for_llama_index``.

    ``train_deadline`` (a ``time.time()`` instant, default None) ends training by then
    whatever the budget's minutes say; a tuning run with a time limit sets it.
    """

    kind: ClassVar[str] = "model"
    train_deadline: float | None = None
    #: tensors of the trained model holding NaN / infinite values (set by ``_train_measured``)
    broken_weights: tuple[str, ...] = ()
    args_class: ClassVar[type] = object
    #: the model folders written under ``output_dir`` after training (``_check_output_paths``)
    output_folders: ClassVar[tuple[str, ...]] = (FINAL_DIR, CHALLENGER_DIR)
    default_output_dir: ClassVar[str] = "ragtune-model"

    def _init_common(
        self,
        args: Any,
        output_dir: str | os.PathLike | None,
        promotion_margin: float,
        force_promotion: bool,
        val_fraction: float,
        max_val_queries: int,
        callbacks: list[Any] | None,
        show_progress: bool,
    ) -> None:
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real):
            raise TypeError(
                f"{type(self).__name__}: val_fraction must be a number in [0, 1) (e.g. 0.1; 0 = "
                f"no validation split), got {type(val_fraction).__name__} {val_fraction!r}"
            )
        if not isinstance(force_promotion, (bool, np.bool_)):
            # bool("false") is True: a text or a number here would force a promotion
            raise TypeError(
                f"{type(self).__name__}: force_promotion must be True or False, got "
                f"{type(force_promotion).__name__} {force_promotion!r}"
            )
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(
                f"{type(self).__name__}: val_fraction must be in [0, 1) (0 = no validation split), "
                f"got {val_fraction}"
            )
        if (
            isinstance(max_val_queries, bool)
            or not isinstance(max_val_queries, int)
            or max_val_queries < 1
        ):
            raise ValueError(
                f"{type(self).__name__}: max_val_queries must be a whole number >= 1, got {max_val_queries!r}"
            )
        if isinstance(promotion_margin, bool) or not isinstance(promotion_margin, numbers.Real):
            raise TypeError(
                f"{type(self).__name__}: promotion_margin must be a finite number >= 0 (e.g. "
                f"0.005), got {type(promotion_margin).__name__} {promotion_margin!r}"
            )
        if not (math.isfinite(promotion_margin) and promotion_margin >= 0):
            raise ValueError(
                f"{type(self).__name__}: promotion_margin must be a finite number >= 0 (e.g. "
                f"0.005), got {promotion_margin}"
            )
        self.args = self._resolve_args(args, output_dir)
        check_training_args(type(self).__name__, self.args)
        check_output_dir(type(self).__name__, self.args.output_dir)
        self._check_output_paths()
        self.promotion_margin = float(promotion_margin)
        self.force_promotion = bool(force_promotion)
        self.val_fraction = val_fraction
        self.max_val_queries = max_val_queries
        self.callbacks = list(callbacks or [])
        self.show_progress = show_progress
        self.result: Any = None
        register_if_loaded(type(self))

    # ------------------------------------------------------------------ config

    @classmethod
    @abstractmethod
    def default_args(cls, output_dir: str | os.PathLike | None = None, **overrides: Any) -> Any:
        """The upstream config object with this engine's defaults (``overrides`` win)."""

    def _resolve_args(self, args: Any, output_dir: str | os.PathLike | None) -> Any:
        name = type(self).__name__
        if args is None:
            return self.default_args(output_dir or self.default_output_dir)
        if not isinstance(args, self.args_class):
            raise TypeError(
                f"{name}: args must be {self.args_class.__name__}, got {type(args).__name__}; "
                f"build one with {name}.default_args(output_dir, **overrides)"
            )
        if output_dir is not None and self._args_root(args) != Path(output_dir):
            raise ValueError(
                f"{name}: output_dir={str(output_dir)!r} differs from args.output_dir="
                f"{args.output_dir!r}; give one of them (args.output_dir is where checkpoints go)"
            )
        return args

    def _args_root(self, args: Any) -> Path:
        """The engine folder implied by ``args`` (encoder-side engines: ``args.output_dir``)."""
        return Path(args.output_dir)

    # ------------------------------------------------------------------ paths

    @property
    def output_dir(self) -> Path:
        """The engine's folder: checkpoints, ``final/``, ``challenger/``, ``decision.json``."""
        return self._args_root(self.args)

    @property
    def challenger_path(self) -> Path:
        """``<output_dir>/challenger``: a tuned model that lost on validation, kept for inspection."""
        return self.output_dir / CHALLENGER_DIR

    @property
    def decision_path(self) -> Path:
        return self.output_dir / DECISION_FILE

    def _check_output_paths(self) -> None:
        """Fail when built, not after training, when a path the engine writes once trained is
        taken by the wrong kind of entry: a file where a model folder goes
        (``output_folders``), a folder where ``decision.json`` goes. Nothing is removed."""
        name = type(self).__name__
        for folder in self.output_folders:
            path = self.output_dir / folder
            if path.exists() and not path.is_dir():
                raise NotADirectoryError(
                    f"{name}: {path} is a file, but the engine saves a model folder there after "
                    "training; move it away or choose another output_dir"
                )
        if self.decision_path.is_dir():
            raise IsADirectoryError(
                f"{name}: {self.decision_path} is a folder, but the engine writes its promotion "
                "decision to that file after training; move it away or choose another output_dir"
            )
        owner = _engine_of_run(self.decision_path)
        if owner is not None and owner not in {c.__name__ for c in type(self).__mro__}:
            raise FileExistsError(
                f"{name}: output_dir {self.output_dir} holds a {owner} run ({DECISION_FILE}); "
                f"training here would replace that engine's model folders and decision; "
                "choose another output_dir"
            )

    def _check_start_model(self, model: Any) -> None:
        """``ValueError`` when ``output_dir`` is, or lies inside, the starting model's folder, or
        the starting model lies in a folder the run replaces or removes
        (``check_apart_from_start_model``; ``final/`` excepted)."""
        replaced = tuple(f for f in self.output_folders if f != FINAL_DIR)
        check_apart_from_start_model(type(self).__name__, self.output_dir, model, replaced)

    @classmethod
    def _engine_name(cls) -> str:
        """The library engine this class is (a user's subclass: the engine it extends)."""
        library = __name__.rsplit(".", 1)[0]
        return next(c.__name__ for c in cls.__mro__ if c.__module__.startswith(library))

    def _checkpoint_to_resume(
        self, resume: bool | str | os.PathLike | None, folder: Path, trainer: Any
    ) -> str | None:
        """The checkpoint ``trainer`` resumes from (``resolve_resume``): only one this engine
        wrote from the same starting model; and ``trainer`` marks its own checkpoints so."""
        run = run_identity(self._engine_name(), trainer.model)
        mark_checkpoints(trainer, run)
        return resolve_resume(resume, folder, run)

    # ------------------------------------------------------------------ decision

    @property
    def decision(self) -> PromotionDecision | None:
        """The last promotion decision (from this run, or read from ``decision.json``)."""
        if self.result is not None and getattr(self.result, "decision", None) is not None:
            return self.result.decision
        if self.decision_path.is_file():
            try:
                data = json.loads(self.decision_path.read_text(encoding="utf-8"))
                if not isinstance(data, dict):
                    raise TypeError(f"a JSON object is expected, got {type(data).__name__}")
                return PromotionDecision.from_dict(data.get("decision", data))
            except (ValueError, TypeError) as exc:  # cut short or edited: named, not guessed
                raise ValueError(
                    f"{type(self).__name__}: {self.decision_path} is damaged ({exc}); run "
                    "finetune() again to decide anew, or delete the file"
                ) from exc
        return None

    def _final_decision(self, decision: PromotionDecision) -> PromotionDecision:
        """``decision``, or "kept" when the trained weights are NaN / infinite (``refuse_broken``):
        a diverged model is never promoted, saved to ``final/`` or reported as promoted."""
        return refuse_broken(decision, self.broken_weights)

    @property
    def interrupted_run(self) -> bool:
        """Whether ``decision.json`` says the last run was killed while saving its models
        (``_mark_saving``): the model folders may hold a model no decision was recorded for,
        so the starting model stays the one used."""
        try:
            data = json.loads(self.decision_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get(SAVING) is True

    def _mark_saving(self, decision: PromotionDecision) -> None:
        """Before the model folders change, write ``decision.json`` as "not promoted: the run
        was interrupted while saving" (``interrupted_run``); ``_write_decision`` replaces it
        once they are written, so a run killed in between never serves the tuned model."""
        if not self.is_main_process:
            return
        pending = dataclasses.replace(
            decision,
            promoted=False,
            forced=False,
            reason=(
                f"the run was interrupted after training, while saving its models to "
                f"{self.output_dir}, before its decision was written; the starting model stays "
                "the one used: run finetune() again"
            ),
        )
        payload = {"engine": type(self).__name__, "decision": pending.to_dict(), SAVING: True}
        atomic_write_json(self.decision_path, payload, strict=True, default=str)

    def _write_decision(self, decision: PromotionDecision, extra: Mapping[str, Any]) -> None:
        decision = self._final_decision(decision)
        if not self.is_main_process:
            return
        payload = {"engine": type(self).__name__, "decision": decision.to_dict(), **extra}
        atomic_write_json(self.decision_path, payload, strict=True, default=str)  # NaN as null
        log = logger.info if decision.promoted else logger.warning
        log("%s: %s", type(self).__name__, decision.reason)

    # ------------------------------------------------------------------ shared steps

    def split_validation(self) -> tuple[Any, Any]:
        """``(train, val)``: the given validation set, or one carved off the training queries.

        Carving is by query (twins: the same question under two ids, kept together) and
        seeded by ``args.seed``; ``val_fraction=0`` (or a
        single training query) gives no validation split. Training queries that are also
        questions of a given validation set are named in a warning
        (``warn_validation_questions_trained``).
        """
        if self.val_dataset is not None:
            train, val = self.train_dataset, self.val_dataset
            questions = [train.queries[q] for q in train.query_ids]
            warn_validation_questions_trained(type(self).__name__, questions, val.queries.values())
            return train, val
        ids = list(self.train_dataset.query_ids)
        text_of = {q: self.train_dataset.queries[q] for q in ids}  # twins stay together
        n_val = validation_size(len(twin_groups(text_of)), self.val_fraction, self.max_val_queries)
        if self.val_fraction == 0 or n_val == 0:
            if self.val_fraction:
                warn_no_validation(type(self).__name__, len(ids))
            return self.train_dataset, None
        val_ids = held_out_twins(text_of, n_val, self.args.seed)
        train = self.train_dataset.subset([q for q in ids if q not in val_ids])
        val = self.train_dataset.subset([q for q in ids if q in val_ids])
        logger.info("validation: %d of %d training queries held out", len(val), len(ids))
        return train, val

    def _save_outcome(
        self, decision: PromotionDecision, start_state: Mapping[str, Any], keep_start: bool = True
    ) -> PromotionDecision:
        """Save the challenger to ``final/`` when promoted; else to ``challenger/``, and restore
        the starting weights (saved to ``final/`` when ``keep_start``, else ``final/`` removed).
        Returns the decision applied (``_final_decision``: never a model with NaN weights)."""
        import torch

        decision = self._final_decision(decision)
        self._mark_saving(decision)
        final = self.output_dir / "final"
        main = self.is_main_process  # under DDP every process holds the same weights; one writes
        if decision.promoted:
            if main:
                with atomic_dir(final) as tmp:
                    self.model.save(str(tmp))
                shutil.rmtree(self.challenger_path, ignore_errors=True)
            return decision
        if main:
            with atomic_dir(self.challenger_path) as tmp:
                self.model.save(str(tmp))
        with torch.no_grad():
            self.model.load_state_dict(start_state)
        if not main:
            return decision
        if keep_start:
            with atomic_dir(final) as tmp:
                self.model.save(str(tmp))
        else:
            shutil.rmtree(final, ignore_errors=True)
        return decision

    @contextlib.contextmanager
    def _trained_model_kept(self) -> Iterator[None]:
        """Around the validation after training: when it fails (a user evaluator that breaks on
        the tuned model), the trained model is saved to ``challenger/`` first and the error
        says where, so the training time is not lost; ``final/`` and ``decision.json`` stay
        as they were."""
        try:
            yield
        except Exception as exc:
            if self.is_main_process:
                with atomic_dir(self.challenger_path) as tmp:
                    self.model.save(str(tmp))
            raise RuntimeError(
                f"{type(self).__name__}: validating the trained model failed "
                f"({type(exc).__name__}: {exc}); the trained model is saved in "
                f"{self.challenger_path} (final/ and {DECISION_FILE} are unchanged): fix the "
                "evaluator and score that model, or run finetune() again"
            ) from exc

    def _train_measured(self, resume_from_checkpoint: bool | str | None) -> tuple[Any, Any, Any]:
        """Run ``self.trainer``, resuming as asked: ``(its output, PeakMemory, checkpoint)``.

        Afterwards ``broken_weights`` names the tensors that hold NaN or infinite values (a
        diverged run), which ``_final_decision`` never promotes."""
        checkpoint = self._checkpoint_to_resume(
            resume_from_checkpoint, self.output_dir, self.trainer
        )
        with PeakMemory() as memory:
            output = lock_checkpoint_loads(self.trainer).train(resume_from_checkpoint=checkpoint)
        self.broken_weights = self._nonfinite_trained_weights()
        return output, memory, checkpoint

    def _nonfinite_trained_weights(self) -> tuple[str, ...]:
        """The trained model's tensors holding NaN or infinite values (a diverged run), with
        a warning naming them; ``_final_decision`` never promotes such a model."""
        broken = tuple(nonfinite_tensors(self.model.named_parameters()))
        if broken:
            logger.warning(
                "%s: training diverged: %d weight tensors hold NaN or infinite values (%s); "
                "the tuned model will not be promoted",
                type(self).__name__,
                len(broken),
                ", ".join(broken[:3]),
            )
        return broken

    def _trained_result(
        self,
        run: tuple[Any, Any, Any],
        before: dict[str, float],
        after: dict[str, float],
        decision: PromotionDecision,
        plan: dict[str, Any],
        timer: Any,
        model_path: str | None,
        **info: Any,
    ) -> FinetuneResult:
        """The ``FinetuneResult`` of one ``_train_measured`` run: what every engine reports
        (training loss, step plan, budget, whether the time budget stopped it, the resumed
        checkpoint, where a losing challenger is) around the engine's own ``info``."""
        decision = self._final_decision(decision)
        output, memory, checkpoint = run
        return FinetuneResult(
            before=before,
            after=after,
            train_seconds=memory.seconds,
            peak_memory_mb=memory.peak_mb,
            process_peak_memory_mb=process_peak_rss_mb(),
            global_step=self.trainer.state.global_step,
            model_path=model_path,
            decision=decision,
            info={
                "train_loss": getattr(output, "training_loss", None),
                **info,
                "plan": plan,
                "budget": self.budget.to_dict() if self.budget else None,
                "stopped_by_time_budget": bool(timer and timer.stopped_at_step is not None),
                "resumed_from": checkpoint,
                "challenger_path": None if decision.promoted else str(self.challenger_path),
                "nonfinite_weights": list(self.broken_weights),
            },
        )

    # ------------------------------------------------------------------ public

    @abstractmethod
    def finetune(self, resume_from_checkpoint: bool | str | None = None) -> Any:
        """Train, validate, decide; return a ``FinetuneResult``."""

    @abstractmethod
    def get_finetuned_model(self, **kwargs: Any) -> Any:
        """The promoted model as a LlamaIndex object."""


def _engine_of_run(decision_path: Path) -> str | None:
    """The engine named in a run's ``decision.json``; None when there is none or it is unreadable."""
    try:
        data = json.loads(decision_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    engine = data.get("engine") if isinstance(data, dict) else None
    return engine if isinstance(engine, str) else None
