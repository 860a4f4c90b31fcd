"""``ragtune bench retrieval --sweep``: choose the hybrid's fusion parameters on one split.

Both sides are run once per query to depth 200 (our FAISS dense side with the
chosen encoder backend, our BM25); every fusion setting is then scored offline
by :func:`~llama_index_ragtune.retrievers.fusion_sweep.sweep` (the grid that
``choose_fusion`` uses, with the same ``fuse`` as the retriever). Stage 1 is a grid over mode x RRF k x alpha x (equal) per-side depth;
stage 2 refines each mode's best alpha by +-0.05 and tries unequal depths. The
best setting per mode is the one with the highest mean nDCG@10, except that
among the settings within ``TOLERANCE`` of that best the one with the highest
Recall@100 wins (a deeper candidate list at no measurable cost in nDCG@10 is
what a reranker needs). It is printed as a ``FUSION_PRESETS`` literal for
:mod:`llama_index_ragtune.retrievers.defaults`. Run it on ``--split train``:
choosing on the test split would overfit the reported numbers.

Example::

    ragtune bench retrieval --beir ../shared/data/scifact --split train --sweep
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from llama_index_ragtune.evaluation.metrics import ndcg_at_k
from llama_index_ragtune.retrievers.fusion_sweep import (
    MAX_DEPTH,
    TOLERANCE,
    best_per_mode,
    setting_as_dict,
    sweep,
)

__all__ = ["collect_rankings", "run_sweep"]


def collect_rankings(
    dense_retriever: Any, bm25: Any, queries: dict[str, str], show_progress: bool = True
) -> dict:
    """Per query: (dense ranking, BM25 ranking), each ``[(doc_id, score), ...]`` to ``MAX_DEPTH``."""
    from tqdm.auto import tqdm

    dense_retriever.similarity_top_k = MAX_DEPTH
    out = {}
    for qid, text in tqdm(queries.items(), desc="rankings", disable=not show_progress):
        dense = [(n.node.node_id, float(n.score or 0.0)) for n in dense_retriever.retrieve(text)]
        sparse = [(bm25.nodes[i].node_id, s) for i, s in bm25.rank(text, MAX_DEPTH)]
        out[qid] = (dense, sparse)
    return out


def run_sweep(dataset: Any, args: argparse.Namespace, cache_dir: Path | None, command: str) -> int:
    from benchmarks import retrieval_systems as S
    from llama_index_ragtune.embeddings import default_embed_model, onnx_available

    show = not args.no_progress
    backend = (
        args.embedding if args.embedding != "auto" else ("onnx" if onnx_available() else "torch")
    )
    corpus = S.BenchCorpus.from_beir(dataset, cache_dir)
    embed = default_embed_model(
        args.model, backend=backend, **({"embed_batch_size": 32} if backend == "torch" else {})
    )
    dense, _, _ = S.build_dense(corpus, embed, "dense")
    bm25 = S.build_bm25(corpus).retriever
    rankings = collect_rankings(dense.retriever, bm25, dataset.queries, show)
    qrels = dataset.qrels
    # the library's two-stage grid (the same one choose_fusion uses), full size
    scored = sweep(rankings, qrels, grid="full", show_progress=show)
    best = best_per_mode(scored)
    reference = {
        "dense only": statistics.fmean(
            ndcg_at_k([d for d, _ in r[0]], qrels[q], 10) for q, r in rankings.items()
        ),
        "BM25 only": statistics.fmean(
            ndcg_at_k([d for d, _ in r[1]], qrels[q], 10) for q, r in rankings.items()
        ),
    }
    result = {
        "dataset": dataset.name,
        "split": dataset.split,
        "num_queries": len(rankings),
        "embedding_backend": backend,
        "reference_ndcg@10": reference,
        "best_per_mode": {m: setting_as_dict(s, scored[s]) for m, s in best.items()},
        "default_fusion_mode": max(best, key=lambda m: scored[best[m]][0]),
        "selection": f"highest nDCG@10; within {TOLERANCE} of it, highest Recall@100",
        "top20": [
            setting_as_dict(s, v) for s, v in sorted(scored.items(), key=lambda kv: -kv[1][0])[:20]
        ],
        "settings_scored": len(scored),
        "command": command,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"fusion_sweep_{dataset.name}_{dataset.split}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    markdown = _markdown(result)
    (out / f"{stem}.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return 0


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        f"### Fusion sweep on {result['dataset']} ({result['split']}, {result['num_queries']} queries, "
        f"{result['embedding_backend']} encoder, {result['settings_scored']} settings)",
        "",
        "Reference nDCG@10: "
        + ", ".join(f"{k} {v:.4f}" for k, v in result["reference_ndcg@10"].items()),
        "",
        f"Selection per mode: {result['selection']}.",
        "",
        "| mode | alpha (dense) | rrf k | dense depth | BM25 depth | nDCG@10 | Recall@100 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_row(row) for row in result["best_per_mode"].values()]
    presets = {
        m: {
            "alpha": r["alpha"],
            "rrf_k": r["rrf_k"],
            "dense_top_k": r["dense_top_k"],
            "sparse_top_k": r["sparse_top_k"],
        }
        for m, r in result["best_per_mode"].items()
    }
    lines += [
        "",
        f"Best mode: **{result['default_fusion_mode']}**. As `FUSION_PRESETS`:",
        "",
        "```python",
        f"DEFAULT_FUSION_MODE = {result['default_fusion_mode']!r}",
        f"FUSION_PRESETS = {json.dumps(presets, indent=4)}",
        "```",
        "",
        "Top 20 settings:",
        "",
        "| mode | alpha (dense) | rrf k | dense depth | BM25 depth | nDCG@10 | Recall@100 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_row(row) for row in result["top20"]]
    if result.get("command"):
        lines += ["", f"Command: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def _row(row: dict[str, Any]) -> str:
    return (
        f"| {row['mode']} | {row['alpha']:g} | {row['rrf_k']:g} | {row['dense_top_k']} | {row['sparse_top_k']} "
        f"| {row['ndcg@10']:.4f} | {row['recall@100']:.4f} |"
    )
