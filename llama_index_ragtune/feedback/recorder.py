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
in ``metadata`` from the start; ``first_token_ms`` joins the record's
metadata). When the store fails (say, locked past its timeout), the answer
is still returned, with a warning and ``feedback_id=None``, unless
``on_store_error="raise"``.

Example::

    from llama_index_ragtune.feedback import FeedbackQueryEngine, FeedbackStore

    store = FeedbackStore("feedback.sqlite")
    engine = FeedbackQueryEngine(engine, store, bundle_version="v3", metadata={"store": "grocery"})
    response = engine.query("apple return policy?")
    store.rate(response.metadata["feedback_id"], +1)
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    StreamingResponse,
)
from llama_index.core.prompts.mixin import PromptDictType, PromptMixinType
from llama_index.core.schema import NodeWithScore, QueryBundle

from llama_index_ragtune.feedback.entries import check_text, dump_metadata
from llama_index_ragtune.feedback.responses import response_fields
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
            check_text(bundle_version, "bundle_version")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
        dump_metadata(metadata, "metadata")
        self._query_engine = query_engine
        self.store = store if isinstance(store, FeedbackStore) else FeedbackStore(store)
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

    # ------------------------------------------------------------- recording
    def _save(
        self,
        query: str,
        response: Any,
        started: float,
        record_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str | None:
        try:
            return self.store.record(
                query,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                bundle_version=self.bundle_version,
                metadata={**self.metadata, **(extra or {})},
                record_id=record_id,
                **response_fields(response),
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
        if response.metadata is None:
            response.metadata = {}
        if isinstance(response, StreamingResponse):
            record_id = uuid.uuid4().hex
            response.metadata["feedback_id"] = record_id
            response.response_gen = self._stream(
                query, response, response.response_gen, started, record_id
            )
        elif isinstance(response, AsyncStreamingResponse):
            record_id = uuid.uuid4().hex
            response.metadata["feedback_id"] = record_id
            response.response_gen = self._astream(
                query, response, response.response_gen, started, record_id
            )
        else:
            response.metadata["feedback_id"] = self._save(query, response, started)
        return response

    def _stream(
        self,
        query: str,
        response: StreamingResponse,
        inner: Iterator[str],
        started: float,
        record_id: str,
    ) -> Iterator[str]:
        parts, first = [], None
        for delta in inner:
            first = first if first is not None else (time.perf_counter() - started) * 1000.0
            parts.append(delta)
            yield delta
        response.response_txt = "".join(parts)
        extra = {"first_token_ms": first}
        if self._save(query, response, started, record_id, extra) is None:
            response.metadata["feedback_id"] = None

    async def _astream(
        self,
        query: str,
        response: AsyncStreamingResponse,
        inner: AsyncIterator[str],
        started: float,
        record_id: str,
    ) -> AsyncIterator[str]:
        parts, first = [], None
        async for delta in inner:
            first = first if first is not None else (time.perf_counter() - started) * 1000.0
            parts.append(delta)
            yield delta
        response.response_txt = "".join(parts)
        extra = {"first_token_ms": first}
        if self._save(query, response, started, record_id, extra) is None:
            response.metadata["feedback_id"] = None

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        started = time.perf_counter()
        response = self._query_engine.query(query_bundle)
        return self._finish(query_bundle.query_str, response, started)

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        started = time.perf_counter()
        response = await self._query_engine.aquery(query_bundle)
        return self._finish(query_bundle.query_str, response, started)
