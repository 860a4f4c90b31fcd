"""Shared fixtures: bundled real models, tiny random models built from configs, shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAGTUNE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared data set '{name}' not found at {path} (set RAGTUNE_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    """BEIR SciFact folder from ../shared/data (skips when absent)."""
    return _shared("scifact")


@pytest.fixture(scope="session")
def squad_path() -> Path:
    """SQuAD 2.0 dev-half JSON from ../shared/data (skips when absent)."""
    return _shared("squad_v2_dev_half") / "dev-v2.0.cs224n_half.json"


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The bundled all-MiniLM-L6-v2 folder (real weights)."""
    from llama_index_ragtune.models import default_encoder

    return default_encoder()


@pytest.fixture(scope="session")
def make_tiny_encoder(minilm_path):
    """``make(out, seed=None, dropout=True, max_positions=128, max_seq_length=64)``: a tiny
    random BERT with the real MiniLM tokenizer saved as a sentence-transformers folder
    under ``out``; returns its path (``seed``: a fixed initialisation)."""

    def make(
        out: Path,
        seed: int | None = None,
        dropout: bool = True,
        max_positions: int = 128,
        max_seq_length: int = 64,
    ) -> str:
        import torch
        from sentence_transformers import SentenceTransformer, models
        from transformers import AutoTokenizer, BertConfig, BertModel

        tokenizer = AutoTokenizer.from_pretrained(minilm_path)
        no_dropout = (
            {} if dropout else {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
        )
        config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=max_positions,
            **no_dropout,
        )
        if seed is not None:
            torch.manual_seed(seed)
        hf_dir = Path(out) / "hf"
        BertModel(config).save_pretrained(hf_dir)
        tokenizer.save_pretrained(hf_dir)
        word = models.Transformer(str(hf_dir), max_seq_length=max_seq_length)
        pooling = models.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
        model = SentenceTransformer(modules=[word, pooling, models.Normalize()], device="cpu")
        st_dir = Path(out) / "st"
        model.save(str(st_dir))
        return str(st_dir)

    return make


@pytest.fixture(scope="session")
def tiny_encoder_path(tmp_path_factory, make_tiny_encoder) -> str:
    """A tiny random BERT with the real MiniLM tokenizer, saved as a sentence-transformers folder.

    Seeded: unseeded, its weights depended on what the tests before it drew from torch's
    random generator, so its scores (and thresholds on them) changed with the test order."""
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny_encoder"), seed=0)


@pytest.fixture(scope="session")
def decoder_path() -> str:
    """The bundled SmolLM2-135M-Instruct, converted once to a Hugging Face folder."""
    from llama_index_ragtune.models import default_decoder

    return default_decoder()


@pytest.fixture(scope="session")
def tiny_causal_lm_path(tmp_path_factory, decoder_path) -> str:
    """A tiny random Llama with the real SmolLM2 tokenizer and chat template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny_lm")
    tokenizer = AutoTokenizer.from_pretrained(decoder_path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


# ---------------------------------------------------------------- a tiny BEIR folder

_TOY_TOPICS = [
    "cardiology",
    "astronomy",
    "volcano",
    "penguin",
    "saxophone",
    "glacier",
    "tornado",
    "orchid",
    "mosaic",
    "lantern",
    "compass",
    "galaxy",
    "pyramid",
    "dolphin",
    "cactus",
    "violin",
]
_TOY_FILLER = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "river",
    "forest",
    "stone",
    "cloud",
]


def _write_toy_beir(root: Path) -> Path:
    """A BEIR folder: 16 documents, 12 train and 4 test queries (CRLF qrels with a header)."""
    import json
    import random

    rng = random.Random(0)
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as corpus, open(root / "queries.jsonl", "w") as queries:
        for i, topic in enumerate(_TOY_TOPICS):
            text = (
                " ".join(rng.choice(_TOY_FILLER) for _ in range(6))
                + f" {topic} "
                + " ".join(rng.choice(_TOY_FILLER) for _ in range(6))
            )
            corpus.write(json.dumps({"_id": f"d{i}", "title": topic.title(), "text": text}) + "\n")
            words = " ".join(rng.choice(_TOY_FILLER) for _ in range(3))
            queries.write(json.dumps({"_id": f"q{i}", "text": f"{topic} {words}"}) + "\n")
    for split, ids in (("train", range(12)), ("test", range(12, 16))):
        lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in ids]
        (root / "qrels" / f"{split}.tsv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return root


@pytest.fixture()
def toy_beir_dir(tmp_path) -> Path:
    """A tiny BEIR folder (16 topic documents; 12 train, 4 test queries) where BM25 is near perfect."""
    return _write_toy_beir(tmp_path / "toybeir")


@pytest.fixture
def loads_seen(monkeypatch):
    """Whether each ``from_pretrained`` build in this process ran holding
    ``models.MODEL_LOADING_LOCK`` (one bool a build, in order)."""
    from transformers import initialization

    from llama_index_ragtune.models import MODEL_LOADING_LOCK

    seen: list[bool] = []
    original = initialization.no_tie_weights

    def spying():
        seen.append(MODEL_LOADING_LOCK._is_owned())
        return original()

    monkeypatch.setattr(initialization, "no_tie_weights", spying)
    return seen
