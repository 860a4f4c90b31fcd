"""Grounded question answering examples: ``QAExample`` plus SQuAD 2.0 and SciFact loaders.

A ``QAExample`` is one question with the ids of the documents that hold (or,
for an unanswerable question, were written against) its answer, the
reference answers, short evidence quotes and, for claim verification, a
label. ``GroundedSFTBuilder`` and ``PreferenceBuilder`` turn them into
training data; ``GenerationEvaluator`` scores answers against them.

This module gathers the names of four that hold one concept each:
``data.qa_example`` (``QAExample``), ``data.sentences`` (``split_sentences``,
``text_blocks``), ``data.squad`` (``load_squad_v2``) and ``data.scifact``
(``load_scifact_claims``).

Example::

    from llama_index_ragtune.data import load_squad_v2, load_scifact_claims

    train, documents = load_squad_v2("../shared/data/squad_v2_dev_half/dev-v2.0.cs224n_half.json",
                                     split="train")
    documents[0].id_                  # '0-0' = article 0, paragraph 0
    claims, abstracts = load_scifact_claims("../shared/data/scifact", split="test")
    claims[1].label, claims[1].evidence[0][:40]
"""

from __future__ import annotations

from llama_index_ragtune.data.qa_example import QAExample
from llama_index_ragtune.data.scifact import (
    CONTRADICT,
    SCIFACT_QUESTION,
    SUPPORT,
    load_scifact_claims,
)
from llama_index_ragtune.data.sentences import split_sentences, text_blocks
from llama_index_ragtune.data.squad import SQUAD_TEST_ARTICLES, load_squad_v2

__all__ = [
    "CONTRADICT",
    "SCIFACT_QUESTION",
    "SQUAD_TEST_ARTICLES",
    "SUPPORT",
    "QAExample",
    "load_scifact_claims",
    "load_squad_v2",
    "split_sentences",
    "text_blocks",
]
