"""The files SQLite keeps beside a feedback store: ``<file>-wal``, ``-shm``, ``-journal``.

Before a store is opened, a log left without its database (a half-copied store), a
side file that is not a regular file (a folder, a named pipe, a socket or a device in
its place, or a symbolic link) and a database path that names a named pipe, socket or
device are refused with :class:`~llama_index_ragtune.feedback.schema.FeedbackStoreError`
naming it: SQLite would lose the log's records, or fail with a misleading "read-only",
"cannot be opened" or "disk I/O error", or (a named pipe) wait for ever.

Example::

    from llama_index_ragtune.feedback.side_files import wal_file

    wal_file("feedback.sqlite")   # PosixPath('feedback.sqlite-wal')
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = [
    "SIDE_FILES",
    "refuse_odd_database_file",
    "refuse_odd_side_files",
    "refuse_orphan_log",
    "wal_file",
]

SIDE_FILES = ("-wal", "-shm", "-journal")

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _error(message: str) -> Exception:
    from llama_index_ragtune.feedback.schema import FeedbackStoreError

    return FeedbackStoreError(message)


def _kind(mode: int) -> str | None:
    """What a file of ``mode`` is when it is no regular file (``None`` for a regular file)."""
    return next((kind for test, kind in _KINDS if test(mode)), None)


def refuse_odd_database_file(file: Path) -> None:
    """Raise naming a database path that is a named pipe, socket or device, or a link to
    one, or a link that loops (SQLite opened a FIFO and waited for ever with
    ``read_only=True``, and called ``/dev/null`` a "disk I/O error"); a folder is said by
    the caller, a missing file is new.

    Example::

        refuse_odd_database_file(Path("feedback.sqlite"))   # None for a regular or new file
    """
    try:
        kind = _kind(file.stat().st_mode)  # through a link: what SQLite would open
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # SQLite said "cannot be opened ... make them writable"
            where = (
                f"is a symbolic link that loops ({file} -> {os.readlink(file)} -> ... never "
                "reaches a file)"
                if file.is_symlink()
                else "goes through a folder link that loops (it never reaches a folder)"
            )
            raise _error(
                f"the feedback store path {file} {where}; point the link at the store's file "
                "or folder, or pass the file's own path"
            ) from None
        return
    if kind is None or kind == "a folder":
        return
    link = (
        f" (through the symbolic link {file} -> {os.readlink(file)})" if file.is_symlink() else ""
    )
    raise _error(
        f"the feedback store path {file} is {kind}{link}, not a regular file: a feedback "
        "store is an SQLite database file. Pass the path of a feedback store, or a new file "
        "name to create one"
    )


def refuse_odd_side_files(file: Path) -> None:
    """Raise naming a ``<file>-wal`` / ``-shm`` / ``-journal`` that is not a regular file
    (SQLite opens it as one: a folder read as "read-only" or "disk I/O error", a named
    pipe as ``-journal`` blocked the open for ever), or that is a symbolic link (SQLite
    refuses to open one, which it reported as "cannot be opened ... make them writable")."""
    for suffix in SIDE_FILES:
        side = Path(f"{file}{suffix}")
        if side.is_symlink():
            raise _error(
                f"{side} is a symbolic link (to {os.readlink(side)}), not a regular file: "
                f"SQLite keeps the feedback store {file.name}'s {suffix[1:]} file there and "
                "never opens it through a link. Remove the link (the file it points to is not "
                "touched), then open the store again"
            )
        try:
            mode = side.stat().st_mode
        except OSError:
            continue
        kind = _kind(mode)
        if kind is not None:
            raise _error(
                f"{side} is {kind}, not a regular file: SQLite keeps the feedback store "
                f"{file.name}'s {suffix[1:]} file there. Remove or rename it (no store "
                "data is in it), then open the store again"
            )


def refuse_orphan_log(file: Path, state: str = "does not exist") -> None:
    """Refuse to start a store at ``file`` while a log of a missing (or emptied) database
    lies beside it.

    A ``-wal`` (or ``-journal``) holds committed records that never reached the database
    file: a half-copied or half-restored store. A new store there would make SQLite reset
    the log on its first write and delete it on close, losing those records for good.
    """
    for log in (wal_file(file), Path(f"{file}-journal")):
        try:
            size = log.stat().st_size
        except OSError:
            continue
        if size:
            raise _error(
                f"feedback store {file} {state}, but its log {log.name} ({size} bytes of "
                "records not yet in the database file) lies beside it: the store was copied or "
                f"restored without its main file. Put {file.name} back beside the log (copy "
                "the files together), or move the log away to start an empty store"
            )


def wal_file(path: str | Path) -> Path:
    """The WAL file SQLite keeps next to ``path`` while any connection has it open."""
    return Path(f"{path}-wal")
