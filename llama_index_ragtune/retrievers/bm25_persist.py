"""Persisting and loading a :class:`~llama_index_ragtune.retrievers.BM25Retriever` folder.

Layout (format ``ragtune-bm25``, version 2)::

    bm25_retriever.json   format tag + version, parameters, node-id order, index kind,
                          SHA-256 and size of every other file
    bm25s/                the bm25s index: params/vocab JSON + .npy arrays
    docstore.json         the nodes (only with save_nodes=True)

* **Atomic**: the folder is written to a temporary sibling and swapped in
  (:func:`llama_index_ragtune._atomic.atomic_dir`); a crash leaves the old or the new
  folder. ``persist`` refuses a folder holding other entries (they would be lost).
* **Checked**: loading verifies every file against the manifest before parsing it and
  type-checks every manifest field; anything wrong is a ``PersistenceError`` naming the
  file or key. Version-1 folders (no hashes) still load, with a warning.
* **Tokenizer recorded**: the parameters hold the tokenizer settings (``language``,
  ``stopwords``, ``token_pattern``, ``analyzer``, ``split_marks``), so queries after
  loading are analysed as the corpus was. A manifest without ``analyzer`` was written
  before the setting existed and loads with ``analyzer="plain"`` (the tokenizer it was
  built with), one without ``split_marks`` with ``split_marks=True`` (words cut at
  combining marks, as they were indexed); one written by a newer version with an
  ``analyzer`` this version does not know is refused.
* **No pickle**: arrays are read with ``np.load(allow_pickle=False)``, the rest is JSON.

Example::

    retriever.persist("bm25_dir")
    BM25Retriever.from_persist_dir("bm25_dir", similarity_top_k=5)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.core.storage.docstore.types import BaseDocumentStore

from llama_index_ragtune._atomic import atomic_dir
from llama_index_ragtune.retrievers.checks import positive_int
from llama_index_ragtune.retrievers.persist_docstore import check_node_templates, read_docstore
from llama_index_ragtune.retrievers.persist_errors import read_only_as_persistence_error
from llama_index_ragtune.retrievers.persistence import (
    PersistenceError,
    check_json_metadata,
    check_nothing_unrecorded,
    field,
    file_digests,
    read_manifest,
    refuse_special_files,
    require_file,
    verify_files,
    write_manifest,
)

logger = logging.getLogger(__name__)

__all__ = ["load_bm25", "persist_bm25", "write_bm25_files"]

MANIFEST = "bm25_retriever.json"
FORMAT = "ragtune-bm25"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
DOCSTORE_FILE = "docstore.json"
INDEX_DIR = "bm25s"
QUERY_TIME_PARAMS = ("similarity_top_k", "filters", "callback_manager", "verbose")
_FIX = "rebuild the BM25Retriever and call persist() again"
_PARAM_KINDS: dict[str, tuple[type, ...]] = {
    "similarity_top_k": (int,),
    "k1": (float,),
    "b": (float,),
    "method": (str,),
    "metadata_mode": (str,),
    "language": (str, type(None)),
    "stopwords": (str, list, type(None)),
    "token_pattern": (str,),
    "analyzer": (str,),
    "split_marks": (bool,),
}
# parameters added after the format's first release: what a manifest without them was built
# with (before split_marks, the plain analyzer cut words at combining marks)
_PARAM_DEFAULTS: dict[str, Any] = {"analyzer": "plain", "split_marks": True}
_LAYOUT_KEYS = ("node_ids", "nodes_saved", "num_docs")


def write_bm25_files(retriever: Any, folder: Path, save_nodes: bool) -> None:
    """Write the index, nodes and manifest into ``folder`` (new or empty; no atomic swap)."""
    folder.mkdir(parents=True, exist_ok=True)
    retriever.index.bm25.save(str(folder / INDEX_DIR), allow_pickle=False, show_progress=False)
    if save_nodes:
        store = SimpleDocumentStore()
        store.add_documents(retriever.nodes, allow_update=True)
        store.persist(str(folder / DOCSTORE_FILE))
    params = retriever.params() | {
        "node_ids": [n.node_id for n in retriever.nodes],
        "nodes_saved": save_nodes,
        "num_docs": len(retriever.nodes),
    }
    write_manifest(
        folder,
        MANIFEST,
        FORMAT,
        FORMAT_VERSION,
        params,
        files=file_digests(folder, exclude={MANIFEST}),
        index={"kind": "bm25s", "path": INDEX_DIR},
    )


def persist_bm25(retriever: Any, folder: Path, save_nodes: bool = True) -> None:
    """Replace ``folder`` atomically with the persisted ``retriever``."""
    if save_nodes:
        check_json_metadata(retriever.nodes, "BM25Retriever.persist")
    owned = {MANIFEST, INDEX_DIR, DOCSTORE_FILE}
    check_nothing_unrecorded(folder, MANIFEST, "BM25Retriever.persist")
    with (
        read_only_as_persistence_error(folder, "BM25Retriever.persist"),
        atomic_dir(folder, owned_entries=owned, what="BM25Retriever.persist") as tmp,
    ):
        write_bm25_files(retriever, tmp, save_nodes)


def _default(key: str) -> dict[str, Any]:
    return {"default": _PARAM_DEFAULTS[key]} if key in _PARAM_DEFAULTS else {}


def _checked_params(manifest: dict[str, Any], path: Path) -> tuple[dict[str, Any], list[str], bool]:
    params = manifest["params"]
    kwargs = {
        key: field(params, key, kinds, path, _FIX, **_default(key))
        for key, kinds in _PARAM_KINDS.items()
    }
    if isinstance(kwargs["stopwords"], list) and not all(
        isinstance(w, str) for w in kwargs["stopwords"]
    ):
        raise PersistenceError(f"{path} is corrupt: 'params.stopwords' must list strings; {_FIX}")
    unknown = sorted(set(params) - set(_PARAM_KINDS) - set(_LAYOUT_KEYS))
    if unknown:
        raise PersistenceError(
            f"{path} holds unknown parameter(s) {unknown}: it was edited, or written by another "
            f"version of llama-index-ragtune; {_FIX}"
        )
    node_ids = field(params, "node_ids", (list,), path, _FIX)
    num_docs = field(params, "num_docs", (int,), path, _FIX)
    if not all(isinstance(i, str) for i in node_ids) or len(node_ids) != num_docs:
        raise PersistenceError(
            f"{path} is corrupt: 'params.node_ids' must list {num_docs} node ids (strings); {_FIX}"
        )
    if len(set(node_ids)) != len(node_ids):
        raise PersistenceError(f"{path} is corrupt: 'params.node_ids' repeats ids; {_FIX}")
    nodes_saved = field(params, "nodes_saved", (bool,), path, _FIX)
    return kwargs, node_ids, nodes_saved


def _load_docstore(folder: Path) -> BaseDocumentStore:
    path = require_file(folder / DOCSTORE_FILE, "the nodes", _FIX)
    return read_docstore(path, _FIX)


def _get_nodes(
    docstore: BaseDocumentStore, node_ids: list[str], path: Path, source: Path | None
) -> list[Any]:
    """The nodes of ``node_ids`` in order; a damaged or foreign docstore is a PersistenceError."""
    where = "the docstore" if source is None else str(source)
    try:
        missing = [i for i in node_ids if not docstore.document_exists(i)]
        if missing:
            raise PersistenceError(
                f"{len(missing)} node ids of {path} are not in {where} (e.g. {missing[:3]}); "
                "the docstore does not belong to this index — pass the one saved with it, or rebuild"
            )
        nodes = docstore.get_nodes(node_ids)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        if isinstance(exc, PersistenceError):
            raise
        raise PersistenceError(
            f"{where} holds damaged node data ({type(exc).__name__}: {str(exc)[:200]}); {_FIX}"
        ) from exc
    wrong = [(i, n.node_id) for i, n in zip(node_ids, nodes, strict=False) if n.node_id != i]
    if wrong:
        raise PersistenceError(
            f"{where} stores node {wrong[0][1]!r} under the id {wrong[0][0]!r} ({len(wrong)} such "
            f"nodes): it was edited or mixed with another index; {_FIX}"
        )
    check_node_templates(nodes, where, _FIX)
    return nodes


def _check_bm25s(bm25: Any, index_dir: Path) -> None:
    """The bm25s arrays and vocabulary must describe one index (a file from another index, or
    an edited one, would silently score the wrong documents)."""
    scores, vocab = bm25.scores, bm25.vocab_dict
    data, indices, indptr = (np.asarray(scores.get(k)) for k in ("data", "indices", "indptr"))
    num_docs = int(scores["num_docs"])
    terms = len(vocab) - ("" in vocab)  # bm25s adds "" last, without a column
    nonoccurrence = getattr(bm25, "nonoccurrence_array", None)
    problem = None
    if data.dtype.kind != "f" or indices.dtype.kind not in "iu" or indptr.dtype.kind not in "iu":
        problem = (
            f"score arrays of the wrong type (data {data.dtype}, indices {indices.dtype}, indptr "
            f"{indptr.dtype}; bm25s writes floats, integers, integers)"
        )
    elif nonoccurrence is not None and (
        np.asarray(nonoccurrence).dtype.kind != "f"
        or np.asarray(nonoccurrence).ndim != 1
        or not np.isfinite(nonoccurrence).all()
    ):
        problem = "a non-occurrence array that is not one-dimensional finite floats"
    elif indptr.ndim != 1 or data.ndim != 1 or indices.ndim != 1 or len(indptr) < 1:
        problem = "the score arrays are not one-dimensional"
    elif len(data) != len(indices) or indptr[0] != 0 or indptr[-1] != len(data):
        problem = "indptr does not span data/indices"
    elif np.any(np.diff(indptr) < 0):
        problem = "indptr decreases"
    elif len(indices) and (indices.min() < 0 or indices.max() >= num_docs):
        problem = f"document numbers outside 0..{num_docs - 1}"
    elif not np.isfinite(data).all():
        problem = "scores that are NaN or infinite"
    elif terms != len(indptr) - 1 or sorted(
        v if isinstance(v, int) and not isinstance(v, bool) else -1 for v in vocab.values()
    ) != list(range(len(vocab))):
        problem = f"a vocabulary of {len(vocab)} terms for {len(indptr) - 1} score columns"
    if problem:
        raise PersistenceError(
            f"{index_dir} holds a damaged bm25s index ({problem}): a file was edited or comes "
            f"from another index; {_FIX}"
        )


def _params_problem(file: Path, problems: list[str]) -> PersistenceError:
    return PersistenceError(
        f"{file} is damaged or comes from another index ({'; '.join(problems[:3])}); {_FIX}"
    )


def _check_bm25s_params(bm25: Any, index_dir: Path) -> None:
    """``bm25s/params.index.json`` must hold what bm25s wrote: a whole ``num_docs`` and numpy
    float / integer type names (others failed at the first query, or scored into objects)."""
    num_docs = bm25.scores.get("num_docs") if isinstance(bm25.scores, dict) else None
    problems = []
    if not isinstance(num_docs, int) or isinstance(num_docs, bool) or num_docs < 0:
        problems.append(f"'num_docs' must be a whole number >= 0, got {num_docs!r:.60}")
    for key, kind in (("dtype", "f"), ("int_dtype", "iu")):
        value = getattr(bm25, key, None)
        try:
            ok = isinstance(value, str) and np.dtype(value).kind in kind
        except TypeError:
            ok = False
        if not ok:
            what = "a float" if kind == "f" else "an integer"
            problems.append(f"{key!r} must name {what} type (e.g. 'float32'), got {value!r:.60}")
    if problems:
        raise _params_problem(index_dir / "params.index.json", problems)


def _check_bm25s_settings(bm25: Any, kwargs: dict[str, Any], index_dir: Path) -> None:
    """bm25s keeps its own ``k1`` / ``b`` / ``method``: they must be the manifest's (an
    edited copy scored with other settings than the manifest names)."""
    problems = [
        f"{key!r} is {getattr(bm25, key, None)!r:.60} but the manifest says {kwargs[key]!r}"
        for key in ("k1", "b", "method")
        if getattr(bm25, key, None) != kwargs[key]
    ]
    if problems:
        raise _params_problem(index_dir / "params.index.json", problems)


_SAMPLED_NODES = 16


def _check_node_terms(retriever: Any, path: Path, docstore_file: Path | None) -> None:
    """Up to 16 nodes, spread over the index, must be what their BM25 documents were built
    from: most terms the index holds for document ``i`` come from node ``i``'s text.

    ``params.node_ids`` (the order of the documents) or a node's text edited, or the
    docstore of another index under the same ids, would otherwise score one node's words
    and return another node, silently. Checking a sample costs one tokenisation of 16
    nodes and one pass over the index's entries.
    """
    nodes = retriever.nodes
    if not nodes:
        return
    scores = retriever.index.bm25.scores
    indices, indptr = np.asarray(scores["indices"]), np.asarray(scores["indptr"])
    sample = np.unique(np.linspace(0, len(nodes) - 1, min(len(nodes), _SAMPLED_NODES)).astype(int))
    terms_of_entry = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    hit = np.isin(indices, sample)
    indexed: dict[int, set[int]] = {int(i): set() for i in sample}
    for doc, term in zip(indices[hit].tolist(), terms_of_entry[hit].tolist(), strict=True):
        indexed[doc].add(term)
    vocab = retriever.index.vocab
    for position in indexed:
        node = nodes[position]
        text = node.get_content(metadata_mode=retriever.metadata_mode)
        own = {vocab[t] for t in retriever.tokenizer(text) if t in vocab}
        foreign = indexed[position] - own
        # more than half: another node's words (a tokenizer update changes only a few stems)
        if 2 * len(foreign) > len(indexed[position]):
            where = "the docstore" if docstore_file is None else str(docstore_file)
            raise PersistenceError(
                f"document {position} of {path.parent / INDEX_DIR} holds "
                f"{len(foreign)} term(s) that node {node.node_id!r} of {where} does not contain: "
                f"'params.node_ids' of {path} or the node's text was edited, or the docstore "
                f"comes from another index; {_FIX}"
            )


def load_bm25(
    cls: type,
    folder: Path,
    docstore: BaseDocumentStore | None,
    overrides: dict[str, Any],
    verify: bool = True,
    docstore_file: Path | None = None,
) -> Any:
    """Load a BM25 folder; ``verify=False`` when the caller already checked every file's hash.

    ``docstore_file``: where a given ``docstore`` was read from (named in errors).
    """
    import bm25s

    if docstore is not None and not isinstance(docstore, BaseDocumentStore):
        hint = (
            " (a path: load it first, SimpleDocumentStore.from_persist_path(path))"
            if isinstance(docstore, (str, Path))
            else ""
        )
        raise TypeError(
            "BM25Retriever.from_persist_dir: docstore must be a LlamaIndex document store "
            f"(e.g. index.docstore), got {type(docstore).__name__} {docstore!r:.60}{hint}"
        )
    fixed = sorted(set(overrides) - set(QUERY_TIME_PARAMS))
    if fixed:
        raise ValueError(
            f"{fixed} are fixed by the persisted index; only {sorted(QUERY_TIME_PARAMS)} can be "
            "overridden when loading (rebuild the retriever to change the others)"
        )
    manifest = read_manifest(folder, MANIFEST, FORMAT, READABLE_VERSIONS, _FIX)
    path = folder / MANIFEST
    if manifest["format_version"] >= 2:
        if verify:
            verify_files(folder, manifest, MANIFEST, _FIX)
    elif verify:
        logger.warning(
            "%s was written by an older llama-index-ragtune without content hashes; persist it "
            "again to have its files checked when loading",
            folder,
        )
        refuse_special_files(folder, path, _FIX)
    kwargs, node_ids, nodes_saved = _checked_params(manifest, path)
    if docstore is None:
        if not nodes_saved:
            raise PersistenceError(
                f"{folder} was persisted without nodes (save_nodes=False); pass the docstore holding them: "
                "BM25Retriever.from_persist_dir(path, docstore=...)"
            )
        docstore = _load_docstore(folder)
        docstore_file = folder / DOCSTORE_FILE
    nodes = _get_nodes(docstore, node_ids, path, docstore_file)
    index_dir = folder / INDEX_DIR
    require_file(index_dir / "params.index.json", "the bm25s index", _FIX)
    try:
        bm25 = bm25s.BM25.load(
            str(index_dir), load_corpus=False, mmap=False, allow_pickle=False, show_progress=False
        )
    except Exception as exc:  # bm25s raises numpy/json errors on damaged files
        raise PersistenceError(
            f"{index_dir} holds a damaged bm25s index ({type(exc).__name__}: {exc}); {_FIX}"
        ) from exc
    _check_bm25s_params(bm25, index_dir)
    if int(bm25.scores.get("num_docs", -1)) != len(node_ids):
        raise PersistenceError(
            f"{index_dir} indexes {bm25.scores.get('num_docs')} documents but {path} lists "
            f"{len(node_ids)} nodes: the folder mixes two indexes; {_FIX}"
        )
    _check_bm25s(bm25, index_dir)
    extra = {k: overrides[k] for k in ("callback_manager", "verbose") if k in overrides}
    try:
        retriever = cls(nodes=nodes, _bm25=bm25, **kwargs, **extra)
    except (ValueError, TypeError) as exc:
        raise PersistenceError(f"{path} holds invalid parameters ({exc}); {_FIX}") from exc
    _check_bm25s_settings(bm25, kwargs, index_dir)
    _check_node_terms(retriever, path, docstore_file)
    if "similarity_top_k" in overrides:
        retriever.similarity_top_k = positive_int(overrides["similarity_top_k"], "similarity_top_k")
    if "filters" in overrides:
        retriever.filters = overrides["filters"]
    return retriever
