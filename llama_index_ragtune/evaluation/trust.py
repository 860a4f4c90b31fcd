"""A Trust-Score-style aggregate: one number for grounded answering, with its three parts.

After Song et al. (2024), *Measuring and Enhancing Trustworthiness of LLMs in
RAG through Grounded Attributions and Learning to Refuse*: a trustworthy
grounded model refuses exactly when the sources lack the answer, answers
correctly when it answers, and cites the right sources. Each part is an F1 in
[0, 1]; the score is their mean:

- ``trust_refusal``: macro F1 of refusing the unanswerable questions and
  answering the answerable ones (refusing everything scores at most 0.5);
- ``trust_answer``: F1 of answer precision (summed ``answer_score`` of
  answered answerable questions over every answered question: an answer to an
  unanswerable one counts 0) and answer recall (the same sum over the
  answerable questions);
- ``trust_citation``: F1 of the mean citation precision and the mean citation
  recall (``GenerationEvaluator``'s id-based definitions; a model that never
  cites scores 0).

Example::

    from llama_index_ragtune.evaluation.trust import trust_score

    rows = [
        {"answerable": True, "refused": False, "answer_score": 1.0,
         "citation_precision": 1.0, "citation_recall": 1.0},
        {"answerable": False, "refused": True},
    ]
    trust_score(rows)["trust_score"]      # 1.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

PARTS = ("trust_refusal", "trust_answer", "trust_citation")


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def trust_score(rows: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """``trust_score`` and its parts (module docstring) over ``GenerationEvaluator`` rows.

    A part is None when it is undefined (e.g. no answerable question); the score
    is the mean of the defined parts, None when none is.

    Example::

        trust_score(report.rows)    # {'trust_score': 0.61, 'trust_refusal': ..., ...}
    """
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    tp = sum(1 for r in unanswerable if r["refused"])  # refused, should refuse
    fp = sum(1 for r in answerable if r["refused"])  # refused, should answer
    fn = len(unanswerable) - tp
    tn = len(answerable) - fp
    refusal = None
    if answerable and unanswerable:
        refuse_f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        answer_f1 = 2 * tn / (2 * tn + fn + fp) if tn else 0.0
        refusal = (refuse_f1 + answer_f1) / 2
    answer = None
    if answerable:
        answered = [r for r in rows if not r["refused"]]
        correct = sum(float(r.get("answer_score") or 0.0) for r in answerable if not r["refused"])
        precision = correct / len(answered) if answered else 0.0
        answer = _f1(precision, correct / len(answerable))
    citation = None
    if answerable:
        recalls = [
            float(r["citation_recall"]) for r in answerable if r.get("citation_recall") is not None
        ]
        precisions = [
            float(r["citation_precision"])
            for r in answerable
            if r.get("citation_precision") is not None
        ]
        if recalls:
            citation = _f1(_mean(precisions) or 0.0, _mean(recalls))
    parts = {"trust_refusal": refusal, "trust_answer": answer, "trust_citation": citation}
    defined = [v for v in parts.values() if v is not None]
    return {"trust_score": _mean(defined), **parts}
