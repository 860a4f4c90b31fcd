"""The retrieval systems compared by ``ragtune bench retrieval``, each built and timed.

Stock LlamaIndex pieces (``llama-index-retrievers-bm25``'s ``BM25Retriever``, a
``VectorStoreIndex`` with ``HuggingFaceEmbedding`` in PyTorch, and
``QueryFusionRetriever`` RRF over the two: the anchor) next to ours (BM25Retriever,
FAISS dense with ONNX Runtime query encoding, HybridRetriever in each fusion mode,
and the hybrid + cross-encoder reranker). Without ``llama-index-retrievers-bm25``
(the ``bench`` extra) the stock BM25 row and the anchor are skipped, with a message.

Example::

    corpus = BenchCorpus.from_beir(load_beir("../shared/data/scifact"), cache_dir=".ragtune_cache/embeddings")
    vectors, seconds, cached = corpus.embed(default_embed_model(backend="onnx"))
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import MetadataMode, TextNode

from llama_index_ragtune.embeddings.cached import EmbeddingStore, model_identity

__all__ = [
    "BenchCorpus",
    "System",
    "build_anchor",
    "build_dense",
    "build_stock_bm25",
    "build_stock_dense",
]

EVAL_DEPTH = 100
STOCK_BM25 = "BM25 (llama-index BM25Retriever)"
ANCHOR = "QueryFusionRetriever RRF (anchor)"
STOCK_BM25_MISSING = (
    "llama-index-retrievers-bm25 is not installed (a reference row only, not a dependency of "
    'the library); install it with `pip install -e ".[bench]"` to add this row'
)


@dataclass
class System:
    """One benchmarked retriever (plus postprocessors) and what building it cost."""

    name: str
    retriever: Any
    postprocessors: list = field(default_factory=list)
    index_seconds: float = 0.0
    notes: str = ""
    group: str = "main"


@dataclass
class EmbeddedCorpus:
    """Corpus vectors from one encoder, and how they were obtained."""

    vectors: np.ndarray
    seconds: float
    computed: int
    cached: int


class BenchCorpus:
    """The benchmark's nodes (one per BEIR document, id = doc id) and an optional vector cache."""

    def __init__(self, nodes: list[TextNode], cache_dir: str | Path | None = None) -> None:
        self.nodes = nodes
        self.texts = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None

    @classmethod
    def from_beir(cls, dataset: Any, cache_dir: str | Path | None = None) -> BenchCorpus:
        nodes = [
            TextNode(
                id_=doc.id_,
                text=doc.text,
                metadata=dict(doc.metadata),
                excluded_embed_metadata_keys=list(doc.excluded_embed_metadata_keys),
                excluded_llm_metadata_keys=list(doc.excluded_llm_metadata_keys),
            )
            for doc in dataset.documents
        ]
        return cls(nodes, cache_dir)

    def _store(self, embed: BaseEmbedding) -> EmbeddingStore | None:
        if self.cache_dir is None:
            return None
        from llama_index_ragtune.embeddings.cached import CachedEmbedding

        return CachedEmbedding(embed, cache_dir=self.cache_dir).store

    def embed(
        self, embed: BaseEmbedding, force: bool = False, show_progress: bool = True
    ) -> EmbeddedCorpus:
        """Corpus vectors: from the cache where present (unless ``force``), the rest computed and timed.

        Texts are embedded longest first (dynamic padding), in the model's own batch size.
        """
        store = self._store(embed)
        keys = [EmbeddingStore.key(t) for t in self.texts]
        found: dict[bytes, np.ndarray] = {}
        if store is not None and not force:
            found, _ = store.get_many(list(dict.fromkeys(keys)))
        todo = sorted(
            {k: i for i, k in enumerate(keys) if k not in found}.values(),
            key=lambda i: -len(self.texts[i]),
        )
        seconds = 0.0
        if todo:
            start = time.perf_counter()
            vectors = embed.get_text_embedding_batch(
                [self.texts[i] for i in todo], show_progress=show_progress
            )
            seconds = time.perf_counter() - start
            new = [
                (keys[i], np.asarray(v, dtype=np.float32))
                for i, v in zip(todo, vectors, strict=True)
            ]
            if store is not None:
                store.put_many(new)
            found.update(new)
        matrix = np.stack([found[k] for k in keys]).astype(np.float32)
        return EmbeddedCorpus(matrix, seconds, computed=len(todo), cached=len(keys) - len(todo))

    def time_encoders(
        self, embeds: dict[str, BaseEmbedding], chunks: int = 12, show_progress: bool = True
    ) -> dict[str, EmbeddedCorpus]:
        """Embed the whole corpus with every encoder (no cache read), timed *interleaved*.

        The length-sorted corpus is cut into ``chunks`` slices and each slice is embedded
        by every encoder in turn (rotating the order), so load changes on a shared machine
        hit all encoders alike. The vectors are written to the cache.
        """
        from tqdm.auto import tqdm

        order = sorted(range(len(self.texts)), key=lambda i: -len(self.texts[i]))
        size = max(1, -(-len(order) // chunks))
        slices = [order[start : start + size] for start in range(0, len(order), size)]
        names = list(embeds)
        seconds = dict.fromkeys(names, 0.0)
        vectors: dict[str, dict[int, list[float]]] = {name: {} for name in names}
        for position, rows in enumerate(
            tqdm(slices, desc="timing encoders", disable=not show_progress)
        ):
            shift = position % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                out = embeds[name].get_text_embedding_batch([self.texts[i] for i in rows])
                seconds[name] += time.perf_counter() - start
                vectors[name].update(zip(rows, out, strict=True))
        result = {}
        for name in names:
            matrix = np.asarray(
                [vectors[name][i] for i in range(len(self.texts))], dtype=np.float32
            )
            store = self._store(embeds[name])
            if store is not None:
                keys = [EmbeddingStore.key(t) for t in self.texts]
                store.put_many(list(zip(keys, matrix, strict=True)))
            result[name] = EmbeddedCorpus(matrix, seconds[name], computed=len(self.texts), cached=0)
        return result

    def nodes_with(self, vectors: np.ndarray) -> list[TextNode]:
        """Copies of the nodes carrying ``vectors`` as embeddings."""
        out = []
        for node, vector in zip(self.nodes, vectors, strict=True):
            copy_ = node.model_copy()
            copy_.embedding = vector.tolist()
            out.append(copy_)
        return out


def _cache_note(embedded: EmbeddedCorpus) -> str:
    if embedded.computed == 0:
        return "corpus vectors from cache"
    if embedded.cached:
        return f"{embedded.cached} corpus vectors from cache"
    return ""


def build_stock_bm25(corpus: BenchCorpus) -> System | None:
    """llama-index-retrievers-bm25 as documented (bm25s, English stemmer); None when the
    package is not installed (``STOCK_BM25_MISSING`` says how to add it)."""
    try:
        from llama_index.retrievers.bm25 import BM25Retriever as LlamaIndexBM25
    except ImportError:
        return None
    start = time.perf_counter()
    retriever = LlamaIndexBM25.from_defaults(nodes=corpus.nodes, similarity_top_k=EVAL_DEPTH)
    return System(STOCK_BM25, retriever, index_seconds=time.perf_counter() - start)


def build_bm25(corpus: BenchCorpus) -> System:
    from llama_index_ragtune.retrievers import BM25Retriever

    start = time.perf_counter()
    retriever = BM25Retriever(corpus.nodes, similarity_top_k=EVAL_DEPTH)
    return System(
        "BM25 (ragtune BM25Retriever)", retriever, index_seconds=time.perf_counter() - start
    )


def build_stock_dense(
    corpus: BenchCorpus, embed: BaseEmbedding, name: str
) -> tuple[System, EmbeddedCorpus]:
    """``VectorStoreIndex`` (default in-memory vector store) with a PyTorch ``HuggingFaceEmbedding``."""
    from llama_index.core import VectorStoreIndex

    start = time.perf_counter()
    embedded = corpus.embed(embed)
    index = VectorStoreIndex(corpus.nodes_with(embedded.vectors), embed_model=embed)
    retriever = index.as_retriever(similarity_top_k=EVAL_DEPTH)
    seconds = time.perf_counter() - start
    return System(name, retriever, index_seconds=seconds, notes=_cache_note(embedded)), embedded


def build_dense(
    corpus: BenchCorpus, embed: BaseEmbedding, name: str
) -> tuple[System, Any, EmbeddedCorpus]:
    """Our FAISS dense side (``VectorStoreIndex`` on ``FilterableFaissVectorStore``); returns the index too."""
    from llama_index_ragtune.retrievers import build_faiss_index

    start = time.perf_counter()
    embedded = corpus.embed(embed)
    index = build_faiss_index(corpus.nodes_with(embedded.vectors), embed)
    retriever = index.as_retriever(similarity_top_k=EVAL_DEPTH)
    seconds = time.perf_counter() - start
    return (
        System(name, retriever, index_seconds=seconds, notes=_cache_note(embedded)),
        index,
        embedded,
    )


def build_hybrid(
    index: Any,
    bm25: System,
    dense: System,
    embed: BaseEmbedding,
    mode: str,
    top_k: int = EVAL_DEPTH,
    name: str | None = None,
    **params: Any,
) -> System:
    from llama_index_ragtune.retrievers import HybridRetriever

    retriever = HybridRetriever(
        sparse_retriever=copy.copy(bm25.retriever),
        index=index,
        embed_model=embed,
        fusion_mode=mode,
        similarity_top_k=top_k,
        **params,
    )
    settings = retriever.params()
    detail = f"alpha={settings['alpha']:g}" + (
        f", k={settings['rrf_k']:g}" if mode == "rrf" else ""
    )
    detail += f", depth {settings['dense_top_k']}/{settings['sparse_top_k']}"
    return System(
        name or f"hybrid {mode} (ragtune)",
        retriever,
        index_seconds=dense.index_seconds + bm25.index_seconds,
        notes=detail + (f"; {dense.notes}" if dense.notes else ""),
    )


def build_anchor(stock_dense: System, stock_bm25: System, use_async: bool = False) -> System:
    """LlamaIndex ``QueryFusionRetriever`` RRF (num_queries=1) over the stock dense and BM25 retrievers."""
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever

    retriever = QueryFusionRetriever(
        [stock_dense.retriever, stock_bm25.retriever],
        llm=MockLLM(),
        mode="reciprocal_rerank",
        num_queries=1,
        similarity_top_k=EVAL_DEPTH,
        use_async=use_async,
    )
    return System(
        ANCHOR,
        retriever,
        index_seconds=stock_dense.index_seconds + stock_bm25.index_seconds,
        notes=f"stock BM25 + stock dense, use_async={use_async}",
    )


def build_reranked(hybrid: System, reranker_path: str, depth: int, top_n: int = 10) -> System:
    from llama_index_ragtune.postprocessor import CrossEncoderRerank

    retriever = copy.copy(hybrid.retriever)
    retriever.similarity_top_k = depth
    reranker = CrossEncoderRerank(model=reranker_path, top_n=top_n)
    return System(
        f"{hybrid.name} + CrossEncoderRerank",
        retriever,
        postprocessors=[reranker],
        index_seconds=hybrid.index_seconds,
        notes=f"rerank top {depth} -> {top_n} ({Path(reranker_path).name})",
    )


def identity_label(embed: BaseEmbedding) -> str:
    """A short human label of an encoder for tables."""
    return model_identity(embed).split("|")[0]
