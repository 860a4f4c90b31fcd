"""Reading data files with errors that name the file and line: encodings, gzip, JSON.

Files are UTF-8 (a byte-order mark is allowed) and may be gzip-compressed
(detected from the content, whatever the name). Lines end in ``\\n``, ``\\r\\n``
or ``\\r``. A line is at most ``MAX_LINE_BYTES`` (16 MiB) long, checked while
reading, so a file without newlines is refused without being read whole; a whole-file
JSON document (SQuAD) is at most ``MAX_JSON_FILE_BYTES`` (1 GiB), checked from its size
before it is read. JSON is
strict: ``NaN``, ``Infinity`` and numbers that overflow a float are rejected
instead of turning into ``nan`` / ``inf``, a key repeated in one object is an
error instead of a silent last-wins, and a lone surrogate
escape (``"\\ud800"``, text no UTF-8 file can hold) in any string or key is an error
instead of a crash when the text is later encoded or tokenized. ``JsonFields`` reads
typed fields of a parsed document, naming the JSON path of a bad one. Every
failure is a ``DataError`` that says where and how to fix it.

Example::

    from llama_index_ragtune.data.reading import iter_lines, parse_json, read_json_file

    for number, line in iter_lines("corpus.jsonl"):
        record = parse_json(line, "corpus.jsonl", number)
    squad = read_json_file("dev-v2.0.json")
    fields = JsonFields(Path("dev-v2.0.json"), schema="expected {'data': [...]}")
    articles = fields.items(squad, "data", "$")     # [('$.data[0]', {...}), ...]
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.paths import open_plain

GZIP_MAGIC = b"\x1f\x8b"
MAX_LINE_BYTES = 16 * 2**20
"""Default cap on one line of a JSONL / TSV file (16 MiB, far above any real record):
a longer line (a file without newlines, a corrupted download) is an error naming the
file and line, found after reading at most about this much of it."""
MAX_JSON_FILE_BYTES = 2**30
"""Default cap on a whole-file JSON document read by :func:`read_json_file` (1 GiB, about
25 times the real SQuAD 2.0 train file of 40 MiB): a larger file (the wrong file, a
concatenation, a dataset that should be JSONL) is an error naming it, found from its size
before any of it is read (a gzip file: after reading at most this much decompressed)."""
_UTF16_32_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)
JSON_LINES_HINT = (
    "the file looks like one JSON document (an array or an indented object); write one JSON "
    "object per line (JSONL), e.g. `jq -c '.[]' FILE.json > FILE.jsonl`"
)
"""How to fix a JSON-lines file that holds one JSON document instead."""
_REENCODE = "re-save it as UTF-8 (e.g. `iconv -t UTF-8`)"
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_HINT = (
    "fix or remove the \\u escape: a surrogate is valid only as a high (\\ud800-\\udbff) "
    "+ low (\\udc00-\\udfff) pair"
)


class _OwnedGzip(gzip.GzipFile):
    """A gzip stream that closes the file it reads when it is closed."""

    def close(self) -> None:
        raw = self.fileobj
        try:
            super().close()
        finally:
            if raw is not None:
                raw.close()


def _open(path: Path, error: type[DataError]) -> IO[bytes]:
    """The plain file as a binary stream, decompressed when its content is gzip; a named
    pipe, a device or a socket is ``error`` (``paths.open_plain``: opened once, never
    waited on)."""
    handle = open_plain(path, error)
    try:
        head = handle.read(4)
        for bom, name in _UTF16_32_BOMS:
            if head.startswith(bom):
                raise error(f"the file is {name}-encoded, not UTF-8", path=path, hint=_REENCODE)
        handle.seek(0)
        if head[:2] == GZIP_MAGIC:
            return _OwnedGzip(fileobj=handle, mode="rb")
        if path.suffix == ".gz":
            raise error(
                "the name ends in .gz but the file is not gzip-compressed",
                path=path,
                hint="compress it with gzip or drop the .gz suffix",
            )
    except BaseException:
        handle.close()
        raise
    return handle


def _decode(raw: bytes, path: Path, number: int, error: type[DataError]) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line)",
            path=path,
            line=number,
            hint=_REENCODE,
        ) from None


def _raw_lines(handle: IO[bytes], max_line_bytes: int | None) -> Iterator[bytes]:
    """The lines of ``handle`` without their ends (``\\n``, ``\\r\\n`` or a lone ``\\r``: it
    never occurs inside a UTF-8 sequence). With ``max_line_bytes``, no more than about that
    much is held: a longer line is yielded as soon as it is longer (for the caller to refuse).
    """
    limit = -1 if max_line_bytes is None else max_line_bytes + 2
    pending, skip_lf = b"", False
    while chunk := handle.readline(limit):
        if skip_lf and chunk.startswith(b"\n"):  # the \r\n of a chunk cut after its \r
            chunk = chunk[1:]
        skip_lf = False
        raw = pending + chunk
        complete = raw.endswith(b"\n")
        raw = raw[:-1] if complete else raw
        raw = raw[:-1] if complete and raw.endswith(b"\r") else raw
        parts = raw.split(b"\r")
        pending = b"" if complete else parts.pop()  # the line goes on in the next chunk
        skip_lf = not complete and raw.endswith(b"\r")
        if max_line_bytes is not None and len(pending) > max_line_bytes:
            parts.append(pending)
        yield from parts
    if pending:
        yield pending


def iter_lines(
    path: str | Path,
    error: type[DataError] = DataError,
    max_line_bytes: int | None = MAX_LINE_BYTES,
) -> Iterator[tuple[int, str]]:
    """Yield ``(1-based line number, stripped text)`` for every non-blank line of ``path``.

    Problems raise ``error`` (``DataError`` or a subclass). A line longer than
    ``max_line_bytes`` (default :data:`MAX_LINE_BYTES`; ``None``: no cap) is an error
    naming it, read no further than the limit (memory stays bounded whatever the file
    holds).

    Example::

        for number, line in iter_lines("qrels/test.tsv"):
            qid, doc_id, grade = line.split("\\t")
    """
    path = Path(path)
    number = 0
    try:
        with _open(path, error) as handle:
            for part in _raw_lines(handle, max_line_bytes):
                number += 1
                if max_line_bytes is not None and len(part) > max_line_bytes:
                    raise error(
                        f"the line is longer than {max_line_bytes:,} bytes",
                        path=path,
                        line=number,
                        hint="each line must hold one record: check that the file is JSONL/TSV "
                        "with a newline after every record (not one JSON document or a "
                        "truncated download), and split records that are larger",
                    )
                if number == 1 and part.startswith(b"\xef\xbb\xbf"):
                    part = part[3:]
                text = _decode(part, path, number, error).strip()
                if text:
                    yield number, text
    except _GZIP_ERRORS as exc:
        raise error(
            f"the gzip data is corrupt or truncated after line {number} "
            f"({exc or type(exc).__name__})",
            path=path,
            hint="download or compress the file again",
        ) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; write a number or null")


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads(..., object_pairs_hook=unique_keys)``: a key repeated in one object is a
    ``ValueError`` (JSON would keep the last one silently).

    Example::

        json.loads('{"a": 1, "a": 2}', object_pairs_hook=unique_keys)   # ValueError
    """
    out = dict(pairs)
    if len(out) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the key {key!r} appears twice in one object (keep one)")
            seen.add(key)
    return out


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large for a float")
    return value


def lone_surrogate(value: Any) -> tuple[str, str, str | None] | None:
    """``(where, escape, key)`` of the first string or key in parsed JSON ``value`` holding
    a lone surrogate, or None. ``where`` is a field path (``sources[0].text``; ``""``: the
    top level); for a bad key, ``key`` is the key and ``where`` the object holding it.

    Example::

        lone_surrogate({"question": "\\ud800 Why?"})   # ('question', '\\\\ud800', None)
    """
    stack: list[tuple[str, Any, str | None]] = [("", value, None)]
    while stack:
        where, item, key = stack.pop()
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found:
                return where, f"\\u{ord(found.group()):04x}", key
        elif isinstance(item, dict):
            for name, child in reversed(list(item.items())):
                stack.append((f"{where}.{name}" if where else str(name), child, None))
                stack.append((where, name, name))  # the key, checked before its value
        elif isinstance(item, list):
            stack.extend(
                (f"{where}[{i}]", child, None) for i, child in reversed(list(enumerate(item)))
            )
    return None


def _escape_line(text: str, escape: str) -> int | None:
    """The 1-based line of ``text`` holding the lone JSON escape ``escape``, when found."""
    code = escape[2:]
    pattern = rf"(?<!\\)(?:\\\\)*\\u(?i:{code})"
    if int(code, 16) < 0xDC00:  # a high surrogate not followed by a low one
        pattern += r"(?!\\u[dD][c-fC-F])"
    else:  # a low surrogate not preceded by a high one
        pattern = r"(?<!\\u[dD][89abAB][0-9a-fA-F]{2})" + pattern
    found = re.search(pattern, text)
    return None if found is None else text.count("\n", 0, found.start()) + 1


def parse_json(
    text: str,
    path: str | Path,
    line: int | None = None,
    error: type[DataError] = DataError,
    allow_nan: bool = False,
) -> Any:
    """Parse one JSON document (``text`` is line ``line`` of ``path``, or the whole file).

    A key repeated in one object is an error (JSON would keep the last silently);
    so is a lone surrogate escape in a string or key, and so are ``NaN`` / ``Infinity``
    and overflowing floats unless ``allow_nan``.

    Example::

        parse_json('{"_id": "d1"}', "corpus.jsonl", 1)     # {'_id': 'd1'}
    """
    try:
        value = json.loads(
            text,
            parse_constant=None if allow_nan else _reject_constant,
            parse_float=None if allow_nan else _finite_float,
            object_pairs_hook=unique_keys,
        )
    except json.JSONDecodeError as exc:
        if line is None:
            raise error(
                f"malformed JSON ({exc.msg})", path=path, line=exc.lineno, column=exc.colno
            ) from None
        document = text.strip() in ("[", "{")  # the first line of an indented JSON file
        raise error(
            f"malformed JSON ({exc.msg} at column {exc.colno})",
            path=path,
            line=line,
            hint=JSON_LINES_HINT if document else "each line must hold one JSON object",
        ) from None
    except RecursionError:
        raise error(
            "JSON nested too deeply to read", path=path, line=line, hint="flatten the record"
        ) from None
    except ValueError as exc:  # an int with too many digits, NaN / Infinity, a float overflow
        raise error(f"bad JSON value: {exc}", path=path, line=line) from None
    bad = lone_surrogate(value) if "\\u" in text else None  # only an escape makes one
    if bad is not None:
        where, escape, key = bad
        if key is not None:
            where = f"the key {key!r}" + (f" in {where}" if where else "")
        raise error(
            f"{where or 'the document'} contains an invalid character (a lone surrogate {escape})",
            path=path,
            line=line if line is not None else _escape_line(text, escape),
            hint=_SURROGATE_HINT,
        )
    return value


def read_json_file(
    path: str | Path,
    error: type[DataError] = DataError,
    allow_nan: bool = False,
    max_bytes: int | None = MAX_JSON_FILE_BYTES,
) -> Any:
    """Read and parse a whole JSON file (UTF-8, optionally gzip-compressed).

    A file over ``max_bytes`` (default :data:`MAX_JSON_FILE_BYTES`, 1 GiB; ``None``: no
    cap) is an error naming it, raised from its size before it is read (a gzip file: once
    more than ``max_bytes`` have been decompressed).

    Example::

        data = read_json_file("dev-v2.0.json")["data"]
    """
    path = Path(path)
    try:
        with _open(path, error) as handle:
            gzipped = isinstance(handle, gzip.GzipFile)
            if max_bytes is not None and not gzipped:
                _check_json_size(path, os.fstat(handle.fileno()).st_size, max_bytes, error)
            # read at most one byte over the cap: bounded for gzip and for a growing file
            raw = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
        if max_bytes is not None:
            _check_json_size(path, len(raw), max_bytes, error, gzipped=gzipped)
    except _GZIP_ERRORS as exc:
        raise error(
            f"the gzip data is corrupt or truncated ({exc or type(exc).__name__})",
            path=path,
            hint="download or compress the file again",
        ) from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise error(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x})",
            path=path,
            line=line,
            column=column,
            hint=_REENCODE,
        ) from None
    if not text.strip():
        raise error("the file is empty", path=path, hint="expected a JSON document")
    return parse_json(text, path, error=error, allow_nan=allow_nan)


def _check_json_size(
    path: Path, size: int, max_bytes: int, error: type[DataError], gzipped: bool = False
) -> None:
    if size <= max_bytes:
        return
    what = "decompresses to more than" if gzipped else f"is {size:,} bytes, over"
    raise error(
        f"the file {what} the {max_bytes:,}-byte cap of one JSON document",
        path=path,
        hint="check that it is the file you meant (the SQuAD 2.0 train file is about 40 MiB); "
        "a JSON document this large takes several times its size in memory once parsed: keep "
        "records as JSONL (one per line), or call read_json_file(path, max_bytes=None) to "
        "read it whole anyway",
    )


_MISSING = object()
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    list: "a list",
    dict: "an object",
    bool: "true/false",
}


class JsonFields:
    """Typed access to one parsed JSON file; errors name the file and the JSON path.

    ``schema`` is the default hint (what the layout should look like).

    Example::

        fields = JsonFields(Path("squad.json"), schema="expected {'data': [...]}")
        for where, article in fields.items(document, "data", "$"):
            title = fields.get(article, "title", (str,), where, default="")
    """

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self.schema = schema

    def error(self, message: str, where: str, hint: str | None = None) -> DataError:
        """A ``DataError`` at JSON path ``where`` of the file."""
        return DataError(message, path=self.path, location=where, hint=hint or self.schema)

    def get(
        self, obj: dict, key: str, kinds: tuple[type, ...], where: str, default: Any = _MISSING
    ) -> Any:
        """``obj[key]`` checked against ``kinds`` (``default`` when missing, else an error)."""
        if key not in obj:
            if default is not _MISSING:
                return default
            raise self.error(f"missing field {key!r}", where)
        value = obj[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            wanted = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            raise self.error(f"must be {wanted}, got {type(value).__name__}", f"{where}.{key}")
        return value

    def items(
        self, obj: dict, key: str, where: str, default: Any = _MISSING
    ) -> list[tuple[str, dict]]:
        """``(json path, object)`` for every entry of the list ``obj[key]``."""
        values = self.get(obj, key, (list,), where, default)
        out = []
        for i, value in enumerate(values):
            if not isinstance(value, dict):
                raise self.error(
                    f"must be an object, got {type(value).__name__}", f"{where}.{key}[{i}]"
                )
            out.append((f"{where}.{key}[{i}]", value))
        return out
