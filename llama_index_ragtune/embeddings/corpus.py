"""Embed a corpus too large to hold twice: streamed in shards, written to a memory-mapped ``.npy``.

:func:`embed_corpus` reads texts from any iterable (a list, a generator over a
JSONL file, a database cursor) ``shard_size`` at a time, embeds each shard with
the chosen engine, and appends the vectors to a ``.npy`` file. At any moment the
process holds one shard of texts and one shard of vectors, never the corpus.
The result is returned as a read-only memory map, which
``HardNegativeMiner(corpus_embeddings=...)`` and ``DenseScorer`` accept as they are.

Engines (same result, to float32 rounding; the choice is about where the work runs):

- ``"local"``: this process (PyTorch / ONNX Runtime / static model threads).
- ``"multiprocess"``: sentence-transformers' multi-process pool
  (``start_multi_process_pool``), one worker per CPU core or GPU, each with
  ``cores / workers`` threads; a sentence-transformers model only. Workers are
  spawned, so a script must call it under ``if __name__ == "__main__":``.
- ``"ray"``: Ray Data ``map_batches`` over an actor pool
  (:class:`~llama_index_ragtune.embeddings.RayCorpusEncoder`), which runs on every
  node of a Ray cluster when ``ray.init(address=...)`` was called first (the
  ``distributed`` extra). Without an initialised Ray, a local one is started.

On one small machine the parallel engines mostly add start-up and transfer
overhead (see ``benchmarks/embedding_scale.py``); they exist so that the same
call scales out to more cores, GPUs or nodes.

Example::

    from llama_index_ragtune import HardNegativeMiner
    from llama_index_ragtune.embeddings import embed_corpus

    vectors = embed_corpus(dataset.corpus.values(), "runs/encoder/final",
                           out_path="runs/corpus.npy", engine="multiprocess")
    miner = HardNegativeMiner(sources=["dense"], embed_model="runs/encoder/final",
                              corpus_embeddings=vectors)
    mined = miner.mine(dataset)
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from llama_index_ragtune._cores import available_cores
from llama_index_ragtune.embeddings.corpus_encoders import (
    BlockEncoder,
    check_finite_rows,
    finish,
    model_spec,
)
from llama_index_ragtune.embeddings.corpus_ray import RayEngine
from llama_index_ragtune.embeddings.npy_writer import NpyRowWriter

logger = logging.getLogger(__name__)

__all__ = ["ENGINES", "embed_corpus", "iter_shards"]

Engine = Literal["local", "multiprocess", "ray"]
ENGINES: tuple[str, ...] = ("local", "multiprocess", "ray")
SHARD_SIZE = 16_384
RAY_SHARD_SIZE = 65_536


def iter_shards(texts: Iterable[str], shard_size: int) -> Iterator[list[str]]:
    """Consecutive lists of at most ``shard_size`` texts; a non-string item raises ``TypeError``.

    Example::

        list(iter_shards(["a", "b", "c"], 2))   # [['a', 'b'], ['c']]
    """
    iterator = iter(texts)
    position = 0
    while shard := list(itertools.islice(iterator, shard_size)):
        for offset, text in enumerate(shard):
            if not isinstance(text, str):
                raise TypeError(
                    f"corpus item {position + offset} is a {type(text).__name__}, not a str; "
                    "pass the passage texts (e.g. dataset.corpus.values())"
                )
        position += len(shard)
        yield shard


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables for processes started inside the block."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _LocalEngine:
    def __init__(self, model: Any, normalize: bool, batch_size: int) -> None:
        from llama_index.core.base.embeddings.base import BaseEmbedding

        loaded = model if isinstance(model, BaseEmbedding) else None
        self.encoder = (
            BlockEncoder(loaded, normalize)
            if loaded
            else BlockEncoder.load(model_spec(model), normalize)
        )
        self.batch_size = batch_size

    def encode(self, shard: list[str]) -> np.ndarray:
        return self.encoder.encode(shard, self.batch_size)

    def close(self) -> None:
        pass


class _MultiprocessEngine:
    """sentence-transformers' pool: spawned workers, each with a copy of the model."""

    def __init__(self, model: Any, normalize: bool, batch_size: int, workers: int) -> None:
        kind, value = model_spec(model)
        if kind == "static":
            raise ValueError(
                "engine='multiprocess' runs sentence-transformers' pool; a static model is "
                "faster in one process: use engine='local'"
            )
        self.model = BlockEncoder.load((kind, value)).model
        self.normalize, self.batch_size = normalize, batch_size
        threads = max(1, available_cores() // workers)
        # each spawned worker reads the thread count at start-up: no oversubscription
        with _env(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)):
            self.pool = self.model.start_multi_process_pool(["cpu"] * workers)

    def encode(self, shard: list[str]) -> np.ndarray:
        encode = getattr(self.model, "encode_document", None) or self.model.encode
        out = encode(
            shard,
            pool=self.pool,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return finish(out, self.normalize)

    def close(self) -> None:
        self.model.stop_multi_process_pool(self.pool)


def embed_corpus(
    texts: Iterable[str],
    model: Any = None,
    *,
    out_path: str | os.PathLike,
    engine: Engine = "local",
    batch_size: int = 64,
    shard_size: int | None = None,
    num_workers: int | None = None,
    normalize: bool = True,
    dtype: str = "float32",
    show_progress: bool = True,
) -> np.memmap:
    """Embed ``texts`` shard by shard into ``out_path`` (``.npy``); returns it memory-mapped.

    Args:
        texts: the passages, in corpus order (any iterable; consumed once).
        model: ``None`` (bundled MiniLM), a sentence-transformers or static model folder
            (or hub id), a ``SentenceTransformer``, or a LlamaIndex ``BaseEmbedding``
            (``engine="local"``; a :class:`StaticEmbeddingModel` works everywhere).
        out_path: the ``.npy`` file, written to a temporary sibling and renamed into place
            when complete (a crash never leaves a partial file under this name).
        engine: ``"local"``, ``"multiprocess"`` or ``"ray"`` (module docs).
        batch_size: texts per forward pass.
        shard_size: texts read, embedded and written at a time: bounds memory (default
            16,384; 65,536 with Ray, where each shard is one Ray Data job whose actors load
            the model, so larger shards amortise that start-up).
        num_workers: processes / Ray actors (default: the CPU cores available; with an
            initialised Ray cluster, its CPUs).
        normalize: L2-normalise the vectors (cosine = inner product).
        dtype: element type of the file (``"float32"`` or ``"float16"`` to halve it).

    Example::

        vectors = embed_corpus(passages, None, out_path="corpus.npy", engine="ray")
        vectors.shape   # (len(passages), 384)
    """
    from tqdm.auto import tqdm

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if shard_size is None:
        shard_size = RAY_SHARD_SIZE if engine == "ray" else SHARD_SIZE
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if num_workers is not None and int(num_workers) < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if np.dtype(dtype) not in (np.dtype("float32"), np.dtype("float16")):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    out = Path(out_path).expanduser()
    if out.suffix != ".npy":
        raise ValueError(f"out_path must end in .npy (np.load reads it back), got {out}")
    if out.is_dir():
        raise IsADirectoryError(f"out_path {out} is a folder; name the .npy file to write")
    total = len(texts) if hasattr(texts, "__len__") else None  # type: ignore[arg-type]
    runner = _start(engine, model, normalize, batch_size, num_workers)
    writer: NpyRowWriter | None = None
    bar = tqdm(
        total=total, desc=f"Embedding corpus ({engine})", unit="text", disable=not show_progress
    )
    try:
        position, blank = 0, []
        for shard in iter_shards(texts, int(shard_size)):
            vectors = runner.encode(shard)
            if vectors.shape[0] != len(shard):
                raise RuntimeError(
                    f"the {engine} engine returned {vectors.shape[0]} vectors for {len(shard)} texts"
                )
            check_finite_rows(vectors, shard, position, model)
            blank += [position + i for i, text in enumerate(shard) if not text.strip()]
            position += len(shard)
            if writer is None:
                writer = NpyRowWriter(out, dim=vectors.shape[1], dtype=dtype)
            writer.write(vectors)
            bar.update(len(shard))
        if writer is None:
            raise ValueError("the corpus is empty: there is nothing to embed")
        writer.close()
        if blank:
            logger.warning(
                "embed_corpus: %d of %d corpus texts are empty or blank (items %s): their "
                "vectors carry no content (a static model's are all zero), so dense search "
                "cannot find them; drop or fill those passages",
                len(blank),
                position,
                ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else ""),
            )
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        bar.close()
        runner.close()
    return np.load(out, mmap_mode="r")


def _start(engine: str, model: Any, normalize: bool, batch_size: int, workers: int | None) -> Any:
    if engine == "local":
        return _LocalEngine(model, normalize, batch_size)
    if engine == "multiprocess":
        return _MultiprocessEngine(model, normalize, batch_size, int(workers or available_cores()))

    return RayEngine(model, normalize, batch_size, workers)
