"""Child process of the cache crash test: fill a CachedEmbedding batch after batch until killed.

Usage: python cache_writer_child.py CACHE_DIR
Prints ``READY`` after the first committed batch.
"""

from __future__ import annotations

import hashlib
import itertools
import sys

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding

from llama_index_ragtune.embeddings import CachedEmbedding

IDENTITY = "cache-crash-test"


class DigestEmbedding(BaseEmbedding):
    """Deterministic across processes: the vector is derived from the text's SHA-256."""

    @classmethod
    def class_name(cls) -> str:
        return "DigestEmbedding"

    def vector(self, text: str) -> list[float]:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        return np.random.default_rng(seed).normal(size=32).astype(np.float32).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self.vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self.vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self.vector(text)


def batch_texts(i: int) -> list[str]:
    return [f"batch {i} text {j} " + "x" * (j % 50) for j in range(400)]


def main() -> None:
    cached = CachedEmbedding(DigestEmbedding(model_name="digest"), sys.argv[1], identity=IDENTITY)
    for i in itertools.count():
        cached.get_text_embedding_batch(batch_texts(i))
        if i == 0:
            print("READY", flush=True)


if __name__ == "__main__":
    main()
