"""``MiningStats``: what ``HardNegativeMiner.mine`` kept and filtered, per negative source.

Example::

    from llama_index_ragtune.data.mining_stats import MiningStats

    stats = MiningStats(queries=2, negatives={"bm25": 3})
    str(stats)          # 'mined 2 queries; bm25: 3 kept, filtered none, 0 queries short'
    stats.as_dict()["negatives"]     # {'bm25': 3}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FILTERS = (
    "positive",
    "same_text",
    "duplicate",
    "max_score",
    "margin",
    "relative_margin",
    "cross_encoder",
)


@dataclass
class MiningStats:
    """What ``HardNegativeMiner.mine`` did, per source.

    ``negatives[source]``: negatives kept; ``filtered[source][reason]``: candidates in
    the rank window removed by each filter (see ``FILTERS``); ``short[source]``:
    queries that got fewer than the requested number.
    """

    queries: int = 0
    negatives: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, dict[str, int]] = field(default_factory=dict)
    short: dict[str, int] = field(default_factory=dict)

    def _count(self, source: str, reason: str, n: int = 1) -> None:
        bucket = self.filtered.setdefault(source, dict.fromkeys(FILTERS, 0))
        bucket[reason] += n

    def as_dict(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "negatives": dict(self.negatives),
            "filtered": {s: dict(v) for s, v in self.filtered.items()},
            "short": dict(self.short),
        }

    def __str__(self) -> str:
        parts = []
        for source, kept in self.negatives.items():
            removed = {k: v for k, v in self.filtered.get(source, {}).items() if v}
            parts.append(
                f"{source}: {kept} kept, filtered {removed or 'none'}, "
                f"{self.short.get(source, 0)} queries short"
            )
        return f"mined {self.queries} queries; " + "; ".join(parts)
