"""Scoring a decoder on grounded contexts: refusal policies, answers, post-check, tables.

Used by ``ragtune train decoder`` (base vs tuned) and the decoder benchmark
(``ragtune bench generation``, one row per decoder). Each row (a decoder) is scored the way ``LocalChatLLM`` / ``CitationQueryEngine``
answer with a refusal policy -- refuse when the policy says so, else decode
with the refusal barred -- but the answers are decoded once per question
(``generate_batch(refuse=[False] * n)``) and every policy's decisions are
applied to the same answers, so the policies are compared on identical text:

- ``decoder``: the decoder's P(refusal sentence) against a threshold;
- ``answerability``: the encoder side's P(no source holds the answer)
  (``AnswerabilityScorer``, the same for every row);
- ``combined``: logistic regression over both (``CombinedRefusalPolicy``).

Each policy is fitted per row on the dev questions (``--refusal-threshold tune``);
the row's headline is the one with the best cross-validated balanced accuracy there
(``select_refusal_policy``; ``none``, never refusing, is scored too). The
citation post-check is measured both ways on the headline answers: ``flag`` (the answers as written) and ``cite`` (answered
claims without a valid citation get the source the model finds most likely,
``LocalChatLLM.citation_probabilities``).

Example::

    policies = fit_policies(llm, dev_contexts, "tune", scorer=None, batch_size=8)
    scores = score_set("squad_v2", llm, test_contexts, policies, GenerationEvaluator())
    print(markdown_table({"tuned": summarize(scores.reports[scores.headline], "squad", None,
                                             scores.tokens_per_second)}))
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llama_index_ragtune.grounding import DEFAULT_REFUSAL

logger = logging.getLogger(__name__)

COLUMNS = (
    ("citation_precision", "citation precision"),
    ("citation_recall", "citation recall"),
    ("citation_all", "all gold cited"),
    ("answer", "answer F1 / label acc."),
    ("refusal_f1", "refusal F1"),
    ("over_refusal_rate", "over-refusal"),
    ("refusal_auc", "refusal AUC decoder"),
    ("refusal_auc_answerability", "refusal AUC answerability"),
    ("refusal_auc_combined", "refusal AUC combined"),
    ("trust_score", "trust score"),
    ("quote_valid", "quotes verified"),
    ("refusal_policy", "refusal policy"),
    ("train_seconds", "training wall time (s)"),
    ("tokens_per_second", "generation tokens/s"),
)
POLICY_COLUMNS = (
    ("refusal_threshold", "threshold"),
    ("refusal_f1", "refusal F1"),
    ("over_refusal_rate", "over-refusal"),
    ("answer", "answer F1 / label acc."),
    ("trust_score", "trust score"),
)


class CachedScorer:
    """An answerability scorer whose scores are computed once per (question, sources).

    Every row and policy sees the same encoder scores without re-running the
    cross-encoder; ``path`` is the scorer's model folder (recorded by saved policies).

    Example::

        scorer = CachedScorer(AnswerabilityScorer("runs/answerability/final"))
        scorer(["q"], [["s"]]) == scorer(["q"], [["s"]])    # the second call is a lookup
    """

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer
        self.path = getattr(scorer, "path", None)
        self._cache: dict[tuple[str, tuple[str, ...]], float] = {}

    def __call__(self, questions: Sequence[str], sources: Sequence[Sequence[str]]) -> list[float]:
        keys = [(q, tuple(s)) for q, s in zip(questions, sources, strict=True)]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            scores = self.scorer([q for q, _ in missing], [list(s) for _, s in missing])
            self._cache.update(zip(missing, scores, strict=True))
        return [self._cache[k] for k in keys]


def fit_policies(
    llm: Any,
    dev_contexts: Sequence[Any],
    refusal_threshold: float | str | None,
    scorer: Any | None,
    batch_size: int,
    repeats: int = 1,
) -> dict[str, Any]:
    """The refusal policies of one row: fitted on ``dev_contexts`` (``"tune"``), the decoder's at a
    fixed threshold (a number), or none (``None``: the model's own greedy refusals).

    Example::

        policies = fit_policies(llm, dev_contexts, "tune", scorer=None, batch_size=8)
        policies["decoder"].threshold
    """
    from llama_index_ragtune.llms.refusal_policy import (
        AnswerabilityRefusalPolicy,
        CombinedRefusalPolicy,
        DecoderRefusalPolicy,
        NoRefusalPolicy,
    )
    from llama_index_ragtune.llms.refusal_selection import select_refusal_policy

    if refusal_threshold is None:
        return {}
    if refusal_threshold != "tune":
        return {"decoder": DecoderRefusalPolicy(float(refusal_threshold))}
    messages = [c.messages() for c in dev_contexts]
    answerable = [c.answerable for c in dev_contexts]
    decoder = llm.conversation_refusal_probabilities(messages, batch_size=batch_size)
    try:
        policies: dict[str, Any] = {"decoder": DecoderRefusalPolicy.fit(decoder, answerable)}
        answerability = None
        if scorer is not None:
            answerability = scorer(
                [c.question for c in dev_contexts], [c.source_texts for c in dev_contexts]
            )
            policies["answerability"] = AnswerabilityRefusalPolicy.fit(
                scorer, answerability, answerable
            )
            policies["combined"] = CombinedRefusalPolicy.fit(
                scorer, decoder, answerability, answerable
            )
        selection = select_refusal_policy(
            answerable,
            decoder,
            answerability,
            scorer if answerability is not None else None,
            repeats=repeats,
        )
    except ValueError as err:
        raise ValueError(
            f"--refusal-threshold tune: {err} Raise --dev-examples or pass a fixed threshold."
        ) from err
    policies["none"] = NoRefusalPolicy()
    for policy in policies.values():
        if policy.calibration is not None:
            policy.calibration["cross_validated"] = selection.scores.get(policy.signal)
            policy.calibration["selection_objective"] = selection.objective
            policy.calibration["cv_repeats"] = selection.repeats
            policy.calibration["cv_spread"] = selection.spread.get(policy.signal)
    # the headline (first) is the policy with the best cross-validated score on dev
    return {selection.name: policies[selection.name], **policies}


@dataclass
class SetScores:
    """One row on one evaluation set: a report per policy, the post-check variants, speed."""

    reports: dict[str, Any]
    post_check: dict[str, Any]
    tokens_per_second: float
    headline: str


def _headline(policies: Mapping[str, Any]) -> str:
    """The first policy (``fit_policies`` puts the cross-validated winner first), else greedy."""
    return next(iter(policies), "greedy")


def score_set(
    name: str,
    llm: Any,
    contexts: Sequence[Any],
    policies: Mapping[str, Any],
    evaluator: Any,
    batch_size: int = 8,
    max_new_tokens: int = 48,
    refusal: str = DEFAULT_REFUSAL,
) -> SetScores:
    """Answer ``contexts`` once, apply every policy, score each, and post-check the headline.

    Example::

        scores = score_set("squad_v2", llm, test_contexts, policies, GenerationEvaluator())
        scores.reports[scores.headline].aggregate["refusal_f1"], scores.post_check["cite"]
    """
    from llama_index_ragtune.query_engine.post_check import check_citations

    messages = [c.messages() for c in contexts]
    questions = [c.question for c in contexts]
    sources = [c.source_texts for c in contexts]
    start = time.perf_counter()
    responses = llm.generate_batch(
        messages,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        refuse=[False] * len(contexts) if policies else None,
    )
    seconds = time.perf_counter() - start
    tokens = sum(int((r.raw or {}).get("usage", {}).get("completion_tokens", 0)) for r in responses)
    forced = [r.message.content or "" for r in responses]
    decoder = llm.conversation_refusal_probabilities(messages, batch_size=batch_size)
    signals: list[dict[str, float]] = [{"decoder": p} for p in decoder]
    for policy in policies.values():  # every signal any policy reads, for the per-signal AUC
        if policy.signal == "none":
            continue
        for row, values in zip(signals, policy.signals(questions, sources, decoder), strict=True):
            row.update(values)
    reports: dict[str, Any] = {}
    answers_by_policy: dict[str, list[str]] = {}
    for policy_name, policy in (policies or {"greedy": None}).items():
        decisions = (
            [None] * len(contexts) if policy is None else policy.decide(questions, sources, decoder)
        )
        answers = [
            refusal if d is not None and d.refused else a
            for d, a in zip(decisions, forced, strict=True)
        ]
        answers_by_policy[policy_name] = answers
        report = _evaluate(evaluator, contexts, answers, f"{name} / {policy_name}")
        for row, d, values in zip(report.rows, decisions, signals, strict=True):
            row["refusal_probability"] = values["decoder"]
            row["refusal_signals"] = dict(values)
            if d is not None:
                row["refusal_decision"] = d.to_dict()
        reports[policy_name] = report
    headline = _headline(policies)
    cited, added = [], 0
    for context, answer, message in zip(
        contexts, answers_by_policy[headline], messages, strict=True
    ):
        n = len(context.source_texts)
        check = check_citations(
            answer,
            n,
            "cite",
            choose=lambda prefix, m=message, n=n: llm.citation_probabilities(m, prefix, n),
            refusal=refusal,
        )
        cited.append(check.text)
        added += len(check.added)
    cite_report = _evaluate(evaluator, contexts, cited, f"{name} / {headline} / cite")
    post_check = {
        "flag": _post_check_summary(reports[headline]),
        "cite": {**_post_check_summary(cite_report), "added_citations": added},
    }
    return SetScores(reports, post_check, tokens / seconds if seconds > 0 else 0.0, headline)


def _evaluate(evaluator: Any, contexts: Sequence[Any], answers: Sequence[str], name: str) -> Any:
    return evaluator.evaluate(
        [c.evaluation_kwargs(a) for c, a in zip(contexts, answers, strict=True)],
        show_progress=False,
        name=name,
    )


def _post_check_summary(report: Any) -> dict[str, Any]:
    agg = report.aggregate
    keys = ("uncited_rate", "citation_precision", "citation_recall", "citation_all", "trust_score")
    return {k: agg.get(k) for k in keys}


def summarize(
    report: Any,
    answer_metric: str,
    train_seconds: float | None,
    tokens_per_second: float,
    refusal_threshold: float | None = None,
    policy: str | None = None,
) -> dict[str, Any]:
    """The benchmark columns of one row (``COLUMNS``) from its report.

    Example::

        row = summarize(scores.reports[scores.headline], "squad", None, scores.tokens_per_second)
        row["answer"]          # answer F1 (SciFact: label accuracy)
    """
    agg = report.aggregate
    return {
        "citation_precision": agg.get("citation_precision"),
        "citation_recall": agg.get("citation_recall"),
        "citation_all": agg.get("citation_all"),
        "answer": agg.get("label_accuracy" if answer_metric == "scifact" else "f1"),
        "refusal_f1": agg.get("refusal_f1"),
        "over_refusal_rate": agg.get("over_refusal_rate"),
        "refusal_auc": agg.get("refusal_auc"),
        "refusal_auc_answerability": agg.get("refusal_auc_answerability"),
        "refusal_auc_combined": agg.get("refusal_auc_combined"),
        "trust_score": agg.get("trust_score"),
        "quote_valid": agg.get("quote_valid"),
        "refusal_policy": policy,
        "refusal_threshold": refusal_threshold,
        "train_seconds": train_seconds,
        "tokens_per_second": tokens_per_second,
    }


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if key == "train_seconds":
        return f"{value:.0f}"
    if key == "refusal_threshold":
        return f"{value:.3g}"
    if key == "tokens_per_second":
        return f"{value:.1f}"
    return f"{value:.3f}"


def markdown_table(
    rows: Mapping[str, Mapping[str, Any]], columns: Sequence[tuple[str, str]] = COLUMNS
) -> str:
    """Rows x ``columns`` as a Markdown table (the refusal policy cell shows its threshold).

    Example::

        print(markdown_table({"base": base_row, "tuned": tuned_row}))
    """
    lines = [
        "| model | " + " | ".join(label for _, label in columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    for name, row in rows.items():
        cells = []
        for key, _ in columns:
            if key == "refusal_policy" and row.get(key):
                threshold = row.get("refusal_threshold")
                suffix = "" if threshold is None else f" @ {threshold:.3g}"
                cells.append(f"{row[key]}{suffix}")
            else:
                cells.append(_cell(key, row.get(key)))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def policy_table(policies: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """``{row: {policy: summary}}`` as one Markdown table (a line per row and policy).

    Example::

        print(policy_table({"tuned": {"decoder": row, "combined": row2}}))
    """
    lines = [
        "| model | refusal policy | " + " | ".join(label for _, label in POLICY_COLUMNS) + " |",
        "| --- | --- |" + " --- |" * len(POLICY_COLUMNS),
    ]
    for row, by_policy in policies.items():
        for name, summary in by_policy.items():
            cells = [_cell(k, summary.get(k)) for k, _ in POLICY_COLUMNS]
            lines.append(f"| {row} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def post_check_table(post_checks: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """``{row: {"flag": ..., "cite": ...}}``: uncited answers and citation quality both ways.

    Example::

        print(post_check_table({"tuned": scores.post_check}))
    """
    lines = [
        "| model | uncited answers (flag) | citation precision flag / cite | "
        "citation recall flag / cite | trust score flag / cite | citations added |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row, check in post_checks.items():
        flag, cite = check["flag"], check["cite"]
        pairs = [
            f"{_cell(key, flag.get(key))} / {_cell(key, cite.get(key))}"
            for key in ("citation_precision", "citation_recall", "trust_score")
        ]
        lines.append(
            f"| {row} | {_cell('uncited_rate', flag.get('uncited_rate'))} | "
            + " | ".join(pairs)
            + f" | {cite.get('added_citations', 0)} |"
        )
    return "\n".join(lines)
