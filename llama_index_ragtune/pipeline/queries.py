"""Labelled questions for tuning and evaluation: read, checked against the nodes, split.

A queries file is JSONL, one question a line (the demo's ``queries.jsonl`` format)::

    {"id": "q001", "question": "apple return policy?", "store": "grocery",
     "gold": [{"doc_id": "grocery/perishables.html", "section": "Perishable Food Returns"}],
     "answer": "Apples can be returned within 48 hours ...", "answerable": true, "split": "test"}

Fields: ``question`` (required); ``id`` (default ``line-<n>``; unique); ``gold``, a
list of references, each ``{"doc_id", "section"}`` (the nodes of that document whose
``section_path`` is the section or below it), ``{"doc_id"}`` (any node of the
document) or ``{"node_id"}``; ``answer`` (reference answer, optional);
``answerable`` (default: whether there is gold; ``false`` = the corpus cannot
answer, the right reply is the refusal); ``split`` (``"train"`` / ``"test"`` /
null); ``store`` (shorthand for ``"filters": {"store": ...}``) and ``filters``
(``{metadata key: value}``: the question is asked of those nodes only). Ids and
sections are compared in Unicode NFC (a file name from macOS is decomposed), and a
document or node id may be written with ``\\`` separators or a ``./`` prefix
(``"./grocery\\returns.md"`` is ``grocery/returns.md`` when no file is named so), but not
with a leading ``/`` (an absolute path is not relative to the docs folder). Question
ids are case-sensitive (``Q1`` and ``q1`` are two), but two ids equal in NFC are
duplicates, and so are ``1`` and ``"1"``. An
``answer`` on an unanswerable question (``"answerable": false``, or no ``gold``) is an
error unless it is the refusal: its target is the refusal, so the answer would be ignored. Any other
field (named with the accepted field it likely means, ``data.field_names``), an unknown
document / section / node, a gold node outside the question's filters, or a duplicate id
is a ``DataError`` naming the file and line. The file is read like every JSONL file
(``data.json_files.iter_json_lines``): a JSON array or indented document, a last line
cut off mid-record and a NUL-filled end are named as such; UTF-8 with a byte-order mark
(also one starting a later line: files concatenated),
``\n`` / ``\r\n`` / ``\r`` line ends, strict JSON (no repeated key, ``NaN`` or
overflowing number), lines of at most ``MAX_LINE_BYTES`` (1 MiB). Two questions with
the same text up to case, spacing and punctuation (``data.records.twin_key``) are always on
one side of the train / test split: given contradicting splits they are an error.

Example::

    from llama_index_ragtune.pipeline.queries import load_queries, split_queries

    queries = load_queries("help_centre/queries.jsonl", nodes)
    train, test = split_queries(queries, test_fraction=0.2, seed=0)
    train[0].gold_node_ids       # ['grocery/perishables.html#2', ...]
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.json_files import iter_json_lines
from llama_index_ragtune.data.records import twin_key
from llama_index_ragtune.pipeline.gold_references import _nfc, _NodeIndex, shown
from llama_index_ragtune.pipeline.labelled_query import (
    LabelledQuery,
    read_saved_queries,
    save_queries,
)
from llama_index_ragtune.pipeline.query_fields import FIELDS, SPLITS, _parse_line
from llama_index_ragtune.pipeline.query_splits import carve_dev, split_queries, split_with_test

if TYPE_CHECKING:
    from llama_index.core.schema import BaseNode

__all__ = [
    "FIELDS",
    "MAX_LINE_BYTES",
    "SPLITS",
    "LabelledQuery",
    "carve_dev",
    "load_queries",
    "read_saved_queries",
    "save_queries",
    "split_queries",
    "split_with_test",
]

MAX_LINE_BYTES = 2**20
"""The longest line of a queries file (1 MiB): one labelled question, not a corpus."""


def load_queries(
    path: str | Path, nodes: Sequence[BaseNode], skipped: Collection[str] = ()
) -> list[LabelledQuery]:
    """Read and check a queries JSONL file against the parsed ``nodes`` (module docstring).

    ``skipped``: ids of documents left out for having no text (a gold reference to one
    says so). Raises ``FileNotFoundError`` for a missing file and ``DataError`` naming
    the file and line for anything malformed.
    """
    from llama_index_ragtune.pipeline.runner import check_input_file

    path = check_input_file(path, "queries file")
    index = _NodeIndex(nodes, skipped)
    queries: list[LabelledQuery] = []
    first_line: dict[str, tuple[int, str]] = {}
    label: dict[tuple[str, tuple[tuple[str, Any], ...]], tuple[int, bool]] = {}
    given_split: dict[str, tuple[int, str]] = {}
    # The shared strict JSONL reader: a BOM (also one starting a later line), CRLF / CR line
    # ends and U+2028 inside strings are accepted; a repeated key, NaN, a huge number, deep
    # nesting, a NUL-filled end or a last line cut off mid-record is a DataError at file:line.
    for n, record in iter_json_lines(path, max_line_bytes=MAX_LINE_BYTES):
        where = {"path": path, "line": n}
        query = _parse_line(record, index, where, n)
        id_key = _nfc(query.id)  # composed and decomposed spellings print alike
        if id_key in first_line:
            before, spelled = first_line[id_key]
            other = "" if spelled == query.id else f" as {shown(spelled)}, another Unicode form"
            raise DataError(
                f"duplicate id {shown(query.id)} (first used on line {before}{other})", **where
            )
        first_line[id_key] = (n, query.id)
        text = twin_key(query.question)
        if query.split is not None:
            if text in given_split and given_split[text][1] != query.split:
                raise DataError(
                    f"the question {query.question[:80]!r} is in split {query.split!r} here but "
                    f"its twin on line {given_split[text][0]} (same text up to case, spacing "
                    f"and punctuation) is in {given_split[text][1]!r}",
                    hint="a test question whose twin is trained on is not a test: give both "
                    "the same split",
                    **where,
                )
            given_split.setdefault(text, (n, query.split))
        twin = (twin_key(query.question), tuple(sorted(query.filters.items())))
        if twin in label and label[twin][1] != query.answerable:
            raise DataError(
                f"the question {query.question[:80]!r} is marked "
                f"{'answerable' if query.answerable else 'unanswerable'} here but not on line "
                f"{label[twin][0]} (same text and filters)",
                hint="the two labels contradict each other: keep one, or change the filters",
                **where,
            )
        label.setdefault(twin, (n, query.answerable))
        queries.append(query)
    if not queries:
        raise DataError("no questions in the file", path=path)
    return queries
