"""Grounded QA tasks for decoder tuning: SQuAD 2.0 / SciFact splits, cached retrieval, contexts.

``ragtune train decoder`` and the decoder benchmark (``ragtune bench generation``)
build their data here.

One retriever is built once over all paragraphs (SQuAD 2.0) or abstracts
(SciFact); every question is retrieved once and its document ids are cached
(``retrieved-<task>-<retriever>.json``), so every row answers over identical
sources. Training contexts put the gold passage among retrieved distractors
(``GroundedSFTBuilder``, some with the gold removed -> refusal); dev and test
contexts are the retriever's own top-k, so a question expects the refusal when
retrieval missed its evidence.

Multi-hop (SQuAD 2.0 only, ``data.multihop``): two-hop questions made by
splitting a paragraph at its bridge, shown as the two halves plus a
distractor, each with its gold-removed twin. Test multi-hop questions come
from the test articles; training ones from the training sample's questions
(a two-source version of a question already trained on); dev ones from the
training articles outside the training and dev samples.

Splits: SQuAD 2.0 by article (all but the last 4 articles train, the last 4
test); SciFact claims by its qrels (``train`` / ``test``). Dev questions are
training-split questions left out of the training sample, none asking one of its
questions again (up to case, spacing and punctuation).

Your own QA file (``--qa``, JSONL, ``data.qa_jsonl``): each question shows its
own sources, in the order written, instead of retrieved ones (training
contexts with the gold sources first kept, some turned into refusals by
``--p-no-gold``); its ``split`` field makes the test set; the training sample
keeps the file's mix of answerable and unanswerable questions.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_index_ragtune._atomic import atomic_write_text
from llama_index_ragtune.data.grounded import GroundedContext, GroundedSFTBuilder
from llama_index_ragtune.data.qa import QAExample

logger = logging.getLogger(__name__)

TUNE = "tune"  # --refusal-threshold: choose it on dev questions
DEFAULT_ANSWERABLE_SHARE = 0.6  # --squad / --scifact training samples (--qa keeps the file's mix)
MULTIHOP_SOURCES = 3  # two gold halves and a distractor, as in the multi-hop test


@dataclass
class GenerationTask:
    """Train/dev/test questions and the documents a retriever indexes for them.

    ``train_pool`` / ``test_pool``: every question of the two splits (the
    multi-hop sets are drawn from them). ``sources``: for a QA file, each
    question's own sources (question id -> document ids), shown instead of
    retrieved ones.

    Example::

        task = load_task(squad="dev-v2.0.json", max_train=300, max_test=100)
        task.train[0].question, task.documents[0].id_
    """

    name: str
    train: list[QAExample]
    test: list[QAExample]
    documents: list[Any]
    answer_metric: str
    dev: list[QAExample] = field(default_factory=list)
    train_pool: list[QAExample] = field(default_factory=list)
    test_pool: list[QAExample] = field(default_factory=list)
    sources: dict[str, list[str]] = field(default_factory=dict)


def _sample(
    examples: list[QAExample], n: int | None, seed: int, answerable_share: float | None = None
) -> list[QAExample]:
    """``n`` examples drawn with ``seed``; ``answerable_share`` fixes the answerable fraction."""
    rng = random.Random(seed)
    if answerable_share is None:
        return list(examples) if n is None or n >= len(examples) else rng.sample(examples, n)
    answerable = [e for e in examples if e.answerable]
    unanswerable = [e for e in examples if not e.answerable]
    n = len(examples) if n is None else n
    n_answerable = min(len(answerable), round(n * answerable_share))
    n_unanswerable = min(len(unanswerable), n - n_answerable)
    picked = rng.sample(answerable, n_answerable) + rng.sample(unanswerable, n_unanswerable)
    rng.shuffle(picked)
    return picked


def _apart_from(dev: list[QAExample], sample: list[QAExample]) -> list[QAExample]:
    """``dev`` without the questions that ask one of ``sample``'s again (``records.twin_key``:
    up to case, spacing and punctuation; other sources or another answer): a question trained
    on, written twice, was drawn as a dev question and the refusal was fitted on what the
    model had learnt. Filtered after drawing, so a dev sample without twins stays the same."""
    from llama_index_ragtune.data.records import twin_key

    asked = {twin_key(e.question) for e in sample}
    kept = [e for e in dev if twin_key(e.question) not in asked]
    if len(kept) < len(dev):
        logger.warning(
            "%d dev questions left out: they ask a training question again (e.g. %r)",
            len(dev) - len(kept),
            next(e.question for e in dev if twin_key(e.question) in asked)[:80],
        )
    return kept


def load_task(
    squad: str | Path | None = None,
    scifact: str | Path | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    train_answerable_share: float | None = None,
    max_dev: int = 0,
    qa: str | Path | None = None,
) -> GenerationTask:
    """SQuAD 2.0 (article split), SciFact claims (qrels split) or your own QA file
    (``qa``: JSONL, see ``data.qa_jsonl``; its ``split`` field), sampled with ``seed``.

    ``train_answerable_share`` fixes the answerable fraction of the training
    sample (None: the data's own mix; the dev and test samples always keep it).
    ``max_dev`` dev questions come from the training split, outside the training sample
    (a drawn one asking a training question again is left out).

    Example::

        task = load_task(qa="my_qa.jsonl", max_train=500, max_test=100, max_dev=50)
        task.name, task.answer_metric, len(task.sources)      # ('qa', 'squad', ...)
    """
    from llama_index_ragtune.data.qa import load_scifact_claims, load_squad_v2

    if sum(x is not None for x in (squad, scifact, qa)) != 1:
        raise ValueError("Pass exactly one of --squad PATH, --scifact DIR or --qa FILE.")
    sources: dict[str, list[str]] = {}
    if qa is not None:
        from llama_index_ragtune.data.qa_jsonl import load_grounded_qa

        loaded = load_grounded_qa(qa)
        train, test, documents = loaded.train, loaded.test, loaded.documents
        sources = loaded.sources
        name, metric = "qa", "squad"
    elif squad is not None:
        train, _ = load_squad_v2(squad, split="train")
        test, _ = load_squad_v2(squad, split="test")
        _, documents = load_squad_v2(squad)
        name, metric = "squad_v2", "squad"
    else:
        train, documents = load_scifact_claims(scifact, split="train")
        test, _ = load_scifact_claims(scifact, split="test")
        name, metric = "scifact", "scifact"
    train_sample = _sample(train, max_train, seed, train_answerable_share)
    taken = {e.qid for e in train_sample}
    rest = [e for e in train if e.qid not in taken]
    dev = _apart_from(_sample(rest, max_dev, seed + 2), train_sample) if max_dev > 0 else []
    if max_dev > 0 and len(dev) < max_dev:
        logger.warning("Only %d dev questions left outside the training sample.", len(dev))
    return GenerationTask(
        name,
        train_sample,
        _sample(test, max_test, seed + 1),
        documents,
        metric,
        dev,
        train_pool=list(train),
        test_pool=list(test),
        sources=sources,
    )


def build_retriever(documents: Sequence[Any], kind: str = "bm25", top_k: int = 10) -> Any:
    """A retriever over ``documents``: ``bm25`` (this package's BM25) or ``hybrid`` (dense + BM25).

    Example::

        retriever = build_retriever(task.documents, "bm25", top_k=10)
        retriever.retrieve("Who founded Warsaw?")[0].node.node_id
    """
    if kind == "bm25":
        from llama_index_ragtune.retrievers.bm25 import BM25Retriever

        return BM25Retriever.from_defaults(nodes=list(documents), similarity_top_k=top_k)
    if kind == "hybrid":
        from llama_index_ragtune.retrievers import HybridRetriever

        return HybridRetriever.from_defaults(nodes=list(documents), similarity_top_k=top_k)
    raise ValueError(f"Unknown retriever {kind!r}; use 'bm25' or 'hybrid'.")


def retrieve_all(
    builder: GroundedSFTBuilder,
    examples: Sequence[QAExample],
    cache: str | Path | None = None,
    show_progress: bool = True,
) -> dict[str, list[str]]:
    """Document ids retrieved for every question, read from / written to the JSON ``cache``.

    Example::

        retrieved = retrieve_all(builder, task.train, cache="runs/retrieved-squad_v2-bm25.json")
        retrieved[task.train[0].qid]          # ['12-3', '12-0', ...], best first
    """
    from tqdm.auto import tqdm

    path = Path(cache) if cache is not None else None
    retrieved = _read_retrieval_cache(path) if path is not None and path.exists() else {}
    missing = [e for e in examples if e.qid not in retrieved]
    for example in tqdm(missing, desc="Retrieving", disable=not show_progress):
        retrieved[example.qid] = builder.retrieve_ids(example.question)
    if path is not None and missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(retrieved))  # a killed run leaves the old file
    return retrieved


def _read_retrieval_cache(path: Path) -> dict[str, list[str]]:
    """The cached retrievals of ``path``; ``{}`` (retrieve again) with a warning when it cannot
    be read or is not ``{question id: [document ids]}`` (a file cut short by a killed run
    of an older version, or edited): it is a cache, never a reason to stop."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        problem = f"unreadable ({type(exc).__name__}: {exc})"
    else:
        if isinstance(data, dict) and all(
            isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in data.values()
        ):
            return data
        problem = "not {question id: [document ids]}"
    logger.warning("retrieval cache %s is %s: retrieving again and rewriting it", path, problem)
    return {}


@dataclass
class GroundedData:
    """What ``train decoder`` (and the decoder benchmark) build before training: the task,
    the context builder and the train / test contexts over the same retrieved sources.

    Example::

        data = prepare_grounded_data(args, max_train_examples=300, cache_dir="runs/decoder")
        data.builder.to_dataset(data.train_contexts)    # the SFT rows
    """

    task: GenerationTask
    builder: GroundedSFTBuilder
    train_contexts: list[GroundedContext]
    test_contexts: list[GroundedContext]
    dev_contexts: list[GroundedContext] = field(default_factory=list)
    multihop_test_contexts: list[GroundedContext] = field(default_factory=list)
    retrieved: dict[str, list[str]] = field(default_factory=dict)
    multihop_dev_contexts: list[GroundedContext] = field(default_factory=list)

    def dev_contexts_for(self, set_name: str) -> list[GroundedContext]:
        """The dev questions drawn like ``set_name``'s test questions: the multi-hop ones for
        ``"multihop"``, the task's own for any other set (``dev_contexts`` holds both)."""
        if set_name == "multihop":
            return list(self.multihop_dev_contexts)
        multihop = {id(c) for c in self.multihop_dev_contexts}
        return [c for c in self.dev_contexts if id(c) not in multihop]


def prepare_grounded_data(
    args: argparse.Namespace, max_train_examples: int | None, cache_dir: str | Path
) -> GroundedData:
    """Load the task named by the command's flags, retrieve every question once (cached
    in ``cache_dir/retrieved-<task>-<retriever>.json``) and build the contexts.

    Training contexts always hold the gold passage (``force_gold``; ``--p-no-gold``
    turns some into refusals); dev and test contexts are the retriever's own top-k.
    Dev questions are drawn only when ``--refusal-threshold tune`` needs them.
    ``args`` is the parsed command line of ``ragtune train decoder`` (``--squad`` /
    ``--scifact`` / ``--qa``, ``--top-k``, ``--p-no-gold``...); a QA file's questions
    keep their own sources and nothing is retrieved.

    Example::

        data = prepare_grounded_data(args, max_train_examples=300, cache_dir="runs/decoder")
        dataset = data.builder.to_dataset(data.train_contexts)
    """
    qa = getattr(args, "qa", None)
    share = args.train_answerable_share
    if share is None and qa is None:
        share = DEFAULT_ANSWERABLE_SHARE
    task = load_task(
        args.squad,
        args.scifact,
        max_train_examples,
        args.max_test_examples,
        args.seed,
        share,
        max_dev=args.dev_examples if args.refusal_threshold == TUNE else 0,
        qa=qa,
    )
    retriever = build_retriever(task.documents, args.retriever, top_k=max(10, 3 * args.top_k))
    builder = GroundedSFTBuilder(
        retriever,
        task.documents,
        top_k=args.top_k,
        p_no_gold=args.p_no_gold,
        max_context_chars=args.max_context_chars,
        seed=args.seed,
    )
    if task.sources:  # a QA file: every question shows its own sources
        retrieved = dict(task.sources)
    else:
        retrieved = retrieve_all(
            builder,
            task.train + task.dev + task.test,
            cache=Path(cache_dir) / f"retrieved-{task.name}-{args.retriever}.json",
        )
    train_contexts = builder.build_contexts(task.train, retrieved, force_gold=True)
    if task.sources:
        _warn_lost_evidence(train_contexts, args.max_context_chars)
    dev_contexts = builder.build_contexts(task.dev, retrieved, force_gold=False)
    multihop_test: list[GroundedContext] = []
    multihop_dev: list[GroundedContext] = []
    if task.name == "squad_v2":
        taken = {e.qid for e in task.train + task.dev}
        rest = [e for e in task.train_pool if e.qid not in taken]
        train_contexts += _multihop(task.train, task, retriever, args, "multihop_train_examples", 0)
        if task.dev:  # dev questions are drawn only when the refusal is tuned on them
            multihop_dev = _multihop(rest, task, retriever, args, "multihop_dev_examples", 1)
            dev_contexts += multihop_dev
        multihop_test = _multihop(
            task.test_pool, task, retriever, args, "multihop_test_examples", 2
        )
    return GroundedData(
        task,
        builder,
        train_contexts,
        builder.build_contexts(task.test, retrieved, force_gold=False),
        dev_contexts,
        multihop_test,
        retrieved,
        multihop_dev,
    )


def _warn_lost_evidence(contexts: Sequence[GroundedContext], max_chars: int | None) -> None:
    """Say how many answerable training questions became refusals because the cut of each
    source to ``max_chars`` removed their evidence (``GroundedSFTBuilder``'s rule)."""
    lost = [
        c.qid for c in contexts if c.example.answerable and not c.answerable and not c.gold_removed
    ]
    if lost:
        logger.warning(
            "%d answerable training questions (e.g. %s) are trained as refusals: the cut of "
            "each source to --max-context-chars %s removed their answer or evidence.",
            len(lost),
            ", ".join(lost[:3]),
            max_chars,
        )


def _multihop(
    examples: Sequence[QAExample],
    task: GenerationTask,
    retriever: Any,
    args: argparse.Namespace,
    flag: str,
    offset: int,
) -> list[GroundedContext]:
    """Two-hop contexts (each with its gold-removed twin) for ``--<flag>`` questions of ``examples``."""
    from llama_index_ragtune.data.multihop import build_squad_multihop

    wanted = getattr(args, flag, 0) or 0
    if wanted <= 0:
        return []
    try:
        multihop = build_squad_multihop(
            examples, task.documents, retriever, max_examples=wanted, seed=args.seed + offset
        )
    except ValueError as err:
        logger.warning("No multi-hop questions for --%s: %s", flag.replace("_", "-"), err)
        return []
    if len(multihop) < wanted:
        logger.warning(
            "Only %d multi-hop questions for --%s.", len(multihop), flag.replace("_", "-")
        )
    return multihop.contexts(
        top_k=MULTIHOP_SOURCES, max_context_chars=args.max_context_chars, seed=args.seed
    )
