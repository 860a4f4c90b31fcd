"""Retrieval training and evaluation sets from a ``FeedbackStore``.

Queries merge and split as :mod:`~llama_index_ragtune.feedback.query_split` says;
the query id is ``stable_query_id(text)`` (the id ``RetrievalDataset.from_pairs``
gives the same text), with a suffix per metadata value when keys are given. DPO
pairs live in :mod:`~llama_index_ragtune.feedback.preference_pairs` (both are
importable from here too).

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
  ``metadata["queries_without_positive"]``);
- a record whose question has no visible character (stored by another tool, or before
  ``record`` refused it) is left out, with a logged warning naming it.

Example::

    from llama_index_ragtune.feedback import FeedbackStore

    store = FeedbackStore("feedback.sqlite", create=False)
    eval_set = store.to_evaluation_set(eval_fraction=0.2)          # fixed held-out queries
    train = store.to_retrieval_dataset(split="train", corpus=nodes)
    pairs = store.to_preference_pairs(split="train", max_source_chars=1500)
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from llama_index_ragtune.data.schema import Negative, RetrievalDataset
from llama_index_ragtune.feedback.entries import show
from llama_index_ragtune.feedback.preference_pairs import (  # noqa: F401 - importable here too
    MAX_UNCAPPED_PAIRS,
    PREFERENCE_COLUMNS,
    _answer_key,
    _check_uncapped_pairs,
    _spread_pairs,
    feedback_preference_pairs,
)
from llama_index_ragtune.feedback.query_split import (  # noqa: F401 - importable here too
    Split,
    _check_split,
    _keep,
    check_keys,
    feedback_query_id,
    is_eval_query,
    with_visible_questions,
)
from llama_index_ragtune.feedback.records import FeedbackRecord

if TYPE_CHECKING:
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
"""Name of the labelling rules above; written to every exported dataset's metadata."""


@dataclass
class _Query:
    """One question's labels, each node once (in the order first seen), so a question
    asked 100,000 times holds no more than its distinct nodes."""

    text: str
    positives: dict[str, None] = field(default_factory=dict)
    rejected: dict[str, Negative] = field(default_factory=dict)  # the first per node id
    records: int = 0


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


def _shown_filters(filters: dict[str, Any]) -> str:
    """``filters`` for a message: a long ``bundle_version`` list by its first versions and
    its length (a filter of 250,000 versions made a 2.6 MB error message)."""
    versions = filters["bundle_version"]
    if isinstance(versions, list) and len(versions) > 5:
        versions = f"{versions[:5]!r:.200} and {len(versions) - 5:,} more"
    return repr({**filters, "bundle_version": versions})


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


def _warn_textless(node_ids: list[str], path: Any) -> None:
    """Say which labelled nodes were left out for want of a text: their ``nodes`` rows were
    deleted (by hand, or by another tool) and ``corpus`` does not hold them either. (The
    export failed with a ``DataError`` for the whole dataset.)"""
    logger.warning(
        "feedback export: %d labelled node(s) left out (%s%s): %s holds no text for them "
        "(their rows in its nodes table are gone) and corpus= does not give one; pass the "
        "current index's nodes as corpus= to keep those still in it",
        len(node_ids),
        ", ".join(show(node_id) for node_id in node_ids[:5]),
        " ..." if len(node_ids) > 5 else "",
        path,
    )


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
        texts: dict[str, str] = {}
        for key, text in corpus.items():
            # an integer id is read as text; None or a float named a node "None" / "1.0"
            if isinstance(key, bool) or not isinstance(key, (str, numbers.Integral)):
                raise TypeError(
                    f"corpus key {show(key)} is not a node id: pass {{node id (a string): text}}"
                )
            node_id = str(key) if isinstance(key, str) else str(int(key))
            if node_id in texts:  # {1: ..., "1": ...}: one text was silently dropped
                raise ValueError(
                    f"corpus holds node id {node_id!r} twice (as {show(key)} and as another "
                    "key of the same text form); keep one text per node id"
                )
            texts[node_id] = text
        return texts
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
        selected = view.records(since=since, until=until, bundle_version=bundle_version)
        for record in with_visible_questions(selected, store):
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
    textless: dict[str, None] = {}  # labelled nodes with no text in the store nor corpus
    for qid, query in queries.items():
        positives = [node_id for node_id in query.positives if node_id in merged]
        textless.update((n, None) for n in query.positives if n not in merged)
        if not positives:
            continue
        relevant[qid] = positives
        if negatives:
            kept = [n for n in query.rejected.values() if n.doc_id not in query.positives]
            textless.update((n.doc_id, None) for n in kept if n.doc_id not in merged)
            kept = [n for n in kept if n.doc_id in merged]
            if kept:
                negs[qid] = kept
    if textless:
        _warn_textless(list(textless), store.path)
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
        if textless:
            advice = (
                f"the positives of {len(textless)} node(s) have no text (not in the store's "
                "nodes table nor in corpus=): pass the current index's nodes as corpus=; or "
                + advice
            )
        raise ValueError(
            f"no query among the {used} selected records of {store.path} (split {split!r}, "
            f"filters {_shown_filters(filters)}) has a positive: a positive is a node cited by an upvoted "
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
