"""Corpus embedding on Ray Data: an actor-pool ``map_batches`` UDF and the engine behind ``embed_corpus``.

:class:`RayCorpusEncoder` is a plain callable class (no Ray import) for
``Dataset.map_batches``: each actor loads the model once and embeds the batches
it is given. Use it directly when the corpus already lives where the cluster can
read it (Parquet / JSONL on shared storage), so no text passes through the driver::

    import ray
    from llama_index_ragtune.embeddings import RayCorpusEncoder

    ray.init(address="auto")
    ds = ray.data.read_parquet("s3://bucket/passages/")          # a 'text' column
    ds = ds.map_batches(RayCorpusEncoder, fn_constructor_kwargs={"model": "runs/encoder/final"},
                        compute=ray.data.ActorPoolStrategy(size=16), num_gpus=1, batch_size=256)
    ds.write_parquet("s3://bucket/embeddings/")

``embed_corpus(..., engine="ray")`` (:class:`RayEngine`) does the same for texts
that come from the driver: each shard becomes a Ray Data dataset of
``(row, text)`` items, embedded by an actor pool, and the vectors are put back in
row order before the shard is written.

Example::

    import ray
    from llama_index_ragtune.embeddings import embed_corpus

    ray.init(num_cpus=2)            # or ray.init(address="auto") on a cluster
    vectors = embed_corpus(texts, "runs/encoder/final", out_path="corpus.npy", engine="ray")
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from llama_index_ragtune.embeddings.corpus_encoders import BlockEncoder, model_spec

__all__ = ["RayCorpusEncoder", "RayEngine", "require_ray"]


def require_ray() -> None:
    """Raise ``ImportError`` with the install command when Ray Data is missing.

    Example::

        require_ray()   # before planning a Ray job
    """
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None:
        raise ImportError(
            "engine='ray' needs Ray Data: pip install 'llama-index-ragtune[distributed]'"
        )


class RayCorpusEncoder:
    """A ``map_batches`` UDF: ``{text_column: str[n]}`` -> the batch plus ``{output_column: (n, dim)}``.

    Args:
        model: what :func:`~llama_index_ragtune.embeddings.embed_corpus` accepts as ``model``
            (a folder or hub id is loaded inside the actor; a ``SentenceTransformer`` is
            shipped to it), or a spec from ``model_spec``.
        normalize: L2-normalise the vectors.
        batch_size: texts per forward pass inside the actor.
        text_column, output_column: column names.

    Example::

        encoder = RayCorpusEncoder(model="runs/static")      # what each Ray actor builds
        encoder({"text": np.array(["a passage"])})["embedding"].shape   # (1, dim)
    """

    def __init__(
        self,
        model: Any = None,
        normalize: bool = True,
        batch_size: int = 64,
        text_column: str = "text",
        output_column: str = "embedding",
    ) -> None:
        spec = model if _is_spec(model) else model_spec(model)
        self.encoder = BlockEncoder.load(spec, normalize)
        self.batch_size = batch_size
        self.text_column, self.output_column = text_column, output_column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.text_column not in batch:
            raise KeyError(
                f"the batch has no {self.text_column!r} column (columns: {', '.join(batch)}); "
                "pass text_column= in fn_constructor_kwargs"
            )
        texts = [str(t) for t in batch[self.text_column]]
        out = dict(batch)
        out[self.output_column] = self.encoder.encode(texts, self.batch_size)
        return out


def _is_spec(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and value[0] in ("static", "sentence-transformers", "instance")
    )


class RayEngine:
    """Embed driver-side shards with Ray Data: one ``map_batches`` job per shard.

    Ray is initialised locally when nothing initialised it (call ``ray.init(address=...)``
    first to use a cluster). Each shard starts its own actor pool, so shards should be
    large enough for the model load to be small next to the work (thousands of texts).
    On a cluster, a model given as a folder must exist at that path on every node
    (shared storage); a ``SentenceTransformer`` object is shipped to the actors instead.

    Example::

        engine = RayEngine("runs/encoder/final", normalize=True, batch_size=64, workers=4)
        vectors = engine.encode(["first passage", "second passage"])   # (2, dim), in order
    """

    def __init__(self, model: Any, normalize: bool, batch_size: int, workers: int | None) -> None:
        require_ray()
        import ray

        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = int(workers or max(1, cluster_cpus))
        self.spec = model_spec(model)
        self.normalize, self.batch_size = normalize, batch_size

    def encode(self, shard: list[str]) -> np.ndarray:
        import ray

        ctx = ray.data.DataContext.get_current()
        saved = (ctx.enable_progress_bars, ctx.print_on_execution_start)
        # embed_corpus shows one progress bar for the whole corpus
        ctx.enable_progress_bars, ctx.print_on_execution_start = False, False
        try:
            return self._encode(shard)
        finally:
            ctx.enable_progress_bars, ctx.print_on_execution_start = saved

    def _encode(self, shard: list[str]) -> np.ndarray:
        import ray

        items = [{"row": i, "text": t} for i, t in enumerate(shard)]
        ds = ray.data.from_items(
            items, override_num_blocks=max(1, min(len(shard), self.workers * 4))
        )
        ds = ds.map_batches(
            RayCorpusEncoder,
            fn_constructor_kwargs={
                "model": self.spec,
                "normalize": self.normalize,
                "batch_size": self.batch_size,
            },
            compute=ray.data.ActorPoolStrategy(size=self.workers),
            batch_size=self.batch_size * 4,
            batch_format="numpy",
            num_cpus=1,
        )
        out: np.ndarray | None = None
        filled = np.zeros(len(shard), dtype=bool)
        for batch in ds.select_columns(["row", "embedding"]).iter_batches(
            batch_size=None, batch_format="numpy"
        ):
            vectors = np.asarray(batch["embedding"], dtype=np.float32)
            if out is None:
                out = np.empty((len(shard), vectors.shape[1]), dtype=np.float32)
            rows = np.asarray(batch["row"], dtype=np.int64)
            out[rows] = vectors
            filled[rows] = True
        if out is None or not filled.all():
            missing = len(shard) - int(filled.sum())
            raise RuntimeError(f"Ray Data returned no embedding for {missing} texts of the shard")
        return out

    def close(self) -> None:
        pass
