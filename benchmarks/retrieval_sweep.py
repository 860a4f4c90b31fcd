"""``ragtune bench retrieval --sweep``: choose the hybrid's fusion parameters on one split.

Both sides are run once per query to depth 200 (our FAISS dense side with the
chosen encoder backend, our BM25); every fusion setting is then scored offline
with the same :func:`~llama_index_ragtune.retrievers.fusion.fuse` the retriever
uses. Stage 1 is a grid over mode x RRF k x alpha x (equal) per-side depth;
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
import itertools
import json
import statistics
from pathlib import Path
from typing import Any

from llama_index_ragtune.evaluation.metrics import ndcg_at_k, recall_at_k
from llama_index_ragtune.retrievers.fusion import fuse

MAX_DEPTH = 200
DEPTHS = (20, 50, 100, 200)
ALPHAS = tuple(round(0.1 * i, 2) for i in range(1, 10))
RRF_KS = (1.0, 5.0, 10.0, 20.0, 40.0, 60.0, 100.0)
TOLERANCE = 0.001

__all__ = ["collect_rankings", "run_sweep", "score_setting"]


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


def score_setting(
    rankings: dict,
    qrels: dict,
    mode: str,
    alpha: float,
    rrf_k: float,
    dense_depth: int,
    sparse_depth: int,
) -> tuple[float, float]:
    """Mean (nDCG@10, Recall@100) of one fusion setting over the queries."""
    ndcg, recall = [], []
    for qid, (dense, sparse) in rankings.items():
        hits = fuse(
            [dense[:dense_depth], sparse[:sparse_depth]],
            mode=mode,
            weights=(alpha, 1 - alpha),
            rrf_k=rrf_k,
            top_k=100,
        )
        ranked = [h.node_id for h in hits]
        ndcg.append(ndcg_at_k(ranked, qrels[qid], 10))
        recall.append(recall_at_k(ranked, qrels[qid], 100))
    return statistics.fmean(ndcg), statistics.fmean(recall)


def _settings_stage1():
    for depth in DEPTHS:
        for alpha in ALPHAS:
            for k in RRF_KS:
                yield ("rrf", alpha, k, depth, depth)
            yield ("minmax", alpha, 60.0, depth, depth)
            yield ("zscore", alpha, 60.0, depth, depth)


def _settings_stage2(best: dict[str, tuple]):
    for mode, (_, alpha, k, _, _) in best.items():
        for a in sorted(
            {max(0.05, round(alpha - 0.05, 2)), alpha, min(0.95, round(alpha + 0.05, 2))}
        ):
            for dense_depth, sparse_depth in itertools.product(DEPTHS, DEPTHS):
                yield (mode, a, k, dense_depth, sparse_depth)


def run_sweep(dataset: Any, args: argparse.Namespace, cache_dir: Path | None, command: str) -> int:
    from tqdm.auto import tqdm

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
    scored: dict[tuple, tuple[float, float]] = {}
    stage1 = list(_settings_stage1())
    for setting in tqdm(stage1, desc="sweep stage 1", disable=not show):
        scored[setting] = score_setting(rankings, qrels, *setting)
    best = _best_per_mode(scored)
    stage2 = [s for s in _settings_stage2(best) if s not in scored]
    for setting in tqdm(stage2, desc="sweep stage 2", disable=not show):
        scored[setting] = score_setting(rankings, qrels, *setting)
    best = _best_per_mode(scored)
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
        "best_per_mode": {m: _as_dict(s, scored[s]) for m, s in best.items()},
        "default_fusion_mode": max(best, key=lambda m: scored[best[m]][0]),
        "selection": f"highest nDCG@10; within {TOLERANCE} of it, highest Recall@100",
        "top20": [_as_dict(s, v) for s, v in sorted(scored.items(), key=lambda kv: -kv[1][0])[:20]],
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


def _best_per_mode(scored: dict[tuple, tuple[float, float]]) -> dict[str, tuple]:
    """Per mode: highest nDCG@10, or within TOLERANCE of it the highest Recall@100."""
    best: dict[str, tuple] = {}
    for mode in dict.fromkeys(s[0] for s in scored):
        mine = {s: v for s, v in scored.items() if s[0] == mode}
        top = max(v[0] for v in mine.values())
        near = [s for s, v in mine.items() if v[0] >= top - TOLERANCE]
        best[mode] = max(near, key=lambda s: (mine[s][1], mine[s][0]))
    return best


def _as_dict(setting: tuple, value: tuple[float, float]) -> dict[str, Any]:
    mode, alpha, k, dense_depth, sparse_depth = setting
    return {
        "mode": mode,
        "alpha": alpha,
        "rrf_k": k,
        "dense_top_k": dense_depth,
        "sparse_top_k": sparse_depth,
        "ndcg@10": value[0],
        "recall@100": value[1],
    }


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
