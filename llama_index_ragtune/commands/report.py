"""``ragtune report``: an evaluation JSON -> ``report.html`` (one self-contained page) + ``report.md``.

The JSON is the one a tuning run writes (format ``ragtune-evaluation``, see
:mod:`llama_index_ragtune.evaluation.results`). Both files are written atomically
and their paths printed, one a line. A missing or invalid JSON prints one line
naming the file and the bad field, and exits with status 2.

Example::

    ragtune report runs/bundle/evaluation.json --out runs/bundle/report
    ragtune report runs/bundle/evaluation.json        # writes beside the JSON
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "evaluation",
        metavar="EVAL_JSON",
        help="evaluation JSON written by the tuning pipeline (format ragtune-evaluation)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="folder for report.html and report.md, created if needed (default: the JSON's folder)",
    )


def run(args: argparse.Namespace) -> int:
    from llama_index_ragtune.evaluation.dashboard import write_report
    from llama_index_ragtune.evaluation.results import EvaluationFileError, EvaluationResults

    source = Path(args.evaluation)
    out = Path(args.out) if args.out else source.parent
    try:
        results = EvaluationResults.load(source)
    except EvaluationFileError as exc:
        print(f"ragtune report: error: {exc}", file=sys.stderr)
        return 2
    try:
        paths = write_report(results, out, source=source.name)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"ragtune report: error: cannot write the report to {out}: {reason}", file=sys.stderr)
        return 1
    print(paths.html)
    print(paths.markdown)
    return 0
