"""How many questions an engine holds out for validation, and which: whole questions, seeded.

Example::

    from llama_index_ragtune.finetuning.validation_split import validation_size

    validation_size(1000, val_fraction=0.1, max_val=200)      # 100
"""

from __future__ import annotations

import logging
from typing import Any

from llama_index_ragtune.data.splitting import held_out_twins, twin_groups

# the engines' one logger: users and tests configure it by this name
logger = logging.getLogger("llama_index_ragtune.finetuning.base")

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_MAX_VAL_QUERIES = 200
MIN_VAL_QUERIES = 50


def validation_size(n_queries: int, val_fraction: float, max_val: int) -> int:
    """How many of ``n_queries`` go to validation: ``val_fraction`` of them, at least
    ``min(50, n / 4)`` (decisions on a handful of queries are noise), at most ``max_val``."""
    if n_queries < 2:
        return 0
    wanted = max(round(n_queries * val_fraction), min(MIN_VAL_QUERIES, n_queries // 4), 1)
    return max(1, min(wanted, max_val, n_queries - 1))


def split_rows_by_question(
    data: Any, val_fraction: float, max_val: int, seed: int
) -> tuple[Any, Any | None]:
    """``(train, val)`` rows of a ``datasets.Dataset``, whole questions (its ``qid`` column, else
    each row) held out: ``validation_size`` of them, seeded; ``val`` is ``None`` when none are.

    Example::

        train, val = split_rows_by_question(rows, 0.1, 200, seed=0)
    """
    keys = [str(k) for k in (data["qid"] if "qid" in data.column_names else range(len(data)))]
    texts = data["question"] if "question" in data.column_names else keys
    # twins (the same question under two qids) stay together
    text_of = dict(zip(keys, texts, strict=True))
    n_groups = len(twin_groups(text_of))
    n_val = validation_size(n_groups, val_fraction, max_val)
    if val_fraction == 0 or n_val == 0:
        return data, None
    held = held_out_twins(text_of, n_val, seed)
    val_idx = [i for i, k in enumerate(keys) if k in held]
    train_idx = [i for i, k in enumerate(keys) if k not in held]
    logger.info("validation: %d of %d questions held out", n_val, n_groups)
    return data.select(train_idx), data.select(val_idx)
