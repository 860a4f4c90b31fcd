"""Reliability diagrams of refusal probabilities: binned predicted probability vs observed share.

A refusal probability is calibrated when, of the questions it gives about 0.8,
about 80% should indeed be refused. ``reliability_bins`` cuts [0, 1] into
equal-width bins and reports, per bin, how many questions fell in it, their mean
predicted probability and the share that should be refused;
``expected_calibration_error`` is the count-weighted mean gap between the two.

Example::

    from llama_index_ragtune.evaluation.reliability import (
        expected_calibration_error, reliability_bins)

    probabilities, should_refuse = [0.1, 0.2, 0.8, 0.9], [0, 0, 1, 0]
    bins = reliability_bins(probabilities, should_refuse, n_bins=2)
    bins[1].count, bins[1].mean_probability, bins[1].refuse_share      # (2, 0.85, 0.5)
    expected_calibration_error(probabilities, should_refuse, n_bins=2)   # 0.25
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

__all__ = ["CalibrationBin", "expected_calibration_error", "reliability_bins"]


@dataclass(frozen=True)
class CalibrationBin:
    """Questions whose refusal probability is in [lower, upper) (the last bin includes 1.0)."""

    lower: float
    upper: float
    count: int
    mean_probability: float | None
    refuse_share: float | None


def reliability_bins(
    probabilities: Sequence[float], should_refuse: Sequence[int | bool], n_bins: int = 10
) -> list[CalibrationBin]:
    """``n_bins`` equal-width bins over [0, 1]: count, mean probability, share to refuse.

    Empty bins are kept, with ``None`` for their mean and share.

    Example::

        reliability_bins([0.05, 1.0], [0, 1], n_bins=10)[9].count     # 1
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, Integral):
        raise TypeError(f"reliability_bins: n_bins must be a whole number >= 1, got {n_bins!r}.")
    if n_bins < 1:
        raise ValueError(f"reliability_bins: n_bins must be >= 1, got {n_bins}.")
    if len(probabilities) != len(should_refuse):
        raise ValueError(
            f"reliability_bins: {len(probabilities)} probabilities for {len(should_refuse)} "
            "should_refuse flags; give one flag per question."
        )
    from llama_index_ragtune.evaluation.refusal_calibration import check_flags

    flags = check_flags(should_refuse, "should_refuse", "reliability_bins")
    members: list[list[tuple[float, int]]] = [[] for _ in range(n_bins)]
    for p, y in zip(probabilities, flags, strict=True):
        if isinstance(p, (bool, str)) or not isinstance(p, Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"reliability_bins: probability {p!r} is outside [0, 1].")
        members[min(int(p * n_bins), n_bins - 1)].append((float(p), int(bool(y))))
    bins = []
    for i, items in enumerate(members):
        n = len(items)
        bins.append(
            CalibrationBin(
                lower=i / n_bins,
                upper=(i + 1) / n_bins,
                count=n,
                mean_probability=sum(p for p, _ in items) / n if n else None,
                refuse_share=sum(y for _, y in items) / n if n else None,
            )
        )
    return bins


def expected_calibration_error(
    probabilities: Sequence[float], should_refuse: Sequence[int | bool], n_bins: int = 10
) -> float | None:
    """Count-weighted mean |mean predicted - observed share| over the bins; None for no questions.

    Example::

        expected_calibration_error([0.9, 0.9], [1, 1], n_bins=10)     # 0.1 (0.9 predicted, 1.0 seen)
    """
    if not probabilities:
        return None
    total = len(probabilities)
    return sum(
        b.count / total * abs(b.mean_probability - b.refuse_share)  # type: ignore[operator]
        for b in reliability_bins(probabilities, should_refuse, n_bins)
        if b.count
    )
