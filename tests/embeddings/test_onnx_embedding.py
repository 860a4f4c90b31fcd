"""OnnxEmbedding: our ONNX export reproduces sentence-transformers (tiny model and the real MiniLM)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from llama_index_ragtune.embeddings import OnnxEmbedding  # noqa: E402
from llama_index_ragtune.embeddings.onnx_export import export_sentence_transformer, require_onnx  # noqa: E402

SENTENCES = [
    "What is the return policy for opened electronics?",
    "Perishable groceries such as apples are refunded, not returned.",
    "Bananas are on sale this week.",
    "The store opens at nine in the morning.",
    "Laptops come with a two-year warranty covering hardware faults.",
]


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def reference(path: str, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu").encode(texts, convert_to_numpy=True)


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_cache")


def test_tiny_model_matches_sentence_transformers(tiny_encoder_path, onnx_cache):
    embed = OnnxEmbedding(tiny_encoder_path, cache_dir=onnx_cache, embed_batch_size=2)
    texts = SENTENCES + ["x", "a " * 200]  # a one-token text and one longer than max_seq_length
    got = np.array(embed.get_text_embedding_batch(texts))  # several length-sorted batches
    expected = reference(tiny_encoder_path, texts)
    assert got.shape == expected.shape == (len(texts), 32)
    assert cosines(got, expected).min() > 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # the model's Normalize module
    query = embed.get_query_embedding(SENTENCES[0])
    assert cosines([query], expected[:1])[0] > 0.9999
    assert asyncio.run(embed.aget_query_embedding(SENTENCES[0])) == pytest.approx(query, abs=1e-6)


def test_export_is_cached_and_identity_is_specific(tiny_encoder_path, onnx_cache):
    first = export_sentence_transformer(tiny_encoder_path, cache_dir=onnx_cache)
    stamp = (first.folder / "model.onnx").stat().st_mtime_ns
    again = export_sentence_transformer(tiny_encoder_path, cache_dir=onnx_cache)
    assert (
        again.folder == first.folder and (again.folder / "model.onnx").stat().st_mtime_ns == stamp
    )
    fp32 = OnnxEmbedding(tiny_encoder_path, cache_dir=onnx_cache)
    int8 = OnnxEmbedding(tiny_encoder_path, cache_dir=onnx_cache, quantize=True)
    assert fp32.cache_identity() != int8.cache_identity()
    assert (
        fp32.cache_identity()
        == OnnxEmbedding(tiny_encoder_path, cache_dir=onnx_cache).cache_identity()
    )
    assert (first.folder / "model.int8.onnx").is_file()


def test_usable_as_settings_embed_model(tiny_encoder_path, onnx_cache):
    from llama_index.core import Settings, VectorStoreIndex
    from llama_index.core.schema import TextNode

    previous = Settings._embed_model
    try:
        Settings.embed_model = OnnxEmbedding(tiny_encoder_path, cache_dir=onnx_cache)
        index = VectorStoreIndex([TextNode(id_=str(i), text=s) for i, s in enumerate(SENTENCES)])
        hits = index.as_retriever(similarity_top_k=2).retrieve(SENTENCES[2])
        assert hits[0].node.node_id == "2"
    finally:
        Settings._embed_model = previous


def test_missing_onnxruntime_gives_the_install_hint(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxruntime" else real(name, *a),
    )
    with pytest.raises(ImportError, match=r"llama-index-ragtune\[onnx\]"):
        require_onnx()


@pytest.fixture(scope="module")
def minilm_onnx(minilm_path, onnx_cache):
    return OnnxEmbedding(minilm_path, cache_dir=onnx_cache), OnnxEmbedding(
        minilm_path, cache_dir=onnx_cache, quantize=True
    )


def test_minilm_fp32_and_int8_match_pytorch(minilm_path, minilm_onnx):
    fp32, int8 = minilm_onnx
    expected = reference(minilm_path, SENTENCES)
    assert cosines(fp32.get_text_embedding_batch(SENTENCES), expected).min() > 0.999
    assert cosines(int8.get_text_embedding_batch(SENTENCES), expected).min() > 0.98
    queries = [fp32.get_query_embedding(s) for s in SENTENCES]
    assert cosines(queries, expected).min() > 0.999
    assert fp32.dimension == 384 and fp32.max_length == 256
