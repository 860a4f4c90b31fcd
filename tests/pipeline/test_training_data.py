"""Training data: curated confusers from another store, cited targets, grounded contexts."""

from __future__ import annotations

import pytest

from llama_index_ragtune.data.qa import text_blocks
from llama_index_ragtune.grounding import DEFAULT_REFUSAL
from llama_index_ragtune.pipeline.config import PipelineConfig, check_skip
from llama_index_ragtune.pipeline.queries import LabelledQuery, load_queries
from llama_index_ragtune.pipeline.sources import parse_documents, read_documents
from llama_index_ragtune.pipeline.training_data import (
    cited_answer,
    corpus_texts,
    curated_confusers,
    evidence_sentence,
    grounded_context,
    retrieval_dataset,
    sft_dataset,
)


@pytest.fixture(scope="module")
def nodes(tiny_corpus):
    return parse_documents(read_documents(tiny_corpus["docs"]))


def test_curated_confusers_come_from_the_other_store(tiny_corpus, nodes):
    queries = load_queries(tiny_corpus["queries"], nodes)
    dataset = retrieval_dataset(queries, nodes)
    assert len(dataset) == sum(q.answerable for q in queries)
    confusers = curated_confusers(dataset, nodes, keys=("store",), per_query=2)
    store = {n.node_id: n.metadata["store"] for n in nodes}
    apple = next(q.id for q in queries if q.question == "apple return policy?")
    assert confusers[apple]
    assert {store[d] for d in confusers[apple]} == {"electronics"}
    # the grocery returns question gets the electronics returns page with the same title
    titles = {n.node_id: n.metadata["section_title"] for n in nodes}
    delivery = next(q.id for q in queries if q.question == "grocery delivery fee")
    assert "Fees" in {titles[d] for d in confusers[delivery]}
    for qid, docs in confusers.items():
        assert not set(docs) & set(dataset.relevant_docs[qid])


def test_cited_answer_opens_with_the_citation():
    assert cited_answer("Within 48 hours.\n Bring the receipt!", [2]) == (
        "[2] Within 48 hours. Bring the receipt!"
    )
    assert cited_answer("No punctuation", [1, 3]) == "[1][3] No punctuation"
    assert evidence_sentence(
        "when are oranges in season", "Apples are red. Oranges are in season in May."
    ) == ("Oranges are in season in May.")


def test_evidence_sentence_joins_hard_wrapped_markdown_lines():
    page = (
        "## Non-perishable items\n\n"
        "Packaged groceries can\nbe returned within **30 days** of purchase. For online orders\n"
        "the 30 days start on the\nday of delivery.\n"
        "- Keep the receipt\n  with you.\n"
        "| Item | Window |\n|---|---|\n| Milk | 48 hours |\n"
    )
    assert text_blocks(page) == [
        "Non-perishable items",
        "Packaged groceries can be returned within **30 days** of purchase. For online "
        "orders the 30 days start on the day of delivery.",
        "Keep the receipt with you.",
        "Item | Window",
        "Milk | 48 hours",
    ]
    assert evidence_sentence("online order return window start", page) == (
        "For online orders the 30 days start on the day of delivery."
    )


def test_grounded_contexts_force_or_drop_the_gold(nodes):
    texts = corpus_texts(nodes, "none")
    query = LabelledQuery("q", "opened laptop?", ["electronics/returns.md#0"], answer="14 days.")
    retrieved = ["grocery/returns.md#0", "electronics/returns.md#0", "grocery/produce.md#1"]
    forced = grounded_context(query, retrieved, texts, top_k=2, max_source_chars=40)
    assert "electronics/returns.md#0" in forced.source_ids and len(forced.source_ids) == 2
    number = forced.source_ids.index("electronics/returns.md#0") + 1
    assert forced.target == f"[{number}] 14 days." and forced.answerable
    assert all(len(t) <= 44 for t in forced.source_texts)
    dropped = grounded_context(query, retrieved, texts, top_k=2, drop_gold=True)
    assert (
        dropped.target == DEFAULT_REFUSAL and "electronics/returns.md#0" not in dropped.source_ids
    )
    missed = [retrieved[0], retrieved[2], retrieved[1]]  # the retriever ranked the gold third
    as_is = grounded_context(query, missed, texts, top_k=2, force_gold=False)
    assert as_is.source_ids == missed[:2] and not as_is.answerable
    assert as_is.target == DEFAULT_REFUSAL
    no_answer = LabelledQuery("s", "opened laptop return", ["electronics/returns.md#0"])
    cited = grounded_context(no_answer, retrieved, texts, top_k=1)
    assert cited.target.startswith("[1] Opened electronics")
    rows = sft_dataset([forced, dropped])
    assert rows.column_names == ["prompt", "completion", "qid", "answerable"]
    assert (
        rows[0]["prompt"][0]["role"] == "system"
        and rows[1]["completion"][0]["content"] == DEFAULT_REFUSAL
    )


def test_skip_and_time_budget_settings():
    assert check_skip("reranker, decoder") == ("reranker", "decoder")
    with pytest.raises(ValueError, match="cannot be skipped"):
        check_skip(["parse"])
    with pytest.raises(ValueError, match="unknown step"):
        check_skip("rerank")
    config = PipelineConfig.from_time_budget(10)
    minutes = [config.budget(p).minutes for p in ("encoder", "reranker", "decoder")]
    assert minutes == [3.0, 3.0, 4.0]
    assert config.encoder_budget.max_pairs_per_query == 8  # caps kept
    with pytest.raises(ValueError, match="minutes > 0"):
        config.with_time_budget(0)
    with pytest.raises(ValueError, match="force_promotion"):
        PipelineConfig(force_promotion=("retriever",))
    for repeats in (0, True, 2.5):
        with pytest.raises(ValueError, match="refusal_cv_repeats must be a whole number >= 1"):
            PipelineConfig(refusal_cv_repeats=repeats)
    assert PipelineConfig().fingerprint() == PipelineConfig().fingerprint()
    assert PipelineConfig(seed=1).fingerprint() != PipelineConfig().fingerprint()
