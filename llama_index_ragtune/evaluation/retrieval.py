"""Evaluate any LlamaIndex retriever (plus optional node postprocessors) against graded qrels.

Each retrieved node maps to a document id with ``node.ref_doc_id or node.node_id``
(override with ``doc_id_fn``); when several chunks of one document come back, the
document keeps its best rank. Metrics are those of
:mod:`llama_index_ragtune.evaluation.metrics` (trec_eval conventions). Ids are compared
as text (qrels are read that way, so an integer id from ``doc_id_fn`` is too); grades
are whole numbers up to ``MAX_GRADE``; queries whose qrels hold no relevant document
are scored (0 on every metric) with a warning naming them.

Example::

    from llama_index.core import VectorStoreIndex
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index_ragtune.data import load_beir
    from llama_index_ragtune.evaluation import RetrievalEvaluator
    from llama_index_ragtune.models import default_encoder

    ds = load_beir("../shared/data/scifact", split="test")
    embed_model = HuggingFaceEmbedding(model_name=default_encoder())   # minutes on a CPU
    retriever = VectorStoreIndex(ds.documents, embed_model=embed_model).as_retriever(
        similarity_top_k=100
    )
    report = RetrievalEvaluator(retriever).evaluate(ds)    # queries and qrels of the data set
    print(report["ndcg@10"])                              # about 0.645 for all-MiniLM-L6-v2
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from numbers import Real
from typing import Any

from llama_index.core.schema import NodeWithScore, QueryBundle

from llama_index_ragtune.evaluation.metrics import METRICS, compute_metrics
from llama_index_ragtune.evaluation.report import QueryResult, RetrievalReport

__all__ = ["RetrievalEvaluator", "RetrievalReport", "QueryResult", "default_doc_id"]

QrelsLike = Mapping[str, Mapping[str, int] | Iterable[str]]
MAX_GRADE = 10**6  # a relevance grade beyond it is a typo or a score, not a judgement


def default_doc_id(node: NodeWithScore) -> str:
    """The evaluated document id of a retrieved node: ``ref_doc_id`` (its source document), else its own id.

    Example::

        from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode

        chunk = TextNode(id_="doc-1#3", text="...")
        chunk.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id="doc-1")
        default_doc_id(NodeWithScore(node=chunk)), default_doc_id(NodeWithScore(node=TextNode(id_="d2")))
        # ('doc-1', 'd2')
    """
    return node.node.ref_doc_id or node.node.node_id


class RetrievalEvaluator:
    """Run a retriever (and postprocessors, e.g. a reranker) over queries and score the rankings.

    Args:
        retriever: any object with ``retrieve(QueryBundle)`` (and ``aretrieve`` for
            :meth:`aevaluate`), such as a LlamaIndex ``BaseRetriever``.
        node_postprocessors: applied in order to each query's nodes with the query's
            ``QueryBundle`` (so a ``CrossEncoderRerank`` works).
        k_values: cut-offs for every metric.
        metrics: names among ``ndcg``, ``recall``, ``mrr``, ``hit``, ``precision``.
        doc_id_fn: maps a ``NodeWithScore`` to the document id used in the qrels.
        workers: queries evaluated at once (threads in :meth:`evaluate`, tasks in
            :meth:`aevaluate`). 1 measures latency without contention.

    Example::

        from llama_index.core import SummaryIndex
        from llama_index.core.schema import TextNode

        nodes = [TextNode(id_="d1", text="Cats purr."), TextNode(id_="d2", text="Statins lower LDL.")]
        evaluator = RetrievalEvaluator(SummaryIndex(nodes).as_retriever(), k_values=(1, 2))
        report = evaluator.evaluate({"q1": "what lowers LDL?"}, {"q1": {"d2": 1}}, show_progress=False)
        report["recall@1"], report["mrr@2"]     # (0.0, 0.5): a SummaryIndex returns d1 first
    """

    def __init__(
        self,
        retriever: Any,
        node_postprocessors: Sequence[Any] | None = None,
        k_values: Iterable[int] = (1, 3, 5, 10, 100),
        metrics: Iterable[str] = ("ndcg", "recall", "mrr", "hit", "precision"),
        doc_id_fn: Callable[[NodeWithScore], str] | None = None,
        workers: int = 1,
        name: str | None = None,
    ) -> None:
        if not hasattr(retriever, "retrieve") and not hasattr(retriever, "aretrieve"):
            raise TypeError(
                f"RetrievalEvaluator needs a retriever with .retrieve()/.aretrieve(), got {type(retriever).__name__}"
            )
        self.retriever = retriever
        self.node_postprocessors = list(node_postprocessors or [])
        self.k_values = tuple(sorted({int(k) for k in k_values}))
        if not self.k_values or self.k_values[0] <= 0:
            raise ValueError(f"k_values must be positive integers, got {tuple(k_values)}")
        self.metrics = tuple(metrics)
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {sorted(METRICS)}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.doc_id_fn = doc_id_fn or default_doc_id
        self.workers = workers
        self.name = name

    # ------------------------------------------------------------------ public

    def evaluate(
        self,
        queries: Mapping[str, str] | Any,
        qrels: QrelsLike | None = None,
        show_progress: bool = True,
    ) -> RetrievalReport:
        """Retrieve for every judged query (``workers`` threads) and return the report.

        ``queries`` is ``{qid: text}``, or a data set with ``.queries`` and ``.qrels``
        (``BeirDataset``) or ``.relevant_docs`` (``RetrievalDataset``) when ``qrels`` is
        omitted. ``qrels`` values are ``{doc_id: grade}`` or a list of relevant doc ids.
        """
        if not hasattr(self.retriever, "retrieve"):
            raise TypeError(
                f"{type(self.retriever).__name__} has no .retrieve(); use `await aevaluate(...)`."
            )
        todo, judgements, skipped = self._prepare(queries, qrels)
        bar = _progress(len(todo), show_progress, self.name)
        try:
            if self.workers == 1:
                rows = []
                for qid, text in todo:
                    rows.append(self._run_one(qid, text, judgements[qid]))
                    bar.update(1)
            else:
                with ThreadPoolExecutor(max_workers=self.workers) as pool:
                    futures = [
                        pool.submit(self._run_one, qid, text, judgements[qid]) for qid, text in todo
                    ]
                    for future in futures:
                        future.add_done_callback(lambda _: bar.update(1))
                    try:
                        rows = [future.result() for future in futures]
                    except BaseException:
                        for future in futures:  # fail fast: drop the queries not started yet
                            future.cancel()
                        raise
        finally:
            bar.close()
        return self._report(rows, skipped)

    async def aevaluate(
        self,
        queries: Mapping[str, str] | Any,
        qrels: QrelsLike | None = None,
        show_progress: bool = True,
    ) -> RetrievalReport:
        """Async twin of :meth:`evaluate`: ``aretrieve`` and ``apostprocess_nodes``, at most ``workers`` at once."""
        todo, judgements, skipped = self._prepare(queries, qrels)
        semaphore = asyncio.Semaphore(self.workers)
        bar = _progress(len(todo), show_progress, self.name)

        async def one(qid: str, text: str) -> QueryResult:
            async with semaphore:
                row = await self._arun_one(qid, text, judgements[qid])
            bar.update(1)
            return row

        tasks = [asyncio.ensure_future(one(qid, text)) for qid, text in todo]
        try:
            rows = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # fail fast: stop the queries still waiting or running
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            bar.close()
        return self._report(list(rows), skipped)

    # ----------------------------------------------------------------- per query

    def _run_one(self, qid: str, text: str, judged: Mapping[str, int]) -> QueryResult:
        bundle = QueryBundle(query_str=text)
        start = time.perf_counter()
        try:
            nodes = self.retriever.retrieve(bundle)
            for post in self.node_postprocessors:
                nodes = post.postprocess_nodes(nodes, query_bundle=bundle)
        except Exception as exc:
            raise RuntimeError(
                f"retrieval failed for query {qid!r} ({text[:80]!r}): {exc}"
            ) from exc
        return self._score(qid, nodes, judged, start)

    async def _arun_one(self, qid: str, text: str, judged: Mapping[str, int]) -> QueryResult:
        bundle = QueryBundle(query_str=text)
        start = time.perf_counter()
        try:
            if hasattr(self.retriever, "aretrieve"):
                nodes = await self.retriever.aretrieve(bundle)
            else:
                nodes = await asyncio.to_thread(self.retriever.retrieve, bundle)
            for post in self.node_postprocessors:
                apost = getattr(post, "apostprocess_nodes", None)
                if apost is not None and inspect.iscoroutinefunction(apost):
                    nodes = await apost(nodes, query_bundle=bundle)
                else:
                    nodes = await asyncio.to_thread(
                        post.postprocess_nodes, nodes, query_bundle=bundle
                    )
        except Exception as exc:
            raise RuntimeError(
                f"retrieval failed for query {qid!r} ({text[:80]!r}): {exc}"
            ) from exc
        return self._score(qid, nodes, judged, start)

    def _score(
        self, qid: str, nodes: Sequence[NodeWithScore], judged: Mapping[str, int], start: float
    ) -> QueryResult:
        latency_ms = (time.perf_counter() - start) * 1000
        ranked: list[str] = []
        scores: list[float | None] = []
        seen: set[str] = set()
        for node in nodes:
            doc_id = self.doc_id_fn(node)
            if doc_id is not None and not isinstance(doc_id, str):
                doc_id = str(doc_id)  # qrels ids are read as text: an int 7 matches "7"
            if doc_id not in seen:  # a document keeps its best (first) rank
                seen.add(doc_id)
                ranked.append(doc_id)
                scores.append(None if node.score is None else float(node.score))
        return QueryResult(
            qid=qid,
            metrics=compute_metrics(ranked, judged, self.k_values, self.metrics),
            retrieved=ranked,
            latency_ms=latency_ms,
            scores=scores,
        )

    # ------------------------------------------------------------------- helpers

    def _prepare(
        self, queries: Any, qrels: QrelsLike | None
    ) -> tuple[list[tuple[str, str]], dict[str, dict[str, int]], list[str]]:
        if qrels is None:
            qrels = getattr(queries, "qrels", None)
            if qrels is None:
                qrels = getattr(queries, "relevant_docs", None)
            if qrels is None:
                raise TypeError(
                    "evaluate() needs qrels, or a data set with .queries and .qrels / .relevant_docs"
                )
        if not isinstance(queries, Mapping) and hasattr(queries, "queries"):
            queries = queries.queries  # a data set, with or without explicit qrels
        judgements = {str(qid): _as_grades(qid, judged) for qid, judged in qrels.items()}
        todo = [(str(qid), text) for qid, text in queries.items() if str(qid) in judgements]
        skipped = [str(qid) for qid in queries if str(qid) not in judgements]
        if skipped:
            warnings.warn(
                f"skipping {len(skipped)} queries without qrels (e.g. {', '.join(map(repr, skipped[:5]))})",
                stacklevel=3,
            )
        if not todo:
            raise ValueError(
                "no query has qrels: check that the query ids match the qrels' query ids"
            )
        unjudged = [qid for qid, _ in todo if not any(g > 0 for g in judgements[qid].values())]
        if unjudged:
            warnings.warn(
                f"{len(unjudged)} of {len(todo)} queries have no relevant document in their "
                f"qrels (e.g. {', '.join(map(repr, unjudged[:5]))}): they score 0 on every "
                "metric and lower the means; judge a relevant document (grade > 0) or drop them",
                stacklevel=3,
            )
        return todo, judgements, skipped

    def _report(self, rows: list[QueryResult], skipped: list[str]) -> RetrievalReport:
        most = max((len(row.retrieved) for row in rows), default=0)
        if most < self.k_values[-1]:
            warnings.warn(
                f"the retriever returned at most {most} documents per query, fewer than k={self.k_values[-1]}: "
                f"metrics at cut-offs above {most} only see {most} documents (raise similarity_top_k / top_n)",
                stacklevel=3,
            )
        return RetrievalReport(
            rows=rows, k_values=self.k_values, metrics=self.metrics, name=self.name, skipped=skipped
        )


def _as_grades(qid: Any, judged: Mapping[str, int] | Iterable[str]) -> dict[str, int]:
    if isinstance(judged, Mapping):
        return {str(doc_id): _grade(qid, doc_id, grade) for doc_id, grade in judged.items()}
    if isinstance(judged, str):
        raise TypeError(
            f"qrels for query {qid!r} must be {{doc_id: grade}} or a list of doc ids, got a string"
        )
    return {str(doc_id): 1 for doc_id in judged}


def _grade(qid: Any, doc_id: Any, grade: Any) -> int:
    """A relevance grade as an int; a fraction, NaN or text is an error naming query and document."""
    try:
        if isinstance(grade, str) and grade.strip().lstrip("+-").isdigit():
            value = int(grade)  # "2" from a TSV qrels file
        elif isinstance(grade, Real) and math.isfinite(grade) and float(grade).is_integer():
            value = int(grade)
        else:
            value = None
        if value is not None and abs(value) <= MAX_GRADE:
            return value
    except (OverflowError, ValueError):  # an integer past floats, or of 4,300+ digits
        pass
    shown = _shown(grade)
    raise ValueError(
        f"qrels for query {qid!r}: the grade of {doc_id!r} must be a whole number "
        f"(0 = not relevant, 1, 2, ..., at most {MAX_GRADE:,}), got {shown}"
    )


def _shown(value: Any) -> str:
    """``repr(value)``, a long one cut to 40 characters and its length."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"  # str() of 4,300+ digits fails
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}... ({len(text)} characters)"


def _progress(total: int, show: bool, name: str | None) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        disable=not show,
        desc=f"Evaluating {name}" if name else "Evaluating",
        unit="query",
    )
