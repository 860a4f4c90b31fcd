"""Disk-level helpers of the atomic writers (:mod:`llama_index_ragtune._atomic`): ``fsync``
of files and folders, and ``OSError`` s reworded to name the file or folder being written
instead of its temporary sibling (a full disk, a read-only folder).

Example::

    from llama_index_ragtune._atomic_disk import fsync_tree

    fsync_tree("out/model.tmp")   # raises when a file did not reach the disk
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["fsync_tree"]


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# fsync errors saying the data did not reach the disk: the new version must not replace the old
_LOST_DATA = frozenset(
    code for code in (errno.EIO, errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None
)


def fsync_tree(folder: str | os.PathLike) -> None:
    """``fsync`` every file under ``folder``; raise when one of them did not reach the disk
    (disk full, quota, I/O error), so that the caller keeps the old version. Files that
    cannot be opened or synced for other reasons (a socket, a file system without fsync)
    are skipped.

    Example::

        fsync_tree("out/model.tmp")   # before renaming the folder into place
    """
    if os.name != "posix":
        return
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            except OSError as exc:
                if exc.errno in _LOST_DATA:
                    raise OSError(
                        exc.errno,
                        f"{exc.strerror} while saving {path} to disk; the previous version "
                        "is kept: free space (or fix the disk) and write again",
                    ) from exc
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


# errors saying a folder cannot be written: a read-only mount, no permission
_UNWRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def _unwritable(target: Path, exc: OSError) -> OSError:
    """``exc`` (read-only, no permission; naming a temporary sibling or a parent) as the
    same kind of ``OSError`` naming ``target``, saying nothing was replaced and what to do."""
    cause = "is read-only" if exc.errno == errno.EROFS else "is not writable by this user"
    return OSError(
        exc.errno,
        f"cannot write {target}: its folder (or one above it) {cause} ({exc.strerror}: "
        f"{exc.filename}); nothing was replaced: make the folder writable or write elsewhere",
        str(target),
    )


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno not in _UNWRITABLE:
            raise
        raise _unwritable(target, exc) from exc


@contextlib.contextmanager
def _naming(target: Path, tmp: Path | None = None) -> Iterator[None]:
    """An ``OSError`` that names no file (a full disk met by ``write`` / ``fsync``: "[Errno 28]
    No space left on device") raised again naming ``target`` (which is not replaced); so is
    a read-only folder refusing the temporary file ``tmp``."""
    try:
        yield
    except OSError as exc:
        if (
            tmp is not None
            and exc.errno in _UNWRITABLE
            and exc.filename is not None
            and os.fspath(exc.filename) == str(tmp)
        ):
            raise _unwritable(target, exc) from exc
        if exc.filename is not None or exc.errno is None or str(target) in str(exc):
            raise
        raise OSError(
            exc.errno,
            f"{exc.strerror or exc} while writing {target}; nothing was replaced: free space "
            "(or fix the disk) and write again",
        ) from exc
