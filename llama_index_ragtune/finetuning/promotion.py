"""Champion / challenger: promote a tuned model only when it measurably beats the one it replaces.

Every engine (``EncoderFinetuneEngine``, ``RerankerFinetuneEngine``,
``DecoderFinetuneEngine``), the ``ragtune train`` commands, the tuning pipeline
and ``ragtune refresh`` decide with the same rule: the challenger (the tuned
model) replaces the champion (the starting model, or the part in use) only
when its validation metric is better by more than ``margin``. Otherwise the
champion stays, the decision says so plainly, and the challenger is still kept
on disk for inspection.

When both sides carry each validation query's value (``evaluation.metrics.MeanMetrics``,
what the ranking evaluators return), the decision also records the paired evidence:
how many validation queries, on how many the challenger was better / worse / equal,
and a paired bootstrap 95% interval of the mean gain; the reason says when the split is
too small to tell the two apart. The rule itself (gain > ``margin``) is unchanged.

Example::

    from llama_index_ragtune.finetuning.promotion import decide_promotion

    decision = decide_promotion({"ndcg@10": 0.317}, {"ndcg@10": 0.265}, metric="ndcg@10",
                                margin=0.005)
    decision.promoted          # False
    print(decision)            # kept the starting model: ndcg@10 0.2650 vs 0.3170 (-0.0520; ...)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from numbers import Real
from typing import Any, Literal

from llama_index_ragtune._atomic import strict_json

logger = logging.getLogger(__name__)

DEFAULT_MARGIN = 0.005
"""Default promotion margin for ranking metrics (nDCG@10): half a point.

Validation splits carved from training queries are small (tens to a few
hundred queries), so a challenger must win by more than noise-level ties."""

MIN_VALIDATION_QUERIES = 10
"""Fewer validation queries (or examples) than this and a decision says the split is too
small to tell the two models apart (the decision itself still follows the margin)."""

BOOTSTRAP_RESAMPLES = 1000
"""Resamples of the paired bootstrap interval of the mean gain (seeded: the same
per-query values always give the same interval)."""
BOOTSTRAP_SEED = 0


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
        validation_size: how many validation queries (a decoder: validation examples) the
            values were measured on; ``None`` when not known.
        wins, losses, ties: on how many validation queries the challenger was better,
            worse, equal (``None`` without per-query values, e.g. a decoder's loss).
        gain_interval: ``(low, high)``, the paired bootstrap 95% interval of the mean gain
            per query (positive = the challenger is better); ``None`` without per-query values.
    """

    promoted: bool
    metric: str
    champion: float | None
    challenger: float | None
    margin: float
    greater_is_better: bool = True
    forced: bool = False
    reason: str = ""
    validation_size: int | None = None
    wins: int | None = None
    losses: int | None = None
    ties: int | None = None
    gain_interval: tuple[float, float] | None = None

    @property
    def gain(self) -> float | None:
        """How much better the challenger is (positive = better), ``None`` without both values."""
        if self.champion is None or self.challenger is None:
            return None
        diff = self.challenger - self.champion
        if not math.isfinite(diff):
            return None
        return diff if self.greater_is_better else -diff

    @property
    def too_small_to_tell(self) -> bool:
        """Whether the validation split was too small to tell the two apart: fewer than
        ``MIN_VALIDATION_QUERIES`` queries, or a gain interval that includes 0."""
        if self.validation_size is None:
            return False
        if self.validation_size < MIN_VALIDATION_QUERIES:
            return True
        return self.gain_interval is not None and (
            self.gain_interval[0] <= 0 <= self.gain_interval[1]
        )

    def to_dict(self) -> dict[str, Any]:
        """The decision as strict JSON data (a NaN or infinite value as ``None``)."""
        return strict_json({**asdict(self), "gain": self.gain})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromotionDecision:
        """Read ``to_dict``'s output, or an older decision.json (without the evidence fields;
        a NaN value written by an older version reads as ``None``: no value)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a promotion decision must be a JSON object, got {data!r:.80}")
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        missing = [k for k in ("promoted", "metric", "champion", "challenger", "margin")
                   if k not in fields]  # fmt: skip
        if missing:
            raise ValueError(f"a promotion decision without {missing}: damaged or edited")
        for key in ("promoted", "greater_is_better", "forced"):
            # "false" read as promoted (a text is true): the damaged field is named instead
            if key in fields and not isinstance(fields[key], bool):
                raise TypeError(
                    f"a promotion decision's {key!r} must be true or false, got "
                    f"{fields[key]!r:.80}: damaged or edited"
                )
        for key in ("champion", "challenger", "margin"):
            value = fields.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, Real)):
                raise TypeError(
                    f"a promotion decision's {key!r} must be a number or null, got "
                    f"{value!r:.80}: damaged or edited"
                )
        for key in ("champion", "challenger"):
            value = fields.get(key)
            if isinstance(value, float) and not math.isfinite(value):
                fields[key] = None
        interval = fields.get("gain_interval")
        if interval is not None:
            fields["gain_interval"] = (float(interval[0]), float(interval[1]))
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
    validation_examples: int | None = None,
    queries_name: str = "validation queries",
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
        validation_examples: how many validation examples the values come from, for a
            metric without per-query values (a decoder's loss); recorded and said in
            ``reason``.
        queries_name: what ``reason`` calls the queries the values were measured on
            (e.g. ``"training queries"`` for the fusion, chosen on them).

    When ``champion`` and ``challenger`` both keep each validation query's value
    (``MeanMetrics.per_query``, as the ranking evaluators return), the decision also records
    the paired evidence (``paired_evidence``) and ``reason`` says it, with a warning when
    the split is too small to tell the two apart (``too_small_to_tell``).

    Raises ``ValueError`` when both keep per-query values but on different queries (two
    evaluations of different question sets: apples and oranges), naming some of them.

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
        if force and challenger and _nonfinite(challenger, metric):
            reason = (
                f"kept {champion_name}: the tuned model's validation {metric} is "
                f"{float(challenger[metric])!r} (its outputs are NaN or infinite), so it is never "
                "promoted, even when forced; lower the learning rate or check the training data"
            )
            return PromotionDecision(False, reason=reason, **common)
        if force:
            return PromotionDecision(
                True, forced=True, reason=f"promoted (forced): {reason}", **common
            )
        return PromotionDecision(False, reason=f"kept {champion_name}: {reason}", **common)
    if validation_examples is not None:
        common["validation_size"] = validation_examples
    common.update(_evidence_of(champion, challenger, metric, greater_is_better) or {})
    gain = (new - old) if greater_is_better else (old - new)
    evidence = PromotionDecision(False, **common)  # type: ignore[arg-type]
    unit = "validation examples" if validation_examples is not None else queries_name
    summary = (
        f"{metric} {new:.4f} vs {old:.4f} ({gain:+.4f}; margin {margin:g})"
        f"{evidence_text(evidence, unit)}"
    )
    if evidence.too_small_to_tell:
        logger.warning("promotion on %s decided%s", metric, evidence_text(evidence, unit))
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


def paired_evidence(
    champion: Mapping[str, float],
    challenger: Mapping[str, float],
    greater_is_better: bool = True,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """The paired evidence of a challenger over a champion from each validation query's value
    (``{qid: value}`` on the same queries): ``validation_size``, ``wins`` / ``losses`` /
    ``ties`` (queries where the challenger is better / worse / equal) and ``gain_interval``,
    a seeded paired bootstrap 95% interval of the mean gain (positive = better).

    Example::

        paired_evidence({"q1": 0.5, "q2": 1.0, "q3": 0.0}, {"q1": 1.0, "q2": 1.0, "q3": 0.0})
        # {'validation_size': 3, 'wins': 1, 'losses': 0, 'ties': 2, 'gain_interval': (0.0, 0.5)}
    """
    import numpy as np

    missing = sorted(set(champion) ^ set(challenger), key=str)
    if missing:
        raise ValueError(
            f"paired_evidence: the two models were scored on different queries ({len(missing)} "
            f"only on one side, e.g. {missing[:5]}); score both on the same validation queries"
        )
    if not champion:
        raise ValueError("paired_evidence: no validation query to compare the two models on")
    keys = list(champion)
    gains = np.array([challenger[k] - champion[k] for k in keys], dtype=np.float64)
    if not greater_is_better:
        gains = -gains
    if not np.isfinite(gains).all():
        bad = [k for k, g in zip(keys, gains, strict=True) if not math.isfinite(g)]
        raise ValueError(
            f"paired_evidence: queries {bad[:5]} have a NaN or infinite value; "
            "score finite models only"
        )
    tied = np.isclose(gains, 0.0, rtol=0.0, atol=1e-12)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 1_000_000 // len(gains))  # at most a million draws in memory at once
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        draws = rng.integers(0, len(gains), size=(count, len(gains)))
        means[start : start + count] = gains[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "validation_size": len(keys),
        "wins": int((~tied & (gains > 0)).sum()),
        "losses": int((~tied & (gains < 0)).sum()),
        "ties": int(tied.sum()),
        "gain_interval": (round(float(low), 12), round(float(high), 12)),
    }


def evidence_text(decision: PromotionDecision, unit: str = "validation queries") -> str:
    """What ``reason`` adds after the two values: how many ``unit`` and, with per-query
    values, the wins / losses / ties and the 95% interval; then a warning when the split is
    too small to tell the two apart. Empty without a ``validation_size``.

    Example::

        evidence_text(decision)
        # ' on 12 validation queries: better on 3, worse on 1, 8 ties; 95% interval
        #   -0.0040..+0.0160; the interval includes 0: too few validation queries to tell
        #   the two apart'
    """
    n = decision.validation_size
    if n is None:
        return ""
    text = f" on {n} {unit if n != 1 else _one(unit)}"
    if decision.wins is not None and decision.gain_interval is not None:
        low, high = decision.gain_interval
        ties = f"{decision.ties} tie" + ("" if decision.ties == 1 else "s")
        text += (
            f": better on {decision.wins}, worse on {decision.losses}, {ties}; "
            f"95% interval {low:+.4f}..{high:+.4f}"
        )
    if n < MIN_VALIDATION_QUERIES:
        text += (
            f"; fewer than {MIN_VALIDATION_QUERIES} {unit}: too few to tell the two apart "
            "(label more questions)"
        )
    elif decision.too_small_to_tell:
        text += f"; the interval includes 0: too few {unit} to tell the two apart"
    return text


def _one(unit: str) -> str:
    """``"validation queries"`` -> ``"validation query"``, ``"held-out questions"`` -> ``"held-out question"``."""
    if unit.endswith("queries"):
        return unit[: -len("queries")] + "query"
    return unit.removesuffix("s")


def _evidence_of(
    champion: Mapping[str, float] | None,
    challenger: Mapping[str, float] | None,
    metric: str,
    greater_is_better: bool,
) -> dict[str, Any] | None:
    """``paired_evidence`` of ``metric`` when both sides keep per-query values, else None."""
    old = (getattr(champion, "per_query", None) or {}).get(metric)
    new = (getattr(challenger, "per_query", None) or {}).get(metric)
    if not old or not new:
        return None
    apart = sorted(set(old) ^ set(new), key=str)
    if apart:  # two evaluations on different questions: their means do not compare either
        raise ValueError(
            f"decide_promotion: the champion and the challenger were evaluated on different "
            f"queries ({len(old)} and {len(new)} queries, {len(apart)} on one side only, e.g. "
            f"{[str(q)[:60] for q in apart[:5]]}); their {metric} values do not compare: "
            "evaluate both on the same queries"
        )
    try:
        return paired_evidence(old, new, greater_is_better)
    except ValueError as exc:  # the decision still follows the means; only the evidence is lost
        logger.warning("promotion on %s: no paired evidence: %s", metric, exc)
        return None


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
        validation_size=decision.validation_size,
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


def _nonfinite(metrics: Mapping[str, float] | None, metric: str) -> bool:
    """Whether ``metrics[metric]`` is a NaN or infinite number (not merely absent)."""
    value = metrics.get(metric) if metrics else None
    return isinstance(value, Real) and not isinstance(value, bool) and not math.isfinite(value)


def _why_missing(metrics: Mapping[str, float] | None, metric: str, who: str) -> str:
    if not metrics:
        return f"{who} has no validation metrics"
    if metric not in metrics:
        return f"{who} has no {metric} (it has {sorted(metrics)})"
    if metrics[metric] is None:
        return f"{who}'s {metric} is undefined (None)"
    return f"{who}'s {metric} is {float(metrics[metric])!r}"
