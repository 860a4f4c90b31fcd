"""What a ``FeedbackStore`` returns: one ``FeedbackRecord`` per answered question.

Example::

    from llama_index_ragtune.feedback import FeedbackStore

    with FeedbackStore("feedback.sqlite") as store:
        for record in store.records(rating=-1):
            print(record.query, record.retrieved_node_ids, record.cited_node_ids)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llama_index_ragtune._atomic import strict_json

__all__ = ["FeedbackRecord", "FeedbackStats", "RetrievedNode"]


@dataclass(frozen=True)
class RetrievedNode:
    """One source of an answer, in the order the query engine returned it.

    Args:
        node_id: the node's id in the index.
        score: the retriever's (or reranker's) score; ``None`` when it gave none
            (a NaN score is stored as ``None``: SQLite has no NaN; an infinite one is kept
            here and is ``None`` in ``FeedbackRecord.to_dict()``, strict JSON).
        text_hash: key of the node text stored with the record
            (``FeedbackStore.node_text(node_id, text_hash)``), so the text the
            engine saw stays available after the index changes.

    Example::

        RetrievedNode("grocery-returns", 0.83, "5f0c...")
    """

    node_id: str
    score: float | None
    text_hash: str


@dataclass(frozen=True)
class FeedbackRecord:
    """One answered question with everything the store knows about it.

    ``retrieved`` are the answer's sources in rank order; ``cited_node_ids`` the
    ones the answer cites; ``clicked_node_ids`` the citations the user opened
    (first click order, no repeats); ``rating`` is +1, -1 or ``None`` (unrated).
    ``created_at`` and ``rated_at`` are timezone-aware UTC datetimes.

    Example::

        record = store.get(response.metadata["feedback_id"])
        record.rating, record.cited_node_ids, record.latency_ms
    """

    id: str
    query: str
    answer: str | None
    retrieved: tuple[RetrievedNode, ...]
    cited_node_ids: tuple[str, ...]
    clicked_node_ids: tuple[str, ...]
    refused: bool
    rating: int | None
    latency_ms: float | None
    bundle_version: str | None
    created_at: datetime
    rated_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def retrieved_node_ids(self) -> list[str]:
        """The sources' node ids in rank order."""
        return [n.node_id for n in self.retrieved]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: datetimes as ISO 8601 strings, a NaN or infinite number (a
        source's score, a number in the metadata) as ``None``, so ``json.dumps`` writes strict
        JSON (``null``, not ``Infinity`` / ``NaN``, which most JSON readers refuse)."""
        return strict_json(
            {
                "id": self.id,
                "query": self.query,
                "answer": self.answer,
                "retrieved": [
                    {"node_id": n.node_id, "score": n.score, "text_hash": n.text_hash}
                    for n in self.retrieved
                ],
                "cited_node_ids": list(self.cited_node_ids),
                "clicked_node_ids": list(self.clicked_node_ids),
                "refused": self.refused,
                "rating": self.rating,
                "latency_ms": self.latency_ms,
                "bundle_version": self.bundle_version,
                "created_at": self.created_at.isoformat(),
                "rated_at": None if self.rated_at is None else self.rated_at.isoformat(),
                "metadata": dict(self.metadata),
            }
        )


@dataclass(frozen=True)
class FeedbackStats:
    """Counts and business proxies over a selection of records (``FeedbackStore.stats``).

    ``empty`` counts answers that say nothing (no letter or digit once the citation
    markers are removed: ``""``, ``"[1] [2]"``). ``refusal_rate`` and ``answer_rate``
    (neither refused nor empty, as the generation evaluation counts it) are over all selected
    records; ``latency_p50_ms`` / ``latency_p95_ms`` over those with a latency
    (linear interpolation between ranks). Rates and percentiles are ``None``
    when nothing was selected.

    Example::

        stats = store.stats(bundle_version="v3")
        stats.records, stats.upvoted, stats.refusal_rate, stats.latency_p95_ms
    """

    records: int
    upvoted: int
    downvoted: int
    unrated: int
    refused: int
    empty: int
    clicks: int
    records_with_clicks: int
    node_versions: int
    bundle_versions: dict[str, int]
    refusal_rate: float | None
    answer_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    first: datetime | None
    last: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO 8601 strings, a NaN or infinite number as
        ``None``: strict JSON)."""
        out = dict(self.__dict__)
        out["bundle_versions"] = dict(self.bundle_versions)
        for key in ("first", "last"):
            out[key] = None if out[key] is None else out[key].isoformat()
        return strict_json(out)
