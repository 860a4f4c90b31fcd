"""Which metrics are shares in [0, 1], read from their names, and the check that says so.

A rate, share or fraction, nDCG, recall, MRR, MAP, hit rate, precision, F1, accuracy,
AUC, exact match, calibration error (``ece``) and the package's citation / quote
means are bounded in [0, 1]; latencies, counts, losses, differences and custom
metrics (``custom_*``, ``answer_score``) are not. A name is split into words
(``hybrid_ndcg@10`` -> ``hybrid``, ``ndcg``, ``10``); a word that marks a quantity
(``ms``, ``count``, ``delta``, ``gain``, ``pct``, ...) makes the metric unbounded.

Example::

    from llama_index_ragtune.evaluation.metric_bounds import bounded_range, check_metric

    bounded_range("hybrid_ndcg@10"), bounded_range("latency_ms")   # ((0.0, 1.0), None)
    check_metric("ndcg@10", 73.0)   # ValueError: ... given in percent? divide by 100 (0.73)
"""

from __future__ import annotations

import math
import re

__all__ = ["bounded_range", "check_metric", "out_of_range"]

_BOUNDED_WORDS = frozenset(
    ("ndcg", "recall", "mrr", "map", "hit", "precision", "f1", "accuracy", "auc", "ece")
)
_BOUNDED_NAMES = frozenset(
    (
        "exact_match",
        "calibration_error",
        "citation_valid",
        "quote_valid",
        "citation_all",
        "contains",
    )
)
_SHARE_WORDS = frozenset(("rate", "share", "fraction"))
_UNBOUNDED_WORDS = frozenset(
    (
        "ms", "s", "sec", "secs", "seconds", "latency", "time", "count", "counts", "n", "num",
        "total", "tokens", "delta", "diff", "difference", "gain", "change", "lift",
        "improvement", "pct", "percent", "percentage", "ratio", "loss", "per", "size",
        "length", "len", "chars", "bytes", "steps", "epochs", "queries", "questions",
    )
)  # fmt: skip
_WORD = re.compile(r"[a-z0-9]+")


def bounded_range(name: str) -> tuple[float, float] | None:
    """``(0.0, 1.0)`` when the metric ``name`` is a share, else None (no bound).

    Example::

        bounded_range("answer_rate"), bounded_range("custom_bleu")   # ((0.0, 1.0), None)
    """
    lower = str(name).lower()
    if lower.endswith("_rate"):  # the evaluation format's rule since format_version 1
        return (0.0, 1.0)
    if lower.startswith("custom_"):
        return None
    words = _WORD.findall(lower)
    if not words or any(word in _UNBOUNDED_WORDS for word in words):
        return None
    if (
        words[-1] in _SHARE_WORDS
        or any(word in _BOUNDED_WORDS for word in words)
        or any(phrase in lower for phrase in _BOUNDED_NAMES)
    ):
        return (0.0, 1.0)
    return None


def out_of_range(name: str, value: float) -> str | None:
    """What is wrong with ``value`` for the metric ``name`` (None when it is in range or the
    metric has no bound): the range, and the likely fix.

    Example::

        out_of_range("recall@10", 80.0)
        # 'recall@10 is 80.0, not in [0, 1] (it is a share); given in percent? divide by 100 (0.8)'
    """
    bounds = bounded_range(name)
    if bounds is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    low, high = bounds
    if math.isnan(value) or low <= value <= high:
        return None
    message = f"{name} is {value!r}, not in [{low:g}, {high:g}] (it is a share)"
    if high < value <= 100 * high:
        return f"{message}; given in percent? divide by 100 ({value / 100:g})"
    if value < low:
        return f"{message}; a negative share: check how it was computed"
    return f"{message}; check how it was computed"


def check_metric(name: str, value: float | None, where: str = "") -> None:
    """``ValueError`` (prefixed by ``where``) when ``value`` is outside the range of ``name``.

    Example::

        check_metric("ndcg@10", 0.7)                      # fine
        check_metric("ndcg@10", 1.7, "system 'hybrid'")   # ValueError
    """
    if value is None:
        return
    problem = out_of_range(name, value)
    if problem is not None:
        raise ValueError(f"{where}: {problem}" if where else problem)
