"""``RetrievalDataset`` JSON: our layout and LlamaIndex's ``EmbeddingQAFinetuneDataset`` layout.

Our layout carries ``format`` / ``format_version`` and the negatives; LlamaIndex's
holds ``queries``, ``corpus``, ``relevant_docs`` and ``mode``. Reading detects which
one a file uses.

LlamaIndex has moved this class between packages (``llama_index.core.evaluation``,
``llama_index.core.llama_dataset.legacy.embedding``, ``llama_index.finetuning``).
``embedding_qa_dataset_class()`` returns the first one that imports, and otherwise a
local pydantic model with the same fields, JSON layout and ``save_json`` /
``from_json`` methods, so files stay interchangeable either way.

Example::

    from llama_index_ragtune.data.serialization import embedding_qa_dataset_class

    EmbeddingQAFinetuneDataset = embedding_qa_dataset_class()
    qa = EmbeddingQAFinetuneDataset.from_json("qa_finetune_dataset.json")
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from llama_index.core.bridge.pydantic import BaseModel

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.json_files import read_json_document
from llama_index_ragtune.data.paths import check_file
from llama_index_ragtune.data.records import FORMAT_NAME, FORMAT_VERSION, Negative

logger = logging.getLogger(__name__)

_CANDIDATES = (
    ("llama_index.core.evaluation", "EmbeddingQAFinetuneDataset"),
    ("llama_index.core.llama_dataset.legacy.embedding", "EmbeddingQAFinetuneDataset"),
    ("llama_index.finetuning", "EmbeddingQAFinetuneDataset"),
)


class EmbeddingQAFinetuneDataset(BaseModel):
    """Same fields and JSON as LlamaIndex's class, used when no LlamaIndex copy imports."""

    queries: dict[str, str]
    corpus: dict[str, str]
    relevant_docs: dict[str, list[str]]
    mode: str = "text"

    @property
    def query_docid_pairs(self) -> list[tuple[str, list[str]]]:
        return [(query, self.relevant_docs[qid]) for qid, query in self.queries.items()]

    def save_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.model_dump(), f, indent=4)

    @classmethod
    def from_json(cls, path: str) -> EmbeddingQAFinetuneDataset:
        with open(path, encoding="utf-8") as f:
            return cls(**json.load(f))


@lru_cache(maxsize=1)
def embedding_qa_dataset_class() -> type:
    """LlamaIndex's ``EmbeddingQAFinetuneDataset`` class, or the compatible local one."""
    for module_name, attr in _CANDIDATES:
        try:
            module = importlib.import_module(module_name)
        except Exception:  # noqa: BLE001 - a broken optional install must not break us
            continue
        cls = getattr(module, attr, None)
        if cls is not None:
            return cls
    logger.debug("no LlamaIndex EmbeddingQAFinetuneDataset importable; using the local copy")
    return EmbeddingQAFinetuneDataset


_LAYOUT_HINT = (
    "expected {'queries': {id: text}, 'corpus': {id: text}, 'relevant_docs': {query id: "
    "[doc ids]}} (plus 'negatives', 'mode', 'metadata' in the ragtune layout)"
)


def parse_dataset_dict(data: Mapping[str, Any], path: str | Path | None = None) -> dict[str, Any]:
    """Keyword arguments for ``RetrievalDataset`` from either JSON layout.

    Our layout carries ``format`` / ``format_version``; LlamaIndex's has just
    ``queries``, ``corpus``, ``relevant_docs`` and ``mode``. Every field is checked;
    a ``DataError`` names the JSON path (and ``path``, the file, when given).

    Example::

        kwargs = parse_dataset_dict({"queries": {"q1": "hi"}, "corpus": {"d1": "hello"},
                                     "relevant_docs": {"q1": ["d1"]}})
        RetrievalDataset(**kwargs)
    """

    def error(message: str, where: str, hint: str | None = _LAYOUT_HINT) -> DataError:
        return DataError(message, path=path, location=where, hint=hint)

    if not isinstance(data, Mapping):
        raise error(f"expected a JSON object, got {type(data).__name__}", "$")
    fmt = data.get("format")
    if fmt is not None:
        if fmt != FORMAT_NAME:
            raise error(
                f"unknown dataset format {fmt!r} (expected {FORMAT_NAME!r})",
                "$.format",
                "this file was not written by RetrievalDataset.save_json",
            )
        version = data.get("format_version", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise error(f"must be an integer, got {version!r}", "$.format_version", None)
        if version > FORMAT_VERSION:
            raise error(
                f"dataset format version {version} is newer than this library reads "
                f"({FORMAT_VERSION})",
                "$.format_version",
                "upgrade llama-index-ragtune",
            )
    missing = [k for k in ("queries", "corpus", "relevant_docs") if k not in data]
    if missing:
        raise error(
            f"not a retrieval dataset: missing {', '.join(missing)} "
            f"(found keys: {', '.join(sorted(map(str, data))) or 'none'})",
            "$",
        )
    mode = data.get("mode", "text")
    if not isinstance(mode, str):
        raise error(f"must be a string, got {type(mode).__name__}", "$.mode", None)
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise error(f"must be an object, got {type(metadata).__name__}", "$.metadata", None)
    grades = data.get("grades") or {}
    if not isinstance(grades, Mapping) or not all(isinstance(g, Mapping) for g in grades.values()):
        raise error("must be an object {query_id: {doc_id: grade}}", "$.grades", None)
    return {
        "queries": _texts(data["queries"], "queries", error),
        "corpus": _texts(data["corpus"], "corpus", error),
        "relevant_docs": _id_lists(data["relevant_docs"], error),
        "negatives": _negatives(data.get("negatives") or {}, error),
        "mode": mode,
        "metadata": dict(metadata),
        "grades": {str(q): dict(g) for q, g in grades.items()},
    }


def _object(value: Any, where: str, error: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise error(f"must be an object, got {type(value).__name__}", where)
    return value


def _texts(value: Any, name: str, error: Any) -> dict[str, str]:
    out = {}
    for key, text in _object(value, f"$.{name}", error).items():
        if not isinstance(text, str):
            raise error(f"must be a string, got {type(text).__name__}", f"$.{name}[{key!r}]", None)
        out[key] = text
    return out


def _is_id(value: Any) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def _id_lists(value: Any, error: Any) -> dict[str, list[str]]:
    out = {}
    for qid, ids in _object(value, "$.relevant_docs", error).items():
        where = f"$.relevant_docs[{qid!r}]"
        if _is_id(ids):
            ids = [ids]
        if not isinstance(ids, list):
            raise error(f"must be a list of doc ids, got {type(ids).__name__}", where, None)
        for i, doc_id in enumerate(ids):
            if not _is_id(doc_id):
                raise error(
                    f"must be a doc id (string), got {type(doc_id).__name__}", f"{where}[{i}]", None
                )
        out[qid] = [str(d) for d in ids]
    return out


def _negatives(value: Any, error: Any) -> dict[str, list[Negative]]:
    out = {}
    for qid, negs in _object(value, "$.negatives", error).items():
        where = f"$.negatives[{qid!r}]"
        if not isinstance(negs, list):
            raise error(f"must be a list, got {type(negs).__name__}", where, None)
        parsed = []
        for i, neg in enumerate(negs):
            try:
                parsed.append(Negative.from_dict(neg))
            except DataError as err:
                raise error(str(err), f"{where}[{i}]", None) from None
        out[qid] = parsed
    return out


def write_dataset_json(
    data: Mapping[str, Any],
    path: str | Path,
    format: Literal["ragtune", "llama_index"] = "ragtune",
) -> None:
    """Write a dataset's ``to_dict()`` to ``path`` (a temporary file renamed into place).

    ``format="llama_index"`` keeps the ``EmbeddingQAFinetuneDataset`` fields alone; see
    ``RetrievalDataset.save_json``.
    """
    if format == "ragtune":
        data = dict(data)
    elif format == "llama_index":
        data = {k: data[k] for k in ("queries", "corpus", "relevant_docs", "mode")}
    else:
        raise ValueError(f"unknown format {format!r}; use 'ragtune' or 'llama_index'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=2 if format == "ragtune" else 4)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_dataset_json(path: str | Path) -> dict[str, Any]:
    """``RetrievalDataset`` keyword arguments from a file in either layout.

    Raises ``FileNotFoundError`` / ``IsADirectoryError`` for a wrong path and
    ``DataError`` (naming the file and the line or JSON path) for a bad file.
    """
    path = check_file(Path(path).expanduser(), "dataset JSON file")
    # no size cap: the package writes these files itself (RetrievalDataset.save) and they
    # have no JSONL form, so a large saved dataset must load again
    data = read_json_document(
        path,
        expected="a RetrievalDataset JSON file (one object: 'queries', 'corpus', "
        "'relevant_docs'), as written by RetrievalDataset.save_json",
        allow_nan=True,
        max_bytes=None,
    )
    return parse_dataset_dict(data, path=path)
