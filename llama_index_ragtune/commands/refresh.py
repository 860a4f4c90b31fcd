"""``ragtune refresh``: retrain a bundle from user feedback; promote only a measured win.

Reads the feedback log (``FeedbackStore`` SQLite file), retrains the encoder, the
fusion and the reranker (when the bundle serves one, or with ``--with-reranker``;
the decoder only with ``--with-decoder``) starting from the bundle's own models,
measures the bundle in use and the refreshed one on the same held-out questions,
and writes the next bundle version only when the refreshed one is better. Either
way the decision is printed and recorded (``OUT/refresh.json``,
``BUNDLE/bundles/history.jsonl``); ``ragtune rollback`` serves an earlier version
again.

Example::

    ragtune refresh --bundle runs/shop --feedback feedback.sqlite --out runs/refresh-1
    ragtune refresh --bundle runs/shop --feedback feedback.sqlite --docs docs/ --out runs/r2 \\
        --with-decoder --time-budget 20
"""

from __future__ import annotations

import argparse
import sys

from llama_index_ragtune.commands.options import (
    MAX_MINUTES,
    CommaList,
    UsageError,
    bm25_stopwords_value,
    check_device_option,
    existing_dir,
    existing_file,
)
from llama_index_ragtune.commands.tune import add_bm25_stopwords_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bundle",
        required=True,
        type=existing_dir,
        metavar="DIR",
        help="the tuning run's --out folder (or its bundles/ folder); CURRENT is the champion",
    )
    parser.add_argument(
        "--feedback",
        required=True,
        type=existing_file,
        metavar="DB",
        help="the FeedbackStore SQLite file the app records answers, ratings and clicks in",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="the refresh's folder: refresh.json (the decision) and work/ (the challenger); "
        "new, empty or an earlier refresh's (a folder holding other files is refused)",
    )
    parser.add_argument(
        "--docs",
        type=existing_dir,
        metavar="DIR",
        help="re-parse these documents (default: the bundle's own nodes)",
    )
    parser.add_argument(
        "--metadata", type=existing_file, metavar="FILE", help="metadata JSON for --docs"
    )
    parser.add_argument(
        "--with-reranker",
        action="store_true",
        help="retrain the reranker even when the bundle serves none",
    )
    parser.add_argument(
        "--with-decoder", action="store_true", help="retrain the decoder too (grounded SFT)"
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="MIN",
        help="minutes of training in all (default: the bundle's own budgets)",
    )
    parser.add_argument(
        "--keys",
        action=CommaList,
        default="store",
        metavar="KEY,...",
        help="feedback metadata keys that are filters of the questions (default: store; "
        "'none': no filter)",
    )
    parser.add_argument(
        "--eval-fraction",
        type=float,
        default=0.2,
        metavar="F",
        help="share of feedback questions held out to judge champion vs challenger (default 0.2)",
    )
    parser.add_argument(
        "--margin",
        type=float,
        metavar="X",
        help="nDCG@10 the refreshed bundle must gain to be promoted (default 0.005)",
    )
    parser.add_argument(
        "--no-earlier-data",
        action="store_true",
        help="learn from the feedback only, not also from the bundle's labelled questions",
    )
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    add_bm25_stopwords_option(
        parser,
        help="the bundle's BM25 stopwords are kept (the challenger is measured on the retriever "
        "the champion serves): a value other than the bundle's is refused; run `ragtune tune "
        "--bm25-stopwords LIST` to change them",
    )


def check_arguments(args: argparse.Namespace) -> None:
    """Every option value checked before the bundle or the feedback is loaded: ``UsageError``
    (exit status 2) naming the option and the values it takes (were exit status 1).

    Example::

        check_arguments(args)   # --margin 2: UsageError "argument --margin: must be from 0 to 1"
    """
    from llama_index_ragtune.pipeline.runner import check_outside_documents

    if args.metadata and not args.docs:
        raise UsageError("argument --metadata: it describes --docs; pass --docs too")
    try:  # a refresh's folders inside the documents would be read as documents
        if args.docs:
            check_outside_documents(args.docs, {"--out": args.out, "--bundle": args.bundle})
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    check_device_option(args.device)  # a device this machine lacks fails before any work
    if not 0.0 < args.eval_fraction < 1.0:
        raise UsageError(
            f"argument --eval-fraction: must be between 0 and 1, got {args.eval_fraction}"
        )
    # NaN fails every comparison; inf or a huge number passed ">= 0" / "> 0" and failed only
    # after the bundle was loaded (a traceback) or after training (a gain nothing can reach)
    if args.margin is not None and not 0 <= args.margin <= 1:
        raise UsageError(
            f"argument --margin: must be from 0 to 1 (an nDCG@10 gain; 1 promotes nothing), "
            f"got {args.margin}"
        )
    if args.time_budget is not None and not 0 < args.time_budget <= MAX_MINUTES:
        raise UsageError(
            f"argument --time-budget: must be > 0 minutes and at most {MAX_MINUTES}, got "
            f"{args.time_budget}"
        )
    if not filter_keys(args.keys) and args.keys.strip().lower() != "none":
        raise UsageError(  # `--keys "$KEYS"` unset: every store's questions were merged
            f"argument --keys: no key in {args.keys!r}: give metadata keys separated by commas "
            "(default: store), or 'none' for no filter"
        )
    _check_stopwords_kept(args)


def filter_keys(text: str) -> tuple[str, ...]:
    """The metadata keys a ``--keys`` value names (``'none'``: no key).

    Example::

        filter_keys("store, lang"), filter_keys("none")   # (('store', 'lang'), ())
    """
    if text.strip().lower() == "none":
        return ()
    return tuple(k.strip() for k in text.split(",") if k.strip())


def _check_stopwords_kept(args: argparse.Namespace) -> None:
    """``UsageError`` when ``--bm25-stopwords`` differs from the stopwords the bundle serves
    (a refresh keeps them: the value would not be used)."""
    from llama_index_ragtune.pipeline.bundle_bm25 import shown_stopwords
    from llama_index_ragtune.pipeline.bundle_current import resolve_bundle_dir
    from llama_index_ragtune.pipeline.bundle_manifest import read_manifest
    from llama_index_ragtune.pipeline.bundle_names import BundleError

    if getattr(args, "bm25_stopwords", None) is None:
        return
    try:
        folder = resolve_bundle_dir(args.bundle)
        config = read_manifest(folder).get("config")
        recorded = config.get("bm25_stopwords", "language") if isinstance(config, dict) else None
        served = bm25_stopwords_value(recorded)
    except (BundleError, OSError, ValueError):
        return  # the refresh itself names what is wrong with the bundle
    if bm25_stopwords_value(args.bm25_stopwords) != served:
        raise UsageError(
            f"argument --bm25-stopwords: {folder.name} serves the BM25 stopwords "
            f"{shown_stopwords(served)!r}, and a refresh keeps them (the challenger is measured "
            "on the retriever the champion serves): leave the option out, or run `ragtune tune "
            f"--bm25-stopwords {args.bm25_stopwords}` for a bundle with others"
        )


def run(args: argparse.Namespace) -> int:
    from llama_index_ragtune.feedback import FeedbackStoreError
    from llama_index_ragtune.pipeline.bundle_folders import BundleError
    from llama_index_ragtune.pipeline.refresh import refresh_bundle
    from llama_index_ragtune.pipeline.refresh_data import RefreshError
    from llama_index_ragtune.pipeline.state import PipelineStateError

    check_arguments(args)  # as the command line did (a caller of run() may skip it)
    try:
        result = refresh_bundle(
            args.bundle,
            args.feedback,
            args.out,
            docs=args.docs,
            metadata=args.metadata,
            device=args.device,
            time_budget=args.time_budget,
            reranker=True if args.with_reranker else None,
            decoder=args.with_decoder,
            keys=filter_keys(args.keys),
            eval_fraction=args.eval_fraction,
            include_earlier=not args.no_earlier_data,
            margin=args.margin,
            echo=lambda line: print(line, flush=True),
        )
    except (BundleError, PipelineStateError, FeedbackStoreError, RefreshError) as exc:
        raise UsageError(str(exc)) from None
    print()
    print(result.summary())
    sys.stdout.flush()
    return 0
