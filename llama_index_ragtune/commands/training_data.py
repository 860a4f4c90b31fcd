"""Arguments and steps shared by ``ragtune train encoder`` and ``ragtune train reranker``.

Data (``--beir DIR`` or ``--dataset JSON``), hard-negative mining
(``--negatives bm25,dense``), the training settings that map onto the upstream
training-arguments object (``--epochs``, ``--batch-size``, ``--lr``,
``--max-steps``...), and printing / saving the before-after table.

Example::

    parser = argparse.ArgumentParser()
    add_data_arguments(parser); add_negative_arguments(parser); add_training_arguments(parser)
    args = parser.parse_args(["--beir", "../shared/data/scifact", "--output", "runs/x"])
    data = load_training_data(args)       # TrainingData(train=..., val=..., qrels=...)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llama_index_ragtune.data.schema import RetrievalDataset
    from llama_index_ragtune.finetuning.result import FinetuneResult

logger = logging.getLogger(__name__)

NEGATIVE_SOURCES = ("bm25", "dense")


@dataclass
class TrainingData:
    """Train and validation sets; ``qrels`` keeps BEIR's graded judgements of the validation queries."""

    train: RetrievalDataset
    val: RetrievalDataset | None
    qrels: dict[str, dict[str, int]] | None = None
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- arguments


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    source = group.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--beir", metavar="DIR", help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)"
    )
    source.add_argument(
        "--dataset",
        metavar="JSON",
        help="training set saved by RetrievalDataset.save_json or LlamaIndex's EmbeddingQAFinetuneDataset",
    )
    group.add_argument(
        "--train-split", default="train", help="BEIR split to train on (default: train)"
    )
    group.add_argument(
        "--eval-split",
        default="test",
        help="BEIR split reported before/after (default: test; 'none' skips evaluation)",
    )
    group.add_argument(
        "--val-dataset", metavar="JSON", help="validation set for --dataset (same formats)"
    )
    group.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="with --dataset and no --val-dataset: hold out this share of the queries",
    )
    group.add_argument(
        "--max-train-queries", type=int, help="train on the first N queries only (quick runs)"
    )
    group.add_argument("--max-eval-queries", type=int, help="evaluate on the first N queries only")


def add_negative_arguments(parser: argparse.ArgumentParser, num_negatives: int = 3) -> None:
    group = parser.add_argument_group("hard negatives")
    group.add_argument(
        "--negatives",
        default="bm25,dense",
        help="comma-separated sources to mine: bm25, dense, or 'none' (default: bm25,dense)",
    )
    group.add_argument(
        "--num-negatives",
        type=int,
        default=num_negatives,
        help=f"negatives mined per query and source (default: {num_negatives})",
    )
    group.add_argument(
        "--range-min", type=int, default=0, help="skip the N best-ranked non-positives (default: 0)"
    )
    group.add_argument(
        "--range-max", type=int, default=30, help="look down to this rank (default: 30)"
    )
    group.add_argument(
        "--relative-margin",
        default="0.95",
        help="false-negative filter: skip candidates scoring above this share of the positive's "
        "score; 'none' disables it (default: 0.95)",
    )
    group.add_argument(
        "--embedding-cache",
        metavar="DIR",
        help="cache corpus embeddings of unchanged models here (reused across runs)",
    )


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training (mapped onto the upstream training arguments)")
    group.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="checkpoints, the final model (<DIR>/final) and results.json",
    )
    group.add_argument("--epochs", type=float, help="num_train_epochs")
    group.add_argument("--batch-size", type=int, help="per_device_train_batch_size")
    group.add_argument("--lr", type=float, help="learning_rate")
    group.add_argument("--max-steps", type=int, help="max_steps (overrides --epochs)")
    group.add_argument("--warmup", type=float, help="warmup_steps (a float < 1 is a ratio)")
    group.add_argument("--save-steps", type=int, help="save_steps (checkpoint interval)")
    group.add_argument(
        "--seed", type=int, default=42, help="seed for data order, negatives and splits"
    )
    group.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in --output"
    )
    group.add_argument("--device", help="cpu, cuda, mps... (default: the best available)")


# --------------------------------------------------------------------------- steps


def training_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The CLI's training settings as keyword arguments of the upstream training-arguments class."""
    mapping = {
        "epochs": "num_train_epochs",
        "batch_size": "per_device_train_batch_size",
        "lr": "learning_rate",
        "max_steps": "max_steps",
        "warmup": "warmup_steps",
        "save_steps": "save_steps",
        "seed": "seed",
    }
    out = {
        target: getattr(args, name)
        for name, target in mapping.items()
        if getattr(args, name, None) is not None
    }
    if getattr(args, "device", None) == "cpu":
        out["use_cpu"] = True
    return out


def load_training_data(args: argparse.Namespace) -> TrainingData:
    """Train / validation sets from ``--beir`` or ``--dataset`` (+ ``--val-dataset`` / ``--val-fraction``)."""
    from llama_index_ragtune.data.schema import RetrievalDataset

    no_eval = str(args.eval_split).lower() == "none"
    if args.beir:
        from llama_index_ragtune.data.beir import load_beir

        train = RetrievalDataset.from_beir(
            args.beir, split=args.train_split, max_queries=args.max_train_queries
        )
        if no_eval:
            return TrainingData(train, None, info={"source": args.beir})
        beir = load_beir(args.beir, split=args.eval_split, max_queries=args.max_eval_queries)
        relevant = beir.relevant_docs()
        val = RetrievalDataset(
            queries={q: beir.queries[q] for q in relevant},
            corpus=beir.corpus,
            relevant_docs=relevant,
            metadata={"source": "beir", "name": beir.name, "split": args.eval_split},
        )
        qrels = {q: beir.qrels[q] for q in val.queries}
        return TrainingData(
            train, val, qrels, info={"source": args.beir, "eval_split": args.eval_split}
        )
    train = RetrievalDataset.load_json(args.dataset)
    val = None
    if args.val_dataset:
        val = RetrievalDataset.load_json(args.val_dataset)
    elif args.val_fraction and not no_eval:
        train, val = train.split(val_fraction=args.val_fraction, seed=args.seed)
    if args.max_train_queries:
        train = train.subset(train.query_ids[: args.max_train_queries])
    if val is not None and args.max_eval_queries:
        val = val.subset(val.query_ids[: args.max_eval_queries])
    return TrainingData(train, val, None, info={"source": args.dataset})


def parse_sources(text: str) -> list[str]:
    if text.strip().lower() in {"", "none", "no", "off"}:
        return []
    sources = [s.strip().lower() for s in text.split(",") if s.strip()]
    unknown = [s for s in sources if s not in NEGATIVE_SOURCES]
    if unknown:
        raise SystemExit(
            f"--negatives: unknown source(s) {unknown}; use a comma-separated subset of "
            f"{','.join(NEGATIVE_SOURCES)} or 'none'"
        )
    return sources


def parse_margin(text: str) -> float | None:
    if str(text).strip().lower() in {"none", "off", "no", ""}:
        return None
    return float(text)


def shared_corpus_embeddings(evaluator: Any, dataset: RetrievalDataset) -> Any:
    """The evaluator's corpus embeddings as a numpy array when they cover ``dataset``'s corpus in
    the same order (BEIR splits share one corpus), so the dense miner skips its own corpus pass."""
    embeddings = getattr(evaluator, "corpus_embeddings", None)
    if embeddings is None or list(dataset.corpus) != getattr(evaluator, "corpus_ids", None):
        return None
    return embeddings.numpy()


def mine_negatives(
    args: argparse.Namespace,
    train: RetrievalDataset,
    embed_model: Any,
    corpus_embeddings: Any = None,
) -> tuple[RetrievalDataset, dict]:
    """Add mined negatives to ``train`` as asked by ``--negatives`` (the dense source uses
    ``embed_model``, and ``corpus_embeddings`` when given: rows in ``train.corpus`` order)."""
    sources = parse_sources(args.negatives)
    if not sources:
        return train, {"sources": [], "negatives": train.num_negatives}
    from llama_index_ragtune.data.negatives import HardNegativeMiner

    miner = HardNegativeMiner(
        sources=sources,
        num_negatives=args.num_negatives,
        range_min=args.range_min,
        range_max=args.range_max,
        relative_margin=parse_margin(args.relative_margin),
        embed_model=embed_model,
        embedding_cache_dir=args.embedding_cache,
        seed=args.seed,
        corpus_embeddings=corpus_embeddings if "dense" in sources else None,
    )
    started = time.perf_counter()
    mined = miner.mine(train)
    stats = {
        "sources": sources,
        "seconds": round(time.perf_counter() - started, 1),
        **miner.mine_stats.as_dict(),
    }
    print(f"mined negatives in {stats['seconds']:.0f} s: {miner.mine_stats}", file=sys.stderr)
    return mined, stats


def report(result: FinetuneResult, output: str | Path, extra: dict[str, Any]) -> Path:
    """Print the before/after table and write ``<output>/results.json``."""
    print(result.format_table())
    data = {**result.to_dict(), **extra}
    path = Path(output) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    print(f"results: {path}\nmodel: {result.model_path}")
    return path


def namespace_dict(args: argparse.Namespace) -> dict[str, Any]:
    """The command's arguments, JSON-ready (for results.json)."""
    return {
        k: v
        for k, v in vars(args).items()
        if not k.startswith("_") and k not in {"group", "command"}
    }
