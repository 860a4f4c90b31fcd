"""Numbers in a trainer's arguments that would waste or break a run, refused when an engine
is built.

A learning rate of NaN or below zero fails only when the optimizer is made (after the
model, the index and the "before" scores), an infinite one trains a model of NaN weights,
a NaN epoch count or warmup ratio fails as "cannot convert float NaN to integer", a batch
size of 0 or zero gradient-accumulation steps fail mid-run; a learning rate of 0, or no
epochs and no ``max_steps``, train nothing and still spend the evaluation.
``check_training_args`` names the argument, its value and a sensible one instead.

Example::

    from llama_index_ragtune.finetuning.training_args_check import check_training_args

    check_training_args("EncoderFinetuneEngine", args)   # ValueError: ... learning_rate ...
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_training_args(owner: str, args: Any, label: str = "args") -> None:
    """``ValueError`` / ``TypeError`` naming ``label.<field>`` when a number of ``args``
    (a ``TrainingArguments``) is NaN, infinite, of the wrong type or out of range, or when
    the run would train nothing (learning rate 0; no epochs and no ``max_steps``)."""

    def fail(field: str, rule: str, example: str, why: str = "") -> None:
        value = getattr(args, field, None)
        error = TypeError if not _number(value) else ValueError
        raise error(
            f"{owner}: {label}.{field} must be {rule} (e.g. {example}), got "
            f"{type(value).__name__} {value!r}{why}"
        )

    rate = getattr(args, "learning_rate", None)
    if not (_number(rate) and math.isfinite(rate) and rate > 0):
        why = ": a learning rate of 0 trains nothing" if _number(rate) and rate == 0 else ""
        fail("learning_rate", "a finite number > 0", "2e-5", why)
    for field in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        value = getattr(args, field, 1)
        if not (_whole(value) and value >= 1):
            fail(field, "a whole number >= 1", "16" if "batch" in field else "1")
    max_steps = getattr(args, "max_steps", -1)
    if not _whole(max_steps):
        fail("max_steps", "a whole number (<= 0: train num_train_epochs instead)", "200")
    epochs = getattr(args, "num_train_epochs", 1)
    if not (_number(epochs) and math.isfinite(epochs) and epochs >= 0):
        fail("num_train_epochs", "a finite number >= 0", "1")
    if max_steps <= 0 and epochs == 0:
        fail(
            "num_train_epochs",
            "> 0 when max_steps is not set",
            "1",
            f" with max_steps={max_steps}: the run would train nothing",
        )
    for field, top in (("weight_decay", None), ("warmup_ratio", 1), ("warmup_steps", None)):
        value = getattr(args, field, None)
        if value is None:
            continue
        if not (_number(value) and math.isfinite(value) and value >= 0):
            fail(field, "a finite number >= 0", "0.0")
        if top is not None and value > top:
            fail(field, f"a number in [0, {top}]", "0.1")
    norm = getattr(args, "max_grad_norm", None)
    if norm is not None and not (_number(norm) and not math.isnan(norm) and norm >= 0):
        fail("max_grad_norm", "a number >= 0 (0: no clipping)", "1.0")


def check_count(owner: str, name: str, value: Any, minimum: int, example: int) -> int:
    """``value`` as an ``int`` when it is a whole number >= ``minimum`` (``3`` or ``3.0``), else
    ``TypeError`` / ``ValueError`` naming ``name``: an engine's own counts (``eval_points``,
    ``max_negatives_per_query``, ``rerank_depth``) of NaN, ``2.5``, ``True`` or ``"3"`` failed
    late (after the "before" scores) with errors naming no argument, or ran as another number.

    Example::

        check_count("EncoderFinetuneEngine", "eval_points", 2, minimum=0, example=2)   # 2
    """
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not _whole(value) or value < minimum:
        error = TypeError if not _number(value) else ValueError
        raise error(
            f"{owner}: {name} must be a whole number >= {minimum} (e.g. {example}), got "
            f"{type(value).__name__} {value!r}"
        )
    return int(value)


_NO_WARMUP_SCHEDULES = {"constant", "reduce_lr_on_plateau"}  # these never warm up


def warmup_covers_training(args: Any, total_steps: int, label: str = "args") -> str | None:
    """The warning text when the warm-up of ``args`` (a ``TrainingArguments``) lasts all of
    ``total_steps`` optimizer steps, else None: the learning rate then climbs the whole run
    and never reaches ``learning_rate`` (``warmup_steps=1e308`` trained at a rate of about 0,
    silently).

    Example::

        warmup_covers_training(TrainingArguments("out", warmup_steps=500), total_steps=120)
        # "args.warmup_steps=500 covers all 120 training steps: ..."
    """
    schedule = getattr(args, "lr_scheduler_type", "linear")
    schedule = str(getattr(schedule, "value", schedule))
    value = getattr(args, "warmup_steps", 0) or 0
    if schedule in _NO_WARMUP_SCHEDULES or not _number(value) or not math.isfinite(value):
        return None
    if not (_whole(total_steps) and total_steps >= 1) or value <= 0:
        return None
    warmup = int(value) if value >= 1 else math.ceil(total_steps * value)  # as transformers
    if warmup < total_steps:
        return None
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    steps = f"{total_steps} training step" + ("s" if total_steps != 1 else "")
    fix = (
        "warmup_steps=0 (--warmup 0): the run is too short to warm up"
        if value < 1
        else "a warm-up shorter than the run: warmup_steps=0.1 (--warmup 0.1, a tenth of it) "
        "or 0 for none"
    )
    return (
        f"{label}.warmup_steps={shown} covers all {steps}: the learning rate climbs the whole "
        f"run and never reaches its peak (learning_rate={getattr(args, 'learning_rate', '?')}), "
        f"so the model barely changes; pass {fix}"
    )


def warmup_check_callback(owner: str, label: str = "args") -> Any:
    """A ``transformers.TrainerCallback`` that logs :func:`warmup_covers_training`'s warning
    once, when training starts (the step count is known only then). Every engine adds it
    (sentence-transformers and cross-encoder trainers, TRL's SFT / DPO trainers).

    Example::

        trainer = SentenceTransformerTrainer(..., callbacks=[warmup_check_callback("Encoder")])
    """
    import logging

    from transformers import TrainerCallback

    log = logging.getLogger("llama_index_ragtune.finetuning.base")

    class WarmupCheck(TrainerCallback):
        warned = False

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            message = warmup_covers_training(args, getattr(state, "max_steps", 0), label)
            if message and not self.warned:
                self.warned = True
                log.warning("%s: %s", owner, message)

    return WarmupCheck()
