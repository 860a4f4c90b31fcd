"""HardNegativeMiner: sources, false-negative filters, range control, curated confusers, errors."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import TextNode

from llama_index_ragtune.data.negatives import HardNegativeMiner
from llama_index_ragtune.data.schema import RetrievalDataset, normalize_text

STORE = {
    "groc-apple": (
        "grocery",
        "Grocery returns: fresh apples and other fruit can be returned within 7 days with a receipt.",
    ),
    "groc-bread": ("grocery", "Grocery bakery: bread and cakes are baked fresh every morning."),
    "groc-milk": ("grocery", "Grocery dairy: milk must be returned unopened before its date."),
    "elec-apple": (
        "electronics",
        "Electronics returns: Apple iPhone and MacBook returns are accepted within 14 days.",
    ),
    "elec-tv": ("electronics", "Electronics: television warranty covers defects for two years."),
    "elec-cable": (
        "electronics",
        "Electronics: cables and chargers can be returned within 30 days.",
    ),
    "pharm-refill": ("pharmacy", "Pharmacy: prescription refills are ready within 24 hours."),
    "pharm-flu": ("pharmacy", "Pharmacy: flu shots take ten minutes and need no prescription."),
    "garden-seeds": ("garden", "Garden centre: seeds and bulbs cannot be returned once opened."),
    "garden-tools": (
        "garden",
        "Garden centre: tools can be returned within 30 days with a receipt.",
    ),
    "hours": ("store", "Store opening hours: every day from 8 am to 10 pm."),
    "parking": ("store", "Parking is free for two hours with any purchase."),
}
NODES = [
    TextNode(id_=k, text=t, metadata={"department": d}, excluded_embed_metadata_keys=["department"])
    for k, (d, t) in STORE.items()
]
CORPUS = {k: t for k, (_, t) in STORE.items()}


def store_dataset(**overrides) -> RetrievalDataset:
    data = dict(
        queries={
            "q-apple": "apple return policy?",
            "q-refill": "how long do prescription refills take",
            "q-tools": "can I return garden tools",
            "q-receipt": "returns with a receipt",
        },
        corpus=dict(CORPUS),
        relevant_docs={
            "q-apple": ["groc-apple"],
            "q-refill": ["pharm-refill"],
            "q-tools": ["garden-tools"],
            "q-receipt": ["groc-apple", "garden-tools"],
        },
    )
    data.update(overrides)
    return RetrievalDataset(**data)


def bm25_miner(**kwargs) -> HardNegativeMiner:
    kwargs.setdefault("relative_margin", None)
    return HardNegativeMiner(sources=("bm25",), show_progress=False, **kwargs)


@pytest.fixture(scope="module")
def minilm(minilm_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu")


@pytest.fixture(scope="module")
def tiny_encoder(tiny_encoder_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(tiny_encoder_path, device="cpu")


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory, minilm_path):
    """A tiny random BERT cross-encoder (1 logit) with the real MiniLM tokenizer."""
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    out = tmp_path_factory.mktemp("tiny_ce")
    tok = AutoTokenizer.from_pretrained(minilm_path)
    import torch

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(out)
    tok.save_pretrained(out)
    return CrossEncoder(str(out), device="cpu", max_length=64)


def all_negative_ids(ds: RetrievalDataset) -> dict[str, list[str]]:
    return {q: [n.doc_id for n in v] for q, v in ds.negatives.items()}


# --------------------------------------------------------------------------- bm25


def test_bm25_negatives_exclude_positives_and_record_source():
    ds = store_dataset()
    miner = bm25_miner(num_negatives=3)
    out = miner.mine(ds)
    assert out is not ds and ds.negatives == {}
    for _qid, _, positives, negatives in out:
        assert 0 < len(negatives) <= 3
        assert not {n.doc_id for n in negatives} & set(positives)
        assert all(n.source == "bm25" and n.score > 0 for n in negatives)
        ranks = [n.rank for n in negatives]
        assert ranks == sorted(ranks) and ranks[0] >= 1
        scores = [n.score for n in negatives]
        assert scores == sorted(scores, reverse=True)
    # lexical false positive: the electronics Apple page for the grocery apple query
    assert "elec-apple" in all_negative_ids(out)["q-apple"]
    stats = miner.mine_stats
    assert stats.negatives["bm25"] == out.num_negatives
    assert stats.filtered["bm25"]["positive"] >= 4
    assert out.metadata["mining"]["stats"]["negatives"] == {"bm25": out.num_negatives}


def test_shared_positives_and_duplicate_queries_are_never_negatives():
    # "groc-apple" answers q-apple and q-receipt; q-apple-2 has q-apple's text with another positive.
    queries = {
        "q-apple": "apple return policy?",
        "q-receipt": "returns with a receipt",
        "q-apple-2": "Apple return policy",
        "q-tools": "can I return garden tools",
    }
    relevant = {
        "q-apple": ["groc-apple"],
        "q-receipt": ["groc-apple", "garden-tools"],
        "q-apple-2": ["elec-apple"],
        "q-tools": ["garden-tools"],
    }
    ds = store_dataset(queries=queries, relevant_docs=relevant)
    out = bm25_miner(num_negatives=20, range_max=20).mine(ds)
    negs = all_negative_ids(out)
    for qid in queries:
        same_text = [
            q for q in queries if normalize_text(queries[q]) == normalize_text(queries[qid])
        ]
        forbidden = {d for q in same_text for d in relevant[q]}
        assert not forbidden & set(negs.get(qid, []))
    assert "elec-apple" not in negs["q-apple"]  # positive of the same question asked twice
    assert "groc-apple" not in negs["q-receipt"] and "garden-tools" not in negs["q-receipt"]
    # a positive of an unrelated query is a fine negative
    assert "garden-tools" in negs["q-apple"] or "groc-apple" in negs["q-tools"]


def test_range_min_range_max_and_num_negatives():
    ds = store_dataset()
    full = all_negative_ids(bm25_miner(num_negatives=20, range_max=20).mine(ds))
    skipped = bm25_miner(num_negatives=20, range_min=2, range_max=20).mine(ds)
    for qid, _, _, negs in skipped:
        assert all(n.rank > 2 for n in negs)
        assert [n.doc_id for n in negs] == full[qid][2:]
    windowed = bm25_miner(num_negatives=20, range_max=3).mine(ds)
    assert all(n.rank <= 3 for negs in windowed.negatives.values() for n in negs)
    two = bm25_miner(num_negatives=2).mine(ds)
    assert {q: len(v) for q, v in two.negatives.items()} == {
        q: min(2, len(v)) for q, v in full.items()
    }
    assert all_negative_ids(two)["q-apple"] == full["q-apple"][:2]


def test_random_sampling_is_seeded_and_inside_the_window():
    ds = store_dataset()
    runs = [
        bm25_miner(num_negatives=2, range_max=6, sampling="random", seed=s).mine(ds)
        for s in (0, 0, 1, 2, 3)
    ]
    assert runs[0].negatives == runs[1].negatives
    assert any(r.negatives != runs[0].negatives for r in runs[2:])
    for run in runs:
        assert all(n.rank <= 6 and n.source == "bm25" for v in run.negatives.values() for n in v)


def test_dedupe_text_drops_copies_of_a_positive():
    corpus = dict(CORPUS, **{"groc-apple-copy": CORPUS["groc-apple"].upper().replace(".", "!")})
    ds = store_dataset(corpus=corpus)
    miner = bm25_miner(num_negatives=20, range_max=20)
    assert "groc-apple-copy" not in all_negative_ids(miner.mine(ds))["q-apple"]
    assert miner.mine_stats.filtered["bm25"]["same_text"] >= 2  # q-apple and q-receipt
    loose = bm25_miner(num_negatives=20, range_max=20, dedupe_text=False).mine(ds)
    assert "groc-apple-copy" in all_negative_ids(loose)["q-apple"]


# --------------------------------------------------------------------------- dense + filters


def test_margin_filters_remove_a_near_duplicate_of_the_positive(minilm):
    near_dup = "Grocery returns: fresh apples and other fruits may be returned within seven days with the receipt."
    ds = store_dataset(corpus=dict(CORPUS, **{"near-dup": near_dup}))
    kwargs = dict(sources=("dense",), embed_model=minilm, num_negatives=3, show_progress=False)
    q = minilm.encode_query(["apple return policy?"], normalize_embeddings=True)[0]
    pos, dup = (
        minilm.encode_document([CORPUS["groc-apple"], near_dup], normalize_embeddings=True) @ q
    ).tolist()
    assert dup > pos  # the near-duplicate looks more relevant than the positive itself

    plain = HardNegativeMiner(relative_margin=None, **kwargs).mine(ds)
    by_id = {n.doc_id: n for n in plain.negatives["q-apple"]}
    assert "near-dup" in by_id and by_id["near-dup"].score == pytest.approx(dup, abs=1e-4)

    # the other runs reuse the corpus embeddings instead of encoding the corpus again
    kwargs["corpus_embeddings"] = minilm.encode_document(
        list(ds.corpus.values()), normalize_embeddings=True
    )
    miner = HardNegativeMiner(relative_margin=0.95, **kwargs)
    relative = miner.mine(ds)
    assert "near-dup" not in all_negative_ids(relative)["q-apple"]
    assert all(n.score <= 0.95 * pos for n in relative.negatives["q-apple"])
    assert miner.mine_stats.filtered["dense"]["relative_margin"] >= 1
    assert len(relative.negatives["q-apple"]) == 3  # the window refills from lower ranks

    margin = HardNegativeMiner(relative_margin=None, margin=0.05, **kwargs).mine(ds)
    assert "near-dup" not in all_negative_ids(margin)["q-apple"]
    assert all(n.score <= pos - 0.05 for n in margin.negatives["q-apple"])
    capped = HardNegativeMiner(
        relative_margin=None, max_score={"dense": dup - 1e-4}, **kwargs
    ).mine(ds)
    assert "near-dup" not in all_negative_ids(capped)["q-apple"]
    assert all(n.score <= dup for n in capped.negatives["q-apple"])


def test_bm25_and_dense_combined_without_duplicates(tiny_encoder):
    ds = store_dataset()
    miner = HardNegativeMiner(
        sources=("bm25", "dense"),
        embed_model=tiny_encoder,
        num_negatives={"bm25": 1, "dense": 2},
        relative_margin=None,
        show_progress=False,
    )
    out = miner.mine(ds)
    for _, _, positives, negs in out:
        assert [n.source for n in negs] == ["bm25", "dense", "dense"]
        ids = [n.doc_id for n in negs]
        assert len(set(ids)) == len(ids) and not set(ids) & set(positives)
    assert out.negative_sources() == {"bm25": 4, "dense": 8}
    assert miner.mine_stats.negatives == {"bm25": 4, "dense": 8}


def test_precomputed_embeddings_and_cache(tiny_encoder, tiny_encoder_path, tmp_path, monkeypatch):
    ds = store_dataset()
    kwargs = dict(sources=("dense",), num_negatives=3, relative_margin=None, show_progress=False)
    reference = HardNegativeMiner(embed_model=tiny_encoder, **kwargs).mine(ds)
    emb = tiny_encoder.encode_document(list(ds.corpus.values()), normalize_embeddings=True)
    pre = HardNegativeMiner(embed_model=tiny_encoder, corpus_embeddings=emb, **kwargs).mine(ds)
    assert all_negative_ids(pre) == all_negative_ids(reference)

    cached = HardNegativeMiner(
        embed_model=tiny_encoder_path, embedding_cache_dir=tmp_path, **kwargs
    )
    first = cached.mine(ds)
    assert len(list(tmp_path.glob("*.sqlite"))) == 1
    from sentence_transformers import SentenceTransformer

    def no_corpus_encoding(*args, **kw):
        raise AssertionError("corpus re-embedded despite the cache")

    monkeypatch.setattr(SentenceTransformer, "encode_document", no_corpus_encoding)
    assert (
        all_negative_ids(cached.mine(ds)) == all_negative_ids(first) == all_negative_ids(reference)
    )

    with pytest.raises(ValueError, match="corpus_embeddings must have shape"):
        HardNegativeMiner(embed_model=tiny_encoder, corpus_embeddings=emb[:3], **kwargs).mine(ds)


def test_dense_cache_follows_weights_retrained_in_place(tiny_encoder_path, tmp_path):
    import shutil

    import torch
    from sentence_transformers import SentenceTransformer

    from llama_index_ragtune.finetuning.ranking_eval import DenseRetrievalEvaluator

    folder = tmp_path / "model"
    shutil.copytree(tiny_encoder_path, folder)
    cache = tmp_path / "cache"
    ds = store_dataset()
    kwargs = dict(sources=("dense",), num_negatives=3, relative_margin=None, show_progress=False)
    HardNegativeMiner(embed_model=str(folder), embedding_cache_dir=cache, **kwargs).mine(ds)
    assert len(list(cache.glob("*.sqlite"))) == 1

    # the validation evaluator reads the miner's vectors: one store, one key
    model = SentenceTransformer(str(folder))
    evaluator = DenseRetrievalEvaluator(
        ds.queries, ds.corpus, ds.relevant_docs, top_k=5, show_progress_bar=False, cache_dir=cache
    )
    evaluator.evaluate(model)
    assert len(list(cache.glob("*.sqlite"))) == 1

    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    model.save(str(folder))  # retrained in place: same folder, new weights
    HardNegativeMiner(embed_model=str(folder), embedding_cache_dir=cache, **kwargs).mine(ds)
    assert len(list(cache.glob("*.sqlite"))) == 2


class BagOfWordsEmbedding(BaseEmbedding):
    """A LlamaIndex embedding hashing words into 64 buckets."""

    def _vec(self, text: str) -> list[float]:
        v = np.zeros(64)
        for w in normalize_text(text).split():
            v[sum(map(ord, w)) % 64] += 1.0
        return v.tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vec(text)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)


def test_llama_index_embedding_as_dense_source():
    ds = store_dataset()
    embed = BagOfWordsEmbedding()
    out = HardNegativeMiner(
        sources=("dense",),
        embed_model=embed,
        num_negatives=2,
        relative_margin=None,
        show_progress=False,
    ).mine(ds)
    q = np.asarray(embed.get_query_embedding("apple return policy?"))
    docs = {
        d: np.asarray(embed.get_text_embedding(t))
        for d, t in ds.corpus.items()
        if d != "groc-apple"
    }
    cosine = {
        d: float(v @ q / (np.linalg.norm(v) * np.linalg.norm(q) or 1.0)) for d, v in docs.items()
    }
    negs = out.negatives["q-apple"]
    assert [n.source for n in negs] == ["dense", "dense"]
    assert [n.score for n in negs] == pytest.approx(
        sorted(cosine.values(), reverse=True)[:2], abs=1e-5
    )
    assert cosine[negs[0].doc_id] == pytest.approx(negs[0].score, abs=1e-5)


# --------------------------------------------------------------------------- curated + cross-encoder


def test_curated_callable_the_apple_case():
    """A grocery 'apple return policy?' gets the electronics 'Apple returns' page as a confuser."""
    department = {n.node_id: n.metadata["department"] for n in NODES}
    ds = RetrievalDataset.from_pairs(
        [
            ("apple return policy?", ["groc-apple"]),
            ("how long do prescription refills take", ["pharm-refill"]),
        ],
        NODES,
    )

    def same_term_other_department(qid, query, positive_ids, dataset):
        own = {department[p] for p in positive_ids}
        terms = set(normalize_text(query).split()) - {"how", "long", "do", "take"}
        return [
            d
            for d, text in dataset.corpus.items()
            if department[d] not in own and terms & set(normalize_text(text).split())
        ]

    miner = HardNegativeMiner(
        sources=("curated", "bm25"),
        curated=same_term_other_department,
        num_negatives=2,
        relative_margin=None,
        show_progress=False,
    )
    out = miner.mine(ds)
    apple_q = next(q for q, t in out.queries.items() if t.startswith("apple"))
    negs = out.negatives[apple_q]
    assert negs[0].doc_id == "elec-apple" and negs[0].source == "curated" and negs[0].rank == 1
    assert [n.source for n in negs].count("bm25") == 2
    assert len({n.doc_id for n in negs}) == len(negs)  # bm25 did not take the curated one again
    assert miner.mine_stats.negatives["curated"] == sum(
        n.source == "curated" for v in out.negatives.values() for n in v
    )


def test_curated_mapping_skips_positives_with_a_warning():
    ds = store_dataset()
    miner = HardNegativeMiner(
        sources=(), curated={"q-apple": ["elec-apple", "groc-apple", "hours"]}, show_progress=False
    )
    with pytest.warns(UserWarning, match="1 curated negatives are positives"):
        out = miner.mine(ds)
    assert out.negatives == {"q-apple": [out.negatives["q-apple"][0], out.negatives["q-apple"][1]]}
    assert [(n.doc_id, n.rank) for n in out.negatives["q-apple"]] == [
        ("elec-apple", 1),
        ("hours", 3),
    ]
    assert miner.mine_stats.filtered["curated"]["positive"] == 1


def test_cross_encoder_rescoring_filters_candidates(tiny_cross_encoder):
    ds = store_dataset()
    pairs = [(q, t) for q in ds.queries.values() for t in ds.corpus.values()]
    threshold = float(np.median(tiny_cross_encoder.predict(pairs)))
    miner = bm25_miner(
        num_negatives=20,
        range_max=20,
        cross_encoder=tiny_cross_encoder,
        cross_encoder_max_score=threshold,
    )
    out = miner.mine(ds)
    kept = [(ds.queries[q], ds.corpus[n.doc_id]) for q, v in out.negatives.items() for n in v]
    assert kept and all(s <= threshold for s in tiny_cross_encoder.predict(kept))
    removed = miner.mine_stats.filtered["bm25"]["cross_encoder"]
    unfiltered = bm25_miner(num_negatives=20, range_max=20).mine(ds)
    assert removed > 0 and removed + out.num_negatives == unfiltered.num_negatives


def test_cross_encoder_callable_and_margin():
    ds = store_dataset()

    def judge(pairs):  # "answers" = the passage mentions a word of the query other than 'return'
        return [
            float(
                len(
                    (
                        set(normalize_text(q).split())
                        - {"return", "returns", "with", "a", "can", "i"}
                    )
                    & set(normalize_text(p).split())
                )
                > 0
            )
            for q, p in pairs
        ]

    out = bm25_miner(
        num_negatives=20, range_max=20, cross_encoder=judge, cross_encoder_margin=0.5
    ).mine(ds)
    for _qid, query, _, negs in out:
        assert negs == [] or all(judge([(query, ds.corpus[n.doc_id])]) == [0.0] for n in negs)
    assert "elec-apple" not in all_negative_ids(out).get("q-apple", [])


# --------------------------------------------------------------------------- errors


def test_clear_errors_on_bad_input():
    with pytest.raises(ValueError, match="unknown negative source.*'sparse'"):
        HardNegativeMiner(sources=("bm25", "sparse"))
    with pytest.raises(ValueError, match="needs `curated=`"):
        HardNegativeMiner(sources=("curated",))
    with pytest.raises(TypeError, match="curated must be"):
        HardNegativeMiner(curated=42)
    with pytest.raises(ValueError, match="range_min < range_max"):
        HardNegativeMiner(range_min=5, range_max=5)
    with pytest.raises(ValueError, match="relative_margin must be in"):
        HardNegativeMiner(relative_margin=1.5)
    with pytest.warns(UserWarning, match="use 0.95"):
        HardNegativeMiner(relative_margin=0.05)
    with pytest.raises(ValueError, match="cross_encoder_max_score"):
        HardNegativeMiner(cross_encoder=lambda pairs: [0.0] * len(pairs))
    with pytest.raises(TypeError, match="RetrievalDataset"):
        bm25_miner().mine({"queries": {}})
    ds = store_dataset()
    with pytest.raises(ValueError, match="unknown doc ids 'ghost'"):
        HardNegativeMiner(sources=(), curated={"q-apple": ["ghost"]}, show_progress=False).mine(ds)
    with pytest.raises(ValueError, match="unknown query ids 'q-none'"):
        HardNegativeMiner(sources=(), curated={"q-none": ["hours"]}, show_progress=False).mine(ds)
    with pytest.raises(ValueError, match="without any positive document: 'q-apple'"):
        store_dataset(
            relevant_docs={
                "q-apple": [],
                "q-refill": ["pharm-refill"],
                "q-tools": ["hours"],
                "q-receipt": ["hours"],
            }
        )


# --------------------------------------------------------------------------- real data


@pytest.mark.data
def test_scifact_bm25_and_dense_negatives_respect_every_positive(scifact_dir, minilm):
    full = RetrievalDataset.from_beir(scifact_dir, split="train")
    doc_queries: dict[str, list[str]] = {}
    for qid, docs in full.relevant_docs.items():
        for d in docs:
            doc_queries.setdefault(d, []).append(qid)
    qids: list[str] = []
    for queries_of_doc in doc_queries.values():  # whole groups of queries sharing a positive
        if len(queries_of_doc) > 1 and len(qids) < 40:
            qids.extend(q for q in queries_of_doc if q not in qids)
    qids += [q for q in full.queries if q not in qids][: 50 - len(qids)]
    # these queries' positives + 200 other abstracts keep the test fast and the corpus realistic
    keep = {d for q in qids for d in full.relevant_docs[q]}
    keep |= set(random.Random(0).sample(sorted(full.corpus), 200))
    ds = RetrievalDataset(
        queries=full.queries, corpus=full.corpus, relevant_docs=full.relevant_docs
    ).subset(qids)
    ds = RetrievalDataset(
        ds.queries, {d: t for d, t in ds.corpus.items() if d in keep}, ds.relevant_docs
    )
    minilm.max_seq_length = 128
    miner = HardNegativeMiner(
        sources=("bm25", "dense"),
        embed_model=minilm,
        num_negatives=3,
        range_max=30,
        show_progress=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = miner.mine(ds)
    assert len(out) == 50
    shared_in_run = [d for d, qs in doc_queries.items() if len(set(qs) & set(qids)) > 1]
    assert len(shared_in_run) >= 10
    assert out.negative_sources().keys() == {"bm25", "dense"}
    assert sum(bool(negs) for negs in out.negatives.values()) >= 45
    for qid, _, positives, negs in out:
        for n in negs:
            assert n.doc_id not in positives
            # a positive of another query is allowed, but never one of a query sharing this query's text
            for other in doc_queries.get(n.doc_id, []):
                assert normalize_text(full.queries[other]) != normalize_text(full.queries[qid])
            assert n.score is not None and n.rank >= 1
    assert (
        miner.mine_stats.filtered["bm25"]["positive"] > 0
        and miner.mine_stats.filtered["dense"]["positive"] > 0
    )
    assert miner.mine_stats.negatives == out.negative_sources()


@pytest.mark.slow
def test_memory_stays_bounded_on_50k_documents(tiny_encoder):
    import tracemalloc

    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)]
    corpus = {f"d{i}": " ".join(rng.choices(vocab, k=12)) for i in range(50_000)}
    queries = {f"q{i}": " ".join(rng.sample(corpus[f"d{i}"].split(), k=5)) for i in range(2_000)}
    relevant = {f"q{i}": [f"d{i}"] for i in range(2_000)}
    ds = RetrievalDataset(queries, corpus, relevant)
    tiny_encoder.max_seq_length = 32
    miner = HardNegativeMiner(
        sources=("bm25", "dense"),
        embed_model=tiny_encoder,
        num_negatives=5,
        range_max=50,
        relative_margin=None,
        encode_batch_size=256,
        query_batch_size=256,
        show_progress=False,
    )
    tracemalloc.start()
    out = miner.mine(ds)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # one queries x documents float32 matrix would take 381 MiB; the corpus embeddings take 6 MiB
    bound = 128 * 2**20
    assert len(queries) * len(corpus) * 4 > 2.5 * bound
    assert peak < bound, f"peak traced memory {peak / 2**20:.0f} MiB"
    print(f"peak traced memory {peak / 2**20:.0f} MiB; {miner.mine_stats}")
    assert out.negative_sources() == {"bm25": 5 * len(queries), "dense": 5 * len(queries)}


@pytest.mark.parametrize(
    ("corpus", "expected"),
    [
        ({"d1": "the and of", "d2": "a the"}, "none of the 2 documents has a term BM25 can index"),
        ({"d1": "apple returns within two days"}, None),
    ],
    ids=["stopword-only", "one-document"],
)
def test_degenerate_corpora_give_a_clear_error_or_no_negatives(corpus, expected):
    dataset = RetrievalDataset(
        queries={"q": "apple returns"}, corpus=corpus, relevant_docs={"q": ["d1"]}
    )
    miner = HardNegativeMiner(sources=("bm25",))
    if expected:
        with pytest.raises(ValueError, match=expected):
            miner.mine(dataset)
    else:
        assert miner.mine(dataset).negatives.get("q", []) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_negatives": -1}, "num_negatives must be a whole number >= 0"),
        ({"num_negatives": {"bm25": -2}}, "num_negatives must be a whole number >= 0"),
        ({"num_negatives": True}, "num_negatives must be a whole number >= 0"),
        ({"num_negatives": 2.5}, "num_negatives must be a whole number >= 0"),
        ({"max_score": float("nan")}, "max_score must be a finite number or None"),
        ({"margin": float("inf")}, "margin must be a finite number or None"),
        ({"query_batch_size": 0}, "query_batch_size must be a whole number >= 1"),
        ({"encode_batch_size": True}, "encode_batch_size must be a whole number >= 1"),
    ],
)
def test_miner_arguments_are_checked_when_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HardNegativeMiner(sources=["bm25"], **kwargs)


def test_one_source_given_as_a_string_is_one_source():
    assert HardNegativeMiner(sources="bm25").sources == ["bm25"]
