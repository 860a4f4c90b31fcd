"""Micro-batching of concurrent query embeddings, as a LlamaIndex ``BaseEmbedding`` wrapper.

A server answering many queries at once embeds each query separately by default:
every request runs its own small forward pass, and on a CPU those passes fight for
the same cores. ``MicroBatchEmbedding(embed_model)`` puts every query-embedding
call (async callers on an event loop and threads alike) in one queue; a single
worker thread embeds what is queued as one batch and hands each caller its own
vector.

* **When a batch runs**: as soon as ``max_batch_size`` queries are queued, or
  when the oldest queued query has waited ``max_wait_ms``. A query that arrives
  while the model is idle and the previous batch held only itself (a lone,
  sequential caller) is embedded at once, without waiting (a blocking caller
  even runs the model in its own thread, so sequential use costs nothing).
  Queries that arrive while a batch runs form the next batch.
* **Vectors**: each caller gets the vector the wrapped model gives for its query
  (batching only pads queries to a common length, which changes the float32
  result by rounding at most). Document (text) embeddings pass straight through.
* **Which models batch**: :class:`~llama_index_ragtune.embeddings.OnnxEmbedding`
  and any model with an ``encode_queries(list[str])`` method, LlamaIndex's
  ``HuggingFaceEmbedding`` (PyTorch), a
  :class:`~llama_index_ragtune.embeddings.CachedEmbedding` around one of these,
  or any model when ``batch_fn`` is given.
* **Errors**: if a batch fails, its queries are embedded one by one, so an
  error reaches only the caller whose query caused it.
* **Threads**: the wrapped model runs one batch at a time (in the worker thread,
  or in a lone caller's thread); waiting callers block on a future, never spin.
  :meth:`~MicroBatchEmbedding.close` embeds what is queued and stops the
  worker; the next query starts a new one. The worker is a daemon thread and
  also stops when the wrapper is garbage-collected.

Example::

    import asyncio
    from llama_index_ragtune.embeddings import MicroBatchEmbedding, OnnxEmbedding

    embed = MicroBatchEmbedding(OnnxEmbedding(), max_wait_ms=2, max_batch_size=16)

    async def main():
        return await asyncio.gather(*(embed.aget_query_embedding(q) for q in ("a", "b", "c")))

    vectors = asyncio.run(main())          # one forward pass for the three queries
    embed.stats                            # {'requests': 3, 'batches': ..., ...}
    embed.close()
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

logger = logging.getLogger(__name__)

__all__ = ["MicroBatchEmbedding", "QueryBatcher", "batch_query_fn", "micro_batched"]

BatchFn = Callable[[list[str]], Sequence[Sequence[float]]]
_worker_ids = itertools.count(1)
# one wrapper per wrapped model, so every retriever sharing a model shares its queue
_shared: weakref.WeakValueDictionary[int, MicroBatchEmbedding] = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()


@dataclass
class _Request:
    query: str
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


class QueryBatcher:
    """The queue and the worker thread behind :class:`MicroBatchEmbedding` (no LlamaIndex types).

    ``submit(query)`` returns a ``concurrent.futures.Future`` that the worker resolves
    with the query's vector (or the exception its batch raised). ``embed(query)``
    blocks for the vector; a lone caller (model idle, nothing queued, no recent
    concurrency) runs the model in its own thread, with no hand-off at all.

    Args:
        batch_fn: embeds a list of queries, returning one vector per query, in order.
        max_wait_ms: longest a queued query waits for others before its batch runs.
        max_batch_size: queries per batch; a full queue runs at once.
        name: the worker thread's name (a number is appended).
        as_result: turns each item ``batch_fn`` returns into what its caller gets (default:
            a vector as a list of floats); the queue itself works for any item and result,
            e.g. whole retrievals (:mod:`~llama_index_ragtune.retrievers.hybrid_batch`).

    Example::

        batcher = QueryBatcher(lambda qs: [[float(len(q))] for q in qs], max_wait_ms=2)
        batcher.submit("four").result()      # [4.0]
        batcher.close()
    """

    def __init__(
        self,
        batch_fn: BatchFn,
        max_wait_ms: float = 2.0,
        max_batch_size: int = 16,
        name: str = "ragtune-micro-batch",
        as_result: Callable[[Any], Any] | None = None,
    ) -> None:
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.batch_fn = batch_fn
        self.as_result = _as_vector if as_result is None else as_result
        self.max_wait = max_wait_ms / 1000.0
        self.max_batch_size = int(max_batch_size)
        self.name = f"{name}-{next(_worker_ids)}"
        self._cond = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._worker: threading.Thread | None = None
        self._stopping = False
        self._model_busy = False  # a batch is running (in the worker or in a lone caller)
        # True after a batch that had company (more than one query, or queries queued
        # meanwhile): concurrent callers are about, so an idle worker waits for them.
        self._busy_period = False
        self._stats = {"requests": 0, "batches": 0, "largest_batch": 0}
        self._flushes = {"alone": 0, "full": 0, "deadline": 0}

    # ------------------------------------------------------------------ callers

    def submit(self, query: str) -> Future:
        """Queue ``query`` for the worker; the future resolves to its vector."""
        request = _Request(query)
        with self._cond:
            self._pending.append(request)
            self._stats["requests"] += 1
            if self._worker is None or not self._worker.is_alive():
                self._start_worker()
            elif len(self._pending) == 1 or len(self._pending) >= self.max_batch_size:
                self._cond.notify_all()
        return request.future

    def embed(self, query: str) -> list[float]:
        """Blocking: the vector of ``query``; a lone caller runs the model itself."""
        with self._cond:
            alone = not (self._pending or self._model_busy or self._busy_period or self._stopping)
            if alone:
                self._model_busy = True
                self._stats["requests"] += 1
                self._count_batch("alone", 1)
        if not alone:
            if threading.current_thread() is self._worker:  # batch_fn calling back: no deadlock
                return self._vectors([query])[0]
            return self.submit(query).result()
        try:
            return self._vectors([query])[0]
        finally:
            self._batch_done(1)

    async def aembed(self, query: str) -> list[float]:
        """The vector of ``query``; the event loop stays free while the batch runs."""
        return await asyncio.wrap_future(self.submit(query))

    @property
    def stats(self) -> dict[str, Any]:
        """Counts since creation: ``requests``, ``batches``, ``largest_batch`` and, under ``flushes``,
        why each batch ran (``alone``: a lone caller, at once; ``full``; ``deadline``: the oldest
        query had waited ``max_wait_ms``)."""
        with self._cond:
            return {**self._stats, "flushes": dict(self._flushes)}

    def close(self, timeout: float | None = None) -> None:
        """Embed the queued queries, then stop the worker (a later ``submit`` starts a new one)."""
        with self._cond:
            worker = self._worker
            self._stopping = True
            self._cond.notify_all()
        try:
            if worker is not None and worker is not threading.current_thread():
                worker.join(timeout)
        finally:
            with self._cond:
                self._stopping = False
                if self._pending and (self._worker is None or not self._worker.is_alive()):
                    self._start_worker()

    # ------------------------------------------------------------------ worker

    def _start_worker(self) -> None:
        worker = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._worker = worker
        worker.start()

    def _count_batch(self, reason: str, size: int) -> None:
        self._flushes[reason] += 1
        self._stats["batches"] += 1
        self._stats["largest_batch"] = max(self._stats["largest_batch"], size)

    def _batch_done(self, size: int) -> None:
        with self._cond:
            self._model_busy = False
            self._busy_period = size > 1 or bool(self._pending)
            if self._pending:
                self._cond.notify_all()

    def _next_batch(self) -> list[_Request] | None:
        """Wait for work; return the next batch, or None when stopping with nothing queued."""
        with self._cond:
            while not self._pending or self._model_busy:
                if self._stopping and not self._pending:
                    if self._worker is threading.current_thread():
                        self._worker = None
                    return None
                self._cond.wait()
            reason = "full"
            if len(self._pending) < self.max_batch_size:
                reason = "deadline" if self._busy_period and self.max_wait > 0 else "alone"
            if reason == "deadline":
                deadline = self._pending[0].arrived + self.max_wait
                while len(self._pending) < self.max_batch_size and not self._stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if len(self._pending) >= self.max_batch_size:
                    reason = "full"
            size = min(len(self._pending), self.max_batch_size)
            batch = [self._pending.popleft() for _ in range(size)]
            self._model_busy = True
            self._count_batch(reason, size)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._embed_batch(batch)
            finally:
                self._batch_done(len(batch))

    def _vectors(self, queries: list[str]) -> list[list[float]]:
        vectors = self.batch_fn(queries)
        if len(vectors) != len(queries):
            raise RuntimeError(
                f"the batch function returned {len(vectors)} vectors for {len(queries)} queries; "
                "it must return one vector per query, in order"
            )
        return [self.as_result(v) for v in vectors]

    def _embed_batch(self, batch: list[_Request]) -> None:
        live = [r for r in batch if r.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = self._vectors([r.query for r in live])
        except BaseException as exc:  # noqa: BLE001 - handed to the callers, never swallowed
            if len(live) == 1 or not isinstance(exc, Exception):
                for r in live:
                    r.future.set_exception(exc)
                return
            logger.debug(
                "a batch of %d queries failed (%s); embedding them one by one", len(live), exc
            )
            for r in live:
                try:
                    r.future.set_result(self._vectors([r.query])[0])
                except Exception as one:  # noqa: BLE001 - this caller's own error
                    r.future.set_exception(one)
            return
        for r, vector in zip(live, results, strict=True):
            r.future.set_result(vector)


def _as_vector(vector: Any) -> list[float]:
    return vector.tolist() if hasattr(vector, "tolist") else [float(x) for x in vector]


def batch_query_fn(embed_model: BaseEmbedding) -> BatchFn | None:
    """How to embed a list of queries in one call with ``embed_model`` (None: it cannot batch).

    Example::

        from llama_index_ragtune.embeddings import OnnxEmbedding
        from llama_index_ragtune.embeddings.micro_batch import batch_query_fn

        batch_query_fn(OnnxEmbedding())(["a query", "another"])   # two vectors
    """
    encode_queries = getattr(embed_model, "encode_queries", None)
    if callable(encode_queries):
        return lambda queries: encode_queries(queries)
    from llama_index_ragtune.embeddings.cached import CachedEmbedding

    if isinstance(embed_model, CachedEmbedding):  # queries pass straight through its cache
        return batch_query_fn(embed_model.inner)
    # an instance exists only if its module is imported: never import torch just to check
    huggingface = sys.modules.get("llama_index.embeddings.huggingface")
    if huggingface is not None and isinstance(embed_model, huggingface.HuggingFaceEmbedding):
        from llama_index_ragtune.embeddings.truncation import wrapped_cut_warner

        warner = wrapped_cut_warner(embed_model)  # a plain one cuts long queries silently

        def embed_queries(queries: Any) -> Any:
            queries = list(queries)
            if warner is not None:
                warner.check(queries, "query")
            # the call HuggingFaceEmbedding._get_query_embedding makes, with more than one query
            return embed_model._embed(queries, prompt_name="query")

        return embed_queries
    return None


class MicroBatchEmbedding(BaseEmbedding):
    """Embed the queries of concurrent callers in batches; see the module docstring.

    Args:
        embed_model: the model that embeds the queries (and, passed through, the documents).
        max_wait_ms: longest a query waits for others to join its batch (0: never wait;
            a query batches only with those queued while the previous batch ran).
        max_batch_size: queries per batch.
        batch_fn: embeds a list of queries in one call (default: derived from
            ``embed_model``; needed for models other than those listed in the module
            docstring).

    Example::

        from llama_index.core.schema import TextNode
        from llama_index_ragtune.embeddings import MicroBatchEmbedding, default_embed_model
        from llama_index_ragtune.retrievers import HybridRetriever

        nodes = [TextNode(text="Opened electronics can be returned within 14 days."),
                 TextNode(text="Perishable groceries are refunded, not returned.")]
        embed = MicroBatchEmbedding(default_embed_model(), max_wait_ms=2)
        retriever = HybridRetriever.from_defaults(nodes=nodes, embed_model=embed)
        # concurrent retriever.aretrieve(...) calls now share forward passes
        retriever.retrieve("return opened headphones")    # a lone caller: embedded at once
    """

    max_wait_ms: float = Field(
        default=2.0,
        ge=0.0,
        description="Longest a query waits for other queries to join its batch (milliseconds).",
    )
    max_batch_size: int = Field(
        default=16, ge=1, description="Most queries embedded in one forward pass."
    )
    _inner: BaseEmbedding = PrivateAttr()
    _batcher: QueryBatcher = PrivateAttr()

    def __init__(
        self,
        embed_model: BaseEmbedding,
        max_wait_ms: float = 2.0,
        max_batch_size: int = 16,
        batch_fn: BatchFn | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(embed_model, BaseEmbedding):
            raise TypeError(
                f"MicroBatchEmbedding wraps a LlamaIndex BaseEmbedding, got {type(embed_model).__name__}"
            )
        if isinstance(embed_model, MicroBatchEmbedding):
            raise TypeError(
                "embed_model is already a MicroBatchEmbedding; wrap the model only once"
            )
        batch_fn = batch_fn or batch_query_fn(embed_model)
        if batch_fn is None:
            raise TypeError(
                f"MicroBatchEmbedding cannot batch the queries of {type(embed_model).__name__}: pass "
                "batch_fn=<a function embedding a list of queries in one call>, or give the model an "
                "encode_queries(list[str]) method"
            )
        kwargs.setdefault("embed_batch_size", embed_model.embed_batch_size)
        super().__init__(
            model_name=embed_model.model_name,
            callback_manager=embed_model.callback_manager,
            max_wait_ms=max_wait_ms,
            max_batch_size=max_batch_size,
            **kwargs,
        )
        self._inner = embed_model
        self._batcher = QueryBatcher(batch_fn, max_wait_ms, max_batch_size)
        weakref.finalize(self, self._batcher.close)

    @classmethod
    def class_name(cls) -> str:
        return "MicroBatchEmbedding"

    @property
    def inner(self) -> BaseEmbedding:
        """The wrapped embedding model."""
        return self._inner

    @property
    def batcher(self) -> QueryBatcher:
        """The queue and worker thread (``batcher.name`` is the worker thread's name)."""
        return self._batcher

    @property
    def stats(self) -> dict[str, Any]:
        """Queries, batches, the largest batch and why each batch ran (see :attr:`QueryBatcher.stats`)."""
        return self._batcher.stats

    def cache_identity(self) -> str:
        """The wrapped model's identity: batching does not change the vectors an embedding cache keeps."""
        from llama_index_ragtune.embeddings.cached import model_identity

        return model_identity(self._inner)

    def close(self) -> None:
        """Embed the queued queries and stop the worker thread (the next query starts a new one)."""
        self._batcher.close()

    def __enter__(self) -> MicroBatchEmbedding:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ queries: batched

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._batcher.embed(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await self._batcher.aembed(query)

    # ------------------------------------------------------------------ documents: passed through

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._inner.get_text_embedding(text)

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._inner.get_text_embedding_batch(texts)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await self._inner.aget_text_embedding(text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._inner.aget_text_embedding_batch(texts)


def micro_batched(embed_model: BaseEmbedding) -> BaseEmbedding:
    """``embed_model`` with its queries micro-batched, if it can batch them; else ``embed_model``.

    Every call with the same model returns the same :class:`MicroBatchEmbedding` (one
    queue per model, shared by all the retrievers that use it); a model that is already
    a ``MicroBatchEmbedding``, or cannot batch its queries, comes back unchanged.

    Example::

        from llama_index_ragtune.embeddings import default_embed_model
        from llama_index_ragtune.embeddings.micro_batch import micro_batched

        model = default_embed_model()
        micro_batched(model) is micro_batched(model)    # True
    """
    if isinstance(embed_model, MicroBatchEmbedding) or batch_query_fn(embed_model) is None:
        return embed_model
    with _shared_lock:
        wrapper = _shared.get(id(embed_model))
        if wrapper is None or wrapper.inner is not embed_model:
            wrapper = MicroBatchEmbedding(embed_model)
            _shared[id(embed_model)] = wrapper
        return wrapper
