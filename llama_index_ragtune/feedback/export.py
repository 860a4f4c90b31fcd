"""Training and evaluation data from a ``FeedbackStore``: retrieval sets and DPO pairs.

Queries merge by normalised text (``data.schema.normalize_text``: case,
punctuation and spacing ignored), optionally kept apart by record metadata
(``query_metadata_keys=("store",)`` when the app filters by store). The query id
is ``stable_query_id(text)`` (the id ``RetrievalDataset.from_pairs`` gives the
same text), with a suffix per metadata value when keys are given.

Labels (rules "feedback-v1"), per record, then merged per query:

- **positive**: a node cited by an upvoted answer; a citation the user opened
  (clicked) on an answer that was not downvoted;
- **negative** (``Negative(source="feedback")``): on a downvoted answer, every
  source that was neither cited nor clicked; on an upvoted refusal (the user
  agrees the sources lack the answer), every source not clicked. ``score`` is the
  retriever's score, ``rank`` the 1-based rank among that answer's rejected sources;
- **neither**: nodes cited by a downvoted answer (the answer may be wrong for
  another reason than its source), clicks on a downvoted answer (the user may
  have opened a citation to check it), unclicked sources of unrated answers
  (cited or not);
- a node that is a positive of a query is never its negative (positive wins);
  a query without any positive is left out (counted in the dataset's
  ``metadata["queries_without_positive"]``).

Held-out split: a query is on the evaluation side when a hash of
``(seed, query id)`` falls below ``eval_fraction``, so the same query always
lands on the same side, however much feedback arrives later, and never leaks
into training (``split="train"`` / ``split="eval"``).

Preference pairs: an upvoted answer over a downvoted one for the same query
and the same sources (same node ids, same stored texts, same order: the
answers' ``[n]`` citations refer to the same numbered sources). The prompt is
the grounded prompt (``build_messages``) over the stored source texts, cut by
``max_source_chars`` exactly as ``CitationQueryEngine(max_source_chars=...)`` cuts
them; an answer text that was both upvoted and downvoted for the group is left
out. Answer texts compare after Unicode NFC and with whitespace collapsed (so
``"7 days."`` and ``"7 days. "`` are one answer); blank answers and answers
recorded as ``None`` (a stream stopped early) are left out.

Example::

    from llama_index_ragtune.feedback import FeedbackStore

    store = FeedbackStore("feedback.sqlite", create=False)
    eval_set = store.to_evaluation_set(eval_fraction=0.2)          # fixed held-out queries
    train = store.to_retrieval_dataset(split="train", corpus=nodes)
    pairs = store.to_preference_pairs(split="train", max_source_chars=1500)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal

from llama_index_ragtune.data.schema import Negative, RetrievalDataset, stable_query_id
from llama_index_ragtune.feedback.entries import check_text, show
from llama_index_ragtune.feedback.records import FeedbackRecord
from llama_index_ragtune.grounding import (
    DEFAULT_REFUSAL,
    DEFAULT_SYSTEM_PROMPT,
    build_messages,
    truncate_source,
)

if TYPE_CHECKING:
    import datasets
    from llama_index.core.schema import BaseNode

    from llama_index_ragtune.feedback.reading import FeedbackReader

__all__ = [
    "LABEL_RULES",
    "PREFERENCE_COLUMNS",
    "feedback_evaluation_set",
    "feedback_preference_pairs",
    "feedback_query_id",
    "feedback_retrieval_dataset",
    "is_eval_query",
]

logger = logging.getLogger(__name__)

LABEL_RULES = "feedback-v1"
MAX_UNCAPPED_PAIRS = 1_000_000
"""Preference pairs an export without ``max_pairs_per_group`` may build in all (each holds
its prompt's sources: a million rows is gigabytes)."""
"""Name of the labelling rules above; written to every exported dataset's metadata."""

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


def is_eval_query(qid: str, eval_fraction: float, seed: int = 0) -> bool:
    """True when query ``qid`` belongs to the held-out evaluation side (stable per seed).

    Example::

        is_eval_query("q-1a2b", 0.2)        # the same answer on every export
    """
    digest = hashlib.sha256(f"{seed}:{qid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


@dataclass
class _Query:
    """One question's labels, each node once (in the order first seen), so a question
    asked 100,000 times holds no more than its distinct nodes."""

    text: str
    positives: dict[str, None] = field(default_factory=dict)
    rejected: dict[str, Negative] = field(default_factory=dict)  # the first per node id
    records: int = 0


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


def _filters(since: Any, until: Any, bundle_version: Any) -> dict[str, Any]:
    def show(value: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime) else value

    return {
        "since": show(since),
        "until": show(until),
        "bundle_version": bundle_version
        if bundle_version is None or isinstance(bundle_version, str)
        else list(bundle_version),
    }


def _label(record: FeedbackRecord, query: _Query) -> None:
    """Add one record's positives and rejected sources to its query (rules "feedback-v1")."""
    cited = set(record.cited_node_ids)
    clicked = set(record.clicked_node_ids)
    if record.rating == 1:
        query.positives.update(dict.fromkeys(record.cited_node_ids))
    if record.rating != -1:
        query.positives.update(dict.fromkeys(record.clicked_node_ids))
    if record.rating == -1 or (record.rating == 1 and record.refused):
        rank = 0
        for source in record.retrieved:
            if source.node_id in cited or source.node_id in clicked:
                continue
            rank += 1
            if source.node_id in query.rejected:
                continue
            score = (
                source.score if source.score is not None and math.isfinite(source.score) else None
            )
            query.rejected[source.node_id] = Negative(
                source.node_id, source="feedback", score=score, rank=rank
            )


def _answer_key(answer: str) -> str:
    """An answer text compared for preference pairs: NFC, whitespace runs as one space, trimmed."""
    return " ".join(unicodedata.normalize("NFC", answer).split())


def _corpus(
    corpus: Mapping[str, str] | Sequence[BaseNode] | None, metadata_mode: str
) -> dict[str, str]:
    if corpus is None:
        return {}
    if isinstance(corpus, Mapping):
        for key, text in corpus.items():
            if not isinstance(text, str):
                raise TypeError(
                    f"corpus[{key!r}] must be the node's text (a string), got "
                    f"{type(text).__name__}; pass {{node id: text}} or LlamaIndex nodes"
                )
        return {str(k): v for k, v in corpus.items()}
    from llama_index.core.schema import BaseNode, MetadataMode

    if isinstance(corpus, (str, bytes)) or not isinstance(corpus, Iterable):
        raise TypeError(
            f"corpus must be a {{node id: text}} dict or a list of LlamaIndex nodes, got "
            f"{type(corpus).__name__}"
        )
    corpus = list(corpus)
    for i, node in enumerate(corpus):
        if not isinstance(node, BaseNode):
            raise TypeError(
                f"corpus[{i}] must be a LlamaIndex node (e.g. TextNode), got "
                f"{type(node).__name__}; pass nodes, or a {{node id: text}} dict"
            )
    mode = MetadataMode.EMBED if metadata_mode == "embed" else MetadataMode.NONE
    return {node.node_id: node.get_content(metadata_mode=mode) for node in corpus}


def feedback_retrieval_dataset(
    store: FeedbackReader,
    *,
    corpus: Mapping[str, str] | Sequence[BaseNode] | None = None,
    metadata_mode: Literal["embed", "none"] = "embed",
    split: Split = "all",
    eval_fraction: float = 0.2,
    seed: int = 0,
    negatives: bool = True,
    query_metadata_keys: Sequence[str] = (),
    since: datetime | float | None = None,
    until: datetime | float | None = None,
    bundle_version: str | Sequence[str] | None = None,
) -> RetrievalDataset:
    """A ``RetrievalDataset`` from the feedback log (labels: see the module docstring).

    Args:
        corpus: documents to merge into the corpus (``{id: text}`` or LlamaIndex nodes,
            e.g. the current index's nodes). Their texts win over the stored ones; stored
            node texts (the version seen last in the selection) fill in the rest, so
            nodes since removed from the index still have a text.
        metadata_mode: stored text used for the corpus: ``"embed"`` (as embedded, the
            default of ``RetrievalDataset.from_pairs``) or ``"none"`` (plain text).
        split / eval_fraction / seed: ``"train"`` or ``"eval"`` keep one side of the
            stable held-out split; ``"all"`` keeps every query.
        negatives: ``False`` leaves the feedback negatives out.
        query_metadata_keys: record metadata keys that keep equal query texts apart.
        since / until / bundle_version: which records to read (``FeedbackStore.records``).

    Raises ``ValueError`` when no selected query has a positive.

    Example::

        train = store.to_retrieval_dataset(split="train", corpus=nodes)
        train = HardNegativeMiner(...).mine(train)     # add BM25 / dense negatives as usual
    """
    _check_split(split, eval_fraction, seed)
    if not isinstance(metadata_mode, str) or metadata_mode not in ("embed", "none"):
        raise ValueError(f"metadata_mode must be 'embed' or 'none', got {show(metadata_mode)}")
    if not isinstance(negatives, bool):
        raise TypeError(f"negatives must be True or False, got {show(negatives)}")
    keys = check_keys(query_metadata_keys)
    queries: dict[str, _Query] = {}
    latest: dict[str, str] = {}  # node id -> text hash of the last version in the selection
    used = other_side = 0
    with store.snapshot() as view:  # records and texts of one moment (writers go on)
        for record in view.records(since=since, until=until, bundle_version=bundle_version):
            for source in record.retrieved:
                latest[source.node_id] = source.text_hash
            qid = feedback_query_id(record.query, record.metadata, keys)
            if not _keep(qid, split, eval_fraction, seed):
                other_side += 1
                continue
            used += 1
            query = queries.setdefault(qid, _Query(record.query))
            query.records += 1
            _label(record, query)
        texts = view.node_texts(latest.items(), embed=metadata_mode == "embed")
    merged = {
        node_id: texts[(node_id, h)] for node_id, h in latest.items() if (node_id, h) in texts
    }
    merged.update(_corpus(corpus, metadata_mode))

    relevant: dict[str, list[str]] = {}
    negs: dict[str, list[Negative]] = {}
    for qid, query in queries.items():
        positives = list(query.positives)
        if not positives:
            continue
        relevant[qid] = positives
        if negatives:
            kept = [n for n in query.rejected.values() if n.doc_id not in query.positives]
            if kept:
                negs[qid] = kept
    dropped = len(queries) - len(relevant)
    filters = _filters(since, until, bundle_version)
    if not relevant:
        if split == "train" and other_side:
            advice = (
                f"the other {other_side} selected records are on the held-out side "
                f"(eval_fraction={eval_fraction}): lower eval_fraction, or collect feedback "
                "on more questions"
            )
        else:
            advice = "collect ratings or clicks (store.rate / store.click) first" + (
                ", or raise eval_fraction" if split == "eval" else ""
            )
        raise ValueError(
            f"no query among the {used} selected records of {store.path} (split {split!r}, "
            f"filters {filters}) has a positive: a positive is a node cited by an upvoted "
            f"answer, or a citation opened on an answer that was not downvoted; {advice}"
        )
    if dropped:
        logger.info("feedback export: %d queries without a positive left out", dropped)
    return RetrievalDataset(
        queries={qid: queries[qid].text for qid in relevant},
        corpus=merged,
        relevant_docs=relevant,
        negatives=negs,
        metadata={
            "source": "feedback",
            "feedback_store": str(store.path),
            "label_rules": LABEL_RULES,
            "records": used,
            "queries_without_positive": dropped,
            "split": split,
            "eval_fraction": eval_fraction,
            "seed": seed,
            "query_metadata_keys": list(keys),
            "metadata_mode": metadata_mode,
            "filters": filters,
        },
    )


def feedback_evaluation_set(
    store: FeedbackReader,
    *,
    eval_fraction: float = 0.2,
    seed: int = 0,
    corpus: Mapping[str, str] | Sequence[BaseNode] | None = None,
    metadata_mode: Literal["embed", "none"] = "embed",
    query_metadata_keys: Sequence[str] = (),
    since: datetime | float | None = None,
    until: datetime | float | None = None,
    bundle_version: str | Sequence[str] | None = None,
) -> RetrievalDataset:
    """The held-out queries with their positive node ids, for champion/challenger checks.

    The evaluation side of the stable split (``split="eval"``, no negatives): give
    the same ``eval_fraction`` and ``seed`` to every export, and training exports
    (``split="train"``) never see these queries. Save it next to a bundle
    (``save_json``) to compare later models on exactly the same set, and score a
    retriever on it with ``RetrievalEvaluator(retriever).evaluate(eval_set)``.

    Example::

        eval_set = store.to_evaluation_set(eval_fraction=0.2, until=cutoff)
        eval_set.save_json("bundle/feedback_eval.json")
    """
    return feedback_retrieval_dataset(
        store,
        corpus=corpus,
        metadata_mode=metadata_mode,
        split="eval",
        eval_fraction=eval_fraction,
        seed=seed,
        negatives=False,
        query_metadata_keys=query_metadata_keys,
        since=since,
        until=until,
        bundle_version=bundle_version,
    )


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
    # each distinct answer once, as (question, answer text): not the whole record
    groups: dict[
        tuple[str, tuple[tuple[str, str], ...]], dict[int, dict[str, tuple[str, str]]]
    ] = {}
    with store.snapshot() as view:  # records and texts of one moment (writers go on)
        for record in view.records(since=since, until=until, bundle_version=bundle_version):
            if record.rating is None or record.answer is None:
                continue
            answer = _answer_key(record.answer)
            if not answer:  # a blank answer teaches nothing, chosen or rejected
                continue
            qid = feedback_query_id(record.query, record.metadata, keys)
            if not _keep(qid, split, eval_fraction, seed):
                continue
            sources = tuple((s.node_id, s.text_hash) for s in record.retrieved)
            by_rating = groups.setdefault((qid, sources), {1: {}, -1: {}})
            by_rating[record.rating].setdefault(answer, (record.query, record.answer))
        if max_pairs_per_group is None:
            _check_uncapped_pairs(groups, store)
        needed = {key for (_, sources), g in groups.items() if g[1] and g[-1] for key in sources}
        texts = view.node_texts(needed)
    rows: list[dict[str, Any]] = []
    for (qid, sources), by_rating in groups.items():
        lost = [key for key in sources if key not in texts]
        if lost and by_rating[1] and by_rating[-1]:
            # the file lost a source text its answers were given (rows deleted by hand, say)
            logger.warning(
                "feedback preference pairs: query %s left out: the store %s has no text for "
                "its source(s) %s, so its prompt cannot be rebuilt",
                qid,
                store.path,
                ", ".join(f"{node_id!r} (text hash {h})" for node_id, h in lost[:5]),
            )
            continue
        contested = set(by_rating[1]) & set(by_rating[-1])
        chosen = [r for answer, r in by_rating[1].items() if answer not in contested]
        rejected = [r for answer, r in by_rating[-1].items() if answer not in contested]
        if not chosen or not rejected:
            continue
        source_texts = [truncate_source(texts[key], max_source_chars) for key in sources]
        for good, bad in islice(_spread_pairs(chosen, rejected), max_pairs_per_group):
            messages = build_messages(
                good[0], source_texts, refusal=refusal, system_prompt=system_prompt
            )
            rows.append(
                {
                    "prompt": [
                        {"role": m.role.value, "content": m.content or ""} for m in messages
                    ],
                    "chosen": [{"role": "assistant", "content": good[1]}],
                    "rejected": [{"role": "assistant", "content": bad[1]}],
                    "qid": qid,
                    "strategy": "feedback",
                    "chosen_score": 1.0,
                    "rejected_score": 0.0,
                }
            )
    import datasets

    return datasets.Dataset.from_dict({k: [row[k] for row in rows] for k in PREFERENCE_COLUMNS})
