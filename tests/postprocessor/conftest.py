"""Fixtures for the reranker tests: a tiny random 1-logit cross-encoder saved as a folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.postprocessor.tiny_cross_encoder import save_tiny_cross_encoder


@pytest.fixture(scope="session")
def untrained_dir(tmp_path_factory, minilm_path) -> Path:
    """A tiny random 1-logit BERT cross-encoder with the real MiniLM tokenizer."""
    return save_tiny_cross_encoder(tmp_path_factory.mktemp("cross_encoder"), minilm_path)
