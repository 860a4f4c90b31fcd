"""Training data from labelled questions: retrieval pairs with hard negatives, grounded SFT contexts.

Encoder side (:func:`retrieval_dataset`, :func:`mine_negatives`): one query per
answerable training question, its gold nodes as positives, the corpus is every
node's text as the encoder sees it (``MetadataMode.EMBED``: store, department,
section path and text). Hard negatives come from three sources
(``HardNegativeMiner``, false-negative filtered): BM25's false positives, the
starting encoder's near misses, and curated confusers (:func:`curated_confusers`):
nodes in *another* store (or department: any of ``curated_keys``) that share a
positive's section title ("Returns > Opened items" in both shops) or the query's
terms ("apple" in the grocery's produce guide and the electronics store's Apple
page). Sources users rejected (feedback) are kept as negatives too.

Decoder side (:func:`grounded_context`, :func:`sft_dataset`): each training
question becomes a cite-or-refuse conversation over the sources the served
retriever returns for it, in the exact prompt ``CitationQueryEngine`` sends. The
gold nodes are put among the retrieved distractors (shuffled); with probability
``p_no_gold`` they are left out and the target is the refusal, as it is for an
unanswerable question. The target opens with the gold sources' citation, then
gives the reference answer (``"[2] Apples are perishable: report ... 48 hours ..."``):
an answer cut short by ``max_new_tokens`` still cites, and a small decoder learns a
format that starts with ``[`` from far fewer examples than one that cites at the
end of each sentence (the citation grammar reads ``[n]`` anywhere). A question
without a reference answer (synthetic, feedback) gets the gold node's sentence
that shares most words with the question.

Example::

    from llama_index_ragtune.pipeline.training_data import mine_negatives, retrieval_dataset

    train = retrieval_dataset(train_queries, nodes)
    train = mine_negatives(train, nodes, encoder=None, per_source=2)
    train.negative_sources()        # {'bm25': ..., 'dense': ..., 'curated': ...}
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llama_index_ragtune.data.schema import Negative, RetrievalDataset, normalize_text
from llama_index_ragtune.pipeline.queries import LabelledQuery

if TYPE_CHECKING:
    import datasets
    from llama_index.core.schema import BaseNode

    from llama_index_ragtune.data.grounded import GroundedContext

CURATED_DEPTH = 50


def corpus_texts(nodes: Sequence[BaseNode], mode: str = "embed") -> dict[str, str]:
    """``{node id: text}`` as the encoder (``"embed"``) or the LLM (``"none"``) sees each node."""
    from llama_index.core.schema import MetadataMode

    metadata_mode = MetadataMode.EMBED if mode == "embed" else MetadataMode.NONE
    return {n.node_id: n.get_content(metadata_mode=metadata_mode) for n in nodes}


def retrieval_dataset(
    queries: Sequence[LabelledQuery], nodes: Sequence[BaseNode]
) -> RetrievalDataset:
    """Answerable questions with gold as a ``RetrievalDataset`` over every node (embed text).

    Known negatives of a question (``negative_node_ids``) are kept with source ``"feedback"``.
    """
    usable = [q for q in queries if q.has_gold]
    if not usable:
        raise ValueError(
            "no answerable training question with gold nodes: the encoder and reranker need some"
        )
    negatives = {
        q.id: [Negative(d, "feedback") for d in q.negative_node_ids if d not in q.gold_node_ids]
        for q in usable
        if q.negative_node_ids
    }
    return RetrievalDataset(
        queries={q.id: q.question for q in usable},
        corpus=corpus_texts(nodes, "embed"),
        relevant_docs={q.id: list(q.gold_node_ids) for q in usable},
        negatives={q: v for q, v in negatives.items() if v},
        metadata={"source": "pipeline"},
    )


def curated_confusers(
    dataset: RetrievalDataset,
    nodes: Sequence[BaseNode],
    keys: Sequence[str] = ("store", "department"),
    per_query: int = 2,
    bm25_analyzer: str = "plain",
    bm25_language: str | None = "english",
    bm25_stopwords: str | Sequence[str] | None = "language",
) -> dict[str, list[str]]:
    """``{query id: node ids}``: nodes of another ``keys`` value (another store, then another
    department) that share a positive's section title, then those BM25 (``bm25_analyzer``,
    ``bm25_language``, ``bm25_stopwords``) ranks highest for the query among them. Queries whose positives span
    every value of a key get none from it."""
    from llama_index_ragtune.data.negative_sources import BM25Scorer
    from llama_index_ragtune.retrievers.bm25_index import BM25Text

    meta = {n.node_id: dict(n.metadata) for n in nodes}
    keys = [k for k in keys if any(k in m for m in meta.values())]
    if not keys:
        return {}
    ids = list(dataset.corpus)
    scorer = BM25Scorer(
        [dataset.corpus[d] for d in ids],
        show_progress=False,
        **BM25Text(bm25_analyzer, bm25_language, bm25_stopwords).tokenizer_kwargs(),
    )
    qids = list(dataset.queries)
    _, top_idx, _ = scorer.search(
        [dataset.queries[q] for q in qids], CURATED_DEPTH, [[] for _ in qids]
    )
    # {key: {section title: {key's value: node ids in corpus order}}}: the nodes of another
    # store sharing a title are merged lazily from these lists, so a title on thousands of
    # pages ("Overview") costs each query the few it picks, not a scan of them all
    titles: dict[str, dict[str, dict[Any, list[str]]]] = {key: {} for key in keys}
    for d in ids:
        title = normalize_text(str(meta.get(d, {}).get("section_title", "")))
        if title:
            for key in keys:
                value = meta.get(d, {}).get(key)
                if value is not None:
                    titles[key].setdefault(title, {}).setdefault(value, []).append(d)
    position = {d: i for i, d in enumerate(ids)}
    # Queries with the same normalised text share their positives (as HardNegativeMiner
    # treats them): "apple return policy?" and "Apple return policy?" read the same to an
    # uncased encoder, only the store filter tells them apart.
    shared: dict[str, set[str]] = {}
    for qid in qids:
        shared.setdefault(normalize_text(dataset.queries[qid]), set()).update(
            dataset.relevant_docs[qid]
        )
    limit = per_query * len(keys)
    out: dict[str, list[str]] = {}
    for row, qid in enumerate(qids):
        positives = dataset.relevant_docs[qid]
        excluded = shared[normalize_text(dataset.queries[qid])]
        picked: list[str] = []
        for key in keys:
            own = {meta[p].get(key) for p in positives if p in meta}

            def other(d: str, key: str = key, own: set = own) -> bool:
                value = meta.get(d, {}).get(key)
                return value is not None and value not in own

            same_title = itertools.chain.from_iterable(
                heapq.merge(
                    *(
                        found
                        for value, found in titles[key]
                        .get(normalize_text(str(meta.get(p, {}).get("section_title", ""))), {})
                        .items()
                        if value not in own
                    ),
                    key=position.__getitem__,
                )
                for p in positives
            )
            by_terms = (ids[i] for i in top_idx[row].tolist() if i >= 0 and other(ids[i]))
            for d in itertools.chain(same_title, by_terms):
                if len(picked) >= limit:
                    break
                if d not in picked and d not in excluded:
                    picked.append(d)
        if picked:
            out[qid] = picked[:limit]
    return out


def mine_negatives(
    dataset: RetrievalDataset,
    nodes: Sequence[BaseNode],
    encoder: str | None = None,
    per_source: int = 2,
    curated_keys: Sequence[str] = ("store", "department"),
    seed: int = 0,
    show_progress: bool = True,
    bm25_analyzer: str = "plain",
    bm25_language: str | None = "english",
    bm25_stopwords: str | Sequence[str] | None = "language",
) -> RetrievalDataset:
    """``dataset`` with hard negatives from BM25, ``encoder`` (the starting model) and curated
    confusers (see the module docstring); ``dataset.metadata["mining"]`` has the counts.
    Both BM25s read text with ``bm25_analyzer``, stem with ``bm25_language`` and drop
    ``bm25_stopwords`` (``"language"``: the language's list), the served retriever's."""
    from llama_index_ragtune.data.negatives import HardNegativeMiner

    bm25: dict[str, Any] = {"bm25_analyzer": bm25_analyzer, "bm25_language": bm25_language}
    if bm25_stopwords != "language":  # the receivers' default: the call reads as before
        bm25["bm25_stopwords"] = bm25_stopwords
    curated = curated_confusers(dataset, nodes, curated_keys, per_query=per_source, **bm25)
    miner = HardNegativeMiner(
        sources=("bm25", "dense", "curated") if curated else ("bm25", "dense"),
        num_negatives={"bm25": per_source, "dense": per_source, "curated": 2 * per_source},
        range_max=30,
        curated=curated or None,
        embed_model=encoder,
        seed=seed,
        show_progress=show_progress,
        **bm25,
    )
    return miner.mine(dataset)


# ------------------------------------------------------------------ decoder


def cited_answer(answer: str, numbers: Sequence[int]) -> str:
    """``answer`` opened by the citation of ``numbers`` (the training target's format).

    Example::

        cited_answer("Within 48 hours. Bring the receipt.", [2])
        # '[2] Within 48 hours. Bring the receipt.'
    """
    from llama_index_ragtune.grounding import cite

    return f"{cite(numbers)} {' '.join(answer.split())}"


def evidence_sentence(question: str, text: str) -> str:
    """The sentence of ``text`` sharing most words with ``question`` (ties: the earliest).

    Sentences are split inside the text's blocks (``data.qa.text_blocks``), so a
    sentence hard-wrapped over several lines of Markdown comes back whole.

    Example::

        evidence_sentence("return window?", "# Returns\\nThe return window\\nis 30 days.")
        # 'The return window is 30 days.'
    """
    from llama_index_ragtune.data.qa import split_sentences, text_blocks

    words = set(normalize_text(question).split())
    found = [s for block in text_blocks(text) for s in split_sentences(block)]
    sentences = [s.strip() for s in found if len(s.split()) >= 3] or [text.strip()]
    return max(sentences, key=lambda s: len(words & set(normalize_text(s).split())))


def grounded_context(
    query: LabelledQuery,
    retrieved: Sequence[str],
    texts: Mapping[str, str],
    top_k: int = 3,
    max_source_chars: int | None = None,
    force_gold: bool = True,
    drop_gold: bool = False,
) -> GroundedContext:
    """The numbered sources and target of one question (a ``data.grounded.GroundedContext``).

    Args:
        retrieved: node ids the served retriever returned, best first.
        texts: ``{node id: text shown to the LLM}``.
        force_gold: training: the gold nodes are among the sources, shuffled with a seed.
            ``False``: the retriever's top ``top_k`` as they are (what the test sees).
        drop_gold: training: leave the gold out (the target becomes the refusal).
    """
    from llama_index_ragtune.data.grounded import GroundedContext
    from llama_index_ragtune.data.qa import QAExample
    from llama_index_ragtune.grounding import DEFAULT_REFUSAL, truncate_source

    rng = random.Random(f"context:{query.id}")
    gold = list(query.gold_node_ids) if query.answerable else []
    distractors = [d for d in retrieved if d not in gold]
    if not force_gold:
        chosen = list(retrieved[:top_k])
    elif drop_gold or not gold:
        chosen = distractors[:top_k]
    else:
        keep = gold[:top_k]
        chosen = keep + distractors[: top_k - len(keep)]
        rng.shuffle(chosen)
    if not chosen:
        raise ValueError(f"question {query.id!r}: no sources (the retriever returned nothing)")
    numbers = [i for i, d in enumerate(chosen, 1) if d in gold]
    answerable = bool(numbers)
    answer = query.answer or (
        evidence_sentence(query.question, texts[chosen[numbers[0] - 1]]) if answerable else ""
    )
    target = cited_answer(answer, numbers) if answerable else DEFAULT_REFUSAL
    example = QAExample(
        qid=query.id,
        question=query.question,
        gold_doc_ids=list(query.gold_node_ids),
        answers=[answer] if answer else [],
        answerable=query.answerable,
    )
    return GroundedContext(
        qid=query.id,
        question=query.question,
        source_ids=list(chosen),
        source_texts=[truncate_source(texts[d], max_source_chars) for d in chosen],
        gold_numbers=numbers,
        answerable=answerable,
        target=target,
        example=example,
        gold_removed=drop_gold and bool(gold),
    )


def training_contexts(
    queries: Sequence[LabelledQuery],
    retrieve: Callable[[LabelledQuery], list[str]],
    texts: Mapping[str, str],
    top_k: int,
    max_source_chars: int | None,
    p_no_gold: float,
    seed: int = 0,
    show_progress: bool = True,
) -> list[GroundedContext]:
    """Training contexts for ``queries`` (gold forced in, dropped with ``p_no_gold``)."""
    from tqdm.auto import tqdm

    out = []
    for query in tqdm(queries, desc="Grounded training contexts", disable=not show_progress):
        drop = random.Random(f"{seed}:drop:{query.id}").random() < p_no_gold
        out.append(
            grounded_context(
                query,
                retrieve(query),
                texts,
                top_k,
                max_source_chars,
                force_gold=True,
                drop_gold=drop,
            )
        )
    return out


def sft_dataset(contexts: Sequence[GroundedContext]) -> datasets.Dataset:
    """TRL conversational prompt-completion rows (plus ``qid`` and ``answerable``)."""
    import datasets

    return datasets.Dataset.from_dict(
        {
            "prompt": [c.messages() for c in contexts],
            "completion": [[{"role": "assistant", "content": c.target}] for c in contexts],
            "qid": [c.qid for c in contexts],
            "answerable": [c.answerable for c in contexts],
        }
    )


def describe_dataset(dataset: RetrievalDataset) -> dict[str, Any]:
    """Counts for logs and the cost estimate: queries, pairs, negatives per source."""
    return {
        "queries": len(dataset),
        "pairs": dataset.num_pairs,
        "negatives": dataset.negative_sources(),
    }
