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

Example::

    from llama_index_ragtune.finetuning import EncoderFinetuneEngine

    engine = EncoderFinetuneEngine(train, output_dir="runs/encoder")   # validation carved from train
    result = engine.finetune()
    print(result.format_table())      # before / after / delta, and "promoted ..." or "kept ..."
    embed_model = engine.get_finetuned_model()
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import os
import pickle
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from llama_index_ragtune._atomic import atomic_dir, atomic_write_json
from llama_index_ragtune.data.splitting import held_out_twins, twin_groups
from llama_index_ragtune.finetuning.checkpoints import (
    lock_checkpoint_loads,
    nonfinite_tensors,
    resolve_resume,
)
from llama_index_ragtune.finetuning.compat import register_if_loaded
from llama_index_ragtune.finetuning.promotion import PromotionDecision, refuse_broken
from llama_index_ragtune.finetuning.result import FinetuneResult, PeakMemory, process_peak_rss_mb

logger = logging.getLogger(__name__)

DECISION_FILE = "decision.json"
CHALLENGER_DIR = "challenger"
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_MAX_VAL_QUERIES = 200
MIN_VAL_QUERIES = 50


def validation_size(n_queries: int, val_fraction: float, max_val: int) -> int:
    """How many of ``n_queries`` go to validation: ``val_fraction`` of them, at least
    ``min(50, n / 4)`` (decisions on a handful of queries are noise), at most ``max_val``."""
    if n_queries < 2:
        return 0
    wanted = max(round(n_queries * val_fraction), min(MIN_VAL_QUERIES, n_queries // 4), 1)
    return max(1, min(wanted, max_val, n_queries - 1))


def split_rows_by_question(
    data: Any, val_fraction: float, max_val: int, seed: int
) -> tuple[Any, Any | None]:
    """``(train, val)`` rows of a ``datasets.Dataset``, whole questions (its ``qid`` column, else
    each row) held out: ``validation_size`` of them, seeded; ``val`` is ``None`` when none are.

    Example::

        train, val = split_rows_by_question(rows, 0.1, 200, seed=0)
    """
    keys = [str(k) for k in (data["qid"] if "qid" in data.column_names else range(len(data)))]
    texts = data["question"] if "question" in data.column_names else keys
    # twins (the same question under two qids) stay together
    text_of = dict(zip(keys, texts, strict=True))
    n_groups = len(twin_groups(text_of))
    n_val = validation_size(n_groups, val_fraction, max_val)
    if val_fraction == 0 or n_val == 0:
        return data, None
    held = held_out_twins(text_of, n_val, seed)
    val_idx = [i for i, k in enumerate(keys) if k in held]
    train_idx = [i for i, k in enumerate(keys) if k not in held]
    logger.info("validation: %d of %d questions held out", n_val, n_groups)
    return data.select(train_idx), data.select(val_idx)


class BaseFinetuneEngine(ABC):
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
        if os.path.exists(self.args.output_dir) and not os.path.isdir(self.args.output_dir):
            raise NotADirectoryError(
                f"{type(self).__name__}: output_dir {self.args.output_dir} is a file; choose a folder"
            )
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

    def _checkpoint_to_resume(
        self, resume: bool | str | os.PathLike | None, folder: Path
    ) -> str | None:
        return resolve_resume(resume, folder)

    # ------------------------------------------------------------------ decision

    @property
    def decision(self) -> PromotionDecision | None:
        """The last promotion decision (from this run, or read from ``decision.json``)."""
        if self.result is not None and getattr(self.result, "decision", None) is not None:
            return self.result.decision
        if self.decision_path.is_file():
            data = json.loads(self.decision_path.read_text(encoding="utf-8"))
            return PromotionDecision.from_dict(data.get("decision", data))
        return None

    def _final_decision(self, decision: PromotionDecision) -> PromotionDecision:
        """``decision``, or "kept" when the trained weights are NaN / infinite (``refuse_broken``):
        a diverged model is never promoted, saved to ``final/`` or reported as promoted."""
        return refuse_broken(decision, self.broken_weights)

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
        single training query) gives no validation split.
        """
        if self.val_dataset is not None:
            return self.train_dataset, self.val_dataset
        ids = list(self.train_dataset.query_ids)
        text_of = {q: self.train_dataset.queries[q] for q in ids}  # twins stay together
        n_val = validation_size(len(twin_groups(text_of)), self.val_fraction, self.max_val_queries)
        if self.val_fraction == 0 or n_val == 0:
            if self.val_fraction:
                logger.warning(
                    "%s: no validation split: %s, so none can be held out and the tuned model "
                    "cannot be checked (the starting model is kept); pass val_dataset=",
                    type(self).__name__,
                    "there is one training query"
                    if len(ids) < 2
                    else f"all {len(ids)} training queries are the same question",
                )
            return self.train_dataset, None
        val_ids = held_out_twins(text_of, n_val, self.args.seed)
        train = self.train_dataset.subset([q for q in ids if q not in val_ids])
        val = self.train_dataset.subset([q for q in ids if q in val_ids])
        logger.info("validation: %d of %d training queries held out", len(val), len(ids))
        return train, val

    def _configure_checkpoint_selection(
        self, pool: Any, total_steps: int, eval_points: int
    ) -> None:
        """Evaluate ``pool`` ``eval_points`` times during training and keep the best checkpoint
        (``load_best_model_at_end``), unless the caller configured evaluation in ``args``."""
        if pool is None or eval_points < 1 or self.args.eval_strategy != "no" or total_steps < 2:
            return
        every = max(1, math.ceil(total_steps / eval_points))
        self.args.eval_strategy = "steps"
        self.args.eval_steps = every
        self.args.save_strategy = "steps"
        self.args.save_steps = every
        self.args.load_best_model_at_end = True
        self.args.metric_for_best_model = getattr(
            pool, "metric_key", f"eval_{pool.name}_{pool.primary_metric}"
        )
        self.args.greater_is_better = getattr(pool, "greater_is_better", True)

    def _training_deadline(self) -> float | None:
        """When training must end (``train_deadline``; engines with work after training
        move it earlier)."""
        return self.train_deadline

    def _budget_callbacks(self, budget: Any) -> tuple[list[Any], Any]:
        """The user's callbacks plus a ``TimeBudgetCallback`` when ``budget.minutes`` or a
        training deadline is set."""
        from llama_index_ragtune.finetuning.budget import TimeBudgetCallback

        callbacks = list(self.callbacks)
        timer = None
        minutes = None if budget is None else budget.minutes
        deadline = self._training_deadline()
        if minutes is not None or deadline is not None:
            timer = TimeBudgetCallback(minutes, deadline=deadline)
            callbacks.append(timer)
        return callbacks, timer

    def _plan_steps(
        self,
        budget: Any,
        rows: int,
        probe: Any,
        deadline: float | None = None,
        repeats: int = 2,
        args: Any = None,
    ) -> dict[str, Any]:
        """Plan ``args.max_steps`` (``self.args`` unless another stage's ``args`` are given)
        for ``budget.minutes`` or the time to the training deadline (``deadline``, else
        ``_training_deadline()``), whichever ends sooner, by timing ``probe()``: one
        micro-batch of one process, called ``repeats`` times, the first a warm-up
        (``time_steps``). Steps count global batches (all processes, all accumulation
        steps). A planned run's learning-rate schedule ends when its time does, instead of
        being cut off part-way by the timer."""
        from llama_index_ragtune.finetuning.budget import describe_plan, plan_steps, time_steps

        args = self.args if args is None else args
        # an optimizer step takes a global batch: every process's batch, every accumulation step
        accumulation = max(1, args.gradient_accumulation_steps)
        batch = args.per_device_train_batch_size * args.world_size * accumulation
        epochs = int(math.ceil(args.num_train_epochs))
        plan: dict[str, Any] = {"rows": rows, "batch_size": batch}
        minutes = None if budget is None else budget.minutes
        deadline = self._training_deadline() if deadline is None else deadline
        if (minutes is not None or deadline is not None) and args.max_steps <= 0 and probe:
            # every process plans with the main one's timing: DDP ranks must agree on max_steps
            seconds = self._from_main(time_steps(probe, repeats=repeats)) * accumulation
            if deadline is not None:
                left = (deadline - time.time()) / 60
                minutes = left if minutes is None else min(minutes, left)
                minutes = max(minutes, seconds / 60)
            steps = plan_steps(minutes, seconds, rows, batch, epochs=epochs)
            plan.update(seconds_per_step=round(seconds, 2), planned_steps=steps)
            logger.info(describe_plan(rows, batch, steps, seconds))
            if steps is not None:
                args.max_steps = steps
        plan["steps"] = args.max_steps if args.max_steps > 0 else math.ceil(rows / batch) * epochs
        return plan

    def _save_outcome(
        self, decision: PromotionDecision, start_state: Mapping[str, Any], keep_start: bool = True
    ) -> PromotionDecision:
        """Save the challenger to ``final/`` when promoted; else to ``challenger/``, and restore
        the starting weights (saved to ``final/`` when ``keep_start``, else ``final/`` removed).
        Returns the decision applied (``_final_decision``: never a model with NaN weights)."""
        import torch

        decision = self._final_decision(decision)
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

    def _train_measured(self, resume_from_checkpoint: bool | str | None) -> tuple[Any, Any, Any]:
        """Run ``self.trainer``, resuming as asked: ``(its output, PeakMemory, checkpoint)``.

        Afterwards ``broken_weights`` names the tensors that hold NaN or infinite values (a
        diverged run), which ``_final_decision`` never promotes."""
        checkpoint = self._checkpoint_to_resume(resume_from_checkpoint, self.output_dir)
        with PeakMemory() as memory:
            output = lock_checkpoint_loads(self.trainer).train(resume_from_checkpoint=checkpoint)
        self.broken_weights = tuple(nonfinite_tensors(self.model.named_parameters()))
        if self.broken_weights:
            logger.warning(
                "%s: training diverged: %d weight tensors hold NaN or infinite values (%s); "
                "the tuned model will not be promoted",
                type(self).__name__,
                len(self.broken_weights),
                ", ".join(self.broken_weights[:3]),
            )
        return output, memory, checkpoint

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

    # ------------------------------------------------------------------ distributed

    @property
    def is_main_process(self) -> bool:
        """Whether this process evaluates, decides and writes ``final/``, ``challenger/`` and
        ``decision.json``: always in a single process; under ``torchrun`` / ``accelerate
        launch`` only rank 0 (every rank trains).

        Example::

            result = engine.finetune()          # every process returns the same result
            if engine.is_main_process:
                print(result.format_table())    # printed once under torchrun
        """
        return self.args.process_index == 0

    def _distributed(self) -> bool:
        """Whether training runs in several processes (DDP through ``torchrun`` / ``accelerate``).

        Raises ``RuntimeError`` when the launcher started several processes but ``args``
        sees only one (on a machine without a GPU, DDP needs ``use_cpu=True``): each
        process would then train alone on all the data and write the same folders.
        """
        launched = int(os.environ.get("WORLD_SIZE") or 1)
        world = self.args.world_size
        if launched > 1 and world == 1:
            raise RuntimeError(
                f"{type(self).__name__}: the launcher started {launched} processes "
                f"(WORLD_SIZE={launched}) but args.world_size is 1, so each process would train "
                "alone; without a GPU pass use_cpu=True in args (DDP over the gloo backend), "
                "e.g. default_args(output_dir, use_cpu=True), or ragtune train ... --device cpu"
            )
        return world > 1

    def _from_main(self, value: Any) -> Any:
        """The main process's ``value`` on every process (``value`` itself in a single process)."""
        if not self._distributed():
            return value
        from torch import distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _on_main(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` run by the main process only; its return value reaches every process.

        Under DDP the other processes serve the model inference that ``fn`` asks for
        (sentence-transformers' ``distributed_evaluation``: encode/predict calls are
        sharded over the ranks), and raise too when ``fn`` raises on the main process,
        so no rank waits forever.
        """
        if not self._distributed():
            return fn(*args)

        from sentence_transformers.util.distributed import distributed_evaluation

        value = None
        with distributed_evaluation(self.model) as run:
            if run:
                value = fn(*args)
                pickle.dumps(value)  # an unpicklable value fails here, stopping the other ranks
        return self._from_main(value)

    def _same_on_every_process(self, columns: Mapping[str, Any]) -> Any:
        """``columns`` (the training rows), checked to be identical on every DDP process.

        Row selection is seeded, so the processes normally build the same rows; rows
        that differ (a dataset built differently per process, scores computed on
        different devices) are replaced by the main process's, with a warning.
        """
        if not self._distributed():
            return columns

        from torch import distributed as dist

        text = json.dumps(columns, sort_keys=True, default=str).encode("utf-8")
        digests: list[Any] = [None] * self.args.world_size
        dist.all_gather_object(digests, hashlib.sha256(text).hexdigest())
        if len(set(digests)) == 1:
            return columns
        if self.is_main_process:
            logger.warning(
                "%s: the training rows differ across the %d processes; every process trains "
                "on the main process's rows (build the dataset the same way in every process)",
                type(self).__name__,
                len(digests),
            )
        return self._from_main(columns)

    # ------------------------------------------------------------------ public

    @abstractmethod
    def finetune(self, resume_from_checkpoint: bool | str | None = None) -> Any:
        """Train, validate, decide; return a ``FinetuneResult``."""

    @abstractmethod
    def get_finetuned_model(self, **kwargs: Any) -> Any:
        """The promoted model as a LlamaIndex object."""
