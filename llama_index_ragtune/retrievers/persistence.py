"""Versioned JSON manifests for persisted retrievers, with errors that say how to fix them.

A persisted retriever folder holds its artifacts plus one manifest JSON file
(``{"format": ..., "format_version": ..., "params": {...}}``). Loading checks the
manifest first, so a folder written by another retriever, by an incompatible
version, or damaged on disk fails with a message naming the file, what is wrong
and how to fix it, instead of a stack trace from deep inside numpy or faiss.

Example::

    write_manifest(path, "bm25_retriever.json", "ragtune-bm25", 1, {"k1": 1.5})
    params = read_manifest(path, "bm25_retriever.json", "ragtune-bm25", 1)["params"]
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["PersistenceError", "atomic_write_text", "read_manifest", "write_manifest"]


class PersistenceError(ValueError):
    """A persisted retriever folder is missing, corrupt, or of another format/version."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (no half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_manifest(
    folder: str | Path, name: str, fmt: str, version: int, params: dict[str, Any]
) -> Path:
    """Write ``folder/name`` with the format tag, its version and the constructor parameters."""
    path = Path(folder) / name
    payload = {"format": fmt, "format_version": version, "params": params}
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True))
    return path


def read_manifest(
    folder: str | Path, name: str, fmt: str, version: int, rebuild_hint: str = ""
) -> dict[str, Any]:
    """Read and check ``folder/name``; raise :class:`PersistenceError` naming the problem."""
    folder = Path(folder)
    hint = rebuild_hint or "rebuild the retriever and call persist() again"
    if not folder.is_dir():
        raise PersistenceError(f"persist directory {folder} does not exist; {hint}")
    path = folder / name
    if not path.is_file():
        present = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
        raise PersistenceError(
            f"{path} is missing (the folder holds: {present}); it is not a persisted {fmt} folder — "
            f"pass the directory given to persist(), or {hint}"
        )
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PersistenceError(f"{path} is corrupt (not valid JSON: {exc}); {hint}") from exc
    if (
        not isinstance(payload, dict)
        or "params" not in payload
        or not isinstance(payload["params"], dict)
    ):
        raise PersistenceError(f"{path} is corrupt (no 'params' object); {hint}")
    if payload.get("format") != fmt:
        raise PersistenceError(
            f"{path} holds format {payload.get('format')!r}, expected {fmt!r}: this folder was written by "
            f"another class; load it with that class, or {hint}"
        )
    found = payload.get("format_version")
    if found != version:
        raise PersistenceError(
            f"{path} has format_version {found!r}, this version of llama-index-ragtune reads {version}; "
            f"install the matching llama-index-ragtune version, or {hint}"
        )
    return payload


def require_file(path: Path, what: str, hint: str = "") -> Path:
    """Return ``path`` if it is a file, else raise :class:`PersistenceError` naming it."""
    if not path.is_file():
        raise PersistenceError(
            f"{path} ({what}) is missing from the persist directory; "
            f"{hint or 'rebuild the retriever and call persist() again'}"
        )
    return path
