"""How an engine plans its training: steps for the time budget, checkpoint selection, the timer.

``TrainingPlanMixin`` holds these steps of ``BaseFinetuneEngine``
(:mod:`~llama_index_ragtune.finetuning.base`); use an engine, not the mixin.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

# the engines' one logger: users and tests configure it by this name
logger = logging.getLogger("llama_index_ragtune.finetuning.base")


class TrainingPlanMixin:
    """The engines' step planning, checkpoint selection and time-budget callbacks."""

    # ------------------------------------------------------------------ planning

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

    def _budget_callbacks(self, budget: Any, label: str = "args") -> tuple[list[Any], Any]:
        """The user's callbacks, the warm-up check (its warning names ``label``, the engine
        argument holding the stage's training arguments), and a ``TimeBudgetCallback`` when
        ``budget.minutes`` or a training deadline is set."""
        from llama_index_ragtune.finetuning.budget import TimeBudgetCallback
        from llama_index_ragtune.finetuning.training_args_check import warmup_check_callback

        # a warm-up as long as the run trains at a rate near 0: said once, when it starts
        callbacks = [*self.callbacks, warmup_check_callback(type(self).__name__, label)]
        timer = None
        minutes = None if budget is None else budget.minutes
        deadline = self._training_deadline()
        if minutes is not None or deadline is not None:
            timer = TimeBudgetCallback(minutes, deadline=deadline)
            callbacks.append(timer)
        return callbacks, timer

    def _check_full_batch(self, rows: int, args: Any = None, label: str = "args") -> None:
        """``ValueError`` when ``dataloader_drop_last`` would drop every batch: fewer than
        ``rows`` than one batch of all processes (the trainer then failed after the "before"
        scores with "args.max_steps must be set to a positive value if dataloader does not have
        a length", or trained 0 steps)."""
        args = self.args if args is None else args
        if not getattr(args, "dataloader_drop_last", False):
            return
        per_device = args.per_device_train_batch_size
        batch = per_device * max(1, getattr(args, "world_size", 1))
        if rows < batch:
            raise ValueError(
                f"{type(self).__name__}: {label}.dataloader_drop_last=True drops every batch: "
                f"there are {rows} training rows, fewer than one batch of {batch} "
                f"({label}.per_device_train_batch_size={per_device}), so nothing would be "
                f"trained; lower {label}.per_device_train_batch_size to at most {rows} or set "
                f"{label}.dataloader_drop_last=False"
            )

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
        self._check_full_batch(rows, args, "args" if args is self.args else "preference_args")
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
