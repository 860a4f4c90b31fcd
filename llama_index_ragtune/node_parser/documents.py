"""Reading a document's text for the structured parsers, and the error that names a bad document.

:func:`document_text` refuses content that is not text (NUL bytes, undecodable
bytes, mostly control characters) or that is only referenced (a ``text_resource`` path
or URL, which a parser does not fetch) with a :class:`DocumentParseError` that
names the document and says how to fix it; a few U+FFFD replacement
characters in otherwise good text are accepted. Bytes are decoded by
:func:`~.text_encoding.decode_document`. Messages show ids with :func:`shown_id`
(escaped when they hold :data:`ID_BREAKING_CHARACTERS`). Metadata that LlamaIndex
cannot render (lone surrogates, nesting deeper than :data:`MAX_METADATA_DEPTH`,
integers of more digits than Python turns into text) is refused the same way, naming
the key. :func:`without_control_characters` replaces
the few control characters that accepted text may hold, one for one.

Example::

    from llama_index.core import Document
    from llama_index_ragtune.node_parser.documents import DocumentParseError, document_text

    document_text(Document(text="# Hi", id_="hi.md"))           # '# Hi'
    try:
        document_text(Document(text="%PDF\\x00\\x01", id_="report.pdf"))
    except DocumentParseError as err:
        err.document_id                                        # 'report.pdf'
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import sys
from typing import Any

from llama_index.core.schema import BaseNode, MetadataMode

from llama_index_ragtune.node_parser.text_encoding import DocumentEncodingError, decode_document

_NON_PRINTABLE = re.compile("[\x01-\x08\x0e-\x1f\x7f\ufffd\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_WHITESPACE = re.compile(r"\s")
_MAX_NON_PRINTABLE_SHARE = 0.1
#: C0 and C1 control characters other than tab, LF and CR.
CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _control_table() -> dict[int, str]:
    """What :func:`without_control_characters` writes for each control character."""
    table = {code: " " for code in range(0x20) if chr(code) not in "\t\n\r"}
    table[0x00], table[0x7F] = "\ufffd", " "
    for code in range(0x80, 0xA0):
        try:  # the HTML standard's table for numeric references to C1 controls
            table[code] = bytes([code]).decode("cp1252")
        except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d: no character there
            table[code] = " "
    return table


_CONTROL_TABLE = _control_table()
#: Characters that change how a printed line reads: C0 / C1 controls and DEL (a newline
#: forges a log line, ESC colours a terminal), line and paragraph separators, and the bidi
#: controls that reorder what follows them (``evil\u202egpj.md`` prints as ``evilдm.jpg``).
ID_BREAKING_CHARACTERS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]"
)
#: Metadata nested deeper than this is refused: LlamaIndex renders it recursively (the
#: document's hash, the node's metadata string) and fails at Python's recursion limit.
MAX_METADATA_DEPTH = 100


class DocumentParseError(ValueError):
    """A document that a structured parser could not turn into nodes; ``document_id`` names it.

    Raised with ``on_error="raise"`` (the default). With ``on_error="skip"`` the
    parser logs the same message as a warning and parses the other documents.

    Example::

        from llama_index.core import Document
        from llama_index_ragtune.node_parser import (
            DocumentParseError,
            StructuredMarkdownNodeParser,
        )

        parser = StructuredMarkdownNodeParser(chunk_size=64, tokenizer=str.split)
        try:
            parser.get_nodes_from_documents([Document(text="\\x00PK\\x03", id_="upload.zip")])
        except DocumentParseError as err:
            print(err.document_id)     # upload.zip
    """

    def __init__(self, document_id: str, message: str, cause: str = "content"):
        super().__init__(message)
        self.document_id = document_id
        self.cause = cause  # "content" (the text), or "metadata" (it leaves no room for text)

    def __reduce__(self):  # keep the id and cause through pickling (multiprocess pipelines)
        return (type(self), (self.document_id, str(self), self.cause))


def _surrogate_metadata_key(metadata: Any, depth: int = 0) -> str | None:
    """The first metadata key whose name or (nested) string value holds a lone surrogate."""
    if depth > 20 or not isinstance(metadata, dict):
        return None
    for key, value in metadata.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(key, str) and _SURROGATE.search(key):
            return key.encode("utf-8", "backslashreplace").decode()
        for item in values:
            if (isinstance(item, str) and _SURROGATE.search(item)) or (
                isinstance(item, dict) and _surrogate_metadata_key(item, depth + 1) is not None
            ):
                return str(key)
    return None


def _deep_metadata_key(metadata: Any, limit: int = MAX_METADATA_DEPTH) -> str | None:
    """The top-level metadata key whose value nests dicts/lists more than ``limit`` deep.

    Iterative (any depth), each container visited once (a self-reference is not deep).
    """
    if not isinstance(metadata, dict):
        return None
    seen: set[int] = set()
    for key, value in metadata.items():
        stack = [(value, 1)]
        while stack:
            item, depth = stack.pop()
            if not isinstance(item, (dict, list, tuple)) or id(item) in seen:
                continue
            if depth > limit:
                return str(key)
            seen.add(id(item))
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


def _huge_int_metadata_key(metadata: Any) -> tuple[str, int] | None:
    """``(top-level key, about how many digits)`` of the first integer in ``metadata``
    (nested in dicts/lists too) with more digits than Python turns into text
    (``sys.get_int_max_str_digits()``), else None. Iterative, each container visited once."""
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    if not limit or not isinstance(metadata, dict):
        return None
    seen: set[int] = set()
    for key, value in metadata.items():
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, int) and item.bit_length() > 3 * limit:  # may be over it
                try:
                    str(item)
                except ValueError:
                    return str(key), int(item.bit_length() * math.log10(2)) + 1
            elif isinstance(item, (dict, list, tuple)) and id(item) not in seen:
                seen.add(id(item))
                stack.extend(item.values() if isinstance(item, dict) else item)
    return None


def shown_id(doc_id: object) -> str:
    """``doc_id`` quoted for a message: ``'faq.md'``, or its ``repr()`` (escaped) when it
    holds a character of :data:`ID_BREAKING_CHARACTERS`, so a log line stays one line
    and reads as written.

    Example::

        shown_id("faq.md"), shown_id("a\\nb.md")      # ("'faq.md'", "'a\\\\nb.md'")
    """
    if isinstance(doc_id, str) and ID_BREAKING_CHARACTERS.search(doc_id):
        return repr(doc_id)
    return f"'{doc_id}'"


def without_control_characters(text: str) -> str:
    """``text`` with every C0/C1 control character but tab, LF and CR replaced, one for one
    (so offsets into ``text`` still hold): a C1 control by the Windows-1252 character of
    its byte, as the HTML standard reads ``&#x93;`` (such characters in text are Windows-1252
    read as Latin-1), NUL by U+FFFD, any other by a space.

    Example::

        without_control_characters("\\x93Hi\\x94\\x01there\\x1b[0m")     # '“Hi” there [0m'
    """
    return text.translate(_CONTROL_TABLE) if CONTROL_CHARACTERS.search(text) else text


def utf16_without_mark(text: str) -> str | None:
    """``"UTF-16LE"`` / ``"UTF-16BE"`` when ``text`` is UTF-16 read as a one-byte encoding
    (a NUL beside each character, on the same side, the others printable, in its first
    4,096 characters), else ``None``.

    Example::

        utf16_without_mark("# Title".encode("utf-16-le").decode())     # 'UTF-16LE'
    """
    sample = text[:4096]
    if len(sample) < 4:
        return None
    for name, nuls, chars in (
        ("UTF-16LE", sample[1::2], sample[::2]),
        ("UTF-16BE", sample[::2], sample[1::2]),
    ):
        readable = sum(char.isprintable() or char.isspace() for char in chars)
        if nuls.count("\x00") >= 0.9 * len(nuls) and readable >= 0.9 * len(chars):
            return name
    return None


def document_text(node: BaseNode, html: bool = False) -> str:
    """The text of ``node``, or a :class:`DocumentParseError` naming it when the content is not text.

    Bytes (``text_resource.data``) are decoded as files are
    (:func:`~.text_encoding.decode_document`: a byte-order mark, else UTF-8, else, with
    ``html=True``, the charset the page declares).

    Example::

        from llama_index.core import Document
        from llama_index.core.schema import MediaResource

        document_text(Document(text_resource=MediaResource(data=b"# Hi")))     # '# Hi'
        # Document(text="%PDF\\x00\\x01", id_="report.pdf") -> DocumentParseError naming 'report.pdf'
    """
    doc_id = node.node_id
    shown = shown_id(doc_id)
    text = node.get_content(metadata_mode=MetadataMode.NONE) or ""
    resource = getattr(node, "text_resource", None)
    where = resource is not None and not resource.data and (resource.path or resource.url)
    if not text and where:
        raise DocumentParseError(
            doc_id,
            f"Document {shown} holds its text only by reference ({where}), which a parser does "
            "not fetch: it would give no nodes. Load the text first (Document(text=...), or "
            "MediaResource(data=...)).",
        )
    if not text and resource is not None and resource.data:
        try:
            text = decode_document(base64.b64decode(resource.data), html=html)
        except DocumentEncodingError as err:
            raise DocumentParseError(
                doc_id,
                f"Document {shown} {err}. Decode the bytes with their real encoding, or fix "
                "the declaration (<meta charset>), before parsing.",
            ) from err
        except (binascii.Error, UnicodeDecodeError) as err:
            raise DocumentParseError(
                doc_id,
                f"Document {shown} holds bytes that are not valid UTF-8 text ({err}) and "
                "declare no encoding. Decode the file with its real encoding, or extract its "
                "text with a reader (e.g. llama_index.core.SimpleDirectoryReader) before parsing.",
            ) from err
    if not isinstance(text, str):
        raise DocumentParseError(
            doc_id,
            f"Document {shown} has content of type {type(text).__name__}, not str. "
            "Pass the decoded text (Document(text=...)).",
        )
    if "\x00" in text:
        utf16 = utf16_without_mark(text)
        raise DocumentParseError(
            doc_id,
            f"Document {shown} contains NUL bytes: it looks like binary content "
            "(a PDF, image or archive), not text. Extract its text with a reader "
            "(e.g. llama_index.core.SimpleDirectoryReader) or leave it out."
            if utf16 is None
            else f"Document {shown} contains NUL bytes between its characters: it is {utf16} "
            f"text without a byte-order mark. Re-save it as UTF-8 (`iconv -f {utf16} -t "
            "UTF-8`), or decode it with that encoding before parsing.",
        )
    if _SURROGATE.search(text):
        raise DocumentParseError(
            doc_id,
            f"Document {shown} contains undecodable bytes (lone surrogates from a "
            "lossy decode). Decode the file with its real encoding before parsing.",
        )
    key = _surrogate_metadata_key(node.metadata)
    if key is not None:
        raise DocumentParseError(
            doc_id,
            f"The metadata of document {shown} (key {key!r}) contains undecodable bytes "
            "(lone surrogates from a lossy decode). Decode the value with its real encoding "
            "or drop the key before parsing.",
            cause="metadata",
        )
    key = _deep_metadata_key(node.metadata)
    if key is not None:
        raise DocumentParseError(
            doc_id,
            f"The metadata of document {shown} (key {key!r}) is nested more than "
            f"{MAX_METADATA_DEPTH} levels deep; LlamaIndex cannot render it (recursion limit). "
            "Flatten the value or drop the key before parsing.",
            cause="metadata",
        )
    huge = _huge_int_metadata_key(node.metadata)
    if huge is not None:
        raise DocumentParseError(
            doc_id,
            f"The metadata of document {shown} (key {huge[0]!r}) holds an integer of about "
            f"{huge[1]} digits, more than Python turns into text "
            f"(sys.get_int_max_str_digits() is {sys.get_int_max_str_digits()}), so no node "
            "could show or store it. Store the value as a string or a shorter number (a hash), "
            "drop the key, or raise the limit with sys.set_int_max_str_digits() before parsing.",
            cause="metadata",
        )
    visible = len(text) - len(_WHITESPACE.findall(text))
    bad = len(_NON_PRINTABLE.findall(text))
    if visible and bad / visible > _MAX_NON_PRINTABLE_SHARE:
        raise DocumentParseError(
            doc_id,
            f"Document {shown} is mostly non-printable characters ({bad} of {visible}): "
            "it looks like binary content or text decoded with the wrong encoding. "
            "Decode it correctly or extract its text with a reader before parsing.",
        )
    return text
