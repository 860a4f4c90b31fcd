"""Serve an earlier bundle version again (``ragtune rollback``).

``rollback_bundle`` points ``CURRENT`` at an earlier version (the one before the
current one by default) after verifying its files, under the bundles folder's writer
lock, and records the switch in ``bundles/history.jsonl``; a reader sees the old or
the new version, never a mix. The line is written to ``bundles/.rollback-pending.json``
before ``CURRENT`` moves and removed after it is logged, so a rollback killed in between
is logged by the next writer (:func:`settle_pending_switch`) and :func:`read_history
<llama_index_ragtune.pipeline.refresh_writer.read_history>` shows it meanwhile.

Example::

    from llama_index_ragtune.pipeline import rollback_bundle

    rollback_bundle("runs/shop")              # v3 -> v2
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["pending_switch", "rollback_bundle", "settle_pending_switch", "switch_version"]

PENDING = ".rollback-pending.json"  # the switch in progress: {"pid", "entry"}
_PENDING_BYTES = 64 << 10  # the most of it that is read (an entry is a few hundred bytes)
logger = logging.getLogger(__name__)


def rollback_bundle(path: str | Path, to: str | None = None) -> str:
    """Serve an earlier bundle version again: point ``CURRENT`` at ``to`` (default: the version
    before the current one: the one a refresh made it from, else the newest earlier one),
    atomically, after verifying its files. Returns the version.

    Raises ``BundleError`` when there is no earlier version, or ``to`` is unknown or damaged.
    ``to`` already served changes nothing and writes nothing (also on a read-only copy).
    Version folders that are not complete (no manifest: an interrupted copy; a writer's
    ``v<n>.tmp-*``) are never served; a warning names those passed over, also when
    ``CURRENT`` itself names one (the newest complete version before it is served).

    Example::

        rollback_bundle("runs/shop")              # v3 -> v2
        rollback_bundle("runs/shop", to="v1")
    """
    return switch_version(path, to)[1]


def switch_version(path: str | Path, to: str | None = None) -> tuple[str | None, str]:
    """:func:`rollback_bundle`, returning ``(served before, served now)``: both read under
    the writer lock, so a report of the switch names the versions it switched between
    (the first is ``None`` when ``CURRENT`` was missing or damaged and is now rewritten).

    Example::

        switch_version("runs/shop")               # ('v3', 'v2')
    """
    from llama_index_ragtune.pipeline.bundle_folders import (
        BundleError,
        bundle_lock,
        bundle_versions,
        bundles_root,
        check_version_name,
        current_version,
        set_current_version,
        skipped_folders,
        unfinished_versions,
    )
    from llama_index_ragtune.pipeline.refresh_writer import append_history, reconcile_history

    root = bundles_root(path)
    if to is not None and root.is_dir() and not os.access(root, os.W_OK):
        # a read-only copy: no switch can be made there, but one to the version served
        # already changes nothing, so it is answered without the writer lock (a write)
        with contextlib.suppress(BundleError):
            if current_version(root) == to:
                _verify(root, to, bundle_versions(root), to)
                return to, to
    with bundle_lock(root):  # CURRENT read, checked and moved with no other writer between
        versions = bundle_versions(root)
        try:
            current = current_version(root)
        except BundleError:  # a damaged CURRENT: rolling to a named version rewrites it
            if to is None:
                raise
            current = None
        unfinished = unfinished_versions(root)
        skipped = skipped_folders(root)
        if not versions:
            raise BundleError(f"no bundle in {root}: nothing to roll back{skipped}{_hint(path)}")
        if to is None:
            if current is None:
                raise BundleError(
                    f"{root / 'CURRENT'} not found: no version is served to roll back from; "
                    f"pass --to VERSION (versions: {versions}){skipped}"
                )
            number = int(current[1:])
            earlier = [v for v in versions if int(v[1:]) < number]
            if not earlier:
                raise BundleError(
                    f"bundle {current} is the oldest version in {root} (versions: {versions}"
                    f"{skipped}); there is nothing earlier to roll back to"
                )
            to = _refreshed_from(root, current, earlier) or earlier[-1]
            passed = [
                name
                for name in unfinished
                if int(name.split(" ")[0].split(".")[0][1:]) in range(int(to[1:]) + 1, number + 1)
            ]
            if current not in versions or passed:
                logger.warning(
                    "rollback in %s: CURRENT names %s%s; serving %s, the newest complete version "
                    "before it (passed over: %s)",
                    root,
                    current,
                    ""
                    if current in versions
                    else ", which is not a complete version"
                    if os.path.lexists(root / current)
                    else ", which does not exist (deleted or moved)",
                    to,
                    ", ".join(passed) or "none",
                )
        elif to not in versions:
            check_version_name(to, "--to", root)  # v02, V2: says how the version is written
            raise BundleError(f"no version {to!r} in {root}; versions here: {versions}{skipped}")
        _verify(root, to, versions, current)
        if to != current:  # already served: nothing to write (the folder may be read-only)
            reconcile_history(root)  # what killed writers left unlogged, before this switch
            entry = {"time": _now(), "action": "rollback", "from": current, "served": to}
            _write_mark(root, entry)  # first: a kill from here on is logged by the next writer
            try:
                set_current_version(root, to)
            except BaseException:
                _drop_mark(root)  # CURRENT did not move: nothing to log
                raise
            append_history(root, entry)
            _drop_mark(root)
    return current, to


def _now() -> str:
    from llama_index_ragtune.pipeline.refresh_writer import _now

    return _now()


def _write_mark(root: Path, entry: dict[str, Any]) -> None:
    """Write the switch about to be made to :data:`PENDING` (atomically); a read-only folder
    raises the ``BundleError`` a switch there raises."""
    from llama_index_ragtune._atomic import atomic_write_text
    from llama_index_ragtune.pipeline.bundle_folders import _READ_ONLY, _read_only_error

    try:
        atomic_write_text(root / PENDING, json.dumps({"pid": os.getpid(), "entry": entry}))
    except OSError as exc:
        if exc.errno not in _READ_ONLY:
            raise
        raise _read_only_error(root, exc, f"point CURRENT at {entry['served']}") from None


def _drop_mark(root: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(root / PENDING)


def _read_mark(root: Path) -> dict[str, Any] | None:
    """The mark a switch left (``{"pid", "entry"}``); None when there is none or it is not
    one (unreadable, damaged, a link or folder in its place: never followed)."""
    from llama_index_ragtune._atomic_reads import read_capped

    try:
        raw = read_capped(root / PENDING, _PENDING_BYTES, "", follow_links=False)
        mark = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    entry = mark.get("entry") if isinstance(mark, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("served"), str):
        return None
    return mark


def _logged(root: Path, entry: dict[str, Any], newest: int = 16) -> bool:
    """Whether ``entry`` is among the ``newest`` lines of the log (read from its end)."""
    from llama_index_ragtune.pipeline.refresh_writer import HISTORY, _entries_from_end

    for n, logged in enumerate(_entries_from_end(root / HISTORY)):
        if n >= newest:
            return False
        if all(logged.get(key) == value for key, value in entry.items()):
            return True
    return False


def pending_switch(path: str | Path) -> dict[str, Any] | None:
    """The rollback a killed ``ragtune rollback`` made but did not log (``CURRENT`` serves
    its version, its line is missing), marked ``"recovered": true``; None otherwise. Reads
    only: :func:`~llama_index_ragtune.pipeline.refresh_writer.read_history` adds it.

    Example::

        pending_switch("runs/shop")     # {'action': 'rollback', 'from': 'v3', 'served': 'v2', ...}
    """
    from llama_index_ragtune.pipeline.bundle_folders import BundleError, current_version
    from llama_index_ragtune.pipeline.bundle_names import bundles_root

    root = bundles_root(path)
    mark = _read_mark(root)
    if mark is None:
        return None
    entry = mark["entry"]
    try:
        if current_version(root) != entry["served"] or _logged(root, entry):
            return None
    except (OSError, BundleError):
        return None
    return {**entry, "recovered": True}


def settle_pending_switch(path: str | Path) -> dict[str, Any] | None:
    """Log the rollback a killed writer made but did not log, and remove its mark; return
    the entry added (None: nothing was missing).

    Writers call it (through ``reconcile_history``) holding the writer lock, so a mark seen
    is that of a switch that stopped, unless this process is making it now (left alone).
    A rollback killed before ``CURRENT`` moved switched nothing: its mark is only removed.
    """
    from llama_index_ragtune.pipeline.bundle_names import bundles_root
    from llama_index_ragtune.pipeline.refresh_writer import append_history

    root = bundles_root(path)
    if not os.path.lexists(root / PENDING):
        return None
    mark = _read_mark(root)
    if mark is not None and mark.get("pid") == os.getpid():
        return None  # this process's own switch, in progress
    entry = pending_switch(root)
    if entry is not None:
        logger.warning(
            "%s: the rollback from %s to %s (served now) was not logged (it was stopped after "
            "moving CURRENT); its line is added",
            root / "history.jsonl",
            entry.get("from"),
            entry["served"],
        )
        append_history(root, entry)
    with contextlib.suppress(OSError):
        _drop_mark(root)
    return entry


def _refreshed_from(root: Path, current: str, earlier: list[str]) -> str | None:
    """The version a refresh made ``current`` from (its manifest's ``parent``), when that is
    one of the complete ``earlier`` versions; None otherwise (a tuning run's version, or a
    manifest that cannot be read: the newest earlier version is served).

    A refresh made after a rollback starts from the version rolled back to, so the version
    numbered just below it is the one the operator rolled back from (v1, v2 refreshed,
    rolled back to v1, v3 refreshed from v1: rolling back v3 serves v1, not v2).
    """
    from llama_index_ragtune.pipeline.bundle_folders import BundleError
    from llama_index_ragtune.pipeline.bundle_manifest import read_manifest
    from llama_index_ragtune.pipeline.bundle_names import check_version_folder

    try:  # a version linked outside the bundles folder is never read
        manifest = read_manifest(check_version_folder(root / current))
    except BundleError:
        return None
    parent = manifest.get("parent")
    if not isinstance(manifest.get("refresh"), dict) or parent not in earlier:
        return None
    if parent != earlier[-1]:
        logger.info(
            "rollback in %s: serving %s, the version %s was refreshed from (not %s, served "
            "in between and rolled back from)",
            root,
            parent,
            current,
            earlier[-1],
        )
    return parent


def _verify(root: Path, version: str, versions: list[str], current: str | None) -> None:
    """``BundleError`` naming the damage of ``version`` and the other versions to serve."""
    from llama_index_ragtune.pipeline.bundle_folders import BundleError
    from llama_index_ragtune.pipeline.bundle_manifest import verify_bundle

    try:
        verify_bundle(root / version)
    except BundleError as exc:  # CURRENT stays: name the damage and the other versions
        others = [v for v in versions if v not in (version, current)]
        hint = f"; or serve another version: --to one of {others}" if others else ""
        raise BundleError(f"cannot roll back to {version}: {exc}{hint}") from None


def _hint(path: str | Path) -> str:
    """``"; ... pass ..."`` when ``path`` is a version folder itself (``bundles/v2``), else ""."""
    from llama_index_ragtune.pipeline.bundle_names import MANIFEST, bundle_path, is_file

    folder = bundle_path(path)
    if not is_file(folder / MANIFEST):
        return ""
    return (
        f"; {folder} is a bundle version itself: pass its bundles folder {folder.parent} (or "
        f"the run folder above it), and to={folder.name!r} to serve this version"
    )
