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
- no retrieved node, or a question with no visible character (only whitespace,
  control or direction marks) -> the refusal, without calling the LLM; an answer that
  says nothing (no letter or digit once its citation markers are removed: ``""``,
  ``"[1]"``) -> the refusal too, ``metadata["empty_answer"]``, streamed or whole;
- a marker inside a quote copied from a source that holds it (``"Smith [1]
  found ..."`` quoted from source 2), or copied unquoted with the source's words
  around it (``Smith [1] found it``), is that source's footnote, not a citation.
- sources past the LLM's context window (``metadata.context_window`` less its
  ``num_output``, as core's ``PromptHelper`` reserves) are fitted, not fatal: the
  lowest-ranked ones left out, the last kept one cut at a sentence boundary
  (:meth:`CitationQueryEngine.fit_prompt`, ``metadata["left_out_node_ids"]`` /
  ``["cut_node_ids"]``); only a question that cannot fit alone is a ``ValueError``;
- an answer the LLM cut at its token limit (``finish_reason`` ``"length"``) is
  ``metadata["truncated"]``, and a citation only its cut last sentence makes is not counted.

``Response.metadata`` (:mod:`~llama_index_ragtune.query_engine.response_metadata`)
maps each citation to its node id and says whether the answer was refused and
why (``refusal_decision``: which signal, value, threshold), which answered
claims lack a citation (``post_check``) and whether its quotes are in the
sources it cites (``quotes``).
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

Its parts, one module each: ``retrieved_nodes`` (the numbered sources, checked),
``prompt_fit`` (the context window), ``answering`` (the sync and async answer paths),
``responses`` (the refusal, a whole or a streamed answer), ``response_metadata``,
``post_check`` and ``engine_checks`` (clear errors for what the engine is given).

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

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.base.response.schema import RESPONSE_TYPE
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
    build_messages,
    truncate_source,
)
from llama_index_ragtune.query_engine.answering import aanswer, answer
from llama_index_ragtune.query_engine.engine_checks import (
    check_llm,
    check_llm_enabled,
    check_llm_type,
    check_query_type,
    check_system_prompt,
    is_local,
)
from llama_index_ragtune.query_engine.engine_settings import EngineSettings
from llama_index_ragtune.query_engine.postprocessor_wiring import wired
from llama_index_ragtune.query_engine.prompt_fit import (
    PromptFit,
    fit_sources,
    prompt_budget,
    token_counter,
)
from llama_index_ragtune.query_engine.retrieved_nodes import aretrieve_sources, retrieve_sources
from llama_index_ragtune.retrievers.checks import positive_int

__all__ = ["CitationQueryEngine"]

dispatcher = get_dispatcher(__name__)


class CitationQueryEngine(EngineSettings, BaseQueryEngine):
    """Retrieve, number the nodes as sources, answer with ``[n]`` citations or refuse, and check the citations.

    Args:
        retriever: any LlamaIndex retriever (``HybridRetriever``, a vector index retriever, BM25...).
        llm: the answering LLM; ``None`` uses ``Settings.llm`` (a ``ValueError`` at query
            time when that is disabled, ``Settings.llm = None``: its ``MockLLM`` echoes the prompt).
        node_postprocessors: applied in order after retrieval (e.g. ``CrossEncoderRerank``);
            their events go to this engine's callback manager (one that another engine
            already reports through is copied for this engine, not taken from it).
        refusal: the exact sentence the model must use when the sources lack the answer
            (``ValueError`` if blank or citing).
        system_prompt: system message template with a ``{refusal}`` slot.
        max_sources: keep at most this many nodes (after postprocessing) as sources.
        max_source_chars: cut each source's text to this many characters (word boundary).
        metadata_mode: which node metadata is shown with the text (default: none).
        streaming: return streaming responses.
        refusal_policy: a ``RefusalPolicy`` (``llms.refusal_policy``) deciding before the
            LLM is called whether to refuse; a policy that reads the decoder's P(refusal)
            needs a ``LocalChatLLM``, an answerability-only one works with any LLM.
        uncited: ``"flag"`` (report answered claims without a valid citation) or
            ``"cite"`` (give each the source the model finds most likely; not with
            ``streaming``).
        prompt_helper: the ``PromptHelper`` whose ``context_window`` / ``num_output`` the
            prompt is fitted to, as core's engines take it; ``None`` uses one set on
            ``Settings``, else the LLM's metadata (``prompt_fit.prompt_budget``).

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
        refusal_policy: Any | None = None,
        uncited: str = "flag",
        prompt_helper: Any | None = None,
    ) -> None:
        # each setting is checked as it is assigned, here and on a built engine (EngineSettings)
        self.prompt_helper = prompt_helper
        self.refusal_policy = refusal_policy
        self.uncited = uncited
        self.streaming = streaming
        self.max_sources = max_sources
        self.max_source_chars = max_source_chars
        self.metadata_mode = metadata_mode
        self.refusal = refusal
        self.system_prompt = system_prompt
        self._retriever = retriever
        self._llm = llm
        self._node_postprocessors = list(node_postprocessors or [])
        if llm is not None:
            check_llm_type(llm, streaming)
            check_llm(llm, refusal_policy, uncited)
        callback_manager = callback_manager or Settings.callback_manager
        self._node_postprocessors = [
            wired(postprocessor, callback_manager) for postprocessor in self._node_postprocessors
        ]
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
        """An engine over ``index.as_retriever(similarity_top_k=...)`` (an integer >= 1)."""
        # checked here: core's retrievers take 0 as "every node", -1 as "none" and 2.5 as 2
        similarity_top_k = positive_int(similarity_top_k, "similarity_top_k")
        if not hasattr(index, "as_retriever"):
            raise TypeError(
                f"from_index needs a llama_index index (with as_retriever), got "
                f"{type(index).__name__}; pass a retriever to CitationQueryEngine(...) instead"
            )
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
            check_system_prompt(template, self.refusal)
            self.system_prompt = template

    # ---------------------------------------------------------------- sources
    def retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """Retrieved, postprocessed and capped nodes: source ``n`` is ``nodes[n - 1]``.

        Each node is one source, once (a node given twice keeps its first place); a node
        showing no text in ``metadata_mode`` (an image, a blank node) is skipped with a
        warning. What the retriever or a postprocessor returns must be a list of
        ``NodeWithScore`` (``TypeError`` naming it otherwise: ``None`` is not "nothing found").
        """
        return retrieve_sources(
            self._retriever,
            self._node_postprocessors,
            query_bundle,
            self.max_sources,
            self.metadata_mode,
        )

    async def aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """Async twin of :meth:`retrieve` (``aretrieve`` and ``apostprocess_nodes``)."""
        return await aretrieve_sources(
            self._retriever,
            self._node_postprocessors,
            query_bundle,
            self.max_sources,
            self.metadata_mode,
        )

    def source_texts(self, nodes: Sequence[NodeWithScore]) -> list[str]:
        """The text shown for each source (metadata per ``metadata_mode``, cut to ``max_source_chars``)."""
        return [
            truncate_source(
                n.node.get_content(metadata_mode=self.metadata_mode), self.max_source_chars
            )
            for n in nodes
        ]

    # ----------------------------------------------------------------- prompt
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

    def fit_prompt(self, question: str, nodes: Sequence[NodeWithScore]) -> PromptFit:
        """The sources that fit the LLM's context window with its answer budget, as
        LlamaIndex's ``PromptHelper`` fits chunks: lowest-ranked ones left out, the last kept
        one cut at a sentence boundary (``prompt_fit.fit_sources``); ``ValueError`` when
        the question alone does not fit.

        Example::

            fit = engine.fit_prompt("Capital of Italy?", engine.retrieve(QueryBundle("Italy")))
            fit.nodes, fit.left_out_node_ids
        """
        llm, nodes = self.llm, list(nodes)
        budget = prompt_budget(llm, self.prompt_helper)
        if budget is None or not nodes:
            return PromptFit(nodes)
        window, num_output = budget
        if self._scores_refusal(llm):  # P(refusal | prompt) reads the refusal after the prompt
            num_output = max(num_output, len(llm.refusal_token_ids()))
        return fit_sources(
            question,
            nodes,
            lambda shown: self.messages(question, shown),
            token_counter(llm),
            window,
            num_output,
            llm_name=type(llm).__name__,
            metadata_mode=self.metadata_mode,
        )

    def _scores_refusal(self, llm: Any) -> bool:
        """Whether answering reads the decoder's P(refusal) (this engine's policy or the LLM's)."""
        if not is_local(llm) or not hasattr(llm, "refusal_token_ids"):
            return False
        policies = (self.refusal_policy, llm.active_refusal_policy())
        return any(p is not None and p.uses_decoder for p in policies)

    # ---------------------------------------------------------------- refusal
    def decide_refusal(
        self, question: str, nodes: Sequence[NodeWithScore], messages: Sequence[ChatMessage]
    ) -> Any:
        """The ``refusal_policy``'s decision for this question and these sources (None without one)."""
        policy = self.refusal_policy
        if policy is None:
            return None
        llm = self.llm
        check_llm(llm, policy, self.uncited)
        probabilities = (
            llm.conversation_refusal_probabilities([messages]) if policy.uses_decoder else None
        )
        return policy.decide([question], [self.source_texts(nodes)], probabilities)[0]

    # ---------------------------------------------------------------- queries
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

    def query(self, str_or_query_bundle: str | QueryBundle) -> RESPONSE_TYPE:
        """Answer a question (``str`` or ``QueryBundle``) with citations; see the class docs."""
        check_query_type(str_or_query_bundle)
        self._check_settings_llm()
        return super().query(str_or_query_bundle)

    async def aquery(self, str_or_query_bundle: str | QueryBundle) -> RESPONSE_TYPE:
        """Async twin of :meth:`query`."""
        check_query_type(str_or_query_bundle)
        self._check_settings_llm()
        return await super().aquery(str_or_query_bundle)

    def _check_settings_llm(self) -> None:
        # an engine built without an LLM answers with Settings.llm as it is at query time
        # (set or changed after the engine was built): the constructor's checks run on it now
        # (uncited='cite' on an LLM without citation_probabilities was served "unchecked")
        # an LLM that cannot chat (a name, an embedding model) fails here, before retrieval;
        # an unset Settings.llm is not resolved here (a query retrieving nothing needs none);
        # Settings.llm = None (a MockLLM echoing the prompt) fails here too, retrieval or not
        given = self._llm if self._llm is not None else getattr(Settings, "_llm", None)
        if given is not None:
            check_llm_type(
                given, self.streaming, "llm" if self._llm is not None else "Settings.llm"
            )
        if self._llm is None:
            check_llm_enabled(given)
        if self._llm is None and (self.uncited == "cite" or self.refusal_policy is not None):
            check_llm(self.llm, self.refusal_policy, self.uncited)

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        payload = {EventPayload.QUERY_STR: query_bundle.query_str}
        with self.callback_manager.event(CBEventType.QUERY, payload=payload) as query_event:
            nodes = self.retrieve(query_bundle)
            with self._synthesis(query_bundle) as out:
                out["response"] = answer(self, query_bundle, nodes)
            query_event.on_end(payload={EventPayload.RESPONSE: out["response"]})
        return out["response"]

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        payload = {EventPayload.QUERY_STR: query_bundle.query_str}
        with self.callback_manager.event(CBEventType.QUERY, payload=payload) as query_event:
            nodes = await self.aretrieve(query_bundle)
            with self._synthesis(query_bundle) as out:
                out["response"] = await aanswer(self, query_bundle, nodes)
            query_event.on_end(payload={EventPayload.RESPONSE: out["response"]})
        return out["response"]
