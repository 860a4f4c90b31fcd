"""The documents folder on disk: its walk, the names it holds, and the bounded reading of one file.

``_scan`` sorts what a walk of the docs folder finds (documents, hidden files, linked
folders, broken links, FIFOs); ``_check_names`` refuses file names that cannot be
document ids; ``_read_text`` reads one file as text (``text_encoding.decode_document``) without blocking on a FIFO and
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
from llama_index_ragtune.pipeline.document_nodes import HTML_SUFFIXES

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


def _checked_suffixes(suffixes: Sequence[str]) -> frozenset[str]:
    """``suffixes`` lower-cased (a file's suffix is compared in lower case, so ``.MD`` and
    ``.md`` both read ``README.MD``); ``TypeError`` / ``ValueError`` naming a value that is
    no list of suffixes (one string would match by substring: ``"" in ".md"``)."""
    if isinstance(suffixes, (str, bytes)) or not isinstance(suffixes, (Sequence, set, frozenset)):
        raise TypeError(
            f"suffixes must be a list of file suffixes such as ['.md', '.html'], got "
            f"{suffixes!r}; wrap one suffix in a list: [{suffixes!r}]"
        )
    for suffix in suffixes:
        if not isinstance(suffix, str) or not suffix.startswith(".") or len(suffix) < 2:
            raise ValueError(
                f"suffix {suffix!r} must be a string starting with '.' (such as '.md'), "
                f"as pathlib's Path.suffix gives it"
            )
    return frozenset(suffix.lower() for suffix in suffixes)


def _scan(root: Path, suffixes: Sequence[str]) -> _Scan:
    """Walk ``root`` (hidden entries and linked folders not descended into), sorting what
    it holds; a folder that cannot be listed is recorded, not skipped silently."""
    suffixes = _checked_suffixes(suffixes)
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


def _shell_quoted(name: str) -> str:
    """``name`` quoted for bash (``$'a\\tb.md'``): control and bidi characters escaped."""
    from llama_index_ragtune.node_parser.documents import ID_BREAKING_CHARACTERS

    def escape(char: str) -> str:
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"

    escaped = name.replace("\\", "\\\\").replace("'", "\\'")
    return "$'" + ID_BREAKING_CHARACTERS.sub(lambda found: escape(found.group()), escaped) + "'"


def _check_names(root: Path, files: Sequence[str]) -> None:
    """``DataError`` for a file name that cannot be a document id: not UTF-8, holding a
    control, line-separator or bidi character (``node_parser.documents.ID_BREAKING_CHARACTERS``:
    it would break every line that prints the id), or equal in NFC to
    another (``café.md`` composed and decomposed print alike: a label meant for one
    would be read as the other). Names differing only in case, and one name in several
    formats (``faq.md`` and ``faq.html``), are kept, with a warning."""
    from llama_index_ragtune.node_parser.documents import ID_BREAKING_CHARACTERS

    seen: dict[str, str] = {}
    folded: dict[str, list[str]] = {}
    stems: dict[str, list[str]] = {}  # "faq.md" and "faq.html": one page in two formats?
    for rel in files:
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:  # the name's bytes are not UTF-8 (kept as surrogates)
            raise DataError(
                "the file name is not valid UTF-8, so it cannot be a document id",
                path=root / rel,
                hint="rename the file (e.g. `convmv -f latin1 -t utf8 --notest`)",
            ) from None
        bad = ID_BREAKING_CHARACTERS.search(rel)
        if bad:
            what = unicodedata.name(bad.group(), "a control character")
            renamed = ID_BREAKING_CHARACTERS.sub("-", rel)
            raise DataError(
                f"the file name {rel!r} holds {what} (U+{ord(bad.group()):04X}), which would "
                "break the log lines, reports and files that print its document id",
                path=root,
                hint=f"rename it without that character: `mv {_shell_quoted(rel)} "
                f"{_shell_quoted(renamed)}` in that folder",
            )
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
        stems.setdefault(os.path.splitext(key)[0], []).append(rel)
    same_case = [names for names in folded.values() if len(names) > 1]
    if same_case:
        logger.warning(
            "%d group(s) of file names under %s differ only in case: %s (kept as separate "
            "documents; a case-insensitive file system, macOS or Windows, holds one of each)",
            len(same_case),
            root,
            same_case[:5],
        )
    formats = [
        names
        for names in stems.values()
        if len({os.path.splitext(name)[1].lower() for name in names}) > 1  # not case only
    ]
    if formats:
        logger.warning(
            "%d page(s) under %s are there in several formats: %s (kept as separate "
            "documents; if one is an export of the other, every answer is indexed twice: "
            "remove one, or pass suffixes= to read one format)",
            len(formats),
            root,
            formats[:5],
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
    """The file's text (:func:`~llama_index_ragtune.node_parser.text_encoding.decode_document`:
    a byte-order mark, else UTF-8, else the charset an HTML page declares; a leading UTF-8
    BOM kept for the parsers, ``\\n`` line ends), at most ``max_bytes``.

    ``DataError`` naming the file when it has gone or cannot be read, is no longer a
    regular file (replaced by a FIFO after the walk: opened without blocking), is larger
    than ``max_bytes`` (also when it grows while read), or names an encoding that does
    not decode it (its byte-order mark, its declared charset). ``UnicodeDecodeError`` for
    a file that is not UTF-8 and declares nothing is left to the caller, which names every
    such file.
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
    # imported here: the parsers' package loads LlamaIndex, which a folder walk does not need
    from llama_index_ragtune.node_parser.text_encoding import (
        DocumentEncodingError,
        decode_document,
    )

    try:
        text = decode_document(data, html=path.suffix.lower() in HTML_SUFFIXES)
    except DocumentEncodingError as exc:
        hint = (
            "leave it out of the documents folder, or extract its text with a reader first"
            if exc.binary
            else "re-save it as UTF-8 from the encoding it was really saved in (`iconv -f "
            f"ENCODING -t UTF-8`; {exc.charset} does not read it), and fix or remove its "
            "charset declaration"
        )
        raise DataError(str(exc), path=path, hint=hint) from None
    # line ends read as Python's text mode reads them (\r\n and a lone \r are \n)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def declared_charset(data: bytes) -> str | None:
    """:func:`llama_index_ragtune.node_parser.text_encoding.declared_charset` (kept importable
    here).

    Example::

        declared_charset(b'<meta charset="windows-1252"><p>Caf\xe9</p>')   # 'WINDOWS-1252'
    """
    from llama_index_ragtune.node_parser.text_encoding import declared_charset as declared

    return declared(data)


def _not_utf8_error(root: Path, found: Sequence[tuple[str, UnicodeDecodeError]]) -> DataError:
    """One ``DataError`` for the files that are not UTF-8 and declare no charset that
    reads them: the first named with the byte, the others listed, so one run names them all; an
    HTML page that declares its encoding is converted from that one in the hint."""
    rel, exc = found[0]
    # a declaration here is UTF-8 (or UTF-16, read as UTF-8), or in a Markdown / text file
    declared = declared_charset(exc.object)
    if declared is not None and declared.replace("-", "").replace("_", "") in ("UTF8", "UTF16"):
        declared = None  # a wrong declaration says nothing about the bytes
    says = f"; the page declares charset {declared}" if declared else ""
    message = f"not UTF-8 text (byte {exc.start}{says})"
    others = [other for other, _ in found[1:]]
    if others:
        message += f"; nor are {len(others)} other file(s): {others[:10]}"
    if declared is not None:
        how = f"`iconv -f {declared} -t UTF-8` for the first, then make its <meta charset> utf-8"
    else:
        how = "e.g. `iconv -f WINDOWS-1252 -t UTF-8`, or SHIFT_JIS, LATIN1..., as it was saved"
    return DataError(
        message, path=root / rel, hint=f"convert {'them' if others else 'it'} to UTF-8 ({how})"
    )
