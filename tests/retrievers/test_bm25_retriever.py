"""Our BM25Retriever: stemming and stopwords, no zero-score padding, filters before top-k, persistence."""

from __future__ import annotations

import json

import pytest
from llama_index.core.schema import TextNode
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.core.vector_stores import FilterOperator, MetadataFilter, MetadataFilters

from llama_index_ragtune.retrievers import BM25Retriever, PersistenceError
from llama_index_ragtune.retrievers.bm25 import BM25Tokenizer

GROCERY = MetadataFilters(filters=[MetadataFilter(key="store", value="grocery")])


def ids(nodes):
    return [n.node.node_id for n in nodes]


def test_tokenizer_stems_and_drops_stopwords():
    tokenize = BM25Tokenizer()
    assert tokenize("The returns of the returned") == ["return", "return"]
    assert tokenize("the and of") == []
    assert BM25Tokenizer(language=None, stopwords=None)("The returns") == ["the", "returns"]


def test_ranks_by_bm25_with_stemming(store_nodes):
    retriever = BM25Retriever(store_nodes, similarity_top_k=3)
    hits = retriever.retrieve("returning opened laptops")
    assert hits[0].node.node_id == "e2"
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    assert hits[0].node is store_nodes[5]  # the caller's node object, not a copy


def test_no_zero_score_padding(store_nodes):
    retriever = BM25Retriever(store_nodes, similarity_top_k=5)
    hits = retriever.retrieve("bakery")
    assert ids(hits) == ["g4"]
    assert retriever.retrieve("the of and") == []
    assert retriever.retrieve("zyzzyva") == []


def test_filters_apply_before_the_top_k_cut(store_nodes):
    unfiltered = BM25Retriever(store_nodes, similarity_top_k=2)
    assert {n.node.metadata["store"] for n in unfiltered.retrieve("opened returned days")} == {
        "electronics"
    }
    filtered = BM25Retriever(store_nodes, similarity_top_k=2, filters=GROCERY)
    hits = filtered.retrieve("opened returned days")
    assert len(hits) == 2  # filled from allowed nodes
    assert {n.node.metadata["store"] for n in hits} == {"grocery"}
    filtered.filters = MetadataFilters(filters=[MetadataFilter(key="store", value="toys")])
    assert filtered.retrieve("opened returned days") == []


def test_filter_operators_and_doc_id_keys(store_nodes):
    retriever = BM25Retriever(store_nodes, similarity_top_k=8)
    retriever.filters = MetadataFilters(
        filters=[MetadataFilter(key="store", value=["grocery"], operator=FilterOperator.NIN)]
    )
    assert {n.node.metadata["store"] for n in retriever.retrieve("store opening hours")} == {
        "electronics"
    }


def test_from_defaults_exactly_one(store_nodes):
    with pytest.raises(ValueError, match="exactly one of index, nodes or docstore"):
        BM25Retriever.from_defaults()
    docstore = SimpleDocumentStore()
    docstore.add_documents(store_nodes)
    with pytest.raises(ValueError, match="exactly one"):
        BM25Retriever.from_defaults(nodes=store_nodes, docstore=docstore)
    from_store = BM25Retriever.from_defaults(docstore=docstore, similarity_top_k=3)
    assert ids(from_store.retrieve("phone case")) == ids(
        BM25Retriever(store_nodes, similarity_top_k=3).retrieve("phone case")
    )


def test_bad_input_errors(store_nodes):
    with pytest.raises(ValueError, match="at least one node"):
        BM25Retriever([])
    with pytest.raises(ValueError, match="duplicate node id 'x'"):
        BM25Retriever([TextNode(id_="x", text="a b"), TextNode(id_="x", text="c d")])


def test_persist_round_trip(store_nodes, tmp_path):
    retriever = BM25Retriever(store_nodes, similarity_top_k=4, k1=1.2, b=0.6)
    retriever.persist(tmp_path / "bm25")
    loaded = BM25Retriever.from_persist_dir(tmp_path / "bm25")
    for query in ("apple refund", "opened electronics returned", "store hours"):
        assert [(n.node.node_id, round(n.score, 5)) for n in loaded.retrieve(query)] == [
            (n.node.node_id, round(n.score, 5)) for n in retriever.retrieve(query)
        ]
    assert (loaded.k1, loaded.b, loaded.similarity_top_k) == (1.2, 0.6, 4)
    assert (
        BM25Retriever.from_persist_dir(tmp_path / "bm25", similarity_top_k=1).similarity_top_k == 1
    )
    with pytest.raises(ValueError, match="fixed by the persisted index"):
        BM25Retriever.from_persist_dir(tmp_path / "bm25", k1=2.0)


def test_persist_errors_name_the_problem(store_nodes, tmp_path):
    with pytest.raises(PersistenceError, match="does not exist"):
        BM25Retriever.from_persist_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PersistenceError, match="bm25_retriever.json is missing"):
        BM25Retriever.from_persist_dir(tmp_path / "empty")
    folder = tmp_path / "bm25"
    BM25Retriever(store_nodes).persist(folder)
    manifest = folder / "bm25_retriever.json"
    good = manifest.read_text()
    manifest.write_text("{not json")
    with pytest.raises(PersistenceError, match="bm25_retriever.json is corrupt"):
        BM25Retriever.from_persist_dir(folder)
    data = json.loads(good)
    data["format_version"] = 99
    manifest.write_text(json.dumps(data))
    with pytest.raises(PersistenceError, match="format_version 99"):
        BM25Retriever.from_persist_dir(folder)
    manifest.write_text(good)
    (folder / "docstore.json").unlink()
    with pytest.raises(PersistenceError, match="docstore.json"):
        BM25Retriever.from_persist_dir(folder)


def test_persist_without_nodes_needs_the_docstore(store_nodes, tmp_path):
    BM25Retriever(store_nodes).persist(tmp_path / "b", save_nodes=False)
    with pytest.raises(PersistenceError, match="pass the docstore"):
        BM25Retriever.from_persist_dir(tmp_path / "b")
    other = SimpleDocumentStore()
    other.add_documents(store_nodes[:3])
    with pytest.raises(PersistenceError, match="not in the docstore"):
        BM25Retriever.from_persist_dir(tmp_path / "b", docstore=other)
    full = SimpleDocumentStore()
    full.add_documents(store_nodes)
    assert len(BM25Retriever.from_persist_dir(tmp_path / "b", docstore=full).nodes) == len(
        store_nodes
    )
