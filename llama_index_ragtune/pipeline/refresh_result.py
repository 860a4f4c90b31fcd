"""What a bundle refresh decided: ``RefreshResult`` and its one-screen summary.

Example::

    from llama_index_ragtune.pipeline import refresh_bundle

    result = refresh_bundle("runs/shop", "feedback.sqlite", out="runs/refresh-1")
    print(result.summary())
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class RefreshResult:
    """What a refresh decided.

    Attributes:
        promoted: whether a new version was written and is served now.
        decision: the champion / challenger decision (``PromotionDecision``).
        champion_version: the version in use when the refresh started.
        served_version: the version served now (the new one when promoted).
        bundle_path: the served version's folder.
        out: the refresh's folder (``refresh.json``, ``work/``).
        metrics: ``{"feedback" | "earlier": {"champion": {...}, "challenger": {...}}}``.
        parts: each part's own decision (``{"encoder": {...}, ...}``; ``None`` when left out).
        questions: counts of training and held-out questions by origin.
        report: the new version's HTML report (``None`` when nothing was promoted).

    Example::

        result = refresh_bundle("runs/shop", "feedback.sqlite", out="runs/refresh-1")
        result.promoted, result.served_version, result.metrics["feedback"]["challenger"]
    """

    promoted: bool
    decision: Any
    champion_version: str
    served_version: str
    bundle_path: Path
    out: Path
    metrics: dict[str, dict[str, dict[str, float]]]
    parts: dict[str, Any]
    questions: dict[str, int]
    report: Path | None = None

    def summary(self) -> str:
        """The decision, the held-out figures and where the served bundle is."""
        lines = [
            f"Refresh of bundle {self.champion_version}: "
            + (f"promoted as {self.served_version}" if self.promoted else "nothing promoted"),
            f"  {self.decision.reason}",
        ]
        for name, pair in self.metrics.items():
            champion, challenger = pair["champion"], pair["challenger"]
            figures = ", ".join(
                f"{k} {champion[k]:.3f} -> {challenger[k]:.3f}" for k in champion if k in challenger
            )
            count = self.questions.get(f"{name}_test", 0)
            lines.append(f"  {name} held-out questions ({count}): {figures}")
        for part, info in self.parts.items():
            lines.append(f"  {part}: {info['reason'] if info else 'left out'}")
        lines.append(f"Served: bundle {self.served_version} at {self.bundle_path}")
        if self.report is not None:
            lines.append(f"Report: {self.report}")
        return "\n".join(lines)
