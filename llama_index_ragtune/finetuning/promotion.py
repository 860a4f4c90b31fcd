"""Champion / challenger: promote a tuned model only when it measurably beats the one it replaces.

Every engine (``EncoderFinetuneEngine``, ``RerankerFinetuneEngine``,
``DecoderFinetuneEngine``), the ``ragtune train`` commands, the tuning pipeline
and ``ragtune refresh`` decide with the same rule: the challenger (the tuned
model) replaces the champion (the starting model, or the part in use) only
when its validation metric is better by more than ``margin``. Otherwise the
champion stays, the decision says so plainly, and the challenger is still kept
on disk for inspection.

Example::

    from llama_index_ragtune.finetuning.promotion import decide_promotion

    decision = decide_promotion({"ndcg@10": 0.317}, {"ndcg@10": 0.265}, metric="ndcg@10",
                                margin=0.005)
    decision.promoted          # False
    print(decision)            # kept the starting model: ndcg@10 0.2650 vs 0.3170 (-0.0520; ...)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from numbers import Real
from typing import Any, Literal

DEFAULT_MARGIN = 0.005
"""Default promotion margin for ranking metrics (nDCG@10): half a point.

Validation splits carved from training queries are small (tens to a few
hundred queries), so a challenger must win by more than noise-level ties."""


@dataclass(frozen=True)
class PromotionDecision:
    """Whether a challenger replaces the champion, and why.

    Attributes:
        promoted: ``True`` when the challenger won by more than ``margin``.
        metric: the validation metric compared (e.g. ``"ndcg@10"``, ``"loss"``).
        champion: the champion's value (``None`` when there was nothing to compare).
        challenger: the challenger's value.
        margin: how much better the challenger had to be.
        greater_is_better: ``False`` for losses.
        forced: the caller promoted without (or against) the validation check.
        reason: one plain sentence for logs, reports and the CLI.
    """

    promoted: bool
    metric: str
    champion: float | None
    challenger: float | None
    margin: float
    greater_is_better: bool = True
    forced: bool = False
    reason: str = ""

    @property
    def gain(self) -> float | None:
        """How much better the challenger is (positive = better), ``None`` without both values."""
        if self.champion is None or self.challenger is None:
            return None
        diff = self.challenger - self.champion
        if not math.isfinite(diff):
            return None
        return diff if self.greater_is_better else -diff

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gain": self.gain}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromotionDecision:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)

    def __str__(self) -> str:
        return self.reason


def decide_promotion(
    champion: Mapping[str, float] | None,
    challenger: Mapping[str, float] | None,
    metric: str,
    margin: float = DEFAULT_MARGIN,
    greater_is_better: bool | Literal["auto"] = "auto",
    force: bool = False,
    champion_name: str = "the starting model",
) -> PromotionDecision:
    """Compare ``challenger[metric]`` with ``champion[metric]``: promote only on a win by > ``margin``.

    Args:
        champion, challenger: validation metrics of the model in use and of the tuned one.
        metric: the key compared.
        margin: the challenger must be better by more than this (``>= 0``).
        greater_is_better: ``False`` for losses; ``"auto"`` (default) reads it from the
            metric's name: lower is better for a loss, perplexity or error
            (``evaluation.svg_charts.metric_direction``, which the report's charts use
            too), higher for anything else (nDCG, recall, AUC).
        force: promote whatever the numbers say (the decision records it as forced).
        champion_name: how the champion is named in ``reason``.

    Without a value for both (no validation split), the challenger is promoted
    only when ``force`` is true; otherwise the champion stays and ``reason``
    says that nothing could be checked.

    Example::

        decide_promotion({"eval_loss": 1.9}, {"eval_loss": 1.4}, "eval_loss").promoted   # True
    """
    if isinstance(margin, bool) or not isinstance(margin, Real):
        raise TypeError(f"margin must be a finite number >= 0, got {margin!r}")
    if margin < 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    if isinstance(greater_is_better, str) and greater_is_better == "auto":
        from llama_index_ragtune.evaluation.svg_charts import metric_direction

        greater_is_better = metric_direction(metric) >= 0
    if not isinstance(greater_is_better, bool):
        raise TypeError(
            f"greater_is_better must be True, False (for losses) or 'auto' (read from the "
            f"metric's name), got {greater_is_better!r}"
        )
    old = _value(champion, metric, "champion")
    new = _value(challenger, metric, "challenger")
    common = {
        "metric": metric,
        "champion": old,
        "challenger": new,
        "margin": margin,
        "greater_is_better": greater_is_better,
    }
    if old is None or new is None:
        missing = "; ".join(
            _why_missing(values, metric, who)
            for values, value, who in (
                (champion, old, champion_name),
                (challenger, new, "the tuned model"),
            )
            if value is None
        )
        reason = (
            f"no validation {metric} for both models ({missing}), so the tuned model could "
            "not be checked"
        )
        if force:
            return PromotionDecision(
                True, forced=True, reason=f"promoted (forced): {reason}", **common
            )
        return PromotionDecision(False, reason=f"kept {champion_name}: {reason}", **common)
    gain = (new - old) if greater_is_better else (old - new)
    summary = f"{metric} {new:.4f} vs {old:.4f} ({gain:+.4f}; margin {margin:g})"
    # better by more than margin, beyond float noise (0.30000000000000004 vs 0.3 is a tie)
    wins = gain > margin and not math.isclose(gain, margin, rel_tol=1e-9, abs_tol=1e-12)
    if force:
        won = "it won" if wins else "it did not win"
        return PromotionDecision(
            True,
            forced=True,
            reason=f"promoted the tuned model (forced; {won}): {summary}",
            **common,
        )
    if wins:
        return PromotionDecision(
            True, reason=f"promoted the tuned model over {champion_name}: {summary}", **common
        )
    return PromotionDecision(
        False,
        reason=f"kept {champion_name}: the tuned model is not better on validation: {summary}",
        **common,
    )


def refuse_broken(decision: PromotionDecision, broken: Sequence[str]) -> PromotionDecision:
    """``decision``, unless the tuned model's weights hold NaN or infinite values (``broken``
    names those tensors): then the starting model is kept, even when promotion was forced,
    and the reason says which weights diverged and what to do.

    Example::

        refuse_broken(decision, ["encoder.layer.0.weight"]).promoted   # False
    """
    if not broken:
        return decision
    names = ", ".join(broken[:3]) + (f", ... ({len(broken)} in total)" if len(broken) > 3 else "")
    champion = _champion_of(decision.reason)
    outcome = f"kept {champion}" if champion else "not promoted (forced promotion refused)"
    reason = (
        f"{outcome}: the tuned model's weights are NaN or infinite ({names}), so it is never "
        "promoted; training diverged: lower the learning rate or check the training data"
    )
    return PromotionDecision(
        False,
        metric=decision.metric,
        champion=decision.champion,
        challenger=None,
        margin=decision.margin,
        greater_is_better=decision.greater_is_better,
        forced=False,
        reason=reason,
    )


def _champion_of(reason: str) -> str | None:
    """The champion named in a ``decide_promotion`` reason ("kept X: ...", "... over X: ..."),
    None when it names none (a forced promotion)."""
    head = reason.split(":", 1)[0]
    if head.startswith("kept "):
        return head[len("kept ") :]
    if " over " in head:
        return head.split(" over ", 1)[1]
    return None


def _value(metrics: Mapping[str, float] | None, metric: str, side: str) -> float | None:
    """``metrics[metric]`` as a float; None when absent, None or not finite (NaN: a diverged run)."""
    if not metrics or metrics.get(metric) is None:
        return None
    value = metrics[metric]
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{side}[{metric!r}] must be a number, got {value!r}")
    value = float(value)
    return value if math.isfinite(value) else None


def _why_missing(metrics: Mapping[str, float] | None, metric: str, who: str) -> str:
    if not metrics:
        return f"{who} has no validation metrics"
    if metric not in metrics:
        return f"{who} has no {metric} (it has {sorted(metrics)})"
    if metrics[metric] is None:
        return f"{who}'s {metric} is undefined (None)"
    return f"{who}'s {metric} is {float(metrics[metric])!r}"
