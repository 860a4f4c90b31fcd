"""The Milvus half of :mod:`~llama_index_ragtune.retrievers.external_store`.

Milvus (the ``milvus`` extra: ``llama-index-vector-stores-milvus``, ``pymilvus``,
``milvus-lite``) runs in-process as Milvus Lite on a local ``.db`` path, or against a
server; only the ``uri`` changes::

    from llama_index.vector_stores.milvus import MilvusVectorStore

    store = MilvusVectorStore(uri="milvus.db", collection_name="docs", dim=384)  # Milvus Lite
    # MilvusVectorStore(uri="http://milvus:19530", token=..., collection_name="docs", dim=384)
    retriever = HybridRetriever.from_defaults(nodes=nodes, dense_index=store)
    retriever.persist("hybrid_index")                        # BM25 + docstore + manifest
    HybridRetriever.from_persist_dir("hybrid_index")         # reopens the collection

``persist`` records the collection, its vector field, text field, dimension, metric and
where it lives (the Milvus Lite path, absolute, or the server URL without credentials; a
non-default database), never the token; ``from_persist_dir`` reopens it
(``MilvusVectorStore(uri=path)``, or ``uri=url, token=$MILVUS_TOKEN``) or takes
``vector_store=``.

Limits, each refused with a message saying what to do: ``MilvusVectorStore`` creates its
collection when constructed, so ``dim=`` must be the embedding model's dimension and the
collection must be empty; node ids, texts and metadata values must fit the collection's
``VARCHAR`` fields (65,535 characters: split longer texts); the collection must rank by ``IP`` or ``COSINE`` (not ``L2``);
Milvus Lite lets one process open a ``.db`` at a time (clients in one process share it).
Filters are translated to a Milvus expression by the integration; those it would translate
wrongly are refused when set (see :func:`check_filters`). Milvus Lite answers queries by
exact search (``FLAT``), so it returns the same ranking as the exact FAISS side
(``tests/retrievers/test_milvus_store.py``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilters

from llama_index_ragtune.retrievers.persistence import PersistenceError, field

__all__ = [
    "check_empty",
    "check_filters",
    "check_storable",
    "check_vectors",
    "collection_facts",
    "count",
    "describe",
    "ids_passing",
    "load",
    "open_collection",
]

_ID_FIELD = "id"  # the integration's primary key: the node id
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIX = "Use a new collection_name, or MilvusVectorStore(..., overwrite=True) to recreate it"


def _name(store: Any) -> str:
    return f"the Milvus collection {store.collection_name!r}"


def count(store: Any) -> int:
    """Entities in the store's collection (a strongly consistent ``count(*)``)."""
    rows = store.client.query(
        store.collection_name,
        filter="",
        output_fields=["count(*)"],
        consistency_level="Strong",
    )
    return int(rows[0]["count(*)"])


def _vector_field(store: Any) -> dict[str, Any] | None:
    fields = store.client.describe_collection(store.collection_name)["fields"]
    return next((f for f in fields if f["name"] == store.embedding_field), None)


def _metric(store: Any) -> str | None:
    client, name = store.client, store.collection_name
    indexes = client.list_indexes(name, field_name=store.embedding_field)
    if not indexes:
        return None
    return str(client.describe_index(name, indexes[0])["metric_type"]).upper()


def check_empty(store: Any) -> None:
    """The collection must hold nothing yet: the BM25 side indexes exactly these nodes."""
    held = count(store)
    if held:
        raise ValueError(
            f"{_name(store)} already holds {held} entities; the hybrid retriever indexes its "
            "nodes into an empty collection (the BM25 side must hold the same nodes). "
            f"{_FIX}, or reload a persisted retriever with HybridRetriever.from_persist_dir"
        )


def check_vectors(store: Any, dimension: int) -> None:
    """The (empty) collection takes these vectors: its vector field, dimension and a similarity."""
    if not store.enable_dense:
        raise ValueError(
            f"{_name(store)} has no dense vectors (enable_dense=False); the hybrid retriever's "
            "dense side needs them: build the store with enable_dense=True"
        )
    vector = _vector_field(store)
    if vector is None:
        raise ValueError(
            f"{_name(store)} has no vector field named {store.embedding_field!r}; pass "
            f"embedding_field= to MilvusVectorStore, or: {_FIX}"
        )
    size = vector.get("params", {}).get("dim")
    if size is None or int(size) != dimension:
        raise ValueError(
            f"{_name(store)} holds vectors of dimension {size}, but the embedding model returns "
            f"{dimension}; pass dim={dimension} to MilvusVectorStore. {_FIX}"
        )
    metric = _metric(store)
    if metric not in ("IP", "COSINE"):
        what = "has no index on its vectors" if metric is None else f"ranks by {metric} distance"
        raise ValueError(
            f"{_name(store)} {what}, but the hybrid retriever fuses similarities (higher is "
            "closer): build the store with similarity_metric='COSINE' or 'IP'. " + _FIX
        )


def check_storable(store: Any, nodes: Sequence[BaseNode], where: str) -> None:
    """Refuse, before anything is embedded or written, a node Milvus would reject (the whole
    insert batch, after the batches before it were written): an id, text, document id or
    metadata value longer than the collection's ``VARCHAR`` field that stores it (the
    integration creates them with ``max_length=65535``), a metadata key named like Milvus's
    dynamic field (``$meta``), or an integer in the metadata outside the 64-bit range that
    pymilvus encodes JSON with.

    Lengths are counted in characters, as Milvus Lite counts them (a Milvus server counts
    UTF-8 bytes, so text of multi-byte characters may still be refused there).
    """
    from pymilvus import DataType

    limits = {
        f["name"]: int(f["params"]["max_length"])
        for f in store.client.describe_collection(store.collection_name)["fields"]
        if f.get("type") == DataType.VARCHAR and "max_length" in f.get("params", {})
    }
    doc_id = getattr(store, "doc_id_field", "doc_id")
    own = {_ID_FIELD: "id", store.text_key: "text", doc_id: "document id"}
    for position, node in enumerate(nodes):
        _check_metadata(store, node, position, where)
        values = {
            _ID_FIELD: node.node_id,
            store.text_key: getattr(node, store.text_key, None),
            doc_id: node.ref_doc_id,
        }
        for name, limit in limits.items():
            value = values[name] if name in values else node.metadata.get(name)
            if isinstance(value, str) and len(value) > limit:
                what = own.get(name, f"metadata value {name!r}")
                fix = (
                    "split it into smaller nodes (e.g. with SentenceSplitter)"
                    if name == store.text_key
                    else f"shorten its {what}"
                )
                raise ValueError(
                    f"{where}: node {node.node_id[:80]!r} (position {position}) cannot be stored "
                    f"in {_name(store)}: its {what} is {len(value):,} characters long, over the "
                    f"{limit:,} of the collection's field {name!r}; {fix}. Nothing was written"
                )


_DYNAMIC_FIELD = "$meta"
_JSON_INTS = (-(2**63), 2**64 - 1)  # what orjson, pymilvus's JSON encoder, takes


def _check_metadata(store: Any, node: BaseNode, position: int, where: str) -> None:
    """Milvus's dynamic field cannot take the key ``$meta``, nor integers past 64 bits."""
    at = f"{where}: node {node.node_id[:80]!r} (position {position}) cannot be stored in {_name(store)}"
    if _DYNAMIC_FIELD in node.metadata:
        raise ValueError(
            f"{at}: its metadata key {_DYNAMIC_FIELD!r} is the name of Milvus's dynamic field; "
            "rename that metadata key. Nothing was written"
        )
    for key, value in node.metadata.items():
        pending = [value]
        while pending:  # nested lists and mappings, without recursion
            item = pending.pop()
            if isinstance(item, dict):
                pending.extend(item.values())
            elif isinstance(item, (list, tuple)):
                pending.extend(item)
            elif (
                isinstance(item, int)
                and not isinstance(item, bool)
                and not _JSON_INTS[0] <= item <= _JSON_INTS[1]
            ):
                raise ValueError(
                    f"{at}: its metadata value {key!r} holds the integer {item}, outside the "
                    "64-bit range Milvus's JSON encoding takes; store it as a string (or a "
                    "float). Nothing was written"
                )


def check_filters(store: Any, filters: MetadataFilters) -> None:
    """Refuse filters the integration would translate to a wrong or invalid Milvus expression.

    Unsupported operators; ``text_match`` (Milvus ``LIKE 'v%'`` is a prefix match, the BM25
    side's a substring match); keys that are not identifiers (pasted raw into the
    expression) or that name the store's own fields (the node id, text, vectors), and
    strings holding a backslash (pasted unescaped).
    """
    from llama_index.vector_stores.milvus.base import _to_milvus_filter

    where = f"filters {filters.model_dump(mode='json')} cannot run on Milvus"
    try:
        _to_milvus_filter(filters)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    own = {_ID_FIELD, store.text_key, store.embedding_field}
    if store.enable_sparse:
        own.add(store.sparse_embedding_field)
    pending = list(filters.filters)
    while pending:
        item = pending.pop()
        if isinstance(item, MetadataFilters):
            pending.extend(item.filters)
            continue
        if item.operator == FilterOperator.TEXT_MATCH:
            raise ValueError(
                f"{where}: its text_match is a prefix match (LIKE 'value%') where LlamaIndex's "
                "(the BM25 side's) is a substring match; filter with == or in instead"
            )
        if not _IDENTIFIER.fullmatch(item.key):
            raise ValueError(
                f"{where}: the key {item.key!r} is not a Milvus identifier (letters, digits, "
                "underscores); rename that metadata key"
            )
        if item.key in own:
            raise ValueError(
                f"{where}: {item.key!r} is one of the collection's own fields (node id, text, "
                "vectors), not the node metadata; rename that metadata key"
            )
        values = item.value if isinstance(item.value, list) else [item.value]
        if any(isinstance(v, str) and "\\" in v for v in values):
            raise ValueError(
                f"{where}: the value {item.value!r} holds a backslash, which the Milvus "
                "integration does not escape"
            )


def ids_passing(store: Any, filters: MetadataFilters) -> set[str]:
    """Ids of the entities passing the integration's translation of ``filters`` (a
    strongly consistent scan of the id field)."""
    from llama_index.vector_stores.milvus.base import _to_milvus_filter

    expression = _to_milvus_filter(filters)
    iterator = store.client.query_iterator(
        store.collection_name,
        batch_size=4096,
        filter=expression,
        output_fields=[_ID_FIELD],
        consistency_level="Strong",
    )
    ids: set[str] = set()
    try:
        while batch := iterator.next():
            ids.update(str(row[_ID_FIELD]) for row in batch)
    finally:
        iterator.close()
    return ids


# ---------------------------------------------------------------------- manifest


def _location(store: Any) -> dict[str, Any]:
    """Where the collection lives: the Milvus Lite ``.db`` path, or the server URL."""
    config = store.client._config  # pymilvus keeps the (rewritten) URI only here
    parts = urlsplit(config.uri)
    location: dict[str, Any] = {}
    path = _lite_path(parts)
    if path is not None:
        location["path"] = path
    else:  # a server: keep the URL, never the credentials it may carry
        port = f":{parts.port}" if parts.port else ""
        location["url"] = f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
    if config.db_name:
        location["db_name"] = config.db_name
    return location


def _lite_path(parts: Any) -> str | None:
    if parts.scheme != "http" or parts.hostname != "127.0.0.1":
        return None
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return None
    servers = dict(getattr(server_manager_instance, "_servers", {}))
    for path, entry in servers.items():
        if isinstance(entry, tuple) and len(entry) == 3 and entry[2] == parts.port:
            return os.path.abspath(path)
    return None


def describe(store: Any, num_nodes: int) -> dict[str, Any]:
    """The manifest's ``dense`` section for a Milvus collection."""
    vector = _vector_field(store)
    return {
        "kind": "milvus",
        "collection": store.collection_name,
        "location": _location(store),
        "vector_name": store.embedding_field,
        "text_key": store.text_key,
        "dimension": int(vector["params"]["dim"]),
        "distance": _metric(store),
        "num_points": count(store),
        "num_nodes": num_nodes,
    }


def open_collection(dense: dict[str, Any], manifest_path: Path, rebuild: str) -> Any:
    """Reopen the Milvus collection recorded in a manifest ``dense`` section."""
    try:
        from llama_index.vector_stores.milvus import MilvusVectorStore
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException
    except ImportError as exc:
        raise ImportError(
            f"{manifest_path} keeps its vectors in Milvus; install the milvus extra: "
            "pip install 'llama-index-ragtune[milvus]'"
        ) from exc
    name = field(dense, "collection", (str,), manifest_path, rebuild, where="dense")
    location = field(dense, "location", (dict,), manifest_path, rebuild, where="dense")
    vector_name = field(dense, "vector_name", (str,), manifest_path, rebuild, where="dense")
    text_key = field(dense, "text_key", (str,), manifest_path, rebuild, where="dense")
    db_name = location.get("db_name", "")
    if isinstance(location.get("path"), str):
        uri, token = location["path"], ""
        if not Path(uri).is_dir():
            raise PersistenceError(
                f"{manifest_path} keeps its vectors in the Milvus Lite database {uri}, which "
                f"{missing_folder(uri)}; pass vector_store=<a MilvusVectorStore on the "
                f"collection {name!r}> to from_persist_dir, or {rebuild}"
            )
    elif isinstance(location.get("url"), str):
        uri, token = location["url"], os.environ.get("MILVUS_TOKEN", "")
    else:
        raise PersistenceError(
            f"{manifest_path} is corrupt: 'dense.location' needs a 'path' or a 'url'; {rebuild}"
        )
    try:  # look before MilvusVectorStore, which would create a missing collection
        exists = MilvusClient(uri=uri, token=token, db_name=db_name).has_collection(name)
    except MilvusException as exc:
        unwritable = _lock_file_error(uri) if isinstance(location.get("path"), str) else None
        if unwritable is not None:  # a read-only mount: not another process
            raise OSError(
                unwritable.errno,
                f"cannot open the Milvus Lite database {uri} ({exc.message}): its lock file "
                f"cannot be opened for writing ({unwritable.strerror or unwritable}), and Milvus "
                "Lite writes it even to read, so the folder must be writable; copy it to a "
                "writable place, serve it with a Milvus server, or pass an open store as "
                "vector_store= to from_persist_dir",
            ) from exc
        raise RuntimeError(
            f"the Milvus database {uri} could not be opened ({exc.message}); Milvus Lite lets one "
            "process open a database at a time: close it there, or pass its store as "
            "vector_store= to from_persist_dir"
        ) from exc
    if not exists:
        raise PersistenceError(
            f"the Milvus collection {name!r} recorded in {manifest_path} does not exist in {uri} "
            f"(deleted, or another database); {rebuild}"
        )
    return MilvusVectorStore(
        uri=uri,
        token=token,
        db_name=db_name,
        collection_name=name,
        embedding_field=vector_name,
        text_key=text_key,
    )


def missing_folder(path: str) -> str:
    """Why the storage folder ``path`` cannot be reopened, for an error message."""
    if os.path.lexists(path):
        return "is a file (or a broken link), not the folder the database keeps (replaced?)"
    return "does not exist (moved or deleted?)"


def _lock_file_error(database: str) -> OSError | None:
    """Why the lock file Milvus Lite keeps in the ``database`` folder cannot be opened for
    writing (a read-only mount, a folder in its place), or ``None`` when it can."""
    flags = os.O_CREAT | os.O_RDWR | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        os.close(os.open(os.path.join(database, "LOCK"), flags, 0o644))
    except OSError as exc:
        return exc
    return None


def load(store: Any) -> None:
    """Load the collection for search: a reopened database (or restarted server) starts released."""
    from pymilvus.client.types import LoadState

    client, name = store.client, store.collection_name
    if client.get_load_state(name)["state"] != LoadState.Loaded:
        client.load_collection(name)


def collection_facts(store: Any) -> tuple[bool, int, int | None]:
    """Whether the collection exists, how many entities it holds, its vectors' dimension."""
    if not store.client.has_collection(store.collection_name):
        return False, 0, None
    vector = _vector_field(store)
    size = None if vector is None else vector.get("params", {}).get("dim")
    return True, count(store), None if size is None else int(size)
