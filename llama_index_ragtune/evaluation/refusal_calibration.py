"""Refusal calibration: how well a refusal probability separates unanswerable questions
(``refusal_auc``), the threshold that turns it into refuse / answer decisions
(``choose_refusal_threshold``, picked on held-out questions), and a logistic
combination of several refusal signals (``fit_refusal_combination``: the
decoder's P(refusal) and the encoder side's P(no answer in the sources)).

A tuned decoder's ``P(refusal | prompt)`` (``LocalChatLLM.conversation_refusal_probabilities``)
ranks questions; where to cut depends on the model and the data: DPO, for
one, can lift every probability above 0.5 while keeping the ranking. Choose
the threshold on a dev split drawn like the test data, never on the test set.

Example::

    from llama_index_ragtune.evaluation import choose_refusal_threshold
    from llama_index_ragtune.llms import LocalChatLLM

    choice = choose_refusal_threshold([0.9, 0.7, 0.6, 0.2], answerable=[False, False, True, True])
    choice.threshold                                     # 0.65: refuse at 0.7 and 0.9 only
    LocalChatLLM("runs/decoder/merged", refusal_threshold=choice.threshold)
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

OBJECTIVES = ("balanced_accuracy", "macro_f1", "refusal_f1")


def refusal_auc(refusal_probabilities: Sequence[float], answerable: Sequence[bool]) -> float | None:
    """ROC AUC of a model's refusal probability as a detector of unanswerable questions.

    1.0: every unanswerable question gets a higher refusal probability than every
    answerable one; 0.5: chance, no threshold can calibrate the refusals. None
    when one of the two groups is empty. Ties count one half (Mann-Whitney U).

    Example::

        refusal_auc([0.9, 0.2, 0.6], [False, True, True])   # 1.0
    """
    positives, negatives = _split(refusal_probabilities, answerable, "refusal_auc")
    if not positives or not negatives:
        return None
    # one pass over the sorted values (comparing every pair took minutes for 50,000
    # questions): each unanswerable question wins against the answerable ones below it
    # and half-wins against those tied with it; ``twice_wins`` keeps it in integers
    negatives = sorted(negatives)
    twice_wins = 0
    for p in positives:
        below = bisect.bisect_left(negatives, p)
        tied = bisect.bisect_right(negatives, p, lo=below) - below
        twice_wins += 2 * below + tied
    return twice_wins / 2 / (len(positives) * len(negatives))


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold and what it scored on the questions it was chosen on."""

    threshold: float
    objective: str
    score: float
    refusal_f1: float
    answer_f1: float
    over_refusal_rate: float
    n_examples: int


def choose_refusal_threshold(
    refusal_probabilities: Sequence[float],
    answerable: Sequence[bool],
    objective: str = "balanced_accuracy",
    max_over_refusal: float | None = None,
    over_refusal_confidence: float | None = None,
) -> ThresholdChoice:
    """The refusal threshold (refuse iff probability >= it) that scores best on these questions.

    ``objective``: ``"balanced_accuracy"`` (default) averages the share of
    unanswerable questions refused and the share of answerable ones answered:
    it does not depend on how many dev questions are unanswerable, so refusing
    everything and answering everything both score 0.5 and only a signal that
    separates the two classes scores more. ``"macro_f1"`` averages the F1 of
    refusing and of answering; on a dev set where most questions should be
    refused it prefers thresholds that refuse most answerable questions too.
    ``"refusal_f1"`` maximises the refusal F1 alone. Candidates are midpoints between
    consecutive distinct probabilities (plus "refuse all" and "refuse none"); ties go
    to the candidate nearest 0.5. ``max_over_refusal`` (e.g. ``0.1``) keeps only
    thresholds that refuse at most that share of the answerable questions: the operating
    point for an app that would rather answer than refuse. Answerable questions at
    probability 1.0 are refused by every threshold in [0, 1]; when they alone exceed
    the share, the thresholds refusing the fewest answerable questions compete instead.
    ``over_refusal_confidence`` (e.g. ``0.95``) makes the cap hold on new questions, not
    only on these: a threshold qualifies when the upper ``over_refusal_confidence``
    Clopper-Pearson bound of its share is within the cap (``allowed_over_refusal``). A
    share fitted on a few dozen questions is exceeded on the next ones in about a third
    of random splits (``python -m benchmarks.refusal_cap``).

    Example::

        choose_refusal_threshold([0.9, 0.3, 0.6], [False, True, True]).threshold   # 0.75
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"choose_refusal_threshold: objective must be one of {OBJECTIVES}.")
    check_max_over_refusal(max_over_refusal, "choose_refusal_threshold")
    check_over_refusal_confidence(over_refusal_confidence, "choose_refusal_threshold")
    positives, negatives = _split(refusal_probabilities, answerable, "choose_refusal_threshold")
    if not positives or not negatives:
        raise ValueError(
            "choose_refusal_threshold needs both answerable and unanswerable questions; got "
            f"{len(negatives)} answerable and {len(positives)} unanswerable."
        )
    values = sorted(set(positives + negatives))
    candidates = [values[0] / 2]  # refuse all (0 stays >= a threshold of 0)
    candidates += [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)]
    candidates.append((values[-1] + 1.0) / 2 if values[-1] < 1 else 1.0)  # refuse none
    best: ThresholdChoice | None = None
    positives, negatives = sorted(positives), sorted(negatives)
    # counted by bisection: scoring every question for every candidate took minutes for
    # 20,000 distinct probabilities
    choices = [_score(threshold, positives, negatives, objective) for threshold in candidates]
    if max_over_refusal is not None and over_refusal_confidence is not None:
        max_over_refusal = allowed_over_refusal(
            len(negatives), max_over_refusal, over_refusal_confidence
        )
    if max_over_refusal is not None:  # "refuse none" refuses the answerable ones at 1.0
        max_over_refusal = max(max_over_refusal, min(c.over_refusal_rate for c in choices))
    for choice in choices:
        threshold = choice.threshold
        if max_over_refusal is not None and choice.over_refusal_rate > max_over_refusal + 1e-12:
            continue
        if (
            best is None
            or choice.score > best.score + 1e-12
            or (
                abs(choice.score - best.score) <= 1e-12
                and abs(threshold - 0.5) < abs(best.threshold - 0.5)
            )
        ):
            best = choice
    assert best is not None  # the least-refusing candidate always qualifies
    return best


def allowed_over_refusal(n_answerable: int, cap: float, confidence: float) -> float:
    """The share of ``n_answerable`` questions a threshold may refuse so that, with probability
    ``confidence``, it refuses at most ``cap`` of new answerable questions: the largest
    ``k / n`` whose one-sided Clopper-Pearson upper bound is within ``cap``, i.e.
    ``P(Binomial(n, cap) <= k) <= 1 - confidence`` (0 when even ``k = 0`` is not: too few
    questions to promise the cap, so none may be refused). Linear in ``k``.

    Example::

        allowed_over_refusal(37, 0.1, 0.95)     # 0.0: 1 refusal of 37 could be 12 % of new ones
        allowed_over_refusal(1000, 0.1, 0.95)   # 0.084
    """
    if n_answerable <= 0 or cap >= 1:
        return cap
    if cap <= 0:
        return 0.0
    log_ratio = math.log(cap) - math.log1p(-cap)
    log_pmf = n_answerable * math.log1p(-cap)  # P(X = 0)
    cdf, k = math.exp(log_pmf), -1
    while cdf <= 1 - confidence and k + 1 < n_answerable:
        k += 1  # P(X <= k) is within 1 - confidence: k refusals keep the promise
        log_pmf += math.log(n_answerable - k) - math.log(k + 1) + log_ratio
        cdf += math.exp(log_pmf)
    return max(k, 0) / n_answerable


def check_over_refusal_confidence(value: float | None, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` unless ``value`` is None or in (0, 1)."""
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 < value < 1
    ):
        raise ValueError(
            f"{where}: over_refusal_confidence must be None or a probability in (0, 1) "
            f"(e.g. 0.95), got {value!r}."
        )


def check_max_over_refusal(value: float | None, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` unless ``value`` is None or a share in [0, 1]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(
            f"{where}: max_over_refusal must be None or a share of answerable questions in "
            f"[0, 1] (e.g. 0.1), got {value!r}."
        )


def decision_scores(refused: Sequence[bool], answerable: Sequence[bool]) -> dict[str, float]:
    """Balanced accuracy, macro F1, refusal F1, answer F1 and over-refusal rate of decisions.

    Example::

        decision_scores([True, False, False], answerable=[False, True, False])["refusal_f1"]  # 0.667
    """
    if len(refused) != len(answerable):
        raise ValueError(
            f"decision_scores: {len(refused)} decisions for {len(answerable)} questions."
        )
    refused = check_flags(refused, "refused", "decision_scores")
    answerable = check_flags(answerable, "answerable", "decision_scores")
    pairs = list(zip(refused, answerable, strict=True))
    tp = sum(r and not a for r, a in pairs)  # unanswerable, refused
    fp = sum(r and a for r, a in pairs)  # answerable, refused
    fn = sum(not r and not a for r, a in pairs)
    tn = sum(not r and a for r, a in pairs)
    return _count_scores(tp, fp, fn, tn)


def _count_scores(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """``decision_scores`` from the four counts (refusals are the positive class)."""
    refusal_f1, answer_f1 = _f1(tp, fp, fn), _f1(tn, fn, fp)
    refused_share = tp / (tp + fn) if tp + fn else 0.0  # of the unanswerable questions
    answered_share = tn / (tn + fp) if tn + fp else 0.0  # of the answerable questions
    return {
        "balanced_accuracy": (refused_share + answered_share) / 2,
        "macro_f1": (refusal_f1 + answer_f1) / 2,
        "refusal_f1": refusal_f1,
        "answer_f1": answer_f1,
        "over_refusal_rate": fp / (fp + tn) if fp + tn else 0.0,
    }


def _score(
    threshold: float, positives: list[float], negatives: list[float], objective: str
) -> ThresholdChoice:
    """The scores of refusing at ``threshold``; ``positives`` / ``negatives`` sorted."""
    tp = len(positives) - bisect.bisect_left(positives, threshold)  # p >= threshold
    fp = len(negatives) - bisect.bisect_left(negatives, threshold)
    scores = _count_scores(tp, fp, len(positives) - tp, len(negatives) - fp)
    return ThresholdChoice(
        threshold=threshold,
        objective=objective,
        score=scores[objective],
        refusal_f1=scores["refusal_f1"],
        answer_f1=scores["answer_f1"],
        over_refusal_rate=scores["over_refusal_rate"],
        n_examples=len(positives) + len(negatives),
    )


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _split(
    probabilities: Sequence[float], answerable: Sequence[bool], caller: str
) -> tuple[list[float], list[float]]:
    """(probabilities of unanswerable questions, of answerable ones)."""
    if len(probabilities) != len(answerable):
        raise ValueError(
            f"{caller}: {len(probabilities)} probabilities for {len(answerable)} examples."
        )
    for i, p in enumerate(probabilities):
        if isinstance(p, (bool, str)) or not isinstance(p, Real):
            raise TypeError(f"{caller}: probability {i} must be a number in [0, 1], got {p!r}")
    labels = check_flags(answerable, "answerable", caller)
    values = [float(p) for p in probabilities]
    bad = [i for i, p in enumerate(values) if not (0.0 <= p <= 1.0)]  # NaN fails both
    if bad:
        raise ValueError(
            f"{caller}: probability {bad[0]} is {values[bad[0]]!r}, not a number in [0, 1] "
            f"({len(bad)} such); a NaN would make every threshold look the same - check the "
            "model or scorer that produced them."
        )
    positives = [p for p, a in zip(values, labels, strict=True) if not a]
    negatives = [p for p, a in zip(values, labels, strict=True) if a]
    return positives, negatives


def check_flags(values: Sequence[Any], name: str, caller: str) -> list[bool]:
    """``values`` as bools: True / False, 0 / 1 or NumPy bools; a string is a ``TypeError``
    naming its position (``bool("false")`` is True)."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{caller}: {name} must be a list of True / False, got {values!r}")
    out = []
    for i, value in enumerate(values):
        is_numpy_bool = getattr(getattr(value, "dtype", None), "kind", "") == "b"
        if not (isinstance(value, bool) or is_numpy_bool) and not (
            isinstance(value, Integral) and value in (0, 1)
        ):
            raise TypeError(
                f"{caller}: {name}[{i}] must be True or False (or 0 / 1), got {value!r}"
            )
        out.append(bool(value))
    return out


# ------------------------------------------------------------------ combination
_EPS = 1e-6
_ROUNDING = 1e-6  # how far past [0, 1] a signal may be from rounding alone


def _logit(p: float) -> float:
    p = min(max(float(p), _EPS), 1.0 - _EPS)
    return math.log(p / (1.0 - p))


@dataclass(frozen=True)
class RefusalCombination:
    """Logistic regression over the logits of several refusal signals (each in [0, 1]).

    ``P(unanswerable) = sigmoid(intercept + sum_k weights[k] * (logit(s_k) - means[k]) / scales[k])``:
    features are standardised with the ``means`` / ``scales`` of the questions
    it was fitted on. ``signals`` names them in order (e.g. ``("decoder", "answerability")``).

    Example::

        combo = RefusalCombination(("decoder",), weights=(2.0,), intercept=0.0, means=(0.0,), scales=(1.0,))
        round(combo.probability({"decoder": 0.5}), 2)     # 0.5
    """

    signals: tuple[str, ...]
    weights: tuple[float, ...]
    intercept: float
    means: tuple[float, ...]
    scales: tuple[float, ...]
    n_examples: int = 0
    l2: float = 1.0

    def probability(self, values: Mapping[str, float]) -> float:
        """The combined P(unanswerable) for one question's signal ``values`` (a dict by name)."""
        missing = [s for s in self.signals if s not in values]
        if missing:
            raise KeyError(
                f"RefusalCombination needs the signals {list(self.signals)}; missing {missing}."
            )
        for name in self.signals:  # a NaN was clamped to 0.0: "never refuse"
            _check_signal(values[name], f"RefusalCombination.probability: signal {name!r}")
        z = self.intercept + sum(
            w * (_logit(values[s]) - m) / sc
            for s, w, m, sc in zip(self.signals, self.weights, self.means, self.scales, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def to_dict(self) -> dict:
        """A JSON-ready dict (``from_dict`` rebuilds it)."""
        return {
            "signals": list(self.signals),
            "weights": list(self.weights),
            "intercept": self.intercept,
            "means": list(self.means),
            "scales": list(self.scales),
            "n_examples": self.n_examples,
            "l2": self.l2,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> RefusalCombination:
        """Rebuild a combination written by ``to_dict``; ``ValueError`` naming the field for
        lists of other lengths than ``signals``, a value that is not a finite number, or a
        scale <= 0 (were a bare ``zip()`` error, a ``ZeroDivisionError``, or a NaN weight
        that made every probability 0.0)."""
        signals = data["signals"]
        if isinstance(signals, str) or not all(isinstance(name, str) for name in signals):
            raise ValueError(
                f"RefusalCombination: signals must be a list of names, got {signals!r}"
            )
        fields = {
            key: _finite_list(data, key, len(signals)) for key in ("weights", "means", "scales")
        }
        bad_scale = [i for i, scale in enumerate(fields["scales"]) if scale <= 0]
        if bad_scale:
            raise ValueError(
                f"RefusalCombination: scales[{bad_scale[0]}] is {fields['scales'][bad_scale[0]]!r}; "
                "a scale is a standard deviation > 0 (refit the combination)"
            )
        return cls(
            signals=tuple(signals),
            weights=fields["weights"],
            intercept=_finite(data["intercept"], "intercept"),
            means=fields["means"],
            scales=fields["scales"],
            n_examples=int(data.get("n_examples", 0)),
            l2=_finite(data.get("l2", 1.0), "l2"),
        )


def _finite(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"RefusalCombination: {field} must be a finite number, got {value!r}")
    return float(value)


def _finite_list(data: Mapping, key: str, n: int) -> tuple[float, ...]:
    values = data[key]
    if isinstance(values, (str, bytes)) or len(values) != n:
        raise ValueError(
            f"RefusalCombination: {key} must hold one number per signal ({n}), got {values!r}"
        )
    return tuple(_finite(value, f"{key}[{i}]") for i, value in enumerate(values))


def _check_signal(value: Any, where: str) -> float:
    """A refusal signal's value: a number in [0, 1], give or take float rounding (``1 - p``
    of a float32 probability); ``ValueError`` / ``TypeError`` naming ``where`` otherwise."""
    if isinstance(value, (bool, str)) or not isinstance(value, Real):
        raise TypeError(f"{where} must be a number in [0, 1], got {value!r}")
    if not -_ROUNDING <= value <= 1.0 + _ROUNDING:  # NaN fails too
        raise ValueError(f"{where} is {value!r}, not a number in [0, 1]")
    return float(value)


def _logistic(x, y, l2: float, iterations: int):
    """L2-penalised logistic regression by Newton's method (column 0: the unpenalised intercept)."""
    import numpy as np

    beta = np.zeros(x.shape[1])
    penalty = np.diag([0.0] + [l2] * (x.shape[1] - 1))
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -700, 700)))
        gradient = x.T @ (p - y) + penalty @ beta
        hessian = (x * (p * (1 - p))[:, None]).T @ x + penalty + 1e-9 * np.eye(len(beta))
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    return beta


def fit_refusal_combination(
    signals: Mapping[str, Sequence[float]],
    answerable: Sequence[bool],
    l2: float = 1.0,
    iterations: int = 50,
    monotone: bool = True,
) -> RefusalCombination:
    """Fit a logistic regression predicting "unanswerable" from the logits of ``signals``.

    ``signals`` maps each signal's name to one value in [0, 1] per question,
    higher = more likely to refuse (the decoder's P(refusal sentence), the
    encoder's P(no answer) = 1 - P(answerable)). Newton's method with an L2
    penalty ``l2`` on the weights (not the intercept), on standardised logits.
    Fit on held-out training questions (dev), then choose the threshold of the
    combined probability on the same questions with :func:`choose_refusal_threshold`.
    ``monotone`` (default): every signal is oriented "higher = refuse", so a fit that
    gives one a negative weight is fitting noise; that signal's weight is set to 0 and
    the others are fitted again (until no weight is negative).

    Example::

        combo = fit_refusal_combination(
            {"decoder": [0.9, 0.6, 0.4, 0.1], "answerability": [0.8, 0.7, 0.2, 0.3]},
            answerable=[False, False, True, True],
        )
        combo.probability({"decoder": 0.9, "answerability": 0.8}) > 0.5    # True
    """
    import numpy as np

    if not isinstance(signals, Mapping):
        raise TypeError(
            "fit_refusal_combination: signals must be a dict {name: [one value per question]}, "
            f"got {type(signals).__name__}"
        )
    names = tuple(signals)
    if not names:
        raise ValueError("fit_refusal_combination: pass at least one signal.")
    answerable = check_flags(answerable, "answerable", "fit_refusal_combination")
    n = len(answerable)
    for name in names:
        if isinstance(signals[name], (str, bytes)) or len(signals[name]) != n:
            raise ValueError(
                f"fit_refusal_combination: signal {name!r} has {len(signals[name])} values for "
                f"{n} questions; pass one value per question."
            )
        for i, value in enumerate(signals[name]):  # a NaN made every weight NaN
            _check_signal(value, f"fit_refusal_combination: signal {name!r}[{i}]")
    if isinstance(l2, bool) or not isinstance(l2, Real) or not math.isfinite(l2):
        raise ValueError(f"fit_refusal_combination: l2 must be a finite number >= 0, got {l2!r}.")
    y = np.array([0.0 if a else 1.0 for a in answerable])
    if n == 0 or y.min() == y.max():
        raise ValueError(
            "fit_refusal_combination needs both answerable and unanswerable questions; got "
            f"{int((y == 0).sum())} answerable and {int((y == 1).sum())} unanswerable."
        )
    if l2 < 0:
        raise ValueError(f"fit_refusal_combination: l2 must be >= 0, got {l2}.")
    raw = np.array([[_logit(v) for v in signals[name]] for name in names]).T
    means = raw.mean(axis=0)
    scales = raw.std(axis=0)
    scales[scales < 1e-9] = 1.0
    x = np.hstack([np.ones((n, 1)), (raw - means) / scales])
    active = list(range(len(names)))
    while True:
        columns = [0] + [k + 1 for k in active]
        fitted = _logistic(x[:, columns], y, l2, iterations)
        beta = np.zeros(x.shape[1])
        beta[columns] = fitted
        negative = [k for k in active if beta[k + 1] < 0]
        if not monotone or not negative:
            break
        active.remove(min(negative, key=lambda k: beta[k + 1]))  # the most negative goes
    return RefusalCombination(
        signals=names,
        weights=tuple(float(b) for b in beta[1:]),
        intercept=float(beta[0]),
        means=tuple(float(m) for m in means),
        scales=tuple(float(s) for s in scales),
        n_examples=n,
        l2=float(l2),
    )
