"""``GenerationEvaluator``: citation quality, answer quality and refusal calibration of grounded answers.

Each example is one answer over numbered sources (source ``n`` has id
``source_node_ids[n - 1]``) with its gold evidence ids, gold answers and
whether it is answerable. Definitions (per example, then averaged over the
examples where the value is defined; ``None`` = undefined, left out of the mean):

Citations (parsed with ``prompts.parse_citations``; distinct numbers):

- ``citation_valid``: every cited number is within ``1..n_sources``
  (``None`` when nothing is cited).
- ``citation_precision`` (id-based): cited numbers whose source id is gold,
  over all cited numbers -- a citation to a source that does not exist counts
  as wrong. Answerable examples with at least one citation.
- ``citation_recall`` (id-based, example level): ``|cited ids ∩ gold| / |gold|``
  on answerable examples with gold ids (a refusal or an uncited answer scores 0).
- ``citation_recall_retrieved``: the same over the gold ids that were among the
  sources, ``|cited ∩ gold| / |gold ∩ sources|`` -- the decoder's share of the
  job, free of retrieval misses (``None`` when no gold source was retrieved).
- With an ``entailment`` check and ``source_texts`` (ALCE-style, claim level;
  a claim is a sentence of the answer that carries citations):
  ``nli_citation_recall`` = claims entailed by the concatenation of their cited
  sources / claims; ``nli_citation_precision`` = (claim, cited source) pairs
  where that source alone entails the claim / all pairs. Answerable, non-refused
  examples with at least one cited claim.

Answers (answerable examples; a refusal scores 0):

- ``"squad"``: official SQuAD ``exact_match`` and token ``f1`` (lowercase,
  strip punctuation, articles and extra whitespace; max over gold answers),
  plus ``contains`` (a normalised gold answer occurs in the normalised
  prediction). The prediction is the answer text after :func:`clean_answer`
  (citation markers, a leading ``Answer:`` and a trailing ``: "quoted evidence"``
  removed). ``answer_score`` = f1.
- ``"scifact"``: the label is read from the answer's first word with
  :func:`extract_label` ("Supported ..." -> SUPPORT, "Contradicted ..." ->
  CONTRADICT, the refusal -> NOT ENOUGH INFO, anything else -> None, i.e.
  wrong). ``label_correct`` is compared against ``gold_label`` on *every*
  example (an unanswerable one's gold is NOT ENOUGH INFO): ``label_accuracy``.
  ``answer_score`` = label_correct on answerable examples.
- a callable ``(clean_prediction, gold_answers) -> float | dict`` sets
  ``answer_score`` (a dict's ``"score"`` key, other keys are kept as columns).

Refusals (the unanswerable class is positive): refused & unanswerable = TP,
refused & answerable = FP, answered & unanswerable = FN. ``refusal_precision``
(None without refusals), ``refusal_recall`` (None without unanswerable
examples), ``refusal_f1`` (0 when nothing is refused); ``over_refusal_rate`` = FP / answerable
examples; ``refusal_rate`` = refusals / examples. ``uncited_rate`` = answered
(not refused) examples without any citation / answered examples.

Example::

    from llama_index_ragtune.evaluation import GenerationEvaluator

    evaluator = GenerationEvaluator(answer_metric="squad")
    row = evaluator.evaluate_example(
        "Where is the Eiffel tower?", "Paris [1].", source_node_ids=["n1", "n2"],
        gold_node_ids=["n1"], gold_answers=["Paris"], answerable=True,
    )
    row["citation_precision"], row["exact_match"]    # (1.0, 1.0)
    report = evaluator.evaluate([example_dict, ...])  # GenerationReport
    print(report.to_markdown())
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_index_ragtune.evaluation.answers import (
    _CITATION_MARK,
    NOT_ENOUGH_INFO,
    clean_answer,
    extract_label,
    normalize_answer,
    normalize_label,
    split_claims,
    squad_contains,
    squad_exact_match,
    squad_f1,
)
from llama_index_ragtune.evaluation.entailment import (
    CrossEncoderEntailment,
    EntailmentCheck,
    LLMJudgeEntailment,
)
from llama_index_ragtune.query_engine.prompts import DEFAULT_REFUSAL, is_refusal, parse_citations

__all__ = [
    "CrossEncoderEntailment", "EntailmentCheck", "GenerationEvaluator", "GenerationReport", "LLMJudgeEntailment",
    "clean_answer", "extract_label", "normalize_answer", "squad_exact_match", "squad_f1",
]

# ------------------------------------------------------------------- report
def _mean(values: Iterable[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass
class GenerationReport:
    """Per-example rows of a generation evaluation and their aggregate.

    ``rows`` are the dicts returned by ``GenerationEvaluator.evaluate_example``;
    ``aggregate`` maps each metric to its mean over the examples where it is
    defined, plus the refusal confusion counts and rates.
    """

    rows: list[dict[str, Any]]
    name: str | None = None
    metric_keys: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: str) -> Any:
        return self.aggregate[key]

    @property
    def aggregate(self) -> dict[str, Any]:
        rows = self.rows
        answerable = [r for r in rows if r["answerable"]]
        unanswerable = [r for r in rows if not r["answerable"]]
        answered = [r for r in rows if not r["refused"]]
        tp = sum(1 for r in unanswerable if r["refused"])
        fp = sum(1 for r in answerable if r["refused"])
        fn = len(unanswerable) - tp
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        if recall is None:  # no unanswerable example
            f1 = None
        elif precision is None or precision + recall == 0:  # no refusal at all -> recall is 0
            f1 = 0.0
        else:
            f1 = 2 * precision * recall / (precision + recall)
        agg: dict[str, Any] = {
            "n_examples": len(rows),
            "n_answerable": len(answerable),
            "n_unanswerable": len(unanswerable),
        }
        for key in self.metric_keys:
            agg[key] = _mean(r.get(key) for r in rows)
        agg.update(
            refusal_rate=_ratio(sum(r["refused"] for r in rows), len(rows)),
            refusal_precision=precision,
            refusal_recall=recall,
            refusal_f1=f1,
            over_refusal_rate=_ratio(fp, len(answerable)),
            uncited_rate=_ratio(sum(1 for r in answered if r["uncited"]), len(answered)),
            refusal_tp=tp,
            refusal_fp=fp,
            refusal_fn=fn,
        )
        return agg

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: name, metric keys, aggregate and every row."""
        return {"name": self.name, "metric_keys": list(self.metric_keys), "aggregate": self.aggregate,
                "rows": self.rows}

    def to_json(self, path: str | Path | None = None, indent: int | None = 2) -> str:
        """The report (aggregate and rows) as JSON; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, default=str)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, path: str | Path) -> GenerationReport:
        """Load a report saved with ``to_json(path)``."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(rows=data["rows"], name=data.get("name"), metric_keys=tuple(data.get("metric_keys", ())))

    def to_markdown(self, digits: int = 3) -> str:
        """A two-column Markdown table (metric, value); undefined metrics show as "—"."""
        lines = ["| metric | value |", "| --- | --- |"]
        for key, value in self.aggregate.items():
            if isinstance(value, float):
                cell = f"{value:.{digits}f}"
            else:
                cell = "—" if value is None else str(value)
            lines.append(f"| {key} | {cell} |")
        if self.name:
            lines.insert(0, f"**{self.name}**\n")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def to_dataframe(self) -> Any:
        """One row per example as a pandas DataFrame."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - pandas ships with datasets
            raise ImportError("to_dataframe needs pandas: `pip install pandas`") from exc
        return pd.DataFrame(self.rows)

    def compare(self, other: GenerationReport, keys: Sequence[str] | None = None, digits: int = 3) -> str:
        """A Markdown table of this report (before) against ``other`` (after), with deltas.

        Example::

            print(untuned_report.compare(tuned_report))
        """
        left, right = self.aggregate, other.aggregate
        keys = list(keys) if keys is not None else [
            k for k, v in left.items() if isinstance(v, float) or isinstance(right.get(k), float)
        ]
        names = (self.name or "before", other.name or "after")
        lines = [f"| metric | {names[0]} | {names[1]} | Δ |", "| --- | --- | --- | --- |"]
        for key in keys:
            a, b = left.get(key), right.get(key)
            fmt = (lambda v: "—" if v is None else f"{v:.{digits}f}")  # noqa: E731
            delta = f"{b - a:+.{digits}f}" if a is not None and b is not None else "—"
            lines.append(f"| {key} | {fmt(a)} | {fmt(b)} | {delta} |")
        return "\n".join(lines)




# ---------------------------------------------------------------- evaluator
class GenerationEvaluator:
    """Score grounded answers: citations, answer quality and refusal calibration (see the module docstring).

    Args:
        refusal: the refusal sentence the model was asked to use.
        entailment: optional ``(claim, source_text) -> bool | float`` check for
            the ALCE-style NLI citation metrics (e.g. :class:`CrossEncoderEntailment`
            or :class:`LLMJudgeEntailment`).
        entailment_threshold: a float score counts as "entailed" at or above it.
        answer_metric: ``"squad"``, ``"scifact"`` or a callable
            ``(clean_prediction, gold_answers) -> float | dict``.
    """

    def __init__(
        self,
        refusal: str = DEFAULT_REFUSAL,
        entailment: EntailmentCheck | Callable[[str, str], bool | float] | None = None,
        answer_metric: str | Callable[[str, list[str]], float | Mapping[str, float]] = "squad",
        entailment_threshold: float = 0.5,
    ) -> None:
        if isinstance(answer_metric, str) and answer_metric not in ("squad", "scifact"):
            raise ValueError(f"answer_metric must be 'squad', 'scifact' or a callable, got {answer_metric!r}.")
        self.refusal = refusal
        self.entailment = entailment
        self.answer_metric = answer_metric
        self.entailment_threshold = entailment_threshold

    # -------------------------------------------------------------- pieces
    def _entailed(self, claim: str, text: str) -> bool:
        value = self.entailment(claim, text)  # type: ignore[misc]
        return bool(value) if isinstance(value, bool) else float(value) >= self.entailment_threshold

    def _nli(self, answer: str, n_sources: int, source_texts: Sequence[str]) -> tuple[float | None, float | None]:
        """(pair-level NLI precision, claim-level NLI recall) over the answer's cited claims."""
        supported = pairs = precise = n_claims = 0
        for sentence in split_claims(answer):
            numbers = parse_citations(sentence)
            if not numbers:
                continue
            n_claims += 1
            claim = " ".join(_CITATION_MARK.sub("", sentence).split())
            valid = [n for n in numbers if 1 <= n <= n_sources]
            if valid and self._entailed(claim, "\n\n".join(source_texts[n - 1] for n in valid)):
                supported += 1
            pairs += len(numbers)  # a citation to a missing source is an imprecise pair
            precise += sum(int(self._entailed(claim, source_texts[n - 1])) for n in valid)
        if not n_claims:
            return None, None
        return precise / pairs, supported / n_claims

    def _answer_scores(self, clean: str, refused: bool, answerable: bool, gold_answers: list[str],
                       gold_label: str | None, answer_text: str) -> dict[str, Any]:
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
                raise ValueError("answer_metric='scifact' needs gold_label for answerable examples.")
            predicted = extract_label(answer_text, self.refusal)
            out["predicted_label"], out["gold_label"] = predicted, gold
            out["label_accuracy"] = float(predicted == gold)
            if answerable:
                out["answer_score"] = out["label_accuracy"]
        elif answerable:
            value = 0.0 if refused else self.answer_metric(clean, gold_answers)  # type: ignore[operator]
            if isinstance(value, Mapping):
                out.update({f"custom_{k}": float(v) for k, v in value.items() if k != "score"})
                value = value.get("score", 0.0)
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
    ) -> dict[str, Any]:
        """Score one answer; ``source_node_ids[n - 1]`` is the id of source ``[n]``."""
        if source_texts is not None and len(source_texts) != len(source_node_ids):
            raise ValueError(
                f"example {example_id or question!r}: {len(source_texts)} source_texts for "
                f"{len(source_node_ids)} source_node_ids; pass one text per numbered source."
            )
        n_sources = len(source_node_ids)
        refused = is_refusal(answer_text, self.refusal)
        cited = parse_citations(answer_text)
        valid = [n for n in cited if 1 <= n <= n_sources]
        invalid = [n for n in cited if n not in valid]
        cited_ids = [source_node_ids[n - 1] for n in valid]
        gold = set(gold_node_ids)
        row: dict[str, Any] = {
            "id": example_id, "question": question, "answer": answer_text,
            "answerable": bool(answerable), "refused": refused, "n_sources": n_sources,
            "cited": cited, "cited_node_ids": cited_ids, "invalid_citations": invalid,
            "uncited": not refused and not cited,
            "citation_valid": None if not cited else float(not invalid),
            "citation_precision": None, "citation_recall": None, "citation_recall_retrieved": None,
        }
        if answerable and gold:
            if cited:
                row["citation_precision"] = sum(1 for i in cited_ids if i in gold) / len(cited)
            hit = gold & set(cited_ids)
            row["citation_recall"] = len(hit) / len(gold)
            retrieved_gold = gold & set(source_node_ids)
            row["citation_recall_retrieved"] = len(hit) / len(retrieved_gold) if retrieved_gold else None
        if self.entailment is not None and source_texts is not None:
            row["nli_citation_precision"], row["nli_citation_recall"] = (
                self._nli(answer_text, n_sources, source_texts) if answerable and not refused else (None, None)
            )
        row.update(self._answer_scores(clean_answer(answer_text), refused, answerable,
                                       list(gold_answers), gold_label, answer_text))
        return row

    def evaluate_response(
        self,
        response: Any,
        gold_node_ids: Sequence[str] = (),
        gold_answers: Sequence[str] = (),
        answerable: bool = True,
        gold_label: str | None = None,
        question: str | None = None,
        example_id: str | None = None,
    ) -> dict[str, Any]:
        """Score a LlamaIndex ``Response`` whose ``source_nodes`` are the numbered sources in order.

        For a ``CitationQueryEngine`` response the model's own text
        (``metadata["raw_answer"]``, invalid citations included) is scored.

        A source matches a gold id by its ``node_id`` or, failing that, its
        ``ref_doc_id`` (so gold document ids work for chunked documents).
        """
        if not hasattr(response, "response") and hasattr(response, "get_response"):
            response = response.get_response()  # a (sync) StreamingResponse: drain it first
        gold = set(gold_node_ids)
        ids, texts = [], []
        for nws in response.source_nodes:
            node = getattr(nws, "node", nws)
            ids.append(node.node_id if node.node_id in gold or node.ref_doc_id not in gold else node.ref_doc_id)
            texts.append(node.get_content())
        metadata = getattr(response, "metadata", None) or {}
        # Score what the model wrote: CitationQueryEngine strips invalid citations from
        # the text it shows but keeps the original in metadata["raw_answer"].
        answer = metadata.get("raw_answer")
        if answer is None:
            answer = str(response.response or "")
        return self.evaluate_example(
            question=question or metadata.get("question", ""),
            answer_text=answer,
            source_node_ids=ids, gold_node_ids=gold_node_ids, gold_answers=gold_answers,
            answerable=answerable, gold_label=gold_label, source_texts=texts, example_id=example_id,
        )

    def metric_keys(self) -> tuple[str, ...]:
        keys = ["citation_valid", "citation_precision", "citation_recall", "citation_recall_retrieved"]
        if self.entailment is not None:
            keys += ["nli_citation_precision", "nli_citation_recall"]
        if self.answer_metric == "squad":
            keys += ["exact_match", "f1", "contains"]
        elif self.answer_metric == "scifact":
            keys += ["label_accuracy"]
        keys.append("answer_score")
        return tuple(keys)

    def evaluate(
        self, examples: Iterable[Mapping[str, Any]], show_progress: bool = True, name: str | None = None
    ) -> GenerationReport:
        """Score many examples: dicts with ``evaluate_example``'s keyword arguments, or with
        ``response`` (a LlamaIndex Response) plus the gold keys of ``evaluate_response``."""
        from tqdm.auto import tqdm

        rows = []
        items = list(examples)
        for ex in tqdm(items, desc="Scoring answers", disable=not show_progress):
            if "response" in ex:
                kwargs = {k: v for k, v in ex.items() if k != "response"}
                rows.append(self.evaluate_response(ex["response"], **kwargs))
            else:
                rows.append(self.evaluate_example(**ex))
        return self._report(rows, name)

    def evaluate_query_engine(
        self, query_engine: Any, examples: Iterable[Mapping[str, Any]], show_progress: bool = True,
        name: str | None = None,
    ) -> GenerationReport:
        """Ask ``query_engine`` each example's ``question`` and score the response.

        Examples are dicts with ``question`` plus the gold keys of ``evaluate_response``
        (``gold_node_ids``, ``gold_answers``, ``answerable``, ``gold_label``, ``example_id``).
        Each row also gets ``latency_s``, the query's wall time.
        """
        import time

        from tqdm.auto import tqdm

        rows = []
        items = list(examples)
        for ex in tqdm(items, desc="Answering", disable=not show_progress):
            start = time.perf_counter()
            response = query_engine.query(ex["question"])
            if not hasattr(response, "response") and hasattr(response, "get_response"):
                response = response.get_response()
            latency = time.perf_counter() - start
            row = self.evaluate_response(response, **{k: v for k, v in ex.items()})
            row["latency_s"] = latency
            rows.append(row)
        return self._report(rows, name)

    def _report(self, rows: list[dict[str, Any]], name: str | None) -> GenerationReport:
        keys = list(self.metric_keys())
        extra = sorted({k for r in rows for k in r if k.startswith("custom_")})
        return GenerationReport(rows=rows, name=name, metric_keys=tuple(keys + extra))
