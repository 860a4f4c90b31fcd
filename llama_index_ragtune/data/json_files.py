"""A user's JSON and JSONL files, with errors that say what kind of file went wrong how.

Built on :mod:`~llama_index_ragtune.data.reading` (encodings, line caps, strict JSON):

- :func:`iter_json_lines`, the one reader of JSONL records (``--qa`` files, BEIR
  corpus and queries): a last line cut off mid-record in a file without a final
  newline (its writer was stopped) is named as such, with how to use the rest,
  instead of a bare ``malformed JSON (Unterminated string ...)``; so is a line of NUL
  bytes; a byte-order mark starting a later line (files concatenated) is dropped. A
  file that is one JSON document (a JSON array, on one line or many, or indented
  objects), wherever its first record starts, is named as such with the ``jq`` command
  that converts it; so are a later record spanning lines and a comma after a record.
- :func:`read_json_document`, for options that take one JSON document (``--dataset``,
  ``--val-dataset``, ``--squad``): a JSON Lines file is named as such, with what the
  option takes and which option reads JSONL, instead of ``malformed JSON (Extra data)``
  at line 2.

Example::

    from llama_index_ragtune.data.json_files import iter_json_lines, read_json_document

    for number, record in iter_json_lines("my_qa.jsonl"):
        ...
    data = read_json_document("train.json", expected="a RetrievalDataset JSON file")
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from shlex import quote
from typing import Any

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.paths import open_plain
from llama_index_ragtune.data.reading import (
    GZIP_MAGIC,
    MAX_LINE_BYTES,
    iter_lines,
    parse_json,
    read_json_file,
)

JSONL_ELSEWHERE = (
    "JSONL files go to other options: labelled questions to `ragtune tune --queries`, "
    "grounded QA to `ragtune train decoder --qa`, a BEIR folder (corpus.jsonl, queries.jsonl, "
    "qrels/) to `--beir`"
)
"""Where a JSONL file of this package's formats is read, for the hint of a wrong option."""


def read_json_document(
    path: str | Path, expected: str, hint: str = JSONL_ELSEWHERE, **options: Any
) -> Any:
    """``read_json_file(path, **options)``; a JSON Lines file is a ``DataError`` saying so.

    ``expected`` names what the caller reads (``"a SQuAD 2.0 JSON file"``); ``hint`` says
    where a JSONL file belongs. Every other problem is the reader's own error.

    Example::

        read_json_document("dev-v2.0.json", expected="a SQuAD 2.0 JSON file")["data"]
    """
    try:
        return read_json_file(path, **options)
    except DataError as exc:
        if exc.line is not None and exc.line > 1 and _is_json_lines(Path(path)):
            raise DataError(
                f"the file holds one JSON value per line (JSON Lines), not one JSON "
                f"document; expected {expected}",
                path=path,
                hint=hint,
            ) from None
        raise


def _is_json_lines(path: Path) -> bool:
    """Whether the first two non-blank lines of ``path`` are each a whole JSON object or array."""
    try:
        lines = [text for _, text in islice(iter_lines(path), 2)]
    except DataError:
        return False
    if len(lines) < 2:
        return False
    for text in lines:
        try:
            if not isinstance(json.loads(text), dict | list):
                return False
        except (ValueError, RecursionError):
            return False
    return True


def iter_json_lines(
    path: str | Path,
    error: type[DataError] = DataError,
    max_line_bytes: int | None = MAX_LINE_BYTES,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(1-based line number, parsed JSON value)`` for every non-blank line of ``path``.

    Lines are read by :func:`~.reading.iter_lines` and parsed by
    :func:`~.reading.parse_json` (their errors, as ``error``). A malformed last line of a
    file that does not end with a newline is reported as cut off, saying how to keep the
    complete lines. A byte-order mark at the start of any line (files concatenated) is
    dropped; a line of NUL bytes (a zero-filled file end) is named as such. A first
    record (after any blank lines) that is a JSON array, or that the end of its line
    leaves unfinished, is "one JSON document, not JSON Lines", with the ``jq`` command
    converting it; a later record spanning lines and a comma after a record are named too.

    Example::

        records = [record for _, record in iter_json_lines("corpus.jsonl")]
    """
    path = Path(path)
    lines = iter_lines(path, error, max_line_bytes)
    first = True
    for number, text in lines:
        text = text.removeprefix("\ufeff")  # files concatenated: each may start with a BOM
        if not text.strip("\x00"):
            raise error(
                "the line holds only NUL bytes (the zero-filled end of a file whose writer "
                "stopped, or a binary file)",
                path=path,
                line=number,
                hint=f"delete line {number} and the NUL bytes after it, or write the file again",
            )
        try:
            value = parse_json(text, path, number, error)
        except DataError:
            problem = _decode_error(text)
            if problem is None:
                raise
            if _at_end(lines) and _no_final_newline(path):
                raise error(
                    "the last line ends in the middle of a record and the file has no "
                    "newline at its end: it was cut off (its writer stopped part-way?)",
                    path=path,
                    line=number,
                    hint=f"write the file again, or delete line {number} to use the "
                    "complete lines before it",
                ) from None
            unfinished = problem.pos >= len(text)
            if first and (unfinished or text.startswith("[")):
                raise _one_document(path, number, text, error) from None
            if unfinished:
                what = "the record is not finished at the end of the line (indented JSON?)"
                fix = "complete the record or join its lines"
            elif _comma_after_record(text):
                what, fix = "a comma follows the record (the inside of a JSON array?)", "drop it"
            else:
                raise
            raise error(
                f"malformed JSON ({problem.msg} at column {problem.colno}): {what}",
                path=path,
                line=number,
                hint=f"JSON Lines keep each record whole on one line, with no comma between "
                f"records: {fix}",
            ) from None
        if first and isinstance(value, list):
            raise _one_document(path, number, text, error)
        first = False
        yield number, value


def _one_document(path: Path, number: int, text: str, error: type[DataError]) -> DataError:
    """The error for a JSONL file whose first record is a JSON array or spans lines."""
    name = path.name
    target = f"{path.stem}.jsonl" if path.suffix != ".jsonl" else f"{path.stem}.fixed.jsonl"
    array = text.startswith("[")
    if array and not _unfinished(text):
        what = "the line holds a JSON array"
    else:
        what = f"the line starts a JSON {'array' if array else 'object'} spanning several lines"
    command = f"jq -c {quote('.[]') if array else '.'} {name} > {target}"
    return error(
        f"{what}: this file looks like one JSON document, not JSON Lines (one JSON object "
        "per line)",
        path=path,
        line=number,
        hint=f"convert it with `{command}`"
        + ("" if array else " (objects listed under a key: `jq -c '.KEY[]'`)"),
    )


def _at_end(lines: Iterator[tuple[int, str]]) -> bool:
    """Whether ``lines`` has no further line (a problem in the next one counts as one)."""
    try:
        return next(lines, None) is None
    except DataError:
        return False


def _unfinished(text: str) -> bool:
    """Whether ``text`` starts a JSON value that the end of the line leaves unfinished."""
    problem = _decode_error(text)
    return problem is not None and problem.pos >= len(text)


def _comma_after_record(text: str) -> bool:
    """Whether ``text`` is one JSON value followed by a comma (a line of an unbracketed array)."""
    return text.endswith(",") and _decode_error(text[:-1].rstrip()) is None


def _decode_error(text: str) -> json.JSONDecodeError | None:
    """The JSON syntax error in ``text``; None when it parses or fails otherwise (a bad
    value, deep nesting: not a problem of where the line ends)."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return exc
    except (ValueError, RecursionError):
        return None
    return None


def _no_final_newline(path: Path) -> bool:
    """Whether the (uncompressed) file's last byte is not a line end."""
    with open_plain(path) as handle:
        if handle.read(2) == GZIP_MAGIC:
            return False  # a cut gzip stream is reported by the reader itself
        handle.seek(0, 2)
        if handle.tell() == 0:
            return False
        handle.seek(-1, 2)
        return handle.read(1) not in (b"\n", b"\r")
