"""``GenerationEvaluator``: citation quality, answer quality and refusal calibration of grounded answers.

An answer is read as ``CitationQueryEngine`` serves it: with the sources' texts, a
footnote quoted from a source is not a citation; with a ``finish_reason`` that says the
token limit cut the answer (``"length"``, ``"max_tokens"``), its unfinished last
sentence is ``cut_claim`` and a number only that sentence cites is no citation
(``truncated``; ``truncated_rate`` = truncated answers / examples, None when no example
reports a finish reason: raise ``max_new_tokens`` when it is not 0).

Each example is one answer over numbered sources (source ``n`` has id
``source_node_ids[n - 1]``) with its gold evidence ids, gold answers and
whether it is answerable. Definitions (per example, then averaged over the
examples where the value is defined; ``None`` = undefined, left out of the mean):

Citations (read by the grammar of :mod:`llama_index_ragtune.grounding`, the one the
query engine uses; distinct numbers; code never counts):

- ``citation_valid``: every cited number is within ``1..n_sources``
  (``None`` when nothing is cited). ``refused`` / ``uncited`` follow
  :func:`~llama_index_ragtune.grounding.parse_answer`: a refusal cites no valid
  source (``"[2] Insufficient information ..."`` is a refusal, not a citation of
  source 2), so ``refused``, cited and ``uncited`` never overlap.
- ``citation_precision`` (id-based): cited numbers whose source id is gold,
  over all cited numbers -- a citation to a source that does not exist counts
  as wrong. Answerable examples with at least one citation.
- ``citation_recall`` (id-based, example level): ``|cited ids ∩ gold| / |gold|``
  on answerable examples with gold ids (a refusal or an uncited answer scores 0).
- ``citation_recall_retrieved``: the same over the gold ids that were among the
  sources, ``|cited ∩ gold| / |gold ∩ sources|`` -- the decoder's share of the
  job, free of retrieval misses (``None`` when no gold source was retrieved).
- ``citation_hit`` / ``citation_all``: 1.0 when at least one / every gold id
  is cited (answerable examples with gold ids): with several gold sources
  (multi-hop), ``citation_all`` asks for all of them.
- ``quote_valid`` (with ``source_texts``): the share of the answer's quotes
  found in the source they cite (:func:`~llama_index_ragtune.grounding.check_quotes`:
  normalised substring, else a fuzzy match >= ``quote_threshold``); ``None``
  when the answer quotes nothing or is a refusal. ``quote_checks`` lists each.
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
  wrong). ``label_accuracy`` (1.0 when that label equals ``gold_label``) is
  scored on *every* example (an unanswerable one's gold is NOT ENOUGH INFO);
  ``answer_score`` = ``label_accuracy`` on answerable examples.
- a callable ``(clean_prediction, gold_answers) -> float | dict`` sets
  ``answer_score`` (a dict's ``"score"`` key, other keys are kept as ``custom_<key>``
  columns: finite numbers, or None where undefined; a NaN or text is a ``ValueError``).

Trust score (:mod:`~llama_index_ragtune.evaluation.trust`): the report's
``trust_score`` is the mean of ``trust_refusal`` (macro F1 of refusing and
answering), ``trust_answer`` (F1 of answer precision and recall) and
``trust_citation`` (F1 of citation precision and recall): one number to track,
its parts beside it.

Refusals (the unanswerable class is positive): refused & unanswerable = TP,
refused & answerable = FP, answered & unanswerable = FN. ``refusal_precision``
(None without refusals), ``refusal_recall`` (None without unanswerable
examples), ``refusal_f1`` (0 when nothing is refused); ``over_refusal_rate`` = FP / answerable
examples; ``refusal_rate`` = refusals / examples. ``uncited_rate`` = answered
(not refused) examples without any citation / answered examples. ``empty`` marks an
answer that says nothing (no letter or digit once its citation markers are removed:
``"[1] [2] [3]"``, ``""``); ``empty_rate`` = empty answers / examples and
``answer_rate`` = examples neither refused nor empty / examples.

One answer is scored by ``GenerationScorer`` (:mod:`~llama_index_ragtune.evaluation.generation_scoring`);
``GenerationEvaluator`` extends it with LlamaIndex responses, query engines and reports.

Example::

    from llama_index_ragtune.evaluation import GenerationEvaluator

    evaluator = GenerationEvaluator(answer_metric="squad")
    row = evaluator.evaluate_example(
        "Where is the Eiffel tower?", "Paris [1].", source_node_ids=["n1", "n2"],
        gold_node_ids=["n1"], gold_answers=["Paris"], answerable=True,
    )
    row["citation_precision"], row["exact_match"]    # (1.0, 1.0)
    unanswerable = dict(question="Capital of Mars?", answer_text="Olympus [2].",
                        source_node_ids=["n1", "n2"], answerable=False)
    report = evaluator.evaluate([unanswerable], show_progress=False)   # a GenerationReport
    report["refusal_recall"]                          # 0.0: it answered instead of refusing
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from llama_index_ragtune.evaluation.answers import (
    clean_answer,
    extract_label,
    normalize_answer,
    squad_exact_match,
    squad_f1,
)
from llama_index_ragtune.evaluation.entailment import (
    CrossEncoderEntailment,
    EntailmentCheck,
    LLMJudgeEntailment,
)
from llama_index_ragtune.evaluation.generation_report import GenerationReport
from llama_index_ragtune.evaluation.generation_scoring import GenerationScorer

__all__ = [
    "CrossEncoderEntailment",
    "EntailmentCheck",
    "GenerationEvaluator",
    "GenerationReport",
    "LLMJudgeEntailment",
    "clean_answer",
    "extract_label",
    "normalize_answer",
    "squad_exact_match",
    "squad_f1",
]


# ---------------------------------------------------------------- evaluator
class GenerationEvaluator(GenerationScorer):
    """Score grounded answers: citations, answer quality and refusal calibration (see the module docstring).

    Args:
        refusal: the refusal sentence the model was asked to use.
        entailment: optional ``(claim, source_text) -> bool | float`` check for
            the ALCE-style NLI citation metrics (e.g. :class:`CrossEncoderEntailment`
            or :class:`LLMJudgeEntailment`).
        entailment_threshold: a float score counts as "entailed" at or above it. A check
            returning anything but a bool or a finite number (NaN, None, "yes") raises a
            ``ValueError`` naming the example and the claim: it is never read as "no".
        quote_threshold: a quote counts as found at or above this fuzzy score.
        answer_metric: ``"squad"``, ``"scifact"`` or a callable
            ``(clean_prediction, gold_answers) -> float | dict``.

    Example::

        from llama_index_ragtune.evaluation import GenerationEvaluator

        evaluator = GenerationEvaluator(answer_metric="scifact")
        row = evaluator.evaluate_example(
            "Statins lower LDL.", 'Supported [1]: "Statins reduced LDL by 30%."',
            source_node_ids=["pubmed-1"], gold_node_ids=["pubmed-1"], gold_label="SUPPORT",
        )
        row["label_accuracy"], row["citation_recall"]     # (1.0, 1.0)
    """

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
        (``metadata["raw_answer"]``, invalid citations included; with the citations
        its post-check added, ``metadata["post_checked_answer"]``) is scored, cut as
        served when ``metadata["finish_reason"]`` says the token limit stopped it.

        A source matches a gold id by its ``node_id`` or, failing that, its
        ``ref_doc_id`` (so gold document ids work for chunked documents).
        """
        response = _drained(response)
        gold = set(gold_node_ids)
        ids, texts = [], []
        for nws in response.source_nodes:
            node = getattr(nws, "node", nws)
            ids.append(
                node.node_id
                if node.node_id in gold or node.ref_doc_id not in gold
                else node.ref_doc_id
            )
            texts.append(node.get_content())
        metadata = getattr(response, "metadata", None) or {}
        # Score what the model wrote: CitationQueryEngine strips invalid citations from
        # the text it shows but keeps the original in metadata["raw_answer"] (and, after
        # its uncited="cite" post-check, the original plus the added citations).
        answer = metadata.get("post_checked_answer") or metadata.get("raw_answer")
        if answer is None:
            answer = str(response.response or "")
        return self.evaluate_example(
            question=question or metadata.get("question", ""),
            answer_text=answer,
            source_node_ids=ids,
            gold_node_ids=gold_node_ids,
            gold_answers=gold_answers,
            answerable=answerable,
            gold_label=gold_label,
            source_texts=texts,
            example_id=example_id,
            finish_reason=metadata.get("finish_reason"),
        )

    def evaluate(
        self,
        examples: Iterable[Mapping[str, Any]],
        show_progress: bool = True,
        name: str | None = None,
    ) -> GenerationReport:
        """Score many examples: dicts with ``evaluate_example``'s keyword arguments, or with
        ``response`` (a LlamaIndex Response) plus the gold keys of ``evaluate_response``."""
        from tqdm.auto import tqdm

        _check_examples(examples)
        rows = []
        items = list(examples)
        for index, ex in enumerate(tqdm(items, desc="Scoring answers", disable=not show_progress)):
            if "response" in ex:
                kwargs = {k: v for k, v in ex.items() if k != "response"}
                _check_keys(self.evaluate_response, kwargs, index)
                rows.append(self.evaluate_response(ex["response"], **kwargs))
            else:
                _check_keys(self.evaluate_example, ex, index)
                rows.append(self.evaluate_example(**ex))
        return self._report(rows, name)

    def evaluate_query_engine(
        self,
        query_engine: Any,
        examples: Iterable[Mapping[str, Any]],
        show_progress: bool = True,
        name: str | None = None,
    ) -> GenerationReport:
        """Ask ``query_engine`` each example's ``question`` and score the response.

        Examples are dicts with ``question`` plus the gold keys of ``evaluate_response``
        (``gold_node_ids``, ``gold_answers``, ``answerable``, ``gold_label``, ``example_id``).
        Each row also gets ``latency_s``, the query's wall time.
        """
        from tqdm.auto import tqdm

        _check_examples(examples)
        rows = []
        items = list(examples)
        for index, ex in enumerate(tqdm(items, desc="Answering", disable=not show_progress)):
            _check_keys(self.evaluate_response, ex, index)
            start = time.perf_counter()
            response = _drained(query_engine.query(ex["question"]))
            latency = time.perf_counter() - start
            row = self.evaluate_response(response, **ex)
            row["latency_s"] = latency
            rows.append(row)
        return self._report(rows, name)

    def _report(self, rows: list[dict[str, Any]], name: str | None) -> GenerationReport:
        keys = list(self.metric_keys())
        extra = sorted({k for r in rows for k in r if k.startswith("custom_")})
        return GenerationReport(rows=rows, name=name, metric_keys=tuple(keys + extra))


def _drained(response: Any) -> Any:
    """The final ``Response`` of a ``StreamingResponse``, or of an ``AsyncStreamingResponse``
    whose stream was read to its end; other responses unchanged. ``TypeError`` for an
    async stream not read yet (it cannot be awaited here)."""
    if hasattr(response, "response") or not hasattr(response, "get_response"):
        return response
    if not inspect.iscoroutinefunction(response.get_response):
        return response.get_response()
    if getattr(response, "response_txt", None) is None:
        raise TypeError(
            "an AsyncStreamingResponse whose stream was not read: score "
            "`await response.get_response()` (or read response.async_response_gen() first)"
        )
    from llama_index.core.base.response.schema import Response

    return Response(response.response_txt, response.source_nodes, response.metadata)


def _check_examples(examples: Any) -> None:
    if isinstance(examples, (Mapping, str)):
        raise TypeError(
            f"examples must be a list of example dicts, got a {type(examples).__name__}; "
            "for one example pass [example]"
        )


def _check_keys(method: Callable[..., Any], example: Mapping[str, Any], index: int) -> None:
    """A clear error naming the example when it has keys ``method`` does not take."""
    accepted = set(inspect.signature(method).parameters)
    unknown = sorted(set(example) - accepted - {"response"})
    if unknown:
        name = example.get("example_id") or example.get("question") or f"#{index}"
        raise ValueError(
            f"example {name!r} has unknown key(s) {unknown}; {method.__name__} takes "
            f"{sorted(accepted)}."
        )
