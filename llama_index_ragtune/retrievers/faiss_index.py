"""FAISS index types for the dense side: exact (flat), HNSW, IVF and IVF-PQ.

:class:`FaissIndexConfig` says which FAISS index holds the dense vectors and with
which parameters; ``HybridRetriever.from_defaults(nodes, dense_index="hnsw")`` (or a
config object for non-default parameters) builds it, and ``persist`` records the
resolved config in the manifest (``dense.index``), so a reloaded retriever searches
with the same settings.

========  =====================================  ==========================================
kind      FAISS index (inner product on L2-       when
          normalised vectors = cosine)
========  =====================================  ==========================================
flat      ``IndexFlatIP``: exact                  up to ~10^5 vectors, or when exactness matters
hnsw      ``IndexHNSWFlat``: graph, approximate   large corpora, lowest latency; full vectors
                                                  plus ``2 * hnsw_m`` links per vector in RAM
ivf       ``IndexIVFFlat``: k-means lists         large corpora, cheaper to build than HNSW
ivfpq     ``IndexIVFPQ``: lists + product         memory-bound corpora: ``pq_m`` bytes per
          quantisation                            vector instead of ``4 * d``; lowest recall
========  =====================================  ==========================================

Defaults (see ``benchmarks/scale.py`` for what they give at 10^5 and 10^6 vectors):
HNSW ``hnsw_m=32``, ``ef_construction=200``, ``ef_search=128``; IVF ``nlist`` =
``sqrt(N)`` (at most ``N / 39``, FAISS' minimum of training points per list),
``nprobe=32``; IVF-PQ ``pq_m = d / 8`` sub-quantisers of ``pq_nbits=8`` bits. IVF and
IVF-PQ are trained (k-means) on a sample of ``train_size`` corpus vectors (default
``64 * nlist``; for IVF-PQ at least ``39 * 2**pq_nbits``, what FAISS asks for). A corpus too small to train the requested lists or codebooks raises
``ValueError`` naming the parameter; with ``nlist=None`` the list count shrinks to fit.

``ef_search`` and ``nprobe`` are query-time settings: change them on a built or loaded
store with :meth:`FilterableFaissVectorStore.set_search_params
<llama_index_ragtune.retrievers.FilterableFaissVectorStore.set_search_params>`.

Example::

    from llama_index_ragtune.retrievers import FaissIndexConfig, HybridRetriever

    retriever = HybridRetriever.from_defaults(nodes=nodes, dense_index="hnsw")
    retriever = HybridRetriever.from_defaults(
        nodes=nodes, dense_index=FaissIndexConfig(kind="ivf", nlist=256, nprobe=16)
    )
    index = FaissIndexConfig(kind="hnsw").build(vectors)  # a filled faiss.IndexHNSWFlat
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["INDEX_KINDS", "FaissIndexConfig", "index_kind", "resolve_index_config"]

logger = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "hnsw", "ivf", "ivfpq")
#: FAISS warns below this many training points per k-means centroid.
MIN_POINTS_PER_CENTROID = 39
#: A k-means (the coarse lists, or one PQ sub-quantiser) costing fewer multiply-adds per
#: iteration than this runs on one thread: FAISS' many small OpenMP loops cost more in
#: thread synchronisation than they save, badly so on a busy machine (10 s instead of
#: 0.03 s for 1,200 vectors on 2 shared cores).
SMALL_TRAINING_WORK = 5e7


#: Largest ``efSearch`` / ``efConstruction`` (FAISS allocates the candidate list per query:
#: 2**31 - 1 took 16 GB and 28 s for one query; 1,000,000 takes about 15 MB).
MAX_EF_SEARCH = 1_000_000
#: Largest ``nprobe`` (a C ``int``; any value above ``nlist`` scans every list).
MAX_NPROBE = 2**31 - 1


class FaissIndexConfig(BaseModel):
    """Which FAISS index the dense side uses, and its build and search parameters.

    Parameters left ``None`` are chosen from the corpus size and dimension when the
    index is built (:meth:`resolve`); the resolved values are what ``persist`` records.

    Example::

        config = FaissIndexConfig(kind="hnsw", ef_search=256)
        index = config.build(vectors)          # vectors: float32 (n, d), L2-normalised
        config.resolve(n=1_000_000, d=384)     # nlist, pq_m, train_size filled in
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["flat", "hnsw", "ivf", "ivfpq"] = Field(
        default="flat", description="flat (exact), hnsw, ivf (IVF-Flat) or ivfpq (IVF-PQ)."
    )
    hnsw_m: int = Field(
        default=32, ge=2, le=256, description="HNSW: links per vector and layer (FAISS M)."
    )
    ef_construction: int = Field(
        default=200,
        ge=1,
        le=MAX_EF_SEARCH,
        description="HNSW: candidate list size while building (efConstruction).",
    )
    ef_search: int = Field(
        default=128,
        ge=1,
        le=MAX_EF_SEARCH,
        description="HNSW: candidate list size per query (efSearch); higher = better recall, slower.",
    )
    nlist: int | None = Field(
        default=None,
        ge=1,
        description="IVF: number of k-means lists (None: sqrt(N), at most N / 39).",
    )
    nprobe: int = Field(
        default=32,
        ge=1,
        le=MAX_NPROBE,
        description="IVF: lists scanned per query (capped at nlist).",
    )
    pq_m: int | None = Field(
        default=None,
        ge=1,
        description="IVF-PQ: sub-quantisers = bytes per vector at 8 bits; must divide d (None: d / 8).",
    )
    pq_nbits: int = Field(
        default=8, ge=1, le=16, description="IVF-PQ: bits per sub-quantiser code."
    )
    train_size: int | None = Field(
        default=None,
        ge=1,
        description="IVF: corpus vectors used to train (None: 64 * nlist, for IVF-PQ at least 39 * 2**pq_nbits; at most N).",
    )
    seed: int = Field(default=1234, description="Seed of the training sample and of k-means.")

    @property
    def approximate(self) -> bool:
        """Whether the index may miss true nearest neighbours (every kind but ``flat``)."""
        return self.kind != "flat"

    # ------------------------------------------------------------------ parameters

    def resolve(self, n: int, d: int) -> FaissIndexConfig:
        """This config with every ``None`` filled in for ``n`` training vectors of dimension ``d``.

        Raises ``ValueError`` naming the parameter when ``n`` vectors cannot train the
        requested index (too few points for ``nlist`` lists or ``2**pq_nbits`` codes, or
        ``pq_m`` not dividing ``d``).
        """
        if self.kind not in ("ivf", "ivfpq"):
            return self
        fix = "use dense_index='flat' or 'hnsw' for a corpus this small"
        if self.nlist is None:
            nlist = max(1, min(round(math.sqrt(n)), n // MIN_POINTS_PER_CENTROID))
        else:
            nlist = self.nlist
            if nlist > n:
                raise ValueError(
                    f"FaissIndexConfig(kind={self.kind!r}, nlist={nlist}) needs at least nlist "
                    f"training vectors to form {nlist} lists, but the corpus has {n}; pass a "
                    f"smaller nlist (or nlist=None to choose it from the corpus size), or {fix}"
                )
            if nlist * MIN_POINTS_PER_CENTROID > n:
                logger.warning(
                    "FaissIndexConfig(kind=%r, nlist=%d): %d vectors give fewer than %d training "
                    "points per list; k-means lists will be poor (nlist=None chooses %d)",
                    self.kind,
                    nlist,
                    n,
                    MIN_POINTS_PER_CENTROID,
                    max(1, n // MIN_POINTS_PER_CENTROID),
                )
        floor = 64 * nlist
        if self.kind == "ivfpq":  # the PQ codebooks want 39 points per code too
            floor = max(floor, MIN_POINTS_PER_CENTROID * 2**self.pq_nbits)
        train_size = min(n, self.train_size or floor)
        updates: dict[str, Any] = {"nlist": nlist, "train_size": train_size}
        if self.kind == "ivfpq":
            pq_m = self.pq_m if self.pq_m is not None else _largest_divisor(d, max(1, d // 8))
            if d % pq_m:
                raise ValueError(
                    f"FaissIndexConfig(pq_m={pq_m}) must divide the vector dimension {d}; "
                    f"pick one of {[m for m in range(1, d + 1) if d % m == 0][-8:]} (or None)"
                )
            codes = 2**self.pq_nbits
            if train_size < codes:
                raise ValueError(
                    f"FaissIndexConfig(kind='ivfpq', pq_nbits={self.pq_nbits}) trains {codes} "
                    f"codes per sub-quantiser and needs at least {codes} training vectors, but "
                    f"only {train_size} are available (corpus {n}); lower pq_nbits, raise "
                    f"train_size, or {fix}"
                )
            updates["pq_m"] = pq_m
        return self.model_copy(update=updates)

    # ------------------------------------------------------------------ building

    def create(self, d: int, n: int) -> Any:
        """An empty FAISS index of this kind for ``n`` vectors of dimension ``d`` (inner product).

        ``n`` resolves ``nlist``/``pq_m``/``train_size`` when unset (:meth:`resolve`).
        IVF kinds must be trained (:meth:`train`) before vectors are added.
        """
        import faiss

        config = self.resolve(n, d)
        ip = faiss.METRIC_INNER_PRODUCT
        if config.kind == "flat":
            return faiss.IndexFlatIP(d)
        if config.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, config.hnsw_m, ip)
            index.hnsw.efConstruction = config.ef_construction
            index.hnsw.efSearch = config.ef_search
            return index
        quantizer = faiss.IndexFlatIP(d)
        if config.kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, config.nlist, ip)
        else:
            index = faiss.IndexIVFPQ(quantizer, d, config.nlist, config.pq_m, config.pq_nbits, ip)
        index.cp.seed = config.seed
        if config.kind == "ivfpq":
            index.pq.cp.seed = config.seed
        index.nprobe = min(config.nprobe, config.nlist)
        return index

    def train(self, index: Any, vectors: np.ndarray) -> None:
        """Train ``index`` (IVF kinds) on at most ``train_size`` rows of ``vectors`` (a sample)."""
        if index.is_trained:
            return
        n = len(vectors)
        config = self.resolve(n, index.d)
        sample = vectors
        if config.train_size < n:
            rows = np.random.default_rng(config.seed).choice(n, config.train_size, replace=False)
            sample = vectors[np.sort(rows)]
        import faiss

        sample = np.ascontiguousarray(sample, dtype=np.float32)
        # The coarse lists first, with FAISS' own clustering parameters (index.cp); then
        # index.train skips them (the quantizer is full) and trains the PQ codebooks. Each
        # step gets one thread when it is small (see SMALL_TRAINING_WORK).
        coarse = len(sample) * config.nlist * index.d
        with _threads(1 if coarse < SMALL_TRAINING_WORK else None):
            clustering = faiss.Clustering(index.d, config.nlist, index.cp)
            index.quantizer.reset()
            clustering.train(sample, index.quantizer)
        codebook = 0
        if config.kind == "ivfpq":
            points = min(len(sample), index.pq.cp.max_points_per_centroid * 2**config.pq_nbits)
            codebook = points * 2**config.pq_nbits * (index.d // config.pq_m)
        with _threads(1 if codebook < SMALL_TRAINING_WORK else None):
            index.train(sample)

    def build(self, vectors: np.ndarray, add: bool = True, batch_size: int = 65_536) -> Any:
        """A FAISS index of this kind over ``vectors`` (float32, L2-normalised), trained and filled.

        With ``add=False`` the index is only created and trained (nodes are added later
        through :class:`~llama_index_ragtune.retrievers.FilterableFaissVectorStore`).
        Rows are added ``batch_size`` at a time, so a memory-mapped array is never copied whole.
        """
        if vectors.ndim != 2 or not len(vectors):
            raise ValueError(
                f"FaissIndexConfig.build needs a non-empty 2-d array, got {vectors.shape}"
            )
        index = self.create(vectors.shape[1], len(vectors))
        self.train(index, vectors)
        if add:
            for start in range(0, len(vectors), batch_size):
                chunk = vectors[start : start + batch_size]
                index.add(np.ascontiguousarray(chunk, dtype=np.float32))
        return index

    @classmethod
    def from_index(
        cls, index: Any, base: FaissIndexConfig | None = None
    ) -> FaissIndexConfig | None:
        """The config describing a built FAISS index (its current ``ef_search``/``nprobe``).

        ``base`` supplies what the index does not record (``train_size``, ``seed``).
        ``None`` for index types other than the four kinds.

        Example::

            FaissIndexConfig.from_index(store.client).model_dump()
        """
        kind = index_kind(index)
        if kind == "other":
            return None
        known: dict[str, Any] = {"kind": kind}
        if kind == "hnsw":
            known.update(
                hnsw_m=int(index.hnsw.nb_neighbors(1)),
                ef_construction=int(index.hnsw.efConstruction),
                ef_search=int(index.hnsw.efSearch),
            )
        elif kind in ("ivf", "ivfpq"):
            known.update(nlist=int(index.nlist), nprobe=int(index.nprobe))
            if kind == "ivfpq":
                known.update(pq_m=int(index.pq.M), pq_nbits=int(index.pq.nbits))
        if base is not None and base.kind == kind:
            return base.model_copy(update=known)
        return cls(**known)


def index_kind(index: Any) -> str:
    """``"flat"``, ``"hnsw"``, ``"ivf"``, ``"ivfpq"`` (or ``"other"``) for a FAISS index object.

    Example::

        index_kind(faiss.IndexHNSWFlat(384, 32))  # 'hnsw'
    """
    import faiss

    if isinstance(index, faiss.IndexFlat):
        return "flat"
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq"
    if isinstance(index, faiss.IndexIVF):
        return "ivf"
    return "other"


def resolve_index_config(dense_index: str | FaissIndexConfig | None) -> FaissIndexConfig:
    """A :class:`FaissIndexConfig` from the ``dense_index`` argument (a kind name or a config).

    Example::

        resolve_index_config("hnsw").ef_search  # 128
    """
    if dense_index is None:
        return FaissIndexConfig()
    if isinstance(dense_index, FaissIndexConfig):
        return dense_index
    if isinstance(dense_index, str):
        if dense_index not in INDEX_KINDS:
            raise ValueError(
                f"dense_index={dense_index!r} is not a FAISS index kind; use one of {INDEX_KINDS}, "
                "a FaissIndexConfig, or a LlamaIndex vector store"
            )
        return FaissIndexConfig(kind=dense_index)
    raise TypeError(
        f"dense_index must be one of {INDEX_KINDS}, a FaissIndexConfig or a LlamaIndex vector "
        f"store, got {type(dense_index).__name__}"
    )


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """Run FAISS with ``count`` OpenMP threads inside the block (process-wide setting)."""
    if count is None:
        yield
        return
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _largest_divisor(d: int, at_most: int) -> int:
    return max(m for m in range(1, at_most + 1) if d % m == 0)
