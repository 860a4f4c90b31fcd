"""``ragtune train encoder``: mine hard negatives, fine-tune the bi-encoder, keep it only if better.

Validation queries are carved off the training queries (``--val-fraction``):
they choose the hybrid fusion setting for the starting and the tuned encoder,
pick the best checkpoint, and decide promotion. ``<out>/final`` is the model to
use: the tuned one when it beat the starting one on validation by more than
``--promotion-margin``, else the starting one (the tuned one is kept in
``<out>/challenger``; ``--force-promotion`` opts into it). The fusion setting
that goes with it is written to ``<out>/fusion.json``; the BM25 analyzer and language
(``--bm25-analyzer``, ``--bm25-language``) are recorded in ``<out>/results.json``, where
``ragtune train reranker --encoder <out>/final`` takes them from. A BEIR ``--test-split``
is reported before and after, never used for a decision. Training stays within
``--time-budget`` minutes (steps are planned before training starts).

Example::

    ragtune train encoder --beir ../shared/data/scifact --out runs/encoder
    ragtune train encoder --dataset qa_pairs.json --negatives bm25 --time-budget 5 --out runs/enc
    ragtune train encoder --beir ../shared/data/scifact --out runs/encoder --resume
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from llama_index_ragtune.commands.options import bounded, check_device_option
from llama_index_ragtune.commands.training_data import (
    add_data_arguments,
    add_negative_arguments,
    add_training_arguments,
    bm25_options,
    check_mining_options,
    engine_options,
    load_training_data,
    mine_negatives,
    namespace_dict,
    report,
    resolve_bm25_options,
    training_budget,
    training_overrides,
)
from llama_index_ragtune.retrievers.defaults import FUSION_PRESETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    add_negative_arguments(parser, num_negatives=3)
    add_training_arguments(parser)
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", help="starting bi-encoder: folder or hub id (default: bundled all-MiniLM-L6-v2)"
    )
    group.add_argument(
        "--loss",
        default=None,
        choices=("mnrl", "cached_mnrl", "gist", "cached_gist"),
        help="MultipleNegativesRankingLoss, its cached variant, or GIST (the starting model "
        "decides which in-batch candidates are negatives) (default: the engine's)",
    )
    group.add_argument(
        "--max-negatives-per-query",
        type=bounded(int, 1),
        default=1,
        help="hard-negative columns per training row; 0 = in-batch negatives only (default: 1)",
    )
    group.add_argument(
        "--matryoshka-dims",
        type=matryoshka_dims,
        help="comma-separated dimensions for MatryoshkaLoss, e.g. 384,256,128",
    )
    group.add_argument(
        "--fusion",
        default="auto",
        choices=("auto", *FUSION_PRESETS),
        help="hybrid fusion validated against: 'auto' (chosen on the validation queries), "
        "rrf, minmax or zscore (default: auto)",
    )
    group.add_argument("--query-prompt", help="text prepended to queries (e.g. 'query: ')")
    group.add_argument("--passage-prompt", help="text prepended to passages (e.g. 'passage: ')")


def matryoshka_dims(text: str) -> str:
    """``argparse`` type of ``--matryoshka-dims``: distinct whole numbers >= 1 separated by
    commas (``abc`` or ``0`` stopped the command with a traceback after the data was loaded
    and the negatives mined). Returned as given; :func:`dims_of` reads it.

    Example::

        parser.add_argument("--matryoshka-dims", type=matryoshka_dims)   # "384,256,128"
    """
    parts = [p.strip() for p in text.split(",")]
    if not any(parts):
        raise argparse.ArgumentTypeError("expected dimensions separated by commas, e.g. 384,256")
    dims = []
    for part in parts:
        if not part.isascii() or not part.isdigit() or int(part) < 1 or len(part) > 9:
            raise argparse.ArgumentTypeError(
                f"{part!r} is no dimension: give whole numbers >= 1 separated by commas, "
                "e.g. 384,256,128"
            )
        dims.append(int(part))
    twice = sorted({d for d in dims if dims.count(d) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{twice} given twice: give each dimension once")
    return text


def dims_of(text: str | None) -> list[int] | None:
    """The dimensions of a ``--matryoshka-dims`` value (``None``: not given)."""
    return [int(d) for d in text.split(",")] if text else None


def check_arguments(args: argparse.Namespace) -> None:
    """Options that must agree with each other, checked before any data or model is loaded;
    ``UsageError`` naming them.

    Example::

        check_arguments(args)   # --range-min 40 --range-max 30: UsageError
    """
    from llama_index_ragtune.commands.options import check_out_apart

    check_mining_options(args)
    check_device_option(args.device)  # a typo or a device not here: exit status 2
    check_out_apart(args.out, {"--model": (args.model, ("challenger",))})


def _check_dims_fit(dims: list[int] | None, model: Any) -> None:
    """``UsageError`` when ``--matryoshka-dims`` exceed the model's embedding size (found
    once the model is loaded, before the negatives are mined)."""
    from llama_index_ragtune.commands.options import UsageError

    size = model.get_embedding_dimension() if dims else None
    over = [d for d in dims or () if size and d > size]
    if over:
        raise UsageError(
            f"argument --matryoshka-dims: {over} exceed the model's embedding size {size}: give "
            f"dimensions up to {size}"
        )


def run(args: argparse.Namespace) -> int:
    from sentence_transformers import SentenceTransformer

    from llama_index_ragtune._atomic import atomic_write_text
    from llama_index_ragtune.finetuning.encoder import DEFAULT_BUDGET, EncoderFinetuneEngine
    from llama_index_ragtune.finetuning.hybrid_eval import HybridRetrievalEvaluator
    from llama_index_ragtune.models import load_model, resolve_model

    check_arguments(args)
    check_device_option(args.device)  # not after the data and the model are loaded
    resolve_bm25_options(args)  # recorded in results.json, where train reranker reads them
    data = load_training_data(args)
    model = load_model(
        SentenceTransformer, resolve_model(args.model, kind="encoder"), device=args.device
    )
    dims = dims_of(args.matryoshka_dims)
    _check_dims_fit(dims, model)
    test_eval, test_before_rankings, shared = None, None, None
    if data.test is not None:
        test_eval = HybridRetrievalEvaluator(
            data.test.queries,
            data.test.corpus,
            data.test.graded_qrels(),
            **bm25_options(args),
            query_prompt=args.query_prompt,
            passage_prompt=args.passage_prompt,
            cache_dir=args.embedding_cache,
        )
        test_before = {k: v for k, v in test_eval.evaluate(model).items() if "@" in k}
        test_before_rankings = dict(test_eval.last_scored_rankings)
        if list(data.train.corpus) == test_eval.corpus_ids:  # BEIR splits share one corpus
            shared = test_eval.corpus_embeddings.numpy()
    train, mining = mine_negatives(args, data.train, embed_model=model, corpus_embeddings=shared)
    optional = {"loss": args.loss} if args.loss else {}
    engine = EncoderFinetuneEngine(
        train,
        model=model,
        val_dataset=data.val,
        output_dir=args.out,
        args=EncoderFinetuneEngine.default_args(args.out, **training_overrides(args)),
        budget=training_budget(args, DEFAULT_BUDGET),
        min_grade=args.min_grade,
        matryoshka_dims=dims,
        query_prompt=args.query_prompt,
        passage_prompt=args.passage_prompt,
        max_negatives_per_query=args.max_negatives_per_query,
        fusion=args.fusion,
        **bm25_options(args),
        cache_dir=args.embedding_cache,
        device=args.device,
        **optional,
        **engine_options(args),
    )
    result = engine.finetune(resume_from_checkpoint=True if args.resume else None)
    fusion = result.info.get("fusion")
    if fusion:
        atomic_write_text(engine.output_dir / "fusion.json", json.dumps(fusion, indent=2) + "\n")
    test = None
    if test_eval is not None:
        # the model in memory is the promoted one (the starting weights are restored otherwise)
        test_after = {k: v for k, v in test_eval.evaluate(engine.model).items() if "@" in k}
        start_fusion = result.info.get("fusion_start") or fusion
        if start_fusion:
            test_before.update(test_eval.hybrid_metrics(test_before_rankings, start_fusion))
            test_after.update(test_eval.hybrid_metrics(test_eval.last_scored_rankings, fusion))
        test = {"before": test_before, "after": test_after, "queries": len(test_eval.query_ids)}
    report(
        result,
        args.out,
        {"mining": mining, "data": data.info, "arguments": namespace_dict(args)},
        test=test,
    )
    return 0
