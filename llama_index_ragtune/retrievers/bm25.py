"""BM25 over LlamaIndex nodes with bm25s: stemming, stopwords, metadata filters, persistence.

Unlike ``llama-index-retrievers-bm25``, metadata filters are applied to the
scores *before* the top-k cut (a filter never leaves holes, and no filtered-out
node comes back), nodes without any query term are never padded in with score
0, the query goes through the same stopword list as the corpus, and a query is
scored through a fast path (regex, PyStemmer, one sparse column sum) without
per-query vocabulary building or progress bars.

Example::

    from llama_index.core.schema import TextNode
    from llama_index_ragtune.retrievers import BM25Retriever

    nodes = [TextNode(text="Opened electronics can be returned within 14 days."),
             TextNode(text="Perishable groceries are refunded, not returned.")]
    retriever = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=1)
    retriever.retrieve("return opened headphones")[0].node.text
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle
from llama_index.core.storage.docstore.types import BaseDocumentStore
from llama_index.core.vector_stores.types import MetadataFilters

from llama_index_ragtune.retrievers.bm25_index import (
    BM25_METHODS,
    LANGUAGE_STOPWORDS,
    BM25Index,
    BM25Tokenizer,
)
from llama_index_ragtune.retrievers.checks import (
    PositiveIntAttribute,
    check_filter_keys,
    check_nodes,
    non_negative_float,
    positive_int,
    prepare_query,
    unit_float,
)
from llama_index_ragtune.retrievers.filters import FilterMaskCache, filterable_metadata
from llama_index_ragtune.retrievers.persistence import load_snapshot, persist_dir_path

__all__ = ["BM25Retriever", "BM25Tokenizer"]

logger = logging.getLogger(__name__)


class BM25Retriever(BaseRetriever):
    """Lexical retriever: bm25s scores over node texts, filtered before the top-k cut.

    Args:
        nodes: the nodes to index (their ``get_content(metadata_mode)`` is the indexed text).
        similarity_top_k: number of nodes returned.
        filters: ``MetadataFilters`` evaluated on each node's metadata; only matching
            nodes can be returned. Settable later through :attr:`filters`.
        k1, b, method: BM25 parameters (bm25s ``method``: ``"lucene"``, ``"robertson"``,
            ``"atire"``, ``"bm25l"``, ``"bm25+"``).
        language, stopwords, token_pattern, analyzer, split_marks: see :class:`BM25Tokenizer`
            (``language="german"`` stems German and drops German stopwords: the stopwords
            follow the language unless given; ``analyzer="unicode"`` matches ``cafe``/``café``, full-width and NFD text,
            codes such as ``SKU-48213`` and parts of Chinese/Japanese/Thai sentences; the
            default ``"plain"`` lower-cases and splits only).
        metadata_mode: which metadata is indexed with the text (default: what the
            embedding model sees, ``MetadataMode.EMBED``).
        show_progress: progress bar while indexing.

    Example::

        retriever = BM25Retriever(nodes, similarity_top_k=5, k1=1.2, b=0.75)
        retriever.persist("bm25_dir")
        same = BM25Retriever.from_persist_dir("bm25_dir")
    """

    similarity_top_k = PositiveIntAttribute()

    def __init__(
        self,
        nodes: Sequence[BaseNode],
        similarity_top_k: int = 10,
        filters: MetadataFilters | None = None,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        language: str | None = "english",
        stopwords: str | Sequence[str] | None = LANGUAGE_STOPWORDS,
        token_pattern: str | None = None,
        analyzer: str = "plain",
        split_marks: bool = False,
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        show_progress: bool = False,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        _bm25: Any = None,
    ) -> None:
        nodes = check_nodes(nodes, "BM25Retriever")
        if not nodes:
            raise ValueError("BM25Retriever needs at least one node; got an empty list")
        ids = [n.node_id for n in nodes]
        self.similarity_top_k = positive_int(similarity_top_k, "similarity_top_k")
        self.k1 = non_negative_float(k1, "k1")
        self.b = unit_float(b, "b")
        if method not in BM25_METHODS:
            raise ValueError(f"unknown BM25 method {method!r}; choose one of {BM25_METHODS}")
        self.method = method
        try:
            self.metadata_mode = MetadataMode(metadata_mode)
        except ValueError as exc:
            raise ValueError(
                f"metadata_mode must be one of {[m.value for m in MetadataMode]}, got {metadata_mode!r}"
            ) from exc
        self.tokenizer = BM25Tokenizer(language, stopwords, token_pattern, analyzer, split_marks)
        self._nodes = nodes
        self._masks = FilterMaskCache(
            [filterable_metadata(n) for n in nodes], owner="BM25Retriever"
        )
        if _bm25 is None:
            from tqdm.auto import tqdm

            corpus_tokens = [
                self.tokenizer(n.get_content(metadata_mode=self.metadata_mode))
                for n in tqdm(nodes, desc="BM25 tokenize", disable=not show_progress, unit="node")
            ]
            if not any(corpus_tokens):
                raise ValueError(
                    f"none of the {len(nodes)} nodes has a term BM25 can index after lower-casing, "
                    f"stopword removal (stopwords={self.tokenizer.stopwords_spec!r}), stemming and "
                    f"the token_pattern {self.tokenizer.token_pattern!r} (e.g. node ids {ids[:3]}); "
                    f"{self.tokenizer.no_terms_hint()}"
                )
            self._index = BM25Index.build(
                None,
                self.tokenizer,
                k1=self.k1,
                b=self.b,
                method=method,
                show_progress=show_progress,
                corpus_tokens=corpus_tokens,
            )
        else:
            self._index = BM25Index(_bm25, self.tokenizer)
        self._filters: MetadataFilters | None = None
        self.filters = filters  # validated: type, operators, keys
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_defaults(
        cls,
        index: Any = None,
        nodes: Sequence[BaseNode] | None = None,
        docstore: BaseDocumentStore | None = None,
        **kwargs: Any,
    ) -> BM25Retriever:
        """Build from exactly one of ``index`` (its docstore), ``nodes`` or ``docstore``."""
        given = [
            name
            for name, value in (("index", index), ("nodes", nodes), ("docstore", docstore))
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                f"pass exactly one of index, nodes or docstore to BM25Retriever.from_defaults (got {given or 'none'})"
            )
        if index is not None:
            docstore = index.docstore
        if docstore is not None:
            nodes = list(docstore.docs.values())
        return cls(nodes=list(nodes), **kwargs)

    # ------------------------------------------------------------------ properties

    @property
    def nodes(self) -> list[BaseNode]:
        """The indexed nodes, in index order."""
        return self._nodes

    @property
    def index(self) -> BM25Index:
        """The BM25 index (bm25s) over the nodes' texts, in node order."""
        return self._index

    @property
    def filters(self) -> MetadataFilters | None:
        """Metadata filters applied to every query (``None``: all nodes allowed)."""
        return self._filters

    @filters.setter
    def filters(self, filters: MetadataFilters | None) -> None:
        self.check_filters(filters)
        self._filters = filters

    def check_filters(self, filters: MetadataFilters | None) -> None:
        """Raise what setting ``filters`` would raise (type, keys, operators, values), changing nothing."""
        if filters is not None:
            if not isinstance(filters, MetadataFilters):
                raise TypeError(
                    f"filters must be llama_index MetadataFilters, got {type(filters).__name__}"
                )
            check_filter_keys(filters, self._masks.keys, "BM25Retriever", self._masks.value_kinds)
            self._masks.mask(filters)  # unknown operators and uncomparable values fail here

    # ------------------------------------------------------------------ scoring

    def get_scores(self, query: str) -> np.ndarray:
        """BM25 score of every node for ``query`` (index order; 0 = no query term)."""
        return self._index.get_scores(query)

    def rank(
        self, query: str, top_k: int, filters: MetadataFilters | None = None
    ) -> list[tuple[int, float]]:
        """``(node position, score)`` of the ``top_k`` best nodes with a score > 0 that pass ``filters``."""
        scores = self.get_scores(query)
        allowed = None if filters is None else self._masks.mask(filters)
        return [(int(i), float(scores[i])) for i in BM25Index.top(scores, top_k, allowed)]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query_bundle = prepare_query(query_bundle)
        if query_bundle is None:
            return []
        hits = self.rank(query_bundle.query_str, self.similarity_top_k, self._filters)
        return [NodeWithScore(node=self._nodes[i], score=score) for i, score in hits]

    # ------------------------------------------------------------------ persistence

    def params(self) -> dict[str, Any]:
        return {
            "similarity_top_k": self.similarity_top_k,
            "k1": self.k1,
            "b": self.b,
            "method": self.method,
            "metadata_mode": self.metadata_mode.value,
            **self.tokenizer.config(),
        }

    def persist(self, persist_dir: str | Path, save_nodes: bool = True) -> None:
        """Write the bm25s index, the node-id order, the parameters and (optionally) the nodes.

        The folder is replaced atomically (a crash leaves the old or the new one) and its
        manifest records the SHA-256 of every file; see
        :mod:`~llama_index_ragtune.retrievers.bm25_persist`. Filters are not persisted
        (they are query-time settings).
        """
        from llama_index_ragtune.retrievers.bm25_persist import persist_bm25

        folder = persist_dir_path(persist_dir, "BM25Retriever.persist")
        persist_bm25(self, folder, save_nodes=save_nodes)

    @classmethod
    def from_persist_dir(
        cls,
        persist_dir: str | Path,
        docstore: BaseDocumentStore | None = None,
        **overrides: Any,
    ) -> BM25Retriever:
        """Load what :meth:`persist` wrote; nodes come from ``docstore`` when the folder has none.

        ``overrides``: the query-time settings ``similarity_top_k``, ``filters``,
        ``callback_manager``, ``verbose``. Raises
        :class:`~llama_index_ragtune.retrievers.PersistenceError` for a damaged or edited folder.
        """
        from llama_index_ragtune.retrievers.bm25_persist import load_bm25

        folder = persist_dir_path(persist_dir, "BM25Retriever.from_persist_dir")
        return load_snapshot(
            folder, lambda: load_bm25(cls, folder, docstore, overrides, verify=True)
        )
