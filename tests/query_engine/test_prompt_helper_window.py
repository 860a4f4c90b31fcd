"""The prompt is fitted to a ``PromptHelper`` given to ``CitationQueryEngine`` or set on
``Settings`` (``Settings.context_window``), as core's response synthesizers fit theirs;
a model run here keeps its own window as an upper bound."""

from __future__ import annotations

import pytest
from llama_index.core import Settings
from llama_index.core.indices.prompt_helper import PromptHelper

from llama_index_ragtune.llms import LocalChatLLM
from llama_index_ragtune.query_engine import CitationQueryEngine
from llama_index_ragtune.query_engine.prompt_fit import prompt_budget
from tests.query_engine.test_citation import ListRetriever
from tests.query_engine.test_prompt_window_and_cut_answers import WindowedLLM, long_sources


@pytest.fixture
def settings_prompt_helper():
    """Sets ``Settings``' prompt helper for one test and puts the old one back."""
    saved = Settings._prompt_helper
    yield lambda helper: setattr(Settings, "prompt_helper", helper)
    Settings._prompt_helper = saved


def test_an_engine_prompt_helper_fits_the_sources_to_its_window():
    # the LLM's metadata says 3,900 tokens, the user's PromptHelper 300: was ignored
    nodes = long_sources()
    llm = WindowedLLM(answer="Fact [1].", calls=[])
    helper = PromptHelper(context_window=300, num_output=16)
    response = CitationQueryEngine(ListRetriever(nodes), llm=llm, prompt_helper=helper).query(
        "What is fact 3 of document 1?"
    )
    meta = response.metadata
    assert meta["prompt"]["context_window"] == 300 and meta["prompt"]["num_output"] == 16
    assert meta["prompt"]["prompt_tokens"] + 16 <= 300
    assert meta["left_out_node_ids"] and len(response.source_nodes) < len(nodes)


def test_settings_context_window_is_respected(settings_prompt_helper):
    nodes = long_sources()
    llm = WindowedLLM(answer="Fact [1].", calls=[])
    engine = CitationQueryEngine(ListRetriever(nodes), llm=llm)
    assert engine.query("q?").metadata["left_out_node_ids"] == []  # 3,900 tokens: all fit
    settings_prompt_helper(PromptHelper(context_window=300, num_output=16))
    meta = engine.query("q?").metadata
    assert meta["prompt"]["context_window"] == 300 and meta["left_out_node_ids"]


def test_a_local_model_keeps_its_own_window_as_the_bound(
    tiny_causal_lm_path, settings_prompt_helper
):
    llm = LocalChatLLM(tiny_causal_lm_path, max_new_tokens=16, context_window=340, device="cpu")
    settings_prompt_helper(PromptHelper(context_window=100_000, num_output=4))
    assert prompt_budget(llm) == (340, 16)  # cannot read past 340 tokens nor answer in 4
    assert prompt_budget(llm, PromptHelper(context_window=200, num_output=32)) == (200, 32)


def test_a_prompt_helper_of_another_type_is_refused_when_built():
    with pytest.raises(TypeError, match="prompt_helper must be a llama_index PromptHelper"):
        CitationQueryEngine(ListRetriever([]), llm=WindowedLLM(), prompt_helper=300)
