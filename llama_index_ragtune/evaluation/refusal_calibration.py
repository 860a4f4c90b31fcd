"""Refusal calibration: how well a refusal probability separates unanswerable questions
(``refusal_auc``), and the threshold that turns it into refuse / answer decisions
(``choose_refusal_threshold``, picked on held-out questions).

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

from collections.abc import Sequence
from dataclasses import dataclass

OBJECTIVES = ("macro_f1", "refusal_f1")


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
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


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
    objective: str = "macro_f1",
) -> ThresholdChoice:
    """The refusal threshold (refuse iff probability >= it) that scores best on these questions.

    ``objective``: ``"macro_f1"`` (default) averages the F1 of refusing the
    unanswerable questions and the F1 of answering the answerable ones, so
    neither side wins by default when the classes are unbalanced (refusing
    everything scores at most 0.5); ``"refusal_f1"`` maximises the refusal F1
    alone. Candidates are midpoints between consecutive distinct probabilities
    (plus "refuse all" and "refuse none"); ties go to the candidate nearest 0.5.

    Example::

        choose_refusal_threshold([0.9, 0.3, 0.6], [False, True, True]).threshold   # 0.75
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"choose_refusal_threshold: objective must be one of {OBJECTIVES}.")
    positives, negatives = _split(refusal_probabilities, answerable, "choose_refusal_threshold")
    if not positives or not negatives:
        raise ValueError(
            "choose_refusal_threshold needs both answerable and unanswerable questions; got "
            f"{len(negatives)} answerable and {len(positives)} unanswerable."
        )
    values = sorted(set(refusal_probabilities))
    candidates = [values[0] / 2]  # refuse all (0 stays >= a threshold of 0)
    candidates += [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)]
    candidates.append((values[-1] + 1.0) / 2 if values[-1] < 1 else 1.0)  # refuse none
    best: ThresholdChoice | None = None
    for threshold in candidates:
        choice = _score(threshold, positives, negatives, objective)
        if (
            best is None
            or choice.score > best.score + 1e-12
            or (
                abs(choice.score - best.score) <= 1e-12
                and abs(threshold - 0.5) < abs(best.threshold - 0.5)
            )
        ):
            best = choice
    return best  # type: ignore[return-value]


def _score(
    threshold: float, positives: list[float], negatives: list[float], objective: str
) -> ThresholdChoice:
    tp = sum(p >= threshold for p in positives)  # unanswerable, refused
    fp = sum(n >= threshold for n in negatives)  # answerable, refused
    fn = len(positives) - tp
    tn = len(negatives) - fp
    refusal_f1 = _f1(tp, fp, fn)
    answer_f1 = _f1(tn, fn, fp)
    score = refusal_f1 if objective == "refusal_f1" else (refusal_f1 + answer_f1) / 2
    return ThresholdChoice(
        threshold=threshold,
        objective=objective,
        score=score,
        refusal_f1=refusal_f1,
        answer_f1=answer_f1,
        over_refusal_rate=fp / len(negatives),
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
    positives = [float(p) for p, a in zip(probabilities, answerable, strict=True) if not a]
    negatives = [float(p) for p, a in zip(probabilities, answerable, strict=True) if a]
    return positives, negatives
