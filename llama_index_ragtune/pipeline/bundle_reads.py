"""Reading a bundle's small files (``CURRENT``, ``manifest.json``): plain files only, capped
(the shared reader of :mod:`llama_index_ragtune._atomic_reads`, raising ``BundleError``),
and decoded as Windows tools save them.

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
from pathlib import Path

from llama_index_ragtune._atomic_reads import file_kind
from llama_index_ragtune._atomic_reads import read_capped as _read_capped
from llama_index_ragtune.pipeline.bundle_names import BundleError

__all__ = ["decode_text", "file_kind", "read_capped"]


def read_capped(path: Path, limit: int, fix: str, *, follow_links: bool = True) -> bytes:
    """:func:`llama_index_ragtune._atomic_reads.read_capped` raising ``BundleError``: at most
    ``limit + 1`` bytes of the plain file ``path``; a pipe, device or socket in its place is
    named and never read.

    Example::

        read_capped(Path("bundles/CURRENT"), 4096, "rewrite it", follow_links=False)  # b'v2\\n'
    """
    return _read_capped(path, limit, fix, follow_links=follow_links, error=BundleError)


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
