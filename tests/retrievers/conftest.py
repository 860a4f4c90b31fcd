"""Fixtures for the retriever tests: a deterministic keyword embedding and a small store corpus."""

from __future__ import annotations

import re
import uuid
import zlib

import numpy as np
import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import TextNode

VOCAB = (
    "apple",
    "return",
    "refund",
    "perishable",
    "grocery",
    "electronics",
    "opened",
    "box",
    "days",
    "banana",
    "phone",
    "case",
    "ship",
    "store",
    "open",
    "hours",
    "laptop",
    "warranty",
    "milk",
    "fresh",
)


class KeywordEmbedding(BaseEmbedding):
    """Bag-of-keywords vectors (prefix match on VOCAB), L2-normalised; counts its calls."""

    calls: int = 0

    @classmethod
    def class_name(cls) -> str:
        return "KeywordEmbedding"

    def _vector(self, text: str) -> list[float]:
        words = re.findall(r"\w+", text.lower())
        vec = (
            np.array([sum(w.startswith(v[:5]) for w in words) for v in VOCAB], dtype=np.float32)
            + 1e-3
        )
        return (vec / np.linalg.norm(vec)).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        self.calls += 1
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        self.calls += 1
        return self._vector(text)


STORE_DOCS = [
    (
        "g1",
        "grocery",
        "Apples and other perishable groceries cannot be returned; we refund them instead.",
    ),
    ("g2", "grocery", "Fresh milk and bananas: refund within 2 days with the receipt."),
    ("g3", "grocery", "Grocery store opening hours are 8am to 9pm."),
    ("g4", "grocery", "Apple pie recipes from our bakery."),
    (
        "e1",
        "electronics",
        "Opened electronics such as an Apple phone can be returned within 14 days in the box.",
    ),
    (
        "e2",
        "electronics",
        "Laptop warranty covers two years; returns of opened laptops within 14 days.",
    ),
    ("e3", "electronics", "Phone cases ship in two days."),
    ("e4", "electronics", "Electronics store opening hours are 10am to 8pm."),
]


@pytest.fixture()
def store_nodes() -> list[TextNode]:
    return [
        TextNode(
            id_=node_id,
            text=text,
            metadata={"store": store, "department": "returns" if "return" in text else "info"},
        )
        for node_id, store, text in STORE_DOCS
    ]


@pytest.fixture()
def keyword_embedding() -> KeywordEmbedding:
    return KeywordEmbedding()


HYBRID_MANIFEST = "hybrid_retriever.json"


@pytest.fixture()
def persisted(store_nodes, keyword_embedding, tmp_path):
    """``(retriever, folder)``: a hybrid retriever over ``store_nodes`` persisted to ``tmp_path/h``."""
    from llama_index_ragtune.retrievers import HybridRetriever

    retriever = HybridRetriever.from_defaults(
        nodes=store_nodes, embed_model=keyword_embedding, similarity_top_k=4
    )
    folder = tmp_path / "h"
    retriever.persist(folder)
    return retriever, folder


def _downgrade_to_v1(folder) -> None:
    """Rewrite a persisted hybrid folder as version 1 wrote it: no content hashes (only the
    loaders' own checks stand between a damaged file and the index), dense facts in params."""
    import json

    path = folder / HYBRID_MANIFEST
    manifest = json.loads(path.read_text())
    params = manifest["params"] | {
        k: manifest["dense"][k] for k in ("index_id", "num_nodes", "dimension")
    }
    path.write_text(json.dumps({"format": "ragtune-hybrid", "format_version": 1, "params": params}))
    bm25_path = folder / "bm25" / "bm25_retriever.json"
    bm25 = json.loads(bm25_path.read_text())
    bm25_path.write_text(
        json.dumps({"format": "ragtune-bm25", "format_version": 1, "params": bm25["params"]})
    )


@pytest.fixture()
def downgrade_to_v1():
    """``downgrade_to_v1(folder)`` rewrites a persisted hybrid folder as version 1 wrote it."""
    return _downgrade_to_v1


class HashEmbedding(BaseEmbedding):
    """Deterministic text vectors: the sum of one fixed random vector per word, L2-normalised.

    Texts sharing words are close, so a corpus of topical texts forms clusters (what
    approximate indexes are built for); no model is loaded.
    """

    dim: int = 32

    @classmethod
    def class_name(cls) -> str:
        return "HashEmbedding"

    def _vector(self, text: str) -> list[float]:
        vec = np.zeros(self.dim, dtype=np.float64)
        for word in re.findall(r"\w+", text.lower()):
            seed = zlib.crc32(word.encode("utf-8"))
            vec += np.random.default_rng(seed).standard_normal(self.dim)
        norm = np.linalg.norm(vec)
        return (vec / norm if norm else vec + 1.0 / np.sqrt(self.dim)).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)


TOPICS = ("returns", "shipping", "warranty", "grocery", "billing", "hours", "phones", "laptops")


def topical_nodes(n: int, seed: int = 0, uuid_ids: bool = False) -> list[TextNode]:
    """``n`` short texts, each mostly words of one of 8 topics; metadata topic, year, rank."""
    rng = np.random.default_rng(seed)
    words = {t: [f"{t}{j}" for j in range(40)] for t in TOPICS}
    common = [f"word{j}" for j in range(200)]
    nodes = []
    for i in range(n):
        topic = TOPICS[int(rng.integers(len(TOPICS)))]
        text = " ".join(list(rng.choice(words[topic], 6)) + list(rng.choice(common, 4)) + [topic])
        node_id = str(uuid.UUID(int=int(rng.integers(2**62)) * 7919 + i)) if uuid_ids else f"n{i}"
        meta = {"topic": topic, "year": 2000 + i % 20, "rank": i % 7}
        nodes.append(TextNode(id_=node_id, text=text, metadata=meta))
    return nodes


@pytest.fixture()
def hash_embedding() -> HashEmbedding:
    return HashEmbedding()
