"""Mistaken arguments and damaged files for CachedEmbedding and OnnxEmbedding: clear errors
raised early, never vectors of another model or a raw sqlite/numpy/onnxruntime traceback."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from llama_index_ragtune.embeddings import CachedEmbedding
from tests.embeddings.test_cached_embedding import CountingEmbedding


@pytest.fixture()
def inner():
    return CountingEmbedding(model_name="counting")


class FixedEmbedding(CountingEmbedding):
    """Returns ``vector(text)`` for every text (to plant vectors a store cannot keep)."""

    size: int = 6
    kind: str = "ok"

    @classmethod
    def class_name(cls) -> str:
        return "FixedEmbedding"

    def _vec(self, text: str) -> list[float]:
        if self.kind == "nan":
            return [float("nan")] * self.size
        if self.kind == "ragged":
            return [0.5] * (len(text) % 3 + 1)
        if self.kind == "empty":
            return []
        return [0.5] * self.size


def test_cache_dir_of_the_wrong_kind_is_refused(inner, tmp_path):
    with pytest.raises(TypeError, match="cache_dir"):
        CachedEmbedding(inner, cache_dir=None)
    with pytest.raises(TypeError, match="cache_dir"):
        CachedEmbedding(inner, cache_dir=3)
    with pytest.raises(ValueError, match="cache_dir"):  # was: the working directory
        CachedEmbedding(inner, cache_dir="")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for folder in (blocker, blocker / "sub" / "deeper"):  # was: FileExistsError / errno text
        with pytest.raises(NotADirectoryError, match=f"{blocker} is a file"):
            CachedEmbedding(inner, cache_dir=folder)
    with pytest.raises(TypeError, match="embed_batch_size"):
        CachedEmbedding(inner, cache_dir=tmp_path, embed_batch_size=True)


def test_cache_file_that_is_a_folder_is_refused(inner, tmp_path):
    cached = CachedEmbedding(inner, cache_dir=tmp_path)
    path = cached.store.path
    cached.store.close()
    for extra in tmp_path.iterdir():
        extra.unlink()
    path.mkdir()
    with pytest.raises(IsADirectoryError, match=path.name):  # was: "unable to open database file"
        CachedEmbedding(inner, cache_dir=tmp_path)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["a", None], "text 1 is NoneType"),
        (["a", "b", 5], "text 2 is int"),
        ([b"bytes"], "text 0 is bytes"),
        ("a plain string", "list of str, got str"),  # was: embedded letter by letter
        (None, "list of str, got NoneType"),
    ],
)
def test_texts_that_are_not_strings_are_refused_before_embedding(inner, tmp_path, texts, message):
    cached = CachedEmbedding(inner, cache_dir=tmp_path)
    with pytest.raises(TypeError, match=message):
        cached.get_text_embedding_batch(texts)
    with pytest.raises(TypeError, match=message):
        asyncio.run(cached.aget_text_embedding_batch(texts))
    assert inner.seen == [] and len(cached.store) == 0


def test_single_non_string_text_is_refused(inner, tmp_path):
    cached = CachedEmbedding(inner, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="NoneType, not str"):  # was: AttributeError '.encode'
        cached.get_text_embedding(None)


def test_odd_but_valid_texts_are_cached(inner, tmp_path):
    texts = ["", "a\x00b", "a\ud800b", "x" * 1_000_000]
    first = CachedEmbedding(inner, cache_dir=tmp_path).get_text_embedding_batch(texts)
    again = CachedEmbedding(inner, cache_dir=tmp_path)
    assert again.get_text_embedding_batch(texts) == first
    assert again.stats["hits"] == 4


def test_cache_written_by_a_model_of_another_size_is_refused(tmp_path):
    CachedEmbedding(FixedEmbedding(size=6), tmp_path, identity="shared").get_text_embedding_batch(
        ["a", "b"]
    )
    wider = CachedEmbedding(FixedEmbedding(size=8), tmp_path, identity="shared")
    # was: numpy "all input arrays must have the same shape", or 6-wide vectors served
    with pytest.raises(ValueError, match=r"sizes \[6, 8\].*identity"):
        wider.get_text_embedding_batch(["a", "c"])
    with pytest.raises(ValueError, match=r"sizes \[6, 8\]"):
        wider.get_text_embedding_batch(["c"])  # a miss only: the file's vectors are of size 6
    assert len(wider.store) == 2


@pytest.mark.parametrize(
    ("kind", "message"),
    [("nan", "NaN or infinite"), ("ragged", "same size"), ("empty", "non-empty")],
)
def test_model_vectors_that_cannot_be_cached_are_refused(tmp_path, kind, message):
    cached = CachedEmbedding(FixedEmbedding(kind=kind, model_name=kind), tmp_path)
    with pytest.raises(ValueError, match=message):  # was: NaN served and stored, numpy error
        cached.get_text_embedding_batch(["a", "bb", "ccc"])
    assert len(cached.store) == 0


def test_a_model_returning_too_few_vectors_is_refused(tmp_path):
    from llama_index_ragtune.embeddings.store import open_store

    store = open_store(tmp_path, "short")
    with pytest.raises(ValueError, match="returned 1 vectors for 2 texts"):  # was: zip() error
        store.fetch_or_embed(["a", "b"], lambda texts: np.ones((1, 4)))
    assert len(store) == 0


# ---------------------------------------------------------------------- ONNX

needs_onnx = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="the onnx extra is not installed",
)


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_hostile")


@needs_onnx
def test_onnx_arguments_and_texts(tiny_encoder_path, onnx_cache):
    from llama_index_ragtune.embeddings import OnnxEmbedding

    embed = OnnxEmbedding(tiny_encoder_path, cache_dir=onnx_cache)
    for size in (0, -1, True, 2.5):  # -1 returned None, 0 meant the default
        with pytest.raises(ValueError, match="batch_size"):
            embed.encode(["a", "bb", "ccc"], batch_size=size)
        with pytest.raises(ValueError, match="batch_size"):
            embed.encode_queries(["a", "bb"], batch_size=size)
    with pytest.raises(ValueError, match="embed_batch_size"):
        OnnxEmbedding(tiny_encoder_path, cache_dir=onnx_cache, embed_batch_size=True)
    with pytest.raises(ValueError, match="num_threads"):
        OnnxEmbedding(tiny_encoder_path, cache_dir=onnx_cache, num_threads=-1)
    with pytest.raises(TypeError, match="text 1 is NoneType"):  # was: str + None TypeError
        embed.get_text_embedding_batch(["a", None])
    with pytest.raises(TypeError, match="text 0 is bytes"):
        embed.get_query_embedding(b"a")
    # a lone surrogate raised "TextInputSequence must be str"; it now reads as U+FFFD
    assert embed.get_query_embedding("a\ud800b") == pytest.approx(
        embed.get_query_embedding("a\ufffdb"), abs=1e-6
    )
    assert len(embed.get_text_embedding_batch(["a\udfff", "a\x00b", ""])) == 3


@needs_onnx
@pytest.mark.parametrize(
    ("name", "content"),
    [("model.onnx", "half"), ("tokenizer.json", "{"), ("export.json", "{not json")],
)
def test_damaged_onnx_export_is_exported_again(tiny_encoder_path, onnx_cache, name, content):
    from llama_index_ragtune.embeddings import OnnxEmbedding

    embed = OnnxEmbedding(tiny_encoder_path, cache_dir=onnx_cache)
    expected = embed.get_query_embedding("return policy")
    path = Path(embed.onnx_dir) / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if content == "half" else content.encode())
    # was: onnxruntime InvalidProtobuf, a tokenizers Exception, JSONDecodeError
    again = OnnxEmbedding(tiny_encoder_path, cache_dir=onnx_cache)
    assert again.get_query_embedding("return policy") == pytest.approx(expected, abs=1e-5)


@needs_onnx
def test_onnx_cache_dir_that_is_a_file_is_refused(tiny_encoder_path, tmp_path):
    from llama_index_ragtune.embeddings import OnnxEmbedding

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match=f"{blocker} is a file"):
        OnnxEmbedding(tiny_encoder_path, cache_dir=blocker / "onnx")
