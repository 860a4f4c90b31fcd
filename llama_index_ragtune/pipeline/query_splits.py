"""Train / test and dev splits of labelled questions that keep twins on one side.

Twins are questions with the same text up to case, spacing and punctuation
(``data.records.twin_key``): none is tested (or chosen a threshold on) while its twin
is trained on.

Example::

    from llama_index_ragtune.pipeline import LabelledQuery, split_queries
    from llama_index_ragtune.pipeline.query_splits import carve_dev

    queries = [LabelledQuery(id=f"q{i}", question=f"question {i}?", gold_node_ids=["a#1"])
               for i in range(10)]
    train, test = split_queries(queries, test_fraction=0.2, seed=0)
    len(train), len(test)                  # (8, 2)
    rest, dev = carve_dev(train, fraction=0.25, seed=0)
    len(rest), len(dev)                    # (6, 2)
"""

from __future__ import annotations

import numbers
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.records import twin_key
from llama_index_ragtune.pipeline.labelled_query import LabelledQuery


def split_queries(
    queries: Sequence[LabelledQuery], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
    """``(train, test)``: the queries' own splits, else a seeded split by question text.

    Questions with the same normalised text (up to case, spacing and punctuation; asked
    under different filters, answerable or not) stay on one side, so none is tested on
    a twin it was trained on: a question without a split goes to the side of a twin
    that has one (to test when its twins were given both). Groups with an answerable
    question and groups without are split separately, so both sides get some of each.
    Queries without a split among queries with one are assigned the same way.

    Example::

        train, test = split_queries(queries, test_fraction=0.25, seed=0)
    """
    _check_fraction("test_fraction", test_fraction)
    # by position, not id: two questions sharing an id (a list built by hand) keep their own
    # given splits
    assigned: dict[int, str] = {n: q.split for n, q in enumerate(queries) if q.split is not None}
    given: dict[str, set[str]] = {}
    for n in assigned:
        given.setdefault(twin_key(queries[n].question), set()).add(str(assigned[n]))
    by_text: dict[str, list[int]] = {}
    for n, q in enumerate(queries):
        if q.split is None:
            by_text.setdefault(twin_key(q.question), []).append(n)
    groups: dict[tuple[bool, str], list[int]] = {}
    for text, group in by_text.items():
        if text in given:  # follows its twins' split
            side = "test" if "test" in given[text] else "train"
            assigned.update((n, side) for n in group)
        else:
            groups[(any(queries[n].answerable for n in group), text)] = group
    rng = random.Random(seed)
    for answerable in (True, False):
        keys = sorted(k for k in groups if k[0] is answerable)
        rng.shuffle(keys)
        n_test = round(len(keys) * test_fraction)
        if test_fraction > 0 and n_test == 0 and len(keys) > 1:
            n_test = 1
        for i, key in enumerate(keys):
            for n in groups[key]:
                assigned[n] = "test" if i < n_test else "train"
    done = [replace(q, split=assigned[n]) for n, q in enumerate(queries)]
    return [q for q in done if q.split == "train"], [q for q in done if q.split == "test"]


def _check_fraction(name: str, fraction: float) -> None:
    """``TypeError`` / ``ValueError`` naming ``name`` unless ``fraction`` is a number in
    [0, 1] (NaN failed deep inside ``round``; a negative one silently tested nothing)."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
        raise TypeError(f"{name} must be a number between 0 and 1, got {fraction!r}")
    if not 0 <= fraction <= 1:  # also False for NaN
        raise ValueError(f"{name} must be between 0 and 1, got {fraction!r}")


def split_with_test(
    queries: Sequence[LabelledQuery],
    test_fraction: float = 0.2,
    seed: int = 0,
    path: str | Path | None = None,
) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
    """:func:`split_queries`, or a ``DataError`` (naming ``path``, the questions' file)
    when no question is left to test on."""
    train, test = split_queries(queries, test_fraction, seed)
    if not test:
        raise DataError(
            f"no test question: all {len(queries)} questions went to training",
            path=path,
            hint='mark some with "split": "test" or raise test_fraction',
        )
    return train, test


def carve_dev(
    train: Sequence[LabelledQuery], fraction: float, seed: int = 0
) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
    """``(rest, dev)``: training questions kept out of the decoder's training to choose the
    refusal threshold on, drawn per class (answerable / unanswerable) with ``seed``.

    Twins (the same normalised text, as in :func:`split_queries`) are drawn together, so
    the threshold is never chosen on a question the decoder was trained on.

    Example::

        rest, dev = carve_dev(train, fraction=0.2, seed=0)
    """
    _check_fraction("fraction", fraction)
    rng = random.Random(f"dev:{seed}")
    twins: dict[str, list[LabelledQuery]] = {}
    for q in train:
        twins.setdefault(twin_key(q.question), []).append(q)
    dev_ids: set[str] = set()
    for answerable in (True, False):
        groups = sorted(
            sorted(q.id for q in group)
            for group in twins.values()
            if any(q.answerable for q in group) is answerable
        )
        rng.shuffle(groups)
        wanted = round(sum(map(len, groups)) * fraction)
        for group in groups:
            if wanted <= 0:
                break
            dev_ids.update(group)
            wanted -= len(group)
    return [q for q in train if q.id not in dev_ids], [q for q in train if q.id in dev_ids]
