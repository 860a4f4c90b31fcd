"""Saved refusal policies: rebuild one from its JSON record, and check a record's fields.

``RefusalPolicy.save`` / ``to_dict`` write the record; :func:`load_refusal_policy`
reads it back (re-loading the answerability scorer it names) and
:func:`check_policy_record` checks every field first, so that a damaged or edited
record (a bundle's manifest, a policy file) is named field by field rather than
failing deep inside a policy.

Example::

    from llama_index_ragtune.llms.refusal_policy_records import load_refusal_policy

    policy = load_refusal_policy("runs/decoder/refusal_policy.json")
    policy.decide(["apple return policy?"], [["Fresh produce ..."]])[0].refused
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llama_index_ragtune.evaluation.refusal_calibration import RefusalCombination
from llama_index_ragtune.llms.refusal_policy import (
    ANSWERABILITY,
    DECODER,
    AnswerabilityRefusalPolicy,
    CombinedRefusalPolicy,
    DecoderRefusalPolicy,
    NoRefusalPolicy,
    RefusalPolicy,
)

POLICIES = {
    cls.__name__: cls
    for cls in (
        DecoderRefusalPolicy,
        AnswerabilityRefusalPolicy,
        CombinedRefusalPolicy,
        NoRefusalPolicy,
    )
}


def load_refusal_policy(
    source: str | os.PathLike | Mapping[str, Any], scorer: Any | None = None, **scorer_kwargs: Any
) -> RefusalPolicy:
    """Rebuild a policy saved by ``RefusalPolicy.save`` (a JSON path) or ``to_dict`` (a dict).

    ``scorer`` replaces the recorded scorer; otherwise an ``AnswerabilityScorer`` is
    loaded from the recorded model folder (relative paths: from the JSON file's folder)
    with ``scorer_kwargs``, or, for a policy fitted on a ``SimilarityAnswerabilityScorer``,
    one over ``scorer_kwargs["embed_model"]`` (default ``Settings.embed_model``).
    A missing or malformed field raises ``ValueError`` naming it.

    Example::

        policy = load_refusal_policy("runs/decoder/refusal_policy.json")
        LocalChatLLM("runs/decoder/merged", refusal_policy=policy)
    """
    base = None
    if isinstance(source, Mapping):
        data: Any = dict(source)
        where = "load_refusal_policy: the policy"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"load_refusal_policy: no policy file at {path}.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise ValueError(
                f"load_refusal_policy: {path} is not readable JSON ({exc}); save the policy "
                "again with RefusalPolicy.save."
            ) from None
        where = f"load_refusal_policy: {path}"
        base = path.parent
    else:
        raise TypeError(
            "load_refusal_policy: source must be a policy JSON path or a dict from "
            f"RefusalPolicy.to_dict, got {type(source).__name__}."
        )
    data = check_policy_record(data, where)
    kind = data["type"]
    if kind == "DecoderRefusalPolicy":
        policy: RefusalPolicy = DecoderRefusalPolicy(data["threshold"])
    elif kind == "NoRefusalPolicy":
        policy = NoRefusalPolicy()
    else:
        if scorer is None and data.get("scorer_kind") == "similarity":
            from llama_index_ragtune.llms.answerability import SimilarityAnswerabilityScorer

            scorer = SimilarityAnswerabilityScorer(scorer_kwargs.get("embed_model"))
        if scorer is None:
            from llama_index_ragtune.llms.answerability import AnswerabilityScorer

            recorded = data.get("scorer")
            if not recorded:
                raise ValueError(
                    f"{where}: the {kind} records no scorer folder (field 'scorer'); pass scorer=."
                )
            folder = Path(recorded)
            if not folder.is_absolute() and base is not None:
                folder = base / folder
            # embed_model is for the similarity scorer; a trained scorer takes the rest
            kwargs = {k: v for k, v in scorer_kwargs.items() if k != "embed_model"}
            scorer = AnswerabilityScorer(folder, **kwargs)
        if kind == "AnswerabilityRefusalPolicy":
            policy = AnswerabilityRefusalPolicy(scorer, data["threshold"])
        else:
            combination = RefusalCombination.from_dict(data["combination"])
            policy = CombinedRefusalPolicy(scorer, combination, data["threshold"])
    policy.calibration = data.get("calibration")
    return policy


def check_policy_record(data: Any, where: str, prefix: str = "") -> dict[str, Any]:
    """``data`` (a ``RefusalPolicy.to_dict`` record) when every field ``load_refusal_policy``
    reads is well formed, else ``ValueError`` naming ``where`` and the field (``prefix`` +
    its name, e.g. ``generation.refusal_policy.threshold``)."""

    def bad(name: str, reason: str) -> ValueError:
        return ValueError(f"{where}: {prefix}{name} {reason}.")

    if not isinstance(data, Mapping):
        raise ValueError(
            f"{where}: {prefix.rstrip('.') or 'the policy'} must be an object (a saved "
            f"RefusalPolicy), got {type(data).__name__}."
        )
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in POLICIES:
        raise bad("type", f"{kind!r} is an unknown policy type; expected one of {sorted(POLICIES)}")
    if kind != "NoRefusalPolicy":
        threshold = data.get("threshold")
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not 0.0 <= threshold <= 1.0  # False for NaN
        ):
            raise bad("threshold", f"must be a number in [0, 1], got {threshold!r}")
    if kind in ("AnswerabilityRefusalPolicy", "CombinedRefusalPolicy"):
        scorer_kind = data.get("scorer_kind")
        if scorer_kind not in (None, "similarity"):
            raise bad("scorer_kind", f"must be 'similarity' or absent, got {scorer_kind!r}")
        recorded = data.get("scorer")
        if recorded is not None and (not isinstance(recorded, str) or not recorded):
            raise bad("scorer", f"must be a model folder (a string) or null, got {recorded!r}")
    if kind == "CombinedRefusalPolicy":
        _check_combination(data.get("combination"), bad)
    calibration = data.get("calibration")
    if calibration is not None and not isinstance(calibration, Mapping):
        raise bad("calibration", f"must be an object or null, got {type(calibration).__name__}")
    return dict(data)


def _check_combination(combination: Any, bad: Any) -> None:
    """Raise ``bad("combination...", reason)`` unless ``RefusalCombination.from_dict`` can read it."""
    if not isinstance(combination, Mapping):
        raise bad("combination", f"must be an object (a RefusalCombination), got {combination!r}")
    signals = combination.get("signals")
    if (
        not isinstance(signals, list)
        or len(signals) != 2
        or set(map(str, signals)) != {DECODER, ANSWERABILITY}
    ):
        raise bad(
            "combination.signals", f"must be [{DECODER!r}, {ANSWERABILITY!r}], got {signals!r}"
        )
    for name in ("weights", "means", "scales"):
        values = combination.get(name)
        if (
            not isinstance(values, list)
            or len(values) != len(signals)
            or not all(_finite(v) for v in values)
        ):
            raise bad(
                f"combination.{name}", f"must be {len(signals)} finite numbers, got {values!r}"
            )
    if not all(s != 0 for s in combination["scales"]):
        raise bad("combination.scales", f"must not hold 0, got {combination['scales']!r}")
    if not _finite(combination.get("intercept")):
        raise bad(
            "combination.intercept", f"must be a number, got {combination.get('intercept')!r}"
        )
    for name, default in (("n_examples", 0), ("l2", 1.0)):
        value = combination.get(name, default)
        if not _finite(value) or value < 0 or (name == "n_examples" and value != int(value)):
            raise bad(f"combination.{name}", f"must be a number >= 0, got {value!r}")


def _finite(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False
