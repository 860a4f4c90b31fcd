"""Find the row whose text is not UTF-8, so a store another tool wrote bytes into says where.

SQLite stores whatever bytes a program hands it as TEXT; Python's ``sqlite3`` raises
"Could not decode to UTF-8 column ..." when such a row is read, naming neither the table
nor the row. :func:`undecodable_row` scans the tables holding the column SQLite named (on
this error path only) and returns the first such row with the SQL that repairs it.

Example::

    import sqlite3
    from llama_index_ragtune.feedback.undecodable import undecodable_row

    conn = sqlite3.connect("feedback.sqlite")
    print(undecodable_row(conn, "answer"))
    # records.answer of record 'f3c1...' holds b'\\xa5\\xa5\\xff', not UTF-8 text; ...
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

__all__ = ["column_of", "undecodable_row"]

# each table's text columns, the columns that pick one of its rows, and what the row is of
_TABLES = {
    "records": (("id", "query", "query_norm", "answer", "bundle_version", "metadata"), ("id",), "record", "id"),
    "retrieved": (("record_id", "node_id", "text_hash"), ("record_id", "rank"), "record", "record_id"),
    "cited": (("record_id", "node_id"), ("record_id", "position"), "record", "record_id"),
    "clicks": (("record_id", "node_id"), ("id",), "record", "record_id"),
    "nodes": (("node_id", "text_hash", "text", "embed_text", "metadata"), ("node_id", "text_hash"), "node", "node_id"),
    "ragtune_meta": (("key", "value"), ("key",), "key", "key"),
}  # fmt: skip


def column_of(exc: BaseException) -> str | None:
    """The column name in SQLite's "Could not decode to UTF-8 column 'x'" (``None`` when absent)."""
    match = re.search(r"column '([^']*)'", str(exc))
    return match.group(1) if match else None


def _literal(value: Any) -> str:
    """``value`` as an SQL literal (text that is not UTF-8 as ``CAST(x'..' AS TEXT)``)."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return f"CAST(x'{value.hex()}' AS TEXT)"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _is_utf8(value: Any) -> bool:
    if not isinstance(value, bytes):
        return True
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def undecodable_row(conn: sqlite3.Connection, column: str | None) -> str | None:
    """Where the first TEXT value that is not UTF-8 lies (in ``column``, any text column
    when ``None``) and the SQL that repairs it; ``None`` when no such value is found.

    Reads through ``conn`` (its transaction, so the same snapshot) with bytes for text,
    one row at a time.
    """
    previous = conn.text_factory
    conn.text_factory = bytes
    try:
        for table, (columns, keys, kind, owner) in _TABLES.items():
            for name in columns if column is None else [c for c in columns if c == column]:
                found = conn.execute(
                    f"SELECT {', '.join(keys)}, {owner}, {name} FROM {table} "  # fixed names
                    f"WHERE typeof({name}) = 'text'"
                )
                for *key_values, of, value in found:
                    if _is_utf8(value):
                        continue
                    where = " AND ".join(
                        f"{key} = {_literal(v)}" for key, v in zip(keys, key_values, strict=True)
                    )
                    more = "..." if len(value) > 24 else ""
                    return (
                        f"{table}.{name} of {kind} {_literal(of)} holds {value[:24]!r}{more}, "
                        "not UTF-8 text (another tool wrote these bytes). Keep them as bytes, "
                        "which the store reads as text with a warning: "
                        f"UPDATE {table} SET {name} = CAST({name} AS BLOB) WHERE {where}"
                    )
    finally:
        conn.text_factory = previous
    return None
