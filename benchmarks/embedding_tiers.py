"""Embedding tiers side by side on a BEIR set: PyTorch, ONNX Runtime fp32 / int8, distilled static.

One run, one machine, the same corpus: each encoder embeds the whole corpus
(timed interleaved: the length-sorted corpus is cut into slices and every slice
goes through every encoder in a rotating order, so load changes on a shared
machine hit all encoders alike), then embeds every query one at a time (p50),
and the corpus is searched exactly (cosine, top 100) for nDCG@10 / Recall@100.

The static tier is distilled here from the same encoder with model2vec
(``distill_static_embedding``), once per PCA dimension asked for (and, with
``--corpus-vocabulary N``, once more with the N most frequent corpus words added
to the vocabulary); the distillation time is reported as a one-off cost. Static
model folders go to ``<out>/embedding_tiers_models/`` (scratch, not committed).

Example::

    python -m benchmarks.embedding_tiers --beir ../shared/data/scifact --out benchmarks/results
    python -m benchmarks.embedding_tiers --beir ../shared/data/scifact --model runs/encoder/final \\
        --pca-dims 256 --out benchmarks/results/tuned
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from llama_index_ragtune.commands.options import bounded

SLICES = 12
DEPTH = 100  # results evaluated per query (Recall@100)
HYBRID_DEPTH = 200  # candidates per side for the hybrid (the fusion presets' largest depth)
LABELS = {
    "torch": "PyTorch (HuggingFaceEmbedding, LlamaIndex defaults: batch 10)",
    "onnx": "ONNX Runtime fp32 (OnnxEmbedding, batch 32)",
    "onnx-int8": "ONNX Runtime int8 (OnnxEmbedding(quantize=True), batch 32)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.embedding_tiers", description=__doc__
    )
    parser.add_argument("--beir", required=True, help="BEIR folder (corpus, queries, qrels/)")
    parser.add_argument("--split", default="test", help="qrels split (default: test)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for JSON + Markdown")
    parser.add_argument(
        "--model", default=None, help="sentence-transformers folder (default: bundled MiniLM)"
    )
    parser.add_argument(
        "--pca-dims",
        nargs="+",
        default=["256", "128", "64", "none"],
        help="static variants to distil: PCA dimensions, 'none' = the encoder's own (no PCA)",
    )
    parser.add_argument(
        "--corpus-vocabulary",
        type=bounded(int, 0),
        default=0,
        help="also distil a variant (first --pca-dims value) with the N most frequent corpus words",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress output")
    return parser.parse_args(argv)


def _dims(value: str) -> int | None:
    return None if value.lower() == "none" else int(value)


def corpus_words(texts: list[str], n: int) -> list[str]:
    """The ``n`` most frequent lower-case words (letters, 3+ characters) of ``texts``."""
    counts = Counter(w for t in texts for w in re.findall(r"[a-z][a-z\-]{2,}", t.lower()))
    return [w for w, _ in counts.most_common(n)]


def distil_variants(args: argparse.Namespace, texts: list[str], scratch: Path) -> dict[str, Any]:
    """Distil each static variant; returns ``{name: {"embed", "folder", "distill_seconds", ...}}``."""
    from llama_index_ragtune.embeddings import StaticEmbeddingModel, distill_static_embedding

    plans = [(f"static-pca{d}", _dims(d), None) for d in args.pca_dims]
    if args.corpus_vocabulary:
        first = args.pca_dims[0]
        words = corpus_words(texts, args.corpus_vocabulary)
        plans.append((f"static-pca{first}+vocab{args.corpus_vocabulary}", _dims(first), words))
    variants: dict[str, Any] = {}
    for name, dims, words in plans:
        folder = scratch / name
        print(f"distilling {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        distill_static_embedding(args.model, folder, pca_dims=dims, vocabulary=words)
        seconds = time.perf_counter() - start
        embed = StaticEmbeddingModel(folder)
        variants[name] = {
            "embed": embed,
            "folder": os.path.relpath(folder),
            "distill_seconds": seconds,
            "pca_dims": dims,
            "extra_words": len(words or []),
            "dimension": embed.dimension,
            "vocabulary_size": embed.vocabulary_size,
            "weights_mb": embed.vocabulary_size * embed.dimension * 4 / 2**20,
        }
    return variants


def time_corpus(encoders: dict[str, Any], texts: list[str], show: bool) -> tuple[dict, dict]:
    """Embed ``texts`` with every encoder, interleaved by slices; seconds and vectors per encoder."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    size = -(-len(order) // SLICES)
    slices = [order[s : s + size] for s in range(0, len(order), size)]
    names = list(encoders)
    seconds = dict.fromkeys(names, 0.0)
    vectors = {n: np.zeros((len(texts), 0), dtype=np.float32) for n in names}
    for position, rows in enumerate(slices):
        shift = position % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            out = encoders[name].get_text_embedding_batch([texts[i] for i in rows])
            seconds[name] += time.perf_counter() - start
            block = np.asarray(out, dtype=np.float32)
            if vectors[name].shape[1] == 0:
                vectors[name] = np.zeros((len(texts), block.shape[1]), dtype=np.float32)
            vectors[name][rows] = block
        if show:
            print(f"  corpus slice {position + 1}/{len(slices)}", file=sys.stderr, flush=True)
    return seconds, vectors


def time_queries(encoders: dict[str, Any], queries: list[str]) -> tuple[dict, dict]:
    """Each query embedded one at a time by every encoder (rotating order); ms and vectors."""
    names = list(encoders)
    for name in names:  # warm-up
        encoders[name].get_query_embedding("warm-up: effects of vitamin D on bone density")
    latency: dict[str, list[float]] = {n: [] for n in names}
    vectors: dict[str, list] = {n: [] for n in names}
    for position, query in enumerate(queries):
        shift = position % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            vector = encoders[name].get_query_embedding(query)
            latency[name].append((time.perf_counter() - start) * 1000)
            vectors[name].append(vector)
    return latency, {n: np.asarray(v, dtype=np.float32) for n, v in vectors.items()}


def dense_rankings(
    doc_vectors: np.ndarray, query_vectors: np.ndarray, ids: list[str], depth: int
) -> list[list[tuple[str, float]]]:
    """Exact cosine search: per query, the top ``depth`` ``(doc id, score)`` pairs, best first."""

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    scores = unit(query_vectors) @ unit(doc_vectors).T
    depth = min(depth, scores.shape[1])
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    out = []
    for q in range(scores.shape[0]):
        ranked = top[q][np.argsort(-scores[q, top[q]], kind="stable")]
        out.append([(ids[i], float(scores[q, i])) for i in ranked])
    return out


def bm25_rankings(dataset, depth: int) -> list[list[tuple[str, float]]]:
    """Our BM25Retriever's top ``depth`` per query (the hybrid's sparse side)."""
    from llama_index.core.schema import TextNode

    from llama_index_ragtune.retrievers import BM25Retriever

    nodes = [TextNode(id_=doc_id, text=text) for doc_id, text in dataset.corpus.items()]
    bm25 = BM25Retriever(nodes, similarity_top_k=depth)
    return [
        [(hit.node.node_id, float(hit.score or 0.0)) for hit in bm25.retrieve(query)]
        for query in dataset.queries.values()
    ]


def hybrid_rankings(dense: list, sparse: list) -> list[list[tuple[str, float]]]:
    """Two runs fused as HybridRetriever does by default (mode and preset chosen on SciFact train)."""
    from llama_index_ragtune.retrievers import DEFAULT_FUSION_MODE, FUSION_PRESETS
    from llama_index_ragtune.retrievers.fusion import fuse

    preset = FUSION_PRESETS[DEFAULT_FUSION_MODE]
    out = []
    for d, s in zip(dense, sparse, strict=True):
        hits = fuse(
            [d[: preset["dense_top_k"]], s[: preset["sparse_top_k"]]],
            mode=DEFAULT_FUSION_MODE,
            weights=(preset["alpha"], 1.0 - preset["alpha"]),
            rrf_k=preset["rrf_k"],
            top_k=DEPTH,
        )
        out.append([(h.node_id, h.score) for h in hits])
    return out


def evaluate(rankings: list[list[tuple[str, float]]], dataset) -> dict[str, float]:
    """Mean nDCG@10, Recall@100 and MRR@10 of one run (rankings in query order)."""
    from llama_index_ragtune.evaluation.metrics import mrr_at_k, ndcg_at_k, recall_at_k

    rows: dict[str, list[float]] = {"ndcg@10": [], "recall@100": [], "mrr@10": []}
    for ranking, qid in zip(rankings, dataset.queries, strict=True):
        ranked = [doc_id for doc_id, _ in ranking[:DEPTH]]
        qrels = dataset.qrels[qid]
        rows["ndcg@10"].append(ndcg_at_k(ranked, qrels, 10))
        rows["recall@100"].append(recall_at_k(ranked, qrels, 100))
        rows["mrr@10"].append(mrr_at_k(ranked, qrels, 10))
    return {k: float(np.mean(v)) for k, v in rows.items()}


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def _versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "onnxruntime", "sentence-transformers", "model2vec", "tokenizers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from llama_index_ragtune.data import load_beir
    from llama_index_ragtune.embeddings import OnnxEmbedding, default_embed_model

    load_before = _load()
    dataset = load_beir(args.beir, split=args.split)
    ids, texts = list(dataset.corpus), list(dataset.corpus.values())
    queries = list(dataset.queries.values())
    scratch = Path(args.out) / "embedding_tiers_models"
    static = distil_variants(args, texts, scratch)
    encoders: dict[str, Any] = {
        "torch": default_embed_model(args.model, backend="torch"),
        "onnx": OnnxEmbedding(args.model),
        "onnx-int8": OnnxEmbedding(args.model, quantize=True),
    }
    encoders.update({name: v["embed"] for name, v in static.items()})
    show = not args.no_progress
    print("embedding the corpus with every encoder (interleaved) ...", file=sys.stderr, flush=True)
    corpus_seconds, doc_vectors = time_corpus(encoders, texts, show)
    print("embedding the queries one at a time ...", file=sys.stderr, flush=True)
    latency, query_vectors = time_queries(encoders, queries)
    sparse = bm25_rankings(dataset, HYBRID_DEPTH)
    bm25 = evaluate(sparse, dataset)
    rows = []
    for name in encoders:
        dense = dense_rankings(doc_vectors[name], query_vectors[name], ids, HYBRID_DEPTH)
        metrics = evaluate(dense, dataset)
        hybrid = evaluate(hybrid_rankings(dense, sparse), dataset)
        extra = {k: v for k, v in static.get(name, {}).items() if k != "embed"}
        rows.append(
            {
                "encoder": name,
                "label": LABELS.get(name, _static_label(extra)),
                "corpus_seconds": corpus_seconds[name],
                "docs_per_second": len(texts) / corpus_seconds[name],
                "query_p50_ms": statistics.median(latency[name]),
                "query_p95_ms": float(np.percentile(latency[name], 95)),
                "dimension": int(doc_vectors[name].shape[1]),
                "metrics": metrics,
                "hybrid_metrics": hybrid,
                **extra,
            }
        )
    base = {r["encoder"]: r for r in rows}
    for row in rows:
        row["speedup_vs_torch"] = base["torch"]["corpus_seconds"] / row["corpus_seconds"]
        row["speedup_vs_onnx_int8"] = base["onnx-int8"]["corpus_seconds"] / row["corpus_seconds"]
        row["ndcg@10_delta_vs_torch"] = (
            row["metrics"]["ndcg@10"] - base["torch"]["metrics"]["ndcg@10"]
        )
        row["hybrid_ndcg@10_delta_vs_torch"] = (
            row["hybrid_metrics"]["ndcg@10"] - base["torch"]["hybrid_metrics"]["ndcg@10"]
        )
    return {
        "benchmark": "embedding_tiers",
        "dataset": Path(args.beir).name,
        "split": args.split,
        "num_documents": len(texts),
        "num_queries": len(queries),
        "model": args.model or "bundled all-MiniLM-L6-v2",
        "rows": rows,
        "bm25_metrics": bm25,
        "machine": {
            "cores": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count(),
            "load_before": load_before,
            "load_after": _load(),
            "python": platform.python_version(),
            "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM", "unset"),
            "versions": _versions(),
            "time": time.strftime("%Y-%m-%d %H:%M"),
        },
        "command": "python -m benchmarks.embedding_tiers " + " ".join(argv),
    }


def _static_label(extra: dict) -> str:
    dims = extra.get("pca_dims")
    words = extra.get("extra_words")
    text = f"static, PCA {dims}" if dims else "static, no PCA"
    return text + (f" + {words} corpus words" if words else "")


def render_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"### Embedding tiers on {result['dataset']} ({result['split']}, {result['num_queries']} "
        f"queries, {result['num_documents']} documents; encoder: {result['model']})",
        "",
        "| encoder | dim | corpus (s) | docs/s | speed-up vs PyTorch | vs ONNX int8 "
        "| dense nDCG@10 | Δ vs PyTorch | dense Recall@100 | hybrid nDCG@10 | hybrid Δ "
        "| query p50 ms | distil (s) | model MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        m = r["metrics"]
        distil = f"{r['distill_seconds']:.0f}" if "distill_seconds" in r else "—"
        size = f"{r['weights_mb']:.1f}" if "weights_mb" in r else "—"
        lines.append(
            f"| {r['label']} | {r['dimension']} | {r['corpus_seconds']:.1f} | {r['docs_per_second']:.0f} "
            f"| {r['speedup_vs_torch']:.2f}x | {r['speedup_vs_onnx_int8']:.2f}x | {m['ndcg@10']:.3f} "
            f"| {r['ndcg@10_delta_vs_torch']:+.4f} | {m['recall@100']:.3f} "
            f"| {r['hybrid_metrics']['ndcg@10']:.3f} | {r['hybrid_ndcg@10_delta_vs_torch']:+.4f} "
            f"| {r['query_p50_ms']:.2f} | {distil} | {size} |"
        )
    machine = result["machine"]
    lines += [
        "",
        "Corpus: every document embedded by every encoder, length-sorted, timed interleaved "
        f"({SLICES} slices, rotating order) through `get_text_embedding_batch`. Queries: one at a "
        "time (`get_query_embedding`), rotating order. Retrieval: exact cosine search, top 100. "
        "Static models are distilled from the same encoder in this run (model2vec; distil time "
        "is a one-off cost, not part of the corpus time). Hybrid: our BM25Retriever (top 200) "
        "fused with the encoder's dense run as HybridRetriever does by default "
        "(`fuse`, default mode and preset); BM25 alone: nDCG@10 "
        f"{result['bm25_metrics']['ndcg@10']:.3f}, Recall@100 {result['bm25_metrics']['recall@100']:.3f}.",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {machine['cores']} cores, load before {machine['load_before']}, after "
        f"{machine['load_after']}; TOKENIZERS_PARALLELISM={machine['tokenizers_parallelism']}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = run(args, argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"embedding_tiers_{result['dataset']}_{result['split']}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    markdown = render_markdown(result)
    (out / f"{stem}.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
