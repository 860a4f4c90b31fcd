"""Candidate scorers for hard-negative mining: BM25 (bm25s), dense (bi-encoder), cross-encoder.

Each corpus scorer is built once over a corpus and answers a batch of queries
with their top-k candidates plus the scores of given documents (the positives,
for margin filtering), so that no queries x documents matrix is ever held.

Example::

    scorer = BM25Scorer(["Apple iPhone returns", "Fresh apples: returns within 7 days"])
    top_scores, top_idx, pos_scores = scorer.search(["apple return policy"], k=2, extra=[[1]])
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from sentence_transformers import CrossEncoder, SentenceTransformer

logger = logging.getLogger(__name__)

SearchResult = tuple[np.ndarray, np.ndarray, list[np.ndarray]]
"""(top scores [B, k] best first, top doc indices [B, k] with -1 for no candidate,
scores of the requested extra docs per query)."""


class BM25Scorer:
    """Okapi BM25 over a corpus with bm25s, an English Snowball stemmer and stopwords.

    Only documents sharing at least one term with the query (score > 0) are returned.
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
    ) -> None:
        import bm25s
        import Stemmer

        self._stemmer = Stemmer.Stemmer(language) if language else None
        self._stopwords = stopwords
        tokens = bm25s.tokenize(
            list(texts), stopwords=stopwords, stemmer=self._stemmer, show_progress=show_progress
        )
        self._bm25 = bm25s.BM25(k1=k1, b=b)
        self._bm25.index(tokens, show_progress=show_progress)
        self.num_docs = len(texts)

    def _query_ids(self, queries: Sequence[str]) -> list[list[int]]:
        import bm25s

        tokens = bm25s.tokenize(
            list(queries),
            stopwords=self._stopwords,
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )
        return [self._bm25.get_tokens_ids(t) for t in tokens]

    def search(
        self, queries: Sequence[str], k: int, extra: Sequence[Sequence[int]]
    ) -> SearchResult:
        k = min(k, self.num_docs)
        top_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        top_idx = np.full((len(queries), k), -1, dtype=np.int64)
        extra_scores: list[np.ndarray] = []
        for row, ids in enumerate(self._query_ids(queries)):
            scores = (
                self._bm25.get_scores_from_ids(ids)
                if ids
                else np.zeros(self.num_docs, dtype=np.float32)
            )
            extra_scores.append(scores[np.asarray(extra[row], dtype=np.int64)].astype(np.float32))
            idx = _top_k(scores, k)
            keep = idx[scores[idx] > 0]
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
        cache_dir: folder where corpus embeddings are stored as ``.npy``, keyed by the
            model path and a hash of the corpus; used only when ``model`` is a path/id.
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
        self._model, model_key = _load_encoder(model)
        cache_file = None
        if corpus_embeddings is None and cache_dir is not None and model_key is not None:
            cache_file = Path(cache_dir) / f"{_corpus_key(model_key, doc_ids, texts)}.npy"
            if cache_file.exists():
                corpus_embeddings = np.load(cache_file, mmap_mode="r")
                logger.info("dense scorer: corpus embeddings read from %s", cache_file)
        if corpus_embeddings is None:
            corpus_embeddings = self._encode(list(texts), is_query=False)
            if cache_file is not None:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                np.save(cache_file, corpus_embeddings)
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

        cross_encoder = CrossEncoder(str(cross_encoder))
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


def _load_encoder(model: Any) -> tuple[Any, str | None]:
    """(model object, cache key or None)."""
    if model is None or isinstance(model, str | Path):
        from sentence_transformers import SentenceTransformer

        from llama_index_ragtune.models import resolve_model

        path = resolve_model(None if model is None else str(model), kind="encoder")
        return SentenceTransformer(str(path)), str(path)
    if hasattr(model, "encode") or hasattr(model, "get_text_embedding_batch"):
        return model, None
    raise TypeError(
        "embed_model must be None, a model path/hub id, a SentenceTransformer or a LlamaIndex "
        f"BaseEmbedding; got {type(model).__name__}"
    )


def _corpus_key(model_key: str, doc_ids: Sequence[str], texts: Sequence[str]) -> str:
    h = hashlib.sha1(model_key.encode("utf-8"))
    for doc_id, text in zip(doc_ids, texts, strict=True):
        h.update(doc_id.encode("utf-8") + b"\x00" + text.encode("utf-8") + b"\x01")
    return h.hexdigest()[:24]


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first (ties broken by index)."""
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]
