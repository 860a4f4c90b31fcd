"""Reading a persisted ``docstore.json`` strictly: one entry per node id, and nodes as written.

LlamaIndex reads the docstore with ``json.load``, where a node id given twice keeps its
last entry silently, so a hand-edited or merged file served another text under a node
the index was built on. Here the file is read refusing any JSON object that names a key
twice, and the loaded nodes are checked against what ``persist`` writes: no node with
blank text is ever written (they are skipped when the index is built), so one is an
edit that would be served as an empty source, and neither is a stored embedding holding
NaN or of another size than the index's (hybrid folders; a ``BM25Retriever`` on its own
keeps the nodes it is given).

Example::

    from pathlib import Path
    from llama_index_ragtune.retrievers.persist_docstore import read_docstore

    docstore = read_docstore(Path("idx/storage/docstore.json"), "rebuild it")
    docstore.get_node("g1").text
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from llama_index.core.schema import MetadataMode
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.core.storage.kvstore.simple_kvstore import SimpleKVStore

from llama_index_ragtune.retrievers.persist_errors import PersistenceError
from llama_index_ragtune.retrievers.persistence import DuplicateKeyError, loads_unique_keys

__all__ = ["check_loaded_nodes", "check_node_templates", "read_docstore"]


def read_docstore(path: Path, fix: str) -> SimpleDocumentStore:
    """The ``SimpleDocumentStore`` in ``path``, as LlamaIndex reads it, but a key named twice
    in one object (a node id, a field) is a :class:`PersistenceError` naming the file and key.

    Example::

        read_docstore(Path("idx/storage/docstore.json"), "rebuild it")
    """
    try:
        text = path.read_bytes().decode("utf-8")
        data = loads_unique_keys(text)
    except DuplicateKeyError as exc:
        raise PersistenceError(
            f"{path} is damaged: {exc}; a node id given twice kept only one of its entries, "
            f"so the index would serve another text than it was built on; {fix}"
        ) from exc
    except (ValueError, RecursionError) as exc:  # bad UTF-8 / JSON, nested too deeply
        raise PersistenceError(f"{path} is not a readable docstore ({exc}); {fix}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise PersistenceError(
            f"{path} holds damaged node data (not a JSON object of collections); {fix}"
        )
    return SimpleDocumentStore(SimpleKVStore(data))


def check_node_templates(nodes: list[Any], source: Path | str, fix: str) -> None:
    """Raise :class:`PersistenceError` naming the node whose text cannot be formatted (an
    edited ``text_template`` / ``metadata_template``: ``"{nope}"``); every query returning it,
    and BM25 on it, failed with a bare ``KeyError`` / ``ValueError``.

    Example::

        check_node_templates(nodes, "idx/docstore.json", "rebuild it")
    """
    seen: set[tuple[Any, ...]] = set()
    for node in nodes:
        templates = (
            *(getattr(node, name, None) for name in ("text_template", "metadata_template")),
            bool(getattr(node, "metadata", None)),  # no metadata: its template is not used
        )
        if templates in seen:  # a template fails for every node or none: check each once
            continue
        seen.add(templates)
        try:
            node.get_content(metadata_mode=MetadataMode.ALL)
        except (KeyError, ValueError, IndexError, AttributeError, TypeError) as exc:
            raise PersistenceError(
                f"{source} holds node {node.node_id!r}, whose text cannot be formatted "
                f"(its text_template / metadata_template: {type(exc).__name__}: {exc}); every "
                f"query returning it would fail: the file was edited or damaged; {fix}"
            ) from exc


def check_loaded_nodes(
    nodes: list[Any], source: Path | str, fix: str, dimension: int | None = None
) -> None:
    """Raise :class:`PersistenceError` naming the node when a node loaded from a hybrid folder
    could not have been written by ``HybridRetriever.persist``: nothing to embed or match
    (text missing or blank; ``from_defaults`` and ``insert_nodes`` never index such nodes),
    or a stored ``embedding`` holding NaN or infinity, or not of the index's ``dimension``
    (building refuses such vectors; the node was served with it, and inserting it into
    another index failed there or indexed a vector no query finds).

    Example::

        check_loaded_nodes(retriever.sparse_retriever.nodes, "idx/storage/docstore.json", "fix", 384)
    """
    from llama_index_ragtune._invisible import is_blank
    from llama_index_ragtune.retrievers.checks import split_blank_nodes

    # only a node whose own text is blank can be blank with its metadata (cheap first pass)
    _, blank = split_blank_nodes([n for n in nodes if is_blank(getattr(n, "text", "") or "")])
    if blank:
        raise PersistenceError(
            f"{source} holds {len(blank)} node(s) without text (e.g. {json.dumps(blank[:3])}), "
            f"which persist() never writes: the file was edited or damaged; {fix}"
        )
    bad = [
        (node.node_id, problem)
        for node in nodes
        if (problem := _embedding_problem(getattr(node, "embedding", None), dimension))
    ]
    if bad:
        raise PersistenceError(
            f"{source} holds node {bad[0][0]!r}, whose stored embedding {bad[0][1]} ({len(bad)} "
            f"such node(s), e.g. {json.dumps([i for i, _ in bad[:3]])}); building refuses such a "
            f"vector and persist() never writes one: the file was edited or damaged; {fix}"
        )


def _embedding_problem(embedding: Any, dimension: int | None) -> str | None:
    """What is wrong with a node's stored ``embedding`` (None: nothing, or no embedding)."""
    if embedding is None:
        return None
    if dimension is not None and len(embedding) != dimension:
        return f"has {len(embedding)} values where the index has {dimension}"
    if not all(math.isfinite(value) for value in embedding):
        return "holds NaN or infinite values"
    return None
