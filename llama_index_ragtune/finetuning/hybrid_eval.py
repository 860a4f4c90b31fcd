"""Validate a bi-encoder the way it is used: alone, and fused with BM25 in the hybrid retriever.

``HybridRetrievalEvaluator`` ranks the corpus with the bi-encoder (exactly as
``DenseRetrievalEvaluator`` does) and fuses that ranking with a BM25 ranking
of the same corpus by the retriever's own :func:`~llama_index_ragtune.retrievers.fusion.fuse`.
It reports the dense metrics (``ndcg@10``...) and the hybrid ones
(``hybrid_ndcg@10``...); ``primary_metric`` is ``hybrid_ndcg@10``, so a
champion/challenger decision asks whether the tuned encoder improves the
retriever a user deploys, not only the dense side. BM25 is computed once.

Example::

    from llama_index_ragtune.finetuning.hybrid_eval import HybridRetrievalEvaluator

    evaluator = HybridRetrievalEvaluator(val.queries, val.corpus, val_qrels, fusion="minmax")
    evaluator.evaluate(model)   # {"ndcg@10": ..., "hybrid_ndcg@10": ..., ...}
    evaluator.fusion_rankings() # {qid: (dense, bm25)} for retrievers.fusion_sweep.choose_fusion

Give it the served retriever's BM25 analyzer (``bm25_analyzer="unicode"`` for Chinese,
Japanese, Thai or Korean text, accents or product codes) and stemmer language
(``bm25_language="german"`` for German documents; its stopwords follow), so fusion weights
and promotion are decided on the BM25 that is served.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.evaluation.metrics import MeanMetrics
from llama_index_ragtune.finetuning.ranking_eval import (
    DenseRetrievalEvaluator,
    score_rankings,
    unscorable,
)
from llama_index_ragtune.retrievers.bm25_index import (
    ANALYZERS,
    LANGUAGE_STOPWORDS,
    BM25Text,
    check_bm25_language,
)
from llama_index_ragtune.retrievers.defaults import FUSION_PRESETS, fusion_preset
from llama_index_ragtune.retrievers.fusion import fuse
from llama_index_ragtune.retrievers.fusion_sweep import MAX_DEPTH

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

HYBRID_PREFIX = "hybrid_"


def fusion_params(fusion: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """``HybridRetriever`` fusion arguments from a mode name (its preset), a dict, or ``None`` (default)."""
    if fusion == "auto":
        raise ValueError("fusion='auto' is chosen per model by HybridRetrievalEvaluator")
    if fusion is None or isinstance(fusion, str):
        return fusion_preset(fusion)
    if not isinstance(fusion, Mapping):
        raise TypeError(
            f"fusion must be a mode name ({', '.join(FUSION_PRESETS)}), 'auto', None or a dict of "
            f"fusion settings, got {type(fusion).__name__} {fusion!r:.80}"
        )
    params = fusion_preset(fusion.get("fusion_mode") or fusion.get("mode"))
    params.update({k: v for k, v in fusion.items() if k in params})
    _check_fusion_values(params)
    return params


def _check_fusion_values(params: Mapping[str, Any]) -> None:
    """``TypeError`` / ``ValueError`` naming ``fusion[key]`` when a fusion setting is text, NaN,
    out of range or a fraction where a count goes: a NaN ``alpha`` failed as "weights must be
    finite" and ``dense_top_k=2.5`` as a slicing error at the "before" scores, and
    ``dense_top_k=0`` validated an encoder on BM25's ranking alone (its model never counted)."""
    import math
    import numbers

    for key in ("alpha", "rrf_k"):
        value = params.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"fusion[{key!r}] must be a number, got {type(value).__name__} {value!r}"
            )
        ok = 0.0 <= value <= 1.0 if key == "alpha" else value > 0
        if not (math.isfinite(value) and ok):
            rule = "in [0, 1]" if key == "alpha" else "> 0"
            raise ValueError(f"fusion[{key!r}] must be a finite number {rule}, got {value!r}")
    for key in ("dense_top_k", "sparse_top_k"):
        value = params.get(key)
        if value is not None and not (
            isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1
        ):
            error = ValueError if isinstance(value, numbers.Real) else TypeError
            raise error(
                f"fusion[{key!r}] must be a whole number >= 1 (e.g. 100), got "
                f"{type(value).__name__} {value!r}"
            )


def check_fusion(owner: str, fusion: Any) -> None:
    """``fusion_params``' errors for an engine's ``fusion=`` argument, named by ``owner``, when
    the engine is built ("auto" and ``None`` pass).

    Example::

        check_fusion("EncoderFinetuneEngine", {"fusion_mode": "minmax", "alpha": 0.4})
    """
    if fusion == "auto" and isinstance(fusion, str):
        return
    try:
        fusion_params(fusion)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{owner}: {exc}") from None


def check_bm25_analyzer(analyzer: Any, owner: str) -> str:
    """``analyzer`` if it names a BM25 analyzer, else a ``ValueError`` naming ``owner``.

    Example::

        check_bm25_analyzer("unicode", "RerankerFinetuneEngine")   # 'unicode'
    """
    if not isinstance(analyzer, str) or analyzer not in ANALYZERS:
        raise ValueError(
            f"{owner}: bm25_analyzer must be one of {', '.join(ANALYZERS)}, got {analyzer!r} "
            "(give the served BM25's: 'unicode' for Chinese/Japanese/Thai/Korean text, accents "
            "or product codes; 'plain' for English)"
        )
    return analyzer


def check_bm25_text(
    analyzer: Any, language: Any, owner: str, stopwords: Any = LANGUAGE_STOPWORDS
) -> BM25Text:
    """The BM25 settings ``analyzer`` / ``language`` / ``stopwords`` name, else a ``ValueError``
    naming ``owner`` and the setting (``stopwords``: the language's list by default, ``None``,
    a bm25s list code such as ``"de"``, or a list of words).

    Example::

        check_bm25_text("plain", "german", "EncoderFinetuneEngine").language   # 'german'
        check_bm25_text("plain", "english", "X", ["sku"]).stopwords          # ('sku',)
    """
    check_bm25_analyzer(analyzer, owner)
    check_bm25_language(language, f"{owner}: bm25_language")
    if isinstance(stopwords, str) and stopwords != LANGUAGE_STOPWORDS:
        known = True
        try:
            known = bool(_infer_stopwords(stopwords))
        except ValueError:
            known = False
        if not known:
            raise ValueError(
                f"{owner}: bm25_stopwords={stopwords!r} is no stopword list: give "
                f"{LANGUAGE_STOPWORDS!r} (the language's), None, a list code (en, de, fr, ...) "
                "or a list of words"
            )
    elif stopwords is not None and stopwords != LANGUAGE_STOPWORDS:
        words = list(stopwords) if isinstance(stopwords, (list, tuple)) else None
        if words is None or not all(isinstance(w, str) for w in words):
            raise TypeError(
                f"{owner}: bm25_stopwords must be {LANGUAGE_STOPWORDS!r}, None, a list code or "
                f"a list of words, got {stopwords!r}"
            )
        stopwords = tuple(words)
    return BM25Text(analyzer, language, stopwords)


def _infer_stopwords(code: str) -> Any:
    from bm25s.tokenization import _infer_stopwords as infer

    return infer(code)


def bm25_settings(text: BM25Text) -> dict[str, Any]:
    """``text`` as the ``bm25_analyzer`` / ``bm25_language`` (/ ``bm25_stopwords`` when not
    the language's list) arguments of the engines, the miner and the evaluators, and as they
    are recorded.

    Example::

        bm25_settings(BM25Text(stopwords=("sku",)))
        # {'bm25_analyzer': 'plain', 'bm25_language': 'english', 'bm25_stopwords': ['sku']}
    """
    options = text.options()
    if text.stopwords != LANGUAGE_STOPWORDS:
        stopwords = text.stopwords
        options["bm25_stopwords"] = list(stopwords) if isinstance(stopwords, tuple) else stopwords
    return options


@contextmanager
def bm25_text_named(owner: str) -> Iterator[None]:
    """A corpus the BM25 can index no term of (only stopwords, symbols, one-letter words)
    raised inside as a ``DataError`` naming ``owner`` and the settings that help
    (``bm25_stopwords=None``, ``--bm25-stopwords none``), before any training (it was a
    plain ``ValueError``: a traceback in ``ragtune train``).

    Example::

        with bm25_text_named("HybridRetrievalEvaluator"):
            BM25Retriever.from_defaults(nodes=nodes)
    """
    from llama_index_ragtune.data.errors import DataError

    try:
        yield
    except DataError:
        raise
    except ValueError as exc:
        text = " ".join(str(exc).split())
        if "BM25 can index" not in text:
            raise
        fix = "pass bm25_stopwords=None (--bm25-stopwords none)"
        raise DataError(f"{owner}: {text.replace('pass stopwords=None', fix)}") from exc


class HybridRetrievalEvaluator(DenseRetrievalEvaluator):
    """Dense and hybrid (dense + BM25) ranking metrics of a bi-encoder over a corpus.

    Args:
        queries, corpus, qrels: as for ``DenseRetrievalEvaluator``.
        fusion: the hybrid's fusion setting: a mode name (``"zscore"``, ``"rrf"``,
            ``"minmax"``: its preset), a dict of ``HybridRetriever`` arguments
            (``fusion_mode``, ``alpha``, ``rrf_k``, ``dense_top_k``, ``sparse_top_k``),
            ``None`` for the library default, or ``"auto"``: each evaluated model gets
            the setting that scores best on these queries (``choose_fusion``, quick
            grid), kept in ``chosen_fusion``.
        bm25_language: stemmer language of the BM25 side (``"english"``, ``"german"``,
            ... or ``None``: no stemming); its stopwords follow it. Give the served
            retriever's.
        bm25_analyzer: how the BM25 side reads text, ``"plain"`` (default) or
            ``"unicode"`` (see :class:`~llama_index_ragtune.retrievers.BM25Tokenizer`):
            give the served retriever's.
        bm25_stopwords: the words the BM25 side drops: ``"language"`` (the language's
            list, default), ``None``, a bm25s list code (``"de"``) or a list of words.
        kwargs: passed to ``DenseRetrievalEvaluator`` (prompts, batch size, cache...).
    """

    def __init__(
        self,
        queries: Mapping[str, str],
        corpus: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int] | Iterable[str]],
        fusion: str | Mapping[str, Any] | None = None,
        bm25_language: str | None = "english",
        bm25_analyzer: str = "plain",
        bm25_stopwords: str | Sequence[str] | None = LANGUAGE_STOPWORDS,
        **kwargs: Any,
    ) -> None:
        self.bm25_text = check_bm25_text(
            bm25_analyzer, bm25_language, type(self).__name__, bm25_stopwords
        )
        kwargs["top_k"] = max(kwargs.get("top_k", 100), MAX_DEPTH)
        super().__init__(queries, corpus, qrels, **kwargs)
        self.auto_fusion = fusion == "auto"
        self.fusion = fusion_params(None if self.auto_fusion else fusion)
        self.chosen_fusion: Any = None
        self.bm25_language = bm25_language
        self.bm25_analyzer = bm25_analyzer
        self.bm25_stopwords = bm25_settings(self.bm25_text).get(
            "bm25_stopwords", LANGUAGE_STOPWORDS
        )
        self.primary_metric = HYBRID_PREFIX + self.primary_metric
        self._bm25: dict[str, list[tuple[str, float]]] | None = None

    def bm25_rankings(self) -> dict[str, list[tuple[str, float]]]:
        """``{qid: [(doc id, BM25 score), ...]}`` to depth 200 (computed once)."""
        if self._bm25 is None:
            from llama_index.core.schema import TextNode

            from llama_index_ragtune.retrievers.bm25 import BM25Retriever

            nodes = [
                TextNode(id_=doc_id, text=text)
                for doc_id, text in zip(self.corpus_ids, self.corpus_texts, strict=True)
            ]
            with bm25_text_named(type(self).__name__):
                bm25 = BM25Retriever.from_defaults(
                    nodes=nodes,
                    similarity_top_k=MAX_DEPTH,
                    **self.bm25_text.retriever_kwargs(),
                )
            self._bm25 = {
                qid: [(bm25.nodes[i].node_id, float(s)) for i, s in bm25.rank(text, MAX_DEPTH)]
                for qid, text in self.queries.items()
            }
        return self._bm25

    def fusion_rankings(self) -> dict[str, tuple[list[tuple[str, float]], list[tuple[str, float]]]]:
        """``{qid: (dense, bm25)}`` of the last evaluated model, for ``choose_fusion``."""
        if not self.last_scored_rankings:
            raise RuntimeError("evaluate a model first: there are no dense rankings yet")
        bm25 = self.bm25_rankings()
        return {q: (self.last_scored_rankings[q], bm25[q]) for q in self.query_ids}

    def hybrid_metrics(
        self,
        scored_rankings: Mapping[str, list[tuple[str, float]]],
        fusion: str | Mapping[str, Any] | None,
    ) -> MeanMetrics:
        """``hybrid_``-prefixed metrics of stored dense rankings (a ``last_scored_rankings``
        kept from an earlier model) fused with BM25 under ``fusion``.

        Example::

            evaluator.evaluate(start_model)
            kept = dict(evaluator.last_scored_rankings)
            ...                                          # the model is trained in place
            evaluator.hybrid_metrics(kept, {"fusion_mode": "minmax", "alpha": 0.4})
        """
        bm25 = self.bm25_rankings()
        f = fusion_params(fusion)
        ranked = self._fuse({q: (scored_rankings[q], bm25[q]) for q in self.query_ids}, f)
        return score_rankings(ranked, self.qrels, self.metrics).prefixed(HYBRID_PREFIX)

    def hybrid_rankings(self) -> dict[str, list[str]]:
        """The fused rankings of the last evaluated model (doc ids, best first)."""
        return self._fuse(self.fusion_rankings(), self.fusion)

    def _fuse(
        self, rankings: Mapping[str, tuple[Any, Any]], f: Mapping[str, Any]
    ) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for qid, (dense, sparse) in rankings.items():
            hits = fuse(
                [dense[: f["dense_top_k"]], sparse[: f["sparse_top_k"]]],
                mode=f["fusion_mode"],
                weights=(f["alpha"], 1 - f["alpha"]),
                rrf_k=f["rrf_k"],
                top_k=max(k for _, k in self.metrics),
            )
            out[qid] = [h.node_id for h in hits]
        return out

    def evaluate(self, model: SentenceTransformer) -> dict[str, float]:
        """Dense metrics plus ``hybrid_``-prefixed metrics of the fused ranking (a
        ``MeanMetrics`` keeping each query's values, unless the model cannot be scored)."""
        metrics = super().evaluate(model)
        if not self.finite_scores:  # NaN / infinite embeddings: the hybrid cannot be scored either
            metrics.update({HYBRID_PREFIX + k: v for k, v in unscorable(self.metrics).items()})
            return metrics
        if self.auto_fusion:
            from llama_index_ragtune.retrievers.fusion_sweep import choose_fusion

            self.chosen_fusion = choose_fusion(self.fusion_rankings(), self.qrels, grid="quick")
            self.fusion = dict(self.chosen_fusion.params)
        hybrid = score_rankings(self.hybrid_rankings(), self.qrels, self.metrics)
        return metrics.merged(hybrid.prefixed(HYBRID_PREFIX))
