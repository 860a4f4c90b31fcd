"""Where bundle versions live: the ``bundles/`` folder, its ``CURRENT`` pointer, version names.

A run's ``--out`` folder holds ``bundles/v1``, ``bundles/v2``, ... and ``bundles/CURRENT``
naming the served one (layout: :mod:`~llama_index_ragtune.pipeline.bundle`). Version
names are ``v<number>`` and never lead outside ``bundles/``; every error is a
:class:`BundleError` naming the file and saying how to fix it.

Writers (a pipeline's bundle step, a refresh, a rollback, :func:`set_current_version`)
hold :func:`bundle_lock`, an exclusive lock on ``bundles/.lock``, while they pick the
next version name, write it and move ``CURRENT``: two writers never get the same
version, and ``CURRENT`` never names a version another writer replaced. The lock is
released when its holder exits, even on ``SIGKILL``. Readers take no lock: a version
folder appears complete (renamed into place) and ``CURRENT`` is replaced by a rename,
so a reader sees the old or the new one. Readers never write either: a bundle loads
from a read-only location, and what a killed writer left (``v3.tmp-*`` folders,
``.CURRENT.tmp-*`` files) is only skipped by readers (errors name it); the next writer
removes it, and it does not use up a version number.

The writers' part is here (the lock, removing leftovers, the next version name, moving
``CURRENT``); the names and listings of a bundles folder are in
:mod:`~llama_index_ragtune.pipeline.bundle_names`, what a reader loads in
:mod:`~llama_index_ragtune.pipeline.bundle_current`; their public names import from here too.

Example::

    from llama_index_ragtune.pipeline.bundle_folders import bundle_versions, current_version

    bundle_versions("ragtune-demo"), current_version("ragtune-demo")    # ['v1', 'v2'], 'v2'
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from llama_index_ragtune._atomic import (
    _parent_lock,
    _pid_alive,
    atomic_write_text,
    recover_dir,
)
from llama_index_ragtune.pipeline.bundle_current import current_version, resolve_bundle_dir
from llama_index_ragtune.pipeline.bundle_names import (
    BUNDLES_DIR,
    CURRENT,
    MANIFEST,
    MAX_VERSION,
    REWRITE,
    VERSION_LEFTOVER,
    VERSION_NAME,
    BundleError,
    bundle_path,
    bundle_versions,
    bundles_root,
    canonical_version,
    check_version_folder,
    check_version_name,
    is_file,
    is_real_dir,
    misnamed_versions,
    short,
    skipped_folders,
    unfinished_versions,
)

__all__ = [  # the writers' part, and the names readers and writers import from here
    "BUNDLES_DIR",
    "CURRENT",
    "LOCK",
    "LOCK_TIMEOUT",
    "MANIFEST",
    "NEW_VERSION",
    "REWRITE",
    "VERSION_NAME",
    "BundleError",
    "bundle_lock",
    "bundle_path",
    "bundle_versions",
    "bundles_root",
    "canonical_version",
    "check_current_replaceable",
    "check_version_name",
    "clean_leftovers",
    "current_version",
    "misnamed_versions",
    "next_version",
    "resolve_bundle_dir",
    "set_current_version",
    "short",
    "skipped_folders",
    "unfinished_versions",
]

LOCK = ".lock"
LOCK_TIMEOUT = 600.0  # seconds a writer waits for another one before a BundleError
NEW_VERSION: frozenset[str] = frozenset()
"""What a new version's folder may already hold (nothing): writers pass it to ``atomic_dir``
as its owned entries, so a folder holding anything is never replaced by a new version."""
# the temporary files of CURRENT, history.jsonl and the rollback mark that killed writers leave
_FILE_LEFTOVER = re.compile(
    r"\.(?:CURRENT|history\.jsonl|\.rollback-pending\.json)\.tmp-([0-9]+)-[0-9a-f]+(?:\.jsonl?)?\Z"
)
# bundles folders whose lock this thread holds: .depth {path: depth}, .locked {path: flock taken}
_HELD = threading.local()
logger = logging.getLogger(__name__)


def _read_only_error(root: Path, exc: OSError, action: str) -> BundleError:
    return BundleError(
        f"cannot {action} in {root}: {exc.strerror or exc} ({exc.filename or root}); the "
        "folder is read-only (a deployed copy?): roll back or write versions in the writable "
        "original and deploy it again, or make the folder writable"
    )


_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


@contextlib.contextmanager
def bundle_lock(path: str | Path, timeout: float | None = None) -> Iterator[Path]:
    """Hold the exclusive writer lock of a bundles folder (``bundles/.lock``); yield the folder.

    Serialises the processes and threads that write versions or move ``CURRENT``; the
    same thread may enter it again (a rollback calls :func:`set_current_version`).
    Waits up to ``timeout`` seconds (default :data:`LOCK_TIMEOUT`), then raises
    ``BundleError`` naming the folder. A folder that does not exist yet, a system
    without ``flock`` (Windows) or a file system without locks is not locked.

    Example::

        with bundle_lock("runs/shop"):
            version = next_version("runs/shop")     # nobody else can take it now
    """
    root = bundles_root(path).resolve()  # one key per folder however it is named
    held = getattr(_HELD, "depth", None)
    if held is None:
        held = _HELD.depth = {}
        _HELD.locked = {}
    key = str(root)
    if held.get(key):  # this thread holds it already
        held[key] += 1
        try:
            yield root
        finally:
            held[key] -= 1
        return
    try:
        import fcntl
    except ImportError:  # Windows: writers are not serialised
        fcntl = None  # type: ignore[assignment]
    if fcntl is None or not root.is_dir():
        yield root
        return
    limit = LOCK_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + limit
    try:
        # never through a link: O_CREAT would create the file it names, wherever that is
        fd = os.open(root / LOCK, os.O_RDONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        if exc.errno in (errno.EISDIR, errno.ELOOP):
            what = "a folder" if exc.errno == errno.EISDIR else "a symbolic link"
            raise BundleError(
                f"{root / LOCK} is {what}; it must be the (empty) file that writers lock: "
                "remove it and run again"
            ) from None
        if exc.errno not in _READ_ONLY:
            raise
        raise _read_only_error(root, exc, "take the writer lock") from None
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BundleError(
                        f"{root} is locked by another process writing a bundle version or moving "
                        f"CURRENT (lock file {root / LOCK}); waited {limit:g} s: let it finish "
                        "(or stop it) and run again"
                    ) from None
                time.sleep(0.05)
            except OSError:  # a file system without locks
                locked = False
                break
        held[key], _HELD.locked[key] = 1, locked
        try:
            yield root
        finally:
            held[key], _HELD.locked[key] = 0, False
    finally:
        os.close(fd)  # releases the lock


def _lock_taken(root: Path) -> bool:
    """Whether this thread holds :func:`bundle_lock` of ``root`` with a real ``flock`` (not
    the unlocked fallback of a system or file system without locks)."""
    return bool(getattr(_HELD, "locked", {}).get(str(root.resolve())))


def clean_leftovers(path: str | Path) -> list[str]:
    """Remove what killed writers left in a bundles folder; return the names removed.

    A ``v<n>.tmp-*`` folder whose writer is gone is deleted, a ``v<n>.old-*`` folder is
    renamed back when ``v<n>`` is missing (``_atomic.recover_dir``), and stale
    ``.CURRENT.tmp-*`` / ``.history.jsonl.tmp-*`` files are deleted. Writers call it
    holding :func:`bundle_lock`.

    ``.CURRENT.tmp-*`` files are written only under :func:`bundle_lock` and
    ``.history.jsonl.tmp-*`` only under the log's lock, so holding those locks they are
    dead whatever process id their name holds: a writer killed on another host or in
    another container, whose id is a live process here, leaves none that outlives it.
    A ``v<n>.tmp-*`` folder whose process id is alive here is kept (a writer that does not
    take the lock may be filling it) with a warning saying to remove it if it is stale.
    """
    root = bundles_root(path)
    if not root.is_dir():
        return []
    locked = _lock_taken(root)
    before = set(os.listdir(root))
    versions, kept = set(), []
    with _parent_lock(root) as log_locked:  # the lock append_history writes the log under
        for name in before:
            if m := VERSION_LEFTOVER.match(name):
                versions.add(m.group(1))
                pid = int(m.group(2))
                if locked and ".tmp-" in name and pid != os.getpid() and _pid_alive(pid):
                    kept.append(name)
            elif m := _FILE_LEFTOVER.match(name):
                dead = log_locked if name.startswith(".history") else locked
                if dead or not _pid_alive(int(m.group(1))):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(root / name)
    for version in sorted(versions):
        recover_dir(root / version)
    if kept:
        logger.warning(
            "%s holds %s, named after a process id that is alive here but not holding the "
            "writers' lock: kept, and its version number not reused; if no program is writing "
            "it (its writer ran on another host or in another container and was killed), "
            "remove it",
            root,
            ", ".join(sorted(kept)),
        )
    return sorted(before - set(os.listdir(root)))


def next_version(path: str | Path) -> str:
    """The name the next bundle gets: ``v<highest + 1>`` (``v1`` for the first).

    Leftovers of killed writers are removed first, so they use up no number; a
    version folder a live writer is writing still counts, and so does a misnamed one
    (``v02``: no ``v2`` is written beside it; a warning names it). Call it holding
    :func:`bundle_lock`, else another writer may pick the same name.
    """
    root = bundles_root(path)
    clean_leftovers(root)
    incomplete = [name for name in unfinished_versions(root) if name.endswith(f"(no {MANIFEST})")]
    misnamed = misnamed_versions(root)
    if misnamed:
        logger.warning(
            "%s holds folders named like versions but not spelled as one: %s; they are never "
            "read as versions: rename (or remove) them",
            root,
            ", ".join(misnamed),
        )
    if incomplete:
        logger.warning(
            "%s holds version folders without %s (%s): not served, and their numbers are not "
            "reused; remove them if nothing is copying into them",
            root,
            MANIFEST,
            ", ".join(incomplete),
        )
    numbers = []
    for name in os.listdir(root) if root.is_dir() else []:
        if m := VERSION_NAME.match(name):
            numbers.append(int(m.group(1)))
        elif m := VERSION_LEFTOVER.match(name):  # a live writer's (left by clean_leftovers)
            numbers.append(int(m.group(1)[1:]))
        elif meant := canonical_version(name):  # v02: no v2 beside it, however it is read
            numbers.append(int(meant[1:]))
    highest = max(numbers, default=0)
    if highest >= MAX_VERSION:  # v1000000000 would be written, and never be read
        raise BundleError(
            f"{root} holds a version numbered {highest}, the highest a version name can have "
            f"(v1 to v{MAX_VERSION}): no next version can be named; move that folder away "
            "(or write the bundle to another --out)"
        )
    return f"v{highest + 1}"


def check_current_replaceable(root: Path, version: str) -> None:
    """``BundleError`` naming ``root/CURRENT`` when a folder stands in its place (no file can
    replace it, so ``version`` could not be served); writers call it before moving ``CURRENT``.
    """
    pointer = root / CURRENT
    if is_real_dir(pointer):
        raise BundleError(
            f"{pointer} is a folder; it must be a file holding the served version's name, so "
            f"{version} could not be served: remove the folder, then `ragtune rollback --to "
            f"{version}` serves it"
        )


def set_current_version(path: str | Path, version: str) -> Path:
    """Point ``CURRENT`` at ``version`` (atomically): roll back or forward between kept versions.

    Example::

        set_current_version("ragtune-demo", "v1")      # serve the previous bundle again
    """
    root = bundles_root(path)
    folder = root / check_version_name(version, "the version argument", root)
    with bundle_lock(root):
        recover_dir(folder)
        check_version_folder(folder)  # a link leading outside bundles/ is never served
        if not is_file(folder / MANIFEST):
            raise BundleError(
                f"{folder / MANIFEST} not found: {version!r} is not a bundle version here "
                f"(versions: {bundle_versions(root) or 'none'})"
            )
        check_current_replaceable(root, version)
        from llama_index_ragtune.pipeline.refresh_writer import reconcile_history

        reconcile_history(root)  # a stopped refresh's line, before CURRENT leaves its version
        try:
            return atomic_write_text(root / CURRENT, version + "\n")
        except OSError as exc:
            if exc.errno not in _READ_ONLY:
                raise
            raise _read_only_error(root, exc, f"point {CURRENT} at {version}") from None
