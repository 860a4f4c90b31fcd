"""Load benchmark: hybrid retrieval (and retrieval + reranking) one at a time, 50 concurrent, threaded.

Every system answers the same stream of queries (a BEIR split's queries, cycled)
three ways:

* ``sequential``: one ``retrieve`` at a time;
* ``async``: ``--concurrency`` coroutines on one event loop, each awaiting
  ``aretrieve`` (+ ``apostprocess_nodes``) for the next query of the stream;
* ``threads``: a pool of ``--threads`` workers calling ``retrieve`` (+
  ``postprocess_nodes``).

For each: errors, throughput (queries/s over the whole run) and p50/p95/p99 of
the per-query latency (from the call to its result, so under concurrency it
includes the wait for the CPU). A long ``async`` run of the default hybrid
(``--memory-queries``) samples the process's resident memory (RSS) after 1,000
queries and at the end, to show it stays flat.

Systems: ``hybrid`` is ``HybridRetriever.from_defaults(nodes, similarity_top_k=10)``
(the queries of concurrent callers answered in shared batches, the default: one
encoder call per batch, see :mod:`llama_index_ragtune.retrievers.hybrid_batch`);
``hybrid, micro_batch=False`` is the same retriever answering query by query;
``hybrid + rerank`` reranks the hybrid's top ``--rerank-depth`` to 10 with a
``CrossEncoderRerank``. No trained cross-encoder ships offline: without
``--reranker`` it is the bundled MiniLM with a new, untrained 1-logit head (the
cost of a real MiniLM reranker, not its quality).

The corpus vectors come from the embedding cache (``--cache-dir``, default the
ragtune cache) when present; queries are never cached. Only the public API of
``llama_index_ragtune`` is used.

The same runs as ``ragtune bench load``.

Example::

    ragtune bench load --beir ../shared/data/scifact --rerank-queries 30
    python -m benchmarks.load --beir ../shared/data/scifact --out benchmarks/results
    python -m benchmarks.load --beir ../shared/data/scifact --queries 200 --memory-queries 2000 \\
        --rerank-queries 50 --out /tmp/load-quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.loadgen import rss_mb, run_async, run_sequential, run_threads
from llama_index_ragtune.commands.options import bounded

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = "benchmarks/results"
MODES = ("sequential", "async", "threads")
UNBATCHED = "hybrid, micro_batch=False"


# ---------------------------------------------------------------------- systems


@dataclass
class System:
    name: str
    search: Callable[[str], Any]
    asearch: Callable[[str], Any]
    batch_stats: Callable[[], dict | None] | None = None  # the retriever's batch counts
    reranks: bool = False
    retriever: Any = None  # the HybridRetriever itself


def load_queries(dataset: Any, total: int) -> list[str]:
    """``total`` queries: the split's queries in id order, cycled."""
    texts = [dataset.queries[qid] for qid in sorted(dataset.queries)]
    if not texts:
        raise SystemExit(f"{dataset.path}: the {dataset.split!r} split has no queries")
    return [texts[i % len(texts)] for i in range(total)]


def build_systems(dataset: Any, args: argparse.Namespace) -> tuple[list[System], dict[str, Any]]:
    from llama_index.core.schema import TextNode

    from llama_index_ragtune import CrossEncoderRerank, HybridRetriever
    from llama_index_ragtune.embeddings import default_embed_model
    from llama_index_ragtune.retrievers import hybrid_batch

    nodes = [
        TextNode(id_=doc.id_, text=doc.text, metadata=dict(doc.metadata))
        for doc in dataset.documents
    ]
    embed = default_embed_model(args.model)
    start = time.perf_counter()
    plain = HybridRetriever.from_defaults(
        nodes=nodes,
        embed_model=embed,
        similarity_top_k=10,
        embed_cache_dir=_cache_dir(args.cache_dir),
        micro_batch=False,
    )
    build_seconds = time.perf_counter() - start
    # the default retriever (micro_batch=True) over the same index and query encoder
    hybrid = HybridRetriever.from_defaults(
        index=plain.index, embed_model=embed, similarity_top_k=10
    )
    systems = [
        System(
            "hybrid",
            hybrid.retrieve,
            hybrid.aretrieve,
            lambda: hybrid.batch_stats,
            retriever=hybrid,
        ),
        System(UNBATCHED, plain.retrieve, plain.aretrieve, retriever=plain),
    ]
    info: dict[str, Any] = {
        "corpus": len(nodes),
        "index_seconds": round(build_seconds, 1),
        "embed_model": f"{type(embed).__name__}({Path(embed.model_name).name})",
        "micro_batch": {
            "batched": "whole retrievals of concurrent callers (HybridRetriever, micro_batch=True)",
            "max_wait_ms": hybrid_batch.DEFAULT_MAX_WAIT_MS,
            "max_batch_size": hybrid_batch.DEFAULT_MAX_BATCH_SIZE,
        },
    }
    if args.rerank_queries > 0:
        reranker = _reranker(args, CrossEncoderRerank)
        deep = HybridRetriever.from_defaults(
            index=plain.index, embed_model=embed, similarity_top_k=args.rerank_depth
        )

        def rerank(query: str) -> Any:
            return reranker.postprocess_nodes(deep.retrieve(query), query_str=query)

        async def arerank(query: str) -> Any:
            return await reranker.apostprocess_nodes(await deep.aretrieve(query), query_str=query)

        systems.append(
            System("hybrid + rerank", rerank, arerank, lambda: deep.batch_stats, reranks=True)
        )
        info["reranker"] = {
            "model": _display_path(args.reranker)
            if args.reranker
            else "bundled MiniLM + untrained 1-logit head",
            "rerank_depth": args.rerank_depth,
            "top_n": 10,
            "max_length": args.rerank_max_length,
        }
    return systems, info


def _reranker(args: argparse.Namespace, rerank_cls: type) -> Any:
    if args.reranker:
        return rerank_cls(args.reranker, top_n=10, max_length=args.rerank_max_length)
    import torch
    from sentence_transformers import CrossEncoder

    from llama_index_ragtune import default_encoder

    torch.manual_seed(0)  # the untrained head: fixed, so reruns score alike
    model = CrossEncoder(default_encoder(), num_labels=1, max_length=args.rerank_max_length)
    return rerank_cls(model, top_n=10, max_length=args.rerank_max_length)


def _cache_dir(value: str | None) -> Path | None:
    if value is not None and value.lower() == "none":
        return None
    if value:
        return Path(value).expanduser()
    from llama_index_ragtune.models import cache_dir

    return cache_dir() / "embeddings"


def _display_path(value: str | os.PathLike) -> str:
    """A path as recorded in the results: relative to the repository, never absolute."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        return str(value)
    try:
        return os.path.relpath(path, REPO)
    except ValueError:  # pragma: no cover - another drive on Windows
        return path.name


# ---------------------------------------------------------------------- the benchmark


def _batch_delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict | None:
    if after is None:
        return None
    before = before or {"requests": 0, "batches": 0}
    requests = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    return {
        "queries": requests,
        "batches": batches,
        "mean_batch": round(requests / batches, 2) if batches else None,
    }


def measure(system: System, mode: str, queries: Sequence[str], args: argparse.Namespace) -> dict:
    """One run of ``system`` in ``mode``, after a short untimed warm-up."""
    run_sequential(system.search, queries[: args.warmup])
    stats = system.batch_stats() if system.batch_stats is not None else None
    if mode == "sequential":
        run = run_sequential(system.search, queries)
    elif mode == "async":
        run = run_async(system.asearch, queries, args.concurrency)
    else:
        run = run_threads(system.search, queries, args.threads)
    after = system.batch_stats() if system.batch_stats is not None else None
    row = {
        "system": system.name,
        "mode": mode,
        "workers": {"sequential": 1, "async": args.concurrency, "threads": args.threads}[mode],
        **run.summary(),
        "micro_batches": _batch_delta(stats, after),
        "rss_mb": round(rss_mb(), 1),
    }
    print(_row_line(row), flush=True)
    return row


def measure_all(systems: list[System], dataset: Any, args: argparse.Namespace) -> list[dict]:
    """Every system in every mode; mode by mode, so a change of machine load hits all systems."""
    streams = {
        s.name: load_queries(dataset, args.rerank_queries if s.reranks else args.queries)
        for s in systems
    }
    rows = [measure(s, mode, streams[s.name], args) for mode in MODES for s in systems]
    order = {s.name: i for i, s in enumerate(systems)}
    rows.sort(key=lambda r: (order[r["system"]], MODES.index(r["mode"])))
    for row in rows:
        base = next(r for r in rows if r["system"] == row["system"])["qps"]
        row["x_sequential"] = round(row["qps"] / base, 2) if base and row["qps"] else None
    return rows


def agreement(batched: Any, plain: Any, queries: Sequence[str], concurrency: int) -> dict:
    """Results of ``concurrency`` concurrent ``aretrieve`` calls (batched) against the unbatched
    retriever one query at a time: queries with the same nodes, order and per-side ranks, and
    the largest fused-score difference."""
    import asyncio

    def key(results: Any) -> list:
        return [(n.node.node_id, n.dense_rank, n.sparse_rank) for n in results]

    distinct = list(dict.fromkeys(queries))
    expected = [plain.retrieve(q) for q in distinct]

    async def together() -> list:
        limit = asyncio.Semaphore(concurrency)

        async def one(query: str) -> Any:
            async with limit:
                return await batched.aretrieve(query)

        return await asyncio.gather(*(one(q) for q in distinct))

    got = asyncio.run(together())
    same = sum(key(a) == key(b) for a, b in zip(expected, got, strict=True))
    diffs = [
        abs(x.score - y.score)
        for a, b in zip(expected, got, strict=True)
        if key(a) == key(b)
        for x, y in zip(a, b, strict=True)
    ]
    return {
        "queries": len(distinct),
        "same_results": same,
        "max_fused_score_difference": float(f"{max(diffs, default=0.0):.3g}"),
    }


def memory_run(system: System, queries: Sequence[str], concurrency: int) -> dict[str, Any]:
    """One long async run; resident memory after 1,000 queries and at the end."""
    samples: list[dict[str, float]] = [{"queries": 0, "rss_mb": round(rss_mb(), 1)}]
    checkpoints = sorted({min(1000, len(queries)), len(queries)})

    def sample(done: int) -> None:
        samples.append({"queries": done, "rss_mb": round(rss_mb(), 1)})

    run = run_async(system.asearch, queries, concurrency, checkpoints, sample)
    first, last = samples[1], samples[-1]
    return {
        "system": system.name,
        "mode": "async",
        "workers": concurrency,
        **run.summary(),
        "rss": samples,
        "rss_growth_mb": round(last["rss_mb"] - first["rss_mb"], 1),
    }


def _row_line(row: dict[str, Any]) -> str:
    return (
        f"{row['system']:<28} {row['mode']:<10} {row['queries']:>6} q  {row['errors']} errors  "
        f"{row['qps']:>7} q/s  p50 {row['p50_ms']:.1f}  p95 {row['p95_ms']:.1f}  "
        f"p99 {row['p99_ms']:.1f} ms"
    )


def benchmark(args: argparse.Namespace, prog: str = "ragtune bench load") -> dict[str, Any]:
    from llama_index_ragtune import load_beir

    load_before = _load()
    dataset = load_beir(args.beir, split=args.split)
    systems, info = build_systems(dataset, args)
    rows = measure_all(systems, dataset, args)
    check = agreement(
        systems[0].retriever,
        systems[1].retriever,
        load_queries(dataset, len(dataset.queries)),
        args.concurrency,
    )
    print(
        f"concurrent vs one at a time: {check['same_results']}/{check['queries']} queries with "
        f"the same results (max fused-score difference {check['max_fused_score_difference']})",
        flush=True,
    )
    memory = None
    if args.memory_queries > 0:
        memory = memory_run(
            systems[0], load_queries(dataset, args.memory_queries), args.concurrency
        )
        print(
            f"memory: RSS {memory['rss'][1]['rss_mb']} MiB after {memory['rss'][1]['queries']} "
            f"queries, {memory['rss'][-1]['rss_mb']} MiB after {memory['rss'][-1]['queries']}",
            flush=True,
        )
    return {
        "benchmark": "load",
        "dataset": {
            "name": dataset.name,
            "split": args.split,
            "path": _display_path(args.beir),
            "distinct_queries": len(dataset.queries),
        },
        "setup": info
        | {
            "similarity_top_k": 10,
            "concurrency": args.concurrency,
            "threads": args.threads,
            "warmup": args.warmup,
        },
        "rows": rows,
        "agreement": check,
        "memory": memory,
        "summary": _summary(rows),
        "command": command_line(args, prog),
        "machine": {
            "cores": _cores(),
            "load_before": load_before,
            "load_after": _load(),
            "python": platform.python_version(),
            "time": time.strftime("%Y-%m-%d %H:%M"),
        },
    }


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for row in rows:
        if row["mode"] != "sequential":
            out[f"{row['system']} / {row['mode']}"] = row["x_sequential"]
    summary: dict[str, Any] = {"throughput_vs_one_at_a_time": out}
    base = _row(rows, UNBATCHED, "sequential")
    if base is not None and base["qps"]:
        summary["hybrid_vs_unbatched_one_at_a_time"] = {
            row["mode"]: round(row["qps"] / base["qps"], 2)
            for row in rows
            if row["system"] == "hybrid" and row["qps"]
        }
    return summary


def _row(rows: list[dict[str, Any]], system: str, mode: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["system"] == system and r["mode"] == mode), None)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


# ---------------------------------------------------------------------- output


def render_markdown(results: dict[str, Any]) -> str:
    setup, data = results["setup"], results["dataset"]
    lines = [
        f"# Load: {data['name']} ({data['split']} queries, cycled), corpus {setup['corpus']} "
        f"documents, top {setup['similarity_top_k']}",
        "",
        "| system | mode | queries | errors | queries/s | x one at a time | p50 ms | p95 ms "
        "| p99 ms | mean batch |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["rows"]:
        mode = row["mode"] if row["mode"] == "sequential" else f"{row['mode']} ({row['workers']})"
        batches = row["micro_batches"]
        mean_batch = batches["mean_batch"] if batches and batches["mean_batch"] else "-"
        lines.append(
            f"| {row['system']} | {mode} | {row['queries']} | {row['errors']} | {row['qps']:.1f} "
            f"| {row['x_sequential']:.2f} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} "
            f"| {row['p99_ms']:.1f} | {mean_batch} |"
        )
    memory = results["memory"]
    if memory:
        points = ", ".join(f"{s['rss_mb']:.0f} MiB at {s['queries']:,}" for s in memory["rss"][1:])
        lines += [
            "",
            f"Memory ({memory['system']}, async {memory['workers']}, {memory['queries']:,} queries, "
            f"{memory['errors']} errors, {memory['qps']:.1f} queries/s, p99 {memory['p99_ms']:.1f} "
            f"ms): resident memory {points} ({memory['rss_growth_mb']:+.1f} MiB).",
        ]
    check = results.get("agreement")
    if check:
        lines += [
            "",
            f"Results of {setup['concurrency']} concurrent `aretrieve` calls (batched) against the "
            f"unbatched retriever one query at a time: {check['same_results']} of "
            f"{check['queries']} distinct queries with the same nodes, order and per-side ranks "
            f"(largest fused-score difference {check['max_fused_score_difference']:g}).",
        ]
    micro = setup["micro_batch"]
    versus = results["summary"].get("hybrid_vs_unbatched_one_at_a_time")
    if versus:
        lines += [
            "",
            "hybrid (micro-batched) against the unbatched retriever one at a time: "
            + ", ".join(f"{mode} {x:.2f}x" for mode, x in versus.items())
            + ".",
        ]
    lines += [
        "",
        f"Query encoder {setup['embed_model']}; micro-batching ({micro.get('batched', 'query embeddings')}): "
        f"max_wait_ms {micro['max_wait_ms']:g}, max_batch_size {micro['max_batch_size']}. "
        f"Latency is per query, from the call to its result (under concurrency it includes the "
        f"wait for the CPU).",
    ]
    if "reranker" in setup:
        r = setup["reranker"]
        lines.append(
            f"Reranker: {r['model']}, the hybrid's top {r['rerank_depth']} reranked to "
            f"{r['top_n']} (max_length {r['max_length']})."
        )
    machine = results["machine"]
    lines += [
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {machine['cores']} cores, load average {machine['load_before']} before, "
        f"{machine['load_after']} after",
    ]
    return "\n".join(lines) + "\n"


def command_line(args: argparse.Namespace, prog: str = "ragtune bench load") -> str:
    """The command that reproduces this run (paths relative to the repository)."""
    parts = [prog, f"--beir {_display_path(args.beir)}"]
    defaults = vars(build_parser().parse_args(["--beir", "x"]))
    for name, value in vars(args).items():
        if name == "beir" or name not in defaults or value == defaults[name]:
            continue
        if name in ("out", "reranker", "model", "cache_dir") and value and value != "none":
            value = _display_path(value)
        parts.append(f"--{name.replace('_', '-')} {shlex.quote(str(value))}")
    return " ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (``ragtune bench load`` and ``python -m benchmarks.load``)."""
    parser.add_argument("--beir", required=True, help="BEIR folder (corpus, queries, qrels)")
    parser.add_argument("--split", default="test", help="whose queries to send (default: test)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"results folder ({DEFAULT_OUT})")
    parser.add_argument(
        "--queries", type=bounded(int, 1), default=1000, help="queries per run (cycled)"
    )
    parser.add_argument(
        "--concurrency", type=bounded(int, 1), default=50, help="concurrent aretrieve calls"
    )
    parser.add_argument("--threads", type=bounded(int, 1), default=8, help="thread-pool workers")
    parser.add_argument(
        "--memory-queries",
        type=bounded(int, 0),
        default=10_000,
        help="long async run for RSS (0: skip)",
    )
    parser.add_argument(
        "--rerank-queries",
        type=bounded(int, 0),
        default=100,
        help="queries per reranked run (0: skip)",
    )
    parser.add_argument(
        "--rerank-depth", type=bounded(int, 1), default=10, help="candidates reranked"
    )
    parser.add_argument(
        "--rerank-max-length", type=bounded(int, 1), default=256, help="tokens per pair"
    )
    parser.add_argument(
        "--reranker", default=None, help="cross-encoder folder (default: untrained)"
    )
    parser.add_argument("--model", default=None, help="bi-encoder folder (default: bundled)")
    parser.add_argument(
        "--cache-dir", default=None, help="corpus-embedding cache ('none' disables)"
    )
    parser.add_argument(
        "--warmup", type=bounded(int, 0), default=20, help="untimed queries before each run"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv), prog="python -m benchmarks.load")


def run(args: argparse.Namespace, prog: str = "ragtune bench load") -> int:
    """Run the benchmark for parsed ``args`` (``ragtune bench load`` calls this); ``prog`` is
    how the recorded command starts."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("queries", "concurrency", "threads", "rerank_depth", "rerank_max_length"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("memory_queries", "rerank_queries", "warmup"):
        if getattr(args, name) < 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not Path(args.beir).is_dir():
        raise SystemExit(f"--beir {args.beir}: no such folder (expected a BEIR data set)")
    results = benchmark(args, prog)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"load_{results['dataset']['name']}"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    markdown = render_markdown(results)
    (out / f"{stem}.md").write_text(markdown, encoding="utf-8")
    print()
    print(markdown)
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
