"""CitationQueryEngine: pluggable refusal policy explained in metadata, citation post-check, quotes."""

from __future__ import annotations

import asyncio

import pytest

from llama_index_ragtune.evaluation import GenerationEvaluator
from llama_index_ragtune.grounding import DEFAULT_REFUSAL
from llama_index_ragtune.llms import LocalChatLLM
from llama_index_ragtune.llms.refusal_policy import (
    AnswerabilityRefusalPolicy,
    CombinedRefusalPolicy,
    DecoderRefusalPolicy,
)
from llama_index_ragtune.query_engine import CitationQueryEngine
from llama_index_ragtune.query_engine.post_check import (
    check_citations,
    claim_spans,
    uncited_claims,
)
from tests.query_engine.test_citation import ListRetriever, ScriptedLLM, engine_for, make_nodes


def capital_scorer(questions, sources):
    """Answerable when a source names the country the question asks about."""
    out = []
    for question, texts in zip(questions, sources, strict=True):
        country = question.rstrip("?").split()[-1].lower()
        out.append(0.95 if any(country in t.lower() for t in texts) else 0.05)
    return out


POLICY = AnswerabilityRefusalPolicy(capital_scorer, threshold=0.5)


def test_policy_refuses_before_the_llm_and_explains_why():
    engine, llm = engine_for("Madrid [1].", refusal_policy=POLICY)
    response = engine.query("What is the capital of Spain?")
    assert llm.calls == []  # decided by the encoder side: the LLM was never asked
    assert response.response == DEFAULT_REFUSAL and response.metadata["refused"]
    decision = response.metadata["refusal_decision"]
    assert decision["signal"] == "answerability" and decision["refused"] is True
    assert decision["value"] == pytest.approx(0.95) and decision["threshold"] == 0.5
    assert "encoder P(no source holds the answer) 0.95 >= threshold 0.5" in decision["explanation"]
    assert len(response.source_nodes) == 3  # the sources it looked at stay visible
    answered = engine_for("Rome [2].", refusal_policy=POLICY)[0].query("Capital of Italy?")
    assert not answered.metadata["refused"]
    assert answered.metadata["refusal_decision"]["refused"] is False


@pytest.mark.parametrize("streaming", [False, True])
def test_policy_decisions_stream_and_run_async(streaming):
    engine, _ = engine_for("Rome [2].", refusal_policy=POLICY, streaming=streaming)
    sync = engine.query("What is the capital of Spain?")
    asynchronous = asyncio.run(engine.aquery("What is the capital of Spain?"))
    if streaming:
        assert "".join(sync.response_gen) == DEFAULT_REFUSAL

        async def drain():
            return "".join([t async for t in asynchronous.async_response_gen()])

        assert asyncio.run(drain()) == DEFAULT_REFUSAL
    assert sync.metadata["refusal_decision"] == asynchronous.metadata["refusal_decision"]


def test_local_llm_decisions_reach_the_metadata(tiny_causal_lm_path):
    llm = LocalChatLLM(tiny_causal_lm_path, max_new_tokens=6, refusal_threshold=0.0)
    engine = CitationQueryEngine(ListRetriever(make_nodes()), llm=llm)
    response = engine.query("What is the capital of Italy?")
    decision = response.metadata["refusal_decision"]
    assert response.metadata["refused"] and decision["signal"] == "decoder"
    assert decision["threshold"] == 0.0
    # the engine's combined policy asks the LocalChatLLM for its refusal probability
    combined = CombinedRefusalPolicy.fit(
        capital_scorer, [0.9, 0.8, 0.1, 0.2], [0.1, 0.2, 0.9, 0.8], [False, False, True, True]
    )
    plain = LocalChatLLM(tiny_causal_lm_path, max_new_tokens=6)
    engine = CitationQueryEngine(ListRetriever(make_nodes()), llm=plain, refusal_policy=combined)
    response = engine.query("What is the capital of Italy?")
    assert set(response.metadata["refusal_decision"]["signals"]) == {
        "decoder",
        "answerability",
        "combined",
    }


def test_policies_that_need_the_decoder_need_a_local_llm():
    with pytest.raises(ValueError, match="use LocalChatLLM"):
        engine_for("Rome [2].", refusal_policy=DecoderRefusalPolicy(0.5))
    with pytest.raises(TypeError, match="RefusalPolicy"):
        engine_for("Rome [2].", refusal_policy=0.5)


def test_uncited_claims_are_flagged_by_default():
    engine, _ = engine_for("Rome is the capital. Paris [1].")
    check = engine.query("Capitals?").metadata["post_check"]
    assert check == {
        "mode": "flag",
        "added_citations": [],
        "uncited_claims": ["Rome is the capital."],
    }
    refused = engine_for(DEFAULT_REFUSAL)[0].query("x").metadata["post_check"]
    assert refused["uncited_claims"] == []


class CitingLLM(ScriptedLLM):
    """A scripted LLM that also says which source it would cite after a prefix."""

    preferences: list[float] = []
    prefixes: list[str] = []

    def citation_probabilities(self, messages, answer_prefix, n_sources):
        self.prefixes.append(answer_prefix)
        return self.preferences[:n_sources]


def test_cite_mode_adds_the_source_the_model_prefers():
    llm = CitingLLM(
        answer='Rome: "Rome is the capital of Italy." Paris [1].',
        calls=[],
        preferences=[0.2, 0.7, 0.1],
        prefixes=[],
    )
    engine = CitationQueryEngine(ListRetriever(make_nodes()), llm=llm, uncited="cite")
    response = engine.query("What is the capital of Italy?")
    meta = response.metadata
    assert llm.prefixes == ["Rome"]  # asked once, right where the citation goes
    assert response.response == 'Rome [2]: "Rome is the capital of Italy." Paris [1].'
    assert meta["post_check"] == {
        "mode": "cite",
        "added_citations": [
            {"claim": 'Rome: "Rome is the capital of Italy."', "number": 2, "probability": 0.7}
        ],
        "uncited_claims": [],
    }
    assert meta["raw_answer"] == llm.answer  # the model's own text stays on record
    assert meta["cited_node_ids"] == ["doc-rome", "doc-paris"]
    row = GenerationEvaluator().evaluate_response(response, gold_node_ids=["doc-rome"])
    assert row["answer"] == meta["post_checked_answer"] and row["citation_recall"] == 1.0
    flagged = engine_for(llm.answer)[0].query("What is the capital of Italy?")
    assert flagged.metadata["uncited"] is False  # Paris [1] cites, but one claim does not
    assert flagged.metadata["post_check"]["uncited_claims"] == [
        'Rome: "Rome is the capital of Italy."'
    ]


def test_cite_mode_with_a_local_llm(tiny_causal_lm_path):
    llm = LocalChatLLM(tiny_causal_lm_path, max_new_tokens=8)
    engine = CitationQueryEngine(ListRetriever(make_nodes()), llm=llm, uncited="cite")
    meta = engine.query("What is the capital of Italy?").metadata
    assert meta["post_check"]["mode"] == "cite" and meta["post_check"]["uncited_claims"] == []
    with pytest.raises(ValueError, match="streaming=False"):
        CitationQueryEngine(ListRetriever(make_nodes()), llm=llm, uncited="cite", streaming=True)
    with pytest.raises(ValueError, match="citation_probabilities"):
        engine_for("Rome.", uncited="cite")
    with pytest.raises(ValueError, match="uncited must be one of"):
        engine_for("Rome.", uncited="drop")


def test_post_check_rules():
    assert uncited_claims("Rome [9]. Paris [1].", n_sources=2) == [(0, 9)]  # [9] is invalid
    quoted = 'Rouen: "The capital. It is old." Paris [2].'
    assert [quoted[a:b] for a, b in claim_spans(quoted)] == [  # never split inside a quote
        'Rouen: "The capital. It is old."',
        "Paris [2].",
    ]
    placed = check_citations('Rouen: "The capital."', 2, "cite", choose=lambda p: [0.1, 0.9])
    assert placed.text == 'Rouen [2]: "The capital."'  # before the quote, as trained
    assert placed.added[0].probability == 0.9
    end = check_citations("It is Rome", 2, "cite", choose=lambda p: [0.6, 0.4])
    assert end.text == "It is Rome [1]"
    nothing = check_citations("Rome.", 0, "cite", choose=lambda p: [])
    assert nothing.flagged == ["Rome."] and nothing.text == "Rome."
    with pytest.raises(ValueError, match="choose="):
        check_citations("Rome.", 2, "cite")
    with pytest.raises(ValueError, match="returned 1 probabilities for 2"):
        check_citations("Rome.", 2, "cite", choose=lambda p: [1.0])


def test_quotes_are_checked_in_the_metadata():
    engine, _ = engine_for('Rome [2]: "Rome is the capital of Italy." Paris [1]: "a city of kings"')
    quotes = engine.query("Capitals?").metadata
    assert [q["verified"] for q in quotes["quotes"]] == [True, False]
    assert quotes["unverified_quotes"] == 1 and quotes["quotes"][0]["matched_source"] == 2
