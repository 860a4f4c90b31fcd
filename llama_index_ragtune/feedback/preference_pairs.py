"""DPO preference pairs from a ``FeedbackStore``: an upvoted answer over a downvoted one.

Pairs share the query and the sources (same node ids, same stored texts, same
order: the answers' ``[n]`` citations refer to the same numbered sources). The
prompt is the grounded prompt (``build_messages``) over the stored source texts,
cut by ``max_source_chars`` exactly as ``CitationQueryEngine(max_source_chars=...)``
cuts them; an answer text that was both upvoted and downvoted for the group is left
out. Answer texts compare after Unicode NFC and with whitespace collapsed (so
``"7 days."`` and ``"7 days. "`` are one answer); blank answers, answers
recorded as ``None`` (a stream stopped early) and answers given sources the store could
not keep (``metadata["sources_left_out"]``: their prompt cannot be rebuilt) are left out.
Each distinct answer is held as a digest and a record id while the groups are made; only
the answers of the pairs built are read again, so long answers are not all in memory.

Example::

    from llama_index_ragtune.feedback import FeedbackStore, feedback_preference_pairs

    store = FeedbackStore("feedback.sqlite", create=False)
    pairs = feedback_preference_pairs(store, split="train", max_source_chars=1500)
"""

from __future__ import annotations

import hashlib
import logging
import numbers
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.feedback.entries import check_text, show
from llama_index_ragtune.feedback.query_split import (
    Split,
    _check_split,
    _keep,
    check_keys,
    feedback_query_id,
    with_visible_questions,
)
from llama_index_ragtune.feedback.responses import SOURCES_LEFT_OUT
from llama_index_ragtune.grounding import (
    DEFAULT_REFUSAL,
    DEFAULT_SYSTEM_PROMPT,
    build_messages,
    truncate_source,
)

if TYPE_CHECKING:
    import datasets

    from llama_index_ragtune.feedback.reading import FeedbackReader

# the feedback exports' one logger: users and tests configure it by this name
logger = logging.getLogger("llama_index_ragtune.feedback.export")

MAX_UNCAPPED_PAIRS = 1_000_000
"""Preference pairs an export without ``max_pairs_per_group`` may build in all (each holds
its prompt's sources: a million rows is gigabytes)."""

PREFERENCE_COLUMNS = (
    "prompt",
    "chosen",
    "rejected",
    "qid",
    "strategy",
    "chosen_score",
    "rejected_score",
)
"""The columns of ``PreferenceBuilder``'s datasets, so both concatenate."""


def _answer_key(answer: str) -> str:
    """An answer text compared for preference pairs: NFC, whitespace runs as one space, trimmed."""
    return " ".join(unicodedata.normalize("NFC", answer).split())


def _digest(answer_key: str) -> bytes:
    """16 bytes standing for an answer text (``_answer_key``) in the comparisons."""
    return hashlib.blake2b(answer_key.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _spread_pairs(chosen: Sequence[Any], rejected: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
    """Every (chosen, rejected) pair once, made as they are read, in shifts that pair each
    chosen answer with a different rejected one: any first pairs cover the answers evenly.

    Example::

        list(_spread_pairs("ab", "xy"))   # [('a', 'x'), ('b', 'y'), ('a', 'y'), ('b', 'x')]
    """
    for shift in range(len(rejected)):
        for i, good in enumerate(chosen):
            yield good, rejected[(i + shift) % len(rejected)]


def _check_uncapped_pairs(
    groups: Mapping[Any, Mapping[int, Mapping[str, Any]]], store: Any
) -> None:
    """``ValueError`` when every (upvoted, downvoted) pair of ``groups`` (answers rated both
    ways left out) would be more than :data:`MAX_UNCAPPED_PAIRS`."""
    sizes = {}
    for (qid, _), by_rating in groups.items():
        contested = by_rating[1].keys() & by_rating[-1].keys()
        sizes[qid] = sizes.get(qid, 0) + (len(by_rating[1]) - len(contested)) * (
            len(by_rating[-1]) - len(contested)
        )
    total = sum(sizes.values())
    if total > MAX_UNCAPPED_PAIRS:
        largest = max(sizes, key=sizes.__getitem__)
        raise ValueError(
            f"the feedback in {store.path} makes {total:,} preference pairs without "
            f"max_pairs_per_group (query {largest} alone {sizes[largest]:,}: every upvoted "
            f"answer with every downvoted one), over {MAX_UNCAPPED_PAIRS:,}; pass "
            "max_pairs_per_group (e.g. 10) to keep the most varied pairs of each group"
        )


def feedback_preference_pairs(
    store: FeedbackReader,
    *,
    refusal: str = DEFAULT_REFUSAL,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    max_source_chars: int | None = None,
    max_pairs_per_group: int | None = None,
    split: Split = "all",
    eval_fraction: float = 0.2,
    seed: int = 0,
    query_metadata_keys: Sequence[str] = (),
    since: datetime | float | None = None,
    until: datetime | float | None = None,
    bundle_version: str | Sequence[str] | None = None,
) -> datasets.Dataset:
    """DPO pairs: an upvoted answer over a downvoted one, same query and same sources.

    Columns are ``PreferenceBuilder``'s (``prompt`` = system + user messages,
    ``chosen`` / ``rejected`` = one assistant message each, ``qid``,
    ``strategy="feedback"``, ``chosen_score=1.0``, ``rejected_score=0.0``), so the
    two concatenate and ``DecoderFinetuneEngine`` / TRL's ``DPOTrainer`` read them.
    ``refusal``, ``system_prompt`` and ``max_source_chars`` must be the answering
    engine's. Each (query, sources) group pairs every upvoted answer with every downvoted
    one, in shifts (the earliest answers first) so that the first ``max_pairs_per_group``
    pairs use as many different answers as they can; only those are built. Without
    ``max_pairs_per_group`` the pairs grow as a product (5,000 x 5,000 answers to one
    question: 25 million prompts), so more than :data:`MAX_UNCAPPED_PAIRS` in all is a
    ``ValueError`` naming the largest group, before any is built. No pair gives
    an empty dataset with these columns. A group whose stored source texts are gone (rows
    deleted by hand) is left out with a logged warning: its prompt cannot be rebuilt.

    Example::

        pairs = store.to_preference_pairs(max_source_chars=1500, split="train")
        pairs[0]["chosen"][0]["content"], pairs[0]["rejected"][0]["content"]
    """
    _check_split(split, eval_fraction, seed)
    check_text(refusal, "refusal")
    check_text(system_prompt, "system_prompt")
    if max_source_chars is not None and (
        isinstance(max_source_chars, bool)
        or not isinstance(max_source_chars, numbers.Integral)
        or max_source_chars < 1
    ):
        raise ValueError(
            f"max_source_chars must be a positive integer or None, got {show(max_source_chars)}"
        )
    if max_pairs_per_group is not None and (
        isinstance(max_pairs_per_group, bool)
        or not isinstance(max_pairs_per_group, numbers.Integral)
        or max_pairs_per_group < 1
    ):
        raise ValueError(
            f"max_pairs_per_group must be a positive integer or None, got {max_pairs_per_group!r}"
        )
    keys = check_keys(query_metadata_keys)
    # each distinct answer once, as (digest of its text: id of its first record): its text
    # is read again for the pairs built, so 10 MB answers are not all held at once
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], dict[int, dict[bytes, str]]] = {}
    unrebuildable: list[str] = []  # the first five ids
    left_out = 0
    rows: list[dict[str, Any]] = []
    with store.snapshot() as view:  # records and texts of one moment (writers go on)
        selected = view.records(since=since, until=until, bundle_version=bundle_version)
        for record in with_visible_questions(selected, store):
            if record.rating is None or record.answer is None:
                continue
            if record.metadata.get(SOURCES_LEFT_OUT):  # the prompt it answered is not stored
                left_out += 1
                if len(unrebuildable) < 5:
                    unrebuildable.append(record.id)
                continue
            answer = _answer_key(record.answer)
            if not answer:  # a blank answer teaches nothing, chosen or rejected
                continue
            qid = feedback_query_id(record.query, record.metadata, keys)
            if not _keep(qid, split, eval_fraction, seed):
                continue
            sources = tuple((s.node_id, s.text_hash) for s in record.retrieved)
            by_rating = groups.setdefault((qid, sources), {1: {}, -1: {}})
            by_rating[record.rating].setdefault(_digest(answer), record.id)
        if left_out:
            logger.warning(
                "feedback preference pairs: %d rated answer(s) left out (%s%s): the engine gave "
                "them sources the store could not keep (metadata %r), so their prompts cannot "
                "be rebuilt",
                left_out,
                ", ".join(repr(i) for i in unrebuildable),
                " ..." if left_out > len(unrebuildable) else "",
                SOURCES_LEFT_OUT,
            )
        if max_pairs_per_group is None:
            _check_uncapped_pairs(groups, store)
        needed = {key for (_, sources), g in groups.items() if g[1] and g[-1] for key in sources}
        texts = view.node_texts(needed)
        for (qid, sources), by_rating in groups.items():
            lost = [key for key in sources if key not in texts]
            if lost and by_rating[1] and by_rating[-1]:
                # the file lost a source text its answers were given (rows deleted by hand)
                logger.warning(
                    "feedback preference pairs: query %s left out: the store %s has no text "
                    "for its source(s) %s, so its prompt cannot be rebuilt",
                    qid,
                    store.path,
                    ", ".join(f"{node_id!r} (text hash {h})" for node_id, h in lost[:5]),
                )
                continue
            contested = by_rating[1].keys() & by_rating[-1].keys()
            chosen = [rid for key, rid in by_rating[1].items() if key not in contested]
            rejected = [rid for key, rid in by_rating[-1].items() if key not in contested]
            if not chosen or not rejected:
                continue
            source_texts = [truncate_source(texts[key], max_source_chars) for key in sources]
            answers: dict[str, Any] = {}  # this group's records, each read once
            for good_id, bad_id in islice(_spread_pairs(chosen, rejected), max_pairs_per_group):
                good = answers.get(good_id) or answers.setdefault(good_id, view.get(good_id))
                bad = answers.get(bad_id) or answers.setdefault(bad_id, view.get(bad_id))
                messages = build_messages(
                    good.query, source_texts, refusal=refusal, system_prompt=system_prompt
                )
                rows.append(
                    {
                        "prompt": [
                            {"role": m.role.value, "content": m.content or ""} for m in messages
                        ],
                        "chosen": [{"role": "assistant", "content": good.answer}],
                        "rejected": [{"role": "assistant", "content": bad.answer}],
                        "qid": qid,
                        "strategy": "feedback",
                        "chosen_score": 1.0,
                        "rejected_score": 0.0,
                    }
                )
    import datasets

    return datasets.Dataset.from_dict({k: [row[k] for row in rows] for k in PREFERENCE_COLUMNS})
