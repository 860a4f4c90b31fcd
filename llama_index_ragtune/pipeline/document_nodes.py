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
import unicodedata
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
    """``documents`` as a list of LlamaIndex ``Document`` objects with unique ids, also in
    Unicode NFC (``TypeError`` / ``ValueError`` naming the offender otherwise)."""
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
    seen: dict[str, int] = {}  # NFC id: index
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
        _check_id_characters(i, doc.id_)
        key = unicodedata.normalize("NFC", doc.id_)
        if key in seen:
            other = documents[seen[key]].id_
            if other == doc.id_:
                raise ValueError(f"two documents share the id {doc.id_!r}; give each a unique id_")
            # "café.md" composed and decomposed print alike: a label meant for one would be
            # read as the other (read_documents refuses such file names too)
            raise ValueError(
                f"documents[{seen[key]}] and documents[{i}] have ids that are the same text in "
                f"different Unicode forms (NFC / NFD): {ascii(other)} and {ascii(doc.id_)}; "
                "give each a unique id_ (unicodedata.normalize('NFC', id_) for both, then "
                "merge or rename one)"
            )
        seen[key] = i
        _check_metadata_is_json(i, doc)
    return documents


def _check_id_characters(i: int, doc_id: str) -> None:
    """``ValueError`` for an id holding a control, line-separator or bidi character
    (``node_parser.documents.ID_BREAKING_CHARACTERS``), as ``read_documents`` refuses such
    a file name: it would break every log line, report and file that prints the id."""
    from llama_index_ragtune.node_parser.documents import ID_BREAKING_CHARACTERS

    bad = ID_BREAKING_CHARACTERS.search(doc_id)
    if bad:
        what = unicodedata.name(bad.group(), "a control character")
        raise ValueError(
            f"documents[{i}] has the id {doc_id!r}, which holds {what} "
            f"(U+{ord(bad.group()):04X}) and would break the log lines, reports and files "
            f"that print it; give it an id_ without that character, e.g. "
            f"{ID_BREAKING_CHARACTERS.sub('-', doc_id)!r}"
        )


_JSON_SCALARS = (str, int, float, bool, type(None))


def _check_metadata_is_json(i: int, doc: Document) -> None:
    """``TypeError`` naming the document, key and type for metadata JSON cannot hold (a
    ``datetime``, ``set``, ``bytes``, NumPy integer, any other object, or a dict key that
    is not a string or number, at any depth): the parsed nodes are saved as JSON, as
    LlamaIndex's ``Document.to_json`` and docstore persist them, and both fail on it.
    Converting it silently (a date to a string) would change what a filter compares."""
    named = f"documents[{i}] ({doc.id_!r}): metadata"
    stack: list[tuple[str, Any]] = [("", doc.metadata)]
    seen: set[int] = set()
    while stack:
        where, value = stack.pop()
        if isinstance(value, _JSON_SCALARS) or id(value) in seen:
            continue
        if isinstance(value, dict):
            seen.add(id(value))
            for key, item in value.items():
                if not isinstance(key, _JSON_SCALARS):
                    raise TypeError(
                        f"{named}{where} holds a key of type "
                        f"{type(key).__name__} ({key!r}), which JSON cannot hold; use a "
                        "string key: str(key)"
                    )
                stack.append((f"{where}[{key!r}]", item))
        elif isinstance(value, (list, tuple)):
            seen.add(id(value))
            stack.extend((f"{where}[{n}]", item) for n, item in enumerate(value))
        else:
            raise TypeError(
                f"{named}{where} is a {type(value).__name__} "
                f"({str(value)[:80]!r}), which JSON cannot hold, and the parsed nodes are "
                f"saved as JSON; convert it first: {_conversion(value)}"
            )


def _conversion(value: Any) -> str:
    """How to turn ``value`` into a JSON value, for the message of a metadata type error."""
    import datetime
    import numbers

    if isinstance(value, (datetime.date, datetime.time)):
        return "value.isoformat() (an ISO 8601 string, e.g. '2024-01-31')"
    if isinstance(value, (set, frozenset)):
        return "sorted(value) (a list)"
    if isinstance(value, (bytes, bytearray)):
        return "value.decode('utf-8') (a string)"
    if isinstance(value, numbers.Integral):
        return "int(value)"
    if isinstance(value, numbers.Real):
        return "float(value)"
    return "str(value), or a number, list or dict of such values"


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
    """Read nodes written by :func:`save_nodes`.

    A file that is not such a list (cut short, emptied, edited: ``{}`` or ``[1]``) is a
    ``PipelineStateError`` naming it and saying to run without ``--resume`` (was a raw
    ``JSONDecodeError``, or ``{}`` read as no nodes at all).
    """
    from llama_index.core.schema import TextNode

    path = Path(path)
    data = read_saved_list(path, "nodes", ("id_", "text"))
    try:
        return [TextNode.from_dict(item) for item in data]
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        raise _damaged(path, f"a node does not load ({str(exc)[:200]})") from None


def read_saved_list(path: Path, what: str, fields: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON list of objects with string ``fields`` a pipeline step saved at ``path`` (the
    work folder's ``nodes.json``, ``data/queries.json``); ``PipelineStateError`` naming the
    file and the fault otherwise.

    Example::

        read_saved_list(Path("work/nodes.json"), "nodes", ("id_", "text"))[0]["id_"]
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _damaged(path, f"it is not JSON ({exc})") from None
    if not isinstance(data, list):
        raise _damaged(path, f"it holds a {type(data).__name__}, not the list of {what}")
    for n, item in enumerate(data):
        missing = [
            f for f in fields if not isinstance(item, dict) or not isinstance(item.get(f), str)
        ]
        if missing:
            raise _damaged(path, f"item {n} of its {what} has no string {missing}")
    return data


def _damaged(path: Path, why: str) -> Exception:
    from llama_index_ragtune.pipeline.state import PipelineStateError

    return PipelineStateError(
        f"{path} is damaged: {why}; the pipeline writes it, so run again without --resume "
        "(or delete the work folder) to rebuild it"
    )
