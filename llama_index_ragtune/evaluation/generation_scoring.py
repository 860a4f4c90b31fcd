"""``GenerationScorer``: one grounded answer scored from its text and its numbered sources.

The row's keys (citations, quotes, NLI, answer quality, refusal) are defined in
:mod:`llama_index_ragtune.evaluation.generation`. ``GenerationEvaluator``, the class
to use, adds LlamaIndex responses, query engines and reports over many examples.

Example::

    from llama_index_ragtune.evaluation.generation_scoring import GenerationScorer

    row = GenerationScorer().evaluate_example(
        "Where is the Eiffel tower?", "Paris [1].", source_node_ids=["n1", "n2"],
        gold_node_ids=["n1"], gold_answers=["Paris"],
    )
    row["citation_precision"], row["exact_match"]    # (1.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from typing import Any

from llama_index_ragtune.evaluation.answers import (
    NOT_ENOUGH_INFO,
    clean_answer,
    extract_label,
    normalize_label,
    squad_contains,
    squad_exact_match,
    squad_f1,
)
from llama_index_ragtune.evaluation.entailment import EntailmentCheck, entailed
from llama_index_ragtune.grounding import (
    DEFAULT_FUZZY_THRESHOLD,
    DEFAULT_REFUSAL,
    check_quotes,
    check_refusal,
    cited_claims,
    parse_answer,
)
from llama_index_ragtune.query_engine.response_metadata import cut_claim, is_cut

__all__ = ["GenerationScorer"]


class GenerationScorer:
    """Score one answer from its text: the settings and the per-example half of
    ``GenerationEvaluator``, whose docstring lists the arguments."""

    def __init__(
        self,
        refusal: str = DEFAULT_REFUSAL,
        entailment: EntailmentCheck | Callable[[str, str], bool | float] | None = None,
        answer_metric: str | Callable[[str, list[str]], float | Mapping[str, float]] = "squad",
        entailment_threshold: float = 0.5,
        quote_threshold: float = DEFAULT_FUZZY_THRESHOLD,
    ) -> None:
        if isinstance(answer_metric, str) and answer_metric not in ("squad", "scifact"):
            raise ValueError(
                f"answer_metric must be 'squad', 'scifact' or a callable, got {answer_metric!r}."
            )
        self.refusal = check_refusal(refusal)
        self.entailment = entailment
        self.answer_metric = answer_metric
        if (
            isinstance(entailment_threshold, bool)
            or not isinstance(entailment_threshold, Real)
            or not math.isfinite(entailment_threshold)
        ):
            raise ValueError(
                f"entailment_threshold must be a finite number, got {entailment_threshold!r}."
            )
        self.entailment_threshold = float(entailment_threshold)
        if not 0.0 < quote_threshold <= 1.0:
            raise ValueError(f"quote_threshold must be in (0, 1], got {quote_threshold}.")
        self.quote_threshold = quote_threshold

    # -------------------------------------------------------------- pieces
    def _entailed(self, claim: str, text: str) -> bool:
        value = self.entailment(claim, text)  # type: ignore[misc]
        return entailed(value, self.entailment_threshold, claim)

    def _nli(
        self,
        answer: str,
        n_sources: int,
        source_texts: Sequence[str],
        cut_only: frozenset[int] = frozenset(),
    ) -> tuple[float | None, float | None]:
        """(pair-level NLI precision, claim-level NLI recall) over the answer's cited claims;
        ``cut_only``: the numbers only the cut last sentence of a truncated answer cites."""
        supported = pairs = precise = n_claims = 0
        claims = cited_claims(answer)
        if cut_only and claims:  # as served: the cut sentence's own numbers are no citations
            last, numbers = claims[-1]
            kept = tuple(n for n in numbers if n not in cut_only)
            claims = claims[:-1] + ([(last, kept)] if kept else [])
        for claim, numbers in claims:
            n_claims += 1
            valid = [n for n in numbers if 1 <= n <= n_sources]
            if valid and self._entailed(claim, "\n\n".join(source_texts[n - 1] for n in valid)):
                supported += 1
            pairs += len(numbers)  # a citation to a missing source is an imprecise pair
            precise += sum(int(self._entailed(claim, source_texts[n - 1])) for n in valid)
        if not n_claims:
            return None, None
        return precise / pairs, supported / n_claims

    def _answer_scores(
        self,
        clean: str,
        refused: bool,
        answerable: bool,
        gold_answers: list[str],
        gold_label: str | None,
        answer_text: str,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.answer_metric == "squad":
            if answerable:
                out["exact_match"] = 0.0 if refused else squad_exact_match(clean, gold_answers)
                out["f1"] = 0.0 if refused else squad_f1(clean, gold_answers)
                out["contains"] = 0.0 if refused else squad_contains(clean, gold_answers)
                out["answer_score"] = out["f1"]
        elif self.answer_metric == "scifact":
            gold = normalize_label(gold_label) if gold_label is not None else None
            if gold is None and not answerable:
                gold = NOT_ENOUGH_INFO
            if gold is None:
                raise ValueError(
                    "answer_metric='scifact' needs gold_label for answerable examples."
                )
            predicted = NOT_ENOUGH_INFO if refused else extract_label(answer_text, self.refusal)
            out["predicted_label"], out["gold_label"] = predicted, gold
            out["label_accuracy"] = float(predicted == gold)
            if answerable:
                out["answer_score"] = out["label_accuracy"]
        elif answerable:
            value = 0.0 if refused else self.answer_metric(clean, gold_answers)  # type: ignore[operator]
            if isinstance(value, Mapping):
                out.update(
                    {f"custom_{k}": _custom_value(k, v) for k, v in value.items() if k != "score"}
                )
                value = value.get("score", 0.0)
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
                raise ValueError(
                    f"the answer_metric callable returned {value!r}; it must return a finite "
                    "number (or a dict whose 'score' is one)"
                )
            out["answer_score"] = float(value)
        return out

    # --------------------------------------------------------------- public
    def evaluate_example(
        self,
        question: str,
        answer_text: str,
        source_node_ids: Sequence[str],
        gold_node_ids: Sequence[str] = (),
        gold_answers: Sequence[str] = (),
        answerable: bool = True,
        gold_label: str | None = None,
        source_texts: Sequence[str] | None = None,
        example_id: str | None = None,
        finish_reason: str | None = None,
    ) -> dict[str, Any]:
        """Score one answer; ``source_node_ids[n - 1]`` is the id of source ``[n]``.

        ``finish_reason``: why the LLM stopped (``"stop"``, ``"length"``...; see
        ``query_engine.response_metadata.finish_reason``), None when unknown. An answer cut
        by the token limit is read as served: a number only its unfinished last sentence
        cites is no citation (row keys ``truncated``, ``cut_claim``).

        ``TypeError`` naming the example for an ``answer_text`` that is not a string, an
        ``answerable`` that is not a bool (``"false"`` would read as true), a
        ``finish_reason`` that is not a string or None, and a bare string where a list is
        expected (``gold_answers="Paris"`` would be scored letter by letter).
        """
        _check_example(
            example_id or question,
            answer_text,
            answerable,
            source_node_ids=source_node_ids,
            gold_node_ids=gold_node_ids,
            gold_answers=gold_answers,
            source_texts=source_texts,
        )
        if finish_reason is not None and not isinstance(finish_reason, str):
            raise TypeError(
                f"example {example_id or question!r}: finish_reason must be the LLM's finish "
                f"reason as a string (e.g. 'stop', 'length') or None, got {finish_reason!r}"
            )
        if source_texts is not None and len(source_texts) != len(source_node_ids):
            raise ValueError(
                f"example {example_id or question!r}: {len(source_texts)} source_texts for "
                f"{len(source_node_ids)} source_node_ids; pass one text per numbered source."
            )
        n_sources = len(source_node_ids)
        # with the texts, a source's footnote quoted in the answer is not a citation (as served)
        parsed = parse_answer(answer_text, n_sources, self.refusal, source_texts=source_texts)
        refused = parsed.refused
        # cut by the token limit: a number only the unfinished last sentence cites is no
        # citation (as served: query_engine.response_metadata.fill_metadata)
        truncated = is_cut(finish_reason)
        cut = cut_claim(parsed, n_sources) if truncated else None
        cut_only = frozenset(cut["citations"]) if cut else frozenset()
        cited = [n for n in parsed.numbers if n not in cut_only]
        valid = [n for n in parsed.citations if n not in cut_only]
        invalid = list(parsed.invalid_citations)
        cited_ids = [source_node_ids[n - 1] for n in valid]
        gold = set(gold_node_ids)
        row: dict[str, Any] = {
            "id": example_id,
            "question": question,
            "answer": answer_text,
            "answerable": bool(answerable),
            "refused": refused,
            "n_sources": n_sources,
            "cited": cited,
            "cited_node_ids": cited_ids,
            "invalid_citations": invalid,
            "uncited": not refused and not valid,
            "empty": parsed.empty,
            "finish_reason": finish_reason,
            "truncated": truncated,
            "cut_claim": cut,
            "citation_valid": None if not cited else float(not invalid),
            "citation_precision": None,
            "citation_recall": None,
            "citation_recall_retrieved": None,
            "citation_hit": None,
            "citation_all": None,
            "quote_valid": None,
        }
        if answerable and gold:
            if cited:
                row["citation_precision"] = sum(1 for i in cited_ids if i in gold) / len(cited)
            hit = gold & set(cited_ids)
            row["citation_recall"] = len(hit) / len(gold)
            row["citation_hit"] = float(bool(hit))
            row["citation_all"] = float(hit == gold)
            retrieved_gold = gold & set(source_node_ids)
            row["citation_recall_retrieved"] = (
                len(hit) / len(retrieved_gold) if retrieved_gold else None
            )
        if source_texts is not None and not refused:
            checks = check_quotes(
                parsed.text, list(source_texts), fuzzy_threshold=self.quote_threshold
            )
            row["quote_checks"] = [c.to_dict() for c in checks]
            if checks:
                row["quote_valid"] = sum(c.verified for c in checks) / len(checks)
        if self.entailment is not None and source_texts is not None:
            try:
                row["nli_citation_precision"], row["nli_citation_recall"] = (
                    self._nli(answer_text, n_sources, source_texts, cut_only)
                    if answerable and not refused
                    else (None, None)
                )
            except ValueError as exc:
                raise ValueError(f"example {example_id or question!r}: {exc}") from None
        try:
            scores = self._answer_scores(
                clean_answer(answer_text),
                refused,
                answerable,
                list(gold_answers),
                gold_label,
                answer_text,
            )
        except ValueError as exc:
            raise ValueError(f"example {example_id or question!r}: {exc}") from None
        row.update(scores)
        return row

    def metric_keys(self) -> tuple[str, ...]:
        """The per-example metrics this evaluator's reports average (depends on its settings)."""
        keys = [
            "citation_valid",
            "citation_precision",
            "citation_recall",
            "citation_recall_retrieved",
            "citation_hit",
            "citation_all",
            "quote_valid",
        ]
        if self.entailment is not None:
            keys += ["nli_citation_precision", "nli_citation_recall"]
        if self.answer_metric == "squad":
            keys += ["exact_match", "f1", "contains"]
        elif self.answer_metric == "scifact":
            keys += ["label_accuracy"]
        keys.append("answer_score")
        return tuple(keys)


def _custom_value(key: Any, value: Any) -> float | None:
    """A custom metric's value: a finite number, or None (undefined: left out of its mean);
    anything else is a ``ValueError`` naming ``custom_<key>`` (a NaN made its mean NaN)."""
    if value is None:
        return None
    if not isinstance(value, Real) or not math.isfinite(value):  # True / False: 1.0 / 0.0
        raise ValueError(
            f"the answer_metric callable returned {value!r} for custom_{key}; each value of "
            "its dict must be a finite number, or None when it is undefined"
        )
    return float(value)


def _check_example(name: Any, answer_text: Any, answerable: Any, **lists: Any) -> None:
    """``TypeError`` naming the example for a non-string answer, non-bool label or bare string."""
    if not isinstance(answer_text, str):
        raise TypeError(
            f"example {name!r}: answer_text must be a string, got {type(answer_text).__name__}"
        )
    if not isinstance(answerable, bool) and not (
        getattr(getattr(answerable, "dtype", None), "kind", "") == "b"  # a NumPy bool
        or (isinstance(answerable, int) and answerable in (0, 1))
    ):
        raise TypeError(f"example {name!r}: answerable must be True or False, got {answerable!r}")
    for key, value in lists.items():
        if isinstance(value, (str, bytes)):
            raise TypeError(f"example {name!r}: {key} must be a list, got the string {value!r}")
