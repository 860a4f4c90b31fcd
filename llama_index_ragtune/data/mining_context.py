"""The per-data-set lookups every negative source of ``HardNegativeMiner`` shares.

Node index, the positives of each query group (queries with the same normalised
text share them) and why a passage can never be a query's negative, whatever its
score: it is a positive, already taken, or (with ``dedupe_text``) a positive's text.
"""

from __future__ import annotations

from llama_index_ragtune.data.schema import RetrievalDataset, normalize_text


class _Context:
    """Per-dataset lookups shared by all sources: doc index, positives per query group."""

    def __init__(self, ds: RetrievalDataset, dedupe_text: bool) -> None:
        self.ds = ds
        self.doc_ids = list(ds.corpus)
        self.index = {d: i for i, d in enumerate(self.doc_ids)}
        by_text: dict[str, set[int]] = {}
        for qid, query in ds.queries.items():
            by_text.setdefault(normalize_text(query), set()).update(
                self.index[d] for d in ds.relevant_docs[qid]
            )
        self.positive_idx = {q: by_text[normalize_text(t)] for q, t in ds.queries.items()}
        self.dedupe_text = dedupe_text
        self._norm: dict[int, str] = {}
        self.positive_texts = (
            {q: {self._text(d) for d in self.positive_idx[q]} for q in ds.queries}
            if dedupe_text
            else {}
        )

    def _text(self, doc: int) -> str:
        if doc not in self._norm:
            self._norm[doc] = normalize_text(self.ds.corpus[self.doc_ids[doc]])
        return self._norm[doc]

    def exclusion(self, qid: str, doc: int, taken: set[str]) -> str | None:
        """Why ``doc`` cannot be a negative of ``qid`` regardless of score, or None."""
        if doc in self.positive_idx[qid]:
            return "positive"
        if self.doc_ids[doc] in taken:
            return "duplicate"
        if self.dedupe_text and self._text(doc) in self.positive_texts[qid]:
            return "same_text"
        return None
