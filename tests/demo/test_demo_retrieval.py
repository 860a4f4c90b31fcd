"""Sanity of the demo corpus: plain BM25 under a store filter finds the seed questions' policies."""

from __future__ import annotations

import pytest
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

from llama_index_ragtune.retrievers import BM25Retriever

SEED_QUESTIONS = ("apple return policy?", "Apple return policy?")


@pytest.fixture(scope="module")
def bm25_by_store(demo_nodes):
    """One BM25 retriever (top 5) per store, each restricted by a ``store`` metadata filter."""
    return {
        store: BM25Retriever(
            demo_nodes,
            similarity_top_k=5,
            filters=MetadataFilters(filters=[MetadataFilter(key="store", value=store)]),
        )
        for store in ("grocery", "electronics")
    }


def _cases(queries):
    """(query, store) for every seed question and every store its gold points into."""
    for q in queries:
        if q["split"] == "test" and q["question"] in SEED_QUESTIONS:
            for store in sorted({ref["doc_id"].split("/")[0] for ref in q["gold"]}):
                yield q, store


def test_bm25_finds_a_gold_node_of_each_seed_question_within_the_store(
    bm25_by_store, demo_queries, gold_match
):
    cases = list(_cases(demo_queries))
    assert len(cases) == 6  # grocery, electronics, and both stores for each unfiltered question
    for q, store in cases:
        hits = bm25_by_store[store].retrieve(q["question"])
        assert 0 < len(hits) <= 5
        assert {hit.node.metadata["store"] for hit in hits} == {store}
        gold = [ref for ref in q["gold"] if ref["doc_id"].startswith(store + "/")]
        ranked = [(hit.node.ref_doc_id, hit.node.metadata["section_path"]) for hit in hits]
        found = any(gold_match(hit.node, ref) for hit in hits for ref in gold)
        assert found, (q["id"], store, ranked)
