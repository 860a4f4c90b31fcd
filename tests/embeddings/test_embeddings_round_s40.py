"""Hostile inputs to embeddings and model loading (round s40): special files as model or
cache paths, texts longer than the encoder's window, diverged (NaN) models, broken static
models, empty and blank corpus texts."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from llama_index_ragtune.embeddings import CachedEmbedding, StaticEmbeddingModel
from llama_index_ragtune.models import check_model_path
from tests.embeddings.test_cached_embedding import CountingEmbedding

needs_onnx = pytest.mark.skipif(
    any(__import__("importlib").util.find_spec(n) is None for n in ("onnxruntime", "onnx")),
    reason="needs the onnx extra",
)


# ---------------------------------------------------------------- model paths


def test_model_path_that_is_a_special_file_names_what_it_is(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "gone", tmp_path / "broken")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    try:
        cases = {
            "/dev/null": "a character device",
            str(tmp_path / "fifo"): "a named pipe (FIFO)",
            str(tmp_path / "broken"): f"a broken symbolic link to {str(tmp_path / 'gone')!r}",
            str(tmp_path / "loop"): "a looping symbolic link",
            str(tmp_path / "sock"): "a socket",
        }
        for path, kind in cases.items():  # were "is a file" / "does not exist"
            with pytest.raises(FileNotFoundError, match=re.escape(f"is {kind}, not a model")):
                check_model_path(path)
    finally:
        sock.close()
    # a relative name that reads like a hub id, but is a broken link here: not sent to the hub
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="'broken' is a broken symbolic link"):
        check_model_path("broken")


def test_model_path_below_a_file_names_the_file(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"notes.txt is a file, not a folder"):
        check_model_path(str(tmp_path / "notes.txt" / "model"))
    with pytest.raises(FileNotFoundError, match=r"Model path 'a\\x00b' does not exist"):
        check_model_path("a\x00b")  # shown escaped, not as a raw NUL


# ---------------------------------------------------------------- embedding cache file


def test_cache_file_that_is_a_fifo_device_or_broken_link_is_named(tmp_path):
    def target(folder: Path) -> Path:
        embed = CachedEmbedding(CountingEmbedding(model_name="counting"), cache_dir=folder)
        path = embed.store.path
        embed.store.close()
        path.unlink()
        for suffix in ("-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return path

    fifo = target(tmp_path / "a")
    os.mkfifo(fifo)
    device = target(tmp_path / "b")
    os.symlink("/dev/null", device)
    broken = target(tmp_path / "c")
    os.symlink(tmp_path / "c" / "missing" / "x.sqlite", broken)
    for folder, kind in (("a", "a named pipe"), ("b", "a character device"), ("c", "a broken")):
        # were "is a folder (or another non-file)", or for the link a warning blaming an
        # unwritable folder and no cache kept at all
        with pytest.raises(ValueError, match=f"is {kind}"):
            CachedEmbedding(CountingEmbedding(model_name="counting"), cache_dir=tmp_path / folder)


# ---------------------------------------------------------------- ONNX: windows, paths, NaN


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_round_s40")


def _cut_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "longer than the encoder" in r.getMessage()]


@needs_onnx
def test_onnx_long_query_warns_once_with_the_tokens_dropped(tiny_encoder_path, onnx_cache, caplog):
    from llama_index_ragtune.embeddings import OnnxEmbedding

    embed = OnnxEmbedding(tiny_encoder_path, cache_dir=onnx_cache)
    caplog.set_level(logging.WARNING)
    long_query = "word " * 2000  # 2,002 tokens with [CLS] and [SEP]; the model reads 64
    vector = embed.get_query_embedding(long_query)
    embed.get_query_embedding(long_query + "again")
    embed.encode_queries([long_query, "short"])
    warned = _cut_warnings(caplog)
    assert len(warned) == 1  # once per embedding model, not per call
    assert "2002 tokens" in warned[0] and "max_seq_length 64" in warned[0]
    assert "last 1938 tokens were dropped" in warned[0]
    # the result is what it was: the query's first 62 words (plus the special tokens)
    assert vector == pytest.approx(embed.get_query_embedding("word " * 62), abs=1e-6)
    caplog.clear()
    assert embed.get_query_embedding("a short question") and not _cut_warnings(caplog)


@needs_onnx
def test_onnx_long_documents_warn_once_with_the_count(tiny_encoder_path, onnx_cache, caplog):
    from llama_index_ragtune.embeddings import OnnxEmbedding

    embed = OnnxEmbedding(tiny_encoder_path, cache_dir=onnx_cache)
    caplog.set_level(logging.WARNING)
    texts = ["short", "long " * 300, "x", "word " * 100]
    first = embed.get_text_embedding_batch(texts)
    embed.get_text_embedding_batch(texts)
    warned = _cut_warnings(caplog)
    assert len(warned) == 1
    assert "2 of the 4 texts" in warned[0] and "the longest has 302 tokens" in warned[0]
    assert first[1] == pytest.approx(embed.get_text_embedding("long " * 62), abs=1e-6)


@pytest.fixture(scope="module")
def nan_encoder_path(make_tiny_encoder, tmp_path_factory):
    """A tiny encoder whose weights hold one NaN (a training run that diverged)."""
    from safetensors.torch import load_file, save_file

    path = Path(make_tiny_encoder(tmp_path_factory.mktemp("nan_encoder")))
    tensors = load_file(str(path / "model.safetensors"))
    name = next(n for n in tensors if n.endswith("output.dense.weight"))
    tensors[name][0, 0] = float("nan")
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return str(path)


@needs_onnx
def test_onnx_export_of_a_diverged_model_is_refused(nan_encoder_path, tmp_path):
    from llama_index_ragtune.embeddings import OnnxEmbedding

    # was exported with "verified_min_cosine": NaN and served NaN vectors
    with pytest.raises(ValueError, match="NaN or infinite vectors"):
        OnnxEmbedding(nan_encoder_path, cache_dir=tmp_path)
    assert not any(p.name.endswith(".onnx") for p in tmp_path.rglob("*"))


@needs_onnx
def test_onnx_export_folder_of_another_kind_is_named_before_exporting(tiny_encoder_path, tmp_path):
    from llama_index_ragtune.embeddings.fingerprint import model_fingerprint
    from llama_index_ragtune.embeddings.onnx_export import (
        _export_key,
        export_sentence_transformer,
    )

    name = f"st-{_export_key(model_fingerprint(check_model_path(tiny_encoder_path)))}"
    (tmp_path / name).write_text("not an export")
    # was a bare "[Errno 20] Not a directory: '.export-...' -> ..." after the whole export
    with pytest.raises(NotADirectoryError, match=f"{name} is a file, not a folder"):
        export_sentence_transformer(tiny_encoder_path, cache_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(NotADirectoryError, match="is a named pipe"):  # was "is a file"
        export_sentence_transformer(tiny_encoder_path, cache_dir=tmp_path / "pipe")


# ---------------------------------------------------------------- corpus encoders


def test_corpus_of_a_diverged_model_is_refused_by_item(nan_encoder_path, tmp_path):
    from llama_index_ragtune.embeddings import embed_corpus

    out = tmp_path / "corpus.npy"
    with pytest.raises(
        ValueError, match=r"NaN or infinite values for 2 of 2 texts \(corpus items 0, 1"
    ):
        embed_corpus(["a passage", "another"], nan_encoder_path, out_path=out, show_progress=False)
    assert list(tmp_path.iterdir()) == []  # no .npy of NaN, no temporary left


def test_block_encoder_with_no_texts_and_long_or_blank_texts(tiny_encoder_path, tmp_path, caplog):
    from llama_index_ragtune.embeddings import embed_corpus
    from llama_index_ragtune.embeddings.corpus_encoders import BlockEncoder, model_spec

    encoder = BlockEncoder.load(model_spec(tiny_encoder_path))
    empty = encoder.encode([])  # was "the encoder returned an array of shape (0,)"
    assert empty.shape == (0, 32) and empty.dtype == np.float32

    caplog.set_level(logging.WARNING)
    texts = ["short one", "long " * 300, "  ", "word " * 100]
    vectors = embed_corpus(
        texts, tiny_encoder_path, out_path=tmp_path / "c.npy", shard_size=2, show_progress=False
    )
    assert vectors.shape == (4, 32)
    messages = [r.getMessage() for r in caplog.records]
    cut = [m for m in messages if "longer than the encoder reads" in m]
    assert len(cut) == 1 and "1 of the 2 texts" in cut[0] and "302 tokens" in cut[0]
    blank = [m for m in messages if "empty or blank" in m]
    assert len(blank) == 1 and "1 of 4 corpus texts" in blank[0] and "(items 2)" in blank[0]


# ---------------------------------------------------------------- static models


def _model2vec(folder: Path, tokenizer: Path, embeddings: np.ndarray) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "model2vec", "normalize": True}))
    shutil.copy(tokenizer, folder / "tokenizer.json")
    save_file({"embeddings": embeddings}, str(folder / "model.safetensors"))
    return folder


def test_static_model_without_usable_token_vectors_is_refused(tiny_encoder_path, tmp_path):
    from tokenizers import Tokenizer

    tokenizer = Path(tiny_encoder_path) / "tokenizer.json"
    vocab = Tokenizer.from_file(str(tokenizer)).get_vocab_size(with_added_tokens=True)
    good = np.random.default_rng(0).normal(size=(vocab, 8)).astype(np.float32)
    nan = good.copy()
    nan[2000:2010] = np.nan
    cases = {
        "nan": (nan, "NaN or infinite values in 10 of"),
        "zeros": (np.zeros_like(good), "every one of its"),
        "empty": (np.zeros((0, 8), np.float32), "holds no token vectors"),
        "short": (good[:1000], f"holds 1000 token vectors, but .* has {vocab} token ids"),
        "flat": (good[:, 0].copy(), r"a table of shape \("),
    }
    for name, (weights, message) in cases.items():  # were loaded: NaN / zero vectors, reads
        folder = _model2vec(tmp_path / name, tokenizer, weights)  # past the table, IndexError
        with pytest.raises(ValueError, match=message):
            StaticEmbeddingModel(folder)
    good_model = StaticEmbeddingModel(_model2vec(tmp_path / "good", tokenizer, good))
    assert np.isfinite(good_model.get_text_embedding_batch(["apple return", "zzqq"])).all()


def test_distilling_a_diverged_encoder_or_bad_vocabulary_is_refused(nan_encoder_path, tmp_path):
    pytest.importorskip("model2vec")
    from llama_index_ragtune.embeddings import distill_static_embedding

    with pytest.raises(TypeError, match="vocabulary item 1 is NoneType"):  # was AttributeError
        distill_static_embedding(
            nan_encoder_path, tmp_path / "v", pca_dims=8, vocabulary=["apple", None]
        )
    # was distilled and saved with NaN token vectors
    with pytest.raises(ValueError, match="NaN or infinite weights in 1 tensors"):
        distill_static_embedding(nan_encoder_path, tmp_path / "s", pca_dims=8)
    assert not (tmp_path / "s").exists() and not (tmp_path / "v").exists()


def test_static_model_texts_of_the_wrong_kind_and_lone_surrogates(tiny_encoder_path, tmp_path):
    from tokenizers import Tokenizer

    tokenizer = Path(tiny_encoder_path) / "tokenizer.json"
    vocab = Tokenizer.from_file(str(tokenizer)).get_vocab_size(with_added_tokens=True)
    weights = np.random.default_rng(1).normal(size=(vocab, 8)).astype(np.float32)
    model = StaticEmbeddingModel(_model2vec(tmp_path / "m", tokenizer, weights))
    with pytest.raises(TypeError, match="got str"):  # was embedded letter by letter
        model.get_text_embedding_batch("abc")
    with pytest.raises(TypeError, match="text 1 is NoneType"):  # was a bare tokenizers error
        model.get_text_embedding_batch(["ok", None])
    # a lone surrogate (bad decoding) was "TextInputSequence must be str"; now read as U+FFFD
    assert model.get_query_embedding("caf\udce9") == model.get_query_embedding("caf\ufffd")
    assert model.get_text_embedding_batch(["apple"]) == [model.get_query_embedding("apple")]


@needs_onnx
def test_onnx_of_a_folder_holding_only_an_onnx_graph_names_it(tiny_encoder_path, onnx_cache):
    from llama_index_ragtune.embeddings import OnnxEmbedding

    export = OnnxEmbedding(tiny_encoder_path, cache_dir=onnx_cache).onnx_dir
    # an export folder (or another tool's ONNX folder) passed as the model: was transformers'
    # "Unrecognized model ... Should have a `model_type` key in its config.json"
    with pytest.raises(ValueError, match=r"holds an ONNX graph \(model.onnx\) but no sentence"):
        OnnxEmbedding(export, cache_dir=onnx_cache)
