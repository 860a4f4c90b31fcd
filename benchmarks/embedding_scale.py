"""Corpus embedding at scale: ``embed_corpus`` on 100k passages, local vs multiprocess vs Ray.

Passages are generated, streamed, from the shared data: every sentence of the
BEIR corpus (SciFact's 5,183 abstracts), then every two-sentence window (stride
one sentence), then the sentences of the SQuAD 2.0 dev-half paragraphs, cut at
``--passages`` (default 100,000). The texts are never materialised as a list:
``embed_corpus`` reads them from a generator shard by shard.

Each engine runs in its own child process (a fresh interpreter: no model or
cache shared between rows); the parent samples the proportional set size (PSS,
shared pages split between the processes that map them) of the child's whole
process tree - for Ray that includes the raylet, GCS and actor processes - every
second and reports the peak, with the wall time and throughput. Every engine's
vectors are compared with the local engine's.

On a 2-core machine the parallel engines cannot beat one process that already
uses both cores; what they add there is start-up, transfer and scheduling
overhead, which this measures. They exist so the same call runs on more cores,
GPUs or a Ray cluster (``ray.init(address=...)`` before ``embed_corpus``).

Example::

    python -m benchmarks.embedding_scale --beir ../shared/data/scifact \\
        --squad ../shared/data/squad_v2_dev_half/dev-v2.0.cs224n_half.json --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from llama_index_ragtune.commands.options import bounded

ENGINES = ("local", "multiprocess", "ray")
SAMPLE_SECONDS = 1.0  # reading /proc/<pid>/smaps costs CPU: sample once a second
WINDOWS = (1, 2, 3)  # passages: sentences, then 2- and 3-sentence windows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.embedding_scale", description=__doc__
    )
    parser.add_argument("--beir", required=True, help="BEIR folder whose corpus gives the passages")
    parser.add_argument("--squad", default=None, help="SQuAD JSON: more sentences if needed")
    parser.add_argument(
        "--passages", type=bounded(int, 1), default=100_000, help="passages to embed"
    )
    parser.add_argument("--out", default="benchmarks/results", help="folder for JSON + Markdown")
    parser.add_argument("--model", default=None, help="encoder folder (default: bundled MiniLM)")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument(
        "--batch-size", type=bounded(int, 1), default=64, help="texts per forward pass"
    )
    parser.add_argument("--shard-size", type=bounded(int, 1), default=None, help="texts per shard")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--vectors", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def generate_passages(beir: str, squad: str | None, limit: int) -> Iterator[str]:
    """Sentences, then 2- and 3-sentence windows, of the BEIR corpus and SQuAD's paragraphs.
    ``SystemExit`` when they give fewer than ``limit`` passages."""
    from llama_index_ragtune.data import load_beir
    from llama_index_ragtune.data.qa import split_sentences

    corpus = load_beir(beir, split="test").corpus
    count = 0

    def emit(texts: Iterator[str]) -> Iterator[str]:
        nonlocal count
        for text in texts:
            if count >= limit:
                return
            text = text.strip()
            if text:
                count += 1
                yield text

    sources = [[split_sentences(doc.replace("\n", " ")) for doc in corpus.values()]]
    if squad:
        data = json.loads(Path(squad).read_text(encoding="utf-8"))["data"]
        sources.append([split_sentences(p["context"]) for a in data for p in a["paragraphs"]])
    for width in WINDOWS:  # every source's sentences, then its 2- and 3-sentence windows
        for paragraphs in sources:
            yield from emit(
                " ".join(sents[i : i + width])
                for sents in paragraphs
                for i in range(len(sents) - width + 1)
            )
    if count < limit:
        raise SystemExit(
            f"only {count} passages could be generated; pass --squad or fewer --passages"
        )


def worker(args: argparse.Namespace) -> None:
    """Child process: embed the generated passages with one engine, print a JSON line."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from llama_index_ragtune.embeddings import embed_corpus

    start = time.perf_counter()
    if args.worker == "ray":
        import ray

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    vectors = embed_corpus(
        generate_passages(args.beir, args.squad, args.passages),
        args.model,
        out_path=args.vectors,
        engine=args.worker,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        show_progress=False,
    )
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {"seconds": seconds, "rows": int(vectors.shape[0]), "dim": int(vectors.shape[1])}
        )
    )


def _tree_pss(pid: int) -> tuple[int, int]:
    """(PSS of the process and all its descendants, RSS of the process itself), bytes."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        rss = root.memory_info().rss
    except psutil.Error:
        return 0, 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except psutil.Error:
            continue
    return total, rss


def run_engine(engine: str, args: argparse.Namespace, vectors: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.embedding_scale", "--worker", engine]
    command += ["--beir", args.beir, "--passages", str(args.passages), "--vectors", str(vectors)]
    command += ["--batch-size", str(args.batch_size)]
    for flag, value in (
        ("--squad", args.squad),
        ("--model", args.model),
        ("--shard-size", args.shard_size),
    ):
        if value is not None:
            command += [flag, str(value)]
    peak = {"pss": 0, "rss": 0}
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            pss, rss = _tree_pss(child.pid)
            peak["pss"], peak["rss"] = max(peak["pss"], pss), max(peak["rss"], rss)
            done.wait(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = child.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"engine {engine} failed (exit {child.returncode}):\n{stderr[-4000:]}")
    reported = json.loads(stdout.strip().splitlines()[-1])
    return {
        "engine": engine,
        "seconds_in_child": reported["seconds"],
        "wall_seconds": wall,
        "passages": reported["rows"],
        "dimension": reported["dim"],
        "passages_per_second": reported["rows"] / reported["seconds"],
        "peak_tree_pss_mb": peak["pss"] / 2**20,
        "peak_driver_rss_mb": peak["rss"] / 2**20,
    }


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    load_before = _load()
    scratch = Path(args.out) / "embedding_scale_vectors"
    scratch.mkdir(parents=True, exist_ok=True)
    # too few passages must fail before an engine spends minutes embedding them
    sum(1 for _ in generate_passages(args.beir, args.squad, args.passages))
    rows = []
    for engine in args.engines:
        print(
            f"embedding {args.passages} passages with engine={engine} ...",
            file=sys.stderr,
            flush=True,
        )
        rows.append(run_engine(engine, args, scratch / f"{engine}.npy"))
        print(f"  {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    reference = np.load(scratch / f"{args.engines[0]}.npy", mmap_mode="r")
    for row in rows:
        other = np.load(scratch / f"{row['engine']}.npy", mmap_mode="r")
        row["max_abs_diff_vs_" + args.engines[0]] = float(
            max(
                np.abs(np.asarray(reference[s : s + 8192]) - other[s : s + 8192]).max()
                for s in range(0, reference.shape[0], 8192)
            )
        )
        row["file_mb"] = (scratch / f"{row['engine']}.npy").stat().st_size / 2**20
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "benchmark": "embedding_scale",
        "passages": args.passages,
        "source": f"1-3 sentence windows of {Path(args.beir).name}"
        + (f" and {Path(args.squad).name}" if args.squad else ""),
        "model": args.model or "bundled all-MiniLM-L6-v2",
        "batch_size": args.batch_size,
        "shard_size": args.shard_size or "default (16384; Ray 65536)",
        "rows": rows,
        "machine": {
            "cores": cores,
            "load_before": load_before,
            "load_after": _load(),
            "python": platform.python_version(),
            "time": time.strftime("%Y-%m-%d %H:%M"),
        },
        "command": "python -m benchmarks.embedding_scale " + " ".join(argv),
    }


def render_markdown(result: dict[str, Any]) -> str:
    first = result["rows"][0]["engine"]
    lines = [
        f"### Corpus embedding at scale: {result['passages']:,} passages ({result['source']}; "
        f"{result['model']}, batch {result['batch_size']}, shard {result['shard_size']})",
        "",
        f"| engine | time (s) | passages/s | peak memory, all processes (PSS MB) "
        f"| peak driver RSS (MB) | .npy (MB) | max abs diff vs {first} |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['engine']} | {r['seconds_in_child']:.1f} | {r['passages_per_second']:.0f} "
            f"| {r['peak_tree_pss_mb']:.0f} | {r['peak_driver_rss_mb']:.0f} | {r['file_mb']:.0f} "
            f"| {r['max_abs_diff_vs_' + first]:.1e} |"
        )
    machine = result["machine"]
    lines += [
        "",
        "Time: in the engine's process, from start (model load, Ray start-up) to the finished "
        ".npy. Memory: peak PSS of the process tree (Ray: raylet, GCS and actors included), "
        f"sampled every {SAMPLE_SECONDS:g} s. One process per row.",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {machine['cores']} cores, load before {machine['load_before']}, after "
        f"{machine['load_after']}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    result = run(args, argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = f"{args.passages // 1000}k" if args.passages % 1000 == 0 else str(args.passages)
    model = f"_{Path(args.model).name}" if args.model else ""
    stem = f"embedding_scale_{size}{model}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    markdown = render_markdown(result)
    (out / f"{stem}.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
