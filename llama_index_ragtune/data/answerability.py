"""Answerability labels: does a retrieved source hold the answer to the question?

The encoder side's refusal signal (``llms.answerability.AnswerabilityScorer``)
is a cross-encoder that reads (question, source) pairs. Its training labels
come from grounded contexts (``GroundedSFTBuilder``):

- a source is *positive* when the context is answerable and the source is one
  of the gold sources its target cites;
- every other source is *negative*: retrieved distractors, the paragraph a
  SQuAD 2.0 unanswerable question was written against (a near miss), the
  abstracts a SciFact NOT ENOUGH INFO claim names.

Any corpus yields such labels without unanswerable questions:
:func:`with_gold_removed` adds, for each answerable context, a twin whose gold
sources are replaced by further retrieved passages (the target becomes the
refusal), so the labels teach "this question, these passages: no answer".

Example::

    from llama_index_ragtune.data.answerability import answerability_pairs, with_gold_removed

    contexts = builder.build_contexts(examples, retrieved, force_gold=True)
    contexts = with_gold_removed(builder, contexts, retrieved)      # + one gold-removed twin each
    pairs = answerability_pairs(contexts)          # columns: question, source, label, qid
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

    from llama_index_ragtune.data.grounded import GroundedContext, GroundedSFTBuilder

GOLD_REMOVED_SUFFIX = "#gold-removed"
PAIR_COLUMNS = ("question", "source", "label", "qid")


def source_labels(context: GroundedContext) -> list[int]:
    """1 for each source of ``context`` that holds its answer (a cited gold source), else 0.

    Example::

        source_labels(context)    # e.g. [0, 1, 0]; all 0 when the target is the refusal
    """
    gold = set(context.gold_numbers) if context.answerable else set()
    return [int(n in gold) for n in range(1, len(context.source_texts) + 1)]


def with_gold_removed(
    builder: GroundedSFTBuilder,
    contexts: Sequence[GroundedContext],
    retrieved: Mapping[str, Sequence[str]] | None = None,
    share: float = 1.0,
    seed: int = 0,
) -> list[GroundedContext]:
    """``contexts`` plus, for a ``share`` of the answerable ones, a twin with the gold removed.

    The twin (question id + ``#gold-removed``) shows ``builder.top_k`` retrieved
    passages that are not gold and expects the refusal: labels for any corpus,
    no unanswerable questions needed. ``retrieved`` (qid -> doc ids) skips retrieval; a
    context whose retrieved ids are all gold (a QA line with one source) gets no twin.

    Example::

        both = with_gold_removed(builder, contexts, retrieved)
        sum(not c.answerable for c in both) - sum(not c.answerable for c in contexts)  # new refusals
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"with_gold_removed: share must be in [0, 1], got {share}.")
    rng = random.Random(seed)
    out = list(contexts)
    for context in contexts:
        if not context.answerable or rng.random() >= share:
            continue
        ids = None if retrieved is None else retrieved.get(context.qid)
        if ids is not None and set(ids) <= set(context.example.gold_doc_ids):
            continue  # only gold sources (a QA line with one source): no twin can be shown
        twin = builder.context_for(context.example, retrieved=ids, force_gold=True, drop_gold=True)
        out.append(replace(twin, qid=context.qid + GOLD_REMOVED_SUFFIX))
    return out


def answerability_pairs(contexts: Sequence[GroundedContext]) -> datasets.Dataset:
    """One (question, source text, label) row per source of every context (see :func:`source_labels`).

    ``qid`` keeps a context's rows together (validation is carved by question).

    Example::

        pairs = answerability_pairs(contexts)
        pairs[0]    # {'question': ..., 'source': ..., 'label': 0, 'qid': ...}
    """
    import datasets

    if not contexts:
        raise ValueError(
            "answerability_pairs: no contexts given (use GroundedSFTBuilder.build_contexts)."
        )
    rows: dict[str, list[Any]] = {k: [] for k in PAIR_COLUMNS}
    for context in contexts:
        for text, label in zip(context.source_texts, source_labels(context), strict=True):
            rows["question"].append(context.question)
            rows["source"].append(text)
            rows["label"].append(label)
            rows["qid"].append(context.qid)
    return datasets.Dataset.from_dict(rows)
