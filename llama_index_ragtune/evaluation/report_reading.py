"""Reading a saved ``RetrievalReport`` / ``GenerationReport`` JSON: every field checked.

``ReportIO.from_json`` reads the file as an evaluation JSON is read
(``results_reading.read_evaluation_json``: a plain file only, never a named pipe or a
device; capped; UTF-8; no repeated key, no integer of thousands of digits), then
``from_dict`` checks its shape here. A bad field is an ``EvaluationFileError`` naming
the file and the field (``queries[3].latency_ms``), not a ``KeyError`` / ``TypeError``
from inside the report, nor an ``inf`` latency read from ``1e999``.

Example::

    from llama_index_ragtune.evaluation.report_reading import check_retrieval_report

    check_retrieval_report({"k_values": [10], "metrics": ["recall"], "queries": [
        {"qid": "q1", "metrics": {"recall@10": 1.0}, "retrieved": ["d1"], "latency_ms": 2.0}]})
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llama_index_ragtune.evaluation._validate import Fields, Invalid, _kind
from llama_index_ragtune.evaluation.results_reading import (
    MAX_EVALUATION_BYTES,
    EvaluationFileError,
    read_evaluation_json,
)

__all__ = [
    "check_generation_report",
    "check_retrieval_report",
    "naming_file",
    "read_report_json",
]

_QUERY_FIELDS = ("qid", "metrics", "retrieved", "latency_ms", "scores")


def read_report_json(path: str | Path, max_bytes: int | None = MAX_EVALUATION_BYTES) -> Any:
    """The parsed JSON of a saved report (``EvaluationFileError`` naming the file when it
    is no plain file, too large, not UTF-8 or not JSON); its shape is not yet checked.

    Example::

        read_report_json("runs/base.json")["k_values"]   # [1, 3, 5, 10, 100]
    """
    return read_evaluation_json(path, max_bytes=max_bytes)


def _fail(exc: Invalid) -> EvaluationFileError:
    error = EvaluationFileError(exc.message, field=exc.field or None)
    error.detail = exc.message  # type: ignore[attr-defined]  # for naming the file later
    return error


def naming_file(exc: EvaluationFileError, path: str | Path) -> EvaluationFileError:
    """``exc`` (from ``check_*_report``) again, naming the file ``path`` as well.

    Example::

        raise naming_file(exc, "runs/base.json") from None
    """
    return EvaluationFileError(getattr(exc, "detail", str(exc)), path, exc.field or None)


def _text_or_null(fields: Fields, key: str) -> None:
    value = fields.get(key)
    if value is not None and not isinstance(value, str):
        raise Invalid(fields.path(key), f"expected a string or null, got {_kind(value)}")


def _texts(fields: Fields, key: str) -> None:
    values = fields.get(key)
    if not isinstance(values, list):
        raise Invalid(fields.path(key), f"expected a list of strings, got {_kind(values)}")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise Invalid(f"{fields.path(key)}[{i}]", f"expected a string, got {_kind(value)}")


def _number_or_null(value: Any, where: str, low: float | None = None) -> None:
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (low is not None and value < low):
        bound = "" if low is None else f" >= {low:g}"
        raise Invalid(where, f"expected a finite number{bound} or null, got {_kind(value)}")


def check_retrieval_report(data: Any) -> None:
    """Raise ``EvaluationFileError`` naming the field when ``data`` is not what
    ``RetrievalReport.to_dict`` writes (fields of later versions are allowed at the top).

    Example::

        check_retrieval_report({"k_values": [10], "metrics": ["ndcg"], "queries": []})
    """
    try:
        top = Fields(data, "", required=("queries", "k_values", "metrics"))
        _text_or_null(top, "name")
        k_values = top.get("k_values")
        if not isinstance(k_values, list) or not k_values:
            raise Invalid(
                "k_values", f"expected a non-empty list of cut-offs, got {_kind(k_values)}"
            )
        for i, k in enumerate(k_values):
            if not isinstance(k, int) or isinstance(k, bool) or k < 1:
                raise Invalid(f"k_values[{i}]", f"expected a whole number >= 1, got {_kind(k)}")
        _texts(top, "metrics")
        if top.get("skipped") is not None:
            _texts(top, "skipped")
        keys = [f"{m}@{k}" for m in top.get("metrics") for k in k_values]
        rows = top.get("queries")
        if not isinstance(rows, list):
            raise Invalid("queries", f"expected a list, got {_kind(rows)}")
        for i, row in enumerate(rows):
            _check_query(Fields(row, f"queries[{i}]"), keys)
    except Invalid as exc:
        raise _fail(exc) from None


def _check_query(row: Fields, keys: list[str]) -> None:
    row.check_keys(("qid", "metrics", "retrieved", "latency_ms"), _QUERY_FIELDS[4:])
    row.text("qid", allow_empty=True)
    metrics = row.get("metrics")
    if not isinstance(metrics, Mapping):
        raise Invalid(row.path("metrics"), f"expected an object, got {_kind(metrics)}")
    for key in keys:
        if key not in metrics:
            raise Invalid(
                row.path("metrics"),
                f"missing {key!r} (every row holds each metric at each of k_values)",
            )
    for key, value in metrics.items():
        _number_or_null(value, f"{row.path('metrics')}.{key}")
    _texts(row, "retrieved")
    _number_or_null(row.get("latency_ms"), row.path("latency_ms"), low=0.0)
    scores = row.get("scores")
    scores = [] if scores is None and not row.has("scores") else scores
    if not isinstance(scores, list):
        raise Invalid(row.path("scores"), f"expected a list, got {_kind(scores)}")
    for j, score in enumerate(scores):
        _number_or_null(score, f"{row.path('scores')}[{j}]")


def check_generation_report(data: Any) -> None:
    """Raise ``EvaluationFileError`` naming the field when ``data`` is not what
    ``GenerationReport.to_dict`` writes: rows of objects with boolean ``answerable`` /
    ``refused`` (``uncited`` for an answer), metric values numbers or null.

    Example::

        check_generation_report({"rows": [{"answerable": True, "refused": True}]})
    """
    try:
        top = Fields(data, "", required=("rows",))
        _text_or_null(top, "name")
        if top.get("metric_keys") is not None:
            _texts(top, "metric_keys")
        metric_keys = top.get("metric_keys") or []
        rows = top.get("rows")
        if not isinstance(rows, list):
            raise Invalid("rows", f"expected a list, got {_kind(rows)}")
        for i, item in enumerate(rows):
            row = Fields(item, f"rows[{i}]", required=("answerable", "refused"))
            row.boolean("answerable")
            if not row.boolean("refused"):
                row.check_keys(("uncited",), None)
                row.boolean("uncited")
            for key in metric_keys:
                _number_or_null(row.get(key), row.path(key))
            _number_or_null(row.get("refusal_probability"), row.path("refusal_probability"))
            signals = row.get("refusal_signals")
            if signals is not None:
                if not isinstance(signals, Mapping):
                    raise Invalid(
                        row.path("refusal_signals"), f"expected an object, got {_kind(signals)}"
                    )
                for name, value in signals.items():
                    _number_or_null(value, f"{row.path('refusal_signals')}.{name}")
    except Invalid as exc:
        raise _fail(exc) from None
