"""embed_corpus: sharded, memory-mapped corpus embedding on every engine, consumed by the miner."""

from __future__ import annotations

import numpy as np
import pytest

from llama_index_ragtune.embeddings import embed_corpus
from llama_index_ragtune.embeddings.npy_writer import NpyRowWriter

WORDS = [
    *("apple", "banana", "return", "policy", "warranty", "laptop", "battery", "refund"),
    *("store", "opening", "hours", "grocery", "kinase", "protein", "receptor", "vitamin"),
    *("bone", "density", "tumour", "gene", "expression", "antibiotic"),
]


def passages(n: int) -> list[str]:
    """Deterministic, distinct passages of varying length."""
    rng = np.random.default_rng(0)
    return [
        f"passage {i}: " + " ".join(rng.choice(WORDS, size=3 + i % 17).tolist()) for i in range(n)
    ]


def reference(path: str, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu").encode(
        texts, convert_to_numpy=True, normalize_embeddings=True
    )


def test_local_engine_streams_shards_into_a_memmap(tiny_encoder_path, tmp_path):
    texts = passages(50)
    out = tmp_path / "corpus.npy"
    # a generator: the length is unknown until the end; shards of 7 -> 8 writes
    vectors = embed_corpus(
        (t for t in texts), tiny_encoder_path, out_path=out, shard_size=7, batch_size=4
    )
    assert isinstance(vectors, np.memmap) and vectors.shape == (50, 32)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, reference(tiny_encoder_path, texts), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.npy"]  # no temporary left
    half = embed_corpus(texts, tiny_encoder_path, out_path=tmp_path / "half.npy", dtype="float16")
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, vectors, atol=2e-3)


def test_llama_index_embedding_and_static_model(tiny_encoder_path, tmp_path):
    pytest.importorskip("onnxruntime")
    from llama_index_ragtune.embeddings import OnnxEmbedding

    texts = passages(20)
    embed = OnnxEmbedding(tiny_encoder_path, cache_dir=tmp_path / "onnx")
    got = embed_corpus(texts, embed, out_path=tmp_path / "onnx.npy", shard_size=6)
    np.testing.assert_allclose(got, reference(tiny_encoder_path, texts), atol=1e-4)
    with pytest.raises(TypeError, match="cannot be sent to worker processes"):
        embed_corpus(texts, embed, out_path=tmp_path / "x.npy", engine="multiprocess")


def test_bad_input_names_the_item_and_keeps_the_old_file(tiny_encoder_path, tmp_path):
    out = tmp_path / "corpus.npy"
    np.save(out, np.ones((2, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="corpus item 9 is a NoneType"):
        embed_corpus(passages(9) + [None], tiny_encoder_path, out_path=out, shard_size=4)
    np.testing.assert_array_equal(np.load(out), np.ones((2, 3)))  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.npy"]
    with pytest.raises(ValueError, match="corpus is empty"):
        embed_corpus([], tiny_encoder_path, out_path=tmp_path / "empty.npy")
    with pytest.raises(ValueError, match="unknown engine 'spark'"):
        embed_corpus(["a"], tiny_encoder_path, out_path=out, engine="spark")
    with pytest.raises(ValueError, match="must end in .npy"):
        embed_corpus(["a"], tiny_encoder_path, out_path=tmp_path / "corpus.bin")
    with pytest.raises(ValueError, match="shard_size must be >= 1"):
        embed_corpus(["a"], tiny_encoder_path, out_path=out, shard_size=0)


def test_npy_writer_header_round_trips_any_length(tmp_path):
    path = tmp_path / "rows.npy"
    with NpyRowWriter(path, dim=3) as writer:
        for start in range(0, 10, 4):
            writer.write(np.arange(start * 3, min(start + 4, 10) * 3).reshape(-1, 3))
    loaded = np.load(path, mmap_mode="r")
    assert loaded.shape == (10, 3) and loaded.offset == 128
    np.testing.assert_array_equal(loaded, np.arange(30, dtype=np.float32).reshape(10, 3))
    with pytest.raises(ValueError, match=r"must have shape \(n, 3\)"):
        NpyRowWriter(tmp_path / "bad.npy", dim=3).write(np.ones((2, 4)))


def test_miner_consumes_the_memmap(tiny_encoder_path, tmp_path):
    from llama_index_ragtune import HardNegativeMiner
    from llama_index_ragtune.data import RetrievalDataset

    texts = passages(60)
    corpus = {f"d{i}": t for i, t in enumerate(texts)}
    queries = {f"q{i}": " ".join(texts[i].split()[2:5]) for i in range(0, 60, 6)}
    relevant = {f"q{i}": [f"d{i}"] for i in range(0, 60, 6)}
    dataset = RetrievalDataset(queries=queries, corpus=corpus, relevant_docs=relevant)
    vectors = embed_corpus(dataset.corpus.values(), tiny_encoder_path, out_path=tmp_path / "c.npy")
    settings = dict(sources=["dense"], num_negatives=3, relative_margin=None, show_progress=False)
    from_memmap = HardNegativeMiner(
        embed_model=tiny_encoder_path, corpus_embeddings=vectors, **settings
    ).mine(dataset)
    computed = HardNegativeMiner(embed_model=tiny_encoder_path, **settings).mine(dataset)
    assert from_memmap.negatives.keys() == computed.negatives.keys() == queries.keys()
    for qid in queries:
        got = [n.doc_id for n in from_memmap.negatives[qid]]
        assert got == [n.doc_id for n in computed.negatives[qid]]
        assert len(got) == 3 and relevant[qid][0] not in got


def test_multiprocess_engine_matches_local(tiny_encoder_path, tmp_path):
    texts = passages(40)
    local = embed_corpus(texts, tiny_encoder_path, out_path=tmp_path / "local.npy")
    pooled = embed_corpus(
        texts,
        tiny_encoder_path,
        out_path=tmp_path / "mp.npy",
        engine="multiprocess",
        num_workers=2,
        shard_size=16,
    )
    np.testing.assert_allclose(pooled, local, atol=1e-5)


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_local_mode_matches_local(tiny_encoder_path, tmp_path, local_ray):
    texts = passages(200)
    local = embed_corpus(texts, tiny_encoder_path, out_path=tmp_path / "local.npy")
    # one Ray Data job: 8 blocks over an actor pool of 2, results put back in row order
    distributed = embed_corpus(
        iter(texts), tiny_encoder_path, out_path=tmp_path / "ray.npy", engine="ray", batch_size=16
    )
    assert distributed.shape == (200, 32)
    np.testing.assert_allclose(distributed, local, atol=1e-5)


@pytest.mark.slow
def test_ray_several_shards_and_a_model_instance(tiny_encoder_path, tmp_path, local_ray):
    from sentence_transformers import SentenceTransformer

    texts = passages(150)
    model = SentenceTransformer(tiny_encoder_path, device="cpu")
    local = embed_corpus(texts, model, out_path=tmp_path / "local.npy")
    distributed = embed_corpus(
        texts, model, out_path=tmp_path / "ray.npy", engine="ray", shard_size=60, batch_size=8
    )  # three Ray Data jobs, the last one partial; the model is shipped to the actors
    np.testing.assert_allclose(distributed, local, atol=1e-5)
