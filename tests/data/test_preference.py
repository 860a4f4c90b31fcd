"""PreferenceBuilder: rule-made rejected answers and pairs mined from a model's failures."""

from __future__ import annotations

import dataclasses

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse

from llama_index_ragtune.data.grounded import GroundedContext
from llama_index_ragtune.data.preference import PreferenceBuilder, composite_score
from llama_index_ragtune.data.qa import QAExample
from llama_index_ragtune.evaluation.generation import GenerationEvaluator
from llama_index_ragtune.grounding import DEFAULT_REFUSAL, parse_citations

SOURCES = [
    "Rouen is the capital of Normandy.",
    "Caen is a city in Normandy.",
    "Paris is the French capital.",
]


def _context(qid, answerable=True, label=None, gold=2):
    ids = ["d1", "d2", "d3"]
    source_texts = [SOURCES[1], SOURCES[0], SOURCES[2]]
    if label is not None:
        example = QAExample(
            qid,
            "Claim: Rouen is the capital.",
            ["d2"],
            [label],
            True,
            ["Rouen is the capital of Normandy."],
            label=label,
        )
        target = f'Supported [{gold}]: "Rouen is the capital of Normandy."'
    else:
        example = QAExample(
            qid,
            "What is the capital of Normandy?",
            ["d2"],
            ["Rouen"] if answerable else [],
            answerable,
        )
        target = f"Rouen [{gold}]" if answerable else DEFAULT_REFUSAL
    return GroundedContext(
        qid=qid,
        question=example.question,
        source_ids=ids,
        source_texts=source_texts,
        gold_numbers=[gold],
        answerable=answerable,
        target=target,
        example=example,
    )


def test_a_fabricated_answer_quotes_a_whole_sentence_of_hard_wrapped_markdown():
    page = (
        "## Perishables\n\nReport a problem within\n48 hours of delivery. Keep the\nreceipt "
        "with you."
    )
    context = _context("u", answerable=False)
    context = dataclasses.replace(context, source_texts=[page, page, page])
    whole = {
        "Perishables",
        "Report a problem within 48 hours of delivery.",
        "Keep the receipt with you.",
    }
    for seed in range(8):
        fabricated = PreferenceBuilder(seed=seed).rejected_candidates(context)["fabricated"]
        assert fabricated.split(": ", 1)[1].strip('"') in whole


def test_rule_made_rejected_answers():
    builder = PreferenceBuilder(seed=0)
    answerable = builder.rejected_candidates(_context("a"))
    assert set(answerable) == {"uncited", "wrong_citation", "refusal"}
    assert answerable["uncited"] == "Rouen" and parse_citations(answerable["uncited"]) == []
    wrong = parse_citations(answerable["wrong_citation"])
    assert (
        len(wrong) == 1
        and wrong[0] in (1, 3)
        and answerable["wrong_citation"].startswith("Rouen [")
    )
    assert answerable["refusal"] == DEFAULT_REFUSAL
    refusal = builder.rejected_candidates(_context("u", answerable=False))
    assert set(refusal) == {"fabricated"}
    fabricated = refusal["fabricated"]
    assert parse_citations(fabricated) and fabricated != DEFAULT_REFUSAL
    claim = builder.rejected_candidates(_context("c", label="SUPPORT"))
    assert claim["uncited"] == 'Supported: "Rouen is the capital of Normandy."'


def test_rejected_answers_score_below_chosen():
    evaluator = GenerationEvaluator(answer_metric="squad")
    builder = PreferenceBuilder(seed=0)
    for ctx in (_context("a"), _context("u", answerable=False)):
        chosen = composite_score(evaluator.evaluate_example(**ctx.evaluation_kwargs(ctx.target)))
        for rejected in builder.rejected_candidates(ctx).values():
            assert (
                composite_score(evaluator.evaluate_example(**ctx.evaluation_kwargs(rejected)))
                < chosen
            )


def test_build_dataset_in_trl_preference_format():
    contexts = [_context(f"a{i}") for i in range(6)] + [
        _context(f"u{i}", answerable=False) for i in range(3)
    ]
    dataset = PreferenceBuilder(pairs_per_context=2, seed=0).build(contexts, show_progress=False)
    assert {"prompt", "chosen", "rejected", "qid", "strategy"} <= set(dataset.column_names)
    assert len(dataset) == 6 * 2 + 3 * 1  # refusal contexts have one applicable strategy
    row = dataset[0]
    assert row["prompt"] == contexts[0].messages()
    assert row["chosen"] == [{"role": "assistant", "content": contexts[0].target}]
    assert (
        row["rejected"][0]["role"] == "assistant"
        and row["rejected"][0]["content"] != row["chosen"][0]["content"]
    )
    assert set(dataset["strategy"]) == {"uncited", "wrong_citation", "refusal", "fabricated"}
    only = PreferenceBuilder(strategies=["refusal"]).build(contexts, show_progress=False)
    assert set(only["strategy"]) == {"refusal"} and len(only) == 6
    with pytest.raises(ValueError, match="applies"):
        PreferenceBuilder(strategies=["fabricated"]).build(contexts[:2], show_progress=False)
    with pytest.raises(ValueError, match="bogus"):
        PreferenceBuilder(strategies=["bogus"])


class ScriptedLLM:
    """Answers each conversation from a fixed cycle, as a sampling LLM would vary its answers."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def generate_batch(self, conversations, **kwargs):
        self.calls.append(kwargs)
        return [
            ChatResponse(
                message=ChatMessage(role="assistant", content=self.answers[i % len(self.answers)])
            )
            for i in range(len(conversations))
        ]


def test_from_model_failures_pairs_best_against_worst():
    llm = ScriptedLLM(["Rouen [1]", "Rouen [2]", DEFAULT_REFUSAL, "Rouen"])
    contexts = [_context("a0"), _context("a1")]
    pairs = PreferenceBuilder().from_model_failures(
        llm, contexts, num_samples=4, temperature=0.7, show_progress=False
    )
    assert llm.calls[0]["do_sample"] and llm.calls[0]["temperature"] == 0.7
    assert len(pairs) == 2
    assert pairs[0]["chosen"][0]["content"] == "Rouen [2]"  # right answer, right citation
    assert (
        pairs[0]["rejected"][0]["content"] == DEFAULT_REFUSAL
    )  # refusing an answerable question scores 0
    assert pairs[0]["chosen_score"] == 1.0 and pairs[0]["rejected_score"] == 0.0
    # All samples equal -> a tie -> no pair.
    ties = PreferenceBuilder().from_model_failures(
        ScriptedLLM(["Rouen [2]"]), contexts, num_samples=3, show_progress=False
    )
    assert len(ties) == 0
    with pytest.raises(ValueError, match="temperature"):
        PreferenceBuilder().from_model_failures(llm, contexts, temperature=0.0)


def test_rejected_answers_use_the_citation_grammar():
    context = _context("g")
    context.target = 'Rouen [2][source 2]: "Rouen is the capital of `x[2]` Normandy."'
    out = PreferenceBuilder(seed=0).rejected_candidates(context)
    assert out["uncited"] == 'Rouen: "Rouen is the capital of `x[2]` Normandy."'
    wrong = out["wrong_citation"]
    assert wrong.startswith(("Rouen [1]: ", "Rouen [3]: ")) and wrong.endswith('`x[2]` Normandy."')
    assert len(parse_citations(wrong)) == 1
    with pytest.raises(ValueError, match="refusal must be a sentence"):
        PreferenceBuilder(refusal="")
