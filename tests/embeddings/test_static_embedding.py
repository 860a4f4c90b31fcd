"""Static embeddings: distilled from an encoder, saved atomically, and identical to sentence-transformers."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

pytest.importorskip("model2vec")
pytest.importorskip("skeletoken")

from llama_index_ragtune.embeddings import (  # noqa: E402
    StaticEmbeddingModel,
    distill_static_embedding,
)

TEXTS = [
    "What is the return policy for opened electronics?",
    "Perishable groceries such as apples are refunded, not returned.",
    "Bananas are on sale this week.",
    "Laptops come with a two-year warranty covering hardware faults.",
    "",  # no tokens: the zero vector, as in sentence-transformers
    "protein kinase " * 400,  # far beyond any encoder's max length: static models do not truncate
]


@pytest.fixture(scope="module")
def static_dir(tiny_encoder_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("static") / "tiny-static"
    return distill_static_embedding(tiny_encoder_path, out, pca_dims=16)


def test_matches_sentence_transformers_static_embedding(static_dir):
    from sentence_transformers import SentenceTransformer

    embed = StaticEmbeddingModel(static_dir, embed_batch_size=4)  # two pooling batches
    got = np.asarray(embed.get_text_embedding_batch(TEXTS))
    reference = SentenceTransformer(str(static_dir), device="cpu").encode(
        TEXTS, convert_to_numpy=True
    )
    assert embed.dimension == 16 and got.shape == reference.shape == (len(TEXTS), 16)
    np.testing.assert_allclose(got, reference, atol=1e-5)
    norms = np.linalg.norm(got, axis=1)
    assert norms[4] == 0.0 and np.allclose(np.delete(norms, 4), 1.0, atol=1e-5)
    query = embed.get_query_embedding(TEXTS[0])
    np.testing.assert_allclose(query, reference[0], atol=1e-5)
    assert asyncio.run(embed.aget_query_embedding(TEXTS[0])) == pytest.approx(query, abs=1e-7)
    batch = asyncio.run(embed.aget_text_embedding_batch(TEXTS[:3]))
    np.testing.assert_allclose(batch, reference[:3], atol=1e-5)


# distillations beyond the shared fixture keep only tokens starting with "a" (fast)
FEW_TOKENS = r"^[^a]|\[unused\d+\]"


def test_manifest_and_identity(static_dir, tiny_encoder_path, tmp_path):
    manifest = json.loads((static_dir / "static_embedding.json").read_text())
    assert manifest["format"] == "ragtune-static-embedding"
    assert manifest["dimension"] == 16 and manifest["pca_dims"] == 16
    assert manifest["vocabulary_size"] == StaticEmbeddingModel(static_dir).vocabulary_size
    assert manifest["token_pooling"] == "mean"  # the tiny encoder mean-pools
    first = StaticEmbeddingModel(static_dir)
    assert first.class_name() == "StaticEmbeddingModel"
    assert first.cache_identity() == StaticEmbeddingModel(static_dir).cache_identity()
    other = distill_static_embedding(
        tiny_encoder_path, tmp_path / "s8", pca_dims=8, token_remove_pattern=FEW_TOKENS
    )
    smaller = StaticEmbeddingModel(other)
    assert smaller.vocabulary_size < first.vocabulary_size and smaller.dimension == 8
    assert smaller.cache_identity() != first.cache_identity()


def test_redistill_replaces_folder_atomically_and_refuses_foreign_folders(
    tiny_encoder_path, tmp_path
):
    target = tmp_path / "static"
    distill_static_embedding(tiny_encoder_path, target, pca_dims=8, token_remove_pattern=FEW_TOKENS)
    # replaces its own folder
    distill_static_embedding(tiny_encoder_path, target, pca_dims=4, token_remove_pattern=FEW_TOKENS)
    assert StaticEmbeddingModel(target).dimension == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["static"]  # no leftovers
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a static model"):
        distill_static_embedding(
            tiny_encoder_path, foreign, pca_dims=4, token_remove_pattern=FEW_TOKENS
        )
    assert (foreign / "todo.txt").read_text() == "keep me"


def test_bad_arguments_and_folders(tiny_encoder_path, tmp_path):
    with pytest.raises(ValueError, match="pca_dims must be between 1 and 32"):
        distill_static_embedding(tiny_encoder_path, tmp_path / "x", pca_dims=64)
    with pytest.raises(ValueError, match="sif_coefficient"):
        distill_static_embedding(tiny_encoder_path, tmp_path / "x", pca_dims=8, sif_coefficient=2.0)
    with pytest.raises(ValueError, match="pooling must be"):
        distill_static_embedding(tiny_encoder_path, tmp_path / "x", pca_dims=8, pooling="max")
    plain = tmp_path / "plain-transformers"  # a Hugging Face folder without modules.json
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not a sentence-transformers folder"):
        distill_static_embedding(plain, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="distill it first"):
        StaticEmbeddingModel(tiny_encoder_path)  # a transformer, not a static model
    with pytest.raises(FileNotFoundError, match="distill_static_embedding"):
        StaticEmbeddingModel(tmp_path / "missing")


def test_reads_model2vec_folders(static_dir, tmp_path):
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    embed = StaticEmbeddingModel(static_dir)
    tokenizer = Tokenizer.from_file(str(static_dir / "tokenizer.json"))
    m2v = StaticModel(vectors=embed._weights, tokenizer=tokenizer, normalize=True)
    m2v.save_pretrained(str(tmp_path / "m2v"))
    texts = TEXTS[:4]
    np.testing.assert_allclose(
        StaticEmbeddingModel(tmp_path / "m2v").encode(texts), m2v.encode(texts), atol=2e-6
    )


def test_in_llama_index_settings_and_hybrid_retriever(static_dir):
    from llama_index.core import Settings, VectorStoreIndex
    from llama_index.core.schema import TextNode

    from llama_index_ragtune import HybridRetriever

    nodes = [TextNode(id_=str(i), text=t) for i, t in enumerate(TEXTS[:4])]
    embed = StaticEmbeddingModel(static_dir)
    hybrid = HybridRetriever.from_defaults(nodes=nodes, embed_model=embed, similarity_top_k=2)
    assert hybrid.retrieve(TEXTS[2])[0].node.node_id == "2"
    previous = Settings._embed_model
    try:
        Settings.embed_model = embed
        index = VectorStoreIndex(nodes)
        assert index.as_retriever(similarity_top_k=1).retrieve(TEXTS[3])[0].node.node_id == "3"
    finally:
        Settings._embed_model = previous
