"""What a fine-tune run returns: metrics before and after, their delta, wall time and memory.

Both encoder-side engines (``EncoderFinetuneEngine``, ``RerankerFinetuneEngine``)
return a ``FinetuneResult`` from ``finetune()``; the ``ragtune train`` commands
print it with ``format_table()`` and write it with ``save_json()``.

Example::

    result = engine.finetune()
    print(result.format_table())
    #               before   after   delta
    # ndcg@10       0.6451  0.7012 +0.0561
    # ...
    result.save_json("runs/encoder/results.json")
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llama_index_ragtune._atomic import atomic_write_json, strict_json
from llama_index_ragtune.finetuning.promotion import PromotionDecision

REPORTED_METRICS = ("ndcg@10", "recall@100", "mrr@10")


@dataclass
class FinetuneResult:
    """Before/after metrics of one fine-tune run.

    Attributes:
        before: metrics of the starting model on the validation split (empty when
            there was no validation split).
        after: metrics of the fine-tuned model on the same split.
        train_seconds: wall time of the training loop alone (no evaluation).
        peak_memory_mb: highest resident memory sampled during training, in MiB.
        process_peak_memory_mb: ``resource.getrusage(...).ru_maxrss`` after training
            (the whole process's peak so far, in MiB).
        global_step: optimizer steps done (counting those of a resumed checkpoint).
        model_path: folder of the saved fine-tuned model.
        info: free-form details (loss, rows, negatives, resumed checkpoint...).
    """

    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    peak_memory_mb: float = 0.0
    process_peak_memory_mb: float = 0.0
    global_step: int = 0
    model_path: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    decision: PromotionDecision | None = None

    @property
    def delta(self) -> dict[str, float]:
        """``after - before`` for every metric present in both."""
        return {k: self.after[k] - self.before[k] for k in self.after if k in self.before}

    @property
    def promoted(self) -> bool | None:
        """Whether the tuned model replaced the starting one (``None``: no decision was made)."""
        return None if self.decision is None else self.decision.promoted

    def to_dict(self) -> dict[str, Any]:
        """The result as strict JSON data: a NaN or infinite metric (a diverged run) as ``None``."""
        data = asdict(self)
        data["decision"] = None if self.decision is None else self.decision.to_dict()
        data["delta"] = self.delta
        return strict_json(data)

    def summary(self) -> dict[str, Any]:
        """The headline figures (no per-run details): before, after, time, memory, decision
        (strict JSON data, as ``to_dict``)."""
        return strict_json(
            {
                "before": self.before,
                "after": self.after,
                "train_minutes": round(self.train_seconds / 60, 2),
                "peak_memory_mb": round(self.peak_memory_mb),
                "steps": self.global_step,
                "model_path": self.model_path,
                "promoted": self.promoted,
            }
        )

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write the result as strict JSON (NaN as ``null``; parent folders are created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(path, self.to_dict(), strict=True, default=str)

    def format_table(self, metrics: tuple[str, ...] | None = None) -> str:
        """A plain-text before/after/delta table, the wall time, peak memory and the decision.

        ``metrics`` picks rows (default: every metric measured, in the order measured).
        """
        names = (
            list(dict.fromkeys([*self.after, *self.before]))
            if metrics is None
            else [m for m in metrics if m in self.after or m in self.before]
        )
        width = max([12, *(len(n) for n in names)])
        lines = [f"{'metric':<{width}} {'before':>8} {'after':>8} {'delta':>8}"]
        for name in names:
            before, after = self.before.get(name), self.after.get(name)
            delta = self.delta.get(name)
            lines.append(
                f"{name:<{width}} {_fmt(before):>8} {_fmt(after):>8} "
                f"{'' if delta is None else f'{delta:+.4f}':>8}"
            )
        lines.append(
            f"train wall time {self.train_seconds / 60:.1f} min, peak memory "
            f"{self.peak_memory_mb:.0f} MiB (process peak {self.process_peak_memory_mb:.0f} MiB), "
            f"{self.global_step} steps"
        )
        if self.decision is not None:
            lines.append(self.decision.reason)
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def process_peak_rss_mb() -> float:
    """Peak resident memory of this process so far (``ru_maxrss``), in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return process_peak_rss_mb()


class PeakMemory:
    """Context manager sampling resident memory in a thread; ``peak_mb`` after exit.

    ``ru_maxrss`` only grows over a process's life, so several runs in one
    process (the tuning benchmark) would all report the first big one; sampling
    gives each run its own peak.

    Example::

        with PeakMemory() as mem:
            trainer.train()
        print(mem.peak_mb, mem.seconds)
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0.0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, _current_rss_mb())

    def __enter__(self) -> PeakMemory:
        self.peak_mb = _current_rss_mb()
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="ragtune-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, _current_rss_mb())
