"""GenerationEvaluator: hand-computed citation, answer and refusal metrics."""

from __future__ import annotations

import json
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
)
from llama_index.core.base.response.schema import Response
from llama_index.core.llms import CustomLLM
from llama_index.core.schema import NodeWithScore, TextNode

from llama_index_ragtune.evaluation import (
    CrossEncoderEntailment,
    GenerationEvaluator,
    GenerationReport,
    LLMJudgeEntailment,
    SystemResult,
)
from llama_index_ragtune.evaluation.generation import (
    clean_answer,
    extract_label,
    normalize_answer,
    squad_exact_match,
    squad_f1,
)
from llama_index_ragtune.grounding import DEFAULT_REFUSAL

SOURCES = ["a", "b", "c"]


def test_citation_validity_precision_recall():
    ev = GenerationEvaluator()
    row = ev.evaluate_example(
        "q", "X is Y [1][2][5].", SOURCES, gold_node_ids=["a", "d"], gold_answers=["Y"]
    )
    assert row["cited"] == [1, 2, 5] and row["invalid_citations"] == [5]
    assert row["cited_node_ids"] == ["a", "b"]
    assert row["citation_valid"] == 0.0
    assert row["citation_precision"] == pytest.approx(
        1 / 3
    )  # a is gold; b wrong; [5] points nowhere
    assert row["citation_recall"] == pytest.approx(1 / 2)  # a of {a, d}
    assert row["citation_recall_retrieved"] == 1.0  # d was never among the sources

    row = ev.evaluate_example("q", "X [2, 3].", SOURCES, gold_node_ids=["b", "c"])
    assert (row["citation_valid"], row["citation_precision"], row["citation_recall"]) == (
        1.0,
        1.0,
        1.0,
    )

    row = ev.evaluate_example("q", "X.", SOURCES, gold_node_ids=["a"])
    assert row["citation_valid"] is None and row["citation_precision"] is None
    assert row["citation_recall"] == 0.0 and row["uncited"] is True

    row = ev.evaluate_example("q", "X [1].", SOURCES, gold_node_ids=["z"])
    assert row["citation_recall_retrieved"] is None  # no gold source retrieved

    row = ev.evaluate_example("q", DEFAULT_REFUSAL, SOURCES, answerable=False)
    assert row["refused"] and row["citation_precision"] is None and row["citation_recall"] is None


def test_citations_and_refusals_read_like_the_query_engine():
    ev = GenerationEvaluator(answer_metric="scifact")
    row = ev.evaluate_example(
        "q", "Supported [Source 1; 3-4]. `a[2]`", SOURCES, gold_node_ids=["a"], gold_label="SUPPORT"
    )
    assert row["cited"] == [1, 3, 4] and row["invalid_citations"] == [4]
    assert row["cited_node_ids"] == ["a", "c"] and row["predicted_label"] == "SUPPORT"
    hedged = ev.evaluate_example(
        "q", f"{DEFAULT_REFUSAL} But [2] says so.", SOURCES, answerable=False
    )
    assert not hedged["refused"] and not hedged["uncited"] and hedged["predicted_label"] is None
    refused = ev.evaluate_example("q", f"{DEFAULT_REFUSAL} [9]", SOURCES, answerable=False)
    assert refused["refused"] and refused["invalid_citations"] == [9]
    assert refused["predicted_label"] == "NOT ENOUGH INFO" and not refused["uncited"]
    marked = ev.evaluate_example("q", f"[2] {DEFAULT_REFUSAL}", SOURCES, answerable=False)
    assert marked["refused"] and marked["cited"] == [] and marked["cited_node_ids"] == []
    assert marked["predicted_label"] == "NOT ENOUGH INFO"  # not a citation of the gold source
    empty = GenerationEvaluator().evaluate_example("q", "[1] [2]", SOURCES, gold_node_ids=["a"])
    assert empty["uncited"] and empty["cited_node_ids"] == [] and empty["citation_hit"] == 0.0
    only_invalid = ev.evaluate_example("q", "Supported [9].", SOURCES, gold_label="SUPPORT")
    assert only_invalid["uncited"] and not only_invalid["refused"]
    with pytest.raises(ValueError, match="refusal must be a sentence"):
        GenerationEvaluator(refusal=" ")


def test_squad_normalisation_em_f1():
    assert normalize_answer("The  Eiffel-Tower, in Paris!") == "eiffeltower in paris"
    assert clean_answer("Answer: The Eiffel Tower [1].") == "The Eiffel Tower."
    assert clean_answer('Supported [2]: "Mice treated with X lived longer."') == "Supported"
    assert squad_exact_match("The Eiffel Tower.", ["Eiffel tower"]) == 1.0
    assert squad_exact_match("Eiffel", ["Eiffel tower"]) == 0.0
    assert squad_f1("in Paris, France", ["Paris"]) == pytest.approx(0.5)  # P 1/3, R 1
    assert squad_f1("in Paris, France", ["France Paris", "Paris"]) == pytest.approx(
        0.8
    )  # max: P 2/3, R 1
    assert squad_f1("Rome", ["Paris"]) == 0.0

    ev = GenerationEvaluator(answer_metric="squad")
    row = ev.evaluate_example(
        "q", "The Eiffel Tower [1].", SOURCES, ["a"], gold_answers=["Eiffel tower", "tower"]
    )
    assert (row["exact_match"], row["f1"], row["contains"], row["answer_score"]) == (
        1.0,
        1.0,
        1.0,
        1.0,
    )
    row = ev.evaluate_example(
        "q", "It is in Paris, France [1].", SOURCES, ["a"], gold_answers=["Paris"]
    )
    assert row["exact_match"] == 0.0 and row["contains"] == 1.0
    assert row["f1"] == pytest.approx(
        2 * (1 / 5) * 1 / (1 / 5 + 1)
    )  # 5 tokens: it is in paris france
    row = ev.evaluate_example("q", DEFAULT_REFUSAL, SOURCES, ["a"], gold_answers=["Paris"])
    assert (row["exact_match"], row["f1"], row["contains"]) == (0.0, 0.0, 0.0)


def test_refusal_calibration_and_aggregate():
    ev = GenerationEvaluator()
    examples = [
        dict(
            question="A1",
            answer_text=DEFAULT_REFUSAL,
            source_node_ids=SOURCES,
            gold_node_ids=["a"],
            gold_answers=["Paris"],
        ),  # FP
        dict(
            question="A2",
            answer_text="Paris [1].",
            source_node_ids=SOURCES,
            gold_node_ids=["a"],
            gold_answers=["Paris"],
        ),
        dict(
            question="A3",
            answer_text="Rome [2].",
            source_node_ids=SOURCES,
            gold_node_ids=["a"],
            gold_answers=["Paris"],
        ),
        dict(
            question="U1",
            answer_text=DEFAULT_REFUSAL.upper(),
            source_node_ids=SOURCES,
            answerable=False,
        ),  # TP
        dict(question="U2", answer_text="Berlin.", source_node_ids=SOURCES, answerable=False),  # FN
    ]
    report = ev.evaluate(examples, show_progress=False, name="toy")
    agg = report.aggregate
    assert (agg["refusal_tp"], agg["refusal_fp"], agg["refusal_fn"]) == (1, 1, 1)
    assert agg["refusal_precision"] == pytest.approx(0.5)
    assert agg["refusal_recall"] == pytest.approx(0.5)
    assert agg["refusal_f1"] == pytest.approx(0.5)
    assert agg["over_refusal_rate"] == pytest.approx(1 / 3)
    assert agg["refusal_rate"] == pytest.approx(2 / 5)
    assert agg["exact_match"] == pytest.approx(1 / 3)  # A1 refused -> 0, A2 1, A3 0
    assert agg["citation_precision"] == pytest.approx(1 / 2)  # A2 1, A3 0 (A1 cites nothing)
    assert agg["citation_recall"] == pytest.approx(1 / 3)
    assert agg["uncited_rate"] == pytest.approx(1 / 3)  # U2 of the answered A2, A3, U2
    assert (agg["n_examples"], agg["n_answerable"], agg["n_unanswerable"]) == (5, 3, 2)
    assert agg["answer_rate"] == pytest.approx(3 / 5) and agg["empty_rate"] == 0.0

    md = report.to_markdown()
    assert "| refusal_f1 | 0.500 |" in md and "**toy**" in md
    assert json.loads(report.to_json())["aggregate"]["refusal_precision"] == 0.5


def test_report_json_round_trip(tmp_path):
    ev = GenerationEvaluator()
    report = ev.evaluate(
        [
            dict(
                question="q",
                answer_text="Paris [1].",
                source_node_ids=["a"],
                gold_node_ids=["a"],
                gold_answers=["Paris"],
            )
        ],
        show_progress=False,
    )
    report.to_json(tmp_path / "r.json")
    loaded = GenerationReport.from_json(tmp_path / "r.json")
    assert loaded.aggregate == report.aggregate
    assert GenerationReport(rows=[], metric_keys=("f1",)).aggregate["f1"] is None
    worse = ev.evaluate(
        [
            dict(
                question="q",
                answer_text="Rome [1].",
                source_node_ids=["a"],
                gold_node_ids=["a"],
                gold_answers=["Paris"],
            )
        ],
        show_progress=False,
        name="worse",
    )
    table = worse.compare(report, keys=["exact_match", "refusal_recall"])
    assert "| exact_match | 0.000 | 1.000 | +1.000 |" in table
    assert "| refusal_recall | — | — | — |" in table


def test_scifact_labels():
    from llama_index_ragtune.data.grounded import LABEL_WORDS  # the words the training targets use

    for label, word in LABEL_WORDS.items():
        assert extract_label(f'{word} [1]: "evidence"') == label
    assert extract_label("Answer: refuted [2].") == "CONTRADICT"
    assert extract_label(DEFAULT_REFUSAL) == "NOT ENOUGH INFO"
    assert extract_label("It is not supported.") is None

    ev = GenerationEvaluator(answer_metric="scifact")
    examples = [
        ('Supported [1]: "x"', "SUPPORT", True),  # right
        ("Contradicted [2].", "SUPPORT", True),  # wrong
        (DEFAULT_REFUSAL, None, False),  # right: NEI
        (DEFAULT_REFUSAL, "CONTRADICT", True),  # wrong: refused an answerable claim
        ("Maybe.", "contradict", True),  # wrong: no label
    ]
    rows = [
        ev.evaluate_example("claim", a, SOURCES, ["a"], answerable=ok, gold_label=g)
        for a, g, ok in examples
    ]
    assert [r["label_accuracy"] for r in rows] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert rows[2]["gold_label"] == "NOT ENOUGH INFO" and "answer_score" not in rows[2]
    report = GenerationReport(rows=rows, metric_keys=ev.metric_keys())
    assert report.aggregate["label_accuracy"] == pytest.approx(2 / 5)
    assert report.aggregate["answer_score"] == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="gold_label"):
        ev.evaluate_example("claim", "Supported [1].", SOURCES, ["a"], answerable=True)


def test_custom_answer_metric():
    def metric(prediction: str, golds: list[str]) -> dict[str, float]:
        return {
            "score": float(prediction.lower().startswith(golds[0].lower())),
            "length": len(prediction),
        }

    ev = GenerationEvaluator(answer_metric=metric)
    report = ev.evaluate(
        [
            dict(
                question="q",
                answer_text="Paris, France [1].",
                source_node_ids=["a"],
                gold_answers=["paris"],
            )
        ],
        show_progress=False,
    )
    assert report.rows[0]["answer_score"] == 1.0 and report.rows[0]["custom_length"] == len(
        "Paris, France."
    )
    assert report.aggregate["custom_length"] == len("Paris, France.")
    with pytest.raises(ValueError, match="answer_metric"):
        GenerationEvaluator(answer_metric="bleu")


def test_entailment_hook_claim_level():
    calls: list[tuple[str, str]] = []

    def entails(claim: str, source: str) -> float:
        calls.append((claim, source))
        return 0.9 if claim.rstrip(".") in source else 0.1

    texts = ["Paris is in France", "Rome is in Italy", "Berlin is in Germany"]
    ev = GenerationEvaluator(entailment=entails, entailment_threshold=0.5)
    row = ev.evaluate_example(
        "q",
        "Paris is in France [1]. Rome is in Italy [2][3]. No citation here.",
        SOURCES,
        ["a", "b"],
        gold_answers=["x"],
        source_texts=texts,
    )
    assert row["nli_citation_recall"] == 1.0  # both cited claims supported by their cited sources
    assert row["nli_citation_precision"] == pytest.approx(
        2 / 3
    )  # (Rome, Berlin source) is imprecise
    assert ("Rome is in Italy.", "Berlin is in Germany") in calls
    assert ("Rome is in Italy.", "Rome is in Italy\n\nBerlin is in Germany") in calls
    assert not any("No citation" in c for c, _ in calls)

    row = ev.evaluate_example("q", "Paris is in France [1][7].", SOURCES, ["a"], source_texts=texts)
    assert row["nli_citation_precision"] == pytest.approx(1 / 2)  # [7] points nowhere
    with pytest.raises(ValueError, match="source_texts"):
        ev.evaluate_example("q", "x [1].", SOURCES, ["a"], source_texts=texts[:2])


class YesNoLLM(CustomLLM):
    reply: str = "Yes."
    prompts: list[str] = []

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=True)

    def chat(self, messages, **kwargs: Any) -> ChatResponse:
        self.prompts.append(messages[-1].content)
        return ChatResponse(message=ChatMessage(role="assistant", content=self.reply))

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self.reply)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        yield CompletionResponse(text=self.reply, delta=self.reply)


def test_llm_judge_entailment():
    llm = YesNoLLM(reply="Yes, it does.", prompts=[])
    judge = LLMJudgeEntailment(llm)
    assert judge("Paris is in France.", "Paris is the capital of France.") is True
    assert "Paris is in France." in llm.prompts[0] and "capital of France" in llm.prompts[0]
    assert LLMJudgeEntailment(YesNoLLM(reply="No.", prompts=[]))("a", "b") is False
    assert LLMJudgeEntailment(YesNoLLM(reply="Not sure, yes", prompts=[]))("a", "b") is False


def test_cross_encoder_entailment(tiny_encoder_path):
    from pathlib import Path

    import torch
    from sentence_transformers import CrossEncoder

    hf_dir = str(Path(tiny_encoder_path).parent / "hf")
    relevance = CrossEncoderEntailment(CrossEncoder(hf_dir, num_labels=1, device="cpu"))
    score = relevance("Paris is in France.", "Paris is the capital of France.")
    assert 0.0 <= score <= 1.0 and relevance.entail_index is None

    nli = CrossEncoder(hf_dir, num_labels=3, device="cpu")
    nli.config.id2label = {0: "contradiction", 1: "entailment", 2: "neutral"}
    check = CrossEncoderEntailment(nli)
    logits = nli.predict(
        [("Paris is the capital of France.", "Paris is in France.")],
        activation_fn=torch.nn.Identity(),
        convert_to_tensor=True,
    )
    assert check("Paris is in France.", "Paris is the capital of France.") == pytest.approx(
        torch.softmax(logits[0], -1)[1].item(), abs=1e-5
    )
    nli.config.id2label = {0: "a", 1: "b", 2: "c"}
    with pytest.raises(ValueError, match="entailment"):
        CrossEncoderEntailment(nli)


def test_evaluate_response_from_citation_engine_output():
    nodes = [
        NodeWithScore(node=TextNode(id_="n1", text="Paris is the capital of France."), score=1.0),
        NodeWithScore(node=TextNode(id_="n2", text="Rome is in Italy."), score=0.5),
    ]
    nodes[1].node.relationships = {}
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo

    nodes[1].node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id="doc-rome")
    response = Response(
        "Paris [1].",
        source_nodes=nodes,
        metadata={"raw_answer": "Paris [1][4].", "question": "capital of France?"},
    )
    ev = GenerationEvaluator()
    row = ev.evaluate_response(response, gold_node_ids=["n1", "doc-rome"], gold_answers=["Paris"])
    assert row["question"] == "capital of France?"
    assert row["invalid_citations"] == [4] and row["citation_precision"] == pytest.approx(1 / 2)
    assert row["citation_recall"] == pytest.approx(
        1 / 2
    )  # doc-rome (source 2, by ref_doc_id) not cited
    assert row["citation_recall_retrieved"] == pytest.approx(1 / 2)
    assert row["exact_match"] == 1.0
    report = ev.evaluate(
        [{"response": response, "gold_node_ids": ["n1"], "gold_answers": ["Paris"]}],
        show_progress=False,
    )
    assert report.rows[0]["citation_recall"] == 1.0


def test_refusal_f1_is_zero_when_nothing_is_refused():
    ev = GenerationEvaluator()
    report = ev.evaluate(
        [
            dict(question="U", answer_text="Berlin.", source_node_ids=["a"], answerable=False),
            dict(
                question="A",
                answer_text="Paris [1].",
                source_node_ids=["a"],
                gold_answers=["Paris"],
            ),
        ],
        show_progress=False,
    )
    agg = report.aggregate
    assert (
        agg["refusal_precision"] is None
        and agg["refusal_recall"] == 0.0
        and agg["refusal_f1"] == 0.0
    )
    only_answerable = ev.evaluate(
        [dict(question="A", answer_text="Paris [1].", source_node_ids=["a"])], show_progress=False
    )
    assert (
        only_answerable.aggregate["refusal_recall"] is None
        and only_answerable.aggregate["refusal_f1"] is None
    )


def test_split_claims_handles_any_script_and_cjk_full_stops():
    from llama_index_ragtune.grounding import split_claims

    assert split_claims(
        "Paris is in France [1]. Évora is in Portugal [2]. 巴黎很大[1]。罗马也是[2]。"
    ) == [
        "Paris is in France [1].",
        "Évora is in Portugal [2].",
        "巴黎很大[1]。",
        "罗马也是[2]。",
    ]
    assert split_claims("It costs 3. 5 apples, e.g. the red ones [1].") == [
        "It costs 3. 5 apples, e.g. the red ones [1]."
    ]
    ev = GenerationEvaluator(entailment=lambda claim, source: claim.rstrip("。") in source)
    row = ev.evaluate_example(
        "q", "巴黎很大[1]。罗马也是[2]。", SOURCES[:2], ["a"], source_texts=["巴黎很大", "柏林"]
    )
    assert row["nli_citation_recall"] == pytest.approx(1 / 2)  # two claims, one supported


def test_unknown_example_keys_name_the_example():
    ev = GenerationEvaluator()
    bad = dict(
        question="q", answer_text="x", source_node_ids=["a"], gold_answer=["x"], example_id="e7"
    )
    with pytest.raises(ValueError, match=r"'e7'.*unknown key\(s\) \['gold_answer'\]"):
        ev.evaluate([bad], show_progress=False)


def test_report_dict_and_dataframe_round_trip():
    ev = GenerationEvaluator()
    report = ev.evaluate(
        [
            dict(
                question="q",
                answer_text="Paris [1].",
                source_node_ids=["a"],
                gold_answers=["Paris"],
            )
        ],
        show_progress=False,
        name="r",
    )
    again = GenerationReport.from_dict(json.loads(report.to_json()))
    assert again.aggregate == report.aggregate and again.name == "r" and len(again) == 1
    frame = report.to_dataframe()
    assert list(frame["f1"]) == [1.0] and report["f1"] == 1.0
    assert str(report) == report.to_markdown()


def test_llm_judge_prompt_needs_its_slots():
    with pytest.raises(ValueError, match="claim"):
        LLMJudgeEntailment(YesNoLLM(prompts=[]), prompt="Is {source} true?")
    with pytest.raises(ValueError, match="slot other than"):
        LLMJudgeEntailment(YesNoLLM(prompts=[]), prompt='{claim} {source} as JSON {"yes": 1}')


def test_report_aggregates_refusal_auc_only_when_every_row_has_a_probability():
    rows = [
        {"answerable": False, "refused": True, "uncited": False, "refusal_probability": 0.8},
        {"answerable": True, "refused": False, "uncited": False, "refusal_probability": 0.3},
    ]
    assert GenerationReport(rows=rows)["refusal_auc"] == 1.0
    del rows[1]["refusal_probability"]
    assert "refusal_auc" not in GenerationReport(rows=rows).aggregate


def test_an_answer_that_says_nothing_is_not_counted_as_answered():
    # "[1] [2]" and "" are neither refusals nor answers: the answer rate leaves them out
    ev = GenerationEvaluator()
    texts = ["Paris [1].", "[1] [2]", "", DEFAULT_REFUSAL]
    examples = [
        dict(question=f"q{i}", answer_text=t, source_node_ids=SOURCES, gold_node_ids=["a"])
        for i, t in enumerate(texts)
    ]
    report = ev.evaluate(examples, show_progress=False)
    assert [r["empty"] for r in report.rows] == [False, True, True, False]
    assert [r["uncited"] for r in report.rows] == [False, True, True, False]
    agg = report.aggregate
    assert agg["answer_rate"] == pytest.approx(1 / 4) and agg["empty_rate"] == pytest.approx(2 / 4)
    assert agg["refusal_rate"] == pytest.approx(1 / 4)
    assert agg["citation_recall"] == pytest.approx(1 / 4)  # only "Paris [1]." cites the gold
    system = SystemResult.from_generation_report(report, "after")
    assert system.metrics["answer_rate"] == pytest.approx(1 / 4)
