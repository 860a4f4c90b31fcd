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

REPORT_SUFFIXES = (".html", ".htm", ".md", ".markdown")
"""Suffixes of the report's files: an ``--out`` ending so is a file name, not a folder."""


def bundle_version_holding(folder: Path) -> Path | None:
    """The bundle version folder (``bundles/vN``, holding a ``ragtune-bundle`` manifest)
    that is ``folder`` or holds it, else None.

    Example::

        bundle_version_holding(Path("runs/shop/bundles/v1/report"))   # .../bundles/v1
    """
    from llama_index_ragtune.pipeline.bundle_manifest import FORMAT, MANIFEST

    resolved = folder.expanduser().resolve()
    for candidate in (resolved, *resolved.parents):
        manifest = candidate / MANIFEST
        if manifest.is_file():
            try:
                with manifest.open("rb") as handle:  # "format" is the manifest's first key
                    head = handle.read(4096)
            except OSError:
                continue
            if f'"{FORMAT}"'.encode() in head:
                return candidate
    return None


def report_file_named_like(source: Path, out: Path) -> Path | None:
    """The report file in ``out`` that is ``source`` (after links), else None.

    Example::

        report_file_named_like(Path("runs/report.md"), Path("runs"))   # .../runs/report.md
    """
    from llama_index_ragtune.evaluation.dashboard import REPORT_FILE_NAMES

    target = source.expanduser().resolve()
    folder = out.expanduser().resolve()  # the file names themselves are replaced, not followed
    return next((folder / n for n in REPORT_FILE_NAMES if folder / n == target), None)


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
    version = bundle_version_holding(out)
    if version is not None:  # load_bundle refuses a version with files added or changed
        given = "--out" if args.out else "the JSON's folder (the default --out)"
        print(
            f"ragtune report: error: {given} {out} is in bundle version {version}, whose "
            "manifest.json lists every file: a report written there makes load_bundle refuse "
            f"the bundle as edited; pass --out outside it, e.g. --out {version.parent.parent}"
            f"/report-{version.name} (the bundle's own report is in {version / 'report'})",
            file=sys.stderr,
        )
        return 2
    if out.suffix.lower() in REPORT_SUFFIXES and not out.is_dir():
        # "--out runs/report.html" made a folder named report.html holding report.html
        print(
            f"ragtune report: error: argument --out: {out} names a file, but --out is the "
            f"folder report.html and report.md are written into; pass {out.parent}",
            file=sys.stderr,
        )
        return 2
    overwritten = report_file_named_like(source, out)
    if overwritten is not None:  # the report would replace the evaluation it was made from
        print(
            f"ragtune report: error: EVAL_JSON {source} is the {overwritten.name} the report "
            f"writes into {out}: writing it would replace the evaluation; rename the JSON "
            "(e.g. evaluation.json) or pass another --out",
            file=sys.stderr,
        )
        return 2
    try:
        results = EvaluationResults.load(source)
    except EvaluationFileError as exc:
        print(f"ragtune report: error: {exc}", file=sys.stderr)
        return 2
    try:
        paths = write_report(results, out, source=source.name)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        where = exc.filename or out  # the file at fault, when the error names it
        print(
            f"ragtune report: error: cannot write the report to {where}: {reason}", file=sys.stderr
        )
        return 1
    print(paths.html)
    print(paths.markdown)
    return 0
