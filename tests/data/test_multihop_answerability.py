"""Two-hop SQuAD questions (both halves cited, twin refused) and answerability labels."""

from __future__ import annotations

import pytest
from llama_index.core.schema import Document

from llama_index_ragtune.data.answerability import (
    GOLD_REMOVED_SUFFIX,
    answerability_pairs,
    source_labels,
    with_gold_removed,
)
from llama_index_ragtune.data.grounded import GroundedSFTBuilder
from llama_index_ragtune.data.multihop import (
    NO_GOLD_SUFFIX,
    MultiHopExample,
    build_squad_multihop,
    find_bridge,
)
from llama_index_ragtune.data.qa import QAExample
from llama_index_ragtune.grounding import DEFAULT_REFUSAL, parse_citations

EXCHANGE = (
    "Warsaw's first stock exchange was established in 1817 and traded until World War II. "
    "It was re-established in April 1991, after the end of communist control."
)
PARAGRAPHS = {
    "p-exchange": EXCHANGE,
    "p-river": "Warsaw stands on the Vistula River. The river is long.",
    "p-bank": "The central bank of Poland sits in Warsaw. Its stock of gold grew.",
    "p-zoo": "The Warsaw zoo opened in 1928. It covers 40 hectares of land.",
    "p-opera": "The Grand Theatre in Warsaw hosts the national opera and ballet.",
    "p-old": "The Old Town of Warsaw was rebuilt after the war with old paintings.",
}
EXCHANGE_Q = QAExample(
    "q-exchange",
    "When was Warsaw's stock exchange re-established?",
    ["p-exchange"],
    ["April 1991"],
)


def test_bridge_needs_an_earlier_sentence_naming_what_is_asked():
    bridge = find_bridge(EXCHANGE_Q, EXCHANGE)
    assert bridge is not None
    assert bridge.bridge.startswith("Warsaw's first stock exchange")
    assert bridge.answer.startswith("It was re-established in April 1991")
    assert set(bridge.bridge_words) == {"exchange", "stock", "warsaw"}
    # The answer in the first sentence, or the question fully inside the answer sentence: no bridge.
    first = QAExample("q", "When was the exchange established?", ["p"], ["1817"])
    assert find_bridge(first, EXCHANGE) is None
    inside = QAExample("q", "When did it end communist control?", ["p"], ["April 1991"])
    assert find_bridge(inside, EXCHANGE) is None
    unanswerable = QAExample("q", "When was it closed?", ["p"], [], answerable=False)
    assert find_bridge(unanswerable, EXCHANGE) is None


def test_multihop_contexts_cite_both_halves_and_refuse_the_twin():
    multihop = build_squad_multihop([EXCHANGE_Q], PARAGRAPHS)
    (example,) = multihop.examples
    assert isinstance(example, MultiHopExample)
    assert example.gold_doc_ids == ["q-exchange#bridge", "q-exchange#answer"]
    assert "p-exchange" not in multihop.distractors["q-exchange"]  # never the split paragraph
    answerable, twin = multihop.contexts(top_k=3, seed=0)
    assert answerable.answerable and len(answerable.source_ids) == 3
    assert sorted(answerable.gold_numbers) == sorted(
        answerable.source_ids.index(g) + 1 for g in example.gold_doc_ids
    )
    assert parse_citations(answerable.target) == answerable.gold_numbers  # several citations
    assert answerable.target.startswith("April 1991 [")
    assert twin.qid == "q-exchange" + NO_GOLD_SUFFIX
    assert not twin.answerable and twin.target == DEFAULT_REFUSAL
    assert not set(twin.source_ids) & set(example.gold_doc_ids)
    assert all("April 1991" not in t for t in twin.source_texts)
    # A cut that drops one hop's evidence makes the whole question a refusal.
    cut = multihop.contexts(top_k=3, max_context_chars=20, with_twins=False)[0]
    assert not cut.answerable and cut.target == DEFAULT_REFUSAL
    with pytest.raises(ValueError, match="top_k must be >= 3"):
        multihop.contexts(top_k=2)
    with pytest.raises(ValueError, match="none of the 1 questions has a bridge"):
        build_squad_multihop([QAExample("q", "What?", ["p-zoo"], ["1928"])], PARAGRAPHS)


def test_multihop_set_from_squad(squad_path):
    from llama_index_ragtune.data.qa import load_squad_v2

    examples, documents = load_squad_v2(squad_path, split="test")
    multihop = build_squad_multihop(examples, documents, max_examples=40, seed=0)
    assert len(multihop) == 40
    contexts = multihop.contexts(top_k=3, max_context_chars=600)
    answerable = [c for c in contexts if c.answerable]
    assert len(contexts) == 80 and len(answerable) >= 30
    assert all(len(c.gold_numbers) == 2 for c in answerable)
    for c in answerable:  # the answer is in the answer half only, never in the bridge half
        bridge = c.source_texts[c.source_ids.index(c.example.gold_doc_ids[0])]
        assert not any(a.lower() in bridge.lower() for a in c.example.answers)


@pytest.fixture(scope="module")
def builder():
    from llama_index_ragtune.retrievers.bm25 import BM25Retriever

    documents = [Document(id_=k, text=v) for k, v in PARAGRAPHS.items()]
    retriever = BM25Retriever.from_defaults(nodes=documents, similarity_top_k=6)
    return GroundedSFTBuilder(retriever, documents, top_k=3, p_no_gold=0.0, seed=0)


def test_answerability_labels_mark_the_cited_gold_sources(builder):
    zoo = QAExample("q-zoo", "When did the Warsaw zoo open?", ["p-zoo"], ["1928"])
    never = QAExample("q-never", "Who built the Warsaw zoo?", ["p-zoo"], [], answerable=False)
    contexts = builder.build_contexts([zoo, never], show_progress=False)
    assert source_labels(contexts[0]) == [int(n in contexts[0].gold_numbers) for n in range(1, 4)]
    assert sum(source_labels(contexts[0])) == 1
    assert source_labels(contexts[1]) == [0, 0, 0]  # its own paragraph is a near miss
    both = with_gold_removed(builder, contexts)
    assert len(both) == 3 and both[2].qid == "q-zoo" + GOLD_REMOVED_SUFFIX
    assert "p-zoo" not in both[2].source_ids and source_labels(both[2]) == [0, 0, 0]
    pairs = answerability_pairs(both)
    assert pairs.column_names == ["question", "source", "label", "qid"]
    assert len(pairs) == 9 and sum(pairs["label"]) == 1
    assert set(pairs["qid"]) == {"q-zoo", "q-never", "q-zoo" + GOLD_REMOVED_SUFFIX}
    assert with_gold_removed(builder, contexts, share=0.0) == contexts
    with pytest.raises(ValueError, match="share"):
        with_gold_removed(builder, contexts, share=2)
    with pytest.raises(ValueError, match="no contexts"):
        answerability_pairs([])
