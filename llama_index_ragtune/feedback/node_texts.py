"""Node texts of the feedback store: one version, or many at once, read back for exports.

Example::

    from llama_index_ragtune.feedback.node_texts import read_node_texts

    read_node_texts(conn, [("g1", record.retrieved[0].text_hash)], embed=False)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from llama_index_ragtune.feedback.sql import _text
from llama_index_ragtune.feedback.times import FUNCTION, use_time_function

__all__ = ["read_node_text", "read_node_texts"]


def read_node_text(
    conn: sqlite3.Connection, node_id: str, text_hash: str | None, embed: bool
) -> tuple[str] | None:
    """The row holding one node version's text (the one seen last when ``text_hash`` is None)."""
    column = "embed_text" if embed else "text"
    sql = f"SELECT {column} FROM nodes WHERE node_id = ?"
    params: list[Any] = [node_id]
    if text_hash is not None:
        sql += " AND text_hash = ?"
        params.append(str(text_hash))
    use_time_function(conn)  # a time another tool stored as text sorts as the time it names
    order = f" ORDER BY CASE WHEN last_seen < '' THEN last_seen ELSE {FUNCTION}(last_seen) END"
    row = conn.execute(sql + order + " DESC LIMIT 1", params).fetchone()
    return None if row is None else (_text(row[0], f"node {node_id!r}", f"nodes.{column}"),)


def read_node_texts(
    conn: sqlite3.Connection, keys: Sequence[tuple[str, str]], embed: bool, chunk: int = 500
) -> dict[tuple[str, str], str]:
    """Texts of the ``(node_id, text_hash)`` versions in ``keys`` (unknown keys are absent).

    Each chunk of keys looks its rows up by the primary key (the keys ``CROSS JOIN`` the
    table, so they are the outer loop): ``(node_id, text_hash) IN (VALUES ...)`` scanned the
    whole table for every 500 keys, an export time quadratic in the store's nodes.
    """
    column = "embed_text" if embed else "text"
    out: dict[tuple[str, str], str] = {}
    for start in range(0, len(keys), chunk):
        part = keys[start : start + chunk]
        marks = ", ".join("(?, ?)" for _ in part)
        flat = [value for key in part for value in key]
        for node_id, text_hash, text in conn.execute(
            f"WITH wanted (node_id, text_hash) AS (VALUES {marks}) "
            f"SELECT n.node_id, n.text_hash, n.{column} FROM wanted CROSS JOIN nodes AS n "
            "ON n.node_id = wanted.node_id AND n.text_hash = wanted.text_hash",
            flat,
        ):
            out[(node_id, text_hash)] = _text(text, f"node {node_id!r}", f"nodes.{column}")
    return out
