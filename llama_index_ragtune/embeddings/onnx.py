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
import os
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks.base import CallbackManager

from llama_index_ragtune.embeddings.onnx_export import export_sentence_transformer, require_onnx

__all__ = ["QUERY_BATCH_SIZE", "OnnxEmbedding", "OnnxSessionEncoder", "available_cores"]

#: Queries per ONNX Runtime call in :meth:`OnnxEmbedding.encode_queries`. Queries are short
#: and of mixed length: in length-sorted groups of 4 they cost clearly less CPU per query
#: than one at a time, and than one batch padded to its longest query (SciFact test
#: queries, MiniLM, 2 cores).
QUERY_BATCH_SIZE = 4


def available_cores() -> int:
    """CPU cores this process may use (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


class OnnxSessionEncoder:
    """Tokenise, batch by length, pad, run the ONNX graph; numpy in, numpy out.

    Args:
        model_path: the ``.onnx`` file.
        tokenizer_path: the fast tokenizer's ``tokenizer.json``.
        config: ``export.json`` settings (input names, max length, pad token).
        num_threads: ONNX Runtime intra-op threads (default: available cores).
    """

    def __init__(
        self,
        model_path: str | Path,
        tokenizer_path: str | Path,
        config: dict[str, Any],
        num_threads: int | None = None,
    ):
        require_onnx()
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.config = config
        self.input_names = list(config["input_names"])
        self.max_length = int(config["max_seq_length"])
        self.pad_id = int(config["pad_token_id"])
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(num_threads or available_cores())
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # No busy-waiting between ops: on a shared or oversubscribed CPU spinning threads
        # only steal cycles (measured: faster for both batches and single queries there).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        self.dimension = int(
            self.session.get_outputs()[0].shape[-1] or config.get("dimension") or 0
        )

    def tokenize(self, texts: list[str]) -> list[Any]:
        return (
            self.tokenizer.encode_batch(texts)
            if len(texts) > 1
            else [self.tokenizer.encode(texts[0])]
        )

    def _run(self, encodings: list[Any]) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        batch = len(encodings)
        arrays = {
            "input_ids": np.full((batch, width), self.pad_id, dtype=np.int64),
            "attention_mask": np.zeros((batch, width), dtype=np.int64),
            "token_type_ids": np.zeros((batch, width), dtype=np.int64),
        }
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            arrays["input_ids"][row, :n] = enc.ids
            arrays["attention_mask"][row, :n] = 1
            arrays["token_type_ids"][row, :n] = enc.type_ids
        feeds = {name: arrays[name] for name in self.input_names}
        return self.session.run(None, feeds)[0]

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Embeddings of ``texts`` (float32, shape ``(len(texts), dim)``), in input order."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encodings = self.tokenize(list(texts))
        if len(encodings) == 1:
            return np.asarray(self._run(encodings), dtype=np.float32)
        order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
        out: np.ndarray | None = None
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            result = self._run([encodings[i] for i in rows])
            if out is None:
                out = np.empty((len(texts), result.shape[1]), dtype=np.float32)
            out[rows] = result
        return out


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
        exported = export_sentence_transformer(model, cache_dir=cache_dir)
        prompts = exported.config.get("prompts", {})
        threads = int(num_threads or available_cores())
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
        self._encoder = OnnxSessionEncoder(
            exported.model_path(quantize=quantize),
            exported.folder / "tokenizer.json",
            exported.config,
            threads,
        )
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
        """Document embeddings as one float32 array (``text_instruction`` applied)."""
        prefix = self.text_instruction or ""
        return self._encoder.encode(
            [prefix + t for t in texts], batch_size or self.embed_batch_size
        )

    def encode_queries(self, queries: list[str], batch_size: int | None = None) -> np.ndarray:
        """Query embeddings as one float32 array (``query_instruction`` applied).

        Queries are run in length-sorted groups of ``batch_size`` (default
        ``QUERY_BATCH_SIZE``): short texts of mixed lengths pad least in small groups.
        Used by :class:`~llama_index_ragtune.embeddings.MicroBatchEmbedding` to embed the
        queries of concurrent callers together.

        Example::

            OnnxEmbedding().encode_queries(["apple return policy?", "store hours"]).shape  # (2, 384)
        """
        prefix = self.query_instruction or ""
        return self._encoder.encode([prefix + q for q in queries], batch_size or QUERY_BATCH_SIZE)

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
