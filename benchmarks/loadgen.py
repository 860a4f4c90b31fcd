"""Load generators: one query at a time, N coroutines on one event loop, a pool of N threads.

Each runs a search function over a stream of queries and returns a :class:`Run`
(latency of every query that succeeded, the errors, the wall time); ``rss_mb``
reads the process's resident memory. Used by :mod:`benchmarks.load`.

Example::

    from benchmarks.loadgen import run_threads

    run = run_threads(lambda q: q.upper(), ["a", "b", "c"], workers=2)
    run.summary()["queries"], run.summary()["errors"]     # (3, 0)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Run:
    """Latencies (seconds) of the queries that succeeded, the errors, the wall time."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        done = len(self.latencies) + len(self.errors)
        ms = sorted(x * 1000.0 for x in self.latencies)
        return {
            "queries": done,
            "errors": len(self.errors),
            "error_examples": sorted(set(self.errors))[:3],
            "seconds": round(self.seconds, 3),
            "qps": round(done / self.seconds, 1) if self.seconds else None,
            "p50_ms": round(percentile(ms, 50), 2),
            "p95_ms": round(percentile(ms, 95), 2),
            "p99_ms": round(percentile(ms, 99), 2),
            "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
        }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux: current; elsewhere: the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - not Linux
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (2**20 if sys.platform == "darwin" else 2**10)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def run_sequential(search: Callable[[str], Any], queries: Sequence[str]) -> Run:
    run = Run()
    start = time.perf_counter()
    for query in queries:
        t = time.perf_counter()
        try:
            search(query)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            run.errors.append(_error(exc))
        else:
            run.latencies.append(time.perf_counter() - t)
    run.seconds = time.perf_counter() - start
    return run


def run_async(
    asearch: Callable[[str], Any],
    queries: Sequence[str],
    concurrency: int,
    checkpoints: Sequence[int] = (),
    on_checkpoint: Callable[[int], None] | None = None,
) -> Run:
    """``concurrency`` coroutines take the next query of ``queries`` until none is left."""
    run = Run()
    marks = set(checkpoints)

    async def worker(stream) -> None:
        for query in stream:
            t = time.perf_counter()
            try:
                await asearch(query)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                run.errors.append(_error(exc))
            else:
                run.latencies.append(time.perf_counter() - t)
            done = len(run.latencies) + len(run.errors)
            if on_checkpoint is not None and done in marks:
                on_checkpoint(done)

    async def main() -> None:
        stream = iter(queries)
        await asyncio.gather(*(worker(stream) for _ in range(concurrency)))

    start = time.perf_counter()
    asyncio.run(main())
    run.seconds = time.perf_counter() - start
    return run


def run_threads(search: Callable[[str], Any], queries: Sequence[str], workers: int) -> Run:
    run = Run()
    lock = threading.Lock()

    def one(query: str) -> None:
        t = time.perf_counter()
        try:
            search(query)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            with lock:
                run.errors.append(_error(exc))
        else:
            with lock:
                run.latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers, thread_name_prefix="load") as pool:
        list(pool.map(one, queries))
    run.seconds = time.perf_counter() - start
    return run
