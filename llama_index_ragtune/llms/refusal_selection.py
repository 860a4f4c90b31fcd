"""Choosing the refusal policy on held-out questions, by cross-validation.

Each policy (``llms.refusal_policy``) picks its threshold on the dev questions
that maximises the balanced accuracy of refusing / answering (the mean of the
share of unanswerable questions refused and of answerable ones answered: it
does not move with the share of unanswerable dev questions, so refusing
everything scores no better than answering everything). On a few dozen questions
that maximum is optimistic: a signal that cannot tell answerable from
unanswerable questions still finds some threshold that looks good there, and
then refuses answerable questions at random. ``select_refusal_policy`` scores
every candidate the honest way - k-fold cross-validation, each fold's
decisions made by a policy fitted on the other folds - next to ``"none"``
(``NoRefusalPolicy``: every question with sources is answered), and keeps the best; ties go to the simpler candidate
(``none`` < ``decoder`` < ``answerability`` < ``combined``). With a few dozen
dev questions one split into folds is itself a coin toss (with 6 unanswerable
questions a fold holds one or two): ``repeats`` repeats the cross-validation
over differently seeded splits and averages the scores (repeated stratified
k-fold; the tuning pipeline uses 10). The winner is refitted on all dev questions.
``max_over_refusal`` caps the share of answerable questions any threshold may
refuse (off unless given); with ``over_refusal_confidence`` (e.g. 0.95) the cap holds
on new questions with that probability, not only on the dev questions
(``evaluation.refusal_calibration.allowed_over_refusal``).

Example::

    from llama_index_ragtune.llms.refusal_selection import select_refusal_policy

    selection = select_refusal_policy(
        answerable=[c.answerable for c in dev_contexts],
        decoder_probabilities=llm.conversation_refusal_probabilities(dev_messages),
        answerability=scorer(dev_questions, dev_sources),
        scorer=scorer,
    )
    selection.name, selection.scores     # e.g. 'decoder', {'none': 0.5, 'decoder': 0.61, ...}
    selection.spread                     # e.g. {'decoder': 0.04, ...}: how much the splits disagree
    CitationQueryEngine(retriever, llm=llm, refusal_policy=selection.policy)
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llama_index_ragtune.evaluation.refusal_calibration import (
    OBJECTIVES,
    check_max_over_refusal,
    check_over_refusal_confidence,
    decision_scores,
)
from llama_index_ragtune.llms.refusal_policy import (
    ANSWERABILITY,
    COMBINED,
    DECODER,
    AnswerabilityRefusalPolicy,
    CombinedRefusalPolicy,
    DecoderRefusalPolicy,
    NoRefusalPolicy,
    RefusalPolicy,
)

NONE = "none"
CANDIDATES = (NONE, DECODER, ANSWERABILITY, COMBINED)  # simplest first: ties go left


@dataclass(frozen=True)
class PolicySelection:
    """The chosen policy, its name, and every candidate's cross-validated ``objective`` on the
    dev questions, averaged over ``repeats`` splits (``details``: every decision score of
    each candidate, averaged the same way; ``spread``: the standard deviation of the
    objective over the splits)."""

    name: str
    policy: RefusalPolicy
    scores: dict[str, float]
    folds: int
    n_examples: int
    details: dict[str, dict[str, float]] = field(default_factory=dict)
    objective: str = "balanced_accuracy"
    max_over_refusal: float | None = None
    repeats: int = 1
    spread: dict[str, float] = field(default_factory=dict)
    over_refusal_confidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (the policy itself saves with ``policy.save``)."""
        return {
            "name": self.name,
            "threshold": None if self.name == NONE else self.policy.threshold,
            "objective": self.objective,
            "max_over_refusal": self.max_over_refusal,
            "over_refusal_confidence": self.over_refusal_confidence,
            "cross_validated": dict(self.scores),
            "details": {k: dict(v) for k, v in self.details.items()},
            "folds": self.folds,
            "repeats": self.repeats,
            "spread": dict(self.spread),
            "dev_questions": self.n_examples,
        }


def select_refusal_policy(
    answerable: Sequence[bool],
    decoder_probabilities: Sequence[float] | None = None,
    answerability: Sequence[float] | None = None,
    scorer: Any = None,
    folds: int = 5,
    seed: int = 0,
    objective: str = "balanced_accuracy",
    max_over_refusal: float | None = None,
    repeats: int = 1,
    over_refusal_confidence: float | None = None,
) -> PolicySelection:
    """Cross-validate every candidate the signals allow and return the best (module docstring).

    ``decoder_probabilities``: the decoder's P(refusal) per dev question (enables
    ``decoder``); ``answerability`` with its ``scorer``: the encoder side's
    P(answerable) (enables ``answerability``, and ``combined`` with the decoder's).
    ``objective``: what thresholds and candidates are scored by (``OBJECTIVES`` of
    ``evaluation.refusal_calibration``). ``max_over_refusal``: every threshold (in each
    fold and in the final fit) refuses at most that share of the answerable questions it
    is fitted on; None lifts the cap. ``over_refusal_confidence``: the cap holds on new
    questions with this probability (None: on the questions fitted on). ``repeats``: how
    many differently seeded fold splits (``seed``, ``seed + 1``, ...) the scores are
    averaged over. Raises ``ValueError`` when
    either class has fewer than two questions.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"select_refusal_policy: objective must be one of {OBJECTIVES}.")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(
            f"select_refusal_policy: repeats must be a whole number >= 1, got {repeats!r}."
        )
    check_max_over_refusal(max_over_refusal, "select_refusal_policy")
    check_over_refusal_confidence(over_refusal_confidence, "select_refusal_policy")
    n = len(answerable)
    for name, values in (
        ("decoder_probabilities", decoder_probabilities),
        ("answerability", answerability),
    ):
        if values is not None and len(values) != n:
            raise ValueError(
                f"select_refusal_policy: {len(values)} {name} for {n} questions; pass one per question."
            )
    if answerability is not None and scorer is None:
        raise ValueError("select_refusal_policy: answerability needs the scorer that produced it.")
    labels = [bool(a) for a in answerable]
    smallest = min(labels.count(True), labels.count(False))
    if smallest < 2:
        raise ValueError(
            "select_refusal_policy needs at least two answerable and two unanswerable dev "
            f"questions; got {labels.count(True)} answerable and {labels.count(False)} unanswerable."
        )
    k = max(2, min(folds, smallest))
    fitters = _fitters(
        decoder_probabilities,
        answerability,
        scorer,
        objective,
        max_over_refusal,
        over_refusal_confidence,
    )
    runs: dict[str, list[dict[str, float]]] = {}
    for repeat in range(repeats):
        fold_of = _stratified_folds(labels, k, seed + repeat)
        for name in CANDIDATES:
            if name == NONE:
                refused = [False] * n
            elif name in fitters:
                refused = [False] * n
                for fold in range(k):
                    train = [i for i in range(n) if fold_of[i] != fold]
                    policy = fitters[name](train, [labels[i] for i in train])
                    for i in (i for i in range(n) if fold_of[i] == fold):
                        refused[i] = _refuses(policy, i, decoder_probabilities, answerability)
            else:
                continue
            runs.setdefault(name, []).append(decision_scores(refused, labels))
    details = {
        name: {key: statistics.fmean(r[key] for r in rs) for key in rs[0]}
        for name, rs in runs.items()
    }
    scores = {name: details[name][objective] for name in details}
    spread = {name: statistics.pstdev(r[objective] for r in rs) for name, rs in runs.items()}
    best = max(scores, key=lambda name: (round(scores[name], 12), -CANDIDATES.index(name)))
    policy = NoRefusalPolicy() if best == NONE else fitters[best](list(range(n)), labels)
    return PolicySelection(
        best,
        policy,
        scores,
        k,
        n,
        details,
        objective,
        max_over_refusal,
        repeats,
        spread,
        over_refusal_confidence,
    )


def _fitters(
    decoder: Sequence[float] | None,
    answerability: Sequence[float] | None,
    scorer: Any,
    objective: str,
    max_over_refusal: float | None,
    over_refusal_confidence: float | None,
) -> dict[str, Any]:
    """name -> fit(row indices, their labels) for every candidate the signals allow."""
    options = {
        "objective": objective,
        "max_over_refusal": max_over_refusal,
        "over_refusal_confidence": over_refusal_confidence,
    }

    def pick(values: Sequence[float], rows: list[int]) -> list[float]:
        return [float(values[i]) for i in rows]

    fitters: dict[str, Any] = {}
    if decoder is not None:
        fitters[DECODER] = lambda rows, labels: DecoderRefusalPolicy.fit(
            pick(decoder, rows), labels, **options
        )
    if answerability is not None:
        fitters[ANSWERABILITY] = lambda rows, labels: AnswerabilityRefusalPolicy.fit(
            scorer, pick(answerability, rows), labels, **options
        )
    if decoder is not None and answerability is not None:
        fitters[COMBINED] = lambda rows, labels: CombinedRefusalPolicy.fit(
            scorer, pick(decoder, rows), pick(answerability, rows), labels, **options
        )
    return fitters


def _refuses(
    policy: RefusalPolicy,
    i: int,
    decoder: Sequence[float] | None,
    answerability: Sequence[float] | None,
) -> bool:
    """The fitted ``policy``'s decision for question ``i`` from the precomputed signals."""
    values: dict[str, float] = {}
    if decoder is not None:
        values[DECODER] = float(decoder[i])
    if answerability is not None:
        values[ANSWERABILITY] = 1.0 - float(answerability[i])
    if isinstance(policy, CombinedRefusalPolicy):
        values[COMBINED] = policy.combination.probability(values)
    return values[policy.signal] >= policy.threshold


def _stratified_folds(labels: Sequence[bool], k: int, seed: int) -> list[int]:
    """A fold number per question; each class dealt round-robin after a seeded shuffle."""
    fold_of = [0] * len(labels)
    rng = random.Random(seed)
    for value in (True, False):
        members = [i for i, a in enumerate(labels) if a == value]
        rng.shuffle(members)
        for j, i in enumerate(members):
            fold_of[i] = j % k
    return fold_of
