"""Row-level SQL of the feedback store: insert one entry, filter and read records back.

Every statement is parameterised: the only strings put together are fixed
fragments from this module and ``?`` placeholders; values always travel as
parameters.

Example::

    from llama_index_ragtune.feedback.sql import where_clause

    where_clause(since=None, until=None, bundle_version=["v1", "v2"], rating=-1)
    # (['bundle_version IN (?, ?)', 'rating = ?'], ['v1', 'v2', -1])
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import sys
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from llama_index_ragtune.data.schema import normalize_text
from llama_index_ragtune.feedback.entries import (
    TIME_RANGE,
    check_text,
    is_rating,
    show,
)
from llama_index_ragtune.feedback.records import FeedbackRecord, FeedbackStats, RetrievedNode
from llama_index_ragtune.feedback.times import (
    EARLIEST,
    FUNCTION,
    LATEST,
    NUMBER,
    parse_text_time,
    time_bounds,
    time_clause,
    use_time_function,
)

__all__ = [
    "COLUMNS",
    "build_records",
    "insert_entry",
    "join_where",
    "percentile",
    "read_stats",
    "read_time",
    "utc",
    "filter_clause",
    "where_clause",
]

logger = logging.getLogger(__name__)


def _oversized(entry: dict[str, Any]) -> str:
    """The largest row of ``entry`` (SQLite's limit is on a row: the record's, or one source's
    in ``nodes``), named by its longest value, with their sizes as UTF-8."""
    record = {"query": entry["query"], "normalised query": entry["query"]}
    record.update({"answer": entry["answer"] or "", "metadata (as JSON)": entry["metadata"]})
    rows = [record] + [
        {f"retrieved[{i}] {part}": value for part, value in zip(_NODE_PARTS, n[2:5], strict=True)}
        for i, n in enumerate(entry["nodes"])
    ]
    sized = [[(len(value.encode("utf-8")), name) for name, value in r.items()] for r in rows]
    row = max(sized, key=lambda parts: sum(size for size, _ in parts))
    size, name = max(row)
    total = sum(part for part, _ in row)
    return f"{name} is {size:,} bytes as UTF-8 ({total:,} with the rest of its row)"


_NODE_PARTS = ("text", "text as embedded", "metadata (as JSON)")


def insert_entry(conn: sqlite3.Connection, entry: dict[str, Any], path: Any) -> None:
    """Insert one checked entry (``entries.prepare_entry``) with its sources, citations and clicks.

    A row longer than SQLite stores (``SQLITE_LIMIT_LENGTH``, 1,000,000,000 bytes by
    default: the record's query, answer and metadata, or one source's texts and metadata;
    2 GiB for one value in Python's ``sqlite3``) is a ``ValueError`` naming its longest
    value (SQLite's own ``DataError`` said only "string or blob too big"); the caller's
    transaction then rolls the whole entry back.
    """
    try:
        _insert(conn, entry, path)
    except (sqlite3.DataError, OverflowError) as exc:  # Python's own check: over 2 GiB
        if "too big" not in str(exc) and "longer than INT_MAX" not in str(exc):
            raise
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) if hasattr(conn, "getlimit") else 10**9
        raise ValueError(
            f"record {entry['id']!r}: {_oversized(entry)}, over the {limit:,} bytes SQLite "
            f"stores in one row of {path}; shorten it (cut the text, or leave the source out) "
            "and record it again: nothing of this record was stored"
        ) from exc


def _insert(conn: sqlite3.Connection, entry: dict[str, Any], path: Any) -> None:
    try:
        conn.execute(
            "INSERT INTO records (id, created_at, query, query_norm, answer, refused, rating, "
            "rated_at, latency_ms, bundle_version, metadata) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry["id"],
                entry["created_at"],
                entry["query"],
                normalize_text(entry["query"]),
                entry["answer"],
                int(entry["refused"]),
                entry["rating"],
                entry["created_at"] if entry["rating"] is not None else None,
                entry["latency_ms"],
                entry["bundle_version"],
                entry["metadata"],
            ),
        )
    except sqlite3.IntegrityError as exc:
        if str(exc) != "UNIQUE constraint failed: records.id":
            raise  # a rule another program added: said by the write (``schema.schema_error``)
        raise ValueError(
            f"record id {entry['id']!r} is already in {path}; give a new record_id"
        ) from exc
    at = entry["created_at"]
    conn.executemany(
        "INSERT INTO nodes (node_id, text_hash, text, embed_text, metadata, first_seen, "
        "last_seen) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (node_id, text_hash) DO UPDATE SET "
        # ragtune_time: a time another tool stored as text compares as the time it names
        f"metadata = CASE WHEN excluded.last_seen >= {FUNCTION}(last_seen) "
        "THEN excluded.metadata ELSE metadata END, "
        f"first_seen = min({FUNCTION}(first_seen), excluded.first_seen), "
        f"last_seen = max({FUNCTION}(last_seen), excluded.last_seen)",
        [(n[0], n[1], n[2], n[3], n[4], at, at) for n in entry["nodes"]],
    )
    conn.executemany(
        "INSERT INTO retrieved (record_id, rank, node_id, text_hash, score) VALUES (?, ?, ?, ?, ?)",
        [(entry["id"], rank, n[0], n[1], n[5]) for rank, n in enumerate(entry["nodes"], 1)],
    )
    conn.executemany(
        "INSERT INTO cited (record_id, position, node_id) VALUES (?, ?, ?)",
        [(entry["id"], i, node_id) for i, node_id in enumerate(entry["cited"], 1)],
    )
    conn.executemany(
        "INSERT INTO clicks (record_id, node_id, clicked_at) VALUES (?, ?, ?)",
        [(entry["id"], node_id, at) for node_id in entry["clicked"]],
    )


COLUMNS = (
    "id, created_at, query, answer, refused, rating, rated_at, latency_ms, bundle_version, metadata"
)


MAX_LISTED_VERSIONS = 100
"""A ``bundle_version`` filter of more versions is passed to SQLite as one JSON list
(``json_each``), not one ``?`` per version: a statement may hold at most 999 parameters
in SQLite before 3.32 (32,766 after), and a longer list raised "too many SQL variables"."""


UNRATED = "(rating IS NULL OR rating NOT IN (-1, 1))"
"""SQL for an unrated record: no rating, or one another tool wrote past the CHECK (read as
``None``, see ``_rating``)."""


def join_where(clauses: Sequence[str]) -> str:
    return " WHERE " + " AND ".join(clauses) if clauses else ""


def utc(ts: float) -> datetime:
    """A UNIX time as an aware UTC datetime (raises for one outside years 1-9999)."""
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def read_time(value: Any, where: str) -> datetime:
    """A stored time as an aware UTC datetime; never raises, so one bad row cannot block a read.

    ``record()`` only stores times in years 1-9999, but a file written by an older
    version or another tool may hold a number outside them, text or a blob. Such a
    value is read as the nearest representable time (a number below the range,
    text that is not ISO 8601, or a blob: 0001-01-01 UTC; a number above it:
    9999-12-31 UTC; ISO 8601 text: that time in UTC, naive as UTC: ``times.time_value``
    orders and filters by the same time), with a logged warning naming ``where``
    (for ISO 8601 text the read that finds it warns, ``times.odd_keys``); the file
    itself is left as it is.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return utc(value)
        except (OverflowError, ValueError, OSError):
            result = EARLIEST if value < 0 or math.isnan(value) else LATEST
    elif isinstance(value, str):
        parsed = parse_text_time(value)
        if parsed is not None:
            return parsed
        result = EARLIEST
    else:
        result = EARLIEST
    logger.warning(
        "feedback store: %s holds %s, not a UNIX time %s; read as %s. The row was written by "
        "another tool or an older version: set it to the real UNIX time with SQL (UPDATE ...) "
        "to silence this warning",
        where,
        show(value),
        TIME_RANGE,
        result.isoformat(),
    )
    return result


def _metadata(text: Any, record_id: str) -> dict[str, Any]:
    """A record's metadata JSON (``{}`` with a logged warning when another tool stored no
    JSON object).

    An integer of more digits than Python reads (``sys.get_int_max_str_digits()``, 4,300)
    is kept as its digits (a string), with a warning: it made the whole object unreadable,
    so every other key was lost too.
    """
    huge: list[str] = []

    def read_int(digits: str) -> int | str:
        try:
            return int(digits)
        except ValueError:  # over the digit limit
            huge.append(digits)
            return digits

    try:
        value = json.loads(text, parse_int=read_int)
    except (TypeError, ValueError, RecursionError):
        value = None
    if isinstance(value, dict):
        if huge:
            logger.warning(
                "feedback store: record %r holds %d integer(s) of more than %s digits in its "
                "metadata (another tool's write); kept as strings of digits",
                record_id,
                len(huge),
                f"{sys.get_int_max_str_digits():,}",
            )
        return value
    logger.warning(
        "feedback store: record %r holds metadata %s, not a JSON object; read as {}",
        record_id,
        show(text),
    )
    return {}


def _number(value: Any, record_id: str, column: str) -> float | None:
    """A stored REAL (``None`` with a logged warning when another tool stored text or a blob)."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    logger.warning(
        "feedback store: record %r holds %s in %s, not a number; read as None",
        record_id,
        show(value),
        column,
    )
    return None


def _latency(value: Any, record_id: str) -> float | None:
    """A stored latency: a number ``record`` accepts (finite, >= 0), else ``None`` with a
    logged warning (another tool stored ``inf``, a negative number, text or a blob)."""
    number = _number(value, record_id, "records.latency_ms")
    if number is None or (math.isfinite(number) and number >= 0):
        return number
    logger.warning(
        "feedback store: record %r holds %r in records.latency_ms, not a time in ms >= 0; "
        "read as None",
        record_id,
        number,
    )
    return None


def _rating(value: Any, record_id: str) -> int | None:
    """A stored rating: +1, -1 or ``None``; anything else another tool wrote past the
    column's CHECK (``5``, ``"good"``, ``0.5``) is read as ``None`` (unrated), with a warning."""
    if value is None or is_rating(value):
        return None if value is None else int(value)
    logger.warning(
        "feedback store: record %r holds %s in records.rating, not +1, -1 or NULL; read as "
        "unrated. Set it with store.rate(%r, +1 or -1), or UPDATE records SET rating = NULL",
        record_id,
        show(value),
        record_id,
    )
    return None


def _refused(value: Any, record_id: str) -> bool:
    """A stored refusal flag: 1 or 0; anything else (``"yes"``, ``7``) is read as not refused,
    with a warning."""
    if value in (0, 1) and isinstance(value, int):
        return bool(value)
    logger.warning(
        "feedback store: record %r holds %s in records.refused, not 0 or 1; read as 0 (not "
        "refused). Set it with SQL: UPDATE records SET refused = 0 or 1 WHERE id = %r",
        record_id,
        show(value),
        record_id,
    )
    return False


def _among_sources(
    ids: list[str], sources: list[RetrievedNode], record_id: str, column: str
) -> tuple[str, ...]:
    """``ids`` that name one of the record's sources; the others (another tool's rows:
    ``record`` refuses them) are dropped with a warning, so no export learns a node the
    answer was never given."""
    known = {source.node_id for source in sources}
    kept = tuple(i for i in ids if i in known)
    if len(kept) < len(ids):
        stray = [i for i in ids if i not in known]
        logger.warning(
            "feedback store: record %r holds %s in %s, not among its retrieved nodes %s; "
            "left out (an answer can only cite, and a user only open, one of its sources). "
            "Delete the rows with SQL: DELETE FROM %s WHERE record_id = %r AND node_id = ...",
            record_id,
            show(stray),
            column,
            show([source.node_id for source in sources]),
            column.split(".")[0],
            record_id,
        )
    return kept


def _text(value: Any, where: Any, column: str) -> Any:
    """A stored TEXT; a blob (another tool's write) is read as UTF-8 text, with a logged warning."""
    if not isinstance(value, bytes):
        return value
    logger.warning(
        "feedback store: %s holds a blob in %s, not text; read as UTF-8 text. Store it as "
        "text with SQL (UPDATE ... SET %s = CAST(%s AS TEXT)) to silence this warning",
        where,
        column,
        column.split(".")[-1],
        column.split(".")[-1],
    )
    return value.decode("utf-8", errors="replace")


def where_clause(
    since: Any, until: Any, bundle_version: Any, rating: Any
) -> tuple[list[str], list[Any]]:
    """SQL conditions (fixed fragments) and their parameters for the record filters.

    A time filter selects by the time each record names, a time another tool stored as
    text too (``times.time_clause``): the connection needs ``times.use_time_function``.
    """
    clauses: list[str] = []
    params: list[Any] = []
    low, high = time_bounds(since, until)
    if low is not None or high is not None:
        clause, time_params = time_clause(low, high)
        clauses.append(clause)
        params.extend(time_params)
    more, more_params = filter_clause(bundle_version, rating)
    return clauses + more, params + more_params


def filter_clause(bundle_version: Any, rating: Any) -> tuple[list[str], list[Any]]:
    """SQL conditions and parameters for the ``bundle_version`` and ``rating`` filters."""
    clauses: list[str] = []
    params: list[Any] = []
    if bundle_version is not None:
        if isinstance(bundle_version, str):
            versions = [bundle_version]
        elif isinstance(bundle_version, (bytes, Mapping)) or not isinstance(
            bundle_version, Iterable
        ):
            versions = []
        else:
            versions = list(bundle_version)
        if not versions or not all(isinstance(v, str) for v in versions):
            raise TypeError(
                "bundle_version must be a string or a non-empty list of strings, got "
                f"{show(bundle_version)}"
            )
        for i, version in enumerate(versions):
            check_text(version, "bundle_version" if len(versions) == 1 else f"bundle_version[{i}]")
        # each once, in order; with its NFC form, which record() stores (a label typed
        # decomposed, "ve\u0301", matches "vé"; one stored decomposed before still matches)
        versions = list(
            dict.fromkeys(form for v in versions for form in (v, unicodedata.normalize("NFC", v)))
        )
        if len(versions) <= MAX_LISTED_VERSIONS:
            clauses.append(f"bundle_version IN ({', '.join('?' for _ in versions)})")
            params.extend(versions)
        else:  # one parameter: SQLite caps them per statement (999 before 3.32, then 32766)
            clauses.append("bundle_version IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(versions))
    if rating is not None:
        if isinstance(rating, str) and rating == "unrated":
            clauses.append(UNRATED)
        elif is_rating(rating):
            clauses.append("rating = ?")
            params.append(int(rating))
        else:
            raise ValueError(
                f"rating filter must be 1, -1, 'unrated' or None, got {type(rating).__name__} "
                f"{show(rating)}"
            )
    return clauses, params


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def build_records(conn: sqlite3.Connection, rows: list[tuple]) -> list[FeedbackRecord]:
    """Records for ``rows`` (``COLUMNS`` order) with their sources, citations and clicks."""
    ids = [row[0] for row in rows]
    retrieved: dict[str, list[RetrievedNode]] = {i: [] for i in ids}
    cited: dict[str, list[str]] = {i: [] for i in ids}
    clicked: dict[str, dict[str, None]] = {i: {} for i in ids}  # first click of each node
    marks = ", ".join("?" for _ in ids)
    if ids:
        for rid, node_id, score, text_hash in conn.execute(
            f"SELECT record_id, node_id, score, text_hash FROM retrieved WHERE record_id IN ({marks}) "
            "ORDER BY record_id, rank",
            ids,
        ):
            rank = f"(rank {len(retrieved[rid]) + 1})"
            score = _number(score, rid, f"retrieved.score {rank}")
            node_id = _text(node_id, f"record {rid!r} {rank}", "retrieved.node_id")
            text_hash = _text(text_hash, f"record {rid!r} {rank}", "retrieved.text_hash")
            retrieved[rid].append(RetrievedNode(node_id, score, text_hash))
        for rid, node_id in conn.execute(
            f"SELECT record_id, node_id FROM cited WHERE record_id IN ({marks}) "
            "ORDER BY record_id, position",
            ids,
        ):
            cited[rid].append(_text(node_id, f"record {rid!r}", "cited.node_id"))
        for rid, node_id in conn.execute(
            f"SELECT record_id, node_id FROM clicks WHERE record_id IN ({marks}) ORDER BY record_id, id",
            ids,
        ):
            clicked[rid].setdefault(_text(node_id, f"record {rid!r}", "clicks.node_id"))
    return [
        FeedbackRecord(
            id=_text(rid, f"record {rid!r}", "records.id"),
            query=_text(query, f"record {rid!r}", "records.query"),
            answer=_text(answer, f"record {rid!r}", "records.answer"),
            retrieved=tuple(retrieved[rid]),
            cited_node_ids=_among_sources(cited[rid], retrieved[rid], rid, "cited.node_id"),
            clicked_node_ids=_among_sources(
                list(clicked[rid]), retrieved[rid], rid, "clicks.node_id"
            ),
            refused=_refused(refused, rid),
            rating=_rating(rating, rid),
            latency_ms=_latency(latency, rid),
            bundle_version=_text(version, f"record {rid!r}", "records.bundle_version"),
            created_at=read_time(created, f"record {rid!r} (records.created_at)"),
            rated_at=None
            if rated_at is None
            else read_time(rated_at, f"record {rid!r} (records.rated_at)"),
            metadata=_metadata(metadata, rid),
        )
        for rid, created, query, answer, refused, rating, rated_at, latency, version, metadata in (
            row[:10] for row in rows
        )
    ]


def _says_nothing(answer: Any) -> int:
    """SQL ``says_nothing(CAST(answer AS BLOB))``: 1 for an answer with no letter or digit
    once its citation markers are removed (``grounding.says_nothing``). It gets the bytes, so
    an answer another tool wrote as bytes that are not UTF-8 is counted, not a failed query."""
    from llama_index_ragtune.grounding import says_nothing

    if isinstance(answer, bytes):
        answer = answer.decode("utf-8", errors="replace")
    return int(isinstance(answer, str) and says_nothing(answer))


def read_stats(conn: sqlite3.Connection, where: list[str], params: list[Any]) -> FeedbackStats:
    """``FeedbackStore.stats`` over the records matching ``where`` / ``params``."""
    selected = f"SELECT id FROM records{join_where(where)}"
    conn.create_function("says_nothing", 1, _says_nothing, deterministic=True)
    use_time_function(conn)
    # a time another tool stored as text sorts after every number: compare the times named
    time = f"CASE WHEN {NUMBER} THEN created_at ELSE {FUNCTION}(created_at) END"
    n, up, down, unrated, refused, empty, first, last = conn.execute(
        f"SELECT count(*), total(rating = 1), total(rating = -1), total({UNRATED}), "
        "total(refused IS 1), total(refused IS NOT 1 AND says_nothing(CAST(answer AS BLOB))), "
        f"min({time}), max({time}) FROM records{join_where(where)}",
        params,
    ).fetchone()
    clicks, clicked_records = conn.execute(
        f"SELECT count(*), count(DISTINCT record_id) FROM clicks WHERE record_id IN ({selected})",
        params,
    ).fetchone()
    versions = conn.execute(
        "SELECT count(*) FROM (SELECT DISTINCT node_id, text_hash FROM retrieved "
        f"WHERE record_id IN ({selected}))",
        params,
    ).fetchone()[0]
    bundles = {
        "" if v is None else _text(v, "a record", "records.bundle_version"): c
        for v, c in conn.execute(
            f"SELECT bundle_version, count(*) FROM records{join_where(where)} "
            "GROUP BY bundle_version ORDER BY bundle_version",
            params,
        )
    }
    # a number record() accepts: not text, a negative number or inf another tool wrote
    typeof_number = "typeof(latency_ms) IN ('integer', 'real') AND latency_ms BETWEEN 0 AND 1.7976931348623157e308"
    latencies = [
        row[0]
        for row in conn.execute(
            "SELECT latency_ms FROM records"
            f"{join_where([*where, typeof_number])} "
            "ORDER BY latency_ms",
            params,
        )
    ]
    return FeedbackStats(
        records=n,
        upvoted=int(up),
        downvoted=int(down),
        unrated=int(unrated),
        refused=int(refused),
        clicks=clicks,
        records_with_clicks=clicked_records,
        node_versions=versions,
        bundle_versions=bundles,
        empty=int(empty),
        refusal_rate=refused / n if n else None,
        answer_rate=(n - refused - empty) / n if n else None,
        latency_p50_ms=percentile(latencies, 0.50),
        latency_p95_ms=percentile(latencies, 0.95),
        first=None if first is None else read_time(first, "the earliest records.created_at"),
        last=None if last is None else read_time(last, "the latest records.created_at"),
    )
