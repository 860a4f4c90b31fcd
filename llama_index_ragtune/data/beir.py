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

import gzip
import io
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llama_index.core.schema import Document

logger = logging.getLogger(__name__)

EXPECTED_LAYOUT = (
    "expected the BEIR layout: <dir>/corpus.jsonl (or corpus.jsonl.gz), <dir>/queries.jsonl "
    "(or queries.jsonl.gz) and <dir>/qrels/<split>.tsv"
)


class BeirFormatError(ValueError):
    """A BEIR file is malformed; the message names the file and line."""


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

    Args:
        path: folder holding corpus.jsonl, queries.jsonl and qrels/<split>.tsv.
        split: name of the qrels file without ``.tsv`` (``train``, ``dev``, ``test``...).
        max_queries: keep only the first N judged queries (in queries.jsonl order).

    Raises:
        FileNotFoundError: the folder or one of its files is missing.
        ValueError: unknown split, malformed line (``BeirFormatError``), empty corpus.

    Example::

        ds = load_beir("../shared/data/scifact", split="train", max_queries=100)
    """
    if max_queries is not None and max_queries < 0:
        raise ValueError(f"max_queries must be >= 0, got {max_queries}")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"BEIR folder not found: {root} ({EXPECTED_LAYOUT})")
    corpus_file = _find(root, "corpus.jsonl")
    queries_file = _find(root, "queries.jsonl")
    qrels_file = _find_qrels(root, split)

    corpus, titles = _read_corpus(corpus_file)
    if not corpus:
        raise ValueError(f"BEIR corpus is empty: {corpus_file} has no documents")
    all_queries, all_metadata = _read_queries(queries_file)
    qrels = _read_qrels(qrels_file)
    qrels = _drop_unknown(qrels, corpus, all_queries, qrels_file)

    qids = [qid for qid in all_queries if qid in qrels]
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
        if (qrels_dir / f"{n}.tsv").exists() or (qrels_dir / f"{n}.tsv.gz").exists()
    )


# --------------------------------------------------------------------------- files


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"missing {name} (or {name}.gz) in {root} ({EXPECTED_LAYOUT})")


def _find_qrels(root: Path, split: str) -> Path:
    for candidate in (root / "qrels" / f"{split}.tsv", root / "qrels" / f"{split}.tsv.gz"):
        if candidate.is_file():
            return candidate
    splits = available_splits(root)
    if not splits:
        raise FileNotFoundError(
            f"missing qrels folder with <split>.tsv files in {root} ({EXPECTED_LAYOUT})"
        )
    raise ValueError(
        f"unknown split {split!r} for BEIR folder {root}; available splits: {', '.join(splits)}"
    )


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, stripped line) for non-blank lines; CRLF-tolerant, gzip-aware."""
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    with raw, io.TextIOWrapper(raw, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if line:
                yield number, line


def _json_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in _lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BeirFormatError(f"{path}:{number}: malformed JSON line ({exc.msg})") from exc
        if not isinstance(record, dict) or "_id" not in record:
            raise BeirFormatError(f"{path}:{number}: expected a JSON object with an '_id' field")
        yield number, record


def _text_field(record: dict[str, Any], key: str, path: Path, number: int) -> str:
    """``record[key]`` as text ("" when missing or null; a number is turned into text)."""
    value = record.get(key)
    if value is None:
        return ""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise BeirFormatError(
        f"{path}:{number}: field {key!r} must be a string, got {type(value).__name__}"
    )


def _read_corpus(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    corpus: dict[str, str] = {}
    titles: dict[str, str] = {}
    for number, record in _json_records(path):
        doc_id = str(record["_id"])
        if doc_id in corpus:
            raise BeirFormatError(f"{path}:{number}: duplicate document id {doc_id!r}")
        title = _text_field(record, "title", path, number).strip()
        text = _text_field(record, "text", path, number)
        corpus[doc_id] = f"{title}\n{text}" if title else text
        if title:
            titles[doc_id] = title
    return corpus, titles


def _read_queries(path: Path) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    queries: dict[str, str] = {}
    metadata: dict[str, dict[str, Any]] = {}
    for number, record in _json_records(path):
        qid = str(record["_id"])
        if qid in queries:
            raise BeirFormatError(f"{path}:{number}: duplicate query id {qid!r}")
        queries[qid] = _text_field(record, "text", path, number)
        meta = record.get("metadata")
        if isinstance(meta, dict):
            metadata[qid] = meta
    return queries, metadata


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    conflicts = 0
    for number, line in _lines(path):
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) == 4:  # TREC style: qid iter doc grade
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise BeirFormatError(
                f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>score', got {line!r}"
            )
        qid, doc_id, grade_text = (p.strip() for p in parts)
        try:
            grade = int(float(grade_text))
        except ValueError:
            if number == 1 or not qrels:  # the header row
                continue
            raise BeirFormatError(
                f"{path}:{number}: relevance score {grade_text!r} is not a number"
            ) from None
        judged = qrels.setdefault(qid, {})
        if doc_id in judged and judged[doc_id] != grade:
            conflicts += 1
            grade = max(grade, judged[doc_id])
        judged[doc_id] = grade
    if conflicts:
        warnings.warn(
            f"{path}: {conflicts} (query, document) pairs are judged twice with different grades; kept the higher grade",
            stacklevel=3,
        )
    return qrels


def _drop_unknown(
    qrels: dict[str, dict[str, int]],
    corpus: dict[str, str],
    queries: dict[str, str],
    qrels_file: Path,
) -> dict[str, dict[str, int]]:
    """Drop judgements whose document or query is unknown, warning with a count and examples."""
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
    if unknown_docs:
        emptied = sum(1 for qid in qrels if qid in queries and qid not in kept)
        warnings.warn(
            f"{qrels_file}: dropped {len(unknown_docs)} judgements of document ids missing from the corpus "
            f"(e.g. {', '.join(repr(d) for d in unknown_docs[:5])})"
            + (
                f"; {emptied} queries had no judged document left and were dropped"
                if emptied
                else ""
            ),
            stacklevel=3,
        )
    if unknown_queries:
        warnings.warn(
            f"{qrels_file}: dropped judgements of {len(unknown_queries)} query ids missing from queries.jsonl "
            f"(e.g. {', '.join(repr(q) for q in unknown_queries[:5])})",
            stacklevel=3,
        )
    return kept
