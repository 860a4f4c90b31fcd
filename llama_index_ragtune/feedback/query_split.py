"""Which query a feedback record belongs to, and which side of the held-out split it is on.

Queries merge by normalised text (``data.schema.normalize_text``: case,
punctuation and spacing ignored), optionally kept apart by record metadata
(``query_metadata_keys=("store",)``). A query is on the evaluation side when a
hash of ``(seed, query id)`` falls below ``eval_fraction``, so the same query
always lands on the same side, however much feedback arrives later.

Example::

    from llama_index_ragtune.feedback.query_split import feedback_query_id, is_eval_query

    qid = feedback_query_id("Apple return policy?", {"store": "grocery"}, ("store",))
    print(qid, is_eval_query(qid, eval_fraction=0.2))
"""

from __future__ import annotations

import hashlib
import json
import logging
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from llama_index_ragtune._invisible import is_blank
from llama_index_ragtune.data.schema import stable_query_id
from llama_index_ragtune.feedback.entries import check_text, show

if TYPE_CHECKING:
    from llama_index_ragtune.feedback.records import FeedbackRecord

# the feedback exports' one logger: users and tests configure it by this name
logger = logging.getLogger("llama_index_ragtune.feedback.export")

Split = Literal["all", "train", "eval"]


def feedback_query_id(query: str, metadata: Mapping[str, Any], keys: Sequence[str] = ()) -> str:
    """The query id of a record: ``stable_query_id(query)``, plus a suffix for ``keys``' metadata values.

    Example::

        feedback_query_id("Apple return policy?", {"store": "grocery"}, ("store",))
    """
    qid = stable_query_id(query)
    if not keys:
        return qid
    values = json.dumps([metadata.get(k) for k in keys], sort_keys=True, default=str)
    return f"{qid}-{hashlib.sha1(values.encode()).hexdigest()[:8]}"


def with_visible_questions(
    records: Iterable[FeedbackRecord], store: Any
) -> Iterator[FeedbackRecord]:
    """``records`` whose question has a visible character; the others (only invisible,
    control or space characters, stored before ``record`` refused them, or by another
    tool) are left out of the export, with one logged warning naming them.

    Example::

        with store.snapshot() as view:
            questions = [r.query for r in with_visible_questions(view.records(), view)]
    """
    blank: list[str] = []  # the first five ids
    left_out = 0
    for record in records:
        if is_blank(record.query):
            left_out += 1
            if len(blank) < 5:
                blank.append(record.id)
            continue
        yield record
    if left_out:
        logger.warning(
            "feedback export: %d record(s) of %s left out: their question has no visible "
            "character (nothing to learn from): %s; delete them with SQL (DELETE FROM records "
            "WHERE id = ...)",
            left_out,
            store.path,
            ", ".join(repr(i) for i in blank) + (" ..." if left_out > len(blank) else ""),
        )


def is_eval_query(qid: str, eval_fraction: float, seed: int = 0) -> bool:
    """True when query ``qid`` belongs to the held-out evaluation side (stable per seed).

    Example::

        is_eval_query("q-1a2b", 0.2)        # the same answer on every export
    """
    digest = hashlib.sha256(f"{seed}:{qid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


def _check_split(split: str, eval_fraction: float, seed: int = 0) -> None:
    if not isinstance(split, str) or split not in ("all", "train", "eval"):
        raise ValueError(f"split must be 'all', 'train' or 'eval', got {show(split)}")
    if (
        isinstance(eval_fraction, bool)
        or not isinstance(eval_fraction, numbers.Real)
        or not 0.0 <= eval_fraction <= 1.0
    ):
        raise ValueError(
            f"eval_fraction must be a number between 0 and 1, got {show(eval_fraction)}"
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {show(seed)}")


def check_keys(keys: Any, name: str = "query_metadata_keys") -> tuple[str, ...]:
    """``keys`` as a tuple of metadata key names (raises naming the argument ``name``)."""
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
        raise TypeError(
            f"{name} must be a list of metadata key names, got {show(keys)}; "
            'write ("store",) for one key'
        )
    keys = tuple(keys)
    for i, key in enumerate(keys):
        check_text(key, f"{name}[{i}]")
    return keys


def _keep(qid: str, split: str, eval_fraction: float, seed: int) -> bool:
    return split == "all" or is_eval_query(qid, eval_fraction, seed) == (split == "eval")
