"""Documents to nodes: checking the ``Document`` objects given, parsing them, saving the nodes.

Example::

    from llama_index.core.schema import Document
    from llama_index_ragtune.pipeline.document_nodes import check_documents, parse_documents

    nodes = parse_documents(check_documents([Document(id_="faq.md", text="# FAQ\\n\\nOpen 9-5.")]))
    nodes[0].node_id           # 'faq.md#0'
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index_ragtune._invisible import is_blank
from llama_index_ragtune.data.errors import DataError

if TYPE_CHECKING:
    from llama_index.core.schema import BaseNode, Document

logger = logging.getLogger(__name__)

HTML_SUFFIXES = (".html", ".htm")


def check_documents(documents: Sequence[Any]) -> list[Document]:
    """``documents`` as a list of LlamaIndex ``Document`` objects with unique ids (``TypeError`` /
    ``ValueError`` naming the offender otherwise)."""
    from llama_index.core.schema import BaseNode, Document

    if documents is None:
        documents = []
    if isinstance(documents, BaseNode):
        raise TypeError(
            f"documents must be a list of llama_index Documents, got one {type(documents).__name__}"
            "; wrap it in a list: [document]"
        )
    if isinstance(documents, (str, bytes, os.PathLike, dict)) or not isinstance(
        documents, Iterable
    ):
        raise TypeError(
            "documents must be a folder (a str or pathlib.Path) or a list of llama_index "
            f"Documents, got a {type(documents).__name__}"
        )
    documents = list(documents)
    if not documents:
        raise ValueError("no documents given: pass a folder or a non-empty list of Documents")
    seen: set[str] = set()
    for i, doc in enumerate(documents):
        if not isinstance(doc, Document):
            raise TypeError(
                f"documents[{i}] is a {type(doc).__name__}, expected a llama_index Document"
            )
        if is_blank(doc.id_):
            raise ValueError(
                f"documents[{i}] has an empty id_ ({ascii(doc.id_)}: no visible character); "
                "give each document a unique id_ (its file name, say): labelled questions "
                "and node ids refer to it"
            )
        if doc.id_ in seen:
            raise ValueError(f"two documents share the id {doc.id_!r}; give each a unique id_")
        seen.add(doc.id_)
    return documents


def _node_id(index: int, document: Any) -> str:
    return f"{document.id_}#{index}"


def _is_html(doc: Document) -> bool:
    name = str(doc.metadata.get("file_path") or doc.id_).lower()
    return name.endswith(HTML_SUFFIXES)


def parse_documents(
    documents: Sequence[Document], tokenizer: str | None = None, show_progress: bool = False
) -> list[BaseNode]:
    """Parse each document with the structure-aware parser its type calls for.

    HTML (by ``file_path`` metadata or id suffix) goes to ``StructuredHTMLNodeParser``,
    everything else to ``StructuredMarkdownNodeParser`` (plain text is Markdown
    without headings). ``tokenizer`` (the encoder's folder or hub id) sets the node
    cap; node ids are ``"<document id>#<n>"``. A document that gives no node (an
    empty HTML shell, only heading markers) is skipped with a warning naming it.

    Example::

        nodes = parse_documents([Document(id_="faq.md", text="# FAQ\\n\\nOpen 9-5.")])
        nodes[0].node_id           # 'faq.md#0'
    """
    from llama_index_ragtune.node_parser import (
        StructuredHTMLNodeParser,
        StructuredMarkdownNodeParser,
    )

    kwargs: dict[str, Any] = {"id_func": _node_id}
    if tokenizer is not None:
        kwargs["tokenizer"] = tokenizer
    markdown = StructuredMarkdownNodeParser.from_defaults(**kwargs)
    html = StructuredHTMLNodeParser.from_defaults(**kwargs)
    html_docs = [d for d in documents if _is_html(d)]
    text_docs = [d for d in documents if not _is_html(d)]
    nodes: list[BaseNode] = []
    if text_docs:
        nodes.extend(markdown.get_nodes_from_documents(text_docs, show_progress=show_progress))
    if html_docs:
        nodes.extend(html.get_nodes_from_documents(html_docs, show_progress=show_progress))
    order = {d.id_: i for i, d in enumerate(documents)}
    nodes.sort(key=lambda n: (order.get(n.ref_doc_id or "", len(order)), _index(n.node_id)))
    if not nodes:
        raise DataError(
            f"the documents gave no nodes: every one has no text after parsing "
            f"(only markup or headings): {[d.id_ for d in documents][:5]}",
            hint="add documents with text",
        )
    kept = {n.ref_doc_id for n in nodes}
    textless = [d.id_ for d in documents if d.id_ not in kept]
    if textless:
        logger.warning(
            "skipped %d document(s) with no text after parsing (only markup or headings): %s",
            len(textless),
            textless[:10],
        )
    return nodes


def _index(node_id: str) -> int:
    tail = node_id.rsplit("#", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def save_nodes(nodes: Sequence[BaseNode], path: str | Path) -> Path:
    """Write nodes as strict JSON (``node.to_dict()``, no pickle; a NaN or infinite number in
    a node's metadata as ``null``, read back as ``None``), atomically."""
    from llama_index_ragtune._atomic import atomic_write_json

    return atomic_write_json(Path(path), [n.to_dict() for n in nodes], strict=True)


def load_nodes(path: str | Path) -> list[BaseNode]:
    """Read nodes written by :func:`save_nodes`."""
    from llama_index.core.schema import TextNode

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [TextNode.from_dict(item) for item in data]
