"""``FeedbackQueryEngine``: record every answer of any LlamaIndex query engine in a ``FeedbackStore``.

Wrap the engine you already have; the rest of the app is unchanged. Each
answer gets ``response.metadata["feedback_id"]``: hand it to the user
interface, and call ``store.rate(feedback_id, +1)`` or
``store.click(feedback_id, node_id)`` when the user reacts.

Recorded per answer: the query, ``response.source_nodes`` (ordered, with
scores and texts), ``cited_node_ids`` and ``refused`` from the response
metadata when the engine sets them (``CitationQueryEngine`` does; other
engines record no citations and ``refused=False``), the answer text, the
latency (until the whole answer is there), the bundle version and your
``metadata``. A streaming answer is recorded when its stream ends (its id is
in ``metadata`` from the start, but ``rate`` / ``click`` know it only then;
``first_token_ms`` joins the record's metadata). A stream the reader stops
early is recorded with ``answer=None`` (so no export learns from a cut-off
text), ``stream_closed_early: True`` and the text shown as
``partial_answer`` in its metadata; a stream never iterated is not recorded.
When the store fails (say, locked past its timeout), the answer is still
returned, with a warning and ``feedback_id=None``, unless
``on_store_error="raise"``. ``aquery`` / ``asynthesize`` and async streams write to
the store in a worker thread: a write waiting for the file's lock never blocks the
event loop.

A query that fails (the engine, its retriever or its LLM raises, also in the
middle of a stream) is not recorded: the exception reaches the caller
unchanged and a stream's ``feedback_id`` turns ``None`` (what the engine
marked meanwhile, e.g. ``CitationQueryEngine``'s ``finished`` and ``error``, is
copied over); there is no answer to rate, and errors belong in logs and tracing. The returned response is a
shallow copy of the engine's with its own ``metadata`` dict, so an engine that
hands the same object to several callers (a cache) never mixes up their ids.

Example::

    from llama_index_ragtune.feedback import FeedbackQueryEngine, FeedbackStore

    store = FeedbackStore("feedback.sqlite")
    engine = FeedbackQueryEngine(engine, store, bundle_version="v3", metadata={"store": "grocery"})
    response = engine.query("apple return policy?")
    store.rate(response.metadata["feedback_id"], +1)
"""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.prompts.mixin import PromptDictType, PromptMixinType
from llama_index.core.schema import NodeWithScore, QueryBundle

from llama_index_ragtune.feedback.entries import check_label, dump_metadata
from llama_index_ragtune.feedback.responses import merge_metadata, response_fields
from llama_index_ragtune.feedback.store import FeedbackStore

__all__ = ["FeedbackQueryEngine", "response_fields"]


class FeedbackQueryEngine(BaseQueryEngine):
    """A query engine that answers with ``query_engine`` and records each answer in ``store``.

    Args:
        query_engine: any LlamaIndex query engine (``RetrieverQueryEngine``,
            ``CitationQueryEngine`` ...); ``get_prompts`` / ``update_prompts`` on the
            wrapper use the wrapped engine's own keys.
        store: a ``FeedbackStore`` or the path of its file.
        bundle_version: written on every record (the tuned bundle that answered).
        metadata: JSON-serialisable fields written on every record (e.g. the store or
            tenant the engine filters by, used by ``query_metadata_keys`` in exports).
        on_store_error: ``"warn"`` (answer anyway, ``feedback_id=None``) or ``"raise"``.

    Example::

        from llama_index.core import SummaryIndex
        from llama_index.core.llms import MockLLM
        from llama_index.core.schema import TextNode

        index = SummaryIndex([TextNode(id_="grocery-returns", text="Apples: 7 days with receipt.")])
        engine = FeedbackQueryEngine(index.as_query_engine(llm=MockLLM()), FeedbackStore(":memory:"))
        response = engine.query("apple return policy?")
        engine.store.get(response.metadata["feedback_id"]).retrieved_node_ids  # ['grocery-returns']
    """

    def __init__(
        self,
        query_engine: BaseQueryEngine,
        store: FeedbackStore | str | Path,
        bundle_version: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        on_store_error: Literal["warn", "raise"] = "warn",
        callback_manager: Any | None = None,
    ) -> None:
        if not isinstance(query_engine, BaseQueryEngine):
            raise TypeError(
                f"FeedbackQueryEngine wraps a LlamaIndex BaseQueryEngine, got "
                f"{type(query_engine).__name__}; for other code call store.record_response(...)"
            )
        if on_store_error not in ("warn", "raise"):
            raise ValueError(f"on_store_error must be 'warn' or 'raise', got {on_store_error!r}")
        if bundle_version is not None and (
            not isinstance(bundle_version, str) or not bundle_version.strip()
        ):
            raise ValueError(
                f"bundle_version must be a non-empty string or None, got {bundle_version!r}"
            )
        if bundle_version is not None:
            bundle_version = check_label(bundle_version, "bundle_version")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
        dump_metadata(metadata, "metadata")
        self._query_engine = query_engine
        self.store = store if isinstance(store, FeedbackStore) else FeedbackStore(store)
        if self.store.read_only:  # every answer would go unrecorded, one warning each
            raise PermissionError(
                f"FeedbackQueryEngine records every answer, but {self.store!r} was opened "
                "read-only; pass a FeedbackStore opened without read_only=True"
            )
        self.bundle_version = bundle_version
        self.metadata = dict(metadata or {})
        self.on_store_error = on_store_error
        super().__init__(callback_manager=callback_manager or query_engine.callback_manager)

    @property
    def query_engine(self) -> BaseQueryEngine:
        """The wrapped engine."""
        return self._query_engine

    # The wrapper is transparent to prompts: the same keys as the wrapped engine, so code
    # that calls get_prompts() / update_prompts() keeps working after wrapping (core's
    # update_prompts reads one "module:key" level only, so nesting would break it).
    def _get_prompt_modules(self) -> PromptMixinType:
        return self._query_engine._get_prompt_modules()

    def _get_prompts(self) -> dict[str, Any]:
        return self._query_engine._get_prompts()

    def _update_prompts(self, prompts: PromptDictType) -> None:
        self._query_engine._update_prompts(prompts)

    def retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """The wrapped engine's retrieval (not recorded: nothing was answered)."""
        return self._query_engine.retrieve(query_bundle)

    def synthesize(
        self,
        query_bundle: QueryBundle,
        nodes: list[NodeWithScore],
        additional_source_nodes: Sequence[NodeWithScore] | None = None,
    ) -> RESPONSE_TYPE:
        """The wrapped engine's ``synthesize``, recorded like a query (latency: synthesis only)."""
        query_bundle = _question(query_bundle)
        started = time.perf_counter()
        response = self._query_engine.synthesize(query_bundle, nodes, additional_source_nodes)
        return self._finish(query_bundle.query_str, response, started)

    async def asynthesize(
        self,
        query_bundle: QueryBundle,
        nodes: list[NodeWithScore],
        additional_source_nodes: Sequence[NodeWithScore] | None = None,
    ) -> RESPONSE_TYPE:
        """The wrapped engine's ``asynthesize``, recorded like a query."""
        query_bundle = _question(query_bundle)
        started = time.perf_counter()
        response = await self._query_engine.asynthesize(
            query_bundle, nodes, additional_source_nodes
        )
        return await asyncio.to_thread(self._finish, query_bundle.query_str, response, started)

    # ------------------------------------------------------------- recording
    def _save(
        self,
        query: str,
        response: Any,
        started: float,
        record_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
        complete: bool = True,
    ) -> str | None:
        try:
            fields = response_fields(response)
            if not complete:  # a cut-off text must not become an answer to learn from
                fields["answer"] = None
            found = fields.pop("metadata", None)
            return self.store.record(
                query,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                bundle_version=self.bundle_version,
                metadata=merge_metadata({**self.metadata, **(extra or {})}, found),
                record_id=record_id,
                **fields,
            )
        except Exception as exc:
            if self.on_store_error == "raise":
                raise
            warnings.warn(
                f"FeedbackQueryEngine: the answer to {query[:60]!r} was not recorded in "
                f"{self.store.path}: {type(exc).__name__}: {exc}",
                stacklevel=3,
            )
            return None

    def _finish(self, query: str, response: RESPONSE_TYPE, started: float) -> RESPONSE_TYPE:
        if response is None or isinstance(response, str):
            # an engine overriding query(): core's own query() refuses these, so wrap them
            warnings.warn(
                f"FeedbackQueryEngine: the engine {type(self._query_engine).__name__} returned "
                f"{type(response).__name__}, not a LlamaIndex response; it is returned and "
                "recorded as a Response (without sources) holding it",
                stacklevel=4,
            )
            response = Response(response)
        elif not hasattr(response, "metadata"):  # a dict, say: no place for a feedback_id
            warnings.warn(
                f"FeedbackQueryEngine: the answer to {query[:60]!r} was not recorded: the "
                f"engine {type(self._query_engine).__name__} returned {type(response).__name__}, "
                "not a LlamaIndex response (Response, StreamingResponse...), so there is no "
                "metadata to carry its feedback_id; it is returned as the engine gave it",
                stacklevel=4,
            )
            return response
        inner_metadata = response.metadata
        response = _own_copy(response)
        if isinstance(response, StreamingResponse) and response.response_gen is not None:
            record_id = uuid.uuid4().hex
            response.metadata["feedback_id"] = record_id
            response.response_gen = self._stream(
                query, response, inner_metadata, response.response_gen, started, record_id
            )
        elif isinstance(response, AsyncStreamingResponse) and response.response_gen is not None:
            record_id = uuid.uuid4().hex
            response.metadata["feedback_id"] = record_id
            response.response_gen = self._astream(
                query, response, inner_metadata, response.response_gen, started, record_id
            )
        else:  # a finished answer (or a "stream" that came with its text and no generator)
            response.metadata["feedback_id"] = self._save(query, response, started)
        return response

    def _end_stream(
        self,
        query: str,
        response: StreamingResponse | AsyncStreamingResponse,
        inner_metadata: Any,
        parts: list[str],
        first: float | None,
        started: float,
        record_id: str,
        complete: bool,
    ) -> None:
        _copy_inner_metadata(response, inner_metadata)
        extra: dict[str, Any] = {"first_token_ms": first}
        if complete:
            response.response_txt = "".join(parts)
        else:
            extra.update(stream_closed_early=True, partial_answer="".join(parts))
        if self._save(query, response, started, record_id, extra, complete) is None:
            response.metadata["feedback_id"] = None

    def _stream(
        self,
        query: str,
        response: StreamingResponse,
        inner_metadata: Any,
        inner: Iterator[str],
        started: float,
        record_id: str,
    ) -> Iterator[str]:
        parts: list[str] = []
        first = None
        try:
            for delta in inner:
                first = first if first is not None else (time.perf_counter() - started) * 1000.0
                parts.append(delta)
                yield delta
        except GeneratorExit:  # the reader stopped early (break, a closed connection)
            self._end_stream(
                query, response, inner_metadata, parts, first, started, record_id, False
            )
            raise
        except BaseException:  # the engine failed mid-answer: nothing to rate
            _copy_inner_metadata(response, inner_metadata)  # its finished / error marks
            response.metadata["feedback_id"] = None
            raise
        self._end_stream(query, response, inner_metadata, parts, first, started, record_id, True)

    async def _astream(
        self,
        query: str,
        response: AsyncStreamingResponse,
        inner_metadata: Any,
        inner: AsyncIterator[str],
        started: float,
        record_id: str,
    ) -> AsyncIterator[str]:
        parts: list[str] = []
        first = None

        def end(completed: bool) -> None:
            self._end_stream(
                query, response, inner_metadata, parts, first, started, record_id, completed
            )

        # the store write (which may wait for SQLite's lock) runs off the event loop
        try:
            async for delta in inner:
                first = first if first is not None else (time.perf_counter() - started) * 1000.0
                parts.append(delta)
                yield delta
        except (GeneratorExit, asyncio.CancelledError):  # stopped early, or the reader left
            await asyncio.to_thread(end, False)
            raise
        except BaseException:
            _copy_inner_metadata(response, inner_metadata)
            response.metadata["feedback_id"] = None
            raise
        await asyncio.to_thread(end, True)

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        query_bundle = _question(query_bundle)
        started = time.perf_counter()
        response = self._query_engine.query(query_bundle)
        return self._finish(query_bundle.query_str, response, started)

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        query_bundle = _question(query_bundle)
        started = time.perf_counter()
        response = await self._query_engine.aquery(query_bundle)
        return await asyncio.to_thread(self._finish, query_bundle.query_str, response, started)


def _copy_inner_metadata(response: Any, inner_metadata: Any) -> None:
    """Bring what the engine wrote into its own metadata dict while its stream ran
    (``CitationQueryEngine``'s citations when it ends; ``finished`` / ``error`` /
    ``raw_answer`` when it breaks) into the caller's copy, keeping our ``feedback_id``."""
    if isinstance(inner_metadata, Mapping):
        response.metadata.update((k, v) for k, v in inner_metadata.items() if k != "feedback_id")


def _question(question: Any) -> QueryBundle:
    """``question`` as a QueryBundle; fail before the engine runs, not after it answered.

    (Core's ``query`` lets ``bytes`` through as if it were a QueryBundle, and
    ``synthesize`` takes a plain str too.)
    """
    if isinstance(question, str):
        return QueryBundle(question)
    if not isinstance(question, QueryBundle):
        raise TypeError(
            f"FeedbackQueryEngine.query takes a str or a QueryBundle, got {type(question).__name__}"
        )
    return question


def _own_copy(response: Any) -> Any:
    """A shallow copy of ``response`` with a metadata dict of its own.

    The wrapped engine may hand the same response object or metadata dict to several
    callers (a cache, a shared default); writing ``feedback_id`` into it would give
    them each other's ids. (``copy.copy`` recurses forever on ``PydanticResponse``.)
    """
    metadata = response.metadata
    try:
        copied = object.__new__(type(response))
        copied.__dict__.update(vars(response))
    except TypeError:  # no __dict__: keep the object, still give it its own dict
        copied = response
    copied.metadata = dict(metadata) if isinstance(metadata, Mapping) else {}
    return copied
