"""Encoder-side tuning on a BEIR data set: what the default recipe buys, and what each option does.

Trains on the ``train`` split with the library's defaults, exactly as
``ragtune train encoder`` / ``ragtune train reranker`` would (validation carved
off the training queries, training budget, champion / challenger), and reports
on the ``test`` split, which no decision ever sees. Rows:

- ``bm25``, ``dense-before``: the untuned sides;
- ``hybrid-before (preset)``: the untuned hybrid with the library's fusion preset
  (chosen on SciFact train);
- ``hybrid-before``: the untuned hybrid with the fusion chosen on this data set's
  training queries (``retrievers.fusion_sweep.choose_fusion``);
- ``dense-after``, ``hybrid-after``: the tuned encoder (the challenger, promoted
  or not), the hybrid with the fusion chosen for it on validation;
- ``stack``: what a user gets - the promoted encoder (tuned, or the starting one
  when validation kept it) in the hybrid, plus the reranker when validation
  promoted it; ``+ reranker`` shows the tuned reranker's test figure either way;
- ablations: one encoder training run per option of the recipe, each changed
  alone (the decision of each is reported too).

Columns: nDCG@10, Recall@100, MRR@10 on test, training minutes and peak memory,
and the validation decision. Writes ``tuning.json`` and ``tuning.md`` into
``--out`` (paths relative to the working directory, the exact command recorded).

Example::

    python -m benchmarks.tuning --beir ../shared/data/scifact --out benchmarks/results/tuning-scifact
    python -m benchmarks.squad_passages --squad ../shared/data/squad_v2_dev_half/dev-v2.0.cs224n_half.json \\
        --out benchmarks/data/squad-passages
    python -m benchmarks.tuning --beir benchmarks/data/squad-passages --out benchmarks/results/tuning-squad
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._paths import display_value
from llama_index_ragtune.commands.options import MAX_MINUTES, bounded, seed_number
from llama_index_ragtune.data import HardNegativeMiner, RetrievalDataset
from llama_index_ragtune.finetuning import (
    EncoderFinetuneEngine,
    HybridRetrievalEvaluator,
    RerankerFinetuneEngine,
)
from llama_index_ragtune.finetuning.candidates import hybrid_candidates_with_scores
from llama_index_ragtune.finetuning.hybrid_eval import fusion_params
from llama_index_ragtune.finetuning.ranking_eval import CandidateRerankingEvaluator
from llama_index_ragtune.models import resolve_model
from llama_index_ragtune.retrievers.defaults import fusion_preset
from llama_index_ragtune.retrievers.fusion_sweep import choose_fusion

KEYS = ("ndcg@10", "recall@100", "mrr@10")
#: ablation -> (title, encoder engine overrides, miner overrides)
ABLATIONS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "gist": (
        "ablation: GISTEmbedLoss instead of MultipleNegativesRankingLoss",
        {"loss": "gist"},
        {},
    ),
    "inbatch": ("ablation: in-batch negatives only (no mined negatives)", {}, {"sources": ()}),
    "all-positives": (
        "ablation: every positive of every grade, uniformly (no per-query cap; the old recipe)",
        {"top_grade_only": False, "budget": {"max_pairs_per_query": None}},
        {},
    ),
}


@dataclass
class Row:
    name: str
    title: str
    metrics: dict[str, float]
    train_minutes: float | None = None
    peak_memory_mb: float | None = None
    decision: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--beir", required=True, help="BEIR folder (train and test qrels)")
    parser.add_argument("--out", required=True, help="folder for tuning.json / tuning.md")
    parser.add_argument(
        "--ablations",
        default="",
        help=f"comma-separated ablations to run: {', '.join(ABLATIONS)} (default: none)",
    )
    parser.add_argument("--no-reranker", action="store_true", help="skip the reranker")
    parser.add_argument(
        "--only-ablations",
        action="store_true",
        help="the untuned rows and the --ablations only (no default recipe, no reranker)",
    )
    parser.add_argument("--model", help="starting bi-encoder (default: bundled MiniLM)")
    parser.add_argument(
        "--time-budget",
        type=bounded(float, 0, MAX_MINUTES, above=True),
        help="minutes per training run",
    )
    parser.add_argument(
        "--max-pairs",
        type=bounded(int, 1),
        help="training pairs per run instead of a time budget: the same steps however busy "
        "the machine is (one epoch over them)",
    )
    parser.add_argument(
        "--max-test-queries", type=bounded(int, 1), help="report on the first N test queries"
    )
    parser.add_argument("--seed", type=seed_number, default=42)
    parser.add_argument(
        "--embedding-cache",
        help="corpus embeddings of unchanged models (default: <out>/embedding-cache)",
    )


class TuningBenchmark:
    """Runs the rows, sharing corpus embeddings (cached by model weights) between them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.cache = Path(args.embedding_cache or self.out / "embedding-cache")
        self.train = RetrievalDataset.from_beir(args.beir, split="train")
        self.test = RetrievalDataset.from_beir(
            args.beir, split="test", max_queries=args.max_test_queries
        )
        self.rows: list[Row] = []
        self.meta: dict[str, Any] = {
            "dataset": Path(args.beir).name,
            "train_queries": len(self.train),
            "train_pairs": self.train.num_pairs,
            "test_queries": len(self.test),
            "corpus": len(self.train.corpus),
            "machine": f"{platform.machine()}, {_cores()} CPUs",
            "command": _command(args),
        }
        self.test_eval = HybridRetrievalEvaluator(
            self.test.queries, self.test.corpus, self.test.graded_qrels(), cache_dir=self.cache
        )

    # ------------------------------------------------------------------ pieces

    def _start_model(self) -> Any:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(resolve_model(self.args.model, kind="encoder"), device="cpu")

    def _test_metrics(self, model: Any, fusion: Any) -> tuple[dict[str, float], dict[str, float]]:
        """(dense, hybrid) test metrics of ``model`` with ``fusion``."""
        dense = self.test_eval.evaluate(model)
        hybrid = self.test_eval.hybrid_metrics(self.test_eval.last_scored_rankings, fusion)
        return (
            {k: dense[k] for k in KEYS},
            {k: hybrid[f"hybrid_{k}"] for k in KEYS},
        )

    def _train_fusion(self, model: Any) -> Any:
        """The fusion chosen on every training query for the untuned encoder (full grid)."""
        evaluator = HybridRetrievalEvaluator(
            self.train.queries, self.train.corpus, self.train.graded_qrels(), cache_dir=self.cache
        )
        evaluator.evaluate(model)
        return choose_fusion(evaluator.fusion_rankings(), evaluator.qrels, grid="full")

    def _mine(self, model: Any, **overrides: Any) -> tuple[RetrievalDataset, dict[str, Any]]:
        settings: dict[str, Any] = {
            "sources": ("bm25", "dense"),
            "num_negatives": 3,
            "range_max": 30,
            "embed_model": model,
            "embedding_cache_dir": self.cache,
            "seed": self.args.seed,
        }
        settings.update(overrides)
        if not settings["sources"]:
            return self.train, {"sources": []}
        miner = HardNegativeMiner(**settings)
        started = time.perf_counter()
        mined = miner.mine(self.train)
        return mined, {
            "seconds": round(time.perf_counter() - started, 1),
            **miner.mine_stats.as_dict(),
        }

    def _encoder(self, name: str, train: RetrievalDataset, **overrides: Any) -> Any:
        """Train with the engine's defaults; ``budget={...}`` changes single budget fields."""
        from dataclasses import replace

        from llama_index_ragtune.finetuning.encoder import DEFAULT_BUDGET

        budget = self._budget(replace(DEFAULT_BUDGET, **overrides.pop("budget", {})))
        output_dir = self.out / "models" / name
        engine = EncoderFinetuneEngine(
            train,
            model=self._start_model(),
            args=EncoderFinetuneEngine.default_args(output_dir, seed=self.args.seed),
            output_dir=output_dir,
            cache_dir=self.cache,
            budget=budget,
            **overrides,
        )
        return engine, engine.finetune()

    def _budget(self, budget: Any) -> Any:
        """``budget`` with ``--time-budget`` / ``--max-pairs`` applied."""
        from dataclasses import replace

        if self.args.max_pairs is not None:
            return replace(budget, max_pairs=self.args.max_pairs, minutes=None)
        if self.args.time_budget is not None:
            return replace(budget, minutes=self.args.time_budget)
        return budget

    def _challenger(self, engine: Any, result: Any) -> Any:
        """The tuned model whether or not it was promoted (the engine restores the start)."""
        if result.promoted:
            return engine.model
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(engine.challenger_path), device="cpu")

    def _add(self, row: Row) -> None:
        self.rows.append(row)
        _log(format_row(row))
        self.save()

    # ------------------------------------------------------------------ driver

    def run(self) -> None:
        start = self._start_model()
        dense, preset = self._test_metrics(start, fusion_preset())
        self._add(Row("bm25", "BM25", self._bm25()))
        self._add(Row("dense-before", "dense, before tuning (bundled MiniLM)", dense))
        self._add(Row("hybrid-preset", "hybrid, before tuning, library fusion preset", preset))
        if not self.args.only_ablations:
            self._main_rows(start)
        for name in [a.strip() for a in self.args.ablations.split(",") if a.strip()]:
            self._ablation(name, start)
        self.meta["finished"] = True
        self.save()

    def _main_rows(self, start: Any) -> None:
        """Fusion on train, the default recipe, the promoted stack (and reranker)."""
        chosen = self._train_fusion(start)
        _, hybrid = self._test_metrics(start, chosen.params)
        self._add(
            Row(
                "hybrid-before",
                f"hybrid, before tuning, fusion chosen on train ({_fusion_label(chosen.params)})",
                hybrid,
                details={"fusion": chosen.params},
            )
        )
        mined, mining = self._mine(start)
        engine, result = self._encoder("encoder", mined)
        challenger = self._challenger(engine, result)
        tuned_fusion = result.info.get("fusion_tuned") or chosen.params
        dense_after, hybrid_after = self._test_metrics(challenger, tuned_fusion)
        common = {
            "train_minutes": result.train_seconds / 60,
            "peak_memory_mb": result.peak_memory_mb,
            "decision": result.decision.reason,
        }
        self._add(
            Row(
                "dense-after",
                "dense, tuned",
                dense_after,
                **common,
                details=_details(result, mining),
            )
        )
        self._add(
            Row(
                "hybrid-after",
                f"hybrid, tuned encoder (fusion chosen on validation: {_fusion_label(tuned_fusion)})",
                hybrid_after,
            )
        )
        promoted_model = engine.model  # tuned if promoted, else the restored start
        stack_fusion = result.info.get("fusion") or chosen.params
        _, stack = self._test_metrics(promoted_model, stack_fusion)
        stack_title = "tuned" if result.promoted else "starting (tuning kept out)"
        if not self.args.no_reranker:
            stack = self._reranker(mined, engine, promoted_model, stack_fusion, stack, stack_title)
        else:
            self._add(Row("stack", f"stack: {stack_title} encoder in the hybrid", stack))

    def _bm25(self) -> dict[str, float]:
        from llama_index_ragtune.finetuning.ranking_eval import score_rankings

        bm25 = self.test_eval.bm25_rankings()
        ranked = {q: [d for d, _ in bm25[q]] for q in self.test_eval.query_ids}
        return score_rankings(ranked, self.test_eval.qrels, self.test_eval.metrics)

    def _reranker(
        self,
        mined: RetrievalDataset,
        encoder_engine: Any,
        encoder: Any,
        fusion: dict[str, Any],
        stack: dict[str, float],
        stack_title: str,
    ) -> dict[str, float]:
        from llama_index_ragtune.finetuning import reranker as reranker_defaults

        engine = RerankerFinetuneEngine(
            mined,
            output_dir=self.out / "models" / "reranker",
            args=RerankerFinetuneEngine.default_args(
                self.out / "models" / "reranker", seed=self.args.seed
            ),
            budget=self._budget(reranker_defaults.DEFAULT_BUDGET),
            teacher=encoder,
            encoder=str(encoder_engine.final_model_path),
            fusion=fusion,
        )
        result = engine.finetune()
        candidates, scores = hybrid_candidates_with_scores(
            self.test.queries,
            self.test.corpus,
            top_k=100,
            embed_model=str(encoder_engine.final_model_path),
            **fusion_params(fusion),
        )
        weight = engine.retrieval_weight or 0.0
        evaluator = CandidateRerankingEvaluator(
            self.test.queries,
            self.test.corpus,
            self.test.graded_qrels(),
            candidates,
            depth=engine.rerank_depth,
            candidate_scores=scores if weight > 0 else None,
            retrieval_weight=weight,
        )
        from sentence_transformers.cross_encoder import CrossEncoder

        model = engine.model if result.promoted else CrossEncoder(str(engine.challenger_path))
        reranked = {k: v for k, v in evaluator.evaluate(model).items() if k in KEYS}
        self._add(
            Row(
                "reranker",
                f"+ tuned reranker (top {engine.rerank_depth}, blend weight {weight:g})",
                reranked,
                result.train_seconds / 60,
                result.peak_memory_mb,
                result.decision.reason,
                details={"rows": result.info["rows"], "plan": result.info["plan"]},
            )
        )
        final = reranked if result.promoted else stack
        with_reranker = "with the reranker" if result.promoted else "without reranker (kept out)"
        self._add(
            Row("stack", f"stack: {stack_title} encoder in the hybrid, {with_reranker}", final)
        )
        return final

    def _ablation(self, name: str, start: Any) -> None:
        if name not in ABLATIONS:
            raise SystemExit(f"--ablations: unknown {name!r}; choose from {', '.join(ABLATIONS)}")
        title, engine_overrides, miner_overrides = ABLATIONS[name]
        mined, mining = self._mine(start, **miner_overrides)
        engine, result = self._encoder(f"ablation-{name}", mined, **dict(engine_overrides))
        dense, hybrid = self._test_metrics(
            self._challenger(engine, result), result.info.get("fusion_tuned") or fusion_preset()
        )
        self._add(
            Row(
                f"ablation-{name}",
                title,
                {**dense, **{f"hybrid_{k}": v for k, v in hybrid.items()}},
                result.train_seconds / 60,
                result.peak_memory_mb,
                result.decision.reason,
                details=_details(result, mining),
            )
        )

    def save(self) -> None:
        from llama_index_ragtune._atomic import atomic_write_text

        payload = {"meta": self.meta, "rows": [asdict(r) for r in self.rows]}
        atomic_write_text(self.out / "tuning.json", json.dumps(payload, indent=2, default=str))
        atomic_write_text(self.out / "tuning.md", markdown(self.rows, self.meta))


def _details(result: Any, mining: dict[str, Any]) -> dict[str, Any]:
    return {
        "validation_before": result.before,
        "validation_after": result.after,
        "steps": result.global_step,
        "rows": result.info.get("rows"),
        "plan": result.info.get("plan"),
        "loss": result.info.get("loss"),
        "mining": mining,
    }


def _fusion_label(params: dict[str, Any]) -> str:
    mode = params["fusion_mode"]
    extra = f", k={params['rrf_k']:g}" if mode == "rrf" else ""
    return f"{mode}, alpha={params['alpha']:g}{extra}"


def format_row(row: Row) -> str:
    metrics = "  ".join(f"{k} {row.metrics.get(k, float('nan')):.4f}" for k in KEYS)
    train = "" if row.train_minutes is None else f"  train {row.train_minutes:.1f} min"
    return f"{row.name:<22} {metrics}{train}"


def markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    lines = [
        f"# Encoder-side tuning on {meta['dataset']} (train {meta['train_queries']} queries, "
        f"{meta['train_pairs']} pairs; test {meta['test_queries']} queries; corpus {meta['corpus']})",
        "",
        "| system | nDCG@10 | Recall@100 | MRR@10 | hybrid nDCG@10 | train (min) | peak MiB | validation decision |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        cells = " | ".join(f"{row.metrics[k]:.3f}" if k in row.metrics else "" for k in KEYS)
        hybrid = row.metrics.get("hybrid_ndcg@10")
        train = "" if row.train_minutes is None else f"{row.train_minutes:.1f}"
        memory = "" if row.peak_memory_mb is None else f"{row.peak_memory_mb:.0f}"
        lines.append(
            f"| {row.title} | {cells} | {'' if hybrid is None else f'{hybrid:.3f}'} | {train} "
            f"| {memory} | {row.decision or ''} |"
        )
    lines += ["", f"Machine: {meta['machine']}. Command: `{meta['command']}`", ""]
    return "\n".join(lines)


def _command(args: argparse.Namespace) -> str:
    """The command that reproduces these results, rebuilt from the parsed arguments."""
    parts = ["ragtune", "bench", "tuning"]
    for name, value in vars(args).items():
        if name.startswith("_") or name in {"group", "command"} or value in (None, False, ""):
            continue
        if name == "seed" and value == 42:
            continue
        flag = "--" + name.replace("_", "-")
        parts += [flag] if value is True else [flag, _relative(value)]
    return shlex.join(parts)


def _relative(value: Any) -> str:
    """A path argument written relative to the working directory (never absolute)."""
    return str(display_value(str(value)))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark for parsed ``args`` (``ragtune bench tuning`` calls this)."""
    bench = TuningBenchmark(args)
    bench.run()
    print(markdown(bench.rows, bench.meta))
    print(f"written: {Path(args.out) / 'tuning.json'}, {Path(args.out) / 'tuning.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
