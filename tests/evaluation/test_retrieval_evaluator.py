"""RetrievalEvaluator and RetrievalReport: doc-id mapping, postprocessors, concurrency, reports."""

from __future__ import annotations

import asyncio
import json

import pytest
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import (
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)

from llama_index_ragtune.evaluation import (
    RetrievalEvaluator,
    RetrievalReport,
    compare_reports,
    reports_table,
)
from llama_index_ragtune.evaluation.metrics import mrr_at_k, ndcg_at_k, recall_at_k


def _chunk(chunk_id: str, doc_id: str | None) -> TextNode:
    node = TextNode(id_=chunk_id, text=f"text of {chunk_id}")
    if doc_id is not None:
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=doc_id)
    return node


class FixedRetriever(BaseRetriever):
    """Returns a fixed list of (chunk id, doc id) per query text; counts sync and async calls."""

    def __init__(
        self, rankings: dict[str, list[tuple[str, str | None]]], fail_on: str | None = None
    ):
        super().__init__()
        self.rankings = rankings
        self.fail_on = fail_on
        self.calls = {"sync": 0, "async": 0}

    def _nodes(self, query: str) -> list[NodeWithScore]:
        if query == self.fail_on:
            raise ConnectionError("vector store unreachable")
        ranked = self.rankings[query]
        return [
            NodeWithScore(node=_chunk(c, d), score=float(len(ranked) - i))
            for i, (c, d) in enumerate(ranked)
        ]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.calls["sync"] += 1
        return self._nodes(query_bundle.query_str)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.calls["async"] += 1
        return self._nodes(query_bundle.query_str)


class ReverseAndRecord(BaseNodePostprocessor):
    """Reverses the node order and records the query strings it saw."""

    seen: list = []
    async_calls: int = 0

    def _postprocess_nodes(self, nodes, query_bundle=None):
        if query_bundle is None:
            raise ValueError("missing query bundle")
        self.seen.append(query_bundle.query_str)
        return list(reversed(nodes))

    async def _apostprocess_nodes(self, nodes, query_bundle=None):
        self.async_calls += 1
        return self._postprocess_nodes(nodes, query_bundle)


QUERIES = {"q1": "alpha", "q2": "beta", "q3": "gamma"}
QRELS = {"q1": {"A": 2, "B": 1}, "q2": {"C": 1, "X": 0}, "q3": {"Z": 1}}
RANKINGS = {
    # two chunks of doc B before A; the second B chunk must not count again
    "alpha": [("b#1", "B"), ("b#2", "B"), ("a#1", "A"), ("x#1", "X")],
    # nodes without a source document are their own document
    "beta": [("X", None), ("C", None)],
    "gamma": [("y#1", "Y")],
}
K = (1, 3, 10)
pytestmark = pytest.mark.filterwarnings("ignore:the retriever returned at most:UserWarning")


def _evaluator(**kwargs) -> RetrievalEvaluator:
    return RetrievalEvaluator(FixedRetriever(RANKINGS), k_values=K, **kwargs)


def test_maps_chunks_to_documents_keeping_best_rank() -> None:
    with pytest.warns(UserWarning, match="at most 3 documents"):
        report = _evaluator().evaluate(QUERIES, QRELS, show_progress=False)
    rows = {row.qid: row for row in report.rows}
    assert rows["q1"].retrieved == ["B", "A", "X"]
    assert rows["q2"].retrieved == ["X", "C"]
    assert rows["q1"].scores == [4.0, 2.0, 1.0]
    assert rows["q1"].metrics["ndcg@10"] == pytest.approx(
        ndcg_at_k(["B", "A", "X"], QRELS["q1"], 10)
    )
    assert rows["q1"].metrics["recall@1"] == pytest.approx(0.5)
    assert rows["q2"].metrics["mrr@10"] == pytest.approx(0.5)
    assert rows["q3"].metrics["hit@10"] == 0.0
    expected = sum(ndcg_at_k(r.retrieved, QRELS[r.qid], 10) for r in report.rows) / 3
    assert report.aggregate["ndcg@10"] == pytest.approx(expected)
    assert report["mrr@10"] == pytest.approx((1 / 1 + 1 / 2 + 0) / 3)
    assert set(report.aggregate) == {
        f"{m}@{k}" for m in ("ndcg", "recall", "mrr", "hit", "precision") for k in K
    }
    assert all(row.latency_ms >= 0 for row in report.rows)


def test_doc_id_fn_override() -> None:
    evaluator = _evaluator(
        doc_id_fn=lambda n: n.node.node_id.split("#")[0].upper(), metrics=("recall",)
    )
    report = evaluator.evaluate({"q1": "alpha"}, {"q1": {"A": 1}}, show_progress=False)
    assert report.rows[0].retrieved == ["B", "A", "X"]
    assert report.aggregate == {"recall@1": 0.0, "recall@3": 1.0, "recall@10": 1.0}


def test_postprocessors_get_the_query_bundle() -> None:
    post = ReverseAndRecord()
    post.seen = []
    report = _evaluator(node_postprocessors=[post]).evaluate(QUERIES, QRELS, show_progress=False)
    assert sorted(post.seen) == ["alpha", "beta", "gamma"]
    rows = {row.qid: row for row in report.rows}
    assert rows["q1"].retrieved == [
        "X",
        "A",
        "B",
    ]  # reversed chunks, B's best rank is its last chunk
    assert rows["q2"].metrics["mrr@1"] == 1.0


def test_threads_and_async_match_sequential() -> None:
    sequential = _evaluator().evaluate(QUERIES, QRELS, show_progress=False)
    threaded = _evaluator(workers=3).evaluate(QUERIES, QRELS, show_progress=False)
    assert [r.qid for r in threaded.rows] == ["q1", "q2", "q3"]
    assert threaded.aggregate == sequential.aggregate

    post = ReverseAndRecord()
    post.seen = []
    evaluator = _evaluator(workers=2, node_postprocessors=[post])
    report = asyncio.run(evaluator.aevaluate(QUERIES, QRELS, show_progress=False))
    assert evaluator.retriever.calls == {"sync": 0, "async": 3}
    assert post.async_calls == 3
    expected = _evaluator(node_postprocessors=[ReverseAndRecord()]).evaluate(
        QUERIES, QRELS, show_progress=False
    )
    assert report.aggregate == expected.aggregate


def test_queries_without_qrels_are_skipped_with_a_warning() -> None:
    queries = {**QUERIES, "q9": "unjudged"}
    with pytest.warns(UserWarning, match=r"skipping 1 queries without qrels \(e.g. 'q9'\)"):
        report = _evaluator().evaluate(queries, QRELS, show_progress=False)
    assert [r.qid for r in report.rows] == ["q1", "q2", "q3"] and report.skipped == ["q9"]
    with (
        pytest.warns(UserWarning, match="skipping"),
        pytest.raises(ValueError, match="no query has qrels"),
    ):
        _evaluator().evaluate({"q9": "unjudged"}, QRELS, show_progress=False)


def test_retriever_error_names_the_query() -> None:
    evaluator = RetrievalEvaluator(FixedRetriever(RANKINGS, fail_on="beta"), k_values=K)
    with pytest.raises(RuntimeError, match="query 'q2'.*vector store unreachable"):
        evaluator.evaluate(QUERIES, QRELS, show_progress=False)


def test_accepts_datasets_and_lists_of_relevant_ids() -> None:
    class Dataset:
        queries = {"q1": "alpha"}
        relevant_docs = {"q1": ["A"]}

    report = _evaluator(metrics=("mrr",)).evaluate(Dataset(), show_progress=False)
    assert report.aggregate["mrr@10"] == pytest.approx(0.5)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        RetrievalEvaluator(FixedRetriever(RANKINGS), metrics=("map",))
    with pytest.raises(TypeError, match="retrieve"):
        RetrievalEvaluator(object())


def test_report_export_roundtrip_and_compare(tmp_path) -> None:
    before = _evaluator(name="fixed").evaluate(QUERIES, QRELS, show_progress=False)
    post = ReverseAndRecord()
    after = _evaluator(node_postprocessors=[post], name="reversed").evaluate(
        QUERIES, QRELS, show_progress=False
    )

    path = tmp_path / "report.json"
    text = before.to_json(path)
    data = json.loads(path.read_text())
    assert data == json.loads(text)
    assert data["aggregate"]["ndcg@10"] == pytest.approx(before.aggregate["ndcg@10"])
    assert len(data["queries"]) == 3 and data["queries"][0]["retrieved"] == ["B", "A", "X"]
    again = RetrievalReport.from_json(path)
    assert again.aggregate == before.aggregate and again.latency == before.latency

    frame = before.to_dataframe()
    assert list(frame["qid"]) == ["q1", "q2", "q3"]
    assert frame["ndcg@10"].mean() == pytest.approx(before.aggregate["ndcg@10"])

    markdown = before.to_markdown()
    assert "| ndcg |" in markdown and f"{before.aggregate['ndcg@10']:.4f}" in markdown

    table = compare_reports(before, after, keys=["ndcg@10", "mrr@10"])
    delta = after.aggregate["mrr@10"] - before.aggregate["mrr@10"]
    assert "| fixed | reversed |" in table
    assert f"{delta:+.4f}" in table
    base, new = before.per_query("ndcg@10"), after.per_query("ndcg@10")
    better = sum(new[q] > base[q] for q in base)
    assert f"{better} queries better" in table
    with pytest.raises(KeyError, match="ndcg@7"):
        compare_reports(before, after, keys=["ndcg@7"])

    rows = reports_table({"fixed": before, "reversed": after}, keys=["ndcg@10"]).splitlines()
    assert rows[2].startswith("| fixed | ") and f"{after.aggregate['ndcg@10']:.3f}" in rows[3]


@pytest.mark.data
def test_bm25_on_scifact_matches_ir_measures(scifact_dir) -> None:
    ir_measures = pytest.importorskip("ir_measures")
    pytest.importorskip("llama_index.retrievers.bm25")
    from ir_measures import RR, R, nDCG
    from llama_index.retrievers.bm25 import BM25Retriever

    from llama_index_ragtune.data.beir import load_beir

    ds = load_beir(scifact_dir, split="test", max_queries=100)
    retriever = BM25Retriever.from_defaults(nodes=ds.documents, similarity_top_k=100)
    report = RetrievalEvaluator(retriever, k_values=(10, 100), workers=2).evaluate(
        ds, show_progress=False
    )
    assert len(report) == 100
    run = {
        row.qid: {doc_id: float(100 - i) for i, doc_id in enumerate(row.retrieved)}
        for row in report.rows
    }
    expected = ir_measures.calc_aggregate([nDCG @ 10, R @ 100, RR @ 10], ds.qrels, run)
    assert report["ndcg@10"] == pytest.approx(expected[nDCG @ 10], abs=1e-6)
    assert report["recall@100"] == pytest.approx(expected[R @ 100], abs=1e-6)
    assert report["mrr@10"] == pytest.approx(expected[RR @ 10], abs=1e-6)
    # the same run scored by our pure functions
    row = report.rows[0]
    assert row.metrics["recall@100"] == recall_at_k(row.retrieved, ds.qrels[row.qid], 100)
    assert row.metrics["mrr@10"] == mrr_at_k(row.retrieved, ds.qrels[row.qid], 10)
    assert report["ndcg@10"] > 0.55  # BM25 on SciFact: about .66-.69


def test_async_failure_cancels_the_other_queries() -> None:
    started: list[str] = []
    finished: list[str] = []

    class SlowAndFailing(FixedRetriever):
        async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            started.append(query_bundle.query_str)
            if query_bundle.query_str == "alpha":
                raise ConnectionError("vector store unreachable")
            await asyncio.sleep(5)
            finished.append(query_bundle.query_str)
            return self._nodes(query_bundle.query_str)

    evaluator = RetrievalEvaluator(SlowAndFailing(RANKINGS), k_values=K, workers=3)

    async def run() -> None:
        with pytest.raises(RuntimeError, match="query 'q1'.*unreachable"):
            await evaluator.aevaluate(QUERIES, QRELS, show_progress=False)
        assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing left running

    asyncio.run(run())
    assert sorted(started) == ["alpha", "beta", "gamma"] and finished == []


def test_dataset_with_explicit_qrels_and_async_only_retrievers() -> None:
    class Dataset:
        queries = QUERIES
        qrels = {"q1": {"Z": 1}}  # ignored: explicit qrels win

    with pytest.warns(UserWarning, match="skipping 2 queries"):
        report = _evaluator(metrics=("recall",)).evaluate(
            Dataset(), {"q1": {"A": 1}}, show_progress=False
        )
    assert [r.qid for r in report.rows] == ["q1"] and report["recall@3"] == 1.0

    class AsyncOnly:
        async def aretrieve(self, query_bundle):
            return []

    with pytest.raises(TypeError, match="aevaluate"):
        RetrievalEvaluator(AsyncOnly()).evaluate(QUERIES, QRELS, show_progress=False)
