"""Split a ``RetrievalDataset`` by query into train and validation sets without leakage.

Example::

    from llama_index_ragtune.data import RetrievalDataset

    train, val = RetrievalDataset.from_beir("../shared/data/scifact", "train").split(
        val_fraction=0.1, seed=0, group_by_positive=True
    )
"""

from __future__ import annotations

import logging
import random
import warnings
from typing import TYPE_CHECKING

from llama_index_ragtune.data.schema import normalize_text

if TYPE_CHECKING:
    from llama_index_ragtune.data.schema import RetrievalDataset

logger = logging.getLogger(__name__)


def split_by_query(
    dataset: RetrievalDataset,
    val_fraction: float = 0.1,
    seed: int = 0,
    group_by_positive: bool = False,
) -> tuple[RetrievalDataset, RetrievalDataset]:
    """``(train, val)`` with about ``val_fraction`` of the queries in val; see ``RetrievalDataset.split``."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(dataset) < 2:
        raise ValueError(f"cannot split a dataset with {len(dataset)} query; need at least 2")
    n_val = min(len(dataset) - 1, max(1, round(len(dataset) * val_fraction)))
    groups = query_groups(dataset) if group_by_positive else [[q] for q in dataset.queries]
    random.Random(seed).shuffle(groups)
    val: set[str] = set()
    for group in groups:
        if len(val) >= n_val:
            break
        val.update(group)
    train_ids = [q for q in dataset.queries if q not in val]
    if not train_ids:
        raise ValueError(
            "split: all queries are linked by shared positives, so no query is left "
            "for training; use group_by_positive=False"
        )
    val_ids = [q for q in dataset.queries if q in val]
    train_pos = {d for q in train_ids for d in dataset.relevant_docs[q]}
    shared = {d for q in val_ids for d in dataset.relevant_docs[q]} & train_pos
    if shared:
        msg = (
            f"split: {len(shared)} positive documents are shared by train and val queries "
            "(pass group_by_positive=True to keep such queries together)"
        )
        warnings.warn(msg, stacklevel=3)
        logger.warning(msg)
    return dataset.subset(train_ids), dataset.subset(val_ids)


def query_groups(dataset: RetrievalDataset) -> list[list[str]]:
    """Connected components of queries linked by a shared positive or identical normalised text."""
    parent = {q: q for q in dataset.queries}

    def find(q: str) -> str:
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    owner: dict[tuple[str, str], str] = {}
    for qid, query in dataset.queries.items():
        keys = [("doc", d) for d in dataset.relevant_docs[qid]]
        keys.append(("text", normalize_text(query)))
        for key in keys:
            if key in owner:
                parent[find(qid)] = find(owner[key])
            else:
                owner[key] = qid
    groups: dict[str, list[str]] = {}
    for qid in dataset.queries:
        groups.setdefault(find(qid), []).append(qid)
    return list(groups.values())
