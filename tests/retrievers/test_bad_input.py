"""Degenerate input to the retrievers: clear errors at construction, or documented behaviour."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest
from llama_index.core.schema import QueryBundle, TextNode
from llama_index.core.vector_stores import FilterOperator, MetadataFilter, MetadataFilters

from llama_index_ragtune.retrievers import (
    BM25Retriever,
    HybridRetriever,
    PersistenceError,
    build_faiss_index,
)


def ids(hits):
    return [h.node.node_id for h in hits]


@pytest.fixture()
def hybrid(store_nodes, keyword_embedding):
    return HybridRetriever.from_defaults(
        nodes=store_nodes, embed_model=keyword_embedding, similarity_top_k=4
    )


# ------------------------------------------------------------------ empty-text nodes


def test_blank_nodes_are_skipped_on_both_sides_and_persist(
    store_nodes, keyword_embedding, tmp_path, caplog
):
    blank = [
        TextNode(id_="empty", text=""),
        TextNode(id_="spaces", text="   \n\t "),
    ]
    with caplog.at_level(logging.WARNING):
        retriever = HybridRetriever.from_defaults(
            nodes=[*store_nodes[:4], *blank, *store_nodes[4:]],
            embed_model=keyword_embedding,
            similarity_top_k=8,
        )
    assert "skipping 2 node(s)" in caplog.text and "'empty'" in caplog.text
    assert "'spaces'" in caplog.text
    kept = {n.node_id for n in store_nodes}
    assert {n.node_id for n in retriever.sparse_retriever.nodes} == kept
    assert set(retriever.index.index_struct.nodes_dict.values()) == kept
    retriever.persist(tmp_path / "h")
    loaded = HybridRetriever.from_persist_dir(tmp_path / "h", embed_model=keyword_embedding)
    assert ids(loaded.retrieve("apple return")) == ids(retriever.retrieve("apple return"))


def test_a_node_with_only_metadata_is_indexed(keyword_embedding, store_nodes):
    titled = TextNode(id_="titled", text="", metadata={"title": "warranty laptop"})
    retriever = HybridRetriever.from_defaults(
        nodes=[*store_nodes, titled], embed_model=keyword_embedding, similarity_top_k=3
    )
    assert "titled" in ids(retriever.sparse_retriever.retrieve("warranty"))


def test_all_blank_nodes_are_refused(keyword_embedding):
    nodes = [TextNode(id_=f"b{i}", text=" " * i) for i in range(3)]
    with pytest.raises(ValueError, match=r"all 3 nodes have empty or whitespace-only text"):
        HybridRetriever.from_defaults(nodes=nodes, embed_model=keyword_embedding)
    with pytest.raises(ValueError, match="all 3 nodes"):
        build_faiss_index(nodes, keyword_embedding)


def test_sides_over_different_nodes_are_refused_before_writing(
    store_nodes, keyword_embedding, tmp_path
):
    retriever = HybridRetriever(
        index=build_faiss_index(store_nodes[:-1], keyword_embedding),
        sparse_retriever=BM25Retriever(store_nodes),
        embed_model=keyword_embedding,
    )
    with pytest.raises(ValueError, match=r"hold different nodes \(1 only in BM25, e.g. \['e4'\]"):
        retriever.persist(tmp_path / "h")
    assert not (tmp_path / "h").exists()


def test_nodes_are_checked_before_anything_is_embedded(store_nodes, keyword_embedding):
    with pytest.raises(ValueError, match="duplicate node id 'g1'"):
        HybridRetriever.from_defaults(
            nodes=[store_nodes[0], store_nodes[0]], embed_model=keyword_embedding
        )
    assert keyword_embedding.calls == 0
    with pytest.raises(TypeError, match="needs llama_index nodes .*item 1 is str"):
        HybridRetriever.from_defaults(
            nodes=[store_nodes[0], "plain text"], embed_model=keyword_embedding
        )
    with pytest.raises(TypeError, match="BM25Retriever needs a list of llama_index nodes, got str"):
        BM25Retriever("some text")
    with pytest.raises(TypeError, match="got TextNode"):
        BM25Retriever(store_nodes[0])


# ------------------------------------------------------------------ queries


@pytest.mark.parametrize("query", ["", "   ", "\n\t", QueryBundle("")])
def test_empty_query_returns_nothing(hybrid, query):
    assert hybrid.retrieve(query) == []
    assert asyncio.run(hybrid.aretrieve(query)) == []
    assert hybrid.sparse_retriever.retrieve(query) == []


def test_empty_query_with_an_embedding_searches_the_dense_side(hybrid, keyword_embedding):
    vector = keyword_embedding.get_query_embedding("opened electronics")
    hits = hybrid.retrieve(QueryBundle("", embedding=vector))
    assert hits and all(h.sparse_rank is None for h in hits)
    assert hits[0].node.node_id in {"e1", "e2"}


@pytest.mark.parametrize("query", ["apple \ud800 return", "apple\x00return policy", "\udfff"])
def test_surrogates_and_nul_do_not_crash(hybrid, query):
    hits = hybrid.retrieve(query)
    assert isinstance(hits, list)
    assert hybrid.sparse_retriever.retrieve(query) is not None


def test_very_long_query(hybrid):
    query = "apple return policy " * 20_000
    assert ids(hybrid.retrieve(query))[:1] == ids(hybrid.retrieve("apple return policy"))[:1]


@pytest.mark.parametrize("query", [None, 123, b"apple", ["apple"]])
def test_non_text_query_is_a_type_error(hybrid, query):
    with pytest.raises((TypeError, ValueError), match="str"):
        hybrid.retrieve(query)


def test_real_tokenizer_survives_hostile_queries(tiny_encoder_path, store_nodes, tmp_path):
    from llama_index_ragtune.embeddings import default_embed_model

    embed = default_embed_model(tiny_encoder_path, backend="torch")
    retriever = HybridRetriever.from_defaults(
        nodes=[*store_nodes, TextNode(id_="odd", text="caf\ud800e \x00 apple")],
        embed_model=embed,
        similarity_top_k=3,
    )
    for query in ("apple \ud800\x00 return", "apple return " * 5_000):
        assert len(retriever.retrieve(query)) == 3
    retriever.persist(tmp_path / "h")
    loaded = HybridRetriever.from_persist_dir(tmp_path / "h", embed_model=embed)
    assert ids(loaded.retrieve("apple return")) == ids(retriever.retrieve("apple return"))


# ------------------------------------------------------------------ construction


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"similarity_top_k": 0}, ValueError, "similarity_top_k must be an integer >= 1, got 0"),
        ({"similarity_top_k": 2.5}, TypeError, "similarity_top_k must be an integer.*float 2.5"),
        ({"similarity_top_k": True}, TypeError, "similarity_top_k .* bool"),
        ({"similarity_top_k": None}, TypeError, "similarity_top_k .* NoneType"),
        ({"similarity_top_k": "3"}, TypeError, "similarity_top_k .* str"),
        ({"dense_top_k": 0}, ValueError, "dense_top_k must be an integer >= 1, got 0"),
        ({"sparse_top_k": -5}, ValueError, "sparse_top_k must be an integer >= 1, got -5"),
        ({"sparse_top_k": 1.0}, TypeError, "sparse_top_k"),
        ({"alpha": 1.5}, ValueError, r"alpha must be a number in \[0, 1\], got 1.5"),
        ({"alpha": -0.1}, ValueError, "alpha"),
        ({"alpha": math.nan}, ValueError, "alpha"),
        ({"alpha": True}, TypeError, "alpha"),
        ({"alpha": "0.5"}, TypeError, "alpha"),
        ({"rrf_k": 0}, ValueError, "rrf_k must be a finite number > 0"),
        ({"rrf_k": math.inf}, ValueError, "rrf_k"),
        ({"fusion_mode": "borda"}, ValueError, "unknown fusion mode 'borda'"),
        ({"fusion_mode": ""}, ValueError, "unknown fusion mode ''"),
        ({"fusion_mode": 3}, TypeError, "fusion_mode must be a string"),
        ({"embed_model": "minilm"}, TypeError, "embed_model must be a llama_index BaseEmbedding"),
        ({"filters": {"store": "x"}}, TypeError, "filters must be llama_index MetadataFilters"),
    ],
)
def test_arguments_are_validated_when_built(hybrid, kwargs, error, message):
    base = {"index": hybrid.index, "sparse_retriever": hybrid.sparse_retriever}
    with pytest.raises(error, match=message):
        HybridRetriever(**(base | kwargs))


def test_custom_sides_must_be_retrievers(hybrid):
    with pytest.raises(TypeError, match="sparse_retriever must be a llama_index BaseRetriever"):
        HybridRetriever(index=hybrid.index, sparse_retriever=[1, 2])


def test_filters_on_unknown_keys_are_refused(hybrid):
    typo = MetadataFilters(filters=[MetadataFilter(key="stor", value="grocery")])
    with pytest.raises(ValueError, match=r"key\(s\) \['stor'\] appear in no node.*store"):
        hybrid.with_filters(typo)
    with pytest.raises(ValueError, match="stor"):
        hybrid.filters = typo
    with pytest.raises(ValueError, match="stor"):
        BM25Retriever(hybrid.sparse_retriever.nodes, filters=typo)
    nested = MetadataFilters(
        filters=[
            MetadataFilter(key="store", value="grocery"),
            MetadataFilters(filters=[typo.filters[0]]),
        ]
    )
    with pytest.raises(ValueError, match="stor"):
        hybrid.with_filters(nested)
    # is_empty on a key no node has is meaningful (matches every node)
    missing = MetadataFilters(
        filters=[MetadataFilter(key="colour", value=None, operator=FilterOperator.IS_EMPTY)]
    )
    assert len(hybrid.with_filters(missing).retrieve("apple")) == 4


def test_load_overrides_are_validated(hybrid, keyword_embedding, tmp_path):
    hybrid.persist(tmp_path / "h")
    with pytest.raises(ValueError, match="similarity_top_k must be an integer >= 1") as info:
        HybridRetriever.from_persist_dir(
            tmp_path / "h", embed_model=keyword_embedding, similarity_top_k=0
        )
    assert not isinstance(info.value, PersistenceError)  # the override is wrong, not the folder
    with pytest.raises(TypeError, match=r"unknown override\(s\) \['top_k'\]"):
        HybridRetriever.from_persist_dir(tmp_path / "h", embed_model=keyword_embedding, top_k=3)


def test_persist_never_deletes_foreign_files(hybrid, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "thesis.tex").write_text("months of work")
    with pytest.raises(FileExistsError, match=r"thesis\.tex"):
        hybrid.persist(folder)
    assert (folder / "thesis.tex").read_text() == "months of work"
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        hybrid.persist(tmp_path / "file")


def test_missing_folder_names_the_path(keyword_embedding, tmp_path):
    with pytest.raises(PersistenceError, match="nowhere does not exist"):
        HybridRetriever.from_persist_dir(tmp_path / "nowhere", embed_model=keyword_embedding)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(PersistenceError, match="a_file is a file, not a persist directory"):
        HybridRetriever.from_persist_dir(tmp_path / "a_file", embed_model=keyword_embedding)
    with pytest.raises(PersistenceError, match="a_file is a file"):
        BM25Retriever.from_persist_dir(tmp_path / "a_file")


# ------------------------------------------------------------------ BM25 corpora


def test_stopword_only_corpus_is_a_clear_error():
    nodes = [TextNode(id_="a", text="the of and"), TextNode(id_="b", text="a an the !")]
    with pytest.raises(
        ValueError, match=r"none of the 2 nodes has a term BM25 can index.*\['a', 'b'\]"
    ):
        BM25Retriever(nodes)
    assert len(BM25Retriever(nodes, stopwords=None).retrieve("the")) == 2


def test_one_document_corpus(keyword_embedding, tmp_path):
    node = TextNode(id_="only", text="Opened electronics can be returned within 14 days.")
    retriever = HybridRetriever.from_defaults(
        nodes=[node], embed_model=keyword_embedding, similarity_top_k=5
    )
    assert ids(retriever.retrieve("returned electronics")) == ["only"]
    assert ids(retriever.sparse_retriever.retrieve("returned")) == ["only"]
    retriever.persist(tmp_path / "one")
    loaded = HybridRetriever.from_persist_dir(tmp_path / "one", embed_model=keyword_embedding)
    assert ids(loaded.retrieve("returned electronics")) == ["only"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"similarity_top_k": 0}, "similarity_top_k"),
        ({"similarity_top_k": 1.5}, "similarity_top_k"),
        ({"k1": -1}, "k1 must be a finite number >= 0"),
        ({"b": 2}, r"b must be a number in \[0, 1\]"),
        ({"method": "bm99"}, "unknown BM25 method 'bm99'"),
        ({"language": "klingon"}, "unknown stemmer language 'klingon'"),
        ({"filters": "store=x"}, "filters must be llama_index MetadataFilters"),
        ({"stopwords": "xx"}, "stopwords='xx': xx not recognized"),
        ({"stopwords": 5}, "stopwords must be a language code, a list of words or None"),
        ({"language": 5}, "language must be a stemmer name or None"),
        ({"token_pattern": "("}, "token_pattern '\\(' is not a valid regular expression"),
        ({"metadata_mode": "everything"}, "metadata_mode must be one of"),
    ],
)
def test_bm25_arguments(store_nodes, kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        BM25Retriever(store_nodes, **kwargs)


def test_top_k_set_after_construction_is_checked_too(hybrid, store_nodes):
    bm25 = BM25Retriever(store_nodes, similarity_top_k=3)
    for retriever, name in (
        (hybrid, "similarity_top_k"),
        (hybrid, "dense_top_k"),
        (hybrid, "sparse_top_k"),
        (bm25, "similarity_top_k"),
    ):
        before = getattr(retriever, name)
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1, got 0"):
            setattr(retriever, name, 0)
        with pytest.raises(TypeError, match=name):
            setattr(retriever, name, 2.5)
        assert getattr(retriever, name) == before  # the bad value was not kept
    hybrid.similarity_top_k = 2
    assert len(hybrid.retrieve("apple return policy")) == 2


def test_a_query_embedding_of_the_wrong_size_or_with_nan_is_named(hybrid):
    with pytest.raises(ValueError, match=r"shape \(5,\) but the index holds"):
        hybrid.retrieve(QueryBundle(query_str="apples", embedding=[0.1] * 5))
    dim = hybrid.index.vector_store.client.d
    with pytest.raises(ValueError, match="NaN or infinite"):
        hybrid.retrieve(QueryBundle(query_str="apples", embedding=[math.nan] * dim))


def test_metadata_that_is_not_json_is_named_before_anything_is_written(
    store_nodes, keyword_embedding, tmp_path
):
    import datetime

    retriever = HybridRetriever.from_defaults(nodes=store_nodes, embed_model=keyword_embedding)
    retriever.persist(tmp_path / "h")
    before = sorted(p.name for p in (tmp_path / "h").rglob("*"))
    odd = TextNode(
        id_="dated", text="opened box fee", metadata={"since": datetime.date(2020, 1, 1)}
    )
    bad = HybridRetriever.from_defaults(nodes=[*store_nodes, odd], embed_model=keyword_embedding)
    with pytest.raises(TypeError, match="node 'dated' has metadata 'since' of type date"):
        bad.persist(tmp_path / "h")
    with pytest.raises(TypeError, match="node 'dated'"):
        BM25Retriever([*store_nodes, odd]).persist(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "h").rglob("*")) == before
    assert not (tmp_path / "b").exists()
    HybridRetriever.from_persist_dir(tmp_path / "h", embed_model=keyword_embedding)
