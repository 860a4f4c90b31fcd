"""The training rows of a ``RetrievalDataset``: pairs, triplets and cross-encoder rows.

What the engines (and sentence-transformers) train on, built from a dataset's queries,
positives and negatives. ``RetrievalDataset`` has these methods through
``TrainingRowsMixin``; this module holds them so ``data.schema`` keeps the data set itself.

Example::

    from llama_index_ragtune.data import RetrievalDataset

    ds = RetrievalDataset({"q1": "apple returns?"}, {"d1": "Apples: 7 days.", "d2": "TVs."},
                          {"q1": ["d1"]}).with_negatives({"q1": ["d2"]})
    ds.to_triplets()   # [{'anchor': 'apple returns?', 'positive': 'Apples: 7 days.', 'negative': 'TVs.'}]
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from llama_index_ragtune.data.validation import fmt_ids as _fmt_ids


class TrainingRowsMixin:
    """``to_pairs``, ``to_triplets`` and ``to_cross_encoder_rows`` of ``RetrievalDataset``
    (which provides ``corpus`` and iterates ``(qid, query, positives, negatives)``)."""

    corpus: dict[str, str]

    def to_pairs(self) -> list[dict[str, str]]:
        """One ``{"anchor", "positive"}`` row per (query, positive) pair."""
        return [
            {"anchor": query, "positive": self.corpus[pos]}
            for _, query, positives, _ in self
            for pos in positives
        ]

    def to_triplets(
        self, max_negatives_per_query: int = 1, on_missing: Literal["skip", "error"] = "skip"
    ) -> list[dict[str, str]]:
        """Rows for sentence-transformers: ``{"anchor", "positive", "negative"}``.

        One row per (query, positive) pair. With ``max_negatives_per_query=n > 1`` the
        negative columns are ``negative_1 ... negative_n`` (the multi-negative layout
        of ``MultipleNegativesRankingLoss``). Negatives are handed out round-robin, so
        the pairs of one query use different negatives; a query with fewer than ``n``
        negatives reuses them. Queries without negatives are skipped with a warning
        (``on_missing="error"`` raises instead).
        """
        if max_negatives_per_query < 1:
            raise ValueError(f"max_negatives_per_query must be >= 1, got {max_negatives_per_query}")
        n = max_negatives_per_query
        columns = ["negative"] if n == 1 else [f"negative_{i + 1}" for i in range(n)]
        rows: list[dict[str, str]] = []
        missing: list[str] = []
        for qid, query, positives, negatives in self:
            if not negatives:
                missing.append(qid)
                continue
            cursor = 0
            for pos in positives:
                row = {"anchor": query, "positive": self.corpus[pos]}
                for col in columns:
                    row[col] = self.corpus[negatives[cursor % len(negatives)].doc_id]
                    cursor += 1
                rows.append(row)
        if missing:
            msg = f"to_triplets: {len(missing)} queries have no negatives: {_fmt_ids(missing)}"
            if on_missing == "error":
                raise ValueError(msg + "; mine some with HardNegativeMiner")
            warnings.warn(msg + " (skipped)", stacklevel=2)
        return rows

    def to_cross_encoder_rows(self, num_negatives: int | None = None) -> list[dict[str, Any]]:
        """``{"query", "passage", "label"}`` rows: 1.0 for every positive, 0.0 for up to
        ``num_negatives`` negatives per query (all of them when ``None``)."""
        rows: list[dict[str, Any]] = []
        for _, query, positives, negatives in self:
            rows.extend(
                {"query": query, "passage": self.corpus[p], "label": 1.0} for p in positives
            )
            chosen = negatives if num_negatives is None else negatives[:num_negatives]
            rows.extend(
                {"query": query, "passage": self.corpus[n.doc_id], "label": 0.0} for n in chosen
            )
        return rows
