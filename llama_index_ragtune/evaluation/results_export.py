"""``EvaluationResults`` as plain JSON data, every object field checked for its shape.

Results are built in code as well as loaded: a system appended as a dict, ``queries``
set to ``None``, a NumPy number or a ``set`` among the metrics used to fail inside the
renderers with an ``AttributeError`` / ``TypeError`` naming no field, or to pass and
break ``save`` later. :func:`results_data` turns the fields into the evaluation JSON's
dict (NumPy numbers as plain ``int`` / ``float``, tuples as lists), so validation
(``results_format.parse_evaluation``) judges the values; what cannot become JSON data
is an ``Invalid`` naming the field (``retrieval[1].metrics``), never a crash.

Example::

    from llama_index_ragtune.evaluation.results_export import results_data

    results_data(results)["retrieval"][0]["metrics"]   # {'ndcg@10': 0.61}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields as dataclass_fields
from numbers import Integral, Real
from typing import Any

from llama_index_ragtune.evaluation._validate import Invalid, _kind
from llama_index_ragtune.evaluation.results_format import FORMAT, FORMAT_VERSION, SECTIONS
from llama_index_ragtune.evaluation.system_result import Decision, RefusalScores, SystemResult

__all__ = ["results_data"]

_SCALARS = (str, int, float, bool, type(None))
_SECTION_BUILDERS = {
    "retrieval": "add_retrieval",
    "reranking": "add_reranking",
    "generation": "add_generation",
}


def results_data(results: Any) -> dict[str, Any]:
    """The evaluation JSON of ``results`` as a dict (see ``results`` for the format).

    Example::

        results_data(results)["dataset"]    # {'name': 'retail-help', 'queries': {'test': 40}}
    """
    data: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "title": _plain(results.title, "title"),
        "created": _plain(results.created, "created"),
        "bundle_version": _plain(results.bundle_version, "bundle_version"),
        "dataset": {
            "name": _plain(results.dataset_name, "dataset.name"),
            "queries": _mapping(results.queries, "dataset.queries", "split names to counts"),
        },
    }
    if results.notes is not None:
        data["notes"] = _plain(results.notes, "notes")
    for section in SECTIONS:
        systems = _sequence(getattr(results, section), section, "SystemResult")
        data[section] = [
            _system_data(system, f"{section}[{i}]", section) for i, system in enumerate(systems)
        ]
    decisions = _sequence(results.decisions, "decisions", "Decision")
    data["decisions"] = [_decision_data(d, f"decisions[{i}]") for i, d in enumerate(decisions)]
    data["timings"] = _mapping(results.timings, "timings", "step names to seconds")
    return data


def _type(value: Any) -> str:
    """How an object built in code is named in an error: ``None``, ``dict``, ``SystemResult``."""
    return "None" if value is None else type(value).__name__


def _plain(value: Any, where: str) -> Any:
    """A JSON scalar: NumPy numbers as ``int`` / ``float``; validation judges the value.
    A container or another object is ``Invalid`` here (a set or a nested dict where a
    number goes; one holding itself would make the checks loop)."""
    if type(value) in (float, int, str, bool) or value is None:
        return value
    if isinstance(value, Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, _SCALARS):  # a str or float subclass: kept as it is
        return value
    raise Invalid(where, f"expected a number, a string or null, got {_kind(value)}")


def _numbers(values: Any, where: str) -> list[Any]:
    """A list of plain numbers from a list, tuple or NumPy array."""
    values = _sequence(values, where, "number")
    if type(values) is list and all(type(v) is float for v in values):
        return list(values)  # the common case, at C speed (millions of latencies)
    return [_plain(v, f"{where}[{i}]") for i, v in enumerate(values)]


def _sequence(values: Any, where: str, item: str) -> Sequence[Any]:
    if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__len__"):
        raise Invalid(where, f"expected a list of {item}s, got {_type(values)}")
    try:
        return list(values)
    except TypeError:
        raise Invalid(where, f"expected a list of {item}s, got {_type(values)}") from None


def _mapping(values: Any, where: str, what: str) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        raise Invalid(where, f"expected a dict of {what}, got {_type(values)}")
    out = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise Invalid(where, f"the key {key!r} is not a string; name it with a string")
        out[key] = _plain(value, f"{where}.{key}" if where else key)
    return out


def _system_data(system: Any, where: str, section: str) -> dict[str, Any]:
    if not isinstance(system, SystemResult):
        raise Invalid(
            where,
            f"expected a SystemResult (add one with {_SECTION_BUILDERS[section]}), got "
            f"{_type(system)}",
        )
    data: dict[str, Any] = {
        "name": _plain(system.name, f"{where}.name"),
        "stage": _plain(system.stage, f"{where}.stage"),
        "metrics": _mapping(system.metrics, f"{where}.metrics", "metric names to values"),
        "latency_ms": _numbers(system.latency_ms, f"{where}.latency_ms"),
    }
    refusal = system.refusal
    if refusal is None:
        return data
    if not isinstance(refusal, RefusalScores):
        raise Invalid(f"{where}.refusal", f"expected RefusalScores or None, got {_type(refusal)}")
    block = f"{where}.refusal"
    data["refusal"] = {
        "probabilities": _numbers(refusal.probabilities, f"{block}.probabilities"),
        "should_refuse": _numbers(refusal.should_refuse, f"{block}.should_refuse"),
        "threshold": _plain(refusal.threshold, f"{block}.threshold"),
    }
    if refusal.policy is not None:
        data["refusal"]["policy"] = _plain(refusal.policy, f"{block}.policy")
    return data


def _decision_data(decision: Any, where: str) -> dict[str, Any]:
    if not isinstance(decision, Decision):
        raise Invalid(
            where, f"expected a Decision (add one with add_decision), got {_type(decision)}"
        )
    return {
        f.name: _plain(getattr(decision, f.name), f"{where}.{f.name}")
        for f in dataclass_fields(decision)
    }
