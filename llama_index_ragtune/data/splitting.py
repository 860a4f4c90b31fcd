"""Split a ``RetrievalDataset`` by query into train and validation sets without leakage.

Example::

    from llama_index_ragtune.data import RetrievalDataset

    train, val = RetrievalDataset.from_beir("../shared/data/scifact", "train").split(
        val_fraction=0.1, seed=0, group_by_positive=True
    )
"""

from __future__ import annotations

import logging
import numbers
import random
import warnings
from collections.abc import Mapping, Sequence

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.records import twin_key
from llama_index_ragtune.data.validation import fmt_ids

logger = logging.getLogger(__name__)


def split_query_ids(
    queries: Mapping[str, str],
    relevant_docs: Mapping[str, Sequence[str]],
    val_fraction: float = 0.1,
    seed: int = 0,
    group_by_positive: bool = False,
) -> tuple[list[str], list[str]]:
    """``(train ids, val ids)`` with about ``val_fraction`` of the queries in val.

    Twins (the same question under two ids, up to case, spacing, punctuation and
    invisible characters) always go to the same side; ``group_by_positive`` also keeps
    queries that share a positive together.

    The body of ``RetrievalDataset.split`` (which returns the two datasets).

    Example::

        train_ids, val_ids = split_query_ids(ds.queries, ds.relevant_docs, val_fraction=0.2)
    """
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, (int, float))
        or not 0.0 < val_fraction < 1.0
    ):
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    seed = check_seed(seed)
    if len(queries) < 2:
        raise ValueError(f"cannot split a dataset with {len(queries)} query; need at least 2")
    n_val = min(len(queries) - 1, max(1, round(len(queries) * val_fraction)))
    groups = query_groups(queries, relevant_docs) if group_by_positive else twin_groups(queries)
    random.Random(seed).shuffle(groups)
    val: set[str] = set()
    for group in groups:
        if len(val) >= n_val:
            break
        val.update(group)
    train_ids = [q for q in queries if q not in val]
    if not train_ids:
        raise DataError(
            f"split: all {len(queries)} queries "
            + (
                "are linked by shared positives or the same question, so no query is left "
                "for training; use group_by_positive=False, or split by hand "
                "(dataset.subset(ids))"
                if group_by_positive
                else "are the same question (up to case, spacing and punctuation) under "
                f"different ids ({fmt_ids(queries)}), so any split would put the same "
                "question on both sides; add different questions, or train without a "
                "validation split"
            )
        )
    val_ids = [q for q in queries if q in val]
    train_pos = {d for q in train_ids for d in relevant_docs[q]}
    shared = {d for q in val_ids for d in relevant_docs[q]} & train_pos
    if shared:
        msg = (
            f"split: {len(shared)} positive documents are shared by train and val queries "
            "(pass group_by_positive=True to keep such queries together)"
        )
        warnings.warn(msg, stacklevel=3)
        logger.warning(msg)
    return train_ids, val_ids


def check_seed(seed: object) -> int:
    """``seed`` as an ``int`` (a NumPy integer too); a ``TypeError`` unless it is a whole
    number: ``None`` drew another split on each
    call, ``"1"`` another split than ``1`` (a seed read from a config file as text), and
    ``1.5`` was hashed like any object.

    Example::

        check_seed(0), check_seed(numpy.int64(3))   # (0, 3); check_seed(None): TypeError
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"seed must be a whole number (the same seed gives the same split), got "
            f"{type(seed).__name__} {seed!r}"
            + ("; None would draw another split on every run" if seed is None else "")
        )
    return int(seed)


def query_groups(
    queries: Mapping[str, str], relevant_docs: Mapping[str, Sequence[str]]
) -> list[list[str]]:
    """Connected components of queries linked by a shared positive or the same question
    (``records.twin_key``)."""
    parent = {q: q for q in queries}

    def find(q: str) -> str:
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    owner: dict[tuple[str, str], str] = {}
    for qid, query in queries.items():
        keys = [("doc", d) for d in relevant_docs[qid]]
        keys.append(("text", twin_key(query)))
        for key in keys:
            if key in owner:
                parent[find(qid)] = find(owner[key])
            else:
                owner[key] = qid
    groups: dict[str, list[str]] = {}
    for qid in queries:
        groups.setdefault(find(qid), []).append(qid)
    return list(groups.values())


def twin_groups(text_of: Mapping[str, str]) -> list[list[str]]:
    """The ids of ``text_of`` (id -> question) grouped by question up to case, spacing,
    punctuation and invisible characters (``records.twin_key``), in first-seen order:
    what a split by question must keep on one side.

    Example::

        twin_groups({"q1": "What is X?", "q2": "y?", "q3": "what is\u200b x"})
        # [['q1', 'q3'], ['q2']]
    """
    groups: dict[str, list[str]] = {}
    for qid, text in text_of.items():
        groups.setdefault(twin_key(text), []).append(qid)
    return list(groups.values())


def held_out_twins(text_of: Mapping[str, str], n_groups: int, seed: int) -> set[str]:
    """The ids of ``n_groups`` question groups (:func:`twin_groups`) drawn with ``seed``;
    without twins, the same ids as ``random.Random(seed).sample(list(text_of), n_groups)``.

    Example::

        held_out_twins({"q1": "What is X?", "q2": "y?", "q3": "what is x"}, 1, seed=0)
    """
    seed = check_seed(seed)
    groups = twin_groups(text_of)
    if isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 0:
        raise ValueError(f"n_groups must be a whole number >= 0, got {n_groups!r}")
    if n_groups > len(groups):
        raise ValueError(
            f"cannot hold out {n_groups} question groups: the {len(text_of)} questions make "
            f"only {len(groups)} (twins, the same question under several ids, are one group)"
        )
    picked = random.Random(seed).sample(range(len(groups)), n_groups)
    return {qid for i in picked for qid in groups[i]}
