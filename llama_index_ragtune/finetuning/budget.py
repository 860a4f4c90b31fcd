"""Training cost bounded by a budget, not by the number of positives.

A domain with dozens of judged positives per query (BEIR NFCorpus has about
40) gives one training row per (query, positive) pair: 110k rows, about 20
hours of CPU for a bi-encoder. ``TrainingBudget`` caps what an engine trains
on and for how long:

- ``max_pairs_per_query``: the strongest positives of each query (highest
  grade first, ties in a seeded random order);
- ``max_pairs``: a total cap, filled round-robin over the queries (every query
  gets its best positive before any query gets a second one), so the rows
  cover the queries evenly;
- ``minutes``: a wall-clock budget for the training loop. The engine times two
  probe steps on real rows before it trains, plans ``max_steps`` so that the
  run fits (``plan_steps``), and ``TimeBudgetCallback`` stops the trainer if it
  runs over anyway (a slower machine, other load).

Example::

    from llama_index_ragtune.finetuning.budget import TrainingBudget, select_positives

    budget = TrainingBudget(max_pairs=2000, max_pairs_per_query=4, minutes=10)
    positives = select_positives(train, budget, seed=0)      # {qid: [doc ids, strongest first]}
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

if TYPE_CHECKING:
    from llama_index_ragtune.data.schema import RetrievalDataset

logger = logging.getLogger(__name__)

MAX_MINUTES = 1_000_000
"""Most minutes a budget or a time limit may be (about 694 days): a larger number (``1e308``)
passes as finite but becomes infinite seconds when an engine plans its steps (an
``OverflowError`` after the index and the training data were built)."""


@dataclass(frozen=True)
class TrainingBudget:
    """How much an engine may train (``None`` = no cap of that kind).

    Args:
        max_pairs: total (query, positive) pairs, i.e. training rows.
        max_pairs_per_query: positives used per query, strongest first.
        minutes: wall-clock minutes for the training loop (evaluation excluded).
    """

    max_pairs: int | None = None
    max_pairs_per_query: int | None = None
    minutes: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_pairs", "max_pairs_per_query"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(
                    f"TrainingBudget.{name} must be a whole number >= 1, got {value!r}"
                )
        if self.minutes is not None and (
            isinstance(self.minutes, bool)
            or not isinstance(self.minutes, (int, float))
            or not (math.isfinite(self.minutes) and 0 < self.minutes <= MAX_MINUTES)
        ):
            raise ValueError(
                f"TrainingBudget.minutes must be a number > 0 and at most {MAX_MINUTES} (about "
                f"694 days), got {self.minutes!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def select_positives(
    dataset: RetrievalDataset,
    budget: TrainingBudget | None = None,
    seed: int = 0,
    min_grade: int = 1,
    top_grade_only: bool = False,
) -> dict[str, list[str]]:
    """``{qid: positive doc ids}`` to train on, strongest first, within ``budget``.

    Grades come from ``dataset.grades`` (a positive without a grade counts as grade
    1). Positives below ``min_grade`` are left out; with ``top_grade_only`` so are
    those below the query's own best grade (a weak "on topic" positive next to a
    strong one teaches the encoder to prefer passages that do not answer). A query
    left without any positive is dropped. Queries keep their order in ``dataset``.
    """
    grades: Mapping[str, Mapping[str, int]] = dataset.grades
    per_query = budget.max_pairs_per_query if budget else None
    ranked: dict[str, list[str]] = {}
    for qid in dataset.query_ids:
        graded = grades.get(qid, {})
        positives = [d for d in dataset.relevant_docs[qid] if graded.get(d, 1) >= min_grade]
        if top_grade_only and positives:
            best = max(graded.get(d, 1) for d in positives)
            positives = [d for d in positives if graded.get(d, 1) == best]
        rng = random.Random(f"{seed}:{qid}")
        rng.shuffle(positives)
        positives.sort(key=lambda d: -graded.get(d, 1))  # stable: ties stay shuffled
        if per_query is not None:
            positives = positives[:per_query]
        if positives:
            ranked[qid] = positives
    total = budget.max_pairs if budget else None
    if total is None or sum(len(p) for p in ranked.values()) <= total:
        return ranked
    return _round_robin(ranked, total, seed)


def _round_robin(ranked: dict[str, list[str]], total: int, seed: int) -> dict[str, list[str]]:
    """Take positives level by level (every query's 1st, then 2nd...) in a seeded query order."""
    order = list(ranked)
    random.Random(seed).shuffle(order)
    picked: dict[str, list[str]] = {q: [] for q in order}
    level, taken = 0, 0
    while taken < total:
        progressed = False
        for qid in order:
            if level < len(ranked[qid]):
                picked[qid].append(ranked[qid][level])
                taken += 1
                progressed = True
                if taken == total:
                    break
        if not progressed:
            break
        level += 1
    return {q: picked[q] for q in ranked if picked[q]}


def plan_steps(
    minutes: float,
    seconds_per_step: float,
    rows: int,
    batch_size: int,
    safety: float = 0.9,
    epochs: int = 1,
) -> int | None:
    """Optimizer steps that fit ``minutes`` at ``seconds_per_step`` (``None``: all ``epochs`` fit).

    ``safety`` leaves room for logging and checkpoints.

    Example::

        plan_steps(10, seconds_per_step=20, rows=10_000, batch_size=32)   # 27
    """
    if seconds_per_step <= 0:
        return None
    total = max(1, math.ceil(rows / batch_size)) * max(1, epochs)
    fit = int(minutes * 60 * safety / seconds_per_step)
    if fit >= total:
        return None
    return max(1, fit)


def time_steps(step: Any, repeats: int = 2) -> float:
    """Seconds per call of ``step()``: the mean of ``repeats`` timed calls after the first,
    which warms up (a single call: its own time)."""
    seconds: list[float] = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    timed = seconds[1:] or seconds
    return sum(timed) / len(timed)


class TimeBudgetCallback(TrainerCallback):
    """Stop training (with a final checkpoint) once ``minutes`` of training have passed, or
    before the step that would end after ``deadline``.

    Args:
        minutes: training minutes, counted from the trainer's first step.
        deadline: a ``time.time()`` instant training must end by (e.g. a tuning run's time
            limit minus what the run still has to do after training). The callback stops
            when the mean step seen so far would no longer fit before it.

    Example::

        trainer = SentenceTransformerTrainer(..., callbacks=[TimeBudgetCallback(10)])
        TimeBudgetCallback(deadline=time.time() + 120)     # done within two minutes from now
    """

    def __init__(self, minutes: float | None = None, *, deadline: float | None = None) -> None:
        if minutes is None and deadline is None:
            raise ValueError("TimeBudgetCallback needs minutes, a deadline or both")
        if minutes is not None and minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {minutes}")
        self.minutes = minutes
        self.deadline = deadline
        self.started: float | None = None
        self.stopped_at_step: int | None = None
        self.reason: str | None = None
        self._clock_started: float | None = None
        self._first_step: int = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()
        self._clock_started = time.time()
        self._first_step = state.global_step
        return control

    def _reason(self, state: Any) -> str | None:
        if self.minutes is not None and time.perf_counter() - self.started >= self.minutes * 60:
            return f"time budget of {self.minutes:.1f} min reached"
        if self.deadline is not None:
            now = time.time()
            steps = max(1, state.global_step - self._first_step)
            per_step = (now - self._clock_started) / steps
            if now + per_step > self.deadline:
                return "the next step would end after the run's time limit allows"
        return None

    def on_step_end(self, args, state, control, **kwargs):
        if self.started is None or self.stopped_at_step is not None:
            return control
        reason = self._reason(state)
        if _on_any_process(reason is not None, args):
            self.stopped_at_step = state.global_step
            self.reason = reason or "another process reached its time budget"
            logger.warning(
                "%s at step %d of %d: stopping training",
                self.reason,
                state.global_step,
                state.max_steps,
            )
            control.should_training_stop = True
            control.should_save = True
            if args.eval_strategy != "no":
                control.should_evaluate = True
        return control


def _on_any_process(flag: bool, args: Any) -> bool:
    """``flag`` or-ed over the DDP processes (itself in a single process): ranks whose clocks
    disagree must still stop at the same step, or the others would wait for them forever."""
    if getattr(args, "world_size", 1) <= 1:
        return flag
    import torch
    from torch import distributed as dist

    if not dist.is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=args.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def describe_plan(rows: int, batch_size: int, steps: int | None, seconds_per_step: float) -> str:
    """One line for logs and the CLI: rows, steps and the expected minutes."""
    total_steps = steps if steps is not None else max(1, math.ceil(rows / batch_size))
    used_rows = min(rows, total_steps * batch_size)
    return (
        f"training plan: {used_rows} of {rows} rows, {total_steps} steps of {batch_size}, "
        f"about {total_steps * seconds_per_step / 60:.1f} min at {seconds_per_step:.1f} s/step"
    )


def sample_rows(columns: Mapping[str, Sequence[Any]], keep: int, seed: int) -> dict[str, list]:
    """A seeded random subset of ``keep`` rows of column-major ``columns`` (all rows if fewer)."""
    n = len(next(iter(columns.values()))) if columns else 0
    if keep >= n:
        return {k: list(v) for k, v in columns.items()}
    index = sorted(random.Random(seed).sample(range(n), keep))
    return {k: [v[i] for i in index] for k, v in columns.items()}
