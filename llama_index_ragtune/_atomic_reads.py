"""Reading the small files that atomic writers make (manifests, ``CURRENT``): plain files
only, capped.

A named pipe, a device or a socket in their place (a manifest linked to ``/dev/zero``,
a FIFO left by a tool) would block a reader forever or fill its memory, and a file far
larger than any a writer makes would be read whole: both are read here without blocking
and never past ``limit + 1`` bytes, so the caller can refuse a file that is too long.
Checking ``Path.is_file()`` first is not enough: the file can be swapped between the
check and the read, so the kind is checked on the opened descriptor.

Example::

    from pathlib import Path
    from llama_index_ragtune._atomic_reads import read_capped

    read_capped(Path("idx/hybrid_retriever.json"), 1 << 20, "persist it again")
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

__all__ = ["file_kind", "open_plain_fd", "path_kind", "read_capped"]

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, for an error message: ``"a file"``, ``"a named pipe (FIFO)"``, ...

    Example::

        file_kind(os.stat("/dev/zero").st_mode)      # 'a character device'
    """
    return next((name for test, name in _KINDS if test(mode)), "a file")


def path_kind(path: str | os.PathLike) -> str | None:
    """What ``path`` leads to, as a phrase for messages (links followed): ``"a file"``,
    ``"a folder"``, ``"a named pipe (FIFO)"``, ``"a character device"``, ``"a socket"``,
    ``"a broken symbolic link to '...'"``, ``"a looping symbolic link"``, ``"unreachable
    (...)"``; None when nothing is there (a file standing where a folder of the path
    should be, a NUL byte in the name). ``Path.is_file`` / ``exists`` read most of these
    as "not found" or "a file".

    Example::

        path_kind("/dev/null"), path_kind("/nope")   # ('a character device', None)
    """
    try:
        return file_kind(os.stat(path).st_mode)
    except FileNotFoundError:
        if not os.path.islink(path):
            return None
        try:
            return f"a broken symbolic link to {os.readlink(path)!r}"
        except OSError:  # removed meanwhile
            return "a broken symbolic link"
    except NotADirectoryError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a looping symbolic link"
        return f"unreachable ({exc.strerror or exc})"
    except ValueError:  # a NUL byte in the path
        return None


def open_plain_fd(
    path: str | os.PathLike,
    refuse: Callable[[str], BaseException],
    *,
    follow_links: bool = True,
) -> int:
    """A descriptor of the plain file ``path`` for reading, or ``refuse(kind)`` raised
    (``kind`` as :func:`file_kind` says it: "a named pipe (FIFO)", "a character device", ...)
    when anything else stands there. It is opened without blocking (``open`` of a named
    pipe with no writer waits forever) and checked on the opened descriptor (a file swapped
    after a check is caught too), then set back to blocking. Without ``follow_links`` a
    link is an ``OSError`` with ``errno.ELOOP``; nothing there is ``FileNotFoundError``.

    Example::

        fd = open_plain_fd("run/evaluation.json", lambda kind: ValueError(f"it is {kind}"))
        with os.fdopen(fd, "rb") as handle:
            data = handle.read()
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise refuse(file_kind(mode))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_capped(
    path: str | os.PathLike,
    limit: int,
    fix: str,
    *,
    follow_links: bool = True,
    error: type[Exception] = ValueError,
) -> bytes:
    """At most ``limit + 1`` bytes of the plain file ``path`` (more than ``limit``: the
    caller refuses it as too long, without reading the rest).

    Anything but a plain file (after following links, unless ``follow_links`` is False:
    then a link is an ``OSError`` with ``errno.ELOOP``) is an ``error`` (the caller's
    exception class) naming ``path``, what it is, and ``fix``; it is opened without
    blocking (a named pipe with no writer) and never read. A missing file is
    ``FileNotFoundError``.

    Example::

        read_capped(Path("bundles/CURRENT"), 4096, "rewrite it", follow_links=False)  # b'v2\\n'
    """
    fd = open_plain_fd(
        path,
        lambda kind: error(
            f"{path} is {kind}, not a plain file; it was not read (it could block or never "
            f"end); {fix}"
        ),
        follow_links=follow_links,
    )
    try:
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
