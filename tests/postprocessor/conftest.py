"""Fixtures for the reranker tests: a tiny random 1-logit cross-encoder saved as a folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def untrained_dir(tmp_path_factory, minilm_path) -> Path:
    """A tiny random 1-logit BERT cross-encoder with the real MiniLM tokenizer."""
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("cross_encoder")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertForSequenceClassification(config).save_pretrained(out / "hf")
    tokenizer.save_pretrained(out / "hf")
    CrossEncoder(str(out / "hf"), device="cpu", max_length=32).save(str(out / "untrained"))
    return out / "untrained"
