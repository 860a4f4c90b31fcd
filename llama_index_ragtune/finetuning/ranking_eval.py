"""Evaluators the encoder-side engines run before, during and after training.

Both are sentence-transformers evaluators (pass them to a trainer as
``evaluator=``) that score rankings with :mod:`llama_index_ragtune.evaluation.metrics`,
so their numbers match ``RetrievalEvaluator`` and the benchmarks (graded qrels,
ideal DCG capped at K):

- ``DenseRetrievalEvaluator`` embeds the whole corpus with a ``SentenceTransformer``
  and ranks it for every query by cosine similarity;
- ``CandidateRerankingEvaluator`` re-scores each query's first-stage candidates
  (e.g. the hybrid retriever's top 50) with a ``CrossEncoder``; candidates below
  the rerank depth keep their first-stage order, so Recall@100 stays meaningful.

Example::

    from llama_index_ragtune.finetuning.ranking_eval import DenseRetrievalEvaluator

    evaluator = DenseRetrievalEvaluator(val.queries, val.corpus, val.relevant_docs)
    evaluator(SentenceTransformer(path))   # {"ndcg@10": ..., "recall@100": ..., "mrr@10": ...}
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sentence_transformers.base.evaluation import BaseEvaluator

from llama_index_ragtune.embeddings.fingerprint import encoder_identity
from llama_index_ragtune.embeddings.store import open_store
from llama_index_ragtune.evaluation.metrics import MeanMetrics, compute_metrics, mean_metrics
from llama_index_ragtune.postprocessor.cross_encoder import blend_scores

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder, SentenceTransformer

logger = logging.getLogger(__name__)

DEFAULT_METRICS = (("ndcg", 10), ("recall", 100), ("mrr", 10))


def as_graded_qrels(
    qrels: Mapping[str, Mapping[str, int] | Iterable[str]],
) -> dict[str, dict[str, int]]:
    """``{qid: {doc_id: grade}}`` from graded qrels or from ``{qid: [relevant doc ids]}``."""
    out: dict[str, dict[str, int]] = {}
    for qid, judged in qrels.items():
        if isinstance(judged, Mapping):
            out[str(qid)] = {str(d): int(g) for d, g in judged.items()}
        elif isinstance(judged, str):
            out[str(qid)] = {judged: 1}
        else:
            out[str(qid)] = {str(d): 1 for d in judged}
    return out


def score_rankings(
    rankings: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    metrics: Sequence[tuple[str, int]] = DEFAULT_METRICS,
) -> MeanMetrics:
    """Mean of each ``metric@k`` over the judged queries (a missing ranking scores 0); each
    query's values stay in the result's ``per_query`` (for a paired promotion decision)."""
    judged = [q for q, docs in qrels.items() if any(g > 0 for g in docs.values())]
    if not judged:
        raise ValueError("no query has a relevant document in the qrels; nothing to evaluate")
    return mean_metrics(
        {
            qid: {
                f"{name}@{k}": compute_metrics(
                    list(rankings.get(qid, ())), qrels[qid], k_values=(k,), metrics=(name,)
                )[f"{name}@{k}"]
                for name, k in metrics
            }
            for qid in judged
        }
    )


def unscorable(metrics: Sequence[tuple[str, int]]) -> dict[str, float]:
    """Every ``metric@k`` as NaN: what a model whose scores are not finite (NaN or infinite
    weights after a diverged run) gets, so a promotion decision keeps the model it would
    replace and checkpoint selection never picks it.

    Example::

        unscorable((("ndcg", 10),))   # {"ndcg@10": nan}
    """
    return {f"{name}@{k}": float("nan") for name, k in metrics}


def first_stage_score(qid: str, position: int, score: Any) -> float:
    """``score`` (``candidate_scores[qid][position]``) as a float, or ``TypeError`` /
    ``ValueError`` naming it: blended into the reranker's z-scores, one NaN or infinite
    first-stage score made a query's whole candidate list NaN, ranked in arbitrary order, and
    promotion was decided on it; ``None`` or text failed as a bare ``float()`` error.

    Example::

        first_stage_score("q1", 0, 0.83)   # 0.83
    """
    where = f"candidate_scores[{qid!r}][{position}]"
    try:  # numbers, numpy and torch scalars; not text, None or True
        value = None if isinstance(score, (bool, str, bytes)) else float(score)
    except (TypeError, ValueError):
        value = None
    if value is None:
        raise TypeError(
            f"{where} must be a number (the first stage's score of that candidate), got "
            f"{type(score).__name__} {score!r}"
        )
    if not np.isfinite(value):
        raise ValueError(
            f"{where} is {value!r}: first-stage scores must be finite numbers; fix that "
            "retriever score, or leave candidate_scores out (no blending with the first stage)"
        )
    return value


def _check_inputs(
    queries: Mapping[str, str], corpus: Mapping[str, str], qrels: Mapping[str, Any]
) -> None:
    if not corpus:
        raise ValueError("the evaluation corpus is empty")
    unknown = [q for q in qrels if q not in queries]
    if unknown:
        raise ValueError(f"qrels name query ids without a query text: {unknown[:5]}")


class _NonFiniteEmbeddings(Exception):
    """The model embedded a passage as NaN / infinite values (nothing is cached then)."""


class DenseRetrievalEvaluator(BaseEvaluator):
    """Rank the whole corpus for each query with a bi-encoder and score the rankings.

    Args:
        queries: ``{qid: text}``; only queries with relevant documents are scored.
        corpus: ``{doc_id: text}`` searched for every query.
        qrels: ``{qid: {doc_id: grade}}`` or ``{qid: [relevant doc ids]}``.
        top_k: length of each ranking (at least the largest metric cut-off).
        query_prompt, passage_prompt: text prepended to queries / passages; ``None``
            uses the model's own ``"query"`` / ``"document"`` prompts if it has any.
        batch_size: encoding batch size.
        name: prefix of the metric names reported to a trainer (``"val_ndcg@10"``).
        cache_dir: keep corpus embeddings here (the package's embedding store, see
            :mod:`~llama_index_ragtune.embeddings.store`), keyed by the content of the
            model's weights, its max sequence length, the prompt and each text, so
            re-evaluating an unchanged model (the starting one) skips the corpus pass.

    Example::

        evaluator = DenseRetrievalEvaluator(queries, corpus, qrels)
        metrics = evaluator.evaluate(model)          # unprefixed: {"ndcg@10": ...}
    """

    def __init__(
        self,
        queries: Mapping[str, str],
        corpus: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int] | Iterable[str]],
        top_k: int = 100,
        query_prompt: str | None = None,
        passage_prompt: str | None = None,
        batch_size: int = 32,
        metrics: Sequence[tuple[str, int]] = DEFAULT_METRICS,
        name: str = "val",
        show_progress_bar: bool = True,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.qrels = as_graded_qrels(qrels)
        _check_inputs(queries, corpus, self.qrels)
        self.query_ids = [q for q in self.qrels if any(g > 0 for g in self.qrels[q].values())]
        self.queries = {q: queries[q] for q in self.query_ids}
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.corpus_ids = list(corpus)
        self.corpus_texts = [corpus[d] for d in self.corpus_ids]
        self.top_k = max(top_k, *(k for _, k in metrics))
        self.query_prompt, self.passage_prompt = query_prompt, passage_prompt
        self.batch_size = batch_size
        self.metrics = tuple(metrics)
        self.name = name
        self.show_progress_bar = show_progress_bar
        self.primary_metric = f"{self.metrics[0][0]}@{self.metrics[0][1]}"
        self.corpus_embeddings: Any = None
        #: ``{qid: [(doc id, cosine), ...]}`` of the last ``rank()`` call (for fusion).
        self.last_scored_rankings: dict[str, list[tuple[str, float]]] = {}
        #: whether every embedding of the last ``rank()`` call was finite
        self.finite_scores = True

    def rank(self, model: SentenceTransformer) -> dict[str, list[str]]:
        """``{qid: [doc ids, best first]}`` (``top_k`` long) for every scored query.

        The normalised corpus embeddings stay in ``self.corpus_embeddings`` (a CPU
        tensor in ``corpus_ids`` order) for reuse, e.g. to build an index.
        """
        import torch

        doc_emb = self._corpus_embeddings(model)
        query_emb = model.encode_query(
            [self.queries[q] for q in self.query_ids],
            prompt=self.query_prompt,
            batch_size=self.batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        self.corpus_embeddings = doc_emb.detach().cpu()
        self.finite_scores = bool(
            torch.isfinite(doc_emb).all().item() and torch.isfinite(query_emb).all().item()
        )
        k = min(self.top_k, len(self.corpus_ids))
        rankings: dict[str, list[str]] = {}
        scored: dict[str, list[tuple[str, float]]] = {}
        for start in range(0, len(self.query_ids), 256):
            scores = query_emb[start : start + 256] @ doc_emb.T
            top = torch.topk(scores, k, dim=1)
            values, indices = top.values.cpu().tolist(), top.indices.cpu().tolist()
            for qid, idx, vals in zip(
                self.query_ids[start : start + 256], indices, values, strict=True
            ):
                rankings[qid] = [self.corpus_ids[i] for i in idx]
                scored[qid] = [
                    (self.corpus_ids[i], float(v)) for i, v in zip(idx, vals, strict=True)
                ]
        self.last_scored_rankings = scored
        return rankings

    def _corpus_embeddings(self, model: SentenceTransformer) -> Any:
        import torch

        def embed(texts: list[str], **output: Any) -> Any:
            return model.encode_document(
                texts,
                prompt=self.passage_prompt,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                show_progress_bar=self.show_progress_bar,
                **output,
            )

        def embed_finite(texts: list[str]) -> Any:
            vectors = embed(texts, convert_to_numpy=True)
            if not np.isfinite(vectors).all():
                raise _NonFiniteEmbeddings
            return vectors

        if self.cache_dir is None:
            return embed(self.corpus_texts, convert_to_tensor=True)
        store = open_store(self.cache_dir, encoder_identity(model, self.passage_prompt))
        try:
            vectors, counts = store.fetch_or_embed(self.corpus_texts, embed_finite)
        except _NonFiniteEmbeddings:  # a diverged model: scored (NaN) without touching the cache
            return embed(self.corpus_texts, convert_to_tensor=True)
        logger.info(
            "corpus embeddings: %d read from %s, %d embedded",
            counts["hits"],
            store.path,
            counts["misses"],
        )
        return torch.from_numpy(vectors).to(model.device)

    def evaluate(self, model: SentenceTransformer) -> dict[str, float]:
        """Unprefixed metrics, e.g. ``{"ndcg@10": 0.64, "recall@100": 0.92, "mrr@10": 0.61}``;
        all NaN (``unscorable``) when the model's embeddings are not finite."""
        was_training = model.training
        model.eval()
        try:
            rankings = self.rank(model)
            if not self.finite_scores:
                logger.warning("the model's embeddings are NaN or infinite; it cannot be scored")
                return unscorable(self.metrics)
            return score_rankings(rankings, self.qrels, self.metrics)
        finally:
            model.train(was_training)

    def __call__(
        self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1
    ) -> dict[str, float]:
        metrics = self.prefix_name_to_metrics(self.evaluate(model), self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics


class CandidateRerankingEvaluator(BaseEvaluator):
    """Re-score first-stage candidates with a cross-encoder and score the new rankings.

    Args:
        queries, corpus, qrels: as for ``DenseRetrievalEvaluator``.
        candidates: ``{qid: [doc ids, best first]}`` from the first stage (e.g. the
            hybrid retriever); queries without candidates score 0.
        depth: how many top candidates the cross-encoder re-scores; the rest keep
            their first-stage order after them.
        batch_size: cross-encoder batch size.
        candidate_scores: ``{qid: [first-stage scores]}`` aligned with ``candidates``;
            needed when ``retrieval_weight > 0``.
        retrieval_weight: blend the first-stage score into the order as
            ``CrossEncoderRerank(retrieval_weight=...)`` does (0: the reranker alone).

    Example::

        evaluator = CandidateRerankingEvaluator(queries, corpus, qrels, candidates, depth=50)
        evaluator.baseline()          # metrics of the first-stage order
        evaluator.evaluate(model)     # metrics after re-ranking
    """

    def __init__(
        self,
        queries: Mapping[str, str],
        corpus: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int] | Iterable[str]],
        candidates: Mapping[str, Sequence[str]],
        depth: int = 50,
        batch_size: int = 32,
        metrics: Sequence[tuple[str, int]] = DEFAULT_METRICS,
        name: str = "val",
        show_progress_bar: bool = True,
        candidate_scores: Mapping[str, Sequence[float]] | None = None,
        retrieval_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if not 0.0 <= retrieval_weight <= 1.0:
            raise ValueError(f"retrieval_weight must be in [0, 1], got {retrieval_weight}")
        if retrieval_weight > 0 and candidate_scores is None:
            raise ValueError(
                "retrieval_weight > 0 blends in the first-stage scores: pass candidate_scores="
                "{qid: [scores aligned with candidates]}"
            )
        self.qrels = as_graded_qrels(qrels)
        _check_inputs(queries, corpus, self.qrels)
        self.query_ids = [q for q in self.qrels if any(g > 0 for g in self.qrels[q].values())]
        unknown = sorted(
            {d for q in self.query_ids for d in candidates.get(q, ()) if d not in corpus}
        )
        if unknown:
            raise ValueError(
                f"candidates name doc ids missing from the corpus: {unknown[:5]}; build the candidates "
                "over the same corpus"
            )
        missing = [q for q in self.query_ids if not candidates.get(q)]
        if missing:
            logger.warning(
                "%d evaluated queries have no candidates (they score 0): %s",
                len(missing),
                missing[:5],
            )
        self.queries = {q: queries[q] for q in self.query_ids}
        self.corpus = corpus
        self.candidates = {q: list(dict.fromkeys(candidates.get(q, ()))) for q in self.query_ids}
        self.candidate_scores: dict[str, list[float]] = {}
        for qid in self.query_ids if candidate_scores is not None else ():
            scores = list(candidate_scores.get(qid, ()))
            if len(scores) != len(candidates.get(qid, ())):
                raise ValueError(
                    f"query {qid}: {len(scores)} candidate scores for "
                    f"{len(candidates.get(qid, ()))} candidates; give one score per candidate"
                )
            first_score: dict[str, float] = {}  # a doc id listed twice keeps its first score
            for i, (doc_id, score) in enumerate(zip(candidates.get(qid, ()), scores, strict=True)):
                first_score.setdefault(doc_id, first_stage_score(qid, i, score))
            self.candidate_scores[qid] = list(first_score.values())
        self.retrieval_weight = retrieval_weight
        self.last_scores: dict[str, list[float]] | None = None
        self.depth = depth
        self.batch_size = batch_size
        self.metrics = tuple(metrics)
        self.name = name
        self.show_progress_bar = show_progress_bar
        self.primary_metric = f"{self.metrics[0][0]}@{self.metrics[0][1]}"

    def predict(self, model: CrossEncoder) -> dict[str, list[float]]:
        """``{qid: cross-encoder scores of its top ``depth`` candidates}``, in candidate order.

        The last result is kept as ``last_scores``, so a second evaluator over the same
        candidates (say, a different ``retrieval_weight``) can reuse it with ``rerank_with``.
        """
        pairs: list[tuple[str, str]] = []
        spans: list[tuple[str, int, int]] = []
        for qid in self.query_ids:
            head = self.candidates[qid][: self.depth]
            spans.append((qid, len(pairs), len(pairs) + len(head)))
            pairs.extend((self.queries[qid], self.corpus[d]) for d in head)
        scores = (
            np.asarray(
                model.predict(
                    pairs,
                    batch_size=self.batch_size,
                    show_progress_bar=self.show_progress_bar,
                    convert_to_numpy=True,
                ),
                dtype=np.float64,
            ).reshape(-1)
            if pairs
            else np.zeros(0)
        )
        self.last_scores = {qid: scores[start:end].tolist() for qid, start, end in spans}
        return self.last_scores

    def rerank_with(self, scores: Mapping[str, Sequence[float]]) -> dict[str, list[str]]:
        """``{qid: reranked doc ids}`` from given scores of the top ``depth`` candidates."""
        rankings: dict[str, list[str]] = {}
        for qid in self.query_ids:
            head = self.candidates[qid][: self.depth]
            final = [float(x) for x in scores[qid]]
            if len(final) != len(head):
                raise ValueError(
                    f"query {qid}: {len(final)} scores for its top {len(head)} candidates"
                )
            if self.retrieval_weight > 0 and head:
                first = self.candidate_scores[qid][: self.depth]
                final = blend_scores(final, first, self.retrieval_weight)
            order = sorted(range(len(head)), key=lambda i: -final[i])
            rankings[qid] = [head[i] for i in order] + self.candidates[qid][self.depth :]
        return rankings

    def rerank(self, model: CrossEncoder) -> dict[str, list[str]]:
        """``{qid: reranked doc ids}``: the top ``depth`` re-scored, the rest unchanged."""
        return self.rerank_with(self.predict(model))

    def baseline(self) -> dict[str, float]:
        """Metrics of the candidates in their first-stage order."""
        return score_rankings(self.candidates, self.qrels, self.metrics)

    def evaluate_scores(self, scores: Mapping[str, Sequence[float]] | None) -> dict[str, float]:
        """Unprefixed metrics of the candidates re-ranked by given scores (``last_scores``);
        all NaN (``unscorable``) when a score is NaN or infinite."""
        if scores is None:
            raise ValueError(
                "no cross-encoder scores to rank by: evaluate a model first and pass its last_scores"
            )
        if not all(np.isfinite(np.asarray(s, dtype=np.float64)).all() for s in scores.values()):
            logger.warning("the model's scores are NaN or infinite; it cannot be scored")
            return unscorable(self.metrics)
        return score_rankings(self.rerank_with(scores), self.qrels, self.metrics)

    def evaluate(self, model: CrossEncoder) -> dict[str, float]:
        """Unprefixed metrics of the re-ranked candidates (all NaN when a score is not finite)."""
        was_training = model.training
        model.eval()
        try:
            return self.evaluate_scores(self.predict(model))
        finally:
            model.train(was_training)

    def __call__(
        self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1
    ) -> dict[str, float]:
        metrics = self.prefix_name_to_metrics(self.evaluate(model), self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics
