"""Arguments and steps shared by ``ragtune train encoder`` and ``ragtune train reranker``.

Data (``--beir DIR`` or ``--dataset JSON``), hard-negative mining
(``--negatives bm25,dense``), the budget (``--time-budget``, ``--max-pairs``,
``--max-pairs-per-query``), the promotion rule (``--promotion-margin``,
``--force-promotion``), the training settings that map onto the upstream
training-arguments object (``--epochs``, ``--train-batch-size``,
``--learning-rate``, ``--max-steps``...), and printing / saving the results.

Validation comes from the training queries (``--val-fraction``, or
``--val-dataset``): it picks the best checkpoint and decides promotion. The
``--test-split`` of a BEIR folder is only reported, before and after, never
used for a decision.

Example::

    parser = argparse.ArgumentParser()
    add_data_arguments(parser); add_negative_arguments(parser); add_training_arguments(parser)
    args = parser.parse_args(["--beir", "../shared/data/scifact", "--out", "runs/x"])
    data = load_training_data(args)       # TrainingData(train=..., val=None, test=...)
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

from llama_index_ragtune.commands.options import (
    MAX_MINUTES,
    DeprecatedNames,
    OptionDefault,
    bm25_language,
    bm25_language_value,
    bm25_stopwords,
    bm25_stopwords_value,
    bounded,
    seed_number,
)

if TYPE_CHECKING:
    from llama_index_ragtune.data.schema import RetrievalDataset
    from llama_index_ragtune.finetuning.budget import TrainingBudget
    from llama_index_ragtune.finetuning.result import FinetuneResult

logger = logging.getLogger(__name__)

NEGATIVE_SOURCES = ("bm25", "dense")
DEFAULT_TIME_BUDGET = 10.0


@dataclass
class TrainingData:
    """Training queries, an optional given validation set, and an optional reported test set."""

    train: RetrievalDataset
    val: RetrievalDataset | None = None
    test: RetrievalDataset | None = None
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
        "--test-split",
        default="test",
        help="BEIR split reported before/after, never used for decisions (default: test; "
        "'none' skips it)",
    )
    group.add_argument(
        "--val-dataset",
        metavar="JSON",
        help="validation queries (same formats); default: carved off the training queries",
    )
    group.add_argument(
        "--val-fraction",
        type=bounded(float, 0, 1),
        default=0.1,
        help="share of the training queries held out for validation (default: 0.1; at least "
        "min(50, n/4), at most --max-val-queries; 0 = no validation, then only "
        "--force-promotion promotes)",
    )
    group.add_argument(
        "--max-val-queries",
        type=bounded(int, 1),
        default=200,
        help="cap on validation queries (default: 200)",
    )
    group.add_argument(
        "--min-grade",
        type=bounded(int, 0),
        default=1,
        help="train on positives graded at least this (BEIR grades; default: 1)",
    )
    group.add_argument(
        "--max-train-queries",
        type=bounded(int, 1),
        help="train on the first N queries only (quick runs)",
    )
    group.add_argument(
        "--max-test-queries", type=bounded(int, 1), help="report on the first N test queries"
    )


def add_negative_arguments(parser: argparse.ArgumentParser, num_negatives: int = 3) -> None:
    from llama_index_ragtune.retrievers.bm25_index import ANALYZERS

    group = parser.add_argument_group("hard negatives")
    group.add_argument(
        "--negatives",
        type=negative_sources,
        default="bm25,dense",
        help="comma-separated sources to mine: bm25, dense, or 'none' (default: bm25,dense)",
    )
    group.add_argument(
        "--num-negatives",
        type=bounded(int, 0),
        default=num_negatives,
        help=f"negatives mined per query and source (default: {num_negatives})",
    )
    group.add_argument(
        "--range-min",
        type=bounded(int, 0),
        default=0,
        help="skip the N best-ranked non-positives (default: 0)",
    )
    group.add_argument(
        "--range-max", type=bounded(int, 1), default=30, help="look down to this rank (default: 30)"
    )
    group.add_argument(
        "--relative-margin",
        type=_relative_margin,
        default="0.95",
        help="false-negative filter of the dense source: skip candidates scoring above this share "
        "of the query's weakest positive; 'none' disables it (default: 0.95)",
    )
    group.add_argument(
        "--bm25-analyzer",
        choices=sorted(ANALYZERS),
        default=OptionDefault("plain"),
        help="how every BM25 of the run reads text (the bm25 negatives, the hybrid validation "
        "and test): 'unicode' for Chinese, Japanese, Thai or Korean text, accents or product "
        "codes; 'plain' (default) for English. Give the served retriever's (train reranker: "
        "by default the --encoder run's)",
    )
    group.add_argument(
        "--bm25-language",
        type=bm25_language,
        default=OptionDefault("english"),
        metavar="LANGUAGE",
        help="stemmer of every BM25 of the run, the language of your documents: english "
        "(default), german, french, spanish, ... or 'none' (no stemming); its stopwords "
        "follow it. Give the served retriever's (train reranker: by default the --encoder run's)",
    )
    group.add_argument(
        "--bm25-stopwords",
        type=bm25_stopwords,
        default=OptionDefault("language"),
        metavar="LIST",
        help="words every BM25 of the run drops: 'language' (default: the --bm25-language's "
        "list), 'none', a list code (en, de, fr, es, ...) or your words separated by commas "
        "('the,a,an'; one word: 'sku,'). Give the served retriever's (train reranker: by "
        "default the --encoder run's)",
    )
    group.add_argument(
        "--embedding-cache",
        metavar="DIR",
        help="cache corpus embeddings of unchanged models here (reused across runs)",
    )


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training (mapped onto the upstream training arguments)")
    group.add_argument(
        "--out",
        "--output",
        dest="out",
        action=DeprecatedNames,
        deprecated=("--output",),
        required=True,
        metavar="DIR",
        help="checkpoints, the model to use (<DIR>/final), decision.json and results.json "
        "(--output: deprecated name)",
    )
    group.add_argument("--epochs", type=bounded(float, 0, above=True), help="num_train_epochs")
    group.add_argument(
        "--train-batch-size", type=bounded(int, 1), help="per_device_train_batch_size"
    )
    group.add_argument(
        "--learning-rate", "--lr", type=bounded(float, 0, above=True), help="learning_rate"
    )
    group.add_argument(
        "--max-steps", type=bounded(int, 1), help="max_steps (overrides --epochs and the plan)"
    )
    group.add_argument(
        "--warmup", type=bounded(float, 0), help="warmup_steps (a float < 1 is a ratio)"
    )
    group.add_argument(
        "--save-steps", type=bounded(int, 1), help="save_steps (checkpoint interval)"
    )
    group.add_argument(
        "--seed", type=seed_number, default=42, help="seed for data order, negatives and splits"
    )
    group.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in --out"
    )
    group.add_argument("--device", help="cpu, cuda, mps... (default: the best available)")
    budget = parser.add_argument_group("budget")
    budget.add_argument(
        "--time-budget",
        type=_budget_minutes,
        metavar="MINUTES",
        default=str(DEFAULT_TIME_BUDGET),
        help=f"minutes of training; steps are planned to fit (default: {DEFAULT_TIME_BUDGET:g}; "
        "'none' = one full epoch)",
    )
    budget.add_argument(
        "--max-pairs", type=bounded(int, 1), help="cap on (query, positive) training pairs"
    )
    budget.add_argument(
        "--max-pairs-per-query",
        type=bounded(int, 1),
        help="strongest positives used per query (default: the engine's)",
    )
    promotion = parser.add_argument_group("promotion (champion / challenger)")
    promotion.add_argument(
        "--promotion-margin",
        type=bounded(float, 0),
        help="how much better on validation the tuned model must be (default: the engine's)",
    )
    promotion.add_argument(
        "--force-promotion",
        action="store_true",
        help="use the tuned model even when validation says it is not better",
    )


# --------------------------------------------------------------------------- steps


def training_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The CLI's training settings as keyword arguments of the upstream training-arguments class."""
    mapping = {
        "epochs": "num_train_epochs",
        "train_batch_size": "per_device_train_batch_size",
        "learning_rate": "learning_rate",
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


def training_budget(
    args: argparse.Namespace, default: TrainingBudget | None
) -> TrainingBudget | None:
    """The ``TrainingBudget`` asked for on the command line (engine defaults fill the gaps)."""
    from llama_index_ragtune.finetuning.budget import TrainingBudget

    minutes = parse_optional_float(args.time_budget, "--time-budget")
    per_query = args.max_pairs_per_query
    if per_query is None and default is not None:
        per_query = default.max_pairs_per_query
    if minutes is None and args.max_pairs is None and per_query is None:
        return None
    return TrainingBudget(max_pairs=args.max_pairs, max_pairs_per_query=per_query, minutes=minutes)


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments every engine takes from the shared flags."""
    options: dict[str, Any] = {
        "val_fraction": args.val_fraction,
        "max_val_queries": args.max_val_queries,
        "force_promotion": args.force_promotion,
    }
    if args.promotion_margin is not None:
        options["promotion_margin"] = args.promotion_margin
    return options


def load_training_data(args: argparse.Namespace) -> TrainingData:
    """Training queries from ``--beir`` or ``--dataset`` (less the ``--val-dataset``
    questions), ``--val-dataset``, and the BEIR test split."""
    from llama_index_ragtune.data.schema import RetrievalDataset
    from llama_index_ragtune.finetuning.validation_split import leave_out_validation_questions

    val = RetrievalDataset.load_json(args.val_dataset) if args.val_dataset else None
    if args.beir:
        train = RetrievalDataset.from_beir(
            args.beir, split=args.train_split, max_queries=args.max_train_queries
        )
        test = None
        if str(args.test_split).lower() != "none":
            test = RetrievalDataset.from_beir(
                args.beir, split=args.test_split, max_queries=args.max_test_queries
            )
        return TrainingData(
            leave_out_validation_questions(train, val), val, test, info={"source": args.beir}
        )
    train = RetrievalDataset.load_json(args.dataset)
    if args.max_train_queries:
        train = train.subset(train.query_ids[: args.max_train_queries])
    return TrainingData(
        leave_out_validation_questions(train, val), val, None, info={"source": args.dataset}
    )


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


def negative_sources(text: str) -> str:
    """``argparse`` type of ``--negatives``: a comma-separated subset of ``bm25,dense`` or
    ``none``, checked when the command line is read (an unknown source stopped the command
    once the data and the model were loaded). Returned as given.

    Example::

        parser.add_argument("--negatives", type=negative_sources, default="bm25,dense")
    """
    try:
        parse_sources(text)
    except SystemExit as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--negatives: ")) from None
    return text


def check_mining_options(args: argparse.Namespace) -> None:
    """``UsageError`` naming the options when ``--range-min`` is not below ``--range-max``
    (the miner refused it with a traceback once the data and the model were loaded).

    Example::

        check_mining_options(args)   # --range-min 40 --range-max 30: UsageError
    """
    from llama_index_ragtune.commands.options import UsageError

    if parse_sources(args.negatives) and args.range_min >= args.range_max:
        raise UsageError(
            f"argument --range-min: {args.range_min} skips every candidate down to --range-max "
            f"{args.range_max}; give a --range-min below --range-max"
        )


def _budget_minutes(text: str) -> float | None:
    """``--time-budget``: 'none' (one full epoch) or minutes in (0, MAX_MINUTES] (1e308 passed
    and overflowed to infinite seconds when the steps were planned; NaN and inf failed in
    ``TrainingBudget`` with a traceback once the data was loaded)."""
    if text.strip().lower() in NONE_WORDS:
        return None
    return bounded(float, 0, MAX_MINUTES, above=True)(text)


NONE_WORDS = ("none", "off", "no")
"""What turns an optional number off. An empty value (an unset shell variable:
``--time-budget "$BUDGET"``) is not one of them: it meant unlimited training."""


def _relative_margin(text: str) -> float | None:
    """``--relative-margin``: 'none' or a share in (0, 1], checked when the command line is
    read (an empty value turned the filter off; NaN failed after the data was loaded)."""
    if text.strip().lower() in NONE_WORDS:
        return None
    return bounded(float, 0, 1, above=True)(text)


def parse_optional_float(text: Any, flag: str = "--relative-margin") -> float | None:
    if text is None or str(text).strip().lower() in NONE_WORDS:
        return None
    try:
        return float(text)
    except ValueError:
        raise SystemExit(f"{flag}: expected a number or 'none', got {text!r}") from None


parse_margin = parse_optional_float


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

    margin = parse_optional_float(args.relative_margin)
    miner = HardNegativeMiner(
        sources=sources,
        num_negatives=args.num_negatives,
        range_min=args.range_min,
        range_max=args.range_max,
        relative_margin=None if margin is None else {"dense": margin},
        embed_model=embed_model,
        embedding_cache_dir=args.embedding_cache,
        seed=args.seed,
        corpus_embeddings=corpus_embeddings if "dense" in sources else None,
        **bm25_options(args),
    )
    started = time.perf_counter()
    mined = _mine(miner, train, sources, args)
    stats = {
        "sources": sources,
        "seconds": round(time.perf_counter() - started, 1),
        **miner.mine_stats.as_dict(),
    }
    if "bm25" in sources:  # which BM25 ranked the bm25 negatives
        stats.update(bm25_options(args))
    print(f"mined negatives in {stats['seconds']:.0f} s: {miner.mine_stats}", file=sys.stderr)
    return mined, stats


def _mine(miner: Any, train: RetrievalDataset, sources: list[str], args: Any) -> Any:
    """``miner.mine(train)``; what the data gives the miner nothing to work with (a corpus of
    stopwords, one document) is a ``DataError`` naming the options that help (it was a
    traceback with the library's argument names)."""
    from llama_index_ragtune.data.errors import DataError

    try:
        return miner.mine(train)
    except DataError:
        raise
    except ValueError as exc:
        text = " ".join(str(exc).split()).replace("pass stopwords=None", "--bm25-stopwords none")
        where = getattr(args, "dataset", None) or getattr(args, "beir", None) or "the data"
        raise DataError(
            f"{where}: mining hard negatives ({','.join(sources)}) failed: {text}",
            hint="or leave a source out with --negatives (--negatives none: no mining)",
        ) from exc


_BM25_DEFAULTS = {
    "bm25_analyzer": "plain",
    "bm25_language": "english",
    "bm25_stopwords": "language",
}


def resolve_bm25_options(
    args: argparse.Namespace, recorded: dict[str, Any] | None = None, source: str = ""
) -> None:
    """Settle ``args.bm25_analyzer`` / ``args.bm25_language`` / ``args.bm25_stopwords`` in
    place: the option when given, else what ``recorded`` (the encoder run's, read from
    ``source``) says, else the defaults. A given option that differs from the record is used,
    with a warning (the candidates then come from another BM25 than the one the encoder was
    validated with). ``ValueError`` naming the setting when it cannot be used.

    Example::

        resolve_bm25_options(args, {"bm25_language": "german"}, "runs/enc/results.json")
    """
    from llama_index_ragtune.finetuning.hybrid_eval import check_bm25_text

    recorded = dict(recorded or {})
    if "bm25_stopwords" in recorded:
        recorded["bm25_stopwords"] = bm25_stopwords_value(recorded["bm25_stopwords"])
    for name, default in _BM25_DEFAULTS.items():
        option = getattr(args, name, None)
        value = _bm25_value(name, option)
        if option is None or isinstance(option, OptionDefault):
            value = recorded.get(name, default)
        elif name in recorded and recorded[name] != value:
            logger.warning(
                "--%s %s differs from the %r the encoder run recorded in %s: the reranker's "
                "candidates come from another BM25 than the encoder was validated with",
                name.replace("_", "-"),
                option,
                recorded[name],
                source,
            )
        setattr(args, name, value)
    where = f"--bm25-* options or {source}" if recorded else "--bm25-* options"
    check_bm25_text(args.bm25_analyzer, args.bm25_language, where, args.bm25_stopwords)


def _bm25_value(name: str, option: Any) -> Any:
    if name == "bm25_language":
        return bm25_language_value(option)
    if name == "bm25_stopwords":
        return bm25_stopwords_value(option)
    return option


def bm25_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``bm25_analyzer`` / ``bm25_language`` arguments of the miner, the engines and the
    evaluators, from the options (settled by :func:`resolve_bm25_options`), and
    ``bm25_stopwords`` when it is not the language's list."""
    language = bm25_language_value(args.bm25_language)  # "none": no stemming
    options: dict[str, Any] = {
        "bm25_analyzer": str(args.bm25_analyzer),
        "bm25_language": None if language is None else str(language),
    }
    stopwords = getattr(args, "bm25_stopwords", "language")  # a namespace made before it
    stopwords = bm25_stopwords_value(str(stopwords) if isinstance(stopwords, str) else stopwords)
    if stopwords != "language":  # the language's list: the receivers' default
        options["bm25_stopwords"] = stopwords
    return options


def report(
    result: FinetuneResult,
    output: str | Path,
    extra: dict[str, Any],
    test: dict[str, dict[str, float]] | None = None,
) -> Path:
    """Print the validation table, the decision and the test figures; write ``<out>/results.json``."""
    print("validation (held-out training queries):")
    print(result.format_table())
    if test:
        print(f"\ntest split (reported only): {format_test(test)}")
    data = {**result.to_dict(), "test": test or {}, **extra}
    path = Path(output) / "results.json"
    from llama_index_ragtune._atomic import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, default=str))
    print(f"results: {path}\nmodel to use: {Path(output) / 'final'}")
    return path


def format_test(test: dict[str, dict[str, float]]) -> str:
    before, after = test.get("before", {}), test.get("after", {})
    keys = [k for k in after if k.endswith("ndcg@10")]
    return ", ".join(f"{k} {before.get(k, float('nan')):.4f} -> {after[k]:.4f}" for k in keys)


def namespace_dict(args: argparse.Namespace) -> dict[str, Any]:
    """The command's arguments, JSON-ready (for results.json)."""
    return {
        k: v
        for k, v in vars(args).items()
        if not k.startswith("_") and k not in {"group", "command"}
    }
