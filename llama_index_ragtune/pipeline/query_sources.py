"""Questions when no labelled file is given: from a feedback log, or synthetic from an LLM.

- :func:`feedback_queries`: a ``FeedbackStore`` (or its SQLite path). Positives are
  the nodes users upvoted or opened (``FeedbackStore.to_retrieval_dataset``), the
  test split is the store's fixed evaluation side (``to_evaluation_set``), and
  sources users rejected become negatives; the record metadata named by ``keys``
  (default ``store``) becomes each question's filters. Nodes no longer in the index
  are left out, and a question left without any positive is dropped (both logged).
- :func:`synthetic_queries`: ``generate_synthetic_queries`` asks an LLM (any
  LlamaIndex LLM; default the bundled SmolLM2-135M-Instruct, offline) for
  questions each node answers; each question's positives are its node and every
  node with the same text. They have no
  reference answer; the decoder's training targets then quote the node's sentence
  that best matches the question (see ``training_data``). A 135M model writes
  short, often generic questions: see the README for what it measured on the demo.

Example::

    from llama_index_ragtune.pipeline.query_sources import feedback_queries, synthetic_queries

    queries = feedback_queries("feedback.sqlite", nodes)     # train + test splits
    queries, stats = synthetic_queries(nodes[:50], llm=my_llm)
"""

from __future__ import annotations

import logging
import numbers
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.pipeline.queries import LabelledQuery

if TYPE_CHECKING:
    from llama_index.core.llms import LLM
    from llama_index.core.schema import BaseNode

logger = logging.getLogger(__name__)

SYNTHETIC_MAX_NEW_TOKENS = 64


def synthetic_queries(
    nodes: Sequence[BaseNode],
    llm: LLM | None = None,
    questions_per_node: int = 2,
    max_nodes: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> tuple[list[LabelledQuery], dict[str, int]]:
    """``(queries, stats)``: synthetic questions for ``nodes`` (a seeded sample of
    ``max_nodes`` of them), each with its node as the positive, and every node of ``nodes``
    with the same text too (a footer repeated on each page: its twins are no negatives).

    ``llm=None`` loads the bundled decoder (``LocalChatLLM``, greedy, 64 new tokens).
    ``stats`` counts generated, kept and dropped questions (copies, too short, duplicates).
    """
    from llama_index_ragtune.data.synthetic import SyntheticQueryError, generate_synthetic_queries

    if max_nodes is not None and (
        isinstance(max_nodes, bool) or not isinstance(max_nodes, numbers.Integral) or max_nodes < 1
    ):
        # was random's "Sample larger than population or is negative" for -1, a TypeError
        # deep in random.sample for 2.5, and one node for True
        raise ValueError(
            f"max_nodes must be a whole number >= 1 (how many nodes to ask questions of) or "
            f"None for every node, got {max_nodes!r}"
        )
    every_node = list(nodes)
    nodes = every_node
    if max_nodes is not None and len(nodes) > max_nodes:
        nodes = random.Random(seed).sample(nodes, max_nodes)
    if llm is None:
        from llama_index_ragtune.llms import LocalChatLLM

        llm = LocalChatLLM(max_new_tokens=SYNTHETIC_MAX_NEW_TOKENS, dtype="auto")
    result = generate_synthetic_queries(
        nodes,
        llm=llm,
        num_questions_per_node=questions_per_node,
        show_progress=show_progress,
    )
    same_text = _same_text_nodes(every_node)
    gold: dict[str, list[str]] = {}
    for question, node_id in result.pairs:
        ids = gold.setdefault(question, [])
        ids.extend(n for n in same_text.get(node_id, [node_id]) if n not in ids)
    queries = [
        LabelledQuery(
            id=f"synthetic-{i}",
            question=question,
            gold_node_ids=ids,
            source="synthetic",
        )
        for i, (question, ids) in enumerate(gold.items())
    ]
    skipped = {k: v for k, v in result.node_stats.items() if v and k != "same_text"}
    if skipped:
        logger.warning("synthetic questions: nodes not asked or not answered: %s", skipped)
    if not queries:
        raise SyntheticQueryError(
            f"the LLM gave no usable synthetic question for {len(nodes)} nodes ({result.stats}; "
            f"nodes: {result.node_stats}); pass labelled queries, or a stronger LLM"
        )
    return queries, dict(result.stats)


def _same_text_nodes(nodes: Sequence[BaseNode]) -> dict[str, list[str]]:
    """``{node id: ids of every node with the same text}`` (``twin_key`` of the text the LLM
    reads) for the nodes that share their text: a question about one is answered by each,
    so each is its gold (not a false negative of the others)."""
    from llama_index.core.schema import MetadataMode

    from llama_index_ragtune.data.records import twin_key

    by_text: dict[str, list[str]] = {}
    for node in nodes:
        by_text.setdefault(twin_key(node.get_content(MetadataMode.NONE)), []).append(node.node_id)
    return {node_id: ids for ids in by_text.values() if len(ids) > 1 for node_id in ids}


def feedback_queries(
    store: Any,
    nodes: Sequence[BaseNode],
    eval_fraction: float = 0.2,
    seed: int = 0,
    keys: Sequence[str] = ("store",),
) -> list[LabelledQuery]:
    """Train and test questions from a feedback log over the current ``nodes`` (module docs).

    ``store`` is a ``FeedbackStore`` or the path of its SQLite file. ``keys`` are record
    metadata keys that keep equal question texts apart and become the question's filters
    ("apple return policy?" asked of two stores is two questions), exactly as a refresh
    reads the log (``refresh_data.feedback_split``, the one implementation).
    """
    from llama_index_ragtune.pipeline.refresh_data import feedback_split

    return feedback_split(store, nodes, keys=keys, eval_fraction=eval_fraction, seed=seed)
