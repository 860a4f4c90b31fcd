"""Everything one pipeline run shares between its steps: paths, settings, and what is served.

``RunContext`` reads each step's output back from the work folder on first use
(so a resumed run continues where the last one stopped) and knows which part
is *served*: the tuned one where it was promoted, else the one it would have
replaced. Steps call it; users do not need it.

Work folder layout::

    state.json              finished steps (pipeline.state)
    nodes.json              parsed nodes
    index/baseline/         the untuned hybrid retriever (persisted)
    index/served/           the hybrid over the promoted encoder and fusion (when they differ)
    data/queries.json       resolved questions with their split
    data/retrieval.json     training pairs with hard negatives
    encoder/ reranker/ decoder/   the engines' folders (checkpoints, final/, decision.json)
    evaluation.json         what the evaluate step measured

Example::

    ctx = RunContext(config, work="runs/work", state=state)
    engine = ctx.query_engine(filters={"store": "grocery"})      # the served stack
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.pipeline.config import PipelineConfig
from llama_index_ragtune.pipeline.state import RunState

if TYPE_CHECKING:
    from llama_index.core.schema import BaseNode

    from llama_index_ragtune.pipeline.queries import LabelledQuery

logger = logging.getLogger(__name__)


def metadata_filters(filters: Mapping[str, Any] | None) -> Any:
    """``{key: value}`` as LlamaIndex ``MetadataFilters`` (all must match), or None when empty.

    Example::

        metadata_filters({"store": "grocery"})      # MetadataFilters([store == grocery])
    """
    if not filters:
        return None
    from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

    return MetadataFilters(filters=[MetadataFilter(key=k, value=v) for k, v in filters.items()])


class RunContext:
    """Shared state of one run (see the module docstring)."""

    def __init__(
        self,
        config: PipelineConfig,
        work: str | Path,
        state: RunState,
        documents: Any = None,
        metadata: str | Path | None = None,
        queries: str | Path | None = None,
        feedback: Any = None,
        synthetic_llm: Any = None,
        skip: tuple[str, ...] = (),
        resume: bool = False,
    ) -> None:
        self.config = config
        self.work = Path(work)
        self.state = state
        self.documents_source = documents
        self.metadata = metadata
        self.queries_source = queries
        self.feedback = feedback
        self.synthetic_llm = synthetic_llm
        self.skip = skip
        self.resume = resume
        self.deadline: float | None = None  # time.time() by which a time-limited run ends
        # SHA-256 of the queries file as the run read it when it started (the state's inputs)
        self.queries_sha256: str | None = None
        self.echo: Any = logger.info  # where progress lines go (the pipeline sets its own)
        self._llms: dict[str, Any] = {}
        self._embeds: dict[str, Any] = {}
        self._documents: list[Any] | None = None

    # ------------------------------------------------------------------ paths

    def path(self, *parts: str) -> Path:
        """A path inside the work folder."""
        return self.work.joinpath(*parts)

    # ------------------------------------------------------------------ inputs

    @property
    def documents(self) -> list[Any]:
        """The input documents (read from the folder once)."""
        if self._documents is None:
            from llama_index_ragtune.pipeline.sources import check_documents, read_documents

            source = self.documents_source
            if isinstance(source, (str, Path)):
                self._documents = read_documents(source, metadata=self.metadata)
            else:
                self._documents = check_documents(source or [])
        return self._documents

    @cached_property
    def nodes(self) -> list[BaseNode]:
        from llama_index_ragtune.pipeline.sources import load_nodes

        return load_nodes(self.path("nodes.json"))

    @cached_property
    def node_map(self) -> dict[str, BaseNode]:
        return {n.node_id: n for n in self.nodes}

    @cached_property
    def llm_texts(self) -> dict[str, str]:
        """``{node id: text}`` as the LLM is shown each node (no metadata)."""
        from llama_index_ragtune.pipeline.training_data import corpus_texts

        return corpus_texts(self.nodes, "none")

    @cached_property
    def queries(self) -> list[LabelledQuery]:
        from llama_index_ragtune.pipeline.queries import read_saved_queries

        return read_saved_queries(self.path("data", "queries.json"))

    def split(self, name: str) -> list[LabelledQuery]:
        """``"train"``, ``"test"`` or ``"dev"`` (training questions held out of the decoder)."""
        dev = set(self.state.get("data", "dev_ids", []))
        if name == "dev":
            return [q for q in self.queries if q.id in dev]
        return [q for q in self.queries if q.split == name]

    @cached_property
    def retrieval_dataset(self) -> Any:
        from llama_index_ragtune.data.schema import RetrievalDataset

        return RetrievalDataset.load_json(self.path("data", "retrieval.json"))

    # ------------------------------------------------------------------ models

    @cached_property
    def base_encoder(self) -> str:
        from llama_index_ragtune.models import resolve_model

        return resolve_model(self.config.encoder_model, kind="encoder")

    @cached_property
    def base_decoder(self) -> str:
        from llama_index_ragtune.models import resolve_model

        return resolve_model(self.config.decoder_model, kind="decoder")

    def embed_model(self, path: str) -> Any:
        """The LlamaIndex embedding of a sentence-transformers folder (ONNX when installed)."""
        if path not in self._embeds:
            from llama_index_ragtune.embeddings import default_embed_model

            self._embeds[path] = default_embed_model(path)
        return self._embeds[path]

    def llm(self, path: str) -> Any:
        """A ``LocalChatLLM`` over ``path`` (loaded once per run)."""
        if path not in self._llms:
            from llama_index_ragtune.llms import LocalChatLLM

            self._llms[path] = LocalChatLLM(
                path,
                max_new_tokens=self.config.max_new_tokens,
                device=self.config.device,
                dtype="auto",
            )
        return self._llms[path]

    # ------------------------------------------------------------------ what is served

    @property
    def served_encoder(self) -> str:
        """The promoted encoder's folder, else the starting encoder."""
        return self.state.get("encoder", "served") or self.base_encoder

    @property
    def fusion(self) -> dict[str, Any]:
        """The served fusion parameters (the library preset unless one was chosen)."""
        from llama_index_ragtune.retrievers.defaults import fusion_preset

        return dict(self.state.get("fusion", "params") or fusion_preset(None))

    @property
    def served_reranker(self) -> dict[str, Any] | None:
        """``{"path", "retrieval_weight"}`` of the promoted reranker, or None."""
        return self.state.get("reranker", "served")

    @property
    def served_decoder(self) -> str:
        """The promoted (merged) decoder's folder, else the starting decoder."""
        return self.state.get("decoder", "served") or self.base_decoder

    @cached_property
    def baseline_retriever(self) -> Any:
        from llama_index_ragtune.retrievers import HybridRetriever

        return HybridRetriever.from_persist_dir(
            self.path("index", "baseline"), embed_model=self.embed_model(self.base_encoder)
        )

    def served_retriever(self) -> Any:
        """The hybrid over the served encoder with the served fusion; built (and persisted in
        ``index/served``) the first time they differ from the baseline's."""
        from llama_index_ragtune.retrievers import HybridRetriever

        key = {"encoder": self.served_encoder, "fusion": self.fusion}
        baseline = {"encoder": self.base_encoder, "fusion": self.baseline_retriever.params()}
        if key["encoder"] == baseline["encoder"] and same_fusion(key["fusion"], baseline["fusion"]):
            return self.baseline_retriever
        cached = getattr(self, "_served", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        folder = self.path("index", "served")
        embed = self.embed_model(self.served_encoder)
        if self.state.get("index", "served_key") == key and folder.is_dir():
            retriever = HybridRetriever.from_persist_dir(folder, embed_model=embed)
        else:
            params = {k: v for k, v in self.fusion.items() if k != "similarity_top_k"}
            retriever = HybridRetriever.from_defaults(
                nodes=self.nodes,
                embed_model=embed,
                similarity_top_k=self.config.similarity_top_k,
                show_progress=self.config.show_progress,
                bm25_kwargs=self.config.bm25_kwargs(),
                **params,
            )
            retriever.persist(folder)
            self.state.data["steps"].setdefault("index", {})["served_key"] = key
            self.state.save()
        self._served = (key, retriever)
        return retriever

    def reranker(self) -> Any:
        """The served reranker as a ``CrossEncoderRerank``, or None."""
        served = self.served_reranker
        if not served:
            return None
        cached = getattr(self, "_reranker", None)
        if cached is None or cached.model != served["path"]:
            from llama_index_ragtune.postprocessor import CrossEncoderRerank

            cached = CrossEncoderRerank(
                model=served["path"],
                top_n=self.config.similarity_top_k,
                retrieval_weight=served.get("retrieval_weight") or 0.0,
                device=self.config.device,
            )
            self._reranker = cached
        return cached

    def ranked_nodes(self, question: str, filters: Mapping[str, Any] | None, served: bool = True):
        """The served stack's (or the baseline's) ranked nodes for one question."""
        retriever = self.served_retriever() if served else self.baseline_retriever
        reranker = self.reranker() if served else None
        top_k = self.config.rerank_candidates if reranker else self.config.similarity_top_k
        filtered = retriever.with_filters(metadata_filters(filters))
        filtered.similarity_top_k = top_k
        hits = filtered.retrieve(question)
        if reranker is not None:
            hits = reranker.postprocess_nodes(hits, query_str=question)
        return hits

    def query_engine(
        self,
        llm: Any,
        filters: Mapping[str, Any] | None = None,
        served: bool = True,
        refusal_policy: Any = None,
    ) -> Any:
        """A ``CitationQueryEngine`` over the served stack (or the baseline) with ``filters``
        (and ``refusal_policy``)."""
        from llama_index_ragtune.query_engine import CitationQueryEngine

        retriever = (self.served_retriever() if served else self.baseline_retriever).with_filters(
            metadata_filters(filters)
        )
        reranker = self.reranker() if served else None
        if reranker is not None:
            retriever.similarity_top_k = self.config.rerank_candidates
        return CitationQueryEngine(
            retriever,
            llm=llm,
            node_postprocessors=[reranker] if reranker is not None else None,
            max_sources=self.config.max_sources,
            max_source_chars=self.config.max_source_chars,
            refusal_policy=refusal_policy,
        )


def same_fusion(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two hybrid parameter dicts fuse alike (mode, weight, RRF k and both depths).

    Example::

        from llama_index_ragtune.pipeline.context import same_fusion

        same_fusion({"fusion_mode": "rrf", "rrf_k": 60}, {"fusion_mode": "rrf", "rrf_k": 60})  # True
    """
    keys = ("fusion_mode", "alpha", "rrf_k", "dense_top_k", "sparse_top_k")
    return all(a.get(k) == b.get(k) for k in keys)
