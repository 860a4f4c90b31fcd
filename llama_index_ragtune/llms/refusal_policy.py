"""Refusal policies: decide, before an answer is decoded, whether to reply with the refusal.

A policy reads refusal *signals*, each a value in [0, 1] where higher means
"refuse", and refuses when its own signal reaches its ``threshold``:

- ``"decoder"``: the decoder's P(refusal sentence | prompt), one teacher-forced
  pass (``LocalChatLLM.refusal_probabilities``): :class:`DecoderRefusalPolicy`,
  what ``LocalChatLLM(refusal_threshold=t)`` applies;
- ``"answerability"``: the encoder side's P(no source holds the answer) =
  ``1 - AnswerabilityScorer(question, sources)``: :class:`AnswerabilityRefusalPolicy`;
  it needs no decoder, so it works with any LLM;
- ``"combined"``: a logistic regression over both (``fit_refusal_combination``):
  :class:`CombinedRefusalPolicy`.

Every policy is fitted on held-out training questions (``fit``: the
combination's weights, then the threshold with the best balanced accuracy of
refusing and answering, ``choose_refusal_threshold``) and explains each decision in a
:class:`RefusalDecision` (signal, value, threshold, every signal's value),
which ``LocalChatLLM`` puts in ``response.raw["refusal_decision"]`` and
``CitationQueryEngine`` in ``response.metadata["refusal_decision"]``.

The interface is small: subclass :class:`RefusalPolicy`, set ``signal``,
``uses_decoder`` / ``uses_sources``, and implement ``signals`` (every signal's
value per question). Policies save to JSON (``save``; the scorer's model folder is
recorded, not copied) and load again with ``refusal_policy_records.load_refusal_policy``.

Example::

    from llama_index_ragtune.llms import LocalChatLLM
    from llama_index_ragtune.llms.answerability import AnswerabilityScorer
    from llama_index_ragtune.llms.refusal_policy import CombinedRefusalPolicy

    llm = LocalChatLLM("runs/decoder/merged")
    scorer = AnswerabilityScorer("runs/answerability/final")
    dev_messages = [c.messages() for c in dev_contexts]
    policy = CombinedRefusalPolicy.fit(
        scorer,
        decoder_probabilities=llm.conversation_refusal_probabilities(dev_messages),
        answerability=scorer([c.question for c in dev_contexts], [c.source_texts for c in dev_contexts]),
        answerable=[c.answerable for c in dev_contexts],
    )
    llm.refusal_policy = policy             # or CitationQueryEngine(..., refusal_policy=policy)
    policy.save("runs/decoder/refusal_policy.json")
"""

from __future__ import annotations

import json
import numbers
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from llama_index_ragtune.evaluation.refusal_calibration import (
    choose_refusal_threshold,
    fit_refusal_combination,
    refusal_auc,
)

DECODER, ANSWERABILITY, COMBINED = "decoder", "answerability", "combined"
_DESCRIPTIONS = {
    DECODER: "decoder P(refusal)",
    ANSWERABILITY: "encoder P(no source holds the answer)",
    COMBINED: "combined P(unanswerable)",
}


@dataclass(frozen=True)
class RefusalDecision:
    """One refuse / answer decision and why: ``signal`` reached (or not) ``threshold``.

    Example::

        decision = RefusalDecision(True, "decoder", 0.82, 0.5, {"decoder": 0.82})
        decision.explanation    # 'refused: decoder P(refusal) 0.82 >= threshold 0.5'
    """

    refused: bool
    signal: str
    value: float
    threshold: float
    signals: dict[str, float] = field(default_factory=dict)

    @property
    def explanation(self) -> str:
        """One line a person can read: what was decided, on which signal, value and threshold."""
        what = _DESCRIPTIONS.get(self.signal, self.signal)
        verb, op = ("refused", ">=") if self.refused else ("answered", "<")
        others = ", ".join(
            f"{_DESCRIPTIONS.get(k, k)} {v:.3g}"
            for k, v in self.signals.items()
            if k != self.signal
        )
        tail = f" ({others})" if others else ""
        return f"{verb}: {what} {self.value:.3g} {op} threshold {self.threshold:.3g}{tail}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with the ``explanation``."""
        return {
            "refused": self.refused,
            "signal": self.signal,
            "value": self.value,
            "threshold": self.threshold,
            "signals": dict(self.signals),
            "explanation": self.explanation,
        }


def _check_threshold(threshold: float, name: str) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"{name}: threshold must be a number in [0, 1], got {threshold!r}.")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"{name}: threshold must be in [0, 1], got {threshold}.")
    return float(threshold)


class RefusalPolicy(ABC):
    """Decides whether to refuse each question before its answer is decoded (module docstring).

    Subclasses set ``signal`` (the name of the value compared with ``threshold``),
    ``uses_decoder`` (needs the decoder's P(refusal)), ``uses_sources`` (needs the
    question and the source texts) and implement :meth:`signals`.

    Example::

        class NoSourcesPolicy(RefusalPolicy):
            # refuse when every source is shorter than 20 characters

            signal = "short_sources"
            uses_sources = True

            def signals(self, questions, sources, decoder_probabilities):
                return [{"short_sources": float(all(len(s) < 20 for s in texts))}
                        for texts in sources]

        NoSourcesPolicy(threshold=0.5).decide(["q"], [["tiny"]])[0].refused    # True
    """

    signal: ClassVar[str] = ""
    uses_decoder: ClassVar[bool] = False
    uses_sources: ClassVar[bool] = False

    def __init__(self, threshold: float) -> None:
        self.threshold = _check_threshold(threshold, type(self).__name__)
        self.calibration: dict[str, Any] | None = None

    @abstractmethod
    def signals(
        self,
        questions: Sequence[str],
        sources: Sequence[Sequence[str]],
        decoder_probabilities: Sequence[float] | None,
    ) -> list[dict[str, float]]:
        """Every signal's value for each question (``signal`` among them)."""

    def decide(
        self,
        questions: Sequence[str],
        sources: Sequence[Sequence[str]],
        decoder_probabilities: Sequence[float] | None = None,
    ) -> list[RefusalDecision]:
        """One decision per question: refuse when its ``signal`` value is >= ``threshold``."""
        name = type(self).__name__
        if isinstance(questions, str) or isinstance(sources, str):
            raise TypeError(
                f"{name}.decide: pass a list of questions and one list of source texts per "
                "question, not a single string."
            )
        questions, sources = list(questions), list(sources)
        if any(isinstance(texts, str) for texts in sources):
            raise TypeError(
                f"{name}.decide: each question's sources must be a list of source texts, "
                "got a single string."
            )
        if decoder_probabilities is not None:
            decoder_probabilities = list(decoder_probabilities)
            for i, p in enumerate(decoder_probabilities):
                if not _probability(p):
                    raise ValueError(
                        f"{name}.decide: decoder probability {i} is {p!r}, not a number in [0, 1]."
                    )
        if len(questions) != len(sources):
            raise ValueError(
                f"{name}.decide: {len(questions)} questions for {len(sources)} source lists."
            )
        if self.uses_decoder and decoder_probabilities is None:
            raise ValueError(
                f"{name} needs the decoder's refusal probabilities "
                "(LocalChatLLM.refusal_probabilities); pass decoder_probabilities=."
            )
        if decoder_probabilities is not None and len(decoder_probabilities) != len(questions):
            raise ValueError(
                f"{name}.decide: {len(decoder_probabilities)} decoder probabilities for "
                f"{len(questions)} questions."
            )
        rows = list(self.signals(questions, sources, decoder_probabilities))
        if len(rows) != len(questions):
            raise ValueError(
                f"{name}.decide: the signals hold {len(rows)} values for {len(questions)} "
                "questions; the scorer must return one value per question."
            )
        out = []
        for i, values in enumerate(rows):
            for signal, v in values.items():
                if not _probability(v):
                    raise ValueError(
                        f"{name}.decide: question {i} has {_DESCRIPTIONS.get(signal, signal)} = "
                        f"{v!r}; every signal must be a probability in [0, 1] (a NaN or an "
                        "out-of-range value would decide silently)."
                    )
            value = float(values[self.signal])
            out.append(
                RefusalDecision(value >= self.threshold, self.signal, value, self.threshold, values)
            )
        return out

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``load_refusal_policy`` rebuilds the policy from it)."""
        return {
            "type": type(self).__name__,
            "threshold": self.threshold,
            "calibration": self.calibration,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as strict JSON to ``path`` (folders created), atomically: a
        crash leaves the old file or the new one, never half of it; a NaN in the calibration
        (an AUC of one class) is written ``null``. Returns the path."""
        from llama_index_ragtune._atomic import atomic_write_text, strict_json

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(strict_json(self.to_dict()), indent=2, allow_nan=False) + "\n"
        atomic_write_text(path, text)
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold:.4g})"


def _choose(
    values: Sequence[float],
    answerable: Sequence[bool],
    objective: str,
    max_over_refusal: float | None,
    over_refusal_confidence: float | None,
) -> Any:
    return choose_refusal_threshold(
        values,
        answerable,
        objective=objective,
        max_over_refusal=max_over_refusal,
        over_refusal_confidence=over_refusal_confidence,
    )


class DecoderRefusalPolicy(RefusalPolicy):
    """Refuse when the decoder's P(refusal sentence) >= ``threshold`` (``LocalChatLLM(refusal_threshold=t)``).

    Example::

        DecoderRefusalPolicy(0.4).decide(["q"], [["s"]], decoder_probabilities=[0.7])[0].refused   # True
    """

    signal = DECODER
    uses_decoder = True

    def signals(self, questions, sources, decoder_probabilities):  # noqa: D102
        return [{DECODER: float(p)} for p in decoder_probabilities or []]

    @classmethod
    def fit(
        cls,
        decoder_probabilities: Sequence[float],
        answerable: Sequence[bool],
        objective: str = "balanced_accuracy",
        max_over_refusal: float | None = None,
        over_refusal_confidence: float | None = None,
    ) -> DecoderRefusalPolicy:
        """The threshold that scores best on these (dev) questions (``choose_refusal_threshold``)."""
        choice = _choose(
            decoder_probabilities, answerable, objective, max_over_refusal, over_refusal_confidence
        )
        policy = cls(choice.threshold)
        policy.calibration = _calibration(choice, decoder_probabilities, answerable)
        return policy


class AnswerabilityRefusalPolicy(RefusalPolicy):
    """Refuse when the encoder side's P(no source holds the answer) >= ``threshold``.

    Needs no decoder pass: the same decision works in front of any LLM.

    Example::

        policy = AnswerabilityRefusalPolicy(scorer, threshold=0.6)
        policy.decide(["Capital of Mars?"], [["Rome is in Italy."]])[0].explanation
        # 'refused: encoder P(no source holds the answer) 0.97 >= threshold 0.6'
    """

    signal = ANSWERABILITY
    uses_sources = True

    def __init__(self, scorer: Any, threshold: float) -> None:
        super().__init__(threshold)
        if not callable(scorer):
            raise TypeError(
                "AnswerabilityRefusalPolicy: scorer must be callable (questions, sources) -> "
                "P(answerable), e.g. an AnswerabilityScorer."
            )
        self.scorer = scorer

    def signals(self, questions, sources, decoder_probabilities):  # noqa: D102
        values = [{ANSWERABILITY: 1.0 - float(p)} for p in self.scorer(questions, sources)]
        if decoder_probabilities is not None:  # reported alongside when known
            for row, p in zip(values, decoder_probabilities, strict=True):
                row[DECODER] = float(p)
        return values

    @classmethod
    def fit(
        cls,
        scorer: Any,
        answerability: Sequence[float],
        answerable: Sequence[bool],
        objective: str = "balanced_accuracy",
        max_over_refusal: float | None = None,
        over_refusal_confidence: float | None = None,
    ) -> AnswerabilityRefusalPolicy:
        """``answerability``: the scorer's P(answerable) on dev questions; threshold as in
        ``choose_refusal_threshold``."""
        no_answer = [1.0 - float(p) for p in answerability]
        choice = _choose(
            no_answer, answerable, objective, max_over_refusal, over_refusal_confidence
        )
        policy = cls(scorer, choice.threshold)
        policy.calibration = _calibration(choice, no_answer, answerable)
        return policy

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), **_scorer_record(self.scorer)}


class CombinedRefusalPolicy(RefusalPolicy):
    """Refuse when a logistic combination of the decoder's and the encoder's signals >= ``threshold``.

    ``combination`` is a ``RefusalCombination`` over ``("decoder", "answerability")``
    (``fit`` builds it on dev questions).

    Example::

        policy = CombinedRefusalPolicy.fit(scorer, decoder_probabilities, answerability, answerable)
        policy.decide(questions, sources, decoder_probabilities=probabilities)[0].signals
        # {'decoder': 0.41, 'answerability': 0.88, 'combined': 0.79}
    """

    signal = COMBINED
    uses_decoder = True
    uses_sources = True

    def __init__(self, scorer: Any, combination: Any, threshold: float) -> None:
        super().__init__(threshold)
        if not callable(scorer):
            raise TypeError(
                "CombinedRefusalPolicy: scorer must be callable (questions, sources) -> "
                "P(answerable), e.g. an AnswerabilityScorer."
            )
        if not callable(getattr(combination, "probability", None)):
            raise TypeError(
                "CombinedRefusalPolicy: combination must be a RefusalCombination "
                f"(fit_refusal_combination), got {type(combination).__name__}."
            )
        if set(combination.signals) != {DECODER, ANSWERABILITY}:
            raise ValueError(
                f"CombinedRefusalPolicy: the combination must use the signals {DECODER!r} and "
                f"{ANSWERABILITY!r}, got {list(combination.signals)}."
            )
        self.scorer = scorer
        self.combination = combination

    def signals(self, questions, sources, decoder_probabilities):  # noqa: D102
        no_answer = [1.0 - float(p) for p in self.scorer(questions, sources)]
        out = []
        for p, q in zip(decoder_probabilities or [], no_answer, strict=True):
            row = {DECODER: float(p), ANSWERABILITY: q}
            row[COMBINED] = self.combination.probability(row)
            out.append(row)
        return out

    @classmethod
    def fit(
        cls,
        scorer: Any,
        decoder_probabilities: Sequence[float],
        answerability: Sequence[float],
        answerable: Sequence[bool],
        l2: float = 1.0,
        objective: str = "balanced_accuracy",
        max_over_refusal: float | None = None,
        over_refusal_confidence: float | None = None,
    ) -> CombinedRefusalPolicy:
        """Fit the combination and its threshold on the same dev questions.

        ``answerability`` is the scorer's P(answerable) on them (computed once by the caller).
        """
        no_answer = [1.0 - float(p) for p in answerability]
        combination = fit_refusal_combination(
            {DECODER: decoder_probabilities, ANSWERABILITY: no_answer}, answerable, l2=l2
        )
        combined = [
            combination.probability({DECODER: p, ANSWERABILITY: q})
            for p, q in zip(decoder_probabilities, no_answer, strict=True)
        ]
        choice = _choose(combined, answerable, objective, max_over_refusal, over_refusal_confidence)
        policy = cls(scorer, combination, choice.threshold)
        policy.calibration = _calibration(choice, combined, answerable)
        return policy

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            **_scorer_record(self.scorer),
            "combination": self.combination.to_dict(),
        }


def _scorer_record(scorer: Any) -> dict[str, Any]:
    """How ``load_refusal_policy`` finds the scorer again: its model folder, or its kind
    (``"similarity"``: the embedder's, passed again at load time)."""
    kind = getattr(scorer, "kind", None)
    return {"scorer": getattr(scorer, "path", None), **({"scorer_kind": kind} if kind else {})}


def _calibration(choice: Any, values: Sequence[float], answerable: Sequence[bool]) -> dict:

    return {**asdict(choice), "auc": refusal_auc(values, answerable)}


class NoRefusalPolicy(RefusalPolicy):
    """Never refuse before decoding: what ``select_refusal_policy`` keeps when no signal beats
    answering every question out of fold (the answer is decoded with the refusal barred).

    Example::

        NoRefusalPolicy().decide(["q"], [["s"]])[0].refused     # False
    """

    signal = "none"

    def __init__(self, threshold: float = 1.0) -> None:
        super().__init__(threshold)

    def signals(self, questions, sources, decoder_probabilities):  # noqa: D102
        return [{"none": 0.0} for _ in questions]


def _probability(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return 0.0 <= float(value) <= 1.0  # False for NaN


def __getattr__(name: str) -> Any:
    # the saved-record functions live in ``refusal_policy_records``; these names stay importable
    if name in ("load_refusal_policy", "check_policy_record", "POLICIES"):
        from llama_index_ragtune.llms import refusal_policy_records

        return getattr(refusal_policy_records, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
