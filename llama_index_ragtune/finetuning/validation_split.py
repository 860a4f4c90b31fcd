"""How many questions an engine holds out for validation, and which: whole questions, seeded.

Example::

    from llama_index_ragtune.finetuning.validation_split import validation_size

    validation_size(1000, val_fraction=0.1, max_val=200)      # 100
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.data.errors import DataError
from llama_index_ragtune.data.records import twin_key
from llama_index_ragtune.data.splitting import held_out_twins, twin_groups

if TYPE_CHECKING:
    from llama_index_ragtune.data.schema import RetrievalDataset

# the engines' one logger: users and tests configure it by this name
logger = logging.getLogger("llama_index_ragtune.finetuning.base")

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_MAX_VAL_QUERIES = 200
MIN_VAL_QUERIES = 50
PLURALS = {"query": "queries"}


def validation_size(n_queries: int, val_fraction: float, max_val: int) -> int:
    """How many of ``n_queries`` go to validation: ``val_fraction`` of them, at least
    ``min(50, n / 4)`` (decisions on a handful of queries are noise), at most ``max_val``."""
    if n_queries < 2:
        return 0
    wanted = max(round(n_queries * val_fraction), min(MIN_VAL_QUERIES, n_queries // 4), 1)
    return max(1, min(wanted, max_val, n_queries - 1))


def warn_no_validation(owner: str, n_questions: int, what: str = "query") -> None:
    """Log why no validation split could be carved: one training question, or all twins.

    Without one the tuned model cannot be checked and the starting model is kept; the
    warning says so and names the way out (``val_dataset=``), for every engine alike.

    Example::

        warn_no_validation("DecoderFinetuneEngine", 1, what="question")
    """
    logger.warning(
        "%s: no validation split: %s, so none can be held out and the tuned model cannot be "
        "checked (the starting model is kept); pass val_dataset=",
        owner,
        f"there is one training {what}"
        if n_questions < 2
        else f"all {n_questions} training {PLURALS.get(what, what + 's')} are the same question",
    )


def validation_questions_in_training(
    train_questions: Sequence[str], val_questions: Iterable[str]
) -> list[int]:
    """Positions of the ``train_questions`` that are also questions of a given validation set,
    up to case, spacing, punctuation and invisible characters (``records.twin_key``).

    Example::

        validation_questions_in_training(["Q1?", "q2"], ["q1"])   # [0]
    """
    held = {twin_key(q) for q in val_questions} - {""}
    return [i for i, q in enumerate(train_questions) if twin_key(q) in held]


def warn_validation_questions_trained(
    owner: str, train_questions: Sequence[str], val_questions: Iterable[str]
) -> int:
    """Warn when the training questions include questions of the given validation set; return
    how many. Validation decides promotion: scored on questions the model trained on, a
    model that only memorised them passes. The rows are kept (validating on the training
    set is a choice some make on purpose); ``ragtune train --val-dataset`` leaves them out
    of training instead (``commands.training_data``).

    Example::

        warn_validation_questions_trained("EncoderFinetuneEngine", ["q1", "q2"], ["Q1?"])  # 1
    """
    shared = validation_questions_in_training(train_questions, val_questions)
    if shared:
        logger.warning(
            "%s: %d of the %d training questions are also validation questions (the same "
            "text up to case, spacing and punctuation; e.g. %s): validation scores questions "
            "the model trained on, so a model that memorised them can pass promotion; pass a "
            "validation set of other questions",
            owner,
            len(shared),
            len(train_questions),
            ", ".join(repr(train_questions[i][:60]) for i in shared[:3]),
        )
    return len(shared)


def leave_out_validation_questions(
    train: RetrievalDataset, val: RetrievalDataset | None, name: str = "--val-dataset"
) -> RetrievalDataset:
    """``train`` without the questions of the validation set ``val`` (called ``name`` in the
    messages), with a warning naming how many; every training question a validation one:
    ``DataError``. What ``ragtune train encoder/reranker --val-dataset`` trains on.

    Example::

        train = leave_out_validation_questions(train, RetrievalDataset.load_json("val.json"))
    """
    if val is None:
        return train
    ids = list(train.query_ids)
    shared = validation_questions_in_training([train.queries[q] for q in ids], val.queries.values())
    if not shared:
        return train
    if len(shared) == len(ids):
        raise DataError(
            f"every one of the {len(ids)} training questions is also a {name} question "
            "(the same text up to case, spacing and punctuation)",
            hint=f"pass a validation set of other questions, or leave out {name} (then "
            "some of the training questions are held out for validation)",
        )
    left_out = {ids[i] for i in shared}
    logger.warning(
        "%d of the %d training questions are also %s questions (e.g. %s): left out of "
        "training, so validation scores questions the model has not trained on",
        len(left_out),
        len(ids),
        name,
        ", ".join(repr(ids[i]) for i in shared[:3]),
    )
    return train.subset([q for q in ids if q not in left_out])


def warn_validation_rows_trained(owner: Any, train: Any, val: Any) -> None:
    """``warn_validation_questions_trained`` for rows (``datasets.Dataset``), their questions
    read by ``preference_holdout.row_question_keys``; ``owner``: the engine.

    Example::

        warn_validation_rows_trained(engine, engine.train_dataset, val_rows)
    """
    from llama_index_ragtune.finetuning.preference_holdout import row_question_keys

    warn_validation_questions_trained(
        type(owner).__name__, row_question_keys(train), row_question_keys(val)
    )


def split_rows_by_question(
    data: Any, val_fraction: float, max_val: int, seed: int, owner: str | None = None
) -> tuple[Any, Any | None]:
    """``(train, val)`` rows of a ``datasets.Dataset``, whole questions (its ``qid`` column, else
    each row) held out: ``validation_size`` of them, seeded; ``val`` is ``None`` when none are
    (with ``val_fraction > 0``: a warning naming ``owner`` says why, ``warn_no_validation``).

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
        if val_fraction:
            warn_no_validation(owner or "validation split", len(text_of), what="question")
        return data, None
    held = held_out_twins(text_of, n_val, seed)
    val_idx = [i for i, k in enumerate(keys) if k in held]
    train_idx = [i for i, k in enumerate(keys) if k not in held]
    logger.info("validation: %d of %d questions held out", n_val, n_groups)
    return data.select(train_idx), data.select(val_idx)
