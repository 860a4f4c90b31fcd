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
    check_device_option,
    existing_dir,
    existing_file,
)


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
        help="feedback metadata keys that are filters of the questions (default: store)",
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


def run(args: argparse.Namespace) -> int:
    from llama_index_ragtune.commands.options import UsageError
    from llama_index_ragtune.feedback import FeedbackStoreError
    from llama_index_ragtune.pipeline.bundle_folders import BundleError
    from llama_index_ragtune.pipeline.refresh import refresh_bundle
    from llama_index_ragtune.pipeline.refresh_data import RefreshError
    from llama_index_ragtune.pipeline.state import PipelineStateError

    if args.metadata and not args.docs:
        raise UsageError("argument --metadata: it describes --docs; pass --docs too")
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
            keys=tuple(k.strip() for k in args.keys.split(",") if k.strip()),
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
