"""Offline, transformers' Hub compute kernels are switched off where the library loads models.

Recent transformers kernelize a model on CUDA by default, fetching the kernels from the
Hub: offline that fails at the first ``model.train()`` or CUDA load. ``load_model`` passes
``use_kernels=False`` to transformers model loads while the Hub is offline (checked on a
GPU: plain ``from_pretrained`` failed, ``load_model`` trained and generated); on CPU the
flag is what can be checked.
"""

import huggingface_hub
import pytest
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from llama_index_ragtune.llms import LocalChatLLM
from llama_index_ragtune.models import hub_kernel_kwargs, load_model


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: True)


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def test_offline_hub_switches_the_kernels_off(offline):
    assert hub_kernel_kwargs() == {"use_kernels": False}


def test_transformers_offline_alone_switches_them_off(online, monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert hub_kernel_kwargs() == {"use_kernels": False}


def test_online_leaves_transformers_default(online):
    assert hub_kernel_kwargs() == {}


@pytest.mark.parametrize(
    "factory", [AutoModelForCausalLM.from_pretrained, LlamaForCausalLM.from_pretrained]
)
def test_load_model_loads_without_kernels_offline(offline, tiny_causal_lm_path, factory):
    model = load_model(factory, tiny_causal_lm_path)
    assert model.use_kernels is False
    model.train()  # where transformers would kernelize for training
    assert model.use_kernels is False


def test_a_given_use_kernels_is_kept(offline, monkeypatch, tiny_causal_lm_path):
    seen = {}
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.update(kwargs)
        return real(cls, *args, **{**kwargs, "use_kernels": False})

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    load_model(AutoModelForCausalLM.from_pretrained, tiny_causal_lm_path, use_kernels=True)
    assert seen["use_kernels"] is True


def test_tokenizers_and_configs_get_no_kernel_argument(offline, tiny_causal_lm_path):
    tokenizer = load_model(AutoTokenizer.from_pretrained, tiny_causal_lm_path)
    config = load_model(AutoConfig.from_pretrained, tiny_causal_lm_path)
    assert "use_kernels" not in tokenizer.init_kwargs
    assert not hasattr(config, "use_kernels")


def test_the_library_llm_loads_through_it(offline, tiny_causal_lm_path):
    llm = LocalChatLLM(tiny_causal_lm_path, max_new_tokens=2)
    assert llm._model.use_kernels is False
