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
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index_ragtune._invisible import drop_invisible, is_blank
from llama_index_ragtune.data.beir_files import (
    MAX_GRADE,
    BeirFormatError,
    Judgements,
    read_corpus,
    read_qrels,
    read_queries,
)
from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.paths import check_file, check_folder, path_kind

if TYPE_CHECKING:
    from llama_index.core.schema import Document

logger = logging.getLogger(__name__)

__all__ = [
    "EXPECTED_LAYOUT",
    "MAX_GRADE",
    "BeirDataset",
    "BeirFormatError",
    "available_splits",
    "check_beir_folder",
    "find_file",
    "load_beir",
]

EXPECTED_LAYOUT = (
    "expected the BEIR layout: <dir>/corpus.jsonl (or corpus.jsonl.gz), <dir>/queries.jsonl "
    "(or queries.jsonl.gz) and <dir>/qrels/<split>.tsv"
)


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
    The qrels file may start with a header row, may quote its fields as a CSV
    writer does (``"q1"``, read as BEIR's ``csv.reader`` reads them) and may use the
    4-column TREC layout (``qid iter doc grade``, the iteration ``0`` or ``Q0``).
    Ids equal in NFC are one id: a second spelling in corpus.jsonl or queries.jsonl
    is a duplicate. Best-effort rules, each announced by a
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

    corpus, titles, doc_lines = read_corpus(corpus_file)
    if not corpus:
        raise DataError(
            "the corpus is empty (no document lines)",
            path=corpus_file,
            hint='add one {"_id", "title", "text"} object per line',
        )
    all_queries, all_metadata, query_lines = read_queries(queries_file)
    qrels = read_qrels(qrels_file)
    qrels = _drop_unknown(qrels, corpus, all_queries, qrels_file)
    _check_judged(qrels, qrels_file, split)

    qids = [qid for qid in all_queries if qid in qrels]
    empty = [qid for qid in qids if is_blank(all_queries[qid])]
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
        NotADirectoryError: ``path`` is a file (or a named pipe, a device, a socket).
        DataError: a split has no qrels file (the message lists the splits there are); a
            file of the layout is a named pipe, a device or a socket (named, never opened).

    Example::

        check_beir_folder("../shared/data/scifact", ["train", "test"])
    """
    root = check_folder(Path(path).expanduser(), "BEIR folder", EXPECTED_LAYOUT)
    corpus_file = find_file(root, "corpus.jsonl")
    queries_file = find_file(root, "queries.jsonl")
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


def find_file(root: Path, name: str) -> Path:
    """``root/name``, else ``root/name.gz``; ``FileNotFoundError`` naming the layout when
    neither is there; a folder, a named pipe, a device, a socket or a broken link in their
    place is an error naming what it is (never opened).

    Example::

        find_file(Path("../shared/data/scifact"), "corpus.jsonl")
    """
    found = _first_file(root / name, root / f"{name}.gz")
    if found is None:
        raise FileNotFoundError(f"missing {name} (or {name}.gz) in {root} ({EXPECTED_LAYOUT})")
    return found


def _first_file(*candidates: Path) -> Path | None:
    """The first of ``candidates`` that is there: a plain file is returned; anything else
    there (a folder, a named pipe, a device, a socket, a broken link) is an error naming
    what it is, never opened (``paths.check_file``); None when none is there."""
    for i, candidate in enumerate(candidates):
        if path_kind(candidate) is not None:
            others = [c.name for c in candidates[i + 1 :] if path_kind(c) is not None]
            if others:  # e.g. an old corpus.jsonl next to a newer download corpus.jsonl.gz
                warnings.warn(
                    f"{candidate.parent}: both {candidate.name} and {', '.join(others)} are "
                    f"there; reading {candidate.name} only. Delete or move the one that is "
                    "not current",
                    stacklevel=4,
                )
            return check_file(candidate, f"{candidate.name} of the BEIR layout", BeirFormatError)
    return None


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
    found = _first_file(root / "qrels" / f"{split}.tsv", root / "qrels" / f"{split}.tsv.gz")
    if found is not None:
        return found
    if path_kind(root / "qrels") not in (None, "a folder"):
        check_folder(root / "qrels", "qrels folder", EXPECTED_LAYOUT)
    if not splits:
        raise FileNotFoundError(
            f"missing qrels folder with <split>.tsv files in {root} ({EXPECTED_LAYOUT})"
        )
    raise BeirFormatError(
        f"unknown split {split!r} for BEIR folder {root}; available splits: {listed}"
    )


def _examples(ids: list[str], lines: dict[str, int], limit: int = 5) -> str:
    shown = ", ".join(f"{i!r} (line {lines[i]})" if i in lines else repr(i) for i in ids[:limit])
    return shown + (f", ... ({len(ids)} in total)" if len(ids) > limit else "")


def _drop_unknown(
    judgements: Judgements,
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
            f"{_examples(list(dict.fromkeys(unknown_docs)), judgements.doc_lines) or 'none'})"
            + _near_misses(unknown_queries, queries)
            + _near_misses(unknown_docs, corpus),
            path=qrels_file,
            hint="check that the qrels file belongs to this corpus.jsonl and queries.jsonl",
        )
    if unknown_docs:
        unknown_doc_ids = list(dict.fromkeys(unknown_docs))
        emptied = sum(1 for qid in qrels if qid in queries and qid not in kept)
        warnings.warn(
            f"{qrels_file}: dropped {len(unknown_docs)} judgements of document ids missing from "
            f"the corpus (e.g. {_examples(unknown_doc_ids, judgements.doc_lines)})"
            + _near_misses(unknown_doc_ids, corpus)
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
            f"queries.jsonl (e.g. {_examples(unknown_queries, judgements.query_lines)})"
            + _near_misses(unknown_queries, queries),
            stacklevel=3,
        )
    return kept


def _near_misses(unknown: list[str], known: dict[str, str], limit: int = 3) -> str:
    """A note on the ``unknown`` ids that match a ``known`` one up to case, Unicode form,
    invisible characters or leading zeros of a number (``'D1'`` for ``'d1'``, ``'cafe\u0301'``
    for ``'caf\u00e9'``, ``'7'`` for ``'007'``), or ""."""
    if not unknown:
        return ""
    by_key: dict[str, str] = {}
    for ident in known:
        by_key.setdefault(_id_key(ident), ident)
    pairs = [
        f"{ascii(u)} ~ {ascii(by_key[_id_key(u)])}"
        for u in dict.fromkeys(unknown)
        if _id_key(u) in by_key
    ]
    if not pairs:
        return ""
    return (
        f"; {len(pairs)} of them differ from a known id only in case, Unicode form, invisible "
        f"characters or leading zeros ({', '.join(pairs[:limit])}): write each id the same way "
        "in every file"
    )


def _id_key(ident: str) -> str:
    key = unicodedata.normalize("NFKC", drop_invisible(ident)).casefold()
    return key.lstrip("0") or "0" if key.isdigit() else key  # '007' ~ '7' (a spreadsheet's)


def _check_judged(qrels: dict[str, dict[str, int]], qrels_file: Path, split: str) -> None:
    if not any(grade > 0 for judged in qrels.values() for grade in judged.values()):
        raise DataError(
            f"split {split!r} has no relevant judgement (every grade is 0 or below), so no "
            "query has a positive document",
            path=qrels_file,
            hint="relevant documents need a grade of 1 or more",
        )


def _warn_empty_documents(corpus: dict[str, str], lines: dict[str, int], path: Path) -> None:
    empty = [doc_id for doc_id, text in corpus.items() if is_blank(text)]
    if empty:
        warnings.warn(
            f"{path}: {len(empty)} documents have neither title nor text and cannot be retrieved "
            f"(kept): {_examples(empty, lines)}",
            stacklevel=3,
        )
