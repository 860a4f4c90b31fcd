"""A full pipeline run on tiny models: the bundle, its manifest, evaluation, report and load_bundle."""

from __future__ import annotations

import json
import re
from typing import Any

from llama_index.core.base.llms.types import CompletionResponse, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from llama_index_ragtune.evaluation.results import EvaluationResults
from llama_index_ragtune.pipeline import STEPS, bundle_versions, current_version, load_bundle


class CitingLLM(CustomLLM):
    """Always answers with a citation of source 1 (what a tuned decoder writes)."""

    answer: str = "Within 48 hours [1]."

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="citing")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self.answer)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        yield CompletionResponse(text=self.answer, delta=self.answer)


def test_every_step_ran_and_the_bundle_is_current(tuned_run):
    out, result = tuned_run["out"], tuned_run["result"]
    assert result.version == "v1" and current_version(out) == "v1" == bundle_versions(out)[-1]
    assert set(result.timings) == set(STEPS)
    text = "\n".join(tuned_run["lines"])
    assert "Cost estimate" in text and "training pairs" in text and "SFT examples" in text
    assert "Questions: " in text and "from the questions file" in text
    summary = result.summary()
    assert str(result.bundle_path) in summary and "nDCG@10" in summary and "right store" in summary


def test_manifest_records_models_data_and_decisions(tuned_run):
    folder = tuned_run["result"].bundle_path
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "ragtune-bundle" and manifest["version"] == "v1"
    assert {"llama-index-ragtune", "llama-index-core", "torch", "python"} <= set(
        manifest["packages"]
    )
    data = manifest["data"]
    assert data["documents"]["count"] == 6 and len(data["documents"]["sha256"]) == 64
    assert data["queries"]["train"] + data["queries"]["test"] == 22
    assert data["queries"]["file_sha256"]
    models = manifest["models"]
    assert (
        models["encoder"]["path"] == "encoder" and (folder / "encoder" / "modules.json").is_file()
    )
    assert models["reranker"]["path"] == "reranker" and (folder / "reranker").is_dir()
    assert models["decoder"]["path"] == "decoder" and (folder / "decoder" / "config.json").is_file()
    parts = {d["part"]: d for d in manifest["decisions"]}
    assert set(parts) == {"encoder", "fusion", "reranker", "decoder"}
    assert all(parts[p]["forced"] for p in ("encoder", "reranker", "decoder"))
    assert manifest["retrieval"]["fusion"]["fusion_mode"] in ("rrf", "minmax", "zscore")
    # the sweep's choice is judged out of sample: each query scored by the setting chosen
    # on the other folds, paired with the preset query by query
    reason = parts["fusion"]["reason"]
    assert "chosen on the other folds (5-fold cross-validation)" in reason
    judged = int(re.search(r"on (\d+) training queries: better on", reason).group(1))
    assert 5 <= judged <= data["queries"]["train"]  # those with a gold node, one value each
    assert "index/hybrid_retriever.json" in manifest["files"]
    assert all(len(v["sha256"]) == 64 for v in manifest["files"].values())


def test_evaluation_and_report_are_in_the_bundle(tuned_run):
    folder = tuned_run["result"].bundle_path
    results = EvaluationResults.load(folder / "evaluation.json")
    assert results.bundle_version == "v1"
    assert [s.stage for s in results.retrieval] == ["before", "after"]
    fusion_chosen = {d.part: d.promoted for d in results.decisions}["fusion"]
    assert results.retrieval[1].name == "hybrid, tuned encoder" + (
        " + chosen fusion" if fusion_chosen else ""
    )
    assert [s.stage for s in results.reranking] == ["before", "after"]
    assert [s.stage for s in results.generation] == ["before", "after"]
    for system in results.retrieval:
        assert set(system.metrics) == {"ndcg@10", "recall@10", "mrr@10"}
        assert len(system.latency_ms) == results.queries["retrieval_test"]
    tuned = results.generation[1]
    assert {"right_store_citation_rate", "answer_f1", "refusal_f1", "answer_rate"} <= set(
        tuned.metrics
    )
    assert len(tuned.latency_ms) == results.queries["generation_test"] == 4
    assert tuned.refusal is not None and len(tuned.refusal.probabilities) == 4
    html = (folder / "report" / "report.html").read_text()
    assert "<svg" in html and "Retrieval" in html
    assert (folder / "report" / "report.md").is_file()


def test_load_bundle_answers_with_citations_to_real_nodes(tuned_run):
    bundle = load_bundle(tuned_run["out"])
    assert bundle.version == "v1" and bundle.postprocessors
    generation = bundle.manifest["generation"]
    policy = bundle.settings["refusal_policy"]
    if generation["refusal_policy"] is None:  # too few dev questions of a class to choose one
        assert policy is None
        assert bundle.llm.refusal_threshold == generation["refusal_threshold"]
    else:  # the policy decides before decoding; the decoder's own threshold stays off
        assert policy.to_dict()["type"] == generation["refusal_policy"]["type"]
        assert bundle.llm.refusal_threshold is None and generation["refusal_threshold"] is None
    indexed = set(bundle.retriever.index.docstore.docs)
    response = bundle.query_engine.query("apple return policy?")
    assert (
        response.metadata["source_node_ids"]
        and set(response.metadata["source_node_ids"]) <= indexed
    )
    # The bundle's policy may refuse this question (tiny random models); its reason is recorded.
    policed = load_bundle(tuned_run["out"], llm=CitingLLM()).query_engine.query(
        "apple return policy?"
    )
    decision = policed.metadata.get("refusal_decision")
    if policy is not None and not policy.uses_decoder:
        assert decision["signal"] == policy.signal
        assert decision["refused"] == policed.metadata["refused"]
        assert policed.metadata["refused"] == (policed.response != CitingLLM().answer)
    # With the policy turned off every question with sources is answered and cited.
    citing = load_bundle(tuned_run["out"], llm=CitingLLM(), refusal_policy=None)
    assert citing.settings["refusal_policy"] is None
    grocery = citing.as_query_engine(filters={"store": "grocery"})
    answer = grocery.query("apple return policy?")
    assert answer.response == "Within 48 hours [1]."
    cited = answer.metadata["cited_node_ids"]
    assert cited == [answer.source_nodes[0].node.node_id] and cited[0] in indexed
    assert all(n.node.metadata["store"] == "grocery" for n in answer.source_nodes)
    assert len(answer.source_nodes) <= bundle.manifest["generation"]["max_sources"]


def test_the_refusal_policy_is_chosen_on_held_out_questions_and_explains_each_answer(tuned_run):
    from llama_index_ragtune.llms.refusal_selection import CANDIDATES
    from llama_index_ragtune.pipeline.evaluate import answer_questions, choose_refusal

    ctx = tuned_run["pipeline"].context
    questions = ctx.split("train") + ctx.split("test")  # 4 unanswerable among them
    llm = ctx.llm(ctx.served_decoder)
    choice = choose_refusal(ctx, llm, questions)
    policy = choice.pop("policy")
    assert set(choice["cross_validated"]) == set(CANDIDATES)  # every signal was read
    best = max(choice["cross_validated"].values())
    assert choice["cross_validated"][choice["name"]] == best
    assert policy.signal == choice["name"] and choice["dev_questions"] == len(questions)
    assert choice["repeats"] == ctx.config.refusal_cv_repeats == 10  # averaged over 10 splits
    assert set(choice["spread"]) == set(CANDIDATES)
    _, rows = answer_questions(ctx, llm, questions[:4], "tuned", policy)
    for row in rows:
        decision = row["refusal_decision"]
        assert decision["signal"] == policy.signal and decision["refused"] == row["refused"]
