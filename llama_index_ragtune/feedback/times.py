"""Times another tool stored as text: ordered and filtered by the time they name.

``record()`` stores ``records.created_at`` as a UNIX time (REAL). Another tool
writing into the same file may store ISO 8601 text instead
(``'2026-01-01T10:00:00+05:00'``, ``'2026-01-01T06:00:00Z'``, a naive
``'2026-01-01 04:00:00'``). SQLite sorts every text after every number and texts
by their characters, so such rows would come last, in the wrong order, pass every
``since`` and fail every ``until``. Here they are read as the time they name (a
time without a zone as UTC; text that names no time, or a blob, as 0001-01-01).

In the time index these rows are its tail (``created_at >= ''``) and the NULLs
its head, so the numbers stay one index range: reads page through that range as
before and merge the few other rows in (``odd_keys``), found by one more range.

Example::

    from llama_index_ragtune.feedback.times import time_value

    time_value("2026-01-01T10:00:00+05:00") == time_value("2026-01-01T05:00:00Z")  # True
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from llama_index_ragtune.feedback.entries import show, timestamp

__all__ = [
    "EARLIEST",
    "LATEST",
    "NOT_A_NUMBER",
    "NUMBER",
    "odd_keys",
    "parse_text_time",
    "time_bounds",
    "time_clause",
    "time_parts",
    "time_value",
    "use_time_function",
]

logger = logging.getLogger(__name__)

EARLIEST = datetime.min.replace(tzinfo=timezone.utc)
LATEST = datetime.max.replace(tzinfo=timezone.utc)
_EARLIEST_TS = EARLIEST.timestamp()
_LATEST_TS = LATEST.timestamp()

NUMBER = "created_at < ''"
"""SQL: ``created_at`` is a number (every number sorts before the empty text)."""
NOT_A_NUMBER = ("created_at >= ''", "created_at IS NULL")
"""SQL: the two ends of the time index that hold no number (text and blobs; NULLs)."""
FUNCTION = "ragtune_time"
"""The SQL function giving any stored ``created_at`` as a UNIX time (``time_value``)."""

_FIX = (
    "UPDATE records SET created_at = round((julianday(created_at) - 2440587.5) * 86400.0, 3) "
    "WHERE typeof(created_at) = 'text' AND julianday(created_at) IS NOT NULL"
)


def parse_text_time(value: str) -> datetime | None:
    """ISO 8601 text as an aware UTC datetime (naive: UTC); ``None`` when it names no time."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except (OverflowError, ValueError):  # 0001-01-01T00:00+05:00 is before year 1 in UTC
        return EARLIEST if parsed.year == 1 else LATEST


def time_value(value: Any) -> float:
    """Any stored ``created_at`` as a UNIX time to order and filter by (never raises).

    Numbers are themselves; ISO 8601 text the time it names (naive as UTC); other text,
    blobs and NULL 0001-01-01 UTC, as ``sql.read_time`` reads them.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _EARLIEST_TS if math.isnan(value) else float(value)
    if isinstance(value, str):
        parsed = parse_text_time(value)
        if parsed is not None:
            return parsed.timestamp()
    return _EARLIEST_TS


def use_time_function(conn: sqlite3.Connection) -> None:
    """Make ``ragtune_time(created_at)`` (``time_value``) callable in ``conn``'s SQL."""
    conn.create_function(FUNCTION, 1, time_value, deterministic=True)


def time_bounds(since: Any, until: Any) -> tuple[float | None, float | None]:
    """``since`` / ``until`` as UNIX times (``None`` stays ``None``); raises naming them."""
    low = None if since is None else timestamp(since, "since", stored=False)
    high = None if until is None else timestamp(until, "until", stored=False)
    return low, high


def _range(low: float | None, high: float | None, column: str) -> tuple[list[str], list[Any]]:
    clauses, params = [], []
    if low is not None:
        clauses.append(f"{column} >= ?")
        params.append(low)
    if high is not None:
        clauses.append(f"{column} < ?")
        params.append(high)
    return clauses, params


def number_range(low: float | None, high: float | None) -> tuple[list[str], list[Any]]:
    """SQL selecting the rows whose numeric ``created_at`` is in ``[low, high)``: one range
    of the time index (texts sort after numbers, so an open end stops before them)."""
    clauses, params = _range(low, high, "created_at")
    if high is None:
        clauses.append(NUMBER)
    return clauses, params


def time_parts(low: float | None, high: float | None) -> list[tuple[list[str], list[Any]]]:
    """SQL conditions, each one range of the time index, whose union selects the records
    whose time, numeric or text, is in ``[low, high)`` (needs ``use_time_function``)."""
    text, text_params = _range(low, high, f"{FUNCTION}(created_at)")
    return [number_range(low, high)] + [([end, *text], list(text_params)) for end in NOT_A_NUMBER]


def time_clause(low: float | None, high: float | None) -> tuple[str, list[Any]]:
    """One SQL condition (for ``stats``) selecting the records whose time, numeric or text,
    is in ``[low, high)``: ``rowid IN`` the union of the ``time_parts``, so it costs the
    records selected, not the store."""
    parts, params = [], []
    for clauses, part_params in time_parts(low, high):
        parts.append(f"SELECT rowid FROM records WHERE {' AND '.join(clauses)}")
        params += part_params
    return f"rowid IN ({' UNION ALL '.join(parts)})", params


def odd_keys(
    conn: sqlite3.Connection,
    table: str,
    where: Sequence[str],
    params: Sequence[Any],
    low: float | None,
    high: float | None,
    path: Any,
) -> list[tuple[float, int]]:
    """``(time, rowid)`` of the records matching ``where`` whose ``created_at`` is no
    number, in time order, within ``[low, high)``; a warning names them and the SQL that
    converts them (one warning per read)."""
    found: list[tuple[float, int, Any, Any]] = []
    for end in NOT_A_NUMBER:
        sql = f"SELECT created_at, rowid, id FROM {table} WHERE {' AND '.join([*where, end])}"
        for created, rowid, record_id in conn.execute(sql, list(params)):
            found.append((time_value(created), rowid, record_id, created))
    if not found:
        return []
    shown = ", ".join(f"{rid!r} ({show(created)})" for _, _, rid, created in found[:5])
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    logger.warning(
        "feedback store %s: %d record(s) hold records.created_at as text or a blob, not a "
        "UNIX time: %s%s. Read, ordered and filtered by the time the text names (without a "
        "zone: UTC; no ISO 8601 time, or a blob: 0001-01-01). Another tool wrote them; "
        "convert them with SQL: %s",
        path,
        len(found),
        shown,
        more,
        _FIX,
    )
    keys = [
        (t, rowid)
        for t, rowid, _, _ in found
        if (low is None or t >= low) and (high is None or t < high)
    ]
    keys.sort()
    return keys
