"""HNSW / IVF / IVF-PQ dense sides: built from one argument, exact filters, persisted with their config."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
from llama_index.core.schema import MetadataMode, QueryBundle
from llama_index.core.vector_stores.types import (
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

from llama_index_ragtune.retrievers import (
    FaissIndexConfig,
    FilterableFaissVectorStore,
    HybridRetriever,
    PersistenceError,
)
from tests.retrievers.conftest import HashEmbedding, topical_nodes

KINDS = ("hnsw", "ivf", "ivfpq")
MANIFEST = "hybrid_retriever.json"


def _config(kind: str, **extra) -> FaissIndexConfig:
    # small corpora: 4-bit PQ codes (16 per sub-quantiser) train on a few hundred vectors
    if kind == "ivfpq":
        extra = {"pq_m": 16, "pq_nbits": 4} | extra
    return FaissIndexConfig(kind=kind, **extra)


@pytest.fixture(scope="module")
def nodes():
    return topical_nodes(1200, seed=1)


@pytest.fixture(scope="module")
def embed():
    return HashEmbedding()


@pytest.fixture(scope="module")
def flat(nodes, embed):
    return HybridRetriever.from_defaults(nodes=nodes, embed_model=embed, micro_batch=False)


def _queries(embed: HashEmbedding, n: int = 40) -> list[str]:
    return [f"returns{i % 40} shipping{(3 * i) % 40} word{i}" for i in range(n)]


def _dense_ids(retriever: HybridRetriever, query: str, k: int = 10) -> list[str]:
    store = retriever.index.vector_store
    vector = retriever.embed_model.get_query_embedding(query)
    filters = retriever.filters
    result = store.query(
        VectorStoreQuery(query_embedding=vector, similarity_top_k=k, filters=filters)
    )
    nodes_dict = retriever.index.index_struct.nodes_dict
    return [nodes_dict[i] for i in result.ids]


def _recall(approx: HybridRetriever, exact: HybridRetriever, queries: list[str]) -> float:
    hits = [len(set(_dense_ids(approx, q)) & set(_dense_ids(exact, q))) / 10 for q in queries]
    return float(np.mean(hits))


@pytest.mark.parametrize("kind", KINDS)
def test_one_argument_builds_each_kind_close_to_exact(kind, nodes, embed, flat):
    retriever = HybridRetriever.from_defaults(
        nodes=nodes, embed_model=embed, dense_index=_config(kind), micro_batch=False
    )
    store = retriever.index.vector_store
    expected = {"hnsw": faiss.IndexHNSWFlat, "ivf": faiss.IndexIVFFlat, "ivfpq": faiss.IndexIVFPQ}
    assert isinstance(store.client, expected[kind])
    assert store.client.ntotal == len(nodes)
    recall = _recall(retriever, flat, _queries(embed))
    # graph / full-vector lists on 1,200 vectors are near exact; 4-bit PQ codes are coarse
    assert recall >= (0.95 if kind != "ivfpq" else 0.5), recall
    fused = retriever.retrieve("returns3 warranty7")
    assert len(fused) == 10


def test_string_kind_uses_defaults(nodes, embed):
    retriever = HybridRetriever.from_defaults(
        nodes=nodes[:400], embed_model=embed, dense_index="hnsw", micro_batch=False
    )
    config = retriever.index.vector_store.index_config()
    assert (config.kind, config.hnsw_m, config.ef_construction, config.ef_search) == (
        "hnsw",
        32,
        200,
        128,
    )


def test_ivf_nlist_is_chosen_from_the_corpus_size(embed):
    small = topical_nodes(100, seed=2)
    retriever = HybridRetriever.from_defaults(
        nodes=small, embed_model=embed, dense_index="ivf", micro_batch=False
    )
    config = retriever.index.vector_store.index_config()
    assert config.nlist == 100 // 39  # at most N / 39 lists: 39 training points each
    assert retriever.index.vector_store.client.nlist == config.nlist
    assert len(retriever.retrieve("grocery1 grocery2")) == 10


def test_ivf_fills_top_k_when_probed_lists_run_short(nodes, embed, flat):
    retriever = HybridRetriever.from_defaults(
        nodes=nodes,
        embed_model=embed,
        dense_index=FaissIndexConfig(kind="ivf", nlist=30, nprobe=1),
        micro_batch=False,
    )
    store = retriever.index.vector_store
    vector = embed.get_query_embedding("returns1 returns2")
    query = VectorStoreQuery(query_embedding=vector, similarity_top_k=300)
    direct_ids = store.client.search(np.asarray([vector], dtype=np.float32), 300)[1][0]
    assert (direct_ids < 0).any()  # one list of ~40 vectors cannot fill 300
    result = store.query(query)
    assert len(result.ids) == 300 and len(set(result.ids)) == 300


FILTERS = {
    "narrow (one topic, one year)": (
        MetadataFilters(
            filters=[
                MetadataFilter(key="topic", value="billing"),
                MetadataFilter(key="year", value=2003),
            ]
        ),
        lambda m: m["topic"] == "billing" and m["year"] == 2003,
    ),
    "broad (rank < 5)": (
        MetadataFilters(filters=[MetadataFilter(key="rank", value=5, operator="<")]),
        lambda m: m["rank"] < 5,
    ),
}


@pytest.fixture(scope="module")
def indexed(nodes, embed):
    """The vectors the dense side indexes (text + embedded metadata), one row per node."""
    texts = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    return np.asarray([embed.get_text_embedding(t) for t in texts])


def _exact(nodes, indexed, embed, query: str, allowed, k: int) -> dict[str, float]:
    """The exact filtered top-k: node id -> cosine similarity."""
    scores = indexed @ np.asarray(embed.get_query_embedding(query))
    order = [i for i in np.argsort(-scores, kind="stable") if allowed(nodes[i].metadata)]
    return {nodes[i].node_id: float(scores[i]) for i in order[:k]}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(FILTERS))
@pytest.mark.parametrize("exhaustive_below", [20_000, 0])
def test_filters_on_approximate_indexes(kind, name, exhaustive_below, nodes, embed, indexed):
    filters, allowed = FILTERS[name]
    # a narrow search (nprobe=2, efSearch=16), so the approximate path is really approximate
    retriever = HybridRetriever.from_defaults(
        nodes=nodes,
        embed_model=embed,
        dense_index=_config(kind, nprobe=2, ef_search=16),
        filters=filters,
        dense_top_k=10,
        micro_batch=False,
    )
    unfiltered = retriever.with_filters(None)
    retriever.index.vector_store.exhaustive_below = exhaustive_below
    n_allowed = sum(allowed(n.metadata) for n in nodes)
    exact_scan = exhaustive_below >= n_allowed
    by_id = {n.node_id: n for n in nodes}
    recalls, unfiltered_recalls = [], []
    for query in _queries(embed, 20):
        got = _dense_ids(retriever, query)
        assert all(allowed(by_id[i].metadata) for i in got)  # never a filtered-out node
        assert len(got) == min(10, n_allowed)  # filled from allowed nodes
        truth = _exact(nodes, indexed, embed, query, allowed, 10)
        if exact_scan and kind != "ivfpq":  # the exhaustive scan of full vectors is exact
            # the same top-k scores (a tie at the k-th place may swap equal-score nodes)
            every = _exact(nodes, indexed, embed, query, lambda m: True, len(nodes))
            assert np.allclose(sorted(every[i] for i in got), sorted(truth.values()), atol=1e-5)
        recalls.append(len(set(got) & set(truth)) / 10)
        plain = _exact(nodes, indexed, embed, query, lambda m: True, 10)
        unfiltered_recalls.append(len(set(_dense_ids(unfiltered, query)) & set(plain)) / 10)
        fused = retriever.retrieve(query)
        assert all(allowed(n.node.metadata) for n in fused)
    # widened search: a filter costs no recall against the same index unfiltered
    assert np.mean(recalls) >= np.mean(unfiltered_recalls) - 0.02, (
        np.mean(recalls),
        np.mean(unfiltered_recalls),
    )


@pytest.mark.parametrize("kind", ("flat", *KINDS))
def test_persist_records_the_index_and_reloads_it(kind, nodes, embed, tmp_path):
    config = FaissIndexConfig(kind="flat") if kind == "flat" else _config(kind)
    retriever = HybridRetriever.from_defaults(
        nodes=nodes[:600], embed_model=embed, dense_index=config, micro_batch=False
    )
    store = retriever.index.vector_store
    if kind == "hnsw":
        store.set_search_params(ef_search=77)
    elif kind != "flat":
        store.set_search_params(nprobe=3)
    retriever.persist(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    recorded = manifest["dense"]["index"]
    assert manifest["dense"]["kind"] == "faiss"
    assert manifest["dense"]["index_type"] == type(store.client).__name__
    assert recorded["kind"] == kind
    if kind == "hnsw":
        assert (recorded["hnsw_m"], recorded["ef_search"]) == (32, 77)
    elif kind != "flat":
        assert recorded["nprobe"] == 3 and recorded["nlist"] == store.client.nlist
        assert recorded["train_size"] == config.resolve(600, 32).train_size
    again = HybridRetriever.from_persist_dir(tmp_path / "idx", embed_model=embed)
    assert type(again.index.vector_store.client) is type(store.client)
    assert again.index.vector_store.index_config() == store.index_config()
    for query in _queries(embed, 10):
        assert _dense_ids(again, query) == _dense_ids(retriever, query)
        assert [n.node.node_id for n in again.retrieve(query)] == [
            n.node.node_id for n in retriever.retrieve(query)
        ]


def test_folder_without_index_section_still_loads(nodes, embed, tmp_path):
    retriever = HybridRetriever.from_defaults(
        nodes=nodes[:200], embed_model=embed, micro_batch=False
    )
    retriever.persist(tmp_path / "idx")
    path = tmp_path / "idx" / MANIFEST
    manifest = json.loads(path.read_text())
    del manifest["dense"]["index"]  # as written before index types were recorded
    path.write_text(json.dumps(manifest))
    again = HybridRetriever.from_persist_dir(tmp_path / "idx", embed_model=embed)
    assert isinstance(again.index.vector_store.client, faiss.IndexFlatIP)
    assert len(again.retrieve("returns1")) == 10


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"kind": "ivf"}, "records a 'ivf' index but .* holds IndexHNSWFlat"),
        ({"ef_search": 0}, "invalid 'dense.index'"),
        ({"kind": "annoy"}, "invalid 'dense.index'"),
    ],
)
def test_manifest_index_section_is_checked(edit, message, nodes, embed, tmp_path):
    retriever = HybridRetriever.from_defaults(
        nodes=nodes[:200], embed_model=embed, dense_index="hnsw", micro_batch=False
    )
    retriever.persist(tmp_path / "idx")
    path = tmp_path / "idx" / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["dense"]["index"].update(edit)
    path.write_text(json.dumps(manifest))
    with pytest.raises(PersistenceError, match=message):
        HybridRetriever.from_persist_dir(tmp_path / "idx", embed_model=embed)


# ---------------------------------------------------------------------- bad input


def test_unknown_kind_and_wrong_type(nodes, embed):
    with pytest.raises(
        ValueError, match=r"dense_index='annoy' .* \('flat', 'hnsw', 'ivf', 'ivfpq'\)"
    ):
        HybridRetriever.from_defaults(nodes=nodes[:50], embed_model=embed, dense_index="annoy")
    with pytest.raises(TypeError, match="dense_index must be .* got int"):
        HybridRetriever.from_defaults(nodes=nodes[:50], embed_model=embed, dense_index=3)
    with pytest.raises(ValueError, match="hnsw_m"):
        FaissIndexConfig(kind="hnsw", hnsw_m=1)


def test_dense_index_with_a_given_index_is_refused(flat, embed):
    with pytest.raises(ValueError, match="dense_index .* does not apply to the index="):
        HybridRetriever.from_defaults(index=flat.index, embed_model=embed, dense_index="hnsw")


def test_corpus_too_small_to_train(embed):
    tiny = topical_nodes(60, seed=3)
    with pytest.raises(ValueError, match=r"nlist=100\) needs at least nlist .* corpus has 60"):
        HybridRetriever.from_defaults(
            nodes=tiny, embed_model=embed, dense_index=FaissIndexConfig(kind="ivf", nlist=100)
        )
    with pytest.raises(ValueError, match=r"pq_nbits=8\) trains 256 codes .* \(corpus 60\)"):
        HybridRetriever.from_defaults(nodes=tiny, embed_model=embed, dense_index="ivfpq")
    with pytest.raises(ValueError, match=r"pq_m=5\) must divide the vector dimension 32"):
        HybridRetriever.from_defaults(
            nodes=tiny,
            embed_model=embed,
            dense_index=FaissIndexConfig(kind="ivfpq", pq_m=5, pq_nbits=2),
        )


def test_search_params_are_checked(nodes, embed):
    retriever = HybridRetriever.from_defaults(
        nodes=nodes[:200], embed_model=embed, dense_index="hnsw", micro_batch=False
    )
    store = retriever.index.vector_store
    with pytest.raises(ValueError, match="nprobe applies to IVF indexes; .* IndexHNSWFlat"):
        store.set_search_params(nprobe=4)
    with pytest.raises(ValueError, match="ef_search must be an integer >= 1, got 0"):
        store.set_search_params(ef_search=0)
    store.set_search_params(ef_search=8)
    assert store.search_params() == {"ef_search": 8}


def test_untrained_index_refuses_vectors(nodes):
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(32), 32, 4, faiss.METRIC_INNER_PRODUCT)
    store = FilterableFaissVectorStore(index)
    node = nodes[0].model_copy()
    node.embedding = [1.0] * 32
    with pytest.raises(ValueError, match="IndexIVFFlat is not trained; train it"):
        store.add([node])


def test_query_bundle_with_embedding_uses_the_index(nodes, embed):
    retriever = HybridRetriever.from_defaults(
        nodes=nodes[:300], embed_model=embed, dense_index="hnsw", micro_batch=False
    )
    bundle = QueryBundle("returns1", embedding=embed.get_query_embedding("returns1"))
    assert [n.node.node_id for n in retriever.retrieve(bundle)] == [
        n.node.node_id for n in retriever.retrieve("returns1")
    ]
