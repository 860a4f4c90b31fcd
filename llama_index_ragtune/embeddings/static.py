"""Static (token-lookup) sentence embeddings: the fast tier, as a LlamaIndex ``BaseEmbedding``.

A static model has one vector per token; a text's embedding is the mean of its
tokens' vectors, L2-normalised. No transformer runs at embedding time, so a
corpus is embedded one to two orders of magnitude faster than by the encoder it
was distilled from, at a cost in quality (see ``benchmarks/embedding_tiers.py``).

:class:`StaticEmbeddingModel` reads

- a sentence-transformers folder whose first module is ``StaticEmbedding`` (what
  :func:`~llama_index_ragtune.embeddings.distill_static_embedding` writes; the same
  folder loads with ``SentenceTransformer(path)`` and ``HuggingFaceEmbedding``), or
- a model2vec folder (``StaticModel.save_pretrained``: ``config.json``,
  ``model.safetensors`` with ``embeddings``, ``tokenizer.json``).

It reproduces sentence-transformers' ``StaticEmbedding`` (+ ``Normalize``) exactly
- tokens without special tokens, no truncation, mean pooling - with the Rust
``tokenizers`` and one sparse ``scipy`` product per batch: no PyTorch at embedding
time. Queries and documents are embedded alike (static models have no prompts).

Example::

    from llama_index.core import Settings
    from llama_index_ragtune.embeddings import StaticEmbeddingModel, distill_static_embedding

    distill_static_embedding("runs/encoder/final", "runs/static")   # once, a few minutes on CPU
    Settings.embed_model = StaticEmbeddingModel("runs/static")
    vector = Settings.embed_model.get_query_embedding("apple return policy?")
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks.base import CallbackManager

from llama_index_ragtune.embeddings.store import check_texts

__all__ = ["StaticEmbeddingModel", "check_static_weights", "load_static_weights"]

_ST_STATIC = "StaticEmbedding"
_ST_NORMALIZE = "Normalize"
_SURROGATES = re.compile("[\ud800-\udfff]")


def _fold_model2vec(tensors: dict[str, np.ndarray]) -> np.ndarray:
    """One row per token id from a model2vec file (``embeddings`` [+ ``mapping``, ``weights``])."""
    embeddings = np.asarray(tensors["embeddings"])
    if "mapping" in tensors:
        embeddings = embeddings[np.asarray(tensors["mapping"], dtype=np.int64)]
    embeddings = embeddings.astype(np.float32)
    if "weights" in tensors:
        embeddings = embeddings * np.asarray(tensors["weights"], dtype=np.float32)[:, None]
    return np.ascontiguousarray(embeddings)


def load_static_weights(path: str | os.PathLike) -> tuple[np.ndarray, Path, bool]:
    """Token vectors, the ``tokenizer.json`` path and whether outputs are L2-normalised.

    Accepts a sentence-transformers folder whose first module is ``StaticEmbedding`` or a
    model2vec folder; raises ``FileNotFoundError`` / ``ValueError`` naming what is missing.

    Example::

        weights, tokenizer_file, normalize = load_static_weights("runs/static")
        weights.shape   # (vocabulary size, dimension)
    """
    from safetensors.numpy import load_file

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"static embedding folder {folder} not found; create one with "
            "llama_index_ragtune.embeddings.distill_static_embedding(model, output_dir)"
        )
    modules_file = folder / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
        if not kinds or kinds[0] != _ST_STATIC:
            raise ValueError(
                f"{modules_file}: the first module is {kinds[0] if kinds else 'missing'!r}, not "
                f"{_ST_STATIC!r}; this is a transformer model - distill it first with "
                "distill_static_embedding(model, output_dir), or use OnnxEmbedding / HuggingFaceEmbedding"
            )
        unsupported = [k for k in kinds[1:] if k != _ST_NORMALIZE]
        if unsupported:
            raise ValueError(
                f"{modules_file}: modules after StaticEmbedding other than Normalize are not "
                f"supported ({', '.join(unsupported)}); load the folder with SentenceTransformer instead"
            )
        module_dir = folder / (modules[0].get("path") or "")
        normalize = _ST_NORMALIZE in kinds[1:]
    elif (folder / "config.json").is_file():  # model2vec
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if config.get("model_type") != "model2vec":
            raise ValueError(
                f"{folder / 'config.json'} is not a model2vec config (model_type="
                f"{config.get('model_type')!r}); pass a static model folder"
            )
        module_dir, normalize = folder, bool(config.get("normalize", True))
    else:
        raise FileNotFoundError(
            f"{folder} holds neither modules.json (sentence-transformers) nor config.json "
            "(model2vec); pass the folder written by distill_static_embedding"
        )
    weights_file, tokenizer_file = module_dir / "model.safetensors", module_dir / "tokenizer.json"
    for needed in (weights_file, tokenizer_file):
        if not needed.is_file():
            raise FileNotFoundError(f"static embedding file missing: {needed}")
    tensors = load_file(str(weights_file))
    if "embedding.weight" in tensors:  # sentence-transformers StaticEmbedding (EmbeddingBag)
        weights = np.ascontiguousarray(tensors["embedding.weight"], dtype=np.float32)
    elif "embeddings" in tensors:
        weights = _fold_model2vec(tensors)
    else:
        raise ValueError(
            f"{weights_file} has no 'embedding.weight' or 'embeddings' tensor "
            f"(found: {', '.join(sorted(tensors)) or 'none'})"
        )
    check_static_weights(weights, weights_file, tokenizer_file)
    return weights, tokenizer_file, normalize


def check_static_weights(weights: np.ndarray, weights_file: Path, tokenizer_file: Path) -> None:
    """Refuse token vectors no text can be embedded with, naming ``weights_file``: not a
    (tokens, dimension) table, none at all, fewer rows than the tokenizer has ids (a text
    with a later token read past the table), NaN or infinity (a diverged distillation:
    such texts embed to NaN), or every vector zero (every text embeds to the zero vector).

    Example::

        check_static_weights(np.zeros((0, 8)), Path("m/model.safetensors"), tokenizer_file)
        # ValueError: m/model.safetensors holds no token vectors ...
    """
    fix = "distil the model again (distill_static_embedding) or pass another static model folder"
    if weights.ndim != 2 or 0 in weights.shape:
        what = "no token vectors" if weights.size == 0 else f"a table of shape {weights.shape}"
        raise ValueError(
            f"{weights_file} holds {what}, not one vector per token (shape: tokens x "
            f"dimension); {fix}"
        )
    from tokenizers import Tokenizer

    try:
        ids = Tokenizer.from_file(str(tokenizer_file)).get_vocab_size(with_added_tokens=True)
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception
        raise ValueError(f"{tokenizer_file} cannot be read as a tokenizer ({exc}); {fix}") from exc
    if ids > weights.shape[0]:
        raise ValueError(
            f"{weights_file} holds {weights.shape[0]} token vectors, but {tokenizer_file} has "
            f"{ids} token ids: texts with the later tokens cannot be embedded; {fix}"
        )
    bad = np.flatnonzero(~np.isfinite(weights).all(axis=1))
    if bad.size:
        raise ValueError(
            f"{weights_file} holds NaN or infinite values in {bad.size} of {weights.shape[0]} "
            f"token vectors (token ids {', '.join(map(str, bad[:10].tolist()))}): texts with "
            f"those tokens would embed to NaN (a distillation that diverged?); {fix}"
        )
    if not weights.any():
        raise ValueError(
            f"{weights_file}: every one of its {weights.shape[0]} token vectors is zero, so "
            f"every text would embed to the zero vector; {fix}"
        )


class StaticEmbeddingModel(BaseEmbedding):
    """A static (token-lookup) embedding model, usable as ``Settings.embed_model``.

    Args:
        model_dir: a folder from :func:`distill_static_embedding` (a sentence-transformers
            ``StaticEmbedding`` folder) or a model2vec folder.
        embed_batch_size: texts per tokenizer / pooling call when embedding documents.
        callback_manager: LlamaIndex callbacks.

    Example::

        from llama_index_ragtune import HybridRetriever
        from llama_index_ragtune.embeddings import StaticEmbeddingModel

        embed = StaticEmbeddingModel("runs/static")
        retriever = HybridRetriever.from_defaults(nodes=nodes, embed_model=embed)
    """

    model_dir: str = Field(description="Folder of the static model (weights and tokenizer).")
    normalize: bool = Field(default=True, description="Whether vectors are L2-normalised.")
    _weights: np.ndarray = PrivateAttr()
    _tokenizer: Any = PrivateAttr()
    _fingerprint: str = PrivateAttr()

    def __init__(
        self,
        model_dir: str | os.PathLike,
        embed_batch_size: int = 1024,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        from tokenizers import Tokenizer

        weights, tokenizer_file, normalize = load_static_weights(model_dir)
        folder = Path(model_dir).expanduser().resolve()
        super().__init__(
            model_name=kwargs.pop("model_name", folder.name),
            embed_batch_size=embed_batch_size,
            callback_manager=callback_manager,
            model_dir=str(folder),
            normalize=normalize,
            **kwargs,
        )
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tokenizer = tokenizer
        self._weights = weights
        self._fingerprint = _fingerprint(tokenizer_file, weights)

    @classmethod
    def class_name(cls) -> str:
        return "StaticEmbeddingModel"

    @property
    def dimension(self) -> int:
        """Length of the embedding vectors."""
        return int(self._weights.shape[1])

    @property
    def vocabulary_size(self) -> int:
        """Number of token vectors."""
        return int(self._weights.shape[0])

    def cache_identity(self) -> str:
        """What determines this model's vectors (used as the key of embedding caches)."""
        return f"StaticEmbeddingModel|{self._fingerprint}|normalize={self.normalize}"

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Embeddings of ``texts`` as one float32 array ``(len(texts), dimension)``, in order.

        A text without any known token gets the zero vector (as in sentence-transformers).
        ``texts`` must be a list of ``str`` (``TypeError`` naming the position otherwise); a
        lone surrogate, which the tokenizer cannot take, is read as U+FFFD.
        """
        check_texts(texts)
        texts = [_encodable(t) for t in texts]
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        step = max(1, int(batch_size or self.embed_batch_size))
        for start in range(0, len(texts), step):
            out[start : start + step] = self._pool(texts[start : start + step])
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        if bad.size:  # finite token vectors whose sum overflows float32
            raise ValueError(
                f"StaticEmbeddingModel {self.model_dir}: the vectors of {bad.size} of "
                f"{len(texts)} texts overflow to infinity or NaN (positions "
                f"{', '.join(map(str, bad[:10].tolist()))}): the token vectors are too large; "
                "distil the model again"
            )
        return out

    def encode_queries(self, queries: list[str], batch_size: int | None = None) -> np.ndarray:
        """Query embeddings (the same as :meth:`encode`: static models have no query prompt)."""
        return self.encode(queries, batch_size)

    def _pool(self, texts: list[str]) -> np.ndarray:
        from scipy.sparse import csr_matrix

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        tokenizer = self._tokenizer
        if len(texts) == 1:
            encodings = [tokenizer.encode(texts[0], add_special_tokens=False)]
        else:  # encode_batch_fast skips the character offsets (tokenizers >= 0.20)
            batch = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
            encodings = batch(texts, add_special_tokens=False)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        ids = np.fromiter(
            (i for e in encodings for i in e.ids), dtype=np.int64, count=int(indptr[-1])
        )
        # mean pooling as one sparse product: row i holds 1/len_i at each of its token ids
        data = np.repeat(1.0 / np.maximum(lengths, 1), lengths).astype(np.float32)
        bag = csr_matrix((data, ids, indptr), shape=(len(texts), self.vocabulary_size))
        pooled = np.asarray(bag @ self._weights, dtype=np.float32)
        if self.normalize:
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            pooled /= np.maximum(norms, 1e-12)  # torch.nn.functional.normalize's eps
        return pooled

    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        check_texts(texts)  # a bare string was embedded letter by letter
        return super().get_text_embedding_batch(texts, show_progress=show_progress, **kwargs)

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        check_texts(texts)
        return await super().aget_text_embedding_batch(texts, show_progress=show_progress, **kwargs)

    def _get_query_embedding(self, query: str) -> Embedding:
        return self.encode([query])[0].tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self.encode([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self.encode(texts).tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)  # microseconds: no thread hop needed

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embedding(text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


def _encodable(text: str) -> str:
    """``text`` with lone surrogates (from bad decoding) replaced by U+FFFD; else as it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)
    return text


def _fingerprint(tokenizer_file: Path, weights: np.ndarray) -> str:
    """A hash of what determines the vectors: the token vectors and the tokenizer."""
    digest = hashlib.sha256(np.ascontiguousarray(weights).tobytes())
    digest.update(tokenizer_file.read_bytes())
    return digest.hexdigest()[:16]
