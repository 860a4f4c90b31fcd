"""``FeedbackReader``: what a ``FeedbackStore`` reads back: records, counts, stats, node texts.

Each read is one read transaction of
:class:`~llama_index_ragtune.feedback.connection.StoreConnection` (inside
:meth:`~llama_index_ragtune.feedback.connection.StoreConnection.snapshot`, its one);
``records()`` reads page by page, so a long log is never in memory at once. The exports
(``export.py``) read through this class.

Example::

    from llama_index_ragtune.feedback import FeedbackStore

    with FeedbackStore(":memory:") as store:
        store.record("apple return policy?", answer="7 days.", rating=1)
        [r.query for r in store.records(rating=1)]      # ['apple return policy?']
"""

from __future__ import annotations

import hashlib
import heapq
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Literal

from llama_index_ragtune.feedback.connection import StoreConnection
from llama_index_ragtune.feedback.entries import check_record_id, check_text, show
from llama_index_ragtune.feedback.node_texts import read_node_text, read_node_texts
from llama_index_ragtune.feedback.records import FeedbackRecord, FeedbackStats
from llama_index_ragtune.feedback.sql import (
    COLUMNS,
    build_records,
    filter_clause,
    join_where,
    read_stats,
    where_clause,
)
from llama_index_ragtune.feedback.times import (
    number_range,
    odd_keys,
    time_bounds,
    time_parts,
    use_time_function,
)

__all__ = ["FeedbackReader", "RatingFilter"]

RatingFilter = Literal[1, -1, "unrated"]


_CHUNK = 500  # records per page
_PAGE_CHARS = 16 << 20  # text per page at most (and one record more): long answers stay few


def _in_time_order(conn: sqlite3.Connection) -> str:
    """``records`` read through its time index, so every page of :meth:`FeedbackReader.records`
    resumes where the last ended whatever the filters (with ``bundle_version`` SQLite would
    pick that index and sort all the bundle's records for each page); plain ``records`` when
    the index is gone (a store edited by hand)."""
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'records_by_time'"
    ).fetchone()
    return "records INDEXED BY records_by_time" if found else "records"


def _page(cursor: sqlite3.Cursor) -> tuple[list[tuple], bool]:
    """The rows of one page, and whether it was cut short: ``_CHUNK`` rows, or fewer once
    they hold ``_PAGE_CHARS`` characters of text (500 answers of 10 MB each are not read at
    once)."""
    rows: list[tuple] = []
    chars = 0
    for row in cursor:
        rows.append(row)
        chars += sum(len(value) for value in row if isinstance(value, (str, bytes)))
        if chars >= _PAGE_CHARS:
            cursor.close()  # the rest of this page is the next page
            return rows, True
    return rows, False


def _merge_odd(
    conn: sqlite3.Connection,
    rows: list[tuple],
    full: bool,
    odd: list[tuple[float, int]],
    taken: int,
) -> tuple[list[tuple], int, int]:
    """One page of ``records()``: the numeric-time ``rows`` (sorted, each ending in its
    rowid) merged with the next ``odd`` records (``times.odd_keys``: times stored as text)
    that sort before the page's end. Returns the page, how many of ``rows`` it holds and
    how many odd keys are now used; at most ``_CHUNK`` odd records and ``_PAGE_CHARS`` of
    their text are read at a time."""
    bound = (rows[-1][1], rows[-1][-1]) if full else None
    take = []
    for key in odd[taken : taken + _CHUNK]:
        if bound is not None and key >= bound:
            break
        take.append(key)
    if not take:
        return rows, len(rows), taken
    rest = taken + len(take)
    more = rest < len(odd) and (bound is None or odd[rest] < bound)  # below the end, not read
    marks = ", ".join("(?, ?)" for _ in take)
    cursor = conn.execute(
        f"WITH k(pos, rid) AS (VALUES {marks}) SELECT {COLUMNS}, k.pos FROM k "
        "JOIN records ON records.rowid = k.rid ORDER BY k.pos",
        [value for pos, key in enumerate(take) for value in (pos, key[1])],
    )
    odd_rows, cut = _page(cursor)  # a record deleted meanwhile is absent
    limits = [key for key in (bound, take[odd_rows[-1][-1]] if cut else None) if key is not None]
    if more and not cut:
        limits.append(take[-1])
    limit = min(limits) if limits else None
    merged = heapq.merge(
        (((row[1], row[-1]), 0, row) for row in rows),
        ((take[row[-1]], 1, row) for row in odd_rows),
    )
    page, numbers = [], 0
    for key, is_odd, row in merged:
        if limit is not None and key > limit:
            break
        page.append(row)
        numbers += not is_odd
    used = sum(1 for key in take if limit is None or key <= limit)
    return page, numbers, taken + used


_FINGERPRINT_SQL = (
    "SELECT count(*), max(rowid), total(rating), count(rating), max(rated_at), max(created_at),"
    " total(length(query)), total(length(metadata)) FROM records",
    "SELECT count(*), max(id), max(clicked_at) FROM clicks",
    "SELECT count(*) FROM retrieved",
    "SELECT count(*) FROM cited",
    "SELECT count(*), max(last_seen) FROM nodes",
)
"""What :meth:`FeedbackReader.fingerprint` hashes: aggregates that change with any write."""


class FeedbackReader(StoreConnection):
    """The reads of a ``FeedbackStore``: :meth:`get`, :meth:`records`, :meth:`count`,
    :meth:`stats`, :meth:`node_text` and :meth:`node_texts`."""

    def get(self, record_id: str) -> FeedbackRecord:
        """The record with this id (``KeyError`` when there is none).

        Example::

            store.get(rid).rating
        """
        record_id = check_record_id(record_id)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM records WHERE id = ?", (record_id,)
            ).fetchall()
            if not rows:
                raise self._unknown(record_id)
            return build_records(conn, rows)[0]

    def records(
        self,
        *,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        bundle_version: str | Sequence[str] | None = None,
        rating: RatingFilter | None = None,
    ) -> Iterator[FeedbackRecord]:
        """Records in time order (ties in the order they were stored), filtered by ``since`` <= created_at < ``until``, bundle version(s)
        and rating (``1``, ``-1`` or ``"unrated"``; ``None`` keeps all).

        Read page by page (500 records, fewer once they hold 16 M characters of text; each
        page a range of the time index), so a large log is never in memory at once, reading
        it all takes time linear in its size, and writers are not held up. A naive datetime
        is local time (Python's rule). A time another tool stored as ISO 8601 text is read,
        ordered and filtered as the time it names, with a warning (``times``).

        Example::

            for record in store.records(since=datetime(2025, 1, 1), bundle_version="v2", rating=-1):
                print(record.query, record.answer)
        """
        filters, filter_params = filter_clause(bundle_version, rating)
        low, high = time_bounds(since, until)
        number, number_params = number_range(low, high)  # one range of the time index
        after: tuple[float, int] | None = None
        table: str | None = None
        odd: list[tuple[float, int]] | None = None  # times another tool stored as text
        taken = 0
        while True:
            clauses = [*number, *filters]
            page_params = [*number_params, *filter_params]
            if after is not None:
                # a range of the time index: each page starts where the last ended (was
                # "created_at > ? OR (...)", which SQLite scans from the first record)
                clauses.append("created_at >= ? AND (created_at > ? OR rowid > ?)")
                page_params += [after[0], after[0], after[1]]
            with self._read() as conn:
                table = table or _in_time_order(conn)
                if odd is None:
                    odd = odd_keys(conn, table, filters, filter_params, low, high, self._path)
                sql = (
                    f"SELECT {COLUMNS}, rowid FROM {table}{join_where(clauses)} "
                    "ORDER BY created_at, rowid LIMIT ?"
                )
                rows, cut = _page(conn.execute(sql, [*page_params, _CHUNK]))
                full = cut or len(rows) == _CHUNK
                merged, numbers, taken = _merge_odd(conn, rows, full, odd, taken)
                page = build_records(conn, merged)
            yield from page
            if numbers:
                after = (rows[numbers - 1][1], rows[numbers - 1][-1])
            if not full and numbers == len(rows) and taken >= len(odd):
                return

    def __iter__(self) -> Iterator[FeedbackRecord]:
        return self.records()

    def __len__(self) -> int:
        return self.count()

    def count(
        self,
        *,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        bundle_version: str | Sequence[str] | None = None,
        rating: RatingFilter | None = None,
    ) -> int:
        """Number of records matching the filters of :meth:`records`."""
        filters, params = filter_clause(bundle_version, rating)
        low, high = time_bounds(since, until)
        # each part one range of the time index (numbers, texts, NULLs): counted in it
        parts = [([], [])] if low is None and high is None else time_parts(low, high)
        with self._read() as conn:
            use_time_function(conn)
            return sum(
                conn.execute(
                    f"SELECT count(*) FROM records{join_where([*clauses, *filters])}",
                    [*part_params, *params],
                ).fetchone()[0]
                for clauses, part_params in parts
            )

    def stats(
        self,
        *,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        bundle_version: str | Sequence[str] | None = None,
    ) -> FeedbackStats:
        """Counts, refusal / answer rate and latency p50 / p95 over the selected records.

        Example::

            store.stats(bundle_version="v2").to_dict()
        """
        where, params = where_clause(since, until, bundle_version, None)
        with self._read() as conn:
            return read_stats(conn, where, params)

    def fingerprint(self) -> str:
        """A short SHA-256 of what the store holds: its records (count, newest row, ratings),
        clicks, sources and node texts, read in one snapshot. It changes when the app
        records, rates or clicks anything, so a resumed tuning run knows the store changed
        since it started (its path alone says nothing). Cheap: a few aggregates, no row read.

        Example::

            store.fingerprint()     # 'a41c09...'
        """
        digest = hashlib.sha256()
        with self._read() as conn:  # one read transaction: one consistent snapshot
            for sql in _FINGERPRINT_SQL:
                row = conn.execute(sql).fetchone()
                digest.update(json.dumps(list(row), default=str).encode("utf-8") + b"\n")
        return digest.hexdigest()[:32]

    def node_text(self, node_id: str, text_hash: str | None = None, embed: bool = False) -> str:
        """A stored node text: the version ``text_hash`` (default: the one seen last).

        ``embed=True`` gives the text as embedded (with the node's embed metadata).
        ``KeyError`` when the store never saw that node (version).

        Example::

            store.node_text(record.retrieved[0].node_id, record.retrieved[0].text_hash)
        """
        node_id = check_text(node_id, "node_id", allow_empty=True)
        if text_hash is not None:
            text_hash = check_text(text_hash, "text_hash", allow_empty=True)
        with self._read() as conn:
            row = read_node_text(conn, node_id, text_hash, embed)
        if row is None:
            version = "" if text_hash is None else f" with text hash {text_hash!r}"
            raise KeyError(f"the feedback store {self._path} has no node {node_id!r}{version}")
        return row[0]

    def node_texts(
        self, keys: Iterable[tuple[str, str]], embed: bool = False
    ) -> dict[tuple[str, str], str]:
        """Texts of many ``(node_id, text_hash)`` versions at once (unknown keys are absent)."""
        wanted: list[tuple[str, str]] = []
        for i, key in enumerate(keys):
            if isinstance(key, (str, bytes)) or not isinstance(key, Sequence) or len(key) != 2:
                raise TypeError(f"keys[{i}] must be a (node_id, text_hash) pair, got {show(key)}")
            wanted.append(
                (
                    check_text(key[0], f"keys[{i}][0]", allow_empty=True),
                    check_text(key[1], f"keys[{i}][1]", allow_empty=True),
                )
            )
        wanted = list(dict.fromkeys(wanted))
        with self._read() as conn:
            return read_node_texts(conn, wanted, embed)
