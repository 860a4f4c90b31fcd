"""Persisting and loading a HybridRetriever folder, with checks that name what is wrong.

Layout of a persisted folder::

    hybrid_retriever.json     format tag + version, fusion parameters, filters, encoder info
    storage/                  LlamaIndex StorageContext: docstore.json, index_store.json,
                              default__vector_store.json (FAISS) + .metadata.json (filters)
    bm25/                     bm25_retriever.json + bm25s/ (the BM25 index; nodes from storage/)

Example::

    retriever.persist("hybrid_index")
    HybridRetriever.from_persist_dir("hybrid_index", similarity_top_k=20)
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.vector_stores.types import MetadataFilters

from llama_index_ragtune.retrievers.bm25 import BM25Retriever
from llama_index_ragtune.retrievers.persistence import (
    PersistenceError,
    read_manifest,
    require_file,
    write_manifest,
)

logger = logging.getLogger(__name__)

MANIFEST = "hybrid_retriever.json"
FORMAT = "ragtune-hybrid"
FORMAT_VERSION = 1
STORAGE_DIR = "storage"
BM25_DIR = "bm25"
VECTOR_STORE_FILE = "default__vector_store.json"
_REBUILD = "rebuild it with HybridRetriever.from_defaults(...) and call persist() again"

__all__ = ["load_hybrid", "persist_hybrid"]


def persist_hybrid(retriever: Any, folder: Path) -> None:
    from llama_index_ragtune.retrievers.faiss_store import FilterableFaissVectorStore

    if retriever.index is None or not retriever._dense_built_in:
        raise NotImplementedError(
            "HybridRetriever.persist saves the built-in FAISS dense side only; this retriever has a custom "
            f"dense retriever ({type(retriever.dense_retriever).__name__}): persist that yourself"
        )
    if not isinstance(retriever.index.vector_store, FilterableFaissVectorStore):
        raise NotImplementedError(
            f"HybridRetriever.persist saves FAISS indexes; this index uses {type(retriever.index.vector_store).__name__} "
            "(persist it through its own storage context)"
        )
    if not isinstance(retriever.sparse_retriever, BM25Retriever):
        raise NotImplementedError(
            "HybridRetriever.persist saves the built-in BM25Retriever only; the lexical side is "
            f"{type(retriever.sparse_retriever).__name__}: persist that yourself"
        )
    folder.mkdir(parents=True, exist_ok=True)
    storage = folder / STORAGE_DIR
    if storage.exists():
        shutil.rmtree(storage)
    retriever.index.storage_context.persist(persist_dir=str(storage))
    retriever.sparse_retriever.persist(folder / BM25_DIR, save_nodes=False)
    embed = retriever._embed_model
    params = retriever.params() | {
        "filters": None if retriever.filters is None else retriever.filters.model_dump(mode="json"),
        "index_id": retriever.index.index_id,
        "num_nodes": retriever.index.vector_store.client.ntotal,
        "dimension": retriever.index.vector_store.client.d,
        "embed_model": None
        if embed is None
        else {"class_name": embed.class_name(), "model_name": getattr(embed, "model_name", None)},
    }
    write_manifest(folder, MANIFEST, FORMAT, FORMAT_VERSION, params)


def load_hybrid(
    cls: type, folder: Path, embed_model: BaseEmbedding | None, overrides: dict[str, Any]
) -> Any:
    from llama_index.core import StorageContext, load_index_from_storage

    from llama_index_ragtune.embeddings import resolve_embed_model
    from llama_index_ragtune.retrievers.faiss_store import FilterableFaissVectorStore

    params = dict(read_manifest(folder, MANIFEST, FORMAT, FORMAT_VERSION, _REBUILD)["params"])
    storage = folder / STORAGE_DIR
    for name, what in (
        ("docstore.json", "the nodes"),
        ("index_store.json", "the index structure"),
        (VECTOR_STORE_FILE, "the FAISS index"),
    ):
        require_file(storage / name, what, _REBUILD)
    store = FilterableFaissVectorStore.from_persist_path(str(storage / VECTOR_STORE_FILE))
    if store.client.ntotal != params.get("num_nodes") or store.client.d != params.get("dimension"):
        raise PersistenceError(
            f"{storage / VECTOR_STORE_FILE} holds {store.client.ntotal} vectors of dimension {store.client.d} but "
            f"{folder / MANIFEST} records {params.get('num_nodes')} of dimension {params.get('dimension')}: the "
            f"folder mixes two indexes; {_REBUILD}"
        )
    embed = resolve_embed_model(embed_model)
    _check_encoder(embed, params, folder, explicit=embed_model is not None)
    try:
        context = StorageContext.from_defaults(persist_dir=str(storage), vector_store=store)
        index = load_index_from_storage(context, index_id=params.get("index_id"), embed_model=embed)
    except (ValueError, KeyError, json.JSONDecodeError) as exc:
        raise PersistenceError(
            f"{storage} could not be loaded ({type(exc).__name__}: {exc}); {_REBUILD}"
        ) from exc
    node_count = len(index.index_struct.nodes_dict)
    if node_count != store.client.ntotal:
        raise PersistenceError(
            f"{storage / 'index_store.json'} maps {node_count} vectors but the FAISS index holds "
            f"{store.client.ntotal}; {_REBUILD}"
        )
    sparse = BM25Retriever.from_persist_dir(folder / BM25_DIR, docstore=index.docstore)
    if len(sparse.nodes) != node_count:
        raise PersistenceError(
            f"{folder / BM25_DIR} indexes {len(sparse.nodes)} nodes but the dense index {node_count}; {_REBUILD}"
        )
    filters = params.pop("filters", None)
    kwargs = {
        k: params[k]
        for k in (
            "similarity_top_k",
            "fusion_mode",
            "alpha",
            "rrf_k",
            "dense_top_k",
            "sparse_top_k",
        )
    }
    kwargs["filters"] = None if filters is None else MetadataFilters.model_validate(filters)
    unknown = sorted(set(overrides) - set(kwargs) - {"callback_manager", "verbose"})
    if unknown:
        raise TypeError(f"unknown override(s) {unknown}; allowed: {sorted(kwargs)}")
    kwargs.update(overrides)
    return cls(
        dense_retriever=None, sparse_retriever=sparse, index=index, embed_model=embed, **kwargs
    )


def _check_encoder(
    embed: BaseEmbedding, params: dict[str, Any], folder: Path, explicit: bool
) -> None:
    """The query encoder must produce vectors of the index's dimension; warn if it is another model."""
    dimension = len(embed.get_query_embedding("dimension check"))
    if dimension != params.get("dimension"):
        saved = params.get("embed_model") or {}
        raise PersistenceError(
            f"{folder / MANIFEST}: the index was built with {saved.get('class_name')}({saved.get('model_name')}) "
            f"giving {params.get('dimension')}-d vectors, but the embedding model "
            f"{embed.class_name()}({getattr(embed, 'model_name', '')}) gives {dimension}-d vectors; pass "
            "embed_model=<the model used to build the index> to from_persist_dir"
        )
    saved = params.get("embed_model") or {}
    if saved.get("model_name") and saved.get("model_name") != getattr(embed, "model_name", None):
        logger.warning(
            "%s was built with %s(%s); querying it with %s(%s)%s",
            folder,
            saved.get("class_name"),
            saved.get("model_name"),
            embed.class_name(),
            getattr(embed, "model_name", None),
            "" if explicit else " (pass embed_model= to choose)",
        )
