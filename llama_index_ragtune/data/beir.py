"""Load a data set in the BEIR layout (corpus, queries, graded qrels per split).

The layout is the one every BEIR download has::

    <name>/
      corpus.jsonl         {"_id", "title", "text", "metadata"?} per line (or corpus.jsonl.gz)
      queries.jsonl        {"_id", "text", "metadata"?} per line (or queries.jsonl.gz)
      qrels/<split>.tsv    header row, then query-id <TAB> corpus-id <TAB> score

Example::

    from llama_index_ragtune.data import load_beir

    scifact = load_beir("../shared/data/scifact", split="test")
    print(len(scifact.queries), len(scifact.corpus))    # 300 5183
    scifact.documents[0].id_                              # '4983': Document.id_ is the BEIR _id
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.reading import iter_lines, parse_json

if TYPE_CHECKING:
    from llama_index.core.schema import Document

logger = logging.getLogger(__name__)

EXPECTED_LAYOUT = (
    "expected the BEIR layout: <dir>/corpus.jsonl (or corpus.jsonl.gz), <dir>/queries.jsonl "
    "(or queries.jsonl.gz) and <dir>/qrels/<split>.tsv"
)


class BeirFormatError(DataError):
    """A BEIR file is malformed; the message names the file and line (a ``DataError``)."""


@dataclass
class BeirDataset:
    """One split of a BEIR data set.

    ``corpus`` maps every document id to its text (title + newline + text when the
    document has a title); ``documents`` holds the same texts as LlamaIndex
    ``Document`` objects (built once, on first access). ``queries`` holds only the
    queries judged in this split; ``qrels`` maps each of them to ``{doc_id: grade}``,
    where grade 0 means judged non-relevant.

    Example::

        ds = BeirDataset(name="toy", split="test", corpus={"d1": "Statins lower LDL."},
                         queries={"q1": "what lowers LDL?"}, qrels={"q1": {"d1": 2}})
        ds.relevant_docs(), ds.documents[0].id_      # ({'q1': ['d1']}, 'd1')
    """

    name: str
    split: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    titles: dict[str, str] = field(default_factory=dict, repr=False)
    query_metadata: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    path: Path | None = None

    def __repr__(self) -> str:
        return (
            f"BeirDataset(name={self.name!r}, split={self.split!r}, "
            f"documents={len(self.corpus)}, queries={len(self.queries)}, "
            f"judgements={sum(len(v) for v in self.qrels.values())})"
        )

    @cached_property
    def documents(self) -> list[Document]:
        """The corpus as LlamaIndex Documents (``id_`` = BEIR ``_id``), built once."""
        from llama_index.core.schema import Document

        return [
            Document(
                id_=doc_id,
                text=text,
                metadata={"title": self.titles.get(doc_id, "")},
                excluded_embed_metadata_keys=["title"],
                excluded_llm_metadata_keys=["title"],
            )
            for doc_id, text in self.corpus.items()
        ]

    def relevant_docs(self, min_grade: int = 1) -> dict[str, list[str]]:
        """Map each query id to its documents with grade >= ``min_grade`` (best grade first)."""
        out: dict[str, list[str]] = {}
        for qid, judged in self.qrels.items():
            docs = sorted(
                (d for d, g in judged.items() if g >= min_grade), key=lambda d: -judged[d]
            )
            if docs:
                out[qid] = docs
        return out


def load_beir(
    path: str | Path,
    split: str = "test",
    max_queries: int | None = None,
) -> BeirDataset:
    """Load ``split`` of the BEIR data set in ``path``.

    Files are UTF-8 and may be gzip-compressed; lines may end in LF, CRLF or CR.
    The qrels file may start with a header row and may use the 4-column TREC
    layout (``qid iter doc grade``). Best-effort rules, each announced by a
    ``UserWarning`` naming the file, a count and examples with line numbers:
    judgements of query or document ids that are not in the corpus / queries are
    dropped; a (query, document) pair judged twice with different grades keeps
    the higher grade; documents with neither title nor text are kept.

    Args:
        path: folder holding corpus.jsonl, queries.jsonl and qrels/<split>.tsv.
        split: name of the qrels file without ``.tsv`` (``train``, ``dev``, ``test``...).
        max_queries: keep only the first N judged queries (in queries.jsonl order).

    Raises:
        FileNotFoundError: the folder, one of its files or the qrels folder is missing.
        NotADirectoryError: ``path`` is a file.
        DataError: (a ``ValueError``) an unknown split (the message lists the splits
            there are); a line that is not UTF-8, not JSON or truncated gzip; a bad or
            duplicate id; a grade that is not an integer; an empty corpus; a judged
            query without text; a split with no judgement left or none relevant.
            The message names the file and line.

    Example::

        ds = load_beir("../shared/data/scifact", split="train", max_queries=100)
    """
    if max_queries is not None:
        if isinstance(max_queries, bool) or not isinstance(max_queries, int):
            raise TypeError(f"max_queries must be an int or None, got {max_queries!r}")
        if max_queries < 0:
            raise ValueError(f"max_queries must be >= 0, got {max_queries}")
    root = Path(path).expanduser()
    corpus_file, queries_file, (qrels_file,) = check_beir_folder(root, [split])

    corpus, titles, doc_lines = _read_corpus(corpus_file)
    if not corpus:
        raise DataError(
            "the corpus is empty (no document lines)",
            path=corpus_file,
            hint='add one {"_id", "title", "text"} object per line',
        )
    all_queries, all_metadata, query_lines = _read_queries(queries_file)
    qrels = _read_qrels(qrels_file)
    qrels = _drop_unknown(qrels, corpus, all_queries, qrels_file)
    _check_judged(qrels, qrels_file, split)

    qids = [qid for qid in all_queries if qid in qrels]
    empty = [qid for qid in qids if not all_queries[qid].strip()]
    if empty:
        raise DataError(
            f"judged queries without text: {_examples(empty, query_lines)}",
            path=queries_file,
            hint=f"give them a text or remove their rows from {qrels_file.name}",
        )
    _warn_empty_documents(corpus, doc_lines, corpus_file)
    if max_queries is not None:
        qids = qids[:max_queries]
    return BeirDataset(
        name=root.resolve().name,
        split=split,
        corpus=corpus,
        titles=titles,
        queries={qid: all_queries[qid] for qid in qids},
        qrels={qid: qrels[qid] for qid in qids},
        query_metadata={qid: all_metadata[qid] for qid in qids if qid in all_metadata},
        path=root,
    )


def check_beir_folder(
    path: str | Path, splits: Sequence[str] = ()
) -> tuple[Path, Path, list[Path]]:
    """Check the BEIR layout of ``path`` without reading the files (cheap: no parsing).

    Returns ``(corpus file, queries file, [qrels file per split])``.

    Raises:
        FileNotFoundError: the folder, corpus.jsonl, queries.jsonl or qrels/ is missing.
        NotADirectoryError: ``path`` is a file.
        DataError: a split has no qrels file (the message lists the splits there are).

    Example::

        check_beir_folder("../shared/data/scifact", ["train", "test"])
    """
    root = Path(path).expanduser()
    if root.is_file():
        raise NotADirectoryError(f"{root} is a file, not a BEIR folder ({EXPECTED_LAYOUT})")
    if not root.is_dir():
        raise FileNotFoundError(f"BEIR folder not found: {root} ({EXPECTED_LAYOUT})")
    corpus_file = _find(root, "corpus.jsonl")
    queries_file = _find(root, "queries.jsonl")
    return corpus_file, queries_file, [_find_qrels(root, split) for split in splits]


def available_splits(path: str | Path) -> list[str]:
    """The split names that ``path/qrels`` holds.

    Example::

        available_splits("../shared/data/scifact")     # ['test', 'train']
    """
    qrels_dir = Path(path) / "qrels"
    if not qrels_dir.is_dir():
        return []
    names = {p.name.removesuffix(".gz").removesuffix(".tsv") for p in qrels_dir.iterdir()}
    return sorted(
        n
        for n in names
        if (qrels_dir / f"{n}.tsv").is_file() or (qrels_dir / f"{n}.tsv.gz").is_file()
    )


# --------------------------------------------------------------------------- files


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"missing {name} (or {name}.gz) in {root} ({EXPECTED_LAYOUT})")


def _find_qrels(root: Path, split: str) -> Path:
    splits = available_splits(root)
    listed = ", ".join(splits) if splits else "none"
    if (
        not isinstance(split, str)
        or not split.strip()
        or split in (".", "..")
        or any(c in split for c in "/\\\0")
    ):
        raise DataError(
            f"invalid split name {split!r}",
            path=root,
            hint=f"pass the name of a file in {root / 'qrels'} without .tsv; "
            f"available splits: {listed}",
        )
    for candidate in (root / "qrels" / f"{split}.tsv", root / "qrels" / f"{split}.tsv.gz"):
        if candidate.is_file():
            return candidate
    if not splits:
        raise FileNotFoundError(
            f"missing qrels folder with <split>.tsv files in {root} ({EXPECTED_LAYOUT})"
        )
    raise BeirFormatError(
        f"unknown split {split!r} for BEIR folder {root}; available splits: {listed}"
    )


def _json_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in iter_lines(path, BeirFormatError):
        record = parse_json(line, path, number, BeirFormatError)
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


def _duplicate(kind: str, ident: str, first: int, path: Path, number: int) -> BeirFormatError:
    return BeirFormatError(
        f"duplicate {kind} id {ident!r} (first on line {first})",
        path=path,
        line=number,
        hint="ids must be unique: rename or remove one of the two lines",
    )


def _read_corpus(path: Path) -> tuple[dict[str, str], dict[str, str], dict[str, int]]:
    corpus: dict[str, str] = {}
    titles: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, record in _json_records(path):
        doc_id = _record_id(record, path, number)
        if doc_id in corpus:
            raise _duplicate("document", doc_id, lines[doc_id], path, number)
        title = _text_field(record, "title", path, number).strip()
        text = _text_field(record, "text", path, number)
        corpus[doc_id] = f"{title}\n{text}" if title else text
        lines[doc_id] = number
        if title:
            titles[doc_id] = title
    return corpus, titles, lines


def _read_queries(
    path: Path,
) -> tuple[dict[str, str], dict[str, dict[str, Any]], dict[str, int]]:
    queries: dict[str, str] = {}
    metadata: dict[str, dict[str, Any]] = {}
    lines: dict[str, int] = {}
    for number, record in _json_records(path):
        qid = _record_id(record, path, number)
        if qid in queries:
            raise _duplicate("query", qid, lines[qid], path, number)
        queries[qid] = _text_field(record, "text", path, number)
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


@dataclass
class _Judgements:
    """``grades[qid][doc_id]`` plus the first qrels line naming each query and document."""

    grades: dict[str, dict[str, int]] = field(default_factory=dict)
    query_lines: dict[str, int] = field(default_factory=dict)
    doc_lines: dict[str, int] = field(default_factory=dict)


def _read_qrels(path: Path) -> _Judgements:
    qrels = _Judgements()
    conflicts: list[str] = []
    first = True
    for number, line in iter_lines(path, BeirFormatError):
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) == 4:  # TREC style: qid iter doc grade
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise BeirFormatError(
                f"expected 'query-id<TAB>corpus-id<TAB>score', got {line[:200]!r}",
                path=path,
                line=number,
            )
        qid, doc_id, grade_text = (p.strip() for p in parts)
        if first and not _is_number(grade_text):  # the header row
            first = False
            continue
        first = False
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


def _examples(ids: list[str], lines: dict[str, int], limit: int = 5) -> str:
    shown = ", ".join(f"{i!r} (line {lines[i]})" if i in lines else repr(i) for i in ids[:limit])
    return shown + (f", ... ({len(ids)} in total)" if len(ids) > limit else "")


def _drop_unknown(
    judgements: _Judgements,
    corpus: dict[str, str],
    queries: dict[str, str],
    qrels_file: Path,
) -> dict[str, dict[str, int]]:
    """Drop judgements whose document or query is unknown, warning with a count and examples."""
    qrels = judgements.grades
    if not qrels:
        raise DataError(
            "no judgements (the file is empty or holds only a header)",
            path=qrels_file,
            hint="add 'query-id<TAB>corpus-id<TAB>score' rows",
        )
    unknown_docs: list[str] = []
    unknown_queries = [qid for qid in qrels if qid not in queries]
    kept: dict[str, dict[str, int]] = {}
    for qid, judged in qrels.items():
        if qid not in queries:
            continue
        known = {}
        for doc_id, grade in judged.items():
            if doc_id in corpus:
                known[doc_id] = grade
            else:
                unknown_docs.append(doc_id)
        if known:
            kept[qid] = known
    if not kept:
        raise DataError(
            f"none of the {sum(len(v) for v in qrels.values())} judgements names both a known "
            f"query and a known document (unknown queries: "
            f"{_examples(unknown_queries, judgements.query_lines) or 'none'}; unknown documents: "
            f"{_examples(list(dict.fromkeys(unknown_docs)), judgements.doc_lines) or 'none'})",
            path=qrels_file,
            hint="check that the qrels file belongs to this corpus.jsonl and queries.jsonl",
        )
    if unknown_docs:
        unknown_doc_ids = list(dict.fromkeys(unknown_docs))
        emptied = sum(1 for qid in qrels if qid in queries and qid not in kept)
        warnings.warn(
            f"{qrels_file}: dropped {len(unknown_docs)} judgements of document ids missing from "
            f"the corpus (e.g. {_examples(unknown_doc_ids, judgements.doc_lines)})"
            + (
                f"; {emptied} queries had no judged document left and were dropped"
                if emptied
                else ""
            ),
            stacklevel=3,
        )
    if unknown_queries:
        warnings.warn(
            f"{qrels_file}: dropped judgements of {len(unknown_queries)} query ids missing from "
            f"queries.jsonl (e.g. {_examples(unknown_queries, judgements.query_lines)})",
            stacklevel=3,
        )
    return kept


def _check_judged(qrels: dict[str, dict[str, int]], qrels_file: Path, split: str) -> None:
    if not any(grade > 0 for judged in qrels.values() for grade in judged.values()):
        raise DataError(
            f"split {split!r} has no relevant judgement (every grade is 0 or below), so no "
            "query has a positive document",
            path=qrels_file,
            hint="relevant documents need a grade of 1 or more",
        )


def _warn_empty_documents(corpus: dict[str, str], lines: dict[str, int], path: Path) -> None:
    empty = [doc_id for doc_id, text in corpus.items() if not text.strip()]
    if empty:
        warnings.warn(
            f"{path}: {len(empty)} documents have neither title nor text and cannot be retrieved "
            f"(kept): {_examples(empty, lines)}",
            stacklevel=3,
        )
