"""`ragtune demo` end to end with the real bundled models (minutes: the slow tier)."""

from __future__ import annotations

import pytest

from llama_index_ragtune.cli import main
from llama_index_ragtune.evaluation.results import EvaluationResults
from llama_index_ragtune.pipeline import load_bundle

pytestmark = pytest.mark.slow


def test_demo_tunes_evaluates_and_cites_the_right_store(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Before tuning" in printed and "After tuning" in printed and "Wall time" in printed
    bundle = load_bundle(out)
    results = EvaluationResults.load(bundle.path / "evaluation.json")
    assert {d.part for d in results.decisions} == {"encoder", "fusion", "reranker", "decoder"}
    before = {s.stage: s.metrics for s in results.generation}
    assert "before" in before
    if bundle.manifest["models"]["decoder"]["promoted"]:
        after = before["after"]
        assert after["right_source_citation_rate"] > before["before"]["right_source_citation_rate"]
    for question, store in (
        ("apple return policy?", "grocery"),
        ("Apple return policy?", "electronics"),
    ):
        response = bundle.as_query_engine(filters={"store": store}).query(question)
        cited = {c["node_id"] for c in response.metadata["citations"]}
        stores = {
            n.node.metadata["store"] for n in response.source_nodes if n.node.node_id in cited
        }
        assert stores <= {store}
