"""A tiny random 1-logit BERT cross-encoder with the real MiniLM tokenizer, saved as a folder.

Example::

    folder = save_tiny_cross_encoder(tmp_path, minilm_path, seed=0)   # tmp_path / "untrained"
    CrossEncoderRerank(model=str(folder), top_n=3)
"""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_cross_encoder(
    out: Path, tokenizer_path: str | Path, seed: int = 0, name: str = "untrained"
) -> Path:
    """Save the model (seeded weights) to ``out / name`` (its Hugging Face copy in ``out / "hf"``)."""
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
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
    CrossEncoder(str(out / "hf"), device="cpu", max_length=32).save(str(out / name))
    return out / name
