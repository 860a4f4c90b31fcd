"""The bundled demo corpus: help centres of a grocery chain and an electronics store.

Two fictional retailers, Brambleway Market (groceries) and Voltaris Electronics,
each with Markdown and HTML help pages under ``help_centre/docs/<store>/``, per-page
metadata (``store``, ``department``, optional ``brand``) in ``metadata.json``, and
labelled questions in ``queries.jsonl`` (gold references are a document id plus a
``section_path`` prefix as produced by the structured node parsers; a split of
``train``/``test``; unanswerable questions have no gold and a null answer).

The folder has the same layout a user's own corpus is read from, so it doubles as
an example of that layout; these helpers are only a convenience for the demo.

Example::

    from llama_index_ragtune.demo import load_demo_documents, load_demo_queries

    docs = load_demo_documents()
    docs[0].id_, docs[0].metadata["store"]     # ('electronics/brands/apple.html', 'electronics')
    test = load_demo_queries("test")
    test[0]["question"], test[0]["store"]      # ('apple return policy?', 'grocery')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llama_index.core import Document

__all__ = ["SPLITS", "demo_dir", "load_demo_documents", "load_demo_queries"]

SPLITS = ("train", "test")
#: File metadata kept out of what the embedding model and the LLM see.
_BOOKKEEPING_KEYS = ["file_path"]


def demo_dir() -> Path:
    """The ``help_centre`` folder: ``docs/``, ``metadata.json`` and ``queries.jsonl``.

    Example::

        from llama_index_ragtune.demo import demo_dir

        sorted(p.name for p in demo_dir().iterdir())
        # ['docs', 'metadata.json', 'queries.jsonl']
    """
    return Path(__file__).resolve().parent / "help_centre"


def _doc_paths(docs: Path) -> list[str]:
    """Every file under ``docs`` (any suffix: a stray file fails the metadata check, not silently)."""
    return sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*") if p.is_file())


def load_demo_documents() -> list[Document]:
    """The help pages as LlamaIndex ``Document`` objects, sorted by id.

    ``id_`` is the page's path relative to ``docs/`` (e.g. ``"grocery/returns.md"``,
    the ``doc_id`` of the gold references); ``metadata`` holds the page's entry in
    ``metadata.json`` plus ``file_path`` (excluded from embedding and LLM text).

    Example::

        from llama_index_ragtune.demo import load_demo_documents
        from llama_index_ragtune.node_parser import StructuredMarkdownNodeParser

        docs = [d for d in load_demo_documents() if d.id_.endswith(".md")]
        nodes = StructuredMarkdownNodeParser().get_nodes_from_documents(docs)
        nodes[0].ref_doc_id, nodes[0].metadata["section_path"]
    """
    root = demo_dir()
    docs = root / "docs"
    metadata_file = root / "metadata.json"
    metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
    paths = _doc_paths(docs)
    missing = sorted(set(paths) - set(metadata))
    orphans = sorted(set(metadata) - set(paths))
    if missing or orphans:
        raise ValueError(
            f"{metadata_file} does not match the pages under {docs}: pages without an entry "
            f"{missing}, entries without a page {orphans}. Add or remove the entries."
        )
    documents = []
    for rel in paths:
        path = docs / rel
        documents.append(
            Document(
                id_=rel,
                text=path.read_text(encoding="utf-8"),
                metadata={**metadata[rel], "file_path": str(path)},
                excluded_embed_metadata_keys=list(_BOOKKEEPING_KEYS),
                excluded_llm_metadata_keys=list(_BOOKKEEPING_KEYS),
            )
        )
    return documents


def load_demo_queries(split: str | None = None) -> list[dict[str, Any]]:
    """The labelled questions, in file order; ``split`` is ``"train"``, ``"test"`` or None (all).

    Each is a dict with ``id``, ``question``, ``store`` (the store filter it is asked
    under, or None), ``gold`` (a list of ``{"doc_id", "section"}``), ``answer`` (None when
    unanswerable), ``answerable`` and ``split``.

    Example::

        from llama_index_ragtune.demo import load_demo_queries

        train = load_demo_queries("train")
        [q for q in train if not q["answerable"]][0]["gold"]     # []
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    path = demo_dir() / "queries.jsonl"
    queries = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                query = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {line_no}: not valid JSON ({err})") from err
            if split is None or query["split"] == split:
                queries.append(query)
    return queries
