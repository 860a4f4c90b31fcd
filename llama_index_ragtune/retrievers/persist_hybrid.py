"""Persisting and loading a HybridRetriever folder: atomic, hashed, checked, no pickle.

Layout of a persisted folder (format ``ragtune-hybrid``, version 2)::

    hybrid_retriever.json     format tag + version; "params": fusion parameters, filters,
                              encoder info; "dense": {"kind": "faiss", "index_type":
                              "IndexHNSWFlat", "index": {"kind": "hnsw", "hnsw_m": 32, ...},
                              ...} or {"kind": "qdrant", "collection": ..., "location":
                              {"path": ...} | {"url": ...}, ...}; "sparse": {"kind": "bm25"};
                              "files": SHA-256 and size of every other file
    storage/                  LlamaIndex StorageContext: docstore.json, index_store.json,
                              default__vector_store.json (FAISS) + .metadata.json (filters), ...
    bm25/                     bm25_retriever.json + bm25s/ (the BM25 index; nodes from storage/)

* **Atomic** (:func:`llama_index_ragtune._atomic.atomic_dir`): ``persist`` writes the
  whole folder to ``<dir>.tmp-<pid>-<token>`` and swaps it in with two renames; a
  process killed at any point leaves the old or the new index loadable (a loader that
  finds ``<dir>`` missing after a kill between the renames restores the old one).
  ``persist`` refuses a folder holding entries it did not write (they would be lost).
* **Checked**: ``from_persist_dir`` verifies every file against the manifest before
  parsing anything, type-checks every manifest field, and raises
  :class:`~llama_index_ragtune.retrievers.PersistenceError` naming the file or key and
  saying to re-persist. Version-1 folders (no hashes) still load, with a warning.
* **No pickle**: JSON, FAISS' binary format and ``np.load(allow_pickle=False)`` only.
* **Extensible**: ``dense.kind`` / ``dense.index_type`` and ``sparse.kind`` say what to
  load; this version loads ``faiss`` (any FAISS index type ``faiss.read_index`` reads
  whose ids are positions; ``dense.index`` records the
  :class:`~llama_index_ragtune.retrievers.FaissIndexConfig`, absent in older folders,
  which load as before), ``qdrant`` and ``milvus`` (the vectors stay in the collection; see
  :mod:`~llama_index_ragtune.retrievers.external_store`) and ``bm25``, and refuses other
  kinds by name.

Example::

    retriever.persist("hybrid_index")
    HybridRetriever.from_persist_dir("hybrid_index", similarity_top_k=20)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.vector_stores.types import MetadataFilters

from llama_index_ragtune._atomic import atomic_dir
from llama_index_ragtune.embeddings import resolve_embed_model
from llama_index_ragtune.retrievers.bm25 import BM25Retriever
from llama_index_ragtune.retrievers.bm25_persist import load_bm25, write_bm25_files
from llama_index_ragtune.retrievers.checks import positive_float, positive_int, unit_float
from llama_index_ragtune.retrievers.defaults import fusion_preset
from llama_index_ragtune.retrievers.external_store import (
    STORE_KINDS,
    check_store,
    describe_store,
    open_store,
    store_kind,
)
from llama_index_ragtune.retrievers.faiss_index import FaissIndexConfig, index_kind
from llama_index_ragtune.retrievers.persist_docstore import check_loaded_nodes, read_docstore
from llama_index_ragtune.retrievers.persist_errors import read_only_as_persistence_error
from llama_index_ragtune.retrievers.persistence import (
    PersistenceError,
    check_json_metadata,
    check_nothing_unrecorded,
    field,
    file_digests,
    load_snapshot,
    read_manifest,
    refuse_special_files,
    require_file,
    verify_files,
    write_manifest,
)

logger = logging.getLogger(__name__)

MANIFEST = "hybrid_retriever.json"
FORMAT = "ragtune-hybrid"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
STORAGE_DIR = "storage"
BM25_DIR = "bm25"
VECTOR_STORE_FILE = "default__vector_store.json"
DENSE_KINDS = ("faiss", *STORE_KINDS)
SPARSE_KINDS = ("bm25",)
_REBUILD = "rebuild it with HybridRetriever.from_defaults(...) and call persist() again"
_FUSION_KEYS = ("similarity_top_k", "fusion_mode", "alpha", "rrf_k", "dense_top_k", "sparse_top_k")
_OVERRIDABLE = (*_FUSION_KEYS, "filters", "callback_manager", "verbose", "vector_store")

__all__ = ["load_hybrid", "persist_hybrid"]


def _check_persistable(retriever: Any) -> None:
    if retriever.index is None or not retriever.has_built_in_dense:
        raise NotImplementedError(
            "HybridRetriever.persist saves the built-in FAISS dense side only; this retriever has a custom "
            f"dense retriever ({type(retriever.dense_retriever).__name__}): persist that yourself"
        )
    if store_kind(retriever.index.vector_store) is None:
        raise NotImplementedError(
            f"HybridRetriever.persist saves FAISS indexes and Qdrant or Milvus collections; this index uses "
            f"{type(retriever.index.vector_store).__name__} (persist it through its own storage context)"
        )
    if not isinstance(retriever.sparse_retriever, BM25Retriever):
        raise NotImplementedError(
            "HybridRetriever.persist saves the built-in BM25Retriever only; the lexical side is "
            f"{type(retriever.sparse_retriever).__name__}: persist that yourself"
        )
    dense_ids = set(retriever.index.index_struct.nodes_dict.values())
    sparse_ids = {n.node_id for n in retriever.sparse_retriever.nodes}
    only_sparse = sorted(sparse_ids - dense_ids)
    only_dense = sorted(dense_ids - sparse_ids)
    if only_sparse or only_dense:
        raise ValueError(
            "HybridRetriever.persist: the two sides hold different nodes "
            f"({len(only_sparse)} only in BM25, e.g. {only_sparse[:3]}; {len(only_dense)} only in the "
            f"dense index, e.g. {only_dense[:3]}), so the folder could not be loaded again; build "
            "both sides over the same nodes (HybridRetriever.from_defaults(nodes=...) does)"
        )


def _dense_section(retriever: Any) -> dict[str, Any]:
    store = retriever.index.vector_store
    common = {"path": STORAGE_DIR, "index_id": retriever.index.index_id}
    if store_kind(store) != "faiss":
        num_nodes = len(retriever.index.index_struct.nodes_dict)
        return describe_store(store, num_nodes) | common
    client = store.client
    config = store.index_config()
    return {
        "kind": "faiss",
        "index_type": type(client).__name__,
        **common,
        "num_nodes": int(client.ntotal),
        "dimension": int(client.d),
        "index": None if config is None else config.model_dump(mode="json"),
    }


def persist_hybrid(retriever: Any, folder: Path) -> None:
    """Replace ``folder`` atomically with the persisted ``retriever`` (module docstring)."""
    _check_persistable(retriever)
    check_json_metadata(retriever.sparse_retriever.nodes, "HybridRetriever.persist")
    dense = _dense_section(retriever)  # an unpersistable store fails before anything is written
    owned = {MANIFEST, STORAGE_DIR, BM25_DIR}
    check_nothing_unrecorded(folder, MANIFEST, "HybridRetriever.persist")
    with (
        read_only_as_persistence_error(folder, "HybridRetriever.persist"),
        atomic_dir(folder, owned_entries=owned, what="HybridRetriever.persist") as tmp,
    ):
        retriever.index.storage_context.persist(persist_dir=str(tmp / STORAGE_DIR))
        write_bm25_files(retriever.sparse_retriever, tmp / BM25_DIR, save_nodes=False)
        embed = retriever.embed_model
        params = retriever.params() | {
            "filters": None
            if retriever.filters is None
            else retriever.filters.model_dump(mode="json"),
            "embed_model": None
            if embed is None
            else {
                "class_name": embed.class_name(),
                "model_name": getattr(embed, "model_name", None),
            },
        }
        sparse = {"kind": "bm25", "path": BM25_DIR}
        files = file_digests(tmp, exclude={MANIFEST})
        write_manifest(
            tmp, MANIFEST, FORMAT, FORMAT_VERSION, params, files=files, dense=dense, sparse=sparse
        )


def _sections(manifest: dict[str, Any], path: Path) -> tuple[dict, dict, dict]:
    """(fusion kwargs, dense section, embed-model info), every field type-checked."""
    params = manifest["params"]
    if manifest["format_version"] == 1:  # v1 kept the dense facts among the params
        dense = {
            "kind": "faiss",
            **{k: params.get(k) for k in ("index_id", "num_nodes", "dimension")},
        }
        dense = {k: v for k, v in dense.items() if v is not None}
    else:
        dense = field(manifest, "dense", (dict,), path, _REBUILD, where="")
        sparse = field(manifest, "sparse", (dict,), path, _REBUILD, where="")
        kind = field(sparse, "kind", (str,), path, _REBUILD, where="sparse")
        if kind not in SPARSE_KINDS:
            raise PersistenceError(
                f"{path}: the lexical side is of kind {kind!r}, which this version of "
                f"llama-index-ragtune cannot load (it loads {SPARSE_KINDS}); upgrade, or {_REBUILD}"
            )
    kind = field(dense, "kind", (str,), path, _REBUILD, where="dense")
    if kind not in DENSE_KINDS:
        raise PersistenceError(
            f"{path}: the dense side is of kind {kind!r}, which this version of llama-index-ragtune "
            f"cannot load (it loads {DENSE_KINDS}); upgrade, or {_REBUILD}"
        )
    for key, kinds in (("index_id", (str,)), ("num_nodes", (int,)), ("dimension", (int,))):
        field(dense, key, kinds, path, _REBUILD, where="dense")
    kinds = {
        "similarity_top_k": (int,),
        "fusion_mode": (str,),
        "alpha": (float,),
        "rrf_k": (float,),
        "dense_top_k": (int,),
        "sparse_top_k": (int,),
    }
    kwargs = {key: field(params, key, kinds[key], path, _REBUILD) for key in _FUSION_KEYS}
    unknown = sorted(set(params) - {*_FUSION_KEYS, "filters", "embed_model"})
    if manifest["format_version"] >= 2 and unknown:
        raise PersistenceError(
            f"{path} holds unknown parameter(s) {unknown[:5]}: it was edited, or written by another "
            f"version of llama-index-ragtune (install that version); {_REBUILD}"
        )
    filters = field(params, "filters", (dict, type(None)), path, _REBUILD, default=None)
    embed_info = field(params, "embed_model", (dict, type(None)), path, _REBUILD, default=None)
    try:
        fusion_preset(kwargs["fusion_mode"])
        for key in ("similarity_top_k", "dense_top_k", "sparse_top_k"):
            positive_int(kwargs[key], key)
        unit_float(kwargs["alpha"], "alpha")
        positive_float(kwargs["rrf_k"], "rrf_k")
        kwargs["filters"] = None if filters is None else MetadataFilters.model_validate(filters)
    except (ValueError, TypeError) as exc:
        raise PersistenceError(f"{path} holds invalid parameters ({exc}); {_REBUILD}") from exc
    return kwargs, dense, embed_info or {}


def load_hybrid(
    cls: type, folder: Path, embed_model: BaseEmbedding | None, overrides: dict[str, Any]
) -> Any:
    """Load a hybrid folder as one consistent snapshot (see :func:`load_snapshot`)."""
    unknown = sorted(set(overrides) - set(_OVERRIDABLE))
    if unknown:
        raise TypeError(f"unknown override(s) {unknown}; allowed: {sorted(_OVERRIDABLE)}")
    return load_snapshot(folder, lambda: _load(cls, folder, embed_model, overrides))


def _load(
    cls: type, folder: Path, embed_model: BaseEmbedding | None, overrides: dict[str, Any]
) -> Any:
    from llama_index.core import StorageContext, load_index_from_storage

    overrides = dict(overrides)
    given_store = overrides.pop("vector_store", None)
    manifest = read_manifest(folder, MANIFEST, FORMAT, READABLE_VERSIONS, _REBUILD)
    path = folder / MANIFEST
    hashed = manifest["format_version"] >= 2
    if hashed:
        verify_files(folder, manifest, MANIFEST, _REBUILD)
    else:
        logger.warning(
            "%s was written by an older llama-index-ragtune without content hashes; persist it "
            "again to have its files checked when loading",
            folder,
        )
        refuse_special_files(folder, path, _REBUILD)
    kwargs, dense, embed_info = _sections(manifest, path)
    storage = folder / STORAGE_DIR
    faiss_side = dense["kind"] == "faiss"
    for name, what in (
        ("docstore.json", "the nodes"),
        ("index_store.json", "the index structure"),
        *([(VECTOR_STORE_FILE, "the FAISS index")] if faiss_side else []),
    ):
        require_file(storage / name, what, _REBUILD)
    if faiss_side:
        if given_store is not None:
            raise TypeError(
                f"vector_store= reopens a dense side kept in a vector database; {folder} holds "
                "its FAISS index itself"
            )
        store = _load_faiss(storage / VECTOR_STORE_FILE, dense, path, verify=not hashed)
    else:
        store = given_store if given_store is not None else open_store(dense, path)
        check_store(store, dense, path)
    embed = resolve_embed_model(embed_model)
    _check_encoder(embed, dense["dimension"], embed_info, path, explicit=embed_model is not None)
    docstore = read_docstore(storage / "docstore.json", _REBUILD)
    try:
        context = StorageContext.from_defaults(
            persist_dir=str(storage), vector_store=store, docstore=docstore
        )
        index = load_index_from_storage(context, index_id=dense["index_id"], embed_model=embed)
    except (
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        RecursionError,
        json.JSONDecodeError,
    ) as exc:
        raise PersistenceError(
            f"{_damaged_json(storage) or storage} could not be loaded ({type(exc).__name__}: "
            f"{str(exc)[:200]}); {_REBUILD}"
        ) from exc
    nodes_dict = index.index_struct.nodes_dict
    index_store = storage / "index_store.json"
    node_count = len(nodes_dict)
    if node_count != dense["num_nodes"]:
        raise PersistenceError(
            f"{index_store} maps {node_count} vectors but the dense index holds "
            f"{dense['num_nodes']}; {_REBUILD}"
        )
    if faiss_side and set(nodes_dict) != {str(i) for i in range(node_count)}:
        raise PersistenceError(
            f"{index_store} maps vector positions that the FAISS index does not have (e.g. "
            f"{sorted(set(nodes_dict) - {str(i) for i in range(node_count)})[:3]}); {_REBUILD}"
        )
    sparse = load_bm25(
        BM25Retriever,
        folder / BM25_DIR,
        index.docstore,
        {},
        verify=False,
        docstore_file=storage / "docstore.json",
    )
    check_loaded_nodes(sparse.nodes, storage / "docstore.json", _REBUILD, dense["dimension"])
    dense_ids = list(nodes_dict.values())
    only_dense = sorted(set(dense_ids) - {n.node_id for n in sparse.nodes})
    if len(sparse.nodes) != node_count or len(set(dense_ids)) != node_count or only_dense:
        raise PersistenceError(
            f"{index_store} and {folder / BM25_DIR} hold different nodes ({node_count} vectors of "
            f"{len(set(dense_ids))} distinct nodes, e.g. {only_dense[:3]} only in the dense "
            f"index; {len(sparse.nodes)} nodes in BM25): the folder mixes two indexes; {_REBUILD}"
        )
    if faiss_side:
        _check_filter_metadata(store, nodes_dict, sparse.nodes, storage)
    kwargs.update(overrides)  # the saved values were checked: errors here name an override
    return cls(
        dense_retriever=None, sparse_retriever=sparse, index=index, embed_model=embed, **kwargs
    )


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values (NaN equal to NaN: both files hold the same token)."""
    if a == b:
        return True
    try:
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        return False


def _check_filter_metadata(
    store: Any, nodes_dict: dict[str, str], nodes: list[Any], storage: Path
) -> None:
    """The FAISS side filters on the metadata kept beside its index; it must be each node's
    metadata in the docstore (as ``persist`` wrote it), or a filter would pick other nodes on
    the dense side than on the BM25 side, silently."""
    from llama_index_ragtune.retrievers.filters import filterable_metadata

    by_id = {node.node_id: node for node in nodes}
    kept = store._masks.metadata
    for position in range(len(kept)):
        node = by_id[nodes_dict[str(position)]]
        if not _same_json(kept[position], filterable_metadata(node)):
            differ = sorted(
                set(kept[position]) ^ set(filterable_metadata(node))
                | {
                    k
                    for k in set(kept[position]) & set(node.metadata)
                    if not _same_json(kept[position][k], node.metadata[k])
                }
            )
            raise PersistenceError(
                f"{storage / (VECTOR_STORE_FILE + '.metadata.json')} holds other metadata for "
                f"node {node.node_id!r} (position {position}; keys {differ[:5]}) than "
                f"{storage / 'docstore.json'}: one of them was edited, so filters would pick "
                f"other nodes on the dense side than on the BM25 side; {_REBUILD}"
            )


def _damaged_json(storage: Path) -> Path | None:
    """The first JSON file of ``storage`` that is not a JSON object (to name it in an error)."""
    for file in sorted(storage.glob("*.json")):
        if file.name.startswith(VECTOR_STORE_FILE):
            continue  # the FAISS index and its metadata are checked by _load_faiss
        try:
            if not isinstance(json.loads(file.read_text(encoding="utf-8")), dict):
                return file
        except (OSError, ValueError, RecursionError):
            return file
    return None


def _load_faiss(file: Path, dense: dict[str, Any], path: Path, verify: bool) -> Any:
    """The FAISS store, checked against the manifest (size, dimension, recorded index config)."""
    from llama_index_ragtune.retrievers.faiss_store import FilterableFaissVectorStore

    store = FilterableFaissVectorStore._load(file, verify=verify)
    client = store.client
    index_type = field(dense, "index_type", (str,), path, _REBUILD, where="dense", default=None)
    if index_type is not None and index_type != type(client).__name__:
        raise PersistenceError(
            f"{path} records a {index_type} but {file.name} holds {type(client).__name__}: the "
            f"folder mixes two indexes; {_REBUILD}"
        )
    if client.ntotal != dense["num_nodes"] or client.d != dense["dimension"]:
        raise PersistenceError(
            f"{file} holds {client.ntotal} vectors of dimension {client.d} but "
            f"{path} records {dense['num_nodes']} of dimension {dense['dimension']}: the "
            f"folder mixes two indexes; {_REBUILD}"
        )
    recorded = field(
        dense, "index", (dict, type(None)), path, _REBUILD, where="dense", default=None
    )
    if recorded is None:  # folders written before index types were recorded: flat
        return store
    try:
        config = FaissIndexConfig.model_validate(recorded)
    except ValueError as exc:
        raise PersistenceError(
            f"{path} holds an invalid 'dense.index' ({exc}); {_REBUILD}"
        ) from exc
    if config.kind != index_kind(client):
        raise PersistenceError(
            f"{path} records a {config.kind!r} index but {file.name} holds {type(client).__name__}: "
            f"the folder mixes two indexes; {_REBUILD}"
        )
    store._config = config
    store.set_search_params(**config_search_params(config))
    return store


def config_search_params(config: Any) -> dict[str, int]:
    """The query-time settings a config carries for its kind (``ef_search`` / ``nprobe``)."""
    if config.kind == "hnsw":
        return {"ef_search": config.ef_search}
    if config.kind in ("ivf", "ivfpq"):
        return {"nprobe": config.nprobe}
    return {}


def _check_encoder(
    embed: BaseEmbedding, dimension: int, saved: dict[str, Any], path: Path, explicit: bool
) -> None:
    """The query encoder must produce vectors of the index's dimension; warn if it is another model."""
    got = len(embed.get_query_embedding("dimension check"))
    if got != dimension:
        raise PersistenceError(
            f"{path}: the index was built with {saved.get('class_name')}({saved.get('model_name')}) "
            f"giving {dimension}-d vectors, but the embedding model "
            f"{embed.class_name()}({getattr(embed, 'model_name', '')}) gives {got}-d vectors; pass "
            "embed_model=<the model used to build the index> to from_persist_dir"
        )
    if saved.get("model_name") and saved.get("model_name") != getattr(embed, "model_name", None):
        logger.warning(
            "%s was built with %s(%s); querying it with %s(%s)%s",
            path.parent,
            saved.get("class_name"),
            saved.get("model_name"),
            embed.class_name(),
            getattr(embed, "model_name", None),
            "" if explicit else " (pass embed_model= to choose)",
        )
