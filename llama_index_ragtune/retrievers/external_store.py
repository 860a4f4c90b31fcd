"""The hybrid retriever's dense side on a vector database (Qdrant, Milvus), filters pushed down.

``HybridRetriever.from_defaults(nodes=..., dense_index=store)`` with a LlamaIndex
vector store embeds the nodes and indexes them into ``store`` through a plain
``VectorStoreIndex`` (the nodes are kept in its docstore too, for the BM25 side and
for ``persist``). Retrieval goes through LlamaIndex's own retriever, so metadata
filters are translated by the store's integration and evaluated inside the database
(Qdrant: ``MetadataFilters`` -> a Qdrant ``Filter``; Milvus: a filter expression), before
its top-k cut. Milvus (Milvus Lite or a server) is wired the same way; its specifics are in
:mod:`~llama_index_ragtune.retrievers.external_milvus`.

Qdrant (the ``qdrant`` extra: ``llama-index-vector-stores-qdrant``, ``qdrant-client``)
runs in-process in local mode, or against a server or cluster; only the client line
changes::

    from qdrant_client import QdrantClient
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    client = QdrantClient(path="qdrant_data")                # local mode, on disk, in-process
    # client = QdrantClient(url="http://qdrant:6333")        # a Qdrant server / cluster
    store = QdrantVectorStore(collection_name="docs", client=client)
    retriever = HybridRetriever.from_defaults(nodes=nodes, dense_index=store)
    retriever.persist("hybrid_index")                        # BM25 + docstore + manifest
    HybridRetriever.from_persist_dir("hybrid_index")         # reopens the collection

``persist`` records the store kind, collection, vector name, dimension and where the
collection lives (the local-mode path, absolute, or the server URL; never an API key)
in the manifest; the vectors stay in the store. ``from_persist_dir`` reopens it
(``QdrantClient(path=...)``, or ``QdrantClient(url=..., api_key=$QDRANT_API_KEY)``), or
takes ``vector_store=`` (a store you opened, e.g. with credentials), and checks that the
collection holds as many vectors of the recorded dimension as the folder has nodes.

Limits, each refused with a message saying what to do: the collection must be empty
when the nodes are indexed; Qdrant point ids must be UUIDs, so node ids must be UUIDs
(LlamaIndex's default ids are), and two spellings of one UUID (case, dashes) are one point;
a new collection's name must be one Qdrant can create; an in-memory client (``":memory:"``) works but cannot
be persisted; local mode allows one client per path (close the first, or pass it as
``vector_store=``). Filters run in the store with its own semantics, which differ from
LlamaIndex's in-memory semantics (the BM25 side's) for some operators and value types
(e.g. ``!=`` on nodes missing the key, ``text_match_insensitive`` on Qdrant, ``is_empty``
on Milvus); so when a filter is set, the nodes it passes in memory are compared with the
ids the store selects (:func:`~llama_index_ragtune.retrievers.store_filters.check_store_parity`), and a filter the store answers
differently, or cannot translate, is refused then, naming the filter, the store and a
node they disagree on. Qdrant local mode answers queries by exact search, so it returns the same
ranking as the exact FAISS side (``tests/retrievers/test_external_store.py``).

Example::

    retriever = HybridRetriever.from_defaults(nodes=nodes, dense_index=store, filters=filters)
"""

from __future__ import annotations

import json
import os
import sys
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode

from llama_index_ragtune.retrievers import external_milvus
from llama_index_ragtune.retrievers.node_embedding import embed_nodes
from llama_index_ragtune.retrievers.persistence import PersistenceError, field

__all__ = [
    "build_store_index",
    "describe_store",
    "index_retriever",
    "open_store",
    "store_kind",
]

STORE_KINDS = ("qdrant", "milvus")
# kind -> (module, class); a module is never imported here: only if the user did
_STORE_CLASSES = {
    "qdrant": ("llama_index.vector_stores.qdrant", "QdrantVectorStore"),
    "milvus": ("llama_index.vector_stores.milvus", "MilvusVectorStore"),
}
STORE_NAMES = {"qdrant": "Qdrant", "milvus": "Milvus"}
_REBUILD = "rebuild it with HybridRetriever.from_defaults(...) and call persist() again"


def store_kind(store: Any) -> str | None:
    """``"faiss"`` (ours), ``"qdrant"``, ``"milvus"``, or ``None`` for a store ``persist`` cannot record.

    Example::

        store_kind(QdrantVectorStore(collection_name="docs", client=client))  # 'qdrant'
    """
    from llama_index_ragtune.retrievers.faiss_store import FilterableFaissVectorStore

    if isinstance(store, FilterableFaissVectorStore):
        return "faiss"
    for kind, (module_name, class_name) in _STORE_CLASSES.items():
        module = sys.modules.get(module_name)
        if module is not None and isinstance(store, getattr(module, class_name, ())):
            return kind
    return None


# ---------------------------------------------------------------------- building


def build_store_index(
    nodes: Sequence[BaseNode],
    embed_model: BaseEmbedding,
    store: Any,
    show_progress: bool = False,
) -> Any:
    """Embed ``nodes`` into ``store`` (an empty collection) and return the ``VectorStoreIndex``.

    The nodes are also kept in the index's docstore (``store_nodes_override=True``).

    Example::

        index = build_store_index(nodes, embed_model, QdrantVectorStore("docs", client=client))
    """
    from llama_index.core import StorageContext, VectorStoreIndex

    from llama_index_ragtune.retrievers.checks import check_nodes

    kind = store_kind(store)
    where = "HybridRetriever.from_defaults"
    if kind == "qdrant":
        _check_qdrant_ids(check_nodes(nodes, where))
        _check_qdrant_names(store)
        _check_qdrant_empty(store)
    elif kind == "milvus":
        external_milvus.check_empty(store)
        external_milvus.check_storable(store, check_nodes(nodes, where), where)
    embedded = embed_nodes(nodes, embed_model, "HybridRetriever.from_defaults", show_progress)
    if kind == "qdrant":
        _check_qdrant_vectors(store, len(embedded[0].embedding))
    elif kind == "milvus":
        external_milvus.check_vectors(store, len(embedded[0].embedding))
    storage = StorageContext.from_defaults(vector_store=store)
    return VectorStoreIndex(
        embedded,
        storage_context=storage,
        embed_model=embed_model,
        store_nodes_override=True,
        show_progress=False,
    )


def check_new_store_nodes(store: Any, nodes: Sequence[BaseNode], where: str) -> None:
    """Refuse nodes the store cannot hold (Qdrant: ids that are not UUIDs or that spell a held
    point's UUID differently; Milvus: :func:`external_milvus.check_storable`); others pass.

    Example::

        check_new_store_nodes(qdrant_store, nodes, "HybridRetriever.insert_nodes")
    """
    kind = store_kind(store)
    if kind == "qdrant":
        _check_qdrant_held(store, _check_qdrant_ids(nodes, where), where)
    elif kind == "milvus":
        external_milvus.check_storable(store, nodes, where)


def forget_index(index: Any) -> None:
    """Drop whether the collection holds only ``index``'s nodes (its nodes changed; the
    filters found exact on them: :func:`~llama_index_ragtune.retrievers.store_filters.forget_filters`).

    Example::

        forget_index(retriever.index)
    """
    _EXCLUSIVE.pop(index, None)


def _check_qdrant_ids(
    nodes: Sequence[BaseNode], where: str = "HybridRetriever.from_defaults"
) -> dict[str, str]:
    """Refuse node ids Qdrant cannot keep apart: ids that are not UUIDs, and two spellings of
    one UUID (upper case, no dashes, braces, ``urn:uuid:``), which Qdrant stores as one point.
    Returns each canonical UUID with the node id spelling it."""
    spelled: dict[str, str] = {}
    for position, node in enumerate(nodes):
        try:
            canonical = str(uuid.UUID(node.node_id))
        except ValueError:
            raise ValueError(
                f"{where}: node {node.node_id!r} (position {position}) cannot be stored in Qdrant: Qdrant "
                "point ids are UUIDs, and LlamaIndex uses the node id as the point id. Give the "
                "nodes UUID ids (LlamaIndex's default), e.g. "
                "node.id_ = str(uuid.uuid5(uuid.NAMESPACE_URL, your_id)), keeping your id in "
                "node.metadata"
            ) from None
        other = spelled.setdefault(canonical, node.node_id)
        if other != node.node_id:
            raise ValueError(_same_point(where, other, node.node_id, canonical, position))
    return spelled


def _same_point(where: str, first: str, second: str, canonical: str, position: int) -> str:
    return (
        f"{where}: node ids {first!r} and {second!r} (position {position}) are one UUID spelled "
        f"two ways; Qdrant stores both as the point {canonical}, so one node would overwrite "
        "the other in the dense side while the BM25 side keeps both. Give the nodes distinct "
        "UUIDs, or spell ids canonically: node.id_ = str(uuid.UUID(node.id_))"
    )


def _check_qdrant_held(store: Any, spelled: dict[str, str], where: str) -> None:
    """Refuse new nodes whose point the collection already holds for another spelling of the
    id (the same spelling is an update: it replaces its point)."""
    client, name = store.client, store.collection_name
    if not spelled or not client.collection_exists(name):
        return
    points = client.retrieve(
        name, ids=list(spelled), with_payload=["_node_content"], with_vectors=False
    )
    for point in points:
        content = (point.payload or {}).get("_node_content")
        held = json.loads(content).get("id_") if isinstance(content, str) else None
        new = spelled[str(uuid.UUID(str(point.id)))]
        if held is not None and held != new:
            position = list(spelled.values()).index(new)
            raise ValueError(_same_point(where, held, new, str(point.id), position))


def _check_qdrant_empty(store: Any) -> None:
    client = store.client
    name = store.collection_name
    if client.collection_exists(name):
        count = client.count(name, exact=True).count
        if count:
            raise ValueError(
                f"the Qdrant collection {name!r} already holds {count} points; the hybrid "
                "retriever indexes its nodes into an empty collection (the BM25 side must hold "
                "the same nodes). Use a new collection_name, delete the collection, or reload a "
                "persisted retriever with HybridRetriever.from_persist_dir"
            )


def _check_qdrant_names(store: Any) -> None:
    """A collection still to be created needs a name (and vector name) Qdrant accepts; checked
    with Qdrant's own rules (those of its local mode, the server's) before anything is embedded."""
    client, name = store.client, store.collection_name
    try:
        if client.collection_exists(name):  # raises for some names Qdrant refuses (empty)
            return
        from qdrant_client.local.qdrant_local import QdrantLocal

        QdrantLocal._validate_new_collection_name(name)
        QdrantLocal._validate_new_vector_name(store.dense_vector_name, "dense")
    except (ImportError, AttributeError):  # a qdrant-client without these rules: it decides
        return
    except ValueError as exc:
        raise ValueError(
            f"the Qdrant collection {name!r} (vector {store.dense_vector_name!r}) cannot be "
            f"created: {exc}. Pass a collection_name (and dense_vector_name) Qdrant accepts: 1 "
            'to 255 characters, none of < > : " / \\ | ? * or control characters; nothing '
            "was written"
        ) from exc


def _check_qdrant_vectors(store: Any, dimension: int) -> None:
    """An existing (empty) collection must take these vectors: its vector name, size, a similarity."""
    client = store.client
    name = store.collection_name
    if not client.collection_exists(name):
        return  # created by the store from the first vectors
    vectors = client.get_collection(name).config.params.vectors
    vector_name = store.dense_vector_name
    params = vectors.get(vector_name) if isinstance(vectors, dict) else vectors
    fix = "Use a new collection_name, or delete the collection so that it is created to fit"
    if params is None:
        names = sorted(vectors) if isinstance(vectors, dict) else ["(one unnamed vector)"]
        raise ValueError(
            f"the Qdrant collection {name!r} has no dense vector named {vector_name!r} (it has "
            f"{names}); pass dense_vector_name= to QdrantVectorStore, or: {fix}"
        )
    if int(params.size) != dimension:
        raise ValueError(
            f"the Qdrant collection {name!r} holds vectors of size {params.size}, but the embedding "
            f"model returns {dimension}; {fix}"
        )
    distance = str(params.distance.value)
    if distance not in ("Cosine", "Dot"):
        raise ValueError(
            f"the Qdrant collection {name!r} ranks by {distance} distance (lower is closer), but "
            "the hybrid retriever fuses similarities (higher is closer: Cosine or Dot); " + fix
        )


# ---------------------------------------------------------------------- manifest


def describe_store(store: Any, num_nodes: int) -> dict[str, Any]:
    """The manifest's ``dense`` section for a vector-store dense side (vectors stay in the store).

    Example::

        describe_store(qdrant_store, num_nodes=100)["location"]  # {'path': '/data/qdrant'}
    """
    kind = store_kind(store)
    if kind == "milvus":
        return external_milvus.describe(store, num_nodes)
    if kind != "qdrant":
        raise NotImplementedError(
            f"HybridRetriever.persist records dense sides on FAISS, Qdrant or Milvus; this one is "
            f"on {type(store).__name__} (persist it through its own storage context)"
        )
    client = store.client
    options = client.init_options
    name = store.collection_name
    if options.get("location") == ":memory:" or (
        all(options.get(k) is None for k in ("location", "url", "host", "path"))
        and type(client._client).__name__ == "QdrantLocal"
    ):
        raise ValueError(
            f"the Qdrant collection {name!r} lives in an in-memory client (QdrantClient(':memory:')) "
            "and would be gone when this process ends; use QdrantClient(path=...) or a server URL "
            "to persist the hybrid retriever"
        )
    if options.get("path") is not None:
        location = {"path": os.path.abspath(os.fspath(options["path"]))}
    else:
        location = {"url": _qdrant_url(client, options)}
    info = client.get_collection(name)
    vectors = info.config.params.vectors
    params = vectors.get(store.dense_vector_name) if isinstance(vectors, dict) else vectors
    return {
        "kind": "qdrant",
        "collection": name,
        "location": location,
        "vector_name": store.dense_vector_name,
        "dimension": int(params.size),
        "distance": str(params.distance.value),
        "num_points": int(client.count(name, exact=True).count),
        "num_nodes": num_nodes,
    }


def _qdrant_url(client: Any, options: dict[str, Any]) -> str:
    remote = client._client
    uri = getattr(remote, "rest_uri", None)
    if uri:
        return str(uri)
    url = options.get("url") or options.get("location") or options.get("host")
    return str(url)


def open_store(dense: dict[str, Any], manifest_path: Path) -> Any:
    """Reopen the vector store recorded in a manifest ``dense`` section.

    Example::

        store = open_store(manifest["dense"], folder / "hybrid_retriever.json")
    """
    kind = field(dense, "kind", (str,), manifest_path, _REBUILD, where="dense")
    if kind == "milvus":
        return external_milvus.open_collection(dense, manifest_path, _REBUILD)
    if kind != "qdrant":
        raise PersistenceError(
            f"{manifest_path}: cannot reopen a dense side of kind {kind!r}; {_REBUILD}"
        )
    try:
        from llama_index.vector_stores.qdrant import QdrantVectorStore
        from qdrant_client import QdrantClient
    except ImportError as exc:
        raise ImportError(
            f"{manifest_path} keeps its vectors in Qdrant; install the qdrant extra: "
            "pip install 'llama-index-ragtune[qdrant]'"
        ) from exc
    name = field(dense, "collection", (str,), manifest_path, _REBUILD, where="dense")
    location = field(dense, "location", (dict,), manifest_path, _REBUILD, where="dense")
    vector_name = field(dense, "vector_name", (str,), manifest_path, _REBUILD, where="dense")
    if isinstance(location.get("path"), str):
        path = location["path"]
        if not Path(path).is_dir():
            raise PersistenceError(
                f"{manifest_path} keeps its vectors in the local Qdrant storage {path}, which "
                f"{external_milvus.missing_folder(path)}; pass vector_store=<a QdrantVectorStore on the "
                f"collection {name!r}> to from_persist_dir, or {_REBUILD}"
            )
        try:
            client = QdrantClient(path=path)
        except RuntimeError as exc:
            raise RuntimeError(
                f"the local Qdrant storage {path} is open in another client ({exc}); close that "
                "client (client.close()) or pass its store as vector_store= to from_persist_dir"
            ) from exc
        except OSError as exc:  # a read-only mount: the lock file cannot be opened for writing
            raise OSError(
                exc.errno,
                f"cannot open the local Qdrant storage {path} ({exc.strerror or exc}): Qdrant's "
                "local mode writes its lock file there even to read, so the folder must be "
                "writable; copy it to a writable place, serve it with a Qdrant server, or pass "
                "an open store as vector_store= to from_persist_dir",
            ) from exc
    elif isinstance(location.get("url"), str):
        client = QdrantClient(url=location["url"], api_key=os.environ.get("QDRANT_API_KEY"))
    else:
        raise PersistenceError(
            f"{manifest_path} is corrupt: 'dense.location' needs a 'path' or a 'url'; {_REBUILD}"
        )
    return QdrantVectorStore(collection_name=name, client=client, dense_vector_name=vector_name)


def check_store(store: Any, dense: dict[str, Any], manifest_path: Path) -> None:
    """The reopened store holds the recorded collection: same kind, size and dimension
    (a Milvus collection is then loaded for search).

    Example::

        check_store(store, manifest["dense"], folder / "hybrid_retriever.json")
    """
    kind = store_kind(store)
    if kind != dense.get("kind"):
        raise PersistenceError(
            f"{manifest_path} records a dense side on {dense.get('kind')!r}, but the vector_store "
            f"given is {type(store).__name__}; pass a store of that kind"
        )
    name = store.collection_name
    product = STORE_NAMES[kind]
    where = f"the {product} collection {name!r}"
    if name != dense.get("collection"):
        raise PersistenceError(
            f"{manifest_path} records the collection {dense.get('collection')!r}, but the "
            f"vector_store given uses {name!r}; pass a store on the recorded collection"
        )
    exists, count, got = (
        external_milvus.collection_facts(store) if kind == "milvus" else _qdrant_facts(store)
    )
    if not exists:
        raise PersistenceError(
            f"{where} recorded in {manifest_path} does not exist in that {product} (deleted, or "
            f"another storage path/server); {_REBUILD}"
        )
    expected = field(dense, "num_nodes", (int,), manifest_path, _REBUILD, where="dense")
    dimension = field(dense, "dimension", (int,), manifest_path, _REBUILD, where="dense")
    vector_name = store.embedding_field if kind == "milvus" else store.dense_vector_name
    if got != dimension:
        raise PersistenceError(
            f"{where} holds vectors of dimension {got} under {vector_name!r}, but "
            f"{manifest_path} records {dimension}; the collection was replaced — {_REBUILD}"
        )
    if count != expected:
        noun = "entities" if kind == "milvus" else "points"
        raise PersistenceError(
            f"{where} holds {count} {noun} but {manifest_path} records {expected} nodes: the "
            f"collection changed after persist(); {_REBUILD}"
        )
    if kind == "milvus":
        external_milvus.load(store)


def _qdrant_facts(store: Any) -> tuple[bool, int, int | None]:
    client, name = store.client, store.collection_name
    if not client.collection_exists(name):
        return False, 0, None
    vectors = client.get_collection(name).config.params.vectors
    params = vectors.get(store.dense_vector_name) if isinstance(vectors, dict) else vectors
    size = None if params is None else int(params.size)
    return True, int(client.count(name, exact=True).count), size


def index_retriever(index: Any, **kwargs: Any) -> Any:
    """``index.as_retriever(**kwargs)``, without the id list when the collection is the index's own.

    LlamaIndex's ``as_retriever`` sends every node id of the index with each query, so
    that a collection shared by several indexes answers for this one only; the database
    then evaluates an ``id in [...]`` clause as long as the corpus on every query. A
    collection holding exactly the index's nodes (what ``from_defaults`` builds and
    ``from_persist_dir`` checks) needs no such clause, and gets none; a shared one keeps it.

    Example::

        retriever = index_retriever(index, similarity_top_k=10, filters=filters)
    """
    if store_kind(index.vector_store) not in STORE_KINDS or not _holds_only(index):
        return index.as_retriever(**kwargs)
    from llama_index.core.indices.vector_store.retrievers import VectorIndexRetriever

    return VectorIndexRetriever(
        index,
        node_ids=None,
        callback_manager=index._callback_manager,
        object_map=index._object_map,
        **kwargs,
    )


_EXCLUSIVE: weakref.WeakKeyDictionary[Any, tuple[int, bool]] = weakref.WeakKeyDictionary()


def _holds_only(index: Any) -> bool:
    """Whether the collection holds as many entries as the index has nodes (cached per size)."""
    size = len(index.index_struct.nodes_dict)
    known = _EXCLUSIVE.get(index)
    if known is not None and known[0] == size:
        return known[1]
    store = index.vector_store
    exists, count, _ = (
        external_milvus.collection_facts(store)
        if store_kind(store) == "milvus"
        else _qdrant_facts(store)
    )
    result = exists and size > 0 and count == size
    _EXCLUSIVE[index] = (size, result)
    return result


_DIMENSIONS: weakref.WeakKeyDictionary[Any, int | None] = weakref.WeakKeyDictionary()


def index_dimension(index: Any) -> int | None:
    """The size of the vectors ``index``'s store holds: the FAISS index's, or the Qdrant /
    Milvus collection's (asked once per index); ``None`` for another store or no collection.

    Example::

        index_dimension(retriever.index)   # e.g. 384
    """
    store = getattr(index, "vector_store", None)
    faiss_index = getattr(store, "_faiss_index", None)
    if faiss_index is not None:
        return int(faiss_index.d)
    kind = store_kind(store)
    if kind not in STORE_KINDS:
        return None
    if index not in _DIMENSIONS:
        facts = external_milvus.collection_facts if kind == "milvus" else _qdrant_facts
        _DIMENSIONS[index] = facts(store)[2]
    return _DIMENSIONS[index]


def store_supports_async(store: Any) -> bool:
    """Whether a store's native ``aquery`` can run (Qdrant needs an async client for it).

    Example::

        store_supports_async(QdrantVectorStore("docs", client=client))  # False: no aclient
    """
    kind = store_kind(store)
    if kind == "qdrant":
        return getattr(store, "_aclient", None) is not None
    if kind == "milvus":
        return store.aclient is not None
    return True
