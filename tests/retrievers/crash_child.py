"""Child process of the crash tests: load a persisted hybrid index and persist it over another folder.

Usage: python crash_child.py SOURCE_DIR TARGET_DIR SCRATCH_DIR DIMENSION

Persists once into SCRATCH_DIR (warm-up, timed), prints ``READY <seconds of that persist>``
just before persisting over TARGET_DIR, and ``DONE <seconds>`` when that returns, so the
parent can SIGKILL it at a chosen fraction of this process's own persist duration.
"""

from __future__ import annotations

import sys
import time

from llama_index.core.embeddings import MockEmbedding

from llama_index_ragtune.retrievers import HybridRetriever


def main() -> None:
    source, target, scratch, dimension = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    retriever = HybridRetriever.from_persist_dir(
        source, embed_model=MockEmbedding(embed_dim=dimension)
    )
    start = time.perf_counter()
    retriever.persist(scratch)
    print(f"READY {time.perf_counter() - start:.4f}", flush=True)
    start = time.perf_counter()
    retriever.persist(target)
    print(f"DONE {time.perf_counter() - start:.4f}", flush=True)


if __name__ == "__main__":
    main()
