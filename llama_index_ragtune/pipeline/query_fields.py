"""One line of a queries file checked field by field and read as a ``LabelledQuery``.

The fields and their rules are those of :mod:`llama_index_ragtune.pipeline.queries`;
every fault is a ``DataError`` naming the file and line (``where``).
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from llama_index_ragtune._invisible import is_blank
from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.field_names import unknown_fields_message
from llama_index_ragtune.pipeline.gold_references import _NodeIndex, clipped, shown
from llama_index_ragtune.pipeline.labelled_query import LabelledQuery

FIELDS = ("id", "question", "store", "filters", "gold", "answer", "answerable", "split")
SPLITS = ("train", "test")


def _is_refusal(answer: str) -> bool:
    from llama_index_ragtune.grounding.answers import is_refusal

    return is_refusal(answer)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _check_text(name: str, text: str, where: dict[str, Any]) -> None:
    """``DataError`` for a control character (a NUL, ...: not text, e.g. a binary paste) or,
    in a question or id, no visible character at all (``_invisible.is_blank``: only
    whitespace, zero-width / format characters, variation selectors)."""
    bad = _CONTROL.search(text)
    if bad:
        raise DataError(
            f"{name!r} contains the control character U+{ord(bad.group()):04X} at position "
            f"{bad.start()}",
            hint="remove it (control characters are not text)",
            **where,
        )
    if name in ("question", "id") and is_blank(text):
        raise DataError(
            f"{name!r} has no visible character (only whitespace, zero-width or format "
            f"characters: {clipped(ascii(text))})",
            hint=f"write the {name} in visible characters",
            **where,
        )
    if name == "id":
        _check_id(text, where)


def _check_id(qid: str, where: dict[str, Any]) -> None:
    """``DataError`` for an id holding a line-separator, C1 control or bidi character
    (``node_parser.documents.ID_BREAKING_CHARACTERS``, as document ids are checked): ids
    are printed in logs, reports and evaluation files, where U+2028 breaks the line and
    U+202E reverses what follows."""
    from llama_index_ragtune.node_parser.documents import ID_BREAKING_CHARACTERS

    bad = ID_BREAKING_CHARACTERS.search(qid)
    if bad:
        what = unicodedata.name(bad.group(), "a control character")
        raise DataError(
            f"'id' {shown(qid)} holds {what} (U+{ord(bad.group()):04X}) at position "
            f"{bad.start()}, which would break the logs and reports that print it",
            hint=f"write the id without it, e.g. {shown(ID_BREAKING_CHARACTERS.sub('-', qid))}",
            **where,
        )


def _gold_ids(gold: list[Any], nodes: _NodeIndex, where: dict[str, Any]) -> list[str]:
    """The node ids of the ``gold`` references, in order, each once; a reference repeated in
    the list (20,000 copies fit in one line) is resolved once."""
    ids: dict[str, None] = {}
    done: set[str] = set()
    for ref in gold:
        key = json.dumps(ref, sort_keys=True)
        if key in done:
            continue
        done.add(key)
        ids.update(dict.fromkeys(nodes.resolve(ref, where)))
    return list(ids)


def _parse_line(obj: Any, nodes: _NodeIndex, where: dict[str, Any], n: int) -> LabelledQuery:
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", **where)
    unknown = set(obj) - set(FIELDS)
    if unknown:
        raise DataError(
            unknown_fields_message(unknown, FIELDS),
            hint="rename each field to the accepted name it stands for, or remove it",
            **where,
        )
    question = obj.get("question")
    if not isinstance(question, str) or not question.strip():
        raise DataError("'question' must be a non-empty string", **where)
    _check_text("question", question, where)
    qid = obj.get("id", f"line-{n}")
    if isinstance(qid, bool) or not isinstance(qid, (str, int)) or not str(qid).strip():
        raise DataError(f"'id' must be a non-empty string, got {shown(qid)}", **where)
    _check_text("id", str(qid), where)
    # Only null / absent means "none": a false, 0 or "" is a wrong type, not an empty value.
    filters = {} if obj.get("filters") is None else obj["filters"]
    if not isinstance(filters, dict):
        raise DataError(
            f"'filters' must be an object {{key: value}}, got {shown(filters)}", **where
        )
    if obj.get("store") is not None:
        if "store" in filters and filters["store"] != obj["store"]:
            raise DataError(
                f"'store' {shown(obj['store'])} contradicts 'filters' store "
                f"{shown(filters['store'])}",
                hint="give the store once",
                **where,
            )
        filters = {**filters, "store": obj["store"]}
    for key, value in filters.items():
        if key not in nodes.keys:
            raise DataError(f"filter key {shown(key)} is not metadata of any node", **where)
        if not isinstance(value, (str, int, float, bool)):
            raise DataError(
                f"filter {shown(key)} must compare a flat value (a string, number or "
                f"boolean), got {shown(value)}",
                **where,
            )
    if filters:
        nodes.check_filters(filters, where)
    gold = [] if obj.get("gold") is None else obj["gold"]
    if not isinstance(gold, list):
        raise DataError(f"'gold' must be a list of references, got {type(gold).__name__}", **where)
    gold_ids = _gold_ids(gold, nodes, where)
    answerable = obj.get("answerable", bool(gold_ids))
    if not isinstance(answerable, bool):
        raise DataError(f"'answerable' must be true or false, got {shown(answerable)}", **where)
    if answerable and not gold_ids:
        raise DataError(
            "an answerable question needs 'gold' references",
            hint='add the documents/sections that answer it, or set "answerable": false',
            **where,
        )
    for node_id in gold_ids:
        outside = nodes.failed_filters(node_id, filters) if answerable else {}
        if outside:
            raise DataError(
                f"gold node {node_id!r} does not pass the question's filters {shown(outside)} "
                f"(its metadata: {shown({k: nodes.meta[node_id].get(k) for k in outside})}), "
                "so it can never be retrieved for it",
                **where,
            )
    answer = obj.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise DataError(f"'answer' must be a string or null, got {type(answer).__name__}", **where)
    if answer is not None:
        _check_text("answer", answer, where)
    if answer is not None and is_blank(answer):
        answer = None  # "", " " or a lone zero-width space: no reference answer
    if answer is not None and not answerable and not _is_refusal(answer):
        # an answer without gold made the question unanswerable: trained to refuse, its
        # answer never used (the refusal sentence itself is its target, so it may stand)
        why = "'answerable' is false" if "answerable" in obj else "it has no 'gold' references"
        raise DataError(
            f"the question has an 'answer' but {why}, so its target is the refusal and the "
            "answer is never used",
            hint='add the "gold" documents/sections that hold the answer, or set "answer": '
            "null for a question the documents cannot answer",
            **where,
        )
    split = obj.get("split")
    if split is not None and split not in SPLITS:
        meant = split.strip().lower() if isinstance(split, str) else None
        raise DataError(
            f"'split' must be 'train', 'test' or null, got {shown(split)}",
            hint=f"write {meant!r} (lower case, no spaces)"
            if meant in SPLITS
            else "leave it out (null) to let the run split the questions",
            **where,
        )
    return LabelledQuery(
        id=str(qid),
        question=question.strip(),
        gold_node_ids=gold_ids,
        answer=answer.strip() if answer is not None else None,
        answerable=answerable,
        filters=dict(filters),
        split=split,
    )
