"""The pipeline's documents: a folder of Markdown / HTML / text with a metadata file, parsed to nodes.

Folder layout (the demo corpus in ``llama_index_ragtune/demo/help_centre`` is one)::

    docs/grocery/returns.md            any depth; .md .markdown .html .htm .txt
    docs/electronics/returns.html
    metadata.json                      optional: {relative path or glob: {key: value}}

``metadata.json`` maps paths relative to the docs folder, or glob patterns
(``"grocery/*"``, ``"**/*.html"``; ``*`` does not cross ``/``, ``**`` does; compared in
Unicode NFC, so a decomposed file name from macOS matches), to flat
metadata (strings, numbers, booleans; ``null`` is no value: it unsets a key an earlier
entry set). Every entry that matches a file is merged into its metadata in file order,
so later entries override earlier ones. An entry
that matches no file is an error (usually a typo) that suggests the closest files,
as is a key the parsers, the reader or LlamaIndex's vector stores own (``section_path``,
``file_path``, ``doc_id``...: refused, not namespaced, so a filter on the key means one
thing everywhere). A path or glob written ``./grocery/returns.md`` or ``grocery\\returns.md``
is the file ``grocery/returns.md``; one starting with ``/`` (an absolute path) is an
error: keys are relative to the docs folder. Without ``--metadata`` the file is looked for as
``<docs>/metadata.json``, then ``<docs>/../metadata.json``.

Skipped when walking the folder: names starting with ``.`` (hidden files and folders:
``.git``, ``.DS_Store``, macOS ``._*`` copies) or ``~$`` (office lock files), files of
other types, and linked folders, broken links, FIFOs and devices (a warning names those).
Two file names equal in Unicode NFC (names differing in case are two documents),
a file over ``MAX_DOCUMENT_BYTES`` (32 MiB; the metadata file too) and a file that is
not UTF-8 (UTF-16, Latin-1, Windows-1252, Shift-JIS...: every such file is named at once)
are each a ``DataError``.

Each document's ``id_`` is its path relative to the docs folder (``"grocery/returns.md"``):
the ``doc_id`` that labelled queries refer to. Nodes get stable ids
``"<doc id>#<n>"``, so citations and labels survive a rerun.

Example::

    from llama_index_ragtune.pipeline.sources import parse_documents, read_documents

    documents = read_documents("help_centre/docs", metadata="help_centre/metadata.json")
    nodes = parse_documents(documents)
    nodes[0].node_id, nodes[0].metadata["store"], nodes[0].metadata["section_path"]
"""

from __future__ import annotations

import bisect
import difflib
import gzip
import itertools
import json
import logging
import os
import stat
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from llama_index_ragtune._invisible import is_blank
from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.reading import GZIP_MAGIC, read_json_file

if TYPE_CHECKING:
    from llama_index.core.schema import BaseNode, Document

logger = logging.getLogger(__name__)

SUFFIXES = (".md", ".markdown", ".html", ".htm", ".txt")
HTML_SUFFIXES = (".html", ".htm")
METADATA_FILE = "metadata.json"
RESERVED_KEYS = ("section_path", "section_title", "block_types", "oversized", "partial_unit")
"""Metadata keys the structure-aware parsers set on every node."""
_BOOKKEEPING = ["file_path"]
MAX_DOCUMENT_BYTES = 32 * 2**20
"""The largest document file read (32 MiB, about 8 million tokens): a bigger one is an
error naming it, so that memory stays bounded (split the file)."""
LOCK_PREFIX = "~$"
"""Office lock files (``~$report.html``): skipped like hidden files."""


def find_metadata_file(docs_dir: str | Path) -> Path | None:
    """``<docs>/metadata.json`` or ``<docs>/../metadata.json``, whichever exists first (or None).

    A candidate that is there but cannot be read as a file (a broken symbolic link, a
    folder) is a ``DataError`` naming it, not passed over: its metadata would be lost.
    """
    docs = Path(docs_dir)
    for candidate in (docs / METADATA_FILE, docs.parent / METADATA_FILE):
        if candidate.is_file():
            return candidate
        if candidate.is_symlink() or candidate.exists():
            raise DataError(
                "is not a readable file (a broken symbolic link, or a folder)",
                path=candidate,
                hint="fix or remove it, or pass the metadata file with --metadata",
            )
    return None


def _glob_tokens(pattern: str) -> list[str]:
    """``**/``, ``**``, ``*``, ``?`` or one literal character per token."""
    tokens, i = [], 0
    while i < len(pattern):
        for token in ("**/", "**", "*", "?"):
            if pattern.startswith(token, i):
                break
        else:
            token = pattern[i]
        if not (token == "**/" and tokens[-1:] == ["**/"]):  # a run of **/ is one **/
            tokens.append(token)
        i += len(token)
    return tokens


def glob_match(pattern: str, path: str) -> bool:
    """Whether ``path`` matches ``pattern`` (``*`` = any characters but ``/``, ``**/`` = any
    folders or none, ``**`` = anything, ``?`` = one character but ``/``).

    Runs in time proportional to ``len(pattern) * len(path)`` whatever the pattern
    (a regular expression backtracks for minutes on ``**/**/**/...`` against a deep path).

    Example::

        glob_match("grocery/**/*.md", "grocery/fresh/apples.md")      # True
    """
    tokens = _glob_tokens(pattern)
    end = len(tokens)
    # States: token index i (about to match tokens[i]) or -1 - i (inside the ".*" of a
    # "**/" at i, which must still end in "/").

    def closure(states: set[int]) -> set[int]:
        todo, out = list(states), set(states)
        while todo:
            i = todo.pop()
            if 0 <= i < end and tokens[i] in ("**/", "**", "*") and i + 1 not in out:
                out.add(i + 1)
                todo.append(i + 1)
        return out

    states = closure({0})
    for ch in path:
        step: set[int] = set()
        for i in states:
            if i < 0:  # inside a "**/"
                step.add(i)
                if ch == "/":
                    step.add(-i)  # -1 - i is the token; its successor is -i
                continue
            if i == end:
                continue
            token = tokens[i]
            if token == "**/":
                step.add(-1 - i)
                if ch == "/":
                    step.add(i + 1)
            elif token == "**" or (token == "*" and ch != "/"):
                step.add(i)
            elif (token == "?" and ch != "/") or token == ch:
                step.add(i + 1)
        if not step:
            return False
        states = closure(step)
    return end in states


def path_key(name: str) -> str:
    """The form two spellings of one relative path share: NFC, ``/`` separators, no ``./``.

    A leading ``/`` is kept: an absolute path is not the relative path after it (with
    the docs folder at ``/a``, ``/a/x.md`` is its ``x.md``, not ``a/x.md``).

    Example::

        path_key("./grocery\\returns.md"), path_key("/grocery/returns.md")
        # ('grocery/returns.md', '/grocery/returns.md')
    """
    text = unicodedata.normalize("NFC", name).replace("\\", "/")
    relative = "/".join(part for part in text.split("/") if part not in ("", "."))
    return "/" + relative if text.startswith("/") else relative


def _is_glob(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def _glob_matches(pattern: str, by_nfc: Sequence[tuple[str, str]]) -> list[str]:
    """The files (``(NFC name, name)`` pairs, sorted) that glob ``pattern`` matches: only
    those starting with its literal head (``grocery/`` of ``grocery/*.md``) are compared,
    so a glob per folder costs its folder's files, not every file."""
    head = pattern[: min((i for i, c in enumerate(pattern) if c in "*?"), default=len(pattern))]
    start = bisect.bisect_left(by_nfc, (head,))
    found = []
    for nfc, name in itertools.islice(by_nfc, start, None):
        if not nfc.startswith(head):
            break
        if glob_match(pattern, nfc):
            found.append(name)
    return found


def read_metadata(
    path: str | Path, files: Sequence[str], max_bytes: int = MAX_DOCUMENT_BYTES
) -> dict[str, dict[str, Any]]:
    """``{relative file: merged metadata}`` from a metadata JSON file (see the module docs).

    Raises ``DataError`` naming the file and the entry for a bad value (the shared
    reader refuses a lone surrogate), an entry that matches no file, or a reserved key,
    and naming the file when it is over ``max_bytes`` (the documents' limit: memory stays
    bounded) or not a regular file (a FIFO would block the read).
    A path without ``*`` / ``?`` is looked up, not matched against every file, so
    a metadata file with an entry per document takes linear time.
    """
    from llama_index_ragtune.retrievers.filters import _ID_KEYS

    # keys LlamaIndex's vector stores write into (or expose as) a node's metadata
    store_keys = (*_ID_KEYS, "_node_content", "_node_type")
    path = Path(path)
    if path.is_dir():
        raise DataError("is a folder", path=path, hint="pass the metadata JSON file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"metadata file not found: {path}")
    # bounded like a document, and never a FIFO (reading one blocks until a writer comes)
    with _open_regular(path, "not a regular file (a FIFO or device)") as handle:
        size, gzipped = _content_size(handle, max_bytes)
    if size > max_bytes:
        raise _too_large(
            path,
            max_bytes,
            "a metadata file" + (" (decompressed: it is gzip-compressed)" if gzipped else ""),
            'give many files their metadata with one glob entry ("grocery/**": {...}) '
            "instead of an entry per file, or pass a larger max_bytes",
        )
    try:
        # Strict JSON: a repeated pattern or key is an error, not a silent last-wins. The
        # same cap again: the file may have been replaced since it was measured.
        data = read_json_file(path, max_bytes=max_bytes)
    except FileNotFoundError:
        raise FileNotFoundError(f"metadata file not found: {path}") from None
    if not isinstance(data, dict):
        raise DataError(
            f"expected an object {{relative path or glob: {{key: value}}}}, got {type(data).__name__}",
            path=path,
        )
    merged: dict[str, dict[str, Any]] = {f: {} for f in files}
    by_key: dict[str, list[str]] = {}
    for f in files:
        by_key.setdefault(path_key(f), []).append(f)
    by_nfc = sorted((unicodedata.normalize("NFC", f), f) for f in files)
    unmatched = []
    for pattern, values in data.items():
        where = f"$[{json.dumps(pattern)}]"
        if not isinstance(values, dict):
            raise DataError(
                f"the metadata of {pattern!r} must be an object, got {type(values).__name__}",
                path=path,
                location=where,
            )
        for key, value in values.items():
            if is_blank(key) or not key.isprintable():
                raise DataError(
                    f"metadata key {ascii(key)} is blank or holds a control character",
                    path=path,
                    location=where,
                    hint="name each key with visible characters (e.g. 'store')",
                )
            if key in RESERVED_KEYS or key in _BOOKKEEPING or key in store_keys:
                owner = (
                    "LlamaIndex's vector stores (the node's document id)"
                    if key in store_keys
                    else "the node parsers or the reader"
                )
                raise DataError(
                    f"key {key!r} is set by {owner}; rename it (e.g. 'my_{key.lstrip('_')}')",
                    path=path,
                    location=where,
                )
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise DataError(
                    f"value of {key!r} must be a string, number, boolean or null (metadata filters "
                    f"compare flat values), got {type(value).__name__}",
                    path=path,
                    location=where,
                )
        # compared in NFC: a file name from macOS (NFD) and a key typed by hand (NFC) look
        # the same and must match
        if pattern in merged:
            matches = [pattern]
        elif not _is_glob(pattern):
            matches = by_key.get(path_key(pattern), [])
        else:
            matches = _glob_matches(path_key(pattern), by_nfc)
        if not matches:
            unmatched.append(pattern)
        for f in matches:
            merged[f].update(values)
    for file_metadata in merged.values():  # null: no value, unsetting an earlier entry's
        for key in [k for k, v in file_metadata.items() if v is None]:
            del file_metadata[key]
    if unmatched:
        close = {
            u: found[0]
            for u in unmatched[:5]
            if (found := difflib.get_close_matches(path_key(u), list(by_key), n=1, cutoff=0.8))
        }
        outside = [u for u in unmatched if ".." in path_key(u).split("/")]
        absolute = [u for u in unmatched if path_key(u).startswith("/")]
        raise DataError(
            f"{len(unmatched)} entr{'y' if len(unmatched) == 1 else 'ies'} match no document: "
            f"{unmatched[:5]}"
            + (f" (did you mean {close}?)" if close else "")
            + (
                f" ('..' in {outside[:5]} is not followed: a key names a file inside the "
                "docs folder, relative to it)"
                if outside
                else ""
            )
            + (
                f" ({absolute[:5]} start with '/' or '\\', an absolute path: a key is relative "
                "to the docs folder, so drop it and any folders above the docs folder)"
                if absolute
                else ""
            ),
            path=path,
            hint="keys are paths relative to the docs folder (or glob patterns); fix or remove them",
        )
    return merged


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


def read_documents(
    docs_dir: str | Path,
    metadata: str | Path | None = None,
    suffixes: Sequence[str] = SUFFIXES,
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> list[Document]:
    """The files under ``docs_dir`` as LlamaIndex ``Document`` objects, sorted by path.

    Args:
        docs_dir: the folder (searched recursively; hidden files and folders are skipped).
        metadata: a metadata JSON file (default: see :func:`find_metadata_file`).
        suffixes: file types read.
        max_bytes: the largest document or metadata file read (a larger one is a
            ``DataError`` naming it).

    Raises ``FileNotFoundError`` / ``NotADirectoryError`` for a missing folder,
    ``DataError`` for a folder without documents, a subfolder that cannot be listed
    (permissions), a file (or file name) that is not UTF-8 (every such file named), a
    file name equal in NFC to another, a file over
    ``max_bytes`` or that vanishes while read, a file that is not text
    (NUL bytes, mostly control characters: binary content, refused like a non-UTF-8
    file) or bad metadata. Empty files (no visible character: only whitespace and invisible
    characters) are skipped with a warning naming them. Symbolic links to files are
    read; linked folders are not descended into, and broken links, FIFOs and devices
    with a document suffix are not read: a warning names each of those.

    Example::

        docs = read_documents("help_centre/docs")
        docs[0].id_, docs[0].metadata      # ('electronics/brands/apple.html', {'store': ...})
    """
    from llama_index.core.schema import Document

    from llama_index_ragtune.node_parser.documents import DocumentParseError, document_text

    root = Path(docs_dir).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"documents folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file; pass the folder holding the documents")
    scan = _scan(root, suffixes)
    if scan.unreadable:
        error = scan.unreadable[0]
        raise DataError(
            f"cannot list this folder of the documents ({error.strerror or error})",
            path=error.filename or root,
            hint="fix its permissions (chmod) or move it out of the docs folder",
        )
    _warn_passed_over(root, scan)
    files = scan.files
    _check_names(root, files)
    if not files:
        hidden = f" (hidden, so skipped: {scan.hidden[:5]})" if scan.hidden else ""
        raise DataError(
            f"no documents ({', '.join(suffixes)}) found under {root}{hidden}",
            hint="point --docs at the folder holding your Markdown / HTML / text files",
        )
    meta_path = Path(metadata).expanduser() if metadata is not None else find_metadata_file(root)
    per_file = (
        read_metadata(meta_path, files, max_bytes)
        if meta_path is not None
        else {f: {} for f in files}
    )
    if meta_path is not None:
        logger.info("document metadata read from %s", meta_path)
    documents, empty, not_utf8 = [], [], []
    for rel in files:
        path = root / rel
        try:
            text = _read_text(path, max_bytes)
        except UnicodeDecodeError as exc:
            not_utf8.append((rel, exc))
            continue
        document = Document(
            id_=rel,
            text=text,
            metadata={**per_file[rel], "file_path": rel},
            excluded_embed_metadata_keys=list(_BOOKKEEPING),
            excluded_llm_metadata_keys=list(_BOOKKEEPING),
        )
        try:
            # the parsers' own test of "is this text", before the blank test: a file of NUL
            # bytes is binary (a zeroed or truncated download), refused, not skipped as empty
            document_text(document)
        except DocumentParseError as exc:
            raise DataError(str(exc), path=path) from None
        if is_blank(text.strip()):  # strip first: whitespace at C speed (32 MiB of it: 7 s)
            empty.append(rel)
            continue
        documents.append(document)
    if not_utf8:
        raise _not_utf8_error(root, not_utf8)
    if empty:
        logger.warning("skipped %d empty file(s) under %s: %s", len(empty), root, empty[:10])
    if not documents:
        raise DataError(f"every document under {root} is empty")
    return documents


def _warn_passed_over(root: Path, scan: _Scan) -> None:
    """Name what looks like documents but is not read: linked folders, broken links, FIFOs."""
    reasons = (
        (scan.linked_folders, "symbolic links to folders are not followed; pass the folder itself"),
        (
            scan.broken_links,
            "broken symbolic links (missing target, or a loop); fix or remove them",
        ),
        (scan.special, "not regular files (a FIFO, device or socket); replace them with files"),
    )
    for found, why in reasons:
        if found:
            logger.warning(
                "skipped %d entries under %s: %s (%s)", len(found), root, found[:10], why
            )


def check_documents(documents: Sequence[Any]) -> list[Document]:
    """``documents`` as a list of LlamaIndex ``Document`` objects with unique ids (``TypeError`` /
    ``ValueError`` naming the offender otherwise)."""
    from llama_index.core.schema import BaseNode, Document

    if documents is None:
        documents = []
    if isinstance(documents, BaseNode):
        raise TypeError(
            f"documents must be a list of llama_index Documents, got one {type(documents).__name__}"
            "; wrap it in a list: [document]"
        )
    if isinstance(documents, (str, bytes, os.PathLike, dict)) or not isinstance(
        documents, Iterable
    ):
        raise TypeError(
            "documents must be a folder (a str or pathlib.Path) or a list of llama_index "
            f"Documents, got a {type(documents).__name__}"
        )
    documents = list(documents)
    if not documents:
        raise ValueError("no documents given: pass a folder or a non-empty list of Documents")
    seen: set[str] = set()
    for i, doc in enumerate(documents):
        if not isinstance(doc, Document):
            raise TypeError(
                f"documents[{i}] is a {type(doc).__name__}, expected a llama_index Document"
            )
        if is_blank(doc.id_):
            raise ValueError(
                f"documents[{i}] has an empty id_ ({ascii(doc.id_)}: no visible character); "
                "give each document a unique id_ (its file name, say): labelled questions "
                "and node ids refer to it"
            )
        if doc.id_ in seen:
            raise ValueError(f"two documents share the id {doc.id_!r}; give each a unique id_")
        seen.add(doc.id_)
    return documents


def _node_id(index: int, document: Any) -> str:
    return f"{document.id_}#{index}"


def _is_html(doc: Document) -> bool:
    name = str(doc.metadata.get("file_path") or doc.id_).lower()
    return name.endswith(HTML_SUFFIXES)


def parse_documents(
    documents: Sequence[Document], tokenizer: str | None = None, show_progress: bool = False
) -> list[BaseNode]:
    """Parse each document with the structure-aware parser its type calls for.

    HTML (by ``file_path`` metadata or id suffix) goes to ``StructuredHTMLNodeParser``,
    everything else to ``StructuredMarkdownNodeParser`` (plain text is Markdown
    without headings). ``tokenizer`` (the encoder's folder or hub id) sets the node
    cap; node ids are ``"<document id>#<n>"``. A document that gives no node (an
    empty HTML shell, only heading markers) is skipped with a warning naming it.

    Example::

        nodes = parse_documents([Document(id_="faq.md", text="# FAQ\\n\\nOpen 9-5.")])
        nodes[0].node_id           # 'faq.md#0'
    """
    from llama_index_ragtune.node_parser import (
        StructuredHTMLNodeParser,
        StructuredMarkdownNodeParser,
    )

    kwargs: dict[str, Any] = {"id_func": _node_id}
    if tokenizer is not None:
        kwargs["tokenizer"] = tokenizer
    markdown = StructuredMarkdownNodeParser.from_defaults(**kwargs)
    html = StructuredHTMLNodeParser.from_defaults(**kwargs)
    html_docs = [d for d in documents if _is_html(d)]
    text_docs = [d for d in documents if not _is_html(d)]
    nodes: list[BaseNode] = []
    if text_docs:
        nodes.extend(markdown.get_nodes_from_documents(text_docs, show_progress=show_progress))
    if html_docs:
        nodes.extend(html.get_nodes_from_documents(html_docs, show_progress=show_progress))
    order = {d.id_: i for i, d in enumerate(documents)}
    nodes.sort(key=lambda n: (order.get(n.ref_doc_id or "", len(order)), _index(n.node_id)))
    if not nodes:
        raise DataError(
            f"the documents gave no nodes: every one has no text after parsing "
            f"(only markup or headings): {[d.id_ for d in documents][:5]}",
            hint="add documents with text",
        )
    kept = {n.ref_doc_id for n in nodes}
    textless = [d.id_ for d in documents if d.id_ not in kept]
    if textless:
        logger.warning(
            "skipped %d document(s) with no text after parsing (only markup or headings): %s",
            len(textless),
            textless[:10],
        )
    return nodes


def _index(node_id: str) -> int:
    tail = node_id.rsplit("#", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def save_nodes(nodes: Sequence[BaseNode], path: str | Path) -> Path:
    """Write nodes as JSON (``node.to_dict()``, no pickle), atomically."""
    from llama_index_ragtune._atomic import atomic_write_json

    return atomic_write_json(Path(path), [n.to_dict() for n in nodes])


def load_nodes(path: str | Path) -> list[BaseNode]:
    """Read nodes written by :func:`save_nodes`."""
    from llama_index.core.schema import TextNode

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [TextNode.from_dict(item) for item in data]
