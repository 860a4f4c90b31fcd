"""What goes into a feedback record: every field checked and normalised before any SQL runs.

``prepare_entry`` turns ``FeedbackStore.record``'s arguments into one plain
dict (or raises ``TypeError`` / ``ValueError`` naming the bad field), so a bad
record never reaches the database and a batch never stops half-written.

Example::

    from llama_index_ragtune.feedback.entries import prepare_entry

    entry = prepare_entry("apple return policy?", answer="7 days.", rating=1)
    entry["rating"], entry["nodes"]          # (1, [])
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import time
import unicodedata
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from llama_index.core.schema import MetadataMode

from llama_index_ragtune._invisible import is_blank

__all__ = [
    "check_json",
    "check_label",
    "check_rating",
    "check_record_id",
    "check_text",
    "dump_metadata",
    "in_time_range",
    "node_row",
    "is_rating",
    "prepare_entry",
    "show",
    "source_spelling",
    "text_hash",
    "timestamp",
]

TIME_RANGE = "between 0001-01-01 and 9999-12-31 UTC (UNIX time -62135596800 to 253402300799)"


def show(value: Any) -> str:
    """A short repr for error messages (a huge int by its size: its repr may not even exist)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def in_time_range(seconds: float) -> bool:
    """Whether ``datetime.fromtimestamp(seconds, tz=UTC)`` can represent ``seconds``."""
    try:
        datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, ValueError, OSError):
        return False
    return True


def timestamp(value: datetime | float, name: str, stored: bool = True) -> float:
    """``value`` (a datetime or a UNIX time) as a UNIX time; raises naming ``name``.

    ``stored`` times (``created_at``) must also be representable as a datetime
    (years 1-9999), so every later read of the record works; filters need not be.
    """
    if isinstance(value, datetime):
        try:
            seconds = value.timestamp()
        except (OverflowError, ValueError, OSError):
            raise ValueError(
                f"{name} {value!r} has no UNIX time (a naive datetime is local time); pass a "
                f"timezone-aware datetime {TIME_RANGE}"
            ) from None
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a datetime or a finite UNIX time, got {show(value)}")
    else:
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"{name} must be a time {TIME_RANGE}, got {show(value)}") from None
        if not math.isfinite(seconds):
            raise TypeError(f"{name} must be a datetime or a finite UNIX time, got {show(value)}")
    if stored and not in_time_range(seconds):
        raise ValueError(
            f"{name} must be a time {TIME_RANGE}, got {show(value)}; pass the real time of the "
            "answer (or leave it out for now)"
        )
    return seconds


def check_record_id(record_id: Any) -> str:
    """A record id argument, checked like any other text."""
    if record_id is None:
        raise TypeError(
            "record_id is None: that answer was not recorded (FeedbackQueryEngine sets "
            "feedback_id=None when the store failed); pass the id record() returned"
        )
    return check_text(record_id, "record_id")


def check_text(value: Any, name: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{name} is not valid Unicode text (a lone surrogate at position {exc.start}); "
            "decode the input properly before storing it"
        ) from None
    return value


MAX_LABEL_CHARS = 256


_HIDDEN = {
    "Cf": "an invisible format character (a zero-width space, a byte-order mark, a "
    "direction mark or override)",
    "Zl": "a line separator (U+2028)",
    "Zp": "a paragraph separator (U+2029)",
}


def check_label(value: Any, name: str) -> str:
    """A label a filter must match exactly (``bundle_version``): visible text, no control,
    invisible or line-separating character, no space at either end, at most
    ``MAX_LABEL_CHARS`` characters; returned in Unicode NFC (``"ve\u0301"`` is ``"vé"``),
    the form filters also look for."""
    value = str(check_text(value, name))  # a NumPy str_ as a plain str
    problem = None
    hidden = next((_HIDDEN[c] for c in map(unicodedata.category, value) if c in _HIDDEN), None)
    if is_blank(value):
        problem = "has no visible character"
    elif len(value) > MAX_LABEL_CHARS:
        problem = f"is {len(value):,} characters long (at most {MAX_LABEL_CHARS})"
    elif any(unicodedata.category(ch) == "Cc" for ch in value):
        problem = "holds a control character (a line break, tab, NUL or escape)"
    elif hidden:  # "v1\u200b" shows as "v1" but no filter "v1" matches it
        problem = f"holds {hidden}: no filter typed as the label looks matches it"
    elif value != value.strip():
        problem = "has spaces at its ends"
    if problem:
        raise ValueError(
            f"{name} {ascii(value[:80])} {problem}: it is a label that filters "
            f"(records(bundle_version=...), refresh) match exactly; pass the bundle's version "
            "as it is named, such as 'v3'"
        )
    return unicodedata.normalize("NFC", value)


def is_rating(value: Any) -> bool:
    """Whether ``value`` is the number +1 or -1 (not a bool, NumPy's included, nor an array)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value in (1, -1)


def check_rating(rating: Any) -> int | None:
    if rating is None:
        return None
    if not is_rating(rating):
        raise ValueError(
            f"rating must be +1 (up), -1 (down) or None (unrated), got {type(rating).__name__} "
            f"{show(rating)}"
        )
    return int(rating)


def check_json(value: Any, name: str) -> None:
    """Raise ``ValueError`` naming the first key or string of decoded JSON that is not valid Unicode."""
    if isinstance(value, str):
        check_text(value, name, allow_empty=True)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, f"{name} key {key!r}", allow_empty=True)
            check_json(item, f"{name}[{key!r}]")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_json(item, f"{name}[{i}]")


def _string_keys(value: Any, name: str) -> None:
    """Raise naming the first dict key that is not a string (JSON would turn ``1`` into
    ``"1"``, and keep only one of ``{1: ..., "1": ...}``)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(
                    f"key {show(key)} of {name} is not a string; JSON would store it as text "
                    "(merging it with an equal string key): use string keys"
                )
            _string_keys(item, f"{name}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _string_keys(item, f"{name}[{i}]")


def dump_metadata(metadata: Any, name: str, lenient: bool = False) -> str:
    """``metadata`` as JSON (raises ``ValueError`` naming ``name`` when it is not JSON).

    ``lenient`` (node metadata) writes values JSON does not know as ``str(value)``.
    """
    try:
        if lenient:
            text = json.dumps(dict(metadata or {}), sort_keys=True, default=str)
        else:
            _string_keys(metadata, name)
            text = json.dumps(dict(metadata or {}), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(
            f"{name} must be JSON-serialisable (string keys; strings, numbers, lists, dicts): {exc}"
        ) from None
    return text


def text_hash(text: str, embed_text: str) -> str:
    """The key of one stored node version: a hash of its plain and embedded texts."""
    payload = f"{len(text)}:{text}{embed_text}".encode()
    return hashlib.sha256(payload).hexdigest()[:32]


def _content(node: Any, mode: MetadataMode, index: int) -> Any:
    """``node.get_content(metadata_mode=mode)``; its failure (a custom node's, a metadata value
    whose ``str()`` raises) as ``ValueError`` naming the source, so a recorder can leave that
    source out and keep the answer (it lost the whole answer)."""
    try:
        return node.get_content(metadata_mode=mode)
    except Exception as exc:  # noqa: BLE001 - any node class's own error, named
        raise ValueError(
            f"retrieved[{index}] (node {show(getattr(node, 'node_id', None))}): its text could "
            f"not be read (get_content raised {type(exc).__name__}: {show(str(exc))}); fix the "
            "node, or leave it out of the sources"
        ) from exc


def node_row(item: Any, index: int) -> tuple[str, str, str, str, str, float | None]:
    """``(node_id, text_hash, text, embed_text, metadata JSON, score)`` of one source."""
    if hasattr(item, "node") and hasattr(item, "score"):
        node, score = item.node, item.score
    elif hasattr(item, "node_id") and hasattr(item, "get_content"):
        node, score = item, None
    else:
        raise TypeError(
            f"retrieved[{index}] must be a NodeWithScore or a node, got {type(item).__name__}"
        )
    node_id = check_text(node.node_id, f"retrieved[{index}].node_id")
    if node.metadata is not None and not isinstance(node.metadata, Mapping):
        raise TypeError(
            f"retrieved[{index}].metadata must be a dict, got {type(node.metadata).__name__}"
        )
    meta = dump_metadata(node.metadata, f"retrieved[{index}].metadata", lenient=True)
    text = check_text(_content(node, MetadataMode.NONE, index), f"retrieved[{index}] text", True)
    embed = _content(node, MetadataMode.EMBED, index)
    try:
        check_text(embed, f"retrieved[{index}] text", True)
    except ValueError:  # the text is fine, so the metadata shown with it is not: name the key
        check_json(json.loads(meta), f"retrieved[{index}].metadata")
        raise
    if score is not None:
        if isinstance(score, (str, bytes)):
            raise TypeError(f"retrieved[{index}].score must be a number or None, got {show(score)}")
        try:
            score = float(score)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(
                f"retrieved[{index}].score must be a number (as a float) or None, got {show(score)}"
            ) from None
        score = None if math.isnan(score) else score
    return node_id, text_hash(text, embed), text, embed, meta, score


def _ids(values: Any, name: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a list of node ids, got {values!r}")
    return [check_text(v, f"{name}[{i}]") for i, v in enumerate(values)]


def source_spelling(node_id: str, sources: Iterable[str]) -> str | None:
    """The source id ``node_id`` names: itself, else the one source equal to it in Unicode
    NFC (a front end sending ``café`` composed for a node id stored decomposed); ``None``
    when no source, or more than one, matches.

    Example::

        source_spelling("cafe\u0301.md", ["caf\u00e9.md", "tea.md"])   # 'café.md' (composed)
    """
    sources = list(sources)
    if node_id in sources:
        return node_id
    form = unicodedata.normalize("NFC", node_id)
    same = {s for s in sources if unicodedata.normalize("NFC", s) == form}
    return same.pop() if len(same) == 1 else None


def _spelled(ids: Iterable[str], sources: set[str]) -> Iterator[str]:
    """``source_spelling`` of each id, in time linear in ids and sources (the NFC forms of
    the sources are worked out once, and only when an id is not a source as given)."""
    forms: dict[str, set[str]] | None = None
    for node_id in ids:
        if node_id in sources:
            yield node_id
            continue
        if forms is None:
            forms = {}
            for source in sources:
                forms.setdefault(unicodedata.normalize("NFC", source), set()).add(source)
        same = forms.get(unicodedata.normalize("NFC", node_id), set())
        yield next(iter(same)) if len(same) == 1 else node_id


def prepare_entry(
    query: str,
    retrieved: Sequence[Any] = (),
    cited_node_ids: Sequence[str] = (),
    answer: str | None = None,
    refused: bool = False,
    rating: int | None = None,
    clicked_node_ids: Sequence[str] = (),
    latency_ms: float | None = None,
    bundle_version: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    created_at: datetime | float | None = None,
    record_id: str | None = None,
) -> dict[str, Any]:
    """Check and normalise one record's fields (raises naming the bad one)."""
    query = check_text(query, "query")
    if is_blank(query):  # the package's one definition (a question file refuses it too)
        raise ValueError(
            f"query must be a non-empty string with a visible character, got {ascii(query)[:80]} "
            "(only invisible, control or space characters): nothing to learn from; record the "
            "question the user asked"
        )
    if answer is not None:
        answer = check_text(answer, "answer", allow_empty=True)
    if not isinstance(refused, bool):
        raise TypeError(f"refused must be True or False, got {refused!r}")
    if isinstance(retrieved, (str, bytes)) or not isinstance(retrieved, Iterable):
        raise TypeError(
            f"retrieved must be a list of NodeWithScore, got {type(retrieved).__name__}"
        )
    nodes = [node_row(item, i) for i, item in enumerate(retrieved)]
    sources = {n[0] for n in nodes}
    # an id in another Unicode form than its source's is stored as the source spells it
    cited = list(dict.fromkeys(_spelled(_ids(cited_node_ids, "cited_node_ids"), sources)))
    clicked = list(dict.fromkeys(_spelled(_ids(clicked_node_ids, "clicked_node_ids"), sources)))
    for name, ids in (("cited_node_ids", cited), ("clicked_node_ids", clicked)):
        missing = [i for i in ids if i not in sources]
        if missing:
            raise ValueError(
                f"{name} {missing[:5]} are not among the retrieved nodes {sorted(sources)[:10]}; "
                "an answer can only cite (and a user only open) one of its sources"
            )
    if latency_ms is not None:
        if isinstance(latency_ms, bool) or not isinstance(latency_ms, numbers.Real):
            raise TypeError(f"latency_ms must be a number or None, got {show(latency_ms)}")
        try:
            latency = float(latency_ms)
        except OverflowError:
            latency = math.inf
        if not math.isfinite(latency) or latency < 0:
            raise ValueError(f"latency_ms must be a finite number >= 0, got {show(latency_ms)}")
        latency_ms = latency
    if bundle_version is not None:
        bundle_version = check_label(bundle_version, "bundle_version")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    meta = dump_metadata(metadata, "metadata")
    return {
        "id": uuid.uuid4().hex if record_id is None else check_text(record_id, "record_id"),
        "created_at": time.time() if created_at is None else timestamp(created_at, "created_at"),
        "query": query,
        "answer": answer,
        "refused": refused,
        "rating": check_rating(rating),
        "latency_ms": latency_ms,
        "bundle_version": bundle_version,
        "metadata": meta,
        "nodes": nodes,
        "cited": cited,
        "clicked": clicked,
    }
