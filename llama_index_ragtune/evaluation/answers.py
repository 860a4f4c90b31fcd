"""Answer-text rules of ``GenerationEvaluator``: cleaning, SQuAD EM/F1 and SciFact labels.

Citations are read by the grammar of :mod:`llama_index_ragtune.grounding`.

Example::

    from llama_index_ragtune.evaluation.answers import clean_answer, squad_f1, extract_label

    squad_f1(clean_answer("It is in Paris [1]."), ["Paris"])     # 0.4
    extract_label('Supported [2]: "Mice lived longer."')           # 'SUPPORT'
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

from llama_index_ragtune.grounding import DEFAULT_REFUSAL, is_refusal, strip_citations

NOT_ENOUGH_INFO = "NOT ENOUGH INFO"
_LABEL_ALIASES = {
    "SUPPORT": "SUPPORT",
    "SUPPORTS": "SUPPORT",
    "SUPPORTED": "SUPPORT",
    "CONTRADICT": "CONTRADICT",
    "CONTRADICTS": "CONTRADICT",
    "CONTRADICTED": "CONTRADICT",
    "REFUTED": "CONTRADICT",
    "REFUTES": "CONTRADICT",
    "NEI": NOT_ENOUGH_INFO,
    "NOT ENOUGH INFO": NOT_ENOUGH_INFO,
    "NOINFO": NOT_ENOUGH_INFO,
}
_QUOTED_TAIL = re.compile(r'\s*:\s*["\u201c].*$', re.DOTALL)
_ANSWER_PREFIX = re.compile(r"^\s*answer\s*:\s*", re.IGNORECASE)
_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


# ---------------------------------------------------------------- text rules
def clean_answer(answer: str) -> str:
    """The answer without citation markers, a leading ``Answer:`` or a trailing ``: "quoted evidence"``."""
    text = strip_citations(answer)
    text = _ANSWER_PREFIX.sub("", text)
    text = _QUOTED_TAIL.sub("", text)
    return " ".join(text.split()).strip()


def normalize_answer(text: str) -> str:
    """Official SQuAD normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact_match(prediction: str, gold_answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer (max over golds)."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in gold_answers))


def squad_f1(prediction: str, gold_answers: Sequence[str]) -> float:
    """Official SQuAD token F1, max over gold answers (0.0 without gold answers)."""
    pred_tokens = normalize_answer(prediction).split()
    best = 0.0
    for gold in gold_answers:
        gold_tokens = normalize_answer(gold).split()
        if not pred_tokens or not gold_tokens:
            best = max(best, float(pred_tokens == gold_tokens))
            continue
        common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
        overlap = sum(common.values())
        if overlap == 0:
            continue
        precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def squad_contains(prediction: str, gold_answers: Sequence[str]) -> float:
    """1.0 when a normalised gold answer occurs (as whole words) in the normalised prediction."""
    pred = f" {normalize_answer(prediction)} "
    return float(
        any(normalize_answer(g) and f" {normalize_answer(g)} " in pred for g in gold_answers)
    )


def normalize_label(label: str | None) -> str | None:
    """``"SUPPORT"``, ``"CONTRADICT"`` or ``"NOT ENOUGH INFO"`` from common spellings (None stays None)."""
    if label is None:
        return None
    key = " ".join(label.upper().replace("_", " ").split())
    if key not in _LABEL_ALIASES:
        raise ValueError(
            f"Unknown claim label {label!r}; expected SUPPORT, CONTRADICT or NOT ENOUGH INFO."
        )
    return _LABEL_ALIASES[key]


def extract_label(answer: str, refusal: str = DEFAULT_REFUSAL) -> str | None:
    """The claim label an answer gives, read from its first word.

    The refusal sentence -> ``"NOT ENOUGH INFO"``; a first word "Supported",
    "Supports", "Support" -> ``"SUPPORT"``; "Contradicted", "Contradicts",
    "Contradict", "Refuted", "Refutes" -> ``"CONTRADICT"`` (case-insensitive,
    citation markers and an ``Answer:`` prefix ignored); otherwise None.
    """
    if is_refusal(answer, refusal):
        return NOT_ENOUGH_INFO
    words = re.findall(r"[A-Za-z]+", _ANSWER_PREFIX.sub("", strip_citations(answer)))
    if not words:
        return None
    label = _LABEL_ALIASES.get(words[0].upper())
    return label if label != NOT_ENOUGH_INFO else None
