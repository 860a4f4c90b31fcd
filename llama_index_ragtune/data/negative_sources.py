"""Candidate scorers for hard-negative mining: BM25 (bm25s), dense (bi-encoder), cross-encoder.

Each corpus scorer is built once over a corpus and answers a batch of queries
with their top-k candidates plus the scores of given documents (the positives,
for margin filtering), so that no queries x documents matrix is ever held.

Example::

    scorer = BM25Scorer(["Apple iPhone returns", "Fresh apples: returns within 7 days"])
    top_scores, top_idx, pos_scores = scorer.search(["apple return policy"], k=2, extra=[[1]])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llama_index_ragtune.embeddings.fingerprint import encoder_identity
from llama_index_ragtune.embeddings.store import open_store

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from sentence_transformers import CrossEncoder, SentenceTransformer

logger = logging.getLogger(__name__)

SearchResult = tuple[np.ndarray, np.ndarray, list[np.ndarray]]
"""(top scores [B, k] best first, top doc indices [B, k] with -1 for no candidate,
scores of the requested extra docs per query)."""


class BM25Scorer:
    """Okapi BM25 over a corpus: the package's one BM25 (English Snowball stemmer, stopwords).

    The same tokenizer and scoring as :class:`~llama_index_ragtune.retrievers.BM25Retriever`
    (:class:`~llama_index_ragtune.retrievers.bm25_index.BM25Index`); ``analyzer`` is the
    retriever's (``"plain"`` or ``"unicode"``: give the one the served retriever uses, so
    negatives are mined as it ranks). Only documents sharing at least one term with the
    query (score > 0) are returned.

    Example::

        scorer = BM25Scorer(["退货政策：十四天内", "配送费用"], analyzer="unicode")
        scorer.search(["退货"], k=1, extra=[[]])[1]     # array([[0]])
    """

    name = "bm25"

    def __init__(
        self,
        texts: Sequence[str],
        language: str = "english",
        stopwords: str | list[str] | None = "en",
        k1: float = 1.5,
        b: float = 0.75,
        show_progress: bool = True,
        analyzer: str = "plain",
    ) -> None:
        from llama_index_ragtune.retrievers.bm25_index import BM25Index, BM25Tokenizer

        self.analyzer = analyzer
        self._index = BM25Index.build(
            texts,
            BM25Tokenizer(language or None, stopwords, analyzer=analyzer),
            k1=k1,
            b=b,
            show_progress=show_progress,
        )
        self.num_docs = len(texts)

    def search(
        self, queries: Sequence[str], k: int, extra: Sequence[Sequence[int]]
    ) -> SearchResult:
        k = min(k, self.num_docs)
        top_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        top_idx = np.full((len(queries), k), -1, dtype=np.int64)
        extra_scores: list[np.ndarray] = []
        for row, query in enumerate(queries):
            scores = self._index.get_scores(query)
            extra_scores.append(scores[np.asarray(extra[row], dtype=np.int64)].astype(np.float32))
            keep = self._index.top(scores, k)
            top_idx[row, : len(keep)] = keep
            top_scores[row, : len(keep)] = scores[keep]
        return top_scores, top_idx, extra_scores


class DenseScorer:
    """Cosine similarity with a bi-encoder, corpus embedded once (batched, normalised).

    Args:
        model: ``None`` (bundled MiniLM), a path or hub id, a ``SentenceTransformer``, or a
            LlamaIndex ``BaseEmbedding``.
        corpus_embeddings: precomputed ``[num_docs, dim]`` embeddings in corpus order
            (skips embedding the corpus).
        cache_dir: folder where corpus embeddings are kept between runs: the package's
            embedding store (:mod:`~llama_index_ragtune.embeddings.store`), keyed by the
            content of the model's weights and each text, so a model retrained in place
            is embedded afresh.
    """

    name = "dense"

    def __init__(
        self,
        texts: Sequence[str],
        doc_ids: Sequence[str],
        model: str | SentenceTransformer | BaseEmbedding | None = None,
        corpus_embeddings: np.ndarray | None = None,
        cache_dir: str | Path | None = None,
        batch_size: int = 64,
        show_progress: bool = True,
    ) -> None:
        import faiss

        self._batch_size = batch_size
        self._show_progress = show_progress
        self._model = _load_encoder(model)
        if corpus_embeddings is None and cache_dir is not None:
            store = open_store(cache_dir, _identity(self._model))
            corpus_embeddings, counts = store.fetch_or_embed(
                list(texts), lambda batch: self._encode(batch, is_query=False)
            )
            logger.info(
                "dense scorer: %d corpus embeddings read from %s, %d embedded",
                counts["hits"],
                store.path,
                counts["misses"],
            )
        if corpus_embeddings is None:
            corpus_embeddings = self._encode(list(texts), is_query=False)
        if corpus_embeddings.ndim != 2 or corpus_embeddings.shape[0] != len(texts):
            raise ValueError(
                f"corpus_embeddings must have shape [num_docs={len(texts)}, dim], "
                f"got {tuple(corpus_embeddings.shape)} (rows follow the dataset's corpus order)"
            )
        self._index = faiss.IndexFlatIP(int(corpus_embeddings.shape[1]))
        for start in range(0, len(texts), 16384):
            chunk = np.asarray(corpus_embeddings[start : start + 16384], dtype=np.float32)
            self._index.add(_normalise(chunk))
        self.num_docs = len(texts)

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        model = self._model
        if hasattr(model, "get_text_embedding_batch"):  # LlamaIndex BaseEmbedding
            if is_query:
                vectors = [model.get_query_embedding(t) for t in texts]
            else:
                vectors = model.get_text_embedding_batch(texts, show_progress=self._show_progress)
            return _normalise(np.asarray(vectors, dtype=np.float32))
        encode = getattr(model, "encode_query" if is_query else "encode_document", model.encode)
        out = encode(
            texts,
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=self._show_progress and not is_query,
        )
        return np.asarray(out, dtype=np.float32)

    def search(
        self, queries: Sequence[str], k: int, extra: Sequence[Sequence[int]]
    ) -> SearchResult:
        k = min(k, self.num_docs)
        q = self._encode(list(queries), is_query=True)
        top_scores, top_idx = self._index.search(q, k)
        extra_scores = []
        for row, docs in enumerate(extra):
            docs = np.asarray(docs, dtype=np.int64)
            vectors = (
                np.stack([self._index.reconstruct(int(d)) for d in docs])
                if len(docs)
                else np.zeros((0, q.shape[1]), np.float32)
            )
            extra_scores.append((vectors @ q[row]).astype(np.float32))
        return top_scores, top_idx.astype(np.int64), extra_scores


def load_cross_encoder_scorer(
    cross_encoder: str | CrossEncoder | Callable[[list[tuple[str, str]]], Sequence[float]],
    batch_size: int = 32,
) -> Callable[[list[tuple[str, str]]], np.ndarray]:
    """A function scoring (query, passage) pairs: from a CrossEncoder folder/hub id/instance,
    or any callable taking a list of pairs and returning one float per pair."""
    if isinstance(cross_encoder, str | Path):
        from sentence_transformers import CrossEncoder

        from llama_index_ragtune.models import load_model

        cross_encoder = load_model(CrossEncoder, str(cross_encoder))
    if hasattr(cross_encoder, "predict"):
        model = cross_encoder

        def score(pairs: list[tuple[str, str]]) -> np.ndarray:
            return np.asarray(
                model.predict(pairs, batch_size=batch_size, show_progress_bar=False),
                dtype=np.float32,
            ).reshape(len(pairs))

        return score
    if callable(cross_encoder):
        fn = cross_encoder

        def score_callable(pairs: list[tuple[str, str]]) -> np.ndarray:
            out = np.asarray(fn(pairs), dtype=np.float32).reshape(-1)
            if len(out) != len(pairs):
                raise ValueError(
                    f"cross_encoder callable returned {len(out)} scores for {len(pairs)} pairs"
                )
            return out

        return score_callable
    raise TypeError(
        "cross_encoder must be a CrossEncoder, a model path/hub id, or a callable "
        f"(pairs) -> scores; got {type(cross_encoder).__name__}"
    )


# --------------------------------------------------------------------------- helpers


def _load_encoder(model: Any) -> Any:
    """A SentenceTransformer (loaded from a path or hub id) or the given model object."""
    if model is None or isinstance(model, str | Path):
        from sentence_transformers import SentenceTransformer

        from llama_index_ragtune.models import load_model, resolve_model

        path = resolve_model(None if model is None else str(model), kind="encoder")
        return load_model(SentenceTransformer, str(path))
    if hasattr(model, "encode") or hasattr(model, "get_text_embedding_batch"):
        return model
    raise TypeError(
        "embed_model must be None, a model path/hub id, a SentenceTransformer or a LlamaIndex "
        f"BaseEmbedding; got {type(model).__name__}"
    )


def _identity(model: Any) -> str:
    """The embedding-store identity of the corpus vectors ``model`` gives (normalised)."""
    if hasattr(model, "get_text_embedding_batch"):  # LlamaIndex BaseEmbedding
        from llama_index_ragtune.embeddings.cached import model_identity

        return f"normalised|{model_identity(model)}"
    return encoder_identity(model)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)
