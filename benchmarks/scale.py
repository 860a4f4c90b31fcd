"""Scale benchmark: FAISS index types at 10^6 synthetic and 10^5 real vectors, BM25 at 10^6 documents.

Dense side (every index type through ``FaissIndexConfig.build`` and queried through
``FilterableFaissVectorStore.query``, the dense side of ``HybridRetriever``):

* **synthetic**: ``--synthetic`` (default 1,000,000) 384-d unit vectors from a
  clustered, locally low-rank mixture, not uniform noise: 1,000 cluster centres drawn
  uniformly on the sphere, cluster sizes from a Dirichlet(1) draw (uneven, like topics),
  and each vector = its centre + a point of a 16-d subspace of its own cluster
  (Gaussian, expected norm ``--spread``) + isotropic Gaussian noise (expected norm
  ``--noise``), L2-normalised. Queries are fresh draws from the same mixture.
* **real**: ``--real`` (default 100,000) sentence windows (1 to 3 consecutive sentences)
  of SciFact abstracts and SQuAD paragraphs, embedded with the bundled MiniLM through
  ONNX Runtime int8 (``OnnxEmbedding(quantize=True)``); queries are SciFact claims and
  SQuAD questions. Vectors are cached in ``--work-dir`` (text hash checked), with the
  time they took to embed.

Per index type (flat, hnsw, ivf, ivfpq; default parameters unless ``--ef-construction`` /
``--hnsw-m`` are given): build time (wall and CPU,
all cores), peak resident memory (RSS) of the process that built it (it includes the
memory-mapped input vectors it read), the RSS the index keeps once the input is
unmapped, its size on disk, recall@10 against exact search and p50/p95 latency of one
query at a time on one thread (``faiss.omp_set_num_threads(1)``). Each index is built
once, in a fresh process, so memory figures do not mix. A sweep of ``ef_search`` /
``nprobe`` on the built index shows the recall/latency trade-off, and filtered queries
(a metadata field independent of the clusters, passing 10% and 1% of the vectors)
check recall against exact filtered search.

BM25 (``BM25Retriever``, bm25s): ``--bm25`` (default 1,000,000) documents of two
sentences drawn at random from the same sentence pool; node creation, index time,
RSS, and p50/p95 of ``retrieve`` for the real queries, one at a time.

Only the public API of ``llama_index_ragtune`` is used. Results:
``<out>/scale.json`` and ``<out>/scale.md``; paths are recorded relative to the
repository, and the command that produced them is in both files.

Example::

    ragtune bench scale --parts embed                             # cache the MiniLM vectors
    ragtune bench scale --out benchmarks/results                  # everything
    python -m benchmarks.scale --synthetic 20000 --real 5000 --bm25 20000 --queries 100 \\
        --out /tmp/scale-quick                                    # a quick check
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.scale_data import (
    FILTERS,
    GROUPS,
    TOP_K,
    _filter_mask,
    _unit,
    calibrate,
    display_path,
    embed_cached,
    exact_top_k,
    load_average,
    nn_stats,
    paragraphs,
    real_queries,
    recall_at_k,
    sentence_windows,
    synthetic_vectors,
)
from benchmarks.scale_report import render_markdown
from llama_index_ragtune.commands.options import bounded, seed_number

DEFAULT_OUT = "benchmarks/results"
DEFAULT_WORK = "benchmarks/data/scale"
DEFAULT_BEIR = "../shared/data/scifact"
DEFAULT_SQUAD = "../shared/data/squad_v2_dev_half/dev-v2.0.cs224n_half.json"
PARTS = ("embed", "synthetic", "real", "bm25")
KINDS = ("flat", "hnsw", "ivf", "ivfpq")
SWEEP = {"hnsw": ("ef_search", (16, 32, 64, 128, 256)), "ivf": ("nprobe", (8, 16, 32, 64, 128))}
SWEEP["ivfpq"] = SWEEP["ivf"]


# ---------------------------------------------------------------------- small helpers


def rss_mib() -> float:
    """Current resident memory of this process (MiB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB).

    Read from ``VmHWM`` in ``/proc/self/status``: it belongs to this process's own address
    space. ``getrusage``'s ``ru_maxrss`` is not used: Linux carries it across ``exec``, so a
    freshly spawned worker would report its parent's peak.
    """
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


def _build_options(kind: str, args: argparse.Namespace) -> dict[str, int]:
    """``FaissIndexConfig`` build settings given on the command line for ``kind``."""
    if kind != "hnsw":
        return {}
    given = {"ef_construction": args.ef_construction, "hnsw_m": args.hnsw_m}
    return {key: value for key, value in given.items() if value is not None}


# ---------------------------------------------------------------------- one index, one process


def measure_index(job: dict[str, Any]) -> dict[str, Any]:
    """Build one index type over the memory-mapped vectors, then time queries (a fresh process)."""
    import faiss
    from llama_index.core.vector_stores.types import (
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
    )

    from llama_index_ragtune.retrievers import FaissIndexConfig, FilterableFaissVectorStore

    baseline = rss_mib()
    vectors = np.load(job["vectors"], mmap_mode="r")
    queries = np.load(job["queries"])
    truth = {k: np.load(v) for k, v in job["truth"].items()}
    n = len(vectors)
    config = FaissIndexConfig(kind=job["kind"], **job.get("build", {})).resolve(n, vectors.shape[1])
    threads = faiss.omp_get_max_threads()
    started, cpu = time.perf_counter(), time.process_time()
    index = config.build(vectors)
    build_s, build_cpu = time.perf_counter() - started, time.process_time() - cpu
    peak_build = peak_rss_mib()
    del vectors
    gc.collect()
    index_rss = rss_mib() - baseline  # the input is unmapped: what the index itself keeps
    disk = Path(job["scratch"])
    faiss.write_index(index, os.fspath(disk))
    size = disk.stat().st_size
    disk.unlink()

    groups = np.load(job["groups"])
    store = FilterableFaissVectorStore(
        index, metadata=[{"group": int(g)} for g in groups], config=config
    )
    faiss.omp_set_num_threads(1)

    def run(qs: np.ndarray, filters: Any = None) -> tuple[list[list[int]], list[float]]:
        found, times = [], []
        for q in qs[: job["warmup"]]:
            store.query(
                VectorStoreQuery(
                    query_embedding=q.tolist(), similarity_top_k=TOP_K, filters=filters
                )
            )
        for q in qs:
            query = VectorStoreQuery(
                query_embedding=q.tolist(), similarity_top_k=TOP_K, filters=filters
            )
            t = time.perf_counter()
            result = store.query(query)
            times.append((time.perf_counter() - t) * 1000)
            found.append([int(i) for i in result.ids])
        return found, times

    limit = job["flat_queries"] if job["kind"] == "flat" else len(queries)
    found, times = run(queries[:limit])
    row = {
        "data": job["data"],
        "index": job["kind"],
        "faiss_type": type(index).__name__,
        "params": _params(config),
        "vectors": n,
        "build_s": round(build_s, 1),
        "build_cpu_s": round(build_cpu, 1),
        "build_threads": threads,
        "peak_rss_mib": round(peak_build, 0),
        "baseline_rss_mib": round(baseline, 0),
        "index_rss_mib": round(index_rss, 0),
        "disk_mib": round(size / 2**20, 1),
        "queries": limit,
        "recall_at_10": round(recall_at_k(found, truth["none"][:limit]), 4),
        "p50_ms": round(percentile(times, 50), 3),
        "p95_ms": round(percentile(times, 95), 3),
        "load_average": load_average(),
    }
    sweep = []
    if job["kind"] in SWEEP:
        name, values = SWEEP[job["kind"]]
        seen = set()
        for value in values:
            store.set_search_params(**{name: value})
            if store.search_params()[name] in seen:  # nprobe capped at nlist
                continue
            seen.add(store.search_params()[name])
            f, t = run(queries)
            sweep.append(
                {
                    "data": job["data"],
                    "index": job["kind"],
                    "setting": f"{name}={store.search_params()[name]}",
                    "recall_at_10": round(recall_at_k(f, truth["none"]), 4),
                    "p50_ms": round(percentile(t, 50), 3),
                    "p95_ms": round(percentile(t, 95), 3),
                }
            )
        store.set_search_params(**{name: getattr(config, name)})
    filtered = []
    if job["kind"] != "flat":
        fq = queries[: job["filter_queries"]]
        for name, (op, value) in FILTERS.items():
            filters = MetadataFilters(
                filters=[MetadataFilter(key="group", value=value, operator=op)]
            )
            allowed = int(_filter_mask(groups, name).sum())
            f, t = run(fq, filters)
            ok = all(
                _filter_mask(groups[np.asarray(ids, dtype=int)], name).all() for ids in f if ids
            )
            filtered.append(
                {
                    "data": job["data"],
                    "index": job["kind"],
                    "filter": f"{name} (group {op} {value})",
                    "allowed": allowed,
                    "path": "exhaustive scan"
                    if allowed <= store.exhaustive_below
                    else "widened search",
                    "all_pass": ok,
                    "recall_at_10": round(recall_at_k(f, truth[name][: len(fq)]), 4),
                    "p50_ms": round(percentile(t, 50), 3),
                    "p95_ms": round(percentile(t, 95), 3),
                }
            )
    return {"row": row, "sweep": sweep, "filtered": filtered}


def _params(config: Any) -> str:
    if config.kind == "hnsw":
        return f"M={config.hnsw_m}, efConstruction={config.ef_construction}, efSearch={config.ef_search}"
    if config.kind == "ivf":
        return f"nlist={config.nlist}, nprobe={config.nprobe}, train={config.train_size:,}"
    if config.kind == "ivfpq":
        return (
            f"nlist={config.nlist}, nprobe={config.nprobe}, pq_m={config.pq_m}x{config.pq_nbits} bits, "
            f"train={config.train_size:,}"
        )
    return "exact"


def in_fresh_process(fn: Any, job: dict[str, Any]) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, job).result()


# ---------------------------------------------------------------------- BM25


def measure_bm25(job: dict[str, Any]) -> dict[str, Any]:
    """BM25Retriever over ``job['documents']`` two-sentence documents (a fresh process)."""
    from llama_index.core.schema import TextNode

    from llama_index_ragtune.retrievers import BM25Retriever

    pool = json.loads(Path(job["sentences"]).read_text(encoding="utf-8"))
    queries = json.loads(Path(job["queries"]).read_text(encoding="utf-8"))
    rng = np.random.default_rng(job["seed"])
    picks = rng.integers(0, len(pool), size=(job["documents"], 2))
    baseline = rss_mib()
    started = time.perf_counter()
    nodes = [TextNode(id_=f"d{i}", text=f"{pool[a]} {pool[b]}") for i, (a, b) in enumerate(picks)]
    nodes_s = time.perf_counter() - started
    words = sum(len(n.text.split()) for n in nodes[:10_000]) / min(10_000, len(nodes))
    after_nodes = rss_mib()
    started, cpu = time.perf_counter(), time.process_time()
    retriever = BM25Retriever(nodes, similarity_top_k=TOP_K)
    index_s, index_cpu = time.perf_counter() - started, time.process_time() - cpu
    gc.collect()
    after_index = rss_mib()
    for q in queries[: job["warmup"]]:
        retriever.retrieve(q)
    times, empty = [], 0
    for q in queries:
        t = time.perf_counter()
        hits = retriever.retrieve(q)
        times.append((time.perf_counter() - t) * 1000)
        empty += not hits
    return {
        "documents": len(nodes),
        "mean_words": round(words, 1),
        "nodes_s": round(nodes_s, 1),
        "index_s": round(index_s, 1),
        "index_cpu_s": round(index_cpu, 1),
        "nodes_rss_mib": round(after_nodes - baseline, 0),
        "index_rss_mib": round(after_index - after_nodes, 0),
        "peak_rss_mib": round(peak_rss_mib(), 0),
        "queries": len(queries),
        "queries_without_hits": empty,
        "p50_ms": round(percentile(times, 50), 2),
        "p95_ms": round(percentile(times, 95), 2),
        "qps_one_at_a_time": round(len(times) / (sum(times) / 1000), 1),
        "load_average": load_average(),
    }


# ---------------------------------------------------------------------- the benchmark


def dense_dataset(
    name: str, vectors_path: Path, queries: np.ndarray, args: argparse.Namespace
) -> dict:
    work = Path(args.work_dir)
    vectors = np.load(vectors_path, mmap_mode="r")
    groups = np.random.default_rng(args.seed + 7).integers(0, GROUPS, len(vectors)).astype(np.int16)
    np.save(work / f"{name}-groups.npy", groups)
    np.save(work / f"{name}-queries.npy", queries)
    print(
        f"[{name}] exact top-{TOP_K} of {len(queries)} queries over {len(vectors):,} vectors",
        flush=True,
    )
    started = time.perf_counter()
    truth = exact_top_k(vectors, queries, groups)
    exact_s = time.perf_counter() - started
    truth_paths = {}
    for key, ids in truth.items():
        truth_paths[key] = str(work / f"{name}-truth-{key.rstrip('%')}.npy")
        np.save(truth_paths[key], ids)
    stats = nn_stats(vectors)
    del vectors
    rows, sweep, filtered = [], [], []
    for kind in args.kinds:
        print(f"[{name}] {kind}: build + queries (load {load_average()})", flush=True)
        job = {
            "data": name,
            "kind": kind,
            "vectors": str(vectors_path),
            "queries": str(work / f"{name}-queries.npy"),
            "groups": str(work / f"{name}-groups.npy"),
            "truth": truth_paths,
            "scratch": str(work / f"{name}-{kind}.faiss"),
            "warmup": args.warmup,
            "flat_queries": min(args.flat_queries, len(queries)),
            "filter_queries": min(args.filter_queries, len(queries)),
            "build": _build_options(kind, args),
        }
        result = in_fresh_process(measure_index, job)
        print(f"    {json.dumps(result['row'])}", flush=True)
        rows.append(result["row"])
        sweep += result["sweep"]
        filtered += result["filtered"]
    return {
        "exact_search_batch_s": round(exact_s, 1),
        "neighbours": stats,
        "rows": rows,
        "sweep": sweep,
        "filtered": filtered,
    }


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": command_line(args),
        "machine": {
            "cores": len(os.sched_getaffinity(0)),
            "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(),
            "load_before": load_average(),
        },
        "datasets": {},
        "dense": {},
    }
    with contextlib.suppress(ImportError):
        import faiss

        results["machine"]["faiss"] = faiss.__version__
    need_texts = {"embed", "real", "bm25"} & set(args.parts)
    if need_texts:
        paras = paragraphs(Path(args.beir), Path(args.squad))
        queries_text = real_queries(Path(args.beir), Path(args.squad), args.queries, args.seed)
    if {"embed", "real"} & set(args.parts):
        texts = sentence_windows(paras, args.real, args.seed)
        print(f"[real] {len(texts):,} sentence windows, {len(queries_text)} queries", flush=True)
        corpus_meta = embed_cached(texts, work / f"minilm-int8-windows-{len(texts)}.npy", "windows")
        query_meta = embed_cached(
            queries_text, work / f"minilm-int8-queries-{len(queries_text)}.npy", "queries"
        )
        results["datasets"]["real"] = {
            "source": f"sentence windows (1-3 sentences) of {display_path(args.beir)} corpus and "
            f"{display_path(args.squad)} paragraphs; queries: SciFact claims and SQuAD questions",
            "windows": len(texts),
            "queries": len(queries_text),
            "corpus_embedding": corpus_meta,
            "query_embedding": query_meta,
        }
    if "synthetic" in args.parts and args.calibrate:
        if "real" not in results["datasets"]:
            raise SystemExit("--calibrate needs the real vectors: add real (or embed) to --parts")
        real_path = work / f"minilm-int8-windows-{results['datasets']['real']['windows']}.npy"
        results["calibration"] = calibrate(np.load(real_path, mmap_mode="r"), args)
    if "synthetic" in args.parts:
        path = work / f"synthetic-{args.synthetic}.npy"
        print(f"[synthetic] generating {args.synthetic:,} vectors", flush=True)
        started = time.perf_counter()
        gen = synthetic_vectors(path, args.synthetic, args, seed=args.seed + 1)
        qpath = work / f"synthetic-queries-{args.queries}.npy"
        synthetic_vectors(qpath, args.queries, args, seed=args.seed + 2)
        gen["generate_s"] = round(time.perf_counter() - started, 1)
        results["datasets"]["synthetic"] = gen
        results["dense"]["synthetic"] = dense_dataset("synthetic", path, np.load(qpath), args)
        if not args.keep_vectors:
            path.unlink()
    if "real" in args.parts:
        vectors_path = work / f"minilm-int8-windows-{results['datasets']['real']['windows']}.npy"
        queries = np.load(work / f"minilm-int8-queries-{len(queries_text)}.npy")
        results["dense"]["real"] = dense_dataset("real", vectors_path, _unit(queries), args)
    if "bm25" in args.parts:
        sentences = sorted({s for p in paras for s in p})
        (work / "bm25-sentences.json").write_text(json.dumps(sentences))
        (work / "bm25-queries.json").write_text(json.dumps(queries_text))
        print(f"[bm25] {args.bm25:,} documents from {len(sentences):,} sentences", flush=True)
        job = {
            "sentences": str(work / "bm25-sentences.json"),
            "queries": str(work / "bm25-queries.json"),
            "documents": args.bm25,
            "seed": args.seed,
            "warmup": args.warmup,
        }
        results["bm25"] = in_fresh_process(measure_bm25, job) | {"sentence_pool": len(sentences)}
        print(f"    {json.dumps(results['bm25'])}", flush=True)
    results["machine"]["load_after"] = load_average()
    results["target"] = _target(results)
    return results


def _target(results: dict[str, Any]) -> dict[str, Any] | None:
    """recall@10 >= 0.95 at p50 < 1 ms for HNSW on the synthetic set (from the measured rows)."""
    synthetic = results["dense"].get("synthetic")
    if not synthetic:
        return None
    rows = [r for r in synthetic["rows"] if r["index"] == "hnsw"]
    if not rows:
        return None
    row = rows[0]
    return {
        "goal": "HNSW at the synthetic scale: recall@10 >= 0.95 at p50 < 1 ms",
        "vectors": row["vectors"],
        "recall_at_10": row["recall_at_10"],
        "p50_ms": row["p50_ms"],
        "met": row["recall_at_10"] >= 0.95 and row["p50_ms"] < 1.0,
    }


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (paths relative to the repository)."""
    via_cli = getattr(args, "group", None) == "bench"  # ``ragtune bench scale`` parsed it
    parts = ["ragtune bench scale" if via_cli else "python -m benchmarks.scale"]
    defaults = vars(build_parser().parse_args([]))
    for name, value in vars(args).items():
        if name.startswith("_") or name not in defaults or value == defaults[name]:
            continue
        if value is True:
            parts.append(f"--{name.replace('_', '-')}")
            continue
        if name in ("out", "work_dir", "beir", "squad"):
            value = display_path(value)
        if isinstance(value, (list, tuple)):
            value = ",".join(value)
        parts.append(f"--{name.replace('_', '-')} {shlex.quote(str(value))}")
    return " ".join(parts)


def _csv(choices: Sequence[str]) -> Any:
    def parse(value: str) -> list[str]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        bad = [v for v in items if v not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}, got {value!r}")
        return items

    return parse


def _count(minimum: int) -> Any:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {number}")
        return number

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (``ragtune bench scale`` and ``python -m benchmarks.scale``)."""
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"results folder ({DEFAULT_OUT})")
    parser.add_argument(
        "--work-dir", default=DEFAULT_WORK, help=f"vector cache / scratch ({DEFAULT_WORK})"
    )
    parser.add_argument(
        "--parts",
        type=_csv(PARTS),
        default=list(PARTS[1:]),
        help="comma-separated: synthetic,real,bm25 (default), or embed (only cache the vectors)",
    )
    parser.add_argument(
        "--kinds", type=_csv(KINDS), default=list(KINDS), help="index types (flat,hnsw,ivf,ivfpq)"
    )
    parser.add_argument(
        "--ef-construction",
        type=_count(1),
        default=None,
        help="HNSW efConstruction (default: the library's FaissIndexConfig default)",
    )
    parser.add_argument(
        "--hnsw-m", type=_count(2), default=None, help="HNSW M (default: the library's)"
    )
    parser.add_argument("--synthetic", type=_count(1), default=1_000_000, help="synthetic vectors")
    parser.add_argument("--real", type=_count(1), default=100_000, help="real MiniLM vectors")
    parser.add_argument("--bm25", type=_count(1), default=1_000_000, help="BM25 documents")
    parser.add_argument("--queries", type=_count(1), default=1000, help="queries per data set")
    parser.add_argument(
        "--flat-queries", type=_count(1), default=200, help="queries timed on the flat index"
    )
    parser.add_argument("--filter-queries", type=_count(1), default=300, help="queries per filter")
    parser.add_argument("--warmup", type=_count(0), default=20, help="untimed queries first")
    parser.add_argument(
        "--clusters", type=_count(1), default=1000, help="synthetic mixture components"
    )
    parser.add_argument(
        "--rank", type=_count(1), default=16, help="dimension of each cluster's subspace"
    )
    parser.add_argument(
        "--spread",
        type=bounded(float, 0),
        default=0.5,
        help="norm of a point's offset in its cluster's subspace",
    )
    parser.add_argument(
        "--noise", type=bounded(float, 0), default=0.3, help="norm of the isotropic noise"
    )
    parser.add_argument("--seed", type=seed_number, default=0)
    parser.add_argument("--beir", default=None, help=f"SciFact BEIR folder ({DEFAULT_BEIR})")
    parser.add_argument("--squad", default=None, help=f"SQuAD 2.0 JSON file ({DEFAULT_SQUAD})")
    parser.add_argument("--keep-vectors", action="store_true", help="keep the synthetic .npy")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="choose --spread/--noise so the synthetic neighbour cosines match the real set's",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the benchmark for parsed ``args`` (``ragtune bench scale`` calls this)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if {"embed", "real", "bm25"} & set(args.parts):
        args.beir = args.beir or DEFAULT_BEIR
        args.squad = args.squad or DEFAULT_SQUAD
        for flag, path, kind in (("--beir", args.beir, "dir"), ("--squad", args.squad, "file")):
            ok = Path(path).is_dir() if kind == "dir" else Path(path).is_file()
            if not ok:
                what = "folder" if kind == "dir" else "file"
                raise FileNotFoundError(
                    f"{flag} {path}: no such {what}; the parts {','.join(args.parts)} read the "
                    f"texts from it (pass {flag}, or --parts synthetic)"
                )
    results = benchmark(args)
    if args.parts == ["embed"]:
        print(json.dumps(results["datasets"].get("real", {}), indent=2))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    markdown = render_markdown(results)
    (out / "scale.md").write_text(markdown, encoding="utf-8")
    print()
    print(markdown)
    print(f"wrote {display_path(out / 'scale.json')} and {display_path(out / 'scale.md')}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
