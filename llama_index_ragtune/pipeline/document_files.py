"""The documents folder on disk: its walk, the names it holds, and the bounded reading of one file.

``_scan`` sorts what a walk of the docs folder finds (documents, hidden files, linked
folders, broken links, FIFOs); ``_check_names`` refuses file names that cannot be
document ids; ``_read_text`` reads one file as UTF-8 text without blocking on a FIFO and
without reading past ``MAX_DOCUMENT_BYTES``. :func:`~.sources.read_documents` puts them
together.

Example::

    from llama_index_ragtune.pipeline.document_files import document_files

    document_files("help_centre/docs")[:2]   # ['electronics/brands/apple.html', ...]
"""

from __future__ import annotations

import gzip
import logging
import os
import stat
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.reading import GZIP_MAGIC

logger = logging.getLogger(__name__)

SUFFIXES = (".md", ".markdown", ".html", ".htm", ".txt")
MAX_DOCUMENT_BYTES = 32 * 2**20
"""The largest document file read (32 MiB, about 8 million tokens): a bigger one is an
error naming it, so that memory stays bounded (split the file)."""
LOCK_PREFIX = "~$"
"""Office lock files (``~$report.html``): skipped like hidden files."""


@dataclass
class _Scan:
    """What a walk of the docs folder found (relative POSIX paths)."""

    files: list[str] = field(default_factory=list)  # the documents
    linked_folders: list[str] = field(default_factory=list)  # symbolic links to folders
    broken_links: list[str] = field(default_factory=list)  # dangling, or a loop
    special: list[str] = field(default_factory=list)  # FIFOs, devices, sockets
    hidden: list[str] = field(default_factory=list)  # names starting with "." or "~$"
    unreadable: list[OSError] = field(default_factory=list)  # folders that cannot be listed


def _scan(root: Path, suffixes: Sequence[str]) -> _Scan:
    """Walk ``root`` (hidden entries and linked folders not descended into), sorting what
    it holds; a folder that cannot be listed is recorded, not skipped silently."""
    scan = _Scan()
    for folder, dirs, names in os.walk(root, onerror=scan.unreadable.append):
        rel = Path(folder).relative_to(root)
        scan.hidden.extend((rel / d).as_posix() for d in dirs if d.startswith("."))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        scan.linked_folders.extend(
            (rel / d).as_posix() for d in dirs if os.path.islink(os.path.join(folder, d))
        )
        for name in names:
            if Path(name).suffix.lower() not in suffixes:
                continue
            path, rel_name = os.path.join(folder, name), (rel / name).as_posix()
            if name.startswith((".", LOCK_PREFIX)):
                scan.hidden.append(rel_name)
            elif os.path.isfile(path):  # a regular file, or a link to one
                scan.files.append(rel_name)
            elif not os.path.exists(path):  # a link to nothing, or a loop of links
                scan.broken_links.append(rel_name)
            else:  # a FIFO or a device (or a link to one): reading it could block or never end
                scan.special.append(rel_name)
    for found in (scan.files, scan.linked_folders, scan.broken_links, scan.special, scan.hidden):
        found.sort()
    return scan


def document_files(docs_dir: str | Path, suffixes: Sequence[str] = SUFFIXES) -> list[str]:
    """The document files under ``docs_dir`` (relative POSIX paths, sorted; hidden ones left out)."""
    return _scan(Path(docs_dir).expanduser(), suffixes).files


def _check_names(root: Path, files: Sequence[str]) -> None:
    """``DataError`` for a file name that cannot be a document id: not UTF-8, or equal in NFC to
    another (``café.md`` composed and decomposed print alike: a label meant for one
    would be read as the other). Names differing only in case are kept, with a warning."""
    seen: dict[str, str] = {}
    folded: dict[str, list[str]] = {}
    for rel in files:
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:  # the name's bytes are not UTF-8 (kept as surrogates)
            raise DataError(
                "the file name is not valid UTF-8, so it cannot be a document id",
                path=root / rel,
                hint="rename the file (e.g. `convmv -f latin1 -t utf8 --notest`)",
            ) from None
        key = unicodedata.normalize("NFC", rel)
        if key in seen:
            raise DataError(
                f"two file names are the same text in different Unicode forms (NFC / NFD): "
                f"{ascii(seen[key])} and {ascii(rel)}",
                path=root,
                hint="they print alike, so labels and metadata cannot tell them apart: "
                "merge or rename one",
            )
        seen[key] = rel
        folded.setdefault(key.casefold(), []).append(rel)
    same_case = [names for names in folded.values() if len(names) > 1]
    if same_case:
        logger.warning(
            "%d group(s) of file names under %s differ only in case: %s (kept as separate "
            "documents; a case-insensitive file system, macOS or Windows, holds one of each)",
            len(same_case),
            root,
            same_case[:5],
        )


def _open_regular(path: Path, replaced: str) -> BinaryIO:
    """``path`` opened for reading in binary, without blocking on a FIFO: ``DataError`` naming
    it when it has gone, cannot be read, or is not a regular file (``replaced`` says how)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DataError(
            f"cannot be read ({exc.strerror or exc}): it was removed or changed while the "
            "folder was read, or its permissions forbid it",
            path=path,
            hint="run again once nothing writes to the folder, or fix its permissions",
        ) from None
    handle = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        raise DataError(f"is {replaced}", path=path)
    return handle


def _content_size(handle: BinaryIO, max_bytes: int) -> tuple[int, bool]:
    """The size of the file's content and whether it is gzip-compressed: a gzip file is
    decompressed in 1 MiB reads, counted, not kept, and only up to ``max_bytes + 1``, so a
    few KB that expand to gigabytes (a decompression bomb) cost about ``max_bytes`` to
    refuse. Corrupt gzip data gives the size read so far (the JSON reader names it)."""
    if handle.read(2) != GZIP_MAGIC:
        return os.fstat(handle.fileno()).st_size, False
    handle.seek(0)
    size = 0
    try:
        with gzip.GzipFile(fileobj=handle) as unzipped:
            while size <= max_bytes:
                chunk = unzipped.read(min(2**20, max_bytes + 1 - size))
                if not chunk:
                    break
                size += len(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error):
        pass
    return size, True


def _too_large(path: Path, max_bytes: int, what: str, hint: str) -> DataError:
    return DataError(f"is larger than the {max_bytes:,}-byte limit of {what}", path=path, hint=hint)


def _read_text(path: Path, max_bytes: int) -> str:
    """The file's UTF-8 text (a leading BOM kept for the parsers, ``\\n`` line ends), at
    most ``max_bytes``.

    ``DataError`` naming the file when it has gone or cannot be read, is no longer a
    regular file (replaced by a FIFO after the walk: opened without blocking), is larger
    than ``max_bytes`` (also when it grows while read), or is not UTF-8
    (``UnicodeDecodeError`` is left to the caller, which names every such file).
    """
    replaced = "no longer a regular file (replaced by a FIFO or device while the folder was read)"
    with _open_regular(path, replaced) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_large(
            path,
            max_bytes,
            "one document",
            "split it into smaller files (one per chapter or page), or pass a larger "
            "max_bytes to read_documents",
        )
    # line ends read as Python's text mode reads them (\r\n and a lone \r are \n)
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def _not_utf8_error(root: Path, found: Sequence[tuple[str, UnicodeDecodeError]]) -> DataError:
    """One ``DataError`` for the files that are not UTF-8: the first named with the byte
    (or its UTF-16 byte-order mark), the others listed, so one run names them all."""
    rel, exc = found[0]
    utf16 = exc.object[:2] in (b"\xff\xfe", b"\xfe\xff")  # a UTF-16 byte-order mark
    message = "not UTF-8 text but UTF-16" if utf16 else f"not UTF-8 text (byte {exc.start})"
    others = [other for other, _ in found[1:]]
    if others:
        message += f"; nor are {len(others)} other file(s): {others[:10]}"
    how = (
        "`iconv -f UTF-16 -t UTF-8`"
        if utf16
        else "e.g. `iconv -f WINDOWS-1252 -t UTF-8`, or SHIFT_JIS, LATIN1..., as it was saved"
    )
    return DataError(
        message, path=root / rel, hint=f"convert {'them' if others else 'it'} to UTF-8 ({how})"
    )
