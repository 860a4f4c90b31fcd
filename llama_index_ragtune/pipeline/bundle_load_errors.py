"""Why a bundle failed to load, said as a ``BundleError``: the part, its folder and the fix.

``_loading`` wraps the loading of each part of a bundle; files another user keeps
private, a missing temporary folder and empty weight files are named as such.
Used by :func:`~llama_index_ragtune.pipeline.bundle.load_bundle`.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from llama_index_ragtune.pipeline.bundle_files import empty_weights
from llama_index_ragtune.pipeline.bundle_folders import MANIFEST, REWRITE, BundleError


def _no_temp_folder() -> str | None:
    """Why this process has no usable temporary folder, or ``None`` when it has one."""
    import tempfile

    try:
        tempfile.gettempdir()
    except OSError as exc:
        return " ".join(str(exc).split())[:200]
    return None


def _unreadable(folder: Path, limit: int = 3) -> list[str]:
    """Up to ``limit`` files or folders under ``folder`` that this process may not read (their
    permissions; links, dangling or not, are the verification's to name, not counted here)."""
    found: list[str] = []

    def denied(path: str, mode: int) -> bool:
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return False
        except OSError:
            return False
        return not os.access(path, mode)

    def walk_error(exc: OSError) -> None:
        if isinstance(exc, PermissionError) and exc.filename:
            found.append(str(exc.filename))

    for top, dirs, files in os.walk(folder, onerror=walk_error):
        found += [
            os.path.join(top, d) for d in dirs if denied(os.path.join(top, d), os.R_OK | os.X_OK)
        ]
        found += [os.path.join(top, f) for f in files if denied(os.path.join(top, f), os.R_OK)]
        if len(found) >= limit:
            break
    return found[:limit]


def _unreadable_error(folder: Path, found: list[str]) -> BundleError:
    uid = getattr(os, "getuid", lambda: "?")()
    return BundleError(
        f"{folder}: {', '.join(found)} cannot be read by this user (uid {uid}): the bundle was "
        "written by another user and its files are private to them; make the bundle readable "
        f"to the server (`chmod -R a+rX {folder}`), or serve it as the user who wrote it"
    )


@contextlib.contextmanager
def _loading(folder: Path, part: str, entry: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Turn an error raised while loading ``part`` into a ``BundleError`` naming the manifest,
    the part and its folder (or hub reference)."""
    try:
        yield
    except (BundleError, MemoryError):
        raise
    except Exception as exc:
        unreadable = _unreadable(folder)
        if unreadable:
            raise _unreadable_error(folder, unreadable) from exc
        no_temp = _no_temp_folder()
        if no_temp:  # not the bundle's fault: torch / dill need a temporary folder
            raise BundleError(
                f"{folder / MANIFEST}: could not load {part}: this process has no writable "
                f"temporary folder ({no_temp}), which the model libraries need; mount a "
                "writable /tmp (a tmpfs or emptyDir volume) or set TMPDIR to a writable "
                "folder; the bundle itself may stay read-only"
            ) from exc
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        entry = entry or {}
        if entry.get("path"):
            where = f"from the bundle folder {folder / entry['path']}"
            empty = empty_weights(folder / entry["path"])
            hint = (
                f"{', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty (0 bytes): the "
                f"model was saved incompletely before the bundle was written; {REWRITE}"
                if empty
                else f"it does not hold a model of this kind; {REWRITE}"
            )
        elif part.startswith("models."):
            where = f"from its reference {entry.get('reference') or 'the default model'!r}"
            hint = (
                "the bundle holds no folder for it (incomplete), or the hub id cannot be "
                f"reached offline; install or download the model, or {REWRITE}"
            )
        else:
            where, hint = f"in {folder}", REWRITE
        raise BundleError(
            f"{folder / MANIFEST}: could not load {part} {where} ({reason}): {hint}"
        ) from exc
