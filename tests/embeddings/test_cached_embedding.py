"""CachedEmbedding: hits and misses, queries never cached, corrupt entries and files recovered."""

from __future__ import annotations

import importlib.util
import itertools
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr

from llama_index_ragtune.embeddings import CachedEmbedding, model_identity
from llama_index_ragtune.embeddings.cached import EmbeddingStore


class CountingEmbedding(BaseEmbedding):
    """Deterministic vectors from a text hash; records every text it embeds."""

    offset: float = 0.0
    _seen: list = PrivateAttr(default_factory=list)

    @property
    def seen(self) -> list:
        return self._seen

    @classmethod
    def class_name(cls) -> str:
        return "CountingEmbedding"

    def _vec(self, text: str) -> list[float]:
        rng = np.random.default_rng(abs(hash(text)) % (2**32))
        return (rng.normal(size=6) + self.offset).astype(np.float32).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        self.seen.append(("query", query))
        return self._vec(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        self.seen.append(("text", text))
        return self._vec(text)


TEXTS = ["alpha beta", "gamma", "a much longer delta text", "gamma"]


@pytest.fixture()
def inner():
    return CountingEmbedding(model_name="counting")


def test_second_pass_is_served_from_disk(inner, tmp_path):
    first = CachedEmbedding(inner, cache_dir=tmp_path)
    vectors = first.get_text_embedding_batch(TEXTS)
    assert first.stats == {"hits": 0, "misses": 3, "corrupt": 0}
    assert sorted(t for kind, t in inner.seen) == sorted(set(TEXTS))  # duplicates embedded once
    assert vectors[1] == pytest.approx(vectors[3])
    assert vectors[0] == pytest.approx(inner._vec("alpha beta"), abs=1e-6)

    inner.seen.clear()
    second = CachedEmbedding(inner, cache_dir=tmp_path)  # a new process would do the same
    again = second.get_text_embedding_batch(TEXTS + ["new text"])
    assert inner.seen == [("text", "new text")]
    assert second.stats == {"hits": 4, "misses": 1, "corrupt": 0}
    assert np.allclose(again[:4], vectors)


def test_queries_are_never_cached(inner, tmp_path):
    cached = CachedEmbedding(inner, cache_dir=tmp_path)
    cached.get_query_embedding("what?")
    cached.get_query_embedding("what?")
    assert inner.seen == [("query", "what?"), ("query", "what?")]
    assert len(cached.store) == 0


def test_model_identity_separates_models(tmp_path):
    a = CountingEmbedding(model_name="model-a")
    b = CountingEmbedding(model_name="model-b")
    shifted = CountingEmbedding(model_name="model-a", offset=1.0)
    assert model_identity(a) != model_identity(b)
    assert model_identity(a) != model_identity(shifted)  # a setting that changes vectors
    ca, cb = CachedEmbedding(a, cache_dir=tmp_path), CachedEmbedding(b, cache_dir=tmp_path)
    assert ca.store.path != cb.store.path
    ca.get_text_embedding("same text")
    cb.get_text_embedding("same text")
    assert cb.stats["misses"] == 1


def test_identity_follows_local_model_files(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"1234")
    embed = CountingEmbedding(model_name=str(folder))
    before = model_identity(embed)
    (folder / "weights.bin").write_bytes(b"123456")
    assert model_identity(embed) != before


def test_corrupt_entry_is_recomputed(inner, tmp_path):
    cached = CachedEmbedding(inner, cache_dir=tmp_path)
    good = cached.get_text_embedding_batch(TEXTS)
    with sqlite3.connect(cached.store.path) as conn:
        conn.execute(
            "UPDATE vectors SET data = substr(data, 1, 8) || zeroblob(length(data) - 8) WHERE rowid = 1"
        )
        conn.execute("UPDATE vectors SET data = zeroblob(4) WHERE rowid = 2")
    inner.seen.clear()
    fresh = CachedEmbedding(inner, cache_dir=tmp_path)
    again = fresh.get_text_embedding_batch(TEXTS)
    assert fresh.stats["corrupt"] == 2 and fresh.stats["misses"] == 2
    assert len(inner.seen) == 2
    assert np.allclose(again, good)
    repaired = CachedEmbedding(inner, cache_dir=tmp_path)
    repaired.get_text_embedding_batch(TEXTS)
    assert repaired.stats == {"hits": 4, "misses": 0, "corrupt": 0}


def test_corrupt_database_file_is_moved_aside(inner, tmp_path):
    cached = CachedEmbedding(inner, cache_dir=tmp_path)
    cached.get_text_embedding_batch(TEXTS)
    path = cached.store.path
    cached.store.close()
    for suffix in ("-wal", "-shm"):
        (tmp_path / (path.name + suffix)).unlink(missing_ok=True)
    path.write_bytes(b"this is not a sqlite database" * 100)
    recovered = CachedEmbedding(inner, cache_dir=tmp_path)
    vectors = recovered.get_text_embedding_batch(TEXTS)
    assert recovered.stats["misses"] == 3
    assert vectors[0] == pytest.approx(inner._vec("alpha beta"), abs=1e-6)
    assert any(p.name.startswith(path.name + ".corrupt-") for p in tmp_path.iterdir())


def test_concurrent_readers_and_writers(inner, tmp_path):
    texts = [f"text {i}" for i in range(200)]
    CachedEmbedding(inner, cache_dir=tmp_path).get_text_embedding_batch(texts[:100])
    errors: list[Exception] = []
    results: list = []

    def work(offset: int) -> None:
        try:
            embed = CachedEmbedding(CountingEmbedding(model_name="counting"), cache_dir=tmp_path)
            results.append(embed.get_text_embedding_batch(texts[offset : offset + 120]))
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i * 20,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    final = CachedEmbedding(inner, cache_dir=tmp_path)
    final.get_text_embedding_batch(texts)
    assert final.stats["misses"] == 200 - 180 and final.stats["corrupt"] == 0


def test_rejects_non_embeddings(tmp_path):
    with pytest.raises(TypeError, match="BaseEmbedding"):
        CachedEmbedding("not a model", cache_dir=tmp_path)


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_killed_writer_leaves_a_consistent_cache(tmp_path):
    """A writer SIGKILLed mid-batch: every committed batch reads back exactly, the rest is absent."""
    child = Path(__file__).with_name("cache_writer_child.py")
    spec = importlib.util.spec_from_file_location("cache_writer_child", child)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for delay in (0.05, 0.3):
        proc = subprocess.Popen(
            [sys.executable, str(child), str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(delay)
        proc.kill()
        proc.communicate(timeout=60)
        assert proc.returncode == -9
    cached = CachedEmbedding(
        module.DigestEmbedding(model_name="digest"), tmp_path, identity=module.IDENTITY
    )
    with sqlite3.connect(cached.store.path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    complete = 0
    for i in itertools.count():
        texts = module.batch_texts(i)
        keys = [EmbeddingStore.key(t) for t in texts]
        found, damaged = cached.store.get_many(keys)
        assert damaged == 0
        assert len(found) in (0, len(set(keys)))  # one batch = one transaction: all or nothing
        if not found:
            break
        for text, key in zip(texts, keys, strict=True):
            assert found[key].tolist() == pytest.approx(module.DigestEmbedding().vector(text))
        complete += 1
    assert complete >= 1
    assert not any(".corrupt-" in p.name for p in tmp_path.iterdir())
