"""Hard-negative mining: BM25 false positives, the current embedder's near misses, curated confusers.

A hard negative is a passage that looks relevant to a query but does not answer
it. ``HardNegativeMiner`` finds them from several sources and keeps false
negatives out:

- a positive of the query is never its negative, and "the query" includes every
  query with the same normalised text (duplicates share their positives);
- with ``dedupe_text`` (default) a passage whose text equals a positive's is skipped;
- score filters, each computed with the source's own scorer: ``max_score``
  (absolute), ``margin`` (skip when ``score > min_positive_score - margin``) and
  ``relative_margin`` (skip when ``score > relative_margin * min_positive_score``;
  ``0.95`` equals sentence-transformers' ``relative_margin=0.05``);
- optionally a cross-encoder re-scores the survivors and rejects those above
  ``cross_encoder_max_score`` or within ``cross_encoder_margin`` of the positive.

Example::

    from llama_index_ragtune.data import HardNegativeMiner, RetrievalDataset

    train = RetrievalDataset.from_beir("../shared/data/scifact", split="train")
    miner = HardNegativeMiner(sources=("bm25", "dense"), num_negatives=5, range_max=30)
    train = miner.mine(train)
    print(miner.mine_stats)     # per-source counts and how many candidates each filter removed
    rows = train.to_triplets()  # {"anchor", "positive", "negative"} for sentence-transformers
"""

from __future__ import annotations

import logging
import random
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from llama_index_ragtune.data.mining_context import _Context
from llama_index_ragtune.data.mining_options import (
    DEFAULT_RELATIVE_MARGIN,
    KNOWN_SOURCES,
    MINED_SOURCES,
    CuratedFn,
    check_miner_options,
)
from llama_index_ragtune.data.mining_stats import FILTERS, MiningStats
from llama_index_ragtune.data.negative_sources import (
    BM25Scorer,
    DenseScorer,
    load_cross_encoder_scorer,
)
from llama_index_ragtune.data.schema import Negative, RetrievalDataset, _fmt_ids
from llama_index_ragtune.retrievers.bm25_index import BM25Text

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from sentence_transformers import CrossEncoder, SentenceTransformer

__all__ = [
    "DEFAULT_RELATIVE_MARGIN",
    "FILTERS",
    "KNOWN_SOURCES",
    "MINED_SOURCES",
    "CuratedFn",
    "HardNegativeMiner",
    "MiningStats",
]

logger = logging.getLogger(__name__)


class HardNegativeMiner:
    """Mine hard negatives for a ``RetrievalDataset`` from BM25, a dense encoder and curated lists.

    Args:
        sources: any of ``"bm25"``, ``"dense"``, ``"curated"``, mined in this order; a
            passage found by an earlier source is not taken again by a later one.
            ``"curated"`` is added when ``curated`` is given.
        num_negatives: negatives per query *per source* (an int, or ``{source: n}``
            where unlisted sources get 5); the total per query is at most their sum.
        keep_existing: keep the dataset's negatives (e.g. BEIR ``judged`` ones) and
            mine around them.
        range_min: skip the ``range_min`` best-ranked non-positive candidates.
        range_max: consider candidates up to this rank (ranks count non-positive
            candidates from 1; they are recorded in ``Negative.rank``).
        sampling: ``"top"`` takes the best surviving candidates of the window,
            ``"random"`` samples among them (seeded by ``seed`` and the query id).
        max_score, margin, relative_margin: false-negative filters (see module doc);
            a float applies to every scored source, ``{source: value}`` to one.
            ``relative_margin`` applies only where the query's lowest positive score
            is > 0; by default it is 0.95 for ``dense`` alone, because a BM25 score
            above the positive's is exactly what a lexical false positive is.
        dedupe_text: skip candidates whose normalised text equals a positive's.
        cross_encoder, cross_encoder_max_score, cross_encoder_margin: re-score the
            candidates that passed with a CrossEncoder (path, hub id, instance, or a
            callable ``pairs -> scores``) and reject those above the absolute score or
            within the margin of the query's lowest-scoring positive.
        curated: user confusers, ``{query_id: [doc_id, ...]}`` or a callable
            ``(query_id, query, positive_ids, dataset) -> doc ids``. Curated negatives
            skip the score filters but never include a positive.
        embed_model: the dense source's encoder: ``None`` (bundled MiniLM), a path/hub
            id, a ``SentenceTransformer`` or a LlamaIndex ``BaseEmbedding``.
        corpus_embeddings: precomputed corpus embeddings, rows in the dataset's corpus
            order; ``embedding_cache_dir`` stores them on disk between runs instead.
        bm25_language, bm25_analyzer: the ``"bm25"`` source's stemmer (``"english"``,
            ``"german"``, ..., ``None``: none; its stopwords follow it) and analyzer
            (``"plain"`` or ``"unicode"``, see
            :class:`~llama_index_ragtune.retrievers.BM25Tokenizer`): give the served
            retriever's, so its false positives are the ones mined. Recorded in the mined
            dataset's ``metadata["mining"]["bm25_analyzer"]`` / ``["bm25_language"]``.
        bm25_stopwords: the words that source drops: ``"language"`` (the language's
            list, default), ``None``, a bm25s list code (``"de"``) or a list of words
            (recorded in ``["bm25_stopwords"]`` when given).
        query_batch_size: queries searched at once (memory is ``O(batch * range_max)``).
    """

    def __init__(
        self,
        sources: Sequence[str] = ("bm25", "dense"),
        num_negatives: int | Mapping[str, int] = 5,
        range_min: int = 0,
        range_max: int = 50,
        sampling: Literal["top", "random"] = "top",
        seed: int = 0,
        max_score: float | Mapping[str, float] | None = None,
        margin: float | Mapping[str, float] | None = None,
        relative_margin: float | Mapping[str, float] | None = DEFAULT_RELATIVE_MARGIN,
        dedupe_text: bool = True,
        cross_encoder: str
        | CrossEncoder
        | Callable[[list[tuple[str, str]]], Sequence[float]]
        | None = None,
        cross_encoder_max_score: float | None = None,
        cross_encoder_margin: float | None = None,
        curated: Mapping[str, Sequence[str]] | CuratedFn | None = None,
        embed_model: str | SentenceTransformer | BaseEmbedding | None = None,
        corpus_embeddings: np.ndarray | None = None,
        embedding_cache_dir: str | Path | None = None,
        bm25_language: str | None = "english",
        bm25_analyzer: str = "plain",
        bm25_stopwords: str | Sequence[str] | None = "language",
        encode_batch_size: int = 64,
        query_batch_size: int = 256,
        keep_existing: bool = True,
        show_progress: bool = True,
    ) -> None:
        sources = check_miner_options(
            sources=sources,
            num_negatives=num_negatives,
            range_min=range_min,
            range_max=range_max,
            sampling=sampling,
            max_score=max_score,
            margin=margin,
            relative_margin=relative_margin,
            cross_encoder=cross_encoder,
            cross_encoder_max_score=cross_encoder_max_score,
            cross_encoder_margin=cross_encoder_margin,
            curated=curated,
            bm25_language=bm25_language,
            bm25_analyzer=bm25_analyzer,
            encode_batch_size=encode_batch_size,
            query_batch_size=query_batch_size,
        )
        self.sources = sources
        self.num_negatives = num_negatives
        self.range_min, self.range_max = range_min, range_max
        self.sampling, self.seed = sampling, seed
        self.max_score, self.margin, self.relative_margin = max_score, margin, relative_margin
        self.dedupe_text = dedupe_text
        self.cross_encoder = cross_encoder
        self.cross_encoder_max_score, self.cross_encoder_margin = (
            cross_encoder_max_score,
            cross_encoder_margin,
        )
        self.curated = curated
        self.embed_model = embed_model
        self.corpus_embeddings = corpus_embeddings
        self.embedding_cache_dir = embedding_cache_dir
        self.bm25_language = bm25_language
        self.bm25_analyzer = bm25_analyzer
        stopwords = tuple(bm25_stopwords) if isinstance(bm25_stopwords, list) else bm25_stopwords
        self.bm25_text = BM25Text(bm25_analyzer, bm25_language, stopwords)
        self.encode_batch_size, self.query_batch_size = encode_batch_size, query_batch_size
        self.keep_existing = keep_existing
        self.show_progress = show_progress
        self.mine_stats = MiningStats()
        self._ce_scorer: Callable[[list[tuple[str, str]]], np.ndarray] | None = None

    # ------------------------------------------------------------------ public

    def mine(self, dataset: RetrievalDataset) -> RetrievalDataset:
        """A copy of ``dataset`` with mined negatives added; stats in ``self.mine_stats``."""
        if not isinstance(dataset, RetrievalDataset):
            raise TypeError(f"mine() expects a RetrievalDataset, got {type(dataset).__name__}")
        dataset.validate()
        self.mine_stats = stats = MiningStats(queries=len(dataset))
        ctx = _Context(dataset, self.dedupe_text)
        chosen: dict[str, list[Negative]] = (
            {q: list(v) for q, v in dataset.negatives.items()} if self.keep_existing else {}
        )
        for source in self.sources:
            stats.negatives.setdefault(source, 0)
            stats.filtered.setdefault(source, dict.fromkeys(FILTERS, 0))
            stats.short.setdefault(source, 0)
            if source == "curated":
                self._mine_curated(dataset, ctx, chosen)
            else:
                self._mine_scored(source, dataset, ctx, chosen)
        logger.info("%s", stats)
        if any(self._n(source) > 0 for source in self.sources if source != "curated"):
            _warn_without_negatives(dataset, chosen, stats)
        out = dataset.with_negatives(chosen, replace=True)
        out.metadata["mining"] = {"sources": list(self.sources), "stats": stats.as_dict()}
        if "bm25" in self.sources:
            out.metadata["mining"].update(self.bm25_text.options())
            if self.bm25_text.stopwords != "language":  # given: recorded
                stopwords = self.bm25_text.tokenizer_kwargs()["stopwords"]
                out.metadata["mining"]["bm25_stopwords"] = stopwords
        return out

    # ------------------------------------------------------------------ sources

    def _n(self, source: str) -> int:
        if isinstance(self.num_negatives, Mapping):
            return int(self.num_negatives.get(source, 5))
        return int(self.num_negatives)

    def _mine_curated(
        self, ds: RetrievalDataset, ctx: _Context, chosen: dict[str, list[Negative]]
    ) -> None:
        stats, n = self.mine_stats, self._n("curated")
        if isinstance(self.curated, Mapping):
            unknown_q = [q for q in self.curated if q not in ds.queries]
            if unknown_q:
                raise ValueError(f"curated negatives name unknown query ids {_fmt_ids(unknown_q)}")
        conflicts = 0
        for qid, query in ds.queries.items():
            if isinstance(self.curated, Mapping):
                docs = _curated_ids(self.curated.get(qid), qid)
            else:
                docs = _curated_ids(self.curated(qid, query, list(ds.relevant_docs[qid]), ds), qid)
            unknown = [d for d in docs if d not in ds.corpus]
            if unknown:
                raise ValueError(
                    f"curated negatives for query {qid!r} reference unknown doc ids {_fmt_ids(unknown)}"
                )
            taken = {x.doc_id for x in chosen.get(qid, [])}
            kept = 0
            for rank, doc_id in enumerate(dict.fromkeys(docs), start=1):
                if kept >= n:
                    break
                reason = ctx.exclusion(qid, ctx.index[doc_id], taken)
                if reason:
                    stats._count("curated", reason)
                    conflicts += reason == "positive"
                    continue
                chosen.setdefault(qid, []).append(Negative(doc_id, "curated", None, rank))
                taken.add(doc_id)
                kept += 1
            stats.negatives["curated"] += kept
            stats.short["curated"] += kept < min(n, len(docs))
        if conflicts:
            warnings.warn(
                f"{conflicts} curated negatives are positives of their query and were skipped",
                stacklevel=3,
            )

    def _mine_scored(
        self, source: str, ds: RetrievalDataset, ctx: _Context, chosen: dict[str, list[Negative]]
    ) -> None:
        from tqdm.auto import tqdm

        texts = list(ds.corpus.values())
        if source == "bm25":
            scorer: Any = BM25Scorer(
                texts, show_progress=self.show_progress, **self.bm25_text.tokenizer_kwargs()
            )
        else:
            scorer = DenseScorer(
                texts,
                ctx.doc_ids,
                model=self.embed_model,
                corpus_embeddings=self.corpus_embeddings,
                cache_dir=self.embedding_cache_dir,
                batch_size=self.encode_batch_size,
                show_progress=self.show_progress,
            )
        qids = list(ds.queries)
        bar = tqdm(
            total=len(qids), desc=f"Mining {source} negatives", disable=not self.show_progress
        )
        for start in range(0, len(qids), self.query_batch_size):
            batch = qids[start : start + self.query_batch_size]
            pos_idx = [sorted(ctx.positive_idx[q]) for q in batch]
            k = self.range_max + max(len(p) for p in pos_idx)
            top_scores, top_idx, pos_scores = scorer.search(
                [ds.queries[q] for q in batch], k, pos_idx
            )
            for row, qid in enumerate(batch):
                self._select(
                    source, ds, ctx, qid, top_scores[row], top_idx[row], pos_scores[row], chosen
                )
            bar.update(len(batch))
        bar.close()

    # ------------------------------------------------------------------ selection

    def _select(
        self,
        source: str,
        ds: RetrievalDataset,
        ctx: _Context,
        qid: str,
        scores: np.ndarray,
        idx: np.ndarray,
        pos_scores: np.ndarray,
        chosen: dict[str, list[Negative]],
    ) -> None:
        stats, n = self.mine_stats, self._n(source)
        taken = {x.doc_id for x in chosen.get(qid, [])}
        min_pos = float(pos_scores.min()) if len(pos_scores) else None
        max_score = _for(self.max_score, source)
        margin = _for(self.margin, source)
        rel = _for(self.relative_margin, source)
        window: list[tuple[int, float, int]] = []
        rank = 0
        for doc, score in zip(idx.tolist(), scores.tolist(), strict=True):
            if doc < 0:
                break
            if doc in ctx.positive_idx[qid]:
                stats._count(source, "positive")
                continue  # positives take no rank
            rank += 1
            if rank <= self.range_min:
                continue
            if rank > self.range_max:
                break
            reason = ctx.exclusion(qid, doc, taken)
            if reason is None and max_score is not None and score > max_score:
                reason = "max_score"
            if (
                reason is None
                and margin is not None
                and min_pos is not None
                and score > min_pos - margin
            ):
                reason = "margin"
            if (
                reason is None
                and rel is not None
                and min_pos is not None
                and min_pos > 0
                and score > rel * min_pos
            ):
                reason = "relative_margin"
            if reason:
                stats._count(source, reason)
            else:
                window.append((doc, score, rank))
        if self.sampling == "random":
            random.Random(f"{self.seed}:{source}:{qid}").shuffle(window)
        picked = (
            self._cross_encoder_pick(source, ds, ctx, qid, window, n)
            if self.cross_encoder
            else window[:n]
        )
        picked.sort(key=lambda t: t[2])
        negs = chosen.setdefault(qid, [])
        negs.extend(Negative(ctx.doc_ids[d], source, float(s), r) for d, s, r in picked)
        stats.negatives[source] += len(picked)
        stats.short[source] += len(picked) < n

    def _cross_encoder_pick(
        self,
        source: str,
        ds: RetrievalDataset,
        ctx: _Context,
        qid: str,
        window: list[tuple[int, float, int]],
        n: int,
    ) -> list[tuple[int, float, int]]:
        if self._ce_scorer is None:
            self._ce_scorer = load_cross_encoder_scorer(
                self.cross_encoder, batch_size=self.encode_batch_size
            )
        query = ds.queries[qid]
        limit = self.cross_encoder_max_score
        if self.cross_encoder_margin is not None:
            pos = self._ce_scorer(
                [(query, ds.corpus[ctx.doc_ids[d]]) for d in sorted(ctx.positive_idx[qid])]
            )
            bound = float(pos.min()) - self.cross_encoder_margin
            limit = bound if limit is None else min(limit, bound)
        picked: list[tuple[int, float, int]] = []
        step = max(2 * n, 8)
        for start in range(0, len(window), step):
            chunk = window[start : start + step]
            ce = self._ce_scorer([(query, ds.corpus[ctx.doc_ids[d]]) for d, _, _ in chunk])
            for cand, ce_score in zip(chunk, ce.tolist(), strict=True):
                if ce_score > limit:
                    self.mine_stats._count(source, "cross_encoder")
                elif len(picked) < n:
                    picked.append(cand)
            if len(picked) >= n:
                break
        return picked


def _warn_without_negatives(
    dataset: RetrievalDataset, chosen: dict[str, list[Negative]], stats: MiningStats
) -> None:
    """One warning naming the queries left without any negative (a one-document corpus,
    passages that all repeat a positive's text, a query whose positives are the whole
    corpus): they were silent, and such a query trains on in-batch negatives only."""
    empty = [q for q in dataset.queries if not chosen.get(q)]
    if not empty:
        return
    filtered: dict[str, int] = {}
    for bucket in stats.filtered.values():
        for reason, n in bucket.items():
            filtered[reason] = filtered.get(reason, 0) + n
    why = ", ".join(f"{reason}: {n}" for reason, n in filtered.items() if n) or "no candidate"
    msg = (
        f"mining: {len(empty)} of {len(dataset.queries)} queries got no negative "
        f"(e.g. {_fmt_ids(empty)}); candidates removed ({why}). "
        f"The corpus has {len(dataset.corpus)} documents: add documents that are not "
        "positives (or copies of one), or curated negatives"
    )
    warnings.warn(msg, stacklevel=3)
    logger.warning(msg)


def _curated_ids(value: Any, qid: str) -> list[str]:
    """One query's curated negatives as a list of doc ids: ``None`` is none, a bare string is
    one id (it was read letter by letter: ``"d2"`` gave ``'d'`` and ``'2'``)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Iterable) or isinstance(value, bytes):
        raise TypeError(
            f"curated negatives for query {qid!r} must be a list of doc ids, got "
            f"{type(value).__name__}"
        )
    docs = list(value)
    wrong = [d for d in docs if not isinstance(d, str)]
    if wrong:
        raise TypeError(
            f"curated negatives for query {qid!r} must be doc ids (strings), got "
            f"{type(wrong[0]).__name__} {wrong[0]!r}"
        )
    return docs


def _for(value: float | Mapping[str, float] | None, source: str) -> float | None:
    if isinstance(value, Mapping):
        return value.get(source)
    return value
