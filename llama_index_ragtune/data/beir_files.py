"""The three files of a BEIR folder read line by line: corpus, queries and graded qrels.

Every malformed line raises :class:`BeirFormatError` naming the file and the line;
:func:`~llama_index_ragtune.data.beir.load_beir` puts the three together.

Example::

    from pathlib import Path
    from llama_index_ragtune.data.beir_files import read_qrels

    qrels = read_qrels(Path("../shared/data/scifact/qrels/test.tsv"))
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.json_files import iter_json_lines
from llama_index_ragtune.data.reading import iter_lines
from llama_index_ragtune.data.records import id_form, other_form_note

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_GRADE",
    "BeirFormatError",
    "Judgements",
    "read_corpus",
    "read_qrels",
    "read_queries",
]


class BeirFormatError(DataError):
    """A BEIR file is malformed; the message names the file and line (a ``DataError``)."""


def _json_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, record in iter_json_lines(path, BeirFormatError):
        if not isinstance(record, dict) or "_id" not in record:
            raise BeirFormatError(
                "expected a JSON object with an '_id' field",
                path=path,
                line=number,
                hint='each line must look like {"_id": "...", "text": "..."}',
            )
        yield number, record


def _record_id(record: dict[str, Any], path: Path, number: int) -> str:
    value = record["_id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BeirFormatError(
            f"'_id' must be a string or an integer, got {type(value).__name__}",
            path=path,
            line=number,
        )
    text = str(value)
    if not text.strip():
        raise BeirFormatError("empty '_id'", path=path, line=number, hint="give every line an id")
    if text != text.strip() or any(c in text for c in "\t\r\n"):
        raise BeirFormatError(
            f"'_id' {text!r} has surrounding whitespace or a tab/newline, so qrels rows "
            "cannot refer to it",
            path=path,
            line=number,
            hint="remove the whitespace from the id",
        )
    return text


def _text_field(record: dict[str, Any], key: str, path: Path, number: int) -> str:
    """``record[key]`` as text ("" when missing or null; a number is turned into text)."""
    value = record.get(key)
    if value is None:
        return ""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise BeirFormatError(
        f"field {key!r} must be a string, got {type(value).__name__}", path=path, line=number
    )


class _Ids:
    """The ids of one file so far: a second line with an id equal to an earlier one in NFC
    (``records.id_form``: ``'caf\u00e9'`` and ``'cafe\u0301'`` print alike) is a duplicate,
    named with both lines."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind, self.path = kind, path
        self.first: dict[str, tuple[str, int]] = {}  # id_form -> (id as written, line)

    def add(self, ident: str, number: int, repeats: bool) -> None:
        """Record ``ident`` of line ``number``; ``repeats``: its record equals the earlier one's."""
        spelled, first = self.first.setdefault(id_form(ident), (ident, number))
        if first == number:
            return
        other = other_form_note(ident, spelled)
        same = "" if other else (", with the same text" if repeats else ", with another text")
        raise BeirFormatError(
            f"duplicate {self.kind} id {ident!r} (first on line {first}{other}){same}",
            path=self.path,
            line=number,
            hint="remove the repeated line (was the file joined with a copy of itself?)"
            if repeats
            else "ids must be unique (in one Unicode form, NFC): rename or remove one of the "
            "two lines",
        )


def read_corpus(path: Path) -> tuple[dict[str, str], dict[str, str], dict[str, int]]:
    corpus: dict[str, str] = {}
    titles: dict[str, str] = {}
    lines: dict[str, int] = {}
    ids = _Ids("document", path)
    for number, record in _json_records(path):
        doc_id = _record_id(record, path, number)
        title = _text_field(record, "title", path, number).strip()
        text = _text_field(record, "text", path, number)
        text = f"{title}\n{text}" if title else text
        ids.add(doc_id, number, repeats=corpus.get(doc_id) == text)
        corpus[doc_id] = text
        lines[doc_id] = number
        if title:
            titles[doc_id] = title
    return corpus, titles, lines


def read_queries(
    path: Path,
) -> tuple[dict[str, str], dict[str, dict[str, Any]], dict[str, int]]:
    queries: dict[str, str] = {}
    metadata: dict[str, dict[str, Any]] = {}
    lines: dict[str, int] = {}
    ids = _Ids("query", path)
    for number, record in _json_records(path):
        qid = _record_id(record, path, number)
        text = _text_field(record, "text", path, number)
        ids.add(qid, number, repeats=queries.get(qid) == text)
        queries[qid] = text
        lines[qid] = number
        meta = record.get("metadata")
        if isinstance(meta, dict):
            metadata[qid] = meta
        elif meta is not None:
            raise BeirFormatError(
                f"field 'metadata' must be a JSON object, got {type(meta).__name__}",
                path=path,
                line=number,
            )
    return queries, metadata, lines


_GRADE = re.compile(r"[+-]?([0-9]+)(\.0*)?")
_TREC_ITERATION = re.compile(r"[Qq]0|[0-9]+")  # the 2nd column of TREC qrels


MAX_GRADE = 2**31 - 1
"""Largest accepted relevance grade (in absolute value): the range of trec_eval's integers."""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _grade(text: str, path: Path, number: int) -> int:
    match = _GRADE.fullmatch(text)
    if match is None:
        raise BeirFormatError(
            f"relevance score {text!r} is not an integer",
            path=path,
            line=number,
            hint="BEIR grades are integers: 0 (judged not relevant), 1, 2, ...",
        )
    if len(match.group(1).lstrip("0")) > 10 or abs(int(match.group(0).split(".")[0])) > MAX_GRADE:
        raise BeirFormatError(
            f"relevance score {text[:40]!r} is out of range",
            path=path,
            line=number,
            hint=f"grades must lie between -{MAX_GRADE} and {MAX_GRADE}",
        )
    return int(match.group(0).split(".")[0])


_HEADER_NAMES = (
    {"queryid", "qid", "query", "topic", "topicid"},
    {"corpusid", "docid", "documentid", "doc", "document", "docno", "passageid", "pid"},
    {"score", "relevance", "relevancescore", "rel", "label", "grade", "judgement", "judgment"},
)


def _is_header(qid: str, doc_id: str, grade_text: str, every: bool = False) -> bool:
    """Whether a first qrels row is a header (``query-id corpus-id score``): its score is no
    number and a column is a column name (``every``: each column is one, as a later row
    must be). A row like ``q1 d1 high`` is data, with a bad grade.
    """
    if _is_number(grade_text):
        return False
    fields = (qid, doc_id, grade_text)
    named = (
        re.sub(r"[^a-z]", "", f.lower()) in names
        for f, names in zip(fields, _HEADER_NAMES, strict=True)
    )
    return all(named) if every else any(named)


def _unquote(text: str) -> str:
    """A TSV field without the double quotes a CSV writer put around it (``"q1"`` -> ``q1``,
    ``""`` inside -> ``"``), as BEIR's own loader (``csv.reader``) reads it."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('""', '"')
    return text


@dataclass
class Judgements:
    """``grades[qid][doc_id]`` plus the first qrels line naming each query and document."""

    grades: dict[str, dict[str, int]] = field(default_factory=dict)
    query_lines: dict[str, int] = field(default_factory=dict)
    doc_lines: dict[str, int] = field(default_factory=dict)


def _columns(line: str, path: Path, number: int) -> tuple[str, str, str, str | None]:
    """``(query id, corpus id, grade, TREC iteration or None)`` of a qrels row, unquoted."""
    parts = [_unquote(p.strip()) for p in (line.split("\t") if "\t" in line else line.split())]
    if len(parts) == 4:  # TREC style: qid iter doc grade
        return parts[0], parts[2], parts[3], parts[1]
    if len(parts) != 3:
        raise BeirFormatError(
            f"expected 'query-id<TAB>corpus-id<TAB>score', got {line[:200]!r}",
            path=path,
            line=number,
        )
    return parts[0], parts[1], parts[2], None


def read_qrels(path: Path) -> Judgements:
    qrels = Judgements()
    conflicts: list[str] = []
    first = True
    for number, line in iter_lines(path, BeirFormatError):
        qid, doc_id, grade_text, iteration = _columns(line, path, number)
        if first and _is_header(qid, doc_id, grade_text):
            first = False
            continue
        first = False
        if _is_header(qid, doc_id, grade_text, every=True):
            raise BeirFormatError(
                f"relevance score {grade_text!r} is not an integer: the row repeats the header "
                "row (were qrels files joined?)",
                path=path,
                line=number,
                hint=f"delete line {number}, and check that no judgement is in two of the files",
            )
        if iteration is not None and not _TREC_ITERATION.fullmatch(iteration):
            raise BeirFormatError(
                "4 columns are read as TREC 'query-id iteration corpus-id score', but the 2nd "
                f"column holds {iteration[:40]!r}, no iteration number (0 or Q0): got "
                f"{line[:200]!r}",
                path=path,
                line=number,
                hint="write 'query-id<TAB>corpus-id<TAB>score' (an extra column, such as the "
                "row numbers pandas' to_csv writes in front, must go)",
            )
        if not qid or not doc_id:
            raise BeirFormatError(
                "empty query id or corpus id", path=path, line=number, hint="fill in both ids"
            )
        grade = _grade(grade_text, path, number)
        qrels.query_lines.setdefault(qid, number)
        qrels.doc_lines.setdefault(doc_id, number)
        judged = qrels.grades.setdefault(qid, {})
        if doc_id in judged and judged[doc_id] != grade:
            conflicts.append(f"{qid}/{doc_id} (line {number})")
            grade = max(grade, judged[doc_id])
        judged[doc_id] = grade
    if conflicts:
        warnings.warn(
            f"{path}: {len(conflicts)} (query, document) pairs are judged twice with different "
            f"grades; kept the higher grade (e.g. {', '.join(conflicts[:5])})",
            stacklevel=3,
        )
    return qrels
