"""Reading a bundle's small files (``CURRENT``, ``manifest.json``): plain files only, capped.

A named pipe, a device or a socket in their place (``manifest.json`` linked to
``/dev/zero``, a FIFO left by a tool) would block a reader forever or fill its
memory, and a file far larger than any a writer makes would be read whole: both are
read here without blocking and never past ``limit + 1`` bytes, so the caller can
refuse a file that is too long.

Example::

    from pathlib import Path
    from llama_index_ragtune.pipeline.bundle_reads import read_capped

    read_capped(Path("runs/shop/bundles/v2/manifest.json"), 1 << 20, "write it again")
"""

from __future__ import annotations

import codecs
import os
import stat
from pathlib import Path

from llama_index_ragtune.pipeline.bundle_names import BundleError

__all__ = ["decode_text", "file_kind", "read_capped"]

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, for an error message: ``"a file"``, ``"a named pipe (FIFO)"``, ...

    Example::

        file_kind(os.stat("/dev/zero").st_mode)      # 'a character device'
    """
    return next((name for test, name in _KINDS if test(mode)), "a file")


def read_capped(path: Path, limit: int, fix: str, *, follow_links: bool = True) -> bytes:
    """At most ``limit + 1`` bytes of the plain file ``path`` (more than ``limit``: the
    caller refuses it as too long, without reading the rest).

    Anything but a plain file (after following links, unless ``follow_links`` is False:
    then a link is an ``OSError`` with ``errno.ELOOP``) is a ``BundleError`` naming
    ``path``, what it is, and ``fix``; it is opened without blocking (a named pipe with no
    writer) and never read. A missing file is ``FileNotFoundError``.

    Example::

        read_capped(Path("bundles/CURRENT"), 4096, "rewrite it", follow_links=False)  # b'v2\\n'
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise BundleError(
                f"{path} is {file_kind(mode)}, not a plain file; it was not read (it could "
                f"block or never end); {fix}"
            )
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


def decode_text(raw: bytes) -> str:
    """``raw`` as text: UTF-8, without the byte order mark Windows editors put first; UTF-16
    when it starts with a UTF-16 byte order mark (PowerShell's ``echo v2 > CURRENT``).
    Raises ``UnicodeDecodeError`` for anything else that is not UTF-8.

    Example::

        decode_text(b"\\xef\\xbb\\xbfv2\\r\\n"), decode_text("v2".encode("utf-16"))  # 'v2\\r\\n', 'v2'
    """
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16")
    return raw.decode("utf-8-sig")
