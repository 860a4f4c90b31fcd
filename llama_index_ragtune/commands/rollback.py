"""``ragtune rollback``: serve an earlier bundle version again (atomically).

Points ``bundles/CURRENT`` at the version before the one served now, or at
``--to VERSION``, after checking every file of that version against its
manifest. Versions are never deleted, so a rollback can itself be undone
(``--to`` the newer version). The switch is recorded in ``bundles/history.jsonl``.

Example::

    ragtune rollback --bundle runs/shop              # v3 -> v2
    ragtune rollback --bundle runs/shop --to v3      # and forward again

``--to`` the version served already changes nothing and writes nothing (it works on a
read-only copy too).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llama_index_ragtune.commands.options import existing_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bundle",
        required=True,
        type=existing_dir,
        metavar="DIR",
        help="the tuning run's --out folder (or its bundles/ folder)",
    )
    parser.add_argument(
        "--to",
        metavar="VERSION",
        help="the version to serve, e.g. v1 (default: the version the current one was refreshed "
        "from, else the newest earlier one)",
    )


def check_arguments(args: argparse.Namespace) -> None:
    """``--to`` spelled as a version (``v1``, ``v2``, ...): else a ``UsageError`` (exit status
    2) naming it, before the bundles folder is read (``--to ""``, an unset shell variable, or
    ``--to v02`` were found by the switch: exit status 1).

    Example::

        check_arguments(args)   # --to V2: UsageError "argument --to: ... written v2"
    """
    from llama_index_ragtune.commands.options import UsageError
    from llama_index_ragtune.pipeline.bundle_names import VERSION_NAME, canonical_version

    if args.to is None or VERSION_NAME.match(args.to):
        return
    meant = canonical_version(args.to)
    spelled = f"; version {meant[1:]} is written {meant}" if meant else ""
    raise UsageError(
        f"argument --to: expected a bundle version (v1, v2, ...; `ls BUNDLE/bundles` lists "
        f"them), got {args.to!r}{spelled}"
    )


def run(args: argparse.Namespace) -> int:
    from llama_index_ragtune.commands.options import UsageError
    from llama_index_ragtune.pipeline.bundle_folders import BundleError, bundle_versions
    from llama_index_ragtune.pipeline.rollback import switch_version

    # CURRENT is read by the switch itself, under the writer lock: read here beforehand, a
    # damaged CURRENT (which --to repairs) stopped the command, and a switch made by
    # another process in between was reported as this one's starting point.
    version = _version_folder(Path(args.bundle))
    if version is not None:  # was "no bundle in bundles/v2/bundles: nothing to roll back"
        raise UsageError(
            f"--bundle {args.bundle} is the bundle version {version.name} itself; pass the run "
            f"folder {version.parent.parent} (or its bundles folder {version.parent}), and "
            f"--to {version.name} to serve this version"
        )
    try:
        before, served = switch_version(args.bundle, to=args.to)
    except BundleError as exc:
        raise UsageError(str(exc)) from None
    versions = ", ".join(bundle_versions(args.bundle))
    if before == served:
        print(f"CURRENT: {served} already; nothing changed (versions: {versions})")
        return 0
    was = before or "(none: CURRENT was missing or damaged, now rewritten)"
    print(f"CURRENT: {was} -> {served} (versions: {versions})")
    return 0


def _version_folder(folder: Path) -> Path | None:
    """``folder`` when it is one version of a bundles folder (``bundles/v2``: it holds a
    ``ragtune-bundle`` manifest and no ``bundles/`` of its own), else None."""
    from llama_index_ragtune.commands.report import bundle_version_holding

    if (folder / "bundles").is_dir():
        return None
    version = bundle_version_holding(folder)
    return version if version == folder.expanduser().resolve() else None
