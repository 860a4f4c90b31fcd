"""``FusedNodeWithScore``: a hybrid result with each side's rank and raw score.

Its own module so that the one-at-a-time path (:mod:`.hybrid`) and the batched path
(:mod:`.hybrid_batch`) build the same results without importing each other.

Example::

    from llama_index.core.schema import TextNode
    from llama_index_ragtune.retrievers.fused_node import FusedNodeWithScore

    hit = FusedNodeWithScore(node=TextNode(text="..."), score=0.7, dense_rank=1, sparse_rank=3)
"""

from __future__ import annotations

from llama_index.core.bridge.pydantic import Field
from llama_index.core.schema import NodeWithScore


class FusedNodeWithScore(NodeWithScore):
    """A fused result: ``score`` is the fused score; per-side ranks (1-based) and raw scores ride along."""

    dense_rank: int | None = Field(
        default=None, description="1-based rank on the dense side (None: not retrieved)."
    )
    dense_score: float | None = Field(
        default=None, description="Raw dense similarity (None: not retrieved)."
    )
    sparse_rank: int | None = Field(
        default=None, description="1-based rank on the BM25 side (None: not retrieved)."
    )
    sparse_score: float | None = Field(
        default=None, description="Raw BM25 score (None: not retrieved)."
    )

    @classmethod
    def class_name(cls) -> str:
        return "FusedNodeWithScore"
