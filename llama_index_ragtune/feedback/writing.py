"""``FeedbackWriter``: what a ``FeedbackStore`` writes: answers, ratings and clicks.

Every entry is checked and normalised first (``entries.prepare_entry``), then written in
one short transaction of :class:`~llama_index_ragtune.feedback.connection.StoreConnection`;
a bad argument raises naming it and stores nothing.

Example::

    from llama_index_ragtune.feedback import FeedbackStore

    with FeedbackStore(":memory:") as store:
        rid = store.record("apple return policy?", answer="7 days.")
        store.rate(rid, +1)
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from llama_index.core.base.response.schema import AsyncStreamingResponse, StreamingResponse

from llama_index_ragtune.feedback.connection import StoreConnection
from llama_index_ragtune.feedback.entries import (
    check_rating,
    check_record_id,
    check_text,
    prepare_entry,
    source_spelling,
)
from llama_index_ragtune.feedback.responses import merge_metadata, response_fields
from llama_index_ragtune.feedback.sql import insert_entry

__all__ = ["FeedbackWriter"]


def _check_stream_read(response: Any) -> None:
    """Raise for a streaming response whose text is not there yet: not read to its end, or
    read through ``response_gen`` (which keeps no text). Recording it stored ``answer=None``,
    the answer lost with no mark saying why."""
    if (
        isinstance(response, (StreamingResponse, AsyncStreamingResponse))
        and response.response_txt is None
        and response.response_gen is not None
    ):
        raise ValueError(
            f"record_response: the {type(response).__name__} has no text yet (response_txt is "
            "None): its stream was not read to the end, or was read through response_gen, "
            "which keeps no text. Record it after response.get_response() (or set "
            "response.response_txt to the text shown), or wrap the engine in "
            "FeedbackQueryEngine, which records each stream when it ends; nothing was stored"
        )


class FeedbackWriter(StoreConnection):
    """The writes of a ``FeedbackStore``: :meth:`record`, :meth:`record_many`,
    :meth:`record_response`, :meth:`rate` and :meth:`click`."""

    def record(
        self,
        query: str,
        *,
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
    ) -> str:
        """Store one answered question and return its record id.

        ``retrieved`` are the answer's sources in rank order: LlamaIndex
        ``NodeWithScore`` (or bare nodes, no score). Their texts are stored as
        ``get_content()`` (what ``CitationQueryEngine`` shows the LLM) and as
        embedded (``MetadataMode.EMBED``, what the encoder sees), with the node's
        metadata. ``cited_node_ids`` and ``clicked_node_ids`` must be among the
        sources. ``created_at`` defaults to now (for imports and simulations pass
        a datetime or a UNIX time). Raises ``ValueError`` / ``TypeError`` naming the
        bad argument; nothing is stored then.

        Example::

            rid = store.record("Apple return policy?", retrieved=response.source_nodes,
                               cited_node_ids=["electronics-returns"], answer="14 days [1].")
        """
        entry = prepare_entry(
            query=query,
            retrieved=retrieved,
            cited_node_ids=cited_node_ids,
            answer=answer,
            refused=refused,
            rating=rating,
            clicked_node_ids=clicked_node_ids,
            latency_ms=latency_ms,
            bundle_version=bundle_version,
            metadata=metadata,
            created_at=created_at,
            record_id=record_id,
        )
        with self._write() as conn:
            insert_entry(conn, entry, self._path)
        return entry["id"]

    def record_many(self, entries: Iterable[Mapping[str, Any]], batch_size: int = 500) -> list[str]:
        """Store many records (each a dict of :meth:`record`'s keyword arguments); return their ids.

        Records are committed ``batch_size`` at a time, each batch atomically, so a
        large import never holds the write lock long. A bad entry raises an error
        naming its index after the entries before it are committed (as does an error
        of ``entries`` itself, a generator say); pass the rest again once it is fixed.

        Example::

            ids = store.record_many([{"query": "q1", "answer": "a1"}, {"query": "q2", "rating": -1}])
        """
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, numbers.Integral)
            or batch_size < 1
        ):
            raise ValueError(
                f"record_many: batch_size must be a positive integer, got {batch_size!r}"
            )
        ids: list[str] = []
        pending: list[dict[str, Any]] = []

        def stored() -> str:
            return f"entries 0-{len(ids) - 1} are stored" if ids else "nothing is stored"

        def flush() -> None:
            if not pending:
                return
            try:
                with self._write() as conn:
                    for entry in pending:
                        insert_entry(conn, entry, self._path)
            except (ValueError, OSError) as exc:  # FeedbackStoreError, TimeoutError, disk full
                message = (
                    f"record_many: {exc} ({stored()}; the batch of the {len(pending)} entries "
                    "from there on was rolled back)"
                )
                try:  # the same type, so callers can still tell a damaged file from a lock
                    error = type(exc)(message)
                except TypeError:
                    error = (ValueError if isinstance(exc, ValueError) else OSError)(message)
                if isinstance(exc, OSError) and isinstance(error, OSError) and exc.errno:
                    error.errno, error.strerror = exc.errno, message  # e.g. ENOSPC kept
                raise error from exc
            ids.extend(entry["id"] for entry in pending)
            pending.clear()

        if isinstance(entries, (str, bytes, Mapping)) or not isinstance(entries, Iterable):
            raise TypeError(
                "record_many: entries must be a list (or iterable) of dicts of record() "
                f"arguments, got {type(entries).__name__}; for one record pass [entry]"
            )
        numbered = enumerate(entries)
        while True:
            try:
                i, raw = next(numbered)
            except StopIteration:
                break
            except Exception:  # the caller's iterable failed: keep what it gave so far
                flush()
                raise
            try:
                if not isinstance(raw, Mapping):
                    raise TypeError(
                        f"expected a dict of record() arguments, got {type(raw).__name__}"
                    )
                entry = prepare_entry(**raw)
            except (TypeError, ValueError) as exc:
                flush()
                raise type(exc)(
                    f"record_many: entry {i}: {exc} ({stored()}, nothing from entry {i} on)"
                ) from exc
            pending.append(entry)
            if len(pending) >= batch_size:
                flush()
        flush()
        return ids

    def record_response(
        self,
        query: str,
        response: Any,
        *,
        latency_ms: float | None = None,
        bundle_version: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Store a LlamaIndex ``Response`` (sources, ``cited_node_ids`` and ``refused`` from its metadata).

        For code that calls its query engine itself; ``FeedbackQueryEngine`` does this
        for you and sets ``response.metadata["feedback_id"]``.

        A streaming response is recorded once its text is there (``get_response()``, or
        ``response_txt`` set); before, ``ValueError`` and nothing stored (it was recorded
        with no answer).

        Example::

            response = engine.query("apple return policy?")
            rid = store.record_response("apple return policy?", response, latency_ms=350.0)
        """
        _check_stream_read(response)
        fields = response_fields(response)
        return self.record(
            query,
            latency_ms=latency_ms,
            bundle_version=bundle_version,
            metadata=merge_metadata(metadata, fields.pop("metadata", None)),
            **fields,
        )

    def rate(self, record_id: str, rating: int | None) -> None:
        """Attach a rating (+1 up, -1 down, ``None`` clears it) to an earlier answer; the last one wins.

        Raises ``KeyError`` for an unknown record id.

        Example::

            store.rate(response.metadata["feedback_id"], -1)
        """
        record_id = check_record_id(record_id)
        rating = check_rating(rating)
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE records SET rating = ?, rated_at = ? WHERE id = ?",
                (rating, None if rating is None else time.time(), record_id),
            )
            if cursor.rowcount == 0:
                raise self._unknown(record_id)

    def click(self, record_id: str, node_id: str) -> None:
        """Record that the user opened the citation ``node_id`` of an earlier answer.

        ``node_id`` must be one of the answer's sources (``ValueError`` otherwise, naming
        them); ``KeyError`` for an unknown record id. Every click is kept with its time.

        Example::

            store.click(response.metadata["feedback_id"], response.metadata["cited_node_ids"][0])
        """
        record_id = check_record_id(record_id)
        node_id = check_text(node_id, "node_id")
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM records WHERE id = ?", (record_id,)).fetchone() is None:
                raise self._unknown(record_id)
            sources = [
                row[0]
                for row in conn.execute(
                    "SELECT node_id FROM retrieved WHERE record_id = ? ORDER BY rank",
                    (record_id,),
                )
            ]
            node_id = source_spelling(node_id, sources) or node_id
            if node_id not in sources:
                raise ValueError(
                    f"click: node {node_id!r} is not a source of record {record_id!r} "
                    f"(its sources: {sources[:10]}); pass a node id the answer showed"
                )
            conn.execute(
                "INSERT INTO clicks (record_id, node_id, clicked_at) VALUES (?, ?, ?)",
                (record_id, node_id, time.time()),
            )
