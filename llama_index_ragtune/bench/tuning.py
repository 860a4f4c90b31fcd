"""``ragtune bench tuning``: what encoder and reranker fine-tuning buy on a BEIR data set.

Trains on one split (``train``) and reports on another (``test``), for any
folder in the BEIR layout. Rows:

=====================  ==========================================================
``dense-before``       the starting bi-encoder (bundled MiniLM), full-corpus search
``dense-after``        fine-tuned with BM25 + dense hard negatives, false-negative
                       filter on (the default recipe)
``hybrid``             fine-tuned dense + BM25 (``HybridRetriever``)
``hybrid+reranker``    the hybrid's top ``--rerank-depth`` (50) re-scored by the
                       reranker fine-tuned on the same mined negatives; by default
                       it distils the fine-tuned bi-encoder (``--reranker-loss
                       margin_mse``), since a new head trained with BCE alone
                       does not learn in a CPU budget
``hybrid+reranker-blend`` the same reranker's score blended with the hybrid's
                       (``CrossEncoderRerank(retrieval_weight=...)``, weight
                       ``--rerank-retrieval-weight``, 0.5)
``inbatch``            ablation: in-batch negatives only
``bm25-neg``           ablation: + BM25 negatives
``dense-neg``          ablation: + dense negatives
``both-neg``           ablation: + both (the same run as ``dense-after``)
``both-neg-no-filter`` ablation: both, false-negative filtering off
=====================  ==========================================================

Columns: nDCG@10, Recall@100, MRR@10 (graded qrels, ideal DCG capped at K),
training wall time and peak resident memory. ``--rows`` picks a subset (each
ablation row is a full training run); rows another row needs are computed
once and reused. Writes ``tuning.json`` and ``tuning.md`` into ``--out``.

Example::

    ragtune bench tuning --beir ../shared/data/scifact --out benchmarks/results/tuning
    ragtune bench tuning --beir ../shared/data/scifact --rows dense-before,dense-after --max-train-queries 200
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_OUT = "benchmarks/results/tuning"
KEYS = ("ndcg@10", "recall@100", "mrr@10")
MAIN_ROWS = ("dense-before", "dense-after", "hybrid", "hybrid+reranker", "hybrid+reranker-blend")
# ablation row -> (negative sources, relative margin, dedupe_text, negatives per training row)
ABLATIONS: dict[str, tuple[tuple[str, ...], float | None, bool, int]] = {
    "inbatch": ((), None, True, 0),
    "bm25-neg": (("bm25",), 0.95, True, 1),
    "dense-neg": (("dense",), 0.95, True, 1),
    "both-neg": (("bm25", "dense"), 0.95, True, 1),
    "both-neg-no-filter": (("bm25", "dense"), None, False, 1),
}
ROWS = (*MAIN_ROWS, *ABLATIONS)
# The reranker recipe of the recorded run (distillation of the fine-tuned bi-encoder, see the
# README): more, smaller steps at a higher rate than the engine's generic defaults.
RERANKER_RECIPE = {"per_device_train_batch_size": 16, "learning_rate": 2e-4}
RERANKER_MAX_LENGTH = 192
RERANKER_NEGATIVES_PER_QUERY = 3  # triplets per positive: ~2,700 on SciFact, one CPU epoch < 20 min
TITLES = {
    "dense-before": "dense, before fine-tuning",
    "dense-after": "dense, fine-tuned (BM25 + dense negatives)",
    "hybrid": "hybrid: fine-tuned dense + BM25",
    "hybrid+reranker": "hybrid + fine-tuned reranker (top {depth})",
    "hybrid+reranker-blend": "hybrid + fine-tuned reranker (top {depth}), blended with the hybrid score (w={weight})",
    "inbatch": "ablation: in-batch negatives only",
    "bm25-neg": "ablation: + BM25 negatives",
    "dense-neg": "ablation: + dense negatives",
    "both-neg": "ablation: + BM25 and dense negatives",
    "both-neg-no-filter": "ablation: both, no false-negative filter",
}


@dataclass
class Row:
    name: str
    title: str
    metrics: dict[str, float]
    train_minutes: float | None = None
    peak_memory_mb: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--beir", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"
    )
    parser.add_argument("--train-split", default="train", help="split to train on (default: train)")
    parser.add_argument("--eval-split", default="test", help="split to report (default: test)")
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help=f"folder for tuning.json / tuning.md (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--rows", default=",".join(ROWS), help=f"comma-separated subset of: {', '.join(ROWS)}"
    )
    parser.add_argument(
        "--max-train-queries", type=int, help="train on the first N train queries (quick slice)"
    )
    parser.add_argument("--max-eval-queries", type=int, help="report on the first N eval queries")
    parser.add_argument("--model", help="starting bi-encoder (default: bundled all-MiniLM-L6-v2)")
    parser.add_argument(
        "--reranker-model",
        help="starting reranker: a cross-encoder, or a bi-encoder to put a new "
        "head on (default: bundled all-MiniLM-L6-v2)",
    )
    parser.add_argument("--device", help="cpu, cuda, mps... (default: the best available)")
    parser.add_argument(
        "--num-negatives",
        type=int,
        default=3,
        help="negatives mined per query and source (default: 3)",
    )
    parser.add_argument(
        "--rerank-depth", type=int, default=50, help="hybrid candidates re-scored (default: 50)"
    )
    parser.add_argument(
        "--rerank-retrieval-weight",
        type=float,
        default=0.5,
        help="weight of the hybrid score in the blended reranker row (default: 0.5)",
    )
    parser.add_argument(
        "--reranker-loss",
        default="margin_mse",
        choices=("margin_mse", "bce", "lambda", "listnet"),
        help="reranker loss; margin_mse distils the fine-tuned bi-encoder's scaled cosine "
        "margins (default: margin_mse)",
    )
    parser.add_argument(
        "--reranker-max-length",
        type=int,
        default=RERANKER_MAX_LENGTH,
        help=f"reranker token limit per (query, passage) pair (default: {RERANKER_MAX_LENGTH})",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue each training row from its last checkpoint in <out>/models/<row> "
        "(an interrupted benchmark picks up where it stopped; a finished row is not retrained, "
        "so its training time covers the resumed part only)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--embedding-cache",
        metavar="DIR",
        help="cache corpus embeddings of unchanged models here (reused across runs)",
    )
    for prefix, what in (("", "encoder"), ("reranker-", "reranker")):
        recipe = RERANKER_RECIPE if prefix else {}

        def default(key: str, recipe: dict = recipe) -> str:
            return f" (default: {recipe[key]:g})" if key in recipe else ""

        parser.add_argument(f"--{prefix}epochs", type=float, help=f"{what}: num_train_epochs")
        parser.add_argument(
            f"--{prefix}batch-size",
            type=int,
            help=f"{what}: per_device_train_batch_size{default('per_device_train_batch_size')}",
        )
        parser.add_argument(
            f"--{prefix}lr", type=float, help=f"{what}: learning_rate{default('learning_rate')}"
        )
        parser.add_argument(f"--{prefix}max-steps", type=int, help=f"{what}: max_steps")


def _overrides(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    names = {
        "epochs": "num_train_epochs",
        "batch_size": "per_device_train_batch_size",
        "lr": "learning_rate",
        "max_steps": "max_steps",
    }
    out = dict(RERANKER_RECIPE) if prefix == "reranker_" else {}
    out.update(
        (target, getattr(args, prefix + name))
        for name, target in names.items()
        if getattr(args, prefix + name) is not None
    )
    out["seed"] = args.seed
    if args.device == "cpu":
        out["use_cpu"] = True
    return out


class TuningBenchmark:
    """Runs the rows in dependency order, caching what rows share (corpus embeddings, models, candidates)."""

    def __init__(self, args: argparse.Namespace) -> None:
        from llama_index_ragtune.data.beir import load_beir
        from llama_index_ragtune.data.schema import RetrievalDataset

        self.args = args
        self.out = Path(args.out)
        self.train = RetrievalDataset.from_beir(
            args.beir, split=args.train_split, max_queries=args.max_train_queries
        )
        beir = load_beir(args.beir, split=args.eval_split, max_queries=args.max_eval_queries)
        self.name = beir.name
        self.corpus = beir.corpus
        relevant = beir.relevant_docs()
        self.val = RetrievalDataset({q: beir.queries[q] for q in relevant}, beir.corpus, relevant)
        self.qrels = {q: beir.qrels[q] for q in relevant}
        self.rows: dict[str, Row] = {}
        self._mined: dict[tuple, tuple[Any, dict]] = {}
        self._base_corpus_embeddings: Any = None
        self._finetuned: dict[str, Any] = {}  # row -> (engine, evaluator)
        self._hybrid_rankings: dict[str, list[str]] | None = None
        self._hybrid_scores: dict[str, list[float]] | None = None
        self._reranker: Any = None

    # ------------------------------------------------------------------ pieces

    def _evaluator(self):
        from llama_index_ragtune.finetuning.ranking_eval import DenseRetrievalEvaluator

        return DenseRetrievalEvaluator(
            self.val.queries,
            self.corpus,
            self.qrels,
            show_progress_bar=True,
            cache_dir=self.args.embedding_cache,
        )

    def _base_model(self):
        from sentence_transformers import SentenceTransformer

        from llama_index_ragtune.models import resolve_model

        return SentenceTransformer(
            resolve_model(self.args.model, kind="encoder"), device=self.args.device
        )

    def dense_before(self) -> Row:
        evaluator = self._evaluator()
        metrics = evaluator.evaluate(self._base_model())
        self._base_corpus_embeddings = evaluator.corpus_embeddings.numpy()
        return Row("dense-before", TITLES["dense-before"], metrics)

    def mined(self, sources: tuple[str, ...], relative_margin: float | None, dedupe_text: bool):
        """The train set with negatives from ``sources`` (mined once per setting)."""
        key = (sources, relative_margin, dedupe_text)
        if key not in self._mined:
            if not sources:
                self._mined[key] = (self.train, {"sources": []})
            else:
                from llama_index_ragtune.data.negatives import HardNegativeMiner

                miner = HardNegativeMiner(
                    sources=sources,
                    num_negatives=self.args.num_negatives,
                    range_max=30,
                    relative_margin=relative_margin,
                    dedupe_text=dedupe_text,
                    seed=self.args.seed,
                    embed_model=self.args.model,
                    embedding_cache_dir=self.args.embedding_cache,
                    corpus_embeddings=self._base_corpus_embeddings if "dense" in sources else None,
                )
                started = time.perf_counter()
                mined = miner.mine(self.train)
                stats = {
                    "sources": list(sources),
                    "seconds": round(time.perf_counter() - started, 1),
                    **miner.mine_stats.as_dict(),
                }
                _log(f"mined {sources}: {miner.mine_stats}")
                self._mined[key] = (mined, stats)
        return self._mined[key]

    def encoder_row(self, name: str) -> Row:
        from llama_index_ragtune.finetuning.encoder import EncoderFinetuneEngine

        sources, margin, dedupe, per_row = ABLATIONS["both-neg" if name == "dense-after" else name]
        train, mining = self.mined(sources, margin, dedupe)
        evaluator = self._evaluator()
        engine = EncoderFinetuneEngine(
            train,
            model=self.args.model,
            val_dataset=self.val,
            evaluator=evaluator,
            max_negatives_per_query=per_row,
            device=self.args.device,
            args=EncoderFinetuneEngine.default_training_args(
                self.out / "models" / name, **_overrides(self.args, "")
            ),
        )
        result = engine.finetune(
            evaluate_before=False, resume_from_checkpoint=self.args.resume or None
        )
        self._finetuned[name] = (engine, evaluator)
        return _trained_row(name, TITLES[name], result, mining)

    def hybrid(self) -> Row:
        from llama_index.core.schema import TextNode

        from llama_index_ragtune.embeddings import default_embed_model
        from llama_index_ragtune.evaluation.retrieval import RetrievalEvaluator
        from llama_index_ragtune.retrievers import HybridRetriever

        engine, evaluator = self._finetuned["both-neg"]
        vectors = evaluator.corpus_embeddings.tolist()  # reuse: no second corpus pass
        nodes = [
            TextNode(id_=doc_id, text=text, embedding=vector)
            for (doc_id, text), vector in zip(self.corpus.items(), vectors, strict=True)
        ]
        retriever = HybridRetriever.from_defaults(
            nodes=nodes,
            embed_model=default_embed_model(str(engine.final_model_path)),
            similarity_top_k=100,
        )
        report = RetrievalEvaluator(
            retriever, k_values=(10, 100), metrics=("ndcg", "recall", "mrr")
        ).evaluate(self.val.queries, self.qrels)
        self._hybrid_rankings = {row.qid: row.retrieved for row in report.rows}
        self._hybrid_scores = {row.qid: row.scores for row in report.rows}
        metrics = {k: report.aggregate[k] for k in KEYS}
        return Row(
            "hybrid", TITLES["hybrid"], metrics, details={"retriever": repr(retriever)[:200]}
        )

    def _reranking_evaluator(self, retrieval_weight: float = 0.0):
        """Scores re-rankings of the hybrid's candidates (blended with its scores when w > 0)."""
        from llama_index_ragtune.finetuning.ranking_eval import CandidateRerankingEvaluator

        return CandidateRerankingEvaluator(
            self.val.queries,
            self.corpus,
            self.qrels,
            self._hybrid_rankings,
            depth=self.args.rerank_depth,
            candidate_scores=self._hybrid_scores if retrieval_weight > 0 else None,
            retrieval_weight=retrieval_weight,
        )

    def hybrid_reranker(self) -> Row:
        from llama_index_ragtune.finetuning.reranker import RerankerFinetuneEngine

        train, mining = self.mined(*ABLATIONS["both-neg"][:3])
        depth = self.args.rerank_depth
        loss = self.args.reranker_loss
        teacher = self._finetuned["both-neg"][0].model if loss == "margin_mse" else None
        engine = RerankerFinetuneEngine(
            train,
            model=self.args.reranker_model,
            loss=loss,
            teacher=teacher,
            max_negatives_per_query=RERANKER_NEGATIVES_PER_QUERY,
            val_dataset=self.val,
            candidates=self._hybrid_rankings,
            rerank_depth=depth,
            evaluator=self._reranking_evaluator(),
            device=self.args.device,
            max_length=self.args.reranker_max_length,
            args=RerankerFinetuneEngine.default_training_args(
                self.out / "models" / "reranker", **_overrides(self.args, "reranker_")
            ),
        )
        result = engine.finetune(
            evaluate_before=False, resume_from_checkpoint=self.args.resume or None
        )
        self._reranker = engine
        return _trained_row(
            "hybrid+reranker", TITLES["hybrid+reranker"].format(depth=depth), result, mining
        )

    def hybrid_reranker_blend(self) -> Row:
        weight = self.args.rerank_retrieval_weight
        evaluator = self._reranking_evaluator(weight)
        # The reranker row's evaluation kept its scores: blend them, no second model pass.
        metrics = evaluator.evaluate_scores(self._reranker.evaluator.last_scores)
        return Row(
            "hybrid+reranker-blend",
            TITLES["hybrid+reranker-blend"].format(depth=self.args.rerank_depth, weight=weight),
            metrics,
            details={
                "retrieval_weight": weight,
                "model": self.rows["hybrid+reranker"].details.get("model"),
            },
        )

    # ------------------------------------------------------------------ driver

    def run(self, wanted: list[str]) -> list[Row]:
        needs = set(wanted)
        if "hybrid+reranker-blend" in needs:
            needs.add("hybrid+reranker")
        if "hybrid+reranker" in needs:
            needs.add("hybrid")
        if "hybrid" in needs or "dense-after" in needs:
            needs.add("both-neg")
        if needs & {"dense-neg", "both-neg", "both-neg-no-filter"}:
            needs.add("dense-before")  # its corpus embeddings feed the dense miner
        order = [
            "dense-before",
            "both-neg",
            "hybrid",
            "hybrid+reranker",
            "hybrid+reranker-blend",
            "inbatch",
            "bm25-neg",
            "dense-neg",
            "both-neg-no-filter",
        ]
        for name in order:
            if name not in needs:
                continue
            _log(f"== {name}")
            if name == "dense-before":
                row = self.dense_before()
            elif name == "hybrid":
                row = self.hybrid()
            elif name == "hybrid+reranker":
                row = self.hybrid_reranker()
            elif name == "hybrid+reranker-blend":
                row = self.hybrid_reranker_blend()
            else:
                row = self.encoder_row(name)
            self.rows[name] = row
            _log(format_row(row))
            self.save()
        if "dense-after" in needs:
            after = self.rows["both-neg"]
            self.rows["dense-after"] = Row(
                "dense-after",
                TITLES["dense-after"],
                after.metrics,
                after.train_minutes,
                after.peak_memory_mb,
                after.details,
            )
        return [self.rows[n] for n in ROWS if n in self.rows]

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        rows = [self.rows[n] for n in ROWS if n in self.rows]
        meta = {
            "dataset": self.name,
            "train_split": self.args.train_split,
            "eval_split": self.args.eval_split,
            "train_queries": len(self.train),
            "eval_queries": len(self.val),
            "corpus": len(self.corpus),
            "machine": f"{platform.machine()}, {_cpu_count()} CPUs",
            "command": " ".join(sys.argv),
        }
        (self.out / "tuning.json").write_text(
            json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2, default=str),
            encoding="utf-8",
        )
        (self.out / "tuning.md").write_text(markdown(rows, meta), encoding="utf-8")


def _trained_row(name: str, title: str, result: Any, mining: dict[str, Any]) -> Row:
    """A row for a training run: its after metrics, time, peak memory and how it was trained."""
    return Row(
        name,
        title,
        result.after,
        result.train_seconds / 60,
        result.peak_memory_mb,
        {
            "mining": mining,
            "rows": result.info["rows"],
            "steps": result.global_step,
            "model": result.model_path,
            "resumed_from": result.info["resumed_from"],
            "loss": result.info["loss"],
        },
    )


def format_row(row: Row) -> str:
    metrics = "  ".join(f"{k} {row.metrics.get(k, float('nan')):.4f}" for k in KEYS)
    train = (
        ""
        if row.train_minutes is None
        else f"  train {row.train_minutes:.1f} min, peak {row.peak_memory_mb:.0f} MiB"
    )
    return f"{row.name:<20} {metrics}{train}"


def markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    lines = [
        f"# Encoder-side fine-tuning on {meta['dataset']} (train: {meta['train_split']}, "
        f"{meta['train_queries']} queries; reported: {meta['eval_split']}, {meta['eval_queries']} queries)",
        "",
        "| system | nDCG@10 | Recall@100 | MRR@10 | train wall (min) | peak memory (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        train = "" if row.train_minutes is None else f"{row.train_minutes:.1f}"
        if row.details.get("resumed_from"):
            train += f" (resumed from {Path(row.details['resumed_from']).name})"
        memory = "" if row.peak_memory_mb is None else f"{row.peak_memory_mb:.0f}"
        cells = " | ".join(f"{row.metrics.get(k, float('nan')):.3f}" for k in KEYS)
        lines.append(f"| {row.title} | {cells} | {train} | {memory} |")
    lines += ["", f"Machine: {meta['machine']}. Command: `{meta['command']}`", ""]
    return "\n".join(lines)


def _cpu_count() -> int:
    import os

    return (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in ROWS]
    if unknown:
        raise SystemExit(f"--rows: unknown row(s) {unknown}; choose from {', '.join(ROWS)}")
    bench = TuningBenchmark(args)
    rows = bench.run(wanted)
    bench.save()
    print(
        markdown(
            rows,
            {
                "dataset": bench.name,
                "train_split": args.train_split,
                "eval_split": args.eval_split,
                "train_queries": len(bench.train),
                "eval_queries": len(bench.val),
                "machine": f"{platform.machine()}, {_cpu_count()} CPUs",
                "command": " ".join(sys.argv),
            },
        )
    )
    print(f"written: {Path(args.out) / 'tuning.json'}, {Path(args.out) / 'tuning.md'}")
    return 0
