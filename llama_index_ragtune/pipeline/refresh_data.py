"""The questions a refresh learns from and is judged on: a feedback log plus the earlier data.

:func:`feedback_split` turns a ``FeedbackStore`` into labelled questions with the
feedback module's export rules ("feedback-v1": positives are citations of upvoted
answers and opened citations; negatives are the sources of downvoted answers that
were neither cited nor opened). Each question keeps the record metadata it was
asked under as its filters (``keys``, e.g. ``("store",)``: "apple return policy?"
asked of the grocery and of the electronics store are two questions), and its
side of the store's stable held-out split: ``"train"`` questions are trained on,
``"test"`` questions (``store.to_evaluation_set``) only judge champion against
challenger, and a question never changes side however much feedback arrives. A
training question that is a held-out question asked again without a filter or
under filters that do not contradict it ("apple return policy?" unfiltered and for
the grocery store) is left out of training (:func:`drop_held_out_copies`).
Feedback judges only the pages users were shown: each question records them as its
``judged_node_ids``, and rankings are scored on those alone (a condensed list).

:func:`earlier_queries` reads the labelled queries file the bundle was tuned on
(named in its manifest) when it is still there and unchanged, with the split the
tuning run used, so a refresh trains on the earlier data too and checks that the
earlier test questions do not get worse.

Example::

    from llama_index_ragtune.pipeline.refresh_data import feedback_split

    queries = feedback_split("feedback.sqlite", nodes, keys=("store",))
    [q for q in queries if q.split == "test"]      # the fixed held-out questions
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.pipeline.queries import LabelledQuery

if TYPE_CHECKING:
    from llama_index.core.schema import BaseNode

logger = logging.getLogger(__name__)


class RefreshError(ValueError):
    """A refresh cannot run on these inputs (no usable feedback, nothing to evaluate on...)."""


def open_store(store: Any) -> Any:
    """A ``FeedbackStore`` for ``store`` (a store, or the path of an existing SQLite file, opened
    read-only: a store in a folder the refresh may not write is read too)."""
    from llama_index_ragtune.feedback import FeedbackStore

    if isinstance(store, FeedbackStore):
        return store
    path = Path(store).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"feedback store not found: {path}")
    return FeedbackStore(path, create=False, read_only=True)  # a refresh only reads it


def _filters_and_shown(
    store: Any, keys: Sequence[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]]]:
    """``({feedback query id: {key: value}}, {feedback query id: node ids users saw})`` from
    the records (their metadata, and the sources retrieved, cited or opened)."""
    from llama_index_ragtune.feedback import feedback_query_id

    filters: dict[str, dict[str, Any]] = {}
    shown: dict[str, set[str]] = {}
    for record in store.records():
        qid = feedback_query_id(record.query, record.metadata, keys)
        if qid not in filters:
            filters[qid] = {
                k: record.metadata[k] for k in keys if record.metadata.get(k) is not None
            }
        shown.setdefault(qid, set()).update(
            record.retrieved_node_ids, record.cited_node_ids, record.clicked_node_ids
        )
    return filters, shown


SIDES = ("train", "test")
"""The sides of the feedback's stable held-out split."""


def _feedback_side(
    view: Any,
    split: str,
    nodes: Sequence[BaseNode],
    options: Mapping[str, Any],
    say: Callable[[str], None],
) -> Any:
    """The feedback's ``"train"`` retrieval dataset or ``"test"`` evaluation set (None when
    no held-out question has a positive yet; ``RefreshError`` when no training one has)."""
    try:
        if split == "train":
            return view.to_retrieval_dataset(split="train", corpus=nodes, **options)
        return view.to_evaluation_set(corpus=nodes, **options)
    except ValueError as exc:
        if split == "test":
            say(f"feedback: no held-out question with a positive yet ({exc})")
            return None
        raise RefreshError(f"nothing to learn from in {view.path}: {exc}") from None


def feedback_split(
    store: Any,
    nodes: Sequence[BaseNode],
    keys: Sequence[str] = ("store",),
    eval_fraction: float = 0.2,
    seed: int = 0,
    echo: Callable[[str], None] | None = None,
) -> list[LabelledQuery]:
    """Train and held-out test questions from a feedback log over the current ``nodes``.

    Args:
        store: a ``FeedbackStore`` or the path of its SQLite file.
        nodes: the nodes served now; positives and negatives outside them are left out
            (a question left without a positive is dropped; both are reported).
        keys: record metadata keys that keep equal question texts apart and become the
            question's filters (a list such as ``("store",)``; only keys that are node
            metadata are used, the others are said through ``echo``).
        eval_fraction / seed: the stable held-out split (the same for every refresh).

    Raises ``RefreshError`` when no training question has a positive, ``TypeError``
    when ``keys`` is not a list of key names. The store is read in one snapshot
    (``FeedbackStore.snapshot``): what writers commit meanwhile is left for the next
    refresh, so the questions, their filters and the pages shown agree.

    Example::

        queries = feedback_split(store, nodes, keys=("store",), eval_fraction=0.2)
    """
    from llama_index_ragtune.feedback.export import check_keys

    say = echo or logger.info
    keys = check_keys(keys, "keys")
    opened = open_store(store)
    node_keys = {k for n in nodes for k in n.metadata}
    unused = [k for k in keys if k not in node_keys]
    if unused:
        say(
            f"feedback: key(s) {unused} are metadata of no node, so they neither keep equal "
            "questions apart nor filter them"
        )
    keys = tuple(k for k in keys if k in node_keys)
    options = {"eval_fraction": eval_fraction, "seed": seed, "query_metadata_keys": keys}
    # Every pass (filters and pages shown, train side, test side) reads one snapshot: a
    # record committed between two passes would give a question without its filters.
    try:
        with opened.snapshot() as view:
            filters, shown = _filters_and_shown(view, keys)
            datasets = {split: _feedback_side(view, split, nodes, options, say) for split in SIDES}
    finally:
        if opened is not store:  # opened here from a path
            opened.close()
    known = {n.node_id: n for n in nodes}
    out: list[LabelledQuery] = []
    dropped = {"nodes": 0, "questions": 0}
    for split, data in datasets.items():
        if data is None:
            continue
        for qid, question in data.queries.items():
            where = filters.get(qid, {})

            def usable(node_id: str, where: Mapping[str, Any] = where) -> bool:
                node = known.get(node_id)
                return node is not None and all(node.metadata.get(k) == v for k, v in where.items())

            gold = [d for d in data.relevant_docs[qid] if usable(d)]
            dropped["nodes"] += len(data.relevant_docs[qid]) - len(gold)
            if not gold:
                dropped["questions"] += 1
                continue
            negatives = [n.doc_id for n in data.negatives.get(qid, []) if usable(n.doc_id)]
            out.append(
                LabelledQuery(
                    id=qid,
                    question=question,
                    gold_node_ids=gold,
                    filters=dict(where),
                    split=split,
                    source="feedback",
                    negative_node_ids=[d for d in negatives if d not in gold],
                    judged_node_ids=sorted(
                        {d for d in shown.get(qid, ()) if usable(d)} | set(gold) | set(negatives)
                    ),
                )
            )
    if dropped["nodes"]:
        say(
            f"feedback: {dropped['nodes']} positive node(s) are not among the current nodes (or "
            f"outside the question's filters); {dropped['questions']} question(s) left without a "
            "positive were dropped"
        )
    out = drop_held_out_copies(out, say)
    if not any(q.split == "train" for q in out):
        raise RefreshError(
            f"the feedback in {opened.path} gives no training question whose positive is one of "
            "the current nodes; collect ratings or citation clicks on answers of this bundle first"
        )
    return out


def earlier_queries(
    manifest: Mapping[str, Any],
    nodes: Sequence[BaseNode],
    echo: Callable[[str], None] | None = None,
) -> list[LabelledQuery]:
    """The labelled questions the bundle was tuned on, with that run's train / test split.

    Empty (and said through ``echo``) when the bundle was tuned on synthetic or feedback
    questions, or when its queries file is gone, changed, or no longer matches the nodes.

    Example::

        earlier = earlier_queries(load_bundle("runs/shop").manifest, nodes)
    """
    from llama_index_ragtune._atomic import sha256_file
    from llama_index_ragtune.data.errors import DataError
    from llama_index_ragtune.pipeline.bundle_folders import short
    from llama_index_ragtune.pipeline.queries import load_queries, split_queries

    say = echo or logger.info
    info = (manifest.get("data") or {}).get("queries") or {}
    file = info.get("file")
    if info.get("source") != "file" or not file:
        return []
    config = manifest.get("config") or {}
    saved = config.get("test_fraction", 0.2), config.get("seed", 0)
    try:
        fraction, seed = float(saved[0]), int(saved[1])
    except (TypeError, ValueError, OverflowError):
        fraction, seed = math.nan, 0
    if not isinstance(file, str) or not 0.0 <= fraction <= 1.0:
        # the split cannot be rebuilt: its test questions could be trained on
        say(
            f"earlier data: the bundle's manifest has data.queries.file {short(file)}, "
            f"config.test_fraction {short(saved[0])} and config.seed {short(saved[1])} (a "
            "path, a number in [0, 1] and a whole number), so its split cannot be rebuilt; "
            "refreshing from feedback only"
        )
        return []
    path = Path(file)
    if not path.is_file():
        say(
            f"earlier data: {path} (the bundle's queries file) is gone; refreshing from feedback only"
        )
        return []
    if info.get("file_sha256") and sha256_file(path) != info["file_sha256"]:
        say(f"earlier data: {path} changed since the bundle was tuned; left out")
        return []
    try:
        queries = load_queries(path, nodes)
    except DataError as exc:
        say(f"earlier data: {path} no longer matches the documents ({exc}); left out")
        return []
    train, test = split_queries(queries, fraction, seed)
    return [*train, *test]


def merge_queries(
    feedback: Sequence[LabelledQuery],
    earlier: Sequence[LabelledQuery],
    echo: Callable[[str], None] | None = None,
) -> list[LabelledQuery]:
    """Feedback and earlier questions together, with nothing held out trained on.

    An earlier id that a feedback question also uses gets the prefix ``earlier:`` (ids
    must be unique). A question held out on either side (the feedback's fixed test side,
    the earlier run's test split) is left out of training on the other side too: users
    ask the labelled questions again, and training on a copy of a held-out question
    would let the refreshed bundle win on what it memorised. Questions match by
    normalised text (``data.schema.normalize_text``) and filters that do not contradict
    each other (:func:`drop_held_out_copies`).

    Example::

        merge_queries(feedback_split(store, nodes), earlier_queries(manifest, nodes))
    """
    from dataclasses import replace

    taken = {q.id for q in feedback}
    renamed = [q if q.id not in taken else replace(q, id=f"earlier:{q.id}") for q in earlier]
    return drop_held_out_copies(
        [*feedback, *renamed],
        echo,
        "[refresh] {n} training question(s) left out: the same question is held out "
        "(feedback test side or the earlier test split)",
    )


def drop_held_out_copies(
    queries: Sequence[LabelledQuery],
    echo: Callable[[str], None] | None = None,
    message: str = "feedback: {n} training question(s) left out: the same question is held "
    "out (asked without a filter or under other metadata)",
) -> list[LabelledQuery]:
    """``queries`` without the training questions that copy a held-out (``"test"``) one.

    A copy has the same normalised text (``data.schema.normalize_text``) and filters
    that do not contradict the held-out question's (no key with two different values):
    "apple return policy?" asked unfiltered is a copy of the question held out for the
    grocery store, the electronics store's is not. The encoder sees the text alone, so
    training on a copy would let a refreshed bundle win on what it memorised.

    Example::

        drop_held_out_copies([*feedback_questions, *earlier_questions])
    """
    from llama_index_ragtune.data.schema import normalize_text

    held_out: dict[str, list[dict[str, str]]] = {}
    for q in queries:
        if q.split == "test":
            held_out.setdefault(normalize_text(q.question), []).append(_filter_values(q))

    def copies(q: LabelledQuery) -> bool:
        mine = _filter_values(q)
        return any(
            all(mine[k] == other[k] for k in mine.keys() & other.keys())
            for other in held_out.get(normalize_text(q.question), ())
        )

    kept = [q for q in queries if q.split == "test" or not copies(q)]
    if len(kept) < len(queries):
        (echo or logger.info)(message.format(n=len(queries) - len(kept)))
    return kept


def _filter_values(query: LabelledQuery) -> dict[str, str]:
    return {str(k): str(v) for k, v in query.filters.items() if v is not None}
