"""Reading an evaluation JSON file: bytes -> parsed JSON, every failure naming the file.

``EvaluationResults.load`` validates what :func:`read_evaluation_json` returns. The
file is UTF-8 (a byte-order mark is accepted); one in UTF-16 or UTF-32 (what Windows
PowerShell's ``>`` writes), a named pipe, device or folder in its place (refused, never
read: a pipe blocked), one that is empty, cut off while it was written, larger than
``MAX_EVALUATION_BYTES`` (checked from its size, before it is read), nested too deeply,
holding a repeated key or an integer of thousands of digits is an
``EvaluationFileError`` saying what is wrong and how to fix it.

Example::

    from llama_index_ragtune.evaluation.results_reading import read_evaluation_json

    data = read_evaluation_json("runs/bundle/evaluation.json")   # a dict, not yet validated
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from llama_index_ragtune._atomic_reads import open_plain_fd

__all__ = [
    "MAX_EVALUATION_BYTES",
    "EvaluationFileError",
    "find_lone_surrogate",
    "read_evaluation_json",
    "shown_name",
]

MAX_EVALUATION_BYTES = 256 * 2**20
"""Largest evaluation JSON read (256 MiB): about 2 million questions of four systems with
refusal scores (100,000 questions take 12 MB). A larger file is refused from its size
before it is read: parsed and rendered it would take gigabytes of memory."""
_REENCODE = "re-save it as UTF-8 (e.g. `iconv -f {encoding} -t UTF-8 FILE > FILE.utf8`)"
_SURROGATE = re.compile("[\ud800-\udfff]")


class EvaluationFileError(ValueError):
    """An evaluation JSON is missing, not JSON, or has a bad field (named in the message)."""

    def __init__(self, message: str, source: str | Path | None = None, field: str | None = None):
        self.source = None if source is None else str(source)
        self.field = field
        where = f"{shown_name(self.source)}: " if self.source else ""
        what = f"field '{shown_name(field)}': " if field else ""
        super().__init__(f"{where}{what}{message}")


def shown_name(name: str) -> str:
    """``name`` (a field path or file name) with every character a terminal would act on
    or hide (ESC, BEL, a line break, a bidi override) as its escape: an error message
    quoting a JSON key ``"\\x1b]0;...\\x07"`` set the terminal's title.

    Example::

        shown_name("metrics.a\\x1b[2Jb")   # 'metrics.a\\\\x1b[2Jb'
    """
    if name.isprintable():
        return name
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in name)


def read_evaluation_json(path: str | Path, max_bytes: int | None = MAX_EVALUATION_BYTES) -> Any:
    """The parsed JSON of ``path`` (not yet validated as an evaluation).

    ``max_bytes`` (default :data:`MAX_EVALUATION_BYTES`; ``None``: no cap) bounds the
    file's size, checked before it is read.

    Example::

        read_evaluation_json("evaluation.json")["format"]   # 'ragtune-evaluation'
    """
    path = Path(path)
    raw = _read_bytes(path, max_bytes)
    text = _decode(raw, path)
    if not text.strip():
        raise EvaluationFileError(
            "the file is empty; expected the evaluation JSON a tuning run writes (its run may "
            "have stopped before writing it: re-run the evaluation)",
            path,
        )
    from llama_index_ragtune.data.reading import unique_keys

    try:  # a repeated key is an error, not a silent last-wins
        return json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as exc:
        raise EvaluationFileError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}){_hint(exc, text)}",
            path,
        ) from None
    except RecursionError:
        raise EvaluationFileError("not valid JSON (nested too deeply to read)", path) from None
    except ValueError as exc:  # an integer of thousands of digits, a repeated key
        raise EvaluationFileError(f"not valid JSON ({exc})", path) from None


def _hint(error: json.JSONDecodeError, text: str) -> str:
    """How to fix a file cut off while it was written, or one holding two documents."""
    if error.pos >= len(text.rstrip()) or error.msg.startswith("Unterminated string"):
        return (  # the text ends before the document's brackets or string close
            "; the file ends before the JSON does: it was cut off while it was written "
            "(a full disk, a stopped run): re-run the evaluation or restore the file"
        )
    if error.msg == "Extra data":
        return "; more text follows the JSON document (two files written into one?): keep one"
    return ""


def _open_plain_file(path: Path) -> int:
    """A descriptor of the plain file ``path``, opened without blocking; anything else
    (a named pipe, a device, a folder, a socket) is an ``EvaluationFileError`` naming what
    it is, never read: ``open`` of a FIFO with no writer waited forever, ``/dev/zero``
    was read up to the cap."""
    return open_plain_fd(
        path,
        lambda kind: EvaluationFileError(
            f"it is {kind}, not a plain file, so it was not read (it could block or never "
            "end); save the JSON to a file and pass that",
            path,
        ),
    )


def _read_bytes(path: Path, max_bytes: int | None) -> bytes:
    try:
        with os.fdopen(_open_plain_file(path), "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if max_bytes is not None and size > max_bytes:
                raise EvaluationFileError(
                    f"the file is {size:,} bytes, over the {max_bytes:,}-byte cap of an "
                    "evaluation JSON (100,000 questions take about 12 MB): check that it is "
                    "the file you meant, or call EvaluationResults.load(path, max_bytes=None) "
                    "to read it anyway",
                    path,
                )
            if max_bytes is None:
                raw = handle.read()
            else:  # at most one byte over the cap, even for a file that grows meanwhile
                raw = handle.read(size + 1)  # not read(cap): that allocates the whole cap
                if len(raw) > size:
                    raw += handle.read(max_bytes + 1 - len(raw))
    except FileNotFoundError:
        raise EvaluationFileError("no such file", path) from None
    except OSError as exc:
        raise EvaluationFileError(f"cannot read it ({exc.strerror or exc})", path) from None
    if max_bytes is not None and len(raw) > max_bytes:
        raise EvaluationFileError(
            f"the file grew past the {max_bytes:,}-byte cap while it was read", path
        )
    return raw


def _decode(raw: bytes, path: Path) -> str:
    """UTF-8 text without its BOM; UTF-16 / UTF-32 and bytes that are not UTF-8 are named."""
    encoding = json.detect_encoding(raw)
    if not encoding.startswith("utf-8"):
        name = encoding.upper()[:6]  # UTF-16 or UTF-32, with or without a BOM
        iconv = encoding.upper().replace("-LE", "LE").replace("-BE", "BE")
        raise EvaluationFileError(
            f"the file is {name}-encoded, not UTF-8; " + _REENCODE.format(encoding=iconv), path
        )
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise EvaluationFileError(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at line {line}, column {column}); "
            + _REENCODE.format(encoding="CP1252")
            + " for a file from Windows",
            path,
        ) from None


def find_lone_surrogate(data: Any) -> tuple[str, str, str | None] | None:
    """``(where, escape, key)`` of the first lone surrogate in parsed JSON ``data``, or None.

    One C-speed dump finds whether there is any; only then is ``data`` walked for the
    field's path (the walk builds a path per value: a million latencies took 15 s and
    1.3 GB).

    Example::

        find_lone_surrogate({"title": "ok", "notes": "\\ud800"})   # ('notes', '\\\\ud800', None)
    """
    from llama_index_ragtune.data.reading import lone_surrogate

    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=True)
    except ValueError:  # a dict or list holding itself (built in code): the walk would
        return None  # never end; validation refuses the container where a value belongs
    except (TypeError, RecursionError):  # not plain JSON data: walk it
        return lone_surrogate(data)
    return lone_surrogate(data) if _SURROGATE.search(text) else None
