"""What embeds a block of corpus texts inside one process: a loaded model behind one ``encode``.

:func:`~llama_index_ragtune.embeddings.embed_corpus` and its engines accept a model
as ``None`` (bundled MiniLM), a folder / hub id, a ``SentenceTransformer`` or a
LlamaIndex ``BaseEmbedding``. :class:`BlockEncoder` turns any of them into
``encode(texts) -> float32 array``; :func:`model_spec` gives the picklable recipe
that worker processes (Ray actors) rebuild the same encoder from.

Example::

    encoder = BlockEncoder.load(model_spec("runs/encoder/final"))
    vectors = encoder.encode(["first passage", "second passage"])   # (2, 384) float32
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "BlockEncoder",
    "check_finite_rows",
    "finish",
    "is_static_folder",
    "model_spec",
    "warn_cut_texts",
]


def is_static_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a static embedding folder (sentence-transformers or model2vec).

    Example::

        is_static_folder("runs/static")   # True for a distill_static_embedding folder
    """
    folder = Path(path).expanduser()
    modules = folder / "modules.json"
    if modules.is_file():
        try:
            first = json.loads(modules.read_text(encoding="utf-8"))[0]
        except (ValueError, IndexError, KeyError):
            return False
        return str(first.get("type", "")).endswith("StaticEmbedding")
    config = folder / "config.json"
    if config.is_file():
        try:
            return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "model2vec"
        except ValueError:
            return False
    return False


def model_spec(model: Any) -> tuple[str, Any]:
    """A picklable description of ``model`` that another process can load.

    ``("static", folder)``, ``("sentence-transformers", folder_or_id)`` or
    ``("instance", model)`` for a ``SentenceTransformer`` object (pickled as is).
    Raises ``TypeError`` for LlamaIndex embeddings that cannot leave this process.

    Example::

        model_spec(None)   # ('sentence-transformers', '<bundled MiniLM folder>')
    """
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from llama_index_ragtune.embeddings.static import StaticEmbeddingModel

    if isinstance(model, StaticEmbeddingModel):
        return ("static", model.model_dir)
    if isinstance(model, BaseEmbedding):
        raise TypeError(
            f"{type(model).__name__} cannot be sent to worker processes; pass the model folder "
            "(a sentence-transformers or static folder) instead, or use engine='local'"
        )
    if model is None or isinstance(model, (str, os.PathLike)):
        from llama_index_ragtune.models import resolve_model

        source = resolve_model(None if model is None else str(model), kind="encoder")
        if Path(source).expanduser().exists() and is_static_folder(source):
            return ("static", str(Path(source).expanduser().resolve()))
        return ("sentence-transformers", source)
    if type(model).__name__ == "SentenceTransformer" or hasattr(model, "encode_document"):
        return ("instance", model)
    raise TypeError(
        f"model must be None, a folder or hub id, a SentenceTransformer or a LlamaIndex "
        f"BaseEmbedding, got {type(model).__name__}"
    )


class BlockEncoder:
    """One loaded model behind ``encode(texts, batch_size) -> float32 (n, dim)``.

    Args:
        model: a ``SentenceTransformer`` or a LlamaIndex ``BaseEmbedding``.
        normalize: L2-normalise the rows.

    Example::

        encoder = BlockEncoder(SentenceTransformer("runs/encoder/final", device="cpu"))
        encoder.encode(["a passage"], batch_size=32).shape   # (1, 384)
    """

    def __init__(self, model: Any, normalize: bool = True) -> None:
        self.model = model
        self.normalize = normalize
        self.warned_cut = False  # said once that texts were cut to the model's window

    @classmethod
    def load(cls, spec: tuple[str, Any], normalize: bool = True) -> BlockEncoder:
        """Build the encoder that :func:`model_spec` described (in this process)."""
        kind, value = spec
        if kind == "static":
            from llama_index_ragtune.embeddings.static import StaticEmbeddingModel

            return cls(StaticEmbeddingModel(value), normalize)
        if kind == "sentence-transformers":
            from sentence_transformers import SentenceTransformer

            from llama_index_ragtune.models import load_model

            return cls(load_model(SentenceTransformer, value, device="cpu"), normalize)
        if kind == "instance":
            return cls(value, normalize)
        raise ValueError(f"unknown model spec kind {kind!r}")

    @property
    def dimension(self) -> int | None:
        """The output dimension when the model states it."""
        for name in ("dimension", "get_embedding_dimension", "get_sentence_embedding_dimension"):
            value = getattr(self.model, name, None)
            value = value() if callable(value) else value
            if value:
                return int(value)
        return None

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Embeddings of ``texts`` in order (document side: the model's document prompt, if any).

        No texts: a ``(0, dimension)`` array (models return a bare empty list for them).
        """
        model = self.model
        if not len(texts):
            return np.zeros((0, self.dimension or 0), dtype=np.float32)
        if hasattr(model, "get_text_embedding_batch"):  # LlamaIndex BaseEmbedding
            own = getattr(model, "encode", None)  # OnnxEmbedding / StaticEmbeddingModel: numpy
            out = (
                own(texts, batch_size=batch_size)
                if callable(own)
                else model.get_text_embedding_batch(texts, show_progress=False)
            )
        else:
            if not self.warned_cut:
                self.warned_cut = warn_cut_texts(model, texts)
            encode = getattr(model, "encode_document", None) or model.encode
            out = encode(
                texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
            )
        return finish(out, self.normalize)


def warn_cut_texts(model: Any, texts: list[str]) -> bool:
    """Log one warning when texts hold more tokens than a sentence-transformers ``model``
    reads (``max_seq_length``): they are cut to it, silently, by the model. ``True`` once
    warned (the caller stops asking). Only texts long enough to pass the limit are tokenised.

    Example::

        warn_cut_texts(SentenceTransformer("runs/encoder/final"), ["a short passage"])  # False
    """
    limit, tokenizer = getattr(model, "max_seq_length", None), getattr(model, "tokenizer", None)
    if not isinstance(limit, int) or limit < 1 or not callable(tokenizer):
        return False
    long = [t for t in texts if len(t) + 2 > limit]  # a token covers at least one character
    if not long:
        return False
    try:
        ids = tokenizer(long, add_special_tokens=True, truncation=False, verbose=False)
        counts = [len(row) for row in ids["input_ids"]]
    except Exception:  # noqa: BLE001 - a custom tokenizer: no count, no warning
        return False
    cut = [n for n in counts if n > limit]
    if not cut:
        return False
    logger.warning(
        "%d of the %d texts of this call are longer than the encoder reads (max_seq_length %d; the "
        "longest has %d tokens): only their first %d tokens are embedded. Chunk the documents "
        "to fit (a node parser's chunk_size below the window). (Said once per encoder; later "
        "texts are cut silently.)",
        len(cut),
        len(texts),
        limit,
        max(cut),
        limit,
    )
    return True


def check_finite_rows(vectors: np.ndarray, texts: list[str], first: int, model: Any) -> None:
    """Refuse vectors with NaN or infinity (a model whose training diverged), naming the
    corpus items (``first``: the corpus position of ``texts[0]``) and the model.

    Example::

        check_finite_rows(np.array([[np.nan, 0.0]]), ["a passage"], 0, "runs/encoder/final")
        # ValueError: ... NaN or infinite values for 1 of 1 texts (corpus items 0; ...
    """
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if bad.size:
        items = ", ".join(str(first + int(i)) for i in bad[:10])
        name = (
            "(the bundled default)"
            if model is None
            else model
            if isinstance(model, str | os.PathLike)
            else type(model).__name__
        )
        raise ValueError(
            f"the encoder {name} returned NaN or infinite values for {bad.size} of {len(texts)} "
            f"texts (corpus items {items}; first {texts[int(bad[0])][:60]!r}); nothing was "
            "written. Its weights hold NaN or infinity (a training run that diverged?): use an "
            "earlier checkpoint or the starting model"
        )


def finish(vectors: Any, normalize: bool) -> np.ndarray:
    """``vectors`` as a float32 2-D array, L2-normalised when asked.

    Example::

        finish([[3.0, 4.0]], normalize=True)   # array([[0.6, 0.8]], dtype=float32)
    """
    out = np.asarray(vectors, dtype=np.float32)
    if out.ndim != 2:
        raise ValueError(f"the encoder returned an array of shape {out.shape}, expected (n, dim)")
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out
