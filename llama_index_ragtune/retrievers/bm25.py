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
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle
from llama_index.core.storage.docstore.types import BaseDocumentStore
from llama_index.core.vector_stores.types import MetadataFilters

from llama_index_ragtune.retrievers.checks import (
    check_filter_keys,
    check_nodes,
    clean_text,
    non_negative_float,
    positive_int,
    prepare_query,
    unit_float,
)
from llama_index_ragtune.retrievers.filters import FilterMaskCache, filterable_metadata

__all__ = ["BM25Retriever", "BM25Tokenizer"]

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
BM25_METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")


class BM25Tokenizer:
    """Lower-case, split on a regex, drop stopwords, stem (PyStemmer) — the same for documents and queries.

    Args:
        language: PyStemmer algorithm name (``"english"``), or ``None`` for no stemming.
        stopwords: ``"en"``/``"english"`` (bm25s' NLTK list), another bm25s language code,
            a list of words, or ``None`` for none.
        token_pattern: regex whose matches are the tokens.
    """

    def __init__(
        self,
        language: str | None = "english",
        stopwords: str | Sequence[str] | None = "en",
        token_pattern: str = DEFAULT_TOKEN_PATTERN,
    ) -> None:
        from bm25s.tokenization import _infer_stopwords

        if language is not None and not isinstance(language, str):
            raise TypeError(f"language must be a stemmer name or None, got {language!r}")
        word_list = isinstance(stopwords, Sequence) and all(isinstance(w, str) for w in stopwords)
        if stopwords is not None and not isinstance(stopwords, str) and not word_list:
            raise TypeError(
                "stopwords must be a language code, a list of words or None, got "
                f"{type(stopwords).__name__}"
            )
        self.language = language
        self.stopwords_spec = (
            stopwords if stopwords is None or isinstance(stopwords, str) else list(stopwords)
        )
        self.token_pattern = token_pattern
        try:
            self._stopwords = frozenset(
                _infer_stopwords(stopwords) if stopwords is not None else ()
            )
            self._findall = re.compile(token_pattern).findall
        except re.error as exc:
            raise ValueError(
                f"token_pattern {token_pattern!r} is not a valid regular expression: {exc}"
            ) from exc
        except ValueError as exc:
            raise ValueError(f"stopwords={stopwords!r}: {exc}") from exc
        self._stem = None
        if language:
            import Stemmer

            try:
                self._stem = Stemmer.Stemmer(language).stemWords
            except KeyError as exc:
                raise ValueError(
                    f"unknown stemmer language {language!r}; use one of {Stemmer.algorithms()} or None"
                ) from exc

    def __call__(self, text: str) -> list[str]:
        tokens = [t for t in self._findall(clean_text(text).lower()) if t not in self._stopwords]
        return self._stem(tokens) if self._stem is not None and tokens else tokens

    def config(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "stopwords": self.stopwords_spec,
            "token_pattern": self.token_pattern,
        }


class BM25Retriever(BaseRetriever):
    """Lexical retriever: bm25s scores over node texts, filtered before the top-k cut.

    Args:
        nodes: the nodes to index (their ``get_content(metadata_mode)`` is the indexed text).
        similarity_top_k: number of nodes returned.
        filters: ``MetadataFilters`` evaluated on each node's metadata; only matching
            nodes can be returned. Settable later through :attr:`filters`.
        k1, b, method: BM25 parameters (bm25s ``method``: ``"lucene"``, ``"robertson"``,
            ``"atire"``, ``"bm25l"``, ``"bm25+"``).
        language, stopwords, token_pattern: see :class:`BM25Tokenizer`.
        metadata_mode: which metadata is indexed with the text (default: what the
            embedding model sees, ``MetadataMode.EMBED``).
        show_progress: progress bar while indexing.

    Example::

        retriever = BM25Retriever(nodes, similarity_top_k=5, k1=1.2, b=0.75)
        retriever.persist("bm25_dir")
        same = BM25Retriever.from_persist_dir("bm25_dir")
    """

    def __init__(
        self,
        nodes: Sequence[BaseNode],
        similarity_top_k: int = 10,
        filters: MetadataFilters | None = None,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        language: str | None = "english",
        stopwords: str | Sequence[str] | None = "en",
        token_pattern: str = DEFAULT_TOKEN_PATTERN,
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        show_progress: bool = False,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        _bm25: Any = None,
    ) -> None:
        import bm25s

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
        self.tokenizer = BM25Tokenizer(language, stopwords, token_pattern)
        self._nodes = nodes
        self._masks = FilterMaskCache([filterable_metadata(n) for n in nodes])
        if _bm25 is None:
            from tqdm.auto import tqdm

            corpus_tokens = [
                self.tokenizer(n.get_content(metadata_mode=self.metadata_mode))
                for n in tqdm(nodes, desc="BM25 tokenize", disable=not show_progress, unit="node")
            ]
            if not any(corpus_tokens):
                raise ValueError(
                    f"none of the {len(nodes)} nodes has a term BM25 can index after lower-casing, "
                    f"stopword removal (stopwords={self.tokenizer.stopwords_spec!r}) and stemming "
                    f"(e.g. node ids {ids[:3]}); index nodes with text, or pass stopwords=None"
                )
            _bm25 = bm25s.BM25(k1=self.k1, b=self.b, method=method)
            _bm25.index(corpus_tokens, show_progress=show_progress)
        self._bm25 = _bm25
        self._vocab = _bm25.vocab_dict
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
    def filters(self) -> MetadataFilters | None:
        """Metadata filters applied to every query (``None``: all nodes allowed)."""
        return self._filters

    @filters.setter
    def filters(self, filters: MetadataFilters | None) -> None:
        if filters is not None:
            if not isinstance(filters, MetadataFilters):
                raise TypeError(
                    f"filters must be llama_index MetadataFilters, got {type(filters).__name__}"
                )
            check_filter_keys(filters, self._masks.keys, "BM25Retriever")
            self._masks.mask(filters)  # unknown operators fail here
        self._filters = filters

    # ------------------------------------------------------------------ scoring

    def get_scores(self, query: str) -> np.ndarray:
        """BM25 score of every node for ``query`` (index order; 0 = no query term)."""
        ids = [self._vocab[t] for t in self.tokenizer(query) if t in self._vocab]
        if not ids:
            return np.zeros(len(self._nodes), dtype=np.float32)
        return np.asarray(self._bm25.get_scores_from_ids(ids), dtype=np.float32)

    def rank(
        self, query: str, top_k: int, filters: MetadataFilters | None = None
    ) -> list[tuple[int, float]]:
        """``(node position, score)`` of the ``top_k`` best nodes with a score > 0 that pass ``filters``."""
        scores = self.get_scores(query)
        allowed = scores > 0
        if filters is not None:
            allowed &= self._masks.mask(filters)
        candidates = np.flatnonzero(allowed)
        if candidates.size > top_k:
            cand_scores = scores[candidates]
            keep = np.argpartition(-cand_scores, top_k - 1)[:top_k]
            candidates = candidates[keep]
        # best score first, ties by index order (deterministic)
        order = np.lexsort((candidates, -scores[candidates]))
        candidates = candidates[order]
        return [(int(i), float(scores[i])) for i in candidates]

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

        persist_bm25(self, Path(persist_dir), save_nodes=save_nodes)

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
        from llama_index_ragtune.retrievers.persistence import load_snapshot

        folder = Path(persist_dir)
        return load_snapshot(
            folder, lambda: load_bm25(cls, folder, docstore, overrides, verify=True)
        )
