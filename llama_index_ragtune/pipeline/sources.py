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
Files are read by ``node_parser.text_encoding.decode_document``: a byte-order mark
(UTF-8, UTF-16, UTF-32) names the encoding; else UTF-8; else an HTML page is read in the
charset it declares (``<meta charset>``, ``http-equiv``, ``<?xml encoding?>``).
Two file names equal in Unicode NFC (names differing in case are two documents), a file
name holding a control, line-separator or bidi character (it would break every line
that prints its id), a file over ``MAX_DOCUMENT_BYTES`` (32 MiB; the metadata file too),
a declared charset that does not read its page, and a file that is not UTF-8 and
declares nothing (Latin-1, Windows-1252, Shift-JIS...: every such file is named at
once) are each a ``DataError``.

Each document's ``id_`` is its path relative to the docs folder (``"grocery/returns.md"``):
the ``doc_id`` that labelled queries refer to. Nodes get stable ids
``"<doc id>#<n>"``, so citations and labels survive a rerun.

The folder walk and the bounded reading of a file are in :mod:`.document_files`, glob
matching in :mod:`.path_globs`, checking and parsing ``Document`` objects in
:mod:`.document_nodes`; their public names stay importable from here.

Example::

    from llama_index_ragtune.pipeline.sources import parse_documents, read_documents

    documents = read_documents("help_centre/docs", metadata="help_centre/metadata.json")
    nodes = parse_documents(documents)
    nodes[0].node_id, nodes[0].metadata["store"], nodes[0].metadata["section_path"]
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import reprlib
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index_ragtune._invisible import is_blank
from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.reading import read_json_file
from llama_index_ragtune.pipeline.document_files import (
    LOCK_PREFIX,
    MAX_DOCUMENT_BYTES,
    SUFFIXES,
    _check_names,
    _content_size,
    _not_utf8_error,
    _open_regular,
    _read_text,
    _Scan,
    _scan,
    _too_large,
    document_files,
)
from llama_index_ragtune.pipeline.document_nodes import (
    HTML_SUFFIXES,
    check_documents,
    load_nodes,
    parse_documents,
    save_nodes,
)
from llama_index_ragtune.pipeline.path_globs import GlobIndex, glob_match, path_key

if TYPE_CHECKING:
    from llama_index.core.schema import Document

__all__ = [
    "HTML_SUFFIXES",
    "LOCK_PREFIX",
    "MAX_DOCUMENT_BYTES",
    "METADATA_FILE",
    "RESERVED_KEYS",
    "SUFFIXES",
    "check_documents",
    "document_files",
    "find_metadata_file",
    "glob_match",
    "load_nodes",
    "parse_documents",
    "path_key",
    "read_documents",
    "read_metadata",
    "save_nodes",
]

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
RESERVED_KEYS = ("section_path", "section_title", "block_types", "oversized", "partial_unit")
"""Metadata keys the structure-aware parsers set on every node."""
_BOOKKEEPING = ["file_path"]
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 120
_shown = _REPR.repr  # a key or pattern of megabytes is named in an error, not printed whole


def _clipped(text: str, limit: int = 120) -> str:
    """``text`` with its middle cut out ("...") when longer than ``limit``: for messages."""
    half = limit // 2
    return text if len(text) <= limit else f"{text[:half]}...{text[-half:]}"


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


def _is_glob(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def read_metadata(
    path: str | Path, files: Sequence[str], max_bytes: int = MAX_DOCUMENT_BYTES
) -> dict[str, dict[str, Any]]:
    """``{relative file: merged metadata}`` from a metadata JSON file (see the module docs).

    Raises ``DataError`` naming the file and the entry for a bad value (the shared
    reader refuses a lone surrogate), an entry that matches no file, a reserved key, a key
    with spaces around it (``" store"`` is another key than ``"store"``),
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
    by_nfc = GlobIndex((unicodedata.normalize("NFC", f), f) for f in files)
    unmatched = []
    for pattern, values in data.items():
        where = f"$[{_clipped(json.dumps(pattern))}]"
        if not isinstance(values, dict):
            raise DataError(
                f"the metadata of {_shown(pattern)} must be an object, got {type(values).__name__}",
                path=path,
                location=where,
            )
        for key, value in values.items():
            if is_blank(key) or not key.isprintable():
                raise DataError(
                    f"metadata key {_clipped(ascii(key))} is blank or holds a control character",
                    path=path,
                    location=where,
                    hint="name each key with visible characters (e.g. 'store')",
                )
            if key != key.strip():  # " store" is another key than "store": filters miss it
                raise DataError(
                    f"metadata key {_shown(key)} starts or ends with spaces",
                    path=path,
                    location=where,
                    hint=f"write it {_shown(key.strip())}; a filter on it would not see it",
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
                    f"value of {_shown(key)} must be a string, number, boolean or null (metadata "
                    f"filters compare flat values), got {type(value).__name__}",
                    path=path,
                    location=where,
                )
            if isinstance(value, str):
                _check_value_text(key, value, path, where)
        # compared in NFC: a file name from macOS (NFD) and a key typed by hand (NFC) look
        # the same and must match
        if pattern in merged:
            matches = [pattern]
        elif not _is_glob(pattern):
            matches = by_key.get(path_key(pattern), [])
        else:
            glob = path_key(pattern)
            matches = [name for nfc, name in by_nfc.candidates(glob) if glob_match(glob, nfc)]
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
            f"{_shown(unmatched[:5])}"
            + (f" (did you mean {_shown(close)}?)" if close else "")
            + (
                f" ('..' in {_shown(outside[:5])} is not followed: a key names a file inside the "
                "docs folder, relative to it)"
                if outside
                else ""
            )
            + (
                f" ({_shown(absolute[:5])} start with '/' or '\\', an absolute path: a key is relative "
                "to the docs folder, so drop it and any folders above the docs folder)"
                if absolute
                else ""
            ),
            path=path,
            hint="keys are paths relative to the docs folder (or glob patterns); fix or remove them",
        )
    return merged


def _check_value_text(key: str, value: str, path: Path, where: str) -> None:
    """``DataError`` for a metadata value holding a line break, control or bidi character
    (``node_parser.documents.ID_BREAKING_CHARACTERS``; a tab is allowed): each value is
    embedded as one ``key: value`` line of the node's text, so ``"a\nstore: other"``
    would forge another key's line, and a NUL or ESC is not text."""
    from llama_index_ragtune.node_parser.documents import ID_BREAKING_CHARACTERS

    bad = next((c for c in ID_BREAKING_CHARACTERS.finditer(value) if c.group() != "\t"), None)
    if bad is not None:
        what = unicodedata.name(bad.group(), "a control character")
        raise DataError(
            f"the value of {_shown(key)} holds {what} (U+{ord(bad.group()):04X}) at position "
            f"{bad.start()}: {_shown(value)}",
            path=path,
            location=where,
            hint="write the value on one line of visible text (each value is embedded as one "
            f"'{_shown(key)[1:-1]}: value' line of the node's text, which a line break would "
            "split into a forged line)",
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
    (permissions), a file that is not UTF-8 and has no byte-order mark or (HTML) declared
    charset that reads it (every such file named), a file name that is not UTF-8, holds a
    control or bidi character, or is equal in NFC to another, a file over
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
