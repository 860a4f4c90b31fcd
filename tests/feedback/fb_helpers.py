"""Shared helpers for the feedback tests: scored LlamaIndex nodes from a few texts."""

from __future__ import annotations

from llama_index.core.schema import NodeWithScore, TextNode

TEXTS = {
    "g1": "Grocery returns: fresh apples can be returned within 7 days with the receipt.",
    "g2": "Grocery receipts: keep the receipt; refunds go back to the card used.",
    "e1": "Electronics returns: opened Apple devices can be returned within 14 days.",
    "e2": "Electronics: an opened-box fee of 15% applies to returned laptops.",
    "x": "Delivery: orders ship within two working days.",
    "w": "Warranty: phones carry a two-year manufacturer warranty.",
}


def sources(*node_ids: str, texts: dict[str, str] | None = None) -> list[NodeWithScore]:
    """``NodeWithScore`` for ``node_ids`` in this order, scores 1.0, 0.9, 0.8 ..."""
    texts = {**TEXTS, **(texts or {})}
    return [
        NodeWithScore(node=TextNode(id_=node_id, text=texts[node_id]), score=1.0 - i / 10)
        for i, node_id in enumerate(node_ids)
    ]
