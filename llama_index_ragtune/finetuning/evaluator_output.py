"""What a user's evaluator (the engines' ``evaluator=``) must return, checked before training.

The encoder and reranker engines score the starting model with the evaluator before they
train and the tuned one after; promotion compares the two values of one metric. An evaluator
that returns no number for that metric (``None``, a text, NaN, a dict without it) used to
fail, or leave promotion impossible, only after training. ``user_metrics`` reads its output
as ``{name: float}`` and ``check_decision_value`` refuses, on the starting model, a metric
promotion cannot compare, naming what the evaluator returned.

Example::

    user_metrics("EncoderFinetuneEngine", {"val_ndcg@10": 0.5}, strip)   # {"ndcg@10": 0.5}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from llama_index_ragtune.evaluation.metrics import MeanMetrics, copy_metrics

FIX = (
    "the evaluator must return a dict of metric names to numbers (or one number), such as "
    "{'ndcg@10': 0.42}"
)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _number(owner: str, raw: Any, key: Any, value: Any) -> float:
    """``value`` as a float; ``TypeError`` naming the key and what the evaluator returned."""
    if not isinstance(value, (str, bytes, bool)) and value is not None:
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            pass
    where = f"{key!r}: " if key is not None else ""
    raise TypeError(
        f"{owner}: the evaluator returned {where}{type(value).__name__} {_shown(value)} "
        f"(whole output: {_shown(raw)}), not a number; {FIX}"
    )


def user_metrics(owner: str, raw: Any, strip: Callable[[str], str]) -> dict[str, float]:
    """A user evaluator's output as ``{metric: float}`` (keys through ``strip``, which drops
    a sentence-transformers prefix such as ``"val_"``); one number is ``{"score": it}``;
    ``MeanMetrics`` (the library's evaluators) are kept as they are, per-query values too.
    ``TypeError`` names a value that is no number, or an output that is neither."""
    if isinstance(raw, MeanMetrics):
        for key, value in raw.items():
            _number(owner, raw, key, value)
        return copy_metrics(raw)
    if isinstance(raw, Mapping):
        return {strip(str(k)): _number(owner, raw, k, v) for k, v in raw.items()}
    return {"score": _number(owner, raw, None, raw)}


def check_decision_value(
    owner: str, metrics: Mapping[str, float], metric: str, choice: str = ""
) -> None:
    """``ValueError`` when the starting model's ``metrics`` (a user evaluator's) hold no finite
    ``metric``: promotion compares that value, so the tuned model could never be promoted
    and the training time would be lost. ``choice``: how the engine's caller picks another
    metric (the encoder's ``decision_metric=``)."""
    value = metrics.get(metric)
    if value is not None and math.isfinite(value):
        return
    if value is None:
        problem = f"has no {metric!r} (it returned {sorted(metrics) or 'no metric'})"
        fix = f"return that metric{choice}" if metrics else "return at least one metric"
    else:
        problem = f"gave {metric} = {value!r} for the starting model"
        fix = "return a finite number for every model (NaN cannot be compared)"
    raise ValueError(
        f"{owner}: the evaluator {problem}, and promotion compares it: the tuned model could "
        f"never be promoted; {fix} (checked before training, so no time was spent)"
    )
