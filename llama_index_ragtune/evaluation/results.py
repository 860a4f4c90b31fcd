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
validation, naming it. A ``*_rate`` (``answer_rate``, ``refusal_rate``, ...) is a
share in [0, 1]. ``part`` is one of ``encoder``, ``reranker``,
``decoder``, ``fusion``; ``champion`` / ``challenger`` are the two parts'
values of ``metric`` (``null`` when there was nothing to compare), ``margin`` the
improvement promotion required; ``add_promotion`` records a ``PromotionDecision``.
Unknown fields are errors (a typo never silently drops data); every error
names the file and the field, e.g. ``generation[1].refusal.threshold``.

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
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from numbers import Real
from pathlib import Path
from typing import Any, Literal

from llama_index_ragtune.evaluation._validate import Fields, Invalid
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
]

FORMAT = "ragtune-evaluation"
FORMAT_VERSION = 1
PARTS = ("encoder", "reranker", "decoder", "fusion")
SECTIONS = ("retrieval", "reranking", "generation")


class EvaluationFileError(ValueError):
    """An evaluation JSON is missing, not JSON, or has a bad field (named in the message)."""

    def __init__(self, message: str, source: str | Path | None = None, field: str | None = None):
        self.source = None if source is None else str(source)
        self.field = field
        where = f"{self.source}: " if self.source else ""
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}{what}{message}")


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
        system = SystemResult(name, stage, _metric_values(metrics), [float(x) for x in latency_ms])
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
        system = SystemResult(name, stage, _metric_values(metrics), [float(x) for x in latency_ms])
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
        system = SystemResult(
            name, stage, _metric_values(metrics), [float(x) for x in latency_ms], refusal
        )
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
        decision = Decision(
            part,
            promoted,
            metric,
            _finite_or_none(champion),
            _finite_or_none(challenger),
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
        """The evaluation JSON as a dict (see the module docstring)."""
        data: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "title": self.title,
            "created": self.created,
            "bundle_version": self.bundle_version,
            "dataset": {"name": self.dataset_name, "queries": dict(self.queries)},
        }
        if self.notes is not None:
            data["notes"] = self.notes
        for section in SECTIONS:
            data[section] = [_system_dict(s) for s in getattr(self, section)]
        data["decisions"] = [asdict(d) for d in self.decisions]
        data["timings"] = dict(self.timings)
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> EvaluationResults:
        """Validate ``data`` and build the results; ``EvaluationFileError`` names a bad field."""
        from llama_index_ragtune.data.reading import lone_surrogate

        try:
            bad = lone_surrogate(data)
            if bad is not None:  # it would fail later, when the report is encoded as UTF-8
                where, escape, key = bad
                what = "" if key is None else f"the key {key!r} "
                raise Invalid(
                    where,
                    f"{what}contains an invalid character (a lone surrogate {escape}); "
                    "fix or remove the \\u escape (a surrogate is valid only in a pair)",
                )
            return _parse(data)
        except Invalid as exc:
            raise EvaluationFileError(exc.message, source, exc.field) from None

    def validate(self) -> None:
        """Raise ``EvaluationFileError`` naming the first bad field (``save`` calls it)."""
        EvaluationResults.from_dict(json.loads(json.dumps(self.to_dict(), allow_nan=True)))

    def to_json(self, indent: int | None = 2) -> str:
        """The validated evaluation JSON text; per-query number lists stay on one line each."""
        self.validate()
        data = self.to_dict()
        if not indent:
            return json.dumps(data, ensure_ascii=False, allow_nan=False)
        # Long per-query lists as placeholders, so the indented dump keeps them on one line.
        marker = secrets.token_hex(8)
        compact: dict[str, str] = {}

        def one_line(values: list) -> str:
            token = f"{marker}-{len(compact)}"
            compact[f'"{token}"'] = json.dumps(values, allow_nan=False)
            return token

        for section in SECTIONS:
            for system in data[section]:
                system["latency_ms"] = one_line(system["latency_ms"])
                for key in ("probabilities", "should_refuse"):
                    if "refusal" in system:
                        system["refusal"][key] = one_line(system["refusal"][key])
        text = json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False)
        for token, values in compact.items():
            text = text.replace(token, values, 1)
        return text

    def save(self, path: str | Path) -> Path:
        """Validate, then write ``path`` atomically (a temporary sibling renamed into place)."""
        path = Path(path)
        atomic_write_text(path, self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> EvaluationResults:
        """Read and validate an evaluation JSON; ``EvaluationFileError`` names the file and field."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise EvaluationFileError("no such file", path) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise EvaluationFileError(f"cannot read it ({exc})", path) from None
        from llama_index_ragtune.data.reading import unique_keys

        try:  # a BOM is accepted; a repeated key is an error, not a silent last-wins
            data = json.loads(text.removeprefix("\ufeff"), object_pairs_hook=unique_keys)
        except json.JSONDecodeError as exc:
            raise EvaluationFileError(
                f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", path
            ) from None
        except RecursionError:
            raise EvaluationFileError("not valid JSON (nested too deeply to read)", path) from None
        except ValueError as exc:  # an integer of thousands of digits, a repeated key
            raise EvaluationFileError(f"not valid JSON ({exc})", path) from None
        return cls.from_dict(data, source=path)


def _finite_or_none(value: Any) -> Any:
    """``None`` for a NaN or infinite number (an undefined value: ``null`` in the file);
    anything else as it is, for validation to judge."""
    if isinstance(value, Real) and not isinstance(value, bool):
        try:
            return value if math.isfinite(value) else None
        except OverflowError:  # an integer beyond floats: validation names it
            return value
    return value


def _metric_values(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Plain metric values with NaN / infinite ones as ``None`` (undefined)."""
    return {key: _finite_or_none(value) for key, value in plain_metrics(metrics).items()}


def _system_dict(system: SystemResult) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": system.name,
        "stage": system.stage,
        "metrics": dict(system.metrics),
        "latency_ms": list(system.latency_ms),
    }
    if system.refusal is not None:
        data["refusal"] = {
            "probabilities": list(system.refusal.probabilities),
            "should_refuse": list(system.refusal.should_refuse),
            "threshold": system.refusal.threshold,
        }
        if system.refusal.policy is not None:
            data["refusal"]["policy"] = system.refusal.policy
    return data


# ---------------------------------------------------------------------- validation
def _parse(data: Any) -> EvaluationResults:
    top = Fields(
        data,
        "",
        required=("format", "format_version", "title", "created", "bundle_version", "dataset"),
        optional=("notes", *SECTIONS, "decisions", "timings"),
    )
    if top.get("format") != FORMAT:
        raise Invalid("format", f"expected {FORMAT!r}, got {top.get('format')!r}")
    version = top.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise Invalid(
            "format_version",
            f"this version of llama-index-ragtune reads version {FORMAT_VERSION}, got "
            f"{version!r}; upgrade llama-index-ragtune or re-run the evaluation",
        )
    created = top.text("created")
    try:
        datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid("created", f"expected an ISO 8601 time, got {created!r}") from None
    dataset = top.child("dataset", required=("name", "queries"))
    queries = dataset.child("queries")
    return EvaluationResults(
        title=top.text("title"),
        created=created,
        bundle_version=top.text("bundle_version"),
        dataset_name=dataset.text("name"),
        queries={key: queries.count(key) for key in queries.names()},
        notes=top.text("notes", allow_empty=True) if top.has("notes") else None,
        retrieval=[_parse_system(item, False) for item in top.items("retrieval")],
        reranking=[_parse_system(item, False) for item in top.items("reranking")],
        generation=[_parse_system(item, True) for item in top.items("generation")],
        decisions=[_parse_decision(item) for item in top.items("decisions")],
        timings=_parse_timings(top.child("timings")) if top.has("timings") else {},
    )


def _parse_timings(timings: Fields) -> dict[str, float]:
    return {step: timings.number(step, low=0.0) for step in timings.names()}  # type: ignore[misc]


def _parse_system(item: Fields, generation: bool) -> SystemResult:
    item.check_keys(
        required=("name", "stage", "metrics"),
        optional=("latency_ms", "refusal") if generation else ("latency_ms",),
    )
    metrics = item.child("metrics")
    refusal = None
    if item.has("refusal") and item.get("refusal") is not None:
        block = item.child("refusal", required=("probabilities", "should_refuse"))
        block.check_keys(("probabilities", "should_refuse"), optional=("threshold", "policy"))
        probabilities = block.numbers("probabilities", low=0.0, high=1.0)
        should_refuse = block.flags("should_refuse")
        if len(should_refuse) != len(probabilities):
            raise Invalid(
                block.path("should_refuse"),
                f"has {len(should_refuse)} entries for {len(probabilities)} probabilities; "
                "give one 0/1 per question",
            )
        threshold = block.get("threshold")
        refusal = RefusalScores(
            probabilities,
            should_refuse,
            None if threshold is None else block.number("threshold", low=0.0, high=1.0),
            block.text("policy") if block.get("policy") is not None else None,
        )
    return SystemResult(
        name=item.text("name"),
        stage=item.text("stage"),
        metrics={key: _metric(metrics, key) for key in metrics.names()},
        latency_ms=item.numbers("latency_ms", low=0.0) if item.has("latency_ms") else [],
        refusal=refusal,
    )


def _metric(metrics: Fields, key: str) -> float | None:
    """A metric value; a ``*_rate`` is a share of questions, so in [0, 1] (the report
    takes a missing answer or refusal rate as the other's complement: 1.5 gave -50%)."""
    if key.endswith("_rate"):
        return metrics.number(key, low=0.0, high=1.0, nullable=True)
    return metrics.number(key, nullable=True)


def _parse_decision(item: Fields) -> Decision:
    item.check_keys(
        required=("part", "promoted", "metric", "champion", "challenger", "margin", "reason"),
        optional=("greater_is_better", "forced"),
    )
    part = item.text("part")
    if part not in PARTS:
        raise Invalid(item.path("part"), f"expected one of {list(PARTS)}, got {part!r}")
    return Decision(
        part=part,
        promoted=item.boolean("promoted"),
        metric=item.text("metric"),
        champion=item.number("champion", nullable=True),
        challenger=item.number("challenger", nullable=True),
        margin=item.number("margin"),  # type: ignore[arg-type]
        reason=item.text("reason", allow_empty=True),
        greater_is_better=item.boolean("greater_is_better")
        if item.has("greater_is_better")
        else metric_direction(item.text("metric")) >= 0,  # a loss: lower is better
        forced=item.boolean("forced") if item.has("forced") else False,
    )
