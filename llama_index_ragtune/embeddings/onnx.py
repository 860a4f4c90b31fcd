"""Sentence embeddings with ONNX Runtime: a LlamaIndex ``BaseEmbedding`` without PyTorch at query time.

``OnnxEmbedding`` runs our own ``torch.onnx.export`` of a sentence-transformers
model (see :mod:`~llama_index_ragtune.embeddings.onnx_export`; pooling, Dense and
Normalize are inside the graph), tokenised with the model's fast tokenizer
(Rust ``tokenizers``), with one intra-op thread per available core. Batches are
formed from texts sorted by token length, so each batch is padded only to its
own longest text. ``quantize=True`` runs the int8 (dynamic, per-channel) graph.
sentence-transformers' own ``backend="onnx"`` needs ``optimum``, which cannot be
installed next to transformers 5; this module needs only ``onnxruntime`` and
``onnx`` (the ``onnx`` extra).

Example::

    from llama_index.core import Settings
    from llama_index_ragtune.embeddings import OnnxEmbedding

    Settings.embed_model = OnnxEmbedding()                 # bundled MiniLM, fp32
    fast = OnnxEmbedding(quantize=True)                    # int8
    vector = fast.get_query_embedding("apple return policy?")
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks.base import CallbackManager

from llama_index_ragtune._cores import available_cores
from llama_index_ragtune.embeddings.onnx_export import export_sentence_transformer
from llama_index_ragtune.embeddings.onnx_session import OnnxSessionEncoder
from llama_index_ragtune.embeddings.store import check_texts
from llama_index_ragtune.retrievers.checks import clean_text

logger = logging.getLogger(__name__)

__all__ = ["QUERY_BATCH_SIZE", "OnnxEmbedding", "OnnxSessionEncoder", "available_cores"]

#: Queries per ONNX Runtime call in :meth:`OnnxEmbedding.encode_queries`. Queries are short
#: and of mixed length: in length-sorted groups of 4 they cost clearly less CPU per query
#: than one at a time, and than one batch padded to its longest query (SciFact test
#: queries, MiniLM, 2 cores).
QUERY_BATCH_SIZE = 4


class OnnxEmbedding(BaseEmbedding):
    """A sentence-transformers encoder run by ONNX Runtime, usable as ``Settings.embed_model``.

    The model is exported once into ``cache_dir`` (default ``<ragtune cache>/onnx``)
    and checked against PyTorch there; later instances load the cached graph.

    Args:
        model: ``None`` (bundled all-MiniLM-L6-v2), a sentence-transformers folder, or a hub id.
        quantize: run the int8 graph (dynamic quantisation, per-channel weights).
        num_threads: intra-op threads (default: the cores available to this process).
        cache_dir: where exported graphs are kept.
        query_instruction, text_instruction: prefixes for queries / documents (default:
            the model's saved ``query`` / ``document`` prompts, if any).
        embed_batch_size: texts per ONNX Runtime call when embedding documents.
    """

    quantize: bool = Field(default=False, description="Run the int8 dynamically quantised graph.")
    num_threads: int = Field(
        default=0, description="ONNX Runtime intra-op threads (0 = available cores)."
    )
    max_length: int = Field(
        default=0, description="Token limit per text (from the model's max_seq_length)."
    )
    query_instruction: str | None = Field(default=None, description="Prefix added to every query.")
    text_instruction: str | None = Field(
        default=None, description="Prefix added to every document text."
    )
    onnx_dir: str = Field(
        default="", description="Folder of the exported ONNX graph and tokenizer."
    )
    _encoder: OnnxSessionEncoder = PrivateAttr()
    _fingerprint: str = PrivateAttr()
    _warned_cut: set = PrivateAttr(default_factory=set)  # "query" / "text": said once each

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        quantize: bool = False,
        num_threads: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        query_instruction: str | None = None,
        text_instruction: str | None = None,
        embed_batch_size: int = 32,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        if (
            isinstance(num_threads, bool)
            or not isinstance(num_threads, int | None)
            or (num_threads is not None and num_threads < 0)
        ):
            raise ValueError(
                f"num_threads must be an int >= 1 (0 or None: all available cores), got {num_threads!r}"
            )
        _batch_size(embed_batch_size, 1, "embed_batch_size")
        exported = export_sentence_transformer(model, cache_dir=cache_dir)
        threads = int(num_threads or available_cores())
        try:
            encoder = _open(exported, quantize, threads)
        except Exception as exc:  # a graph or tokenizer damaged on disk: export it once more
            logger.warning(
                "the ONNX export %s cannot be loaded (%s: %s); exporting it again",
                exported.folder,
                type(exc).__name__,
                exc,
            )
            exported = export_sentence_transformer(model, cache_dir=cache_dir, force=True)
            encoder = _open(exported, quantize, threads)
        prompts = exported.config.get("prompts", {})
        super().__init__(
            model_name=exported.config["source"],
            embed_batch_size=embed_batch_size,
            callback_manager=callback_manager,
            quantize=quantize,
            num_threads=threads,
            max_length=exported.config["max_seq_length"],
            query_instruction=query_instruction
            if query_instruction is not None
            else prompts.get("query"),
            text_instruction=text_instruction
            if text_instruction is not None
            else prompts.get("document", prompts.get("passage", prompts.get("text"))),
            onnx_dir=str(exported.folder),
            **kwargs,
        )
        self._encoder = encoder
        self._fingerprint = exported.fingerprint

    @classmethod
    def class_name(cls) -> str:
        return "OnnxEmbedding"

    @property
    def dimension(self) -> int:
        """Length of the embedding vectors."""
        return self._encoder.dimension

    def cache_identity(self) -> str:
        """What determines this model's vectors (used as the key of embedding caches)."""
        precision = "int8" if self.quantize else "fp32"
        return (
            f"OnnxEmbedding|{self._fingerprint}|{precision}|max_length={self.max_length}"
            f"|text_instruction={self.text_instruction or ''}"
        )

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Document embeddings as one float32 array (``text_instruction`` applied).

        Texts longer than ``max_length`` tokens are cut to it; the first time, one warning
        says how many were (chunk documents to fit the window).
        """
        prefixed = _prefixed(self.text_instruction, texts)
        return self._run(prefixed, _batch_size(batch_size, self.embed_batch_size), "text")

    def encode_queries(self, queries: list[str], batch_size: int | None = None) -> np.ndarray:
        """Query embeddings as one float32 array (``query_instruction`` applied).

        Queries are run in length-sorted groups of ``batch_size`` (default
        ``QUERY_BATCH_SIZE``): short texts of mixed lengths pad least in small groups.
        Used by :class:`~llama_index_ragtune.embeddings.MicroBatchEmbedding` to embed the
        queries of concurrent callers together.

        Example::

            OnnxEmbedding().encode_queries(["apple return policy?", "store hours"]).shape  # (2, 384)
        """
        prefixed = _prefixed(self.query_instruction, queries)
        return self._run(prefixed, _batch_size(batch_size, QUERY_BATCH_SIZE), "query")

    def _run(self, texts: list[str], batch_size: int, kind: str) -> np.ndarray:
        """Encode; warn once per kind about texts cut to ``max_length``; refuse NaN output."""
        cut: list[tuple[int, int]] = []
        vectors = self._encoder.encode(
            texts, batch_size, cut=None if kind in self._warned_cut else cut
        )
        if cut:
            self._warned_cut.add(kind)
            _warn_cut(kind, cut, len(texts), self.max_length, self.model_name)
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        if bad.size:
            raise ValueError(
                f"OnnxEmbedding: the model {self.model_name!r} returned NaN or infinite values "
                f"for {bad.size} of {len(texts)} {'queries' if kind == 'query' else 'texts'} "
                "(positions "
                f"{', '.join(map(str, bad[:10].tolist()))}; first {texts[int(bad[0])][:60]!r}); "
                "nothing was returned. Its weights hold NaN or infinity (a training run that "
                "diverged?): use an earlier checkpoint or the starting model"
            )
        return vectors

    def _get_query_embedding(self, query: str) -> Embedding:
        return self.encode_queries([query])[0].tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self.encode([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self.encode(texts).tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


def _warn_cut(kind: str, cut: list[tuple[int, int]], total: int, limit: int, name: str) -> None:
    """Say once that texts were cut to the encoder's window: how many tokens, the limit."""
    longest = max(tokens for _, tokens in cut)
    if kind == "query":
        logger.warning(
            "OnnxEmbedding: a query of %d tokens is longer than the encoder %r reads "
            "(max_seq_length %d): its last %d tokens were dropped, so it is searched by its "
            "start only. Shorten long queries, or use a model with a longer max_seq_length. "
            "(Said once per embedding model; later queries are cut silently.)",
            longest,
            name,
            limit,
            longest - limit,
        )
        return
    logger.warning(
        "OnnxEmbedding: %d of the %d texts of this call are longer than the encoder %r reads "
        "(max_seq_length %d; the longest has %d tokens): only their first %d tokens are "
        "embedded. Chunk the documents to fit (a node parser's chunk_size below the window). "
        "(Said once per embedding model; later texts are cut silently.)",
        len(cut),
        total,
        name,
        limit,
        longest,
        limit,
    )


def _open(exported: Any, quantize: bool, threads: int) -> OnnxSessionEncoder:
    return OnnxSessionEncoder(
        exported.model_path(quantize=quantize),
        exported.folder / "tokenizer.json",
        exported.config,
        threads,
    )


def _batch_size(value: Any, default: int, name: str = "batch_size") -> int:
    """``batch_size`` of ``encode``: ``None`` for the default, else an int >= 1."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1 (or None), got {value!r}")
    return value


def _prefixed(prefix: str | None, texts: list[str]) -> list[str]:
    """``prefix + text`` for each text, cleaned like the retrievers' queries (``clean_text``:
    lone surrogates, which the tokenizer cannot take, become U+FFFD)."""
    check_texts(texts)
    return [clean_text((prefix or "") + t) for t in texts]
