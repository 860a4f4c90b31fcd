"""``EvaluationResults``: the evaluation JSON a tuning run writes and ``ragtune report`` renders.

The file (format ``"ragtune-evaluation"``, ``format_version`` 1) holds what a run
measured on its held-out queries, before and after tuning, for each stage::

    {
      "format": "ragtune-evaluation", "format_version": 1,
      "title": "Help-centre demo",
      "created": "2026-11-25T10:00:00+00:00",           # ISO 8601
      "bundle_version": "v3",
      "dataset": {"name": "retail-help", "queries": {"train": 120, "test": 40}},
      "notes": "optional free text",
      "retrieval": [                                      # one entry per system
        {"name": "hybrid", "stage": "before",            # stage: "before", "after", ...
         "metrics": {"ndcg@10": 0.61, "recall@10": 0.80, "mrr@10": 0.55},
         "latency_ms": [6.1, 7.4, ...]}                  # one per query (may be empty)
      ],
      "reranking": [ ... same shape, optional ... ],
      "generation": [
        {"name": "SmolLM2 + SFT", "stage": "after",
         "metrics": {"citation_precision": 0.9, "citation_recall": 0.8, "answer_f1": 0.6,
                     "refusal_f1": 0.7, "answer_rate": 0.8, "refusal_rate": 0.2},
         "latency_ms": [812.0, ...],                     # end-to-end time-to-answer per question
         "refusal": {"probabilities": [0.1, 0.8, ...],   # optional; P(refusal) per question
                     "should_refuse": [0, 1, ...],       # 1 = the corpus cannot answer it
                     "threshold": 0.42,                  # refuse iff probability >= threshold
                     "policy": "decoder"}}               # optional: whose signal (or "none")
      ],
      "decisions": [                                      # champion / challenger, one per part
        {"part": "encoder", "promoted": true, "metric": "ndcg@10",
         "champion": 0.61, "challenger": 0.70, "margin": 0.005,
         "reason": "challenger beats champion by 0.09 >= 0.005",
         "greater_is_better": true, "forced": false}     # optional: the metric's direction
      ],                                                  # (a loss: false) and false
      "timings": {"parse": 1.2, "tune encoder": 95.0}    # step -> seconds
    }

Metric values are numbers or ``null`` (undefined, e.g. ``refusal_f1`` without
unanswerable questions; reports show "—"). The builders (``add_retrieval``, ...,
``add_decision``, ``add_promotion``) take a NaN or infinite metric, ``champion`` /
``challenger`` or refusal ``threshold`` as undefined (``None``, written ``null``), as the
other result files write them; such a value put into the fields by hand is refused by
validation, naming it. A share (a ``*_rate`` such as ``answer_rate``, nDCG, recall,
MRR, precision, F1, AUC, ...: ``metric_bounds.bounded_range``) is in [0, 1]: 73.0 or
-0.2 is refused naming the system and the metric ("given in percent? divide by 100");
custom metrics (``custom_*``), latencies and counts have no bound. ``part`` is one of ``encoder``, ``reranker``,
``decoder``, ``fusion``; ``champion`` / ``challenger`` are the two parts'
values of ``metric`` (``null`` when there was nothing to compare), ``margin`` the
improvement promotion required; ``add_promotion`` records a ``PromotionDecision``.
Unknown fields are errors (a typo never silently drops data); every error
names the file and the field, e.g. ``generation[1].refusal.threshold``. Reading
the file (encodings, size cap, a cut-off file) is in ``results_reading``; the
format's validation in ``results_format``.

Example::

    from llama_index_ragtune.evaluation.results import EvaluationResults

    results = EvaluationResults(title="Help-centre demo", dataset_name="retail-help",
                                queries={"train": 120, "test": 40}, bundle_version="v1")
    results.add_retrieval("hybrid", "before", {"ndcg@10": 0.61}, latency_ms=[6.1, 7.4])
    results.add_retrieval("hybrid", "after", {"ndcg@10": 0.70}, latency_ms=[6.3, 7.0])
    results.add_decision("encoder", promoted=True, metric="ndcg@10", champion=0.61,
                         challenger=0.70, margin=0.005, reason="beats the champion")
    with results.timed("tune encoder"):
        pass
    results.save("runs/bundle/evaluation.json")
    EvaluationResults.load("runs/bundle/evaluation.json").retrieval[1].metrics["ndcg@10"]  # 0.7
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from numbers import Real
from pathlib import Path
from typing import Any, Literal

from llama_index_ragtune.evaluation._validate import Invalid
from llama_index_ragtune.evaluation.file_paths import checked_path
from llama_index_ragtune.evaluation.metric_bounds import check_metric, out_of_range
from llama_index_ragtune.evaluation.results_export import results_data
from llama_index_ragtune.evaluation.results_format import (
    FORMAT,
    FORMAT_VERSION,
    PARTS,
    SECTIONS,
    parse_evaluation,
)
from llama_index_ragtune.evaluation.results_reading import (
    MAX_EVALUATION_BYTES,
    EvaluationFileError,
    find_lone_surrogate,
    read_evaluation_json,
)
from llama_index_ragtune.evaluation.svg_charts import metric_direction
from llama_index_ragtune.evaluation.system_result import (
    Decision,
    RefusalScores,
    SystemResult,
    plain_metrics,
)
from llama_index_ragtune.retrievers.persistence import atomic_write_text

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "PARTS",
    "Decision",
    "EvaluationFileError",
    "EvaluationResults",
    "RefusalScores",
    "SystemResult",
    "checked_results",
]


@dataclass
class EvaluationResults:
    """Everything a tuning run measured; ``save`` / ``load`` the evaluation JSON (validated).

    ``add_retrieval`` / ``add_reranking`` / ``add_generation`` / ``add_decision`` /
    ``timed`` fill it step by step; see the module docstring for the file format.

    Example::

        results = EvaluationResults(title="demo", dataset_name="retail-help",
                                    queries={"test": 40}, bundle_version="v1")
        results.add_generation("SmolLM2", "before", {"answer_rate": 0.9}, latency_ms=[800.0])
        results.save("runs/evaluation.json")
    """

    title: str
    dataset_name: str
    queries: dict[str, int]
    bundle_version: str
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    notes: str | None = None
    retrieval: list[SystemResult] = field(default_factory=list)
    reranking: list[SystemResult] = field(default_factory=list)
    generation: list[SystemResult] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ builders
    def add_retrieval(
        self,
        name: str,
        stage: str,
        metrics: Mapping[str, float | None],
        latency_ms: Sequence[float] = (),
    ) -> SystemResult:
        """Add one retrieval system (e.g. ``stage="before"`` for the untuned hybrid)."""
        values = _metric_values(metrics, f"add_retrieval({name!r}, {stage!r})")
        system = SystemResult(name, stage, values, [float(x) for x in latency_ms])
        self.retrieval.append(system)
        return system

    def add_reranking(
        self,
        name: str,
        stage: str,
        metrics: Mapping[str, float | None],
        latency_ms: Sequence[float] = (),
    ) -> SystemResult:
        """Add one retrieve-then-rerank system."""
        values = _metric_values(metrics, f"add_reranking({name!r}, {stage!r})")
        system = SystemResult(name, stage, values, [float(x) for x in latency_ms])
        self.reranking.append(system)
        return system

    def add_generation(
        self,
        name: str,
        stage: str,
        metrics: Mapping[str, float | None],
        latency_ms: Sequence[float] = (),
        refusal_probabilities: Sequence[float] | None = None,
        should_refuse: Sequence[int | bool] | None = None,
        refusal_threshold: float | None = None,
        refusal_policy: str | None = None,
    ) -> SystemResult:
        """Add one answering system; ``latency_ms`` is each question's end-to-end time-to-answer.

        Pass ``refusal_probabilities`` and ``should_refuse`` together (one per question)
        for the refusal calibration chart; ``refusal_policy`` names the policy whose signal
        they are.
        """
        if (refusal_probabilities is None) != (should_refuse is None):
            raise ValueError(
                f"add_generation({name!r}): pass refusal_probabilities and should_refuse "
                "together (one entry per question), or neither."
            )
        refusal = None
        if refusal_probabilities is not None and should_refuse is not None:
            from llama_index_ragtune.evaluation.refusal_calibration import check_flags

            flags = check_flags(should_refuse, "should_refuse", f"add_generation({name!r})")
            refusal = RefusalScores(
                [float(p) for p in refusal_probabilities],
                [int(y) for y in flags],  # "0" is a TypeError, not bool("0") == True
                _finite_or_none(refusal_threshold),
                refusal_policy,
            )
        values = _metric_values(metrics, f"add_generation({name!r}, {stage!r})")
        system = SystemResult(name, stage, values, [float(x) for x in latency_ms], refusal)
        self.generation.append(system)
        return system

    def add_decision(
        self,
        part: str,
        promoted: bool,
        metric: str,
        champion: float | None,
        challenger: float | None,
        margin: float,
        reason: str,
        greater_is_better: bool | Literal["auto"] = "auto",
        forced: bool = False,
    ) -> Decision:
        """Record whether the challenger ``part`` replaced the champion, and why
        (``greater_is_better="auto"``: read from the metric's name, False for a loss)."""
        if isinstance(greater_is_better, str) and greater_is_better == "auto":
            greater_is_better = metric_direction(metric) >= 0
        champion, challenger = _finite_or_none(champion), _finite_or_none(challenger)
        for side, value in (("champion", champion), ("challenger", challenger)):
            problem = out_of_range(metric, value) if isinstance(metric, str) else None
            if problem is not None:
                raise ValueError(f"add_decision({part!r}): the {side}'s {problem}")
        decision = Decision(
            part,
            promoted,
            metric,
            champion,
            challenger,
            margin,
            reason,
            greater_is_better,
            forced,
        )
        self.decisions.append(decision)
        return decision

    def add_promotion(self, part: str, decision: Any) -> Decision:
        """Record a ``PromotionDecision`` (``finetuning.promotion.decide_promotion``) for ``part``.

        Example::

            results.add_promotion("encoder", decide_promotion(before, after, metric="ndcg@10"))
        """
        return self.add_decision(
            part,
            bool(decision.promoted),
            decision.metric,
            decision.champion,
            decision.challenger,
            decision.margin,
            decision.reason,
            getattr(decision, "greater_is_better", "auto"),
            getattr(decision, "forced", False),
        )

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Add the wall time of the ``with`` block to ``timings[step]`` (seconds)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - start

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """The evaluation JSON as a dict (see the module docstring); a field that cannot be
        written as JSON (a system given as a dict, ``queries=None``, a ``set`` as a metric)
        is an ``EvaluationFileError`` naming it. NumPy numbers become plain ones."""
        try:
            return results_data(self)
        except Invalid as exc:
            raise EvaluationFileError(exc.message, None, exc.field) from None

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> EvaluationResults:
        """Validate ``data`` and build the results; ``EvaluationFileError`` names a bad field."""
        try:
            bad = find_lone_surrogate(data)
            if bad is not None:  # it would fail later, when the report is encoded as UTF-8
                where, escape, key = bad
                what = "" if key is None else f"the key {key!r} "
                raise Invalid(
                    where,
                    f"{what}contains an invalid character (a lone surrogate {escape}); "
                    "fix or remove the \\u escape (a surrogate is valid only in a pair)",
                )
            return cls(**parse_evaluation(data))
        except Invalid as exc:
            raise EvaluationFileError(exc.message, source, exc.field) from None

    def validate(self) -> None:
        """Raise ``EvaluationFileError`` naming the first bad field (``save``, ``render_html``,
        ``render_markdown`` and ``write_report`` call it)."""
        EvaluationResults.from_dict(self.to_dict())

    def to_json(self, indent: int | None = 2) -> str:
        """The validated evaluation JSON text; per-query number lists stay on one line each."""
        self.validate()
        data = self.to_dict()
        if not indent:
            return json.dumps(data, ensure_ascii=False, allow_nan=False)
        # Long per-query lists as placeholders, so the indented dump keeps them on one line.
        marker = secrets.token_hex(8)
        compact: list[str] = []

        def one_line(values: list) -> str:
            compact.append(json.dumps(values, allow_nan=False))
            return f"{marker}-{len(compact) - 1}"

        for section in SECTIONS:
            for system in data[section]:
                system["latency_ms"] = one_line(system["latency_ms"])
                for key in ("probabilities", "should_refuse"):
                    if "refusal" in system:
                        system["refusal"][key] = one_line(system["refusal"][key])
        text = json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False)
        # one pass over the text (a replace per list rewrote the whole text each time:
        # 10,000 systems took about 35 s)
        return re.sub(rf'"{marker}-(\d+)"', lambda found: compact[int(found[1])], text)

    def save(self, path: str | Path) -> Path:
        """Validate, then write ``path`` atomically (a temporary sibling renamed into place;
        ``~`` is the home folder, ``file_paths.checked_path``)."""
        path = checked_path(path, "EvaluationResults.save")
        atomic_write_text(path, self.to_json() + "\n")
        return path

    @classmethod
    def load(
        cls, path: str | Path, max_bytes: int | None = MAX_EVALUATION_BYTES
    ) -> EvaluationResults:
        """Read and validate an evaluation JSON; ``EvaluationFileError`` names the file and field.

        A file over ``max_bytes`` (default 256 MiB; ``None``: no cap), not UTF-8, empty or
        cut off is refused before it is parsed (see ``results_reading``).
        """
        path = checked_path(path, "EvaluationResults.load")
        return cls.from_dict(read_evaluation_json(path, max_bytes), source=path)


def _finite_or_none(value: Any) -> Any:
    """``None`` for a NaN or infinite number (an undefined value: ``null`` in the file);
    anything else as it is, for validation to judge."""
    if isinstance(value, Real) and not isinstance(value, bool):
        try:
            return value if math.isfinite(value) else None
        except OverflowError:  # an integer beyond floats: validation names it
            return value
    return value


def _metric_values(metrics: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Plain metric values with NaN / infinite ones as ``None`` (undefined); a share out of
    [0, 1] (``ndcg@10`` of 73.0) is a ``ValueError`` naming ``where`` and the metric."""
    values = {key: _finite_or_none(value) for key, value in plain_metrics(metrics).items()}
    for key, value in values.items():
        if isinstance(key, str) and isinstance(value, float):
            check_metric(key, value, where)
    return values


def checked_results(results: Any, where: str) -> EvaluationResults:
    """A validated copy of ``results`` (as ``EvaluationResults.validate`` checks it: NumPy
    numbers and arrays as plain ones), or parsed evaluation JSON (a dict) read into
    ``EvaluationResults``; a bad field is an ``EvaluationFileError`` naming it, anything
    else a ``TypeError`` naming ``where``.

    Example::

        checked_results(json.loads(text), "render_html").title     # 'Help-centre demo'
    """
    if isinstance(results, EvaluationResults):
        return EvaluationResults.from_dict(results.to_dict())
    if isinstance(results, Mapping):
        return EvaluationResults.from_dict(dict(results))
    raise TypeError(
        f"{where}: expected EvaluationResults (or the evaluation JSON as a dict), got "
        f"{type(results).__name__}; load a file with EvaluationResults.load(path)"
    )
