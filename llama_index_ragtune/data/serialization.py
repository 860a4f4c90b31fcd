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

import json
import logging
import warnings
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llama_index.core.bridge.pydantic import BaseModel

if TYPE_CHECKING:
    from llama_index_ragtune.data.schema import RetrievalDataset

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
        with open(path, "w") as f:
            json.dump(self.model_dump(), f, indent=4)

    @classmethod
    def from_json(cls, path: str) -> EmbeddingQAFinetuneDataset:
        with open(path) as f:
            return cls(**json.load(f))


@lru_cache(maxsize=1)
def embedding_qa_dataset_class() -> type:
    """LlamaIndex's ``EmbeddingQAFinetuneDataset`` class, or the compatible local one."""
    import importlib

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


def parse_dataset_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``RetrievalDataset`` from either JSON layout.

    Our layout carries ``format`` / ``format_version``; LlamaIndex's has just
    ``queries``, ``corpus``, ``relevant_docs`` and ``mode``.
    """
    from llama_index_ragtune.data.schema import FORMAT_NAME, FORMAT_VERSION

    if not isinstance(data, Mapping):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    fmt = data.get("format")
    if fmt is not None:
        if fmt != FORMAT_NAME:
            raise ValueError(f"unknown dataset format {fmt!r} (expected {FORMAT_NAME!r})")
        version = int(data.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise ValueError(
                f"dataset format version {version} is newer than this library reads "
                f"({FORMAT_VERSION}); upgrade llama-index-ragtune"
            )
    missing = [k for k in ("queries", "corpus", "relevant_docs") if k not in data]
    if missing:
        raise ValueError(
            f"not a retrieval dataset: missing {', '.join(missing)} "
            f"(found keys: {', '.join(sorted(data)) or 'none'})"
        )
    return {
        "queries": dict(data["queries"]),
        "corpus": dict(data["corpus"]),
        "relevant_docs": {
            q: list(v) if not isinstance(v, str) else [v] for q, v in data["relevant_docs"].items()
        },
        "negatives": dict(data.get("negatives") or {}),
        "mode": data.get("mode", "text"),
        "metadata": dict(data.get("metadata") or {}),
    }


def write_dataset_json(
    dataset: RetrievalDataset,
    path: str | Path,
    format: Literal["ragtune", "llama_index"] = "ragtune",
) -> None:
    """Write ``dataset`` to ``path``; see ``RetrievalDataset.save_json``."""
    if format == "ragtune":
        data = dataset.to_dict()
    elif format == "llama_index":
        if dataset.negatives:
            warnings.warn(
                f"save_json(format='llama_index') drops {dataset.num_negatives} negatives: "
                "the LlamaIndex layout cannot hold them (use format='ragtune')",
                stacklevel=3,
            )
        data = {
            "queries": dataset.queries,
            "corpus": dataset.corpus,
            "relevant_docs": dataset.relevant_docs,
            "mode": dataset.mode,
        }
    else:
        raise ValueError(f"unknown format {format!r}; use 'ragtune' or 'llama_index'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=2 if format == "ragtune" else 4)


def read_dataset_json(path: str | Path) -> dict[str, Any]:
    """``RetrievalDataset`` keyword arguments from a file in either layout."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
    try:
        return parse_dataset_dict(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
