"""The fields of a ``RetrievalDataset`` from a BEIR folder, (query, node ids) pairs, or synthetic questions.

These are the bodies of ``RetrievalDataset.from_beir`` / ``from_pairs`` /
``from_nodes``: each returns the dataset's keyword arguments, which the class
checks on construction; call them through the class.

Example::

    from llama_index_ragtune.data import RetrievalDataset

    ds = RetrievalDataset.from_pairs([("apple return policy?", ["grocery-returns"])], nodes)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.data.beir import load_beir
from llama_index_ragtune.data.records import Negative, stable_query_id
from llama_index_ragtune.data.synthetic import generate_synthetic_queries
from llama_index_ragtune.data.validation import fmt_ids as _fmt_ids

if TYPE_CHECKING:
    from llama_index.core.llms import LLM
    from llama_index.core.schema import BaseNode, MetadataMode

logger = logging.getLogger(__name__)


def beir_fields(
    path: str | Path,
    split: str = "train",
    min_grade: int = 1,
    max_queries: int | None = None,
    judged_negatives: bool = True,
) -> dict[str, Any]:
    """``RetrievalDataset`` keyword arguments; see ``RetrievalDataset.from_beir``."""
    beir = load_beir(path, split=split, max_queries=max_queries)
    relevant = beir.relevant_docs(min_grade=min_grade)
    dropped = [q for q in beir.queries if q not in relevant]
    if dropped:
        logger.info(
            "from_beir: dropped %d queries without a positive: %s", len(dropped), _fmt_ids(dropped)
        )
    negatives: dict[str, list[Negative]] = {}
    if judged_negatives:
        for qid in relevant:
            judged = [
                Negative(d, "judged", score=float(g))
                for d, g in beir.qrels[qid].items()
                if g < min_grade
            ]
            if judged:
                negatives[qid] = judged
    # strongest positives first; the grades travel with the dataset
    grades = {q: {d: int(beir.qrels[q][d]) for d in docs} for q, docs in relevant.items()}
    relevant = {q: sorted(docs, key=lambda d, q=q: -grades[q][d]) for q, docs in relevant.items()}
    return {
        "queries": {q: beir.queries[q] for q in relevant},
        "corpus": dict(beir.corpus),
        "relevant_docs": relevant,
        "negatives": negatives,
        "metadata": {"source": "beir", "name": beir.name, "split": split},
        "grades": grades,
    }


def pairs_fields(
    pairs: Iterable[tuple[str, Sequence[str] | str]],
    corpus: Mapping[str, str] | Sequence[BaseNode],
    metadata_mode: MetadataMode | str = "embed",
) -> dict[str, Any]:
    """``RetrievalDataset`` keyword arguments; see ``RetrievalDataset.from_pairs``."""
    corpus_dict = (
        dict(corpus) if isinstance(corpus, Mapping) else corpus_from_nodes(corpus, metadata_mode)
    )
    queries: dict[str, str] = {}
    relevant: dict[str, dict[str, None]] = {}  # ordered sets: a list scan per pair was quadratic
    for i, pair in enumerate(pairs):
        try:
            query, doc_ids = pair
        except (TypeError, ValueError) as err:
            raise ValueError(f"pair #{i} is not a (query, doc_ids) tuple: {pair!r}") from err
        if not isinstance(query, str):
            raise ValueError(f"pair #{i}: query must be a string, got {type(query).__name__}")
        doc_ids = [doc_ids] if isinstance(doc_ids, str) else list(doc_ids)
        qid = stable_query_id(query)
        queries.setdefault(qid, query)
        relevant.setdefault(qid, {}).update(dict.fromkeys(doc_ids))
    return {
        "queries": queries,
        "corpus": corpus_dict,
        "relevant_docs": {qid: list(docs) for qid, docs in relevant.items()},
        "metadata": {"source": "pairs"},
    }


def nodes_fields(
    nodes: Sequence[BaseNode],
    llm: LLM | None = None,
    num_questions_per_node: int = 2,
    prompt_template: Any = None,
    metadata_mode: MetadataMode | str = "embed",
    **kwargs: Any,
) -> dict[str, Any]:
    """``RetrievalDataset`` keyword arguments; see ``RetrievalDataset.from_nodes``."""
    result = generate_synthetic_queries(
        nodes,
        llm=llm,
        num_questions_per_node=num_questions_per_node,
        prompt_template=prompt_template,
        **kwargs,
    )
    if not result.pairs:
        raise ValueError(
            f"no synthetic query survived for {len(nodes)} nodes ({result.stats}); "
            "check the LLM output or loosen the copy filter"
        )
    fields = pairs_fields([(q, [n]) for q, n in result.pairs], nodes, metadata_mode=metadata_mode)
    return {**fields, "metadata": {"source": "synthetic", "stats": dict(result.stats)}}


def corpus_from_nodes(
    nodes: Sequence[BaseNode], metadata_mode: MetadataMode | str = "embed"
) -> dict[str, str]:
    """``{node_id: text}`` for LlamaIndex nodes; duplicate node ids raise ``ValueError``."""
    from llama_index.core.schema import MetadataMode

    mode = MetadataMode(metadata_mode) if isinstance(metadata_mode, str) else metadata_mode
    corpus: dict[str, str] = {}
    dupes: list[str] = []
    for node in nodes:
        if not hasattr(node, "get_content"):
            raise TypeError(
                f"corpus must be a mapping or LlamaIndex nodes, got {type(node).__name__}"
            )
        if node.node_id in corpus:
            dupes.append(node.node_id)
        corpus[node.node_id] = node.get_content(metadata_mode=mode)
    if dupes:
        raise ValueError(f"duplicate node ids in the corpus: {_fmt_ids(dupes)}")
    return corpus
