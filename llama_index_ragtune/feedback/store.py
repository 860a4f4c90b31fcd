"""``FeedbackStore``: a log of questions, sources, answers and user feedback in one SQLite file.

Every answer is one record: the query, its sources in rank order with scores
(and their texts, kept per node id + text hash so exports work after the index
changed), the cited node ids, the answer, the refused flag, latency, bundle
version, a timestamp and free JSON metadata. A rating (+1 / -1) or a clicked
citation attaches to the record later through its id.

Safe to share: several processes (and threads) may write at once; each write
is one short transaction that waits up to ``timeout`` seconds for the lock, and
the database runs in WAL mode, so a writer killed mid-write loses only its
uncommitted record. All SQL is parameterised; texts are stored verbatim.
``records()`` takes one short read transaction a page (500 records), so iterating a
long log never holds the WAL back. An export reads through :meth:`FeedbackStore.snapshot`,
one read transaction (on a connection of its own: writers go on), so its records, ratings
and node texts are of one moment; while it runs, as while another program keeps a read
transaction open, ``<file>-wal`` grows with every write, and is cut back to 4 MiB
(``schema.WAL_SIZE_LIMIT``) at the next checkpoint after.

Example::

    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index_ragtune.feedback import FeedbackStore

    with FeedbackStore("feedback.sqlite") as store:
        sources = [NodeWithScore(node=TextNode(id_="grocery-returns", text="Apples: 7 days."), score=0.9)]
        rid = store.record("apple return policy?", retrieved=sources,
                           cited_node_ids=["grocery-returns"], answer="7 days [1].", latency_ms=412.0)
        store.rate(rid, +1)
        store.click(rid, "grocery-returns")
        len(store), store.stats().upvoted          # (1, 1)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llama_index_ragtune.feedback.connection import check_path
from llama_index_ragtune.feedback.export import (
    feedback_evaluation_set,
    feedback_preference_pairs,
    feedback_retrieval_dataset,
)
from llama_index_ragtune.feedback.reading import FeedbackReader, RatingFilter
from llama_index_ragtune.feedback.writing import FeedbackWriter

if TYPE_CHECKING:
    import datasets

    from llama_index_ragtune.data.schema import RetrievalDataset

__all__ = ["FeedbackStore", "RatingFilter", "check_path"]


class FeedbackStore(FeedbackWriter, FeedbackReader):
    """A feedback log on SQLite (WAL mode); share one file between processes.

    Args:
        path: the database file (``~`` is expanded; created with its folder's permissions
            when missing), or ``":memory:"`` for a private throw-away store.
        timeout: seconds a write waits for another writer's lock before ``TimeoutError``.
        create: ``False`` raises ``FileNotFoundError`` for a missing file instead of
            starting an empty store (use it where a typo must not go unnoticed).
        synchronous: ``"NORMAL"`` keeps every committed record when a process is
            killed; ``"FULL"`` also through a power loss (one fsync per write).
        read_only: ``True`` opens an existing store for reading only (stats, records,
            exports), also in a folder this user may not write; every write then raises
            ``PermissionError``. Opened while no writer has the file open, it reads the
            file as it is and switches to following the writer once one appears.

    A write SQLite cannot make raises an ``OSError`` naming the file, and stores
    nothing of that write: ``PermissionError`` for a read-only file or folder (WAL
    mode writes ``<file>-wal`` and ``<file>-shm`` next to it), ``errno.ENOSPC`` for a
    full disk. A lock held past ``timeout`` is a ``TimeoutError`` for reads too. A file
    replaced or deleted on disk while the store is open is refused at the next write
    (:class:`FeedbackStoreError`; the write would go to the old file), as are triggers
    another program planted on the store's tables, when it is opened for writing.

    Open one store per process (a store opened before ``fork`` reconnects in the
    child); it is safe to use from several threads.

    Example::

        store = FeedbackStore("feedback.sqlite")
        rid = store.record("apple return policy?", answer="Insufficient information.", refused=True)
        store.rate(rid, -1)
        [r.query for r in store.records(rating=-1)]     # ['apple return policy?']
        store.close()
    """

    def to_retrieval_dataset(self, **kwargs: Any) -> RetrievalDataset:
        """Training data for the encoder and reranker; see :func:`~llama_index_ragtune.feedback.export.feedback_retrieval_dataset`.

        Example::

            train = store.to_retrieval_dataset(split="train", corpus=nodes)
        """
        return feedback_retrieval_dataset(self, **kwargs)

    def to_evaluation_set(self, **kwargs: Any) -> RetrievalDataset:
        """The fixed held-out queries with their positives; see :func:`~llama_index_ragtune.feedback.export.feedback_evaluation_set`.

        Example::

            eval_set = store.to_evaluation_set(eval_fraction=0.2)
        """
        return feedback_evaluation_set(self, **kwargs)

    def to_preference_pairs(self, **kwargs: Any) -> datasets.Dataset:
        """DPO pairs in TRL's conversational format; see :func:`~llama_index_ragtune.feedback.export.feedback_preference_pairs`.

        Example::

            pairs = store.to_preference_pairs(max_source_chars=1500)
        """
        return feedback_preference_pairs(self, **kwargs)
