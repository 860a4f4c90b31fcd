"""GroundedSFTBuilder: retrieved hard distractors, refusal targets, the shared prompt, evaluator-compatible targets."""

from __future__ import annotations

import pytest
from llama_index.core.schema import Document

from llama_index_ragtune.data.grounded import GroundedSFTBuilder, format_target
from llama_index_ragtune.data.qa import QAExample
from llama_index_ragtune.grounding import (
    DEFAULT_REFUSAL,
    build_messages,
    parse_citations,
    truncate_source,
)

TOPICS = ["Normandy", "Warsaw", "Huguenots", "Steam engines", "Packet switching", "Harvard"]


@pytest.fixture(scope="module")
def corpus():
    documents = []
    for t, topic in enumerate(TOPICS):
        for p in range(3):
            documents.append(
                Document(
                    id_=f"{t}-{p}",
                    text=f"{topic} paragraph {p}. {topic} facts number {p * 7 + t}. "
                    + (
                        "The capital of Normandy is Rouen."
                        if (t, p) == (0, 1)
                        else f"{topic} history goes on."
                    ),
                )
            )
    return documents


@pytest.fixture(scope="module")
def retriever(corpus):
    from llama_index.retrievers.bm25 import BM25Retriever

    return BM25Retriever.from_defaults(nodes=corpus, similarity_top_k=8)


@pytest.fixture(scope="module")
def examples():
    return [
        QAExample(
            "qa",
            "What is the capital of Normandy?",
            ["0-1"],
            ["Rouen"],
            True,
            ["The capital of Normandy is Rouen."],
        ),
        QAExample("qu", "Who founded Normandy?", ["0-0"], [], False),
        QAExample(
            "qc",
            "Is this claim supported or contradicted by the sources? Claim: Warsaw facts exist.",
            ["1-2"],
            ["SUPPORT"],
            True,
            ["Warsaw facts number 15."],
            label="SUPPORT",
        ),
    ]


def test_contexts_hold_gold_plus_retrieved_hard_distractors(retriever, corpus, examples):
    builder = GroundedSFTBuilder(retriever, corpus, top_k=3, p_no_gold=0.0, seed=1)
    ctx = builder.context_for(examples[0])
    assert len(ctx.source_ids) == 3 and "0-1" in ctx.source_ids
    # Distractors come from the retriever's ranking: the other Normandy paragraphs, not random topics.
    assert set(ctx.source_ids) == {"0-0", "0-1", "0-2"}
    assert ctx.gold_numbers == [ctx.source_ids.index("0-1") + 1]
    n = ctx.gold_numbers[0]
    assert ctx.answerable and ctx.target == f'Rouen [{n}]: "The capital of Normandy is Rouen."'
    assert ctx.source_texts[ctx.gold_numbers[0] - 1] == corpus[1].text
    no_quote = GroundedSFTBuilder(
        retriever, corpus, top_k=3, p_no_gold=0.0, seed=1, max_quote_chars=0
    )
    assert no_quote.context_for(examples[0]).target == f"Rouen [{n}]"
    # Unanswerable questions always get the refusal, gold paragraph or not.
    unanswerable = builder.context_for(examples[1])
    assert not unanswerable.answerable and unanswerable.target == DEFAULT_REFUSAL
    claim = builder.context_for(examples[2])
    n = claim.gold_numbers[0]
    assert claim.target == f'Supported [{n}]: "Warsaw facts number 15."'


def test_p_no_gold_removes_gold_and_refuses(retriever, corpus, examples):
    builder = GroundedSFTBuilder(retriever, corpus, top_k=3, p_no_gold=1.0)
    ctx = builder.context_for(examples[0])
    assert "0-1" not in ctx.source_ids and len(ctx.source_ids) == 3
    assert ctx.gold_removed and not ctx.answerable and ctx.target == DEFAULT_REFUSAL
    # Roughly p_no_gold of the answerable examples lose their gold, reproducibly.
    many = [
        QAExample(f"q{i}", "What is the capital of Normandy?", ["0-1"], ["Rouen"], True)
        for i in range(200)
    ]
    half = GroundedSFTBuilder(retriever, corpus, top_k=3, p_no_gold=0.5, seed=3)
    removed = [c.gold_removed for c in half.build_contexts(many, show_progress=False)]
    assert 70 < sum(removed) < 130
    again = GroundedSFTBuilder(retriever, corpus, top_k=3, p_no_gold=0.5, seed=3)
    assert removed == [c.gold_removed for c in again.build_contexts(many, show_progress=False)]
    shuffled = [c.source_ids for c in again.build_contexts(many[:20], show_progress=False)]
    assert len({tuple(s) for s in shuffled}) > 1  # the gold position varies


def test_dataset_is_trl_prompt_completion_with_the_shared_prompt(retriever, corpus, examples):
    builder = GroundedSFTBuilder(retriever, corpus, top_k=2, p_no_gold=0.0, max_context_chars=200)
    dataset = builder.build(examples, show_progress=False)
    assert dataset.column_names == [
        "prompt",
        "completion",
        "qid",
        "question",
        "source_node_ids",
        "gold_numbers",
        "answerable",
        "gold_removed",
    ]
    row = dataset[0]
    texts = [builder.texts[i] for i in row["source_node_ids"]]
    expected = build_messages(examples[0].question, [truncate_source(t, 200) for t in texts])
    assert row["prompt"] == [{"role": m.role.value, "content": m.content} for m in expected]
    assert row["completion"][0]["role"] == "assistant"
    assert parse_citations(row["completion"][0]["content"]) == row["gold_numbers"]


def test_prompt_matches_citation_query_engine(retriever, corpus, examples):
    from llama_index.core.schema import QueryBundle

    from llama_index_ragtune.query_engine.citation import CitationQueryEngine

    engine = CitationQueryEngine(retriever, llm=None, max_sources=3, max_source_chars=60)
    builder = GroundedSFTBuilder(retriever, corpus, top_k=3, max_context_chars=60)
    question = examples[0].question
    ctx = builder.context_for(
        examples[0], force_gold=False
    )  # the retriever's own top-3, as at answer time
    nodes = engine.retrieve(QueryBundle(question))
    assert [n.node.node_id for n in nodes] == ctx.source_ids
    sent = [{"role": m.role.value, "content": m.content} for m in engine.messages(question, nodes)]
    assert sent == ctx.messages()


def test_truncation_that_hides_the_answer_gives_a_refusal(retriever, corpus, examples):
    builder = GroundedSFTBuilder(retriever, corpus, top_k=3, p_no_gold=0.0, max_context_chars=25)
    ctx = builder.context_for(examples[0])
    assert "Rouen" not in " ".join(ctx.source_texts)
    assert not ctx.answerable and ctx.target == DEFAULT_REFUSAL


def test_targets_score_perfectly_with_the_generation_evaluator(retriever, corpus, examples):
    from llama_index_ragtune.evaluation.generation import GenerationEvaluator

    builder = GroundedSFTBuilder(retriever, corpus, top_k=3, p_no_gold=0.0)
    squad = GenerationEvaluator(answer_metric="squad")
    scifact = GenerationEvaluator(answer_metric="scifact")
    qa, unanswerable, claim = builder.build_contexts(examples, show_progress=False)
    row = squad.evaluate_example(**qa.evaluation_kwargs(qa.target))
    assert (row["exact_match"], row["citation_precision"], row["citation_recall"]) == (
        1.0,
        1.0,
        1.0,
    )
    assert squad.evaluate_example(**unanswerable.evaluation_kwargs(unanswerable.target))["refused"]
    row = scifact.evaluate_example(**claim.evaluation_kwargs(claim.target))
    assert row["label_accuracy"] == 1.0 and row["citation_precision"] == 1.0
    wrong = scifact.evaluate_example(
        **claim.evaluation_kwargs(claim.target.replace("Supported", "Contradicted"))
    )
    assert wrong["label_accuracy"] == 0.0


def test_bad_input_is_named(retriever, corpus, examples):
    with pytest.raises(ValueError, match="p_no_gold"):
        GroundedSFTBuilder(retriever, corpus, p_no_gold=1.5)
    with pytest.raises(ValueError, match="refusal must be a sentence"):
        GroundedSFTBuilder(retriever, corpus, refusal="  ")
    builder = GroundedSFTBuilder(retriever, {"0-0": "only one document"}, top_k=2)
    with pytest.raises(KeyError, match="question qa"):
        builder.context_for(examples[0])
    with pytest.raises(ValueError, match="q9"):
        format_target(QAExample("q9", "?", ["x"], [], True), [1])
