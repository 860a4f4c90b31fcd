"""``CitationQueryEngine``: answers with ``[n]`` citations mapped to the original node ids, or a refusal.

What it does better than core's ``CitationQueryEngine``:

- each retrieved (and postprocessed) node is one numbered source that keeps its
  own ``node_id`` -- nothing is re-split, so a citation points at a node of
  *your* index and can be scored against gold ids;
- the prompt is ``grounding.build_messages``: sources fenced as data in
  ``<source id="n">`` blocks, one fixed refusal sentence -- the same format the
  decoder is tuned on (``GroundedSFTBuilder``);
- citations are read by the grammar of :mod:`llama_index_ragtune.grounding`
  (``[1, 2]``, ``[1-3]``, ``[Source 2]``, full-width brackets...; code and
  links never count): a citation to a source that does not exist is removed
  from the answer and reported in ``metadata["invalid_citations"]``;
- no retrieved node -> the refusal, without calling the LLM.

``Response.metadata`` holds ``citations`` (``[{"number", "node_id",
"ref_doc_id", "claim", "source_snippet"}]``, valid ones, in order of first
appearance), ``cited_node_ids``, ``refused`` (the answer opens with the refusal and cites
nothing; exactly one of ``refused``, cited and ``uncited`` holds), ``uncited``
(an answer that is neither cited nor a refusal), ``invalid_citations``, ``raw_answer`` (the
LLM text before cleaning), ``source_node_ids`` (the numbered sources in
order), ``no_sources`` (nothing was retrieved) and ``finished``.
``Response.source_nodes`` are the numbered sources. Like core's query
engines it emits QUERY and SYNTHESIZE callback events (the retriever emits
RETRIEVE, the LLM its own) and the instrumentation Synthesize events.

Streaming (``streaming=True``): ``query`` returns a ``StreamingResponse``
(``aquery`` an ``AsyncStreamingResponse``) whose generator yields the
cleaned text as it comes -- what may still be a citation or code is held back
(a bounded amount, in time linear in the answer's length), so invalid
citations never reach the reader and the text equals the non-streamed one --
and fills ``metadata`` (the same dict object) when the stream ends;
``metadata["finished"]`` turns True then.

Example::

    from llama_index.core import SummaryIndex
    from llama_index.core.schema import TextNode
    from llama_index_ragtune.llms import LocalChatLLM
    from llama_index_ragtune.query_engine import CitationQueryEngine

    nodes = [TextNode(id_="volthub-returns", text="Opened iPhones can be returned within 14 days.")]
    llm = LocalChatLLM(max_new_tokens=48)    # bundled SmolLM2-135M-Instruct, or a tuned decoder
    engine = CitationQueryEngine.from_index(SummaryIndex(nodes), llm=llm, max_source_chars=1500)
    response = engine.query("What is the return window for opened iPhones?")
    response.response, response.metadata["cited_node_ids"], response.metadata["refused"]
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.synthesis import (
    SynthesizeEndEvent,
    SynthesizeStartEvent,
)
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.prompts import PromptTemplate
from llama_index.core.prompts.mixin import PromptDictType, PromptMixinType
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from llama_index.core.settings import Settings

from llama_index_ragtune.grounding import (
    DEFAULT_REFUSAL,
    DEFAULT_SYSTEM_PROMPT,
    AnswerStream,
    GroundedAnswer,
    build_messages,
    check_refusal,
    cited_claims,
    parse_answer,
    strip_citations,
    truncate_source,
)

__all__ = ["CitationQueryEngine"]

dispatcher = get_dispatcher(__name__)


class CitationQueryEngine(BaseQueryEngine):
    """Retrieve, number the nodes as sources, answer with ``[n]`` citations or refuse, and check the citations.

    Args:
        retriever: any LlamaIndex retriever (``HybridRetriever``, a vector index retriever, BM25...).
        llm: the answering LLM; ``None`` uses ``Settings.llm``.
        node_postprocessors: applied in order after retrieval (e.g. ``CrossEncoderRerank``).
        refusal: the exact sentence the model must use when the sources lack the answer
            (``ValueError`` if blank or citing).
        system_prompt: system message template with a ``{refusal}`` slot.
        max_sources: keep at most this many nodes (after postprocessing) as sources.
        max_source_chars: cut each source's text to this many characters (word boundary).
        metadata_mode: which node metadata is shown with the text (default: none).
        streaming: return streaming responses.

    Example::

        from llama_index.core import SummaryIndex
        from llama_index.core.llms import MockLLM
        from llama_index.core.schema import TextNode

        index = SummaryIndex([TextNode(id_="rome", text="Rome is the capital of Italy.")])
        engine = CitationQueryEngine(index.as_retriever(), llm=MockLLM(max_tokens=4))
        [m.role.value for m in engine.messages("Capital of Italy?", engine.retrieve(QueryBundle("x")))]
        # ['system', 'user']: the exact prompt the decoder is tuned on
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        llm: Any | None = None,
        node_postprocessors: Sequence[BaseNodePostprocessor] | None = None,
        refusal: str = DEFAULT_REFUSAL,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        max_sources: int | None = None,
        max_source_chars: int | None = None,
        metadata_mode: MetadataMode = MetadataMode.NONE,
        streaming: bool = False,
        callback_manager: Any | None = None,
    ) -> None:
        if max_sources is not None and max_sources < 1:
            raise ValueError(f"max_sources must be >= 1 or None, got {max_sources}.")
        if max_source_chars is not None and max_source_chars < 1:
            raise ValueError(f"max_source_chars must be >= 1 or None, got {max_source_chars}.")
        check_refusal(refusal)
        _check_system_prompt(system_prompt, refusal)
        self._retriever = retriever
        self._llm = llm
        self._node_postprocessors = list(node_postprocessors or [])
        self.refusal = refusal
        self.system_prompt = system_prompt
        self.max_sources = max_sources
        self.max_source_chars = max_source_chars
        self.metadata_mode = metadata_mode
        self.streaming = streaming
        callback_manager = callback_manager or Settings.callback_manager
        for postprocessor in self._node_postprocessors:
            postprocessor.callback_manager = callback_manager
        super().__init__(callback_manager=callback_manager)

    @classmethod
    def from_args(
        cls,
        retriever: BaseRetriever,
        llm: Any | None = None,
        node_postprocessors: Sequence[BaseNodePostprocessor] | None = None,
        **kwargs: Any,
    ) -> CitationQueryEngine:
        """Same as the constructor (kept for symmetry with core's query engines)."""
        return cls(retriever=retriever, llm=llm, node_postprocessors=node_postprocessors, **kwargs)

    @classmethod
    def from_index(
        cls,
        index: Any,
        llm: Any | None = None,
        similarity_top_k: int = 5,
        node_postprocessors: Sequence[BaseNodePostprocessor] | None = None,
        **kwargs: Any,
    ) -> CitationQueryEngine:
        """An engine over ``index.as_retriever(similarity_top_k=...)``."""
        return cls(
            retriever=index.as_retriever(similarity_top_k=similarity_top_k),
            llm=llm,
            node_postprocessors=node_postprocessors,
            **kwargs,
        )

    @property
    def llm(self) -> Any:
        """The answering LLM (``Settings.llm`` when none was given)."""
        return self._llm if self._llm is not None else Settings.llm

    @property
    def retriever(self) -> BaseRetriever:
        """The retriever whose nodes become the numbered sources."""
        return self._retriever

    def _get_prompt_modules(self) -> PromptMixinType:
        return {}

    def _get_prompts(self) -> dict[str, Any]:
        return {"system_prompt": PromptTemplate(self.system_prompt)}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        if "system_prompt" in prompts:
            template = prompts["system_prompt"].get_template()
            _check_system_prompt(template, self.refusal)
            self.system_prompt = template

    # ---------------------------------------------------------------- sources
    def _limit(self, nodes: list[NodeWithScore]) -> list[NodeWithScore]:
        return nodes[: self.max_sources] if self.max_sources else nodes

    def retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """Retrieved, postprocessed and capped nodes: source ``n`` is ``nodes[n - 1]``."""
        nodes = self._retriever.retrieve(query_bundle)
        for postprocessor in self._node_postprocessors:
            nodes = postprocessor.postprocess_nodes(nodes, query_bundle=query_bundle)
        return self._limit(nodes)

    async def aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """Async twin of :meth:`retrieve` (``aretrieve`` and ``apostprocess_nodes``)."""
        nodes = await self._retriever.aretrieve(query_bundle)
        for postprocessor in self._node_postprocessors:
            nodes = await postprocessor.apostprocess_nodes(nodes, query_bundle=query_bundle)
        return self._limit(nodes)

    def source_texts(self, nodes: Sequence[NodeWithScore]) -> list[str]:
        """The text shown for each source (metadata per ``metadata_mode``, cut to ``max_source_chars``)."""
        return [
            truncate_source(
                n.node.get_content(metadata_mode=self.metadata_mode), self.max_source_chars
            )
            for n in nodes
        ]

    def messages(
        self, query_bundle: QueryBundle | str, nodes: Sequence[NodeWithScore]
    ) -> list[ChatMessage]:
        """The chat messages sent to the LLM for this question and these sources."""
        question = query_bundle if isinstance(query_bundle, str) else query_bundle.query_str
        return build_messages(
            question,
            self.source_texts(nodes),
            refusal=self.refusal,
            system_prompt=self.system_prompt,
        )

    # --------------------------------------------------------------- answers
    def _base_metadata(self, question: str, nodes: Sequence[NodeWithScore]) -> dict[str, Any]:
        return {
            "question": question,
            "source_node_ids": [n.node.node_id for n in nodes],
            "citations": [],
            "cited_node_ids": [],
            "invalid_citations": [],
            "refused": False,
            "uncited": False,
            "raw_answer": None,
            "no_sources": not nodes,
            "finished": False,
        }

    def _finish(
        self, metadata: dict[str, Any], nodes: Sequence[NodeWithScore], answer: GroundedAnswer
    ) -> None:
        """Fill ``metadata`` from the final answer (in place, so streaming responses see it)."""
        claims = cited_claims(answer.text)
        citations = []
        for number in answer.citations:  # valid by construction: 1 <= number <= len(nodes)
            node = nodes[number - 1].node
            claim = next((c for c, cited in claims if number in cited), None)
            citations.append(
                {
                    "number": number,
                    "node_id": node.node_id,
                    "ref_doc_id": node.ref_doc_id,
                    "claim": claim if claim is not None else strip_citations(answer.text),
                    "source_snippet": truncate_source(node.get_content(), 200),
                }
            )
        metadata.update(
            citations=citations,
            cited_node_ids=list(dict.fromkeys(c["node_id"] for c in citations)),
            invalid_citations=list(answer.invalid_citations),
            refused=answer.refused,
            uncited=answer.uncited,
            raw_answer=answer.raw,
            finished=True,
        )

    def _refusal_response(self, question: str, asynchronous: bool = False) -> RESPONSE_TYPE:
        """The refusal, without calling the LLM (nothing was retrieved)."""
        metadata = self._base_metadata(question, [])
        self._finish(metadata, [], parse_answer(self.refusal, 0, self.refusal))
        if not self.streaming:
            return Response(self.refusal, source_nodes=[], metadata=metadata)
        if asynchronous:
            return AsyncStreamingResponse(_one(self.refusal), source_nodes=[], metadata=metadata)
        return StreamingResponse(iter([self.refusal]), source_nodes=[], metadata=metadata)

    def _complete(self, question: str, nodes: list[NodeWithScore], raw: str) -> Response:
        metadata = self._base_metadata(question, nodes)
        answer = parse_answer(raw, len(nodes), self.refusal)
        self._finish(metadata, nodes, answer)
        return Response(answer.text, source_nodes=nodes, metadata=metadata)

    def _stream(
        self, question: str, nodes: list[NodeWithScore], deltas: Iterator[str]
    ) -> StreamingResponse:
        metadata = self._base_metadata(question, nodes)
        stream = AnswerStream(len(nodes), self.refusal)

        def gen() -> Iterator[str]:
            for delta in deltas:
                out = stream.feed(delta)
                if out:
                    yield out
            rest = stream.finish()
            if rest:
                yield rest
            self._finish(metadata, nodes, stream.answer)  # type: ignore[arg-type]

        return StreamingResponse(gen(), source_nodes=nodes, metadata=metadata)

    def _astream(
        self, question: str, nodes: list[NodeWithScore], deltas: AsyncIterator[str]
    ) -> AsyncStreamingResponse:
        metadata = self._base_metadata(question, nodes)
        stream = AnswerStream(len(nodes), self.refusal)

        async def gen() -> AsyncIterator[str]:
            async for delta in deltas:
                out = stream.feed(delta)
                if out:
                    yield out
            rest = stream.finish()
            if rest:
                yield rest
            self._finish(metadata, nodes, stream.answer)  # type: ignore[arg-type]

        return AsyncStreamingResponse(gen(), source_nodes=nodes, metadata=metadata)

    # ----------------------------------------------------------------- hooks
    @contextmanager
    def _synthesis(self, query_bundle: QueryBundle) -> Iterator[dict[str, Any]]:
        """Wrap answering in a SYNTHESIZE callback event and Synthesize{Start,End}Event, like core.

        Retrieval needs no event of its own: the retriever emits RETRIEVE itself.
        """
        dispatcher.event(SynthesizeStartEvent(query=query_bundle))
        out: dict[str, Any] = {}
        with self.callback_manager.event(
            CBEventType.SYNTHESIZE, payload={EventPayload.QUERY_STR: query_bundle.query_str}
        ) as event:
            yield out
            event.on_end(payload={EventPayload.RESPONSE: out["response"]})
        dispatcher.event(SynthesizeEndEvent(query=query_bundle, response=out["response"]))

    def _answer(self, query_bundle: QueryBundle, nodes: list[NodeWithScore]) -> RESPONSE_TYPE:
        question = query_bundle.query_str
        if not nodes:
            return self._refusal_response(question)
        messages = self.messages(query_bundle, nodes)
        if self.streaming:
            chunks = self.llm.stream_chat(messages)
            return self._stream(question, nodes, (c.delta or "" for c in chunks))
        return self._complete(question, nodes, self.llm.chat(messages).message.content or "")

    async def _aanswer(
        self, query_bundle: QueryBundle, nodes: list[NodeWithScore]
    ) -> RESPONSE_TYPE:
        question = query_bundle.query_str
        if not nodes:
            return self._refusal_response(question, asynchronous=True)
        messages = self.messages(query_bundle, nodes)
        if self.streaming:
            chunks = await self.llm.astream_chat(messages)
            return self._astream(question, nodes, _deltas(chunks))
        answer = (await self.llm.achat(messages)).message.content or ""
        return self._complete(question, nodes, answer)

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        payload = {EventPayload.QUERY_STR: query_bundle.query_str}
        with self.callback_manager.event(CBEventType.QUERY, payload=payload) as query_event:
            nodes = self.retrieve(query_bundle)
            with self._synthesis(query_bundle) as out:
                out["response"] = self._answer(query_bundle, nodes)
            query_event.on_end(payload={EventPayload.RESPONSE: out["response"]})
        return out["response"]

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        payload = {EventPayload.QUERY_STR: query_bundle.query_str}
        with self.callback_manager.event(CBEventType.QUERY, payload=payload) as query_event:
            nodes = await self.aretrieve(query_bundle)
            with self._synthesis(query_bundle) as out:
                out["response"] = await self._aanswer(query_bundle, nodes)
            query_event.on_end(payload={EventPayload.RESPONSE: out["response"]})
        return out["response"]


def _check_system_prompt(template: str, refusal: str) -> None:
    """A clear error for a system prompt without the refusal, or with slots other than ``{refusal}``."""
    if "{refusal}" not in template and refusal not in template:
        raise ValueError("system_prompt must contain '{refusal}' (or the refusal sentence itself).")
    try:
        template.format(refusal=refusal)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"system_prompt may only have the slot {{refusal}} ({exc!r}); write literal braces "
            "as '{{' and '}}'."
        ) from exc


async def _one(text: str) -> AsyncIterator[str]:
    yield text


async def _deltas(chunks: Any) -> AsyncIterator[str]:
    async for chunk in chunks:
        yield chunk.delta or ""
