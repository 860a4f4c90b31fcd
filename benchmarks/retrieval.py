"""``ragtune bench retrieval``: BM25 / dense / hybrid / reranked retrieval on a BEIR data set.

One row per system — LlamaIndex's BM25Retriever, our BM25Retriever, the stock
dense ``VectorStoreIndex`` (PyTorch MiniLM), our FAISS dense side (ONNX
Runtime), LlamaIndex's ``QueryFusionRetriever`` RRF over the stock pair (the
anchor), our HybridRetriever in each fusion mode, and the hybrid + reranker
with ``--reranker`` — with nDCG@10, Recall@100, MRR@10, index time and p50/p95
latency of one query at a time. Systems are timed *interleaved*: each query runs
through every system in a rotating order, after a warm-up, so load changes on
a shared machine hit all systems alike. No query embedding is cached anywhere.
``--onnx`` adds the encoder comparison (full-corpus embedding time, PyTorch vs
ONNX fp32 vs ONNX int8, and each one's dense nDCG@10). ``--sweep`` instead
chooses fusion parameters on the given split (use ``--split train``).

Example::

    ragtune bench retrieval --beir ../shared/data/scifact --split test --max-queries 100
    ragtune bench retrieval --beir ../shared/data/scifact --split test --onnx --reranker runs/reranker
    ragtune bench retrieval --beir ../shared/data/scifact --split train --sweep
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks._paths import display_path, display_value
from llama_index_ragtune.commands.options import DeprecatedNames, bounded

DEFAULT_OUT = "benchmarks/results/retrieval"
WARMUP_QUERIES = (
    "warm-up: effects of vitamin D on bone density",
    "warm-up: gene expression in tumour cells",
    "warm-up: antibiotic resistance mechanisms",
)
KEYS = ("ndcg@10", "recall@100", "mrr@10")
ENCODER_LABELS = {
    "torch": "PyTorch (HuggingFaceEmbedding, LlamaIndex defaults: batch 10)",
    "onnx": "ONNX Runtime fp32 (OnnxEmbedding, batch 32)",
    "onnx-int8": "ONNX Runtime int8 (OnnxEmbedding(quantize=True), batch 32)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--beir", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"
    )
    parser.add_argument("--split", default="test", help="qrels split to evaluate (default: test)")
    parser.add_argument(
        "--max-queries",
        type=bounded(int, 1),
        default=None,
        help="evaluate only the first N judged queries",
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help=f"folder for the JSON and Markdown results (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--model", default=None, help="encoder folder or hub id (default: bundled all-MiniLM-L6-v2)"
    )
    parser.add_argument(
        "--embedding",
        choices=("auto", "torch", "onnx", "onnx-int8"),
        default="auto",
        help="encoder backend of our dense side and hybrid (default: onnx when installed)",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="add the PyTorch vs ONNX fp32 vs ONNX int8 encoder comparison",
    )
    parser.add_argument(
        "--reranker", default=None, help="cross-encoder folder: adds hybrid + CrossEncoderRerank"
    )
    parser.add_argument(
        "--rerank-depth",
        type=bounded(int, 1),
        default=100,
        help="hybrid candidates reranked (default: 100)",
    )
    parser.add_argument(
        "--embedding-cache",
        "--cache-dir",
        dest="cache_dir",
        action=DeprecatedNames,
        deprecated=("--cache-dir",),
        default=None,
        metavar="DIR",
        help="corpus embedding cache (default: <ragtune cache>/embeddings; 'none' disables; "
        "--cache-dir: deprecated name)",
    )
    parser.add_argument(
        "--warmup", type=bounded(int, 0), default=3, help="warm-up queries per system before timing"
    )
    parser.add_argument(
        "--anchor-async", action="store_true", help="run the anchor with use_async=True"
    )
    parser.add_argument(
        "--sweep", action="store_true", help="choose fusion parameters on this split instead"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from llama_index_ragtune.data import load_beir

    dataset = load_beir(args.beir, split=args.split, max_queries=args.max_queries)
    cache_dir = _cache_dir(args.cache_dir)
    if args.sweep:
        from benchmarks.retrieval_sweep import run_sweep

        return run_sweep(dataset, args, cache_dir, command_line(args))
    results = benchmark(dataset, args, cache_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"retrieval_{dataset.name}_{dataset.split}" + (
        f"_q{args.max_queries}" if args.max_queries else ""
    )
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    markdown = render_markdown(results)
    (out / f"{stem}.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"\nwrote {out / (stem + '.json')} and {out / (stem + '.md')}")
    return 0


def _cache_dir(value: str | None) -> Path | None:
    if value is not None and value.lower() == "none":
        return None
    if value:
        return Path(value).expanduser()
    from llama_index_ragtune.models import cache_dir

    return cache_dir() / "embeddings"


def benchmark(dataset: Any, args: argparse.Namespace, cache_dir: Path | None) -> dict[str, Any]:
    """Build every system, evaluate them interleaved, and return a JSON-ready result."""
    from benchmarks import retrieval_systems as S
    from llama_index_ragtune.embeddings import default_embed_model, onnx_available
    from llama_index_ragtune.retrievers import DEFAULT_FUSION_MODE, FUSION_PRESETS

    show = not args.no_progress
    corpus = S.BenchCorpus.from_beir(dataset, cache_dir)
    backend = (
        args.embedding if args.embedding != "auto" else ("onnx" if onnx_available() else "torch")
    )
    stock_bm25, skipped = S.build_stock_bm25(corpus), {}
    if stock_bm25 is None:
        skipped[S.STOCK_BM25] = S.STOCK_BM25_MISSING
        skipped[S.ANCHOR] = S.STOCK_BM25_MISSING
        print(f"skipped: {S.STOCK_BM25} and {S.ANCHOR}: {S.STOCK_BM25_MISSING}", file=sys.stderr)
    bm25 = S.build_bm25(corpus)
    # the stock LlamaIndex encoder: HuggingFaceEmbedding with its default settings (batch 10)
    torch_embed = default_embed_model(args.model, backend="torch")
    encoders: dict[str, Any] = {}
    if args.onnx:
        encoders = _encoder_comparison(corpus, args.model, torch_embed, show)
    stock_dense, _ = S.build_stock_dense(corpus, torch_embed, "dense (VectorStoreIndex, PyTorch)")
    embed = torch_embed if backend == "torch" else default_embed_model(args.model, backend=backend)
    dense, index, _ = S.build_dense(corpus, embed, f"dense (ragtune FAISS, {backend})")
    systems = [s for s in (stock_bm25, bm25, stock_dense, dense) if s is not None]
    for other in ("onnx", "onnx-int8") if args.onnx else ():
        if other != backend:
            other_embed = encoders[other]["embed"]
            systems.append(S.build_dense(corpus, other_embed, f"dense (ragtune FAISS, {other})")[0])
    anchor = None
    if stock_bm25 is not None:
        anchor = S.build_anchor(stock_dense, stock_bm25, use_async=args.anchor_async)
        systems.append(anchor)
    hybrids = {mode: S.build_hybrid(index, bm25, dense, embed, mode) for mode in FUSION_PRESETS}
    systems.extend(hybrids.values())
    if args.reranker:
        systems.append(
            S.build_reranked(hybrids[DEFAULT_FUSION_MODE], args.reranker, args.rerank_depth)
        )
    reports = evaluate_interleaved(
        systems, dataset.queries, dataset.qrels, warmup=args.warmup, show_progress=show
    )

    rows = []
    for system in systems:
        report = reports[system.name]
        rows.append(
            {
                "system": system.name,
                "metrics": {k: report.aggregate[k] for k in report.aggregate},
                "latency_ms": report.latency,
                "index_seconds": system.index_seconds,
                "notes": system.notes,
                "reranked": bool(system.postprocessors),
            }
        )
    default_hybrid = reports[hybrids[DEFAULT_FUSION_MODE].name]
    summary: dict[str, Any] = {"default_hybrid": hybrids[DEFAULT_FUSION_MODE].name}
    if anchor is not None:
        anchor_report = reports[anchor.name]
        summary |= {
            "anchor": anchor.name,
            "ndcg@10_gain_over_anchor": default_hybrid.aggregate["ndcg@10"]
            - anchor_report.aggregate["ndcg@10"],
            "p50_latency_ratio_to_anchor": default_hybrid.latency["p50_ms"]
            / anchor_report.latency["p50_ms"],
        }
    return {
        "dataset": dataset.name,
        "split": dataset.split,
        "num_queries": len(dataset.queries),
        "num_documents": len(corpus.nodes),
        "embedding_backend": backend,
        "model": str(args.model or "bundled all-MiniLM-L6-v2"),
        "rows": rows,
        "summary": summary,
        **({"skipped_rows": skipped} if skipped else {}),
        "encoders": {
            k: {kk: vv for kk, vv in v.items() if kk != "embed"} for k, v in encoders.items()
        },
        "fusion_presets": FUSION_PRESETS,
        "default_fusion_mode": DEFAULT_FUSION_MODE,
        "machine": _machine(),
        "command": command_line(args),
    }


def _encoder_comparison(
    corpus: Any, model: str | None, torch_embed: Any, show: bool
) -> dict[str, Any]:
    """Embed the full corpus with each backend (no cache read; timed interleaved), filling the cache."""
    from llama_index_ragtune.embeddings import default_embed_model

    embeds = {"torch": torch_embed}
    for backend in ("onnx", "onnx-int8"):
        embeds[backend] = default_embed_model(model, backend=backend)
    timed = corpus.time_encoders(embeds, show_progress=show)
    base = timed["torch"].seconds
    return {
        name: {
            "embed": embeds[name],
            "corpus_seconds": entry.seconds,
            "texts": entry.computed,
            "speedup_vs_torch": base / entry.seconds if entry.seconds else None,
        }
        for name, entry in timed.items()
    }


def evaluate_interleaved(
    systems: list, queries: dict, qrels: dict, warmup: int = 3, show_progress: bool = True
) -> dict:
    """Evaluate every system on every query, one query at a time, rotating the system order per query."""
    from tqdm.auto import tqdm

    from llama_index_ragtune.evaluation import RetrievalEvaluator, RetrievalReport

    evaluators = {
        s.name: RetrievalEvaluator(
            s.retriever,
            node_postprocessors=s.postprocessors,
            k_values=(1, 3, 5, 10, 100),
            name=s.name,
        )
        for s in systems
    }
    for s in systems:  # warm-up: model sessions, caches of the CPU, lazy loading
        for text in WARMUP_QUERIES[: max(0, warmup)]:
            nodes = s.retriever.retrieve(text)
            for post in s.postprocessors:
                nodes = post.postprocess_nodes(nodes, query_str=text)
    rows: dict[str, list] = {s.name: [] for s in systems}
    items = list(queries.items())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # single-query reports warn about short rankings
        for position, (qid, text) in enumerate(
            tqdm(items, desc="queries x systems", disable=not show_progress)
        ):
            shift = position % len(systems)
            for s in systems[shift:] + systems[:shift]:
                report = evaluators[s.name].evaluate(
                    {qid: text}, {qid: qrels[qid]}, show_progress=False
                )
                rows[s.name].extend(report.rows)
    reference = next(iter(evaluators.values()))
    return {
        name: RetrievalReport(
            rows=r, k_values=reference.k_values, metrics=reference.metrics, name=name
        )
        for name, r in rows.items()
    }


def render_markdown(results: dict[str, Any]) -> str:
    """The result tables as Markdown."""
    lines = [
        f"### Retrieval on {results['dataset']} ({results['split']}, {results['num_queries']} queries, "
        f"{results['num_documents']} documents)",
        "",
        "| system | nDCG@10 | Recall@100 | MRR@10 | index (s) | p50 ms | p95 ms | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["rows"]:
        m, lat = row["metrics"], row["latency_ms"]
        recall = "—" if row["reranked"] else f"{m['recall@100']:.3f}"
        lines.append(
            f"| {row['system']} | {m['ndcg@10']:.3f} | {recall} | {m['mrr@10']:.3f} | {row['index_seconds']:.1f} "
            f"| {lat['p50_ms']:.1f} | {lat['p95_ms']:.1f} | {row['notes']} |"
        )
    summary = results["summary"]
    if "anchor" in summary:
        lines += [
            "",
            f"{summary['default_hybrid']} vs {summary['anchor']}: nDCG@10 {summary['ndcg@10_gain_over_anchor']:+.3f}, "
            f"p50 latency ratio {summary['p50_latency_ratio_to_anchor']:.2f}x",
        ]
    for system, reason in results.get("skipped_rows", {}).items():
        lines += ["", f"Row {system!r} skipped: {reason}."]
    if results.get("encoders"):
        dense_rows = {
            row["system"]: row for row in results["rows"] if row["system"].startswith("dense")
        }
        torch_ndcg = (
            dense_rows.get("dense (VectorStoreIndex, PyTorch)", {})
            .get("metrics", {})
            .get("ndcg@10")
        )
        lines += [
            "",
            "| encoder | corpus embedding (s) | speed-up vs PyTorch | dense nDCG@10 | Δ nDCG@10 vs PyTorch | dense p50 ms |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for backend, entry in results["encoders"].items():
            name = (
                "dense (VectorStoreIndex, PyTorch)"
                if backend == "torch"
                else f"dense (ragtune FAISS, {backend})"
            )
            row = dense_rows.get(name)
            ndcg = row["metrics"]["ndcg@10"] if row else float("nan")
            delta = ndcg - torch_ndcg if torch_ndcg is not None else float("nan")
            p50 = row["latency_ms"]["p50_ms"] if row else float("nan")
            lines.append(
                f"| {ENCODER_LABELS.get(backend, backend)} | {entry['corpus_seconds']:.1f} "
                f"| {entry['speedup_vs_torch']:.2f}x | {ndcg:.3f} | {delta:+.4f} | {p50:.1f} |"
            )
        lines += [
            "",
            f"Corpus embedding of all {results['num_documents']} documents per encoder, length-sorted, "
            "timed interleaved (12 slices, rotating order) in this run.",
        ]
    machine = results["machine"]
    lines += [
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {machine['cores']} cores, load {machine['load']}",
    ]
    return "\n".join(lines) + "\n"


def _machine() -> dict[str, Any]:
    from llama_index_ragtune.embeddings.onnx import available_cores

    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        load = "n/a"
    return {
        "cores": available_cores(),
        "load": load,
        "python": platform.python_version(),
        "time": time.strftime("%Y-%m-%d %H:%M"),
    }


FLAGS = {
    "max_queries": "--max-queries",
    "model": "--model",
    "reranker": "--reranker",
    "cache_dir": "--embedding-cache",
}


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces a result, paths relative to the working directory."""
    return "ragtune bench retrieval " + " ".join(_argv(args))


def _argv(args: argparse.Namespace) -> list[str]:
    parts = [f"--beir {display_path(args.beir)}", f"--split {args.split}"]
    for flag, option in FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            parts.append(f"{option} {display_value(value)}")
    if args.out != DEFAULT_OUT:
        parts.append(f"--out {display_path(args.out)}")
    if args.embedding != "auto":
        parts.append(f"--embedding {args.embedding}")
    if args.reranker:
        parts.append(f"--rerank-depth {args.rerank_depth}")
    parts += [
        f"--{f.replace('_', '-')}" for f in ("onnx", "anchor_async", "sweep") if getattr(args, f)
    ]
    return parts
