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
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llama_index_ragtune._atomic import (
    _parent_lock,
    _pid_alive,
    atomic_write_text,
    recover_dir,
)

MANIFEST = "manifest.json"
CURRENT = "CURRENT"
BUNDLES_DIR = "bundles"
VERSION_NAME = re.compile(r"v([1-9][0-9]{0,8})\Z")
"""The one spelling of a version name: ``v`` and an ASCII number without leading zeros (``v2``,
never ``v02``, ``V2``, ``v+2``, ``v2 `` or ``v٢``: two names must not mean one version)."""
_MAX_VERSION = 999_999_999  # the highest number VERSION_NAME reads
_POINTER_BYTES = 4096  # the most of CURRENT that is read
REWRITE = "run the tuning pipeline again to write a fresh bundle"
LOCK = ".lock"
LOCK_TIMEOUT = 600.0  # seconds a writer waits for another one before a BundleError
# what killed writers leave: version folders being written or replaced (_atomic.atomic_dir)
# and the temporary files of CURRENT and history.jsonl (_atomic.atomic_path)
_VERSION_LEFTOVER = re.compile(r"(v[1-9][0-9]{0,8})\.(?:tmp|old)-([0-9]+)-[0-9a-f]+\Z")
_FILE_LEFTOVER = re.compile(r"\.(?:CURRENT|history\.jsonl)\.tmp-([0-9]+)-[0-9a-f]+(?:\.jsonl)?\Z")
# a name a person may have meant as a version (v02, V2, "v2 ", v+2, v٢): never read as one
_VERSION_LIKE = re.compile(r"\s*[vV]\s*\+?\s*0*(\d{1,9})\s*\Z")
# bundles folders whose lock this thread holds: .depth {path: depth}, .locked {path: flock taken}
_HELD = threading.local()
logger = logging.getLogger(__name__)


class BundleError(ValueError):
    """A bundle is missing, incomplete, edited, or of another format (the message names the file)."""


def bundles_root(path: str | Path) -> Path:
    """The ``bundles`` folder for a run's ``--out`` folder or the ``bundles`` folder itself.

    Always an absolute path: a relative one is resolved against the working directory once,
    here, so a later ``os.chdir`` (another thread, a server's worker) cannot make a writer
    or reader act on another folder than the one it checked.
    """
    path = Path(path).expanduser().absolute()
    return path if path.name == BUNDLES_DIR or _exists(path / CURRENT) else path / BUNDLES_DIR


def _exists(path: Path) -> bool:
    """``path`` exists (a dangling link counts); False for a name the system cannot look up."""
    try:
        return os.path.lexists(path)
    except (OSError, ValueError):
        return False


def _is_file(path: Path) -> bool:
    """``path`` is a file; False for a name the system cannot look up (too long, ...)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bundle_versions(path: str | Path) -> list[str]:
    """Versions present under ``path`` (a run's ``--out`` or its ``bundles`` folder), oldest first.

    Example::

        bundle_versions("ragtune-demo")       # ['v1', 'v2']
    """
    root = bundles_root(path)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p.name)
        for p in root.iterdir()
        if p.is_dir() and (m := VERSION_NAME.match(p.name)) and (p / MANIFEST).is_file()
    ]
    return [name for _, name in sorted(found)]


def unfinished_versions(path: str | Path) -> list[str]:
    """Entries of a bundles folder that look like versions but are not complete ones: a
    ``v<n>`` folder without ``manifest.json`` (an interrupted copy, a deleted manifest) and
    the ``v<n>.tmp-*`` / ``v<n>.old-*`` folders of writers (running or killed). Readers skip
    them; errors and warnings name them.

    Example::

        unfinished_versions("runs/shop")       # ['v3 (no manifest.json)']
    """
    root = bundles_root(path)
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    out = []
    for name in names:
        if VERSION_NAME.match(name):
            if (root / name).is_dir() and not _is_file(root / name / MANIFEST):
                out.append(f"{name} (no {MANIFEST})")
        elif m := _VERSION_LEFTOVER.match(name):
            kind = "being written, or left by a killed writer" if ".tmp-" in name else "replaced"
            out.append(f"{name} ({kind}; not {m.group(1)})")
    return out


def canonical_version(name: Any) -> str | None:
    """The version name ``name`` was probably meant as (``v2`` for ``v02``, ``V2``, ``v+2``,
    ``" v2 "``, ``v٢``), None when it is not like one; ``name`` itself when it is one.

    Example::

        canonical_version("V02"), canonical_version("latest")      # ('v2', None)
    """
    if not isinstance(name, str):
        return None
    found = _VERSION_LIKE.match(name)
    if found is None or int(found.group(1)) == 0:
        return None
    return f"v{int(found.group(1))}"


def misnamed_versions(path: str | Path) -> list[str]:
    """Entries of a bundles folder named like a version but not spelled as one (``v02``,
    ``V2``, ``"v2 "``, ``v+2``, ``v٢``): never read as a version (two names would mean one
    version); errors and warnings name them with the spelling that would be read.

    Example::

        misnamed_versions("runs/shop")       # ["'v02' (not a version name; v2 is)"]
    """
    root = bundles_root(path)
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [
        f"{name!r} (not a version name; {meant} is)"
        for name in names
        if (meant := canonical_version(name)) is not None and meant != name
    ]


def skipped_folders(path: str | Path) -> str:
    """``"; skipped ..."`` naming the unfinished and misnamed version folders ("" for none)."""
    parts = []
    if found := unfinished_versions(path):
        parts.append(f"skipped unfinished folders: {', '.join(found)}")
    if misnamed := misnamed_versions(path):
        parts.append(f"skipped misnamed folders: {', '.join(misnamed)}")
    return "".join(f"; {part}" for part in parts)


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
            if m := _VERSION_LEFTOVER.match(name):
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
        elif m := _VERSION_LEFTOVER.match(name):  # a live writer's (left by clean_leftovers)
            numbers.append(int(m.group(1)[1:]))
        elif meant := canonical_version(name):  # v02: no v2 beside it, however it is read
            numbers.append(int(meant[1:]))
    highest = max(numbers, default=0)
    if highest >= _MAX_VERSION:  # v1000000000 would be written, and never be read
        raise BundleError(
            f"{root} holds a version numbered {highest}, the highest a version name can have "
            f"(v1 to v{_MAX_VERSION}): no next version can be named; move that folder away "
            "(or write the bundle to another --out)"
        )
    return f"v{highest + 1}"


def check_version_name(version: Any, source: str, root: Path) -> str:
    """``version`` when it is a version name (``v<number>``), else ``BundleError`` naming
    ``source`` (``CURRENT`` or the argument): a name never leads outside ``root``."""
    if not isinstance(version, str) or not VERSION_NAME.match(version):
        meant = canonical_version(version)
        spelled = f" (version {meant[1:]} is written {meant})" if meant else ""
        raise BundleError(
            f"{source} names {short(version)}, which is not a bundle version (v1, v2, ...)"
            f"{spelled}; "
            f"versions here: {bundle_versions(root) or 'none'}; pass one of them, or "
            f"`ragtune rollback --to VERSION` to rewrite {root / CURRENT}"
        )
    return version


def current_version(path: str | Path) -> str | None:
    """The version ``CURRENT`` names (None when there is no bundle yet).

    Raises ``BundleError`` when ``CURRENT`` holds anything but a version name
    (``../elsewhere``, an absolute path, binary junk) or is a symbolic link (never followed:
    it could lead outside the bundles folder; writers replace the link, not its target).
    """
    root = bundles_root(path)
    pointer = root / CURRENT
    if not _exists(pointer):
        return None
    if os.path.islink(pointer):
        raise _linked_pointer(pointer, root)
    if not _is_file(pointer):
        raise BundleError(
            f"{pointer} is not a file; it must hold the served version's name; versions here: "
            f"{bundle_versions(root) or 'none'}; "
            + (
                "remove the folder, then `ragtune rollback --to VERSION` writes it"
                if _is_real_dir(pointer)
                else "`ragtune rollback --to VERSION` rewrites it"
            )
        )
    try:  # never through a link, even one put there since the check above
        fd = os.open(pointer, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _linked_pointer(pointer, root) from None
        raise
    with open(fd, "rb") as handle:  # a name is a few bytes: a huge file is not read whole
        data = handle.read(_POINTER_BYTES + 1)
    if len(data) > _POINTER_BYTES:  # far too long for a version name (the message cuts it)
        check_version_name(data.decode("utf-8", "backslashreplace"), str(pointer), root)
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        text = data[:40].decode("utf-8", "backslashreplace")
        check_version_name(text + "…", str(pointer), root)
    if not text:
        raise BundleError(
            f"{pointer} is empty; versions here: {bundle_versions(root) or 'none'}; "
            "`ragtune rollback --to VERSION` rewrites it"
        )
    return check_version_name(text, str(pointer), root)


def _linked_pointer(pointer: Path, root: Path) -> BundleError:
    try:
        target = short(os.readlink(pointer))
    except OSError:
        target = "an unreadable target"
    return BundleError(
        f"{pointer} is a symbolic link (to {target}); it must be a plain file holding the "
        f"served version's name, and a link is not followed (it could lead outside {root}); "
        f"versions here: {bundle_versions(root) or 'none'}; `ragtune rollback --to VERSION` "
        "replaces the link with that file (its target is left alone)"
    )


def _is_real_dir(path: Path) -> bool:
    """``path`` is a folder, not a link to one (False for a name the system cannot look up)."""
    try:
        return path.is_dir() and not path.is_symlink()
    except (OSError, ValueError):
        return False


def check_current_replaceable(root: Path, version: str) -> None:
    """``BundleError`` naming ``root/CURRENT`` when a folder stands in its place (no file can
    replace it, so ``version`` could not be served); writers call it before moving ``CURRENT``.
    """
    pointer = root / CURRENT
    if _is_real_dir(pointer):
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
        if not _is_file(folder / MANIFEST):
            raise BundleError(
                f"{folder / MANIFEST} not found: {version!r} is not a bundle version here "
                f"(versions: {bundle_versions(root) or 'none'})"
            )
        check_current_replaceable(root, version)
        try:
            return atomic_write_text(root / CURRENT, version + "\n")
        except OSError as exc:
            if exc.errno not in _READ_ONLY:
                raise
            raise _read_only_error(root, exc, f"point {CURRENT} at {version}") from None


def resolve_bundle_dir(path: str | Path, version: str | None = None) -> Path:
    """The version folder for ``path``: a version folder, a ``bundles`` folder or a run's
    ``--out`` (their ``CURRENT`` version unless ``version`` is given)."""
    path = Path(path).expanduser().absolute()  # once: see bundles_root
    if version is None and _is_file(path / MANIFEST):
        return path
    root = bundles_root(path)
    if version is None:
        if not root.is_dir() and not _exists(path):
            raise BundleError(f"bundle not found: {path} does not exist{_spelled_otherwise(path)}")
        version = current_version(root)
        if version is None:
            raise BundleError(
                f"{root / CURRENT} not found: {path} holds no bundle (pass the --out folder of a "
                "tuning run, its bundles/ folder, or a version folder)"
            )
    else:
        check_version_name(version, "the version argument", root)
    folder = root / version
    if _is_file(folder / MANIFEST):
        return folder
    # a reader writes nothing (the bundle may be read-only): a complete copy a killed writer
    # left while replacing the folder is read where it is; the next writer renames it back
    kept = _replaced_copy(root, version)
    if kept is not None:
        logger.warning(
            "%s is missing; loading %s, the complete copy a writer killed while replacing it "
            "left (the next writer or `ragtune rollback` restores it)",
            folder,
            kept.name,
        )
        return kept
    raise BundleError(
        f"{folder / MANIFEST} not found: version {version!r} is missing or incomplete; "
        f"versions here: {bundle_versions(root) or 'none'}{skipped_folders(root)}; load one of them "
        f"(`ragtune rollback --to VERSION` serves it), or {REWRITE}"
    )


def _replaced_copy(root: Path, version: str) -> Path | None:
    """The newest complete ``<version>.old-*`` folder in ``root`` (None: none)."""
    found = []
    try:
        names = os.listdir(root)
    except OSError:
        return None
    for name in names:
        m = _VERSION_LEFTOVER.match(name)
        if (
            m
            and m.group(1) == version
            and ".old-" in name
            and _is_real_dir(root / name)  # what a writer left, not a link to elsewhere
            and _is_file(root / name / MANIFEST)
        ):
            with contextlib.suppress(OSError):
                found.append(((root / name).stat().st_mtime, root / name))
    return max(found)[1] if found else None


def _spelled_otherwise(path: Path) -> str:
    """A hint naming the entries beside the first missing part of ``path`` whose names differ
    from it only in Unicode form (NFC / NFD: macOS file names, copied archives) or letter
    case; "" when there is none."""
    for part in (*reversed(path.parents), path):
        if _exists(part):
            continue
        key = unicodedata.normalize("NFC", part.name).casefold()
        try:
            names = os.listdir(part.parent)
        except OSError:
            return ""
        similar = sorted(n for n in names if unicodedata.normalize("NFC", n).casefold() == key)
        if not similar:
            return ""
        return (
            f"; {part.parent} holds {', '.join(ascii(n) for n in similar)}, a name that differs "
            f"from {ascii(part.name)} only in Unicode form (NFC / NFD) or letter case: pass "
            "that name as it is spelled there"
        )
    return ""
