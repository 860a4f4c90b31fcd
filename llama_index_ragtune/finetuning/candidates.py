"""First-stage candidates for reranker training and evaluation: the hybrid retriever's top K.

Example::

    from llama_index_ragtune.finetuning.candidates import hybrid_candidates

    candidates = hybrid_candidates(val.queries, val.corpus, top_k=100, embed_model="runs/encoder/final")
    candidates["q1"][:3]      # ['d7', 'd2', 'd9']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm


def as_embed_model(embed_model: Any) -> Any:
    """A LlamaIndex ``BaseEmbedding`` from a folder / hub id, or ``embed_model`` unchanged.

    Paths go through ``default_embed_model`` (ONNX Runtime when the ``onnx`` extra
    is installed, else PyTorch). ``None`` stays ``None``: the retriever's default.
    """
    if (
        embed_model is None
        or not isinstance(embed_model, str)
        and not hasattr(embed_model, "__fspath__")
    ):
        return embed_model
    from llama_index_ragtune.embeddings import default_embed_model

    return default_embed_model(embed_model)


def retrieve_rankings(
    retriever: Any, queries: Mapping[str, str], show_progress: bool = True
) -> dict[str, list[str]]:
    """``{qid: [doc ids, best first]}`` from any LlamaIndex retriever (doc id rule of the evaluator)."""
    return retrieve_scored(retriever, queries, show_progress)[0]


def retrieve_scored(
    retriever: Any, queries: Mapping[str, str], show_progress: bool = True
) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    """``({qid: doc ids}, {qid: scores})`` from any LlamaIndex retriever; a doc id returned
    twice (several nodes of one document) keeps its first, best score."""
    from llama_index_ragtune.evaluation.retrieval import default_doc_id

    rankings: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    for qid, text in tqdm(
        queries.items(), desc="first-stage candidates", disable=not show_progress
    ):
        best: dict[str, float] = {}
        for node in retriever.retrieve(text):
            best.setdefault(default_doc_id(node), float(node.score or 0.0))
        rankings[qid] = list(best)
        scores[qid] = list(best.values())
    return rankings, scores


def hybrid_candidates(
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    top_k: int = 100,
    embed_model: Any = None,
    show_progress: bool = True,
    corpus_embeddings: Sequence[Sequence[float]] | None = None,
    **retriever_kwargs: Any,
) -> dict[str, list[str]]:
    """Top ``top_k`` doc ids per query from ``HybridRetriever`` (dense + BM25) over ``corpus``.

    ``embed_model`` is the dense side: ``None`` (the retriever's default), a path or
    hub id, or a LlamaIndex ``BaseEmbedding``. ``retriever_kwargs`` go to
    ``HybridRetriever.from_defaults`` (e.g. ``embed_cache_dir``, ``fusion_mode``,
    ``bm25_kwargs={"analyzer": "unicode"}``: give the served retriever's BM25 settings).
    ``corpus_embeddings`` (rows in ``corpus`` order, made by the same model) skip
    embedding the corpus again.
    """
    return hybrid_candidates_with_scores(
        queries, corpus, top_k, embed_model, show_progress, corpus_embeddings, **retriever_kwargs
    )[0]


def hybrid_candidates_with_scores(
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    top_k: int = 100,
    embed_model: Any = None,
    show_progress: bool = True,
    corpus_embeddings: Sequence[Sequence[float]] | None = None,
    **retriever_kwargs: Any,
) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    """Like ``hybrid_candidates``, plus the fused score of every candidate (for blending)."""
    from llama_index.core.schema import TextNode

    from llama_index_ragtune.retrievers import HybridRetriever

    if corpus_embeddings is not None and len(corpus_embeddings) != len(corpus):
        raise ValueError(
            f"corpus_embeddings has {len(corpus_embeddings)} rows for {len(corpus)} documents"
        )
    nodes = [
        TextNode(
            id_=doc_id,
            text=text,
            embedding=None
            if corpus_embeddings is None
            else [float(x) for x in corpus_embeddings[i]],
        )
        for i, (doc_id, text) in enumerate(corpus.items())
    ]
    from llama_index_ragtune.finetuning.hybrid_eval import bm25_text_named

    with bm25_text_named("first-stage candidates (HybridRetriever)"):
        retriever = HybridRetriever.from_defaults(
            nodes=nodes,
            embed_model=as_embed_model(embed_model),
            similarity_top_k=top_k,
            **retriever_kwargs,
        )
    return retrieve_scored(retriever, queries, show_progress=show_progress)
