"""Adding, replacing and deleting nodes of a HybridRetriever, both sides in step.

:meth:`HybridRetriever.insert_nodes`, :meth:`~HybridRetriever.update_nodes` and
:meth:`~HybridRetriever.delete_nodes` change the dense index, its docstore and the BM25
side together, so retrieval, metadata filters and ``persist`` / ``from_persist_dir`` see
the same nodes on both sides. Supported for the built-in sides: FAISS (flat, HNSW, IVF;
not IVF-PQ, whose codes are lossy) and Qdrant or Milvus collections.

* **Checked first, then changed**: node types, ids given twice, ids already indexed
  (insert) or unknown (update, delete), blank text, Qdrant's UUID ids, the retriever's
  filters against the new node set (a key no node would hold), and the new nodes'
  embeddings are all done before either side changes; a refused call changes nothing.
* **Cost**: new nodes are embedded (only they); the BM25 side is rebuilt from the
  resulting node list (tokenising the whole corpus again, O(corpus)); a FAISS delete
  copies the kept vectors into an emptied index (O(vectors kept), an HNSW graph is rebuilt),
  a database delete is the database's own.
* **Sides out of step**: a change made behind the retriever's back (``retriever.index.
  insert_nodes(...)``, a collection edited directly) or a copy made by ``with_filters``
  before a change no longer matches; :func:`check_in_step` finds that at query time
  (counts, a returned node missing from the other side or the docstore, the change
  counter) and raises naming what to do, instead of returning one side's results.

* **While queries run**: a change and the queries of every retriever sharing the index
  take one :class:`SidesLock`. Checks, embedding and the new BM25 side are made first
  while queries go on; then the swap waits for the queries already running, and queries
  that start meanwhile wait for it (the swap itself embeds and tokenises nothing).
  Queries see the sides before or after a change, never between; changes run one at a time.

Example::

    retriever.insert_nodes([TextNode(id_="faq-9", text="Gift cards never expire.")])
    retriever.update_nodes([TextNode(id_="faq-9", text="Gift cards expire after 5 years.")])
    retriever.delete_nodes(["faq-9"])
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from llama_index.core.schema import BaseNode

from llama_index_ragtune.retrievers.bm25 import BM25Retriever
from llama_index_ragtune.retrievers.checks import check_nodes, split_blank_nodes
from llama_index_ragtune.retrievers.node_embedding import embed_nodes, index_embed_model

__all__ = [
    "SidesLock",
    "change_nodes",
    "check_in_step",
    "delete",
    "insert",
    "node_ids_argument",
    "sides_state",
    "until_done",
    "update",
]

_VERSION_ATTR = "_ragtune_nodes_version"
_LOCK_ATTR = "_ragtune_sides_lock"
_LOCK_MAKING = threading.Lock()


class SidesLock:
    """Many readers (queries, ``persist``) or one writer (the swap of a change) at a time.

    A waiting writer goes first (queries that start while a swap waits wait for it, so
    a steady stream of queries cannot starve a change); a swap is short. Coroutines take
    it with ``areading()``, which waits by yielding the event loop (never blocking it, and
    holding no worker thread that the queries it waits for may need), so a query holding
    it across ``await`` is never stuck behind another of the same loop.
    A thread may read again while it reads (nested retrievers), and while coroutines of its
    event loop read (a synchronous query inside a coroutine never waits for a swap that
    waits for those coroutines); ``changing()`` lets one change at a time check, embed and
    swap. A swap asked for on an event loop's thread while that loop's coroutines read
    could never start: it raises ``RuntimeError`` saying to run the change in a worker
    thread (``await asyncio.to_thread(retriever.insert_nodes, nodes)``) instead of hanging.

    Example::

        lock = SidesLock()
        with lock.reading():
            ...                      # a query
        with lock.changing(), lock.writing():
            ...                      # the swap of a change
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._waiting = 0  # writers waiting
        self._change = threading.Lock()
        self._depth = threading.local()
        self._async_reads: Counter[int] = Counter()  # thread id -> reads its coroutines hold

    def _try_read(self) -> bool:
        with self._cond:
            if self._writing or self._waiting:
                return False
            self._readers += 1
            return True

    def _acquire_read(self) -> None:
        with self._cond:
            # this thread's coroutines already read: a waiting swap waits for them, and
            # they run only when this thread returns, so waiting for it would never end
            if not self._async_reads[threading.get_ident()]:
                while self._writing or self._waiting:
                    self._cond.wait()
            self._readers += 1

    def _release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        depth = getattr(self._depth, "n", 0)
        if depth == 0:  # a nested read in the same thread already holds it
            self._acquire_read()
        self._depth.n = depth + 1
        try:
            yield
        finally:
            self._depth.n = depth
            if depth == 0:
                self._release_read()

    @contextlib.asynccontextmanager
    async def areading(self) -> AsyncIterator[None]:
        delay = 0.0005
        while not self._try_read():  # a swap runs or waits: yield the loop, look again
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.01)
        thread = threading.get_ident()
        with self._cond:
            self._async_reads[thread] += 1
        try:
            yield
        finally:
            with self._cond:
                self._async_reads[thread] -= 1
                if not self._async_reads[thread]:
                    del self._async_reads[thread]
            self._release_read()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            held = self._async_reads[threading.get_ident()]
            if held or getattr(self._depth, "n", 0):
                running = (
                    f"{held} aretrieve call(s) of this thread's event loop"
                    if held
                    else "a query or persist of this same thread"
                )
                raise RuntimeError(
                    f"a change of nodes was asked for while {running} still read the same "
                    "index: the change would wait for them, and they for it, forever. Nothing "
                    "was changed; run the change in a worker thread, e.g. "
                    "`await asyncio.to_thread(retriever.insert_nodes, nodes)`"
                )
            self._waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        with self._change:
            yield


def sides_lock(index: Any) -> SidesLock:
    """The lock of ``index``'s sides, shared by every retriever over it (``with_filters``
    copies included); made on first use.

    Example::

        with sides_lock(retriever.index).reading():
            nodes = retriever.retrieve("apple return policy?")
    """
    lock = getattr(index, _LOCK_ATTR, None)
    if lock is None:
        with _LOCK_MAKING:
            lock = getattr(index, _LOCK_ATTR, None)
            if lock is None:
                lock = SidesLock()
                setattr(index, _LOCK_ATTR, lock)
    return lock


def reading(retriever: Any) -> contextlib.AbstractContextManager[None]:
    """Hold ``retriever``'s sides still for a query or a persist (a no-op for custom sides)."""
    index = retriever.index if retriever.has_built_in_dense else None
    return contextlib.nullcontext() if index is None else sides_lock(index).reading()


def areading(retriever: Any) -> contextlib.AbstractAsyncContextManager[None]:
    """:func:`reading` for a coroutine (waits off the event loop)."""
    index = retriever.index if retriever.has_built_in_dense else None
    return contextlib.nullcontext() if index is None else sides_lock(index).areading()


async def until_done(work: Any) -> Any:
    """Await ``work`` (an asyncio future, e.g. of a worker thread) to its end, even when the
    awaiting coroutine is cancelled meanwhile: a thread cannot be stopped, and a query
    cancelled while it searched must keep the sides still (its :func:`areading`) until the
    search has really finished. The cancellation is raised then; a second one is waited
    out alike.

    Example::

        loop = asyncio.get_running_loop()
        nodes = await until_done(loop.run_in_executor(None, side.retrieve, query_bundle))
    """
    future = asyncio.ensure_future(work)
    cancelled: BaseException | None = None
    while True:
        try:
            result = await asyncio.shield(future)
        except asyncio.CancelledError as exc:
            if not future.done():  # the caller was cancelled: the work goes on, so wait
                cancelled = exc
                continue
            raise (cancelled or exc) from None
        except BaseException:
            if cancelled is not None:
                raise cancelled from None
            raise
        if cancelled is not None:
            raise cancelled
        return result


_REBUILD = (
    "change nodes only through HybridRetriever.insert_nodes / update_nodes / delete_nodes, "
    "or rebuild it with HybridRetriever.from_defaults(index=...)"
)


def nodes_version(index: Any) -> int:
    """How many times the hybrid API changed ``index``'s nodes (0 for a new index)."""
    return getattr(index, _VERSION_ATTR, 0)


def node_ids_argument(node_ids: Any, where: str) -> list[str]:
    """``node_ids`` as a list of distinct strings; a bare string is refused, not split into letters.

    Example::

        node_ids_argument(["a", "b"], "delete_nodes")   # ['a', 'b']
    """
    if isinstance(node_ids, (str, bytes)) or not isinstance(node_ids, Iterable):
        raise TypeError(
            f"{where} needs a list of node ids (strings), got {type(node_ids).__name__}"
            + (f"; wrap a single id in a list: [{node_ids!r}]" if isinstance(node_ids, str) else "")
        )
    ids = list(node_ids)
    bad = [i for i in ids if not isinstance(i, str)]
    if bad:
        raise TypeError(f"{where} needs node ids as strings; got {bad[0]!r}")
    twice = sorted(i for i, n in Counter(ids).items() if n > 1)  # linear, not ids.count
    if twice:
        raise ValueError(f"{where}: node id(s) {twice[:5]} are listed more than once")
    return ids


def _check_changeable(retriever: Any, where: str) -> None:
    from llama_index_ragtune.retrievers.external_store import store_kind

    if not retriever.has_built_in_dense or retriever.index is None:
        raise NotImplementedError(
            f"HybridRetriever.{where} changes the built-in dense side; this retriever has a custom "
            f"dense retriever ({type(retriever.dense_retriever).__name__}): change its index "
            "yourself and build the hybrid again"
        )
    if not isinstance(retriever.sparse_retriever, BM25Retriever):
        raise NotImplementedError(
            f"HybridRetriever.{where} changes the built-in BM25 side; the lexical side is "
            f"{type(retriever.sparse_retriever).__name__}: change it yourself"
        )
    if store_kind(retriever.index.vector_store) is None:
        raise NotImplementedError(
            f"HybridRetriever.{where} changes FAISS, Qdrant or Milvus dense sides; this index "
            f"uses {type(retriever.index.vector_store).__name__}"
        )


def change_nodes(
    retriever: Any, remove_ids: Sequence[str], add: Sequence[BaseNode], where: str
) -> None:
    """Remove ``remove_ids`` and add ``add`` on both sides (module docstring); all checks first.

    Example::

        change_nodes(retriever, ["old-id"], [new_node], "update_nodes")
    """
    from llama_index_ragtune.retrievers.external_store import (
        check_new_store_nodes,
        forget_index,
        store_kind,
    )
    from llama_index_ragtune.retrievers.store_filters import forget_filters

    index, sparse = retriever.index, retriever.sparse_retriever
    gone = set(remove_ids)
    kept = [n for n in sparse.nodes if n.node_id not in gone]
    if not kept and not add:
        raise ValueError(
            f"HybridRetriever.{where} would leave no node; a hybrid retriever needs at least "
            "one: build a new one over the nodes you want"
        )
    kind = store_kind(index.vector_store)
    embedded: list[BaseNode] = []
    if add:
        _, blank = split_blank_nodes(add)
        if blank:
            raise ValueError(
                f"HybridRetriever.{where}: node(s) {blank[:5]} have empty or whitespace-only text "
                "(or only invisible characters: nothing to embed or match); give them text, or delete_nodes them instead"
            )
        check_new_store_nodes(index.vector_store, add, f"HybridRetriever.{where}")
        embedded = embed_nodes(add, index_embed_model(index), f"HybridRetriever.{where}")
    new_sparse = BM25Retriever(
        [*kept, *add], callback_manager=sparse.callback_manager, **sparse.params()
    )
    try:
        new_sparse.check_filters(retriever.filters)
    except ValueError as exc:
        raise ValueError(
            f"HybridRetriever.{where} refused, nothing changed: after it the retriever's filters "
            f"would not apply ({exc}); set retriever.filters = None (or other filters) first"
        ) from exc
    with sides_lock(index).writing():  # the queries already running finish first
        if remove_ids:
            _remove_dense(index, list(remove_ids), kind)
        if embedded:
            if kind != "faiss":  # the hybrid keeps every node in the docstore, as when built
                index._store_nodes_override = True
            index.insert_nodes(embedded)
        forget_index(index)  # what the database checks remembered of the old node set
        forget_filters(index)
        setattr(index, _VERSION_ATTR, nodes_version(index) + 1)
        retriever._sync_sides(new_sparse)


def _remove_dense(index: Any, node_ids: list[str], kind: str | None) -> None:
    gone = set(node_ids)
    if kind == "faiss":
        nodes_dict = index.index_struct.nodes_dict
        order = sorted(nodes_dict, key=int)
        keep = [position for position in order if nodes_dict[position] not in gone]
        index.vector_store.keep_positions([int(p) for p in keep])
        index.index_struct.nodes_dict = {str(new): nodes_dict[old] for new, old in enumerate(keep)}
        for node_id in node_ids:
            index.docstore.delete_document(node_id, raise_error=False)
        index.storage_context.index_store.add_index_struct(index.index_struct)
    else:
        index._store_nodes_override = True
        index.delete_nodes(node_ids, delete_from_docstore=True)


class SidesState(NamedTuple):
    """What a hybrid retriever last saw of its sides (see :func:`sides_state`)."""

    version: int
    dense_count: int
    sparse_ids: frozenset[str]


def sides_state(retriever: Any) -> SidesState | None:
    """The state :func:`check_in_step` compares against; ``None`` when it cannot be tracked
    (custom sides, or built-in sides that held different nodes from the start). O(nodes).

    Example::

        sides_state(HybridRetriever.from_defaults(nodes=nodes)).dense_count   # len(nodes)
    """
    index, sparse = retriever.index, retriever.sparse_retriever
    if not retriever.has_built_in_dense or index is None or not isinstance(sparse, BM25Retriever):
        return None
    nodes_dict = getattr(index.index_struct, "nodes_dict", None)
    if not isinstance(nodes_dict, dict):
        return None
    sparse_ids = frozenset(n.node_id for n in sparse.nodes)
    if len(nodes_dict) != len(sparse_ids) or set(nodes_dict.values()) != sparse_ids:
        return None
    return SidesState(nodes_version(index), len(nodes_dict), sparse_ids)


def check_in_step(retriever: Any, dense_ids: Sequence[str], sparse_ids: Sequence[str]) -> None:
    """Raise ``RuntimeError`` when the built-in sides no longer hold the same nodes.

    ``dense_ids``: the dense side's hits; ``sparse_ids``: returned hits only BM25 found.
    Costs O(ids given): the change counter, the dense node count, dense hits known to BM25,
    BM25 hits in the docstore. Retrievers whose sides differed from the start are not checked (as before).

    Example::

        check_in_step(retriever, ["e1"], ["g2"])
    """
    state = retriever._sides_state
    if state is None:
        return
    index = retriever.index
    if nodes_version(index) != state.version:
        raise RuntimeError(
            "the nodes of this HybridRetriever's index were changed through another "
            "HybridRetriever sharing it (one made by with_filters, or the one it was made "
            "from), so its BM25 side is out of date: call with_filters again on the changed one"
        )
    dense_count = len(index.index_struct.nodes_dict)
    missing_sparse = [i for i in dense_ids if i not in state.sparse_ids]
    missing_docstore = [i for i in sparse_ids if not index.docstore.document_exists(i)]
    if dense_count != state.dense_count or missing_sparse or missing_docstore:
        raise RuntimeError(
            f"the dense index of this HybridRetriever now holds {dense_count} nodes and its BM25 "
            f"side {len(retriever.sparse_retriever.nodes)}"
            + (f"; node(s) {missing_sparse[:3]} are not in BM25" if missing_sparse else "")
            + (
                f"; node(s) {missing_docstore[:3]} are not in the docstore"
                if missing_docstore
                else ""
            )
            + f": the index was changed directly (e.g. retriever.index.insert_nodes); {_REBUILD}"
        )


def insert(retriever: Any, nodes: Any) -> None:
    """:meth:`HybridRetriever.insert_nodes`: refuses ids already indexed."""
    nodes = check_nodes(nodes, "HybridRetriever.insert_nodes")
    with _one_change(retriever, "insert_nodes"):
        known = retriever._sides_state.sparse_ids
        already = [n.node_id for n in nodes if n.node_id in known]
        if already:
            raise ValueError(
                f"HybridRetriever.insert_nodes: node id(s) {already[:5]} are already indexed; "
                "use update_nodes to replace them, or give the new nodes other ids"
            )
        if nodes:
            change_nodes(retriever, [], nodes, "insert_nodes")


def update(retriever: Any, nodes: Any) -> None:
    """:meth:`HybridRetriever.update_nodes`: every id must be indexed."""
    nodes = check_nodes(nodes, "HybridRetriever.update_nodes")
    with _one_change(retriever, "update_nodes"):
        _require_known(retriever, [n.node_id for n in nodes], "update_nodes", "insert_nodes")
        if nodes:
            change_nodes(retriever, [n.node_id for n in nodes], nodes, "update_nodes")


def delete(retriever: Any, node_ids: Any) -> None:
    """:meth:`HybridRetriever.delete_nodes`: every id must be indexed."""
    ids = node_ids_argument(node_ids, "HybridRetriever.delete_nodes")
    with _one_change(retriever, "delete_nodes"):
        _require_known(retriever, ids, "delete_nodes", None)
        if ids:
            change_nodes(retriever, ids, [], "delete_nodes")


@contextlib.contextmanager
def _one_change(retriever: Any, where: str) -> Iterator[None]:
    """One change at a time over an index: checked on the state the change will replace."""
    _check_changeable(retriever, where)
    with sides_lock(retriever.index).changing():
        _require_state(retriever, where)
        yield


def _require_state(retriever: Any, where: str) -> None:
    _check_changeable(retriever, where)
    if retriever._sides_state is None:
        raise ValueError(
            f"HybridRetriever.{where}: the dense index and the BM25 side of this retriever held "
            "different nodes from the start, so they cannot be changed in step; build it with "
            "HybridRetriever.from_defaults(nodes=...)"
        )
    check_in_step(retriever, [], [])  # refuse to build on sides already out of step


def _require_known(retriever: Any, ids: list[str], where: str, other: str | None) -> None:
    unknown = [i for i in ids if i not in retriever._sides_state.sparse_ids]
    if unknown:
        hint = f"; use {other} to add new nodes" if other else ""
        raise ValueError(
            f"HybridRetriever.{where}: node id(s) {unknown[:5]} are not indexed{hint} (nothing "
            "was changed)"
        )
