"""Distil a static embedding model from a sentence-transformers encoder (model2vec), offline.

model2vec embeds every token of the encoder's vocabulary (plus optional extra
words) with one forward pass each, reduces the vectors with PCA, and weights
them by an estimate of token frequency (Zipf's law + SIF). The result is saved
as a sentence-transformers folder - a ``StaticEmbedding`` module followed by
``Normalize`` - which :class:`~llama_index_ragtune.embeddings.StaticEmbeddingModel`,
``SentenceTransformer(path)`` and LlamaIndex's ``HuggingFaceEmbedding`` all load.
The folder is written atomically (a crash leaves the previous version or none)
with a ``static_embedding.json`` manifest of how it was made.

Works on the bundled MiniLM or a fine-tuned encoder folder (``runs/encoder/final``);
nothing is downloaded. Needs the ``static`` extra (``model2vec`` and ``skeletoken``).

Example::

    from llama_index_ragtune.embeddings import StaticEmbeddingModel, distill_static_embedding

    folder = distill_static_embedding("runs/encoder/final", "runs/static", pca_dims=256)
    embed = StaticEmbeddingModel(folder)
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llama_index_ragtune._atomic import atomic_dir, atomic_write_json, sha256_file
from llama_index_ragtune.models import load_model, resolve_model

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["MANIFEST", "distill_static_embedding", "require_model2vec"]

MANIFEST = "static_embedding.json"
FORMAT = "ragtune-static-embedding"
# sentence-transformers Pooling mode -> model2vec's pooling of each token's forward pass
_POOLING = {"mean": "mean", "cls": "first", "lasttoken": "last"}
_INSTALL = "pip install 'llama-index-ragtune[static]'  (model2vec and skeletoken)"


def require_model2vec() -> None:
    """Raise ``ImportError`` with the install command when model2vec's distillation is missing.

    Example::

        require_model2vec()   # before a long job that ends with a distillation
    """
    missing = [n for n in ("model2vec", "skeletoken") if importlib.util.find_spec(n) is None]
    if missing:
        raise ImportError(
            f"distilling a static embedding model needs {', '.join(missing)}: {_INSTALL}"
        )


def _load(model: str | os.PathLike | SentenceTransformer | None) -> tuple[Any, str]:
    from sentence_transformers import SentenceTransformer

    if isinstance(model, SentenceTransformer):
        name = (
            getattr(getattr(model[0], "auto_model", None), "name_or_path", "")
            or "SentenceTransformer"
        )
        return model, _portable(str(name))

    if model is None:
        bundled = resolve_model(None, kind="encoder")
        return load_model(SentenceTransformer, bundled, device="cpu"), "bundled all-MiniLM-L6-v2"
    source = resolve_model(str(model), kind="encoder")
    if Path(source).expanduser().exists() and not (Path(source) / "modules.json").is_file():
        raise ValueError(
            f"{source} is not a sentence-transformers folder (no modules.json); pass the folder "
            "the encoder was saved to (e.g. runs/encoder/final)"
        )
    return load_model(SentenceTransformer, source, device="cpu"), _portable(source)


def _pooling_of(model: Any, pooling: str | None) -> str:
    if pooling is not None:
        if pooling not in ("mean", "first", "last", "pooler"):
            raise ValueError(
                f"pooling must be 'mean', 'first', 'last' or 'pooler', got {pooling!r}"
            )
        return pooling
    for module in list(model)[1:]:
        if type(module).__name__ == "Pooling":
            mode = str(module.get_config_dict().get("pooling_mode", "mean"))
            if mode not in _POOLING:
                raise ValueError(
                    f"the encoder pools with {mode!r}, which a static model cannot reproduce; "
                    "pass pooling='mean' (or 'first' / 'last') to choose how token vectors are taken"
                )
            return _POOLING[mode]
    return "mean"


def _check_pipeline(model: Any) -> tuple[Any, Any]:
    first = model[0]
    auto_model, tokenizer = getattr(first, "auto_model", None), getattr(first, "tokenizer", None)
    if auto_model is None or tokenizer is None or not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"the encoder's first module ({type(first).__name__}) must be a Transformer with a fast "
            "tokenizer to be distilled into a static model"
        )
    ignored = [
        type(m).__name__
        for m in list(model)[1:]
        if type(m).__name__ not in ("Pooling", "Normalize")
    ]
    if ignored:
        warnings.warn(
            f"the static model keeps only the transformer and pooling; these modules of the encoder "
            f"are not part of it: {', '.join(ignored)}",
            UserWarning,
            stacklevel=3,
        )
    return auto_model, tokenizer


def distill_static_embedding(
    model: str | os.PathLike | SentenceTransformer | None,
    output_dir: str | os.PathLike,
    *,
    pca_dims: int | None = 256,
    vocabulary: Sequence[str] | None = None,
    sif_coefficient: float | None = 1e-4,
    token_remove_pattern: str | None = r"\[unused\d+\]",
    pooling: str | None = None,
    device: str = "cpu",
) -> Path:
    """Distil ``model`` into a static embedding folder at ``output_dir``; returns its path.

    Args:
        model: ``None`` (bundled all-MiniLM-L6-v2), a sentence-transformers folder
            (e.g. a fine-tuned ``runs/encoder/final``), or a loaded ``SentenceTransformer``.
        output_dir: the folder to write (replaced atomically if it holds an earlier
            static model; any other non-empty folder is refused).
        pca_dims: output dimension after PCA (``None``: keep the encoder's dimension,
            no PCA). Smaller is faster to search and smaller on disk, at some quality cost.
        vocabulary: extra words (e.g. frequent words of your corpus) that get their own
            vector instead of being split into sub-word tokens.
        sif_coefficient: SIF down-weighting of frequent tokens (``None`` disables it).
        token_remove_pattern: regex of tokens to drop from the vocabulary.
        pooling: how each token's vector is read from the encoder (``"mean"``,
            ``"first"``, ``"last"``, ``"pooler"``); default: the encoder's own pooling.
        device: where the forward passes run (``"cpu"``, ``"cuda"``).

    Example::

        folder = distill_static_embedding(None, "runs/static-minilm", pca_dims=128)
    """
    require_model2vec()
    from model2vec.distill import distill_from_model
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding

    target = Path(output_dir).expanduser()
    if target.exists() and (
        not target.is_dir() or (any(target.iterdir()) and not (target / MANIFEST).is_file())
    ):
        raise FileExistsError(
            f"{target} exists and is not a static model written by distill_static_embedding; "
            "choose another output_dir or remove it"
        )
    words = _check_vocabulary(vocabulary)
    encoder, source = _load(model)
    auto_model, tokenizer = _check_pipeline(encoder)
    _check_finite_weights(encoder, source)
    hidden = int(encoder.get_embedding_dimension() or auto_model.config.hidden_size)
    if pca_dims is not None and not 1 <= int(pca_dims) <= hidden:
        raise ValueError(
            f"pca_dims must be between 1 and {hidden} (the encoder's dimension), got {pca_dims}"
        )
    if sif_coefficient is not None and not 0 < sif_coefficient < 1:
        raise ValueError(f"sif_coefficient must be in (0, 1) or None, got {sif_coefficient}")
    token_pooling = _pooling_of(encoder, pooling)
    known = tokenizer.get_vocab()  # words that are already one token need no vector of their own
    words = [w for w in words if w not in known]
    start = time.perf_counter()
    static = distill_from_model(
        model=auto_model,
        tokenizer=tokenizer,
        vocabulary=words or None,
        device=device,
        pca_dims=pca_dims,
        sif_coefficient=sif_coefficient,
        token_remove_pattern=token_remove_pattern,
        quantize_to="float32",
        pooling=token_pooling,
    )
    seconds = time.perf_counter() - start
    weights = np.asarray(static.embedding, dtype=np.float32)
    if getattr(static, "token_mapping", None) is not None:
        weights = weights[np.asarray(static.token_mapping, dtype=np.int64)]
    if getattr(static, "weights", None) is not None:
        weights = weights * np.asarray(static.weights, dtype=np.float32)[:, None]
    bad = np.flatnonzero(~np.isfinite(weights).all(axis=1))
    if bad.size:
        raise ValueError(
            f"distilling {source} gave NaN or infinite vectors for {bad.size} of "
            f"{weights.shape[0]} tokens; nothing was written to {target}. Use an earlier "
            "checkpoint of the encoder"
        )
    module = StaticEmbedding(static.tokenizer, embedding_weights=np.ascontiguousarray(weights))
    st_model = load_model(SentenceTransformer, modules=[module, Normalize()], device="cpu")
    with atomic_dir(target, what="distill_static_embedding") as tmp:
        st_model.save(str(tmp))
        atomic_write_json(
            tmp / MANIFEST,
            {
                "format": FORMAT,
                "format_version": 1,
                "source": source,
                "dimension": int(weights.shape[1]),
                "vocabulary_size": int(weights.shape[0]),
                "extra_words": len(words),
                "pca_dims": pca_dims,
                "sif_coefficient": sif_coefficient,
                "token_remove_pattern": token_remove_pattern,
                "token_pooling": token_pooling,
                "normalize": True,
                "distill_seconds": round(seconds, 2),
                "weights_sha256": sha256_file(tmp / "model.safetensors"),
                "versions": {
                    name: _version(name) for name in ("model2vec", "sentence-transformers")
                },
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
    return target


def _check_vocabulary(vocabulary: Any) -> list[str]:
    """The distinct, non-blank extra words; anything but words (``str``) is a ``TypeError``."""
    if vocabulary is None:
        return []
    if isinstance(vocabulary, str | bytes) or not isinstance(vocabulary, Iterable):
        raise TypeError(
            f"vocabulary must be a list of words, got {type(vocabulary).__name__}"
            + (" (one string)" if isinstance(vocabulary, str) else "")
        )
    vocabulary = list(vocabulary)
    for i, word in enumerate(vocabulary):
        if not isinstance(word, str):
            raise TypeError(
                f"vocabulary item {i} is {type(word).__name__}, not str: {word!r}; pass words"
            )
    return [w for w in dict.fromkeys(vocabulary) if w.strip()]


def _check_finite_weights(encoder: Any, source: str) -> None:
    """Refuse an encoder with NaN or infinite weights (a diverged run) before distilling."""
    import torch

    with torch.no_grad():
        bad = [n for n, t in encoder.named_parameters() if not torch.isfinite(t).all()]
    if bad:
        raise ValueError(
            f"the encoder {source} has NaN or infinite weights in {len(bad)} tensors "
            f"({', '.join(bad[:5])}): a training run that diverged? Nothing was distilled; "
            "use an earlier checkpoint or the starting model"
        )


def _portable(source: str) -> str:
    """The source as given, relative to the working folder when it lies below it."""
    path = Path(source).expanduser()
    if not path.is_absolute():
        return source
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return None
