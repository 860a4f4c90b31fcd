"""``ragtune train reranker``: fine-tune the cross-encoder reranker; keep it only where it helps.

Validation queries are carved off the training queries. Their first-stage
candidates come from the hybrid retriever (dense with ``--encoder`` + BM25, top
``--rerank-depth``): "before" is the hybrid order, "after" the tuned reranker
blended with the hybrid score at the weight that validates best. The reranker is
promoted (``<out>/final``) only when it beats the hybrid alone by more than
``--promotion-margin``; otherwise the command says to leave it out, and the
tuned model waits in ``<out>/challenger``. A BEIR ``--test-split`` is reported.
The fusion, BM25 analyzer and BM25 language default to what the ``ragtune train encoder``
run of ``--encoder`` recorded (``<encoder>/../fusion.json`` and ``results.json``), so the
candidates come from the hybrid the encoder was validated in.

Example::

    ragtune train reranker --beir ../shared/data/scifact --encoder runs/encoder/final --out runs/reranker
    # offline, from the bundled MiniLM: distil the fine-tuned bi-encoder
    ragtune train reranker --beir DIR --encoder runs/encoder/final --loss margin_mse \\
        --teacher-encoder runs/encoder/final --out runs/reranker
    ragtune train reranker --beir DIR --loss margin_mse --teacher cross-encoder/ms-marco-MiniLM-L6-v2 --out runs/rr
"""

from __future__ import annotations

import argparse
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
        "--model",
        help="starting cross-encoder, or a bi-encoder to put a new one-logit head on "
        "(default: bundled all-MiniLM-L6-v2)",
    )
    group.add_argument(
        "--encoder",
        help="bi-encoder for the hybrid candidates and dense negatives "
        "(e.g. runs/encoder/final; default: bundled MiniLM)",
    )
    group.add_argument(
        "--fusion",
        default=None,
        choices=tuple(FUSION_PRESETS),
        help="hybrid fusion of the candidates: rrf, minmax, zscore (default: the library's, or "
        "<encoder>/../fusion.json written by `ragtune train encoder`)",
    )
    group.add_argument(
        "--rerank-depth",
        type=bounded(int, 1),
        default=50,
        help="candidates re-scored per query (default: 50)",
    )
    group.add_argument(
        "--loss",
        default=None,
        choices=("bce", "lambda", "listnet", "margin_mse"),
        help="MarginMSE distillation (default with a teacher), BinaryCrossEntropy (default "
        "without), LambdaLoss / ListNet (listwise)",
    )
    teacher = group.add_mutually_exclusive_group()
    teacher.add_argument(
        "--teacher",
        help="cross-encoder (folder or hub id) whose score margins --loss margin_mse distils",
    )
    teacher.add_argument(
        "--teacher-encoder",
        help="bi-encoder (folder or hub id) whose scaled cosine margins --loss margin_mse distils "
        "(e.g. the fine-tuned runs/encoder/final)",
    )
    group.add_argument(
        "--max-negatives-per-query",
        type=bounded(int, 1),
        default=3,
        help="negatives per query in the training rows (default: 3)",
    )
    group.add_argument(
        "--max-length",
        type=bounded(int, 1),
        help="token limit of (query, passage) pairs (default: 256 for the bundled start)",
    )


def _fusion(args: argparse.Namespace) -> object:
    """``--fusion``, else the fusion the ``ragtune train encoder`` run of ``--encoder`` wrote
    to ``<encoder>/../fusion.json``, else ``None`` (the library's); ``UsageError`` naming that
    file when it cannot be used (it was a traceback once the data was loaded and mined)."""
    from pathlib import Path

    from llama_index_ragtune.commands.options import UsageError, shown_path

    if args.fusion:
        return args.fusion
    if not args.encoder:
        return None
    saved = Path(args.encoder).parent / "fusion.json"
    if not saved.exists() and not saved.is_symlink():
        return None
    problem = _fusion_file_problem(saved)
    if isinstance(problem, str):
        raise UsageError(
            f"{shown_path(saved)} (the fusion of the --encoder run) {problem}: pass --fusion "
            f"{'|'.join(FUSION_PRESETS)}, or run `ragtune train encoder` again"
        )
    return problem


def _fusion_file_problem(path: Any) -> object:
    """The fusion setting read from ``path``, or a string saying why it cannot be used."""
    import json
    import math

    from llama_index_ragtune._atomic_reads import path_kind

    kind = path_kind(str(path))
    if kind != "a file":
        return f"is {kind}, not a regular file"
    try:
        if path.stat().st_size > 1 << 20:
            return "is over 1 MiB, not a fusion setting"
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return f"is unreadable ({' '.join(str(exc).split())})"
    if not isinstance(data, dict):
        return f"holds {type(data).__name__}, not a fusion setting (an object)"
    mode = data.get("fusion_mode", data.get("mode"))
    if mode not in FUSION_PRESETS:
        return f"names the fusion mode {mode!r}, not one of {', '.join(FUSION_PRESETS)}"
    limits = {"alpha": (0.0, 1.0), "rrf_k": (0.0, None)}
    for key, value in data.items():
        if key in limits or key.endswith("_top_k"):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            low, high = limits.get(key, (1, None))
            if (
                not number
                or not math.isfinite(value)
                or value < low
                or (high is not None and value > high)
                or (key.endswith("_top_k") and (not float(value).is_integer() or value > 10**6))
            ):
                return f"has {key}={value!r}, out of range"
    return data


def _check_max_length(args: argparse.Namespace) -> None:
    """``UsageError`` when ``--max-length`` is above the tokens the starting model reads (its
    ``config.json``), before any data is loaded (it crashed at the first long passage)."""
    import json
    from pathlib import Path

    from llama_index_ragtune.commands.options import UsageError
    from llama_index_ragtune.finetuning.reranker_training import token_limit
    from llama_index_ragtune.models import resolve_model

    if args.max_length is None:
        return
    config = Path(resolve_model(args.model, kind="encoder")) / "config.json"
    try:
        limit = token_limit(json.loads(config.read_text(encoding="utf-8")))
    except (OSError, ValueError, AttributeError):  # a hub id, or a config the loader names
        return
    if limit is not None and args.max_length > limit:
        raise UsageError(
            f"argument --max-length: {args.max_length} is more tokens than the model reads "
            f"({limit} positions in {config}): give at most {limit}"
        )


def check_arguments(args: argparse.Namespace) -> None:
    """Options that must agree with each other (and the ``--encoder`` run's fusion file),
    checked before any data or model is loaded; ``UsageError`` naming them.

    Example::

        check_arguments(args)   # --loss margin_mse without a teacher: UsageError
    """
    from llama_index_ragtune.commands.options import UsageError, check_out_apart

    if args.loss == "margin_mse" and not (args.teacher or args.teacher_encoder):
        raise UsageError(
            "argument --loss: margin_mse needs --teacher (a cross-encoder) or --teacher-encoder "
            "(a bi-encoder)"
        )
    check_mining_options(args)
    check_device_option(args.device)  # a typo or a device not here: exit status 2
    read = ("final", "challenger")  # models only read: the run's final/ would replace them
    check_out_apart(
        args.out,
        {
            "--model": (args.model, ("challenger",)),
            "--encoder": (args.encoder, read),
            "--teacher": (args.teacher, read),
            "--teacher-encoder": (args.teacher_encoder, read),
        },
    )
    _fusion(args)


def _encoder_run_bm25(args: argparse.Namespace) -> tuple[dict[str, object], str]:
    """The BM25 analyzer and language the ``ragtune train encoder`` run of ``--encoder``
    recorded in ``<encoder>/../results.json`` (``{}``: no such run), and that file's path."""
    import json
    from pathlib import Path

    from llama_index_ragtune.commands.options import OptionDefault, UsageError

    if not args.encoder:
        return {}, ""
    path = Path(args.encoder).parent / "results.json"
    if not path.is_file():
        return {}, ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        record = data.get("info") or {}
        if record.get("bm25_analyzer") is None:  # validated with a user's evaluator
            record = data.get("arguments") or {}
        names = ("bm25_analyzer", "bm25_language", "bm25_stopwords")
        recorded = {name: record[name] for name in names if name in record}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        # both given: nothing to take from the record (the stopwords follow the language)
        if not any(isinstance(v, OptionDefault) for v in (args.bm25_analyzer, args.bm25_language)):
            return {}, ""
        raise UsageError(
            f"{path} (the encoder run's results) is unreadable ({exc}): pass --bm25-analyzer and "
            "--bm25-language (and --bm25-stopwords), or run `ragtune train encoder` again"
        ) from None
    if recorded.get("bm25_analyzer") is None:  # a run from before the BM25 settings
        recorded.pop("bm25_analyzer", None)
    return recorded, str(path)


def settle_bm25_options(args: argparse.Namespace) -> None:
    """``--bm25-analyzer`` / ``--bm25-language`` / ``--bm25-stopwords`` as given, else as the
    ``ragtune train encoder`` run of ``--encoder`` recorded them (a given one that differs is
    warned about), else the defaults; ``UsageError`` naming the file for a record that cannot
    be used.

    Example::

        settle_bm25_options(args)   # --encoder runs/enc/final: runs/enc/results.json's settings
    """
    from llama_index_ragtune.commands.options import UsageError

    try:
        resolve_bm25_options(args, *_encoder_run_bm25(args))
    except ValueError as exc:
        raise UsageError(
            f"{exc}; pass --bm25-analyzer and --bm25-language (and --bm25-stopwords)"
        ) from None


def run(args: argparse.Namespace) -> int:
    from sentence_transformers import SentenceTransformer

    from llama_index_ragtune.finetuning.candidates import hybrid_candidates_with_scores
    from llama_index_ragtune.finetuning.hybrid_eval import fusion_params
    from llama_index_ragtune.finetuning.ranking_eval import CandidateRerankingEvaluator
    from llama_index_ragtune.finetuning.reranker import DEFAULT_BUDGET, RerankerFinetuneEngine
    from llama_index_ragtune.models import load_model, resolve_model

    check_arguments(args)
    fusion = _fusion(args)
    check_device_option(args.device)  # not after the data and the models are loaded
    _check_max_length(args)
    settle_bm25_options(args)
    data = load_training_data(args)
    encoder = load_model(
        SentenceTransformer, resolve_model(args.encoder, kind="encoder"), device=args.device
    )
    train, mining = mine_negatives(args, data.train, embed_model=encoder)
    teacher = args.teacher
    if args.teacher_encoder:
        teacher = (
            encoder
            if args.teacher_encoder == args.encoder
            else load_model(
                SentenceTransformer,
                resolve_model(args.teacher_encoder, kind="encoder"),
                device=args.device,
            )
        )
    optional = {"loss": args.loss} if args.loss else {}
    engine = RerankerFinetuneEngine(
        train,
        model=args.model,
        val_dataset=data.val,
        output_dir=args.out,
        args=RerankerFinetuneEngine.default_args(args.out, **training_overrides(args)),
        budget=training_budget(args, DEFAULT_BUDGET),
        teacher=teacher,
        max_negatives_per_query=args.max_negatives_per_query,
        rerank_depth=args.rerank_depth,
        encoder=args.encoder,
        fusion=fusion,
        **bm25_options(args),
        max_length=args.max_length,
        device=args.device,
        **optional,
        **engine_options(args),
    )
    result = engine.finetune(resume_from_checkpoint=True if args.resume else None)
    test = None
    if data.test is not None:
        candidates, scores = hybrid_candidates_with_scores(
            data.test.queries,
            data.test.corpus,
            top_k=max(100, args.rerank_depth),
            embed_model=args.encoder,
            bm25_kwargs=engine.bm25_text.retriever_kwargs(),
            **fusion_params(fusion),
        )
        weight = engine.retrieval_weight or 0.0
        evaluator = CandidateRerankingEvaluator(
            data.test.queries,
            data.test.corpus,
            data.test.graded_qrels(),
            candidates,
            depth=args.rerank_depth,
            candidate_scores=scores if weight > 0 else None,
            retrieval_weight=weight,
        )
        before = evaluator.baseline()
        # the model in memory is the promoted one (the starting weights are restored otherwise)
        after = evaluator.evaluate(engine.model) if result.promoted else dict(before)
        test = {"before": before, "after": after, "queries": len(evaluator.query_ids)}
    if not result.promoted:
        print("the tuned reranker does not beat the hybrid retriever on validation: leave it out")
    report(
        result,
        args.out,
        {
            "mining": mining,
            "data": data.info,
            "retrieval_weight": engine.retrieval_weight,
            "arguments": namespace_dict(args),
        },
        test=test,
    )
    return 0
